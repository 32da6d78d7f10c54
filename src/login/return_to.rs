//! The open-redirect guard: a return URL is accepted only if it is a plain relative path or an
//! absolute http(s) URL on the public host or an allowed host (exact port).
//!
//! Anything a browser might read differently from us is refused rather than "cleaned":
//! backslashes, control characters, scheme-relative `//`, user info, odd schemes.

use url::Url;

use crate::config::HostRule;

/// A return target that passed the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo(String);

impl ReturnTo {
    /// The root of the app, the target when none is given.
    pub fn root() -> Self {
        ReturnTo("/".into())
    }

    /// The checked target, safe to put in `Location`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a value that was checked before it was sealed into a login cookie.
    pub(crate) fn from_sealed(s: String) -> Self {
        ReturnTo(s)
    }
}

/// Why a return URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Control characters, backslashes or encoded backslashes/slashes in a dangerous place.
    #[error("contains characters browsers interpret inconsistently")]
    Characters,
    /// `//host` or `/\host`: a relative-looking URL that browsers treat as another host.
    #[error("scheme-relative URL")]
    SchemeRelative,
    /// Not http(s), or not an absolute `scheme://` form.
    #[error("scheme not allowed")]
    Scheme,
    /// `user@host` forms.
    #[error("user info not allowed")]
    UserInfo,
    /// Host or port not on the allow-list.
    #[error("host not allowed")]
    Host,
}

/// Checks `raw` against the public origin and the allowed hosts.
pub fn check(raw: &str, public_url: &Url, allowed: &[HostRule]) -> Result<ReturnTo, Refused> {
    if raw.is_empty() {
        return Ok(ReturnTo::root());
    }
    if raw
        .chars()
        .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
    {
        return Err(Refused::Characters);
    }
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%5c")
        || lower.contains("%00")
        || lower.contains("%0a")
        || lower.contains("%0d")
        || lower.contains("%09")
    {
        return Err(Refused::Characters);
    }
    if raw.starts_with('/') {
        if raw.starts_with("//") || lower.starts_with("/%2f") {
            return Err(Refused::SchemeRelative);
        }
        return Ok(ReturnTo(raw.to_string()));
    }
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(Refused::Scheme);
    }
    let url = Url::parse(raw).map_err(|_| Refused::Host)?;
    if !url.username().is_empty()
        || url.password().is_some()
        || raw[raw.find("://").unwrap_or(0) + 3..]
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("")
            .contains('@')
    {
        return Err(Refused::UserInfo);
    }
    if public_url.scheme() == "https" && url.scheme() != "https" {
        return Err(Refused::Scheme);
    }
    let host = url.host_str().ok_or(Refused::Host)?.to_ascii_lowercase();
    let port = url.port_or_known_default();
    let public_host = public_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let same_origin = host == public_host
        && port == public_url.port_or_known_default()
        && url.scheme() == public_url.scheme();
    let allowed = same_origin
        || allowed.iter().any(|rule| match rule {
            HostRule::Exact { host: h, port: p } => *h == host && port_ok(*p, port, url.scheme()),
            HostRule::Subdomains { domain, port: p } => {
                host.len() > domain.len() + 1
                    && host.ends_with(domain.as_str())
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                    && port_ok(*p, port, url.scheme())
            }
        });
    if allowed {
        Ok(ReturnTo(url.to_string()))
    } else {
        Err(Refused::Host)
    }
}

/// A rule without a port allows only the scheme's default port.
fn port_ok(rule: Option<u16>, actual: Option<u16>, scheme: &str) -> bool {
    let default = if scheme == "https" { 443 } else { 80 };
    actual == Some(rule.unwrap_or(default))
}
