//! The echo app: the upstream `sidegate dev` protects by default. It shows what an app behind
//! sidegate receives, and verifies `X-Sidegate-Assertion` the way an app should: against
//! sidegate's published JWKS (fetched over HTTP like any app would), issuer and audience.

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use serde::Serialize;
use tokio::sync::RwLock;

use super::page::{self, Page};
use crate::config::HeaderConfig;
use crate::{full_body, Body};

/// What the echo app needs to know about the sidegate in front of it.
pub struct EchoConfig {
    /// sidegate's JWKS URL.
    pub jwks_url: Uri,
    /// Expected `iss` of the assertion (sidegate's public origin).
    pub issuer: String,
    /// Expected `aud` of the assertion.
    pub audience: String,
    /// Header names sidegate sends.
    pub names: HeaderConfig,
    /// sidegate's logout URL (relative).
    pub logout: String,
    /// The development IdPs running, to name the one that signed the session in and offer
    /// the others.
    pub logins: Vec<DevLogin>,
}

/// A development IdP as the echo page shows it.
pub struct DevLogin {
    /// Its issuer (OIDC) or entity ID (SAML): the assertion's `idp` claim.
    pub idp: String,
    /// Its protocol.
    pub name: &'static str,
    /// sidegate's URL (relative) that logs out and signs in again through it.
    pub switch: String,
}

/// The echo app with its JWKS cache.
pub struct Echo {
    cfg: EchoConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
    jwks: RwLock<Option<JwkSet>>,
}

/// Outcome of checking the assertion header.
#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Verdict {
    /// Signature, issuer, audience and expiry all check out.
    Verified {
        kid: String,
        claims: serde_json::Value,
    },
    /// Present but not acceptable.
    Rejected { reason: String },
    /// No assertion header (the request did not come through sidegate's session path).
    Missing,
}

#[derive(Serialize)]
struct Report {
    dev: bool,
    method: String,
    path: String,
    identity: Identity,
    assertion: Verdict,
    headers: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Identity {
    user: Option<String>,
    email: Option<String>,
    role: Option<String>,
    teams: Vec<String>,
}

fn header_text(h: &HeaderMap, name: &http::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Echo {
    /// An echo app verifying against the sidegate described by `cfg`.
    pub fn new(cfg: EchoConfig) -> Self {
        Echo {
            cfg,
            client: Client::builder(TokioExecutor::new()).build_http(),
            jwks: RwLock::new(None),
        }
    }

    /// Serves one request (any path, any method): HTML, or JSON when asked for.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let h = req.headers();
        let names = &self.cfg.names;
        let assertion = match header_text(h, &names.assertion) {
            Some(token) => self.verify(&token).await,
            None => Verdict::Missing,
        };
        let report = Report {
            dev: true,
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            identity: Identity {
                user: header_text(h, &names.user),
                email: header_text(h, &names.email),
                role: header_text(h, &names.role),
                teams: header_text(h, &names.teams)
                    .map(|t| {
                        t.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            assertion,
            headers: h
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        };
        let wants_json = h
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
        if wants_json {
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-store")
                .body(full_body(
                    serde_json::to_vec_pretty(&report).expect("report serializes"),
                ))
                .expect("valid response");
        }
        page::html(StatusCode::OK, &self.render(&report))
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, String> {
        let resp = self
            .client
            .get(self.cfg.jwks_url.clone())
            .await
            .map_err(|e| format!("fetching {}: {e}", self.cfg.jwks_url))?;
        if !resp.status().is_success() {
            return Err(format!(
                "fetching {}: HTTP {}",
                self.cfg.jwks_url,
                resp.status()
            ));
        }
        let body = http_body_util::Limited::new(resp.into_body(), 256 * 1024)
            .collect()
            .await
            .map_err(|e| format!("reading the JWKS: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("parsing the JWKS: {e}"))
    }

    /// Verifies like an app should: key by `kid` from the JWKS (refetched once for an
    /// unknown kid), algorithm from the key, then signature, `iss`, `aud` and `exp`.
    async fn verify(&self, token: &str) -> Verdict {
        let rejected = |reason: String| Verdict::Rejected { reason };
        let head = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(e) => return rejected(format!("not a JWS: {e}")),
        };
        let Some(kid) = head.kid else {
            return rejected("no kid in the header".into());
        };
        let cached = self
            .jwks
            .read()
            .await
            .as_ref()
            .and_then(|s| s.find(&kid).cloned());
        let jwk = match cached {
            Some(k) => k,
            None => match self.fetch_jwks().await {
                Ok(set) => {
                    let found = set.find(&kid).cloned();
                    *self.jwks.write().await = Some(set);
                    match found {
                        Some(k) => k,
                        None => return rejected(format!("kid {kid} is not in sidegate's JWKS")),
                    }
                }
                Err(e) => return rejected(e),
            },
        };
        let key = match jsonwebtoken::DecodingKey::from_jwk(&jwk) {
            Ok(k) => k,
            Err(e) => return rejected(format!("unusable JWK: {e}")),
        };
        let alg = match jwk.common.key_algorithm.map(|a| a.to_string()) {
            Some(a) if a == "ES256" => jsonwebtoken::Algorithm::ES256,
            Some(a) if a == "EdDSA" => jsonwebtoken::Algorithm::EdDSA,
            other => return rejected(format!("unexpected key algorithm {other:?}")),
        };
        let mut v = jsonwebtoken::Validation::new(alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 5;
        match jsonwebtoken::decode::<serde_json::Value>(token, &key, &v) {
            Ok(data) => Verdict::Verified {
                kid,
                claims: data.claims,
            },
            Err(e) => rejected(format!("verification failed: {e}")),
        }
    }

    fn render(&self, r: &Report) -> Page {
        let id = &r.identity;
        let opt = |v: &Option<String>| {
            v.as_deref()
                .map(|s| format!("<code>{}</code>", page::esc(s)))
                .unwrap_or_else(|| "<span class=muted>(not sent)</span>".into())
        };
        let names = &self.cfg.names;
        let verdict = match &r.assertion {
            Verdict::Verified { kid, claims } => format!(
                "<p class=ok>✔ Verified against sidegate's JWKS (kid <code>{}</code>): \
                 signature, issuer, audience and expiry.</p><pre>{}</pre>",
                page::esc(kid),
                page::esc(&serde_json::to_string_pretty(claims).unwrap_or_default())
            ),
            Verdict::Rejected { reason } => {
                format!("<p class=bad>✘ Not verified: {}</p>", page::esc(reason))
            }
            Verdict::Missing => format!(
                "<p class=bad>✘ No <code>{}</code> header: this request did not come through sidegate.</p>",
                page::esc(names.assertion.as_str())
            ),
        };
        let all: String = r
            .headers
            .iter()
            .map(|(k, v)| {
                format!(
                    "<tr><td><code>{}</code></td><td><pre>{}</pre></td></tr>",
                    page::esc(k),
                    page::esc(v)
                )
            })
            .collect();
        let who = id.user.as_deref().unwrap_or("nobody");
        // The session's IdP, from the verified assertion only.
        let idp = match &r.assertion {
            Verdict::Verified { claims, .. } => claims["idp"].as_str(),
            _ => None,
        };
        let current = self.cfg.logins.iter().find(|l| Some(l.idp.as_str()) == idp);
        let signed_in_through = current
            .map(|l| {
                format!(
                    "<p>Signed in through the development {} IdP <code>{}</code>.</p>",
                    l.name,
                    page::esc(&l.idp)
                )
            })
            .unwrap_or_default();
        let switches: String = match self.cfg.logins.len() {
            0 | 1 => String::new(),
            _ => self
                .cfg
                .logins
                .iter()
                .filter(|l| Some(l.idp.as_str()) != idp)
                .map(|l| {
                    format!(
                        "<a href=\"{}\">Log in with {} instead</a>",
                        page::esc(&l.switch),
                        l.name
                    )
                })
                .collect(),
        };
        Page::echo(
            &format!("Hello, {who}"),
            format!(
                "<nav><a href=\"{logout}\">Log out</a>{switches}<a href=\"{path}\">Reload</a>\
                 <a href=\"{jwks}\">sidegate's JWKS</a></nav>\
                 <div class=card><h2>Identity headers</h2>{signed_in_through}<table>\
                 <tr><th>{nu}</th><td>{user}</td></tr><tr><th>{ne}</th><td>{email}</td></tr>\
                 <tr><th>{nr}</th><td>{role}</td></tr><tr><th>{nt}</th><td>{teams}</td></tr>\
                 </table></div>\
                 <div class=card><h2>Signed assertion <code>{na}</code></h2>{verdict}</div>\
                 <div class=card><h2>Every header the app received for {method} <code>{path_text}</code></h2>\
                 <table>{all}</table></div>",
                logout = page::esc(&self.cfg.logout),
                path = page::esc(&r.path),
                path_text = page::esc(&r.path),
                jwks = page::esc(self.cfg.jwks_url.path()),
                method = page::esc(&r.method),
                nu = page::esc(names.user.as_str()),
                ne = page::esc(names.email.as_str()),
                nr = page::esc(names.role.as_str()),
                nt = page::esc(names.teams.as_str()),
                na = page::esc(names.assertion.as_str()),
                user = opt(&id.user),
                email = opt(&id.email),
                role = opt(&id.role),
                teams = if id.teams.is_empty() {
                    "<span class=muted>(none)</span>".to_string()
                } else {
                    format!("<code>{}</code>", page::esc(&id.teams.join(", ")))
                },
            ),
        )
    }
}
