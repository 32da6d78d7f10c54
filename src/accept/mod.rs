//! Accepting connections: TCP (optionally TLS with ALPN h2/http1.1), hyper serving with
//! upgrades, a header read timeout, and graceful drain on shutdown. Knows nothing of paths,
//! cookies or identity.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::forward::Downstream;
use crate::Body;

mod threads;
pub use threads::{current as current_thread, StartError, Threads};

/// Connections the kernel may hold finished but not yet accepted. tokio's `bind` asks for
/// 1024; a burst of that many clients at once (a deploy, a load balancer reconnecting) then
/// overflows it, and each overflowed client's first request waits for TCP to retry, 1 s or
/// more. The kernel caps this at `net.core.somaxconn` (4096 by default since Linux 5.4).
const LISTEN_BACKLOG: u32 = 8192;

/// Binds a listening socket as `TcpListener::bind` does (address reuse on Unix), with room
/// for a burst of connections (`LISTEN_BACKLOG`).
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Largest request head accepted: 64 KiB, room for many cookies and long URLs, far from the
/// ~400 KiB hyper would otherwise buffer per connection.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{0}: {1}")]
    Read(String, io::Error),
    /// No certificate or no key in the files.
    #[error("{0}")]
    Missing(String),
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a TLS acceptor (HTTP/2 and HTTP/1.1 by ALPN) from PEM files.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Read(p.display().to_string(), e));
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert_file)?.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Missing(format!(
            "no certificate in {}",
            cert_file.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(key_file)?.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::Missing(format!("no private key in {}", key_file.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serving options.
#[derive(Clone)]
pub struct ServeOptions {
    /// Time allowed for request headers.
    pub header_read_timeout: Duration,
    /// Time in-flight requests get after shutdown begins.
    pub shutdown_grace: Duration,
    /// Open connections allowed on the listener; more are closed at once.
    pub max_connections: usize,
    /// Where connections run: their own threads, or (`None`) tasks of the caller's runtime.
    pub threads: Option<Arc<Threads>>,
}

/// Serves `listener` until `shutdown` flips to true, then drains connections up to the grace
/// period. `handler` gets each request and the downstream it came from.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    opts: ServeOptions,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Downstream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let mut refused: u64 = 0;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        // The request head must fit (431 otherwise); bodies stream through in pieces.
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: a flood never holds sockets or memory here.
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, max = opts.max_connections, refused, "connection refused: server.max_connections reached");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let from = Downstream::new(peer, tls.is_some());
        let h = handler.clone();
        let svc = service_fn(move |req| {
            // One allocation instead of hyper moving a multi-KB future through its dispatcher.
            let fut = Box::pin(h(req, from.clone()));
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let conn = move |stream: tokio::net::TcpStream| async move {
            let _slot = slot;
            match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(opts.header_read_timeout, acceptor.accept(stream))
                            .await
                    else {
                        tracing::debug!(%peer, "TLS handshake failed or timed out");
                        return;
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls_stream), svc)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
            }
        };
        match &opts.threads {
            Some(threads) => threads.spawn(stream, conn),
            None => {
                tokio::spawn(conn(stream));
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.shutdown_grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// Resolves once the shutdown flag is true (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// 1,500 clients connect at once while nothing accepts: with the backlog tokio's own
    /// `bind` asks for (1024) the kernel drops the SYNs past it and those clients wait a
    /// second or more; here every one completes at once. Needs `net.core.somaxconn` ≥ 1500
    /// (4096 by default); on a machine with less, the kernel's cap is what is tested.
    #[tokio::test]
    async fn a_burst_of_connections_fits_the_listen_queue() {
        let burst: usize = 1500;
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        // 1,500 client sockets: lift the soft open-files limit to the hard one if it is lower.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write one plain struct we own.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..burst).map(|_| async move {
            tokio::time::timeout(
                Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            )
            .await
        });
        let results = futures_util::future::join_all(connects).await;
        let done = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert!(
            done >= burst.min(cap),
            "{done} of {burst} connected within 0.7 s (somaxconn {cap})"
        );
        drop(listener);
    }
}
