//! The request's path, in order: strip → route → session → (login) → identity headers →
//! forward. Reads like the diagram in ARCHITECTURE.md; the stages own the details.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use url::Url;

use crate::config::{AccessConfig, Config, IdentityConfig};
use crate::error::{rescue, Failure, Party};
use crate::forward::{self, Downstream, Upstream, UpstreamError};
use crate::login::{self, Login};
use crate::route::{Endpoint, Own, Routes};
use crate::session::{Checked, Sessions};
use crate::sign::{IdentityHeaders, Signer};
use crate::{admin::Metrics, Body, BoxError};

/// Everything a request needs, built once from the config.
pub struct Context {
    /// External origin.
    pub public_url: Url,
    /// Path classification.
    pub routes: Routes,
    /// Redirect allow-list (public paths live in `routes`).
    pub access: AccessConfig,
    /// Claim mapping.
    pub identity: IdentityConfig,
    /// Session cookies.
    pub sessions: Sessions,
    /// Login machinery.
    pub login: Login,
    /// Identity headers and assertions.
    pub signer: Signer,
    /// The protected app.
    pub upstream: Upstream,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

impl Context {
    /// Builds every stage from the validated config.
    pub fn new(cfg: Config) -> Result<Self, login::saml::SetupError> {
        let origin = crate::config::public_origin(&cfg.server.public_url);
        let prefix = cfg.server.prefix.clone();
        let redirect = format!("{origin}{prefix}/oidc/callback");
        let used = login::state::UsedStates::new(cfg.session.login_lifetime);
        let saml = match cfg.saml {
            Some(s) => Some(Arc::new(login::saml::Saml::new(
                s,
                login::saml::SpUrls::new(&origin, &prefix),
            )?)),
            None => None,
        };
        Ok(Context {
            routes: Routes::new(prefix, cfg.access.public_paths.clone()),
            access: cfg.access,
            identity: cfg.identity,
            login: Login {
                oidc: cfg
                    .oidc
                    .map(|o| Arc::new(login::oidc::Provider::new(o, redirect))),
                saml,
                used,
            },
            signer: Signer::new(cfg.assertion, cfg.headers, origin),
            upstream: Upstream::new(&cfg.upstream, cfg.server.trusted_proxies),
            sessions: Sessions::new(cfg.session),
            public_url: cfg.server.public_url,
            metrics: Metrics::default(),
        })
    }
}

/// Handles one downstream request. Never panics on input; every failure is a response.
pub async fn handle(cx: &Context, req: Request<Incoming>, from: Downstream) -> Response<Body> {
    let now = SystemTime::now();
    let mut req = req.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
    // Client copies of identity headers never survive, whatever the route.
    cx.signer.strip(req.headers_mut());

    match cx.routes.classify(req.uri().path()) {
        // The one own endpoint with a body: the IdP's POST (read with a size cap).
        Endpoint::Own(Own::SamlAcs) => {
            cx.metrics.request("own");
            return login::saml_acs(cx, req, now).await;
        }
        Endpoint::Own(own) => return own_endpoint(cx, own, &without_body(req), now).await,
        Endpoint::Public => return forward(cx, req, from, None, "public").await,
        Endpoint::Protected => {}
    }
    let (session, refreshed) = match cx.sessions.check(req.headers(), now) {
        Checked::Valid(s) => (s, None),
        Checked::Touch(s) => {
            let (s, cookies) = cx.sessions.touch(s, now);
            (s, Some(cookies))
        }
        Checked::Absent => return login::challenge(cx, &without_body(req), None).await,
        Checked::Invalid(why) => return login::challenge(cx, &without_body(req), Some(why)).await,
    };
    let identity = cx.signer.identity_headers(&session, now);
    let mut resp = forward(cx, req, from, Some(&identity), "proxied").await;
    for c in refreshed.into_iter().flatten() {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// sidegate's own endpoints and challenges never read the body: drop it (unread).
fn without_body(req: Request<Body>) -> Request<()> {
    req.map(|_| ())
}

async fn own_endpoint(
    cx: &Context,
    own: Own,
    req: &Request<()>,
    now: SystemTime,
) -> Response<Body> {
    cx.metrics.request("own");
    match own {
        Own::Start => login::start(cx, req).await,
        Own::OidcCallback => login::callback(cx, req, now).await,
        Own::SamlMetadata => login::saml_metadata(cx, req),
        Own::SamlLogin => login::saml_login(cx, req).await,
        Own::SamlSlo => login::saml_slo(cx, req, now),
        Own::SamlAcs => unreachable!("handled with its body in `handle`"),
        Own::Logout => login::logout(cx, req, now),
        Own::Userinfo => login::userinfo(cx, req, now),
        Own::Jwks => login::jwks(cx),
        Own::Unknown => rescue(
            Failure::new(
                StatusCode::NOT_FOUND,
                Party::Downstream,
                "Not found.",
                format!("unknown sidegate endpoint {}", req.uri().path()),
            ),
            login::wants_json(req),
        ),
    }
}

/// Prepares the request (hop-by-hop, own cookies, `X-Forwarded-*`, identity) and sends it.
/// Order matters: hop-by-hop removal (including `Connection`-listed names) happens before
/// the identity headers are set, so a client cannot make us drop them.
async fn forward(
    cx: &Context,
    mut req: Request<Body>,
    from: Downstream,
    identity: Option<&IdentityHeaders>,
    outcome: &'static str,
) -> Response<Body> {
    let json = !login::is_navigation_parts(req.method(), req.headers());
    let upgrade = forward::wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let headers = req.headers_mut();
    forward::remove_hop_by_hop(headers, upgrade.is_some());
    cx.sessions.strip_own_cookies(headers);
    if !headers.contains_key(header::HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    cx.upstream.set_forwarded(req.headers_mut(), from);
    if let Some(id) = identity {
        id.apply(req.headers_mut());
    }
    let started = Instant::now();
    match cx.upstream.send(req, upgrade).await {
        Ok(resp) => {
            cx.metrics.upstream_latency(started.elapsed().as_secs_f64());
            cx.metrics.request(outcome);
            resp
        }
        Err(e) => {
            cx.metrics.request("upstream_error");
            let (status, public) = match e {
                UpstreamError::Timeout(_) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "The application did not answer in time.",
                ),
                UpstreamError::Unavailable(_) => {
                    (StatusCode::BAD_GATEWAY, "The application is not reachable.")
                }
            };
            rescue(
                Failure::new(status, Party::Upstream, public, e.to_string()),
                json,
            )
        }
    }
}
