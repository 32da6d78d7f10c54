//! Logouts the OpenID provider starts: back-channel (`oidc/backchannel-logout`, a signed
//! logout token POSTed server to server) and front-channel (`oidc/frontchannel-logout?iss=&sid=`
//! in an iframe of the provider's signed-out page). Both end sessions through the session
//! revocation list, since stateless cookies cannot be deleted from here.

use std::time::SystemTime;

use http::{header, Method, Request, Response, StatusCode};

use super::acs::read_capped;
use crate::pipeline::Context;
use crate::session::{unix, Revoke};
use crate::{full_body, Body};

const MAX_BODY: usize = 64 * 1024;

fn answer(status: StatusCode, error: Option<&str>) -> Response<Body> {
    let body = match error {
        Some(e) => {
            serde_json::json!({"error": "invalid_request", "error_description": e}).to_string()
        }
        None => String::new(),
    };
    Response::builder()
        .status(status)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::CONTENT_TYPE, "application/json")
        .body(full_body(body))
        .expect("static response")
}

fn refused(cx: &Context, why: String) -> Response<Body> {
    cx.metrics.request("idp_logout_refused");
    tracing::warn!(target: "sidegate::audit", event = "backchannel_logout", outcome = "refused", reason = %why, "logout token refused");
    answer(
        StatusCode::BAD_REQUEST,
        Some("the logout token was refused"),
    )
}

/// `oidc/backchannel-logout`: verifies the provider's logout token and revokes the session it
/// names (by `sid`, else every session of `sub`). 200 when done, 400 with a reason logged.
pub async fn backchannel(cx: &Context, req: Request<Body>, now: SystemTime) -> Response<Body> {
    if req.method() != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, Some("POST only"));
    }
    let body = match read_capped(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return refused(cx, e),
    };
    let Some(token) = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
    else {
        return refused(cx, "no logout_token in the body".into());
    };
    let iss = crate::bearer::token::peek_issuer(&token).unwrap_or_default();
    let Some(provider) = cx.login.oidc_by_issuer(&iss) else {
        return refused(cx, format!("issuer `{iss}` is not a configured provider"));
    };
    let t = match provider
        .verify_logout_token(cx.sessions.store(), &token, unix(now))
        .await
    {
        Ok(t) => t,
        Err(e) => return refused(cx, e),
    };
    let by = match (&t.sid, &t.sub) {
        (Some(sid), _) => Revoke::Sid(sid),
        (None, Some(sub)) => Revoke::Sub(sub),
        (None, None) => unreachable!("logout_token::verify requires sid or sub"),
    };
    if let Err(e) = cx.sessions.revoke(provider.issuer(), by, unix(now)).await {
        tracing::warn!(error = %e, provider = provider.name(), "back-channel logout not applied: the session store is unavailable; the IdP should retry");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("session store unavailable"),
        );
    }
    cx.metrics.request("idp_logout");
    tracing::info!(target: "sidegate::audit", event = "backchannel_logout", outcome = "success",
        provider = provider.name(), sid = t.sid.as_deref().unwrap_or("-"), subject = t.sub.as_deref().unwrap_or("-"),
        "session ended by the IdP");
    answer(StatusCode::OK, None)
}

/// `oidc/frontchannel-logout?iss=…&sid=…`: revokes that IdP session and clears this
/// browser's cookies (when the iframe gets them). Unsigned by design (OpenID Connect
/// Front-Channel Logout 1.0): it can only end sessions, and only the one `sid` names.
pub async fn frontchannel(cx: &Context, req: &Request<()>, now: SystemTime) -> Response<Body> {
    let q = super::query(req);
    let (Some(iss), Some(sid)) = (q.get("iss"), q.get("sid").filter(|s| !s.is_empty())) else {
        return answer(StatusCode::BAD_REQUEST, Some("iss and sid are required"));
    };
    let Some(provider) = cx.login.oidc_by_issuer(iss) else {
        return answer(StatusCode::BAD_REQUEST, Some("unknown issuer"));
    };
    if let Err(e) = cx
        .sessions
        .revoke(provider.issuer(), Revoke::Sid(sid), unix(now))
        .await
    {
        tracing::warn!(error = %e, provider = provider.name(), "front-channel logout not applied: the session store is unavailable");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("session store unavailable"),
        );
    }
    tracing::info!(target: "sidegate::audit", event = "frontchannel_logout", provider = provider.name(), sid = %sid, "session ended by the IdP");
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(full_body("<!DOCTYPE html><title>Signed out</title>\n"))
        .expect("static response");
    for c in cx.sessions.clear() {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}
