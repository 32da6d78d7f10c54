//! Crafted ID tokens through the whole HTTP flow: a bad token is a 403 with no session and
//! the app never sees the request; userinfo `sub` must match; an unknown `kid` triggers one
//! JWKS refresh, and a flood of them no more.

use std::sync::atomic::Ordering;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use crate::support::browser::Browser;
use crate::support::fake_idp::{good_claims, FakeIdp, TestKey};
use crate::support::upstream::{header_values, Upstream};
use crate::support::{config_text, load, Bound, Keys, Sidecar};

struct World {
    idp: FakeIdp,
    sidecar: Sidecar,
    upstream: Upstream,
    _keys: Keys,
}

async fn world(key: &TestKey, extra: &[(&str, &str)]) -> World {
    let idp = FakeIdp::start(json!({"keys": [key.jwk.clone()]})).await;
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let mut extra = extra.to_vec();
    extra.push(("oidc", "allowed_algs = [\"ES256\"]"));
    let cfg = load(
        &config_text(&bound.url(), &upstream.url(), &idp.issuer(), &extra),
        &keys,
    );
    let sidecar = Sidecar::start(bound, cfg);
    World {
        idp,
        sidecar,
        upstream,
        _keys: keys,
    }
}

async fn login(w: &World) -> (u16, bool) {
    let mut b = Browser::new();
    let page = b.navigate(&w.sidecar.url("/"), "-", "-").await;
    let has_session = b
        .cookie_header(&w.sidecar.url("/"))
        .contains("_sidegate=v1");
    (page.status, has_session)
}

#[tokio::test]
async fn crafted_id_tokens_are_refused_without_a_session() {
    let key = TestKey::new("k1");
    let other = TestKey::new("k1");
    let w = world(&key, &[]).await;
    let cases: Vec<(
        &str,
        Box<dyn Fn(&TestKey, &TestKey, &str, &str) -> String + Send + Sync>,
    )> = vec![
        (
            "wrong aud",
            Box::new(|k, _, iss, n| {
                let mut c = good_claims(iss, n);
                c["aud"] = json!("someone-else");
                k.sign("k1", &c)
            }),
        ),
        (
            "wrong iss",
            Box::new(|k, _, _, n| k.sign("k1", &good_claims("http://127.0.0.1:1", n))),
        ),
        (
            "expired",
            Box::new(|k, _, iss, n| {
                let mut c = good_claims(iss, n);
                c["exp"] = json!(c["iat"].as_i64().unwrap() - 600);
                k.sign("k1", &c)
            }),
        ),
        (
            "nonce mismatch",
            Box::new(|k, _, iss, _| k.sign("k1", &good_claims(iss, "not-the-nonce"))),
        ),
        (
            "foreign key, same kid",
            Box::new(|_, o, iss, n| o.sign("k1", &good_claims(iss, n))),
        ),
        (
            "alg none",
            Box::new(|_, _, iss, n| {
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#),
                    URL_SAFE_NO_PAD.encode(good_claims(iss, n).to_string())
                )
            }),
        ),
        (
            "several aud, no azp",
            Box::new(|k, _, iss, n| {
                let mut c = good_claims(iss, n);
                c["aud"] = json!(["sidegate", "other"]);
                k.sign("k1", &c)
            }),
        ),
    ];
    for (what, craft) in cases {
        let (key_c, other_c) = (key.clone(), other.clone());
        w.idp
            .set_craft(move |iss, n| craft(&key_c, &other_c, iss, n));
        let (status, session) = login(&w).await;
        assert_eq!(status, 403, "{what}: login must be refused");
        assert!(!session, "{what}: no session cookie may be set");
    }
    assert_eq!(
        w.upstream.hits.load(Ordering::SeqCst),
        0,
        "refused logins never reach the app"
    );
    // The same flow with a good token works, so the refusals above are the checks at work.
    let k = key.clone();
    w.idp
        .set_craft(move |iss, n| k.sign("k1", &good_claims(iss, n)));
    assert_eq!(login(&w).await, (200, true));
}

#[tokio::test]
async fn userinfo_with_another_subject_is_refused() {
    let key = TestKey::new("k1");
    let w = world(&key, &[("oidc", "userinfo = true")]).await;
    let k = key.clone();
    w.idp
        .set_craft(move |iss, n| k.sign("k1", &good_claims(iss, n)));
    *w.idp.state.userinfo.lock().unwrap() =
        json!({"sub": "someone-else", "email": "x@example.test"});
    assert_eq!(login(&w).await, (403, false));
    *w.idp.state.userinfo.lock().unwrap() = json!({"sub": "u-1"});
    assert_eq!(login(&w).await, (200, true));
}

#[tokio::test]
async fn unknown_kid_refreshes_the_jwks_once_and_a_flood_does_not_refetch() {
    let k1 = TestKey::new("k1");
    let w = world(&k1, &[]).await;
    let first = k1.clone();
    w.idp
        .set_craft(move |iss, n| first.sign("k1", &good_claims(iss, n)));
    assert_eq!(login(&w).await, (200, true));
    let base = w.idp.jwks_hits();
    // The IdP rotates: k2 appears and signs. One refresh picks it up.
    let k2 = TestKey::new("k2");
    *w.idp.state.jwks.lock().unwrap() = json!({"keys": [k1.jwk.clone(), k2.jwk.clone()]});
    let signer = k2.clone();
    w.idp
        .set_craft(move |iss, n| signer.sign("k2", &good_claims(iss, n)));
    let mut b = Browser::new();
    let page = b.navigate(&w.sidecar.url("/"), "-", "-").await;
    assert_eq!(
        page.status, 200,
        "a token signed with the rotated key is accepted after one refresh"
    );
    let echo: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["erin"]);
    assert_eq!(w.idp.jwks_hits(), base + 1);
    // A flood of unknown kids within the refresh interval causes no further fetch.
    let flood = k2.clone();
    w.idp
        .set_craft(move |iss, n| flood.sign("k-unknown", &good_claims(iss, n)));
    for _ in 0..10 {
        assert_eq!(login(&w).await.0, 403);
    }
    assert_eq!(
        w.idp.jwks_hits(),
        base + 1,
        "unknown kids must not cause a JWKS fetch flood"
    );
}
