//! Routing: the only place that matches path strings. Decides whether a request is for one of
//! sidegate's own endpoints (under the reserved prefix), a public path, or a protected one.

use crate::config::PathRule;

/// sidegate's own endpoints under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// `start?rd=`: begin a login.
    Start,
    /// `oidc/callback`: the IdP's redirect back.
    OidcCallback,
    /// `saml/metadata`: the SP metadata for the IdP administrator.
    SamlMetadata,
    /// `saml/login?rd=`: begin an SP-initiated SAML login.
    SamlLogin,
    /// `saml/acs`: the IdP's HTTP-POST of the Response.
    SamlAcs,
    /// `saml/slo`: LogoutRequests and LogoutResponses (HTTP-Redirect binding).
    SamlSlo,
    /// `logout`.
    Logout,
    /// `userinfo`: the current identity as JSON.
    Userinfo,
    /// `jwks.json`: assertion verification keys.
    Jwks,
    /// Anything else under the prefix: 404, never proxied.
    Unknown,
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// One of sidegate's endpoints.
    Own(Own),
    /// A configured public path: forwarded without identity.
    Public,
    /// Everything else: needs a session.
    Protected,
}

/// The routing table.
pub struct Routes {
    prefix: String,
    public: Vec<PathRule>,
}

impl Routes {
    /// Builds the table from the prefix and public path rules.
    pub fn new(prefix: String, public: Vec<PathRule>) -> Self {
        Routes { prefix, public }
    }

    /// The reserved prefix (for building our own URLs).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Classifies a request path (without query).
    pub fn classify(&self, path: &str) -> Endpoint {
        let lower = path.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix(self.prefix.to_ascii_lowercase().as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                return Endpoint::Own(match rest {
                    "/start" => Own::Start,
                    "/oidc/callback" => Own::OidcCallback,
                    "/saml/metadata" => Own::SamlMetadata,
                    "/saml/login" => Own::SamlLogin,
                    "/saml/acs" => Own::SamlAcs,
                    "/saml/slo" => Own::SamlSlo,
                    "/logout" => Own::Logout,
                    "/userinfo" => Own::Userinfo,
                    "/jwks.json" => Own::Jwks,
                    _ => Own::Unknown,
                });
            }
        }
        if is_canonical(path)
            && self.public.iter().any(|r| match r {
                PathRule::Exact(p) => path == p,
                PathRule::Prefix(p) => path.starts_with(p.as_str()),
            })
        {
            return Endpoint::Public;
        }
        Endpoint::Protected
    }
}

/// A path in the one form every server reads the same way. Only such paths can be public:
/// anything with encodings, dot segments, `//`, `;` or `\` needs a session (fail closed).
fn is_canonical(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains("//")
        && !path.contains(['%', ';', '\\'])
        && !path.split('/').any(|s| s == "." || s == "..")
}
