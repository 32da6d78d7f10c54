//! An in-test OpenID provider that signs whatever ID token the test crafts, for the negative
//! cases a certified IdP would never produce (wrong audience, `alg: none`, …). It answers
//! discovery, JWKS (counting fetches), authorize (straight back with a code), token and
//! userinfo. Mock by necessity: no real IdP can be told to misbehave; the real flows are in
//! `oidc.rs` against npm `oidc-provider`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A P-256 key with its kid.
#[derive(Clone)]
pub struct TestKey {
    pkcs8: Vec<u8>,
    pub jwk: Value,
}

impl TestKey {
    pub fn new(kid: &str) -> TestKey {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let p = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])});
        TestKey {
            pkcs8: doc.as_ref().to_vec(),
            jwk,
        }
    }

    /// Signs `claims` with ES256 and the given header (its `alg` is forced to ES256).
    pub fn sign_with(&self, mut header: jsonwebtoken::Header, claims: &Value) -> String {
        header.alg = jsonwebtoken::Algorithm::ES256;
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .unwrap()
    }

    /// Signs `claims` with ES256 under `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(
            &h,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .unwrap()
    }
}

type Craft = Box<dyn Fn(&str, &str) -> String + Send>;

/// Shared, test-controlled behaviour.
pub struct State {
    pub issuer: String,
    pub jwks: Mutex<Value>,
    pub jwks_hits: AtomicUsize,
    /// (issuer, nonce) → id_token.
    pub craft: Mutex<Craft>,
    pub userinfo: Mutex<Value>,
    nonce: Mutex<String>,
    /// Every request: (path, its `x-api-key` header).
    pub log: Mutex<Vec<(String, Option<String>)>>,
}

pub struct FakeIdp {
    pub state: Arc<State>,
}

impl FakeIdp {
    pub async fn start(jwks: Value) -> FakeIdp {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(State {
            issuer: format!("http://{addr}"),
            jwks: Mutex::new(jwks),
            jwks_hits: AtomicUsize::new(0),
            craft: Mutex::new(Box::new(|_, _| String::new())),
            userinfo: Mutex::new(json!({})),
            nonce: Mutex::new(String::new()),
            log: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        FakeIdp { state }
    }

    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    pub fn set_craft(&self, f: impl Fn(&str, &str) -> String + Send + 'static) {
        *self.state.craft.lock().unwrap() = Box::new(f);
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }
}

/// Baseline claims a correct IdP would send.
pub fn good_claims(issuer: &str, nonce: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    json!({"iss": issuer, "aud": "sidegate", "sub": "u-1", "nonce": nonce, "iat": now - 5, "exp": now + 300,
           "preferred_username": "erin", "email": "erin@example.test", "role": "developer", "groups": ["devs"]})
}

fn json_resp(v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let api_key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    st.log.lock().unwrap().push((path.clone(), api_key));
    let query: std::collections::HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let base = st.issuer.clone();
    Ok(match path.as_str() {
        "/.well-known/openid-configuration" => json_resp(json!({
            "issuer": base, "authorization_endpoint": format!("{base}/authorize"), "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks"), "userinfo_endpoint": format!("{base}/userinfo"),
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })),
        "/jwks" => {
            st.jwks_hits.fetch_add(1, Ordering::SeqCst);
            json_resp(st.jwks.lock().unwrap().clone())
        }
        "/authorize" => {
            *st.nonce.lock().unwrap() = query.get("nonce").cloned().unwrap_or_default();
            let loc = format!("{}?code=c1&state={}", query["redirect_uri"], query["state"]);
            Response::builder()
                .status(302)
                .header("location", loc)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        "/token" => {
            let _ = req.into_body().collect().await;
            let nonce = st.nonce.lock().unwrap().clone();
            let token = (st.craft.lock().unwrap())(&base, &nonce);
            json_resp(
                json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 300, "id_token": token}),
            )
        }
        "/userinfo" => json_resp(st.userinfo.lock().unwrap().clone()),
        _ => Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    })
}
