//! Faults a proxy meets every week. The IdP down at start: existing sessions keep working,
//! new logins get a clear 503, `/readyz` says not ready; when the IdP comes up (the real
//! `oidc-provider`, started later on the port sidegate was told), discovery is retried in the
//! background and logins resume without a restart.

use std::time::{Duration, SystemTime};

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
