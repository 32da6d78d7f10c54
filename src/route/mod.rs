//! Routing: the only place that matches path strings. Decides whether a request is for one of
//! sidegate's own endpoints (under the reserved prefix), a public path, or a protected one,
//! always on the output of `normalize`, the one path normalizer.

pub mod normalize;

use crate::config::PathRule;
pub use normalize::{normalize, NormalPath, PathRefused};

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
    /// `local/login`: the local accounts' form (GET) and its POST.
    LocalLogin,
    /// `oidc/backchannel-logout`: the provider's logout token (POST).
    OidcBackchannelLogout,
    /// `oidc/frontchannel-logout`: the provider's iframe (`iss`, `sid`).
    OidcFrontchannelLogout,
    /// `userinfo`: the current identity as JSON.
    Userinfo,
    /// `jwks.json`: assertion verification keys.
    Jwks,
    /// `logo`: the operator's logo for the page templates.
    Logo,
    /// `auth` (and `auth/<original path>` for Envoy): the forward-auth check.
    Auth,
    /// Anything else under the prefix: 404, never proxied.
    Unknown,
}

impl Own {
    /// The endpoints that start or finish a login: each costs an IdP round trip, an XML
    /// check or a password hash, so they are rate-limited per client.
    pub fn is_login(self) -> bool {
        matches!(
            self,
            Own::Start | Own::OidcCallback | Own::SamlLogin | Own::SamlAcs | Own::LocalLogin
        )
    }
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

    /// Classifies an already normalized path. Own endpoints match without regard to case;
    /// public rules only match canonical paths, exactly (fail closed).
    pub fn classify_normal(&self, path: &NormalPath) -> Endpoint {
        if path.is_under(&self.prefix, true) {
            let rest = path.as_str()[self.prefix.len()..].to_ascii_lowercase();
            return Endpoint::Own(match rest.as_str() {
                "/start" => Own::Start,
                "/oidc/callback" => Own::OidcCallback,
                "/saml/metadata" => Own::SamlMetadata,
                "/saml/login" => Own::SamlLogin,
                "/saml/acs" => Own::SamlAcs,
                "/saml/slo" => Own::SamlSlo,
                "/logout" => Own::Logout,
                "/local/login" => Own::LocalLogin,
                "/oidc/backchannel-logout" => Own::OidcBackchannelLogout,
                "/oidc/frontchannel-logout" => Own::OidcFrontchannelLogout,
                "/userinfo" => Own::Userinfo,
                "/jwks.json" => Own::Jwks,
                "/logo" => Own::Logo,
                r if r == "/auth" || r.starts_with("/auth/") => Own::Auth,
                _ => Own::Unknown,
            });
        }
        if path.is_canonical()
            && self.public.iter().any(|r| match r {
                PathRule::Exact(p) => path.as_str() == p,
                PathRule::Prefix(p) => path.is_under(p, false),
            })
        {
            return Endpoint::Public;
        }
        Endpoint::Protected
    }
}
