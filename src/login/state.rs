//! The login transaction: state (OIDC `state`, SAML `RelayState`), the protocol's own
//! values (nonce and PKCE verifier, or the AuthnRequest ID) and the return URL, kept in a
//! short-lived sealed cookie bound to the browser that started the login.
//!
//! One cookie per transaction (named after a prefix of its state), so logins started in two
//! tabs do not overwrite each other. A consumed state is remembered until the transaction
//! would have expired, so a replayed callback is refused even with the cookie.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::session::{request_cookies, unix, Sessions};
use crate::store::Store;

const PURPOSE: &[u8] = b"sidegate login v1";
const NAME_STATE_CHARS: usize = 12;

/// A login in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginTx {
    /// The `state` (OIDC) or `RelayState` (SAML) sent to the IdP: an opaque random id.
    pub state: String,
    /// What the protocol needs to check the answer.
    pub proto: TxProto,
    /// Where to go after login (already checked).
    pub return_to: String,
    /// When the login started (Unix seconds).
    pub created: i64,
}

/// Protocol-specific values of a login transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "p", rename_all = "lowercase")]
pub enum TxProto {
    /// An OIDC authorization code flow.
    Oidc {
        /// The provider it was sent to (its name in the config).
        #[serde(default)]
        provider: String,
        /// The `nonce` sent to the IdP.
        nonce: String,
        /// The PKCE verifier, when PKCE is on.
        pkce_verifier: Option<String>,
    },
    /// A SAML SP-initiated login.
    Saml {
        /// The AuthnRequest ID the Response must answer (`InResponseTo`).
        request_id: String,
        /// The IdP it was sent to (its name in the config).
        idp: String,
    },
    /// A SAML single logout we started.
    SamlLogout {
        /// The LogoutRequest ID the LogoutResponse must answer.
        request_id: String,
    },
}

/// Why a callback's transaction was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// No `state` parameter.
    #[error("state parameter missing")]
    StateMissing,
    /// No login cookie for that state (never started here, other browser, or expired).
    #[error("no login transaction for this state")]
    NoTransaction,
    /// Cookie present but does not open or does not match.
    #[error("login transaction cookie invalid")]
    Invalid,
    /// State differs from the one sealed in the cookie.
    #[error("state mismatch")]
    StateMismatch,
    /// Older than `session.login_lifetime`.
    #[error("login transaction expired")]
    Expired,
    /// The shared store could not record the state as used.
    #[error("session store unavailable")]
    Unavailable,
    /// This state was already used.
    #[error("callback replayed")]
    Replayed,
}

/// Cookie name of the transaction for `state`.
fn cookie_name(base: &str, state: &str) -> String {
    let short: String = state.chars().take(NAME_STATE_CHARS).collect();
    format!("{base}_login_{short}")
}

/// Seals a transaction into its cookie. A SAML transaction's cookie must come back on the
/// IdP's cross-site POST to the ACS, so it is `SameSite=None` when cookies are `Secure`
/// (browsers refuse `None` without `Secure`; plain-http deployments are same-site anyway).
pub fn start_cookie(sessions: &Sessions, prefix: &str, tx: &LoginTx) -> HeaderValue {
    let plain = serde_json::to_vec(tx).expect("tx serializes");
    let sealed = sessions.seal(PURPOSE, &plain);
    let base = &sessions.config().cookie_name;
    let cross_site_post =
        matches!(tx.proto, TxProto::Saml { .. }) && sessions.config().cookie_secure;
    let name = cookie_name(base, &tx.state);
    let age = Some(sessions.config().login_lifetime);
    if cross_site_post {
        sessions.set_cookie_same_site_none(&name, &sealed, age, prefix)
    } else {
        sessions.set_cookie(&name, &sealed, age, prefix)
    }
}

/// Keeps a new transaction: in its cookie (returned), or in the store when
/// `session.login_transactions = "store"` (no cookie; the `state` alone names it, so the
/// callback may land on any host or replica, at the price of the browser binding).
pub async fn keep(
    sessions: &Sessions,
    prefix: &str,
    tx: &LoginTx,
) -> Result<Option<HeaderValue>, crate::store::StoreError> {
    if !sessions.config().login_in_store {
        return Ok(Some(start_cookie(sessions, prefix, tx)));
    }
    let plain = serde_json::to_vec(tx).expect("tx serializes");
    let sealed = sessions.seal(PURPOSE, &plain);
    sessions
        .store()
        .put(
            &tx_key(&tx.state),
            sealed.as_bytes(),
            sessions.config().login_lifetime,
        )
        .await?;
    Ok(None)
}

fn tx_key(state: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let h = sha2::Sha256::digest(state.as_bytes());
    format!(
        "tx:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h)
    )
}

/// Deletes the transaction cookie for `state`.
pub fn clear_cookie(sessions: &Sessions, prefix: &str, state: &str) -> HeaderValue {
    sessions.set_cookie(
        &cookie_name(&sessions.config().cookie_name, state),
        "",
        None,
        prefix,
    )
}

/// Finds, opens and checks the transaction for the callback's `state`, and marks it used.
pub async fn take(
    sessions: &Sessions,
    headers: &HeaderMap,
    state: Option<&str>,
    now: SystemTime,
) -> Result<LoginTx, TxError> {
    let state = state
        .filter(|s| !s.is_empty())
        .ok_or(TxError::StateMissing)?;
    let name = cookie_name(&sessions.config().cookie_name, state);
    let stored;
    let value = if sessions.config().login_in_store {
        stored = match sessions.store().get(&tx_key(state)).await {
            Ok(Some(v)) => String::from_utf8(v).map_err(|_| TxError::Invalid)?,
            Ok(None) => return Err(TxError::NoTransaction),
            Err(e) => {
                tracing::warn!(error = %e, "login transaction could not be read from the store");
                return Err(TxError::Unavailable);
            }
        };
        stored.as_str()
    } else {
        request_cookies(headers)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or(TxError::NoTransaction)?
    };
    let plain = sessions
        .open(PURPOSE, value)
        .map_err(|_| TxError::Invalid)?;
    let tx: LoginTx = serde_json::from_slice(&plain).map_err(|_| TxError::Invalid)?;
    if !bool::from(tx.state.as_bytes().ct_eq(state.as_bytes())) {
        return Err(TxError::StateMismatch);
    }
    if unix(now) - tx.created > sessions.config().login_lifetime.as_secs() as i64 {
        return Err(TxError::Expired);
    }
    let ttl = sessions.config().login_lifetime;
    match crate::store::first_use(sessions.store(), "state", &tx.state, ttl).await {
        Ok(true) => {
            if sessions.config().login_in_store {
                // Used once: the entry goes (the first_use mark refuses a replay anyway).
                let _ = sessions.store().delete(&tx_key(&tx.state)).await;
            }
            Ok(tx)
        }
        Ok(false) => Err(TxError::Replayed),
        Err(e) => {
            tracing::warn!(error = %e, "login state could not be marked used");
            Err(TxError::Unavailable)
        }
    }
}
