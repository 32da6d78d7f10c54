//! Several OpenID providers in one sidegate: two real `oidc-provider` instances, the chooser
//! page, selection by host and by email domain (home-realm discovery with `login_hint`),
//! sessions that remember their IdP, and a policy route that requires one.

use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::op::{verify_with_jose, Op};
use crate::support::upstream::{header_values, Upstream};
use crate::support::{config_text, load, Bound, Keys, Sidecar};

struct World {
    port: u16,
    corp: Op,
    partner: Op,
    _sidecar: Sidecar,
    _upstream: Upstream,
    _keys: Keys,
}

fn url(port: u16, host: &str, path: &str) -> String {
    format!("http://{host}.apps.test:{port}{path}")
}

async fn world() -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let port = bound.addr.port();
    let callback = url(port, "auth", "/.sidegate/oidc/callback");
    let corp = Op::start(&callback).await;
    let partner = Op::start(&callback).await;
    let keys = Keys::new();
    let allowed = format!("allowed_redirect_hosts = [\"*.apps.test:{port}\"]");
    let text = config_text(
        &url(port, "auth", ""),
        &upstream.url(),
        &corp.issuer,
        &[
            ("oidc", "name = \"corp\""),
            ("session", "cookie_domain = \"apps.test\""),
            ("access", &allowed),
        ],
    ) + &format!(
        r#"
[oidc.providers.partner]
issuer = "{partner}"
client_id = "sidegate"
client_secret_file = "client-secret"
scopes = ["openid", "email", "profile", "roles"]

[login]
chooser = true
[[login.rules]]
provider = "partner"
hosts = ["partner.apps.test"]
[[login.rules]]
provider = "partner"
email_domains = ["partner.test"]

[[policy.routes]]
name = "corp intranet"
paths = ["/corp"]
allow = [{{ idps = ["corp"] }}]
"#,
        partner = partner.issuer
    );
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    World {
        port,
        corp,
        partner,
        _sidecar: sidecar,
        _upstream: upstream,
        _keys: keys,
    }
}

fn browser(port: u16) -> Browser {
    let mut c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    for h in ["auth", "app", "partner"] {
        c = c.resolve(&format!("{h}.apps.test"), ([127, 0, 0, 1], port).into());
    }
    Browser::with_client(c.build().unwrap())
}

async fn idp_of(w: &World, page_body: &str) -> String {
    let echo: Value = serde_json::from_str(page_body).unwrap();
    let token = header_values(&echo, "x-sidegate-assertion").remove(0);
    let origin = url(w.port, "auth", "");
    let jwks = format!("http://127.0.0.1:{}/.sidegate/jwks.json", w.port);
    let v = verify_with_jose(&jwks, &token, &origin, &origin).await;
    assert_eq!(v["ok"], true, "{v}");
    v["payload"]["idp"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_chooser_lists_every_provider_and_each_link_logs_in_there() {
    let w = world().await;
    let mut b = browser(w.port);
    let r = b
        .request(reqwest::Method::GET, &url(w.port, "app", "/report"), None)
        .await;
    assert_eq!(
        r.status(),
        200,
        "no rule matches app.apps.test: the chooser"
    );
    let page = r.text().await.unwrap();
    for name in ["corp", "partner"] {
        assert!(page.contains(&format!("provider={name}")), "{page}");
    }
    assert!(
        page.contains("name=\"login_hint\""),
        "the email field for domain rules: {page}"
    );
    // Follow the partner link (as a browser would).
    let href = page
        .split("href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().replace("&amp;", "&"))
        .find(|h| h.contains("provider=partner"))
        .unwrap();
    let page = b
        .navigate(&url(w.port, "app", &href), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200, "{}: {}", page.url, page.body);
    assert_eq!(page.url, url(w.port, "app", "/report"));
    assert_eq!(
        idp_of(&w, &page.body).await,
        w.partner.issuer,
        "the session records the partner IdP"
    );
    // An unknown provider name is a clear 404, not a fallback.
    let r = b
        .request(
            reqwest::Method::GET,
            &url(w.port, "auth", "/.sidegate/start?provider=nope"),
            None,
        )
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn host_and_email_domain_rules_pick_the_provider() {
    let w = world().await;
    // Host rule: partner.apps.test goes straight to the partner IdP, no chooser.
    let mut b = browser(w.port);
    let page = b
        .navigate(&url(w.port, "partner", "/x"), "bob", "bob-pw")
        .await;
    assert_eq!(page.status, 200, "{}: {}", page.url, page.body);
    assert!(
        b.visited.iter().any(|u| u.starts_with(&w.partner.issuer)),
        "{:?}",
        b.visited
    );
    assert!(
        !b.visited.iter().any(|u| u.starts_with(&w.corp.issuer)),
        "{:?}",
        b.visited
    );
    assert_eq!(idp_of(&w, &page.body).await, w.partner.issuer);

    // Email domain rule: the chooser's email field sends login_hint; it is passed on.
    let mut b = browser(w.port);
    let r = b
        .request(
            reqwest::Method::GET,
            &url(
                w.port,
                "auth",
                "/.sidegate/start?login_hint=carol%40Partner.test&rd=%2F",
            ),
            None,
        )
        .await;
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(loc.starts_with(&w.partner.issuer), "{loc}");
    assert!(loc.contains("login_hint=carol%40Partner.test"), "{loc}");
    // Another domain: no rule, so the chooser.
    let r = b
        .request(
            reqwest::Method::GET,
            &url(
                w.port,
                "auth",
                "/.sidegate/start?login_hint=dave%40corp.test&rd=%2F",
            ),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_route_can_require_the_idp_that_issued_the_session() {
    let w = world().await;
    let mut corp = browser(w.port);
    let page = corp
        .navigate(
            &url(
                w.port,
                "auth",
                "/.sidegate/start?provider=corp&rd=%2Fcorp%2Fwiki",
            ),
            "alice",
            "alice-pw",
        )
        .await;
    assert_eq!(page.status, 200, "{}: {}", page.url, page.body);
    assert_eq!(idp_of(&w, &page.body).await, w.corp.issuer);

    let mut partner = browser(w.port);
    let page = partner
        .navigate(&url(w.port, "partner", "/corp/wiki"), "alice", "alice-pw")
        .await;
    assert_eq!(
        page.status, 403,
        "a partner session may not use the corp route: {}",
        page.body
    );
    assert!(page.body.contains("corp intranet"), "{}", page.body);
}
