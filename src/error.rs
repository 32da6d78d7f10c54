//! The one rescue: turns a failure into a short response with a request id, and logs the
//! reason. Browsers never see IdP or token detail, only the id to quote.

use http::{header, Response, StatusCode};

use crate::Body;

/// Which party caused a failure (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The browser or the proxy in front of sidegate.
    Downstream,
    /// The protected app.
    Upstream,
    /// The identity provider.
    Idp,
    /// sidegate itself.
    Internal,
}

/// A failure to answer with `status`; `public` is shown, `reason` only logged.
#[derive(Debug)]
pub struct Failure {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Who caused it.
    pub party: Party,
    /// Short text safe to show anyone.
    pub public: &'static str,
    /// Detail for the log line.
    pub reason: String,
}

impl Failure {
    /// Builds a failure.
    pub fn new(
        status: StatusCode,
        party: Party,
        public: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        Failure {
            status,
            party,
            public,
            reason: reason.into(),
        }
    }
}

/// Logs the failure with a fresh request id and renders the page (HTML or JSON).
pub fn rescue(f: Failure, json: bool) -> Response<Body> {
    let request_id = crate::keys::random_token::<9>();
    if f.status.is_server_error() {
        tracing::warn!(request_id, status = f.status.as_u16(), party = ?f.party, reason = %f.reason, "{}", f.public);
    } else {
        tracing::info!(request_id, status = f.status.as_u16(), party = ?f.party, reason = %f.reason, "{}", f.public);
    }
    page(f.status, f.public, &request_id, json)
}

/// A short page: `{"error": ..., "request_id": ...}` or minimal HTML.
pub fn page(status: StatusCode, message: &str, request_id: &str, json: bool) -> Response<Body> {
    let (ctype, body) = if json {
        (
            "application/json",
            serde_json::json!({"error": message, "request_id": request_id}).to_string(),
        )
    } else {
        ("text/html; charset=utf-8", format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
             <body><h1>{code} {reason}</h1><p>{msg}</p><p><small>request id: {rid}</small></p></body></html>\n",
            code = status.as_u16(), reason = status.canonical_reason().unwrap_or(""), msg = html_escape(message), rid = request_id))
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-request-id", request_id)
        .body(crate::full_body(body))
        .expect("static response parts");
    if !json {
        resp.extensions_mut().insert(crate::pages::ErrorPage {
            message: message.to_string(),
            request_id: request_id.to_string(),
        });
    }
    resp
}

/// Escapes text for HTML bodies.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An error and all its sources on one line, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
