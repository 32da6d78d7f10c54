//! The `sidegate` binary: reads argv, the environment and the config file, binds the
//! listeners, wires signals to shutdown, and calls `sidegate::run`. Nothing else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Exit code for configuration errors (EX_USAGE-style, as sysexits' EX_CONFIG family).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "sidegate",
    version,
    about = "Authentication sidecar: OIDC login, sealed sessions, signed identity headers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for the default `run` action).
    #[arg(
        long,
        short,
        global = true,
        env = "SIDEGATE_CONFIG",
        default_value = "sidegate.toml"
    )]
    config: PathBuf,
    /// Also reload when the config file's content changes (checked every 2 s); SIGHUP
    /// always reloads. For `run`.
    #[arg(long, global = true, env = "SIDEGATE_WATCH_CONFIG")]
    watch_config: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the config and print the effective config with secrets redacted.
    CheckConfig {
        /// Also fetch each IdP's discovery, keys and metadata, compare clocks, and print what
        /// to register at the IdP.
        #[arg(long)]
        online: bool,
    },
    /// Development mode: sidegate + embedded development IdPs (OpenID Connect, SAML) + an echo
    /// app on 127.0.0.1, with fresh keys. Never for production.
    Dev {
        /// sidegate's port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 4180)]
        port: u16,
        /// Protect your own app at this URL instead of the echo app.
        #[arg(long)]
        upstream: Option<url::Url>,
        /// Which development IdPs to start.
        #[arg(long, value_enum, default_value_t = DevProtocol::Both)]
        protocol: DevProtocol,
    },
    /// Key material.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Local accounts.
    Local {
        #[command(subcommand)]
        action: LocalAction,
    },
}

#[derive(Subcommand)]
enum LocalAction {
    /// Read a password from stdin (one line) and print its argon2id hash for the users file.
    HashPassword,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DevProtocol {
    /// The development OpenID provider.
    Oidc,
    /// The development SAML IdP.
    Saml,
    /// Both: sign-in goes to OpenID Connect, the echo app links to SAML.
    Both,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Make a cookie secret and an assertion signing key.
    Generate {
        /// Write `cookie-secrets` and `assertion-key.pem` here (mode 0600) instead of stdout.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Ed25519 (EdDSA) instead of P-256 (ES256).
        #[arg(long)]
        eddsa: bool,
    },
}

fn load(path: &Path) -> Result<sidegate::config::Config, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "sidegate: cannot read config {}: {e} (fix: pass --config PATH)",
                path.display()
            );
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    let env: sidegate::config::Env = std::env::vars().collect();
    let base = path.parent().unwrap_or(Path::new("."));
    sidegate::config::load(&text, &env, base).map_err(|e| {
        eprint!("sidegate: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    // This process is sidegate alone: its start-up code may leave RSS once it is ready.
    sidegate::memory::page_out_when_ready();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { online } => match load(&cli.config) {
            Ok(c) => {
                print!("{}", c.redacted_toml());
                if !online {
                    return ExitCode::SUCCESS;
                }
                let rt = match tokio::runtime::Runtime::new() {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("sidegate: cannot start the runtime: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let report = rt.block_on(sidegate::admin::online::check(c));
                println!("\n# online checks{}", report.text);
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(code) => code,
        },
        Command::Keys {
            action: KeysAction::Generate { out_dir, eddsa },
        } => match generate(out_dir.as_deref(), eddsa) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sidegate: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Local {
            action: LocalAction::HashPassword,
        } => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() || line.trim_end().is_empty() {
                eprintln!("sidegate: give the password on stdin (one line)");
                return ExitCode::from(64);
            }
            println!(
                "{}",
                sidegate::login::local::hash_password(line.trim_end_matches(['\r', '\n']))
            );
            ExitCode::SUCCESS
        }
        Command::Run => {
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            sidegate::telemetry::init(config.log, std::env::var("RUST_LOG").ok().as_deref());
            block_on(serve(config, cli.config.clone(), cli.watch_config))
        }
        Command::Dev {
            port,
            upstream,
            protocol,
        } => {
            sidegate::telemetry::init(
                sidegate::config::LogFormat::Text,
                std::env::var("RUST_LOG").ok().as_deref(),
            );
            let opts = sidegate::dev::Options {
                port,
                upstream,
                protocol: match protocol {
                    DevProtocol::Oidc => sidegate::dev::Protocol::Oidc,
                    DevProtocol::Saml => sidegate::dev::Protocol::Saml,
                    DevProtocol::Both => sidegate::dev::Protocol::Both,
                },
            };
            block_on(async move {
                let announce = |line: &str| {
                    use std::io::Write as _;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                };
                sidegate::dev::run(opts, shutdown_on_signal(), announce).await?;
                tracing::info!("stopped");
                Ok(())
            })
        }
    }
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A channel that flips to true on SIGTERM or Ctrl-C.
fn shutdown_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested; draining");
        let _ = tx.send(true);
    });
    rx
}

/// The config file again, for a reload: `None` (with the problems logged) if it no longer
/// loads, so the running config stays.
fn reload_config(path: &Path) -> Option<sidegate::config::Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "config reload refused (cannot read the file); the running config stays");
            return None;
        }
    };
    let env: sidegate::config::Env = std::env::vars().collect();
    let base = path.parent().unwrap_or(Path::new("."));
    match sidegate::config::load(&text, &env, base) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(path = %path.display(), problems = %e, "config reload refused (invalid); the running config stays");
            None
        }
    }
}

/// Sends the reloaded config on SIGHUP and, with `watch`, when the file's content changes.
fn reloads(
    path: PathBuf,
    watch: bool,
    running: &sidegate::config::Config,
) -> tokio::sync::mpsc::Receiver<sidegate::config::Config> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let listen = (running.server.listen.clone(), running.server.admin_listen);
    let threads = (running.server.threads, running.server.cpu_affinity);
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("SIGHUP handler");
        let mut seen = std::fs::read(&path).ok();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            let why = tokio::select! {
                _ = hup.recv() => "SIGHUP",
                _ = tick.tick(), if watch => {
                    let now = std::fs::read(&path).ok();
                    if now.is_none() || now == seen {
                        continue;
                    }
                    seen = now;
                    "config file changed"
                }
            };
            tracing::info!(trigger = why, path = %path.display(), "reloading config");
            let Some(cfg) = reload_config(&path) else {
                continue;
            };
            if (cfg.server.listen.clone(), cfg.server.admin_listen) != listen {
                tracing::warn!("server.listen / server.admin_listen changed: listeners need a restart; the other changes apply now");
            }
            if (cfg.server.threads, cfg.server.cpu_affinity) != threads {
                tracing::warn!(
                    running = ?threads,
                    configured = ?(cfg.server.threads, cfg.server.cpu_affinity),
                    "server.threads or server.cpu_affinity changed: it needs a restart; the other changes apply now"
                );
            }
            if tx.send(cfg).await.is_err() {
                return;
            }
        }
    });
    rx
}

async fn serve(config: sidegate::config::Config, path: PathBuf, watch: bool) -> anyhow::Result<()> {
    let mut public = Vec::new();
    for addr in &config.server.listen {
        public.push(
            sidegate::accept::bind(*addr)
                .with_context(|| format!("binding server.listen {addr}"))?,
        );
    }
    let admin = match config.server.admin_listen {
        Some(addr) => Some(
            sidegate::accept::bind(addr)
                .with_context(|| format!("binding server.admin_listen {addr}"))?,
        ),
        None => None,
    };
    tracing::info!(listen = ?config.server.listen, admin = ?config.server.admin_listen, upstream = ?config.upstream.as_ref().map(|u| u.url.as_str()), "sidegate starting");
    let reloads = reloads(path, watch, &config);
    sidegate::run_reloading(
        sidegate::Listeners { public, admin },
        config,
        shutdown_on_signal(),
        Some(reloads),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

fn generate(out_dir: Option<&Path>, eddsa: bool) -> anyhow::Result<()> {
    let g = sidegate::keys::generate(eddsa);
    match out_dir {
        None => {
            println!(
                "# cookie secret (session.secrets_file: one per line, first seals)\n{}\n",
                g.cookie_secret
            );
            print!(
                "# assertion signing key (assertion.signing_keys_file)\n{}",
                g.signing_key_pem
            );
        }
        Some(dir) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, body) in [
                ("cookie-secrets", format!("{}\n", g.cookie_secret)),
                ("assertion-key.pem", g.signing_key_pem),
            ] {
                let path = dir.join(name);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| {
                        format!("creating {} (it must not exist yet)", path.display())
                    })?;
                std::io::Write::write_all(&mut f, body.as_bytes())?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
