//! Identity: verified claims → a typed `Identity` through the configured mapping, and the
//! login-time policy (allowed email domains).
//!
//! Claims are mapped once, at login; after that only typed fields travel. Role values outside
//! the allow-list fall back to the least-privilege default, and that fallback is logged.

use serde_json::{Map, Value};

use crate::config::IdentityConfig;

/// Who is logged in, in typed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Issuer that authenticated the user.
    pub issuer: String,
    /// Subject at that issuer.
    pub subject: String,
    /// Display user name (from the configured claims).
    pub user: String,
    /// Email address, if the IdP gave one.
    pub email: Option<String>,
    /// Role after mapping (always an allowed role or the default).
    pub role: String,
    /// Teams (groups).
    pub teams: Vec<String>,
}

/// Why a verified login may not become a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No claim produced a user name.
    #[error("no user name claim ({0})")]
    NoUser(String),
    /// A value contains characters that cannot travel in a header.
    #[error("claim `{0}` contains control characters")]
    BadCharacters(String),
    /// Email domains are restricted and the email is missing or malformed.
    #[error("email missing or malformed")]
    BadEmail,
    /// The IdP says the email is not verified.
    #[error("email not verified")]
    EmailNotVerified,
    /// The email's domain is not allowed.
    #[error("email domain `{0}` not allowed")]
    DomainNotAllowed(String),
}

/// Maps verified claims to an identity, or says why the user may not log in.
pub fn resolve(
    cfg: &IdentityConfig,
    issuer: &str,
    claims: &Map<String, Value>,
) -> Result<Identity, Denied> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let user = cfg
        .user_claims
        .iter()
        .find_map(|c| {
            claims
                .get(c)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| Denied::NoUser(cfg.user_claims.join(", ")))?
        .to_string();
    let email = claims
        .get(&cfg.email_claim)
        .and_then(Value::as_str)
        .map(str::to_string);
    for (name, v) in [
        ("user", Some(&user)),
        ("email", email.as_ref()),
        ("sub", Some(&subject)),
    ] {
        if v.is_some_and(|s| s.chars().any(char::is_control)) {
            return Err(Denied::BadCharacters(name.into()));
        }
    }
    if !cfg.allowed_email_domains.is_empty() {
        check_email_domain(cfg, email.as_deref(), claims.get("email_verified"))?;
    }
    let role = map_role(cfg, claims.get(&cfg.role_claim), &subject);
    let teams = teams(claims.get(&cfg.teams_claim));
    Ok(Identity {
        issuer: issuer.to_string(),
        subject,
        user,
        email,
        role,
        teams,
    })
}

fn check_email_domain(
    cfg: &IdentityConfig,
    email: Option<&str>,
    verified: Option<&Value>,
) -> Result<(), Denied> {
    let email = email.ok_or(Denied::BadEmail)?;
    if verified == Some(&Value::Bool(false)) {
        return Err(Denied::EmailNotVerified);
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Denied::BadEmail);
    };
    if local.is_empty() || domain.is_empty() {
        return Err(Denied::BadEmail);
    }
    let domain = domain.to_ascii_lowercase();
    if cfg.allowed_email_domains.contains(&domain) {
        Ok(())
    } else {
        Err(Denied::DomainNotAllowed(domain))
    }
}

/// The highest-priority allowed role among the claim's values, else the default.
fn map_role(cfg: &IdentityConfig, claim: Option<&Value>, subject: &str) -> String {
    let values: Vec<&str> = match claim {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mapped: Vec<&str> = values
        .iter()
        .map(|v| cfg.role_map.get(*v).map(String::as_str).unwrap_or(v))
        .collect();
    let chosen = cfg.roles.iter().find(|r| mapped.contains(&r.as_str()));
    match chosen {
        Some(r) => r.clone(),
        None => {
            tracing::info!(target: "sidegate::audit", subject, claim = %cfg.role_claim, values = ?values,
                default = %cfg.default_role, "role missing or not allowed; using the default role");
            cfg.default_role.clone()
        }
    }
}

/// Teams from an array claim or a comma-separated string; values that cannot travel in a
/// comma-separated header are dropped.
fn teams(claim: Option<&Value>) -> Vec<String> {
    let raw: Vec<String> = match claim {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split(',').map(|t| t.trim().to_string()).collect(),
        _ => Vec::new(),
    };
    raw.into_iter()
        .filter(|t| !t.is_empty() && !t.contains(',') && !t.chars().any(char::is_control))
        .collect()
}
