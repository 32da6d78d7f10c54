//! The HTTP client for calls to IdPs (OIDC discovery, JWKS, token and userinfo through
//! openidconnect; SAML metadata): hyper + rustls (aws-lc-rs), no
//! redirect following (SSRF), a timeout, a body cap, and https only (plain http on loopback
//! only, for tests).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

const MAX_BODY: usize = 1024 * 1024;

/// Why a call to the IdP failed.
#[derive(Debug, thiserror::Error)]
pub enum IdpHttpError {
    /// The URL is not https (or http on loopback).
    #[error("refusing non-https IdP URL {0}")]
    Scheme(String),
    /// Network or protocol failure.
    #[error("IdP request failed: {0}")]
    Transport(String),
    /// No answer in time.
    #[error("IdP request timed out")]
    Timeout,
    /// Response body over the cap.
    #[error("IdP response too large")]
    TooLarge,
}

/// A small client for IdP calls.
#[derive(Clone)]
pub struct IdpHttp {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl IdpHttp {
    /// Builds the client with the system's trust roots.
    pub fn new(timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = crate::forward::https_connector(http);
        IdpHttp {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
            headers: Vec::new(),
        }
    }

    /// The same client, sending these headers on every request (an IdP or gateway in front
    /// of it that wants an API key).
    pub fn with_headers(mut self, headers: Vec<(http::HeaderName, http::HeaderValue)>) -> Self {
        self.headers = headers;
        self
    }

    /// Sends one request and collects the (capped) response.
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, IdpHttpError> {
        let uri = req.uri().clone();
        let loopback = uri.host().is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => return Err(IdpHttpError::Scheme(uri.to_string())),
        }
        let (mut parts, body) = req.into_parts();
        for (k, v) in &self.headers {
            parts.headers.insert(k.clone(), v.clone());
        }
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| IdpHttpError::Transport(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    IdpHttpError::TooLarge
                } else {
                    IdpHttpError::Transport(e.to_string())
                }
            })?;
            Ok(http::Response::from_parts(parts, body.to_bytes().to_vec()))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| IdpHttpError::Timeout)?
    }
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = IdpHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, IdpHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
