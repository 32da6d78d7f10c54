//! The `[identity]` section: claim names and paths, the role allow-list and its default, role
//! rules, team filters, extra claims, and an optional sample of claims that is mapped at
//! start-up so a wrong path shows up before the first login does.

use http::HeaderName;

use super::Problems;
use crate::config::raw;
use crate::config::{ExtraClaim, IdentityConfig, RoleRule, TeamFilter};

/// Names the assertion already uses: extra claims may not shadow them.
const RESERVED: &[&str] = &[
    "iss", "aud", "sub", "user", "email", "role", "teams", "groups", "idp", "iat", "exp", "nbf",
    "jti", "sid",
];

fn domains(p: &mut Problems, key: &str, list: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for d in list {
        if d.is_empty() || d.contains(['@', '/']) {
            p.add(
                key,
                format!("`{d}` is not a domain"),
                "write example.com, without @",
            );
        } else {
            out.push(d.to_ascii_lowercase());
        }
    }
    out
}

/// Builds the typed identity mapping; problems name `identity.<key>`.
pub(super) fn build(i: &raw::Identity, p: &mut Problems) -> IdentityConfig {
    let default_role = i.default_role.clone().unwrap_or_else(|| "viewer".into());
    let allowed = |r: &str| i.roles.is_empty() || i.roles.iter().any(|a| a == r);
    if !allowed(&default_role) {
        p.add(
            "identity.default_role",
            format!("`{default_role}` is not in identity.roles"),
            "add it to roles or choose one of them",
        );
    }
    for (from, to) in &i.role_map {
        if !allowed(to) {
            p.add(
                "identity.role_map",
                format!("`{from}` maps to `{to}`, which is not in identity.roles"),
                "map to an allowed role",
            );
        }
    }
    let allowed_email_domains = domains(
        p,
        "identity.allowed_email_domains",
        &i.allowed_email_domains,
    );
    let user_claims = i
        .user_claims
        .clone()
        .unwrap_or_else(|| vec!["preferred_username".into(), "email".into(), "sub".into()]);
    if user_claims.is_empty() {
        p.add(
            "identity.user_claims",
            "is empty",
            "list at least one claim, e.g. [\"email\", \"sub\"]",
        );
    }
    let mut role_rules = Vec::new();
    for (n, r) in i.role_rules.iter().enumerate() {
        let key = format!("identity.role_rules[{n}]");
        let Some(role) = r.role.clone().filter(|r| !r.is_empty()) else {
            p.add(
                &format!("{key}.role"),
                "missing",
                "name the role this rule gives",
            );
            continue;
        };
        if !allowed(&role) {
            p.add(
                &format!("{key}.role"),
                format!("`{role}` is not in identity.roles"),
                "give one of the allowed roles",
            );
        }
        let claim = match (&r.claim, r.values.is_empty()) {
            (Some(c), false) => Some((c.clone(), r.values.clone())),
            (None, true) => None,
            _ => {
                p.add(
                    &format!("{key}.claim"),
                    "`claim` and `values` go together",
                    "give both, e.g. claim = \"department\", values = [\"finance\"]",
                );
                None
            }
        };
        let rule = RoleRule {
            role,
            teams: r.teams.clone(),
            claim,
            email_domains: domains(p, &format!("{key}.email_domains"), &r.email_domains),
        };
        if rule.teams.is_empty() && rule.claim.is_none() && rule.email_domains.is_empty() {
            p.add(
                &key,
                "has no condition",
                "add teams, claim + values, or email_domains (a rule for everyone is default_role)",
            );
            continue;
        }
        role_rules.push(rule);
    }
    let mut extra = Vec::new();
    for (n, e) in i.extra.iter().enumerate() {
        let key = format!("identity.extra[{n}]");
        let (Some(name), Some(claim)) = (e.name.clone(), e.claim.clone().or(e.name.clone())) else {
            p.add(
                &format!("{key}.name"),
                "missing",
                "name the claim, e.g. name = \"department\"",
            );
            continue;
        };
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !plain
            || RESERVED.contains(&name.as_str())
            || extra.iter().any(|x: &ExtraClaim| x.name == name)
        {
            p.add(
                &format!("{key}.name"),
                format!("`{name}` cannot be used"),
                "use a new name of letters, digits, _ and - (not one of the assertion's own claims)",
            );
            continue;
        }
        let header = match &e.header {
            None => None,
            Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    p.add(
                        &format!("{key}.header"),
                        format!("`{h}` is not a header name"),
                        "e.g. X-Sidegate-Department",
                    );
                    None
                }
            },
        };
        extra.push(ExtraClaim {
            name,
            claim,
            header,
        });
    }
    let cfg = IdentityConfig {
        user_claims,
        email_claim: i.email_claim.clone().unwrap_or_else(|| "email".into()),
        role_claim: i.role_claim.clone().unwrap_or_else(|| "role".into()),
        roles: i.roles.clone(),
        role_map: i.role_map.clone(),
        default_role,
        teams_claim: i.teams_claim.clone().unwrap_or_else(|| "groups".into()),
        allowed_email_domains,
        role_rules,
        team_filter: TeamFilter {
            prefix: i.teams_prefix.clone().filter(|p| !p.is_empty()),
            strip_prefix: i.teams_strip_prefix.unwrap_or(false),
            rename: i.teams_rename.clone(),
            allow: i.teams_allow.clone(),
        },
        extra,
    };
    if let Some(sample) = &i.sample {
        let claims = match serde_json::to_value(sample) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        if let Err(why) = crate::identity::resolve(&cfg, "sample", &claims) {
            p.add(
                "identity.sample",
                format!("these claims would not log in: {why}"),
                "fix the claim names (nested paths are written a.b.c) or the sample",
            );
        }
    }
    cfg
}
