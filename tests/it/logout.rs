//! Logout that really logs out, against the real `oidc-provider`: RP-initiated logout
//! through the provider's end_session_endpoint and back; back-channel logout (the provider
//! POSTs a signed logout token) ending a session whose cookie the browser still holds;
//! front-channel logout (the provider's iframe with `iss` and `sid`) doing the same.

use crate::support::browser::{parse_form, Browser};
use crate::support::op::Op;
use crate::support::upstream::Upstream;
use crate::support::{client, config_text, load, Bound, Keys, Sidecar};

struct World {
    sidecar: Sidecar,
    op: Op,
    _upstream: Upstream,
    _keys: Keys,
}

async fn world(op_env: &[(&str, &str)]) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let base = bound.url();
    let mut env: Vec<(String, String)> = op_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.replace("{sidegate}", &base)))
        .collect();
    env.push((
        "OP_POST_LOGOUT_REDIRECT_URIS".into(),
        format!("{base}/.sidegate/logout"),
    ));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let op = Op::start_with(&format!("{base}/.sidegate/oidc/callback"), &env_refs).await;
    let keys = Keys::new();
    let cfg = load(&config_text(&base, &upstream.url(), &op.issuer, &[]), &keys);
    let sidecar = Sidecar::start(bound, cfg);
    World {
        sidecar,
        op,
        _upstream: upstream,
        _keys: keys,
    }
}

impl World {
    async fn logged_in(&self, user: &str) -> Browser {
        let mut b = Browser::new();
        let page = b
            .navigate(&self.sidecar.url("/app"), user, &format!("{user}-pw"))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        b
    }

    /// The status a protected API call gets with this browser's cookies.
    async fn status(&self, b: &Browser) -> u16 {
        client()
            .get(self.sidecar.url("/api/me"))
            .header("cookie", b.cookie_header(&self.sidecar.url("/")))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_provider_session_and_comes_back_to_rd() {
    let w = world(&[]).await;
    let mut b = w.logged_in("alice").await;
    let page = b
        .navigate(
            &w.sidecar.url("/.sidegate/logout?rd=%2Fpublic%2Fbye"),
            "alice",
            "alice-pw",
        )
        .await;
    assert_eq!(
        page.url,
        w.sidecar.url("/public/bye"),
        "visited {:?}",
        b.visited
    );
    assert!(
        b.visited
            .iter()
            .any(|u| u.starts_with(&format!("{}/session/end", w.op.issuer))),
        "the provider's end_session_endpoint was visited: {:?}",
        b.visited
    );
    assert!(
        b.visited
            .iter()
            .any(|u| u.starts_with(&w.sidecar.url("/.sidegate/logout?state="))),
        "the provider sent the browser back with rd as state: {:?}",
        b.visited
    );
    assert_eq!(w.status(&b).await, 401, "the session is gone here");
    // And at the provider: the next login asks for the password again.
    let before = b.visited.len();
    let page = b
        .navigate(&w.sidecar.url("/app"), "alice", "alice-pw")
        .await;
    assert_eq!(page.status, 200);
    assert!(
        b.visited[before..]
            .iter()
            .any(|u| u.contains("/interaction/")),
        "the provider session ended too: {:?}",
        &b.visited[before..]
    );
    // A return address off the allow-list is refused before anything changes.
    let r = b
        .request(
            reqwest::Method::GET,
            &w.sidecar
                .url("/.sidegate/logout?rd=https%3A%2F%2Fevil.test%2F"),
            None,
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(w.status(&b).await, 200, "a refused logout changes nothing");
}

#[tokio::test]
async fn back_channel_logout_ends_a_session_the_browser_still_holds() {
    let w = world(&[
        (
            "OP_BACKCHANNEL_LOGOUT_URI",
            "{sidegate}/.sidegate/oidc/backchannel-logout",
        ),
        ("OP_TEST_ENDPOINTS", "1"),
    ])
    .await;
    let alice = w.logged_in("alice").await;
    let bob = w.logged_in("bob").await;
    assert_eq!(w.status(&alice).await, 200);
    // The provider ends alice's sessions and POSTs a logout token for each to sidegate.
    let r: serde_json::Value = client()
        .post(format!("{}/test/end-sessions?sub=alice", w.op.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        r["backchannel"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|x| x["ok"] == true)),
        "{r}"
    );
    assert_eq!(
        w.status(&alice).await,
        401,
        "alice's cookie is refused after the provider's logout"
    );
    assert_eq!(w.status(&bob).await, 200, "bob's session is untouched");

    // Bad logout tokens are refused with 400 and end nothing.
    for body in [
        "logout_token=not-a-jwt",
        "nothing=here",
        "logout_token=eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
    ] {
        let r = client()
            .post(w.sidecar.url("/.sidegate/oidc/backchannel-logout"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let r = client()
        .get(w.sidecar.url("/.sidegate/oidc/backchannel-logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let big = format!("logout_token={}", "a".repeat(100_000));
    let r = client()
        .post(w.sidecar.url("/.sidegate/oidc/backchannel-logout"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(w.status(&bob).await, 200);
    // A new login after the logout is a new session, and works.
    let alice_again = w.logged_in("alice").await;
    assert_eq!(w.status(&alice_again).await, 200);
}

#[tokio::test]
async fn front_channel_logout_ends_the_session_named_by_iss_and_sid() {
    let w = world(&[(
        "OP_FRONTCHANNEL_LOGOUT_URI",
        "{sidegate}/.sidegate/oidc/frontchannel-logout",
    )])
    .await;
    let mut alice = w.logged_in("alice").await;
    let bob = w.logged_in("bob").await;
    // alice signs out at the provider itself; its page embeds our front-channel iframe.
    let end = format!("{}/session/end", w.op.issuer);
    let r = alice.request(reqwest::Method::GET, &end, None).await;
    let page = r.text().await.unwrap();
    let form = parse_form(&page).expect("the provider's logout confirmation form");
    let action = url::Url::parse(&end)
        .unwrap()
        .join(&form.action)
        .unwrap()
        .to_string();
    let r = alice
        .request(reqwest::Method::POST, &action, Some(&form.fields))
        .await;
    let page = r.text().await.unwrap();
    let src = page
        .split("<iframe")
        .nth(1)
        .and_then(|f| f.split("src=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no front-channel iframe in the provider's page: {page}"))
        .replace("&amp;", "&");
    assert!(
        src.starts_with(&w.sidecar.url("/.sidegate/oidc/frontchannel-logout")),
        "{src}"
    );
    assert_eq!(
        w.status(&alice).await,
        200,
        "not yet: the iframe has not loaded"
    );
    // The iframe loads cross-site: no cookies, only iss and sid.
    let r = client().get(&src).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(w.status(&alice).await, 401, "alice's session ended");
    assert_eq!(w.status(&bob).await, 200, "bob's did not");
    // Without both parameters, or for another issuer, nothing happens.
    for q in [
        "",
        "?iss=x",
        "?sid=y",
        "?iss=http%3A%2F%2F127.0.0.1%3A9&sid=y",
    ] {
        let r = client()
            .get(
                w.sidecar
                    .url(&format!("/.sidegate/oidc/frontchannel-logout{q}")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }
}
