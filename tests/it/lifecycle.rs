//! Listener behaviour: TLS with HTTP/2 by ALPN, and graceful shutdown that lets in-flight
//! requests and open WebSockets finish while refusing new connections, up to its deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::upstream::{header_values, Upstream};
use crate::support::{
    client, config_text, load, session_cookie, Bound, Keys, Sidecar, DEAD_ISSUER,
};

#[tokio::test]
async fn tls_listener_speaks_http2_and_http1_by_alpn() {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(keys.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        keys.path().join("key.pem"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let public = format!("https://{}", bound.addr);
    let text = config_text(&public, &upstream.url(), DEAD_ISSUER, &[])
        .replace("cookie_secure = false", "")
        .replace("[upstream]", &format!("[server.tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n[upstream]", keys.path().display()));
    let _sidecar = Sidecar::start(bound, load(&text, &keys));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    for (h2, want) in [
        (true, http::Version::HTTP_2),
        (false, http::Version::HTTP_11),
    ] {
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only();
        let conn = if h2 {
            b.enable_http2().build()
        } else {
            b.enable_http1().build()
        };
        let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build(conn);
        let cookie = session_cookie(&text, &keys, "alice", "admin", SystemTime::now());
        let req = http::Request::get(format!("{public}/app"))
            .header("cookie", cookie)
            .body(Empty::new())
            .unwrap();
        let resp = c.request(req).await.expect("TLS request");
        assert_eq!(resp.version(), want);
        assert_eq!(resp.status(), 200);
        let echo: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(header_values(&echo, "x-forwarded-proto"), ["https"]);
        assert_eq!(header_values(&echo, "x-sidegate-user"), ["alice"]);
    }
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &[]);
    let mut sc = Sidecar::start(bound, load(&text, &keys));
    let cookie = session_cookie(&text, &keys, "alice", "admin", SystemTime::now());
    let slow = tokio::spawn({
        let url = sc.url("/slow");
        async move {
            client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    sc.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = reqwest::Client::new()
        .get(sc.url("/public/x"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(fresh.is_err(), "no new connections after shutdown began");
    assert_eq!(
        slow.await.unwrap().expect("in-flight request completes"),
        200
    );
    let task = sc.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run() returns after draining")
        .unwrap();
}

/// A WebSocket through sidegate with a session.
async fn websocket(
    sc: &Sidecar,
    cookie: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/ws", sc.addr),
    )
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket")
        .0
}

async fn echo(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    text: &str,
) -> Option<String> {
    use futures_util::{SinkExt, StreamExt};
    ws.send(text.into()).await.ok()?;
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .ok()??
        .ok()?;
    msg.into_text().ok().map(|t| t.as_str().to_string())
}

#[tokio::test]
async fn shutdown_lets_open_websockets_finish_and_cuts_them_at_the_deadline() {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(
        &bound.url(),
        &upstream.url(),
        DEAD_ISSUER,
        &[("server", "shutdown_grace = \"2s\"")],
    );
    let mut sc = Sidecar::start(bound, load(&text, &keys));
    let cookie = session_cookie(&text, &keys, "alice", "admin", SystemTime::now());
    let mut finishing = websocket(&sc, &cookie).await;
    let mut lingering = websocket(&sc, &cookie).await;
    assert_eq!(
        echo(&mut finishing, "before").await.as_deref(),
        Some("before")
    );

    sc.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Shutdown has begun: open WebSockets still carry messages, new connections are refused.
    assert_eq!(
        echo(&mut finishing, "during").await.as_deref(),
        Some("during")
    );
    assert_eq!(
        echo(&mut lingering, "during").await.as_deref(),
        Some("during")
    );
    let fresh = reqwest::Client::new()
        .get(sc.url("/public/x"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(fresh.is_err(), "no new connections after shutdown began");
    assert!(
        !sc.task.as_ref().unwrap().is_finished(),
        "run() waits for open WebSockets (a process would exit and cut them)"
    );
    finishing.close(None).await.unwrap();

    // The other one stays open past the deadline: it is cut and run() returns.
    let task = sc.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("run() returns once the deadline cuts the last WebSocket")
        .unwrap();
    assert_eq!(
        echo(&mut lingering, "after").await,
        None,
        "cut at the deadline"
    );
}

/// The CPUs in a `/proc/.../status` file's `Cpus_allowed_list` ("0-1,4").
fn cpus_allowed(status_file: &std::path::Path) -> Vec<usize> {
    let status = std::fs::read_to_string(status_file).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {}", status_file.display()));
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap());
    }
    cpus
}

/// Each `sidegate-conn-N` thread of a running process and the CPUs it may use (its
/// `/proc/<pid>/task/<tid>/status`).
fn connection_thread_cpus(pid: u32) -> Vec<(usize, Vec<usize>)> {
    let mut seen = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if let Some(i) = comm.trim().strip_prefix("sidegate-conn-") {
            seen.push((i.parse().unwrap(), cpus_allowed(&dir.join("status"))));
        }
    }
    seen.sort();
    seen
}

/// By default (`cpu_affinity = "auto"`), with one connection thread per CPU it may use (the
/// default thread count), thread i keeps to the i-th CPU and the log says so; with more CPUs
/// than threads none is pinned. With `"off"` the kernel places them.
#[tokio::test]
async fn connection_threads_keep_to_a_cpu_each_unless_told_not_to_and_one_per_thread() {
    use crate::support::op::Op;
    use crate::support::process::{free_port, Running};
    let upstream = Upstream::start().await;
    let (port, admin) = (free_port(), free_port());
    let public = format!("http://127.0.0.1:{port}");
    let op = Op::start(&format!("{public}/.sidegate/oidc/callback")).await;
    let keys = Keys::new();
    let listen = format!("listen = [\"127.0.0.1:{port}\"]");
    let admin_listen = format!("admin_listen = \"127.0.0.1:{admin}\"");
    let threads = std::thread::available_parallelism().unwrap().get();
    for affinity in [None, Some("off")] {
        let line = affinity.map(|a| format!("cpu_affinity = \"{a}\""));
        let mut extra = vec![
            ("server", listen.as_str()),
            ("server", admin_listen.as_str()),
        ];
        if let Some(l) = &line {
            extra.push(("server", l));
        }
        let text = config_text(&public, &upstream.url(), &op.issuer, &extra);
        // Ready means the connection threads started, each having pinned itself first.
        let mut s = Running::start(keys.path(), &text, &[]).await;
        let pid = s.child.id().unwrap();
        let allowed = cpus_allowed(std::path::Path::new(&format!("/proc/{pid}/status")));
        let seen = connection_thread_cpus(pid);
        assert_eq!(
            seen.len(),
            threads,
            "one connection thread per core: {seen:?}"
        );
        if affinity.is_none() && allowed.len() == threads {
            let want: Vec<_> = allowed
                .iter()
                .enumerate()
                .map(|(i, &c)| (i, vec![c]))
                .collect();
            assert_eq!(seen, want, "thread i on the i-th CPU");
            assert!(s.log().contains("connection threads pinned"), "{}", s.log());
        } else {
            assert!(
                seen.iter().all(|(_, c)| *c == allowed),
                "{affinity:?}: {seen:?}"
            );
            assert!(
                !s.log().contains("connection threads pinned"),
                "{}",
                s.log()
            );
        }
        s.signal("-TERM");
        assert!(s.exit(Duration::from_secs(15)).await.success());
    }
}
