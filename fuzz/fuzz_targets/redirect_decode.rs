//! Bytes (a raw query string) → `redirect::decode` as both kinds, then the logout parsers
//! on what decodes. Never panics; nothing is signed without a `Signature` parameter; what
//! verifies against the IdP key is the IdP's own message (a seed).

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sidegate::login::saml::logout;
use sidegate::login::saml::redirect::{self, BindingError, Kind};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let has_signature = query
        .split('&')
        .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == "Signature");
    for kind in [Kind::Request, Kind::Response] {
        let Ok(m) = redirect::decode(query, kind) else {
            continue;
        };
        let request = logout::parse_request(&m.xml);
        let response = logout::parse_response(&m.xml);
        let verified = redirect::verify(&m, common::idp_public(), true);
        if !has_signature {
            assert!(!m.is_signed(), "signed without a Signature parameter");
            assert_eq!(verified, Err(BindingError::Unsigned));
        }
        if verified.is_ok() {
            let issuer = match kind {
                Kind::Request => request.ok().map(|r| r.issuer),
                Kind::Response => response.ok().and_then(|r| r.issuer),
            };
            assert_eq!(
                issuer.as_deref(),
                Some(common::IDP_ENTITY),
                "verified: {query}"
            );
        }
    }
});
