//! Provider presets: a few keys give the issuer, scopes, claim names and the checks a
//! provider needs; recorded public discovery documents (tests/fixtures/oidc) prove the derived
//! issuers are exactly what the providers publish (Auth0's trailing slash included); the
//! environment-variable migration layer; and a required claim refused at login.

use std::path::Path;

use serde_json::json;
use sidegate::config::{load, Config, ConfigError, Env};
use sidegate::login::oidc::{parse_discovery, Provider};

use crate::support::browser::Browser;
use crate::support::fake_idp::{good_claims, FakeIdp, TestKey};
use crate::support::upstream::Upstream;
use crate::support::{config_text, Bound, Keys, Sidecar};

const REST: &str = r#"
[server]
public_url = "https://app.example.com"
[upstream]
url = "http://127.0.0.1:8080"
[session]
secrets_file = "cookie-secrets"
[assertion]
signing_keys_file = "assertion-key.pem"
"#;

fn try_load(oidc: &str, env: &[(&str, &str)], keys: &Keys) -> Result<Config, ConfigError> {
    let env: Env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load(&format!("{REST}\n{oidc}"), &env, keys.path())
}

fn ok(oidc: &str, keys: &Keys) -> Config {
    try_load(oidc, &[], keys).unwrap_or_else(|e| panic!("{e}\n{oidc}"))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/oidc")
            .join(name),
    )
    .unwrap()
}

#[test]
fn each_preset_derives_what_its_provider_publishes() {
    let keys = Keys::new();
    let secret = "client_id = \"c\"\nclient_secret_file = \"client-secret\"\n";
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, bool)] = &[
        ("preset = \"google\"\nhosted_domain = \"example.com\"", "google.json", "https://accounts.google.com", false),
        ("preset = \"entra\"\ntenant = \"8a1f6b2c-3d4e-4f50-9a6b-7c8d9e0f1a2b\"", "entra.json", "https://login.microsoftonline.com/8a1f6b2c-3d4e-4f50-9a6b-7c8d9e0f1a2b/v2.0", true),
        ("preset = \"okta\"\ndomain = \"example-org.okta.com\"\nauthorization_server = \"default\"", "okta.json", "https://example-org.okta.com/oauth2/default", true),
        ("preset = \"keycloak\"\nbase_url = \"https://kc.example.com\"\nrealm = \"main\"", "keycloak.json", "https://kc.example.com/realms/main", true),
        ("preset = \"auth0\"\ndomain = \"example-tenant.us.auth0.com\"\nclaims_namespace = \"https://example.com/\"", "auth0.json", "https://example-tenant.us.auth0.com/", true),
    ];
    for (lines, file, issuer, has_end_session) in cases {
        let cfg = ok(&format!("[oidc]\n{secret}{lines}\n"), &keys);
        let o = cfg.oidc.into_iter().next().unwrap();
        let provider = Provider::new(o, "https://app.example.com/.sidegate/oidc/callback".into());
        assert_eq!(provider.issuer(), *issuer, "{file}");
        let (_, end) = parse_discovery(&fixture(file), provider.issuer())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(end.is_some(), *has_end_session, "{file}");
    }
    // The multi-tenant document publishes a placeholder issuer: it never passes as a tenant's.
    assert!(parse_discovery(
        &fixture("entra-common.json"),
        "https://login.microsoftonline.com/common/v2.0"
    )
    .is_err());
    // Without the trailing slash Auth0's document would be refused (the exact-match rule).
    assert!(parse_discovery(
        &fixture("auth0.json"),
        "https://example-tenant.us.auth0.com"
    )
    .is_err());
}

#[test]
fn presets_set_claim_names_scopes_and_required_claims_and_identity_keys_win() {
    let keys = Keys::new();
    let secret = "client_id = \"c\"\nclient_secret_file = \"client-secret\"\n";
    let g = ok(
        &format!("[oidc]\n{secret}preset = \"google\"\nhosted_domain = \"example.com\"\n"),
        &keys,
    );
    let o = &g.oidc[0];
    assert_eq!(
        o.required_claims,
        [("hd".to_string(), "example.com".to_string())]
    );
    assert!(o
        .extra_authorize_params
        .contains(&("hd".into(), "example.com".into())));
    assert_eq!(o.claims.as_ref().unwrap().user, ["email", "sub"]);

    let e = ok(
        &format!("[oidc]\n{secret}preset = \"entra\"\ntenant = \"8A1F6B2C-3D4E-4F50-9A6B-7C8D9E0F1A2B\"\n[identity]\nrole_claim = \"wids\"\n"),
        &keys,
    );
    let o = &e.oidc[0];
    assert_eq!(
        o.required_claims,
        [(
            "tid".to_string(),
            "8a1f6b2c-3d4e-4f50-9a6b-7c8d9e0f1a2b".to_string()
        )]
    );
    let c = o.claims.as_ref().unwrap();
    assert_eq!(
        (c.role.as_str(), c.teams.as_str()),
        ("wids", "groups"),
        "an [identity] key wins over the preset"
    );

    let k = ok(&format!("[oidc]\n{secret}preset = \"keycloak\"\nbase_url = \"https://kc.example.com/\"\nrealm = \"main\"\n"), &keys);
    assert_eq!(
        k.oidc[0].claims.as_ref().unwrap().role,
        "realm_access.roles"
    );
    let okta = ok(
        &format!("[oidc]\n{secret}preset = \"okta\"\ndomain = \"example.okta.com\"\n"),
        &keys,
    );
    assert!(okta.oidc[0].scopes.contains(&"groups".to_string()));
    assert_eq!(
        okta.oidc[0].issuer.as_str().trim_end_matches('/'),
        "https://example.okta.com",
        "the org server"
    );
}

#[test]
fn preset_mistakes_are_named() {
    let keys = Keys::new();
    let secret = "client_id = \"c\"\nclient_secret_file = \"client-secret\"\n";
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("preset = \"entra\"\ntenant = \"common\"", "oidc.tenant"),
        ("preset = \"entra\"", "oidc.tenant"),
        ("preset = \"google\"\ntenant = \"8a1f6b2c-3d4e-4f50-9a6b-7c8d9e0f1a2b\"", "oidc.tenant"),
        ("preset = \"google\"\nissuer = \"https://evil.example.com\"", "oidc.issuer"),
        ("preset = \"okta\"\ndomain = \"https://x.okta.com/\"", "oidc.domain"),
        ("preset = \"keycloak\"\nrealm = \"main\"", "oidc.realm"),
        ("preset = \"azure\"", "oidc.preset"),
    ];
    for (lines, key) in cases {
        let err = try_load(&format!("[oidc]\n{secret}{lines}\n"), &[], &keys).expect_err(lines);
        assert!(
            err.problems.iter().any(|p| p.key == *key),
            "{lines}: want {key}, got {err}"
        );
    }
}

#[test]
fn sso_environment_variables_map_onto_sidegate_keys() {
    let keys = Keys::new();
    let g = try_load(
        "",
        &[
            ("GOOGLE_CLIENT_ID", "gid"),
            ("GOOGLE_CLIENT_SECRET", "gsecret"),
        ],
        &keys,
    )
    .unwrap();
    assert_eq!(g.oidc[0].client_id, "gid");
    assert_eq!(g.oidc[0].client_secret.expose(), "gsecret");
    assert_eq!(
        g.oidc[0].issuer.as_str().trim_end_matches('/'),
        "https://accounts.google.com"
    );

    let m = [
        ("MICROSOFT_CLIENT_ID", "mid"),
        ("MICROSOFT_CLIENT_SECRET", "ms"),
    ];
    let err = try_load("", &m, &keys).unwrap_err();
    assert!(
        err.problems.iter().any(|p| p.key == "MICROSOFT_TENANT"),
        "{err}"
    );
    let mut with_tenant = m.to_vec();
    with_tenant.push(("MICROSOFT_TENANT", "8a1f6b2c-3d4e-4f50-9a6b-7c8d9e0f1a2b"));
    let c = try_load("", &with_tenant, &keys).unwrap();
    assert_eq!(c.oidc[0].required_claims[0].0, "tid");

    let generic = [
        ("GENERIC_CLIENT_ID", "app"),
        ("GENERIC_CLIENT_SECRET", "s"),
        ("GENERIC_SCOPE", "openid email  groups"),
        ("GENERIC_CLIENT_USE_PKCE", "false"),
        ("GENERIC_USER_ROLE_ATTRIBUTE", "app_role"),
    ];
    let err = try_load("", &generic, &keys).unwrap_err();
    assert!(
        err.problems.iter().any(|p| p.key == "GENERIC_CLIENT_ID"),
        "the issuer is required: {err}"
    );
    let mut full = generic.to_vec();
    full.push(("SIDEGATE_OIDC__ISSUER", "https://idp.example.com"));
    let c = try_load("", &full, &keys).unwrap();
    let o = &c.oidc[0];
    assert_eq!(o.scopes, ["openid", "email", "groups"]);
    assert!(!o.pkce && o.userinfo);
    assert_eq!(c.identity.role_claim, "app_role");
    // A file with [oidc] is not touched by them.
    let file = try_load("[oidc]\nissuer = \"https://x.example.com\"\nclient_id = \"f\"\nclient_secret_file = \"client-secret\"\n", &full, &keys).unwrap();
    assert_eq!(file.oidc[0].client_id, "f");
}

#[tokio::test]
async fn a_required_claim_that_does_not_match_refuses_the_login() {
    let key = TestKey::new("k1");
    let idp = FakeIdp::start(json!({"keys": [key.jwk.clone()]})).await;
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let text = config_text(
        &bound.url(),
        &upstream.url(),
        &idp.issuer(),
        &[("oidc", "required_claims = { hd = \"example.com\" }")],
    );
    let sidecar = Sidecar::start(bound, crate::support::load(&text, &keys));
    for (hd, want) in [
        (Some("example.com"), 200),
        (Some("evil.com"), 403),
        (None, 403),
    ] {
        let k = key.clone();
        idp.set_craft(move |iss, nonce| {
            let mut c = good_claims(iss, nonce);
            if let Some(h) = hd {
                c["hd"] = json!(h);
            }
            k.sign("k1", &c)
        });
        let mut b = Browser::new();
        let page = b.navigate(&sidecar.url("/x"), "erin", "-").await;
        assert_eq!(page.status, want, "hd {hd:?}: {}", page.body);
    }
}

/// An in-test Microsoft Graph `getMemberObjects` (mock by necessity: Graph cannot run here):
/// answers `status` with the ids, and remembers the bearer token it was sent.
async fn graph(
    status: u16,
    ids: serde_json::Value,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1.0/me/getMemberObjects",
        l.local_addr().unwrap()
    );
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let (s, ids) = (s.clone(), ids.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_string());
                    s.lock().unwrap().push(format!(
                        "{} {}",
                        req.method(),
                        auth.unwrap_or_default()
                    ));
                    let body = json!({ "value": ids.clone() }).to_string();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn group_overage_reads_the_groups_from_graph_and_a_failed_lookup_denies() {
    let key = TestKey::new("k1");
    let idp = FakeIdp::start(json!({"keys": [key.jwk.clone()]})).await;
    let k = key.clone();
    idp.set_craft(move |iss, nonce| {
        let mut c = good_claims(iss, nonce);
        c.as_object_mut().unwrap().remove("groups");
        c["_claim_names"] = json!({"groups": "src1"});
        c["_claim_sources"] =
            json!({"src1": {"endpoint": "https://graph.windows.net/x/users/y/getMemberObjects"}});
        k.sign("k1", &c)
    });
    for (status, want) in [(200, 200), (403, 403)] {
        let (graph_url, seen) = graph(status, json!(["6f1e-a", "0b2c-b"])).await;
        let upstream = Upstream::start().await;
        let bound = Bound::new().await;
        let keys = Keys::new();
        let text = config_text(
            &bound.url(),
            &upstream.url(),
            &idp.issuer(),
            &[("oidc", &format!("group_overage = \"{graph_url}\""))],
        );
        let sidecar = Sidecar::start(bound, crate::support::load(&text, &keys));
        let mut b = Browser::new();
        let page = b.navigate(&sidecar.url("/x"), "erin", "-").await;
        assert_eq!(page.status, want, "graph {status}: {}", page.body);
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["POST Bearer at-1"],
            "one lookup with the access token"
        );
        if want == 200 {
            let echo: serde_json::Value = serde_json::from_str(&page.body).unwrap();
            assert_eq!(
                crate::support::upstream::header_values(&echo, "x-sidegate-teams"),
                ["6f1e-a,0b2c-b"]
            );
        }
    }
}

#[tokio::test]
async fn a_provider_without_discovery_works_from_its_endpoints_with_extra_headers() {
    let key = TestKey::new("k1");
    let idp = FakeIdp::start(json!({"keys": [key.jwk.clone()]})).await;
    let k = key.clone();
    idp.set_craft(move |iss, nonce| k.sign("k1", &good_claims(iss, nonce)));
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let base = idp.issuer();
    let oidc = format!(
        "authorization_endpoint = \"{base}/authorize\"\ntoken_endpoint = \"{base}/token\"\njwks_uri = \"{base}/jwks\"\nidp_headers_env = \"IDP_HEADERS\""
    );
    let text = config_text(&bound.url(), &upstream.url(), &base, &[("oidc", &oidc)]);
    let env: Env = [("IDP_HEADERS".to_string(), "X-Api-Key=k-123".to_string())]
        .into_iter()
        .collect();
    let cfg = load(&text, &env, keys.path()).unwrap();
    let sidecar = Sidecar::start(bound, cfg);
    let mut b = Browser::new();
    let page = b.navigate(&sidecar.url("/x"), "erin", "-").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let log = idp.state.log.lock().unwrap().clone();
    assert!(
        !log.iter().any(|(p, _)| p.contains("well-known")),
        "no discovery: {log:?}"
    );
    for (path, key) in log.iter().filter(|(p, _)| p == "/token" || p == "/jwks") {
        assert_eq!(
            key.as_deref(),
            Some("k-123"),
            "{path} carries the configured header"
        );
    }
    // Only some endpoints: refused at start.
    let half = config_text(
        "https://a.example",
        "http://127.0.0.1:1",
        &base,
        &[("oidc", &format!("token_endpoint = \"{base}/token\""))],
    );
    let err = load(&half, &Env::new(), keys.path()).unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.key == "oidc.authorization_endpoint"),
        "{err}"
    );
}

/// Every example under examples/providers loads with the real loader (secrets faked).
#[test]
fn the_provider_examples_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/providers");
    let keys = Keys::new();
    let secrets = keys.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for f in ["client-secret", "okta-secret", "partner-secret"] {
        std::fs::write(secrets.join(f), "s\n").unwrap();
    }
    std::fs::write(
        secrets.join("users.toml"),
        format!(
            "[[users]]\nname = \"glass\"\npassword_hash = \"{}\"\n",
            sidegate::login::local::hash_password("x")
        ),
    )
    .unwrap();
    let env: Env = [("IDP_HEADERS".to_string(), "X-Api-Key=k".to_string())]
        .into_iter()
        .collect();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let example = std::fs::read_to_string(&path).unwrap();
        let text = format!("{REST}\n{example}");
        if let Err(e) = load(&text, &env, keys.path()) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 7, "{n} examples");
}
