//! The first-run experience as a newcomer meets it: the README's first command (its
//! `sidegate` arguments, run with the binary this suite built, on a free port), Debian's headless Chromium driven by
//! playwright-core through the development IdP's sign-in form, and a screenshot of the echo
//! page left in `target/first-run/` for a human to look at.

use crate::support::dev::DevProcess;
use crate::support::repo;

/// The `sidegate` arguments of the README's first command, e.g. `["dev"]`: either a
/// `cargo run ... -- <args>` line, or a script whose last step is one.
fn readme_first_command_args() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .expect("the README has a ```sh block with the two commands");
    let first = block.lines().next().unwrap();
    let mut command = first.split('#').next().unwrap().trim().to_string();
    if command.starts_with("scripts/") {
        let script = std::fs::read_to_string(repo().join(&command)).unwrap();
        command = script
            .lines()
            .find(|l| l.trim_start().starts_with("exec cargo run"))
            .unwrap_or_else(|| panic!("{command} does not end in `exec cargo run ... -- dev`"))
            .trim_start()
            .trim_start_matches("exec ")
            .replace("\"$@\"", "")
            .trim()
            .to_string();
    }
    let (cargo, args) = command
        .split_once(" -- ")
        .unwrap_or_else(|| panic!("the first command is not `cargo run ... -- dev`: {first}"));
    assert!(cargo.starts_with("cargo run"), "{first}");
    args.split_whitespace().map(str::to_string).collect()
}

#[tokio::test]
async fn readme_first_command_works_in_a_real_browser() {
    let args = readme_first_command_args();
    assert_eq!(args.first().map(String::as_str), Some("dev"), "{args:?}");
    let script = repo().join("tests/browser/first-run.mjs");
    assert!(
        repo()
            .join("tests/browser/node_modules/playwright-core/package.json")
            .exists(),
        "tests/browser/node_modules is missing: run scripts/test.sh (it installs playwright-core and chromium)"
    );
    let extra: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let dev = DevProcess::start(&extra).await;

    let out_dir = repo().join("target/first-run");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("echo.png");
    let _ = std::fs::remove_file(&shot);
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&dev.url)
        .arg(&shot)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "first-run.mjs printed: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        report["ok"],
        true,
        "{report:#}\nsidegate log:\n{}",
        dev.log_text()
    );

    // The browser went to the development IdP first, then back to the app.
    let steps = report["steps"].as_array().unwrap();
    assert!(steps[0]["title"]
        .as_str()
        .unwrap()
        .contains("sidegate dev IdP"));
    assert!(!steps[0]["at"].as_str().unwrap().starts_with(&dev.url));
    assert!(steps[1]["at"].as_str().unwrap().starts_with(&dev.url));

    let echo = report["echo"].as_str().unwrap();
    for expected in [
        "Hello, newcomer",
        "Verified against sidegate's JWKS",
        "newcomer@example.test",
        "platform, docs",
        "\"role\": \"developer\"",
    ] {
        assert!(echo.contains(expected), "missing {expected:?} in:\n{echo}");
    }
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
}
