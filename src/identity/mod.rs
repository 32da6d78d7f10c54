//! Identity: verified claims → a typed `Identity` through the configured mapping, and the
//! login-time policy (allowed email domains).
//!
//! Claims are mapped once, at login; after that only typed fields travel. A claim is named by
//! its literal key (so namespaced URL claims work) or, failing that, a dotted path
//! (`realm_access.roles`). The role comes from the first matching role rule, else the
//! highest-priority allowed value of the role claim, else the least-privilege default (logged).
//! Teams are filtered (prefix, rename, allow-list). Extra claims keep their JSON type.

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
    /// Extra claims (`identity.extra`), in configuration order, with their JSON types.
    pub extra: Vec<(String, Value)>,
}

/// Largest serialized extra claim value kept (the session cookie carries them).
const MAX_EXTRA_BYTES: usize = 1024;

/// A claim by literal name, else by dotted path through nested objects.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// A claim's values as strings: a string, or the strings of an array.
fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
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
            claim(claims, c)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| Denied::NoUser(cfg.user_claims.join(", ")))?
        .to_string();
    let email = claim(claims, &cfg.email_claim)
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
    let raw_teams = claim(claims, &cfg.teams_claim);
    let role = match role_rule(cfg, claims, raw_teams, email.as_deref()) {
        Some(r) => r.to_string(),
        None => map_role(cfg, claim(claims, &cfg.role_claim), &subject),
    };
    let teams = filter_teams(&cfg.team_filter, teams(raw_teams));
    let extra = cfg
        .extra
        .iter()
        .filter_map(|e| Some((e.name.clone(), extra_value(claim(claims, &e.claim)?)?)))
        .collect();
    Ok(Identity {
        issuer: issuer.to_string(),
        subject,
        user,
        email,
        role,
        teams,
        extra,
    })
}

/// The role of the first rule whose every condition holds.
fn role_rule<'c>(
    cfg: &'c IdentityConfig,
    claims: &Map<String, Value>,
    raw_teams: Option<&Value>,
    email: Option<&str>,
) -> Option<&'c str> {
    let team_values = strings(raw_teams);
    let domain = email
        .and_then(|e| e.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase());
    cfg.role_rules
        .iter()
        .find(|r| {
            (r.teams.is_empty() || r.teams.iter().any(|t| team_values.contains(&t.as_str())))
                && r.claim.as_ref().is_none_or(|(path, values)| {
                    strings(claim(claims, path))
                        .iter()
                        .any(|v| values.iter().any(|w| w == v))
                })
                && (r.email_domains.is_empty()
                    || domain.as_ref().is_some_and(|d| r.email_domains.contains(d)))
        })
        .map(|r| r.role.as_str())
}

/// Prefix filter (and strip), rename, then allow-list.
fn filter_teams(f: &crate::config::TeamFilter, teams: Vec<String>) -> Vec<String> {
    teams
        .into_iter()
        .filter_map(|t| match &f.prefix {
            Some(p) if f.strip_prefix => t.strip_prefix(p.as_str()).map(str::to_string),
            Some(p) => t.starts_with(p.as_str()).then_some(t),
            None => Some(t),
        })
        .filter(|t| !t.is_empty())
        .map(|t| f.rename.get(&t).cloned().unwrap_or(t))
        .filter(|t| f.allow.is_empty() || f.allow.contains(t))
        .collect()
}

/// A value fit to travel: string, number, bool or a list of those; no control characters;
/// at most `MAX_EXTRA_BYTES` serialized. Anything else is left out.
fn extra_value(v: &Value) -> Option<Value> {
    let scalar = |v: &Value| match v {
        Value::String(s) => !s.chars().any(char::is_control),
        Value::Number(_) | Value::Bool(_) => true,
        _ => false,
    };
    let ok = match v {
        Value::Array(a) => a.iter().all(scalar),
        other => scalar(other),
    };
    (ok && v.to_string().len() <= MAX_EXTRA_BYTES).then(|| v.clone())
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
    let values = strings(claim);
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
