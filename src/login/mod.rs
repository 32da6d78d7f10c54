//! Login: the challenge for requests without a session, the start endpoint, the OIDC callback
//! and logout. Produces sessions through `session` and identities through `identity`; never
//! touches upstream headers.

pub mod oidc;
pub mod return_to;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use self::oidc::OidcError;
use self::return_to::ReturnTo;
use self::state::{LoginTx, TxError, UsedStates};
use crate::error::{rescue, Failure, Party};
use crate::pipeline::Context;
use crate::session::{unix, Checked, Invalid};
use crate::{full_body, Body};

/// The login machinery: the provider and the replay cache.
pub struct Login {
    /// The OIDC provider.
    pub provider: Arc<oidc::Provider>,
    /// States already consumed.
    pub used: UsedStates,
}

fn query(req: &Request<()>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the client wants JSON answers (API calls) rather than pages.
pub fn wants_json(req: &Request<()>) -> bool {
    !is_navigation(req)
}

/// A browser navigation: GET/HEAD that accepts HTML. Only these are redirected to the IdP.
pub fn is_navigation(req: &Request<()>) -> bool {
    is_navigation_parts(req.method(), req.headers())
}

/// `is_navigation` for a request whose body is still attached.
pub fn is_navigation_parts(method: &Method, headers: &http::HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"))
}

fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .body(crate::empty_body())
        .expect("valid redirect")
}

/// Answers a protected request that has no valid session: a redirect to the IdP for browser
/// navigations, 401 JSON for everything else (never a redirect for API calls).
pub async fn challenge(cx: &Context, req: &Request<()>, why: Option<Invalid>) -> Response<Body> {
    if let Some(why) = why {
        tracing::info!(reason = %why, "session cookie ignored");
    }
    let mut resp = if is_navigation(req) {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // The request's own path is relative by construction, but it goes through the same check.
        let rt = return_to::check(target, &cx.public_url, &[]).unwrap_or_else(|_| ReturnTo::root());
        cx.metrics.request("redirect_login");
        begin(cx, rt).await
    } else {
        cx.metrics.request("unauthenticated");
        let login = format!(
            "{}{}/start",
            crate::config::public_origin(&cx.public_url),
            cx.routes.prefix()
        );
        let body = serde_json::json!({"error": "unauthenticated", "login_url": login}).to_string();
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::WWW_AUTHENTICATE,
                format!("Bearer realm=\"sidegate\", login_uri=\"{login}\""),
            )
            .header(header::CACHE_CONTROL, "no-store")
            .body(full_body(body))
            .expect("valid 401")
    };
    if why.is_some() {
        for c in cx.sessions.clear() {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    resp
}

/// Starts a login towards `return_to`: a fresh transaction cookie and a redirect to the IdP.
pub async fn begin(cx: &Context, return_to: ReturnTo) -> Response<Body> {
    let auth =
        match cx.login.provider.authorize().await {
            Ok(a) => a,
            Err(e) => return rescue(
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Party::Idp,
                    "The identity provider is not reachable right now; please try again shortly.",
                    e.to_string(),
                ),
                false,
            ),
        };
    let tx = LoginTx {
        state: auth.state,
        nonce: auth.nonce,
        pkce_verifier: auth.pkce_verifier,
        return_to: return_to.as_str().to_string(),
        created: unix(SystemTime::now()),
    };
    let mut resp = redirect(&auth.url);
    resp.headers_mut().append(
        header::SET_COOKIE,
        state::start_cookie(&cx.sessions, cx.routes.prefix(), &tx),
    );
    resp
}

/// `start?rd=…`: begins a login after checking the return URL against the allow-list.
pub async fn start(cx: &Context, req: &Request<()>) -> Response<Body> {
    let q = query(req);
    match return_to::check(
        q.get("rd").map(String::as_str).unwrap_or(""),
        &cx.public_url,
        &cx.access.allowed_redirect_hosts,
    ) {
        Ok(rt) => begin(cx, rt).await,
        Err(e) => rescue(
            Failure::new(
                StatusCode::BAD_REQUEST,
                Party::Downstream,
                "That return address is not allowed.",
                format!("rd refused: {e}"),
            ),
            wants_json(req),
        ),
    }
}

fn login_failed(
    cx: &Context,
    reason: &'static str,
    detail: String,
    status: StatusCode,
    party: Party,
    public: &'static str,
) -> Response<Body> {
    cx.metrics.login("failure", reason);
    tracing::warn!(target: "sidegate::audit", event = "login", outcome = "failure", reason, detail = %detail, "login failed");
    rescue(Failure::new(status, party, public, detail), false)
}

/// The IdP's redirect back: checks the transaction, exchanges the code, verifies the ID
/// token, maps the identity, and starts a new session (new id; old cookies cleared).
pub async fn callback(cx: &Context, req: &Request<()>, now: SystemTime) -> Response<Body> {
    let q = query(req);
    let prefix = cx.routes.prefix();
    if let Some(err) = q.get("error") {
        let detail = format!(
            "IdP returned error `{err}`: {}",
            q.get("error_description").map(String::as_str).unwrap_or("")
        );
        return login_failed(
            cx,
            "idp_error",
            detail,
            StatusCode::FORBIDDEN,
            Party::Idp,
            "Sign-in was not completed at the identity provider.",
        );
    }
    let tx = match state::take(
        &cx.sessions,
        &cx.login.used,
        req.headers(),
        q.get("state").map(String::as_str),
        now,
    ) {
        Ok(tx) => tx,
        Err(e) => {
            let reason = match e {
                TxError::StateMissing => "state_missing",
                TxError::NoTransaction => "no_transaction",
                TxError::Invalid => "transaction_invalid",
                TxError::StateMismatch => "state_mismatch",
                TxError::Expired => "transaction_expired",
                TxError::Replayed => "replayed",
            };
            return login_failed(
                cx,
                reason,
                e.to_string(),
                StatusCode::BAD_REQUEST,
                Party::Downstream,
                "This sign-in link is no longer valid. Please start again.",
            );
        }
    };
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return login_failed(
            cx,
            "code_missing",
            "callback without code".into(),
            StatusCode::BAD_REQUEST,
            Party::Downstream,
            "This sign-in link is no longer valid. Please start again.",
        );
    };
    let claims = match cx
        .login
        .provider
        .complete(code, &tx.nonce, tx.pkce_verifier.as_deref(), now)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let (reason, status, party, public) = match &e {
                OidcError::NotReady(_) => (
                    "idp_unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                    Party::Idp,
                    "The identity provider is not reachable right now; please try again shortly.",
                ),
                OidcError::Exchange(_) => (
                    "code_exchange",
                    StatusCode::BAD_GATEWAY,
                    Party::Idp,
                    "Sign-in could not be completed with the identity provider.",
                ),
                OidcError::NoIdToken | OidcError::IdToken(_) => (
                    "id_token",
                    StatusCode::FORBIDDEN,
                    Party::Idp,
                    "Sign-in was refused: the identity provider's answer did not check out.",
                ),
                OidcError::Userinfo(_) => (
                    "userinfo",
                    StatusCode::FORBIDDEN,
                    Party::Idp,
                    "Sign-in was refused: the identity provider's answer did not check out.",
                ),
            };
            return login_failed(cx, reason, e.to_string(), status, party, public);
        }
    };
    let identity = match crate::identity::resolve(&cx.identity, cx.login.provider.issuer(), &claims)
    {
        Ok(i) => i,
        Err(d) => {
            return login_failed(
                cx,
                "denied",
                d.to_string(),
                StatusCode::FORBIDDEN,
                Party::Downstream,
                "Your account is not allowed to use this application.",
            )
        }
    };
    let (session, cookies) = cx.sessions.create(identity, now);
    cx.metrics.login("success", "ok");
    tracing::info!(target: "sidegate::audit", event = "login", outcome = "success", subject = %session.identity.subject,
        issuer = %session.identity.issuer, user = %session.identity.user, role = %session.identity.role, "login succeeded");
    let mut resp = redirect(ReturnTo::from_sealed(tx.return_to).as_str());
    let h = resp.headers_mut();
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    h.append(
        header::SET_COOKIE,
        state::clear_cookie(&cx.sessions, prefix, &tx.state),
    );
    resp
}

/// Ends the session: cookies cleared, cached assertion dropped, then back to `rd` if allowed.
pub fn logout(cx: &Context, req: &Request<()>, now: SystemTime) -> Response<Body> {
    if let Checked::Valid(s) | Checked::Touch(s) = cx.sessions.check(req.headers(), now) {
        cx.signer.forget(&s.sid);
        tracing::info!(target: "sidegate::audit", event = "logout", subject = %s.identity.subject, "logout");
    }
    let q = query(req);
    let mut resp = match q.get("rd").map(|rd| return_to::check(rd, &cx.public_url, &cx.access.allowed_redirect_hosts)) {
        Some(Ok(rt)) => redirect(rt.as_str()),
        Some(Err(e)) => return rescue(Failure::new(StatusCode::BAD_REQUEST, Party::Downstream, "That return address is not allowed.", format!("logout rd refused: {e}")), wants_json(req)),
        None => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .body(full_body("<!DOCTYPE html><title>Signed out</title><h1>Signed out</h1><p><a href=\"/\">Sign in again</a></p>\n"))
            .expect("static page"),
    };
    for c in cx.sessions.clear() {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// The current identity as JSON (no tokens), or 401.
pub fn userinfo(cx: &Context, req: &Request<()>, now: SystemTime) -> Response<Body> {
    match cx.sessions.check(req.headers(), now) {
        Checked::Valid(s) | Checked::Touch(s) => {
            let id = &s.identity;
            let body = serde_json::json!({
                "user": id.user, "email": id.email, "role": id.role, "teams": id.teams,
                "sub": id.subject, "iss": id.issuer, "expires_at": s.expires,
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-store")
                .body(full_body(body.to_string()))
                .expect("valid json response")
        }
        _ => rescue(
            Failure::new(
                StatusCode::UNAUTHORIZED,
                Party::Downstream,
                "unauthenticated",
                "userinfo without a session",
            ),
            true,
        ),
    }
}

/// The assertion verification keys.
pub fn jwks(cx: &Context) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )
        .body(http_body_util::BodyExt::boxed_unsync(
            http_body_util::BodyExt::map_err(
                http_body_util::Full::new(cx.signer.jwks()),
                |never| match never {},
            ),
        ))
        .expect("valid jwks response")
}
