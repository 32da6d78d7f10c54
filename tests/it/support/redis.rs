//! Real Redis (Debian's redis-server 7.0) as child processes for the Redis session-store tests:
//! AUTH and ACL users, TLS with a private CA, a server that goes away and comes back, MOVED
//! redirects are what matter there, and only the real server shows them. Sentinel
//! (`--sentinel`) and Cluster (`--cluster-enabled yes`) run from the same binary. Only
//! 127.0.0.1 is used, everything a process writes lives in a temp dir, every wait is bounded
//! (its panic shows the end of the logs), and every child is killed when its value is dropped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

const SERVER: &str = "/usr/bin/redis-server";
const CLI: &str = "/usr/bin/redis-cli";
/// The bound on every wait below.
const WAIT: Duration = Duration::from_secs(10);
/// The name the sentinel monitors the master under.
pub const MASTER_NAME: &str = "mymaster";
/// The ACL user created next to `requirepass` when a password is set.
pub const ACL_USER: &str = "sidegate";

/// How to start a standalone server.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// `--requirepass` (the default user) plus the ACL user `sidegate` with the same password.
    /// No whitespace or quotes: it travels as one word on redis-server's command line.
    pub password: Option<String>,
    /// TLS only (`--port 0 --tls-port`), with a cert for 127.0.0.1 and localhost from a fresh CA.
    pub tls: bool,
}

/// One redis-server (standalone, or a cluster node).
pub struct Redis {
    pub port: u16,
    options: RedisOptions,
    cluster: bool,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        Redis::start_with(RedisOptions::default()).await
    }

    pub async fn start_with(options: RedisOptions) -> Redis {
        Redis::launch(free_port(), options, false).await
    }

    async fn launch(port: u16, options: RedisOptions, cluster: bool) -> Redis {
        assert!(
            Path::new(SERVER).exists() && Path::new(CLI).exists(),
            "{SERVER} or {CLI} is missing: install Debian's redis-server and redis-tools"
        );
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        if options.tls {
            write_tls_files(dir.path());
        }
        let mut redis = Redis {
            port,
            options,
            cluster,
            child: None,
            dir,
        };
        redis.restart().await;
        redis
    }

    /// Kills the server and waits for it; `port` stays reserved for `restart`.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.kill().await.is_err() {
                let _ = child.wait().await;
            }
        }
    }

    /// (Re)starts on the same port with the same options and waits for PONG. Data is lost
    /// (`--save ""`, no AOF); the TLS files are kept, so the CA stays the same.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (d, port) = (self.dir.path().display(), self.port);
        let mut args = words(&format!(
            "--bind 127.0.0.1 --protected-mode no --appendonly no --dir {d} --logfile {d}/redis.log"
        ));
        args.extend(["--save".to_string(), String::new()]);
        args.extend(words(&if self.options.tls {
            format!(
                "--port 0 --tls-port {port} --tls-auth-clients no --tls-cert-file {d}/server.pem \
                 --tls-key-file {d}/server.key --tls-ca-cert-file {d}/ca.pem"
            )
        } else {
            format!("--port {port}")
        }));
        if let Some(pass) = &self.options.password {
            let acl = format!("--requirepass {pass} --user {ACL_USER} on >{pass} ~* &* +@all");
            args.extend(words(&acl));
        }
        if self.cluster {
            args.extend(words(&format!(
                "--cluster-enabled yes --cluster-config-file {d}/nodes-{port}.conf \
                 --cluster-node-timeout 2000"
            )));
        }
        self.child = Some(spawn(&args, &self.dir.path().join("redis.out")));
        let (base, logs) = (self.cli_base(), self.logs());
        let what = format!("redis-server on 127.0.0.1:{port} to answer PING");
        wait_for(&what, &logs, self.child.iter_mut().collect(), move || {
            let base = base.clone();
            async move { run_cli(&base, &["PING"]).await.is_ok_and(|o| o == "PONG") }
        })
        .await;
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` with TLS), without credentials.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server cert (TLS only).
    pub fn ca_pem(&self) -> Option<String> {
        let read = |p: PathBuf| std::fs::read_to_string(p).expect("read ca.pem");
        self.ca_path().map(read)
    }

    pub fn ca_path(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// redis-cli against this server (auth and TLS as started): stdout, trimmed. Panics if it
    /// cannot connect or the reply is an error (`-e`).
    pub async fn cli(&self, args: &[&str]) -> String {
        run_cli(&self.cli_base(), args)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&self.logs())))
    }

    fn cli_base(&self) -> Vec<String> {
        let mut base = words(&format!(
            "-e --no-auth-warning -h 127.0.0.1 -p {}",
            self.port
        ));
        if let Some(ca) = self.ca_path() {
            base.extend(words(&format!("--tls --cacert {}", ca.display())));
        }
        if let Some(pass) = &self.options.password {
            base.extend(["-a".to_string(), pass.clone()]);
        }
        base
    }

    fn logs(&self) -> Vec<PathBuf> {
        vec![
            self.dir.path().join("redis.log"),
            self.dir.path().join("redis.out"),
        ]
    }
}

/// A master (no password, no TLS) and one sentinel monitoring it as `mymaster`.
pub struct Sentinel {
    pub master: Redis,
    pub sentinel_port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub async fn start() -> Sentinel {
        let master = Redis::start().await;
        let sentinel_port = free_port();
        let dir = tempfile::tempdir().expect("temp dir for the sentinel");
        let (d, m) = (dir.path(), master.port);
        // Sentinel rewrites its config file at start: it must be a writable file of its own.
        let conf = format!(
            "bind 127.0.0.1\nport {sentinel_port}\nprotected-mode no\ndir \"{0}\"\n\
             logfile \"{0}/sentinel.log\"\nsentinel resolve-hostnames no\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {m} 1\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n",
            d.display()
        );
        std::fs::write(d.join("sentinel.conf"), conf).expect("write sentinel.conf");
        let args = words(&format!("{}/sentinel.conf --sentinel", d.display()));
        let mut child = spawn(&args, &d.join("sentinel.out"));
        let base = words(&format!("-e -h 127.0.0.1 -p {sentinel_port}"));
        let what = format!("sentinel on 127.0.0.1:{sentinel_port} to report the master on {m}");
        let logs = [d.join("sentinel.log"), d.join("sentinel.out")];
        wait_for(&what, &logs, vec![&mut child], move || {
            let base = base.clone();
            async move {
                let asked = run_cli(&base, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
                asked
                    .await
                    .is_ok_and(|o| o.lines().any(|l| l.trim() == m.to_string()))
            }
        })
        .await;
        Sentinel {
            master,
            sentinel_port,
            _child: child,
            _dir: dir,
        }
    }

    /// `redis://127.0.0.1:SENTINEL_PORT`.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }
}

/// Three cluster masters (no replicas), all slots assigned, every node `cluster_state:ok`.
pub struct Cluster {
    pub ports: Vec<u16>,
    nodes: Vec<Redis>,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // One at a time: a running node holds its port and bus port, so the next pick
            // avoids both.
            nodes.push(Redis::launch(free_cluster_port(), RedisOptions::default(), true).await);
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let logs: Vec<PathBuf> = nodes.iter().flat_map(Redis::logs).collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let create = format!(
            "--cluster create {} --cluster-replicas 0 --cluster-yes",
            addrs.join(" ")
        );
        let create = words(&create);
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        if let Err(e) = run_cli(&["-e".to_string()], &create).await {
            panic!("redis-cli --cluster create failed: {e}\n{}", tail(&logs));
        }
        // cluster_state turns ok on each node separately, and a client may ask any of them.
        let bases: Vec<Vec<String>> = nodes.iter().map(Redis::cli_base).collect();
        let children = nodes.iter_mut().filter_map(|n| n.child.as_mut()).collect();
        let what = "every cluster node to say cluster_state:ok";
        wait_for(what, &logs, children, move || {
            let bases = bases.clone();
            async move {
                for base in &bases {
                    let info = run_cli(base, &["CLUSTER", "INFO"]).await;
                    if !info.is_ok_and(|o| o.contains("cluster_state:ok")) {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        Cluster { ports, nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}

/// A port that was free a moment ago (redis-server cannot report an ephemeral port back).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 for a free port")
        .port()
}

/// A free port below 55000 whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr of a bound socket").port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port below 55000 with a free bus port (+10000) in 1000 tries");
}

/// Command-line words (paths are temp dirs and passwords test literals: no whitespace).
fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// redis-server with `args`, stdout and stderr appended to `out`.
fn spawn(args: &[String], out: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out);
    let file = file.expect("open the process output file");
    let err = file.try_clone().expect("clone the output file handle");
    let mut cmd = Command::new(SERVER);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true);
    cmd.spawn().expect("spawn /usr/bin/redis-server")
}

/// redis-cli `base` `args`: trimmed stdout, or why it failed (exit status, stderr, stdout).
async fn run_cli(base: &[String], args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(CLI);
    cmd.args(base)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(WAIT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("could not run {CLI}: {e}")),
        Err(_) => return Err(format!("redis-cli {args:?} did not finish within {WAIT:?}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "redis-cli {base:?} {args:?} failed ({}): {} {stdout}",
        out.status,
        stderr.trim()
    ))
}

/// Polls `ready` every 50 ms for at most `WAIT`; panics at once if a child exits.
async fn wait_for<F, Fut>(what: &str, logs: &[PathBuf], mut children: Vec<&mut Child>, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    // One check may hang (a port that accepts but never answers): give it a second.
    while !tokio::time::timeout(Duration::from_secs(1), ready())
        .await
        .unwrap_or(false)
    {
        for child in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "waiting for {what}: redis-server exited ({status})\n{}",
                    tail(logs)
                );
            }
        }
        if Instant::now() > deadline {
            panic!("waiting for {what}: not within {WAIT:?}\n{}", tail(logs));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines of each log, for panic messages.
fn tail(logs: &[PathBuf]) -> String {
    let mut out = String::new();
    for path in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let last = lines[lines.len().saturating_sub(20)..].join("\n");
        out.push_str(&format!("--- end of {} ---\n{last}\n", path.display()));
    }
    out
}

/// A fresh CA and a server cert for 127.0.0.1 (IP SAN) and localhost signed by it, as
/// `ca.pem`, `server.pem` and `server.key` in `dir`.
fn write_tls_files(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyUsagePurpose as Ku};
    let ca_key = KeyPair::generate().expect("generate the CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA cert params");
    ca.distinguished_name
        .push(DnType::CommonName, "sidegate test Redis CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
    let ca_pem = ca.self_signed(&ca_key).expect("self-sign the CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("generate the server key");
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let mut leaf = CertificateParams::new(names).expect("server cert params (IP and DNS SAN)");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![Eku::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf
        .signed_by(&key, &issuer)
        .expect("sign the server cert with the CA");
    std::fs::write(dir.join("ca.pem"), &ca_pem).expect("write ca.pem");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write server.pem");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write server.key");
}

/// redis-cli against one plain node by port (a cluster node's own keys, for instance).
pub async fn node_cli(port: u16, args: &[&str]) -> String {
    let base = words(&format!("-e --no-auth-warning -h 127.0.0.1 -p {port}"));
    run_cli(&base, args).await.unwrap_or_else(|e| panic!("{e}"))
}
