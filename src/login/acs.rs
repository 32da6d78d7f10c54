//! The SAML ACS endpoint: the IdP's HTTP-POST of a Response. Reads the body under a cap,
//! finds the login transaction the RelayState names, runs the check, refuses replays, and
//! ends in the same `finish_login` as OIDC. Unsolicited (IdP-initiated) responses follow
//! `saml.idp_initiated`: off, restart (verify, discard, start an SP-initiated login) or
//! accept.

use std::time::SystemTime;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;

use super::return_to::{self, ReturnTo};
use super::saml::{Idp, Saml};
use super::state::{self, TxError, TxProto};
use super::{begin_saml, denied, finish_login, login_failed, not_enabled, tx_refused};
use crate::config::IdpInitiated;
use crate::error::Party;
use crate::pipeline::Context;
use crate::Body;

const REFUSED: &str = "Sign-in was refused: the identity provider's answer did not check out.";

/// Which login a Response answers.
enum Answering {
    /// One this browser started: its return URL and the AuthnRequest ID.
    Solicited {
        state: String,
        return_to: String,
        request_id: String,
        idp: String,
    },
    /// None: an IdP-initiated response, with the RelayState it carried.
    Unsolicited { relay_state: Option<String> },
}

/// `saml/acs`.
pub async fn saml_acs(cx: &Context, req: Request<Body>, now: SystemTime) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    let Some(saml) = cx.login.saml.clone() else {
        return not_enabled(&head, "SAML");
    };
    if head.method() != Method::POST {
        let mut r = login_failed(
            cx,
            "method",
            format!("{} to the ACS", head.method()),
            StatusCode::METHOD_NOT_ALLOWED,
            Party::Downstream,
            "The sign-in endpoint only accepts the identity provider's POST.",
        );
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return r;
    }
    let max = saml.config().max_response_bytes;
    // Base64 and form encoding at most roughly double the XML; anything bigger is not a
    // response we would accept, and is never buffered.
    let body = match read_capped(body, max * 2 + 16 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return login_failed(
                cx,
                "too_large",
                format!("ACS body refused: {e}"),
                StatusCode::PAYLOAD_TOO_LARGE,
                Party::Downstream,
                REFUSED,
            )
        }
    };
    let form = match saml.decode_form(&body) {
        Ok(f) if f.xml.len() <= max => f,
        Ok(f) => {
            return login_failed(
                cx,
                "too_large",
                format!("SAMLResponse is {} bytes, limit {max}", f.xml.len()),
                StatusCode::PAYLOAD_TOO_LARGE,
                Party::Downstream,
                REFUSED,
            )
        }
        Err(e) => {
            return login_failed(
                cx,
                e.reason(),
                e.to_string(),
                StatusCode::BAD_REQUEST,
                Party::Downstream,
                REFUSED,
            )
        }
    };
    let answering = match state::take(
        &cx.sessions,
        head.headers(),
        form.relay_state.as_deref(),
        now,
    )
    .await
    {
        Ok(tx) => match tx.proto {
            TxProto::Saml { request_id, idp } => Answering::Solicited {
                state: tx.state,
                return_to: tx.return_to,
                request_id,
                idp,
            },
            TxProto::Oidc { .. } | TxProto::SamlLogout { .. } => {
                return login_failed(
                    cx,
                    "wrong_protocol",
                    "a SAML response for another kind of transaction".into(),
                    StatusCode::BAD_REQUEST,
                    Party::Downstream,
                    REFUSED,
                )
            }
        },
        Err(TxError::NoTransaction | TxError::StateMissing) => Answering::Unsolicited {
            relay_state: form.relay_state.clone(),
        },
        Err(e) => return tx_refused(cx, e),
    };
    // Which IdP's certificates decide: the one this browser's login went to, or, for an
    // unsolicited response, the one its Issuer names (checked by its signature next).
    let (idp, expected) =
        match &answering {
            Answering::Solicited {
                request_id, idp, ..
            } => match saml.idp(Some(idp)) {
                Ok(i) => (i, Some(request_id.clone())),
                Err(e) => return login_failed(
                    cx,
                    "not_ready",
                    e.to_string(),
                    StatusCode::SERVICE_UNAVAILABLE,
                    Party::Idp,
                    "The identity provider is not reachable right now; please try again shortly.",
                ),
            },
            Answering::Unsolicited { .. } => match saml.unsolicited_idp(&form.xml) {
                Ok(i) => (i, None),
                Err(e) => {
                    return login_failed(
                        cx,
                        e.reason(),
                        e.to_string(),
                        StatusCode::FORBIDDEN,
                        Party::Idp,
                        REFUSED,
                    )
                }
            },
        };
    let mode = idp.idp_initiated();
    if matches!(answering, Answering::Unsolicited { .. }) && mode == IdpInitiated::Off {
        return login_failed(
            cx,
            "unsolicited",
            format!("a response from {} without a login transaction of this browser, and its idp_initiated is off", idp.name),
            StatusCode::FORBIDDEN,
            Party::Downstream,
            "Sign-in that starts at the identity provider is not enabled for this application. Please open the application and sign in from there.",
        );
    }
    if saml.seen_before(cx.sessions.store(), &form.xml).await {
        return login_failed(
            cx,
            "replayed",
            "the assertion was already used (refused before verification)".into(),
            StatusCode::FORBIDDEN,
            Party::Downstream,
            REFUSED,
        );
    }
    let verified = match saml.verify(idp.clone(), form.xml, expected, now).await {
        Ok(v) => v,
        Err(e) => {
            return login_failed(
                cx,
                e.reason(),
                e.to_string(),
                StatusCode::FORBIDDEN,
                Party::Idp,
                REFUSED,
            )
        }
    };
    match saml.first_use(cx.sessions.store(), &verified, now).await {
        Ok(true) => {}
        Ok(false) => {
            return login_failed(
                cx,
                "replayed",
                format!("assertion {} was already used", verified.assertion_id),
                StatusCode::FORBIDDEN,
                Party::Downstream,
                REFUSED,
            )
        }
        Err(e) => {
            return login_failed(
                cx,
                "store_unavailable",
                format!(
                    "assertion {} could not be marked used: {e}",
                    verified.assertion_id
                ),
                StatusCode::SERVICE_UNAVAILABLE,
                Party::Internal,
                "Sign-in cannot be completed right now. Please try again in a minute.",
            )
        }
    }
    match answering {
        Answering::Solicited {
            state, return_to, ..
        } => {
            let identity = match resolve(cx, &idp, &verified) {
                Ok(i) => i,
                Err(resp) => return resp,
            };
            finish_login(
                cx,
                identity,
                idp_session(&verified),
                ReturnTo::from_sealed(return_to),
                Some(&state),
                now,
            )
            .await
        }
        Answering::Unsolicited { relay_state } => {
            let rt = landing(cx, &idp, relay_state.as_deref());
            if mode == IdpInitiated::Restart {
                tracing::info!(target: "sidegate::audit", event = "login", outcome = "restart", idp = %idp.name,
                    subject = %verified.name_id, "IdP-initiated response verified and discarded; starting an SP-initiated login");
                return begin_saml(cx, &saml, Some(&idp.name), rt).await;
            }
            let identity = match resolve(cx, &idp, &verified) {
                Ok(i) => i,
                Err(resp) => return resp,
            };
            finish_login(cx, identity, idp_session(&verified), rt, None, now).await
        }
    }
}

/// What single logout will need from this assertion.
fn idp_session(v: &super::saml::Verified) -> Option<crate::session::IdpSession> {
    v.session_index
        .clone()
        .map(|session_index| crate::session::IdpSession {
            session_index,
            name_id_format: v.name_id_format.clone(),
            ..Default::default()
        })
}

/// Reads a body, refusing it as soon as it grows past `limit` bytes.
pub(super) async fn read_capped(mut body: Body, limit: usize) -> Result<bytes::Bytes, String> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(format!("body larger than {limit} bytes"));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[allow(clippy::result_large_err)] // the Err is the finished error page
fn resolve(
    cx: &Context,
    idp: &Idp,
    v: &super::saml::Verified,
) -> Result<crate::identity::Identity, Response<Body>> {
    crate::identity::resolve(
        &idp.identity_config(&cx.identity),
        &v.issuer,
        &Saml::claims(v),
    )
    .map_err(|d| denied(cx, d))
}

/// Where an IdP-initiated login lands: RelayState if it passes the redirect allow-list,
/// else the configured landing path.
fn landing(cx: &Context, idp: &Idp, relay_state: Option<&str>) -> ReturnTo {
    let check = |target: &str| {
        return_to::check(target, &cx.public_url, &cx.access.allowed_redirect_hosts).ok()
    };
    relay_state
        .and_then(check)
        .or_else(|| check(idp.landing()))
        .unwrap_or_else(ReturnTo::root)
}
