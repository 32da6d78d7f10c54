//! Hot reload of the real binary: SIGHUP (and `--watch-config`) applies a changed config,
//! policy and keys without dropping an open connection or logging anyone out; an invalid
//! config is refused with a log line and the running one stays; metrics carry over.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::op::Op;
use crate::support::process::{free_port, Running};
use crate::support::upstream::Upstream;
use crate::support::{client, config_text, session_cookie, Keys};

const ADMIN_ONLY: &str =
    "\n[[policy.routes]]\nname = \"admin\"\npaths = [\"/admin\"]\nallow = [{ roles = [\"admin\"] }]\n";

async fn world() -> (Upstream, Op, Keys, String) {
    world_with(&[]).await
}

/// `op_env` as for `Op::start_with`, `{public}` replaced by sidegate's public URL.
async fn world_with(op_env: &[(&str, &str)]) -> (Upstream, Op, Keys, String) {
    let upstream = Upstream::start().await;
    let port = free_port();
    let admin = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let env: Vec<(String, String)> = op_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.replace("{public}", &public)))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let op = Op::start_with(&format!("{public}/.sidegate/oidc/callback"), &env).await;
    let keys = Keys::new();
    let listen = format!("listen = [\"127.0.0.1:{port}\"]");
    let admin_listen = format!("admin_listen = \"127.0.0.1:{admin}\"");
    let text = config_text(
        &public,
        &upstream.url(),
        &op.issuer,
        &[("server", &listen), ("server", &admin_listen)],
    );
    (upstream, op, keys, text)
}

/// One request on an already open connection; the status code.
async fn on_connection(conn: &mut TcpStream, cookie: &str) -> u16 {
    let req = format!("GET /x HTTP/1.1\r\nhost: 127.0.0.1\r\ncookie: {cookie}\r\naccept: application/json\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "connection closed by the reload");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return head[9..12].parse().unwrap();
            }
        }
    }
}

#[tokio::test]
async fn sighup_applies_a_new_policy_and_keys_keeps_connections_and_refuses_an_invalid_config() {
    let (_upstream, _op, keys, text) = world().await;
    let dir = keys.path();
    let s = Running::start(dir, &text, &[]).await;
    let cookie = session_cookie(&text, &keys, "alice", "viewer", SystemTime::now());
    assert_eq!(s.status("/admin/x", &cookie).await, 200, "no policy yet");
    let mut conn = TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap();
    assert_eq!(on_connection(&mut conn, &cookie).await, 200);
    let proxied = s.proxied_count().await;
    assert!(proxied >= 2);

    // A new policy, and a new cookie secret first with the old one still listed.
    let old_secret = std::fs::read_to_string(dir.join("cookie-secrets")).unwrap();
    let fresh = sidegate::keys::generate(false).cookie_secret;
    std::fs::write(dir.join("cookie-secrets"), format!("{fresh}\n{old_secret}")).unwrap();
    std::fs::write(dir.join("sidegate.toml"), format!("{text}{ADMIN_ONLY}")).unwrap();
    s.hup();
    s.until("/admin/x", &cookie, 403).await;
    assert_eq!(
        s.status("/x", &cookie).await,
        200,
        "the old cookie still opens: nobody logged out"
    );
    assert_eq!(
        on_connection(&mut conn, &cookie).await,
        200,
        "the open connection survived"
    );
    assert!(s.proxied_count().await > proxied, "metrics carried over");

    // An invalid config: refused, logged, the running one stays.
    std::fs::write(
        dir.join("sidegate.toml"),
        format!("{text}{ADMIN_ONLY}\n[session.redis]\nurl = \"nope\"\n"),
    )
    .unwrap();
    s.hup();
    let mut logged = false;
    for _ in 0..50 {
        if s.log().contains("config reload refused") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged, "{}", s.log());
    assert!(s.log().contains("session.redis"), "the log names the key");
    assert_eq!(s.status("/admin/x", &cookie).await, 403, "old config kept");
    assert_eq!(s.status("/x", &cookie).await, 200);
    assert_eq!(on_connection(&mut conn, &cookie).await, 200);
}

#[tokio::test]
async fn watch_config_reloads_when_the_file_changes() {
    let (_upstream, _op, keys, text) = world().await;
    let s = Running::start(keys.path(), &text, &["--watch-config"]).await;
    let cookie = session_cookie(&text, &keys, "alice", "viewer", SystemTime::now());
    assert_eq!(s.status("/admin/x", &cookie).await, 200);
    std::fs::write(
        keys.path().join("sidegate.toml"),
        format!("{text}{ADMIN_ONLY}"),
    )
    .unwrap();
    s.until("/admin/x", &cookie, 403).await;
    assert!(s.log().contains("config file changed"), "{}", s.log());
    // The same content written again: still the reloaded config.
    std::fs::write(
        keys.path().join("sidegate.toml"),
        format!("{text}{ADMIN_ONLY}"),
    )
    .unwrap();
    assert_eq!(s.status("/x", &cookie).await, 200);
}

#[tokio::test]
async fn a_reload_keeps_the_idp_logouts_of_cookie_sessions() {
    let (_upstream, op, keys, text) = world_with(&[
        (
            "OP_BACKCHANNEL_LOGOUT_URI",
            "{public}/.sidegate/oidc/backchannel-logout",
        ),
        ("OP_TEST_ENDPOINTS", "1"),
    ])
    .await;
    let s = Running::start(keys.path(), &text, &[]).await;
    let mut b = crate::support::browser::Browser::new();
    let page = b
        .navigate(&format!("{}/app", s.base), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let alice = b.cookie_header(&format!("{}/", s.base));
    assert_eq!(s.status("/x", &alice).await, 200);
    // The provider ends alice's session: her (stateless) cookie is refused from now on.
    let ended: serde_json::Value = client()
        .post(format!("{}/test/end-sessions?sub=alice", op.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ended["backchannel"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{ended}"
    );
    assert_eq!(s.status("/x", &alice).await, 401);
    // A reload builds everything anew, but the revocation stays.
    std::fs::write(
        keys.path().join("sidegate.toml"),
        format!("{text}{ADMIN_ONLY}"),
    )
    .unwrap();
    s.hup();
    let viewer = session_cookie(&text, &keys, "bob", "viewer", SystemTime::now());
    s.until("/admin/x", &viewer, 403).await;
    assert_eq!(
        s.status("/x", &alice).await,
        401,
        "still ended after the reload"
    );
    assert_eq!(s.status("/x", &viewer).await, 200);
}
