//! Request smuggling and protocol abuse, sent as raw bytes on a TCP socket: conflicting
//! `Content-Length` / `Transfer-Encoding`, several or unknown transfer codings, HTTP/1.0 with
//! `Transfer-Encoding`, an upgrade without a session, oversized and malformed cookies, and
//! thousands of stale login cookies; and the limits: login rate per client address,
//! connections per listener, slow and oversized request heads. Each must be refused (or harmless) and never reach the
//! app as something else than what sidegate decided on. The framing refusals are hyper's
//! (sidegate re-frames every request it forwards); these tests keep it that way.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::upstream::Upstream;
use crate::support::{
    client, config_text, load, session_cookie, Bound, Keys, Sidecar, DEAD_ISSUER,
};

struct World {
    sidecar: Sidecar,
    upstream: Upstream,
    cookie: String,
    _keys: Keys,
}

async fn world() -> World {
    world_with(&[]).await
}

async fn world_with(server: &[&str]) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let extra: Vec<(&str, &str)> = server.iter().map(|l| ("server", *l)).collect();
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &extra);
    let cookie = session_cookie(&text, &keys, "alice", "admin", SystemTime::now());
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    World {
        sidecar,
        upstream,
        cookie,
        _keys: keys,
    }
}

/// Sends raw bytes and returns everything the server answers before closing (or 3 s).
async fn raw(w: &World, request: &str) -> String {
    let mut s = TcpStream::connect(w.sidecar.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

#[tokio::test]
async fn smuggling_shapes_are_refused_before_the_app() {
    let w = world().await;
    let c = &w.cookie;
    // CL.TE: hyper frames by Transfer-Encoding, drops Content-Length and closes the connection
    // after answering (RFC 9112 §6.3): the app sees one request, re-framed by sidegate, and
    // the "smuggled" tail is never read as a request at all.
    let before = w.upstream.hits.load(Ordering::SeqCst);
    let resp = raw(
        &w,
        &format!("POST /a HTTP/1.1\r\nHost: x\r\nCookie: {c}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(w.upstream.hits.load(Ordering::SeqCst), before + 1, "{resp}");
    assert_eq!(
        resp.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the close: {resp}"
    );
    assert!(
        resp.contains("connection: close") && resp.contains("\"path\":\"/a\""),
        "{resp}"
    );
    let cases = [
        // Two different Content-Lengths.
        format!("POST /a HTTP/1.1\r\nHost: x\r\nCookie: {c}\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"),
        // A transfer coding that is not chunked last.
        format!("POST /a HTTP/1.1\r\nHost: x\r\nCookie: {c}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        format!("POST /a HTTP/1.1\r\nHost: x\r\nCookie: {c}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        // HTTP/1.0 with Transfer-Encoding.
        format!("POST /a HTTP/1.0\r\nHost: x\r\nCookie: {c}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        // A space before the colon, a header line folded onto the next.
        format!("POST /a HTTP/1.1\r\nHost: x\r\nCookie: {c}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        format!("GET /a HTTP/1.1\r\nHost: x\r\nCookie: {c}\r\nX-A: 1\r\n X-Sidegate-User: mallory\r\n\r\n"),
    ];
    for req in &cases {
        let before = w.upstream.hits.load(Ordering::SeqCst);
        let resp = raw(&w, req).await;
        let line = status_line(&resp);
        assert!(
            line.is_empty() || line.contains(" 400 ") || line.contains(" 501 "),
            "refused or closed, got `{line}` for {req:?}"
        );
        assert_eq!(
            w.upstream.hits.load(Ordering::SeqCst),
            before,
            "reached the app: {req:?}"
        );
    }
    // The same socket, well-formed, works (the server was not wedged by the above).
    let ok = raw(
        &w,
        &format!("GET /fine HTTP/1.1\r\nHost: x\r\nCookie: {c}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(status_line(&ok).contains(" 200 "), "{ok}");
}

#[tokio::test]
async fn an_upgrade_before_authentication_never_reaches_the_app() {
    let w = world().await;
    let before = w.upstream.hits.load(Ordering::SeqCst);
    let resp = raw(
        &w,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(status_line(&resp).contains(" 401 "), "{resp}");
    assert!(!resp.contains("101 Switching"), "{resp}");
    assert_eq!(w.upstream.hits.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn oversized_malformed_and_piles_of_stale_cookies_are_harmless() {
    let w = world().await;
    let before = w.upstream.hits.load(Ordering::SeqCst);
    let get = |cookie: String| {
        let url = w.sidecar.url("/api");
        async move {
            client()
                .get(url)
                .header("accept", "application/json")
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    // Malformed session cookies: 401 (and cleared), never a panic or a session.
    for bad in [
        "_sidegate=%%%".to_string(),
        "_sidegate=".to_string() + &"A".repeat(3000),
        "_sidegate_0=abc; _sidegate_1=def".to_string(),
        "_sidegate_7=x".to_string(),
        "_sidegate=a=b=c".to_string(),
    ] {
        assert_eq!(get(bad.clone()).await.unwrap(), 401, "{bad}");
    }
    // Not text (obs-text bytes), alone or as the valid cookie (opened just before, so
    // cached) with one byte changed outside its cache key: refused.
    assert_eq!(get(w.cookie.clone()).await.unwrap(), 200);
    let mut flipped = w.cookie.clone().into_bytes();
    let at = flipped.len() - 40;
    flipped[at] = 0xff;
    for bad in [b"_sidegate=\xfe\xff\x80abc".to_vec(), flipped] {
        let status = client()
            .get(w.sidecar.url("/api"))
            .header("accept", "application/json")
            .header("cookie", http::HeaderValue::from_bytes(&bad).unwrap())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&bad));
    }
    // Thousands of stale login-transaction cookies next to a valid session: still served.
    // (Abandoned logins leave `_sidegate_login_<state>` cookies; 2000 of them fit the limit.)
    let stale: String = (0..2000)
        .map(|i| format!("_sidegate_login_{i:08}=x; "))
        .collect();
    assert_eq!(get(format!("{stale}{}", w.cookie)).await.unwrap(), 200);
    // A header block over the limit is refused by the server, not buffered without end.
    let huge = format!("_sidegate_x={}", "y".repeat(200_000));
    let status = get(huge).await;
    assert!(
        status.is_err() || status.as_ref().is_ok_and(|s| *s == 431 || *s == 400),
        "{status:?}"
    );
    // And the server still answers.
    assert_eq!(get(w.cookie.clone()).await.unwrap(), 200);
    assert!(w.upstream.hits.load(Ordering::SeqCst) > before);
}

/// A sidegate with `server` lines added, and its address.
async fn limited(server: &[&str]) -> (World, String) {
    let w = world_with(server).await;
    let addr = w.sidecar.addr.to_string();
    (w, addr)
}

#[tokio::test]
async fn login_endpoints_are_rate_limited_per_client_address() {
    let (w, _) = limited(&["login_rate_per_minute = 5"]).await;
    let start = |xff: Option<&'static str>| {
        let mut r = client()
            .get(w.sidecar.url("/.sidegate/start?rd=/x"))
            .header("accept", "application/json");
        if let Some(x) = xff {
            r = r.header("x-forwarded-for", x);
        }
        r.send()
    };
    for n in 0..5 {
        let s = start(None).await.unwrap().status();
        assert_ne!(s, 429, "request {n} is within the burst");
    }
    let refused = start(None).await.unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // A forged X-Forwarded-For from an untrusted peer does not buy a new bucket.
    assert_eq!(start(Some("203.0.113.7")).await.unwrap().status(), 429);
    // Other endpoints are not counted: the app and the public paths still answer.
    assert_ne!(
        client()
            .get(w.sidecar.url("/public/x"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let (w, addr) = limited(&["max_connections = 2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /public/x HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf[..], b"HTTP/1.1 200");
        held.push(c);
    }
    // A third connection is accepted by the kernel and closed by sidegate unanswered.
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = third
        .write_all(b"GET /public/x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed without an answer: {read:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    // Freed slots are reused.
    held.clear();
    let mut ok = false;
    for _ in 0..50 {
        if client()
            .get(w.sidecar.url("/public/x"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a slot freed by a closed connection serves again");
}

#[tokio::test]
async fn slow_headers_are_cut_at_the_header_read_timeout_and_too_many_headers_refused() {
    let (_w, addr) = limited(&["header_read_timeout = \"1s\""]).await;
    // Slowloris: a request head that never ends.
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"GET /public/x HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if c.write_all(b"x-drip: 1\r\n").await.is_err() {
                break;
            }
            let mut chunk = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(10), c.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the dripping connection was cut");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // Header count: far more header lines than any client sends.
    let mut many = String::from("GET /public/x HTTP/1.1\r\nhost: x\r\n");
    for n in 0..500 {
        many.push_str(&format!("x-h{n}: v\r\n"));
    }
    many.push_str("\r\n");
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.write_all(many.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

// ---- HTTP/2 floods (h2c with prior knowledge, raw frames) --------------------------------

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK without Huffman or indexing: GET /public/x on a plain-text connection.
fn h2_request_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http (static table)
    for (idx, value) in [(4u8, "/public/x"), (1u8, "127.0.0.1")] {
        b.push(idx); // literal without indexing, indexed name (:path, :authority)
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// A literal header with a new name, for filler.
fn h2_filler(n: usize) -> Vec<u8> {
    let name = format!("x-fill-{n}");
    let value = "v".repeat(100);
    let mut b = vec![0x00, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

/// Reads frames until the server closes or sends GOAWAY; the GOAWAY error code if any.
async fn h2_until_goaway(c: &mut TcpStream, within: Duration) -> Option<u32> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 && len >= 8 {
                return Some(u32::from_be_bytes(buf[13..17].try_into().unwrap()));
            }
            buf.drain(..9 + len);
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, c.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the server neither closed nor sent GOAWAY within {within:?}"),
        }
    }
}

async fn h2_still_serves(w: &World) {
    let r = client()
        .get(w.sidecar.url("/public/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "sidegate still serves after the flood");
}

/// The frames above make a real request: one stream, answered 200 by the app.
async fn h2_control(w: &World) {
    let mut c = TcpStream::connect(w.sidecar.addr).await.unwrap();
    c.write_all(H2_PREFACE).await.unwrap();
    c.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    c.write_all(&h2_frame(0x1, 0x5, 1, &h2_request_block()))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before answering");
            buf.extend_from_slice(&chunk[..n]);
            let mut at = 0;
            while buf.len() >= at + 9 {
                let len = (usize::from(buf[at]) << 16)
                    | (usize::from(buf[at + 1]) << 8)
                    | usize::from(buf[at + 2]);
                if buf.len() < at + 9 + len {
                    break;
                }
                // HEADERS on stream 1 starting with the indexed `:status 200`.
                if buf[at + 3] == 0x1 && buf[at + 8] == 1 && buf.get(at + 9) == Some(&0x88) {
                    return;
                }
                at += 9 + len;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no 200 HEADERS frame for the control request"
    );
}

#[tokio::test]
async fn h2_continuation_flood_is_cut_and_harmless() {
    let w = world().await;
    h2_control(&w).await;
    w.upstream.hits.store(0, Ordering::SeqCst);
    let mut c = TcpStream::connect(w.sidecar.addr).await.unwrap();
    c.write_all(H2_PREFACE).await.unwrap();
    c.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end the block:
    // up to 8 MiB offered (bounded), far past the 64 KiB header limit.
    c.write_all(&h2_frame(0x1, 0x1, 1, &h2_request_block()))
        .await
        .unwrap();
    let mut sent = 0usize;
    for n in 0..70_000 {
        let f = h2_frame(0x9, 0, 1, &h2_filler(n));
        if c.write_all(&f).await.is_err() {
            break;
        }
        sent += f.len();
        if sent > 8 << 20 {
            break;
        }
    }
    let _ = h2_until_goaway(&mut c, Duration::from_secs(10)).await;
    assert_eq!(
        w.upstream.hits.load(Ordering::SeqCst),
        0,
        "the endless header block reached nothing"
    );
    h2_still_serves(&w).await;
}

#[tokio::test]
async fn h2_rapid_reset_flood_is_cut_and_does_not_fan_out_to_the_app() {
    let w = world().await;
    h2_control(&w).await;
    w.upstream.hits.store(0, Ordering::SeqCst);
    let mut c = TcpStream::connect(w.sidecar.addr).await.unwrap();
    c.write_all(H2_PREFACE).await.unwrap();
    c.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    let block = h2_request_block();
    // 20,000 streams, each opened (END_STREAM | END_HEADERS) and reset (CANCEL) at once.
    let mut batch = Vec::new();
    let mut streams = 0;
    for s in (1u32..).step_by(2).take(20_000) {
        batch.extend(h2_frame(0x1, 0x5, s, &block));
        batch.extend(h2_frame(0x3, 0, s, &8u32.to_be_bytes()));
        streams += 1;
        if batch.len() > 64 << 10 {
            if c.write_all(&batch).await.is_err() {
                break;
            }
            batch.clear();
        }
    }
    let _ = c.write_all(&batch).await;
    let goaway = h2_until_goaway(&mut c, Duration::from_secs(10)).await;
    // ENHANCE_YOUR_CALM (0xb) or a plain close; either way the connection ends.
    assert!(matches!(goaway, None | Some(0xb) | Some(0x1)), "{goaway:?}");
    let hits = w.upstream.hits.load(Ordering::SeqCst);
    eprintln!("rapid reset: {hits} of {streams} streams reached the app; GOAWAY {goaway:?}");
    assert!(
        hits < streams / 10,
        "{hits} of {streams} reset streams reached the app"
    );
    h2_still_serves(&w).await;
}
