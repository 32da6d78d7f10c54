//! Sessions: the versioned payload, its sealed cookie (chunked when large), and the decision
//! whether a request carries a valid one.
//!
//! Stateless by default: everything lives in the AEAD-sealed cookie, so any replica can serve
//! any request. With a server-side store (`session.store = "memory" | "redis"`) the cookie
//! holds only a handle (`stored`) and the sealed payload lives in the store, where logout
//! and IdP revocation delete it. Only this module knows the cookie names and wire format.

pub mod cookie;
mod opened;
pub mod stored;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue, COOKIE};
use serde::{Deserialize, Serialize};

use crate::config::{SameSite, SessionConfig, SessionStore};
use crate::identity::Identity;
use crate::keys::random_token;
use crate::store::{Shared, Store, StoreError};
pub use cookie::OpenError;
use stored::{index_key, Handle};

const PURPOSE: &[u8] = b"sidegate session v1";
/// A browser keeps cookies up to 4096 bytes; stay well below with attributes included.
const CHUNK: usize = 3800;
const MAX_CHUNKS: usize = 5;

/// Seconds since the Unix epoch; the one clock representation in session payloads.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The session payload as stored in the cookie (version 1). Field names are short on purpose.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PayloadV1 {
    v: u8,
    sid: String,
    iss: String,
    sub: String,
    usr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    em: Option<String>,
    role: String,
    teams: Vec<String>,
    iat: i64,
    exp: i64,
    idle: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idp: Option<IdpSession>,
    /// Extra claims (`identity.extra`), typed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    x: Vec<(String, serde_json::Value)>,
}

/// The IdP's handle on a login: for single logout a SAML SessionIndex and the NameID's
/// format (the NameID itself is the identity's subject) or an OIDC `sid`; for renewal an
/// OIDC refresh token (sealed with the rest of the cookie) and when it is next due.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpSession {
    /// `SessionIndex` of the AuthnStatement, or the ID token's `sid` (may be empty).
    #[serde(rename = "si")]
    pub session_index: String,
    /// `Format` of the NameID, echoed in the LogoutRequest.
    #[serde(rename = "nf", default, skip_serializing_if = "Option::is_none")]
    pub name_id_format: Option<String>,
    /// The OIDC refresh token, when the provider refreshes sessions.
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the next refresh is due (Unix seconds).
    #[serde(rename = "rx", default, skip_serializing_if = "is_zero")]
    pub refresh_due: i64,
    /// The last ID token, as `id_token_hint` for RP-initiated logout.
    #[serde(rename = "it", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Session {
    /// The refresh token, if the session is due for a refresh at `now`.
    pub fn refresh_due(&self, now: i64) -> Option<&str> {
        let i = self.idp_session.as_ref()?;
        let rt = i.refresh_token.as_deref()?;
        (now >= i.refresh_due).then_some(rt)
    }

    /// The session after a refresh: new identity and refresh token, next due time; the
    /// id, the IdP session id and the absolute end are kept.
    pub fn refreshed(
        &self,
        identity: Identity,
        refresh_token: String,
        id_token: Option<String>,
        due: i64,
    ) -> Session {
        let mut s = self.clone();
        s.identity = identity;
        let i = s.idp_session.get_or_insert_with(IdpSession::default);
        i.refresh_token = Some(refresh_token);
        if id_token.is_some() {
            i.id_token = id_token;
        }
        i.refresh_due = due.min(s.expires);
        s
    }
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Random id, new at every login (no fixation); keys the assertion cache.
    pub sid: String,
    /// Who is logged in.
    pub identity: Identity,
    /// When the login happened (Unix seconds).
    pub issued: i64,
    /// Absolute end (Unix seconds).
    pub expires: i64,
    /// Idle deadline (Unix seconds).
    pub idle_until: i64,
    /// The IdP's session reference (SAML logins), for single logout.
    pub idp_session: Option<IdpSession>,
    /// Where a server-side session lives (none for cookie sessions).
    handle: Option<Handle>,
}

/// Why a presented session was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The sealed value did not open.
    #[error("cookie {0}")]
    Open(OpenError),
    /// Opened, but the payload is not a known version or shape.
    #[error("payload unreadable")]
    Payload,
    /// Past its absolute lifetime.
    #[error("expired")]
    Expired,
    /// Unused for longer than the idle lifetime.
    #[error("idle timeout")]
    Idle,
    /// Chunks missing or too many.
    #[error("chunks inconsistent")]
    Chunks,
    /// The IdP ended the session (back- or front-channel logout).
    #[error("ended by the IdP")]
    Revoked,
    /// The IdP refused to refresh it.
    #[error("refresh refused")]
    RefreshFailed,
    /// A server-side session that is no longer in the store (logged out, revoked, expired).
    #[error("not in the session store (ended)")]
    Ended,
}

/// The outcome of looking at a request's cookies.
#[derive(Debug)]
pub enum Checked {
    /// A valid session; nothing to write back. Shared: an opened cookie session is not
    /// copied per request.
    Valid(Arc<Session>),
    /// A valid session whose idle deadline should move: re-issue the cookie.
    Touch(Arc<Session>),
    /// No session cookie at all.
    Absent,
    /// A session cookie that must be ignored, and why.
    Invalid(Invalid),
    /// A server-side session cookie, but the store did not answer: fail closed (503).
    Unavailable(StoreError),
}

/// Session settings plus keys, built once from the config, the store, and the revocation
/// list of cookie sessions.
pub struct Sessions {
    cfg: SessionConfig,
    store: Arc<Shared>,
    /// IdP logouts (back- and front-channel): key → when. Stateless cookies cannot be
    /// deleted, so a cookie issued before its IdP session ended is refused instead; entries
    /// live as long as a session can.
    revoked: moka::sync::Cache<String, i64>,
    any_revoked: Arc<std::sync::atomic::AtomicBool>,
    /// Cookie sessions already opened (cookie mode only; empty again after a reload).
    opened: opened::Opened,
}

/// What an IdP logout names.
#[derive(Debug, Clone, Copy)]
pub enum Revoke<'a> {
    /// One IdP session (OIDC `sid`, SAML SessionIndex).
    Sid(&'a str),
    /// Every session of a subject.
    Sub(&'a str),
}

fn revoke_key(issuer: &str, by: Revoke<'_>) -> String {
    match by {
        Revoke::Sid(s) => format!("sid\u{0}{issuer}\u{0}{s}"),
        Revoke::Sub(s) => format!("sub\u{0}{issuer}\u{0}{s}"),
    }
}

impl Sessions {
    /// Takes ownership of the session config (keys included); `store` is the deployment's
    /// shared store (server-side sessions live there when `session.store` says so).
    pub fn new(cfg: SessionConfig, store: Arc<Shared>) -> Self {
        Sessions {
            store,
            revoked: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(cfg.absolute_lifetime)
                .build(),
            any_revoked: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            opened: opened::Opened::new(),
            cfg,
        }
    }

    /// Ends, from now on, every session of `issuer` that `by` names and that was issued
    /// before `at` (a later login is a new session). Server-side sessions are deleted from
    /// the store (on every replica at once with Redis); cookie sessions are refused here.
    /// Returns how many stored sessions were deleted.
    pub async fn revoke(&self, issuer: &str, by: Revoke<'_>, at: i64) -> Result<usize, StoreError> {
        if !self.server_side() {
            self.revoked.insert(revoke_key(issuer, by), at);
            self.any_revoked
                .store(true, std::sync::atomic::Ordering::Release);
            return Ok(0);
        }
        let index = match by {
            Revoke::Sid(s) => index_key("sid", issuer, s),
            Revoke::Sub(s) => index_key("sub", issuer, s),
        };
        let mut n = 0;
        for record in self.store.index_take(&index).await? {
            n += usize::from(self.store.delete(&record).await?);
        }
        Ok(n)
    }

    /// Keeps the revocations of the sessions this replaces (a config reload must not bring
    /// back a cookie session an IdP ended).
    pub fn adopt_revocations(&mut self, old: &Sessions) {
        self.revoked = old.revoked.clone();
        self.any_revoked = old.any_revoked.clone();
    }

    /// The deployment's shared store (replay caches, locks).
    pub fn store(&self) -> &Arc<Shared> {
        &self.store
    }

    /// Whether sessions live in a store (the cookie holds only a handle).
    pub fn server_side(&self) -> bool {
        !matches!(self.cfg.store, SessionStore::Cookie)
    }

    fn is_revoked(&self, s: &Session) -> bool {
        if !self.any_revoked.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let hit = |by| {
            self.revoked
                .get(&revoke_key(&s.identity.issuer, by))
                .is_some_and(|at| s.issued <= at)
        };
        hit(Revoke::Sub(&s.identity.subject))
            || s.idp_session
                .as_ref()
                .is_some_and(|i| !i.session_index.is_empty() && hit(Revoke::Sid(&i.session_index)))
    }

    /// The session settings.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Reads the session from the request's `Cookie` headers (and the store, for
    /// server-side sessions).
    pub async fn check(&self, headers: &HeaderMap, now: SystemTime) -> Checked {
        let value = match self.read_value(headers) {
            Ok(Some(v)) => v,
            Ok(None) => return Checked::Absent,
            Err(e) => return Checked::Invalid(e),
        };
        let session = if self.server_side() {
            let Some(h) = std::str::from_utf8(&value).ok().and_then(Handle::parse) else {
                return Checked::Invalid(Invalid::Open(OpenError::Malformed));
            };
            // Boxed: a Redis read is a large future, and this one is on every request.
            let record = match Box::pin(self.store.get(&h.record_key())).await {
                Ok(Some(r)) => r,
                Ok(None) => return Checked::Invalid(Invalid::Ended),
                Err(e) => return Checked::Unavailable(e),
            };
            match h.open(&record) {
                Some(plain) => match payload(&plain) {
                    Some(p) => Arc::new(session_of(p, Some(h))),
                    None => return Checked::Invalid(Invalid::Payload),
                },
                None => return Checked::Invalid(Invalid::Open(OpenError::Tampered)),
            }
        } else if let Some(s) = self.opened.get(&value) {
            // Equal to a value that opened, so text: no UTF-8 check on the usual path.
            s
        } else {
            let Ok(value) = std::str::from_utf8(&value) else {
                return Checked::Invalid(Invalid::Open(OpenError::Malformed));
            };
            let plain = match cookie::open(&self.cfg.keys, PURPOSE, value) {
                Ok(p) => p,
                Err(e) => return Checked::Invalid(Invalid::Open(e)),
            };
            let Some(p) = payload(&plain) else {
                return Checked::Invalid(Invalid::Payload);
            };
            let s = Arc::new(session_of(p, None));
            self.opened.keep(value, &s);
            s
        };
        let now = unix(now);
        if now >= session.expires {
            return Checked::Invalid(Invalid::Expired);
        }
        if now >= session.idle_until {
            return Checked::Invalid(Invalid::Idle);
        }
        let touch = session.idle_until - now < (self.cfg.idle_lifetime.as_secs() as i64) / 2
            && session.idle_until < session.expires;
        if self.is_revoked(&session) {
            return Checked::Invalid(Invalid::Revoked);
        }
        if touch {
            Checked::Touch(session)
        } else {
            Checked::Valid(session)
        }
    }

    /// The whole sealed value, joined from chunks when needed, as bytes: the caller checks
    /// it is text only when it has to open it.
    /// Borrows the value when it is one cookie (the usual case); joins chunks otherwise.
    fn read_value<'h>(&self, headers: &'h HeaderMap) -> Result<Option<Cow<'h, [u8]>>, Invalid> {
        let base = self.cfg.cookie_name.as_bytes();
        let mut whole: Option<&'h [u8]> = None;
        let mut chunks: Vec<Option<&'h [u8]>> = Vec::new();
        for (name, value) in cookie_pairs(headers) {
            let Some(rest) = name.strip_prefix(base) else {
                continue;
            };
            if rest.is_empty() {
                whole = Some(value);
            } else if let Some(n) = rest
                .strip_prefix(b"_")
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
            {
                if n >= MAX_CHUNKS {
                    return Err(Invalid::Chunks);
                }
                if chunks.len() <= n {
                    chunks.resize(n + 1, None);
                }
                chunks[n] = Some(value);
            }
        }
        if let Some(w) = whole {
            return Ok(Some(Cow::Borrowed(w)));
        }
        if chunks.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(c.ok_or(Invalid::Chunks)?);
            if out.len() > cookie::MAX_SEALED_LEN {
                return Err(Invalid::Open(OpenError::Oversized));
            }
        }
        Ok(Some(Cow::Owned(out)))
    }

    /// Starts a new session for `identity` (new random id) and returns it with its cookies.
    /// Fails only when a server-side store cannot take it.
    pub async fn create(
        &self,
        identity: Identity,
        idp_session: Option<IdpSession>,
        now: SystemTime,
    ) -> Result<(Session, Vec<HeaderValue>), StoreError> {
        let now = unix(now);
        let exp = now + self.cfg.absolute_lifetime.as_secs() as i64;
        let mut session = Session {
            sid: random_token::<16>(),
            identity,
            issued: now,
            expires: exp,
            idle_until: (now + self.cfg.idle_lifetime.as_secs() as i64).min(exp),
            idp_session,
            handle: None,
        };
        if !self.server_side() {
            let cookies = self.cookies_for(&session, true);
            return Ok((session, cookies));
        }
        let h = Handle::random();
        session.handle = Some(h.clone());
        self.save(&session, now).await?;
        let member = h.record_key();
        let iss = &session.identity.issuer;
        let life = self.cfg.absolute_lifetime;
        self.store
            .index_add(
                &index_key("sub", iss, &session.identity.subject),
                &member,
                life,
            )
            .await?;
        if let Some(i) = session
            .idp_session
            .as_ref()
            .filter(|i| !i.session_index.is_empty())
        {
            self.store
                .index_add(&index_key("sid", iss, &i.session_index), &member, life)
                .await?;
        }
        let max_age = Duration::from_secs((exp - now).max(0) as u64);
        let base = &self.cfg.cookie_name;
        let mut cookies = vec![self.set_cookie(base, &h.cookie_value(), Some(max_age), "/")];
        for n in 0..MAX_CHUNKS {
            cookies.push(self.set_cookie(&format!("{base}_{n}"), "", None, "/"));
        }
        Ok((session, cookies))
    }

    /// Writes a server-side session's record, living until its idle deadline.
    async fn save(&self, s: &Session, now: i64) -> Result<(), StoreError> {
        let Some(h) = &s.handle else {
            return Ok(());
        };
        let plain = serde_json::to_vec(&payload_of(s)).expect("payload serializes");
        let ttl = Duration::from_secs((s.idle_until - now).max(1) as u64);
        self.store.put(&h.record_key(), &h.seal(&plain), ttl).await
    }

    /// Moves the idle deadline of `session` and returns the cookies that carry it. Only the
    /// cookies holding the value: a touch never changes the number of chunks, so there is
    /// nothing stale to clear (and forward-auth proxies relay a single `Set-Cookie`). A
    /// server-side session is rewritten in the store instead (no cookie); if the store
    /// fails, the session stays valid until its old deadline.
    pub async fn touch(
        &self,
        mut session: Session,
        now: SystemTime,
    ) -> (Session, Vec<HeaderValue>) {
        session.idle_until =
            (unix(now) + self.cfg.idle_lifetime.as_secs() as i64).min(session.expires);
        if session.handle.is_some() {
            if let Err(e) = self.save(&session, unix(now)).await {
                tracing::warn!(error = %e, "session touch not stored; it keeps its old idle deadline");
            }
            return (session, Vec::new());
        }
        let cookies = self.cookies_for(&session, false);
        (session, cookies)
    }

    /// Stores a changed session (after a refresh) under its handle; cookie sessions get
    /// their new cookies from `touch`.
    pub async fn replace(&self, s: &Session, now: SystemTime) -> Result<(), StoreError> {
        self.save(s, unix(now)).await
    }

    /// The current stored version of a server-side session (another replica may have
    /// refreshed it); `None` when it is gone. Cookie sessions come back unchanged.
    pub async fn reload(&self, s: &Session) -> Result<Option<Session>, StoreError> {
        let Some(h) = &s.handle else {
            return Ok(Some(s.clone()));
        };
        let Some(record) = self.store.get(&h.record_key()).await? else {
            return Ok(None);
        };
        Ok(h.open(&record)
            .and_then(|plain| serde_json::from_slice::<PayloadV1>(&plain).ok())
            .map(|p| session_of(p, Some(h.clone()))))
    }

    /// Deletes a server-side session (a refused refresh ends it on every replica).
    pub async fn remove(&self, s: &Session) -> Result<(), StoreError> {
        if let Some(h) = &s.handle {
            self.store.delete(&h.record_key()).await?;
        }
        Ok(())
    }

    /// Deletes the server-side session the request carries (logout). Nothing to do for
    /// cookie sessions: clearing the cookie ends them.
    pub async fn end(&self, headers: &HeaderMap) {
        if !self.server_side() {
            return;
        }
        let Ok(Some(v)) = self.read_value(headers) else {
            return;
        };
        if let Some(h) = std::str::from_utf8(&v).ok().and_then(Handle::parse) {
            if let Err(e) = self.store.delete(&h.record_key()).await {
                tracing::warn!(error = %e, "logout: the session could not be deleted from the store");
            }
        }
    }

    fn cookies_for(&self, s: &Session, clear_unused: bool) -> Vec<HeaderValue> {
        let payload = payload_of(s);
        let plain = serde_json::to_vec(&payload).expect("payload serializes");
        let sealed = cookie::seal(&self.cfg.keys, PURPOSE, &plain);
        self.value_cookies(s, &sealed, clear_unused)
    }

    fn value_cookies(&self, s: &Session, sealed: &str, clear_unused: bool) -> Vec<HeaderValue> {
        let max_age = Duration::from_secs((s.expires - s.issued).max(0) as u64);
        let base = &self.cfg.cookie_name;
        let mut out = Vec::new();
        if sealed.len() <= CHUNK {
            out.push(self.set_cookie(base, sealed, Some(max_age), "/"));
            for n in (0..MAX_CHUNKS).filter(|_| clear_unused) {
                out.push(self.set_cookie(&format!("{base}_{n}"), "", None, "/"));
            }
        } else {
            if clear_unused {
                out.push(self.set_cookie(base, "", None, "/"));
            }
            let parts: Vec<&[u8]> = sealed.as_bytes().chunks(CHUNK).collect();
            for (n, part) in parts.iter().enumerate() {
                let part = std::str::from_utf8(part).expect("base64 is ascii");
                out.push(self.set_cookie(&format!("{base}_{n}"), part, Some(max_age), "/"));
            }
            for n in (parts.len()..MAX_CHUNKS).filter(|_| clear_unused) {
                out.push(self.set_cookie(&format!("{base}_{n}"), "", None, "/"));
            }
        }
        out
    }

    /// `Set-Cookie` values that remove every session cookie (logout, invalid cookie).
    pub fn clear(&self) -> Vec<HeaderValue> {
        let base = &self.cfg.cookie_name;
        let mut out = vec![self.set_cookie(base, "", None, "/")];
        for n in 0..MAX_CHUNKS {
            out.push(self.set_cookie(&format!("{base}_{n}"), "", None, "/"));
        }
        out
    }

    /// A `Set-Cookie` value with sidegate's attributes; `max_age: None` with an empty value
    /// deletes the cookie.
    pub fn set_cookie(
        &self,
        name: &str,
        value: &str,
        max_age: Option<Duration>,
        path: &str,
    ) -> HeaderValue {
        self.cookie_with(name, value, max_age, path, self.cfg.same_site)
    }

    /// `set_cookie` with `SameSite=None`, for a cookie that must survive a cross-site POST
    /// (the SAML ACS); only meaningful with `Secure`.
    pub fn set_cookie_same_site_none(
        &self,
        name: &str,
        value: &str,
        max_age: Option<Duration>,
        path: &str,
    ) -> HeaderValue {
        self.cookie_with(name, value, max_age, path, SameSite::None)
    }

    fn cookie_with(
        &self,
        name: &str,
        value: &str,
        max_age: Option<Duration>,
        path: &str,
        same_site: SameSite,
    ) -> HeaderValue {
        let mut c = ::cookie::Cookie::build((name.to_string(), value.to_string()))
            .path(path.to_string())
            .http_only(true)
            .secure(self.cfg.cookie_secure)
            .same_site(match same_site {
                SameSite::Lax => ::cookie::SameSite::Lax,
                SameSite::Strict => ::cookie::SameSite::Strict,
                SameSite::None => ::cookie::SameSite::None,
            });
        if let Some(d) = &self.cfg.cookie_domain {
            c = c.domain(d.clone());
        }
        c = match max_age {
            Some(age) => c.max_age(::cookie::time::Duration::seconds(age.as_secs() as i64)),
            None => c.max_age(::cookie::time::Duration::ZERO),
        };
        HeaderValue::from_str(&c.build().to_string()).expect("cookie is a valid header value")
    }

    /// Seals any value for this deployment (login transactions use their own purpose).
    pub fn seal(&self, purpose: &[u8], plaintext: &[u8]) -> String {
        cookie::seal(&self.cfg.keys, purpose, plaintext)
    }

    /// Opens a value sealed by `seal` with the same purpose.
    pub fn open(&self, purpose: &[u8], value: &str) -> Result<Vec<u8>, OpenError> {
        cookie::open(&self.cfg.keys, purpose, value)
    }

    /// Removes sidegate's own cookies from a request about to go upstream, keeping the app's.
    pub fn strip_own_cookies(&self, headers: &mut HeaderMap) {
        let base = self.cfg.cookie_name.as_bytes();
        let ours = |n: &[u8]| {
            n.strip_prefix(base)
                .is_some_and(|r| r.is_empty() || r[0] == b'_')
        };
        if !cookie_pairs(headers).any(|(n, _)| ours(n)) {
            return;
        }
        // Rebuilt from bytes: the app's cookies pass on as they came, UTF-8 or not.
        let mut kept = Vec::new();
        for (name, value) in cookie_pairs(headers).filter(|(n, _)| !ours(n)) {
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(name);
            kept.push(b'=');
            kept.extend_from_slice(value);
        }
        headers.remove(COOKIE);
        if !kept.is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(&kept) {
                headers.insert(COOKIE, v);
            }
        }
    }
}

/// A version-1 payload, or none for anything else.
fn payload(plain: &[u8]) -> Option<PayloadV1> {
    serde_json::from_slice::<PayloadV1>(plain)
        .ok()
        .filter(|p| p.v == 1)
}

fn session_of(p: PayloadV1, handle: Option<Handle>) -> Session {
    Session {
        sid: p.sid,
        identity: Identity {
            issuer: p.iss,
            subject: p.sub,
            user: p.usr,
            email: p.em,
            role: p.role,
            teams: p.teams,
            extra: p.x,
        },
        issued: p.iat,
        expires: p.exp,
        idle_until: p.idle,
        idp_session: p.idp,
        handle,
    }
}

fn payload_of(s: &Session) -> PayloadV1 {
    PayloadV1 {
        v: 1,
        sid: s.sid.clone(),
        iss: s.identity.issuer.clone(),
        sub: s.identity.subject.clone(),
        usr: s.identity.user.clone(),
        em: s.identity.email.clone(),
        role: s.identity.role.clone(),
        teams: s.identity.teams.clone(),
        iat: s.issued,
        exp: s.expires,
        idle: s.idle_until,
        idp: s.idp_session.clone(),
        x: s.identity.extra.clone(),
    }
}

/// Every `name=value` pair in the request's `Cookie` headers (undecoded, order kept) whose
/// name and value are UTF-8.
pub fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    cookie_pairs(headers)
        .filter_map(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
}

/// Every `name=value` pair in the request's `Cookie` headers as bytes, ASCII whitespace
/// trimmed: the separators are found with memchr and nothing is validated or copied, so a
/// multi-KB session cookie costs little to step over.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.get_all(COOKIE).iter().flat_map(|v| {
        let b = v.as_bytes();
        let mut start = 0;
        memchr::memchr_iter(b';', b)
            .chain(std::iter::once(b.len()))
            .filter_map(move |end| {
                let pair = &b[start..end];
                start = end + 1;
                let eq = memchr::memchr(b'=', pair)?;
                Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
            })
    })
}
