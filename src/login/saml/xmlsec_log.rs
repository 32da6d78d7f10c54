//! Routes xmlsec's error reports into tracing. Left alone, xmlsec prints every failed
//! digest or signature straight to stderr, outside the log format and levels; a refused
//! response is already logged by sidegate with its reason, so these go out at debug.

use std::ffi::{c_char, c_int, CStr};
use std::sync::Once;

type ErrorsCallback = unsafe extern "C" fn(
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    error_object: *const c_char,
    error_subject: *const c_char,
    reason: c_int,
    msg: *const c_char,
);

extern "C" {
    // libxmlsec1, linked by samael's xmlsec feature (xmlsec/errors.h).
    fn xmlSecErrorsSetCallback(callback: ErrorsCallback);
}

fn text<'a>(p: *const c_char) -> std::borrow::Cow<'a, str> {
    if p.is_null() {
        "".into()
    } else {
        // SAFETY: xmlsec passes NUL-terminated strings valid for the call's duration.
        unsafe { CStr::from_ptr(p) }.to_string_lossy()
    }
}

unsafe extern "C" fn to_tracing(
    _file: *const c_char,
    _line: c_int,
    func: *const c_char,
    error_object: *const c_char,
    error_subject: *const c_char,
    reason: c_int,
    msg: *const c_char,
) {
    // Never unwind into C.
    let _ = std::panic::catch_unwind(|| {
        tracing::debug!(target: "sidegate::xmlsec", func = %text(func), object = %text(error_object),
            subject = %text(error_subject), reason, "{}", text(msg));
    });
}

/// A throwaway self-signed certificate, only to make samael initialise xmlsec.
fn throwaway_cert() -> Result<Vec<u8>, openssl::error::ErrorStack> {
    use openssl::{ec, nid::Nid, pkey::PKey, x509};
    let key = PKey::from_ec_key(ec::EcKey::generate(
        ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?.as_ref(),
    )?)?;
    let mut b = x509::X509::builder()?;
    b.set_pubkey(&key)?;
    b.set_not_before(openssl::asn1::Asn1Time::days_from_now(0)?.as_ref())?;
    b.set_not_after(openssl::asn1::Asn1Time::days_from_now(1)?.as_ref())?;
    b.sign(&key, openssl::hash::MessageDigest::sha256())?;
    b.build().to_der()
}

/// Installs the callback once per process. xmlsec's OpenSSL layer sets its own (stderr)
/// callback when samael first initialises it, so initialisation is forced first.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use samael::crypto::{Crypto, CryptoProvider};
        if let Ok(cert) = throwaway_cert() {
            // Loading a key initialises xmlsec; the document has no signature to check.
            let _ = Crypto::verify_signed_xml("<a/>", &cert.into(), None);
        }
        // SAFETY: sets a process-global function pointer to a function with the C signature
        // xmlsec expects; it stays valid for the life of the program.
        unsafe { xmlSecErrorsSetCallback(to_tracing) }
    });
}
