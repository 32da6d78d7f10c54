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
pub mod memory;
pub mod pages;
pub mod pipeline;
pub mod policy;
pub mod route;
pub mod session;
pub mod sign;
pub mod store;
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
    /// The stages could not be built (SAML service provider, session store).
    #[error(transparent)]
    Context(#[from] pipeline::ContextError),
    /// The connection threads could not be started.
    #[error(transparent)]
    Threads(#[from] accept::StartError),
}

/// Runs sidegate on the given listeners until `shutdown` flips to true, then drains.
/// IdP discovery is retried in the background; until it succeeds logins answer 503 and
/// `/readyz` says not ready, while existing sessions keep working.
pub async fn run(
    listeners: Listeners,
    config: config::Config,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    run_reloading(listeners, config, shutdown, None).await
}

/// The context requests use now, swapped whole by a reload (a request keeps the one it
/// started with), and the background tasks that belong to it.
struct Live {
    cx: arc_swap::ArcSwap<pipeline::Context>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Discovery, bearer keys and SAML metadata of one context.
fn background(cx: &Arc<pipeline::Context>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = cx
        .login
        .oidc
        .iter()
        .map(|p| tokio::spawn(p.clone().load_with_retry()))
        .collect();
    if cx.bearer.is_enabled() {
        let cx = cx.clone();
        tasks.push(tokio::spawn(async move { cx.bearer.warm_up().await }));
    }
    if let Some(s) = cx.login.saml.clone() {
        let http = login::idp_http::IdpHttp::new(std::time::Duration::from_secs(10));
        tasks.push(tokio::spawn(s.keep_metadata_fresh(http)));
    }
    tasks
}

/// How long start-up code may run (IdP discovery retried) before it is paged out anyway.
const STARTUP_SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Once the IdPs have loaded (or after `STARTUP_SETTLE_MAX`), pages out the code and
/// read-only data only start-up used: they leave RSS, and what the request path uses comes
/// back on first use.
fn page_out_once_settled(live: Arc<Live>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !memory::pages_out_when_ready() {
            return;
        }
        let deadline = tokio::time::Instant::now() + STARTUP_SETTLE_MAX;
        while !live.cx.load().login.idps_ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Let the first requests' one-off work (pools, caches) finish first.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if let Ok(p) = tokio::task::spawn_blocking(memory::page_out_read_only).await {
            tracing::debug!(
                mappings = p.mappings,
                mib = p.bytes / (1024 * 1024),
                "start-up code and read-only data paged out"
            );
        }
    })
}

/// How long a reload waits for the new config's IdPs before switching anyway.
const RELOAD_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Applies a reloaded config: builds the new context beside the old one, lets its IdP
/// discovery and metadata load (bounded), then swaps it in. Connections stay open; the
/// listeners, TLS, timeouts and connection threads of `[server]` need a restart.
async fn apply_reload(live: &Live, config: config::Config) {
    let old = live.cx.load_full();
    let cx = match pipeline::Context::reloaded(config, &old) {
        Ok(cx) => Arc::new(cx),
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the running config stays");
            return;
        }
    };
    let tasks = background(&cx);
    let deadline = tokio::time::Instant::now() + RELOAD_READY_WAIT;
    while !cx.login.idps_ready() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    live.cx.store(cx);
    let old_tasks = std::mem::replace(&mut *live.tasks.lock().expect("tasks lock"), tasks);
    for t in old_tasks {
        t.abort();
    }
    tracing::info!("config reloaded");
}

/// `run`, plus reloads: every config received on `reloads` (already validated) replaces
/// the running one without dropping connections.
pub async fn run_reloading(
    listeners: Listeners,
    config: config::Config,
    shutdown: watch::Receiver<bool>,
    reloads: Option<tokio::sync::mpsc::Receiver<config::Config>>,
) -> Result<(), RunError> {
    let tls = match &config.server.tls {
        Some(t) => Some(accept::tls_acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
    // Public connections on their own threads; the admin listener stays on this runtime.
    let threads = match config.server.threads {
        0 => None,
        n => Some(Arc::new(accept::Threads::start(
            n,
            config.server.cpu_affinity,
        )?)),
    };
    let admin_opts = accept::ServeOptions {
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace: config.server.shutdown_grace,
        max_connections: config.server.max_connections,
        threads: None,
    };
    let opts = accept::ServeOptions {
        threads: threads.clone(),
        ..admin_opts.clone()
    };
    let cx = Arc::new(pipeline::Context::new(config)?);
    let live = Arc::new(Live {
        tasks: std::sync::Mutex::new(background(&cx)),
        cx: arc_swap::ArcSwap::new(cx),
    });

    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners.public {
        let live = live.clone();
        let handler = move |req, from| {
            let cx = live.cx.load_full();
            async move { pipeline::handle(&cx, req, from).await }
        };
        tasks.spawn(accept::serve(
            l,
            tls.clone(),
            opts.clone(),
            handler,
            shutdown.clone(),
        ));
    }
    if let Some(l) = listeners.admin {
        let live = live.clone();
        let threads = threads.clone();
        let handler = move |req, _from| admin::handle(live.cx.load_full(), threads.clone(), req);
        tasks.spawn(accept::serve(
            l,
            None,
            admin_opts,
            handler,
            shutdown.clone(),
        ));
    }
    let settle = page_out_once_settled(live.clone());
    let reloader = reloads.map(|mut rx| {
        let live = live.clone();
        tokio::spawn(async move {
            while let Some(cfg) = rx.recv().await {
                apply_reload(&live, cfg).await;
            }
        })
    });
    while tasks.join_next().await.is_some() {}
    // Upgraded connections left the listeners' drain: they get their own.
    let cx = live.cx.load_full();
    if cx.tunnels.open() > 0 {
        tracing::info!(open = cx.tunnels.open(), "waiting for WebSocket tunnels");
    }
    cx.tunnels.drain(opts.shutdown_grace).await;
    for task in reloader
        .into_iter()
        .chain([settle])
        .chain(std::mem::take(&mut *live.tasks.lock().expect("tasks lock")))
    {
        task.abort();
    }
    Ok(())
}
