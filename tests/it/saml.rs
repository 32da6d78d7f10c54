//! SAML end to end against a real third-party IdP (SimpleSAMLphp from Debian, a child process
//! on a loopback port) driven by the scripted browser: SP-initiated login with and without
//! signed AuthnRequests, IdP-initiated login in each mode, replays, oversized bodies, and the
//! identity headers and assertion the app receives.

use reqwest::header::{ACCEPT, COOKIE, LOCATION};
use reqwest::Method;
use serde_json::Value;

use crate::support::browser::{parse_form, Browser};
use crate::support::op::verify_with_jose;
use crate::support::saml_idp::{SamlIdp, SamlIdpSp};
use crate::support::upstream::{header_values, Upstream};
use crate::support::{client, config_text, load, Bound, Keys, Sidecar, DEAD_ISSUER};

struct World {
    sidecar: Sidecar,
    idp: SamlIdp,
    upstream: Upstream,
    sp_entity: String,
    _keys: Keys,
}

/// An RSA key and self-signed certificate as PEM (the SP's signing key).
fn sp_key_pem() -> (String, String) {
    let k = crate::support::saml_craft::TestIdpKey::new("sidegate test SP");
    (k.key_pem, k.cert_pem)
}

/// sidegate with SAML only (no `[oidc]`), in front of an echo app, and SimpleSAMLphp.
async fn world(saml_lines: &[&str], signed_requests: bool) -> World {
    world_with(saml_lines, signed_requests, Encrypt::No).await
}

/// Whether the IdP encrypts assertions, and to which certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encrypt {
    No,
    ToSp,
    ToAnotherKey,
}

async fn world_with(saml_lines: &[&str], signed_requests: bool, encrypt: Encrypt) -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let origin = bound.url();
    let sp_entity = format!("{origin}/.sidegate/saml/metadata");
    let acs = format!("{origin}/.sidegate/saml/acs");
    let slo = format!("{origin}/.sidegate/saml/slo");
    let keys = Keys::new();
    let (key_pem, cert_pem) = sp_key_pem();
    let other_cert = sp_key_pem().1;
    let idp = SamlIdp::start(&SamlIdpSp {
        entity_id: &sp_entity,
        acs_url: &acs,
        slo_url: &slo,
        cert_pem: signed_requests.then_some(cert_pem.as_str()),
        encrypt_to: match encrypt {
            Encrypt::No => None,
            Encrypt::ToSp => Some(cert_pem.as_str()),
            Encrypt::ToAnotherKey => Some(other_cert.as_str()),
        },
    })
    .await;
    std::fs::write(keys.path().join("idp.xml"), &idp.metadata_xml).unwrap();
    let mut text = config_text(&origin, &upstream.url(), DEAD_ISSUER, &[]);
    // SAML only: drop the [oidc] section.
    let (head, rest) = text.split_once("[oidc]").unwrap();
    let rest = &rest[rest.find("[session]").unwrap()..];
    text = format!("{head}{rest}\n[saml]\nidp_metadata_file = \"idp.xml\"\n");
    if signed_requests || encrypt != Encrypt::No {
        std::fs::write(keys.path().join("sp.key"), key_pem).unwrap();
        std::fs::write(keys.path().join("sp.crt"), cert_pem).unwrap();
        text.push_str("sp_key_file = \"sp.key\"\nsp_cert_file = \"sp.crt\"\n");
    }
    for l in saml_lines {
        text.push_str(l);
        text.push('\n');
    }
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    World {
        sidecar,
        idp,
        upstream,
        sp_entity,
        _keys: keys,
    }
}

impl World {
    fn hits(&self) -> usize {
        self.upstream.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn sp_initiated_login_reaches_the_app_with_identity_and_a_verifiable_assertion() {
    for signed in [false, true] {
        let w = world(&[], signed).await;
        let mut b = Browser::new();
        let page = b
            .navigate(&w.sidecar.url("/reports?q=1"), "alice", "alice-pw")
            .await;
        assert_eq!(
            page.status,
            200,
            "signed={signed} {} {}\n{}",
            page.url,
            page.body,
            w.idp.log_tail()
        );
        let echo: Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(
            echo["path"], "/reports?q=1",
            "back at the page that started the login"
        );
        assert_eq!(header_values(&echo, "x-sidegate-user"), ["alice"]);
        assert_eq!(
            header_values(&echo, "x-sidegate-email"),
            ["alice@example.test"]
        );
        assert_eq!(header_values(&echo, "x-sidegate-role"), ["admin"]);
        assert_eq!(header_values(&echo, "x-sidegate-teams"), ["admins,devs"]);
        let token = header_values(&echo, "x-sidegate-assertion").remove(0);
        let origin = w.sidecar.url("");
        let v = verify_with_jose(
            &w.sidecar.url("/.sidegate/jwks.json"),
            &token,
            &origin,
            &origin,
        )
        .await;
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["payload"]["idp"], w.idp.entity_id.as_str());
        // The AuthnRequest went out with the Redirect binding, signed only when configured.
        let sso = b
            .visited
            .iter()
            .find(|u| u.contains("SSOService.php?SAMLRequest="))
            .expect("an AuthnRequest was sent");
        assert_eq!(sso.contains("&Signature="), signed, "{sso}");
        assert!(
            !sso.contains("RelayState=%2F"),
            "RelayState is opaque, never the return URL"
        );
    }
}

#[tokio::test]
async fn role_fallback_and_empty_teams_follow_the_identity_rules() {
    let w = world(&[], false).await;
    let mut b = Browser::new();
    let page = b.navigate(&w.sidecar.url("/"), "dave", "dave-pw").await;
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    // dave's `superuser` is not an allowed role: least-privilege default.
    assert_eq!(header_values(&echo, "x-sidegate-role"), ["viewer"]);
    assert_eq!(header_values(&echo, "x-sidegate-teams"), ["ops"]);
    let mut b = Browser::new();
    let page = b.navigate(&w.sidecar.url("/"), "carol", "carol-pw").await;
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["carol"]);
    assert_eq!(header_values(&echo, "x-sidegate-teams"), [""]);
}

#[tokio::test]
async fn sp_metadata_describes_our_endpoints_and_key() {
    let w = world(&[], true).await;
    let r = client()
        .get(w.sidecar.url("/.sidegate/saml/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("samlmetadata+xml"));
    let xml = r.text().await.unwrap();
    assert!(
        xml.contains(&format!("entityID=\"{}\"", w.sp_entity)),
        "{xml}"
    );
    assert!(xml.contains(&w.sidecar.url("/.sidegate/saml/acs")));
    assert!(xml.contains("AuthnRequestsSigned=\"true\""), "{xml}");
    assert!(xml.contains("use=\"encryption\""), "{xml}");
    assert!(xml.contains("X509Certificate"));
}

/// Logs in at the IdP through its IdP-initiated URL and returns the page the ACS answered.
async fn idp_initiated(
    w: &World,
    b: &mut Browser,
    relay: Option<&str>,
) -> crate::support::browser::Page {
    let url = w.idp.idp_initiated_url(&w.sp_entity, relay);
    b.navigate(&url, "bob", "bob-pw").await
}

#[tokio::test]
async fn idp_initiated_login_is_refused_when_off() {
    let w = world(&[], false).await;
    let mut b = Browser::new();
    let page = idp_initiated(&w, &mut b, Some("/inbox")).await;
    assert_eq!(page.status, 403, "{} {}", page.url, page.body);
    assert!(page.body.contains("not enabled"), "{}", page.body);
    assert!(
        b.cookie_header(&w.sidecar.url("/")).is_empty(),
        "no session cookie"
    );
    assert_eq!(w.hits(), 0, "nothing reached the app");
}

#[tokio::test]
async fn idp_initiated_login_accept_mode_lands_on_an_allowed_relay_state() {
    let w = world(
        &[
            "idp_initiated = \"accept\"",
            "idp_initiated_landing = \"/welcome\"",
        ],
        false,
    )
    .await;
    let mut b = Browser::new();
    let page = idp_initiated(&w, &mut b, Some("/inbox")).await;
    let echo: Value = serde_json::from_str(&page.body).unwrap_or_else(|_| panic!("{}", page.body));
    assert_eq!(echo["path"], "/inbox");
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["bob"]);
    // A RelayState off the allow-list lands on the configured landing page instead.
    let mut b = Browser::new();
    let page = idp_initiated(&w, &mut b, Some("https://evil.example/steal")).await;
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(echo["path"], "/welcome");
}

#[tokio::test]
async fn idp_initiated_login_restart_mode_becomes_an_sp_initiated_login() {
    let w = world(&["idp_initiated = \"restart\""], false).await;
    let mut b = Browser::new();
    let page = idp_initiated(&w, &mut b, Some("/inbox")).await;
    let echo: Value = serde_json::from_str(&page.body).unwrap_or_else(|_| panic!("{}", page.body));
    assert_eq!(echo["path"], "/inbox");
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["bob"]);
    // The unsolicited response was discarded and a fresh AuthnRequest went out.
    let requests = b
        .visited
        .iter()
        .filter(|u| u.contains("SSOService.php?SAMLRequest="))
        .count();
    assert_eq!(requests, 1, "{:#?}", b.visited);
    let acs_posts = b
        .visited
        .iter()
        .filter(|u| u.ends_with("/saml/acs"))
        .count();
    assert_eq!(
        acs_posts, 2,
        "unsolicited, then solicited: {:#?}",
        b.visited
    );
}

/// The IdP's auto-submitting form (SAMLResponse + RelayState) for a fresh SP-initiated login
/// as alice, without submitting it.
async fn captured_response(w: &World, b: &mut Browser) -> Vec<(String, String)> {
    capture(b, &w.sidecar.url("/"), "alice", "alice-pw").await
}

/// Follows redirects and the IdP's login form from `url` until the page that would post a
/// SAMLResponse; returns that form's fields instead of posting them.
pub(crate) async fn capture(
    b: &mut Browser,
    url: &str,
    user: &str,
    password: &str,
) -> Vec<(String, String)> {
    let mut url = url.to_string();
    let mut resp = b.request(Method::GET, &url, None).await;
    for _ in 0..20 {
        if resp.status().is_redirection() {
            let loc = resp.headers()[LOCATION].to_str().unwrap().to_string();
            url = url::Url::parse(&url)
                .unwrap()
                .join(&loc)
                .unwrap()
                .to_string();
            resp = b.request(Method::GET, &url, None).await;
            continue;
        }
        let body = resp.text().await.unwrap();
        let form = parse_form(&body).expect("a form");
        if form.fields.iter().any(|(k, _)| k == "SAMLResponse") {
            return form.fields;
        }
        let mut fields = form.fields;
        for (k, v) in fields.iter_mut() {
            match k.as_str() {
                "username" => *v = user.into(),
                "password" => *v = password.into(),
                _ => {}
            }
        }
        url = url::Url::parse(&url)
            .unwrap()
            .join(&form.action)
            .unwrap()
            .to_string();
        resp = b.request(Method::POST, &url, Some(&fields)).await;
    }
    panic!("no SAMLResponse form; visited {:#?}", b.visited);
}

async fn post_acs(w: &World, cookie: &str, fields: &[(String, String)]) -> reqwest::Response {
    client()
        .post(w.sidecar.url("/.sidegate/saml/acs"))
        .header(COOKIE, cookie)
        .header(ACCEPT, "text/html")
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_response_is_consumed_once_in_this_browser_and_refused_in_another() {
    let w = world(&[], false).await;
    let mut b = Browser::new();
    let fields = captured_response(&w, &mut b).await;
    let cookie = b.cookie_header(&w.sidecar.url("/"));
    let first = post_acs(&w, &cookie, &fields).await;
    assert_eq!(first.status(), 302, "{}", first.text().await.unwrap());
    // The same POST with the same (still valid) login cookie: replayed.
    let again = post_acs(&w, &cookie, &fields).await;
    assert_eq!(again.status(), 400);
    assert!(again
        .headers()
        .get("set-cookie")
        .is_none_or(|c| !c.to_str().unwrap().starts_with("_sidegate=")));
    // In a fresh browser it is an unsolicited response, refused (IdP-initiated is off).
    let fresh = post_acs(&w, "", &fields).await;
    assert_eq!(fresh.status(), 403);
    assert_eq!(w.hits(), 0);
}

#[tokio::test]
async fn an_idp_initiated_response_is_consumed_once_in_accept_mode() {
    let w = world(&["idp_initiated = \"accept\""], false).await;
    let mut b = Browser::new();
    // Capture the unsolicited response instead of letting the browser post it.
    let url = w.idp.idp_initiated_url(&w.sp_entity, Some("/x"));
    let fields = capture(&mut b, &url, "bob", "bob-pw").await;
    assert_eq!(post_acs(&w, "", &fields).await.status(), 302);
    let replay = post_acs(&w, "", &fields).await;
    assert_eq!(replay.status(), 403);
}

#[tokio::test]
async fn oversized_and_malformed_acs_posts_fail_closed() {
    let w = world(&[], false).await;
    let big = "A".repeat(5 * 1024 * 1024);
    let r = client()
        .post(w.sidecar.url("/.sidegate/saml/acs"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("SAMLResponse={big}"))
        .send()
        .await;
    // Either a 413 or the connection closed mid-upload: never a session, never a panic.
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    for body in [
        "SAMLResponse=%%%",
        "SAMLResponse=bm90IHhtbA%3D%3D",
        "nothing=1",
    ] {
        let r = client()
            .post(w.sidecar.url("/.sidegate/saml/acs"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 400 || r.status() == 403,
            "{body}: {}",
            r.status()
        );
    }
    let r = client()
        .get(w.sidecar.url("/.sidegate/saml/acs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(w.hits(), 0);
}

fn session_cookie_in(b: &Browser, w: &World) -> bool {
    b.cookie_header(&w.sidecar.url("/"))
        .split("; ")
        .any(|c| c.starts_with("_sidegate="))
}

#[tokio::test]
async fn sp_initiated_single_logout_ends_the_idp_session_too() {
    let w = world(&[], true).await;
    let mut b = Browser::new();
    b.navigate(&w.sidecar.url("/"), "alice", "alice-pw").await;
    assert!(session_cookie_in(&b, &w));
    let hits = w.hits();
    let logout = w.sidecar.url("/.sidegate/logout?rd=/bye");
    let resp = b.request(Method::GET, &logout, None).await;
    let page = crate::support::dev::follow(&mut b, logout, resp).await;
    assert!(!session_cookie_in(&b, &w), "session cookie cleared");
    let slo_request = b
        .visited
        .iter()
        .find(|u| u.contains("SingleLogoutService.php?SAMLRequest="))
        .expect("a LogoutRequest went to the IdP");
    assert!(
        slo_request.contains("&Signature="),
        "signed with the SP key"
    );
    assert!(
        b.visited
            .iter()
            .any(|u| u.contains("/.sidegate/saml/slo?SAMLResponse=")),
        "the IdP answered: {:#?}",
        b.visited
    );
    // Back at /bye, which needs a login: the IdP asks for a password again, so its session
    // ended too.
    assert!(
        page.body.contains("name=\"password\""),
        "{} {}",
        page.url,
        page.body
    );
    assert_eq!(
        w.hits(),
        hits,
        "/bye never reached the app without a session"
    );
}

#[tokio::test]
async fn idp_initiated_single_logout_ends_the_session_here() {
    let w = world(&[], true).await;
    let mut b = Browser::new();
    b.navigate(&w.sidecar.url("/"), "alice", "alice-pw").await;
    assert!(session_cookie_in(&b, &w));
    let start = format!(
        "{}/saml2/idp/SingleLogoutService.php?ReturnTo={}",
        w.idp.base,
        url::form_urlencoded::byte_serialize(w.sidecar.url("/after").as_bytes())
            .collect::<String>()
    );
    let resp = b.request(Method::GET, &start, None).await;
    let page = crate::support::dev::follow(&mut b, start, resp).await;
    assert!(!page.body.contains("Unhandled exception"), "{}", page.body);
    assert!(
        b.visited
            .iter()
            .any(|u| u.contains("/.sidegate/saml/slo?SAMLRequest=")),
        "{:#?}\n{}",
        b.visited,
        w.idp.log_tail()
    );
    assert!(
        !session_cookie_in(&b, &w),
        "the IdP's LogoutRequest ended the session"
    );
}

/// A LogoutRequest for alice as the IdP would send it, signed with `key` (or not).
fn forged_logout_request(
    w: &World,
    key: Option<&openssl::pkey::PKey<openssl::pkey::Private>>,
) -> String {
    use sidegate::login::saml::{logout, redirect};
    let slo = w.sidecar.url("/.sidegate/saml/slo");
    let xml = logout::request_xml(
        "_forged",
        chrono::Utc::now(),
        &slo,
        &w.idp.entity_id,
        "alice",
        None,
        "_any",
    );
    let url = url::Url::parse(&slo).unwrap();
    redirect::encode(&url, redirect::Kind::Request, &xml, None, key)
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn unsigned_or_foreign_logout_requests_do_not_end_sessions() {
    let w = world(&[], false).await;
    let mut b = Browser::new();
    b.navigate(&w.sidecar.url("/"), "alice", "alice-pw").await;
    let cookie = b.cookie_header(&w.sidecar.url("/"));
    let attacker =
        openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    for (name, url) in [
        ("unsigned", forged_logout_request(&w, None)),
        ("foreign key", forged_logout_request(&w, Some(&attacker))),
    ] {
        let r = client()
            .get(&url)
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let cleared = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("_sidegate="));
        assert!(!cleared, "{name}: the session cookie must survive");
    }
    // The session still works.
    let r = client()
        .get(w.sidecar.url("/still"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn encrypted_assertions_decrypt_with_the_sp_key_and_are_refused_otherwise() {
    let w = world_with(&[], false, Encrypt::ToSp).await;
    let mut b = Browser::new();
    let fields = captured_response(&w, &mut b).await;
    let xml = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1,
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        xml.contains("EncryptedAssertion") && !xml.contains("<saml:Assertion"),
        "{xml}"
    );
    let r = post_acs(&w, &b.cookie_header(&w.sidecar.url("/")), &fields).await;
    assert_eq!(
        r.status(),
        302,
        "{}\n{}",
        r.text().await.unwrap(),
        w.idp.log_tail()
    );

    let w = world_with(&[], false, Encrypt::ToAnotherKey).await;
    let mut b = Browser::new();
    let page = b.navigate(&w.sidecar.url("/"), "alice", "alice-pw").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(!session_cookie_in(&b, &w));
    assert_eq!(w.hits(), 0);
}

/// The IdP's signing certificate from its metadata, as PEM.
fn idp_cert_pem(metadata: &str) -> String {
    let start = metadata.find("X509Certificate>").unwrap() + "X509Certificate>".len();
    let end = start + metadata[start..].find('<').unwrap();
    let b64: String = metadata[start..end].split_whitespace().collect();
    let body: Vec<String> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        body.join("\n")
    )
}

/// sidegate (SAML only) whose `[saml]` is exactly `saml` (no metadata file), in front of
/// an echo app; `files` are written next to the config.
async fn world_from(bound: Bound, saml: &str, files: &[(&str, &str)]) -> (Sidecar, Upstream, Keys) {
    let upstream = Upstream::start().await;
    let keys = Keys::new();
    for (name, body) in files {
        std::fs::write(keys.path().join(name), body).unwrap();
    }
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &[]);
    let (head, rest) = text.split_once("[oidc]").unwrap();
    let rest = &rest[rest.find("[session]").unwrap()..];
    let text = format!("{head}{rest}\n[saml]\n{saml}\n");
    (Sidecar::start(bound, load(&text, &keys)), upstream, keys)
}

async fn ready(s: &Sidecar) -> bool {
    for _ in 0..50 {
        if client()
            .get(s.admin("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn metadata_from_a_url_with_a_pinned_signing_certificate() {
    // The IdP needs to know the SP first; its ACS host:port must be the sidecar's.
    let bound = Bound::new().await;
    let origin = bound.url();
    let sp_entity = format!("{origin}/.sidegate/saml/metadata");
    let idp = SamlIdp::start(&SamlIdpSp {
        entity_id: &sp_entity,
        acs_url: &format!("{origin}/.sidegate/saml/acs"),
        slo_url: &format!("{origin}/.sidegate/saml/slo"),
        cert_pem: None,
        encrypt_to: None,
    })
    .await;
    assert!(
        idp.metadata_xml.contains("Signature"),
        "SSP signs its metadata"
    );
    let pinned = idp_cert_pem(&idp.metadata_xml);
    let (wrong_key, wrong_cert) = sp_key_pem();
    drop(wrong_key);

    // Right certificate: ready, and logins work.
    let saml = format!(
        "idp_metadata_url = \"{}\"\nidp_metadata_signing_cert_file = \"pin.pem\"",
        idp.entity_id
    );
    let (s, _up, _k) = world_from(bound, &saml, &[("pin.pem", &pinned)]).await;
    assert!(
        ready(&s).await,
        "metadata fetched and its signature verified"
    );
    let r = client()
        .get(s.url("/"))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with(&idp.base));
    drop(s);

    // Another certificate: the metadata is refused; SAML logins answer 503, never redirect.
    let (s, _up, _k) = world_from(Bound::new().await, &saml, &[("pin.pem", &wrong_cert)]).await;
    assert!(
        !ready(&s).await,
        "unverified metadata never makes sidegate ready"
    );
    let r = client()
        .get(s.url("/"))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

/// Serves whatever `doc` holds at `/metadata`.
async fn metadata_server(doc: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let doc = doc.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = doc.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}/metadata")
}

#[tokio::test]
async fn refreshed_metadata_rotates_the_signing_key_without_a_restart() {
    use crate::support::saml_craft::{metadata, Craft, Sign, TestIdpKey, IDP_ENTITY};
    let (old, new) = (TestIdpKey::new("old"), TestIdpKey::new("new"));
    let doc = std::sync::Arc::new(std::sync::Mutex::new(metadata(IDP_ENTITY, &[&old])));
    let url = metadata_server(doc.clone()).await;
    let saml = format!(
        "idp_metadata_url = \"{url}\"\nidp_metadata_refresh = \"1s\"\nidp_initiated = \"accept\""
    );
    let (s, _up, _k) = world_from(Bound::new().await, &saml, &[]).await;
    assert!(ready(&s).await);
    let origin = s.url("");
    let post = |key: &TestIdpKey| {
        let mut c = Craft::new(
            std::time::SystemTime::now(),
            &format!("{origin}/.sidegate/saml/metadata"),
            &format!("{origin}/.sidegate/saml/acs"),
        );
        c.in_response_to = None;
        let xml = c.signed(key, Sign::Both);
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, xml);
        client()
            .post(s.url("/.sidegate/saml/acs"))
            .form(&[("SAMLResponse", b64)])
            .send()
    };
    assert_eq!(post(&old).await.unwrap().status(), 302);
    assert_eq!(post(&new).await.unwrap().status(), 403, "not yet trusted");
    *doc.lock().unwrap() = metadata(IDP_ENTITY, &[&new]);
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = post(&new).await.unwrap().status().as_u16();
        if status == 302 {
            break;
        }
    }
    assert_eq!(status, 302, "the new key is trusted after a refresh");
    assert_eq!(
        post(&old).await.unwrap().status(),
        403,
        "the old key no longer is"
    );
}

#[tokio::test]
async fn saml_login_picks_the_named_idp() {
    use crate::support::saml_craft::{metadata, TestIdpKey, IDP_ENTITY};
    let (a, b) = (TestIdpKey::new("a"), TestIdpKey::new("b"));
    let partner = metadata("https://partner.test/metadata", &[&b])
        .replace("https://idp.test/sso", "https://partner.test/sso");
    let (s, up, _k) = world_from(
        Bound::new().await,
        "idp_metadata_file = \"a.xml\"\nname_id_format = \"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\"\n[saml.idps.partner]\nidp_metadata_file = \"b.xml\"",
        &[("a.xml", &metadata(IDP_ENTITY, &[&a])), ("b.xml", &partner)],
    )
    .await;
    let go = |q: &str| {
        client()
            .get(s.url(&format!("/.sidegate/saml/login{q}")))
            .send()
    };
    let r = go("?idp=partner&rd=/x").await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with("https://partner.test/sso?SAMLRequest="));
    let r = go("?rd=/x").await.unwrap();
    assert!(r.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with("https://idp.test/sso?SAMLRequest="));
    assert_eq!(go("?idp=nope").await.unwrap().status(), 404);
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
