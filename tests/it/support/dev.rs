//! `sidegate dev` as a child process (the built binary, `--port 0`), and a scripted sign-in
//! through its development IdPs' user picker (and, for SAML, the auto-posting form).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::LOCATION;
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

use super::browser::{parse_form, Browser, Page};

pub struct DevProcess {
    pub child: Child,
    /// The URL from the start-up line.
    pub url: String,
    /// The start-up line itself.
    pub line: String,
    /// Every stderr line so far (the log).
    pub log: Arc<Mutex<Vec<String>>>,
    /// The child's TMPDIR: its state dir lives here, and goes with it even when the child is
    /// killed before it can remove the dir itself. (Dropped after `child`.)
    pub tmp: tempfile::TempDir,
}

impl DevProcess {
    /// Starts `sidegate dev --port 0 <args>` and waits for its one start-up line.
    pub async fn start(args: &[&str]) -> DevProcess {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sidegate"))
            .args(["dev", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                l.lock().unwrap().push(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no start-up line within 20 s; log: {:?}",
                    log.lock().unwrap()
                )
            })
            .unwrap()
            .unwrap_or_else(|| panic!("sidegate dev exited; log: {:?}", log.lock().unwrap()));
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the start-up line: {line}"))
            .to_string();
        DevProcess {
            child,
            url,
            line,
            log,
            tmp,
        }
    }

    /// The development SAML IdP's IdP-initiated sign-in URL, from the start-up line.
    pub fn idp_initiated_url(&self) -> String {
        self.line
            .split_whitespace()
            .find(|w| w.ends_with("/idp-initiated),"))
            .unwrap_or_else(|| panic!("no IdP-initiated URL in the start-up line: {}", self.line))
            .trim_end_matches("),")
            .to_string()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Follows redirects from `resp` (at `url`) to the first non-redirect page.
pub async fn follow(b: &mut Browser, mut url: String, mut resp: reqwest::Response) -> Page {
    for _ in 0..10 {
        if !resp.status().is_redirection() {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            return Page { url, status, body };
        }
        let loc = resp.headers()[LOCATION].to_str().unwrap().to_string();
        url = Url::parse(&url).unwrap().join(&loc).unwrap().to_string();
        resp = b.request(Method::GET, &url, None).await;
    }
    panic!("too many redirects; visited {:?}", b.visited);
}

/// Submits the development SAML IdP's self-submitting form (the HTTP-POST binding to the
/// ACS) as the browser's script would, following redirects, until a page without one.
async fn post_saml_forms(b: &mut Browser, mut page: Page) -> Page {
    for _ in 0..5 {
        if !page.body.contains("name=\"SAMLResponse\"") {
            return page;
        }
        let form = parse_form(&page.body).expect("the POST binding page has a form");
        assert_eq!(form.method, "post");
        let action = Url::parse(&page.url)
            .unwrap()
            .join(&form.action)
            .unwrap()
            .to_string();
        let resp = b.request(Method::POST, &action, Some(&form.fields)).await;
        page = follow(b, action, resp).await;
    }
    panic!("still posting SAML Responses; visited {:?}", b.visited);
}

/// Opens `url`, lands on a dev IdP's picker, submits `choice` (e.g. `[("demo","bob")]` or
/// typed `user`/`role`/`teams` fields) with the picker's transaction id, and follows the
/// redirects (and SAML's posted Responses) back to the app. Returns the picker page and the
/// final page.
pub async fn sign_in(b: &mut Browser, url: &str, choice: &[(&str, &str)]) -> (Page, Page) {
    let first = b.request(Method::GET, url, None).await;
    let picker = follow(b, url.to_string(), first).await;
    assert_eq!(picker.status, 200, "picker page: {}", picker.body);
    let form = parse_form(&picker.body).expect("the picker has a form");
    let mut fields: Vec<(String, String)> =
        form.fields.into_iter().filter(|(k, _)| k == "tx").collect();
    assert_eq!(fields.len(), 1, "one tx field");
    fields.extend(choice.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let action = Url::parse(&picker.url)
        .unwrap()
        .join(&form.action)
        .unwrap()
        .to_string();
    let resp = b.request(Method::POST, &action, Some(&fields)).await;
    let done = follow(b, action, resp).await;
    (picker, post_saml_forms(b, done).await)
}
