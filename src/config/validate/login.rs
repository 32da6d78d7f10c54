//! The `[login]` section: rules that send a login to a provider by host, path or email domain
//! (home-realm discovery), and the chooser page. Provider names are checked against the
//! configured OIDC providers and SAML IdPs, which must not share a name.

use super::{host_rules, path_prefixes, Problems};
use crate::config::raw;
use crate::config::{LoginConfig, LoginRule};

/// Builds the login rules; `providers` are every OIDC and SAML name, in configuration order.
pub(super) fn build(l: &raw::Login, providers: &[String], p: &mut Problems) -> LoginConfig {
    for (i, n) in providers.iter().enumerate() {
        if providers[..i].contains(n) {
            p.add(
                "login",
                format!("two providers are named `{n}`"),
                "give each OIDC provider and SAML IdP its own name",
            );
        }
    }
    let mut rules = Vec::new();
    for (n, r) in l.rules.iter().enumerate() {
        let key = |k: &str| format!("login.rules[{n}].{k}");
        let provider = match &r.provider {
            Some(name) if providers.contains(name) => name.clone(),
            other => {
                p.add(
                    &key("provider"),
                    match other {
                        Some(name) => format!("`{name}` is not a configured provider"),
                        None => "missing".into(),
                    },
                    format!("name one of: {}", providers.join(", ")),
                );
                continue;
            }
        };
        let hosts = host_rules(p, &key("hosts"), &r.hosts);
        let paths = path_prefixes(p, &key("paths"), &r.paths);
        let email_domains: Vec<String> = r
            .email_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        if hosts.is_empty() && paths.is_empty() && email_domains.is_empty() {
            p.add(&key("provider"), "the rule has no condition", "add hosts, paths or email_domains (the default provider is the first one configured)");
            continue;
        }
        rules.push(LoginRule {
            provider,
            hosts,
            paths,
            email_domains,
        });
    }
    LoginConfig {
        chooser: l.chooser.unwrap_or(false),
        rules,
    }
}
