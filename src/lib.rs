//! sidegate: an authentication sidecar. It sits in front of an unmodified app, logs users in
//! at an OpenID provider or a SAML 2.0 IdP, keeps an AEAD-sealed session cookie, and forwards each request with
//! identity headers plus a signed JWT assertion the app can verify.
//!
//! # Layout (the request's path)
//! `accept` → `pipeline` → `route` → `session` → `login` (`oidc`, `saml`) → `identity` → `sign` →
//! `forward`; `admin` serves health and metrics on its own listener; `config` parses once at
//! start-up; `keys` holds secrets; `error` is the one rescue into responses. `dev` is the
//! `sidegate dev` mode (development IdP + echo app around an unchanged `run`); nothing else
//! refers to it.
//!
//! # Invariants
//! - Only `route` matches paths; only `session` knows the cookie wire format; only `sign`
//!   knows the assertion format; only `login::oidc` parses JWTs from the IdP, only `login::saml` IdP XML.
//! - Client-sent identity headers are stripped on every path before anything else happens.
//! - Stages get `now` passed in; nothing below `pipeline` reads the wall clock for decisions.
//! - `run` never binds sockets and never reads the environment: `main` does both.

pub mod accept;
pub mod admin;
pub mod auth_request;
pub mod bearer;
pub mod config;
pub mod dev;
pub mod error;
pub mod forward;
pub mod identity;
pub mod keys;
pub mod login;
pub mod pages;
pub mod pipeline;
pub mod policy;
pub mod route;
pub mod session;
pub mod sign;
pub mod telemetry;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response sidegate handles.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body from bytes.
pub fn full_body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Sockets bound by the caller (port 0 in tests).
pub struct Listeners {
    /// Public listeners.
    pub public: Vec<TcpListener>,
    /// Admin listener, if any.
    pub admin: Option<TcpListener>,
}

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] accept::TlsError),
    /// The SAML service provider could not be set up.
    #[error(transparent)]
    Saml(#[from] login::saml::SetupError),
}

/// Runs sidegate on the given listeners until `shutdown` flips to true, then drains.
/// IdP discovery is retried in the background; until it succeeds logins answer 503 and
/// `/readyz` says not ready, while existing sessions keep working.
pub async fn run(
    listeners: Listeners,
    config: config::Config,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let tls = match &config.server.tls {
        Some(t) => Some(accept::tls_acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let opts = accept::ServeOptions {
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace: config.server.shutdown_grace,
    };
    let cx = Arc::new(pipeline::Context::new(config)?);
    let discovery: Vec<_> = cx
        .login
        .oidc
        .iter()
        .map(|p| tokio::spawn(p.clone().load_with_retry()))
        .collect();
    let bearer_keys = cx.bearer.is_enabled().then(|| {
        let cx = cx.clone();
        tokio::spawn(async move { cx.bearer.warm_up().await })
    });
    let saml_metadata = cx.login.saml.clone().map(|s| {
        let http = login::idp_http::IdpHttp::new(std::time::Duration::from_secs(10));
        tokio::spawn(s.keep_metadata_fresh(http))
    });

    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners.public {
        let cx = cx.clone();
        let handler = move |req, from| {
            let cx = cx.clone();
            async move { pipeline::handle(&cx, req, from).await }
        };
        tasks.spawn(accept::serve(
            l,
            tls.clone(),
            opts,
            handler,
            shutdown.clone(),
        ));
    }
    if let Some(l) = listeners.admin {
        let cx = cx.clone();
        let handler = move |req, _from| admin::handle(cx.clone(), req);
        tasks.spawn(accept::serve(l, None, opts, handler, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    for task in discovery
        .into_iter()
        .chain(saml_metadata)
        .chain(bearer_keys)
    {
        task.abort();
    }
    Ok(())
}
