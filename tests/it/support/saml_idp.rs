//! A real third-party SAML 2.0 IdP: SimpleSAMLphp 1.19 (Debian package `simplesamlphp`) under
//! PHP's built-in web server on an ephemeral loopback port. Its configuration is rendered from
//! tests/saml-idp into a temp dir (SIMPLESAMLPHP_CONFIG_DIR) with a fresh RSA key, so nothing
//! under /etc or /var is read or written; the child is killed when the `SamlIdp` is dropped.
//!
//! Users: alice, bob, carol, dave, password `<user>-pw` (tests/saml-idp/authsources.php).
//! Endpoints, relative to `base`: SSO `/saml2/idp/SSOService.php` (HTTP-Redirect),
//! SLO `/saml2/idp/SingleLogoutService.php` (HTTP-Redirect), metadata = entity ID
//! `/saml2/idp/metadata.php`. The login form (`/module.php/core/loginuserpass.php`) posts
//! `username`, `password` and a hidden `AuthState` to `?`. SSP's error pages answer 200.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Where the Debian package installs SimpleSAMLphp's document root.
const SSP_WWW: &str = "/usr/share/simplesamlphp/www";
/// The temp dir's layout: configuration, key, logs and SSP's state (see config.php.in).
const DIRS: [&str; 7] = [
    "config", "metadata", "cert", "log", "data", "tmp", "sessions",
];

/// The one SP the IdP knows (sidegate under test), given by parameters, not metadata XML.
pub struct SamlIdpSp<'a> {
    pub entity_id: &'a str,
    /// AssertionConsumerService, HTTP-POST binding.
    pub acs_url: &'a str,
    /// SingleLogoutService, HTTP-Redirect binding, for LogoutRequests and LogoutResponses.
    pub slo_url: &'a str,
    /// The SP's signing certificate (PEM). With it, the IdP rejects AuthnRequests and logout
    /// messages not signed by its key; without it, it accepts them unsigned.
    pub cert_pem: Option<&'a str>,
    /// Encrypt assertions to this certificate (PEM): `EncryptedAssertion` in every response.
    pub encrypt_to: Option<&'a str>,
}

pub struct SamlIdp {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `{base}/saml2/idp/metadata.php`, also the metadata URL.
    pub entity_id: String,
    /// The IdP's metadata document (signing certificate, SSO and SLO endpoints).
    pub metadata_xml: String,
    // Declared before `dir`: the server is killed before its directory is removed.
    _child: Child,
    dir: tempfile::TempDir,
}

impl SamlIdp {
    /// Renders the configuration, starts `php -S` and waits (≤ 20 s) for the metadata.
    pub async fn start(sp: &SamlIdpSp<'_>) -> SamlIdp {
        assert!(
            Path::new(SSP_WWW).is_dir(),
            "{SSP_WWW} is missing: run scripts/test-deps.sh (Debian package simplesamlphp)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in DIRS {
            fs::create_dir(d.join(sub)).unwrap();
        }
        // A fresh IdP key per instance; rcgen cannot generate RSA keys, SAML peers expect RSA.
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args(["-subj", "/CN=sidegate test SAML IdP", "-keyout"])
            .arg(d.join("cert/idp.key"))
            .arg("-out")
            .arg(d.join("cert/idp.crt"))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("the openssl CLI must be installed");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let src = super::repo().join("tests/saml-idp");
        for (file, sub) in [
            ("authsources.php", "config"),
            ("saml20-sp-remote.php", "metadata"),
        ] {
            fs::copy(src.join(file), d.join(sub).join(file)).unwrap();
        }
        // saml20-sp-remote.php reads this; JSON spares us quoting values into PHP.
        let body = |pem: &str| {
            pem.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
        };
        let sp_json = serde_json::json!({
            "entity_id": sp.entity_id, "acs_url": sp.acs_url, "slo_url": sp.slo_url,
            "cert_data": sp.cert_pem.map(body), "encrypt_to": sp.encrypt_to.map(body),
        });
        fs::write(d.join("metadata/sp.json"), sp_json.to_string()).unwrap();
        let salt = format!("{:032x}", rand::random::<u128>());

        // The port is probed free, then bound by php: another process may take it in between,
        // and php then exits at once, so a few attempts on fresh ports.
        for attempt in 1..=3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let base = format!("http://127.0.0.1:{port}");
            let entity_id = format!("{base}/saml2/idp/metadata.php");
            let dir_s = d.to_str().unwrap();
            // The SP's host:port, where IdP-initiated logout may return to.
            let sp_host = url::Url::parse(sp.acs_url)
                .map(|u| {
                    format!(
                        "{}:{}",
                        u.host_str().unwrap_or(""),
                        u.port_or_known_default().unwrap_or(80)
                    )
                })
                .unwrap();
            render(
                &src.join("config.php.in"),
                &d.join("config/config.php"),
                &[
                    ("BASE_URL", &base),
                    ("DIR", dir_s),
                    ("SECRET_SALT", &salt),
                    ("SP_HOST", &sp_host),
                ],
            );
            render(
                &src.join("saml20-idp-hosted.php.in"),
                &d.join("metadata/saml20-idp-hosted.php"),
                &[("ENTITY_ID", &entity_id)],
            );
            let log = fs::File::create(d.join("log/php.log")).unwrap();
            let mut child = Command::new("php")
                // Errors go to the log, never into pages (before SSP's headers); SSP 1.19 on
                // PHP 8.2 logs a deprecation per log line, noise that would bury the rest.
                .args(["-d", "display_errors=0", "-d", "log_errors=1"])
                .args(["-d", "error_reporting=E_ALL & ~E_DEPRECATED & ~E_STRICT"])
                .arg("-S")
                .arg(format!("127.0.0.1:{port}"))
                .args(["-t", SSP_WWW])
                .current_dir(d)
                .env("SIMPLESAMLPHP_CONFIG_DIR", d.join("config"))
                // Workers would be forked children that kill_on_drop does not reach.
                .env_remove("PHP_CLI_SERVER_WORKERS")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("php (Debian package php8.2-cli) must be installed");
            let ready = wait_for_metadata(&mut child, &entity_id).await;
            match ready {
                Ok(metadata_xml) => {
                    return SamlIdp {
                        base,
                        entity_id,
                        metadata_xml,
                        _child: child,
                        dir,
                    }
                }
                Err(_) if attempt < 3 && logs(d).contains("Address already in use") => continue,
                Err(why) => panic!("SimpleSAMLphp did not start: {why}\n{}", logs(d)),
            }
        }
        unreachable!()
    }

    /// The unsolicited-login URL (SSP 1.19 allows it for every known SP): after the login
    /// form, the IdP posts a Response without InResponseTo to the SP's ACS.
    pub fn idp_initiated_url(&self, sp_entity_id: &str, relay_state: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("spentityid", sp_entity_id);
        if let Some(r) = relay_state {
            q.append_pair("RelayState", r);
        }
        format!("{}/saml2/idp/SSOService.php?{}", self.base, q.finish())
    }

    /// The last lines of php's request log and of SimpleSAMLphp's own log, for assertion
    /// messages.
    pub fn log_tail(&self) -> String {
        logs(self.dir.path())
    }
}

/// Polls the metadata URL until the server answers; any answer but the metadata is an error
/// (SSP's error pages are HTTP 200, hence the body check).
async fn wait_for_metadata(child: &mut Child, url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("php exited ({status})"));
        }
        match client.get(url).send().await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if status == 200 && body.contains("EntityDescriptor") {
                    return Ok(body);
                }
                let start: String = body.chars().take(500).collect();
                return Err(format!("GET {url}: HTTP {status}, not metadata: {start}"));
            }
            Err(e) if Instant::now() > deadline => {
                return Err(format!("GET {url} still failing after 20 s: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Copies `src` to `dst`, replacing each `@NAME@` by its value; fails on any left over.
fn render(src: &Path, dst: &Path, vars: &[(&str, &str)]) {
    let mut text = fs::read_to_string(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    for (name, value) in vars {
        // The values land in single-quoted PHP strings.
        assert!(
            !value.contains(['\'', '\\']),
            "{name} cannot go into a PHP string: {value}"
        );
        text = text.replace(&format!("@{name}@"), value);
    }
    let leftover = text.match_indices('@').find_map(|(i, _)| {
        let rest = &text[i + 1..];
        let name = &rest[..rest.find('@')?];
        let upper = name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
        (!name.is_empty() && upper).then_some(name)
    });
    assert!(
        leftover.is_none(),
        "{}: placeholder @{}@ not rendered",
        src.display(),
        leftover.unwrap_or_default()
    );
    fs::write(dst, text).unwrap();
}

fn logs(dir: &Path) -> String {
    let tail = |file: &str| {
        let text = fs::read_to_string(dir.join("log").join(file))
            .unwrap_or_else(|e| format!("({file}: {e})"));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    format!(
        "--- php -S (last lines) ---\n{}\n--- simplesamlphp.log (last lines) ---\n{}",
        tail("php.log"),
        tail("simplesamlphp.log")
    )
}
