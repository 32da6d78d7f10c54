//! Bearer tokens for API clients: real tokens from npm `oidc-provider` (client credentials,
//! a JWT access token verified against its JWKS and an opaque one through RFC 7662
//! introspection), and crafted bad tokens from the in-test issuer (`fake_idp`, a mock by
//! necessity: no real IdP signs `alg: none` or a wrong audience on request).

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::support::fake_idp::{FakeIdp, TestKey};
use crate::support::op::{verify_with_jose, Op};
use crate::support::upstream::{header_values, Upstream};
use crate::support::{
    client, config_text, load, session_cookie, Bound, Keys, Sidecar, DEAD_ISSUER,
};

const AUD: &str = "https://api.sidegate.test";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct World {
    sidecar: Sidecar,
    upstream: Upstream,
    text: String,
    keys: Keys,
}

async fn world(bearer: &str) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &[]) + bearer;
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    World {
        sidecar,
        upstream,
        text,
        keys,
    }
}

impl World {
    async fn call(&self, path: &str, auth: &str) -> reqwest::Response {
        client()
            .get(self.sidecar.url(path))
            .header("authorization", auth)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
    }
}

fn at_header(kid: &str) -> jsonwebtoken::Header {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.into());
    h
}

fn good(iss: &str) -> Value {
    let n = now();
    json!({"iss": iss, "aud": AUD, "sub": "svc-1", "client_id": "svc", "iat": n - 5, "exp": n + 600,
           "preferred_username": "reporting-bot", "role": "developer", "groups": ["api-clients"]})
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn fake_world() -> (FakeIdp, TestKey, World) {
    let k1 = TestKey::new("k1");
    let idp = FakeIdp::start(json!({"keys": [k1.jwk.clone()]})).await;
    let w = world(&format!(
        "\n[[bearer.issuers]]\nissuer = \"{}\"\naudience = \"{AUD}\"\njwks_min_refresh_interval = \"1h\"\n",
        idp.issuer()
    ))
    .await;
    (idp, k1, w)
}

#[tokio::test]
async fn a_valid_access_token_is_forwarded_with_signed_identity_headers() {
    let (idp, k1, w) = fake_world().await;
    let claims = good(&idp.issuer());
    let token = k1.sign_with(at_header("k1"), &claims);
    let r = w.call("/api/report", &format!("Bearer {token}")).await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["reporting-bot"]);
    assert_eq!(header_values(&echo, "x-sidegate-role"), ["developer"]);
    assert_eq!(header_values(&echo, "x-sidegate-teams"), ["api-clients"]);
    let assertion = header_values(&echo, "x-sidegate-assertion").remove(0);
    let origin = w.sidecar.url("");
    let v = verify_with_jose(
        &w.sidecar.url("/.sidegate/jwks.json"),
        &assertion,
        &origin,
        &origin,
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["payload"]["sub"], "svc-1");
    assert!(
        v["payload"]["exp"].as_i64().unwrap() <= claims["exp"].as_i64().unwrap(),
        "the assertion must not outlive the token: {v}"
    );
    // The same token again: served from the cache, no second JWKS fetch.
    let hits = idp.jwks_hits();
    assert_eq!(
        w.call("/api/report", &format!("Bearer {token}"))
            .await
            .status(),
        200
    );
    assert_eq!(idp.jwks_hits(), hits);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_invalid_token_and_never_reach_the_app() {
    let (idp, k1, w) = fake_world().await;
    let iss = idp.issuer();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good(&iss);
        f(&mut c);
        c
    };
    let other = TestKey::new("k1");
    let hs_secret = k1.jwk.to_string();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some("k1".into());
    let mut id_typ = at_header("k1");
    id_typ.typ = Some("JWT".into());
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(
                &json!({"alg": "none", "typ": "at+jwt", "kid": "k1"}),
                &good(&iss),
            ),
        ),
        (
            "HS256 keyed with the public JWK (HS/RS confusion)",
            jsonwebtoken::encode(
                &hs,
                &good(&iss),
                &jsonwebtoken::EncodingKey::from_secret(hs_secret.as_bytes()),
            )
            .unwrap(),
        ),
        (
            "wrong audience",
            k1.sign_with(
                at_header("k1"),
                &with(&|c| c["aud"] = json!("https://other.api")),
            ),
        ),
        (
            "wrong issuer",
            k1.sign_with(
                at_header("k1"),
                &with(&|c| c["iss"] = json!("http://127.0.0.1:9")),
            ),
        ),
        (
            "expired",
            k1.sign_with(at_header("k1"), &with(&|c| c["exp"] = json!(now() - 3600))),
        ),
        (
            "missing exp",
            k1.sign_with(
                at_header("k1"),
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        (
            "not yet valid",
            k1.sign_with(at_header("k1"), &with(&|c| c["nbf"] = json!(now() + 3600))),
        ),
        (
            "missing sub",
            k1.sign_with(
                at_header("k1"),
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
        ),
        (
            "an ID token (typ JWT, nonce)",
            k1.sign_with(id_typ.clone(), &with(&|c| c["nonce"] = json!("n-1"))),
        ),
        ("typ JWT without nonce", k1.sign_with(id_typ, &good(&iss))),
        (
            "at+jwt carrying a nonce",
            k1.sign_with(at_header("k1"), &with(&|c| c["nonce"] = json!("n-1"))),
        ),
        (
            "right kid, another key's signature",
            other.sign_with(at_header("k1"), &good(&iss)),
        ),
        (
            "opaque token, no introspection",
            "2YotnFZFEjr1zCsicMWpAA".into(),
        ),
        ("garbage", "not.a.jwt".into()),
    ];
    let hits_before = w.upstream.hits.load(Ordering::SeqCst);
    for (name, token) in &cases {
        let r = w.call("/api/report", &format!("Bearer {token}")).await;
        assert_eq!(r.status(), 401, "{name}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(www.contains("invalid_token"), "{name}: {www}");
    }
    assert_eq!(
        w.upstream.hits.load(Ordering::SeqCst),
        hits_before,
        "a refused token reached the app"
    );

    // A bad token never falls back to a valid session cookie.
    let cookie = session_cookie(&w.text, &w.keys, "alice", "admin", SystemTime::now());
    let r = client()
        .get(w.sidecar.url("/api/report"))
        .header("cookie", cookie)
        .header("authorization", format!("Bearer {}", cases[0].1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn unknown_kid_refreshes_the_jwks_once_then_rate_limits() {
    let (idp, k1, w) = fake_world().await;
    let iss = idp.issuer();
    // Keys loaded (warm-up at start or the first token).
    let t1 = k1.sign_with(at_header("k1"), &good(&iss));
    assert_eq!(w.call("/api", &format!("Bearer {t1}")).await.status(), 200);
    let loaded = idp.jwks_hits();
    assert_eq!(loaded, 1, "one JWKS fetch to start with");

    // The issuer rotates to k2: the first k2 token triggers one refresh and is accepted.
    let k2 = TestKey::new("k2");
    *idp.state.jwks.lock().unwrap() = json!({"keys": [k1.jwk.clone(), k2.jwk.clone()]});
    let t2 = k2.sign_with(at_header("k2"), &good(&iss));
    assert_eq!(w.call("/api", &format!("Bearer {t2}")).await.status(), 200);
    assert_eq!(idp.jwks_hits(), 2);

    // A flood of unknown kids: refused, and no further fetch within the interval.
    for i in 0..25 {
        let k = TestKey::new(&format!("flood-{i}"));
        let t = k.sign_with(at_header(&format!("flood-{i}")), &good(&iss));
        assert_eq!(w.call("/api", &format!("Bearer {t}")).await.status(), 401);
    }
    assert_eq!(
        idp.jwks_hits(),
        2,
        "unknown kids must not hammer the issuer"
    );
}

#[tokio::test]
async fn bearer_tokens_work_through_forward_auth() {
    let (idp, k1, w) = fake_world().await;
    let token = k1.sign_with(at_header("k1"), &good(&idp.issuer()));
    let r = w.call("/.sidegate/auth", &format!("Bearer {token}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sidegate-user"], "reporting-bot");
    let r = w.call("/.sidegate/auth", "Bearer not-a-token").await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn client_credentials_tokens_from_a_real_op_jwt_and_opaque() {
    let op = Op::start_with("http://127.0.0.1:9/cb", &[("OP_API", "1")]).await;
    let api = &op.ready["api"];
    let (cid, secret) = (
        api["client_id"].as_str().unwrap(),
        api["client_secret"].as_str().unwrap(),
    );
    let jwt_res = api["resources"]["jwt"].as_str().unwrap();
    let opaque_res = api["resources"]["opaque"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("introspector-secret"),
        api["introspector_secret"].as_str().unwrap(),
    )
    .unwrap();
    let bearer = format!(
        "\n[[bearer.issuers]]\nissuer = \"{iss}\"\naudience = \"{jwt_res}\"\n\
         \n[[bearer.issuers]]\nissuer = \"{iss}\"\naudience = \"{opaque_res}\"\nintrospection = true\n\
         introspection_client_id = \"{icid}\"\nintrospection_client_secret_file = \"{isec}\"\n",
        iss = op.issuer,
        icid = api["introspector_id"].as_str().unwrap(),
        isec = dir.path().join("introspector-secret").display(),
    );
    let w = world(&bearer).await;
    let token = |resource: String| {
        let (iss, cid, secret) = (op.issuer.clone(), cid.to_string(), secret.to_string());
        async move {
            let r: Value = client()
                .post(format!("{iss}/token"))
                .basic_auth(cid, Some(secret))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "api:read"),
                    ("resource", &resource),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{r}"))
                .to_string()
        }
    };
    for res in [jwt_res, opaque_res] {
        let t = token(res.to_string()).await;
        assert_eq!(
            t.split('.').count() == 3,
            res == jwt_res,
            "token shape for {res}"
        );
        let r = w.call("/api/report", &format!("Bearer {t}")).await;
        assert_eq!(r.status(), 200, "{res}");
        let echo: Value = r.json().await.unwrap();
        assert_eq!(header_values(&echo, "x-sidegate-user"), [cid], "{res}");
        assert_eq!(
            header_values(&echo, "x-sidegate-role"),
            ["developer"],
            "{res}"
        );
    }
    // A revoked opaque token is refused by introspection (after the short cache).
    let t = token(opaque_res.to_string()).await;
    let r = client()
        .post(format!("{}/token/revocation", op.issuer))
        .basic_auth(cid, Some(secret))
        .form(&[("token", t.as_str())])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "revocation: {}", r.status());
    assert_eq!(
        w.call("/api/report", &format!("Bearer {t}")).await.status(),
        401
    );
    // A tampered opaque token is not active at the issuer.
    let garbage = format!("{}x", token(opaque_res.to_string()).await);
    assert_eq!(
        w.call("/api/report", &format!("Bearer {garbage}"))
            .await
            .status(),
        401
    );
}
