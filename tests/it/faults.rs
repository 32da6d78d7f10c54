//! Faults a proxy meets every week. The IdP down at start: existing sessions keep working,
//! new logins get a clear 503, `/readyz` says not ready; when the IdP comes up (the real
//! `oidc-provider`, started later on the port sidegate was told), discovery is retried in the
//! background and logins resume without a restart. An app that resets connections before
//! or during its answer: 502 or a cut body, and no task or connection left behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::browser::Browser;
use crate::support::op::Op;
use crate::support::upstream::Upstream;
use crate::support::{client, config_text, load, session_cookie, Bound, Keys, Sidecar};

#[tokio::test]
async fn an_idp_that_comes_up_late_needs_no_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let callback = format!("{}/.sidegate/oidc/callback", bound.url());
    let keys = Keys::new();
    let text = config_text(&bound.url(), &upstream.url(), &issuer, &[]);
    let cookie = session_cookie(&text, &keys, "alice", "admin", SystemTime::now());
    let sidecar = Sidecar::start(bound, load(&text, &keys));

    // Down: existing sessions are served, new logins get a 503, not ready.
    let r = client()
        .get(sidecar.url("/app"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a session never waits on the IdP");
    let r = client()
        .get(sidecar.url("/app"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("not reachable"));
    let ready = || async {
        client()
            .get(sidecar.admin("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 503);

    // Up: the same port, later.
    let op_port = port.to_string();
    let _op = Op::start_with(&callback, &[("OP_PORT", op_port.as_str())]).await;
    let mut became_ready = false;
    for _ in 0..120 {
        if ready().await == 200 {
            became_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        became_ready,
        "discovery retried in the background within 30 s"
    );
    let mut b = Browser::new();
    let page = b.navigate(&sidecar.url("/app"), "alice", "alice-pw").await;
    assert_eq!(
        page.status, 200,
        "logins resume without a restart: {}",
        page.body
    );
}

/// An app that misbehaves by path: `/reset-head` resets the connection before answering,
/// `/reset-body` after a part of the promised body; anything else answers `ok`. Counts the
/// connections it still holds open.
async fn faulty_app() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let count = count.clone();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let path = String::from_utf8_lossy(&head)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                match path.rsplit('/').next().unwrap_or("") {
                    "reset-head" => {}
                    "reset-body" => {
                        let _ = c
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                            .await;
                        let _ = c.write_all(&[b'x'; 1000]).await;
                    }
                    _ => {
                        let _ = c
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                    }
                }
                // A reset, not a clean close.
                let _ = c.set_zero_linger();
                drop(c);
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, open)
}

/// `sidegate_tasks` from the admin listener (a fresh client, so no pooled connection stays).
async fn tasks(sc: &Sidecar) -> i64 {
    crate::support::metric(&sc.admin("/metrics"), "sidegate_tasks")
        .await
        .expect("sidegate_tasks gauge")
}

#[tokio::test]
async fn an_app_that_resets_gets_502_or_a_cut_body_and_leaks_no_tasks_or_connections() {
    let (app, open) = faulty_app().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(&bound.url(), &app, crate::support::DEAD_ISSUER, &[]);
    let sc = Sidecar::start(bound, load(&text, &keys));
    let ok = reqwest::Client::new()
        .get(sc.url("/public/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "ok");
    let baseline = tasks(&sc).await;

    // Open client connections count, whichever thread serves them. (Bare sockets that
    // have sent nothing yet: a client or app on this test's runtime would add its own tasks.)
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(tokio::net::TcpStream::connect(sc.addr).await.unwrap());
    }
    // (The baseline may still hold a task that is ending: the drop after closing is what counts.)
    let mut with_held = baseline;
    for _ in 0..30 {
        with_held = with_held.max(tasks(&sc).await);
        if with_held >= baseline + 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    let mut closed = with_held;
    for _ in 0..50 {
        closed = tasks(&sc).await;
        if closed + 5 <= with_held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed + 5 <= with_held,
        "five open connections are five tasks: {with_held} with them, {closed} once closed"
    );

    for _ in 0..30 {
        let c = reqwest::Client::new();
        let r = c.get(sc.url("/public/reset-head")).send().await.unwrap();
        assert_eq!(r.status(), 502, "reset before the answer");
        let r = c.get(sc.url("/public/reset-body")).send().await.unwrap();
        assert_eq!(r.status(), 200, "headers had arrived");
        assert!(
            r.bytes().await.is_err(),
            "a cut body is an error for the client, never a short 200"
        );
    }
    let ok = reqwest::Client::new()
        .get(sc.url("/public/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "ok", "still serving");

    // Everything the faults opened is gone again (bounded wait).
    let mut now = i64::MAX;
    for _ in 0..100 {
        now = tasks(&sc).await;
        if now <= baseline && open.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        now <= baseline,
        "tasks back to baseline: {now} > {baseline}"
    );
    assert_eq!(
        open.load(Ordering::SeqCst),
        0,
        "no upstream connection left open"
    );
}

#[tokio::test]
async fn an_idp_that_accepts_but_never_answers_does_not_hold_up_sessions_or_logins() {
    // A black hole: connections are accepted and never answered.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            held.push(c);
        }
    });
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(
        &bound.url(),
        &upstream.url(),
        &issuer,
        &[("oidc", "http_timeout = \"1s\"")],
    );
    let cookie = session_cookie(&text, &keys, "alice", "admin", SystemTime::now());
    let sc = Sidecar::start(bound, load(&text, &keys));
    let started = std::time::Instant::now();
    let r = client()
        .get(sc.url("/x"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a session never waits on the IdP");
    let login = client()
        .get(sc.url("/.sidegate/start?rd=/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        login.status(),
        503,
        "a login answers 503 while the IdP is unreachable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by the IdP timeout, not hanging"
    );
    let ready = client().get(sc.admin("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
}
