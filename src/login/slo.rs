//! SAML single logout over the HTTP-Redirect binding: the LogoutRequest we send when a SAML
//! session logs out, the IdP's LogoutResponse to it, and the IdP's own LogoutRequest (which
//! must be signed) ending this browser's session.

use std::time::SystemTime;

use http::{header, Request, Response, StatusCode};

use super::return_to::ReturnTo;
use super::saml::logout::{RESPONDER, SUCCESS};
use super::state::{self, LoginTx, TxProto};
use super::{login_failed, not_enabled, redirect, redirect_with_tx, wants_json};
use crate::error::{rescue, Failure, Party};
use crate::pipeline::Context;
use crate::session::{unix, Checked, Session};
use crate::Body;

/// For a session from the SAML IdP, the redirect that starts single logout there (with a
/// logout transaction cookie); `None` means a local logout is all there is to do.
pub(super) async fn begin(
    cx: &Context,
    s: &Session,
    rd: Option<&ReturnTo>,
    now: SystemTime,
) -> Option<Response<Body>> {
    let saml = cx.login.saml.as_ref()?;
    let idp_session = s.idp_session.as_ref()?;
    let idp = saml
        .idp_by_entity(&s.identity.issuer)
        .filter(|i| i.has_slo())?;
    let relay = crate::keys::random_token::<16>();
    match saml.logout_request(&idp, &s.identity.subject, idp_session, &relay, now) {
        Ok((url, request_id)) => {
            let tx = LoginTx {
                state: relay,
                proto: TxProto::SamlLogout { request_id },
                // Without rd, end on our own "signed out" page.
                return_to: rd.map_or_else(
                    || format!("{}/logout", cx.routes.prefix()),
                    |r| r.as_str().to_string(),
                ),
                created: unix(now),
            };
            Some(redirect_with_tx(cx, url.as_str(), &tx).await)
        }
        Err(e) => {
            tracing::warn!(error = %e, "SAML single logout could not start; signed out locally only");
            None
        }
    }
}

/// `saml/slo`: a LogoutRequest from the IdP, or the LogoutResponse to ours.
pub async fn saml_slo(cx: &Context, req: &Request<()>, now: SystemTime) -> Response<Body> {
    if cx.login.saml.is_none() {
        return not_enabled(req, "SAML");
    }
    let query = req.uri().query().unwrap_or("");
    let has = |p: &str| query.split('&').any(|kv| kv.split('=').next() == Some(p));
    if has("SAMLRequest") {
        idp_logout(cx, req, query, now).await
    } else if has("SAMLResponse") {
        logout_done(cx, req, query, now).await
    } else {
        rescue(
            Failure::new(
                StatusCode::BAD_REQUEST,
                Party::Downstream,
                "This sign-out link is not valid.",
                "saml/slo without SAMLRequest or SAMLResponse (only the HTTP-Redirect binding is supported)",
            ),
            wants_json(req),
        )
    }
}

fn slo_failed(reason: &'static str, detail: String) -> Response<Body> {
    tracing::warn!(target: "sidegate::audit", event = "logout", outcome = "failure", reason, detail = %detail, "single logout refused");
    rescue(
        Failure::new(
            StatusCode::BAD_REQUEST,
            Party::Idp,
            "This sign-out message from the identity provider did not check out.",
            detail,
        ),
        false,
    )
}

/// The IdP ends this browser's session: signature required; the session ends only if it
/// is the one named (issuer, NameID, SessionIndex); the answer goes back to the IdP.
async fn idp_logout(
    cx: &Context,
    req: &Request<()>,
    query: &str,
    now: SystemTime,
) -> Response<Body> {
    let saml = cx.login.saml.as_ref().expect("checked by the caller");
    let (idp, lr, relay) = match saml.read_logout_request(query, now) {
        Ok(x) => x,
        Err(e) => return slo_failed(e.reason(), e.to_string()),
    };
    let (status, end_here) = match cx.sessions.check(req.headers(), now).await {
        Checked::Valid(s) | Checked::Touch(s) => {
            let named = s.identity.issuer == idp.metadata.entity_id
                && s.identity.subject == lr.name_id
                && (lr.session_indexes.is_empty()
                    || s.idp_session
                        .as_ref()
                        .is_some_and(|i| lr.session_indexes.contains(&i.session_index)));
            if named {
                cx.signer.forget(&s.sid);
                tracing::info!(target: "sidegate::audit", event = "logout", outcome = "idp_initiated", subject = %s.identity.subject, "session ended by the IdP");
                (SUCCESS, true)
            } else {
                tracing::warn!(target: "sidegate::audit", event = "logout", outcome = "failure", reason = "other_session",
                    named = %lr.name_id, "IdP LogoutRequest names another session than this browser's; kept");
                (RESPONDER, false)
            }
        }
        // No live session here: nothing to end, which is what the IdP wants.
        _ => (SUCCESS, true),
    };
    let url = match saml.logout_response(&idp, &lr.id, status, relay.as_deref(), now) {
        Ok(u) => u,
        Err(e) => {
            return rescue(
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Party::Idp,
                    "Sign-out could not be completed.",
                    e.to_string(),
                ),
                false,
            )
        }
    };
    let mut resp = redirect(url.as_str());
    if end_here {
        cx.sessions.end(req.headers()).await;
        for c in cx.sessions.clear() {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    resp
}

/// The IdP answers our LogoutRequest: the session here is already gone; check the answer
/// belongs to this browser's logout and go where that logout asked.
async fn logout_done(
    cx: &Context,
    req: &Request<()>,
    query: &str,
    now: SystemTime,
) -> Response<Body> {
    let saml = cx.login.saml.as_ref().expect("checked by the caller");
    let (lr, relay) = match saml.read_logout_response(query) {
        Ok(x) => x,
        Err(e) => return slo_failed(e.reason(), e.to_string()),
    };
    let tx = match state::take(&cx.sessions, req.headers(), relay.as_deref(), now).await {
        Ok(tx) => tx,
        Err(e) => return slo_failed("transaction", e.to_string()),
    };
    let TxProto::SamlLogout { request_id } = &tx.proto else {
        return login_failed(
            cx,
            "wrong_protocol",
            "a LogoutResponse for a login transaction".into(),
            StatusCode::BAD_REQUEST,
            Party::Downstream,
            "This sign-out link is not valid.",
        );
    };
    if lr.in_response_to.as_deref() != Some(request_id) {
        return slo_failed(
            "in_response_to",
            "the LogoutResponse answers another request".into(),
        );
    }
    if lr.status == SUCCESS {
        tracing::info!(target: "sidegate::audit", event = "logout", outcome = "idp_confirmed", "single logout confirmed by the IdP");
    } else {
        tracing::warn!(target: "sidegate::audit", event = "logout", outcome = "partial", status = %lr.status,
            "the IdP reports its logout incomplete; signed out here");
    }
    let mut resp = redirect(ReturnTo::from_sealed(tx.return_to.clone()).as_str());
    resp.headers_mut().append(
        header::SET_COOKIE,
        state::clear_cookie(&cx.sessions, cx.routes.prefix(), &tx.state),
    );
    resp
}
