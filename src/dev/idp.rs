//! The development OpenID provider: discovery, JWKS, authorize (a user picker instead of a
//! password), token (authorization code + PKCE S256, client secret) and userinfo.
//!
//! It exists so `sidegate dev` can show the real login path with nothing installed. It checks
//! what a strict OP checks (client, redirect URI, PKCE, single-use codes) so sidegate's side
//! of the protocol is exercised honestly, but anyone can sign in as anyone: loopback only.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::page::{self, Idp, Page};
use crate::keys::{random_token, SigningKeys};
use crate::session::unix;
use crate::{full_body, Body};

/// Largest form body the token and login endpoints read.
const MAX_FORM: usize = 64 * 1024;
/// ID token and access token lifetime.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A person the picker can sign in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Login name (`preferred_username`, also `sub`).
    pub user: String,
    /// Display name.
    pub name: String,
    /// Email address (`email_verified` is true).
    pub email: String,
    /// The `role` claim as the IdP sends it (sidegate maps it).
    pub role: String,
    /// The `groups` claim.
    pub teams: Vec<String>,
}

/// The demo users shown on the picker: one per allowed role, and one whose role sidegate
/// does not allow, to show the least-privilege fallback.
pub fn demo_users() -> Vec<Person> {
    let p = |user: &str, name: &str, role: &str, teams: &[&str]| Person {
        user: user.into(),
        name: name.into(),
        email: format!("{user}@example.test"),
        role: role.into(),
        teams: teams.iter().map(|t| t.to_string()).collect(),
    };
    vec![
        p("alice", "Alice Admin", "admin", &["platform", "admins"]),
        p("bob", "Bob Builder", "developer", &["payments"]),
        p("carol", "Carol Viewer", "viewer", &[]),
        p("dave", "Dave Unknown-Role", "superuser", &["ops"]),
    ]
}

/// What the authorize request asked for, kept until the picker is submitted.
#[derive(Clone)]
struct Pending {
    redirect_uri: String,
    state: String,
    nonce: Option<String>,
    code_challenge: String,
}

/// An issued, not yet redeemed authorization code.
#[derive(Clone)]
struct Grant {
    pending: Pending,
    person: Person,
    auth_time: i64,
}

/// The provider's state: its client, key and short-lived transactions.
pub struct DevIdp {
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    keys: SigningKeys,
    jwks: Bytes,
    pending: moka::sync::Cache<String, Pending>,
    codes: moka::sync::Cache<String, Grant>,
    tokens: moka::sync::Cache<String, Person>,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(flatten)]
    profile: Profile<'a>,
}

#[derive(Serialize)]
struct Profile<'a> {
    sub: &'a str,
    preferred_username: &'a str,
    name: &'a str,
    email: &'a str,
    email_verified: bool,
    role: &'a str,
    groups: &'a [String],
}

impl Person {
    fn profile(&self) -> Profile<'_> {
        Profile {
            sub: &self.user,
            preferred_username: &self.user,
            name: &self.name,
            email: &self.email,
            email_verified: true,
            role: &self.role,
            groups: &self.teams,
        }
    }
}

fn cache<V: Clone + Send + Sync + 'static>(ttl: Duration) -> moka::sync::Cache<String, V> {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(ttl)
        .build()
}

impl DevIdp {
    /// A provider at `issuer` for one client; `signing_key_pem` is a fresh PKCS#8 key.
    pub fn new(
        issuer: String,
        client_id: String,
        client_secret: String,
        redirect_uri: String,
        signing_key_pem: &str,
    ) -> Result<Self, crate::keys::KeyError> {
        let keys = SigningKeys::from_pem(signing_key_pem)?;
        let jwks = serde_json::json!({ "keys": [keys.current().public_jwk.clone()] });
        Ok(DevIdp {
            issuer,
            client_id,
            client_secret,
            redirect_uri,
            keys,
            jwks: Bytes::from(jwks.to_string()),
            pending: cache(Duration::from_secs(600)),
            codes: cache(Duration::from_secs(60)),
            tokens: cache(TOKEN_LIFETIME),
        })
    }

    /// Serves one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let now = unix(SystemTime::now());
        let (parts, body) = req.into_parts();
        let query = form_pairs(parts.uri.query().unwrap_or("").as_bytes());
        match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/.well-known/openid-configuration") => {
                json(StatusCode::OK, self.discovery())
            }
            (&Method::GET, "/jwks") => raw_json(StatusCode::OK, self.jwks.clone()),
            (&Method::GET, "/authorize") => self.authorize(&query),
            (&Method::POST, "/login") => match read_form(body).await {
                Ok(form) => self.login(&form, now),
                Err(resp) => resp,
            },
            (&Method::POST, "/token") => match read_form(body).await {
                Ok(form) => self.token(&parts.headers, &form, now),
                Err(resp) => resp,
            },
            (&Method::GET | &Method::POST, "/userinfo") => self.userinfo(&parts.headers),
            (&Method::GET, "/") => page::html(StatusCode::OK, &self.home()),
            _ => page::html(
                StatusCode::NOT_FOUND,
                &Page::idp(
                    Idp::Oidc,
                    "Not found",
                    "<p>The development IdP has no such page.</p>",
                ),
            ),
        }
    }

    fn discovery(&self) -> serde_json::Value {
        let at = |p: &str| format!("{}{p}", self.issuer);
        serde_json::json!({
            "issuer": self.issuer,
            "authorization_endpoint": at("/authorize"),
            "token_endpoint": at("/token"),
            "userinfo_endpoint": at("/userinfo"),
            "jwks_uri": at("/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "scopes_supported": ["openid", "email", "profile"],
            "grant_types_supported": ["authorization_code"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "preferred_username", "name", "email", "email_verified", "role", "groups"],
        })
    }

    fn authorize(&self, q: &[(String, String)]) -> Response<Body> {
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let refuse = |why: &str| {
            tracing::info!(reason = why, "dev idp: authorize request refused");
            page::html(
                StatusCode::BAD_REQUEST,
                &Page::idp(
                    Idp::Oidc,
                    "Bad authorization request",
                    &page::paragraph(why),
                ),
            )
        };
        if get("client_id") != Some(self.client_id.as_str()) {
            return refuse("unknown client_id");
        }
        if get("redirect_uri") != Some(self.redirect_uri.as_str()) {
            return refuse("redirect_uri is not the registered one");
        }
        if get("response_type") != Some("code") {
            return refuse("response_type must be code");
        }
        if !get("scope").is_some_and(|s| s.split(' ').any(|s| s == "openid")) {
            return refuse("scope must include openid");
        }
        let (Some(state), Some(challenge)) = (get("state"), get("code_challenge")) else {
            return refuse("state and code_challenge (PKCE) are required");
        };
        if get("code_challenge_method") != Some("S256") {
            return refuse("code_challenge_method must be S256");
        }
        let tx = random_token::<16>();
        self.pending.insert(
            tx.clone(),
            Pending {
                redirect_uri: self.redirect_uri.clone(),
                state: state.to_string(),
                nonce: get("nonce").map(str::to_string),
                code_challenge: challenge.to_string(),
            },
        );
        page::html(
            StatusCode::OK,
            &page::picker(Idp::Oidc, &tx, &demo_users(), None),
        )
    }

    fn login(&self, form: &[(String, String)], now: i64) -> Response<Body> {
        let tx = field(form, "tx").to_string();
        let Some(pending) = self.pending.get(&tx) else {
            return page::html(StatusCode::BAD_REQUEST, &page::expired(Idp::Oidc));
        };
        let person = match chosen(form) {
            Ok(p) => p,
            Err(why) => {
                return page::html(
                    StatusCode::BAD_REQUEST,
                    &page::picker(Idp::Oidc, &tx, &demo_users(), Some(why)),
                )
            }
        };
        self.pending.invalidate(&tx);
        let code = random_token::<24>();
        tracing::info!(user = %person.user, role = %person.role, "dev idp: signed in, code issued");
        let mut to = url::Url::parse(&pending.redirect_uri).expect("registered redirect URI");
        to.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &pending.state)
            .append_pair("iss", &self.issuer);
        self.codes.insert(
            code,
            Grant {
                pending,
                person,
                auth_time: now,
            },
        );
        Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to.as_str())
            .header(header::CACHE_CONTROL, "no-store")
            .body(crate::empty_body())
            .expect("valid redirect")
    }

    fn client_authenticated(&self, headers: &http::HeaderMap, form: &[(String, String)]) -> bool {
        let from_form = || {
            let id = form.iter().find(|(n, _)| n == "client_id")?;
            let secret = form.iter().find(|(n, _)| n == "client_secret")?;
            Some((id.1.clone(), secret.1.clone()))
        };
        let from_basic = || {
            let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            let b64 = v.strip_prefix("Basic ")?;
            let text = String::from_utf8(STANDARD.decode(b64).ok()?).ok()?;
            let (id, secret) = text.split_once(':')?;
            // RFC 6749 §2.3.1: both parts are form-urlencoded.
            let dec = |s: &str| form_pairs(format!("v={s}").as_bytes()).pop().map(|p| p.1);
            Some((dec(id)?, dec(secret)?))
        };
        match from_basic().or_else(from_form) {
            Some((id, secret)) => {
                id == self.client_id
                    && bool::from(secret.as_bytes().ct_eq(self.client_secret.as_bytes()))
            }
            None => false,
        }
    }

    fn token(
        &self,
        headers: &http::HeaderMap,
        form: &[(String, String)],
        now: i64,
    ) -> Response<Body> {
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let error = |status: StatusCode, code: &str, why: &str| {
            tracing::info!(error = code, reason = why, "dev idp: token request refused");
            json(
                status,
                serde_json::json!({"error": code, "error_description": why}),
            )
        };
        if !self.client_authenticated(headers, form) {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
        if get("grant_type") != "authorization_code" {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only authorization_code",
            );
        }
        // Single use: the code is gone whatever happens next.
        let Some(grant) = self.codes.remove(get("code")) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "unknown, used or expired code",
            );
        };
        if get("redirect_uri") != grant.pending.redirect_uri {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "redirect_uri does not match",
            );
        }
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier").as_bytes()));
        if !bool::from(
            computed
                .as_bytes()
                .ct_eq(grant.pending.code_challenge.as_bytes()),
        ) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "PKCE code_verifier does not match the code_challenge",
            );
        }
        let person = &grant.person;
        let claims = IdClaims {
            iss: &self.issuer,
            aud: &self.client_id,
            iat: now,
            exp: now + TOKEN_LIFETIME.as_secs() as i64,
            auth_time: grant.auth_time,
            nonce: grant.pending.nonce.as_deref(),
            profile: person.profile(),
        };
        let key = self.keys.current();
        let id_token = jsonwebtoken::encode(&key.jwt_header(), &claims, &key.encoding)
            .expect("signing with a generated key");
        let access_token = random_token::<24>();
        self.tokens.insert(access_token.clone(), person.clone());
        json(
            StatusCode::OK,
            serde_json::json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME.as_secs(),
                "id_token": id_token,
            }),
        )
    }

    fn userinfo(&self, headers: &http::HeaderMap) -> Response<Body> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token.and_then(|t| self.tokens.get(t)) {
            Some(person) => json(
                StatusCode::OK,
                serde_json::to_value(person.profile()).expect("profile serializes"),
            ),
            None => {
                let mut r = json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "invalid_token"}),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
                r
            }
        }
    }

    fn home(&self) -> Page {
        let users: String = demo_users()
            .iter()
            .map(|p| {
                format!(
                    "<li><b>{}</b> — role <code>{}</code>, teams <code>{}</code></li>",
                    page::esc(&p.user),
                    page::esc(&p.role),
                    page::esc(&p.teams.join(", "))
                )
            })
            .collect();
        Page::idp(
            Idp::Oidc,
            "Development OpenID provider",
            &format!(
                "<p>Issuer <code>{}</code>, client <code>{}</code>. Sign-in starts at the app: \
                 this IdP shows a user picker instead of asking for a password.</p><ul>{users}</ul>",
                page::esc(&self.issuer),
                page::esc(&self.client_id)
            ),
        )
    }
}

/// A trimmed form field ("" when absent).
pub(super) fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim())
        .unwrap_or("")
}

/// Who the submitted picker chose: a demo user by name, or the typed one.
pub(super) fn chosen(form: &[(String, String)]) -> Result<Person, &'static str> {
    match field(form, "demo") {
        "" => typed_person(
            field(form, "user"),
            field(form, "email"),
            field(form, "role"),
            field(form, "teams"),
        ),
        name => demo_users()
            .into_iter()
            .find(|p| p.user == name)
            .ok_or("no such demo user"),
    }
}

/// A person typed into the custom form: a user is required, the rest is optional.
fn typed_person(user: &str, email: &str, role: &str, teams: &str) -> Result<Person, &'static str> {
    if user.is_empty() {
        return Err("type a user name, or pick a demo user");
    }
    if user.len() > 200 || email.len() > 320 || role.len() > 200 || teams.len() > 2000 {
        return Err("a field is too long");
    }
    Ok(Person {
        user: user.to_string(),
        name: user.to_string(),
        email: if email.is_empty() {
            format!("{user}@example.test")
        } else {
            email.to_string()
        },
        role: role.to_string(),
        teams: teams
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

pub(super) async fn read_form(body: Incoming) -> Result<Vec<(String, String)>, Response<Body>> {
    match http_body_util::Limited::new(body, MAX_FORM).collect().await {
        Ok(b) => Ok(form_pairs(&b.to_bytes())),
        Err(_) => Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({"error": "invalid_request", "error_description": "form body too large or unreadable"}),
        )),
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    raw_json(status, Bytes::from(v.to_string()))
}

fn raw_json(status: StatusCode, b: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(full_body(b))
        .expect("valid response")
}
