//! Real nginx with the shipped `deploy/nginx/sidegate.conf` in front of the echo app, real
//! `oidc-provider` for the login, and sidegate run from the shipped
//! `deploy/nginx/sidegate.toml` (only addresses, the IdP and key paths replaced).

use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::nginx::{render_site, Nginx};
use crate::support::op::{verify_with_jose, Op};
use crate::support::upstream::{header_values, Upstream};
use crate::support::{client, load, Bound, Keys, Sidecar};

struct World {
    nginx: Nginx,
    upstream: Upstream,
    _sidecar: Sidecar,
    _op: Op,
    _keys: Keys,
}

async fn world() -> World {
    let repo = crate::support::repo();
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let listen = Nginx::pick_addr();
    let public = format!("http://{listen}");
    let op = Op::start(&format!("{public}/.sidegate/oidc/callback")).await;
    let keys = Keys::new();

    let shipped = std::fs::read_to_string(repo.join("deploy/nginx/sidegate.toml")).unwrap();
    let mut cfg: toml::Table = toml::from_str(&shipped).unwrap();
    assert!(
        !cfg.contains_key("upstream"),
        "the auth_request deployment has no [upstream]"
    );
    let set = |cfg: &mut toml::Table, section: &str, key: &str, v: toml::Value| {
        cfg.get_mut(section)
            .and_then(toml::Value::as_table_mut)
            .unwrap_or_else(|| panic!("deploy/nginx/sidegate.toml has no [{section}]"))
            .insert(key.into(), v);
    };
    let s = |v: &str| toml::Value::String(v.into());
    set(&mut cfg, "server", "public_url", s(&public));
    set(&mut cfg, "oidc", "issuer", s(&op.issuer));
    set(&mut cfg, "oidc", "client_id", s("sidegate"));
    set(&mut cfg, "oidc", "client_secret_file", s("client-secret"));
    set(
        &mut cfg,
        "oidc",
        "scopes",
        toml::Value::Array(["openid", "email", "profile", "roles"].map(s).to_vec()),
    );
    set(&mut cfg, "session", "secrets_file", s("cookie-secrets"));
    set(
        &mut cfg,
        "session",
        "cookie_secure",
        toml::Value::Boolean(false),
    );
    set(
        &mut cfg,
        "assertion",
        "signing_keys_file",
        s("assertion-key.pem"),
    );
    let text = toml::to_string(&cfg).unwrap();
    let sidecar_addr = bound.addr;
    let sidecar = Sidecar::start(bound, load(&text, &keys));

    let site = std::fs::read_to_string(repo.join("deploy/nginx/sidegate.conf")).unwrap();
    let nginx = Nginx::start(
        &render_site(&site, listen, sidecar_addr, upstream.addr),
        listen,
    )
    .await;
    World {
        nginx,
        upstream,
        _sidecar: sidecar,
        _op: op,
        _keys: keys,
    }
}

#[tokio::test]
async fn browser_login_through_nginx_reaches_the_app_with_identity() {
    let w = world().await;
    let mut b = Browser::new();
    let page = b
        .navigate(&w.nginx.url("/reports?q=1"), "alice", "alice-pw")
        .await;
    assert_eq!(
        page.status,
        200,
        "{}: {}\n{}",
        page.url,
        page.body,
        w.nginx.error_log()
    );
    assert_eq!(
        page.url,
        w.nginx.url("/reports?q=1"),
        "back on the page first asked for"
    );
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["alice"]);
    assert_eq!(header_values(&echo, "x-sidegate-role"), ["admin"]);
    assert_eq!(header_values(&echo, "x-sidegate-teams"), ["admins,devs"]);
    let assertion = header_values(&echo, "x-sidegate-assertion").remove(0);
    let origin = w.nginx.url("");
    let v = verify_with_jose(
        &w.nginx.url("/.sidegate/jwks.json"),
        &assertion,
        &origin,
        &origin,
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");

    // Spoofed identity and original-request headers from the client change nothing.
    let cookie = b.cookie_header(&w.nginx.url("/"));
    let echo: Value = client()
        .get(w.nginx.url("/reports"))
        .header("cookie", &cookie)
        .header("X-Sidegate-User", "mallory")
        .header("X_Sidegate_Role", "admin")
        .header("X-Sidegate-Assertion", "eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["alice"]);
    assert_eq!(header_values(&echo, "x-sidegate-assertion").len(), 1);
    assert!(!header_values(&echo, "x-sidegate-assertion")[0].starts_with("eyJhbGciOiJub25l"));
    assert!(header_values(&echo, "x_sidegate_role").is_empty());

    // bob is a developer: /admin/ (allowed_roles=admin) is forbidden to him.
    let mut bob = Browser::new();
    let page = bob
        .navigate(&w.nginx.url("/admin/users"), "bob", "bob-pw")
        .await;
    assert_eq!(page.status, 403, "{}: {}", page.url, page.body);
    let page = b
        .navigate(&w.nginx.url("/admin/users"), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200, "alice is an admin");
}

#[tokio::test]
async fn api_calls_get_401_and_spoofed_original_uris_do_nothing() {
    let w = world().await;
    let hits = || w.upstream.hits.load(std::sync::atomic::Ordering::SeqCst);
    let before = hits();
    // An API client without a session: 401, not a login redirect.
    let r = client()
        .get(w.nginx.url("/api/orders"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A browser without a session: redirected to sidegate's start, back to the same URL.
    let r = client()
        .get(w.nginx.url("/reports?q=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(loc.contains("/.sidegate/start?rd="), "{loc}");
    // The client claims the original request was a public path: nginx overwrites it.
    for (k, v) in [
        ("x-original-uri", "/healthz"),
        ("x-forwarded-uri", "/healthz"),
        ("x-original-url", "/healthz"),
        ("user-agent", "kube-probe/1.30"),
    ] {
        let r = client()
            .get(w.nginx.url("/api/orders"))
            .header("accept", "application/json")
            .header(k, v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{k}: {v}");
    }
    // The check endpoint itself is internal.
    let r = client()
        .get(w.nginx.url("/.sidegate/auth"))
        .header("x-original-uri", "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A path that normalizes elsewhere is decided on what nginx serves.
    let r = client()
        .get(w.nginx.url("/healthz/..%2fapi/orders"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(hits(), before, "nothing reached the app without a session");
    // The public path passes without a session.
    let r = client().get(w.nginx.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", w.nginx.error_log());
    let echo: Value = r.json().await.unwrap();
    assert!(header_values(&echo, "x-sidegate-user").is_empty());
}
