//! Signed identity headers: the plain headers for legacy apps plus `X-Sidegate-Assertion`, a
//! compact JWS the app verifies against `/.sidegate/jwks.json`.
//!
//! The assertion for a session is cached (keyed by session id) and reused until it is close
//! to expiry, so the hot path does not sign every request. Only this module knows the
//! assertion format. `strip` removes every client-sent look-alike of our header names.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use rustc_hash::FxSeededState;
use serde::Serialize;

use crate::config::{AssertionConfig, CompatHeader, HeaderConfig};
use crate::identity::Identity;
use crate::keys::random_token;
use crate::session::{unix, Session};

/// Claims of the assertion (its own versioned shape; `Identity` is not serialized).
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    role: &'a str,
    teams: &'a [String],
    /// Pomerium-shaped verifiers read the teams as `groups`.
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [String]>,
    idp: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    sid: &'a str,
    /// Extra claims, top level, with their JSON types (names checked against ours at start).
    #[serde(flatten)]
    extra: std::collections::BTreeMap<&'a str, &'a serde_json::Value>,
}

/// Header names, shared by every cached entry of one signer (an entry keeps offsets, not
/// names: one entry per live session is most of sidegate's memory).
#[derive(Debug)]
struct Names {
    /// Where the assertion goes: its own header, then each compatibility header.
    assertion: Box<[HeaderName]>,
    /// The plain headers, in the order `build` pushes them: user, role, teams, email, then
    /// the configured extra claims.
    plain: Box<[HeaderName]>,
}

/// Ready-made header values for one session. Every value is a view into one buffer, so
/// applying an entry copies no bytes; the assertion is kept as a checked header value and
/// the short plain values as offsets (checked when applied: a few dozen bytes).
#[derive(Debug)]
pub struct IdentityHeaders {
    names: Arc<Names>,
    /// The assertion (a view of `text`).
    assertion: HeaderValue,
    /// The assertion, then every plain value, back to back.
    text: Bytes,
    /// Per plain value: its index in `Names::plain` and its range in `text`.
    plain: Box<[(u16, u32, u32)]>,
    exp: i64,
    /// Which version of the session it was built from (its refresh time): a session
    /// refreshed on another replica gets new headers here too.
    version: i64,
}

impl IdentityHeaders {
    /// How many headers `apply` sets, so the caller can make room for them at once.
    pub fn count(&self) -> usize {
        self.names.assertion.len() + self.plain.len()
    }

    /// Sets every identity header on `headers` (replacing whatever was there).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in self.names.assertion.iter() {
            headers.insert(name.clone(), self.assertion.clone());
        }
        for &(i, start, end) in self.plain.iter() {
            let (Some(name), Some(bytes)) = (
                self.names.plain.get(usize::from(i)),
                self.text.get(start as usize..end as usize),
            ) else {
                continue;
            };
            // The one check of a plain value: one a header cannot carry is sent empty.
            let value = HeaderValue::from_maybe_shared(self.text.slice_ref(bytes))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            headers.insert(name.clone(), value);
        }
    }
}

/// Signs assertions and knows the header names.
pub struct Signer {
    cfg: AssertionConfig,
    names: HeaderConfig,
    /// The same names, shared with every cached entry.
    shared_names: Arc<Names>,
    issuer: String,
    strip_set: Vec<String>,
    jwks: Bytes,
    cache: moka::sync::Cache<String, Arc<IdentityHeaders>, FxSeededState>,
}

/// An extra claim as header text: strings as they are, lists comma-joined.
fn header_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Normalized form of a header name for strip decisions: lower case, `_` as `-`.
fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Whether `name` normalizes to `normalized` (which is already lower case with `-`).
fn same_normalized(normalized: &str, name: &str) -> bool {
    normalized.len() == name.len()
        && normalized.bytes().zip(name.bytes()).all(|(a, b)| {
            let b = if b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            };
            a == b
        })
}

impl Signer {
    /// Builds the signer; `issuer` is the public origin.
    pub fn new(cfg: AssertionConfig, names: HeaderConfig, issuer: String) -> Self {
        let mut strip_set: Vec<String> = [
            &names.user,
            &names.email,
            &names.role,
            &names.teams,
            &names.assertion,
        ]
        .into_iter()
        .chain(names.strip.iter())
        .chain(names.extra.iter().map(|(_, h)| h))
        .map(|n| normalize(n.as_str()))
        // The compatibility names are stripped whether or not they are emitted: an app that
        // verifies them must never see a client's copy.
        .chain([CompatHeader::Pomerium, CompatHeader::Iap].map(|c| c.header_name().to_string()))
        .collect();
        strip_set.sort();
        strip_set.dedup();
        let jwks = serde_json::json!({
            "keys": cfg.keys.all().iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>()
        });
        let ttl = cfg.lifetime.mul_f32(0.8);
        let shared_names = Arc::new(Names {
            assertion: std::iter::once(names.assertion.clone())
                .chain(cfg.compat_headers.iter().map(|c| c.header_name()))
                .collect(),
            plain: [&names.user, &names.role, &names.teams, &names.email]
                .into_iter()
                .chain(names.extra.iter().map(|(_, h)| h))
                .cloned()
                .collect(),
        });
        Signer {
            shared_names,
            names,
            issuer,
            strip_set,
            jwks: Bytes::from(serde_json::to_vec(&jwks).expect("jwks serializes")),
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                // A fast hash suffices: a key is a random session id or the hash of a token
                // that verified, looked up only once the credential has been checked.
                .build_with_hasher(FxSeededState::with_seed(rand::random::<u64>() as usize)),
            cfg,
        }
    }

    /// Removes every header whose normalized name matches an identity header (any case,
    /// `_` or `-`, all duplicates). Compares in place: no allocation unless one matches.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                self.strip_set
                    .iter()
                    .any(|s| same_normalized(s, k.as_str()))
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(&name);
        }
    }

    /// The identity headers for `session`, from the cache while the assertion is fresh.
    pub fn identity_headers(
        &self,
        session: &Session,
        audience: Option<&str>,
        now: SystemTime,
    ) -> Arc<IdentityHeaders> {
        let version = session.idp_session.as_ref().map_or(0, |i| i.refresh_due);
        self.cached(
            &session.sid,
            version,
            &session.identity,
            None,
            audience,
            now,
        )
    }

    /// The identity headers for any credential: `key` names it in the cache (a session id,
    /// or a bearer token's hash), `not_after` caps the assertion's `exp` (a token's own) and
    /// `audience` replaces the configured `aud` (a route's own).
    pub fn identity_headers_for(
        &self,
        key: &str,
        identity: &Identity,
        not_after: Option<i64>,
        audience: Option<&str>,
        now: SystemTime,
    ) -> Arc<IdentityHeaders> {
        self.cached(key, 0, identity, not_after, audience, now)
    }

    fn cached(
        &self,
        key: &str,
        version: i64,
        identity: &Identity,
        not_after: Option<i64>,
        audience: Option<&str>,
        now: SystemTime,
    ) -> Arc<IdentityHeaders> {
        let now_s = unix(now);
        let keyed;
        let cache_key = match audience {
            Some(a) if a != self.cfg.audience => {
                keyed = format!("{key}\u{0}{a}");
                keyed.as_str()
            }
            _ => key,
        };
        if let Some(h) = self.cache.get(cache_key).filter(|h| h.version == version) {
            let left = h.exp - now_s;
            if left > (self.cfg.lifetime.as_secs() as i64) / 5
                || (not_after == Some(h.exp) && left > 0)
            {
                return h;
            }
        }
        let mut built = self.build(key, identity, now_s, not_after, audience);
        built.version = version;
        let fresh = Arc::new(built);
        self.cache.insert(cache_key.to_string(), fresh.clone());
        fresh
    }

    /// Drops the cached assertion of a session (logout).
    pub fn forget(&self, sid: &str) {
        self.cache.invalidate(sid);
    }

    /// Sessions seen within the assertion lifetime: the "active sessions" estimate.
    pub fn active_sessions(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    fn build(
        &self,
        sid: &str,
        id: &Identity,
        now: i64,
        not_after: Option<i64>,
        audience: Option<&str>,
    ) -> IdentityHeaders {
        let key = self.cfg.keys.current();
        let exp = now + self.cfg.lifetime.as_secs() as i64;
        let exp = not_after.map_or(exp, |n| exp.min(n));
        let claims = AssertionClaims {
            iss: &self.issuer,
            aud: audience.unwrap_or(&self.cfg.audience),
            sub: &id.subject,
            user: &id.user,
            email: id.email.as_deref(),
            role: &id.role,
            teams: &id.teams,
            groups: self
                .cfg
                .compat_headers
                .contains(&CompatHeader::Pomerium)
                .then_some(id.teams.as_slice()),
            idp: &id.issuer,
            iat: now,
            exp,
            jti: random_token::<12>(),
            sid,
            extra: id.extra.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        };
        let header = key.jwt_header();
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .expect("signing with a validated key");
        // The plain values, each with its index in `Names::plain` (user, role, teams, email,
        // extras); `apply` checks them.
        let teams = id.teams.join(",");
        let fixed = [
            Some(id.user.as_str()),
            Some(id.role.as_str()),
            Some(teams.as_str()),
            id.email.as_deref(),
        ];
        let extra: Vec<Option<String>> = self
            .names
            .extra
            .iter()
            .map(|(name, _)| {
                id.extra
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| header_text(v))
            })
            .collect();
        let values = fixed
            .into_iter()
            .chain(extra.iter().map(Option::as_deref))
            .enumerate()
            .filter_map(|(i, v)| Some((u16::try_from(i).ok()?, v?)));
        let mut text = String::with_capacity(token.len() + 64);
        text.push_str(&token);
        let mut plain = Vec::with_capacity(8);
        for (i, v) in values {
            let start = text.len();
            text.push_str(v);
            if let (Ok(a), Ok(b)) = (u32::try_from(start), u32::try_from(text.len())) {
                plain.push((i, a, b));
            }
        }
        text.shrink_to_fit();
        let text = Bytes::from(text);
        let assertion = HeaderValue::from_maybe_shared(text.slice(..token.len()))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        IdentityHeaders {
            names: self.shared_names.clone(),
            assertion,
            text,
            plain: plain.into_boxed_slice(),
            exp,
            version: 0,
        }
    }

    /// The public keys as a JWKS document (current and previous keys).
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }
}
