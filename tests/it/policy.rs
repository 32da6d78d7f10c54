//! Per-route policy, table-driven: routes × identities × expected outcome, through the
//! sidecar (proxied requests) and through forward-auth (`/.sidegate/auth` with nginx's
//! headers), including path-normalization tricks that must land on the same route.

use std::time::SystemTime;

use serde_json::{json, Value};
use sidegate::identity::Identity;

use crate::support::upstream::{header_values, Upstream};
use crate::support::{
    client, config_text, load, session_cookie_for, Bound, Keys, Sidecar, DEAD_ISSUER,
};

const ROUTES: &str = r#"
[[identity.extra]]
name = "department"

[[policy.routes]]
name = "health"
paths = ["/healthz"]
access = "public"

[[policy.routes]]
name = "admin console"
paths = ["/admin"]
allow = [{ roles = ["admin"] }]

[[policy.routes]]
name = "finance"
paths = ["/finance"]
allow = [{ teams = ["finance"] }, { claims = { department = ["accounting"] } }]

[[policy.routes]]
name = "api writes"
paths = ["/api"]
methods = ["POST", "DELETE"]
allow = [{ roles = ["admin", "developer"] }]

[[policy.routes]]
name = "api"
paths = ["/api"]
access = "authenticated"
strip_headers = ["X-Debug"]
add_headers = { X-Route = "api" }
audience = "https://api.example"

[[policy.routes]]
name = "internal"
paths = ["/internal"]
deny = [{ email_domains = ["contractor.test"] }]

[[policy.routes]]
name = "partner site"
hosts = ["partner.test"]
access = "deny"

[[policy.routes]]
name = "legacy"
paths = ["/old"]
access = "deny"
"#;

struct World {
    sidecar: Sidecar,
    cookies: Vec<(&'static str, String)>,
    _upstream: Upstream,
}

fn who(user: &str, role: &str, email: &str, teams: &[&str], department: Option<&str>) -> Identity {
    Identity {
        issuer: "http://idp.test".into(),
        subject: format!("sub-{user}"),
        user: user.into(),
        email: Some(email.into()),
        role: role.into(),
        teams: teams.iter().map(|t| t.to_string()).collect(),
        extra: department
            .map(|d| vec![("department".to_string(), json!(d))])
            .unwrap_or_default(),
    }
}

async fn world(default: &str) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(
        &bound.url(),
        &upstream.url(),
        DEAD_ISSUER,
        &[("server", "trusted_proxies = [\"127.0.0.1/32\"]")],
    ) + &format!("\n[policy]\ndefault = \"{default}\"\n")
        + ROUTES;
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    let now = SystemTime::now();
    let mint = |i: Identity| session_cookie_for(&text, &keys, i, now);
    let cookies = vec![
        (
            "alice",
            mint(who("alice", "admin", "alice@example.test", &["devs"], None)),
        ),
        (
            "vic",
            mint(who(
                "vic",
                "viewer",
                "vic@contractor.test",
                &["finance"],
                None,
            )),
        ),
        (
            "dan",
            mint(who(
                "dan",
                "developer",
                "dan@example.test",
                &[],
                Some("accounting"),
            )),
        ),
    ];
    World {
        sidecar,
        cookies,
        _upstream: upstream,
    }
}

impl World {
    fn cookie(&self, who: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| *n == who)
            .map(|(_, c)| c.as_str())
    }

    /// Status of a proxied request.
    async fn proxied(
        &self,
        method: &str,
        host: Option<&str>,
        path: &str,
        who: &str,
    ) -> (u16, String) {
        let mut rb = client()
            .request(method.parse().unwrap(), self.sidecar.url(path))
            .header("accept", "application/json");
        if let Some(h) = host {
            rb = rb.header("host", h);
        }
        if let Some(c) = self.cookie(who) {
            rb = rb.header("cookie", c);
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Status of the same request asked through forward-auth by a trusted nginx.
    async fn checked(&self, method: &str, host: Option<&str>, path: &str, who: &str) -> u16 {
        let mut rb = client()
            .get(self.sidecar.url("/.sidegate/auth"))
            .header("accept", "application/json")
            .header("x-original-uri", path)
            .header("x-original-method", method)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", host.unwrap_or("app.test"));
        if let Some(c) = self.cookie(who) {
            rb = rb.header("cookie", c);
        }
        rb.send().await.unwrap().status().as_u16()
    }
}

#[tokio::test]
async fn routes_times_identities_times_outcomes() {
    let w = world("authenticated").await;
    #[rustfmt::skip]
    let table: &[(&str, Option<&str>, &str, &str, u16)] = &[
        // public route: canonical, exact case
        ("GET", None, "/healthz", "anon", 200),
        ("GET", None, "/healthz/", "anon", 200),
        ("GET", None, "/HEALTHZ", "anon", 401),
        ("GET", None, "/x/..%2fhealthz", "anon", 401),
        // role rule, and every spelling of /admin lands on it
        ("GET", None, "/admin/users", "alice", 200),
        ("GET", None, "/admin/users", "vic", 403),
        ("GET", None, "/admin/users", "anon", 401),
        ("GET", None, "/ADMIN/users", "vic", 403),
        ("GET", None, "/Admin", "dan", 403),
        ("GET", None, "/admin%2fusers", "vic", 403),
        ("GET", None, "/public/..%2fadmin", "vic", 403),
        ("GET", None, "//admin", "vic", 403),
        ("GET", None, "/admin;jsessionid=1", "vic", 403),
        ("GET", None, "/x%2f%2e%2e%2fadmin/", "vic", 403),
        ("GET", None, "/adminx", "vic", 200),
        // any-of conditions: a team, or an extra claim
        ("GET", None, "/finance/q3", "alice", 403),
        ("GET", None, "/finance/q3", "vic", 200),
        ("GET", None, "/finance/q3", "dan", 200),
        // methods
        ("POST", None, "/api/orders", "vic", 403),
        ("DELETE", None, "/api/orders/1", "dan", 200),
        ("GET", None, "/api/orders", "vic", 200),
        // deny conditions
        ("GET", None, "/internal/wiki", "vic", 403),
        ("GET", None, "/internal/wiki", "alice", 200),
        // host and deny routes
        ("GET", Some("partner.test"), "/anything", "alice", 403),
        ("GET", Some("partner.test:8080"), "/anything", "alice", 403),
        ("GET", Some("other.test"), "/anything", "alice", 200),
        ("GET", None, "/old/page", "alice", 403),
        ("GET", None, "/old/page", "anon", 403),
        // unmatched: the default (authenticated)
        ("GET", None, "/elsewhere", "vic", 200),
        ("GET", None, "/elsewhere", "anon", 401),
    ];
    let mut failures = Vec::new();
    for &(method, host, path, who, want) in table {
        let (got, body) = w.proxied(method, host, path, who).await;
        if got != want {
            failures.push(format!(
                "proxied {method} {host:?} {path} as {who}: {got}, want {want}: {body}"
            ));
        }
        let got = w.checked(method, host, path, who).await;
        if got != want {
            failures.push(format!(
                "forward-auth {method} {host:?} {path} as {who}: {got}, want {want}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_403_says_which_route_and_what_it_needs() {
    let w = world("authenticated").await;
    let (status, body) = w.proxied("GET", None, "/admin", "vic").await;
    assert_eq!(status, 403);
    let v: Value = serde_json::from_str(&body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("admin console") && msg.contains("role admin"),
        "{msg}"
    );
    assert!(v["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let (_, body) = w.proxied("GET", None, "/internal", "vic").await;
    assert!(body.contains("contractor.test"), "{body}");
}

#[tokio::test]
async fn route_headers_and_audience() {
    let w = world("authenticated").await;
    let r = client()
        .get(w.sidecar.url("/api/orders"))
        .header("cookie", w.cookie("vic").unwrap())
        .header("x-debug", "1")
        .header("x-route", "forged")
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert!(header_values(&echo, "x-debug").is_empty());
    assert_eq!(header_values(&echo, "x-route"), ["api"]);
    let origin = w.sidecar.url("");
    let token = header_values(&echo, "x-sidegate-assertion").remove(0);
    let v = crate::support::op::verify_with_jose(
        &w.sidecar.url("/.sidegate/jwks.json"),
        &token,
        &origin,
        "https://api.example",
    )
    .await;
    assert_eq!(
        v["ok"], true,
        "the api route's assertion has its own audience: {v}"
    );
    // Elsewhere the default audience, from the same session.
    let echo: Value = client()
        .get(w.sidecar.url("/elsewhere"))
        .header("cookie", w.cookie("vic").unwrap())
        .header("x-debug", "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        header_values(&echo, "x-debug"),
        ["1"],
        "only the api route strips it"
    );
    let token = header_values(&echo, "x-sidegate-assertion").remove(0);
    let v = crate::support::op::verify_with_jose(
        &w.sidecar.url("/.sidegate/jwks.json"),
        &token,
        &origin,
        &origin,
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn default_deny_closes_everything_no_route_opens() {
    let w = world("deny").await;
    for (path, who, want) in [
        ("/elsewhere", "alice", 403),
        ("/elsewhere", "anon", 403),
        ("/healthz", "anon", 200),
        ("/admin", "alice", 200),
        ("/finance", "vic", 200),
    ] {
        assert_eq!(
            w.proxied("GET", None, path, who).await.0,
            want,
            "{path} as {who}"
        );
        assert_eq!(
            w.checked("GET", None, path, who).await,
            want,
            "forward-auth {path} as {who}"
        );
    }
    // An unknown original path (no X-Original-URI) is refused when routes restrict access.
    let r = client()
        .get(w.sidecar.url("/.sidegate/auth"))
        .header("cookie", w.cookie("alice").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
