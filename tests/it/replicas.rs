//! Several sidegate replicas on different loopback ports sharing one real `redis-server`
//! (`session.store = "redis"`), as behind a load balancer (replica A's address stands for
//! the public URL): a session made on one is served by the others and sealed at rest;
//! logout and back-channel logout end it everywhere; refresh single flight spans replicas;
//! a SAML assertion consumed on one is refused on another; login transactions in Redis let a
//! login finish on another host. Two real `sidegate run` processes do the same and exit 0 on
//! SIGTERM. Each connection thread keeps its own Redis connection. Then Redis faults: down and
//! paused fail closed with 503 (never a login loop, never the app) and recover by
//! themselves, keeping sessions already written.

use std::time::Duration;

use http::header::{ACCEPT, COOKIE};
use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::op::Op;
use crate::support::process::{free_port, Running};
use crate::support::redis::Redis;
use crate::support::saml_idp::{SamlIdp, SamlIdpSp};
use crate::support::upstream::{header_values, Upstream};
use crate::support::{client, config_text, load, Bound, Keys, Sidecar, DEAD_ISSUER};

struct Replicas {
    nodes: Vec<Sidecar>,
    redis: Redis,
    upstream: Upstream,
    op: Option<Op>,
    _keys: Keys,
}

fn store_lines(redis: &Redis, timeout: &str) -> String {
    format!(
        "store = \"redis\"\n[session.redis]\nurl = \"{}\"\ntimeout = \"{timeout}\"",
        redis.url()
    )
}

/// `n` replicas with the same config and keys in front of one app, on one Redis and one
/// real OP (`op_env` as for `Op::start_with`, `{public}` replaced by the public URL).
async fn oidc_replicas(n: usize, op_env: &[(&str, &str)], oidc: &[&str]) -> Replicas {
    oidc_replicas_with(n, op_env, oidc, "", "").await
}

/// `oidc_replicas` with `session` lines before the Redis table, and `server` lines.
async fn oidc_replicas_with(
    n: usize,
    op_env: &[(&str, &str)],
    oidc: &[&str],
    session: &str,
    server: &str,
) -> Replicas {
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let mut bounds = Vec::new();
    for _ in 0..n {
        bounds.push(Bound::new().await);
    }
    let public = bounds[0].url();
    let env: Vec<(String, String)> = op_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.replace("{public}", &public)))
        .collect();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let op = Op::start_with(&format!("{public}/.sidegate/oidc/callback"), &env_refs).await;
    let keys = Keys::new();
    let store = format!("{session}\n{}", store_lines(&redis, "1s"));
    let mut extra: Vec<(&str, &str)> = oidc.iter().map(|l| ("oidc", *l)).collect();
    extra.push(("session", &store));
    extra.push(("server", server));
    let text = config_text(&public, &upstream.url(), &op.issuer, &extra);
    let nodes = bounds
        .into_iter()
        .map(|b| Sidecar::start(b, load(&text, &keys)))
        .collect();
    Replicas {
        nodes,
        redis,
        upstream,
        op: Some(op),
        _keys: keys,
    }
}

impl Replicas {
    /// Logs `user` in through replica `i` with the real OP's login form.
    async fn login(&self, i: usize, user: &str) -> String {
        let mut b = Browser::new();
        let page = b
            .navigate(&self.nodes[i].url("/app"), user, &format!("{user}-pw"))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        b.cookie_header(&self.nodes[i].url("/"))
    }

    async fn get(&self, i: usize, path: &str, cookie: &str) -> reqwest::Response {
        self.get_via(&client(), i, path, cookie).await
    }

    /// `get` on `c`'s own connections (kept open between calls).
    async fn get_via(
        &self,
        c: &reqwest::Client,
        i: usize,
        path: &str,
        cookie: &str,
    ) -> reqwest::Response {
        c.get(self.nodes[i].url(path))
            .header(COOKIE, cookie)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap()
    }

    /// The user the app saw through replica `i`, or the status when it saw nothing.
    async fn user_on(&self, i: usize, cookie: &str) -> Result<String, u16> {
        self.user_via(&client(), i, cookie).await
    }

    /// `user_on` through `c`'s own connections.
    async fn user_via(&self, c: &reqwest::Client, i: usize, cookie: &str) -> Result<String, u16> {
        let r = self.get_via(c, i, "/api/me", cookie).await;
        if r.status() != 200 {
            return Err(r.status().as_u16());
        }
        let echo: Value = r.json().await.unwrap();
        Ok(header_values(&echo, "x-sidegate-user").join(","))
    }

    fn hits(&self) -> usize {
        self.upstream.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn issuer(&self) -> &str {
        &self.op.as_ref().unwrap().issuer
    }
}

#[tokio::test]
async fn a_session_made_on_one_replica_is_served_by_all_sealed_at_rest_and_logout_ends_it_everywhere(
) {
    let r = oidc_replicas(3, &[], &[]).await;
    let alice = r.login(0, "alice").await;
    for i in 0..3 {
        assert_eq!(
            r.user_on(i, &alice).await,
            Ok("alice".into()),
            "replica {i}"
        );
    }
    // The cookie is a handle, not the session: no identity in it.
    let value = alice
        .split("_sidegate=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(value.starts_with("r1.") && value.len() < 80, "{value}");

    // A copy of Redis reveals nothing: no identity, no cookie, no id in keys or values.
    let keys = r.redis.cli(&["--scan"]).await;
    let mut sessions = 0;
    for k in keys.lines() {
        assert!(!k.contains(&value[3..]), "a key names the cookie: {k}");
        if r.redis.cli(&["TYPE", k]).await == "string" {
            let v = r.redis.cli(&["GET", k]).await;
            for secret in ["alice", "alice@example.com", &value[3..]] {
                assert!(!v.contains(secret), "{k} holds {secret} in the clear");
            }
            sessions += usize::from(k.starts_with("sidegate:s:"));
        }
    }
    assert_eq!(sessions, 1, "one stored session: {keys}");

    // Logout on replica 1 ends the session on 0 and 2, although the cookie is kept.
    let out = r.get(1, "/.sidegate/logout", &alice).await;
    assert!(
        out.status().is_redirection() || out.status() == 200,
        "{}",
        out.status()
    );
    let before = r.hits();
    for i in 0..3 {
        assert_eq!(
            r.user_on(i, &alice).await,
            Err(401),
            "replica {i} after logout"
        );
    }
    assert_eq!(r.hits(), before, "the app saw nothing after logout");
}

#[tokio::test]
async fn each_connection_thread_keeps_its_own_redis_connection() {
    // One shared connection would hand every command of the other thread's requests to
    // the thread that drives it (BENCHMARKS.md: the Redis path).
    let r = oidc_replicas_with(1, &[], &[], "", "threads = 2").await;
    let alice = r.login(0, "alice").await;
    // Four connections open at once: the least busy thread takes each, so both threads
    // serve some of them whatever the login's connection left behind.
    let clients: Vec<reqwest::Client> = (0..4).map(|_| client()).collect();
    for _ in 0..3 {
        for c in &clients {
            assert_eq!(r.user_via(c, 0, &alice).await, Ok("alice".into()));
        }
    }
    let list = r.redis.cli(&["CLIENT", "LIST"]).await;
    let ours = list.lines().filter(|l| !l.contains("cmd=client")).count();
    // Two threads, and at most one more for work off the connection threads.
    assert!((2..=3).contains(&ours), "{ours} connections:\n{list}");
}

#[tokio::test]
async fn back_channel_logout_received_by_one_replica_ends_the_session_on_the_others() {
    let r = oidc_replicas(
        2,
        &[
            (
                "OP_BACKCHANNEL_LOGOUT_URI",
                "{public}/.sidegate/oidc/backchannel-logout",
            ),
            ("OP_TEST_ENDPOINTS", "1"),
        ],
        &[],
    )
    .await;
    // Logins go through the public URL (replica 0); the sessions are used on replica 1.
    let alice = r.login(0, "alice").await;
    let bob = r.login(0, "bob").await;
    assert_eq!(r.user_on(1, &alice).await, Ok("alice".into()));
    // The provider POSTs its logout token to replica 0 (the public URL).
    let ended: Value = client()
        .post(format!("{}/test/end-sessions?sub=alice", r.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ended["backchannel"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|x| x["ok"] == true)),
        "{ended}"
    );
    assert_eq!(
        r.user_on(1, &alice).await,
        Err(401),
        "ended on the replica the token did not reach"
    );
    assert_eq!(r.user_on(0, &alice).await, Err(401));
    assert_eq!(
        r.user_on(1, &bob).await,
        Ok("bob".into()),
        "bob is untouched"
    );
}

#[tokio::test]
async fn refresh_single_flight_holds_across_replicas() {
    let r = oidc_replicas(
        3,
        &[("OP_REFRESH", "1"), ("OP_TEST_ENDPOINTS", "1")],
        &["refresh_interval = \"3s\""],
    )
    .await;
    let alice = r.login(0, "alice").await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    // 60 requests due for a refresh, spread over the three replicas at once.
    let calls = (0..60).map(|n| r.get(n % 3, "/x", &alice));
    for resp in futures_util::future::join_all(calls).await {
        assert_eq!(
            resp.status(),
            200,
            "no request is logged out by the refresh"
        );
    }
    let stats: Value = client()
        .get(format!("{}/test/stats", r.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["refresh_grants"], 1,
        "one refresh among all replicas: {stats}"
    );
    assert_eq!(
        stats["refresh_invalid_grant"], 0,
        "no rotated token spent twice: {stats}"
    );
    // The same cookie keeps working everywhere (the refreshed session is in the store).
    for i in 0..3 {
        assert_eq!(r.user_on(i, &alice).await, Ok("alice".into()));
    }
}

#[tokio::test]
async fn a_saml_assertion_consumed_on_one_replica_is_refused_on_another() {
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let (a, b) = (Bound::new().await, Bound::new().await);
    let origin = a.url();
    let sp_entity = format!("{origin}/.sidegate/saml/metadata");
    let idp = SamlIdp::start(&SamlIdpSp {
        entity_id: &sp_entity,
        acs_url: &format!("{origin}/.sidegate/saml/acs"),
        slo_url: &format!("{origin}/.sidegate/saml/slo"),
        cert_pem: None,
        encrypt_to: None,
    })
    .await;
    let keys = Keys::new();
    std::fs::write(keys.path().join("idp.xml"), &idp.metadata_xml).unwrap();
    let store = store_lines(&redis, "1s");
    let text = config_text(
        &origin,
        &upstream.url(),
        DEAD_ISSUER,
        &[("session", &store)],
    );
    // SAML only: drop the [oidc] section.
    let (head, rest) = text.split_once("[oidc]").unwrap();
    let text = format!(
        "{head}{}\n[saml]\nidp_metadata_file = \"idp.xml\"\nidp_initiated = \"accept\"\n",
        &rest[rest.find("[session]").unwrap()..]
    );
    let (na, nb) = (
        Sidecar::start(a, load(&text, &keys)),
        Sidecar::start(b, load(&text, &keys)),
    );
    let mut browser = Browser::new();
    let url = idp.idp_initiated_url(&sp_entity, Some("/x"));
    let fields = crate::saml::capture(&mut browser, &url, "bob", "bob-pw").await;
    let post = |node: &Sidecar| {
        client()
            .post(node.url("/.sidegate/saml/acs"))
            .header(ACCEPT, "text/html")
            .form(&fields)
            .send()
    };
    let first = post(&na).await.unwrap();
    assert_eq!(first.status(), 302, "{}", first.text().await.unwrap());
    let replay = post(&nb).await.unwrap();
    assert_eq!(replay.status(), 403, "replayed on another replica");
    assert!(replay
        .headers()
        .get("set-cookie")
        .is_none_or(|c| !c.to_str().unwrap().starts_with("_sidegate=")));
}

#[tokio::test]
async fn redis_down_or_paused_fails_closed_and_recovers_without_losing_sessions() {
    let mut r = oidc_replicas(1, &[], &[]).await;
    let alice = r.login(0, "alice").await;
    assert_eq!(r.user_on(0, &alice).await, Ok("alice".into()));
    let ready = |r: &Replicas| client().get(r.nodes[0].admin("/readyz")).send();
    assert_eq!(ready(&r).await.unwrap().status(), 200);
    // Written sessions survive a Redis restart (here: its own snapshot).
    r.redis.cli(&["SAVE"]).await;
    r.redis.stop().await;

    let before = r.hits();
    let down = r.get(0, "/api/me", &alice).await;
    assert_eq!(down.status(), 503, "store down: 503, not a login");
    assert!(down.headers().get("location").is_none());
    let nav = client()
        .get(r.nodes[0].url("/page"))
        .header(COOKIE, &alice)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(nav.status(), 503, "a browser is not sent into a login loop");
    assert!(nav
        .text()
        .await
        .unwrap()
        .contains("temporarily unavailable"));
    assert_eq!(r.hits(), before, "nothing reached the app");
    let not_ready = ready(&r).await.unwrap();
    assert_eq!(not_ready.status(), 503);
    assert!(not_ready.text().await.unwrap().contains("store"));

    // Back: reconnects by itself (bounded wait), the session is still there.
    r.redis.restart().await;
    let mut back = Err(0);
    for _ in 0..50 {
        back = r.user_on(0, &alice).await;
        if back.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        back,
        Ok("alice".into()),
        "the session written before the outage"
    );
    assert_eq!(ready(&r).await.unwrap().status(), 200);

    // Paused (unresponsive, connection open): the command times out into a 503, then works.
    r.redis.cli(&["CLIENT", "PAUSE", "3000", "ALL"]).await;
    let before = r.hits();
    assert_eq!(
        r.user_on(0, &alice).await,
        Err(503),
        "no answer in time: 503"
    );
    assert_eq!(r.hits(), before);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let mut back = Err(0);
    for _ in 0..50 {
        back = r.user_on(0, &alice).await;
        if back.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(back, Ok("alice".into()));
}

#[tokio::test]
async fn with_transactions_in_the_store_a_login_may_finish_where_the_start_cookie_is_not_seen() {
    // The browser starts on replica 1; the IdP returns it to the public URL (replica 0),
    // which this browser's cookie jar keeps apart (another port): the start cookie is not
    // sent there, so only the transaction in Redis can finish the login.
    let r = oidc_replicas_with(2, &[], &[], "login_transactions = \"store\"", "").await;
    let mut b = Browser::new();
    let page = b
        .navigate(&r.nodes[1].url("/app"), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie = b.cookie_header(&r.nodes[0].url("/"));
    assert_eq!(
        r.user_on(0, &cookie).await,
        Ok("alice".into()),
        "logged in at the callback's replica"
    );
    assert_eq!(r.user_on(1, &cookie).await, Ok("alice".into()));
    // A replayed callback is refused: the transaction is spent.
    let callback = b
        .visited
        .iter()
        .find(|u| u.contains("/oidc/callback"))
        .expect("callback visited")
        .clone();
    let again = client()
        .get(&callback)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "replayed callback");

    // The same journey with transactions in cookies fails: the cookie never reaches replica 0.
    let c = oidc_replicas(2, &[], &[]).await;
    let mut b = Browser::new();
    let page = b
        .navigate(&c.nodes[1].url("/app"), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 400, "no transaction without its cookie");
}

#[tokio::test]
async fn two_sidegate_processes_share_sessions_through_redis_and_exit_0_on_sigterm() {
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let public = format!("http://127.0.0.1:{}", ports[0].0);
    let op = Op::start(&format!("{public}/.sidegate/oidc/callback")).await;
    let keys = Keys::new();
    let store = store_lines(&redis, "1s");
    let mut procs = Vec::new();
    for (n, (port, admin)) in ports.iter().enumerate() {
        let listen = format!("listen = [\"127.0.0.1:{port}\"]");
        let admin = format!("admin_listen = \"127.0.0.1:{admin}\"");
        let text = config_text(
            &public,
            &upstream.url(),
            &op.issuer,
            &[("server", &listen), ("server", &admin), ("session", &store)],
        );
        procs.push(Running::start_named(keys.path(), &format!("replica-{n}"), &text, &[]).await);
    }
    let mut b = Browser::new();
    let page = b
        .navigate(&format!("{}/app", procs[0].base), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let alice = b.cookie_header(&format!("{}/", procs[0].base));
    assert_eq!(
        procs[1].status("/x", &alice).await,
        200,
        "the other process serves the session"
    );
    let out = client()
        .get(format!("{}/.sidegate/logout", procs[1].base))
        .header(COOKIE, &alice)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_redirection() || out.status() == 200);
    assert_eq!(
        procs[0].status("/x", &alice).await,
        401,
        "logged out on both"
    );
    for p in &mut procs {
        p.signal("-TERM");
        let status = p.exit(Duration::from_secs(40)).await;
        assert!(status.success(), "SIGTERM exits 0: {status:?}\n{}", p.log());
    }
}
