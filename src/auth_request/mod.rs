//! Forward-auth: `/.sidegate/auth`, the other last step of the request's path. nginx
//! `auth_request`, Traefik `forwardAuth` and Envoy `ext_authz` (HTTP) ask it whether a request
//! may pass; it answers 200 with the identity headers, 401 without a valid credential, or 403
//! when the user is not allowed. Never a redirect: the proxy in front decides what to show.
//!
//! What the original request was (method, host, URI) is read only from a peer in
//! `server.trusted_proxies`; from anyone else those headers are ignored, the original path
//! counts as unknown and so nothing is public. The original path goes through the same
//! normalizer and routing table as proxied requests.

use std::net::SocketAddr;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use ipnet::IpNet;

use crate::config::Condition;
use crate::error::{html_escape, rescue, Failure, Party};
use crate::identity::Identity;
use crate::pipeline::{
    authenticate, bearer_refused, forbidden, Authenticated, Context, NoCredential,
};
use crate::policy::{self, Facts, Need, Refusal};
use crate::route::{normalize, Endpoint};
use crate::{empty_body, full_body, Body};

/// Who may tell us what the original request was.
pub struct ForwardAuth {
    trusted: Vec<IpNet>,
    auth_path: String,
}

/// Which proxy contract described the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `X-Original-URI`/`X-Original-Method` (nginx `auth_request`, ingress-nginx).
    Nginx,
    /// `X-Forwarded-Uri`/`X-Forwarded-Method` (Traefik `forwardAuth`).
    Traefik,
    /// The check request's own path below `auth` (Envoy `ext_authz` with `path_prefix`).
    Envoy,
    /// A trusted peer that said nothing about the original request.
    Unspecified,
    /// A peer outside `server.trusted_proxies`: its headers were ignored.
    Untrusted,
}

/// The request the proxy in front is deciding about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// Which contract it came from.
    pub via: Via,
    /// Method (GET when not told).
    pub method: Method,
    /// `scheme://host` when known.
    pub origin: Option<String>,
    /// Raw path and query when known.
    pub uri: Option<String>,
}

/// Access narrowing written into the auth URL by the proxy's configuration
/// (`auth?allowed_roles=admin,ops`): any one listed value suffices per parameter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Allowed {
    roles: Vec<String>,
    teams: Vec<String>,
    email_domains: Vec<String>,
}

impl Allowed {
    /// Reads `allowed_roles`, `allowed_teams` and `allowed_email_domains` (comma-separated).
    pub fn from_query(query: Option<&str>) -> Allowed {
        let mut a = Allowed::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let list = match k.as_ref() {
                "allowed_roles" => &mut a.roles,
                "allowed_teams" => &mut a.teams,
                "allowed_email_domains" => &mut a.email_domains,
                _ => continue,
            };
            list.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
        a
    }

    /// The first rule `id` fails, named for the log and the 403 page; each is a policy
    /// condition of its own, judged by the policy's own `meets`.
    pub fn check(&self, id: &Identity) -> Result<(), &'static str> {
        let parts: [(&'static str, Condition); 3] = [
            (
                "allowed_roles",
                Condition {
                    roles: self.roles.clone(),
                    ..Condition::default()
                },
            ),
            (
                "allowed_teams",
                Condition {
                    teams: self.teams.clone(),
                    ..Condition::default()
                },
            ),
            (
                "allowed_email_domains",
                Condition {
                    email_domains: self
                        .email_domains
                        .iter()
                        .map(|d| d.to_ascii_lowercase())
                        .collect(),
                    ..Condition::default()
                },
            ),
        ];
        match parts.iter().find(|(_, c)| !policy::meets(c, id)) {
            Some((rule, _)) => Err(rule),
            None => Ok(()),
        }
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl ForwardAuth {
    /// The proxies whose description of the original request is believed; `prefix` is
    /// sidegate's reserved prefix (the check answers at `<prefix>/auth`).
    pub fn new(trusted: Vec<IpNet>, prefix: &str) -> Self {
        ForwardAuth {
            trusted,
            auth_path: format!("{prefix}/auth"),
        }
    }

    fn is_trusted(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Reads the original request from the headers of a trusted peer's check request.
    pub fn original(&self, req: &Request<()>, peer: SocketAddr) -> Original {
        let auth_path = self.auth_path.as_str();
        let unknown = |via| Original {
            via,
            method: Method::GET,
            origin: None,
            uri: None,
        };
        if !self.is_trusted(peer) {
            return unknown(Via::Untrusted);
        }
        let h = req.headers();
        let method = |name| {
            header_str(h, name)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(Method::GET)
        };
        let host = header_str(h, "x-forwarded-host").or_else(|| header_str(h, "host"));
        let origin = host.map(|host| {
            let proto = match header_str(h, "x-forwarded-proto") {
                Some(p) if p.eq_ignore_ascii_case("http") => "http",
                _ => "https",
            };
            format!("{proto}://{host}")
        });
        // ingress-nginx always sends the absolute `X-Original-URL` (its Host header is the
        // Service's name), and `X-Original-URI` only with `auth-method` set.
        if let Some((origin, uri)) = header_str(h, "x-original-url").and_then(split_absolute) {
            return Original {
                via: Via::Nginx,
                method: method("x-original-method"),
                origin: Some(origin),
                uri: Some(uri),
            };
        }
        if let Some(uri) = header_str(h, "x-original-uri") {
            return Original {
                via: Via::Nginx,
                method: method("x-original-method"),
                origin,
                uri: Some(uri.to_string()),
            };
        }
        if let Some(uri) = header_str(h, "x-forwarded-uri") {
            return Original {
                via: Via::Traefik,
                method: method("x-forwarded-method"),
                origin,
                uri: Some(uri.to_string()),
            };
        }
        // Envoy: the check request's path is `path_prefix` + the original path and query.
        let path = req.uri().path();
        if path.len() > auth_path.len()
            && path.is_char_boundary(auth_path.len())
            && path[..auth_path.len()].eq_ignore_ascii_case(auth_path)
            && path.as_bytes()[auth_path.len()] == b'/'
        {
            let rest = &path[auth_path.len()..];
            let uri = match req.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_string(),
            };
            return Original {
                via: Via::Envoy,
                method: req.method().clone(),
                origin,
                uri: Some(uri),
            };
        }
        unknown(Via::Unspecified)
    }
}

/// `scheme://authority/raw/path?q` → (`scheme://authority`, `/raw/path?q`), the path kept
/// byte for byte (a URL parser would resolve dot segments before our normalizer sees them).
fn split_absolute(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Some((format!("{scheme}://{authority}"), path))
}

/// `/.sidegate/auth`: answers the proxy in front (never redirects).
pub async fn check(
    cx: &Context,
    req: &Request<()>,
    peer: SocketAddr,
    now: SystemTime,
) -> Response<Body> {
    let original = cx.forward_auth.original(req, peer);
    if original.via == Via::Untrusted
        && ["x-original-uri", "x-original-url", "x-forwarded-uri"]
            .iter()
            .any(|h| req.headers().contains_key(*h))
    {
        tracing::info!(peer = %peer.ip(), "forward-auth: original-request headers from a peer outside server.trusted_proxies ignored");
    }
    let json = !is_navigation(&original.method, req.headers());
    let authority = original
        .origin
        .as_deref()
        .and_then(|o| o.split_once("://"))
        .map(|(_, a)| a);
    // The same decisions as for a proxied request, on the original's normalized path. An
    // unknown path is never public and meets no route: the policy's default decides.
    let need = match original.uri.as_deref().map(normalize) {
        Some(Err(why)) => {
            cx.metrics.request("auth_bad_path");
            return rescue(
                Failure::new(
                    StatusCode::FORBIDDEN,
                    Party::Downstream,
                    "This address is not allowed.",
                    format!("forward-auth: original path refused: {why}"),
                ),
                json,
            );
        }
        Some(Ok(p)) => match cx.routes.classify_normal(&p) {
            Endpoint::Protected => cx.policy.need(&Facts {
                authority,
                path: &p,
                method: &original.method,
            }),
            _ => Need::Public,
        },
        None => cx.policy.need_unknown(),
    };
    let route = match need {
        Need::Public => {
            cx.metrics.request("auth_public");
            return ok();
        }
        Need::Deny(route) => return forbidden(cx, &policy::denied(route), None, json),
        Need::Credential(route) => route,
    };
    let audience = route.and_then(|r| r.audience.as_deref());
    let (identity, headers, cookies) = match authenticate(cx, req.headers(), audience, now).await {
        Authenticated::Yes {
            identity,
            headers,
            cookies,
        } => (identity, headers, cookies),
        Authenticated::No(NoCredential::BadToken(e)) => return bearer_refused(cx, &e),
        Authenticated::No(NoCredential::StoreDown(e)) => {
            return crate::pipeline::store_down(cx, &e, json)
        }
        Authenticated::No(why) => {
            cx.metrics.request("auth_unauthenticated");
            tracing::info!(via = ?original.via, reason = %why, uri = original.uri.as_deref().unwrap_or("?"), "forward-auth: 401");
            return unauthenticated(cx, &original, json);
        }
    };
    // The narrowing belongs to the auth URL; Envoy's query is the original request's.
    let narrowing = match original.via {
        Via::Envoy => Allowed::default(),
        _ => Allowed::from_query(req.uri().query()),
    };
    let verdict = policy::judge(route, &identity).and_then(|()| {
        narrowing.check(&identity).map_err(|rule| Refusal {
            route: "auth URL".into(),
            public: match rule {
                "allowed_roles" => "Your role does not give access to this page.",
                "allowed_teams" => "None of your teams has access to this page.",
                _ => "Your email domain does not give access to this page.",
            }
            .into(),
            detail: format!("{rule} not met"),
        })
    });
    let mut resp = match verdict {
        Ok(()) => {
            cx.metrics.request("auth_allowed");
            let mut r = ok();
            headers.apply(r.headers_mut());
            r
        }
        Err(refusal) => forbidden(cx, &refusal, Some(&identity), json),
    };
    // nginx relays one `Set-Cookie` from the check: renew only a one-cookie session here
    // (a chunked one is renewed on its next proxied request, if any).
    if cookies.len() == 1 {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookies[0].clone());
    } else if !cookies.is_empty() {
        tracing::debug!(
            chunks = cookies.len(),
            "forward-auth: chunked session not renewed in the check"
        );
    }
    resp
}

fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    crate::login::is_navigation_parts(method, headers)
}

fn ok() -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CACHE_CONTROL, "no-store")
        .body(empty_body())
        .expect("static response")
}

/// 401 with where to log in: `start?rd=<original URL>` when the original URL is known and
/// allowed as a return target, else `start` alone.
fn unauthenticated(cx: &Context, original: &Original, json: bool) -> Response<Body> {
    let start = format!(
        "{}{}/start",
        crate::config::public_origin(&cx.public_url),
        cx.routes.prefix()
    );
    let target = match (&original.origin, &original.uri) {
        (Some(o), Some(u)) => Some(format!("{o}{u}")),
        _ => None,
    };
    let login = match target.filter(|t| {
        crate::login::return_to::check(t, &cx.public_url, &cx.access.allowed_redirect_hosts).is_ok()
    }) {
        Some(t) => {
            let rd: String = url::form_urlencoded::byte_serialize(t.as_bytes()).collect();
            format!("{start}?rd={rd}")
        }
        None => start,
    };
    let (ctype, body) = if json {
        (
            "application/json",
            serde_json::json!({"error": "unauthenticated", "login_url": login}).to_string(),
        )
    } else {
        (
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html><title>Sign in</title><h1>Sign in required</h1><p><a href=\"{}\">Sign in</a></p>\n",
                html_escape(&login)
            ),
        )
    };
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::CONTENT_TYPE, ctype)
        .header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!("Bearer realm=\"sidegate\", login_uri=\"{login}\""))
                .unwrap_or(HeaderValue::from_static("Bearer realm=\"sidegate\"")),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(full_body(body))
        .expect("valid 401")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> SocketAddr {
        format!("{ip}:5000").parse().unwrap()
    }

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn fa() -> ForwardAuth {
        ForwardAuth::new(vec!["127.0.0.1/32".parse().unwrap()], "/.sidegate")
    }

    #[test]
    fn nginx_headers_from_a_trusted_peer_are_read() {
        let r = req(
            "/.sidegate/auth",
            &[
                ("x-original-uri", "/admin?x=1"),
                ("x-original-method", "POST"),
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-proto", "http"),
            ],
        );
        let o = fa().original(&r, peer("127.0.0.1"));
        assert_eq!(o.via, Via::Nginx);
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.origin.as_deref(), Some("http://app.test"));
        assert_eq!(o.uri.as_deref(), Some("/admin?x=1"));
    }

    #[test]
    fn ingress_nginx_original_url_keeps_the_raw_path() {
        let r = req(
            "/.sidegate/auth",
            &[
                (
                    "x-original-url",
                    "https://app.test:8443/public/..%2fadmin?x=1",
                ),
                ("x-original-method", "GET"),
                ("host", "sidegate.auth.svc"),
            ],
        );
        let o = fa().original(&r, peer("127.0.0.1"));
        assert_eq!(o.via, Via::Nginx);
        assert_eq!(o.origin.as_deref(), Some("https://app.test:8443"));
        assert_eq!(o.uri.as_deref(), Some("/public/..%2fadmin?x=1"));
        assert_eq!(split_absolute("ftp://x/y"), None);
        assert_eq!(split_absolute("https://u@evil/y"), None);
        assert_eq!(
            split_absolute("http://h?q"),
            Some(("http://h".into(), "/?q".into()))
        );
    }

    #[test]
    fn the_same_headers_from_anyone_else_are_ignored() {
        let r = req(
            "/.sidegate/auth/healthz",
            &[
                ("x-original-uri", "/healthz"),
                ("x-original-url", "https://a/healthz"),
                ("x-forwarded-uri", "/healthz"),
            ],
        );
        let o = fa().original(&r, peer("127.0.0.2"));
        assert_eq!(o.via, Via::Untrusted);
        assert_eq!(o.uri, None);
    }

    #[test]
    fn traefik_and_envoy_contracts() {
        let r = req(
            "/.sidegate/auth",
            &[
                ("x-forwarded-uri", "/api/x"),
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-host", "app.test"),
            ],
        );
        let o = fa().original(&r, peer("127.0.0.1"));
        assert_eq!((o.via, o.method), (Via::Traefik, Method::DELETE));
        assert_eq!(o.origin.as_deref(), Some("https://app.test"));
        let r = req("/.sidegate/auth/api/y?z=1", &[("host", "app.test")]);
        let o = fa().original(&r, peer("127.0.0.1"));
        assert_eq!(o.via, Via::Envoy);
        assert_eq!(o.uri.as_deref(), Some("/api/y?z=1"));
        let r = req("/.sidegate/auth", &[]);
        assert_eq!(fa().original(&r, peer("127.0.0.1")).via, Via::Unspecified);
    }

    #[test]
    fn narrowing_rules() {
        let id = Identity {
            issuer: "i".into(),
            subject: "s".into(),
            user: "u".into(),
            email: Some("u@Example.com".into()),
            role: "viewer".into(),
            teams: vec!["devs".into()],
            extra: vec![],
        };
        assert_eq!(Allowed::from_query(None).check(&id), Ok(()));
        let a = Allowed::from_query(Some("allowed_roles=admin,%20viewer"));
        assert_eq!(a.check(&id), Ok(()));
        let a = Allowed::from_query(Some("allowed_roles=admin"));
        assert_eq!(a.check(&id), Err("allowed_roles"));
        let a = Allowed::from_query(Some("allowed_teams=ops&allowed_roles=viewer"));
        assert_eq!(a.check(&id), Err("allowed_teams"));
        let a = Allowed::from_query(Some("allowed_email_domains=example.com"));
        assert_eq!(a.check(&id), Ok(()));
        let a = Allowed::from_query(Some("allowed_email_domains=other.com"));
        assert_eq!(a.check(&id), Err("allowed_email_domains"));
    }
}
