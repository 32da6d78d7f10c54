//! `sidegate dev` run as a user runs it: the built binary as a child process, scripted
//! sign-ins through the embedded development IdPs (OpenID Connect and SAML), and the echo
//! app's report checked (and the assertion verified again, independently, with jose against
//! sidegate's JWKS).

use std::time::Duration;

use reqwest::header::{ACCEPT, COOKIE, LOCATION};
use reqwest::Method;
use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::dev::{follow, sign_in, DevProcess};
use crate::support::op::verify_with_jose;
use crate::support::upstream::{header_values, Upstream};
use crate::support::{client, repo};
use sidegate::login::saml::redirect::{self, Kind};

const BANNER: &str = "DEVELOPMENT ONLY";

async fn echo_json(b: &Browser, url: &str) -> Value {
    client()
        .get(url)
        .header(ACCEPT, "application/json")
        .header(COOKIE, b.cookie_header(url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `href` of the link whose text is `text`.
fn link(body: &str, text: &str) -> String {
    let end = body
        .find(&format!("\">{text}</a>"))
        .unwrap_or_else(|| panic!("no link {text:?} in {body}"));
    let start = body[..end].rfind("href=\"").unwrap() + "href=\"".len();
    body[start..end].replace("&amp;", "&")
}

/// Where sidegate sends an unauthenticated browser (the IdP's authorize or SSO URL).
async fn challenge_location(dev: &DevProcess) -> url::Url {
    let r = client()
        .get(&dev.url)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    url::Url::parse(r.headers()[LOCATION].to_str().unwrap()).unwrap()
}

/// The assertion header as the echo app received it.
fn received_assertion(report: &Value) -> String {
    report["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-sidegate-assertion")
        .map(|h| h[1].as_str().unwrap().to_string())
        .expect("the echo app received the assertion")
}

#[tokio::test]
async fn typed_user_signs_in_and_the_echo_app_reports_a_verified_assertion() {
    let dev = DevProcess::start(&[]).await;
    assert!(dev.line.contains("alice (admin)"), "{}", dev.line);
    let mut b = Browser::new();
    let (picker, page) = sign_in(
        &mut b,
        &dev.url,
        &[
            ("user", "erin"),
            ("email", "erin@corp.test"),
            ("role", "developer"),
            ("teams", "alpha, beta"),
        ],
    )
    .await;
    assert!(picker.body.contains(BANNER), "picker has the banner");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(BANNER), "echo page has the banner");
    assert!(page.body.contains("Hello, erin"), "{}", page.body);
    assert!(
        page.body.contains("Verified against sidegate"),
        "{}",
        page.body
    );

    let report = echo_json(&b, &dev.url).await;
    assert_eq!(report["identity"]["user"], "erin");
    assert_eq!(report["identity"]["email"], "erin@corp.test");
    assert_eq!(report["identity"]["role"], "developer");
    assert_eq!(
        report["identity"]["teams"],
        serde_json::json!(["alpha", "beta"])
    );
    assert_eq!(report["assertion"]["status"], "verified", "{report:#}");
    let claims = &report["assertion"]["claims"];
    assert_eq!(claims["role"], "developer");
    assert_eq!(claims["teams"], serde_json::json!(["alpha", "beta"]));

    // Do not take the echo app's word for it: verify the header it received with jose.
    let origin = dev.url.trim_end_matches('/');
    let token = received_assertion(&report);
    let jwks = format!("{origin}/.sidegate/jwks.json");
    let v = verify_with_jose(&jwks, &token, origin, origin).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["payload"]["user"], "erin");
    assert_eq!(v["payload"]["role"], "developer");
}

#[tokio::test]
async fn demo_users_map_through_the_role_allow_list() {
    let dev = DevProcess::start(&[]).await;
    for (demo, role, teams) in [
        ("alice", "admin", serde_json::json!(["platform", "admins"])),
        // dave's IdP role `superuser` is not allowed: least-privilege default.
        ("dave", "viewer", serde_json::json!(["ops"])),
    ] {
        let mut b = Browser::new();
        let (_, page) = sign_in(&mut b, &dev.url, &[("demo", demo)]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let report = echo_json(&b, &dev.url).await;
        assert_eq!(report["identity"]["user"], demo);
        assert_eq!(report["identity"]["role"], role, "{report:#}");
        assert_eq!(report["assertion"]["claims"]["teams"], teams);
        assert_eq!(report["assertion"]["status"], "verified");
    }
    assert!(
        dev.log_text().contains("superuser"),
        "the fallback is logged with the refused value:\n{}",
        dev.log_text()
    );
}

#[tokio::test]
async fn logout_link_ends_the_session() {
    let dev = DevProcess::start(&[]).await;
    let mut b = Browser::new();
    let (_, page) = sign_in(&mut b, &dev.url, &[("demo", "bob")]).await;
    assert!(
        page.body.contains("/.sidegate/logout?rd=/"),
        "{}",
        page.body
    );
    let logout = format!("{}.sidegate/logout?rd=/", dev.url);
    let resp = b.request(Method::GET, &logout, None).await;
    let back = follow(&mut b, logout, resp).await;
    assert!(
        back.body.contains("Sign in as"),
        "after logout the app sends us to the IdP picker again: {} {}",
        back.url,
        back.body
    );
}

#[tokio::test]
async fn upstream_flag_protects_another_app() {
    let app = Upstream::start().await;
    let dev = DevProcess::start(&["--upstream", &app.url()]).await;
    assert!(dev.line.contains(&app.url()), "{}", dev.line);

    // Unauthenticated: nothing reaches the app, the browser goes to the dev IdP.
    let r = client()
        .get(format!("{}private", dev.url))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    let mut b = Browser::new();
    let start = format!("{}private", dev.url);
    let (_, page) = sign_in(&mut b, &start, &[("demo", "alice")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(echo["path"], "/private");
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["alice"]);
    assert_eq!(header_values(&echo, "x-sidegate-role"), ["admin"]);

    // A forged identity header from the client is stripped.
    let r: Value = client()
        .get(format!("{}x", dev.url))
        .header(COOKIE, b.cookie_header(&dev.url))
        .header("X-Sidegate-User", "mallory")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&r, "x-sidegate-user"), ["alice"]);
}

#[tokio::test]
async fn dev_idp_refuses_bad_requests() {
    let dev = DevProcess::start(&[]).await;
    let r = client()
        .get(&dev.url)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    let authorize = url::Url::parse(r.headers()[LOCATION].to_str().unwrap()).unwrap();
    let idp = authorize.origin().ascii_serialization();

    // An unregistered redirect_uri is refused on the IdP's own page, never redirected to.
    let mut evil = authorize.clone();
    let pairs: Vec<(String, String)> = authorize
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "redirect_uri" {
                "https://evil.example/cb".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    evil.query_pairs_mut().clear().extend_pairs(pairs);
    let r = client().get(evil.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("redirect_uri"));

    // The token endpoint wants the client's secret and a valid code.
    let r = client()
        .post(format!("{idp}/token"))
        .basic_auth("sidegate-dev", Some("wrong"))
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A stale picker transaction is refused.
    let r = client()
        .post(format!("{idp}/login"))
        .form(&[("tx", "not-a-transaction"), ("demo", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(BANNER) && body.contains("no longer valid"),
        "{body}"
    );
    // Userinfo without a token.
    let r = client()
        .get(format!("{idp}/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Inodes of the TCP sockets `pid` listens on, with their local addresses.
fn listening_sockets(pid: u32) -> Vec<String> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(i) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.insert(i.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is cols[1], st is cols[3] (0A = LISTEN), inode is cols[9].
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                out.push(cols[1].to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn every_listener_is_loopback_and_ctrl_c_stops_cleanly() {
    // sidegate, the echo app and one listener per development IdP.
    for (args, expected) in [(&["--protocol", "oidc"], 3), (&["--protocol", "saml"], 3)] {
        let dev = DevProcess::start(args).await;
        let sockets = listening_sockets(dev.child.id().unwrap());
        assert_eq!(sockets.len(), expected, "{args:?}: {sockets:?}");
        assert!(
            sockets.iter().all(|s| s.starts_with("0100007F:")),
            "{sockets:?}"
        );
    }
    let mut dev = DevProcess::start(&[]).await;
    let pid = dev.child.id().unwrap();
    let sockets = listening_sockets(pid);
    // The default runs both IdPs.
    assert_eq!(sockets.len(), 4, "{sockets:?}");
    for s in &sockets {
        assert!(s.starts_with("0100007F:"), "not 127.0.0.1: {s}");
    }
    // The log is read apart from the start-up line: under load it may lag behind it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dev.log_text().contains("dir=") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = dev.log_text();
    let dir = log
        .split("dir=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no state dir in the log:\n{log}"))
        .to_string();
    for file in ["assertion-key.pem", "client-secret", "saml-idp.xml"] {
        assert!(std::path::Path::new(&dir).join(file).exists(), "{file}");
    }
    assert!(std::path::Path::new(&dir).starts_with(dev.tmp.path()));

    // Ctrl-C.
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), dev.child.wait())
        .await
        .expect("exits within 15 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", dev.log_text());
    assert!(
        !std::path::Path::new(&dir).exists(),
        "the state dir is removed on exit"
    );
}

#[test]
fn only_the_dev_subcommand_can_start_the_development_idps() {
    // `sidegate::dev` is named in main.rs only, inside the `Dev` arm; no library module
    // refers to it, so `run` (and any config) cannot start a development IdP.
    let mut offenders = Vec::new();
    let mut stack = vec![repo().join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("dev") {
                    stack.push(p);
                }
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let rel = p.strip_prefix(repo()).unwrap().display().to_string();
            match rel.as_str() {
                "src/lib.rs" => assert!(text.contains("pub mod dev;")),
                "src/main.rs" => {
                    let arm = text.find("Command::Dev {").expect("main has a Dev arm");
                    let uses: Vec<_> = text.match_indices("sidegate::dev").map(|m| m.0).collect();
                    let next_fn = text[arm..].find("\nfn ").map(|i| arm + i).unwrap();
                    assert!(uses.iter().all(|&u| u > arm && u < next_fn), "{uses:?}");
                }
                _ if text.contains("dev::") => offenders.push(rel),
                _ => {}
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "{offenders:?} refer to the dev module"
    );
}

#[tokio::test]
async fn echo_app_rejects_an_assertion_it_cannot_verify() {
    // Reach the echo app directly (bypassing sidegate) with a token signed by another key:
    // its verdict must be "rejected", so its "verified" elsewhere means something.
    let dev = DevProcess::start(&["--protocol", "oidc"]).await;
    let mut b = Browser::new();
    let (_, _) = sign_in(&mut b, &dev.url, &[("demo", "bob")]).await;
    let good = echo_json(&b, &dev.url).await;
    let token = received_assertion(&good);

    let sidegate_port: u16 = url::Url::parse(&dev.url).unwrap().port().unwrap();
    let r = client()
        .get(&dev.url)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    let idp_port = url::Url::parse(r.headers()[LOCATION].to_str().unwrap())
        .unwrap()
        .port()
        .unwrap();
    let echo_port = listening_sockets(dev.child.id().unwrap())
        .iter()
        .map(|s| u16::from_str_radix(s.split(':').nth(1).unwrap(), 16).unwrap())
        .find(|p| *p != sidegate_port && *p != idp_port)
        .expect("the echo app's port");

    // Same claims, payload altered: the signature no longer matches.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let payload = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1])
            .unwrap(),
    )
    .unwrap()
    .replace("\"developer\"", "\"admin\"");
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        payload.as_bytes(),
    );
    let forged = parts.join(".");
    for (token, why) in [
        (forged.as_str(), "verification failed"),
        (token.as_str(), ""),
    ] {
        let v: Value = client()
            .get(format!("http://127.0.0.1:{echo_port}/"))
            .header(ACCEPT, "application/json")
            .header("x-sidegate-assertion", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if why.is_empty() {
            assert_eq!(v["assertion"]["status"], "verified", "{v:#}");
        } else {
            assert_eq!(v["assertion"]["status"], "rejected", "{v:#}");
            assert!(
                v["assertion"]["reason"].as_str().unwrap().contains(why),
                "{v:#}"
            );
        }
    }
}

#[tokio::test]
async fn saml_sign_in_through_the_dev_saml_idp() {
    let dev = DevProcess::start(&["--protocol", "saml"]).await;
    assert!(dev.line.contains("development SAML IdP"), "{}", dev.line);
    let idp = challenge_location(&dev).await;
    assert_eq!(
        idp.path(),
        "/sso",
        "SAML-only: the challenge goes to the SAML IdP"
    );
    let entity_id = format!("{}/metadata", idp.origin().ascii_serialization());

    let mut b = Browser::new();
    let (picker, page) = sign_in(
        &mut b,
        &dev.url,
        &[
            ("user", "erin"),
            ("email", "erin@corp.test"),
            ("role", "developer"),
            ("teams", "alpha, beta"),
        ],
    )
    .await;
    assert!(picker.body.contains(BANNER), "picker has the banner");
    assert!(picker.body.contains("SAML"), "{}", picker.body);
    assert!(
        b.visited.iter().any(|u| u.ends_with("/.sidegate/saml/acs")),
        "the Response was posted to the ACS: {:?}",
        b.visited
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Hello, erin"), "{}", page.body);
    assert!(
        page.body
            .contains("Signed in through the development SAML IdP"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("instead"), "one IdP, no switch link");

    let report = echo_json(&b, &dev.url).await;
    assert_eq!(report["assertion"]["status"], "verified", "{report:#}");
    let claims = &report["assertion"]["claims"];
    assert_eq!(claims["user"], "erin");
    assert_eq!(claims["email"], "erin@corp.test");
    assert_eq!(claims["role"], "developer");
    assert_eq!(claims["teams"], serde_json::json!(["alpha", "beta"]));
    assert_eq!(claims["idp"], entity_id.as_str());

    // Logging out ends the IdP session too (single logout): the picker shows again.
    let logout = format!("{}.sidegate/logout?rd=/", dev.url);
    let resp = b.request(Method::GET, &logout, None).await;
    let back = follow(&mut b, logout, resp).await;
    assert!(
        back.url.contains("/sso?") && back.body.contains("Sign in as"),
        "{} {}",
        back.url,
        back.body
    );
    assert!(
        b.visited.iter().any(|u| u.contains("/.sidegate/saml/slo?")),
        "the IdP answered with a LogoutResponse: {:?}",
        b.visited
    );
}

#[tokio::test]
async fn both_protocols_the_echo_page_switches_between_them() {
    let dev = DevProcess::start(&[]).await;
    assert!(
        dev.line.contains("OpenID provider + SAML IdP"),
        "{}",
        dev.line
    );
    let mut b = Browser::new();
    let (_, page) = sign_in(&mut b, &dev.url, &[("demo", "bob")]).await;
    assert!(page
        .body
        .contains("Signed in through the development OpenID Connect IdP"));
    let to_saml = link(&page.body, "Log in with SAML instead");
    assert_eq!(
        to_saml,
        "/.sidegate/logout?rd=%2F.sidegate%2Fsaml%2Flogin%3Frd%3D%2F"
    );

    let start = format!("{}{}", dev.url, &to_saml[1..]);
    let (picker, page) = sign_in(&mut b, &start, &[("demo", "alice")]).await;
    assert!(picker.url.contains("/sso?"), "{}", picker.url);
    assert_eq!(page.status, 200, "{}", page.body);
    let report = echo_json(&b, &dev.url).await;
    assert_eq!(report["identity"]["user"], "alice");
    assert_eq!(report["identity"]["role"], "admin");
    let idp = url::Url::parse(&picker.url).unwrap();
    assert_eq!(
        report["assertion"]["claims"]["idp"],
        format!("{}/metadata", idp.origin().ascii_serialization())
    );

    // And back: single logout at the SAML IdP, then the OpenID provider's picker.
    let to_oidc = link(&page.body, "Log in with OpenID Connect instead");
    let url = format!("{}{}", dev.url, &to_oidc[1..]);
    let resp = b.request(Method::GET, &url, None).await;
    let picker = follow(&mut b, url, resp).await;
    assert!(
        picker.url.contains("/authorize?") && picker.body.contains("OpenID Connect"),
        "{} {}",
        picker.url,
        picker.body
    );
}

#[tokio::test]
async fn dev_saml_idp_refuses_an_authn_request_for_another_sp() {
    let dev = DevProcess::start(&["--protocol", "saml"]).await;
    let sso = challenge_location(&dev).await;
    let genuine = redirect::decode(sso.query().unwrap(), Kind::Request).unwrap();
    let acs = format!("{}.sidegate/saml/acs", dev.url);
    assert!(genuine.xml.contains(&acs), "{}", genuine.xml);
    let entity = format!("{}.sidegate/saml/metadata", dev.url);

    let mut endpoint = sso.clone();
    endpoint.set_query(None);
    for (xml, why) in [
        (
            genuine.xml.replace(&acs, "https://evil.example/acs"),
            "AssertionConsumerServiceURL",
        ),
        (
            genuine.xml.replace(&entity, "https://evil.example/sp"),
            "Issuer",
        ),
        (genuine.xml.clone(), ""),
    ] {
        let url = redirect::encode(&endpoint, Kind::Request, &xml, Some("x"), None).unwrap();
        let r = client().get(url.as_str()).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(body.contains(BANNER), "{body}");
        if why.is_empty() {
            assert_eq!(status, 200, "the unaltered request gets the picker: {body}");
            assert!(body.contains("Sign in as"), "{body}");
        } else {
            assert_eq!(status, 400, "{why}: {body}");
            assert!(body.contains(why), "{body}");
            assert!(!body.contains("SAMLResponse"), "{body}");
        }
    }
}

#[tokio::test]
async fn idp_initiated_sign_in_lands_on_the_echo_page() {
    let dev = DevProcess::start(&["--protocol", "saml"]).await;
    let mut b = Browser::new();
    let start = dev.idp_initiated_url();
    let (picker, page) = sign_in(&mut b, &start, &[("demo", "carol")]).await;
    assert!(picker.body.contains("Sign in as"), "{}", picker.body);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.url, dev.url, "RelayState / is the landing page");
    assert!(page.body.contains("Hello, carol"), "{}", page.body);
    // restart: the unsolicited Response is checked and discarded, then an SP-initiated
    // login the IdP completes from its session (no second pick).
    let acs_posts = b
        .visited
        .iter()
        .filter(|u| u.ends_with("/.sidegate/saml/acs"))
        .count();
    assert_eq!(acs_posts, 2, "{:?}", b.visited);
    assert!(
        dev.log_text().contains("outcome=\"restart\""),
        "{}",
        dev.log_text()
    );
    let report = echo_json(&b, &dev.url).await;
    assert_eq!(report["assertion"]["status"], "verified", "{report:#}");
    assert_eq!(report["identity"]["role"], "viewer");
}
