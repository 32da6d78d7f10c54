//! `sidegate dev`: the whole flow in one process for a first look or for trying sidegate in
//! front of your own app. It starts an embedded development OpenID provider and/or SAML IdP
//! and (unless `--upstream` is given) the echo app, generates fresh keys and secrets into a
//! private temp directory, writes a normal config and runs the normal `crate::run` with it:
//! the same login, session, identity and signing code as production, only the IdPs are
//! embedded.
//!
//! Nothing else in the crate refers to this module; `sidegate run` cannot reach it. Every
//! listener here binds 127.0.0.1.

pub mod echo;
pub mod idp;
pub mod page;
pub mod saml_idp;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::accept::{self, ServeOptions};
use crate::config::{self, Config};
use crate::keys;
use crate::login::saml::SpUrls;

/// Which development IdPs to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The development OpenID provider.
    Oidc,
    /// The development SAML IdP.
    Saml,
    /// Both; sidegate sends unauthenticated browsers to OIDC, `saml/login` starts SAML.
    Both,
}

impl Protocol {
    fn oidc(self) -> bool {
        matches!(self, Protocol::Oidc | Protocol::Both)
    }

    fn saml(self) -> bool {
        matches!(self, Protocol::Saml | Protocol::Both)
    }
}

/// What `sidegate dev` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// sidegate's port on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// Protect this app instead of the echo app.
    pub upstream: Option<Url>,
    /// Which development IdPs.
    pub protocol: Protocol,
}

/// Why dev mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source} (fix: pass --port with a free port)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state directory could not be written.
    #[error("cannot write the dev state directory {path}: {source}")]
    State {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The `--upstream` URL is unusable.
    #[error("--upstream {0}: must be an http:// or https:// URL with a host")]
    Upstream(Url),
    /// The generated config did not validate (a bug in dev mode).
    #[error("the generated dev config is invalid (a sidegate bug): {0}")]
    Config(#[from] config::ConfigError),
    /// A generated key did not load (a bug in dev mode).
    #[error("a generated key did not load (a sidegate bug): {0}")]
    Key(#[from] keys::KeyError),
    /// The SAML IdP's key could not be generated.
    #[error(transparent)]
    SamlKey(#[from] saml_idp::KeyError),
    /// sidegate itself failed.
    #[error(transparent)]
    Run(#[from] crate::RunError),
}

/// The demo users, for the start-up line.
pub fn user_summary() -> String {
    idp::demo_users()
        .iter()
        .map(|p| format!("{} ({})", p.user, p.role))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A private (0700) directory under the system temp dir, removed when dropped.
struct StateDir(PathBuf);

impl StateDir {
    fn create() -> Result<Self, DevError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("sidegate-dev-{}", keys::random_token::<6>()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| DevError::State {
                path: path.clone(),
                source,
            })?;
        Ok(StateDir(path))
    }

    fn write(&self, name: &str, body: &str) -> Result<(), DevError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.0.join(name);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::io::Write::write_all(&mut f, body.as_bytes())
        };
        write().map_err(|source| DevError::State {
            path: path.clone(),
            source,
        })
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bind(port: u16) -> Result<TcpListener, DevError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    crate::accept::bind(addr).map_err(|source| DevError::Bind { addr, source })
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

fn origin_of(l: &TcpListener) -> String {
    format!("http://127.0.0.1:{}", port_of(l))
}

/// Binds a loopback listener when `wanted`.
fn bind_if(wanted: bool) -> Result<Option<TcpListener>, DevError> {
    match wanted {
        true => Ok(Some(bind(0)?)),
        false => Ok(None),
    }
}

/// The config `sidegate dev` runs with: an ordinary config file, so everything downstream
/// of it is the production path. `[oidc]` and `[saml]` are there for the IdPs that run.
fn config_text(port: u16, upstream: &str, oidc_issuer: Option<&str>, saml: bool) -> String {
    let oidc = oidc_issuer
        .map(|issuer| {
            format!(
                r#"
[oidc]
issuer = "{issuer}"
client_id = "sidegate-dev"
client_secret_file = "client-secret"
scopes = ["openid", "email", "profile"]
"#
            )
        })
        .unwrap_or_default();
    // Restart: an IdP-initiated response is checked, then replaced by an SP-initiated
    // login the IdP completes from its session, so the login cookie is checked after all.
    let saml = if saml {
        r#"
[saml]
idp_metadata_file = "saml-idp.xml"
idp_initiated = "restart"
"#
    } else {
        ""
    };
    format!(
        r#"# generated by `sidegate dev`
[server]
listen = ["127.0.0.1:{port}"]
public_url = "http://127.0.0.1:{port}"
admin_listen = "off"

[upstream]
url = "{upstream}"
{oidc}{saml}
[session]
secrets_file = "cookie-secrets"
cookie_secure = false

[assertion]
signing_keys_file = "assertion-key.pem"

[identity]
roles = ["admin", "developer", "viewer"]
default_role = "viewer"
role_claim = "role"
teams_claim = "groups"
"#
    )
}

/// Runs dev mode until `shutdown` flips; `announce` gets the one line to print once every
/// listener is up.
pub async fn run(
    opts: Options,
    shutdown: watch::Receiver<bool>,
    announce: impl FnOnce(&str),
) -> Result<(), DevError> {
    if let Some(u) = &opts.upstream {
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(DevError::Upstream(u.clone()));
        }
    }
    let state = StateDir::create()?;
    let public = bind(opts.port)?;
    let port = port_of(&public);
    let oidc_listener = bind_if(opts.protocol.oidc())?;
    let saml_listener = bind_if(opts.protocol.saml())?;
    let echo_listener = bind_if(opts.upstream.is_none())?;
    let issuer = oidc_listener.as_ref().map(origin_of);
    let saml_origin = saml_listener.as_ref().map(origin_of);
    let upstream = match (&opts.upstream, &echo_listener) {
        (Some(u), _) => u.as_str().trim_end_matches('/').to_string(),
        (None, Some(l)) => origin_of(l),
        (None, None) => unreachable!("an echo listener exists when no upstream is given"),
    };

    let generated = keys::generate(false);
    let client_secret = keys::random_token::<24>();
    state.write("cookie-secrets", &format!("{}\n", generated.cookie_secret))?;
    state.write("assertion-key.pem", &generated.signing_key_pem)?;
    if issuer.is_some() {
        state.write("client-secret", &client_secret)?;
    }
    let saml_key = match &saml_origin {
        Some(origin) => {
            let key = saml_idp::SigningKey::generate()?;
            state.write("saml-idp.xml", &saml_idp::metadata(origin, &key))?;
            Some(key)
        }
        None => None,
    };
    let text = config_text(port, &upstream, issuer.as_deref(), saml_key.is_some());
    state.write("sidegate.toml", &text)?;
    let config: Config = config::load(&text, &config::Env::new(), &state.0)?;
    tracing::info!(dir = %state.0.display(), "dev: generated config, keys and secrets (deleted on exit)");

    let origin = config::public_origin(&config.server.public_url);
    let prefix = config.server.prefix.clone();
    let opts_serve = ServeOptions {
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace: config.server.shutdown_grace,
        max_connections: config.server.max_connections,
        threads: None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    // The echo page offers a switch to every other running IdP: log out, then start there.
    let mut logins = Vec::new();
    if let (Some(l), Some(issuer)) = (oidc_listener, &issuer) {
        let provider = Arc::new(idp::DevIdp::new(
            issuer.clone(),
            "sidegate-dev".into(),
            client_secret,
            format!("{origin}{prefix}/oidc/callback"),
            &keys::generate(false).signing_key_pem,
        )?);
        tasks.spawn(accept::serve(
            l,
            None,
            opts_serve.clone(),
            move |req, _from| {
                let p = provider.clone();
                async move { p.handle(req).await }
            },
            shutdown.clone(),
        ));
        logins.push(echo::DevLogin {
            idp: issuer.clone(),
            name: "OpenID Connect",
            switch: switch_url(&prefix, &format!("{prefix}/start?rd=/")),
        });
    }
    let mut idp_initiated = None;
    if let (Some(l), Some(key), Some(at), Some(saml)) =
        (saml_listener, saml_key, saml_origin, &config.saml)
    {
        let urls = SpUrls::new(&origin, &prefix);
        let sp = saml_idp::ServiceProvider {
            entity_id: saml.sp_entity_id.clone(),
            acs: urls.acs,
            slo: urls.slo.parse().expect("a valid loopback URL"),
        };
        let provider = Arc::new(saml_idp::DevSamlIdp::new(at, key, sp));
        idp_initiated = Some(provider.idp_initiated_url());
        logins.push(echo::DevLogin {
            idp: provider.entity_id().to_string(),
            name: "SAML",
            switch: switch_url(&prefix, &format!("{prefix}/saml/login?rd=/")),
        });
        tasks.spawn(accept::serve(
            l,
            None,
            opts_serve.clone(),
            move |req, _from| {
                let p = provider.clone();
                async move { p.handle(req).await }
            },
            shutdown.clone(),
        ));
    }
    if let Some(l) = echo_listener {
        let echo = Arc::new(echo::Echo::new(echo::EchoConfig {
            jwks_url: format!("{origin}{prefix}/jwks.json")
                .parse()
                .expect("a valid loopback URL"),
            issuer: origin.clone(),
            audience: config.assertion.audience.clone(),
            names: config.headers.clone(),
            logout: format!("{prefix}/logout?rd=/"),
            logins,
        }));
        tasks.spawn(accept::serve(
            l,
            None,
            opts_serve.clone(),
            move |req, _from| {
                let e = echo.clone();
                async move { e.handle(req).await }
            },
            shutdown.clone(),
        ));
    }
    let url = format!("http://127.0.0.1:{port}/");
    let what = match &opts.upstream {
        Some(u) => format!("protecting {u}"),
        None => "echo app".to_string(),
    };
    let idps = match (&issuer, &idp_initiated) {
        (Some(_), Some(at)) => {
            format!("development OpenID provider + SAML IdP (IdP-initiated sign-in: {at})")
        }
        (None, Some(at)) => format!("development SAML IdP (IdP-initiated sign-in: {at})"),
        _ => "development OpenID provider".to_string(),
    };
    let listeners = crate::Listeners {
        public: vec![public],
        admin: None,
    };
    let sidegate = crate::run(listeners, config, shutdown);
    announce(&format!(
        "sidegate dev: open {url} ({what}) · sign in as {} or type your own · {idps}, loopback only · Ctrl-C stops",
        user_summary()
    ));
    let result = sidegate.await;
    while tasks.join_next().await.is_some() {}
    drop(state);
    result.map_err(DevError::from)
}

/// sidegate's URL that logs out and then starts a login at `start` (a local path, so the
/// logout `rd` check lets it through).
fn switch_url(prefix: &str, start: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(start.as_bytes()).collect();
    format!("{prefix}/logout?rd={rd}")
}
