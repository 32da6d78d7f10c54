//! The real `sidegate run` binary as a child process with a config file: for tests of what
//! only a process has (signals, reload, exit status, several replicas). Killed on drop.

use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::client;

/// A port that was free a moment ago (the binary binds what its config says).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Running {
    pub child: Child,
    pub base: String,
    pub admin: String,
    log: std::path::PathBuf,
}

impl Running {
    /// `sidegate run` with `text` as `<dir>/sidegate.toml`, ready (`/readyz` 200).
    pub async fn start(dir: &Path, text: &str, args: &[&str]) -> Running {
        Self::start_named(dir, "sidegate", text, args).await
    }

    /// `start` with the config and log named `<name>.toml` / `<name>.log` (several
    /// processes sharing one directory of keys).
    pub async fn start_named(dir: &Path, name: &str, text: &str, args: &[&str]) -> Running {
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sidegate"))
            .args(["run", "--config"])
            .arg(dir.join(format!("{name}.toml")))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (base, admin) = addresses(text);
        let r = Running {
            child,
            base,
            admin,
            log,
        };
        for _ in 0..100 {
            if let Ok(resp) = client().get(format!("{}/readyz", r.admin)).send().await {
                if resp.status() == 200 {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("sidegate not ready:\n{}", r.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn hup(&self) {
        self.signal("-HUP");
    }

    /// Sends a signal (`-HUP`, `-TERM`) to the process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub async fn status(&self, path: &str, cookie: &str) -> u16 {
        client()
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Polls until `path` answers `want` (bounded: 10 s).
    pub async fn until(&self, path: &str, cookie: &str, want: u16) {
        for _ in 0..100 {
            if self.status(path, cookie).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} never answered {want}; log:\n{}", self.log());
    }

    pub async fn proxied_count(&self) -> i64 {
        super::metric(
            &format!("{}/metrics", self.admin),
            "sidegate_requests_total{outcome=\"proxied\"}",
        )
        .await
        .unwrap_or(0)
    }

    /// Waits (bounded) for the process to exit; its status.
    pub async fn exit(&mut self, within: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!(
                "sidegate did not exit within {within:?}; log:\n{}",
                self.log()
            ),
        }
    }
}

/// The public and admin base URLs a config listens on (its first `listen` entry).
fn addresses(text: &str) -> (String, String) {
    let find = |k: &str| {
        let l = text
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("the config needs a `{k}` line"));
        l.split('"').nth(1).unwrap().to_string()
    };
    (
        format!("http://{}", find("listen")),
        format!("http://{}", find("admin_listen")),
    )
}
