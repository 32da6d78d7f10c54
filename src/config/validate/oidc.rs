//! The `[oidc]` section: one OpenID provider written directly in it (named by `name`,
//! default "oidc") and more under `[oidc.providers.<name>]`, each with its issuer, client,
//! scopes, PKCE, clock skew, algorithms and timeouts.

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{duration, is_loopback_host, jws_algs, secret, Problems};
use crate::config::raw;
use crate::config::{Env, OidcConfig};
use crate::keys::Secret;

/// Builds every provider, the inline one first; problems name `oidc.<key>` or
/// `oidc.providers.<name>.<key>`.
pub(super) fn build(
    o: &raw::Oidc,
    env: &Env,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Vec<OidcConfig>> {
    let mut out = Vec::new();
    let mut ok = true;
    let inline = o.inline();
    let has_inline =
        inline.issuer.is_some() || inline.client_id.is_some() || o.providers.is_empty();
    let first = o.name.clone().unwrap_or_else(|| "oidc".into());
    if has_inline {
        match build_one(&inline, first.clone(), "oidc", env, base_dir, p) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    for (name, raw) in &o.providers {
        let pre = format!("oidc.providers.{name}");
        if !valid_name(name) || (has_inline && *name == first) {
            p.add(
                &pre,
                format!("`{name}` cannot name a provider"),
                "use letters, digits, - and _, and a name no other provider has",
            );
            ok = false;
            continue;
        }
        match build_one(raw, name.clone(), &pre, env, base_dir, p) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Provider names travel in URLs (`start?provider=`) and pages: keep them plain.
pub(super) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn build_one(
    o: &raw::OidcProvider,
    name: String,
    pre: &str,
    env: &Env,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<OidcConfig> {
    let k = |key: &str| format!("{pre}.{key}");
    let issuer = match &o.issuer {
        None => {
            p.add(
                &k("issuer"),
                "missing",
                "set it to the IdP's issuer URL, e.g. https://login.example.com/realms/main",
            );
            None
        }
        Some(s) => {
            match Url::parse(s) {
                Ok(u)
                    if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u)) =>
                {
                    Some(u)
                }
                Ok(_) => {
                    p.add(&k("issuer"), format!("`{s}` is not https"), "use the https issuer URL (plain http is only allowed on loopback, for tests)");
                    None
                }
                Err(_) => {
                    p.add(
                        &k("issuer"),
                        format!("`{s}` is not a URL"),
                        "set it to the IdP's issuer URL",
                    );
                    None
                }
            }
        }
    };
    let client_id = match &o.client_id {
        Some(c) if !c.is_empty() => Some(c.clone()),
        _ => {
            p.add(
                &k("client_id"),
                "missing",
                "set it to the client id registered at the IdP",
            );
            None
        }
    };
    let client_secret = secret(
        p,
        &k("client_secret"),
        &o.client_secret,
        &o.client_secret_file,
        &o.client_secret_env,
        env,
        base_dir,
    )
    .map(|s| Secret::new(s.trim().to_string()));
    let scopes = o
        .scopes
        .clone()
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        p.add(
            &k("scopes"),
            "does not include `openid`",
            "add \"openid\" to the list",
        );
    }
    let allowed_algs = jws_algs(p, &k("allowed_algs"), &o.allowed_algs);
    for key in o.extra_authorize_params.keys() {
        if [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
        ]
        .contains(&key.as_str())
        {
            p.add(
                &k("extra_authorize_params"),
                format!("`{key}` is set by sidegate itself"),
                "remove it",
            );
        }
    }
    let clock_skew = duration(p, &k("clock_skew"), &o.clock_skew, Duration::from_secs(60));
    let http_timeout = duration(
        p,
        &k("http_timeout"),
        &o.http_timeout,
        Duration::from_secs(10),
    );
    let jwks_min_refresh_interval = duration(
        p,
        &k("jwks_min_refresh_interval"),
        &o.jwks_min_refresh_interval,
        Duration::from_secs(30),
    );
    let refresh_interval = o.refresh_interval.as_ref().map(|_| {
        duration(
            p,
            &k("refresh_interval"),
            &o.refresh_interval,
            Duration::from_secs(300),
        )
    });
    if refresh_interval.is_some_and(|d| d < Duration::from_secs(1)) {
        p.add(
            &k("refresh_interval"),
            "is shorter than 1s",
            "refresh every few minutes, e.g. \"5m\"",
        );
    }
    Some(OidcConfig {
        name,
        refresh_interval,
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes,
        extra_authorize_params: o
            .extra_authorize_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        pkce: o.pkce.unwrap_or(true),
        clock_skew,
        allowed_algs,
        userinfo: o.userinfo.unwrap_or(false),
        http_timeout,
        jwks_min_refresh_interval,
    })
}
