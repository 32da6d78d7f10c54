//! Upstream connections behind keep-alive downstream connections: every message framing
//! leaves the connection reusable, an answer that comes late and in pieces (or too big for
//! the sockets) arrives whole, an answer before the upload has ended leaves the client's
//! connection usable, an app that closes idle connections costs no request,
//! a reload to another app moves open downstream connections with it, the connection cap
//! and HTTP/2 clients' concurrent streams fall back to the pool, and the app's connections
//! close when the client's do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{client, config_text, load, read_until, Bound, Keys, Sidecar, DEAD_ISSUER};

/// An app that speaks HTTP/1.1 by hand, so each framing is exactly the one named:
/// `/len` (Content-Length), `/chunked`, `/empty` (204), `/close` (no length, ended by
/// closing), `/bye` (Content-Length, then the app closes the idle connection as a
/// keep-alive timeout would, without saying so). Every body is `{name}{path}`, except:
/// `/late` answers after a pause, chunked, its body (`{name}{path}` and `-0`, `-1`, `-2`)
/// in three pieces with pauses between; `/big` is [`BIG`] bytes of `x`, more than the
/// sockets hold at once.
struct App {
    url: String,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl App {
    async fn start(name: &'static str) -> App {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (a, o) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    serve(c, name).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        App {
            url,
            accepted,
            open,
        }
    }
}

/// Answers requests until the client or the path ends the connection. Request bodies are
/// read only by `/early`, which answers first and reads (and drops) the body after, as an
/// app refusing an upload while keeping the connection does.
async fn serve(mut c: tokio::net::TcpStream, name: &str) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match c.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
        let body = format!("{name}{path}");
        if path.ends_with("/early") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let answer = format!(
                "HTTP/1.1 413 Content Too Large\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if c.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            let mut left = length;
            while left > buf.len() {
                left -= buf.len();
                buf.clear();
                let mut chunk = [0u8; 65536];
                match c.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..left);
            continue;
        }
        if path.ends_with("/late") && method == "GET" {
            if late(&mut c, &body).await.is_err() {
                return;
            }
            continue;
        }
        let body = if path.ends_with("/big") {
            "x".repeat(BIG)
        } else {
            body
        };
        let len = body.len();
        let answer = match path.rsplit('/').next().unwrap_or("") {
            "chunked" => format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                len
            ),
            "empty" => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
            "close" => format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{body}"),
            _ if method == "HEAD" => format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n"),
            _ => format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n{body}"),
        };
        if c.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if path.ends_with("/bye") {
            // Late enough that sidegate has finished with the answer and kept the connection.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        if path.ends_with("/close") {
            return;
        }
    }
}

/// The size of `/big`'s body.
const BIG: usize = 8 << 20;

/// `/late`'s answer: nothing is ready when sidegate first looks, for the head or for any
/// piece of the body.
async fn late(c: &mut tokio::net::TcpStream, body: &str) -> std::io::Result<()> {
    let pause = || tokio::time::sleep(Duration::from_millis(40));
    pause().await;
    c.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        .await?;
    for piece in 0..3 {
        pause().await;
        let text = format!("{body}-{piece}");
        c.write_all(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes())
            .await?;
    }
    pause().await;
    c.write_all(b"0\r\n\r\n").await
}

fn start(app: &App, bound: Bound, upstream_extra: &str) -> (Sidecar, String) {
    start_with(app, bound, &[("upstream", upstream_extra)])
}

fn start_with(app: &App, bound: Bound, extra: &[(&str, &str)]) -> (Sidecar, String) {
    let keys = Keys::new();
    let text = config_text(&bound.url(), &app.url, DEAD_ISSUER, extra);
    (Sidecar::start(bound, load(&text, &keys)), text)
}

async fn get(c: &reqwest::Client, url: String) -> (u16, String) {
    let r = c.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits (bounded) until `count` reaches `want`.
async fn settles(count: &AtomicUsize, want: usize) -> usize {
    for _ in 0..100 {
        if count.load(Ordering::SeqCst) == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count.load(Ordering::SeqCst)
}

#[tokio::test]
async fn every_framing_leaves_the_app_connection_reusable_and_it_closes_with_the_client() {
    every_framing(&[]).await;
}

/// `server.threads = 0`: connections as tasks of the shared runtime, as before threads.
#[tokio::test]
async fn every_framing_also_without_connection_threads() {
    every_framing(&[("server", "threads = 0")]).await;
}

async fn every_framing(extra: &[(&str, &str)]) {
    let app = App::start("a").await;
    let (sc, _) = start_with(&app, Bound::new().await, extra);
    let c = client();
    for path in ["/len", "/empty", "/chunked", "/len", "/chunked", "/len"] {
        let (status, body) = get(&c, sc.url(&format!("/public{path}"))).await;
        if path == "/empty" {
            assert_eq!((status, body.as_str()), (204, ""));
        } else {
            assert_eq!((status, body), (200, format!("a/public{path}")));
        }
    }
    let head = c.head(sc.url("/public/len")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "12");
    let (status, body) = get(&c, sc.url("/public/len")).await;
    assert_eq!((status, body.as_str()), (200, "a/public/len"));
    assert_eq!(
        app.accepted.load(Ordering::SeqCst),
        1,
        "one client connection, one app connection"
    );

    // A body the app ends by closing: the next request needs (and gets) a new connection.
    let (status, body) = get(&c, sc.url("/public/close")).await;
    assert_eq!((status, body.as_str()), (200, "a/public/close"));
    let (status, body) = get(&c, sc.url("/public/chunked")).await;
    assert_eq!((status, body.as_str()), (200, "a/public/chunked"));
    assert_eq!(app.accepted.load(Ordering::SeqCst), 2);

    drop(c);
    assert_eq!(
        settles(&app.open, 0).await,
        0,
        "the app's connection closes once the client's has"
    );
}

/// The lane's connection is polled without the task's waker whenever something is already
/// there; this is the other case, where the task must be woken by the app.
#[tokio::test]
async fn an_answer_that_comes_late_and_in_pieces_arrives_whole() {
    let app = App::start("a").await;
    let (sc, _) = start(&app, Bound::new().await, "");
    let c = client();
    for round in 0..3 {
        let late = tokio::time::timeout(Duration::from_secs(10), get(&c, sc.url("/public/late")))
            .await
            .unwrap_or_else(|_| panic!("round {round}: no answer from a late app in 10 s"));
        assert_eq!(
            late,
            (
                200,
                "a/public/late-0a/public/late-1a/public/late-2".to_string()
            ),
            "round {round}"
        );
        let r = tokio::time::timeout(Duration::from_secs(10), c.get(sc.url("/public/big")).send())
            .await
            .unwrap_or_else(|_| panic!("round {round}: no head of the big answer in 10 s"))
            .unwrap();
        let big = tokio::time::timeout(Duration::from_secs(10), r.bytes())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the big body stalled"))
            .unwrap();
        assert_eq!(big.len(), BIG, "round {round}");
        assert!(big.iter().all(|&b| b == b'x'), "round {round}");
    }
    assert_eq!(
        app.accepted.load(Ordering::SeqCst),
        1,
        "late and big answers leave the connection reusable"
    );
}

/// An app may answer before it has read the request's body (refusing an upload) and read
/// the body after. The body must still reach it, and the client's next request on the same
/// connection must be answered.
#[tokio::test]
async fn an_answer_before_the_upload_ends_leaves_the_client_connection_usable() {
    let app = App::start("a").await;
    let (sc, _) = start(&app, Bound::new().await, "");
    const UPLOAD: usize = 16 << 20; // more than the sockets on the way hold
    let stream = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let host = sc.addr.to_string();
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST /public/early HTTP/1.1\r\nhost: {host}\r\ncontent-length: {UPLOAD}\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await?;
        let piece = vec![b'x'; 1 << 16];
        for _ in 0..UPLOAD / piece.len() {
            wr.write_all(&piece).await?;
        }
        let next = format!("GET /public/len HTTP/1.1\r\nhost: {host}\r\n\r\n");
        wr.write_all(next.as_bytes()).await?;
        Ok::<_, std::io::Error>(wr)
    });
    let mut seen = Vec::new();
    let finished = read_until(&mut rd, &mut seen, "a/public/len", Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(
        finished,
        "no answer to the request after the upload in 20 s; got: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("a/public/early"), "{text}");
    assert!(
        text.contains("HTTP/1.1 200") && text.ends_with("a/public/len"),
        "{text}"
    );
    writer.await.unwrap().expect("the whole upload was taken");
}

#[tokio::test]
async fn an_app_closing_idle_connections_costs_no_request() {
    let app = App::start("a").await;
    let (sc, _) = start(&app, Bound::new().await, "");
    let c = client();
    for round in 0..20 {
        let (status, body) = get(&c, sc.url("/public/bye")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "a/public/bye"),
            "round {round}: the app had closed the connection this request would reuse"
        );
        // Let the app's close arrive before the next request.
        settles(&app.open, 0).await;
    }
    assert_eq!(app.accepted.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_reload_to_another_app_takes_open_client_connections_along() {
    let (a, b) = (App::start("a").await, App::start("b").await);
    let bound = Bound::new().await;
    let keys = Keys::new();
    let public = bound.url();
    let text = |app: &App| config_text(&public, &app.url, DEAD_ISSUER, &[]);
    let (sc, reload) = Sidecar::start_reloading(bound, load(&text(&a), &keys));
    let kept = client();
    let (_, body) = get(&kept, sc.url("/public/len")).await;
    assert_eq!(body, "a/public/len");

    reload.send(load(&text(&b), &keys)).await.unwrap();
    // Fresh clients show when the reload has taken effect; the kept one must follow.
    let (mut fresh, mut kept_body) = (String::new(), String::new());
    for _ in 0..150 {
        fresh = get(&client(), sc.url("/public/len")).await.1;
        kept_body = get(&kept, sc.url("/public/len")).await.1;
        if fresh.starts_with('b') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fresh, "b/public/len", "the reload took effect");
    assert_eq!(
        kept_body, "b/public/len",
        "a connection open before the reload reaches the new app, not the old one"
    );
}

#[tokio::test]
async fn past_the_connection_cap_requests_still_go_through() {
    let app = App::start("a").await;
    let (sc, _) = start(&app, Bound::new().await, "max_idle_connections = 1");
    let sc = Arc::new(sc);
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..4 {
        let sc = sc.clone();
        clients.spawn(async move {
            let c = client();
            for i in 0..25 {
                let path = format!("/public/{n}-{i}");
                let (status, body) = get(&c, sc.url(&path)).await;
                assert_eq!((status, body), (200, format!("a{path}")));
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    assert!(app.accepted.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn an_http2_client_s_concurrent_streams_all_get_their_own_answer() {
    use http_body_util::{BodyExt, Empty};
    let app = App::start("a").await;
    let (sc, _) = start(&app, Bound::new().await, "");
    let tcp = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut sender = sender.clone();
        let url = sc.url(&format!("/public/{i}"));
        streams.spawn(async move {
            let req = http::Request::get(url).body(Empty::new()).unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (i, status, String::from_utf8(body.to_vec()).unwrap())
        });
    }
    while let Some(done) = streams.join_next().await {
        let (i, status, body) = done.unwrap();
        assert_eq!((status, body), (200, format!("a/public/{i}")));
    }
}
