//! Test harness: an echo upstream, sidegate started in-process on 127.0.0.1:0, the real
//! `oidc-provider` as a child process, and a small browser (cookie jar + form following).

pub mod browser;
pub mod dev;
pub mod fake_idp;
pub mod nginx;
pub mod op;
pub mod process;
pub mod redis;
pub mod saml_craft;
pub mod saml_idp;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sidegate::config::{self, Config};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Key material in a temp dir, as `sidegate keys generate` would write it.
pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let g = sidegate::keys::generate(false);
        std::fs::write(
            dir.path().join("cookie-secrets"),
            format!("{}\n", g.cookie_secret),
        )
        .unwrap();
        std::fs::write(dir.path().join("assertion-key.pem"), g.signing_key_pem).unwrap();
        std::fs::write(dir.path().join("client-secret"), "sidegate-secret\n").unwrap();
        Keys { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Listeners bound before the config exists, so the public URL is known.
pub struct Bound {
    public: TcpListener,
    admin: TcpListener,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl Bound {
    pub async fn new() -> Self {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        Bound {
            public,
            admin,
            addr,
            admin_addr,
        }
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Builds a sidegate config: the defaults tests rely on plus `extra` TOML appended to the
/// named sections (`extra` is a map of section → lines).
pub fn config_text(
    public_url: &str,
    upstream: &str,
    issuer: &str,
    extra: &[(&str, &str)],
) -> String {
    let section = |name: &str| {
        extra
            .iter()
            .filter(|(s, _)| *s == name)
            .map(|(_, l)| format!("{l}\n"))
            .collect::<String>()
    };
    format!(
        r#"
[server]
public_url = "{public_url}"
{server}
[upstream]
url = "{upstream}"
{upstream_x}
[oidc]
issuer = "{issuer}"
client_id = "sidegate"
client_secret_file = "client-secret"
scopes = ["openid", "email", "profile", "roles"]
jwks_min_refresh_interval = "60s"
{oidc}
[session]
secrets_file = "cookie-secrets"
cookie_secure = false
{session}
[assertion]
signing_keys_file = "assertion-key.pem"
{assertion}
[identity]
roles = ["admin", "developer", "viewer"]
default_role = "viewer"
{identity}
[headers]
{headers}
[access]
public_paths = ["/public/"]
{access}
"#,
        server = section("server"),
        upstream_x = section("upstream"),
        oidc = section("oidc"),
        session = section("session"),
        assertion = section("assertion"),
        identity = section("identity"),
        headers = section("headers"),
        access = section("access"),
    )
}

pub fn load(text: &str, keys: &Keys) -> Config {
    match config::load(text, &config::Env::new(), keys.path()) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid: {e}"),
    }
}

/// A running sidegate; shuts down when dropped.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Sidecar {
    pub fn start(bound: Bound, config: Config) -> Self {
        Self::started(bound, config, None)
    }
    /// Also returns the sender of in-process reloads (what SIGHUP does in the binary).
    pub fn start_reloading(
        bound: Bound,
        config: Config,
    ) -> (Self, tokio::sync::mpsc::Sender<Config>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        (Self::started(bound, config, Some(rx)), tx)
    }
    fn started(
        bound: Bound,
        config: Config,
        reloads: Option<tokio::sync::mpsc::Receiver<Config>>,
    ) -> Self {
        let (stop, rx) = watch::channel(false);
        let listeners = sidegate::Listeners {
            public: vec![bound.public],
            admin: Some(bound.admin),
        };
        let task = tokio::spawn(async move {
            sidegate::run_reloading(listeners, config, rx, reloads)
                .await
                .unwrap();
        });
        Sidecar {
            addr: bound.addr,
            admin_addr: bound.admin_addr,
            stop,
            task: Some(task),
        }
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A session cookie header minted with the deployment's own keys (what a login produces),
/// for proxy tests that are not about the login itself.
pub fn session_cookie(text: &str, keys: &Keys, user: &str, role: &str, at: SystemTime) -> String {
    let identity = sidegate::identity::Identity {
        issuer: "http://idp.test".into(),
        subject: format!("sub-{user}"),
        user: user.into(),
        email: Some(format!("{user}@example.test")),
        role: role.into(),
        teams: vec!["devs".into(), "ops".into()],
        extra: vec![],
    };
    session_cookie_for(text, keys, identity, at)
}

/// A session cookie for any identity (see `session_cookie`).
pub fn session_cookie_for(
    text: &str,
    keys: &Keys,
    identity: sidegate::identity::Identity,
    at: SystemTime,
) -> String {
    let cfg = load(text, keys);
    let store = std::sync::Arc::new(
        sidegate::store::Shared::new(&cfg.session.store, cfg.server.threads).unwrap(),
    );
    let sessions = sidegate::session::Sessions::new(cfg.session, store);
    // Cookie sessions touch no store, so creating one completes at once.
    let (_, cookies) = futures_util::FutureExt::now_or_never(sessions.create(identity, None, at))
        .expect("cookie sessions need no store")
        .expect("cookie sessions cannot fail to store");
    cookies
        .iter()
        .filter_map(|c| {
            let s = c.to_str().ok()?;
            let pair = s.split(';').next()?;
            let (n, v) = pair.split_once('=')?;
            (!v.is_empty()).then(|| format!("{n}={v}"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Repo root (for the node test IdP).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A plain HTTP client that never follows redirects.
/// Reads from `r` into `seen` until it holds `needle`, for at most `within`: false if the
/// stream ended, failed or stayed silent first. For tests that speak raw HTTP/1.
pub async fn read_until(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    seen: &mut Vec<u8>,
    needle: &str,
    within: std::time::Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let read = async {
        while !String::from_utf8_lossy(seen).contains(needle) {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    tokio::time::timeout(within, read).await.unwrap_or(false)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An issuer nothing listens on (port 9 on loopback): discovery fails, proxying still works.
pub const DEAD_ISSUER: &str = "http://127.0.0.1:9";

/// One sample from a Prometheus `/metrics` URL (`name` with its labels, as printed), read
/// with a fresh client so no pooled connection stays behind.
pub async fn metric(url: &str, name: &str) -> Option<i64> {
    let text = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
