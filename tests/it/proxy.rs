//! The proxy without the login: header stripping on every path, hop-by-hop handling,
//! `X-Forwarded-*` trust, cookie hygiene, bad session cookies, streaming, WebSockets,
//! upstream failures and the admin listener. Sessions are minted with the deployment's keys.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};

use crate::support::upstream::{header_values, Upstream};
use crate::support::{
    client, config_text, load, read_until, session_cookie, Bound, Keys, Sidecar, DEAD_ISSUER,
};

struct World {
    sidecar: Sidecar,
    upstream: Upstream,
    keys: Keys,
    text: String,
}

async fn world(extra: &[(&str, &str)]) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, extra);
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    World {
        sidecar,
        upstream,
        keys,
        text,
    }
}

impl World {
    fn cookie(&self) -> String {
        session_cookie(&self.text, &self.keys, "alice", "admin", SystemTime::now())
    }
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = client().get(self.sidecar.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.unwrap()
    }
}

const SPOOFS: &[(&str, &str)] = &[
    ("X-Sidegate-User", "mallory"),
    ("x-sidegate-user", "mallory2"),
    ("X_Sidegate_User", "mallory3"),
    ("x_SIDEGATE-role", "admin"),
    ("X-Sidegate-Teams", "admins"),
    ("X-Sidegate-Email", "m@evil.test"),
    ("X-Sidegate-Assertion", "eyJhbGciOiJub25lIn0.e30."),
];

fn spoofed(echo: &serde_json::Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            h[0].as_str()
                .unwrap()
                .replace('_', "-")
                .starts_with("x-sidegate-")
        })
        .map(|h| h[1].as_str().unwrap().to_string())
        .filter(|v| {
            v.contains("mallory")
                || v.contains("evil")
                || v.starts_with("eyJhbGciOiJub25l")
                || v == "admins"
        })
        .collect()
}

#[tokio::test]
async fn client_identity_headers_never_reach_the_app_on_public_paths() {
    let w = world(&[]).await;
    let mut rb = client().get(w.sidecar.url("/public/page"));
    for (k, v) in SPOOFS {
        rb = rb.header(*k, *v);
    }
    let echo: serde_json::Value = rb.send().await.unwrap().json().await.unwrap();
    assert!(
        spoofed(&echo).is_empty(),
        "spoofed headers reached the app: {echo}"
    );
    assert!(
        header_values(&echo, "x-sidegate-user").is_empty(),
        "public paths carry no identity"
    );
}

#[tokio::test]
async fn client_identity_headers_are_replaced_on_protected_paths_and_options() {
    let w = world(&[]).await;
    let cookie = w.cookie();
    for method in [
        reqwest::Method::GET,
        reqwest::Method::OPTIONS,
        reqwest::Method::POST,
    ] {
        let mut rb = client()
            .request(method.clone(), w.sidecar.url("/app"))
            .header("cookie", &cookie);
        for (k, v) in SPOOFS {
            rb = rb.header(*k, *v);
        }
        let echo: serde_json::Value = rb.send().await.unwrap().json().await.unwrap();
        assert!(
            spoofed(&echo).is_empty(),
            "{method}: spoofed headers reached the app: {echo}"
        );
        assert_eq!(
            header_values(&echo, "x-sidegate-user"),
            ["alice"],
            "{method}"
        );
        assert_eq!(
            header_values(&echo, "x-sidegate-role"),
            ["admin"],
            "{method}"
        );
    }
}

#[tokio::test]
async fn custom_header_names_are_set_and_their_spoofs_stripped() {
    let w = world(&[(
        "headers",
        "user = \"Remote-User\"\nstrip = [\"X-Forwarded-User\"]",
    )])
    .await;
    let echo: serde_json::Value = w
        .get(
            "/app",
            &[
                ("cookie", &w.cookie()),
                ("remote_user", "mallory"),
                ("REMOTE-USER", "mallory"),
                ("x-forwarded-user", "mallory"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&echo, "remote-user"), ["alice"]);
    assert!(header_values(&echo, "remote_user").is_empty());
    assert!(header_values(&echo, "x-forwarded-user").is_empty());
}

#[tokio::test]
async fn connection_listed_identity_headers_cannot_remove_ours() {
    let w = world(&[]).await;
    let echo: serde_json::Value = w
        .get(
            "/app",
            &[
                ("cookie", &w.cookie()),
                (
                    "connection",
                    "X-Sidegate-User, x-sidegate-assertion, X-Custom",
                ),
                ("x-custom", "1"),
                ("keep-alive", "timeout=5"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["alice"]);
    assert_eq!(header_values(&echo, "x-sidegate-assertion").len(), 1);
    assert!(
        header_values(&echo, "x-custom").is_empty(),
        "Connection-listed headers are hop-by-hop"
    );
    assert!(header_values(&echo, "keep-alive").is_empty());
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced() {
    let w = world(&[]).await;
    let echo: serde_json::Value = w
        .get(
            "/public/x",
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-host", "evil.test"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=1.2.3.4"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_values(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        header_values(&echo, "x-forwarded-host"),
        [w.sidecar.addr.to_string()]
    );
    assert!(header_values(&echo, "forwarded").is_empty());
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_extended() {
    let w = world(&[("server", "trusted_proxies = [\"127.0.0.1/32\"]")]).await;
    let echo: serde_json::Value = w
        .get(
            "/public/x",
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        header_values(&echo, "x-forwarded-for"),
        ["1.2.3.4, 127.0.0.1"]
    );
    assert_eq!(
        header_values(&echo, "x-forwarded-host"),
        ["app.example.com"]
    );
    assert_eq!(header_values(&echo, "x-forwarded-proto"), ["https"]);
}

#[tokio::test]
async fn own_cookies_are_removed_and_app_cookies_kept() {
    // The second line is not plain ASCII (an app's UTF-8 cookie): it must not carry the
    // session cookie through either, and the app's cookie arrives as it was sent.
    let w = world(&[]).await;
    let session = w.cookie();
    for (line, kept) in [
        (
            format!("theme=dark; {session}; _sidegate_login_abc=x; other=1"),
            "theme=dark; other=1",
        ),
        (
            format!("lang=fran\u{e7}ais; {session}"),
            "lang=fran\u{e7}ais",
        ),
    ] {
        let echo: serde_json::Value = w
            .get("/app", &[("cookie", &line)])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(header_values(&echo, "cookie"), [kept]);
        assert_eq!(
            header_values(&echo, "x-sidegate-user"),
            ["alice"],
            "the session on that line is still read"
        );
    }
}

#[tokio::test]
async fn bad_session_cookies_are_no_session() {
    let w = world(&[]).await;
    let good = w.cookie();
    let (name, value) = good.split_once('=').unwrap();
    let mut flipped = value.as_bytes().to_vec();
    let i = flipped.len() - 5;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{name}={}", String::from_utf8(flipped).unwrap());
    let truncated = format!("{name}={}", &value[..value.len() - 10]);
    let other_keys = Keys::new();
    let foreign = session_cookie(&w.text, &other_keys, "alice", "admin", SystemTime::now());
    let expired = session_cookie(
        &w.text,
        &w.keys,
        "alice",
        "admin",
        SystemTime::now() - Duration::from_secs(13 * 3600),
    );
    let idle = session_cookie(
        &w.text,
        &w.keys,
        "alice",
        "admin",
        SystemTime::now() - Duration::from_secs(2 * 3600),
    );
    let oversized = format!("{name}=v1.{}", "A".repeat(20_000));
    let garbage = format!("{name}=%%%not-base64");
    for (what, c) in [
        ("tampered", &tampered),
        ("truncated", &truncated),
        ("foreign key", &foreign),
        ("expired", &expired),
        ("idle", &idle),
        ("oversized", &oversized),
        ("garbage", &garbage),
    ] {
        let r = w
            .get("/app", &[("cookie", c), ("accept", "application/json")])
            .await;
        assert_eq!(r.status(), 401, "{what} cookie must not be a session");
        let cleared = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("_sidegate=;"));
        assert!(cleared, "{what}: the bad cookie is cleared");
    }
    assert_eq!(
        w.upstream.hits.load(Ordering::SeqCst),
        0,
        "no bad cookie reached the app"
    );
    let ok = w.get("/app", &[("cookie", &good)]).await;
    assert_eq!(ok.status(), 200, "the untouched cookie is valid");
}

#[tokio::test]
async fn large_upload_streams_without_buffering() {
    let w = world(&[]).await;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024; // 1 GiB
    let stream = futures_util::stream::iter(
        (0..CHUNKS).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; CHUNK]))),
    );
    let rss_before = rss_kib();
    let r = client()
        .post(w.sidecar.url("/upload"))
        .header("cookie", w.cookie())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["body_len"], (CHUNK * CHUNKS) as u64);
    let grew = rss_kib().saturating_sub(rss_before);
    // Test process = client + sidegate + upstream; a buffered body alone would be 1 GiB.
    assert!(
        grew < 200 * 1024,
        "RSS grew by {grew} KiB while streaming 1 GiB"
    );
}

/// A client that sends `Expect: 100-continue` (curl does for large bodies) waits for the
/// go-ahead before its body: sidegate must give it once the upload is on its way to the app.
#[tokio::test]
async fn an_upload_waiting_for_100_continue_goes_through() {
    use tokio::io::AsyncWriteExt;
    let w = world(&[]).await;
    let mut c = tokio::net::TcpStream::connect(w.sidecar.addr)
        .await
        .unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: {}\r\ncookie: {}\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
        w.sidecar.addr,
        w.cookie()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let ten = Duration::from_secs(10);
    let go_ahead = read_until(&mut c, &mut seen, "\r\n\r\n", ten).await;
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(go_ahead, "no 100 Continue in 10 s: {text}");
    assert!(text.starts_with("HTTP/1.1 100 Continue\r\n"), "{text}");
    seen.clear();
    c.write_all(b"hello").await.unwrap();
    let answered = read_until(&mut c, &mut seen, "\"body_len\":5", ten).await;
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(answered, "no answer with the body in 10 s: {text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn websocket_upgrade_passes_through_with_a_session() {
    let w = world(&[]).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/ws", w.sidecar.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("cookie", w.cookie().parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through sidegate");
    assert_eq!(resp.status(), 101);
    ws.send("hello".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.into_text().unwrap().as_str(), "hello");
    // Without a session there is no upgrade.
    let bare = tokio_tungstenite::connect_async(format!("ws://{}/ws", w.sidecar.addr)).await;
    assert!(bare.is_err());
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(&bound.url(), &dead_url, DEAD_ISSUER, &[]);
    let sc = Sidecar::start(bound, load(&text, &keys));
    let r = client().get(sc.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("x-request-id").is_some());

    let w = world(&[("upstream", "response_timeout = \"1s\"")]).await;
    let t = std::time::Instant::now();
    let r = w.get("/slow", &[("cookie", &w.cookie())]).await;
    assert_eq!(r.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn the_response_timeout_counts_from_each_request_on_a_kept_alive_connection() {
    // One client connection, so one lane: each request's timeout must start with that request.
    let w = world(&[("upstream", "response_timeout = \"1s\"")]).await;
    let (c, cookie) = (client(), w.cookie());
    let get = |path: &'static str| {
        let rb = c.get(w.sidecar.url(path)).header("cookie", &cookie);
        async move {
            let t = std::time::Instant::now();
            let status = rb.send().await.unwrap().status().as_u16();
            (status, t.elapsed())
        }
    };
    assert_eq!(get("/fast").await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get("/fast").await.0, 200);
    // A deadline left from the first request would cut this one at about 0.4 s.
    for _ in 0..2 {
        let (status, took) = get("/slow").await;
        assert_eq!(status, 504);
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "504 after {took:?}"
        );
    }
    assert_eq!(get("/fast").await.0, 200);
}

#[tokio::test]
async fn own_endpoints_are_never_proxied() {
    let w = world(&[]).await;
    for p in ["/.sidegate/nope", "/.SIDEGATE/nope", "/.sidegate"] {
        let r = w.get(p, &[("cookie", &w.cookie())]).await;
        assert_eq!(r.status(), 404, "{p}");
    }
    let jwks: serde_json::Value = w
        .get("/.sidegate/jwks.json", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private part in the JWKS"
    );
    // Non-canonical spellings of a public path are not public.
    for p in [
        "/public/../app",
        "/public/%2e%2e/app",
        "/public//x",
        "/public;x/y",
    ] {
        let r = w.get(p, &[("accept", "application/json")]).await;
        assert_eq!(r.status(), 401, "{p} must need a session");
    }
    assert_eq!(w.upstream.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn open_redirects_are_refused_at_the_start_endpoint() {
    let w = world(&[]).await;
    for rd in [
        "//evil.test",
        "/%5cevil.test",
        "https://evil.test/",
        "javascript:alert(1)",
    ] {
        let r = client()
            .get(w.sidecar.url("/.sidegate/start"))
            .query(&[("rd", rd)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "rd={rd}");
        let r = client()
            .get(w.sidecar.url("/.sidegate/logout"))
            .query(&[("rd", rd)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "logout rd={rd}");
    }
    // The IdP is down in this world: a good rd gets past the check and meets a clear 503.
    let r = client()
        .get(w.sidecar.url("/.sidegate/start"))
        .query(&[("rd", "/ok")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn secure_cookie_attributes_by_default() {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &[])
        .replace("cookie_secure = false", "cookie_secure = true");
    let sc = Sidecar::start(bound, load(&text, &keys));
    let r = client()
        .get(sc.url("/.sidegate/logout"))
        .send()
        .await
        .unwrap();
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(!set.is_empty());
    for c in set {
        assert!(
            c.contains("Secure") && c.contains("HttpOnly") && c.contains("SameSite=Lax"),
            "{c}"
        );
        assert!(!c.contains("Domain="), "host-only by default: {c}");
    }
}

#[tokio::test]
async fn admin_listener_serves_health_and_metrics_and_the_public_one_does_not() {
    let w = world(&[]).await;
    let _ = w.get("/public/x", &[]).await;
    assert_eq!(
        client()
            .get(w.sidecar.admin("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(w.sidecar.admin("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503,
        "IdP discovery is not loaded"
    );
    let m = client()
        .get(w.sidecar.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("sidegate_requests_total{outcome=\"public\"} 1"),
        "{m}"
    );
    assert!(m.contains("sidegate_upstream_latency_seconds_bucket"));
    let r = w.get("/healthz", &[("accept", "application/json")]).await;
    assert_eq!(
        r.status(),
        401,
        "health is not served on the public listener"
    );
}

#[tokio::test]
async fn rotated_cookie_and_assertion_keys_keep_sessions_valid() {
    // Before rotation: one cookie key and one assertion key.
    let old = Keys::new();
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &[]);
    let before = session_cookie(&text, &old, "alice", "admin", SystemTime::now());
    // After rotation: a new key is prepended in both files, the old ones stay.
    let new = Keys::new();
    let old_secret = std::fs::read_to_string(old.path().join("cookie-secrets")).unwrap();
    let new_secret = std::fs::read_to_string(new.path().join("cookie-secrets")).unwrap();
    std::fs::write(
        new.path().join("cookie-secrets"),
        format!("{new_secret}{old_secret}"),
    )
    .unwrap();
    let old_pem = std::fs::read_to_string(old.path().join("assertion-key.pem")).unwrap();
    let new_pem = std::fs::read_to_string(new.path().join("assertion-key.pem")).unwrap();
    std::fs::write(
        new.path().join("assertion-key.pem"),
        format!("{new_pem}{old_pem}"),
    )
    .unwrap();
    let sc = Sidecar::start(bound, load(&text, &new));
    let r = client()
        .get(sc.url("/app"))
        .header("cookie", &before)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a session sealed with the previous key still opens"
    );
    let jwks: serde_json::Value = client()
        .get(sc.url("/.sidegate/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "current and previous assertion keys are published"
    );
    // New sessions are sealed with the new key: a deployment with only the old key rejects them.
    let after = session_cookie(&text, &new, "bob", "viewer", SystemTime::now());
    let bound = Bound::new().await;
    let old_only = Sidecar::start(bound, load(&text, &old));
    let r = client()
        .get(old_only.url("/app"))
        .header("cookie", &after)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn large_sessions_are_chunked_and_still_valid() {
    let w = world(&[]).await;
    let cfg = load(&w.text, &w.keys);
    let store = std::sync::Arc::new(
        sidegate::store::Shared::new(&cfg.session.store, cfg.server.threads).unwrap(),
    );
    let sessions = sidegate::session::Sessions::new(cfg.session, store);
    let teams: Vec<String> = (0..400)
        .map(|i| format!("team-with-a-long-name-{i:04}"))
        .collect();
    let identity = sidegate::identity::Identity {
        issuer: "http://idp.test".into(),
        subject: "s".into(),
        user: "alice".into(),
        email: None,
        role: "viewer".into(),
        teams: teams.clone(),
        extra: vec![],
    };
    let (_, set) = sessions
        .create(identity, None, SystemTime::now())
        .await
        .unwrap();
    let pairs: Vec<String> = set
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .filter(|p| !p.ends_with('='))
        .collect();
    assert!(
        pairs.len() >= 3,
        "a ~13 KB session is split into chunks: {}",
        pairs.len()
    );
    for c in &set {
        assert!(
            c.len() < 4096,
            "each Set-Cookie stays under the browser limit"
        );
    }
    let cookie = pairs.join("; ");
    let echo: serde_json::Value = w
        .get("/app", &[("cookie", &cookie)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-teams"), [teams.join(",")]);
    // A missing chunk is no session.
    let partial = pairs
        .iter()
        .filter(|p| !p.starts_with("_sidegate_1="))
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    let r = w
        .get(
            "/app",
            &[("cookie", &partial), ("accept", "application/json")],
        )
        .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn eddsa_assertions_verify_with_an_independent_library() {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    std::fs::write(
        keys.path().join("assertion-key.pem"),
        sidegate::keys::generate(true).signing_key_pem,
    )
    .unwrap();
    let public = bound.url();
    let text = config_text(
        &public,
        &upstream.url(),
        DEAD_ISSUER,
        &[("assertion", "audience = \"my-app\"")],
    );
    let sc = Sidecar::start(bound, load(&text, &keys));
    let cookie = session_cookie(&text, &keys, "alice", "admin", SystemTime::now());
    let echo: serde_json::Value = client()
        .get(sc.url("/app"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = header_values(&echo, "x-sidegate-assertion").pop().unwrap();
    let v = crate::support::op::verify_with_jose(
        &sc.url("/.sidegate/jwks.json"),
        &token,
        &public,
        "my-app",
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["header"]["alg"], "EdDSA");
    let wrong_aud = crate::support::op::verify_with_jose(
        &sc.url("/.sidegate/jwks.json"),
        &token,
        &public,
        "other-app",
    )
    .await;
    assert_eq!(wrong_aud["ok"], false);
}

#[tokio::test]
async fn an_opened_cookie_is_still_checked_in_full_each_time() {
    use sidegate::session::{Checked, Invalid, OpenError, Revoke};
    // Cookie sessions are kept opened between requests (the hot path skips base64, AEAD and
    // JSON): expiry, idle timeout, revocation and the whole value still decide every time.
    let w = world(&[]).await;
    let cfg = load(&w.text, &w.keys);
    let store = std::sync::Arc::new(
        sidegate::store::Shared::new(&cfg.session.store, cfg.server.threads).unwrap(),
    );
    let sessions = sidegate::session::Sessions::new(cfg.session, store);
    let t0 = SystemTime::now();
    let cookie = session_cookie(&w.text, &w.keys, "alice", "admin", t0);
    let headers = |c: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, c.parse().unwrap());
        h
    };
    let idle = sessions.config().idle_lifetime;
    let absolute = sessions.config().absolute_lifetime;
    for _ in 0..2 {
        assert!(
            matches!(
                sessions.check(&headers(&cookie), t0).await,
                Checked::Valid(_)
            ),
            "a fresh cookie is a session, opened or remembered"
        );
    }
    // The same value, remembered, past its deadlines.
    let late = sessions
        .check(&headers(&cookie), t0 + idle + Duration::from_secs(1))
        .await;
    assert!(matches!(late, Checked::Invalid(Invalid::Idle)), "{late:?}");
    let later = sessions.check(&headers(&cookie), t0 + absolute).await;
    assert!(
        matches!(later, Checked::Invalid(Invalid::Expired)),
        "{later:?}"
    );
    // A value that differs early but shares the remembered value's last bytes.
    let (name, value) = cookie.split_once('=').unwrap();
    let mut forged = value.as_bytes().to_vec();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = format!("{name}={}", String::from_utf8(forged).unwrap());
    let r = sessions.check(&headers(&forged), t0).await;
    assert!(
        matches!(r, Checked::Invalid(Invalid::Open(OpenError::Tampered))),
        "a forged value is opened (and refused), never taken for the remembered one: {r:?}"
    );
    // An IdP logout after the value was remembered.
    sessions
        .revoke(
            "http://idp.test",
            Revoke::Sub("sub-alice"),
            sidegate::session::unix(t0),
        )
        .await
        .unwrap();
    let r = sessions.check(&headers(&cookie), t0).await;
    assert!(matches!(r, Checked::Invalid(Invalid::Revoked)), "{r:?}");
}
