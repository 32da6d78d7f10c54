//! The request's path, in order: strip → route → credential (session cookie or bearer token)
//! → (login) → identity headers → forward, or → auth_request for a proxy's forward-auth
//! check. Reads like the diagram in ARCHITECTURE.md; the stages own the details.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use url::Url;

use crate::auth_request::{self, ForwardAuth};
use crate::bearer::{self, Bearer, BearerError};
use crate::config::{AccessConfig, Config, IdentityConfig, Route};
use crate::error::{rescue, Failure, Party};
use crate::forward::{self, Downstream, Upstream, UpstreamError};
use crate::identity::Identity;
use crate::login::{self, Login};
use crate::policy::{self, Facts, Need, Policy, Refusal};
use crate::route::{normalize, Endpoint, Own, Routes};
use crate::session::{unix, Checked, Invalid, Session, Sessions};
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
    /// API bearer tokens from trusted issuers.
    pub bearer: Bearer,
    /// Per-route access rules.
    pub policy: Policy,
    /// The pages sidegate shows (the operator's templates, if any).
    pub pages: crate::pages::Pages,
    /// Who may describe the original request of a forward-auth check.
    pub forward_auth: ForwardAuth,
    /// The protected app (none in forward-auth-only deployments).
    pub upstream: Option<Upstream>,
    /// Open WebSocket tunnels (kept across reloads; shutdown drains them).
    pub tunnels: forward::Tunnels,
    /// Counters for `/metrics` (kept across reloads).
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// Builds every stage from the validated config.
    pub fn new(cfg: Config) -> Result<Self, ContextError> {
        Self::build(cfg, None)
    }

    /// Builds every stage from a reloaded config, keeping what must outlive a reload:
    /// metrics, refreshes in flight, cookie-session revocations and, unless the store
    /// changed to Redis, the in-memory store (server-side sessions and replay caches).
    pub fn reloaded(cfg: Config, old: &Context) -> Result<Self, ContextError> {
        Self::build(cfg, Some(old))
    }

    fn build(cfg: Config, old: Option<&Context>) -> Result<Self, ContextError> {
        let store = match old {
            Some(o)
                if !o.sessions.store().is_shared()
                    && !matches!(cfg.session.store, crate::config::SessionStore::Redis(_)) =>
            {
                o.sessions.store().clone()
            }
            _ => Arc::new(crate::store::Shared::new(
                &cfg.session.store,
                cfg.server.threads,
            )?),
        };
        let tunnels = old.map(|o| o.tunnels.clone()).unwrap_or_default();
        let mut sessions = Sessions::new(cfg.session, store);
        if let Some(o) = old {
            sessions.adopt_revocations(&o.sessions);
        }
        let origin = crate::config::public_origin(&cfg.server.public_url);
        let prefix = cfg.server.prefix.clone();
        let redirect = format!("{origin}{prefix}/oidc/callback");
        let forward_auth = ForwardAuth::new(cfg.server.trusted_proxies.clone(), &prefix);
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
            bearer: Bearer::new(cfg.bearer, cfg.identity.clone()),
            identity: cfg.identity,
            login: Login {
                oidc: cfg
                    .oidc
                    .into_iter()
                    .map(|o| Arc::new(login::oidc::Provider::new(o, redirect.clone())))
                    .collect(),
                choice: cfg.login,
                flights: old.map(|o| o.login.flights.clone()).unwrap_or_default(),
                local: cfg.local.map(|l| Arc::new(login::local::Local::new(l))),
                limit: login::limit::LoginLimit::new(
                    cfg.server.login_rate_per_minute,
                    cfg.server.trusted_proxies.clone(),
                ),
                saml,
            },
            signer: Signer::new(cfg.assertion, cfg.headers, origin),
            forward_auth,
            policy: Policy::new(cfg.policy),
            pages: crate::pages::Pages::new(cfg.pages, &cfg.server.prefix),
            upstream: cfg.upstream.as_ref().map(|u| {
                Upstream::new(
                    u,
                    cfg.server.trusted_proxies,
                    tunnels.clone(),
                    cfg.server.threads,
                )
            }),
            tunnels,
            sessions,
            public_url: cfg.server.public_url,
            metrics: old.map_or_else(Default::default, |o| o.metrics.clone()),
        })
    }
}

/// Why the stages could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The SAML service provider could not be set up.
    #[error(transparent)]
    Saml(#[from] login::saml::SetupError),
    /// The session store's addresses are unusable.
    #[error("session.redis: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Handles one downstream request. Never panics on input; every failure is a response (in the
/// operator's error template when there is one).
pub async fn handle(cx: &Context, req: Request<Incoming>, from: Downstream) -> Response<Body> {
    let mut resp = stages(cx, req, from).await;
    cx.pages.restyle(&mut resp);
    resp
}

// The cold branches (own endpoints, login challenges) are boxed: their futures are large,
// and hyper moves this one several times per request (bench/bench.sh INSTRUCTIONS=...).
async fn stages(cx: &Context, req: Request<Incoming>, from: Downstream) -> Response<Body> {
    let now = SystemTime::now();
    let mut req = req.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
    // Client copies of identity headers never survive, whatever the route.
    cx.signer.strip(req.headers_mut());

    let json = !login::is_navigation_parts(req.method(), req.headers());
    // One normalized path for every decision below (the Uri clone shares its bytes).
    let uri = req.uri().clone();
    let path = match normalize(uri.path()) {
        Ok(p) => p,
        Err(why) => {
            cx.metrics.request("bad_path");
            return rescue(
                Failure::new(
                    StatusCode::BAD_REQUEST,
                    Party::Downstream,
                    "This address is not valid.",
                    format!("path refused: {why}"),
                ),
                json,
            );
        }
    };
    let endpoint = cx.routes.classify_normal(&path);
    if let Endpoint::Own(own) = endpoint {
        if own.is_login() {
            let client = cx.login.limit.client(from.peer, req.headers());
            if let Err(wait) = cx.login.limit.take(client, Instant::now()) {
                return too_many(cx, client, wait, json);
            }
        }
    }
    match endpoint {
        // The one own endpoint with a body: the IdP's POST (read with a size cap).
        Endpoint::Own(Own::SamlAcs) => {
            cx.metrics.request("own");
            return Box::pin(login::saml_acs(cx, req, now)).await;
        }
        Endpoint::Own(Own::LocalLogin) => {
            cx.metrics.request("own");
            return Box::pin(login::local::endpoint(cx, req, from.peer, now)).await;
        }
        Endpoint::Own(Own::OidcBackchannelLogout) => {
            cx.metrics.request("own");
            return Box::pin(login::oidc_backchannel_logout(cx, req, now)).await;
        }
        Endpoint::Own(Own::Auth) => {
            return auth_request::check(cx, &without_body(req), from.peer, now).await
        }
        Endpoint::Own(own) => {
            return Box::pin(own_endpoint(cx, own, &without_body(req), now)).await
        }
        Endpoint::Public => return forward(cx, req, from, None, None, "public", json).await,
        Endpoint::Protected => {}
    }
    let host = req.headers().get(header::HOST).cloned();
    let authority = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .or(uri.authority().map(|a| a.as_str()));
    let route = match cx.policy.need(&Facts {
        authority,
        path: &path,
        method: req.method(),
    }) {
        Need::Public => return forward(cx, req, from, None, None, "public", json).await,
        Need::Deny(route) => return forbidden(cx, &policy::denied(route), None, json),
        Need::Credential(route) => route,
    };
    let audience = route.and_then(|r| r.audience.as_deref());
    match authenticate(cx, req.headers(), audience, now).await {
        Authenticated::Yes {
            identity,
            headers,
            cookies,
        } => {
            let mut resp = match policy::judge(route, &identity) {
                Ok(()) => forward(cx, req, from, Some(&headers), route, "proxied", json).await,
                Err(refusal) => forbidden(cx, &refusal, Some(&identity), json),
            };
            for c in cookies {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Authenticated::No(NoCredential::Absent) => {
            Box::pin(login::challenge(cx, &without_body(req), None)).await
        }
        Authenticated::No(NoCredential::BadCookie(why)) => {
            Box::pin(login::challenge(cx, &without_body(req), Some(why))).await
        }
        Authenticated::No(NoCredential::BadToken(e)) => bearer_refused(cx, &e),
        Authenticated::No(NoCredential::StoreDown(e)) => store_down(cx, &e, json),
    }
}

/// 429 for a client over the login rate, with when to try again.
fn too_many(
    cx: &Context,
    client: std::net::IpAddr,
    wait: std::time::Duration,
    json: bool,
) -> Response<Body> {
    cx.metrics.request("rate_limited");
    let mut resp = rescue(
        Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            Party::Downstream,
            "Too many sign-in attempts. Please wait a minute and try again.",
            format!("login rate limit (server.login_rate_per_minute) reached for {client}"),
        ),
        json,
    );
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// 503 when the session store does not answer: fail closed, never a login loop (the
/// session may well be valid) and never a request to the app.
pub fn store_down(cx: &Context, e: &crate::store::StoreError, json: bool) -> Response<Body> {
    cx.metrics.request("store_unavailable");
    rescue(
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Party::Internal,
            "Sign-in is temporarily unavailable. Please try again in a minute.",
            format!("session store: {e}"),
        ),
        json,
    )
}

/// Why a request carries no usable credential.
#[derive(Debug)]
pub enum NoCredential {
    /// Neither a session cookie nor a bearer token.
    Absent,
    /// A session cookie that does not open or has ended.
    BadCookie(Invalid),
    /// A bearer token that was refused (or could not be checked).
    BadToken(BearerError),
    /// A server-side session cookie the store could not look up.
    StoreDown(crate::store::StoreError),
}

impl std::fmt::Display for NoCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoCredential::Absent => f.write_str("no session cookie or bearer token"),
            NoCredential::BadCookie(why) => write!(f, "session cookie ignored: {why}"),
            NoCredential::BadToken(e) => write!(f, "bearer token: {e}"),
            NoCredential::StoreDown(e) => write!(f, "session store: {e}"),
        }
    }
}

/// Who a credential names: the session's identity, or the one cached for a bearer token
/// (both shared, so neither path copies an identity per request).
pub enum Who {
    /// From the session cookie.
    Session(Arc<Session>),
    /// From a checked bearer token.
    Token(Arc<bearer::Verified>),
}

impl std::ops::Deref for Who {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        match self {
            Who::Session(s) => &s.identity,
            Who::Token(v) => &v.identity,
        }
    }
}

/// The credential stage: who the request is from, with their identity headers ready.
pub enum Authenticated {
    /// A valid session or bearer token.
    Yes {
        /// Who.
        identity: Who,
        /// Signed identity headers (cached).
        headers: Arc<IdentityHeaders>,
        /// Re-issued session cookies (idle deadline moved), if any.
        cookies: Vec<HeaderValue>,
    },
    /// No usable credential.
    No(NoCredential),
}

/// Reads the credential: an `Authorization: Bearer` token when bearer issuers are configured
/// (a bad token never falls back to the cookie), else the session cookie.
pub async fn authenticate(
    cx: &Context,
    headers: &http::HeaderMap,
    audience: Option<&str>,
    now: SystemTime,
) -> Authenticated {
    if cx.bearer.is_enabled() {
        if let Some(token) = bearer::presented(headers) {
            return match cx.bearer.check(token, unix(now)).await {
                Ok(v) => Authenticated::Yes {
                    headers: cx.signer.identity_headers_for(
                        &v.key,
                        &v.identity,
                        Some(v.exp),
                        audience,
                        now,
                    ),
                    identity: Who::Token(v),
                    cookies: Vec::new(),
                },
                Err(e) => Authenticated::No(NoCredential::BadToken(e)),
            };
        }
    }
    let (session, touch) = match cx.sessions.check(headers, now).await {
        Checked::Valid(s) => (s, false),
        Checked::Touch(s) => (s, true),
        Checked::Absent => return Authenticated::No(NoCredential::Absent),
        Checked::Invalid(why) => return Authenticated::No(NoCredential::BadCookie(why)),
        Checked::Unavailable(e) => return Authenticated::No(NoCredential::StoreDown(e)),
    };
    // Due for a refresh: new claims (and cookie) before anything is decided on them.
    let (session, touch) = match session.refresh_due(unix(now)) {
        None => (session, touch),
        // Boxed: rare, and its future is most of this one's size otherwise.
        Some(rt) => match Box::pin(login::refresh::refresh(cx, &session, rt, now)).await {
            Ok(fresh) => (Arc::new(fresh), true),
            Err(login::oidc::RefreshError::Unavailable(why)) => {
                tracing::warn!(reason = %why, "session refresh postponed: provider unavailable");
                (session, touch)
            }
            Err(login::oidc::RefreshError::Rejected(why)) => {
                tracing::info!(target: "sidegate::audit", event = "refresh", outcome = "failure",
                    subject = %session.identity.subject, reason = %why, "session ended: refresh failed");
                return Authenticated::No(NoCredential::BadCookie(Invalid::RefreshFailed));
            }
        },
    };
    let (session, cookies) = if touch {
        let (s, cookies) = Box::pin(cx.sessions.touch(Arc::unwrap_or_clone(session), now)).await;
        (Arc::new(s), cookies)
    } else {
        (session, Vec::new())
    };
    Authenticated::Yes {
        headers: cx.signer.identity_headers(&session, audience, now),
        identity: Who::Session(session),
        cookies,
    }
}

/// 403 for a policy refusal: the page says which route and what it needs (no internals);
/// the audit line says who and which condition.
pub fn forbidden(
    cx: &Context,
    refusal: &Refusal,
    who: Option<&Identity>,
    json: bool,
) -> Response<Body> {
    cx.metrics.request("forbidden");
    let request_id = crate::keys::random_token::<9>();
    tracing::warn!(target: "sidegate::audit", event = "access", outcome = "forbidden", request_id,
        route = %refusal.route, rule = %refusal.detail,
        subject = who.map(|w| w.subject.as_str()).unwrap_or("-"),
        user = who.map(|w| w.user.as_str()).unwrap_or("-"),
        role = who.map(|w| w.role.as_str()).unwrap_or("-"), "access refused by policy");
    crate::error::page(StatusCode::FORBIDDEN, &refusal.public, &request_id, json)
}

/// RFC 6750 answer for a refused bearer token: 401 `invalid_token` (403 when the identity
/// mapping refused the user, 503 when the issuer could not be asked). Never a redirect.
pub fn bearer_refused(cx: &Context, e: &BearerError) -> Response<Body> {
    let (status, public, www) = match e {
        BearerError::Denied(_) => (
            StatusCode::FORBIDDEN,
            "This account is not allowed to use this application.",
            "Bearer realm=\"sidegate\", error=\"insufficient_scope\"",
        ),
        BearerError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The token issuer is not reachable right now; please try again shortly.",
            "Bearer realm=\"sidegate\"",
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Bearer realm=\"sidegate\", error=\"invalid_token\"",
        ),
    };
    cx.metrics.request("bearer_refused");
    let mut resp = rescue(
        Failure::new(
            status,
            Party::Downstream,
            public,
            format!("bearer token refused: {e}"),
        ),
        true,
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(www));
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
        Own::SamlSlo => login::saml_slo(cx, req, now).await,
        Own::SamlAcs => unreachable!("handled with its body in `handle`"),
        Own::Auth => unreachable!("handled with the peer address in `handle`"),
        Own::OidcBackchannelLogout | Own::LocalLogin => {
            unreachable!("handled with its body in `handle`")
        }
        Own::OidcFrontchannelLogout => login::oidc_frontchannel_logout(cx, req, now).await,
        Own::Logout => login::logout(cx, req, now).await,
        Own::Userinfo => login::userinfo(cx, req, now).await,
        Own::Jwks => login::jwks(cx),
        Own::Logo => cx.pages.logo(),
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
    route: Option<&Route>,
    outcome: &'static str,
    json: bool,
) -> Response<Body> {
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
    let Some(upstream) = &cx.upstream else {
        cx.metrics.request("no_upstream");
        return rescue(
            Failure::new(
                StatusCode::NOT_FOUND,
                Party::Downstream,
                "Not found.",
                "no [upstream] is configured: this sidegate only answers its own endpoints (forward-auth mode)",
            ),
            json,
        );
    };
    // Room for what is added below, made once instead of the map growing as they arrive.
    req.headers_mut()
        .reserve(3 + identity.map_or(0, IdentityHeaders::count));
    upstream.set_forwarded(req.headers_mut(), &from);
    if let Some(r) = route {
        let h = req.headers_mut();
        for name in &r.strip_headers {
            h.remove(name);
        }
        for (name, value) in &r.add_headers {
            h.insert(name.clone(), value.clone());
        }
    }
    if let Some(id) = identity {
        id.apply(req.headers_mut());
    }
    let started = Instant::now();
    match upstream.send(req, upgrade, from.lane).await {
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
