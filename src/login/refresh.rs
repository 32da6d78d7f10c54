//! Session refresh with the OIDC refresh token: due once per `oidc.refresh_interval`, it
//! re-reads the claims (a role or team change at the IdP takes effect), maps the identity
//! again, and re-issues the cookie; policy then judges the new identity.
//!
//! Single flight: every request that carries the same session and refresh token shares one
//! refresh (moka's `get_with` coalesces them), and the result stays for a minute so requests
//! still holding the old cookie get the new session instead of spending a rotated,
//! single-use refresh token again (which would end the session).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::oidc::RefreshError;
use crate::pipeline::Context;
use crate::session::{unix, Session};

/// How long a refresh's outcome is kept for the requests still on the old cookie.
const FLIGHT: Duration = Duration::from_secs(60);

/// Refreshes in flight and just done, by session and refresh token.
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
            Arc::new(run(cx, session, refresh_token, now).await)
        })
        .await;
    (*flight).clone()
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
