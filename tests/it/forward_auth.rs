//! `/.sidegate/auth` as the forward-auth target, with the exact header contracts of nginx
//! `auth_request`, Traefik `forwardAuth` and Envoy `ext_authz` (HTTP service), sent by this
//! test acting as the proxy (real nginx is in `nginx.rs`; Traefik and Envoy do not run
//! here). The trusted proxy is 127.0.0.1; "anyone else" connects from 127.0.0.2.

use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::Value;

use crate::support::upstream::{header_values, Upstream};
use crate::support::{
    client, config_text, load, session_cookie, Bound, Keys, Sidecar, DEAD_ISSUER,
};

struct World {
    sidecar: Sidecar,
    cookie: String,
    viewer: String,
    _upstream: Upstream,
}

async fn world(extra: &[(&str, &str)]) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let mut extra = extra.to_vec();
    extra.push(("server", "trusted_proxies = [\"127.0.0.1/32\"]"));
    extra.push(("access", "allowed_redirect_hosts = [\"*.apps.test\"]"));
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &extra);
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    let now = SystemTime::now();
    World {
        sidecar,
        cookie: session_cookie(&text, &keys, "alice", "admin", now),
        viewer: session_cookie(&text, &keys, "victor", "viewer", now),
        _upstream: upstream,
    }
}

fn from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

impl World {
    async fn check(&self, peer: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = from(peer).get(self.sidecar.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.unwrap()
    }
}

fn nginx<'a>(uri: &'a str, cookie: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-original-uri", uri),
        ("x-original-method", "GET"),
        ("x-forwarded-host", "app.apps.test"),
        ("x-forwarded-proto", "https"),
        ("cookie", cookie),
    ]
}

#[tokio::test]
async fn nginx_contract_allowed_unauthenticated_forbidden() {
    let w = world(&[]).await;
    // A valid session: 200 with every identity header for auth_request_set.
    let r = w
        .check(
            "127.0.0.1",
            "/.sidegate/auth",
            &nginx("/admin/x?y=1", &w.cookie),
        )
        .await;
    assert_eq!(r.status(), 200);
    for h in [
        "x-sidegate-user",
        "x-sidegate-email",
        "x-sidegate-role",
        "x-sidegate-teams",
        "x-sidegate-assertion",
    ] {
        assert!(r.headers().contains_key(h), "missing {h}");
    }
    assert_eq!(r.headers()["x-sidegate-user"], "alice");
    assert_eq!(r.headers()["cache-control"], "no-store");

    // No session: 401, never a redirect, with where to log in (the original URL as rd).
    let r = w
        .check("127.0.0.1", "/.sidegate/auth", &nginx("/admin/x?y=1", ""))
        .await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("location").is_none());
    let body: Value = r.json().await.unwrap();
    let login = body["login_url"].as_str().unwrap();
    assert!(
        login.ends_with("/.sidegate/start?rd=https%3A%2F%2Fapp.apps.test%2Fadmin%2Fx%3Fy%3D1"),
        "{login}"
    );
    // A browser navigation gets a page with the same link.
    let mut h = nginx("/admin", "");
    h.push(("accept", "text/html"));
    let r = w.check("127.0.0.1", "/.sidegate/auth", &h).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("/.sidegate/start?rd="));

    // A forged cookie: 401 as well.
    let r = w
        .check(
            "127.0.0.1",
            "/.sidegate/auth",
            &nginx("/admin", "sidegate_0=AAAA"),
        )
        .await;
    assert_eq!(r.status(), 401);

    // Narrowing in the auth URL: the viewer is forbidden, the admin allowed.
    let url = "/.sidegate/auth?allowed_roles=admin";
    assert_eq!(
        w.check("127.0.0.1", url, &nginx("/admin", &w.viewer))
            .await
            .status(),
        403
    );
    assert_eq!(
        w.check("127.0.0.1", url, &nginx("/admin", &w.cookie))
            .await
            .status(),
        200
    );
    let url = "/.sidegate/auth?allowed_teams=finance";
    assert_eq!(
        w.check("127.0.0.1", url, &nginx("/admin", &w.cookie))
            .await
            .status(),
        403
    );
    let url = "/.sidegate/auth?allowed_email_domains=example.test";
    assert_eq!(
        w.check("127.0.0.1", url, &nginx("/admin", &w.cookie))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn public_paths_follow_the_trusted_original_uri_only() {
    let w = world(&[]).await;
    // `/public/` is public: no session needed, no identity given.
    let r = w
        .check(
            "127.0.0.1",
            "/.sidegate/auth",
            &nginx("/public/logo.png", ""),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-sidegate-user").is_none());

    // The same claim from an untrusted peer is ignored: the path is unknown, so a session is needed.
    let r = w
        .check(
            "127.0.0.2",
            "/.sidegate/auth",
            &nginx("/public/logo.png", ""),
        )
        .await;
    assert_eq!(r.status(), 401);
    for spoof in [
        ("x-forwarded-uri", "/public/x"),
        ("user-agent", "kube-probe/1.30"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
    ] {
        let r = w.check("127.0.0.2", "/.sidegate/auth", &[spoof]).await;
        assert_eq!(r.status(), 401, "{spoof:?}");
    }
    // Envoy-style appended path from an untrusted peer: ignored too.
    let r = w.check("127.0.0.2", "/.sidegate/auth/public/x", &[]).await;
    assert_eq!(r.status(), 401);
    // A trusted peer that says nothing: unknown path, session needed.
    assert_eq!(
        w.check("127.0.0.1", "/.sidegate/auth", &[]).await.status(),
        401
    );
}

#[tokio::test]
async fn the_original_path_goes_through_the_one_normalizer() {
    let w = world(&[]).await;
    // Paths that only look public: decided on the normalized form, and never public unless
    // already canonical.
    for uri in [
        "/public/..%2fadmin",
        "/public/../admin",
        "/public%2f..%2fadmin",
        "//public/x/../../admin",
        "/public;x=1/../admin",
        "/public\\..\\admin",
        "/PUBLIC/x",
        "/public/%2e%2e/admin",
    ] {
        let r = w
            .check("127.0.0.1", "/.sidegate/auth", &nginx(uri, ""))
            .await;
        assert_eq!(r.status(), 401, "{uri} must need a session");
    }
    // Paths no server should interpret: refused outright (403 for the subrequest).
    for uri in ["/%2e%2e/etc/passwd", "/a%00b", "/a%zz", "/%252e%252e/admin"] {
        let r = w
            .check("127.0.0.1", "/.sidegate/auth", &nginx(uri, &w.cookie))
            .await;
        assert_eq!(r.status(), 403, "{uri}");
        assert!(r.headers().get("x-sidegate-user").is_none());
    }
    // Query and fragment never change the decision.
    let r = w
        .check(
            "127.0.0.1",
            "/.sidegate/auth",
            &nginx("/public/x?next=/admin#/admin", ""),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Own endpoints pass (the proxy may route them through auth too).
    let r = w
        .check(
            "127.0.0.1",
            "/.sidegate/auth",
            &nginx("/.sidegate/oidc/callback?code=x", ""),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn traefik_and_envoy_contracts() {
    let w = world(&[]).await;
    // Traefik forwardAuth: GET with X-Forwarded-Method/-Proto/-Host/-Uri, original headers copied.
    let traefik = |uri: &'static str, cookie: &str| {
        vec![
            ("x-forwarded-method", "POST".to_string()),
            ("x-forwarded-proto", "https".to_string()),
            ("x-forwarded-host", "app.apps.test".to_string()),
            ("x-forwarded-uri", uri.to_string()),
            ("x-forwarded-for", "203.0.113.9".to_string()),
            ("cookie", cookie.to_string()),
        ]
    };
    let send = |peer: &'static str, path: &'static str, h: Vec<(&'static str, String)>| {
        let url = w.sidecar.url(path);
        async move {
            let mut rb = from(peer).get(url);
            for (k, v) in h {
                rb = rb.header(k, v);
            }
            rb.send().await.unwrap()
        }
    };
    let r = send(
        "127.0.0.1",
        "/.sidegate/auth",
        traefik("/api/orders", &w.cookie),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sidegate-role"], "admin");
    let r = send("127.0.0.1", "/.sidegate/auth", traefik("/api/orders", "")).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["login_url"]
        .as_str()
        .unwrap()
        .contains("rd=https%3A%2F%2Fapp.apps.test%2Fapi%2Forders"));
    let r = send("127.0.0.1", "/.sidegate/auth", traefik("/public/x", "")).await;
    assert_eq!(r.status(), 200);

    // Envoy ext_authz (HTTP service, path_prefix /.sidegate/auth): the original method and
    // path arrive as the check request's own, with the allowed headers (cookie) copied.
    let envoy = |cookie: &str| {
        vec![
            ("host", "app.apps.test".to_string()),
            ("cookie", cookie.to_string()),
        ]
    };
    let r = send(
        "127.0.0.1",
        "/.sidegate/auth/api/orders?id=7",
        envoy(&w.cookie),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sidegate-user"], "alice");
    let r = send("127.0.0.1", "/.sidegate/auth/api/orders", envoy("")).await;
    assert_eq!(r.status(), 401);
    let r = send("127.0.0.1", "/.sidegate/auth/public/logo.png", envoy("")).await;
    assert_eq!(r.status(), 200);
    let r = send("127.0.0.1", "/.sidegate/auth/public/..%2fapi", envoy("")).await;
    assert_eq!(r.status(), 401);
    // Envoy's query is the original request's: it cannot narrow (or widen) access.
    let r = send(
        "127.0.0.1",
        "/.sidegate/auth/api?allowed_roles=nobody",
        envoy(&w.cookie),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn compat_assertion_headers_carry_the_same_token_and_are_always_stripped() {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(
        &bound.url(),
        &upstream.url(),
        DEAD_ISSUER,
        &[("assertion", "compat_headers = [\"pomerium\", \"iap\"]")],
    );
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    let cookie = session_cookie(&text, &keys, "alice", "admin", SystemTime::now());
    let echo: Value = client()
        .get(sidecar.url("/app"))
        .header("cookie", &cookie)
        .header("x-pomerium-jwt-assertion", "forged")
        .header("X-Goog-Iap-Jwt-Assertion", "forged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ours = header_values(&echo, "x-sidegate-assertion");
    assert_eq!(ours.len(), 1);
    assert_eq!(header_values(&echo, "x-pomerium-jwt-assertion"), ours);
    assert_eq!(header_values(&echo, "x-goog-iap-jwt-assertion"), ours);
    let origin = sidecar.url("");
    let v = crate::support::op::verify_with_jose(
        &sidecar.url("/.sidegate/jwks.json"),
        &ours[0],
        &origin,
        &origin,
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["payload"]["groups"],
        serde_json::json!(["devs", "ops"]),
        "Pomerium-shaped groups"
    );

    // Not enabled: client copies are still stripped, and none is added.
    let w = world(&[]).await;
    let echo: Value = client()
        .get(w.sidecar.url("/app"))
        .header("cookie", &w.cookie)
        .header("x-pomerium-jwt-assertion", "forged")
        .header("x_goog_iap_jwt_assertion", "forged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(header_values(&echo, "x-pomerium-jwt-assertion").is_empty());
    assert!(header_values(&echo, "x-goog-iap-jwt-assertion").is_empty());
    assert!(header_values(&echo, "x_goog_iap_jwt_assertion").is_empty());
}

#[tokio::test]
async fn proxied_requests_use_the_same_normalizer() {
    let w = world(&[]).await;
    // Refused paths: 400 before anything else, never forwarded.
    for p in ["/a%zz", "/a%00", "/%252e%252e/x"] {
        let r = client()
            .get(w.sidecar.url(p))
            .header("cookie", &w.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{p}");
    }
    // Look-alikes of the public prefix need a session.
    for p in [
        "/public/..%2fsecret",
        "/public/%2e%2e/secret",
        "/public;x/../secret",
    ] {
        let r = client()
            .get(w.sidecar.url(p))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{p}");
    }
    let r = client()
        .get(w.sidecar.url("/public/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Own endpoints are found through the normalizer as well.
    let r = client()
        .get(w.sidecar.url("/.sidegate//jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn one_sidegate_serves_several_apps_on_subdomains() {
    // auth.apps.test is sidegate's public_url; a.apps.test and b.apps.test are apps behind
    // it. All three names resolve to the same loopback listener for this client only.
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let port = bound.addr.port();
    let url = |host: &str, path: &str| format!("http://{host}.apps.test:{port}{path}");
    let op = crate::support::op::Op::start(&url("auth", "/.sidegate/oidc/callback")).await;
    let keys = Keys::new();
    // Return URLs keep their port, so the allow-list names it (443/80 need none).
    let allowed = format!("allowed_redirect_hosts = [\"*.apps.test:{port}\"]");
    let text = config_text(
        &url("auth", ""),
        &upstream.url(),
        &op.issuer,
        &[
            ("session", "cookie_domain = \"apps.test\""),
            ("access", &allowed),
        ],
    );
    let _sidecar = Sidecar::start(bound, load(&text, &keys));
    let mut c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    for h in ["auth", "a", "b"] {
        c = c.resolve(&format!("{h}.apps.test"), ([127, 0, 0, 1], port).into());
    }
    let mut b = crate::support::browser::Browser::with_client(c.build().unwrap());

    // A page on app a: login at auth.apps.test, back on a.apps.test, identity forwarded.
    let page = b
        .navigate(&url("a", "/dashboard?x=1"), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200, "{}: {}", page.url, page.body);
    assert_eq!(
        page.url,
        url("a", "/dashboard?x=1"),
        "back on the app first asked for"
    );
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["alice"]);
    assert!(
        b.visited
            .iter()
            .any(|u| u.starts_with(&url("auth", "/.sidegate/oidc/callback"))),
        "the callback went to the one public_url: {:?}",
        b.visited
    );

    // App b: the same session cookie (Domain=apps.test) is already good, no second login.
    let visited = b.visited.len();
    let page = b.navigate(&url("b", "/report"), "alice", "alice-pw").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        b.visited.len(),
        visited + 1,
        "no detour through the IdP: {:?}",
        &b.visited[visited..]
    );

    // The start endpoint returns to any allowed subdomain, and to nothing else.
    let r = b
        .request(
            reqwest::Method::GET,
            &url(
                "auth",
                &format!("/.sidegate/start?rd=http%3A%2F%2Fb.apps.test%3A{port}%2Fx"),
            ),
            None,
        )
        .await;
    assert_eq!(r.status(), 302);
    for rd in [
        "http%3A%2F%2Fevil.test%2F",
        "http%3A%2F%2Fapps.test.evil.test%2F",
        "%2F%2Fevil.test",
    ] {
        let r = b
            .request(
                reqwest::Method::GET,
                &url("auth", &format!("/.sidegate/start?rd={rd}")),
                None,
            )
            .await;
        assert_eq!(r.status(), 400, "{rd}");
    }
    // A Host outside the allow-list never becomes a return URL: the login comes back to the
    // same path on public_url instead.
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("evil.test", ([127, 0, 0, 1], port).into())
        .resolve("auth.apps.test", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let mut stranger = crate::support::browser::Browser::with_client(c);
    let page = stranger
        .navigate(&format!("http://evil.test:{port}/secret"), "bob", "bob-pw")
        .await;
    assert_eq!(
        page.url,
        url("auth", "/secret"),
        "visited {:?}",
        stranger.visited
    );
}
