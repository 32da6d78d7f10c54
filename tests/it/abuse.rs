//! Request smuggling and protocol abuse, sent as raw bytes on a TCP socket: conflicting
//! `Content-Length` / `Transfer-Encoding`, several or unknown transfer codings, HTTP/1.0 with
//! `Transfer-Encoding`, an upgrade without a session, oversized and malformed cookies, and
//! thousands of stale login cookies. Each must be refused (or harmless) and never reach the
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
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &[]);
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
