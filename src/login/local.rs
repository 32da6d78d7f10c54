//! Local accounts: sign-in with a name and password checked against argon2 or bcrypt hashes
//! from the users file, on sidegate's own form, as the provider named `local` (shown on the
//! chooser beside the SSO providers; routes can require or refuse it through policy `idps`).
//! Meant for break-glass admins and migrations, so it is strict: a CSRF token bound to a
//! cookie, the same answer and the same work for unknown users and wrong passwords, hashing
//! on the blocking pool, and a failed-attempt limit per client address.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use http::{header, Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use super::acs::read_capped;
use super::return_to::{self, ReturnTo};
use crate::config::{LocalConfig, LocalUser};
use crate::error::{html_escape, rescue, Failure, Party};
use crate::identity::Identity;
use crate::pipeline::Context;
use crate::{full_body, Body};

/// The provider name local sessions record (policy `idps = ["local"]`).
pub const ISSUER: &str = "local";
const MAX_BODY: usize = 8 * 1024;

/// The users, a hash to spend the same time on for unknown names, and failures per address.
pub struct Local {
    users: Vec<LocalUser>,
    decoy: String,
    failures: moka::sync::Cache<IpAddr, u32>,
    max_failures: u32,
}

/// An argon2id hash of `password` with a random salt (for `sidegate local hash-password`).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&crate::keys::random_bytes::<16>()).expect("16-byte salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

fn verify(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        PasswordHash::new(hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

impl Local {
    /// Takes the validated users.
    pub fn new(cfg: LocalConfig) -> Self {
        Local {
            users: cfg.users,
            decoy: hash_password(&crate::keys::random_token::<16>()),
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.lockout)
                .build(),
            max_failures: cfg.max_failures,
        }
    }
}

fn csrf_cookie(cx: &Context) -> String {
    format!("{}_csrf", cx.sessions.config().cookie_name)
}

/// The sign-in form, with a fresh CSRF token in a cookie and in the form.
pub fn form(cx: &Context, return_to: &ReturnTo, error: Option<&str>) -> Response<Body> {
    let token = crate::keys::random_token::<18>();
    let action = format!("{}/local/login", cx.routes.prefix());
    let error = error
        .map(|e| format!("<p role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in</title></head><body><main>\
         <h1>Sign in with a local account</h1>{error}\
         <form method=\"post\" action=\"{}\">\
         <label>User <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <input type=\"hidden\" name=\"rd\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <button>Sign in</button></form></main></body></html>\n",
        html_escape(&action),
        html_escape(return_to.as_str()),
    );
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::SET_COOKIE,
            cx.sessions.set_cookie(
                &csrf_cookie(cx),
                &token,
                Some(std::time::Duration::from_secs(600)),
                cx.routes.prefix(),
            ),
        )
        .body(full_body(page))
        .expect("static page")
}

fn bad_request(why: String) -> Response<Body> {
    rescue(
        Failure::new(
            StatusCode::BAD_REQUEST,
            Party::Downstream,
            "This sign-in form is no longer valid. Please start again.",
            why,
        ),
        false,
    )
}

/// `local/login`: GET shows the form (rd checked), POST checks the credentials.
pub async fn endpoint(
    cx: &Context,
    req: Request<Body>,
    peer: SocketAddr,
    now: SystemTime,
) -> Response<Body> {
    let Some(local) = cx.login.local.clone() else {
        return super::not_enabled(&req.map(|_| ()), "local accounts");
    };
    if req.method() != Method::POST {
        let head = req.map(|_| ());
        return match super::checked_rd(cx, &head) {
            Ok(rt) => form(cx, &rt, None),
            Err(resp) => resp,
        };
    }
    let ip = peer.ip().to_canonical();
    if local.failures.get(&ip).unwrap_or(0) >= local.max_failures {
        tracing::warn!(target: "sidegate::audit", event = "login", provider = ISSUER, outcome = "locked", peer = %ip, "local sign-in refused: too many failures");
        return rescue(
            Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                Party::Downstream,
                "Too many failed sign-ins. Please wait a few minutes.",
                format!("local sign-in locked for {ip}"),
            ),
            false,
        );
    }
    let (parts, body) = req.into_parts();
    let cookie_token = crate::session::request_cookies(&parts.headers)
        .find(|(n, _)| *n == csrf_cookie(cx))
        .map(|(_, v)| v.to_string());
    let body = match read_capped(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return bad_request(format!("local sign-in body: {e}")),
    };
    let field = |name: &str| {
        url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (user, password, rd, csrf) = (
        field("username"),
        field("password"),
        field("rd"),
        field("csrf"),
    );
    let csrf_ok = cookie_token
        .is_some_and(|c| !csrf.is_empty() && bool::from(c.as_bytes().ct_eq(csrf.as_bytes())));
    if !csrf_ok {
        return bad_request("local sign-in without a matching CSRF token".into());
    }
    let rt = match return_to::check(&rd, &cx.public_url, &cx.access.allowed_redirect_hosts) {
        Ok(rt) => rt,
        Err(e) => return bad_request(format!("local sign-in rd refused: {e}")),
    };
    let found = local.users.iter().position(|u| u.name == user);
    let hash = found.map_or(local.decoy.clone(), |i| {
        local.users[i].password_hash.expose().to_string()
    });
    let ok = tokio::task::spawn_blocking(move || verify(&hash, &password))
        .await
        .unwrap_or(false)
        && found.is_some();
    let Some(u) = found.filter(|_| ok).map(|i| &local.users[i]) else {
        let n = local.failures.get(&ip).unwrap_or(0) + 1;
        local.failures.insert(ip, n);
        cx.metrics.login("failure", "local_password");
        tracing::warn!(target: "sidegate::audit", event = "login", provider = ISSUER, outcome = "failure", user = %user, peer = %ip, failures = n, "local sign-in failed");
        return form(cx, &rt, Some("Wrong user name or password."));
    };
    let identity = Identity {
        issuer: ISSUER.into(),
        subject: u.name.clone(),
        user: u.name.clone(),
        email: u.email.clone(),
        role: u.role.clone(),
        teams: u.teams.clone(),
        extra: Vec::new(),
    };
    let mut resp = super::finish_login(cx, identity, None, rt, None, now).await;
    resp.headers_mut().append(
        header::SET_COOKIE,
        cx.sessions
            .set_cookie(&csrf_cookie(cx), "", None, cx.routes.prefix()),
    );
    resp
}
