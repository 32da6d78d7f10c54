//! Session refresh with the OIDC refresh token: due once per `oidc.refresh_interval`, it
//! re-reads the claims (a role or team change at the IdP takes effect), maps the identity
//! again, and re-issues the cookie; policy then judges the new identity.
//!
//! Single flight: every request that carries the same session and refresh token shares one
//! refresh (moka's `get_with` coalesces them), and the result stays for a minute so requests
//! still holding the old cookie get the new session instead of spending a rotated,
//! single-use refresh token again (which would end the session). With sessions on a shared
//! store the flight spans replicas: a lock in the store lets one replica refresh; the
//! others wait for the stored session to change and use it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::oidc::RefreshError;
use crate::pipeline::Context;
use crate::session::{unix, Session};
use crate::store::Store;

/// How long a refresh's outcome is kept for the requests still on the old cookie.
const FLIGHT: Duration = Duration::from_secs(60);
/// How long the cross-replica lock is held at most (a refresh is bounded by the IdP
/// client's timeout well below this).
const LOCK: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Refreshes in flight and just done, by session and refresh token. Clones share the
/// flights (a config reload keeps them).
#[derive(Clone)]
pub struct Flights {
    cache: moka::future::Cache<[u8; 32], Arc<Result<Session, RefreshError>>>,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(FLIGHT)
                .build(),
        }
    }
}

/// The refreshed session, or why not (`Rejected` ends the session; `Unavailable` keeps it).
pub async fn refresh(
    cx: &Context,
    session: &Session,
    refresh_token: &str,
    now: SystemTime,
) -> Result<Session, RefreshError> {
    let mut h = Sha256::new();
    h.update(session.sid.as_bytes());
    h.update([0]);
    h.update(refresh_token.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    let flight = cx
        .login
        .flights
        .cache
        .get_with(key, async {
            Arc::new(across_replicas(cx, session, refresh_token, &key, now).await)
        })
        .await;
    (*flight).clone()
}

/// One refresh per session among the replicas sharing the store (just `run` when the
/// store is this process's).
async fn across_replicas(
    cx: &Context,
    session: &Session,
    refresh_token: &str,
    key: &[u8; 32],
    now: SystemTime,
) -> Result<Session, RefreshError> {
    let store = cx.sessions.store();
    let stored = cx.sessions.server_side();
    if !(stored && store.is_shared()) {
        let next = run(cx, session, refresh_token, now).await;
        return if stored {
            keep(cx, session, next, now).await
        } else {
            next
        };
    }
    let lock = format!("lock:refresh:{}", hex(key));
    match store.put_new(&lock, b"1", LOCK).await {
        Ok(true) => {
            let next = run(cx, session, refresh_token, now).await;
            let out = keep(cx, session, next, now).await;
            if let Err(e) = store.delete(&lock).await {
                tracing::warn!(error = %e, "refresh lock not released; it expires by itself");
            }
            out
        }
        Ok(false) => wait_for_other(cx, session, refresh_token, &lock).await,
        Err(e) => Err(RefreshError::Unavailable(format!("session store: {e}"))),
    }
}

/// Writes the outcome to the store: the new session, or none after a refusal.
async fn keep(
    cx: &Context,
    old: &Session,
    next: Result<Session, RefreshError>,
    now: SystemTime,
) -> Result<Session, RefreshError> {
    let stored = match &next {
        Ok(s) => cx.sessions.replace(s, now).await,
        Err(RefreshError::Rejected(_)) => cx.sessions.remove(old).await,
        Err(RefreshError::Unavailable(_)) => Ok(()),
    };
    match stored {
        Ok(()) => next,
        Err(e) => Err(RefreshError::Unavailable(format!(
            "refreshed session not stored: {e}"
        ))),
    }
}

/// Another replica holds the lock: wait until the stored session has been refreshed (a new
/// refresh time; the token may be the same with a non-rotating IdP), disappears (the
/// refresh was refused), or the lock goes without a change.
async fn wait_for_other(
    cx: &Context,
    session: &Session,
    refresh_token: &str,
    lock: &str,
) -> Result<Session, RefreshError> {
    let unavailable = |why: String| Err(RefreshError::Unavailable(why));
    let due = |s: &Session| s.idp_session.as_ref().map(|i| i.refresh_due);
    let before = (due(session), refresh_token);
    let rounds = (LOCK.as_millis() / POLL.as_millis()) as usize;
    for _ in 0..rounds {
        tokio::time::sleep(POLL).await;
        match cx.sessions.reload(session).await {
            Ok(None) => {
                return Err(RefreshError::Rejected(
                    "the session ended during a refresh on another replica".into(),
                ))
            }
            Ok(Some(s)) if (due(&s), s.refresh_due(i64::MAX).unwrap_or("")) != before => {
                return Ok(s)
            }
            Ok(Some(_)) => match cx.sessions.store().get(lock).await {
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return unavailable("another replica's refresh did not complete".into())
                }
                Err(e) => return unavailable(format!("session store: {e}")),
            },
            Err(e) => return unavailable(format!("session store: {e}")),
        }
    }
    unavailable("another replica's refresh took too long".into())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn run(
    cx: &Context,
    session: &Session,
    refresh_token: &str,
    now: SystemTime,
) -> Result<Session, RefreshError> {
    let provider = cx
        .login
        .oidc_by_issuer(&session.identity.issuer)
        .ok_or_else(|| {
            RefreshError::Rejected("the session's provider is no longer configured".into())
        })?;
    let (claims, kept, id_token) = provider
        .refresh(refresh_token, &session.identity.subject, now)
        .await?;
    let identity = crate::identity::resolve(
        &provider.identity_config(&cx.identity),
        provider.issuer(),
        &claims,
    )
    .map_err(|d| RefreshError::Rejected(format!("identity refused: {d}")))?;
    let interval = provider.refresh_interval().unwrap_or(FLIGHT);
    let next = session.refreshed(
        identity,
        kept,
        id_token,
        unix(now) + interval.as_secs() as i64,
    );
    // The cached assertion carries the old claims.
    cx.signer.forget(&session.sid);
    tracing::info!(target: "sidegate::audit", event = "refresh", subject = %next.identity.subject,
        role = %next.identity.role, previous_role = %session.identity.role, "session refreshed");
    Ok(next)
}
