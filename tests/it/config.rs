//! Configuration loading (`sidegate::config::load`): defaults, every problem reported at once,
//! secrets never inline and never printed, unsafe settings refused; plus the `check-config`
//! and `keys generate` commands of the binary.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sidegate::config::{
    load, Config, ConfigError, CpuAffinity, Env, PathRule, RedisConfig, RedisTarget, SameSite,
    SessionStore,
};
use sidegate::keys::{CookieKeys, Generated, SigningKeys};
use tempfile::TempDir;

const CLIENT_SECRET: &str = "cl13nt-s3cret-value-that-must-never-print";

const MINIMAL: &str = r#"
[server]
public_url = "https://app.example.com"
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "https://idp.example.com"
client_id = "c"
client_secret_file = "client-secret"
[session]
secrets_file = "cookie-secrets"
[assertion]
signing_keys_file = "assertion-key.pem"
"#;

/// A directory holding the secret files the minimal config points at.
struct Dir {
    dir: TempDir,
    keys: Generated,
}

impl Dir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = sidegate::keys::generate(false);
        std::fs::write(
            dir.path().join("cookie-secrets"),
            format!("{}\n", keys.cookie_secret),
        )
        .unwrap();
        std::fs::write(dir.path().join("assertion-key.pem"), &keys.signing_key_pem).unwrap();
        std::fs::write(
            dir.path().join("client-secret"),
            format!("{CLIENT_SECRET}\n"),
        )
        .unwrap();
        Dir { dir, keys }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        self.load_env(text, &Env::new())
    }

    fn load_env(&self, text: &str, env: &Env) -> Result<Config, ConfigError> {
        load(text, env, self.path())
    }

    #[track_caller]
    fn ok(&self, text: &str) -> Config {
        match self.load(text) {
            Ok(c) => c,
            Err(e) => panic!("expected the config to load:\n{e}\n--- config ---\n{text}"),
        }
    }

    #[track_caller]
    fn err(&self, text: &str) -> ConfigError {
        match self.load(text) {
            Ok(_) => panic!("expected the config to be refused:\n{text}"),
            Err(e) => e,
        }
    }
}

/// `MINIMAL` with `line` added to `[section]` (right after its header).
fn with(section: &str, line: &str) -> String {
    let header = format!("[{section}]\n");
    assert!(
        MINIMAL.contains(&header),
        "no [{section}] in the minimal config"
    );
    MINIMAL.replacen(&header, &format!("{header}{line}\n"), 1)
}

/// `MINIMAL` with the line starting with `prefix` removed.
fn without(prefix: &str) -> String {
    let out: Vec<&str> = MINIMAL.lines().filter(|l| !l.starts_with(prefix)).collect();
    assert_eq!(
        out.len() + 1,
        MINIMAL.lines().count(),
        "{prefix} not found once"
    );
    out.join("\n")
}

fn keys_of(err: &ConfigError) -> Vec<&str> {
    err.problems.iter().map(|p| p.key.as_str()).collect()
}

#[track_caller]
fn assert_problem(err: &ConfigError, key: &str) {
    assert!(
        err.problems.iter().any(|p| p.key == key),
        "expected a problem with key {key:?}, got:\n{err}"
    );
}

// ---- the minimal config -------------------------------------------------------------------

#[test]
fn minimal_config_loads_with_the_documented_defaults() {
    let d = Dir::new();
    let c = d.ok(MINIMAL);
    assert_eq!(c.server.prefix, "/.sidegate");
    assert_eq!(
        c.server.listen,
        vec!["127.0.0.1:4180".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        c.server.admin_listen,
        Some("127.0.0.1:9180".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(c.session.cookie_name, "_sidegate");
    assert!(c.session.cookie_secure);
    assert_eq!(c.session.same_site, SameSite::Lax);
    assert!(c.oidc[0].pkce);
    assert_eq!(c.oidc[0].clock_skew, Duration::from_secs(60));
    assert!(c.oidc[0].scopes.iter().any(|s| s == "openid"));
    assert_eq!(c.oidc[0].name, "oidc");
    assert_eq!(c.assertion.lifetime, Duration::from_secs(5 * 60));
    assert_eq!(c.assertion.audience, "https://app.example.com");
    // The secrets come from the files, the client secret without its trailing newline.
    assert_eq!(c.oidc[0].client_secret.expose(), CLIENT_SECRET);
    assert_eq!(c.oidc[0].client_id, "c");
    assert_eq!(c.session.keys.len(), 1);
    assert_eq!(c.assertion.keys.all().len(), 1);
    // One connection thread per core sidegate may use.
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(c.server.threads, cores);
    assert_eq!(c.server.cpu_affinity, CpuAffinity::Auto);
    // A lane for up to 1024 client connections before the pool churns.
    let up = c.upstream.as_ref().unwrap();
    assert_eq!(up.max_idle_connections, 1024);
}

#[test]
fn connection_threads_are_bounded_and_zero_means_the_shared_runtime() {
    let d = Dir::new();
    assert_eq!(d.ok(&with("server", "threads = 0")).server.threads, 0);
    assert_eq!(d.ok(&with("server", "threads = 3")).server.threads, 3);
    let err = d.err(&with("server", "threads = 5000"));
    assert_eq!(keys_of(&err), vec!["server.threads"], "{err}");
}

#[test]
fn cpu_affinity_is_auto_or_off() {
    let d = Dir::new();
    let auto = d.ok(&with("server", r#"cpu_affinity = "auto""#));
    assert_eq!(auto.server.cpu_affinity, CpuAffinity::Auto);
    let off = d.ok(&with("server", r#"cpu_affinity = "off""#));
    assert_eq!(off.server.cpu_affinity, CpuAffinity::Off);
    let err = d.err(&with("server", r#"cpu_affinity = "on""#));
    assert_eq!(keys_of(&err), vec!["server.cpu_affinity"], "{err}");
    assert!(err.to_string().contains("\"auto\""), "{err}");
}

// ---- problems are named and reported together ---------------------------------------------

#[test]
fn unknown_keys_bad_values_and_missing_keys_are_reported_together() {
    let d = Dir::new();
    let text = without("url = \"http://127.0.0.1:8080\"").replace(
        "[session]\n",
        "[session]\ncookie_secur = true\nidle_lifetime = \"forever\"\n",
    ) + "\n[sesion]\ncookie_name = \"x\"\n";
    let err = d.err(&text);
    for key in [
        "session.cookie_secur",
        "sesion",
        "session.idle_lifetime",
        "upstream.url",
    ] {
        assert_problem(&err, key);
    }
    // Each problem says how to fix it.
    for p in &err.problems {
        assert!(!p.fix.is_empty(), "problem without a fix: {p}");
    }
}

#[test]
fn unknown_key_alone_is_an_error_named_by_its_path() {
    let d = Dir::new();
    let err = d.err(&with("oidc", "pcke = false"));
    assert_eq!(keys_of(&err), vec!["oidc.pcke"], "{err}");
    let tls = format!(
        "{MINIMAL}\n[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nkey_fil = \"k.pem\"\n"
    );
    let err = d.err(&tls);
    assert_eq!(keys_of(&err), vec!["server.tls.key_fil"], "{err}");
}

#[test]
fn invalid_toml_is_a_problem_not_a_panic() {
    let d = Dir::new();
    let err = d.err("[server\npublic_url = ");
    assert!(!err.problems.is_empty());
}

// ---- secrets ------------------------------------------------------------------------------

#[test]
fn inline_client_secret_is_refused_with_a_pointer_to_the_file_option() {
    let d = Dir::new();
    let text = without("client_secret_file").replace(
        "[oidc]\n",
        &format!("[oidc]\nclient_secret = \"{CLIENT_SECRET}\"\n"),
    );
    let err = d.err(&text);
    let p = err
        .problems
        .iter()
        .find(|p| p.key == "oidc.client_secret")
        .unwrap_or_else(|| panic!("no oidc.client_secret problem in:\n{err}"));
    assert!(p.fix.contains("client_secret_file"), "fix: {}", p.fix);
    // The refusal itself must not echo the secret.
    assert!(!err.to_string().contains(CLIENT_SECRET), "{err}");
}

#[test]
fn inline_client_secret_is_refused_even_next_to_a_secret_file() {
    let d = Dir::new();
    let err = d.err(&with("oidc", "client_secret = \"x\""));
    assert_problem(&err, "oidc.client_secret");
}

#[test]
fn inline_session_and_assertion_secrets_are_refused() {
    let d = Dir::new();
    let err = d.err(&with("session", "secrets = \"AAAA\""));
    assert_problem(&err, "session.secrets");
    let err = d.err(&with(
        "assertion",
        "signing_keys = \"-----BEGIN PRIVATE KEY-----\"",
    ));
    assert_problem(&err, "assertion.signing_keys");
}

#[test]
fn client_secret_is_read_from_the_env_var_named_by_client_secret_env() {
    let d = Dir::new();
    let text = without("client_secret_file")
        .replace("[oidc]\n", "[oidc]\nclient_secret_env = \"MY_SECRET\"\n");
    let env = Env::from([("MY_SECRET".to_string(), "from-the-env".to_string())]);
    let c = d.load_env(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.oidc[0].client_secret.expose(), "from-the-env");
    // Unset variable: a problem naming the key, not an empty secret.
    let err = d
        .load_env(&text, &Env::new())
        .err()
        .expect("loaded without MY_SECRET");
    assert_problem(&err, "oidc.client_secret_env");
}

#[test]
fn redacted_config_shows_no_secret_material() {
    let d = Dir::new();
    let c = d.ok(MINIMAL);
    let out = c.redacted_toml();
    // It is the effective config...
    let parsed: toml::Table = out.parse().unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(parsed["oidc"]["client_id"].as_str(), Some("c"));
    assert_eq!(parsed["server"]["prefix"].as_str(), Some("/.sidegate"));
    // ...without the client secret, the cookie secret or any line of the private key.
    assert!(
        !out.contains(CLIENT_SECRET),
        "client secret printed:\n{out}"
    );
    assert!(
        !out.contains(&d.keys.cookie_secret),
        "cookie secret printed:\n{out}"
    );
    assert!(!out.contains("PRIVATE KEY"), "PEM printed:\n{out}");
    for line in d.keys.signing_key_pem.lines().filter(|l| !l.is_empty()) {
        assert!(!out.contains(line), "PEM line {line:?} printed:\n{out}");
    }
    // Debug output of the config must not leak either.
    let debug = format!("{c:?}");
    assert!(!debug.contains(CLIENT_SECRET), "client secret in Debug");
    assert!(
        !debug.contains(&d.keys.cookie_secret),
        "cookie secret in Debug"
    );
}

// ---- environment overrides ----------------------------------------------------------------

#[test]
fn env_override_wins_over_the_file() {
    let d = Dir::new();
    let env = Env::from([(
        "SIDEGATE_OIDC__CLIENT_ID".to_string(),
        "fromenv".to_string(),
    )]);
    let c = d.load_env(MINIMAL, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.oidc[0].client_id, "fromenv");
}

#[test]
fn env_override_with_brackets_is_a_list() {
    let d = Dir::new();
    let env = Env::from([(
        "SIDEGATE_ACCESS__PUBLIC_PATHS".to_string(),
        r#"["/a/","/b"]"#.to_string(),
    )]);
    let c = d.load_env(MINIMAL, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.access.public_paths,
        vec![PathRule::Prefix("/a/".into()), PathRule::Exact("/b".into())]
    );
}

#[test]
fn env_override_of_a_number_is_read_as_one_and_a_numeric_string_stays_a_string() {
    let d = Dir::new();
    let env = Env::from([
        ("SIDEGATE_SERVER__THREADS".to_string(), "3".to_string()),
        (
            "SIDEGATE_SERVER__MAX_CONNECTIONS".to_string(),
            "500".to_string(),
        ),
        ("SIDEGATE_OIDC__CLIENT_ID".to_string(), "123456".to_string()),
    ]);
    let c = d.load_env(MINIMAL, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.threads, 3);
    assert_eq!(c.server.max_connections, 500);
    assert_eq!(c.oidc[0].client_id, "123456");
    for bad in ["many", "-1", "1.5"] {
        let env = Env::from([("SIDEGATE_SERVER__THREADS".to_string(), bad.to_string())]);
        let err = d
            .load_env(MINIMAL, &env)
            .err()
            .expect("not a number, refused");
        assert_problem(&err, "server.threads");
    }
    // In the file a negative number is named as such.
    let err = d.err(&with("server", "max_connections = -5"));
    assert!(err.to_string().contains("-5 is negative"), "{err}");
}

#[test]
fn env_override_cannot_smuggle_an_unsafe_value_past_validation() {
    let d = Dir::new();
    let env = Env::from([(
        "SIDEGATE_OIDC__ALLOWED_ALGS".to_string(),
        r#"["HS256"]"#.to_string(),
    )]);
    let err = d
        .load_env(MINIMAL, &env)
        .err()
        .expect("HS256 via env accepted");
    assert_problem(&err, "oidc.allowed_algs");
}

// ---- unsafe settings ----------------------------------------------------------------------

#[test]
fn plain_http_public_url_needs_an_explicit_cookie_secure_false() {
    let d = Dir::new();
    let http = MINIMAL.replace("https://app.example.com", "http://app.example.com");
    let err = d.err(&http);
    assert_problem(&err, "session.cookie_secure");
    // The explicit opt-out makes it load, with non-Secure cookies.
    let opted_out = http.replace("[session]\n", "[session]\ncookie_secure = false\n");
    let c = d.ok(&opted_out);
    assert!(!c.session.cookie_secure);
}

#[test]
fn alg_none_is_refused() {
    let d = Dir::new();
    let err = d.err(&with("oidc", r#"allowed_algs = ["none"]"#));
    assert_problem(&err, "oidc.allowed_algs");
}

#[test]
fn hmac_algs_are_refused() {
    let d = Dir::new();
    for alg in ["HS256", "HS384", "HS512"] {
        let err = d.err(&with("oidc", &format!(r#"allowed_algs = ["{alg}"]"#)));
        assert_problem(&err, "oidc.allowed_algs");
    }
    // Also when mixed with an allowed one.
    let err = d.err(&with("oidc", r#"allowed_algs = ["ES256", "HS256"]"#));
    assert_problem(&err, "oidc.allowed_algs");
}

#[test]
fn empty_alg_list_is_refused() {
    let d = Dir::new();
    let err = d.err(&with("oidc", "allowed_algs = []"));
    assert_problem(&err, "oidc.allowed_algs");
}

#[test]
fn plain_http_issuer_is_refused_unless_loopback() {
    let d = Dir::new();
    for issuer in [
        "http://idp.example.com",
        "http://localhost.evil.com",
        "http://10.0.0.1",
    ] {
        let err = d.err(&MINIMAL.replace("https://idp.example.com", issuer));
        assert_problem(&err, "oidc.issuer");
    }
    // Loopback http is the test-IdP exception.
    for issuer in [
        "http://127.0.0.1:9000",
        "http://localhost:9000",
        "http://[::1]:9000",
    ] {
        d.ok(&MINIMAL.replace("https://idp.example.com", issuer));
    }
}

#[test]
fn public_path_under_the_reserved_prefix_is_refused() {
    let d = Dir::new();
    for path in ["/.sidegate/x", "/.sidegate", "/.sidegate/", "/"] {
        let err = d.err(&format!(
            "{MINIMAL}\n[access]\npublic_paths = [\"{path}\"]\n"
        ));
        assert_problem(&err, "access.public_paths");
    }
    // A custom prefix is the one protected.
    let custom =
        with("server", "prefix = \"/_auth\"") + "\n[access]\npublic_paths = [\"/_auth/start\"]\n";
    assert_problem(&d.err(&custom), "access.public_paths");
}

#[test]
fn non_canonical_public_paths_are_refused() {
    let d = Dir::new();
    for path in ["static/", "/a/../b", "/a//b", "/a%2fb", "/a;x", "/a\\\\b"] {
        let err = d.err(&format!(
            "{MINIMAL}\n[access]\npublic_paths = [\"{path}\"]\n"
        ));
        assert_problem(&err, "access.public_paths");
    }
}

#[test]
fn no_upstream_section_is_a_forward_auth_only_deployment() {
    let d = Dir::new();
    let c = d.ok(&without("[upstream]").replace("url = \"http://127.0.0.1:8080\"\n", ""));
    assert!(c.upstream.is_none());
    // A section without its url is still a mistake, named as such.
    assert_problem(
        &d.err(&without("url = \"http://127.0.0.1:8080\"")),
        "upstream.url",
    );
}

#[test]
fn bearer_issuers_need_an_audience_and_keep_secrets_out_of_the_file() {
    let d = Dir::new();
    let ok = d.ok(&format!(
        "{MINIMAL}\n[[bearer.issuers]]\nissuer = \"https://idp.example.com\"\naudience = \"api://app\"\n"
    ));
    assert_eq!(ok.bearer.len(), 1);
    assert_eq!(ok.bearer[0].token_types, ["at+jwt"], "RFC 9068 by default");
    let out = ok.redacted_toml();
    assert!(out.contains("api://app"), "{out}");

    let err = d.err(&format!(
        "{MINIMAL}\n[[bearer.issuers]]\nissuer = \"http://idp.example.com\"\nallowed_algs = [\"HS256\"]\n\
         introspection = true\nintrospection_client_secret = \"inline\"\ntoken_types = []\n"
    ));
    for key in [
        "bearer.issuers[0].issuer",
        "bearer.issuers[0].audience",
        "bearer.issuers[0].allowed_algs",
        "bearer.issuers[0].introspection_client_id",
        "bearer.issuers[0].introspection_client_secret",
        "bearer.issuers[0].token_types",
    ] {
        assert_problem(&err, key);
    }
    // A typo inside an issuer table is reported too.
    let err = d.err(&format!(
        "{MINIMAL}\n[[bearer.issuers]]\nissuer = \"https://idp.example.com\"\naudience = \"a\"\naudiance = \"b\"\n"
    ));
    assert!(
        keys_of(&err).iter().any(|k| k.contains("audiance")),
        "{err}"
    );
}

#[test]
fn compat_headers_are_a_closed_list() {
    let d = Dir::new();
    let c = d.ok(&with(
        "assertion",
        "compat_headers = [\"pomerium\", \"iap\"]",
    ));
    assert_eq!(c.assertion.compat_headers.len(), 2);
    assert_problem(
        &d.err(&with("assertion", "compat_headers = [\"cloudflare\"]")),
        "assertion.compat_headers",
    );
}

#[test]
fn identity_rules_extras_and_the_sample_are_checked_at_start() {
    let d = Dir::new();
    let base = format!("{MINIMAL}\n[identity]\nroles = [\"admin\", \"viewer\"]\nrole_claim = \"realm_access.roles\"\n");
    let good = format!(
        "{base}[[identity.role_rules]]\nrole = \"admin\"\nteams = [\"okta-admins\"]\n\
         [[identity.extra]]\nname = \"department\"\nheader = \"X-Sidegate-Department\"\n\
         [identity.sample]\nsub = \"1\"\npreferred_username = \"sam\"\nrealm_access = {{ roles = [\"admin\"] }}\n"
    );
    let c = d.ok(&good);
    assert_eq!(c.identity.role_rules.len(), 1);
    assert_eq!(c.headers.extra[0].1.as_str(), "x-sidegate-department");

    let bad = format!(
        "{base}[[identity.role_rules]]\nrole = \"root\"\nteams = [\"x\"]\n\
         [[identity.role_rules]]\nrole = \"admin\"\n\
         [[identity.role_rules]]\nrole = \"admin\"\nclaim = \"department\"\n\
         [[identity.extra]]\nname = \"role\"\n\
         [[identity.extra]]\nname = \"a b\"\n\
         [[identity.extra]]\nname = \"ok\"\nheader = \"bad header\"\n\
         [identity.sample]\nsub = \"1\"\n"
    );
    // The sample names no user under `user_claims`: a login with such claims would fail.
    let err = d.err(&bad.replace(
        "role_claim = ",
        "user_claims = [\"preferred_username\"]
role_claim = ",
    ));
    for key in [
        "identity.role_rules[0].role",
        "identity.role_rules[1]",
        "identity.role_rules[2].claim",
        "identity.extra[0].name",
        "identity.extra[1].name",
        "identity.extra[2].header",
        "identity.sample",
    ] {
        assert_problem(&err, key);
    }
    // An extra header may not take an identity header's name.
    let clash = format!("{base}[[identity.extra]]\nname = \"x\"\nheader = \"X-Sidegate-User\"\n");
    assert_problem(&d.err(&clash), "headers");
}

#[test]
fn policy_routes_are_checked_at_start() {
    let d = Dir::new();
    let base = format!("{MINIMAL}\n[identity]\nroles = [\"admin\", \"viewer\"]\n");
    let ok = d.ok(&format!(
        "{base}[policy]\ndefault = \"deny\"\n[[policy.routes]]\nname = \"admin\"\npaths = [\"/admin\"]\nhosts = [\"*.example.com\"]\n\
         methods = [\"get\"]\nallow = [{{ roles = [\"admin\"] }}]\n"
    ));
    assert_eq!(ok.policy.routes.len(), 1);
    let bad = format!(
        "{base}[policy]\ndefault = \"maybe\"\n\
         [[policy.routes]]\npaths = [\"/a/../b\", \"/.sidegate/x\"]\nallow = [{{}}]\n\
         [[policy.routes]]\nallow = [{{ roles = [\"root\"], claims = {{ dept = [\"x\"] }} }}]\n\
         [[policy.routes]]\naccess = \"public\"\ndeny = [{{ teams = [\"x\"] }}]\n\
         [[policy.routes]]\naccess = \"rules\"\nhosts = [\"bad host\"]\nmethods = [\"G T\"]\n\
         [[policy.routes]]\naccess = \"open\"\nadd_headers = {{ \"bad name\" = \"v\" }}\n"
    );
    let err = d.err(&bad);
    for key in [
        "policy.default",
        "policy.routes[0].paths",
        "policy.routes[0].allow[0]",
        "policy.routes[1].allow[0].roles",
        "policy.routes[1].allow[0].claims",
        "policy.routes[2].access",
        "policy.routes[3].access",
        "policy.routes[3].hosts",
        "policy.routes[3].methods",
        "policy.routes[4].access",
        "policy.routes[4].add_headers",
    ] {
        assert_problem(&err, key);
    }
}

#[test]
fn several_oidc_providers_and_login_rules_are_checked() {
    let d = Dir::new();
    let two = format!(
        "{MINIMAL}\n[oidc.providers.partner]\nissuer = \"https://partner.example.com\"\nclient_id = \"p\"\nclient_secret_file = \"client-secret\"\n\
         [login]\nchooser = true\n[[login.rules]]\nprovider = \"partner\"\nemail_domains = [\"Partner.example\"]\n"
    );
    let c = d.ok(&two);
    let names: Vec<&str> = c.oidc.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["oidc", "partner"]);
    assert_eq!(c.login.rules[0].email_domains, ["partner.example"]);
    let out = c.redacted_toml();
    assert!(out.contains("[oidc.providers.partner]"), "{out}");
    assert!(!out.contains(CLIENT_SECRET));

    let bad = format!(
        "{MINIMAL}\n[oidc.providers.partner]\nclient_id = \"p\"\nclient_secret = \"inline\"\n\
         [oidc.providers.\"bad name\"]\nissuer = \"https://x.example\"\n\
         [login]\n[[login.rules]]\nprovider = \"nobody\"\nhosts = [\"a.example\"]\n[[login.rules]]\nprovider = \"partner\"\n"
    );
    let err = d.err(&bad);
    for key in [
        "oidc.providers.partner.issuer",
        "oidc.providers.partner.client_secret",
        "oidc.providers.bad name",
        "login.rules[0].provider",
        "login.rules[1].provider",
    ] {
        assert_problem(&err, key);
    }
    // A typo inside a provider table is an unknown key.
    let err = d.err(
        &format!("{two}\n").replace("client_id = \"p\"", "client_id = \"p\"\nclient_idd = \"q\""),
    );
    assert!(
        keys_of(&err).iter().any(|k| k.contains("client_idd")),
        "{err}"
    );
}

// ---- the binary ---------------------------------------------------------------------------

fn sidegate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidegate"));
    // The binary reads SIDEGATE_* overrides from its environment: start from an empty one.
    cmd.env_clear();
    cmd
}

#[test]
fn check_config_prints_the_redacted_config_for_a_good_file() {
    let d = Dir::new();
    let file = d.path().join("sidegate.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    let out = sidegate()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let parsed: toml::Table = stdout.parse().unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    assert_eq!(parsed["oidc"]["client_id"].as_str(), Some("c"));
    assert!(!stdout.contains(CLIENT_SECRET), "{stdout}");
    assert!(!stdout.contains(&d.keys.cookie_secret), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
}

#[test]
fn check_config_exits_64_and_lists_problems_for_a_bad_file() {
    let d = Dir::new();
    let file = d.path().join("sidegate.toml");
    let bad = MINIMAL.replace("https://app.example.com", "http://app.example.com")
        + "\n[sesion]\nx = 1\n";
    std::fs::write(&file, bad).unwrap();
    let out = sidegate()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr:\n{stderr}");
    assert!(stderr.contains("session.cookie_secure"), "{stderr}");
    assert!(stderr.contains("sesion"), "{stderr}");
    assert!(out.stdout.is_empty(), "printed a config for a bad file");
}

#[test]
fn check_config_exits_64_for_a_missing_file() {
    let d = Dir::new();
    let out = sidegate()
        .args(["check-config", "--config"])
        .arg(d.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn keys_generate_writes_loadable_owner_only_files() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("new-keys");
    let out = sidegate()
        .args(["keys", "generate", "--out-dir"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secrets = out_dir.join("cookie-secrets");
    let pem = out_dir.join("assertion-key.pem");
    let keys = CookieKeys::parse(&std::fs::read_to_string(&secrets).unwrap()).unwrap();
    assert_eq!(keys.len(), 1);
    let signing = SigningKeys::from_pem(&std::fs::read_to_string(&pem).unwrap()).unwrap();
    assert_eq!(signing.all().len(), 1);
    for f in [&secrets, &pem] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
    // Nothing secret goes to stdout when writing files.
    assert!(out.stdout.is_empty());
}

#[test]
fn keys_generate_never_overwrites_existing_keys() {
    let d = tempfile::tempdir().unwrap();
    let existing = d.path().join("cookie-secrets");
    std::fs::write(&existing, "keep me\n").unwrap();
    let out = sidegate()
        .args(["keys", "generate", "--out-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "overwrote an existing key file");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me\n");
}

// ---- session store --------------------------------------------------------------------------

#[test]
fn session_store_choices_and_their_mistakes_are_named() {
    let d = Dir::new();
    let store = |lines: &str| MINIMAL.to_string() + "\n[session.redis]\n" + lines;
    let redis =
        |lines: &str| store(lines).replacen("[session]\n", "[session]\nstore = \"redis\"\n", 1);
    assert!(
        matches!(d.ok(MINIMAL).session.store, SessionStore::Cookie),
        "cookie by default"
    );
    assert!(matches!(
        d.ok(&with("session", "store = \"memory\"")).session.store,
        SessionStore::Memory
    ));
    let both = with(
        "session",
        "store = \"memory\"\nlogin_transactions = \"store\"",
    );
    assert!(d.ok(&both).session.login_in_store);
    assert!(
        !d.ok(MINIMAL).session.login_in_store,
        "transactions in cookies by default"
    );
    std::fs::write(d.path().join("redis-pw"), "pw\n").unwrap();
    let c = d.ok(&redis("url = \"rediss://10.0.0.5:6380/2\"\nusername = \"sg\"\npassword_file = \"redis-pw\"\ntimeout = \"250ms\""));
    let SessionStore::Redis(r) = c.session.store else {
        panic!("redis store expected")
    };
    assert!(matches!(r.target, RedisTarget::Standalone(ref u) if u == "rediss://10.0.0.5:6380/2"));
    assert_eq!(
        r.password.as_ref().map(|p| p.expose()),
        Some("pw"),
        "trailing newline trimmed"
    );
    assert_eq!(r.timeout, std::time::Duration::from_millis(250));
    assert_eq!(r.prefix, "sidegate:");
    let s = d.ok(&redis(
        "sentinels = [\"redis://10.0.0.1:26379\"]\nmaster_name = \"mymaster\"",
    ));
    assert!(matches!(
        s.session.store,
        SessionStore::Redis(RedisConfig {
            target: RedisTarget::Sentinel { .. },
            ..
        })
    ));
    let k = d.ok(&redis(
        "cluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
    ));
    assert!(
        matches!(k.session.store, SessionStore::Redis(RedisConfig { target: RedisTarget::Cluster(ref n), .. }) if n.len() == 2)
    );

    for (text, key) in [
        (with("session", "store = \"disk\""), "session.store"),
        (
            with("session", "login_transactions = \"store\""),
            "session.login_transactions",
        ),
        (
            with("session", "login_transactions = \"nowhere\""),
            "session.login_transactions",
        ),
        (with("session", "store = \"redis\""), "session.redis"),
        (store("url = \"redis://h:6379\""), "session.redis"),
        (redis("url = \"http://h:6379\""), "session.redis.url"),
        (redis("url = \"redis://:pw@h:6379\""), "session.redis.url"),
        (
            redis("url = \"redis://h\"\ncluster = [\"redis://h:7000\"]"),
            "session.redis",
        ),
        (redis(""), "session.redis"),
        (
            redis("sentinels = [\"redis://h:26379\"]"),
            "session.redis.master_name",
        ),
        (
            redis("url = \"redis://h\"\npassword = \"inline\""),
            "session.redis.password",
        ),
        (
            redis("url = \"redis://h\"\nca_file = \"missing.pem\""),
            "session.redis.ca_file",
        ),
        (
            redis("url = \"redis://h\"\ntimeout = \"soon\""),
            "session.redis.timeout",
        ),
    ] {
        assert_problem(&d.err(&text), key);
    }
}
