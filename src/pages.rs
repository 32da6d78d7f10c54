//! The HTML pages sidegate shows (errors, the sign-in chooser, "signed out"): minimal,
//! accessible, no external assets; or the operator's templates from `pages.dir`, with a logo
//! served at `<prefix>/logo`. Every value put into a template is HTML-escaped here or built
//! from escaped parts by the caller.

use bytes::Bytes;
use http::{header, Response, StatusCode};

use crate::config::PagesConfig;
use crate::error::html_escape;
use crate::{full_body, Body};

/// What an error page said, kept on the response so the operator's template can re-render it.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    /// The text for the user.
    pub message: String,
    /// The id to quote.
    pub request_id: String,
}

/// The templates in use (none: the built-in pages).
pub struct Pages {
    cfg: PagesConfig,
    logo_url: String,
}

/// `{{name}}` → value, for values that are already safe HTML.
fn fill(template: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in pairs {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(full_body(body))
        .expect("static page")
}

impl Pages {
    /// Takes the loaded templates; `prefix` places the logo.
    pub fn new(cfg: PagesConfig, prefix: &str) -> Self {
        Pages {
            cfg,
            logo_url: format!("{prefix}/logo"),
        }
    }

    /// Re-renders an HTML error page with the operator's template, if there is one.
    pub fn restyle(&self, resp: &mut Response<Body>) {
        let (Some(t), Some(e)) = (&self.cfg.error, resp.extensions().get::<ErrorPage>()) else {
            return;
        };
        let status = resp.status();
        let body = fill(
            t,
            &[
                ("status", &status.as_u16().to_string()),
                (
                    "title",
                    &html_escape(status.canonical_reason().unwrap_or("Error")),
                ),
                ("message", &html_escape(&e.message)),
                ("request_id", &html_escape(&e.request_id)),
                ("logo_url", &html_escape(&self.logo_url)),
            ],
        );
        *resp.body_mut() = full_body(body);
    }

    /// The sign-in chooser; `providers` and `email_form` are built from escaped parts.
    pub fn signin(&self, providers: &str, email_form: &str) -> Response<Body> {
        let body = match &self.cfg.signin {
            Some(t) => fill(
                t,
                &[
                    ("providers", providers),
                    ("email_form", email_form),
                    ("logo_url", &html_escape(&self.logo_url)),
                ],
            ),
            None => format!(
                "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in</title></head>\
                 <body><main><h1>Sign in</h1>{email_form}<ul>{providers}</ul></main></body></html>\n"
            ),
        };
        html(StatusCode::OK, body)
    }

    /// After logout.
    pub fn signed_out(&self) -> Response<Body> {
        let body = match &self.cfg.signed_out {
            Some(t) => fill(t, &[("logo_url", &html_escape(&self.logo_url))]),
            None => "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
                     <body><main><h1>Signed out</h1><p><a href=\"/\">Sign in again</a></p></main></body></html>\n"
                .to_string(),
        };
        html(StatusCode::OK, body)
    }

    /// `<prefix>/logo`: the configured image, or 404.
    pub fn logo(&self) -> Response<Body> {
        match &self.cfg.logo {
            Some((bytes, ctype)) => Response::builder()
                .header(header::CONTENT_TYPE, *ctype)
                .header(header::CACHE_CONTROL, "public, max-age=3600")
                .header("x-content-type-options", "nosniff")
                .body(full_body(Bytes::from(bytes.clone())))
                .expect("static response"),
            None => html(
                StatusCode::NOT_FOUND,
                "<!DOCTYPE html><title>Not found</title>\n".into(),
            ),
        }
    }
}
