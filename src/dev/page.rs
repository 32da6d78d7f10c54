//! HTML for the development pages. Every page carries the "development only" banner, so a
//! screenshot or a stray tab can never be mistaken for a real sign-in.

use http::{header, Response, StatusCode};

use super::idp::Person;
use crate::{full_body, Body};

/// The banner text shown on every development page.
pub const BANNER: &str = "DEVELOPMENT ONLY: sidegate dev mode. This identity provider lets anyone sign in as anyone; it listens on 127.0.0.1 only and `sidegate run` never starts it.";

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}\
.banner{background:#ffd84d;color:#3a2d00;padding:.6em 1.2em;font-weight:600;border-bottom:2px solid #e0b600}\
main{max-width:58em;margin:1.5em auto;padding:0 1.2em}h1{font-size:1.5em;margin:.2em 0 .6em}\
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:1em 1.2em;margin:0 0 1em}\
.users{display:grid;grid-template-columns:repeat(auto-fill,minmax(12em,1fr));gap:.7em}\
.users button{text-align:left;padding:.8em;border:1px solid #b8c2cc;border-radius:6px;background:#fff;cursor:pointer;font:inherit}\
.users button:hover{border-color:#2a6fdb;background:#eef4ff}label{display:block;margin:.4em 0}\
input{font:inherit;padding:.35em;width:100%;box-sizing:border-box;border:1px solid #b8c2cc;border-radius:4px}\
.go{margin-top:.6em;padding:.5em 1em;font:inherit;background:#2a6fdb;color:#fff;border:0;border-radius:4px;cursor:pointer}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3em .5em;border-bottom:1px solid #eef0f3;vertical-align:top}\
td:first-child{white-space:nowrap}code,pre{font:13px ui-monospace,monospace}pre{white-space:pre-wrap;word-break:break-all;margin:0}\
.ok{color:#11692d;font-weight:600}.bad{color:#a31515;font-weight:600}.err{color:#a31515}.muted{color:#5b6670}\
nav a{margin-right:1em}";

/// Which development IdP a page belongs to: both show the same picker, so each page says
/// which protocol the sign-in is going through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idp {
    /// The development OpenID provider.
    Oidc,
    /// The development SAML IdP.
    Saml,
}

impl Idp {
    fn who(self) -> &'static str {
        match self {
            Idp::Oidc => "sidegate dev IdP · OpenID Connect",
            Idp::Saml => "sidegate dev IdP · SAML",
        }
    }
}

/// A development page: which component serves it, its title and its body HTML.
pub struct Page {
    who: &'static str,
    title: String,
    body: String,
}

impl Page {
    /// A page of a development IdP.
    pub fn idp(idp: Idp, title: &str, body: &str) -> Self {
        Page {
            who: idp.who(),
            title: title.into(),
            body: body.into(),
        }
    }

    /// A page of the echo app.
    pub fn echo(title: &str, body: String) -> Self {
        Page {
            who: "sidegate dev echo app",
            title: title.into(),
            body,
        }
    }

    fn render(&self) -> String {
        format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8>\
             <meta name=viewport content=\"width=device-width\"><title>{title} · {who}</title>\
             <style>{STYLE}</style></head><body><div class=banner role=alert>⚠ {banner}</div>\
             <main><p class=muted>{who}</p><h1>{title}</h1>{body}</main></body></html>",
            title = esc(&self.title),
            who = self.who,
            banner = esc(BANNER),
            body = self.body,
        )
    }
}

/// An HTML response that is never cached.
pub fn html(status: StatusCode, page: &Page) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-frame-options", "DENY")
        .body(full_body(page.render()))
        .expect("valid response")
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    crate::error::html_escape(s)
}

/// One escaped paragraph.
pub fn paragraph(text: &str) -> String {
    format!("<p>{}</p>", esc(text))
}

/// The answer to a picker submitted after its transaction ended.
pub fn expired(idp: Idp) -> Page {
    Page::idp(
        idp,
        "Sign-in expired",
        "<p>This sign-in page is no longer valid (used or older than ten minutes). Go back to the app and start again.</p>",
    )
}

/// The sign-in page: a button per demo user and a form for a typed one, both posting the
/// IdP's transaction id `tx` to its `/login`.
pub fn picker(idp: Idp, tx: &str, users: &[Person], error: Option<&str>) -> Page {
    let tx = esc(tx);
    let buttons: String = users
        .iter()
        .map(|p| {
            let teams = if p.teams.is_empty() {
                "no teams".to_string()
            } else {
                p.teams.join(", ")
            };
            format!(
                "<button type=\"submit\" name=\"demo\" value=\"{u}\"><b>{u}</b> · {name}<br>\
                 <span class=\"muted\">role <code>{role}</code> · {teams}</span></button>",
                u = esc(&p.user),
                name = esc(&p.name),
                role = esc(&p.role),
                teams = esc(&teams),
            )
        })
        .collect();
    let error = error
        .map(|e| format!("<p class=\"err\">{}</p>", esc(e)))
        .unwrap_or_default();
    Page::idp(
        idp,
        "Sign in as…",
        &format!(
            "{error}<div class=\"card\"><p>Pick a demo user. <span class=\"muted\">(dave's role \
             <code>superuser</code> is not in sidegate's allowed roles, so he gets the \
             least-privilege default.)</span></p>\
             <form method=\"post\" action=\"/login\" id=\"demo\"><input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
             <div class=\"users\">{buttons}</div></form></div>\
             <div class=\"card\"><p>…or type your own user.</p>\
             <form method=\"post\" action=\"/login\" id=\"custom\"><input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
             <label>User <input name=\"user\" required autocomplete=off></label>\
             <label>Email <input name=\"email\" type=\"email\" placeholder=\"user@example.test\"></label>\
             <label>Role <input name=\"role\" placeholder=\"admin, developer, viewer, or anything\"></label>\
             <label>Teams (comma-separated) <input name=\"teams\" placeholder=\"platform, payments\"></label>\
             <button type=\"submit\" class=\"go\">Sign in</button></form></div>"
        ),
    )
}

/// The SAML HTTP-POST binding: a form of hidden `fields` that submits itself to `action`
/// (the button is for browsers without JavaScript).
pub fn auto_post(action: &str, fields: &[(&str, &str)]) -> Page {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            )
        })
        .collect();
    Page::idp(
        Idp::Saml,
        "Signing you in…",
        &format!(
            "<form method=\"post\" action=\"{action}\" id=\"post\">{inputs}\
             <p>Sending the signed answer to <code>{action}</code>.</p>\
             <button type=\"submit\" class=\"go\">Continue</button></form>\
             <script>document.getElementById(\"post\").submit()</script>",
            action = esc(action),
        ),
    )
}
