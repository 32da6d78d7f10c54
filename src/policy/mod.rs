//! Per-route policy: which route a request is on (host + normalized path prefix + method, the
//! first that matches), what that route needs before authentication (nothing, a credential,
//! or nothing will do), and whether an identity meets its conditions. Pure: the pipeline and
//! forward-auth call it with the facts they have, on the one normalized path.

use http::Method;

use crate::config::{Condition, DefaultAccess, PolicyConfig, Route, RouteAccess};
use crate::identity::Identity;
use crate::route::NormalPath;

/// What the policy looks at.
pub struct Facts<'a> {
    /// `Host` (or `:authority`), when known.
    pub authority: Option<&'a str>,
    /// The normalized path.
    pub path: &'a NormalPath<'a>,
    /// The method.
    pub method: &'a Method,
}

/// What a request needs before anything else happens.
#[derive(Debug)]
pub enum Need<'p> {
    /// Nothing: forward without identity.
    Public,
    /// A valid credential, then the route's conditions (if any route matched).
    Credential(Option<&'p Route>),
    /// Refused whoever asks (a `deny` route, or no route and `default = "deny"`).
    Deny(Option<&'p Route>),
}

/// Why an identity may not use a route: `public` is for the 403 page, `detail` for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The route's name (or "default").
    pub route: String,
    /// What the route needs, in words a user can act on.
    pub public: String,
    /// Which condition decided, for the audit line.
    pub detail: String,
}

/// The routes, built once from the config.
pub struct Policy {
    cfg: PolicyConfig,
}

impl Policy {
    /// Takes the validated policy.
    pub fn new(cfg: PolicyConfig) -> Self {
        Policy { cfg }
    }

    fn matches(route: &Route, f: &Facts<'_>) -> bool {
        let public = route.access == RouteAccess::Public;
        (route.hosts.is_empty()
            || f.authority.is_some_and(|a| route.hosts.iter().any(|h| h.matches_authority(a))))
            && (route.methods.is_empty() || route.methods.contains(f.method))
            // Public routes match like public paths: canonical and exact case only. Every
            // other route matches without regard to case, so `/ADMIN` is `/admin`.
            && (!public || f.path.is_canonical())
            && (route.paths.is_empty() || route.paths.iter().any(|p| f.path.is_under(p, !public)))
    }

    /// The first route the request is on.
    pub fn route(&self, f: &Facts<'_>) -> Option<&Route> {
        self.cfg.routes.iter().find(|r| Self::matches(r, f))
    }

    /// What a request whose path is not known needs (forward-auth from an untrusted peer, or
    /// a proxy that did not say): never public; refused when some route restricts access,
    /// since it might be that route; else the default decides.
    pub fn need_unknown(&self) -> Need<'_> {
        let restricted = self
            .cfg
            .routes
            .iter()
            .any(|r| matches!(r.access, RouteAccess::Rules { .. } | RouteAccess::Deny));
        match self.cfg.default {
            DefaultAccess::Authenticated if !restricted => Need::Credential(None),
            _ => Need::Deny(None),
        }
    }

    /// What the request needs before authentication.
    pub fn need(&self, f: &Facts<'_>) -> Need<'_> {
        match self.route(f) {
            Some(r) => match r.access {
                RouteAccess::Public => Need::Public,
                RouteAccess::Deny => Need::Deny(Some(r)),
                RouteAccess::Authenticated | RouteAccess::Rules { .. } => Need::Credential(Some(r)),
            },
            None => match self.cfg.default {
                DefaultAccess::Authenticated => Need::Credential(None),
                DefaultAccess::Deny => Need::Deny(None),
            },
        }
    }
}

/// Whether `id` may use `route` (no route: yes).
pub fn judge(route: Option<&Route>, id: &Identity) -> Result<(), Refusal> {
    let Some(route) = route else { return Ok(()) };
    let RouteAccess::Rules { allow, deny } = &route.access else {
        return Ok(());
    };
    if let Some((i, c)) = deny.iter().enumerate().find(|(_, c)| meets(c, id)) {
        return Err(Refusal {
            route: route.name.clone(),
            public: format!(
                "“{}” is closed to accounts with {}.",
                route.name,
                describe(c)
            ),
            detail: format!("deny[{i}] matched"),
        });
    }
    if !allow.is_empty() && !allow.iter().any(|c| meets(c, id)) {
        let needs: Vec<String> = allow.iter().map(describe).collect();
        return Err(Refusal {
            route: route.name.clone(),
            public: format!("“{}” needs {}.", route.name, needs.join(", or ")),
            detail: format!("none of {} allow conditions met", allow.len()),
        });
    }
    Ok(())
}

/// The refusal for a `Need::Deny`.
pub fn denied(route: Option<&Route>) -> Refusal {
    match route {
        Some(r) => Refusal {
            route: r.name.clone(),
            public: format!("“{}” is not available.", r.name),
            detail: "route access is deny".into(),
        },
        None => Refusal {
            route: "default".into(),
            public: "This address is not available.".into(),
            detail:
                "no route matched (or the original path is unknown) and the policy restricts access"
                    .into(),
        },
    }
}

/// Every field given holds (each list any-of); an empty condition holds for everyone.
pub fn meets(c: &Condition, id: &Identity) -> bool {
    let domain = id
        .email
        .as_deref()
        .and_then(|e| e.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase());
    (c.roles.is_empty() || c.roles.contains(&id.role))
        && (c.teams.is_empty() || id.teams.iter().any(|t| c.teams.contains(t)))
        && (c.email_domains.is_empty() || domain.is_some_and(|d| c.email_domains.contains(&d)))
        && (c.idps.is_empty() || c.idps.contains(&id.issuer))
        && c.claims.iter().all(|(name, values)| {
            id.extra.iter().any(|(n, v)| {
                n == name
                    && match v {
                        serde_json::Value::Array(a) => a
                            .iter()
                            .any(|x| x.as_str().is_some_and(|s| values.iter().any(|w| w == s))),
                        serde_json::Value::String(s) => values.contains(s),
                        other => values.contains(&other.to_string()),
                    }
            })
        })
}

/// A condition in words: "role admin or ops and team sre".
fn describe(c: &Condition) -> String {
    let list = |what: &str, v: &[String]| format!("{what} {}", v.join(" or "));
    let mut parts = Vec::new();
    if !c.roles.is_empty() {
        parts.push(list("role", &c.roles));
    }
    if !c.teams.is_empty() {
        parts.push(list("team", &c.teams));
    }
    if !c.email_domains.is_empty() {
        parts.push(list("an email at", &c.email_domains));
    }
    if !c.idps.is_empty() {
        parts.push(list("a sign-in at", &c.idps));
    }
    for (name, values) in &c.claims {
        parts.push(format!("{name} {}", values.join(" or ")));
    }
    parts.join(" and ")
}
