//! End-to-end logins against the real `oidc-provider`: identity headers and a verifiable
//! assertion reach the app; logout; API 401 vs browser 302; replayed and forged callbacks.

use crate::support::browser::Browser;
use crate::support::op::{verify_with_jose, Op};
use crate::support::upstream::{header_values, Upstream};
use crate::support::{client, config_text, load, Bound, Keys, Sidecar};

struct World {
    sidecar: Sidecar,
    upstream: Upstream,
    op_issuer: String,
    _op: Op,
    _keys: Keys,
}

async fn world(extra: &[(&str, &str)]) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let op = Op::start(&format!("{}/.sidegate/oidc/callback", bound.url())).await;
    let keys = Keys::new();
    let cfg = load(
        &config_text(&bound.url(), &upstream.url(), &op.issuer, extra),
        &keys,
    );
    let sidecar = Sidecar::start(bound, cfg);
    World {
        sidecar,
        upstream,
        op_issuer: op.issuer.clone(),
        _op: op,
        _keys: keys,
    }
}

#[tokio::test]
async fn full_login_forwards_identity_and_a_verifiable_assertion() {
    let w = world(&[]).await;
    let mut b = Browser::new();
    let page = b
        .navigate(&w.sidecar.url("/whoami?x=1"), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200, "final page {}: {}", page.url, page.body);
    assert_eq!(
        page.url,
        w.sidecar.url("/whoami?x=1"),
        "login returns to the page first asked for"
    );
    let echo: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(echo["path"], "/whoami?x=1");
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["alice"]);
    assert_eq!(
        header_values(&echo, "x-sidegate-email"),
        ["alice@example.test"]
    );
    assert_eq!(header_values(&echo, "x-sidegate-role"), ["admin"]);
    assert_eq!(header_values(&echo, "x-sidegate-teams"), ["admins,devs"]);
    // sidegate's own cookies never reach the app.
    for c in header_values(&echo, "cookie") {
        assert!(
            !c.contains("_sidegate"),
            "sidegate cookie leaked upstream: {c}"
        );
    }
    let assertion = header_values(&echo, "x-sidegate-assertion")
        .pop()
        .expect("assertion header");
    let public = format!("http://{}", w.sidecar.addr);
    let v = verify_with_jose(
        &w.sidecar.url("/.sidegate/jwks.json"),
        &assertion,
        &public,
        &public,
    )
    .await;
    assert_eq!(v["ok"], true, "jose rejected the assertion: {v}");
    assert_eq!(v["payload"]["user"], "alice");
    assert_eq!(v["payload"]["role"], "admin");
    assert_eq!(v["payload"]["teams"], serde_json::json!(["admins", "devs"]));
    assert_eq!(v["header"]["alg"], "ES256");
    assert_eq!(v["payload"]["sub"], "alice");

    // The session cookie is HttpOnly and SameSite=Lax.
    let info = client()
        .get(w.sidecar.url("/.sidegate/userinfo"))
        .header("cookie", b.cookie_header(&public))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    let info: serde_json::Value = info.json().await.unwrap();
    assert_eq!(info["user"], "alice");
    assert!(info.get("id_token").is_none() && info.get("access_token").is_none());

    // A second request reuses the cached assertion (no signing per request).
    let again: serde_json::Value = client()
        .get(w.sidecar.url("/again"))
        .header("cookie", b.cookie_header(&public))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&again, "x-sidegate-assertion"), [assertion]);

    // Logout clears the session here and sends the browser on to the provider's
    // end_session_endpoint (RP-initiated logout), which comes back to our logout page.
    let out = b
        .request(
            reqwest::Method::GET,
            &w.sidecar.url("/.sidegate/logout"),
            None,
        )
        .await;
    assert_eq!(out.status(), 302);
    let end = out.headers()["location"].to_str().unwrap().to_string();
    assert!(end.starts_with(&w.op_issuer), "{end}");
    assert!(
        end.contains("id_token_hint=ey"),
        "the ID token goes along as the hint: {end}"
    );
    let back: String =
        url::form_urlencoded::byte_serialize(w.sidecar.url("/.sidegate/logout").as_bytes())
            .collect();
    assert!(
        end.contains(&format!("post_logout_redirect_uri={back}"))
            && end.contains("client_id=sidegate"),
        "{end}"
    );
    let after = b
        .request(reqwest::Method::GET, &w.sidecar.url("/whoami"), None)
        .await;
    assert_eq!(
        after.status(),
        302,
        "after logout the browser must log in again"
    );
    assert!(w.upstream.hits.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn role_outside_the_allow_list_falls_back_to_the_default() {
    let w = world(&[]).await;
    let mut b = Browser::new();
    let page = b.navigate(&w.sidecar.url("/"), "dave", "dave-pw").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let echo: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(
        header_values(&echo, "x-sidegate-role"),
        ["viewer"],
        "superuser is not an allowed role"
    );
    assert_eq!(header_values(&echo, "x-sidegate-teams"), ["ops"]);
}

#[tokio::test]
async fn email_domain_restriction_denies_other_domains_and_unverified_email() {
    let w = world(&[("identity", "allowed_email_domains = [\"example.test\"]")]).await;
    let page = Browser::new()
        .navigate(&w.sidecar.url("/"), "dave", "dave-pw")
        .await;
    assert_eq!(page.status, 403, "dave@other.test must be refused");
    let page = Browser::new()
        .navigate(&w.sidecar.url("/"), "carol", "carol-pw")
        .await;
    assert_eq!(page.status, 403, "carol's email is not verified");
    let page = Browser::new()
        .navigate(&w.sidecar.url("/"), "bob", "bob-pw")
        .await;
    assert_eq!(page.status, 200, "bob@example.test is allowed");
    assert_eq!(
        w.upstream.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "denied users never reach the app"
    );
}

#[tokio::test]
async fn replayed_callback_is_refused() {
    let w = world(&[]).await;
    let mut b = Browser::new();
    let page = b.navigate(&w.sidecar.url("/"), "bob", "bob-pw").await;
    assert_eq!(page.status, 200);
    let callback = b
        .visited
        .iter()
        .find(|u| u.contains("/.sidegate/oidc/callback"))
        .unwrap()
        .clone();
    let cookie = b.callback_cookie.clone().unwrap();
    let replay = client()
        .get(&callback)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        replay.status(),
        400,
        "a replayed callback must not log anyone in"
    );
    assert!(replay
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("_sidegate=v1")));
}

#[tokio::test]
async fn callback_without_its_login_cookie_or_with_a_wrong_state_is_refused() {
    let w = world(&[]).await;
    let mut b = Browser::new();
    // Start a login, then present a callback the browser did not start.
    let start = b
        .request(reqwest::Method::GET, &w.sidecar.url("/"), None)
        .await;
    assert_eq!(start.status(), 302);
    let cookie = b.cookie_header(&w.sidecar.url("/"));
    for query in [
        "code=abc",
        "code=abc&state=forged-state-value",
        "state=&code=abc",
    ] {
        let r = client()
            .get(w.sidecar.url(&format!("/.sidegate/oidc/callback?{query}")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "callback ?{query} must be refused");
    }
    // The real state, but from a browser without the login cookie (login CSRF).
    let loc = start.headers().get("location").unwrap().to_str().unwrap();
    let state = url::Url::parse(loc)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    let r = client()
        .get(
            w.sidecar
                .url(&format!("/.sidegate/oidc/callback?code=abc&state={state}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn api_requests_get_401_and_browsers_get_302() {
    let w = world(&[]).await;
    let api = client()
        .get(w.sidecar.url("/api/items"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    assert!(api.headers().get("www-authenticate").is_some());
    let post = client()
        .post(w.sidecar.url("/form"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401, "non-GET requests are never redirected");
    let nav = client()
        .get(w.sidecar.url("/page"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(nav.status(), 302);
    let loc = nav.headers().get("location").unwrap().to_str().unwrap();
    let q: std::collections::HashMap<_, _> = url::Url::parse(loc)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q.contains_key("nonce") && q.contains_key("state"));
    let login_cookie = nav
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .find(|c| c.starts_with("_sidegate_login_"))
        .unwrap();
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Lax"),
        "{login_cookie}"
    );
    assert_eq!(w.upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn userinfo_call_at_login_merges_claims_with_matching_sub() {
    let w = world(&[("oidc", "userinfo = true")]).await;
    let page = Browser::new()
        .navigate(&w.sidecar.url("/"), "bob", "bob-pw")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let echo: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["bob"]);
    assert_eq!(header_values(&echo, "x-sidegate-role"), ["developer"]);
}

#[tokio::test]
async fn extra_claims_reach_the_app_typed_in_the_assertion_and_as_headers() {
    let w = world(&[
        (
            "identity",
            "[[identity.extra]]\nname = \"display_name\"\nclaim = \"name\"\nheader = \"X-Sidegate-Name\"\n\
             [[identity.extra]]\nname = \"email_verified\"\n",
        ),
    ])
    .await;
    let mut b = Browser::new();
    let page = b.navigate(&w.sidecar.url("/x"), "alice", "alice-pw").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let echo: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-name"), ["Alice Admin"]);
    let assertion = header_values(&echo, "x-sidegate-assertion").remove(0);
    let origin = w.sidecar.url("");
    let v = verify_with_jose(
        &w.sidecar.url("/.sidegate/jwks.json"),
        &assertion,
        &origin,
        &origin,
    )
    .await;
    assert_eq!(v["payload"]["display_name"], "Alice Admin", "{v}");
    assert_eq!(
        v["payload"]["email_verified"], true,
        "the type is kept: {v}"
    );
    // The session carries them: the next request, from the cookie alone, has them too, and a
    // client's own copy of the extra header is stripped.
    let cookie = b.cookie_header(&w.sidecar.url("/"));
    let echo: serde_json::Value = client()
        .get(w.sidecar.url("/y"))
        .header("cookie", cookie)
        .header("x-sidegate-name", "Mallory")
        .header("x_sidegate_name", "Mallory")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-name"), ["Alice Admin"]);
    assert!(header_values(&echo, "x_sidegate_name").is_empty());
}

#[tokio::test]
async fn check_config_online_verifies_the_provider_and_says_what_to_register() {
    let op = Op::start_with(
        "https://app.example.com/.sidegate/oidc/callback",
        &[(
            "OP_BACKCHANNEL_LOGOUT_URI",
            "https://app.example.com/.sidegate/oidc/backchannel-logout",
        )],
    )
    .await;
    let keys = Keys::new();
    let run = |issuer: String| {
        let text = config_text(
            "https://app.example.com",
            "http://127.0.0.1:8080",
            &issuer,
            &[],
        );
        let path = keys.path().join(format!("online-{}.toml", issuer.len()));
        std::fs::write(&path, text).unwrap();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_sidegate"))
                .args(["check-config", "--online", "--config"])
                .arg(&path)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(op.issuer.clone()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok    discovery and keys load",
        "register  redirect URI: https://app.example.com/.sidegate/oidc/callback",
        "register  post-logout redirect URI: https://app.example.com/.sidegate/logout",
        "register  back-channel logout URI: https://app.example.com/.sidegate/oidc/backchannel-logout",
        "ok    clock within",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    // An issuer nothing answers on: a FAIL line with the fix, and a non-zero exit.
    let out = run(crate::support::DEAD_ISSUER.to_string()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  discovery"), "{text}");
}
