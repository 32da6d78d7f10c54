//! Session refresh against the real `oidc-provider` with rotating, single-use refresh tokens
//! (a reused one revokes the whole grant there): a role change at the IdP reaches the app and
//! the policy at the next refresh; 50 concurrent requests due for a refresh cause exactly one;
//! a refused refresh ends the session. The refresh interval is 3 s; the tests wait it out
//! (and assert nothing that a slow machine's later, legitimate refresh would change).

use std::time::Duration;

use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::op::Op;
use crate::support::upstream::{header_values, Upstream};
use crate::support::{client, config_text, load, Bound, Keys, Sidecar};

/// Just past the configured 3 s refresh interval.
const INTERVAL: Duration = Duration::from_millis(3200);

struct World {
    sidecar: Sidecar,
    op: Op,
    _upstream: Upstream,
    _keys: Keys,
}

async fn world() -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let op = Op::start_with(
        &format!("{}/.sidegate/oidc/callback", bound.url()),
        &[("OP_REFRESH", "1"), ("OP_TEST_ENDPOINTS", "1")],
    )
    .await;
    let keys = Keys::new();
    let text = config_text(&bound.url(), &upstream.url(), &op.issuer, &[("oidc", "refresh_interval = \"3s\"")])
        + "\n[[policy.routes]]\nname = \"admin\"\npaths = [\"/admin\"]\nallow = [{ roles = [\"admin\"] }]\n";
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    World {
        sidecar,
        op,
        _upstream: upstream,
        _keys: keys,
    }
}

impl World {
    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        client()
            .get(self.sidecar.url(path))
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
    }

    async fn stats(&self) -> Value {
        client()
            .get(format!("{}/test/stats", self.op.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn set_claims(&self, sub: &str, claims: Value) {
        let r = client()
            .post(format!("{}/test/claims?sub={sub}", self.op.issuer))
            .json(&claims)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
}

/// The cookie header a response's Set-Cookie values make (the session cookie only).
fn cookie_from(resp: &reqwest::Response) -> Option<String> {
    let pairs: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|s| s.split(';').next())
        .filter(|p| p.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .map(str::to_string)
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

async fn login(w: &World) -> String {
    let mut b = Browser::new();
    let page = b
        .navigate(&w.sidecar.url("/admin/x"), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    b.cookie_header(&w.sidecar.url("/"))
}

#[tokio::test]
async fn a_role_change_at_the_idp_takes_effect_at_the_next_refresh() {
    let w = world().await;
    let cookie = login(&w).await;
    let echo: Value = w.get("/admin/x", &cookie).await.json().await.unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-role"), ["admin"]);

    w.set_claims(
        "alice",
        serde_json::json!({"role": "viewer", "groups": ["readers"]}),
    )
    .await;
    tokio::time::sleep(INTERVAL).await;
    let r = w.get("/x", &cookie).await;
    assert_eq!(r.status(), 200);
    let fresh = cookie_from(&r).expect("the refreshed session comes with a new cookie");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        header_values(&echo, "x-sidegate-role"),
        ["viewer"],
        "claims re-read at the refresh"
    );
    assert_eq!(header_values(&echo, "x-sidegate-teams"), ["readers"]);
    // Policy is judged on the refreshed identity.
    assert_eq!(w.get("/admin/x", &fresh).await.status(), 403);
    assert_eq!(w.stats().await["refresh_invalid_grant"], 0);
}

#[tokio::test]
async fn fifty_concurrent_requests_due_for_refresh_cause_exactly_one() {
    let w = world().await;
    let cookie = login(&w).await;
    tokio::time::sleep(INTERVAL).await;
    let calls = (0..50).map(|_| w.get("/x", &cookie));
    let responses = futures_util::future::join_all(calls).await;
    for r in &responses {
        assert_eq!(
            r.status(),
            200,
            "no request may be logged out by the refresh"
        );
    }
    let stats = w.stats().await;
    assert_eq!(stats["refresh_grants"], 1, "exactly one refresh: {stats}");
    assert_eq!(
        stats["refresh_invalid_grant"], 0,
        "no rotated token spent twice: {stats}"
    );
    // A straggler still on the old cookie gets the refreshed session, not a second refresh.
    let r = w.get("/x", &cookie).await;
    assert_eq!(r.status(), 200);
    let fresh = cookie_from(&r).expect("new cookie");
    assert_eq!(w.stats().await["refresh_grants"], 1);
    // The new cookie works (and, if its own refresh fell due meanwhile, spends only its own
    // new refresh token).
    assert_eq!(w.get("/x", &fresh).await.status(), 200);
    assert_eq!(w.stats().await["refresh_invalid_grant"], 0);
}

#[tokio::test]
async fn a_refused_refresh_ends_the_session() {
    let w = world().await;
    let cookie = login(&w).await;
    // The IdP session ends; its refresh tokens die with it (no offline_access).
    let r = client()
        .post(format!("{}/test/end-sessions?sub=alice", w.op.issuer))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        w.get("/x", &cookie).await.status(),
        200,
        "not due yet: the cookie still stands"
    );
    tokio::time::sleep(INTERVAL).await;
    let r = w.get("/x", &cookie).await;
    assert_eq!(
        r.status(),
        401,
        "the refresh was refused: the session is over"
    );
    let cleared = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("_sidegate=;"));
    assert!(cleared, "the session cookie is cleared");
}
