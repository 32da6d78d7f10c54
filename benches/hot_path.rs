//! Micro-benchmarks of the hot path's pieces (issue 8), beside the end-to-end `bench/`:
//! opening the session cookie, the whole cookie session check, an assertion signed (ES256
//! and EdDSA) against one served from the cache, identity-header stripping, and the SAML
//! Response check. `cargo bench --bench hot_path`; under `cargo test` each runs once.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue};
use sidegate::config::Config;
use sidegate::identity::Identity;
use sidegate::session::{Checked, Sessions};
use sidegate::sign::Signer;

#[path = "../tests/it/support/saml_craft.rs"]
#[allow(dead_code)]
mod saml_craft;

const ORIGIN: &str = "http://127.0.0.1:4180";

/// A deployment's config with fresh keys (`eddsa`: Ed25519 assertion key, else P-256) and,
/// with `saml`, a SAML IdP whose metadata pins `idp`.
/// A deployment in a temporary directory, and its config text (to load it again).
fn deployment(
    eddsa: bool,
    idp: Option<&saml_craft::TestIdpKey>,
) -> (tempfile::TempDir, Config, String) {
    let dir = tempfile::tempdir().unwrap();
    let keys = sidegate::keys::generate(eddsa);
    std::fs::write(
        dir.path().join("cookie-secrets"),
        format!("{}\n", keys.cookie_secret),
    )
    .unwrap();
    std::fs::write(dir.path().join("assertion-key.pem"), &keys.signing_key_pem).unwrap();
    std::fs::write(dir.path().join("client-secret"), "s\n").unwrap();
    let mut text = format!(
        "[server]\npublic_url = \"{ORIGIN}\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n\
         [oidc]\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"c\"\nclient_secret_file = \"client-secret\"\n\
         [session]\nsecrets_file = \"cookie-secrets\"\ncookie_secure = false\n\
         [assertion]\nsigning_keys_file = \"assertion-key.pem\"\n\
         [identity]\nroles = [\"admin\", \"viewer\"]\ndefault_role = \"viewer\"\n"
    );
    if let Some(k) = idp {
        std::fs::write(
            dir.path().join("idp.xml"),
            saml_craft::metadata(saml_craft::IDP_ENTITY, &[k]),
        )
        .unwrap();
        text.push_str("[saml]\nidp_metadata_file = \"idp.xml\"\n");
    }
    let cfg = sidegate::config::load(&text, &Default::default(), dir.path()).unwrap();
    (dir, cfg, text)
}

fn identity() -> Identity {
    Identity {
        issuer: "https://idp.example.com".into(),
        subject: "248289761001".into(),
        user: "alice".into(),
        email: Some("alice@example.com".into()),
        role: "admin".into(),
        teams: vec!["platform".into(), "sre".into(), "llm-gateway-admins".into()],
        extra: vec![],
    }
}

/// A browser request's headers with the session cookie (and two spoofed identity headers).
fn request_headers(cookie: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/148.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("referer", "https://app.example.com/dashboard"),
        ("x-sidegate-user", "mallory"),
        ("X_Sidegate_Role", "admin"),
    ] {
        h.append(n, HeaderValue::from_static(v));
    }
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!("theme=dark; {cookie}")).unwrap(),
    );
    h
}

fn session_bench(c: &mut Criterion) {
    let (dir, cfg, text) = deployment(false, None);
    let store =
        Arc::new(sidegate::store::Shared::new(&cfg.session.store, cfg.server.threads).unwrap());
    let secrets = std::fs::read_to_string(dir.path().join("cookie-secrets")).unwrap();
    let keys = sidegate::keys::CookieKeys::parse(&secrets).unwrap();
    let sessions = Sessions::new(cfg.session, store.clone());
    let now = SystemTime::now();
    let (_, set) = sessions
        .create(identity(), None, now)
        .now_or_never()
        .unwrap()
        .unwrap();
    let cookie = set[0]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let value = cookie.split_once('=').unwrap().1.to_string();
    let headers = request_headers(&cookie);
    c.bench_function("cookie_open (XChaCha20-Poly1305, one cookie)", |b| {
        b.iter(|| sidegate::session::cookie::open(&keys, b"sidegate session v1", &value).unwrap())
    });
    let valid = |c: Checked| match c {
        Checked::Valid(s) | Checked::Touch(s) => s,
        other => panic!("{other:?}"),
    };
    c.bench_function(
        "session_check (cookie headers -> session, kept opened)",
        |b| b.iter(|| valid(sessions.check(&headers, now).now_or_never().unwrap())),
    );
    c.bench_function(
        "session_check_first (the cookie's first request: opened)",
        |b| {
            b.iter_batched(
                || {
                    let again =
                        sidegate::config::load(&text, &Default::default(), dir.path()).unwrap();
                    Sessions::new(again.session, store.clone())
                },
                |fresh| valid(fresh.check(&headers, now).now_or_never().unwrap()),
                BatchSize::PerIteration,
            )
        },
    );
}

fn sign_bench(c: &mut Criterion) {
    for (name, eddsa) in [("ES256", false), ("EdDSA", true)] {
        let (_dir, cfg, _) = deployment(eddsa, None);
        let signer = Signer::new(cfg.assertion, cfg.headers, ORIGIN.into());
        let id = identity();
        let now = SystemTime::now();
        let mut n = 0u64;
        c.bench_function(
            &format!("assertion_sign {name} (uncached: claims, signature, headers)"),
            |b| {
                b.iter(|| {
                    n += 1;
                    signer.identity_headers_for(&format!("s{n}"), &id, None, None, now)
                })
            },
        );
        if !eddsa {
            signer.identity_headers_for("hot", &id, None, None, now);
            c.bench_function("assertion_cached (the hot path: a cache hit)", |b| {
                b.iter(|| signer.identity_headers_for("hot", &id, None, None, now))
            });
        }
    }
}

fn strip_bench(c: &mut Criterion) {
    let (_dir, cfg, _) = deployment(false, None);
    let signer = Signer::new(cfg.assertion, cfg.headers, ORIGIN.into());
    let headers = request_headers("_sidegate=v1.x");
    c.bench_function("strip_identity_headers (9 headers, 2 spoofed)", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| signer.strip(h),
            BatchSize::SmallInput,
        )
    });
}

fn saml_bench(c: &mut Criterion) {
    let idp = saml_craft::TestIdpKey::new("bench idp");
    let (_dir, cfg, _) = deployment(false, Some(&idp));
    let saml = sidegate::login::saml::Saml::new(
        cfg.saml.unwrap(),
        sidegate::login::saml::SpUrls::new(ORIGIN, "/.sidegate"),
    )
    .unwrap();
    let craft = saml_craft::Craft::new(
        SystemTime::now(),
        &format!("{ORIGIN}/.sidegate/saml/metadata"),
        &format!("{ORIGIN}/.sidegate/saml/acs"),
    );
    let xml = craft.signed(&idp, saml_craft::Sign::Both);
    c.bench_function(
        "saml_response_check (RSA-2048, response + assertion signed)",
        |b| {
            b.iter(|| {
                saml.check(&xml, Some(saml_craft::REQ_ID), craft.now)
                    .unwrap()
            })
        },
    );
}

criterion_group!(benches, session_bench, sign_bench, strip_bench, saml_bench);
criterion_main!(benches);
