//! Forwarding to the upstream: the client (lanes and pool), hop-by-hop header removal, `X-Forwarded-*`
//! written from what `accept` saw, streaming bodies both ways, WebSocket upgrades, and the
//! upstream failure kinds (502 refused/reset, 504 timeout). Plain-http requests go on the
//! downstream connection's own upstream connection (`lane`), the rest through the pool.

mod lane;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ipnet::IpNet;

use crate::config::UpstreamConfig;
use crate::{Body, BoxError};
pub use lane::Lane;
use lane::{Declined, Lanes};

/// Where the request came from, as seen by the listener.
#[derive(Clone)]
pub struct Downstream {
    /// TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection was TLS.
    pub tls: bool,
    /// The connection's own upstream connection, shared by its requests.
    pub lane: Arc<Lane>,
    /// The peer's address as `X-Forwarded-For` text, written once per connection (the
    /// formatting cost more than the rest of `set_forwarded`).
    peer_ip: HeaderValue,
}

impl Downstream {
    /// A connection just accepted from `peer`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let text = peer.ip().to_canonical().to_string();
        Downstream {
            peer,
            tls,
            lane: Arc::default(),
            peer_ip: HeaderValue::try_from(text).expect("an IP address is header text"),
        }
    }
}

/// Why the upstream could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset, or protocol error.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// No response headers within `upstream.response_timeout`.
    #[error("upstream timed out after {0:?}")]
    Timeout(Duration),
}

/// WebSocket (and other upgraded) tunnels, which outlive the HTTP connection that opened
/// them: shutdown waits for them up to its deadline, then cuts them. Clones share the set
/// (a config reload keeps it).
#[derive(Clone, Default)]
pub struct Tunnels {
    tracker: tokio_util::task::TaskTracker,
    cut: tokio_util::sync::CancellationToken,
}

impl Tunnels {
    fn spawn(&self, tunnel: impl Future<Output = ()> + Send + 'static) {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = tunnel => {}
                _ = cut.cancelled() => {}
            }
        });
    }

    /// Open tunnels now.
    pub fn open(&self) -> usize {
        self.tracker.len()
    }

    /// Lets open tunnels finish for up to `grace`, then closes the rest.
    pub async fn drain(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tracker.len(),
                "shutdown grace period over; closing WebSocket tunnels"
            );
            self.cut.cancel();
            self.tracker.wait().await;
        }
    }
}

/// The upstream client and its settings.
pub struct Upstream {
    tunnels: Tunnels,
    /// The pool, one per connection thread (other threads use the first): a pooled
    /// connection's task runs on the thread whose requests use it, instead of every request
    /// waiting on whichever busy thread opened it.
    clients: Box<[Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>]>,
    /// Per-downstream-connection connections (`http://` upstreams).
    lanes: Option<Lanes>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    response_timeout: Duration,
    pass_host_header: bool,
    trusted_proxies: Vec<IpNet>,
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Whether `name` is hop-by-hop (names are lowercase: a string match, no parsing).
fn is_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

impl Upstream {
    /// Builds the pooled clients for the configured upstream (`threads`: the connection
    /// threads, `server.threads`; the idle limit is shared out among their pools).
    pub fn new(
        cfg: &UpstreamConfig,
        trusted_proxies: Vec<IpNet>,
        tunnels: Tunnels,
        threads: usize,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = crate::forward::https_connector(http);
        let pools = threads.max(1);
        let idle_per_pool = cfg.max_idle_connections.div_ceil(pools);
        let clients = (0..pools)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(idle_per_pool)
                    .build(https.clone())
            })
            .collect();
        let uri: Uri = cfg.url.as_str().parse().expect("validated upstream URL");
        let lanes = match (
            cfg.url.scheme(),
            cfg.url.host(),
            cfg.url.port_or_known_default(),
        ) {
            ("http", Some(host), Some(port)) if cfg.max_idle_connections > 0 => {
                // `url::Host` prints IPv6 in brackets, which a socket address must not have.
                let host = match host {
                    url::Host::Ipv6(ip) => ip.to_string(),
                    other => other.to_string(),
                };
                Some(Lanes::new(
                    host,
                    port,
                    cfg.max_idle_connections,
                    cfg.connect_timeout,
                ))
            }
            _ => None,
        };
        Upstream {
            tunnels,
            clients,
            lanes,
            scheme: uri.scheme().cloned().expect("validated"),
            authority: uri.authority().cloned().expect("validated"),
            response_timeout: cfg.response_timeout,
            pass_host_header: cfg.pass_host_header,
            trusted_proxies,
        }
    }

    /// Whether `X-Forwarded-*` from this peer may be believed.
    pub fn is_trusted(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// Rewrites `X-Forwarded-For/-Proto/-Host` from what sidegate saw; client copies are kept
    /// (and extended) only from trusted proxies.
    pub fn set_forwarded(&self, headers: &mut HeaderMap, from: &Downstream) {
        let trusted = self.is_trusted(from.peer);
        let xff = HeaderName::from_static("x-forwarded-for");
        let xfp = HeaderName::from_static("x-forwarded-proto");
        let xfh = HeaderName::from_static("x-forwarded-host");
        let (prev_for, proto, host) = if trusted {
            let v: Vec<&str> = headers
                .get_all(&xff)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (
                (!v.is_empty()).then(|| v.join(", ")),
                headers.get(&xfp).cloned(),
                headers.get(&xfh).cloned(),
            )
        } else {
            if headers
                .keys()
                .any(|k| k == header::FORWARDED || k == "x-real-ip")
            {
                headers.remove(header::FORWARDED);
                headers.remove("x-real-ip");
            }
            (None, None, None)
        };
        // `insert` replaces every earlier value: no separate removal (each would hash).
        let for_value = match prev_for {
            Some(p) => {
                let peer_ip = from.peer_ip.to_str().unwrap_or_default();
                HeaderValue::try_from(format!("{p}, {peer_ip}")).ok()
            }
            None => Some(from.peer_ip.clone()),
        };
        match for_value {
            Some(v) => headers.insert(xff, v),
            None => headers.remove(xff),
        };
        let scheme = if from.tls { "https" } else { "http" };
        headers.insert(xfp, proto.unwrap_or(HeaderValue::from_static(scheme)));
        match host.or_else(|| headers.get(header::HOST).cloned()) {
            Some(h) => headers.insert(xfh, h),
            None => headers.remove(xfh),
        };
    }

    /// Sends the request upstream and returns its response, streaming both bodies.
    /// Identity headers must already be set: only hop-by-hop headers are removed here, and
    /// that happens before the caller adds identity headers (see `pipeline`).
    pub async fn send(
        &self,
        mut req: Request<Body>,
        downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
        lane: Arc<Lane>,
    ) -> Result<Response<Body>, UpstreamError> {
        // An HTTP/2 client's streams run at once: one lane per connection would not do.
        let one_at_a_time = req.version() < http::Version::HTTP_2;
        *req.version_mut() = http::Version::HTTP_11;
        if !self.pass_host_header || !req.headers().contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(self.authority.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        if let (Some(lanes), None, true) = (&self.lanes, &downstream_upgrade, one_at_a_time) {
            // Origin-form: the connection is already to the upstream.
            let path = req.uri().path_and_query().cloned();
            *req.uri_mut() = path.map_or_else(|| Uri::from_static("/"), Uri::from);
            let answer = tokio::time::timeout(self.response_timeout, lanes.send(lane, req));
            req = match answer.await {
                Err(_) => return Err(UpstreamError::Timeout(self.response_timeout)),
                Ok(Ok(mut resp)) => {
                    remove_hop_by_hop(resp.headers_mut(), false);
                    return Ok(resp);
                }
                Ok(Err(Declined::Failed(why))) => return Err(UpstreamError::Unavailable(why)),
                Ok(Err(Declined::Full(req))) => *req,
            };
        }
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        *req.uri_mut() = uri;
        let is_upgrade = downstream_upgrade.is_some();
        let slot = crate::accept::current_thread().unwrap_or(0) % self.clients.len();
        let client = &self.clients[slot];
        let fut = client.request(req);
        let mut resp = match tokio::time::timeout(self.response_timeout, fut).await {
            Err(_) => return Err(UpstreamError::Timeout(self.response_timeout)),
            Ok(Err(e)) => return Err(UpstreamError::Unavailable(crate::error::chain(&e))),
            Ok(Ok(r)) => r,
        };
        if is_upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let downstream_upgrade = downstream_upgrade.expect("checked");
            self.tunnels.spawn(async move {
                let (Ok(down), Ok(up)) = (downstream_upgrade.await, upstream_upgrade.await) else {
                    tracing::debug!("websocket upgrade did not complete");
                    return;
                };
                let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, crate::empty_body()));
        }
        remove_hop_by_hop(resp.headers_mut(), false);
        Ok(resp.map(|b: Incoming| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
    }
}

/// An https-or-http connector with the system's trust roots (an empty store if none load,
/// so https simply fails instead of sidegate refusing to start).
pub fn https_connector(http: HttpConnector) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system trust roots; https to upstream/IdP will fail");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    };
    builder.https_or_http().enable_http1().wrap_connector(http)
}

/// True when the request asks for a protocol upgrade (WebSocket).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including every name listed in `Connection`. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive for a WebSocket handshake.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Names listed in `Connection` exist only with a `Connection` header, itself hop-by-hop:
    // a message with none of these (the usual request) costs one pass over its names.
    let mut hops = headers.keys().filter(|k| is_hop(k));
    let first = hops.next().map(|k| k == header::CONNECTION);
    let more = hops.next().is_some();
    match first {
        None => {}
        // The usual answer: `Connection: keep-alive` (or `close`) alone, naming nothing.
        Some(true) if !more && !keep_upgrade && names_nothing(headers) => {
            headers.remove(header::CONNECTION);
        }
        Some(_) => remove_every_hop(headers, keep_upgrade),
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The tokens of every `Connection` value, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Whether every `Connection` token is `keep-alive` or `close`, so it names no header.
fn names_nothing(headers: &HeaderMap) -> bool {
    connection_tokens(headers)
        .all(|t| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close"))
}

/// The general case of `remove_hop_by_hop`: the fixed names present and every name
/// `Connection` lists.
fn remove_every_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Only names beyond the fixed set are listed: `keep-alive` or `close` leaves this
    // empty, and an empty `Vec` does not allocate.
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| {
            !t.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_bytes()))
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    // The fixed names present, each at most once (`keys` yields a name once): kept on the
    // stack, since the map cannot change while its keys are borrowed.
    let mut gone: [Option<HeaderName>; HOP_BY_HOP.len()] = Default::default();
    for (slot, name) in gone.iter_mut().zip(headers.keys().filter(|k| is_hop(k))) {
        *slot = Some(name.clone());
    }
    for name in gone.into_iter().flatten().chain(listed) {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_names_and_the_names_connection_lists_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Listed"),
            ("connection", "close, te"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("x-listed", "1"),
            ("x-kept", "2"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn a_plain_keep_alive_goes_and_one_that_names_a_header_takes_it_along() {
        let mut h = map(&[("connection", "Keep-Alive"), ("content-type", "text/plain")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["content-type"]
        );
        for listed in ["keep-alive, x-listed", "close", "x-listed"] {
            let mut h = map(&[("connection", listed), ("x-listed", "1"), ("x-kept", "2")]);
            remove_hop_by_hop(&mut h, false);
            let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            left.sort_unstable();
            let want: &[&str] = if listed == "close" {
                &["x-kept", "x-listed"]
            } else {
                &["x-kept"]
            };
            assert_eq!(left, want, "Connection: {listed}");
        }
    }

    #[test]
    fn an_upgrade_keeps_its_two_headers_and_nothing_else_hop_by_hop() {
        let mut h = map(&[
            ("connection", "Upgrade, X-Listed"),
            ("upgrade", "websocket"),
            ("x-listed", "1"),
            ("proxy-authorization", "Basic eA=="),
        ]);
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("x-listed") && !h.contains_key("proxy-authorization"));
    }
}
