//! The identity headers a signer builds and applies, checked directly: every configured
//! name gets its value, the compatibility headers carry the same assertion, an absent email
//! or extra claim sends no header, and a value with bytes a header cannot carry is sent
//! empty (its claim stays intact in the assertion).

use std::time::SystemTime;

use base64::Engine;
use http::HeaderMap;
use serde_json::{json, Value};
use sidegate::identity::Identity;
use sidegate::sign::Signer;

use crate::support::{config_text, load, Keys};

fn signer() -> Signer {
    let keys = Keys::new();
    let text = config_text(
        "https://app.example.com",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        &[
            ("assertion", "compat_headers = [\"pomerium\", \"iap\"]"),
            ("headers", "user = \"Remote-User\""),
            (
                "identity",
                "[[identity.extra]]\nname = \"department\"\nheader = \"X-Department\"\n\
                 [[identity.extra]]\nname = \"cost_center\"\nheader = \"X-Cost-Center\"\n\
                 [[identity.extra]]\nname = \"level\"",
            ),
        ],
    );
    let cfg = load(&text, &keys);
    Signer::new(cfg.assertion, cfg.headers, "https://app.example.com".into())
}

fn identity(user: &str, email: Option<&str>, extra: Vec<(&str, Value)>) -> Identity {
    Identity {
        issuer: "https://idp.example.com".into(),
        subject: "248289761001".into(),
        user: user.into(),
        email: email.map(str::to_string),
        role: "admin".into(),
        teams: vec!["platform".into(), "sre".into()],
        extra: extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn applied(signer: &Signer, key: &str, id: &Identity) -> HeaderMap {
    let mut h = HeaderMap::new();
    signer
        .identity_headers_for(key, id, None, None, SystemTime::now())
        .apply(&mut h);
    h
}

fn text<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

fn claims(h: &HeaderMap) -> Value {
    let jws = text(h, "x-sidegate-assertion").expect("assertion header");
    let payload = jws.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn every_configured_header_gets_its_own_value() {
    let signer = signer();
    let id = identity(
        "alice",
        Some("alice@example.com"),
        vec![("department", json!("R&D")), ("level", json!(3))],
    );
    // Twice: the second apply is the cached entry.
    for _ in 0..2 {
        let h = applied(&signer, "s1", &id);
        assert_eq!(text(&h, "remote-user"), Some("alice"));
        assert_eq!(text(&h, "x-sidegate-email"), Some("alice@example.com"));
        assert_eq!(text(&h, "x-sidegate-role"), Some("admin"));
        assert_eq!(text(&h, "x-sidegate-teams"), Some("platform,sre"));
        assert_eq!(text(&h, "x-department"), Some("R&D"));
        assert_eq!(
            h.get("x-cost-center"),
            None,
            "an absent extra claim sends no header"
        );
        let jws = text(&h, "x-sidegate-assertion").unwrap();
        assert_eq!(text(&h, "x-pomerium-jwt-assertion"), Some(jws));
        assert_eq!(text(&h, "x-goog-iap-jwt-assertion"), Some(jws));
        let c = claims(&h);
        assert_eq!(c["user"], "alice");
        assert_eq!(c["level"], 3);
        assert_eq!(c["groups"], json!(["platform", "sre"]));
        assert_eq!(h.len(), 8, "{h:?}");
    }
}

#[test]
fn no_email_sends_no_email_header_and_the_rest_keep_their_names() {
    let signer = signer();
    let id = identity("bob", None, vec![("cost_center", json!(["cc-1", "cc-2"]))]);
    let h = applied(&signer, "s2", &id);
    assert_eq!(h.get("x-sidegate-email"), None);
    assert_eq!(text(&h, "remote-user"), Some("bob"));
    assert_eq!(text(&h, "x-sidegate-teams"), Some("platform,sre"));
    assert_eq!(text(&h, "x-cost-center"), Some("cc-1,cc-2"));
    assert_eq!(h.get("x-department"), None);
}

#[test]
fn a_value_a_header_cannot_carry_is_sent_empty_and_stays_in_the_assertion() {
    let signer = signer();
    let id = identity(
        "mallory\r\nX-Sidegate-Role: admin",
        Some("m@example.com"),
        vec![("department", json!("ops\u{7f}"))],
    );
    let h = applied(&signer, "s3", &id);
    assert_eq!(text(&h, "remote-user"), Some(""));
    assert_eq!(text(&h, "x-department"), Some(""));
    // The values after the bad ones are still in their own headers.
    assert_eq!(text(&h, "x-sidegate-email"), Some("m@example.com"));
    assert_eq!(text(&h, "x-sidegate-role"), Some("admin"));
    assert_eq!(claims(&h)["user"], "mallory\r\nX-Sidegate-Role: admin");
}
