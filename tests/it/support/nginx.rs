//! Real nginx (Debian's nginx-light) as a child process, serving `deploy/nginx/sidegate.conf`
//! rendered for loopback: only the two upstream addresses, the `listen` line and the
//! `server_name` change. Everything nginx writes lives in a temp dir; the process is killed
//! when the value is dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Nginx {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    _child: Child,
}

/// A port that was free a moment ago (nginx cannot report an ephemeral port back).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The deploy site with the test's addresses; panics if a token the test relies on moved.
pub fn render_site(
    site: &str,
    listen: SocketAddr,
    sidegate: SocketAddr,
    app: SocketAddr,
) -> String {
    let mut out = site.to_string();
    for (from, to) in [
        ("server 127.0.0.1:4180;", format!("server {sidegate};")),
        ("server 127.0.0.1:8080;", format!("server {app};")),
        ("listen 80;", format!("listen {listen};")),
        (
            "server_name app.example.com;",
            "server_name 127.0.0.1;".to_string(),
        ),
    ] {
        assert_eq!(
            out.matches(from).count(),
            1,
            "deploy/nginx/sidegate.conf must contain `{from}` once"
        );
        out = out.replace(from, &to);
    }
    out
}

impl Nginx {
    /// Starts nginx with `site` (an http-context include) and waits until it accepts.
    pub async fn start(site: &str, listen: SocketAddr) -> Nginx {
        let bin = Path::new("/usr/sbin/nginx");
        assert!(
            bin.exists(),
            "nginx is missing: run scripts/test.sh (it installs nginx-light)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("site.conf"), site).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        // Workers run as the invoking user (root in CI, where `user` would default to nobody,
        // which could not write our temp dir).
        let user = if is_root() { "user root;" } else { "" };
        let conf = format!(
            "{user}\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
             fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let test = Command::new(bin)
            .args(["-t", "-q", "-p"])
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .output()
            .await
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t refused the rendered deploy site: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return Nginx {
                    addr: listen,
                    dir,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nginx did not listen on {listen} within 5 s");
    }

    /// A free loopback address for `listen`.
    pub fn pick_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], free_port()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// nginx's error log so far (for assertion messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
