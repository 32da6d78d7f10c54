//! `Raw` → `Config`: defaults, parsing of every value into its type, secret loading, and the
//! cross-key checks. Collects every problem instead of stopping at the first.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use url::Url;

use super::raw::{self, Raw};
use super::*;
use crate::keys::{CookieKeys, SigningKeys};

mod bearer;
mod identity;
mod local;
mod login;
mod oidc;
mod policy;
mod saml;
mod store;

const ENV_PREFIX: &str = "SIDEGATE_";
/// More connection threads than this is a typo, not a machine.
const MAX_THREADS: usize = 1024;

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Problem {
            key: key.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

pub(super) fn load(text: &str, env: &Env, base_dir: &Path) -> Result<Config, ConfigError> {
    let mut problems = Problems(Vec::new());
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            problems.add(
                "(file)",
                format!("not valid TOML: {e}"),
                "correct the TOML syntax",
            );
            return Err(ConfigError {
                problems: problems.0,
            });
        }
    };
    oidc::apply_sso_env(&mut table, env, &mut problems);
    apply_env_overrides(&mut table, env, &mut problems);

    let mut unknown = Vec::new();
    let raw: Raw = {
        let mut on_unknown = |path: serde_ignored::Path<'_>| {
            // Optional sections show up with a `?` segment (`oidc.?.pcke`): drop it.
            unknown.push(
                path.to_string()
                    .split('.')
                    .filter(|s| *s != "?")
                    .collect::<Vec<_>>()
                    .join("."),
            )
        };
        let de = serde_ignored::Deserializer::new(toml::Value::Table(table), &mut on_unknown);
        match serde_path_to_error::deserialize(de) {
            Ok(raw) => raw,
            Err(e) => {
                problems.add(
                    &e.path().to_string(),
                    e.inner().to_string(),
                    "give the value the documented type (see README, Configuration)",
                );
                return Err(ConfigError {
                    problems: problems.0,
                });
            }
        }
    };
    for key in unknown {
        problems.add(
            &key,
            "unknown key",
            "remove it or correct its spelling (see README, Configuration)",
        );
    }

    let config = build(raw, env, base_dir, &mut problems);
    match config {
        Some(c) if problems.0.is_empty() => Ok(c),
        _ => Err(ConfigError {
            problems: problems.0,
        }),
    }
}

/// `SIDEGATE_SECTION__KEY=value` (and deeper, `SIDEGATE_SERVER__TLS__CERT_FILE`) overrides the
/// file. Values that look like TOML arrays or booleans are parsed as such, all else is a string
/// (which the number fields read as a number: `raw::whole_number`).
fn apply_env_overrides(table: &mut toml::Table, env: &Env, problems: &mut Problems) {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue; // SIDEGATE_CONFIG and friends belong to the command line
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let parsed = if value.starts_with('[') || value == "true" || value == "false" {
            match format!("v = {value}").parse::<toml::Table>() {
                Ok(mut t) => t.remove("v").expect("just parsed"),
                Err(_) => {
                    problems.add(
                        name,
                        "not a valid TOML array or boolean",
                        "quote strings inside arrays: [\"a\", \"b\"]",
                    );
                    continue;
                }
            }
        } else {
            toml::Value::String(value.clone())
        };
        if insert_path(table, &path, parsed).is_err() {
            problems.add(
                name,
                "overrides a value that is not a section",
                "check the variable's name",
            );
        }
    }
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), ()> {
    match path {
        [] => Err(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => insert_path(t, rest, value),
            _ => Err(()),
        },
    }
}

fn duration(p: &mut Problems, key: &str, value: &Option<String>, default: Duration) -> Duration {
    match value {
        None => default,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                p.add(
                    key,
                    format!("`{s}` is not a duration"),
                    "write it like \"30s\", \"5m\" or \"12h\"",
                );
                default
            }
        },
    }
}

/// Reads a secret from exactly one of `<key>_file` or `<key>_env`; inline values are refused
/// so secrets never sit in a file that is also shown, diffed or templated.
fn secret(
    p: &mut Problems,
    key: &str,
    inline: &Option<String>,
    file: &Option<String>,
    env_name: &Option<String>,
    env: &Env,
    base_dir: &Path,
) -> Option<String> {
    if inline.is_some() {
        p.add(key, "secrets are not accepted inline", format!("put it in a file and set `{key}_file`, or in an environment variable named by `{key}_env`"));
        return None;
    }
    match (file, env_name) {
        (Some(_), Some(_)) => {
            p.add(
                key,
                "both a file and an env var are given",
                format!("keep one of `{key}_file` and `{key}_env`"),
            );
            None
        }
        (Some(f), None) => {
            let path = base_dir.join(f);
            match std::fs::read_to_string(&path) {
                Ok(s) => Some(s),
                Err(e) => {
                    p.add(
                        &format!("{key}_file"),
                        format!("cannot read {}: {e}", path.display()),
                        "point it at a readable file",
                    );
                    None
                }
            }
        }
        (None, Some(v)) => match env.get(v) {
            Some(s) if !s.is_empty() => Some(s.clone()),
            _ => {
                p.add(
                    &format!("{key}_env"),
                    format!("environment variable {v} is not set"),
                    format!("export {v}, or use `{key}_file`"),
                );
                None
            }
        },
        (None, None) => {
            p.add(
                key,
                "missing",
                format!("set `{key}_file` (a path) or `{key}_env` (a variable name)"),
            );
            None
        }
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The origin of a URL as `scheme://host[:port]`, the form `public_url` is kept in.
pub fn public_origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn origin_url(p: &mut Problems, key: &str, value: &Option<String>, required: bool) -> Option<Url> {
    let Some(s) = value else {
        if required {
            p.add(
                key,
                "missing",
                "set it to an absolute URL like https://app.example.com",
            );
        }
        return None;
    };
    match Url::parse(s) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
            if u.path() != "/"
                || u.query().is_some()
                || u.fragment().is_some()
                || !u.username().is_empty()
                || u.password().is_some()
            {
                p.add(
                    key,
                    format!("`{s}` has a path, query, fragment or user info"),
                    "give only scheme://host[:port]",
                );
                None
            } else {
                Some(u)
            }
        }
        _ => {
            p.add(
                key,
                format!("`{s}` is not an absolute http(s) URL"),
                "write it like https://app.example.com",
            );
            None
        }
    }
}

fn header_name(p: &mut Problems, key: &str, value: &Option<String>, default: &str) -> HeaderName {
    let s = value.as_deref().unwrap_or(default);
    match HeaderName::from_str(s) {
        Ok(h) if !RESERVED_HEADERS.contains(&h.as_str()) => h,
        Ok(_) => {
            p.add(
                key,
                format!("`{s}` is a header sidegate or HTTP itself manages"),
                "choose another name, e.g. X-Forwarded-User",
            );
            HeaderName::from_static("x-invalid")
        }
        Err(_) => {
            p.add(
                key,
                format!("`{s}` is not a valid header name"),
                "use letters, digits, `-` and `_`",
            );
            HeaderName::from_static("x-invalid")
        }
    }
}

const RESERVED_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "set-cookie",
    "connection",
    "keep-alive",
    "content-length",
    "content-type",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "authorization",
    "proxy-authorization",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

fn build(raw: Raw, env: &Env, base_dir: &Path, p: &mut Problems) -> Option<Config> {
    let server = build_server(&raw.server, p);
    // No [upstream]: a forward-auth-only deployment (nginx/Traefik/Envoy do the proxying).
    let upstream = match &raw.upstream {
        Some(u) => build_upstream(u, p).map(Some),
        None => Some(None),
    };
    if raw.oidc.is_none() && raw.saml.is_none() && raw.local.is_none() {
        p.add(
            "oidc",
            "no login method is configured",
            "add an [oidc] section (issuer, client_id, client_secret_file) or a [saml] section (idp_metadata_file)",
        );
    }
    let oidc = raw
        .oidc
        .as_ref()
        .map(|o| oidc::build(o, &raw.identity, env, base_dir, p))
        .unwrap_or(Some(Vec::new()));
    let sp_metadata_url = server
        .as_ref()
        .map(|s| format!("{}{}/saml/metadata", public_origin(&s.public_url), s.prefix));
    let saml = raw
        .saml
        .as_ref()
        .map(|s| saml::build(s, sp_metadata_url, base_dir, p));
    let bearer = raw
        .bearer
        .as_ref()
        .map(|b| bearer::build(b, env, base_dir, p))
        .unwrap_or_default();
    let session = build_session(
        &raw.session,
        server.as_ref().map(|s| &s.public_url),
        env,
        base_dir,
        p,
    );
    let assertion = build_assertion(
        &raw.assertion,
        server.as_ref().map(|s| &s.public_url),
        env,
        base_dir,
        p,
    );
    let identity = identity::build(&raw.identity, p);
    let headers = build_headers(&raw.headers, &identity, p);
    let access = build_access(&raw.access, server.as_ref().map(|s| s.prefix.as_str()), p);
    let local = raw
        .local
        .as_ref()
        .map(|l| local::build(l, &identity, base_dir, p));
    let provider_names: Vec<String> = oidc
        .iter()
        .flatten()
        .map(|o| o.name.clone())
        .chain(local.iter().flatten().map(|_| "local".to_string()))
        .chain(
            saml.iter()
                .flatten()
                .flat_map(|s| s.idps.iter().map(|i| i.name.clone())),
        )
        .collect();
    let login = login::build(&raw.login, &provider_names, p);
    // Policy `idps` may name providers: each name also stands for the issuer its sessions
    // record (an OIDC issuer, a SAML IdP's entity ID when its metadata is a file).
    let issuers: Vec<(String, String)> = oidc
        .iter()
        .flatten()
        .map(|o| {
            (
                o.name.clone(),
                o.issuer.as_str().trim_end_matches('/').to_string(),
            )
        })
        .chain(saml.iter().flatten().flat_map(|s| {
            s.idps.iter().filter_map(|i| match &i.idp {
                IdpSource::File(m) => Some((i.name.clone(), m.entity_id.clone())),
                IdpSource::Url { .. } => None,
            })
        }))
        .collect();
    let policy = policy::build(
        &raw.policy,
        server.as_ref().map(|s| s.prefix.as_str()),
        &identity,
        &issuers,
        p,
    );
    let log = match raw.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add(
                "log.format",
                format!("`{other}` is not a log format"),
                "use \"text\" or \"json\"",
            );
            LogFormat::Text
        }
    };
    Some(Config {
        server: server?,
        upstream: upstream?,
        oidc: oidc?,
        saml: match saml {
            None => None,
            Some(s) => Some(s?),
        },
        bearer,
        session: session?,
        assertion: assertion?,
        identity,
        headers,
        access,
        policy,
        login,
        pages: build_pages(&raw.pages, base_dir, p),
        local: match local {
            None => None,
            Some(l) => Some(l?),
        },
        log,
    })
}

fn build_server(s: &raw::Server, p: &mut Problems) -> Option<ServerConfig> {
    let listen_raw = if s.listen.is_empty() {
        vec!["127.0.0.1:4180".to_string()]
    } else {
        s.listen.clone()
    };
    let mut listen = Vec::new();
    for a in &listen_raw {
        match a.parse::<SocketAddr>() {
            Ok(addr) => listen.push(addr),
            Err(_) => p.add(
                "server.listen",
                format!("`{a}` is not an address"),
                "write ip:port, e.g. 0.0.0.0:4180",
            ),
        }
    }
    let admin_listen = match s.admin_listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9180))),
        Some("off") => None,
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(addr) if listen.contains(&addr) => {
                p.add(
                    "server.admin_listen",
                    "same address as a public listener",
                    "give the admin listener its own address",
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                p.add(
                    "server.admin_listen",
                    format!("`{a}` is not an address"),
                    "write ip:port, e.g. 127.0.0.1:9180, or \"off\"",
                );
                None
            }
        },
    };
    let public_url = origin_url(p, "server.public_url", &s.public_url, true);
    let prefix = s.prefix.clone().unwrap_or_else(|| "/.sidegate".into());
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || prefix.ends_with('/')
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        || prefix.contains("//")
        || prefix.split('/').any(|seg| seg == "." || seg == "..")
    {
        p.add(
            "server.prefix",
            format!("`{prefix}` is not a plain path prefix"),
            "use something like /.sidegate (leading /, no trailing /)",
        );
    }
    let mut trusted_proxies = Vec::new();
    for t in &s.trusted_proxies {
        match t
            .parse::<IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => p.add(
                "server.trusted_proxies",
                format!("`{t}` is not an address or CIDR"),
                "write 10.0.0.0/8 or 127.0.0.1",
            ),
        }
    }
    let tls = match &s.tls {
        None => None,
        Some(t) => match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert_file: c.into(),
                key_file: k.into(),
            }),
            _ => {
                p.add(
                    "server.tls",
                    "needs both cert_file and key_file",
                    "set server.tls.cert_file and server.tls.key_file, or remove [server.tls]",
                );
                None
            }
        },
    };
    let header_read_timeout = duration(
        p,
        "server.header_read_timeout",
        &s.header_read_timeout,
        Duration::from_secs(10),
    );
    let shutdown_grace = duration(
        p,
        "server.shutdown_grace",
        &s.shutdown_grace,
        Duration::from_secs(30),
    );
    let max_connections = s.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        p.add(
            "server.max_connections",
            "is 0, so no connection would be served",
            "leave it out for the default (10000) or give the number of open connections to allow",
        );
    }
    let threads = s.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if threads > MAX_THREADS {
        p.add(
            "server.threads",
            format!("is {threads}, more than {MAX_THREADS}"),
            "leave it out for one thread per core, or give a smaller number",
        );
    }
    let cpu_affinity = match s.cpu_affinity.as_deref() {
        None | Some("auto") => CpuAffinity::Auto,
        Some("off") => CpuAffinity::Off,
        Some(other) => {
            p.add(
                "server.cpu_affinity",
                format!("`{other}` is not a CPU affinity"),
                "use \"auto\" (the default: a CPU per thread when there are exactly as many) or \"off\" (the kernel places the threads)",
            );
            CpuAffinity::Auto
        }
    };
    Some(ServerConfig {
        listen,
        admin_listen,
        public_url: public_url?,
        prefix,
        trusted_proxies,
        tls,
        header_read_timeout,
        shutdown_grace,
        max_connections,
        threads,
        cpu_affinity,
        login_rate_per_minute: s.login_rate_per_minute.unwrap_or(60),
    })
}

fn build_upstream(u: &raw::Upstream, p: &mut Problems) -> Option<UpstreamConfig> {
    let url = origin_url(p, "upstream.url", &u.url, true);
    let connect_timeout = duration(
        p,
        "upstream.connect_timeout",
        &u.connect_timeout,
        Duration::from_secs(5),
    );
    let response_timeout = duration(
        p,
        "upstream.response_timeout",
        &u.response_timeout,
        Duration::from_secs(60),
    );
    Some(UpstreamConfig {
        url: url?,
        connect_timeout,
        response_timeout,
        pass_host_header: u.pass_host_header.unwrap_or(true),
        max_idle_connections: u.max_idle_connections.unwrap_or(1024),
    })
}

/// A JWS algorithm allow-list (default: all four asymmetric algorithms sidegate knows).
fn jws_algs(p: &mut Problems, key: &str, names: &Option<Vec<String>>) -> Vec<IdTokenAlg> {
    let names = names.clone().unwrap_or_else(|| {
        ["RS256", "PS256", "ES256", "EdDSA"]
            .map(String::from)
            .to_vec()
    });
    if names.is_empty() {
        p.add(
            key,
            "is empty",
            "leave it out for the default, or list RS256, PS256, ES256 or EdDSA",
        );
    }
    let mut algs = Vec::new();
    for a in &names {
        match a.as_str() {
            "RS256" => algs.push(IdTokenAlg::Rs256),
            "PS256" => algs.push(IdTokenAlg::Ps256),
            "ES256" => algs.push(IdTokenAlg::Es256),
            "EdDSA" => algs.push(IdTokenAlg::EdDsa),
            other => p.add(
                key,
                format!("`{other}` is not allowed"),
                "choose among RS256, PS256, ES256, EdDSA (never none or HS*)",
            ),
        }
    }
    algs
}

fn build_session(
    s: &raw::Session,
    public_url: Option<&Url>,
    env: &Env,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<SessionConfig> {
    let cookie_name = s.cookie_name.clone().unwrap_or_else(|| "_sidegate".into());
    if cookie_name.is_empty()
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        p.add(
            "session.cookie_name",
            format!("`{cookie_name}` is not a plain cookie name"),
            "use letters, digits, `_`, `-` and `.`",
        );
    }
    let keys = secret(
        p,
        "session.secrets",
        &s.secrets,
        &s.secrets_file,
        &s.secrets_env,
        env,
        base_dir,
    )
    .and_then(|text| {
        CookieKeys::parse(&text)
            .map_err(|e| {
                p.add(
                    "session.secrets",
                    e.to_string(),
                    "one base64 32-byte secret per line; make one with `sidegate keys generate`",
                )
            })
            .ok()
    });
    let absolute_lifetime = duration(
        p,
        "session.absolute_lifetime",
        &s.absolute_lifetime,
        Duration::from_secs(12 * 3600),
    );
    let idle_lifetime = duration(
        p,
        "session.idle_lifetime",
        &s.idle_lifetime,
        Duration::from_secs(3600),
    );
    if idle_lifetime > absolute_lifetime {
        p.add(
            "session.idle_lifetime",
            "is longer than session.absolute_lifetime",
            "make it shorter than the absolute lifetime",
        );
    }
    let login_lifetime = duration(
        p,
        "session.login_lifetime",
        &s.login_lifetime,
        Duration::from_secs(600),
    );
    let plain_http = public_url.is_some_and(|u| u.scheme() == "http");
    let cookie_secure = match s.cookie_secure {
        Some(v) => v,
        None if plain_http => {
            p.add(
                "session.cookie_secure",
                "server.public_url is plain http, so browsers would drop Secure cookies",
                "use https, or set cookie_secure = false for local development",
            );
            true
        }
        None => true,
    };
    let same_site = match s.same_site.as_deref() {
        None | Some("lax") => SameSite::Lax,
        Some("strict") => SameSite::Strict,
        Some("none") => {
            if !cookie_secure {
                p.add(
                    "session.same_site",
                    "\"none\" needs Secure cookies",
                    "set cookie_secure = true or use \"lax\"",
                );
            }
            SameSite::None
        }
        Some(o) => {
            p.add(
                "session.same_site",
                format!("`{o}` is not a SameSite value"),
                "use \"lax\", \"strict\" or \"none\"",
            );
            SameSite::Lax
        }
    };
    let cookie_domain = s
        .cookie_domain
        .as_ref()
        .map(|d| d.trim_start_matches('.').to_ascii_lowercase());
    if let (Some(d), Some(u)) = (&cookie_domain, public_url) {
        let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
        if host != *d && !host.ends_with(&format!(".{d}")) {
            p.add(
                "session.cookie_domain",
                format!("`{d}` does not cover the public_url host `{host}`"),
                "use the public host or one of its parent domains",
            );
        }
    }
    let store = store::build(s, env, base_dir, p);
    let login_in_store = store::login_transactions(s, &store, p);
    Some(SessionConfig {
        store,
        login_in_store,
        cookie_name,
        keys: keys?,
        absolute_lifetime,
        idle_lifetime,
        cookie_secure,
        cookie_domain,
        same_site,
        login_lifetime,
    })
}

fn build_assertion(
    a: &raw::Assertion,
    public_url: Option<&Url>,
    env: &Env,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<AssertionConfig> {
    let keys = secret(
        p,
        "assertion.signing_keys",
        &a.signing_keys,
        &a.signing_keys_file,
        &a.signing_keys_env,
        env,
        base_dir,
    )
    .and_then(|text| {
        SigningKeys::from_pem(&text)
            .map_err(|e| {
                p.add(
                    "assertion.signing_keys",
                    e.to_string(),
                    "use PKCS#8 PEM keys made by `sidegate keys generate`",
                )
            })
            .ok()
    });
    let lifetime = duration(
        p,
        "assertion.lifetime",
        &a.lifetime,
        Duration::from_secs(300),
    );
    if lifetime < Duration::from_secs(30) || lifetime > Duration::from_secs(3600) {
        p.add(
            "assertion.lifetime",
            "must be between 30s and 1h",
            "the default 5m suits most apps",
        );
    }
    let audience = a
        .audience
        .clone()
        .or_else(|| public_url.map(public_origin))
        .unwrap_or_default();
    let mut compat_headers = Vec::new();
    for name in &a.compat_headers {
        match name.as_str() {
            "pomerium" => compat_headers.push(CompatHeader::Pomerium),
            "iap" => compat_headers.push(CompatHeader::Iap),
            other => p.add(
                "assertion.compat_headers",
                format!("`{other}` is not a known format"),
                "list \"pomerium\" (X-Pomerium-Jwt-Assertion) and/or \"iap\" (X-Goog-Iap-Jwt-Assertion)",
            ),
        }
    }
    compat_headers.dedup();
    Some(AssertionConfig {
        keys: keys?,
        audience,
        lifetime,
        compat_headers,
    })
}

/// Reads the templates of `pages.dir`; a template missing a placeholder it must show is a
/// problem (an error page without the request id, a sign-in page without the providers).
fn build_pages(raw: &raw::Pages, base_dir: &Path, p: &mut Problems) -> PagesConfig {
    let Some(dir) = &raw.dir else {
        return PagesConfig::default();
    };
    let dir = base_dir.join(dir);
    if !dir.is_dir() {
        p.add(
            "pages.dir",
            format!("{} is not a directory", dir.display()),
            "point it at a directory with error.html, signin.html, signed-out.html and/or logo.svg",
        );
        return PagesConfig::default();
    }
    let mut read = |name: &str, needs: &[&str]| -> Option<String> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).ok()?;
        if text.len() > 64 * 1024 {
            p.add(
                "pages.dir",
                format!("{name} is larger than 64 KiB"),
                "keep templates small; serve assets from the app",
            );
            return None;
        }
        for n in needs {
            if !text.contains(&format!("{{{{{n}}}}}")) {
                p.add(
                    "pages.dir",
                    format!("{name} has no {{{{{n}}}}}"),
                    format!("add {{{{{n}}}}} where it belongs"),
                );
                return None;
            }
        }
        Some(text)
    };
    let error = read("error.html", &["message", "request_id"]);
    let signin = read("signin.html", &["providers"]);
    let signed_out = read("signed-out.html", &[]);
    let logo = [("logo.svg", "image/svg+xml"), ("logo.png", "image/png")]
        .iter()
        .find_map(|(f, t)| std::fs::read(dir.join(f)).ok().map(|b| (b, *t)));
    if logo.as_ref().is_some_and(|(b, _)| b.len() > 256 * 1024) {
        p.add(
            "pages.dir",
            "the logo is larger than 256 KiB",
            "use a smaller image",
        );
    }
    PagesConfig {
        error,
        signin,
        signed_out,
        logo,
    }
}

fn build_headers(h: &raw::Headers, identity: &IdentityConfig, p: &mut Problems) -> HeaderConfig {
    let out = HeaderConfig {
        user: header_name(p, "headers.user", &h.user, "X-Sidegate-User"),
        email: header_name(p, "headers.email", &h.email, "X-Sidegate-Email"),
        role: header_name(p, "headers.role", &h.role, "X-Sidegate-Role"),
        teams: header_name(p, "headers.teams", &h.teams, "X-Sidegate-Teams"),
        assertion: header_name(p, "headers.assertion", &h.assertion, "X-Sidegate-Assertion"),
        strip: h
            .strip
            .iter()
            .map(|s| header_name(p, "headers.strip", &Some(s.clone()), ""))
            .collect(),
        extra: identity
            .extra
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.header.clone()?)))
            .collect(),
    };
    let names = [&out.user, &out.email, &out.role, &out.teams, &out.assertion]
        .into_iter()
        .chain(out.extra.iter().map(|(_, h)| h));
    let norm: Vec<String> = names.map(|n| n.as_str().replace('_', "-")).collect();
    for (i, n) in norm.iter().enumerate() {
        if norm[..i].contains(n) {
            p.add(
                "headers",
                format!("`{n}` is used for two identity fields"),
                "give each identity header its own name",
            );
        }
    }
    out
}

fn build_access(a: &raw::Access, prefix: Option<&str>, p: &mut Problems) -> AccessConfig {
    let mut public_paths = Vec::new();
    for path in &a.public_paths {
        // The rule must be in the form the router compares (the one normalizer's).
        let canonical = !path.contains(['?', '#'])
            && crate::route::normalize(path.strip_suffix('*').unwrap_or(path))
                .is_ok_and(|n| n.is_canonical());
        if !canonical {
            p.add(
                "access.public_paths",
                format!("`{path}` is not a plain absolute path"),
                "write /static/ (prefix) or /healthz (exact), without %, ;, .. or //",
            );
            continue;
        }
        if let Some(pre) = prefix {
            let path = path.strip_suffix('*').unwrap_or(path);
            if path == pre
                || path.starts_with(&format!("{pre}/"))
                || (path.ends_with('/') && pre.starts_with(path))
            {
                p.add(
                    "access.public_paths",
                    format!("`{path}` overlaps the reserved prefix {pre}"),
                    "sidegate's own endpoints are never public paths; remove it",
                );
                continue;
            }
        }
        if let Some(stem) = path.strip_suffix("/*") {
            public_paths.push(PathRule::Prefix(format!("{stem}/")));
        } else if path.ends_with('/') {
            public_paths.push(PathRule::Prefix(path.clone()));
        } else {
            public_paths.push(PathRule::Exact(path.clone()));
        }
    }
    let mut allowed_redirect_hosts = Vec::new();
    for h in &a.allowed_redirect_hosts {
        match parse_host_rule(h) {
            Some(r) => allowed_redirect_hosts.push(r),
            None => p.add(
                "access.allowed_redirect_hosts",
                format!("`{h}` is not a host"),
                "write app.example.com, app.example.com:8443 or *.example.com",
            ),
        }
    }
    AccessConfig {
        public_paths,
        allowed_redirect_hosts,
    }
}

/// Host rules of a list key (`app.example.com`, `*.example.com`), each bad one a problem.
fn host_rules(p: &mut Problems, key: &str, list: &[String]) -> Vec<HostRule> {
    let mut out = Vec::new();
    for h in list {
        match parse_host_rule(h) {
            Some(rule) => out.push(rule),
            None => p.add(
                key,
                format!("`{h}` is not a host"),
                "write app.example.com or *.example.com",
            ),
        }
    }
    out
}

/// Path prefixes of a list key, in the router's normalized form; non-canonical ones are
/// problems (a rule must name the path the router compares).
fn path_prefixes(p: &mut Problems, key: &str, list: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for path in list {
        match crate::route::normalize(path) {
            Ok(n) if n.is_canonical() => out.push(n.as_str().to_string()),
            _ => p.add(
                key,
                format!("`{path}` is not a plain absolute path"),
                "write a prefix like /admin (it also covers /admin/...), without %, ;, .. or //",
            ),
        }
    }
    out
}

fn parse_host_rule(s: &str) -> Option<HostRule> {
    let s = s.to_ascii_lowercase();
    let (host, port) = match s.rsplit_once(':') {
        Some((h, port)) if !h.contains(']') || h.ends_with(']') => {
            (h.to_string(), Some(port.parse::<u16>().ok()?))
        }
        _ => (s.clone(), None),
    };
    let valid = |d: &str| {
        !d.is_empty()
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !d.starts_with('.')
            && !d.ends_with('.')
    };
    if let Some(domain) = host.strip_prefix("*.") {
        return valid(domain).then(|| HostRule::Subdomains {
            domain: domain.to_string(),
            port,
        });
    }
    valid(&host).then_some(HostRule::Exact { host, port })
}

/// The effective configuration as TOML text, for `check-config`.
pub(super) fn describe(c: &Config) -> String {
    use toml::Value as V;
    fn s(x: impl ToString) -> V {
        V::String(x.to_string())
    }
    fn d(x: Duration) -> V {
        V::String(humantime::format_duration(x).to_string())
    }
    fn list<T: ToString>(xs: impl IntoIterator<Item = T>) -> V {
        V::Array(xs.into_iter().map(|x| V::String(x.to_string())).collect())
    }
    fn table(entries: Vec<(&str, V)>) -> V {
        V::Table(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
    let mut root = toml::Table::new();
    let mut server = vec![
        ("listen", list(&c.server.listen)),
        (
            "admin_listen",
            s(c.server
                .admin_listen
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into())),
        ),
        ("public_url", s(public_origin(&c.server.public_url))),
        ("prefix", s(&c.server.prefix)),
        ("trusted_proxies", list(&c.server.trusted_proxies)),
        ("header_read_timeout", d(c.server.header_read_timeout)),
        (
            "max_connections",
            V::Integer(c.server.max_connections as i64),
        ),
        ("threads", V::Integer(c.server.threads as i64)),
        (
            "cpu_affinity",
            s(match c.server.cpu_affinity {
                CpuAffinity::Auto => "auto",
                CpuAffinity::Off => "off",
            }),
        ),
        (
            "login_rate_per_minute",
            V::Integer(i64::from(c.server.login_rate_per_minute)),
        ),
        ("shutdown_grace", d(c.server.shutdown_grace)),
    ];
    if let Some(t) = &c.server.tls {
        server.push((
            "tls",
            table(vec![
                ("cert_file", s(t.cert_file.display())),
                ("key_file", s(t.key_file.display())),
            ]),
        ));
    }
    root.insert("server".into(), table(server));
    if let Some(u) = &c.upstream {
        root.insert(
            "upstream".into(),
            table(vec![
                ("url", s(public_origin(&u.url))),
                ("connect_timeout", d(u.connect_timeout)),
                ("response_timeout", d(u.response_timeout)),
                ("pass_host_header", V::Boolean(u.pass_host_header)),
            ]),
        );
    }
    let oidc_table = |o: &OidcConfig| match table(vec![
        ("issuer", s(&o.issuer)),
        ("client_id", s(&o.client_id)),
        ("client_secret", s("<redacted>")),
        ("scopes", list(&o.scopes)),
        (
            "extra_authorize_params",
            V::Table(
                o.extra_authorize_params
                    .iter()
                    .map(|(k, v)| (k.clone(), s(v)))
                    .collect(),
            ),
        ),
        ("pkce", V::Boolean(o.pkce)),
        ("clock_skew", d(o.clock_skew)),
        (
            "allowed_algs",
            list(o.allowed_algs.iter().map(|a| a.name())),
        ),
        ("userinfo", V::Boolean(o.userinfo)),
        ("http_timeout", d(o.http_timeout)),
        ("jwks_min_refresh_interval", d(o.jwks_min_refresh_interval)),
        (
            "refresh_interval",
            o.refresh_interval.map_or_else(|| s("off"), d),
        ),
    ]) {
        V::Table(t) => t,
        _ => unreachable!("table() builds a table"),
    };
    if let Some((first, rest)) = c.oidc.split_first() {
        let mut t = oidc_table(first);
        t.insert("name".into(), s(&first.name));
        if !rest.is_empty() {
            t.insert(
                "providers".into(),
                V::Table(
                    rest.iter()
                        .map(|o| (o.name.clone(), V::Table(oidc_table(o))))
                        .collect(),
                ),
            );
        }
        root.insert("oidc".into(), V::Table(t));
    }
    if let Some(m) = &c.saml {
        let idp_table = |i: &SamlIdpConfig| {
            let source = match &i.idp {
                IdpSource::File(md) => ("idp_entity_id", s(&md.entity_id)),
                IdpSource::Url { url, .. } => ("idp_metadata_url", s(url)),
            };
            table(vec![
                ("name", s(&i.name)),
                source,
                (
                    "idp_metadata_signed_by",
                    s(if i.metadata_signing_cert.is_some() {
                        "pinned certificate"
                    } else {
                        "not required"
                    }),
                ),
                (
                    "attributes",
                    table(vec![
                        ("user", list(&i.attributes.user)),
                        ("email", s(&i.attributes.email)),
                        ("role", s(&i.attributes.role)),
                        ("teams", s(&i.attributes.teams)),
                    ]),
                ),
                ("clock_skew", d(i.clock_skew)),
                (
                    "idp_initiated",
                    s(format!("{:?}", i.idp_initiated).to_lowercase()),
                ),
                ("idp_initiated_landing", s(&i.idp_initiated_landing)),
                (
                    "assertion_signature",
                    s(match i.assertion_signature {
                        AssertionSignature::OwnOrResponse => "own-or-response",
                        AssertionSignature::Own => "own",
                    }),
                ),
            ])
        };
        root.insert(
            "saml".into(),
            table(vec![
                ("sp_entity_id", s(&m.sp_entity_id)),
                (
                    "sp_key",
                    s(if m.sp_key.is_some() {
                        "<redacted>"
                    } else {
                        "none"
                    }),
                ),
                ("sign_authn_requests", V::Boolean(m.sign_authn_requests)),
                (
                    "max_response_bytes",
                    V::Integer(m.max_response_bytes as i64),
                ),
                ("idps", V::Array(m.idps.iter().map(idp_table).collect())),
            ]),
        );
    }
    let mut session = vec![
        ("cookie_name", s(&c.session.cookie_name)),
        (
            "secrets",
            s(format!("<{} key(s) redacted>", c.session.keys.len())),
        ),
        ("absolute_lifetime", d(c.session.absolute_lifetime)),
        ("idle_lifetime", d(c.session.idle_lifetime)),
        ("login_lifetime", d(c.session.login_lifetime)),
        ("cookie_secure", V::Boolean(c.session.cookie_secure)),
        (
            "same_site",
            s(format!("{:?}", c.session.same_site).to_lowercase()),
        ),
    ];
    if let Some(dom) = &c.session.cookie_domain {
        session.push(("cookie_domain", s(dom)));
    }
    session.push((
        "store",
        s(match &c.session.store {
            SessionStore::Cookie => "cookie",
            SessionStore::Memory => "memory",
            SessionStore::Redis(_) => "redis",
        }),
    ));
    if let SessionStore::Redis(r) = &c.session.store {
        let mut redis = match &r.target {
            RedisTarget::Standalone(u) => vec![("url", s(u))],
            RedisTarget::Sentinel { sentinels, master } => vec![
                ("sentinels", V::Array(sentinels.iter().map(s).collect())),
                ("master_name", s(master)),
            ],
            RedisTarget::Cluster(nodes) => {
                vec![("cluster", V::Array(nodes.iter().map(s).collect()))]
            }
        };
        if let Some(u) = &r.username {
            redis.push(("username", s(u)));
        }
        if r.password.is_some() {
            redis.push(("password", s("<redacted>")));
        }
        redis.push(("key_prefix", s(&r.prefix)));
        redis.push(("timeout", d(r.timeout)));
        session.push(("redis", table(redis)));
    }
    root.insert("session".into(), table(session));
    root.insert(
        "assertion".into(),
        table(vec![
            (
                "signing_keys",
                s(format!(
                    "<{} key(s) redacted; kids {}>",
                    c.assertion.keys.all().len(),
                    c.assertion
                        .keys
                        .all()
                        .iter()
                        .map(|k| k.kid.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ),
            ("audience", s(&c.assertion.audience)),
            ("lifetime", d(c.assertion.lifetime)),
            (
                "compat_headers",
                list(c.assertion.compat_headers.iter().map(|h| match h {
                    CompatHeader::Pomerium => "pomerium",
                    CompatHeader::Iap => "iap",
                })),
            ),
        ]),
    );
    if !c.bearer.is_empty() {
        let issuers = c
            .bearer
            .iter()
            .map(|b| {
                let mut rows = vec![
                    ("issuer", s(&b.issuer)),
                    ("audience", s(&b.audience)),
                    (
                        "allowed_algs",
                        list(b.allowed_algs.iter().map(|a| a.name())),
                    ),
                    ("token_types", list(&b.token_types)),
                    ("clock_skew", d(b.clock_skew)),
                    ("jwks_min_refresh_interval", d(b.jwks_min_refresh_interval)),
                    ("http_timeout", d(b.http_timeout)),
                    ("cache_ttl", d(b.cache_ttl)),
                ];
                if let Some(u) = &b.jwks_url {
                    rows.push(("jwks_url", s(u)));
                }
                if let Some(i) = &b.introspection {
                    rows.push(("introspection", V::Boolean(true)));
                    if let Some(u) = &i.url {
                        rows.push(("introspection_url", s(u)));
                    }
                    rows.push(("introspection_client_id", s(&i.client_id)));
                    rows.push(("introspection_client_secret", s("<redacted>")));
                }
                table(rows)
            })
            .collect();
        root.insert("bearer".into(), table(vec![("issuers", V::Array(issuers))]));
    }
    let i = &c.identity;
    root.insert(
        "identity".into(),
        table(vec![
            ("user_claims", list(&i.user_claims)),
            ("email_claim", s(&i.email_claim)),
            ("role_claim", s(&i.role_claim)),
            ("roles", list(&i.roles)),
            (
                "role_map",
                V::Table(i.role_map.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
            ),
            ("default_role", s(&i.default_role)),
            ("teams_claim", s(&i.teams_claim)),
            ("allowed_email_domains", list(&i.allowed_email_domains)),
        ]),
    );
    let h = &c.headers;
    root.insert(
        "headers".into(),
        table(vec![
            ("user", s(&h.user)),
            ("email", s(&h.email)),
            ("role", s(&h.role)),
            ("teams", s(&h.teams)),
            ("assertion", s(&h.assertion)),
            ("strip", list(&h.strip)),
        ]),
    );
    root.insert(
        "access".into(),
        table(vec![
            (
                "public_paths",
                list(c.access.public_paths.iter().map(|r| match r {
                    PathRule::Exact(p) | PathRule::Prefix(p) => p.clone(),
                })),
            ),
            (
                "allowed_redirect_hosts",
                list(c.access.allowed_redirect_hosts.iter().map(|r| match r {
                    HostRule::Exact { host, port } => format!(
                        "{host}{}",
                        port.map(|p| format!(":{p}")).unwrap_or_default()
                    ),
                    HostRule::Subdomains { domain, port } => format!(
                        "*.{domain}{}",
                        port.map(|p| format!(":{p}")).unwrap_or_default()
                    ),
                })),
            ),
        ]),
    );
    root.insert(
        "log".into(),
        table(vec![(
            "format",
            s(if c.log == LogFormat::Json {
                "json"
            } else {
                "text"
            }),
        )]),
    );
    toml::to_string_pretty(&root).unwrap_or_default()
}
