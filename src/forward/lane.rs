//! A downstream connection's own upstream connection. Through the pool, a request hops
//! between tasks several times (to the upstream connection's task with the request, back
//! with the response head, back and forth for the body), often across worker threads, and
//! takes the pool's lock. A lane connection is instead driven inside the downstream connection's task: the
//! request future polls it until the response head arrives, the response body polls it
//! until the body ends, and then it is parked in the lane for the next request on the same
//! downstream connection, which sends one request at a time (HTTP/1). Upgrades, https
//! upstreams, HTTP/2 clients (concurrent streams) and clients past the cap go through the
//! pool instead.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Body, BoxError};

/// One downstream connection's slot for its parked upstream connection (empty until its
/// first forwarded request, and while a request uses it).
#[derive(Default)]
pub struct Lane(Mutex<Option<Line>>);

impl Lane {
    fn put(&self, line: Line) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(line);
    }

    fn take(&self) -> Option<Line> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// An open upstream connection with its sender.
struct Line {
    sender: SendRequest<Body>,
    /// `None` once the connection has closed or failed: a completed connection is never
    /// polled again, and dropping it hands back a request it held unsent. Boxed once per
    /// connection, so the moves of each request (out of the lane, into the body, back) are
    /// a pointer, not the connection's state.
    conn: Option<Box<Connection<TokioIo<TcpStream>, Body>>>,
    /// The count it is held against; also names the `Lanes` it belongs to.
    counted: Counted,
}

impl Line {
    /// Drives the connection; false once it has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn {
            if Pin::new(&mut **conn).poll(cx).is_ready() {
                self.conn = None;
            }
        }
        self.conn.is_some()
    }

    /// Whether the connection is open and idle. Driving it reads an end of stream the app
    /// sent while it was parked (an app's keep-alive timeout), so that is seen before use.
    /// No waker is left behind: the request sent next would otherwise wake this task
    /// through the connection's request channel, for a poll with nothing to do. The
    /// exchange that follows in the same poll leaves the task's waker when it must wait.
    fn usable(&mut self) -> bool {
        matches!(
            self.ready(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(true)
        )
    }

    /// Drives the connection until it can take a request (true) or has closed or failed
    /// (false).
    fn ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if !self.drive(cx) {
            return Poll::Ready(false);
        }
        self.sender.poll_ready(cx).map(|r| r.is_ok())
    }

    /// Sends `req` and drives the connection until the response head arrives. A request
    /// the connection refused before writing it comes back in the error.
    async fn exchange(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>> {
        let mut answer = std::pin::pin!(self.sender.try_send_request(req));
        poll_fn(|cx| {
            quietly(cx, |cx| {
                self.drive(cx);
                // Only driving the connection answers (a connection that closes answers
                // too: with an error, or by handing the request back unsent when dropped),
                // so the answer itself never needs the task's waker.
                answer
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
            })
        })
        .await
    }
}

/// Polls `poll` first with a waker that does nothing and, only if nothing is ready, again
/// with the task's. hyper's channels wake the last waker they were polled with, even when
/// that is the task now running: what is already there then wakes nobody, where it would
/// cost the task a poll with nothing to do (3.7 task polls per forwarded request instead of
/// 2). The second call polls again whatever the first found pending, so the task is woken
/// when it comes.
fn quietly<T>(cx: &mut Context<'_>, mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    match poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Pending => poll(cx),
        ready => ready,
    }
}

/// Held while a lane connection is open.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a lane did not answer.
pub enum Declined {
    /// No lane connection to be had (the cap is reached): the pool takes the request.
    Full(Box<Request<Body>>),
    /// The upstream could not be reached or failed.
    Failed(String),
}

/// The lane connections to one upstream (`http://` only): where to connect, and the cap on
/// how many are open at once (`upstream.max_idle_connections`).
pub struct Lanes {
    open: Arc<AtomicUsize>,
    max: usize,
    host: String,
    port: u16,
    connect_timeout: Duration,
}

impl Lanes {
    /// Lanes to `host:port` (an IP without brackets, or a name to resolve).
    pub fn new(host: String, port: u16, max: usize, connect_timeout: Duration) -> Self {
        Lanes {
            open: Arc::default(),
            max,
            host,
            port,
            connect_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on the lane's connection, opening one if
    /// the lane has none that is still usable. A parked connection that the app closed
    /// before the request was written is replaced once, as the pool does.
    pub async fn send(
        &self,
        lane: Arc<Lane>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Declined> {
        let upload = Upload::track(&mut req);
        let mut parked = self.take(&lane);
        loop {
            let reused = parked.is_some();
            let mut line = match parked.take() {
                Some(line) => line,
                None => match self.open().await {
                    Ok(line) => line,
                    Err(Opening::Full) => return Err(Declined::Full(Box::new(req))),
                    Err(Opening::Failed(why)) => return Err(Declined::Failed(why)),
                },
            };
            match line.exchange(req).await {
                Ok(resp) => {
                    return Ok(resp.map(|body| {
                        http_body_util::BodyExt::boxed_unsync(Streamed {
                            body,
                            line: Some(line),
                            lane,
                            ended: false,
                            failed: None,
                            upload,
                        })
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(Declined::Failed(crate::error::chain(e.error()))),
                },
            }
        }
    }

    /// The lane's parked connection, if it belongs to these lanes and is still usable.
    fn take(&self, lane: &Lane) -> Option<Line> {
        let mut line = lane.take()?;
        if !Arc::ptr_eq(&line.counted.0, &self.open) {
            return None; // parked before a reload changed the upstream
        }
        line.usable().then_some(line)
    }

    async fn open(&self) -> Result<Line, Opening> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Opening::Full);
        }
        let counted = Counted(self.open.clone());
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(Opening::Failed(format!(
                    "connect timed out after {:?}",
                    self.connect_timeout
                )))
            }
            Ok(Err(e)) => return Err(Opening::Failed(format!("connect: {e}"))),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Opening::Failed(crate::error::chain(&e)))?;
        Ok(Line {
            sender,
            conn: Some(Box::new(conn)),
            counted,
        })
    }
}

enum Opening {
    Full,
    Failed(String),
}

/// The response body read through the lane's connection: polling it drives the
/// connection, and once the body has ended, dropping it parks the connection for the next
/// request (the server drops a body as soon as it has ended, before the next request).
struct Streamed {
    body: Incoming,
    line: Option<Line>,
    lane: Arc<Lane>,
    /// The body's end was read (a chunked body only knows it then).
    ended: bool,
    /// The upstream's failure, held back for one poll (see `poll_frame`).
    failed: Option<hyper::Error>,
    /// The request's body, when it had one: the app may answer before it has all of it.
    upload: Option<Upload>,
}

impl Streamed {
    /// Drives the connection (while it is open), then polls the body.
    fn drive_and_poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(line) = &mut self.line {
            if !line.drive(cx) {
                self.line = None; // closed: the body ends or fails with it
            }
        }
        http_body::Body::poll_frame(Pin::new(&mut self.body), cx)
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        // The connection hands the body over a chunk at a time, and taking one wakes it.
        match quietly(cx, |cx| this.drive_and_poll(cx)) {
            Poll::Ready(Some(Err(e))) => {
                // The connection is driven in this task, so its reset can arrive in the same
                // poll as the head: held back one poll, the server flushes the status and
                // what came before, and the client sees a cut body, not a connection closed
                // without an answer.
                this.line = None;
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            frame => frame.map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

impl Drop for Streamed {
    /// Parks the connection of a body that ended, including one the server never read
    /// because it knew it was empty or complete; a body cut short closes its connection.
    /// An answer that ended before the request's body was all sent (an app refusing an
    /// upload, reading the rest after) leaves the connection to send the rest on its own
    /// task: the client's next request waits for its body to be taken.
    fn drop(&mut self) {
        if !(self.ended || hyper::body::Body::is_end_stream(&self.body)) {
            return;
        }
        let Some(line) = self.line.take() else {
            return;
        };
        match &self.upload {
            Some(upload) if !upload.sent() => finish_upload(line, self.lane.clone()),
            _ => self.lane.put(line),
        }
    }
}

/// Drives `line` until the request it is sending has gone and it can take another, then
/// parks it in `lane`; a connection that fails or closes meanwhile is dropped. Outside a
/// runtime (shutting down) it is dropped at once, which closes it.
fn finish_upload(mut line: Line, lane: Arc<Lane>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        if poll_fn(|cx| line.ready(cx)).await {
            lane.put(line);
        }
    });
}

/// Whether a request's body has all been handed to the connection.
#[derive(Clone)]
struct Upload(Arc<AtomicBool>);

impl Upload {
    /// Wraps the body of `req` to be told when it has all been taken; `None` for a request
    /// without one (most), which costs nothing.
    fn track(req: &mut Request<Body>) -> Option<Upload> {
        if http_body::Body::is_end_stream(req.body()) {
            return None;
        }
        let upload = Upload(Arc::default());
        let body = std::mem::replace(req.body_mut(), crate::empty_body());
        *req.body_mut() = http_body_util::BodyExt::boxed_unsync(Tracked {
            inner: body,
            upload: upload.clone(),
        });
        Some(upload)
    }

    fn sent(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A request body that marks its [`Upload`] when its end has been read.
struct Tracked {
    inner: Body,
    upload: Upload,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = http_body::Body::poll_frame(Pin::new(&mut self.inner), cx);
        if matches!(frame, Poll::Ready(None)) || http_body::Body::is_end_stream(&self.inner) {
            self.upload.mark();
        }
        frame
    }

    /// The connection stops reading a body that says it has ended (a known length): that
    /// is its end too.
    fn is_end_stream(&self) -> bool {
        let end = http_body::Body::is_end_stream(&self.inner);
        if end {
            self.upload.mark();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
