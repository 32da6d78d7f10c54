//! The verifier examples in `examples/` against a live sidegate behind the real
//! `oidc-provider`: after alice's login, the Python module (plain, through the custom SSO
//! handler and through the FastAPI dependency) and the Node one accept the assertion the app
//! received, and refuse a token signed by an unknown key, expired or foreign-audience tokens
//! signed with sidegate's own key, `alg: none`, HS256 and no assertion at all, each with its
//! reason code. Needs `scripts/test-deps.sh` (the venv at `.run/py`, `examples/node`'s jose).

use std::path::PathBuf;
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::support::browser::Browser;
use crate::support::fake_idp::TestKey;
use crate::support::op::Op;
use crate::support::upstream::{header_values, Upstream};
use crate::support::{client, config_text, load, repo, Bound, Keys, Sidecar};

struct World {
    sidecar: Sidecar,
    keys: Keys,
    /// sidegate's public origin: the `iss` of every assertion.
    issuer: String,
    /// `[assertion] audience` as the config resolved it.
    audience: String,
    idp: String,
    _upstream: Upstream,
    _op: Op,
}

async fn world(extra: &[(&str, &str)]) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let op = Op::start(&format!("{}/.sidegate/oidc/callback", bound.url())).await;
    let keys = Keys::new();
    let cfg = load(
        &config_text(&bound.url(), &upstream.url(), &op.issuer, extra),
        &keys,
    );
    let audience = cfg.assertion.audience.clone();
    let issuer = bound.url();
    let idp = op.issuer.clone();
    World {
        sidecar: Sidecar::start(bound, cfg),
        keys,
        issuer,
        audience,
        idp,
        _upstream: upstream,
        _op: op,
    }
}

impl World {
    fn jwks_url(&self) -> String {
        self.sidecar.url("/.sidegate/jwks.json")
    }

    /// Logs alice in with the scripted browser; the echo of what the app received.
    async fn alice_at_the_app(&self) -> Value {
        let page = Browser::new()
            .navigate(&self.sidecar.url("/app"), "alice", "alice-pw")
            .await;
        assert_eq!(
            page.status, 200,
            "login as alice: {}: {}",
            page.url, page.body
        );
        serde_json::from_str(&page.body).unwrap()
    }

    /// The `kid` sidegate signs with, from its live JWKS.
    async fn live_kid(&self) -> String {
        let jwks: Value = client()
            .get(self.jwks_url())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"][0]["kid"]
            .as_str()
            .expect("kid in the JWKS")
            .to_string()
    }

    /// `claims` signed with sidegate's own assertion key (the PEM file the config names).
    fn sign_as_sidegate(&self, kid: &str, claims: &Value) -> String {
        let pem = std::fs::read(self.keys.path().join("assertion-key.pem")).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The one assertion the app received, and its claims (not verified: only to copy them).
fn assertion_of(echo: &Value) -> (String, Value) {
    let values = header_values(echo, "x-sidegate-assertion");
    assert_eq!(
        values.len(),
        1,
        "exactly one assertion reaches the app: {values:?}"
    );
    let token = values[0].clone();
    let payload = token.split('.').nth(1).expect("a compact JWS");
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    (token, claims)
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The refusals every example must give: (what, token or none, reason code).
async fn forgeries(w: &World, claims: &Value) -> Vec<(&'static str, Option<String>, &'static str)> {
    let kid = w.live_kid().await;
    let t = now();
    let with = |patch: Value| {
        let mut c = claims.clone();
        c.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        c
    };
    let stranger = TestKey::new("not-sidegate");
    // A key that is not sidegate's, even under sidegate's own kid.
    let impostor = TestKey::new(&kid);
    let jwks_text = client()
        .get(w.jwks_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs,
        claims,
        // The classic confusion: the public JWKS used as an HMAC secret.
        &jsonwebtoken::EncodingKey::from_secret(jwks_text.as_bytes()),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64_json(claims)
    );
    vec![
        ("no assertion", None, "missing"),
        (
            "signed by an unknown key",
            Some(stranger.sign("not-sidegate", claims)),
            "unknown_key",
        ),
        (
            "another key under sidegate's kid",
            Some(impostor.sign(&kid, claims)),
            "bad_signature",
        ),
        (
            "expired (sidegate's key)",
            Some(w.sign_as_sidegate(&kid, &with(json!({"iat": t - 600, "exp": t - 300})))),
            "expired",
        ),
        (
            "another audience (sidegate's key)",
            Some(w.sign_as_sidegate(&kid, &with(json!({"aud": "https://other-app.example"})))),
            "wrong_audience",
        ),
        (
            "another issuer (sidegate's key)",
            Some(w.sign_as_sidegate(
                &kid,
                &with(json!({"iss": "https://other-sidegate.example"})),
            )),
            "wrong_issuer",
        ),
        ("alg none", Some(none), "bad_algorithm"),
        ("HS256 keyed with the JWKS", Some(hs256), "bad_algorithm"),
        ("not a JWT", Some("not-a-jwt".into()), "malformed"),
    ]
}

fn python() -> PathBuf {
    let py = repo().join(".run/py/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/test-deps.sh (it makes the Python venv of examples/python)",
        py.display()
    );
    py
}

fn node_example() -> PathBuf {
    let dir = repo().join("examples/node");
    assert!(
        dir.join("node_modules/jose/package.json").exists(),
        "examples/node/node_modules is missing: run scripts/test-deps.sh (npm ci in examples/node)"
    );
    dir.join("verify.mjs")
}

/// The one JSON line a check printed (exit 0 whatever the verdict).
fn verdict(what: &str, out: Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} exited with {}: stdout {stdout} stderr {stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what} printed no JSON line ({e}): {stdout} stderr {stderr}"))
}

/// Runs `examples/python/check.py`; `mode` is `[]`, `["--sso"]` or `["--fastapi"]`.
async fn check_python(
    w: &World,
    mode: &[&str],
    header: Option<&str>,
    token: Option<&str>,
) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("examples/python/check.py"))
        .args(["--jwks-url", w.jwks_url().as_str()])
        .args(["--issuer", w.issuer.as_str()])
        .args(["--audience", w.audience.as_str()])
        .args(mode);
    if let Some(h) = header {
        cmd.args(["--header", h]);
    }
    if let Some(t) = token {
        cmd.args(["--assertion", t]);
    }
    verdict(
        &format!("check.py {mode:?}"),
        cmd.output().await.expect("run check.py"),
    )
}

/// Runs `node examples/node/verify.mjs --check`.
async fn check_node(w: &World, header: Option<&str>, token: Option<&str>) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(node_example())
        .arg("--check")
        .args(["--jwks-url", w.jwks_url().as_str()])
        .args(["--issuer", w.issuer.as_str()])
        .args(["--audience", w.audience.as_str()]);
    if let Some(h) = header {
        cmd.args(["--header", h]);
    }
    if let Some(t) = token {
        cmd.args(["--assertion", t]);
    }
    verdict(
        "verify.mjs --check",
        cmd.output().await.expect("node must be installed"),
    )
}

fn assert_alice(v: &Value, w: &World, what: &str) {
    assert_eq!(v["ok"], true, "{what} refused alice's real assertion: {v}");
    let id = &v["identity"];
    assert_eq!(id["user"], "alice", "{what}: {v}");
    assert_eq!(id["email"], "alice@example.test", "{what}: {v}");
    assert_eq!(id["role"], "admin", "{what}: {v}");
    assert_eq!(id["teams"], json!(["admins", "devs"]), "{what}: {v}");
    assert_eq!(id["sub"], "alice", "{what}: {v}");
    assert_eq!(id["idp"], w.idp.as_str(), "{what}: {v}");
}

fn assert_refused(v: &Value, reason: &str, what: &str) {
    assert_eq!(v["ok"], false, "{what} was accepted: {v}");
    assert_eq!(v["error"], reason, "{what}: wrong reason: {v}");
}

#[tokio::test]
async fn python_example_accepts_the_real_assertion_and_refuses_forgeries() {
    let w = world(&[]).await;
    let (token, claims) = assertion_of(&w.alice_at_the_app().await);
    assert_eq!(
        w.audience, w.issuer,
        "the audience defaults to the public origin"
    );

    let plain = check_python(&w, &[], None, Some(&token)).await;
    assert_alice(&plain, &w, "sidegate_auth");

    let sso = check_python(&w, &["--sso"], None, Some(&token)).await;
    assert_eq!(sso["ok"], true, "the SSO handler refused alice: {sso}");
    assert_eq!(
        sso["identity"],
        json!({"user_id": "alice", "user_email": "alice@example.test",
               "user_role": "admin", "teams": ["admins", "devs"]}),
        "{sso}"
    );

    let api = check_python(&w, &["--fastapi"], None, Some(&token)).await;
    assert_alice(&api, &w, "the FastAPI dependency");

    // The crafted tokens are valid but for the one thing changed: the same claims signed the
    // same way are accepted.
    let kid = w.live_kid().await;
    let resigned = w.sign_as_sidegate(&kid, &claims);
    assert_alice(
        &check_python(&w, &[], None, Some(&resigned)).await,
        &w,
        "claims re-signed with sidegate's key",
    );

    const MODES: [&[&str]; 3] = [&[], &["--sso"], &["--fastapi"]];
    let cases = forgeries(&w, &claims).await;
    let runs = cases.iter().flat_map(|(what, token, reason)| {
        MODES
            .into_iter()
            .map(move |mode| (what, token, reason, mode))
    });
    // A few processes at a time: each one imports PyJWT and cryptography (and FastAPI).
    let results: Vec<_> = futures_util::stream::iter(runs)
        .map(|(what, token, reason, mode)| {
            let w = &w;
            async move {
                let v = check_python(w, mode, None, token.as_deref()).await;
                (format!("{what} {mode:?}"), reason, v)
            }
        })
        .buffered(3)
        .collect()
        .await;
    for (what, reason, v) in &results {
        assert_refused(v, reason, what);
        if what.ends_with("[\"--fastapi\"]") {
            assert_eq!(v["status"], 401, "{what}: {v}");
            assert!(
                v["www_authenticate"].is_string(),
                "{what}: a 401 names a scheme: {v}"
            );
        }
    }
}

#[tokio::test]
async fn node_example_accepts_the_real_assertion_and_refuses_forgeries() {
    let w = world(&[]).await;
    let (token, claims) = assertion_of(&w.alice_at_the_app().await);
    assert_alice(&check_node(&w, None, Some(&token)).await, &w, "verify.mjs");

    let cases = forgeries(&w, &claims).await;
    let results: Vec<_> = futures_util::stream::iter(cases.iter())
        .map(|(what, token, reason)| {
            let w = &w;
            async move { (what, reason, check_node(w, None, token.as_deref()).await) }
        })
        .buffered(3)
        .collect()
        .await;
    for (what, reason, v) in &results {
        assert_refused(v, reason, &format!("verify.mjs: {what}"));
    }
}

#[tokio::test]
async fn compat_headers_and_a_configured_audience_reach_the_examples() {
    let w = world(&[(
        "assertion",
        "audience = \"urn:example:app\"\ncompat_headers = [\"pomerium\", \"iap\"]",
    )])
    .await;
    assert_eq!(w.audience, "urn:example:app");
    let echo = w.alice_at_the_app().await;
    let (token, _) = assertion_of(&echo);
    // The compatibility names carry the very same token.
    assert_eq!(
        header_values(&echo, "x-pomerium-jwt-assertion"),
        [token.clone()]
    );
    assert_eq!(
        header_values(&echo, "x-goog-iap-jwt-assertion"),
        [token.clone()]
    );

    let v = check_python(&w, &[], Some("X-Pomerium-Jwt-Assertion"), Some(&token)).await;
    assert_alice(&v, &w, "sidegate_auth reading X-Pomerium-Jwt-Assertion");
    let v = check_python(
        &w,
        &["--sso"],
        Some("X-Goog-Iap-Jwt-Assertion"),
        Some(&token),
    )
    .await;
    assert_eq!(v["ok"], true, "the SSO handler reading the IAP header: {v}");
    let v = check_node(&w, Some("x-goog-iap-jwt-assertion"), Some(&token)).await;
    assert_alice(&v, &w, "verify.mjs reading x-goog-iap-jwt-assertion");

    // An app that expects the default audience (the public origin) must refuse it.
    let out = Command::new(python())
        .arg(repo().join("examples/python/check.py"))
        .args(["--jwks-url", w.jwks_url().as_str()])
        .args(["--issuer", w.issuer.as_str()])
        .args(["--audience", w.issuer.as_str()])
        .args(["--assertion", token.as_str()])
        .output()
        .await
        .unwrap();
    assert_refused(
        &verdict("check.py expecting the default audience", out),
        "wrong_audience",
        "an assertion for urn:example:app checked against the public origin",
    );
}
