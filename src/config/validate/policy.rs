//! The `[policy]` section: routes (hosts, normalized path prefixes, methods) with their
//! access, conditions, header changes and assertion audience, and the default for requests no
//! route matches. Paths are checked with the router's own normalizer.

use http::{HeaderName, HeaderValue, Method};

use super::{host_rules, path_prefixes, Problems};
use crate::config::raw;
use crate::config::{Condition, DefaultAccess, IdentityConfig, PolicyConfig, Route, RouteAccess};

fn condition(
    p: &mut Problems,
    key: &str,
    c: &raw::PolicyCondition,
    identity: &IdentityConfig,
    issuers: &[(String, String)],
) -> Option<Condition> {
    for r in &c.roles {
        if !identity.roles.is_empty() && !identity.roles.contains(r) {
            p.add(
                &format!("{key}.roles"),
                format!("`{r}` is not in identity.roles"),
                "name an allowed role: a user can never have another one",
            );
        }
    }
    for name in c.claims.keys() {
        if !identity.extra.iter().any(|e| &e.name == name) {
            p.add(
                &format!("{key}.claims"),
                format!("`{name}` is not an extra claim"),
                "add it under [[identity.extra]] so sessions carry it",
            );
        }
    }
    let cond = Condition {
        roles: c.roles.clone(),
        teams: c.teams.clone(),
        email_domains: c
            .email_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        idps: c
            .idps
            .iter()
            .flat_map(|i| {
                let issuer = issuers
                    .iter()
                    .find(|(n, _)| n == i)
                    .map(|(_, iss)| iss.clone());
                std::iter::once(i.clone()).chain(issuer)
            })
            .collect(),
        claims: c
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    if cond == Condition::default() {
        p.add(
            key,
            "is empty",
            "give roles, teams, email_domains, idps or claims (an empty condition would match everyone)",
        );
        return None;
    }
    Some(cond)
}

/// Builds the policy; problems name `policy.routes[<n>].<key>`.
pub(super) fn build(
    raw: &raw::Policy,
    prefix: Option<&str>,
    identity: &IdentityConfig,
    issuers: &[(String, String)],
    p: &mut Problems,
) -> PolicyConfig {
    let default = match raw.default.as_deref() {
        None | Some("authenticated") => DefaultAccess::Authenticated,
        Some("deny") => DefaultAccess::Deny,
        Some(other) => {
            p.add(
                "policy.default",
                format!("`{other}` is not a default"),
                "use \"authenticated\" or \"deny\"",
            );
            DefaultAccess::Authenticated
        }
    };
    let mut routes = Vec::new();
    for (n, r) in raw.routes.iter().enumerate() {
        let key = |k: &str| format!("policy.routes[{n}].{k}");
        let name = r.name.clone().unwrap_or_else(|| format!("route {n}"));
        let hosts = host_rules(p, &key("hosts"), &r.hosts);
        let paths = path_prefixes(p, &key("paths"), &r.paths);
        for path in &r.paths {
            if let Some(pre) = prefix {
                if crate::route::normalize(path).is_ok_and(|n| n.is_under(pre, true)) {
                    p.add(
                        &key("paths"),
                        format!("`{path}` is under the reserved prefix {pre}"),
                        "sidegate's own endpoints are not subject to routes; remove it",
                    );
                }
            }
        }
        let mut methods = Vec::new();
        for m in &r.methods {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => p.add(
                    &key("methods"),
                    format!("`{m}` is not a method"),
                    "e.g. GET, POST",
                ),
            }
        }
        let allow: Vec<Condition> = r
            .allow
            .iter()
            .enumerate()
            .filter_map(|(i, c)| condition(p, &key(&format!("allow[{i}]")), c, identity, issuers))
            .collect();
        let deny: Vec<Condition> = r
            .deny
            .iter()
            .enumerate()
            .filter_map(|(i, c)| condition(p, &key(&format!("deny[{i}]")), c, identity, issuers))
            .collect();
        let has_rules = !r.allow.is_empty() || !r.deny.is_empty();
        let access = match (r.access.as_deref(), has_rules) {
            (Some("public"), false) => RouteAccess::Public,
            (Some("deny"), false) => RouteAccess::Deny,
            (Some("authenticated"), false) | (None, false) => RouteAccess::Authenticated,
            (Some("rules") | None, true) => RouteAccess::Rules { allow, deny },
            (Some(a @ ("public" | "deny" | "authenticated")), true) => {
                p.add(
                    &key("access"),
                    format!("`{a}` ignores allow/deny"),
                    "remove access (allow/deny make it \"rules\") or the conditions",
                );
                RouteAccess::Deny
            }
            (Some("rules"), false) => {
                p.add(
                    &key("access"),
                    "\"rules\" without allow or deny",
                    "add [[policy.routes.allow]] or [[policy.routes.deny]] conditions",
                );
                RouteAccess::Deny
            }
            (Some(other), _) => {
                p.add(
                    &key("access"),
                    format!("`{other}` is not an access"),
                    "use public, authenticated, rules or deny",
                );
                RouteAccess::Deny
            }
        };
        let mut strip_headers = Vec::new();
        for h in &r.strip_headers {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => strip_headers.push(h),
                Err(_) => p.add(
                    &key("strip_headers"),
                    format!("`{h}` is not a header name"),
                    "e.g. X-Debug",
                ),
            }
        }
        let mut add_headers = Vec::new();
        for (k, v) in &r.add_headers {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => add_headers.push((k, v)),
                _ => p.add(
                    &key("add_headers"),
                    format!("`{k}: {v}` is not a header"),
                    "use a header name and a printable value",
                ),
            }
        }
        routes.push(Route {
            name,
            hosts,
            paths,
            methods,
            access,
            strip_headers,
            add_headers,
            audience: r.audience.clone().filter(|a| !a.is_empty()),
        });
    }
    PolicyConfig { routes, default }
}
