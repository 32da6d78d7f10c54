//! What both targets and the seed generator share: the SP under test, the IdP whose key
//! signed the seeds (`fixtures/`), the seeds' clock and the identity they carry.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::pkey::{PKey, Public};
use sidegate::login::saml::{Saml, SpUrls, Verified};

pub const ORIGIN: &str = "http://127.0.0.1:4180";
pub const PREFIX: &str = "/.sidegate";
pub const SP_ENTITY: &str = "http://127.0.0.1:4180/.sidegate/saml/metadata";
pub const ACS: &str = "http://127.0.0.1:4180/.sidegate/saml/acs";
pub const SLO: &str = "http://127.0.0.1:4180/.sidegate/saml/slo";
/// As `tests/it/support/saml_craft.rs`.
pub const IDP_ENTITY: &str = "https://idp.test/metadata";
pub const REQ_ID: &str = "sg_request-1";

/// IdP metadata pinning the certificate that signed the seeds.
pub const METADATA: &str = include_str!("../fixtures/idp-metadata.xml");
pub const CERT_PEM: &str = include_str!("../fixtures/idp-cert.pem");

/// The seeds' IssueInstant, 2030-01-01T00:00:00Z: the targets check at this instant, so
/// the seeds stay inside every time window however old they get.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

/// The identity every seed carries (saml_craft's defaults). Anything the check accepts
/// can only be one of the seeds, so it must be exactly this.
pub const NAME_ID: &str = "alice";
pub fn attributes() -> Vec<(String, Vec<String>)> {
    let one = |n: &str, v: &[&str]| (n.to_string(), v.iter().map(|s| s.to_string()).collect());
    vec![
        one("uid", &["alice"]),
        one("email", &["alice@example.test"]),
        one("role", &["admin"]),
        one("groups", &["admins", "devs"]),
    ]
}

pub fn assert_seed_identity(v: &Verified) {
    assert_eq!(v.name_id, NAME_ID, "accepted with another NameID: {v:?}");
    assert_eq!(
        v.attributes,
        attributes(),
        "accepted with other attributes: {v:?}"
    );
    assert_eq!(v.issuer, IDP_ENTITY, "accepted from another issuer: {v:?}");
}

/// A SAML-only sidegate config (keys in a temp dir that only lives through `load`).
pub fn saml_with(metadata: &str) -> Saml {
    let dir = tempfile::tempdir().expect("temp dir");
    let g = sidegate::keys::generate(false);
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("cookie-secrets", &format!("{}\n", g.cookie_secret));
    write("assertion-key.pem", &g.signing_key_pem);
    write("idp.xml", metadata);
    let text = format!(
        r#"
[server]
public_url = "{ORIGIN}"
[upstream]
url = "http://127.0.0.1:9"
[session]
secrets_file = "cookie-secrets"
cookie_secure = false
[assertion]
signing_keys_file = "assertion-key.pem"
[saml]
idp_metadata_file = "idp.xml"
"#
    );
    let cfg = sidegate::config::load(&text, &sidegate::config::Env::new(), dir.path())
        .unwrap_or_else(|e| panic!("fuzz config invalid: {e}"));
    Saml::new(
        cfg.saml.expect("[saml] configured"),
        SpUrls::new(ORIGIN, PREFIX),
    )
    .expect("SAML SP set up")
}

/// The SP for the committed fixtures, built once.
pub fn saml() -> &'static Saml {
    static S: OnceLock<Saml> = OnceLock::new();
    S.get_or_init(|| saml_with(METADATA))
}

/// The IdP's public key, for Redirect-binding signatures.
pub fn idp_public() -> &'static [PKey<Public>] {
    static K: OnceLock<Vec<PKey<Public>>> = OnceLock::new();
    K.get_or_init(|| {
        let cert = openssl::x509::X509::from_pem(CERT_PEM.as_bytes()).expect("fixture cert");
        vec![cert.public_key().expect("public key")]
    })
}
