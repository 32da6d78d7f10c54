//! Login: the challenge for requests without a session, the start endpoint, the OIDC callback
//! and logout. Produces sessions through `session` and identities through `identity`; never
//! touches upstream headers.

mod acs;
pub mod idp_http;
mod idp_logout;
pub mod limit;
pub mod local;
pub mod oidc;
pub mod refresh;
pub mod return_to;
pub mod saml;
mod slo;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

pub use self::acs::saml_acs;
pub use self::idp_logout::{
    backchannel as oidc_backchannel_logout, frontchannel as oidc_frontchannel_logout,
};
use self::oidc::OidcError;
use self::return_to::ReturnTo;
pub use self::slo::saml_slo;
use self::state::{LoginTx, TxError, TxProto};
use crate::config::LoginConfig;
use crate::error::{html_escape, rescue, Failure, Party};
use crate::pipeline::Context;
use crate::session::{unix, Checked, Invalid};
use crate::{full_body, Body};

/// The login machinery: the configured providers and the replay cache.
pub struct Login {
    /// The OIDC providers, the default first (the default login when SAML is there too).
    pub oidc: Vec<Arc<oidc::Provider>>,
    /// The SAML IdPs, if SAML is enabled.
    pub saml: Option<Arc<saml::Saml>>,
    /// Which provider a login goes to.
    pub choice: LoginConfig,
    /// Session refreshes in flight.
    pub flights: refresh::Flights,
    /// Local accounts, if configured.
    pub local: Option<Arc<local::Local>>,
    /// The login endpoints' rate per client address.
    pub limit: limit::LoginLimit,
}

/// What a login start knows that may pick the provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct Hints<'a> {
    /// `start?provider=<name>` (the chooser's links).
    pub provider: Option<&'a str>,
    /// The request's host.
    pub host: Option<&'a str>,
    /// `login_hint` (an email, for domain rules; passed on to OIDC providers).
    pub login_hint: Option<&'a str>,
}

/// Where a login goes.
enum Choice<'a> {
    Oidc(&'a Arc<oidc::Provider>),
    Local,
    Saml(Option<String>),
    Chooser,
    Unknown(String),
}

impl Login {
    /// Whether every IdP's discovery or metadata has loaded (logins can start).
    pub fn idps_ready(&self) -> bool {
        self.oidc.iter().all(|p| p.is_ready()) && self.saml.as_ref().is_none_or(|s| s.is_ready())
    }

    fn oidc_named(&self, name: &str) -> Option<&Arc<oidc::Provider>> {
        self.oidc.iter().find(|p| p.name() == name)
    }

    /// The provider whose issuer this is (a trailing `/` aside: logout requests name it
    /// as the provider spells it).
    pub fn oidc_by_issuer(&self, iss: &str) -> Option<&Arc<oidc::Provider>> {
        self.oidc
            .iter()
            .find(|p| p.issuer().trim_end_matches('/') == iss.trim_end_matches('/'))
    }

    /// Every provider's name, OIDC first, in configuration order.
    pub fn provider_names(&self) -> Vec<String> {
        self.oidc
            .iter()
            .map(|p| p.name().to_string())
            .chain(
                self.saml
                    .iter()
                    .flat_map(|s| s.config().idps.iter().map(|i| i.name.clone())),
            )
            .chain(self.local.iter().map(|_| local::ISSUER.to_string()))
            .collect()
    }

    fn named(&self, name: &str) -> Choice<'_> {
        if let Some(p) = self.oidc_named(name) {
            return Choice::Oidc(p);
        }
        if name == local::ISSUER && self.local.is_some() {
            return Choice::Local;
        }
        match &self.saml {
            Some(s) if s.config().idps.iter().any(|i| i.name == name) => {
                Choice::Saml(Some(name.to_string()))
            }
            _ => Choice::Unknown(name.to_string()),
        }
    }

    /// The explicit provider, else the first matching rule, else the chooser (when on and
    /// there is a choice), else the default provider.
    fn choose(&self, hints: Hints<'_>, return_to: &ReturnTo) -> Choice<'_> {
        if let Some(name) = hints.provider {
            return self.named(name);
        }
        let domain = hints
            .login_hint
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        let path = return_to_path(return_to.as_str());
        let normal = crate::route::normalize(&path).ok();
        let rule = self.choice.rules.iter().find(|r| {
            (r.hosts.is_empty()
                || hints
                    .host
                    .is_some_and(|h| r.hosts.iter().any(|rule| rule.matches_authority(h))))
                && (r.paths.is_empty()
                    || normal
                        .as_ref()
                        .is_some_and(|n| r.paths.iter().any(|p| n.is_under(p, true))))
                && (r.email_domains.is_empty()
                    || domain.as_ref().is_some_and(|d| r.email_domains.contains(d)))
        });
        if let Some(r) = rule {
            return self.named(&r.provider);
        }
        if self.choice.chooser && self.provider_names().len() > 1 {
            return Choice::Chooser;
        }
        match (self.oidc.first(), &self.saml) {
            (Some(p), _) => Choice::Oidc(p),
            (None, Some(_)) => Choice::Saml(None),
            (None, None) => Choice::Local,
        }
    }
}

/// The path of a return URL (absolute or relative), for path rules.
fn return_to_path(rt: &str) -> String {
    match rt.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".into(),
        },
        None => rt.to_string(),
    }
}

fn query(req: &Request<()>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the client wants JSON answers (API calls) rather than pages.
pub fn wants_json(req: &Request<()>) -> bool {
    !is_navigation(req)
}

/// A browser navigation: GET/HEAD that accepts HTML. Only these are redirected to the IdP.
pub fn is_navigation(req: &Request<()>) -> bool {
    is_navigation_parts(req.method(), req.headers())
}

/// `is_navigation` for a request whose body is still attached.
pub fn is_navigation_parts(method: &Method, headers: &http::HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"))
}

fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .body(crate::empty_body())
        .expect("valid redirect")
}

/// Answers a protected request that has no valid session: a redirect to the IdP for browser
/// navigations, 401 JSON for everything else (never a redirect for API calls).
pub async fn challenge(cx: &Context, req: &Request<()>, why: Option<Invalid>) -> Response<Body> {
    if let Some(why) = why {
        tracing::info!(reason = %why, "session cookie ignored");
    }
    let mut resp = if is_navigation(req) {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // One sidegate for several apps on subdomains: a request for another allowed host
        // comes back to that host; anything else comes back to the path on public_url.
        let public_authority = &cx.public_url[url::Position::BeforeHost..url::Position::AfterPort];
        let other_host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.eq_ignore_ascii_case(public_authority))
            .map(|h| format!("{}://{h}{path}", cx.public_url.scheme()));
        let rt = other_host
            .and_then(|t| {
                return_to::check(&t, &cx.public_url, &cx.access.allowed_redirect_hosts).ok()
            })
            .or_else(|| return_to::check(path, &cx.public_url, &[]).ok())
            .unwrap_or_else(ReturnTo::root);
        cx.metrics.request("redirect_login");
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        begin(
            cx,
            rt,
            Hints {
                host,
                ..Hints::default()
            },
        )
        .await
    } else {
        cx.metrics.request("unauthenticated");
        let login = format!(
            "{}{}/start",
            crate::config::public_origin(&cx.public_url),
            cx.routes.prefix()
        );
        let body = serde_json::json!({"error": "unauthenticated", "login_url": login}).to_string();
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::WWW_AUTHENTICATE,
                format!("Bearer realm=\"sidegate\", login_uri=\"{login}\""),
            )
            .header(header::CACHE_CONTROL, "no-store")
            .body(full_body(body))
            .expect("valid 401")
    };
    if why.is_some() {
        for c in cx.sessions.clear() {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    resp
}

/// Starts a login towards `return_to` at the provider the hints pick (see `Login::choose`):
/// a fresh transaction cookie and a redirect to the IdP, or the chooser page.
pub async fn begin(cx: &Context, return_to: ReturnTo, hints: Hints<'_>) -> Response<Body> {
    match cx.login.choose(hints, &return_to) {
        Choice::Oidc(p) => begin_oidc(cx, p, return_to, hints.login_hint).await,
        Choice::Saml(name) => match &cx.login.saml {
            Some(s) => begin_saml(cx, s, name.as_deref(), return_to).await,
            None => unreachable!("config validation requires a login method"),
        },
        Choice::Chooser => chooser(cx, &return_to),
        Choice::Local => local::form(cx, &return_to, None),
        Choice::Unknown(name) => rescue(
            Failure::new(
                StatusCode::NOT_FOUND,
                Party::Downstream,
                "There is no such sign-in option.",
                format!("unknown provider `{name}`"),
            ),
            false,
        ),
    }
}

/// The sign-in page: one link per provider, and an email field for domain rules.
fn chooser(cx: &Context, return_to: &ReturnTo) -> Response<Body> {
    let start = format!("{}/start", cx.routes.prefix());
    let rd: String = url::form_urlencoded::byte_serialize(return_to.as_str().as_bytes()).collect();
    let links: String = cx
        .login
        .provider_names()
        .iter()
        .map(|n| {
            let q: String = url::form_urlencoded::byte_serialize(n.as_bytes()).collect();
            format!(
                "<li><a href=\"{}\">Sign in with {}</a></li>",
                html_escape(&format!("{start}?provider={q}&rd={rd}")),
                html_escape(n)
            )
        })
        .collect();
    let email_form = if cx
        .login
        .choice
        .rules
        .iter()
        .any(|r| !r.email_domains.is_empty())
    {
        format!(
            "<form method=\"get\" action=\"{}\"><label>Work email <input type=\"email\" name=\"login_hint\" autocomplete=\"email\" required></label>\
             <input type=\"hidden\" name=\"rd\" value=\"{}\"><button>Continue</button></form>",
            html_escape(&start),
            html_escape(return_to.as_str())
        )
    } else {
        String::new()
    };
    cx.metrics.request("chooser");
    cx.pages.signin(&links, &email_form)
}

fn idp_unavailable(detail: String) -> Response<Body> {
    rescue(
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Party::Idp,
            "The identity provider is not reachable right now; please try again shortly.",
            detail,
        ),
        false,
    )
}

/// Redirects to `url` with a new transaction (its cookie, or kept in the store).
async fn redirect_with_tx(cx: &Context, url: &str, tx: &LoginTx) -> Response<Body> {
    match state::keep(&cx.sessions, cx.routes.prefix(), tx).await {
        Ok(cookie) => {
            let mut resp = redirect(url);
            if let Some(c) = cookie {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Err(e) => rescue(
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Party::Internal,
                "Sign-in is temporarily unavailable. Please try again in a minute.",
                format!("login transaction not stored: {e}"),
            ),
            false,
        ),
    }
}

async fn begin_oidc(
    cx: &Context,
    p: &oidc::Provider,
    return_to: ReturnTo,
    login_hint: Option<&str>,
) -> Response<Body> {
    let auth = match p.authorize(login_hint).await {
        Ok(a) => a,
        Err(e) => return idp_unavailable(e.to_string()),
    };
    let tx = LoginTx {
        state: auth.state,
        proto: TxProto::Oidc {
            provider: p.name().to_string(),
            nonce: auth.nonce,
            pkce_verifier: auth.pkce_verifier,
        },
        return_to: return_to.as_str().to_string(),
        created: unix(SystemTime::now()),
    };
    redirect_with_tx(cx, &auth.url, &tx).await
}

async fn begin_saml(
    cx: &Context,
    s: &saml::Saml,
    idp_name: Option<&str>,
    return_to: ReturnTo,
) -> Response<Body> {
    let idp = match s.idp(idp_name) {
        Ok(i) => i,
        Err(e @ saml::Unavailable::Unknown(_)) => {
            return rescue(
                Failure::new(
                    StatusCode::NOT_FOUND,
                    Party::Downstream,
                    "There is no such sign-in option.",
                    e.to_string(),
                ),
                false,
            )
        }
        Err(e) => return idp_unavailable(e.to_string()),
    };
    // RelayState is an opaque id naming the sealed transaction, never a URL.
    let relay = crate::keys::random_token::<16>();
    let (url, request_id) = match s.authn_request(&idp, &relay) {
        Ok(r) => r,
        Err(e) => return idp_unavailable(e.to_string()),
    };
    let tx = LoginTx {
        state: relay,
        proto: TxProto::Saml {
            request_id,
            idp: idp.name.clone(),
        },
        return_to: return_to.as_str().to_string(),
        created: unix(SystemTime::now()),
    };
    redirect_with_tx(cx, url.as_str(), &tx).await
}

/// The `rd` parameter checked against the redirect allow-list (root when absent).
#[allow(clippy::result_large_err)] // the Err is the finished error page, built once per refusal
pub(crate) fn checked_rd(cx: &Context, req: &Request<()>) -> Result<ReturnTo, Response<Body>> {
    let q = query(req);
    return_to::check(
        q.get("rd").map(String::as_str).unwrap_or(""),
        &cx.public_url,
        &cx.access.allowed_redirect_hosts,
    )
    .map_err(|e| {
        rescue(
            Failure::new(
                StatusCode::BAD_REQUEST,
                Party::Downstream,
                "That return address is not allowed.",
                format!("rd refused: {e}"),
            ),
            wants_json(req),
        )
    })
}

/// `start?rd=…[&provider=…][&login_hint=…]`: begins a login after checking the return URL
/// against the allow-list.
pub async fn start(cx: &Context, req: &Request<()>) -> Response<Body> {
    let q = query(req);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let hints = Hints {
        provider: q.get("provider").map(String::as_str),
        host,
        login_hint: q
            .get("login_hint")
            .map(String::as_str)
            .filter(|h| !h.is_empty() && h.len() <= 256 && !h.chars().any(char::is_control)),
    };
    match checked_rd(cx, req) {
        Ok(rt) => begin(cx, rt, hints).await,
        Err(resp) => resp,
    }
}

pub(crate) fn not_enabled(req: &Request<()>, what: &str) -> Response<Body> {
    rescue(
        Failure::new(
            StatusCode::NOT_FOUND,
            Party::Downstream,
            "Not found.",
            format!("{what} is not configured ({})", req.uri().path()),
        ),
        wants_json(req),
    )
}

/// `saml/login?rd=…&idp=…`: begins an SP-initiated SAML login (at the default IdP when
/// `idp` is not given).
pub async fn saml_login(cx: &Context, req: &Request<()>) -> Response<Body> {
    let Some(s) = &cx.login.saml else {
        return not_enabled(req, "SAML");
    };
    let q = query(req);
    match checked_rd(cx, req) {
        Ok(rt) => begin_saml(cx, s, q.get("idp").map(String::as_str), rt).await,
        Err(resp) => resp,
    }
}

/// `saml/metadata`: the SP metadata XML to register at the IdP.
pub fn saml_metadata(cx: &Context, req: &Request<()>) -> Response<Body> {
    let Some(s) = &cx.login.saml else {
        return not_enabled(req, "SAML");
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "application/samlmetadata+xml")
        .body(full_body(s.sp_metadata()))
        .expect("valid response")
}

fn login_failed(
    cx: &Context,
    reason: &'static str,
    detail: String,
    status: StatusCode,
    party: Party,
    public: &'static str,
) -> Response<Body> {
    cx.metrics.login("failure", reason);
    tracing::warn!(target: "sidegate::audit", event = "login", outcome = "failure", reason, detail = %detail, "login failed");
    rescue(Failure::new(status, party, public, detail), false)
}

/// The IdP's redirect back: checks the transaction, exchanges the code, verifies the ID
/// token, maps the identity, and starts a new session (new id; old cookies cleared).
pub async fn callback(cx: &Context, req: &Request<()>, now: SystemTime) -> Response<Body> {
    if cx.login.oidc.is_empty() {
        return not_enabled(req, "OIDC");
    }
    let q = query(req);
    if let Some(err) = q.get("error") {
        let detail = format!(
            "IdP returned error `{err}`: {}",
            q.get("error_description").map(String::as_str).unwrap_or("")
        );
        return login_failed(
            cx,
            "idp_error",
            detail,
            StatusCode::FORBIDDEN,
            Party::Idp,
            "Sign-in was not completed at the identity provider.",
        );
    }
    let tx = match state::take(
        &cx.sessions,
        req.headers(),
        q.get("state").map(String::as_str),
        now,
    )
    .await
    {
        Ok(tx) => tx,
        Err(e) => return tx_refused(cx, e),
    };
    let TxProto::Oidc {
        provider,
        nonce,
        pkce_verifier,
    } = &tx.proto
    else {
        return login_failed(
            cx,
            "wrong_protocol",
            "an OIDC callback for a SAML login transaction".into(),
            StatusCode::BAD_REQUEST,
            Party::Downstream,
            "This sign-in link is no longer valid. Please start again.",
        );
    };
    // The provider the login was sent to (sealed in the transaction; older ones: the default).
    let Some(provider) = (if provider.is_empty() {
        cx.login.oidc.first()
    } else {
        cx.login.oidc_named(provider)
    }) else {
        return login_failed(
            cx,
            "unknown_provider",
            format!("transaction names provider `{provider}`, which is not configured"),
            StatusCode::BAD_REQUEST,
            Party::Downstream,
            "This sign-in link is no longer valid. Please start again.",
        );
    };
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return login_failed(
            cx,
            "code_missing",
            "callback without code".into(),
            StatusCode::BAD_REQUEST,
            Party::Downstream,
            "This sign-in link is no longer valid. Please start again.",
        );
    };
    let oidc::Completed {
        claims,
        refresh_token,
        id_token_hint,
    } = match provider
        .complete(code, nonce, pkce_verifier.as_deref(), now)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let (reason, status, party, public) = match &e {
                OidcError::NotReady(_) => (
                    "idp_unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                    Party::Idp,
                    "The identity provider is not reachable right now; please try again shortly.",
                ),
                OidcError::Exchange(_) => (
                    "code_exchange",
                    StatusCode::BAD_GATEWAY,
                    Party::Idp,
                    "Sign-in could not be completed with the identity provider.",
                ),
                OidcError::NoIdToken
                | OidcError::IdToken(_)
                | OidcError::RequiredClaim(_)
                | OidcError::GroupOverage(_) => (
                    "id_token",
                    StatusCode::FORBIDDEN,
                    Party::Idp,
                    "Sign-in was refused: the identity provider's answer did not check out.",
                ),
                OidcError::Userinfo(_) => (
                    "userinfo",
                    StatusCode::FORBIDDEN,
                    Party::Idp,
                    "Sign-in was refused: the identity provider's answer did not check out.",
                ),
            };
            return login_failed(cx, reason, e.to_string(), status, party, public);
        }
    };
    let identity = match crate::identity::resolve(
        &provider.identity_config(&cx.identity),
        provider.issuer(),
        &claims,
    ) {
        Ok(i) => i,
        Err(d) => return denied(cx, d),
    };
    // The provider's session id (back- and front-channel logout) and refresh token.
    let sid = claims
        .get("sid")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty());
    let idp_session =
        (sid.is_some() || refresh_token.is_some() || id_token_hint.is_some()).then(|| {
            crate::session::IdpSession {
                session_index: sid.unwrap_or_default().to_string(),
                id_token: id_token_hint,
                refresh_due: provider
                    .refresh_interval()
                    .map_or(0, |i| unix(now) + i.as_secs() as i64),
                refresh_token,
                ..Default::default()
            }
        });
    finish_login(
        cx,
        identity,
        idp_session,
        ReturnTo::from_sealed(tx.return_to),
        Some(&tx.state),
        now,
    )
    .await
}

fn tx_refused(cx: &Context, e: TxError) -> Response<Body> {
    let reason = match e {
        TxError::StateMissing => "state_missing",
        TxError::NoTransaction => "no_transaction",
        TxError::Invalid => "transaction_invalid",
        TxError::StateMismatch => "state_mismatch",
        TxError::Expired => "transaction_expired",
        TxError::Replayed => "replayed",
        TxError::Unavailable => "store_unavailable",
    };
    let status = if e == TxError::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_REQUEST
    };
    login_failed(
        cx,
        reason,
        e.to_string(),
        status,
        Party::Downstream,
        "This sign-in link is no longer valid. Please start again.",
    )
}

fn denied(cx: &Context, d: crate::identity::Denied) -> Response<Body> {
    login_failed(
        cx,
        "denied",
        d.to_string(),
        StatusCode::FORBIDDEN,
        Party::Downstream,
        "Your account is not allowed to use this application.",
    )
}

/// The end of every successful login: a new session (new id; old cookies replaced), the
/// audit line, the transaction cookie cleared, and the redirect to the checked return URL.
pub(crate) async fn finish_login(
    cx: &Context,
    identity: crate::identity::Identity,
    idp_session: Option<crate::session::IdpSession>,
    return_to: ReturnTo,
    tx_state: Option<&str>,
    now: SystemTime,
) -> Response<Body> {
    let (session, cookies) = match cx.sessions.create(identity, idp_session, now).await {
        Ok(x) => x,
        Err(e) => {
            cx.metrics.login("failure", "store_unavailable");
            return rescue(
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Party::Internal,
                    "Sign-in cannot be completed right now. Please try again in a minute.",
                    format!("login refused: the session could not be stored: {e}"),
                ),
                false,
            );
        }
    };
    cx.metrics.login("success", "ok");
    tracing::info!(target: "sidegate::audit", event = "login", outcome = "success", subject = %session.identity.subject,
        issuer = %session.identity.issuer, user = %session.identity.user, role = %session.identity.role, "login succeeded");
    let mut resp = redirect(return_to.as_str());
    let h = resp.headers_mut();
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(state) = tx_state {
        h.append(
            header::SET_COOKIE,
            state::clear_cookie(&cx.sessions, cx.routes.prefix(), state),
        );
    }
    resp
}

/// Ends the session: cookies cleared, cached assertion dropped; then single logout at the
/// IdP when it offers one (SAML SLO, or OIDC RP-initiated logout coming back here), else back
/// to `rd` if allowed. `state` stands for `rd` when an OIDC provider sends the browser back.
pub async fn logout(cx: &Context, req: &Request<()>, now: SystemTime) -> Response<Body> {
    let q = query(req);
    // The return URL is checked first: a refused one changes nothing.
    let rd = match q
        .get("rd")
        .or(q.get("state").filter(|s| !s.is_empty()))
        .map(|rd| return_to::check(rd, &cx.public_url, &cx.access.allowed_redirect_hosts))
    {
        Some(Ok(rt)) => Some(rt),
        Some(Err(e)) => {
            return rescue(
                Failure::new(
                    StatusCode::BAD_REQUEST,
                    Party::Downstream,
                    "That return address is not allowed.",
                    format!("logout rd refused: {e}"),
                ),
                wants_json(req),
            )
        }
        None => None,
    };
    let mut single_logout = None;
    if let Checked::Valid(s) | Checked::Touch(s) = cx.sessions.check(req.headers(), now).await {
        cx.signer.forget(&s.sid);
        tracing::info!(target: "sidegate::audit", event = "logout", subject = %s.identity.subject, "logout");
        single_logout = slo::begin(cx, &s, rd.as_ref(), now).await;
        if single_logout.is_none() {
            single_logout = rp_initiated(cx, &s, rd.as_ref()).await;
        }
    }
    let mut resp = single_logout.unwrap_or_else(|| match &rd {
        Some(rt) => redirect(rt.as_str()),
        None => cx.pages.signed_out(),
    });
    cx.sessions.end(req.headers()).await;
    for c in cx.sessions.clear() {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// OIDC RP-initiated logout for a session from a provider with an `end_session_endpoint`:
/// the provider ends its session and sends the browser back to our `logout` (register
/// `<public_url>/.sidegate/logout` as a post-logout redirect URI), carrying `rd` as `state`.
async fn rp_initiated(
    cx: &Context,
    s: &crate::session::Session,
    rd: Option<&ReturnTo>,
) -> Option<Response<Body>> {
    let provider = cx.login.oidc_by_issuer(&s.identity.issuer)?;
    let back = format!(
        "{}{}/logout",
        crate::config::public_origin(&cx.public_url),
        cx.routes.prefix()
    );
    let hint = s.idp_session.as_ref().and_then(|i| i.id_token.as_deref());
    let url = provider
        .end_session_url(&back, rd.map_or("", |r| r.as_str()), hint)
        .await?;
    Some(redirect(&url))
}

/// The current identity as JSON (no tokens), or 401.
pub async fn userinfo(cx: &Context, req: &Request<()>, now: SystemTime) -> Response<Body> {
    match cx.sessions.check(req.headers(), now).await {
        Checked::Valid(s) | Checked::Touch(s) => {
            let id = &s.identity;
            let body = serde_json::json!({
                "user": id.user, "email": id.email, "role": id.role, "teams": id.teams,
                "sub": id.subject, "iss": id.issuer, "expires_at": s.expires,
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-store")
                .body(full_body(body.to_string()))
                .expect("valid json response")
        }
        _ => rescue(
            Failure::new(
                StatusCode::UNAUTHORIZED,
                Party::Downstream,
                "unauthenticated",
                "userinfo without a session",
            ),
            true,
        ),
    }
}

/// The assertion verification keys.
pub fn jwks(cx: &Context) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )
        .body(http_body_util::BodyExt::boxed_unsync(
            http_body_util::BodyExt::map_err(
                http_body_util::Full::new(cx.signer.jwks()),
                |never| match never {},
            ),
        ))
        .expect("valid jwks response")
}
