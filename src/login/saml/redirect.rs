//! The HTTP-Redirect binding for logout messages: DEFLATE + base64 in the query, and the
//! query-string signature (SAML bindings §3.4.4.1).
//!
//! Why not samael's `UrlVerifier`: it panics on a missing `SigAlg`/`Signature` or an
//! unexpected algorithm, and it re-encodes the query before verifying, while the signature
//! covers the exact bytes the IdP sent. Here the signed string is cut from the raw query,
//! the algorithm comes from an allow-list, and the inflated size is capped.

use std::io::Read as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use url::Url;

/// Largest inflated message accepted (a LogoutRequest is well under 4 KiB).
pub const MAX_INFLATED: usize = 64 * 1024;

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
/// A signature algorithm URI and the digest it signs with.
type Alg = (&'static str, fn() -> MessageDigest);
const ALGS: [Alg; 6] = [
    (RSA_SHA256, MessageDigest::sha256),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        MessageDigest::sha384,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        MessageDigest::sha512,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        MessageDigest::sha256,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        MessageDigest::sha384,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
        MessageDigest::sha512,
    ),
];

/// Which message parameter a query carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SAMLRequest`.
    Request,
    /// `SAMLResponse`.
    Response,
}

impl Kind {
    fn param(self) -> &'static str {
        match self {
            Kind::Request => "SAMLRequest",
            Kind::Response => "SAMLResponse",
        }
    }
}

/// Why a Redirect-binding message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// A parameter is missing, repeated or undecodable.
    #[error("malformed query: {0}")]
    Malformed(&'static str),
    /// Inflates past `MAX_INFLATED`.
    #[error("message inflates past {MAX_INFLATED} bytes")]
    TooLarge,
    /// No `Signature`/`SigAlg` where one is required.
    #[error("unsigned message")]
    Unsigned,
    /// `SigAlg` not on the allow-list.
    #[error("signature algorithm not allowed: {0}")]
    Algorithm(String),
    /// The signature does not verify against any pinned certificate.
    #[error("signature does not verify against the IdP's certificate(s)")]
    BadSignature,
}

/// A decoded message with what its signature covers.
#[derive(Debug)]
pub struct Message {
    /// The inflated XML.
    pub xml: String,
    /// `RelayState`, if sent.
    pub relay_state: Option<String>,
    signed_part: String,
    signature: Option<(String, Vec<u8>)>,
}

impl Message {
    /// Whether the query carried a signature.
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }
}

fn raw_param<'q>(query: &'q str, name: &str) -> Result<Option<&'q str>, BindingError> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            if found.is_some() {
                return Err(BindingError::Malformed("a parameter is repeated"));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

fn unescape(raw: &str) -> Result<String, BindingError> {
    url::form_urlencoded::parse(format!("v={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or(BindingError::Malformed("undecodable value"))
}

/// Decodes `kind` from a raw (still percent-encoded) query string.
pub fn decode(query: &str, kind: Kind) -> Result<Message, BindingError> {
    let msg = raw_param(query, kind.param())?.ok_or(BindingError::Malformed("no message"))?;
    let relay = raw_param(query, "RelayState")?;
    let sig_alg = raw_param(query, "SigAlg")?;
    let signature = raw_param(query, "Signature")?;
    let deflated = STANDARD
        .decode(unescape(msg)?.split_whitespace().collect::<String>())
        .map_err(|_| BindingError::Malformed("message is not base64"))?;
    let mut xml = String::new();
    DeflateDecoder::new(deflated.as_slice())
        .take(MAX_INFLATED as u64 + 1)
        .read_to_string(&mut xml)
        .map_err(|_| BindingError::Malformed("message does not inflate to UTF-8"))?;
    if xml.len() > MAX_INFLATED {
        return Err(BindingError::TooLarge);
    }
    // §3.4.4.1: the signed octets are the parameters exactly as received, in this order.
    let mut signed_part = format!("{}={msg}", kind.param());
    if let Some(r) = relay {
        signed_part.push_str(&format!("&RelayState={r}"));
    }
    let signature = match (sig_alg, signature) {
        (Some(a), Some(s)) => {
            signed_part.push_str(&format!("&SigAlg={a}"));
            let sig = STANDARD
                .decode(unescape(s)?)
                .map_err(|_| BindingError::Malformed("signature is not base64"))?;
            Some((unescape(a)?, sig))
        }
        (None, None) => None,
        _ => {
            return Err(BindingError::Malformed(
                "SigAlg without Signature or the reverse",
            ))
        }
    };
    Ok(Message {
        xml,
        relay_state: relay.map(unescape).transpose()?,
        signed_part,
        signature,
    })
}

/// Checks the query signature against the pinned keys; `required` refuses unsigned messages.
pub fn verify(m: &Message, keys: &[PKey<Public>], required: bool) -> Result<(), BindingError> {
    let Some((alg, sig)) = &m.signature else {
        return if required {
            Err(BindingError::Unsigned)
        } else {
            Ok(())
        };
    };
    let digest = ALGS
        .iter()
        .find(|(uri, _)| uri == alg)
        .map(|(_, d)| d())
        .ok_or_else(|| BindingError::Algorithm(alg.clone()))?;
    for k in keys {
        let ok = openssl::sign::Verifier::new(digest, k)
            .and_then(|mut v| {
                v.update(m.signed_part.as_bytes())?;
                v.verify(sig)
            })
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
    }
    Err(BindingError::BadSignature)
}

/// Encodes `xml` as `kind` on `destination`, signed with `key` when given.
pub fn encode(
    destination: &Url,
    kind: Kind,
    xml: &str,
    relay_state: Option<&str>,
    key: Option<&PKey<Private>>,
) -> Result<Url, openssl::error::ErrorStack> {
    let mut deflated = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut deflated, xml.as_bytes()).expect("writing to memory");
    let b64 = STANDARD.encode(deflated.finish().expect("writing to memory"));
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair(kind.param(), &b64);
    if let Some(r) = relay_state {
        q.append_pair("RelayState", r);
    }
    let mut query = q.finish();
    if let Some(key) = key {
        let alg = if key.ec_key().is_ok() {
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
        } else {
            RSA_SHA256
        };
        query.push_str("&SigAlg=");
        query.push_str(&url::form_urlencoded::byte_serialize(alg.as_bytes()).collect::<String>());
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), key)?;
        signer.update(query.as_bytes())?;
        let sig = STANDARD.encode(signer.sign_to_vec()?);
        query.push_str("&Signature=");
        query.push_str(&url::form_urlencoded::byte_serialize(sig.as_bytes()).collect::<String>());
    }
    let mut url = destination.clone();
    let joined = match url.query() {
        Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
        _ => query,
    };
    url.set_query(Some(&joined));
    Ok(url)
}
