//! The `[[bearer.issuers]]` tables: who may issue access tokens that API clients present
//! instead of a session, which audience they must carry, and optional RFC 7662 introspection.

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{duration, is_loopback_host, jws_algs, secret, Problems};
use crate::config::raw;
use crate::config::{BearerIssuerConfig, Env, IntrospectionConfig};
use crate::keys::Secret;

fn https_url(p: &mut Problems, key: &str, s: &str) -> Option<Url> {
    match Url::parse(s) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u)) => Some(u),
        _ => {
            p.add(
                key,
                format!("`{s}` is not an https URL"),
                "give the issuer's https URL (plain http only on loopback, for tests)",
            );
            None
        }
    }
}

/// Builds every trusted issuer; problems name `bearer.issuers[<n>].<key>`.
pub(super) fn build(
    b: &raw::Bearer,
    env: &Env,
    base_dir: &Path,
    p: &mut Problems,
) -> Vec<BearerIssuerConfig> {
    let mut out = Vec::new();
    for (n, i) in b.issuers.iter().enumerate() {
        let k = |name: &str| format!("bearer.issuers[{n}].{name}");
        let issuer = match &i.issuer {
            Some(s) => https_url(p, &k("issuer"), s).map(|_| s.clone()),
            None => {
                p.add(
                    &k("issuer"),
                    "missing",
                    "set it to the exact `iss` value of the access tokens",
                );
                None
            }
        };
        let audience = match &i.audience {
            Some(a) if !a.is_empty() => Some(a.clone()),
            _ => {
                p.add(
                    &k("audience"),
                    "missing",
                    "set the audience (`aud`) the tokens must be issued for, e.g. api://my-app; tokens for other APIs are refused",
                );
                None
            }
        };
        let jwks_url = i
            .jwks_url
            .as_deref()
            .and_then(|s| https_url(p, &k("jwks_url"), s));
        let allowed_algs = jws_algs(p, &k("allowed_algs"), &i.allowed_algs);
        let token_types: Vec<String> = i
            .token_types
            .clone()
            .unwrap_or_else(|| vec!["at+jwt".into()])
            .iter()
            .map(|t| {
                let t = t.to_ascii_lowercase();
                t.strip_prefix("application/").unwrap_or(&t).to_string()
            })
            .collect();
        if token_types.is_empty() {
            p.add(
                &k("token_types"),
                "is empty",
                "leave it out for [\"at+jwt\"] (RFC 9068), or add \"jwt\" for IdPs whose access tokens say typ JWT",
            );
        }
        let introspection = if i.introspection.unwrap_or(false) || i.introspection_url.is_some() {
            let url = i
                .introspection_url
                .as_deref()
                .and_then(|s| https_url(p, &k("introspection_url"), s));
            let client_id = i.introspection_client_id.clone().filter(|c| !c.is_empty());
            if client_id.is_none() {
                p.add(
                    &k("introspection_client_id"),
                    "missing",
                    "set the client id sidegate authenticates with at the introspection endpoint",
                );
            }
            let secret = secret(
                p,
                &k("introspection_client_secret"),
                &i.introspection_client_secret,
                &i.introspection_client_secret_file,
                &i.introspection_client_secret_env,
                env,
                base_dir,
            );
            match (client_id, secret) {
                (Some(client_id), Some(s)) => Some(IntrospectionConfig {
                    url,
                    client_id,
                    client_secret: Secret::new(s.trim().to_string()),
                }),
                _ => None,
            }
        } else {
            None
        };
        let cfg = BearerIssuerConfig {
            clock_skew: duration(p, &k("clock_skew"), &i.clock_skew, Duration::from_secs(60)),
            jwks_min_refresh_interval: duration(
                p,
                &k("jwks_min_refresh_interval"),
                &i.jwks_min_refresh_interval,
                Duration::from_secs(60),
            ),
            http_timeout: duration(
                p,
                &k("http_timeout"),
                &i.http_timeout,
                Duration::from_secs(5),
            ),
            cache_ttl: duration(p, &k("cache_ttl"), &i.cache_ttl, Duration::from_secs(60)),
            issuer: issuer.unwrap_or_default(),
            audience: audience.unwrap_or_default(),
            jwks_url,
            allowed_algs,
            token_types,
            introspection,
        };
        if out
            .iter()
            .any(|o: &BearerIssuerConfig| o.issuer == cfg.issuer && o.audience == cfg.audience)
        {
            p.add(
                &k("issuer"),
                "the same issuer and audience are listed twice",
                "keep one table per issuer and audience",
            );
        }
        out.push(cfg);
    }
    out
}
