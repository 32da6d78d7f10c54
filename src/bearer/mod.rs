//! Bearer tokens: API clients present `Authorization: Bearer <token>` from a trusted issuer
//! instead of a session cookie. JWT access tokens are checked against the issuer's JWKS
//! (`token::verify`, pure); opaque ones through RFC 7662 introspection when enabled. Results
//! are cached by token hash, issuer and audience (never past the token's `exp`), so a busy API
//! client costs one check per token, and the identity is mapped once per token.
//!
//! JWKS and discovery are fetched lazily and kept; an unknown `kid` triggers at most one
//! refresh per `jwks_min_refresh_interval`.

pub mod token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use self::token::{Expect, TokenError};
use crate::config::{BearerIssuerConfig, IdentityConfig};
use crate::identity::{Denied, Identity};
use crate::login::idp_http::IdpHttp;

/// Why a presented bearer token does not authenticate the request.
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// The token was checked and refused.
    #[error("token refused: {0}")]
    Refused(#[from] TokenError),
    /// A JWT whose `iss` is not a configured issuer.
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    /// An opaque token and no issuer with introspection.
    #[error("opaque token and no introspection configured")]
    Opaque,
    /// Introspection said `active: false`, or its answer failed a check.
    #[error("introspection: {0}")]
    Inactive(&'static str),
    /// The issuer could not be asked (keys or introspection unreachable).
    #[error("issuer unavailable: {0}")]
    Unavailable(String),
    /// Verified, but the identity mapping refused the user.
    #[error("identity refused: {0}")]
    Denied(#[from] Denied),
}

/// A checked token: who it names, until when.
#[derive(Debug)]
pub struct Verified {
    /// The mapped identity.
    pub identity: Identity,
    /// Cache key for the signed assertion (`bt:` + token hash).
    pub key: String,
    /// The token's `exp` (Unix seconds): assertions never outlive it.
    pub exp: i64,
}

/// Keys and endpoints of one issuer as last fetched.
struct Fetched {
    jwks: JwkSet,
    introspection: Option<Url>,
}

struct Issuer {
    cfg: BearerIssuerConfig,
    http: IdpHttp,
    fetched: moka::future::Cache<(), Arc<Fetched>>,
    last_refresh: Mutex<Option<Instant>>,
}

/// Every trusted issuer, and the cache of checked tokens.
pub struct Bearer {
    issuers: Vec<Issuer>,
    identity: IdentityConfig,
    checked: moka::future::Cache<[u8; 32], Arc<Verified>>,
}

/// The token of an `Authorization: Bearer` header, if there is exactly one such header.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let v = v.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Parses a JWKS leniently: keys sidegate cannot use (encryption keys, unknown kty) are
/// skipped instead of failing the whole set.
pub fn parse_jwks(body: &[u8]) -> Result<JwkSet, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no keys array")?;
    let keys: Vec<Jwk> = keys
        .iter()
        .filter(|k| k.get("use").and_then(Value::as_str) != Some("enc"))
        .filter_map(|k| serde_json::from_value(k.clone()).ok())
        .collect();
    Ok(JwkSet { keys })
}

impl Issuer {
    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let req = http::Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let resp = self.http.send(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{url}: status {}", resp.status()));
        }
        serde_json::from_slice(resp.body()).map_err(|e| format!("{url}: not JSON: {e}"))
    }

    async fn fetch(&self) -> Result<Arc<Fetched>, String> {
        let needs_discovery = self.cfg.jwks_url.is_none()
            || self
                .cfg
                .introspection
                .as_ref()
                .is_some_and(|i| i.url.is_none());
        let discovery = if needs_discovery {
            let url = format!(
                "{}/.well-known/openid-configuration",
                self.cfg.issuer.trim_end_matches('/')
            );
            Some(self.get_json(&url).await?)
        } else {
            None
        };
        let from_discovery = |name: &str| {
            discovery
                .as_ref()
                .and_then(|d| d.get(name))
                .and_then(Value::as_str)
                .and_then(|s| Url::parse(s).ok())
        };
        let jwks_url = match &self.cfg.jwks_url {
            Some(u) => u.clone(),
            None => from_discovery("jwks_uri").ok_or("discovery has no jwks_uri")?,
        };
        let introspection = match &self.cfg.introspection {
            Some(i) => Some(
                i.url
                    .clone()
                    .or_else(|| from_discovery("introspection_endpoint"))
                    .ok_or("introspection enabled but no introspection_endpoint")?,
            ),
            None => None,
        };
        let req = http::Request::get(jwks_url.as_str())
            .header(header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let resp = self.http.send(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("JWKS {jwks_url}: status {}", resp.status()));
        }
        let jwks = parse_jwks(resp.body())?;
        tracing::info!(issuer = %self.cfg.issuer, keys = jwks.keys.len(), "bearer issuer keys loaded");
        Ok(Arc::new(Fetched {
            jwks,
            introspection,
        }))
    }

    async fn current(&self) -> Result<Arc<Fetched>, BearerError> {
        self.fetched
            .try_get_with((), self.fetch())
            .await
            .map_err(|e: Arc<String>| BearerError::Unavailable(e.to_string()))
    }

    /// Refetches the keys, at most once per interval; `None` when rate-limited or failed.
    async fn refresh(&self) -> Option<Arc<Fetched>> {
        {
            let mut last = self.last_refresh.lock().expect("lock");
            if last.is_some_and(|t| t.elapsed() < self.cfg.jwks_min_refresh_interval) {
                return None;
            }
            *last = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(f) => {
                self.fetched.insert((), f.clone()).await;
                Some(f)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, "bearer JWKS refresh failed");
                None
            }
        }
    }

    fn expect(&self) -> Expect<'_> {
        Expect {
            issuer: &self.cfg.issuer,
            audience: &self.cfg.audience,
            algs: &self.cfg.allowed_algs,
            types: &self.cfg.token_types,
            skew: self.cfg.clock_skew,
            require_sub: true,
        }
    }

    async fn verify_jwt(&self, raw: &str, now: i64) -> Result<Map<String, Value>, BearerError> {
        let f = self.current().await?;
        match token::verify(raw, &f.jwks, &self.expect(), now) {
            Err(TokenError::UnknownKey) => match self.refresh().await {
                Some(fresh) => Ok(token::verify(raw, &fresh.jwks, &self.expect(), now)?),
                None => Err(TokenError::UnknownKey.into()),
            },
            other => Ok(other?),
        }
    }

    /// RFC 7662: POST the token with our client credentials; require `active`, our audience,
    /// the issuer (when stated) and a live `exp`.
    async fn introspect(&self, raw: &str, now: i64) -> Result<Map<String, Value>, BearerError> {
        let Some(ic) = &self.cfg.introspection else {
            return Err(BearerError::Opaque);
        };
        let f = self.current().await?;
        let url = f.introspection.as_ref().ok_or(BearerError::Opaque)?;
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", raw)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let enc =
            |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", enc(&ic.client_id), enc(ic.client_secret.expose())),
        );
        let req = http::Request::post(url.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .body(form.into_bytes())
            .map_err(|e| BearerError::Unavailable(e.to_string()))?;
        let resp = self
            .http
            .send(req)
            .await
            .map_err(|e| BearerError::Unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(BearerError::Unavailable(format!(
                "introspection status {}",
                resp.status()
            )));
        }
        let Ok(Value::Object(mut claims)) = serde_json::from_slice(resp.body()) else {
            return Err(BearerError::Unavailable(
                "introspection answer is not a JSON object".into(),
            ));
        };
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(BearerError::Inactive("token is not active"));
        }
        if claims
            .get("iss")
            .is_some_and(|i| i.as_str() != Some(&self.cfg.issuer))
        {
            return Err(TokenError::Issuer.into());
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.cfg.audience,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&self.cfg.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(TokenError::Audience.into());
        }
        if claims.get("token_type").and_then(Value::as_str) == Some("refresh_token") {
            return Err(BearerError::Inactive(
                "a refresh token is not an access token",
            ));
        }
        token::check_times(&claims, self.cfg.clock_skew, now)?;
        // RFC 9068 §2.2: a client acting for itself is its own subject.
        if !claims.contains_key("sub") {
            if let Some(c) = claims.get("client_id").cloned() {
                claims.insert("sub".into(), c);
            }
        }
        claims
            .entry("iss")
            .or_insert_with(|| Value::String(self.cfg.issuer.clone()));
        Ok(claims)
    }
}

impl Bearer {
    /// Prepares the issuers; nothing is fetched until `warm_up` or the first token.
    pub fn new(issuers: Vec<BearerIssuerConfig>, identity: IdentityConfig) -> Self {
        let ttl = issuers
            .iter()
            .map(|i| i.cache_ttl)
            .min()
            .unwrap_or(Duration::from_secs(60));
        Bearer {
            issuers: issuers
                .into_iter()
                .map(|cfg| Issuer {
                    http: IdpHttp::new(cfg.http_timeout),
                    cfg,
                    fetched: moka::future::Cache::builder().max_capacity(1).build(),
                    last_refresh: Mutex::new(None),
                })
                .collect(),
            identity,
            checked: moka::future::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Whether any issuer is configured (else `Authorization` is left alone).
    pub fn is_enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Loads every issuer's keys in the background at start-up (failures are retried lazily).
    pub async fn warm_up(&self) {
        for i in &self.issuers {
            if let Err(e) = i.current().await {
                tracing::warn!(issuer = %i.cfg.issuer, error = %e, "bearer issuer keys not loaded yet");
            }
        }
    }

    /// Checks `raw` (cached by its hash), maps the identity, or says why not.
    pub async fn check(&self, raw: &str, now: i64) -> Result<Arc<Verified>, BearerError> {
        let hash: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
        if let Some(hit) = self.checked.get(&hash).await {
            return if hit.exp >= now {
                Ok(hit)
            } else {
                Err(TokenError::Expired.into())
            };
        }
        // Boxed: the cache hit above is the hot path; this future is large.
        let (issuer, claims) = Box::pin(self.verify(raw, now)).await?;
        let identity = match crate::identity::resolve(&self.identity, &issuer.cfg.issuer, &claims) {
            Ok(i) => i,
            Err(d) => return Err(d.into()),
        };
        let verified = Arc::new(Verified {
            key: format!("bt:{}", hex(&hash[..16])),
            exp: claims.get("exp").and_then(Value::as_i64).unwrap_or(now),
            identity,
        });
        self.checked.insert(hash, verified.clone()).await;
        Ok(verified)
    }

    async fn verify(
        &self,
        raw: &str,
        now: i64,
    ) -> Result<(&Issuer, Map<String, Value>), BearerError> {
        if token::is_jwt(raw) {
            let iss = token::peek_issuer(raw).ok_or(TokenError::Issuer)?;
            let mut last = BearerError::UnknownIssuer;
            // Several entries may share an issuer (one per audience): any may accept.
            for i in self.issuers.iter().filter(|i| i.cfg.issuer == iss) {
                match i.verify_jwt(raw, now).await {
                    Ok(c) => return Ok((i, c)),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
        let mut last = BearerError::Opaque;
        for i in self
            .issuers
            .iter()
            .filter(|i| i.cfg.introspection.is_some())
        {
            match i.introspect(raw, now).await {
                Ok(c) => return Ok((i, c)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
