//! The admin listener: `/healthz`, `/readyz` and `/metrics` (Prometheus). Served only on its
//! own address, never on the public listener, and shares no router with it.

pub mod online;

use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::pipeline::Context;
use crate::{full_body, Body};

type Labels = Vec<(&'static str, &'static str)>;

/// Every request outcome, created up front so counting allocates nothing.
const OUTCOMES: [&str; 9] = [
    "proxied",
    "public",
    "own",
    "redirect_login",
    "unauthenticated",
    "upstream_error",
    "store_unavailable",
    "rate_limited",
    "other",
];

/// Counters and histograms of the public listener.
pub struct Metrics {
    registry: Registry,
    outcomes: Vec<(&'static str, Counter)>,
    logins: Family<Labels, Counter>,
    upstream_latency: Histogram,
    active_sessions: Gauge,
    tasks: Gauge,
    tunnels: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sidegate");
        let requests = Family::<Labels, Counter>::default();
        let logins = Family::<Labels, Counter>::default();
        let upstream_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let active_sessions = Gauge::default();
        let tasks = Gauge::default();
        let tunnels = Gauge::default();
        registry.register(
            "tasks",
            "Live tokio tasks (connections, tunnels, background work): flat under steady load",
            tasks.clone(),
        );
        registry.register(
            "websocket_tunnels",
            "Open upgraded (WebSocket) tunnels",
            tunnels.clone(),
        );
        registry.register("requests", "Requests by outcome", requests.clone());
        registry.register("logins", "Logins by result and reason", logins.clone());
        registry.register(
            "upstream_latency_seconds",
            "Time to upstream response headers",
            upstream_latency.clone(),
        );
        registry.register(
            "active_sessions",
            "Sessions seen within one assertion lifetime (estimate)",
            active_sessions.clone(),
        );
        let outcomes = OUTCOMES
            .iter()
            .map(|o| (*o, requests.get_or_create(&vec![("outcome", *o)]).clone()))
            .collect();
        Metrics {
            registry,
            outcomes,
            logins,
            upstream_latency,
            active_sessions,
            tasks,
            tunnels,
        }
    }
}

impl Metrics {
    /// Counts one request with its outcome.
    pub fn request(&self, outcome: &'static str) {
        let (_, counter) = self
            .outcomes
            .iter()
            .find(|(o, _)| *o == outcome)
            .unwrap_or(&self.outcomes[OUTCOMES.len() - 1]);
        counter.inc();
    }

    /// Counts one login attempt.
    pub fn login(&self, result: &'static str, reason: &'static str) {
        self.logins
            .get_or_create(&vec![("result", result), ("reason", reason)])
            .inc();
    }

    /// Records the time to the upstream's response headers.
    pub fn upstream_latency(&self, seconds: f64) {
        self.upstream_latency.observe(seconds);
    }
}

/// Serves one admin request. `threads` are the public connections' threads, if any: their
/// tasks count in the `tasks` metric.
pub async fn handle(
    cx: Arc<Context>,
    threads: Option<Arc<crate::accept::Threads>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let text = |status: StatusCode, body: String, ctype: &'static str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, ctype)
            .body(full_body(body))
            .expect("static parts")
    };
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            if !cx.login.idps_ready() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: IdP discovery not loaded\n".into(),
                    "text/plain",
                )
            } else if let Some(why) = cx.sessions.store().not_ready().await {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                    "text/plain",
                )
            } else {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            }
        }
        "/metrics" => {
            cx.metrics
                .active_sessions
                .set(cx.signer.active_sessions() as i64);
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                + threads.as_ref().map_or(0, |t| t.alive_tasks());
            cx.metrics.tasks.set(tasks as i64);
            cx.metrics.tunnels.set(cx.tunnels.open() as i64);
            let mut out = String::new();
            if encode(&mut out, &cx.metrics.registry).is_err() {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding failed\n".into(),
                    "text/plain",
                );
            }
            text(
                StatusCode::OK,
                out,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}
