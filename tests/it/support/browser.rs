//! A minimal browser: a per-origin cookie jar, manual redirects, and generic form submission
//! (the OP's login and consent pages), enough to play a real login.

use std::collections::HashMap;

use reqwest::header::{HeaderMap, ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, Response};
use url::Url;

/// A final page of a navigation.
pub struct Page {
    pub url: String,
    pub status: u16,
    pub body: String,
}

#[derive(Default)]
pub struct Browser {
    client: Option<reqwest::Client>,
    jar: HashMap<String, HashMap<String, String>>,
    /// Cookies set with a `Domain` attribute: (domain, name) → value.
    domain_jar: HashMap<(String, String), String>,
    /// Every URL visited, in order.
    pub visited: Vec<String>,
    /// The cookie header sent to the callback, kept to replay it.
    pub callback_cookie: Option<String>,
}

fn origin(u: &Url) -> String {
    u.origin().ascii_serialization()
}

/// `(name, value)` pairs of the first `<form>`'s inputs, and its action and method.
pub struct Form {
    pub action: String,
    pub method: String,
    pub fields: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    for q in ['"', '\''] {
        let pat = format!(" {name}={q}");
        if let Some(i) = lower.find(&pat) {
            let start = i + pat.len();
            let end = tag[start..].find(q)? + start;
            return Some(tag[start..end].replace("&amp;", "&"));
        }
    }
    None
}

pub fn parse_form(html: &str) -> Option<Form> {
    let start = html.find("<form")?;
    let end = html[start..]
        .find("</form>")
        .map(|e| start + e)
        .unwrap_or(html.len());
    let form = &html[start..end];
    let open = &form[..form.find('>')?];
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').map(|e| i + e).unwrap_or(rest.len());
        let tag = &rest[i..tag_end];
        if let Some(n) = attr(tag, "name") {
            let t = attr(tag, "type").unwrap_or_default();
            if t != "submit" && t != "button" {
                fields.push((n, attr(tag, "value").unwrap_or_default()));
            }
        }
        rest = &rest[tag_end..];
    }
    Some(Form {
        action: attr(open, "action").unwrap_or_default(),
        method: attr(open, "method")
            .unwrap_or_else(|| "get".into())
            .to_lowercase(),
        fields,
    })
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            client: Some(super::client()),
            ..Default::default()
        }
    }

    /// A browser whose client resolves names its own way (e.g. `*.apps.test` to loopback).
    pub fn with_client(client: reqwest::Client) -> Self {
        Browser {
            client: Some(client),
            ..Default::default()
        }
    }

    pub fn cookie_header(&self, url: &str) -> String {
        let u = Url::parse(url).unwrap();
        let host = u.host_str().unwrap_or_default().to_string();
        let mut pairs: Vec<String> = self
            .jar
            .get(&origin(&u))
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        for ((domain, name), v) in &self.domain_jar {
            if host == *domain || host.ends_with(&format!(".{domain}")) {
                pairs.push(format!("{name}={v}"));
            }
        }
        pairs.join("; ")
    }

    fn store(&mut self, url: &Url, headers: &HeaderMap) {
        let jar = self.jar.entry(origin(url)).or_default();
        for v in headers.get_all(SET_COOKIE) {
            let s = v.to_str().unwrap();
            let pair = s.split(';').next().unwrap();
            let (n, val) = pair.split_once('=').unwrap();
            let expired = s.to_ascii_lowercase().contains("max-age=0");
            let domain = s.split(';').skip(1).find_map(|a| {
                let (k, v) = a.trim().split_once('=')?;
                k.eq_ignore_ascii_case("domain")
                    .then(|| v.trim_start_matches('.').to_ascii_lowercase())
            });
            if let Some(d) = domain {
                let key = (d, n.trim().to_string());
                if expired || val.is_empty() {
                    self.domain_jar.remove(&key);
                } else {
                    self.domain_jar.insert(key, val.trim().to_string());
                }
            } else if expired || val.is_empty() {
                jar.remove(n.trim());
            } else {
                jar.insert(n.trim().to_string(), val.trim().to_string());
            }
        }
    }

    /// One request with the jar's cookies and `Accept: text/html`; stores cookies.
    pub async fn request(
        &mut self,
        method: Method,
        url: &str,
        form: Option<&[(String, String)]>,
    ) -> Response {
        let u = Url::parse(url).unwrap();
        let cookie = self.cookie_header(url);
        if u.path().ends_with("/oidc/callback") || u.path().ends_with("/saml/acs") {
            self.callback_cookie = Some(cookie.clone());
        }
        let mut rb = self
            .client
            .as_ref()
            .unwrap()
            .request(method, url)
            .header(ACCEPT, "text/html,application/xhtml+xml");
        if !cookie.is_empty() {
            rb = rb.header(COOKIE, cookie);
        }
        if let Some(f) = form {
            rb = rb.form(f);
        }
        let resp = rb.send().await.unwrap();
        self.visited.push(url.to_string());
        self.store(&u, resp.headers());
        resp
    }

    /// Follows redirects and submits the IdP's forms (filling `login` or `username`, and
    /// `password`), including SAML's auto-submitting POST to the ACS, until a
    /// non-redirect answer without a form; returns it and its URL.
    pub async fn navigate(&mut self, url: &str, user: &str, password: &str) -> Page {
        let mut url = url.to_string();
        let mut resp = self.request(Method::GET, &url, None).await;
        for _ in 0..30 {
            if resp.status().is_redirection() {
                let loc = resp
                    .headers()
                    .get(LOCATION)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                url = Url::parse(&url).unwrap().join(&loc).unwrap().to_string();
                resp = self.request(Method::GET, &url, None).await;
                continue;
            }
            let is_html = resp
                .headers()
                .get("content-type")
                .is_some_and(|c| c.to_str().unwrap().contains("html"));
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            let form = if is_html { parse_form(&body) } else { None };
            let Some(form) = form else {
                return Page { url, status, body };
            };
            let mut fields = form.fields;
            for (k, v) in fields.iter_mut() {
                if k == "login" || k == "username" {
                    *v = user.into();
                }
                if k == "password" {
                    *v = password.into();
                }
            }
            let action = Url::parse(&url)
                .unwrap()
                .join(&form.action)
                .unwrap()
                .to_string();
            let method = if form.method == "post" {
                Method::POST
            } else {
                Method::GET
            };
            url = action.clone();
            resp = self.request(method, &action, Some(&fields)).await;
        }
        panic!(
            "login did not finish within 30 steps; visited {:?}",
            self.visited
        );
    }
}
