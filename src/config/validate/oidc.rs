//! The `[oidc]` section: one OpenID provider written directly in it (named by `name`,
//! default "oidc") and more under `[oidc.providers.<name>]`, each with its issuer, client,
//! scopes, PKCE, clock skew, algorithms and timeouts.

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{duration, is_loopback_host, jws_algs, secret, Problems};
use crate::config::raw;
use crate::config::{ClaimNames, Env, OidcConfig};
use crate::keys::Secret;

/// Builds every provider, the inline one first; problems name `oidc.<key>` or
/// `oidc.providers.<name>.<key>`.
pub(super) fn build(
    o: &raw::Oidc,
    identity: &raw::Identity,
    env: &Env,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Vec<OidcConfig>> {
    let mut out = Vec::new();
    let mut ok = true;
    let inline = o.inline();
    let has_inline = inline.issuer.is_some()
        || inline.client_id.is_some()
        || inline.preset.is_some()
        || o.providers.is_empty();
    let first = o.name.clone().unwrap_or_else(|| "oidc".into());
    if has_inline {
        match build_one(&inline, first.clone(), "oidc", env, base_dir, identity, p) {
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
        match build_one(raw, name.clone(), &pre, env, base_dir, identity, p) {
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
    identity: &raw::Identity,
    p: &mut Problems,
) -> Option<OidcConfig> {
    let k = |key: &str| format!("{pre}.{key}");
    let preset = preset(o, &k, p)?;
    let issuer_text = match (&preset, &o.issuer) {
        (Some(ps), Some(given))
            if given.trim_end_matches('/') != ps.issuer.trim_end_matches('/') =>
        {
            p.add(
                &k("issuer"),
                format!("`{given}` is not the preset's issuer {}", ps.issuer),
                "leave issuer out: the preset derives it",
            );
            return None;
        }
        (Some(ps), _) => Some(ps.issuer.clone()),
        (None, given) => given.clone(),
    };
    let issuer = match &issuer_text {
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
    let scopes = o.scopes.clone().unwrap_or_else(|| match &preset {
        Some(ps) => ps.scopes.clone(),
        None => vec!["openid".into(), "email".into(), "profile".into()],
    });
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
    // A preset's claim names, except where `[identity]` says otherwise.
    let claims = preset
        .as_ref()
        .and_then(|ps| ps.claims.clone())
        .map(|mut c| {
            if let Some(u) = &identity.user_claims {
                c.user = u.clone();
            }
            if let Some(e) = &identity.email_claim {
                c.email = e.clone();
            }
            if let Some(r) = &identity.role_claim {
                c.role = r.clone();
            }
            if let Some(t) = &identity.teams_claim {
                c.teams = t.clone();
            }
            c
        });
    let mut extra_authorize_params: Vec<(String, String)> = o
        .extra_authorize_params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(ps) = &preset {
        for (key, v) in &ps.params {
            if !extra_authorize_params.iter().any(|(k2, _)| k2 == key) {
                extra_authorize_params.push((key.clone(), v.clone()));
            }
        }
    }
    // Entra's overage: on by default with the entra preset, "off" turns it off, a URL points
    // it elsewhere (https, or http on loopback for tests).
    const GRAPH: &str = "https://graph.microsoft.com/v1.0/me/getMemberObjects";
    let entra = matches!(o.preset.as_deref(), Some("entra" | "microsoft"));
    let group_overage = match o.group_overage.as_deref() {
        None if entra => Url::parse(GRAPH).ok(),
        None | Some("off") => None,
        Some("graph") => Url::parse(GRAPH).ok(),
        Some(u) => match Url::parse(u) {
            Ok(url)
                if url.scheme() == "https"
                    || (url.scheme() == "http" && is_loopback_host(&url)) =>
            {
                Some(url)
            }
            _ => {
                p.add(
                    &k("group_overage"),
                    format!("`{u}` is not graph, off or an https URL"),
                    "use \"graph\" (Microsoft Graph getMemberObjects) or \"off\"",
                );
                None
            }
        },
    };
    // Endpoints by hand: all of authorization, token and JWKS (the ID token is verified).
    let url_of = |p: &mut Problems, key: &str, v: &Option<String>| -> Option<Url> {
        let s = v.as_ref()?;
        match Url::parse(s) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u)) => {
                Some(u)
            }
            _ => {
                p.add(
                    &k(key),
                    format!("`{s}` is not an https URL"),
                    "give the IdP's https endpoint",
                );
                None
            }
        }
    };
    let authorization = url_of(p, "authorization_endpoint", &o.authorization_endpoint);
    let token_ep = url_of(p, "token_endpoint", &o.token_endpoint);
    let jwks = url_of(p, "jwks_uri", &o.jwks_uri);
    let userinfo_ep = url_of(p, "userinfo_endpoint", &o.userinfo_endpoint);
    let end_session = url_of(p, "end_session_endpoint", &o.end_session_endpoint);
    let any =
        o.authorization_endpoint.is_some() || o.token_endpoint.is_some() || o.jwks_uri.is_some();
    let endpoints = match (authorization, token_ep, jwks) {
        (Some(authorization), Some(token), Some(jwks)) => Some(crate::config::Endpoints {
            authorization,
            token,
            jwks,
            userinfo: userinfo_ep,
            end_session,
        }),
        _ if any => {
            p.add(
                &k("authorization_endpoint"),
                "endpoints by hand need authorization_endpoint, token_endpoint and jwks_uri",
                "give all three (the ID token's signature is always checked), or none for discovery",
            );
            None
        }
        _ => None,
    };
    let mut idp_headers = Vec::new();
    if let Some(var) = &o.idp_headers_env {
        match env.get(var) {
            Some(list) => {
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let parsed = item.split_once('=').and_then(|(n, v)| {
                        Some((
                            http::HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                            http::HeaderValue::from_str(v.trim()).ok()?,
                        ))
                    });
                    match parsed {
                        Some(h) => idp_headers.push(h),
                        None => p.add(
                            &k("idp_headers_env"),
                            format!("{var}: an entry is not name=value"),
                            "write Name=value pairs separated by commas",
                        ),
                    }
                }
            }
            None => p.add(
                &k("idp_headers_env"),
                format!("environment variable {var} is not set"),
                format!("export {var}"),
            ),
        }
    }
    Some(OidcConfig {
        name,
        refresh_interval,
        group_overage,
        endpoints,
        idp_headers,
        required_claims: preset
            .as_ref()
            .map(|ps| ps.required.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(
                o.required_claims
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            )
            .collect(),
        claims,
        issuer_trailing_slash: preset.as_ref().is_some_and(|ps| ps.trailing_slash),
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes,
        extra_authorize_params,
        pkce: o.pkce.unwrap_or(true),
        clock_skew,
        allowed_algs,
        userinfo: o.userinfo.unwrap_or(false),
        http_timeout,
        jwks_min_refresh_interval,
    })
}

/// What a preset sets: the issuer, default scopes, authorize parameters, required claims and
/// where the identity lives. Keys of other presets are refused, so a half-edited config
/// cannot silently mean something else.
struct Preset {
    issuer: String,
    scopes: Vec<String>,
    params: Vec<(String, String)>,
    required: Vec<(String, String)>,
    claims: Option<ClaimNames>,
    trailing_slash: bool,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn names(user: &[&str], email: &str, role: &str, teams: &str) -> Option<ClaimNames> {
    Some(ClaimNames {
        user: strs(user),
        email: email.into(),
        role: role.into(),
        teams: teams.into(),
    })
}

/// A host name as written in a preset key (no scheme, path or port games).
fn host(p: &mut Problems, key: &str, v: &Option<String>, example: &str) -> Option<String> {
    match v {
        Some(h)
            if !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            Some(h.to_ascii_lowercase())
        }
        Some(h) => {
            p.add(
                key,
                format!("`{h}` is not a host name"),
                format!("write it like {example}, without https:// or a path"),
            );
            None
        }
        None => {
            p.add(key, "missing", format!("set it, e.g. {example}"));
            None
        }
    }
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn preset(
    o: &raw::OidcProvider,
    k: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<Option<Preset>> {
    let name = o.preset.as_deref().unwrap_or("generic");
    let keys: [(&str, bool, &[&str]); 7] = [
        ("hosted_domain", o.hosted_domain.is_some(), &["google"]),
        ("tenant", o.tenant.is_some(), &["entra", "microsoft"]),
        ("domain", o.domain.is_some(), &["okta", "auth0"]),
        (
            "authorization_server",
            o.authorization_server.is_some(),
            &["okta"],
        ),
        ("base_url", o.base_url.is_some(), &["keycloak"]),
        ("realm", o.realm.is_some(), &["keycloak"]),
        ("claims_namespace", o.claims_namespace.is_some(), &["auth0"]),
    ];
    for (key, set, presets) in keys {
        if set && !presets.contains(&name) {
            p.add(
                &k(key),
                format!("only used with preset {}", presets[0]),
                "remove it, or set that preset",
            );
        }
    }
    let base = strs(&["openid", "email", "profile"]);
    Some(Some(match name {
        "generic" => return Some(None),
        "google" => {
            let hd = o.hosted_domain.clone().filter(|h| !h.is_empty());
            Preset {
                issuer: "https://accounts.google.com".into(),
                scopes: base,
                // `hd` in the request only shapes Google's account picker; the claim is the check.
                params: hd.iter().map(|h| ("hd".to_string(), h.clone())).collect(),
                required: hd.iter().map(|h| ("hd".to_string(), h.clone())).collect(),
                claims: names(&["email", "sub"], "email", "role", "groups"),
                trailing_slash: false,
            }
        }
        "entra" | "microsoft" => {
            let tenant = match o.tenant.as_deref() {
                Some(t) if is_guid(t) => t.to_ascii_lowercase(),
                Some(t) => {
                    p.add(&k("tenant"), format!("`{t}` is not a tenant id"), "give the directory (tenant) id, a GUID from the Entra admin center; common, organizations and consumers would let other directories in");
                    return None;
                }
                None => {
                    p.add(
                        &k("tenant"),
                        "missing",
                        "give the directory (tenant) id, a GUID",
                    );
                    return None;
                }
            };
            Preset {
                issuer: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
                scopes: base,
                params: Vec::new(),
                required: vec![("tid".into(), tenant)],
                claims: names(
                    &["preferred_username", "email", "oid"],
                    "email",
                    "roles",
                    "groups",
                ),
                trailing_slash: false,
            }
        }
        "okta" => {
            let domain = host(p, &k("domain"), &o.domain, "example.okta.com")?;
            let issuer = match o.authorization_server.as_deref() {
                Some(s) if !s.is_empty() => format!("https://{domain}/oauth2/{s}"),
                _ => format!("https://{domain}"),
            };
            Preset {
                issuer,
                scopes: strs(&["openid", "email", "profile", "groups"]),
                params: Vec::new(),
                required: Vec::new(),
                claims: names(
                    &["preferred_username", "email", "sub"],
                    "email",
                    "role",
                    "groups",
                ),
                trailing_slash: false,
            }
        }
        "keycloak" => {
            let realm = o
                .realm
                .clone()
                .filter(|r| !r.is_empty() && !r.contains('/'));
            let base_url = o.base_url.as_deref().and_then(|u| Url::parse(u).ok());
            let (Some(realm), Some(base_url)) = (realm, base_url) else {
                p.add(
                    &k("realm"),
                    "keycloak needs base_url and realm",
                    "e.g. base_url = \"https://kc.example.com\", realm = \"main\"",
                );
                return None;
            };
            Preset {
                issuer: format!("{}/realms/{realm}", base_url.as_str().trim_end_matches('/')),
                scopes: base,
                params: Vec::new(),
                required: Vec::new(),
                // Keycloak puts roles in the ID token only when the "realm roles" mapper has
                // "Add to ID token" on (deploy docs say so).
                claims: names(
                    &["preferred_username", "email", "sub"],
                    "email",
                    "realm_access.roles",
                    "groups",
                ),
                trailing_slash: false,
            }
        }
        "auth0" => {
            let domain = host(p, &k("domain"), &o.domain, "example.us.auth0.com")?;
            let ns = o.claims_namespace.clone().unwrap_or_default();
            Preset {
                issuer: format!("https://{domain}/"),
                scopes: base,
                params: Vec::new(),
                required: Vec::new(),
                claims: names(
                    &["email", "nickname", "sub"],
                    "email",
                    &format!("{ns}roles"),
                    &format!("{ns}groups"),
                ),
                trailing_slash: true,
            }
        }
        other => {
            p.add(
                &k("preset"),
                format!("`{other}` is not a preset"),
                "use google, entra, okta, keycloak, auth0 or generic",
            );
            return None;
        }
    }))
}

/// Migration from apps that configure SSO by environment variables (`GOOGLE_*`,
/// `MICROSOFT_*`, `GENERIC_*`): when the file has no `[oidc]`, they become sidegate's own
/// keys (a preset, the client, scopes, PKCE, the role claim); `SIDEGATE_*` overrides apply
/// on top. Only names; secrets stay in their variables (`client_secret_env`).
pub(super) fn apply_sso_env(table: &mut toml::Table, env: &Env, p: &mut Problems) {
    use toml::Value as V;
    if table.contains_key("oidc") {
        return;
    }
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let mut oidc = toml::Table::new();
    let mut put = |k: &str, v: V| {
        oidc.insert(k.into(), v);
    };
    if let Some(id) = get("GOOGLE_CLIENT_ID") {
        put("preset", V::String("google".into()));
        put("client_id", V::String(id));
        put(
            "client_secret_env",
            V::String("GOOGLE_CLIENT_SECRET".into()),
        );
    } else if let Some(id) = get("MICROSOFT_CLIENT_ID") {
        put("preset", V::String("entra".into()));
        put("client_id", V::String(id));
        put(
            "client_secret_env",
            V::String("MICROSOFT_CLIENT_SECRET".into()),
        );
        match get("MICROSOFT_TENANT") {
            Some(t) => put("tenant", V::String(t)),
            None => p.add(
                "MICROSOFT_TENANT",
                "unset (other tools then use `common`: any Microsoft account could sign in)",
                "set it to your directory (tenant) id",
            ),
        }
    } else if let Some(id) = get("GENERIC_CLIENT_ID") {
        put("client_id", V::String(id));
        put(
            "client_secret_env",
            V::String("GENERIC_CLIENT_SECRET".into()),
        );
        // Attributes come from userinfo in tools that use these variables.
        put("userinfo", V::Boolean(true));
        let scope = get("GENERIC_SCOPE").unwrap_or_else(|| "openid email profile".into());
        put(
            "scopes",
            V::Array(
                scope
                    .split_whitespace()
                    .map(|s| V::String(s.into()))
                    .collect(),
            ),
        );
        if let Some(pkce) = get("GENERIC_CLIENT_USE_PKCE") {
            put("pkce", V::Boolean(pkce.eq_ignore_ascii_case("true")));
        }
        // With a JWKS URI the endpoints are taken as given (no discovery); without one,
        // discovery from the issuer supplies them.
        if env.contains_key("SIDEGATE_OIDC__JWKS_URI") {
            for (var, key) in [
                ("GENERIC_AUTHORIZATION_ENDPOINT", "authorization_endpoint"),
                ("GENERIC_TOKEN_ENDPOINT", "token_endpoint"),
                ("GENERIC_USERINFO_ENDPOINT", "userinfo_endpoint"),
            ] {
                if let Some(v) = get(var) {
                    put(key, V::String(v));
                }
            }
        }
        if !env.contains_key("SIDEGATE_OIDC__ISSUER") {
            p.add(
                "GENERIC_CLIENT_ID",
                "sidegate verifies ID tokens, so it needs the provider's issuer",
                "set SIDEGATE_OIDC__ISSUER (and SIDEGATE_OIDC__JWKS_URI when the provider has no discovery document)",
            );
        }
        if get("GENERIC_SSO_HEADERS").is_some() {
            put("idp_headers_env", V::String("GENERIC_SSO_HEADERS".into()));
        }
        if let Some(role) = get("GENERIC_USER_ROLE_ATTRIBUTE") {
            let identity = table
                .entry("identity")
                .or_insert_with(|| V::Table(toml::Table::new()));
            if let V::Table(t) = identity {
                t.entry("role_claim").or_insert(V::String(role));
            }
        }
    }
    if !oidc.is_empty() {
        table.insert("oidc".into(), V::Table(oidc));
    }
}
