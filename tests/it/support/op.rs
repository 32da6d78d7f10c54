//! The real OpenID provider (npm `oidc-provider`, pinned in tests/idp) as a child process on
//! an ephemeral loopback port. It exits when its stdin closes, so it never outlives the test.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Op {
    pub issuer: String,
    /// The READY line's JSON (with `api` when started with `OP_API=1`).
    pub ready: serde_json::Value,
    _child: Child,
}

impl Op {
    pub async fn start(redirect_uri: &str) -> Op {
        Op::start_with(redirect_uri, &[]).await
    }

    /// Starts the OP with extra environment (e.g. `OP_API=1` for client credentials).
    pub async fn start_with(redirect_uri: &str, env: &[(&str, &str)]) -> Op {
        let dir = super::repo().join("tests/idp");
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "tests/idp/node_modules is missing: run scripts/test.sh (it installs the test IdP)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("OP_REDIRECT_URIS", redirect_uri)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // 60 s, as bench/lib.sh waits: on a fresh clone, with the suite starting many OPs at
        // once on 2 cores, one took over 20 s to load its modules (CI, 2026-11-25).
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .expect("oidc-provider did not print READY within 60 s")
            .unwrap()
            .expect("oidc-provider exited");
        let json = line
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Op {
            issuer: v["issuer"].as_str().unwrap().to_string(),
            ready: v,
            _child: child,
        }
    }
}

/// Verifies an assertion with an independent library (jose, in node) against sidegate's JWKS.
pub async fn verify_with_jose(
    jwks_url: &str,
    token: &str,
    issuer: &str,
    audience: &str,
) -> serde_json::Value {
    let out = Command::new("node")
        .arg(super::repo().join("tests/idp/verify-jwt.mjs"))
        .args([jwks_url, token, issuer, audience])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("verify-jwt.mjs printed: {stdout}"))
}
