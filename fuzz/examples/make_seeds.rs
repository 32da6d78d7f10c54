//! Writes the fuzzing fixtures and seeds: a fresh IdP key (kept nowhere), its certificate
//! and metadata under `fixtures/`, really signed Responses under `corpus/saml_response/`
//! and Redirect-binding logout queries under `corpus/redirect_decode/`.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds` (then rebuild the
//! targets: they embed `fixtures/`); every seed is checked before the fixtures are written.
//! `... --example make_seeds -- --check` only checks the committed seeds against the
//! current code.

#[path = "../../tests/it/support/saml_craft.rs"]
#[allow(dead_code)]
mod saml_craft;

#[path = "../fuzz_targets/common.rs"]
mod common;

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::{asn1::Asn1Time, bn::BigNum, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
use saml_craft::{Craft, Sign, TestIdpKey};
use sidegate::login::saml::{logout, redirect};

/// An RSA-2048 IdP key with a certificate valid for a century (the targets check at 2030).
fn idp_key() -> (TestIdpKey, String, PKey<openssl::pkey::Private>) {
    let rsa = Rsa::generate(2048).unwrap();
    let key_der = rsa.private_key_to_der().unwrap();
    let pkey = PKey::from_rsa(rsa).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "sidegate fuzz idp")
        .unwrap();
    let name = name.build();
    let mut b = x509::X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&pkey).unwrap();
    b.set_not_before(&Asn1Time::from_unix(1_700_000_000).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(36_500).unwrap())
        .unwrap();
    b.sign(&pkey, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    let pem = String::from_utf8(cert.to_pem().unwrap()).unwrap();
    let key = TestIdpKey {
        key_der,
        cert_b64: STANDARD.encode(cert.to_der().unwrap()),
        key_pem: String::from_utf8(pkey.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        cert_pem: pem.clone(),
    };
    (key, pem, pkey)
}

/// The Response seeds: file name, what is signed, whether it answers `REQ_ID`.
const RESPONSES: [(&str, Sign, bool); 4] = [
    ("seed-both", Sign::Both, true),
    ("seed-assertion", Sign::Assertion, true),
    ("seed-response", Sign::Response, true),
    ("seed-unsolicited", Sign::Both, false),
];

/// The Redirect-binding seeds: file name, kind, signed by the IdP.
const QUERIES: [(&str, redirect::Kind, bool); 2] = [
    ("seed-request-signed", redirect::Kind::Request, true),
    ("seed-response-unsigned", redirect::Kind::Response, false),
];

/// Every seed is what the targets expect: accepted with the seeds' identity, or decoded
/// and (when signed) verified against the fixture key.
fn check_seeds(root: &Path, metadata: &str, keys: &[PKey<openssl::pkey::Public>]) {
    let sp = common::saml_with(metadata);
    for (name, _, irt) in RESPONSES {
        let xml = std::fs::read_to_string(root.join("corpus/saml_response").join(name)).unwrap();
        let v = sp
            .check(&xml, irt.then_some(common::REQ_ID), common::now())
            .unwrap_or_else(|e| panic!("{name} is not accepted: {e}"));
        common::assert_seed_identity(&v);
    }
    for (name, kind, signed) in QUERIES {
        let q = std::fs::read_to_string(root.join("corpus/redirect_decode").join(name)).unwrap();
        let m = redirect::decode(&q, kind).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.is_signed(), signed, "{name}");
        redirect::verify(&m, keys, signed).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::env::args().any(|a| a == "--check") {
        let metadata = std::fs::read_to_string(root.join("fixtures/idp-metadata.xml")).unwrap();
        let pem = std::fs::read(root.join("fixtures/idp-cert.pem")).unwrap();
        let key = openssl::x509::X509::from_pem(&pem)
            .unwrap()
            .public_key()
            .unwrap();
        check_seeds(root, &metadata, &[key]);
        println!("the committed seeds are accepted by the current code");
        return;
    }
    let (key, cert_pem, pkey) = idp_key();
    let metadata = saml_craft::metadata(common::IDP_ENTITY, &[&key]);

    // Responses: fixed IDs so the seeds differ only by what is signed.
    let dir = root.join("corpus/saml_response");
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Craft::new(common::now(), common::SP_ENTITY, common::ACS);
    c.response_id = "_r1".into();
    c.assertion_id = "_a1".into();
    for (name, what, irt) in RESPONSES {
        let mut c = c.clone();
        if !irt {
            c.in_response_to = None;
        }
        std::fs::write(dir.join(name), c.signed(&key, what)).unwrap();
    }

    // Logout messages on the Redirect binding: a signed LogoutRequest from the IdP, and
    // an unsigned LogoutResponse.
    let dir = root.join("corpus/redirect_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let dest = url::Url::parse(common::SLO).unwrap();
    let at = chrono::DateTime::<chrono::Utc>::from(common::now());
    for (name, kind, signed) in QUERIES {
        let xml = match kind {
            redirect::Kind::Request => logout::request_xml(
                "_l1",
                at,
                common::SLO,
                common::IDP_ENTITY,
                common::NAME_ID,
                None,
                "_session-1",
            ),
            redirect::Kind::Response => logout::response_xml(
                "_l2",
                at,
                common::SLO,
                common::IDP_ENTITY,
                "sg_logout-1",
                logout::SUCCESS,
            ),
        };
        let url =
            redirect::encode(&dest, kind, &xml, Some("/after"), signed.then_some(&pkey)).unwrap();
        std::fs::write(dir.join(name), url.query().unwrap()).unwrap();
    }

    let public = PKey::public_key_from_der(&pkey.public_key_to_der().unwrap()).unwrap();
    check_seeds(root, &metadata, &[public]);
    std::fs::write(root.join("fixtures/idp-metadata.xml"), &metadata).unwrap();
    std::fs::write(root.join("fixtures/idp-cert.pem"), &cert_pem).unwrap();
    println!("fixtures and seeds written under {}", root.display());
}
