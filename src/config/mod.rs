//! Configuration: parsed once, at start-up, into typed values.
//!
//! `load` takes the TOML text and the environment as values (never ambient process state),
//! applies `SIDEGATE_SECTION__KEY` overrides, reads secret files, and returns either a
//! `Config` or every problem found, each naming the key and the fix. Nothing here binds a
//! port or touches the network.

mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use url::Url;

use crate::keys::{CookieKeys, Secret, SigningKeys};

pub use validate::public_origin;

/// The environment as a value: tests build one, `main` collects the process env into one.
pub type Env = BTreeMap<String, String>;

/// The validated configuration every stage is built from.
#[derive(Debug)]
pub struct Config {
    /// Listeners, public URL, reserved prefix, trusted proxies, TLS.
    pub server: ServerConfig,
    /// The protected app; absent when sidegate only answers forward-auth checks.
    pub upstream: Option<UpstreamConfig>,
    /// The OpenID providers (empty: no OIDC login); the first is the default.
    pub oidc: Vec<OidcConfig>,
    /// The SAML IdP and this service provider, if SAML login is enabled.
    pub saml: Option<SamlConfig>,
    /// Trusted issuers of API bearer tokens (empty: `Authorization` is not looked at).
    pub bearer: Vec<BearerIssuerConfig>,
    /// Session cookie settings and sealing keys.
    pub session: SessionConfig,
    /// The signed assertion sent upstream.
    pub assertion: AssertionConfig,
    /// Claim → identity mapping.
    pub identity: IdentityConfig,
    /// Identity header names and extra names to strip.
    pub headers: HeaderConfig,
    /// Public paths and allowed redirect hosts.
    pub access: AccessConfig,
    /// Per-route rules (host + path prefix + methods → public, authenticated, or conditions).
    pub policy: PolicyConfig,
    /// Which provider a login goes to, and whether a chooser page is shown.
    pub login: LoginConfig,
    /// Local accounts (break-glass, migration), off unless configured.
    pub local: Option<LocalConfig>,
    /// The operator's page templates and logo.
    pub pages: PagesConfig,
    /// Log output format.
    pub log: LogFormat,
}

/// Listener-side settings.
#[derive(Debug)]
pub struct ServerConfig {
    /// Public listeners (downstream traffic).
    pub listen: Vec<SocketAddr>,
    /// Admin listener for health and metrics; never the public one.
    pub admin_listen: Option<SocketAddr>,
    /// External origin (`scheme://host[:port]`) used for callbacks and as assertion issuer.
    pub public_url: Url,
    /// Path prefix reserved for sidegate's own endpoints (default `/.sidegate`).
    pub prefix: String,
    /// Peers whose `X-Forwarded-*`/`Forwarded` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// TLS on the public listeners, if configured.
    pub tls: Option<TlsFiles>,
    /// How long a client may take to send request headers.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after shutdown starts.
    pub shutdown_grace: Duration,
    /// Open connections per listener; more are closed at once.
    pub max_connections: usize,
    /// Threads that serve client connections, each connection on one (default: the cores
    /// sidegate may use). 0 serves them as tasks of the shared work-stealing runtime.
    pub threads: usize,
    /// Whether each connection thread keeps to a CPU of its own.
    pub cpu_affinity: CpuAffinity,
    /// Requests per minute to the login endpoints per client address (0: no limit).
    pub login_rate_per_minute: u32,
}

/// PEM files for the public listeners.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

/// Where and how requests are forwarded.
#[derive(Debug)]
pub struct UpstreamConfig {
    /// Origin of the app (`http://127.0.0.1:8080`).
    pub url: Url,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response headers arrive.
    pub response_timeout: Duration,
    /// Keep the downstream `Host` (true) or send the upstream's authority.
    pub pass_host_header: bool,
    /// Connections kept open to the app: at most this many client connections have their own
    /// (`forward::Lane`), and the shared pool keeps at most this many idle. Past it, the pool
    /// closes and reopens connections as the load moves (about 2,000 a second at 1024 clients
    /// with a cap of 256), so the default (1024, Envoy's default connection limit) is high.
    pub max_idle_connections: usize,
}

/// ID-token signature algorithms sidegate accepts (never `none`, never HS*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl IdTokenAlg {
    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            IdTokenAlg::Rs256 => "RS256",
            IdTokenAlg::Ps256 => "PS256",
            IdTokenAlg::Es256 => "ES256",
            IdTokenAlg::EdDsa => "EdDSA",
        }
    }
}

/// The OpenID provider and the client registered there.
#[derive(Debug)]
pub struct OidcConfig {
    /// Its name in sidegate (`start?provider=<name>`, login rules, policy `idps`).
    pub name: String,
    /// Issuer; discovery is fetched from `<issuer>/.well-known/openid-configuration`.
    pub issuer: Url,
    /// Client id registered at the IdP.
    pub client_id: String,
    /// Client secret (from a file or an env var).
    pub client_secret: Secret,
    /// Scopes requested (always includes `openid`).
    pub scopes: Vec<String>,
    /// Extra authorize request parameters (`prompt`, `hd`, `domain_hint`, …).
    pub extra_authorize_params: Vec<(String, String)>,
    /// Send a PKCE S256 challenge (default on).
    pub pkce: bool,
    /// Allowed clock difference for `exp`, `iat` and `nbf`.
    pub clock_skew: Duration,
    /// Accepted ID-token algorithms.
    pub allowed_algs: Vec<IdTokenAlg>,
    /// Also call the userinfo endpoint at login (its `sub` must match).
    pub userinfo: bool,
    /// Timeout of each call to the IdP.
    pub http_timeout: Duration,
    /// At most one JWKS refresh per this interval when an unknown `kid` shows up.
    pub jwks_min_refresh_interval: Duration,
    /// Renew sessions with the refresh token this often (claims re-read, policy re-judged);
    /// `None`: no refresh, the session lives its lifetime on the login's claims.
    pub refresh_interval: Option<Duration>,
    /// ID-token claims that must have exactly these values (a preset's tenant or domain).
    pub required_claims: Vec<(String, String)>,
    /// Where this provider's tokens keep the identity (a preset's), over `[identity]`'s
    /// defaults; keys set in `[identity]` win.
    pub claims: Option<ClaimNames>,
    /// Keep a trailing `/` on the issuer (Auth0 publishes one).
    pub issuer_trailing_slash: bool,
    /// Where to ask for the user's groups when the ID token says they did not fit (Entra's
    /// group overage): a Microsoft Graph `getMemberObjects` URL. A failed lookup refuses
    /// the login rather than yield "no teams".
    pub group_overage: Option<Url>,
    /// Endpoints given by hand for an IdP without discovery (`None`: discovery).
    pub endpoints: Option<Endpoints>,
    /// Headers sent with every request to this IdP (from `idp_headers_env`).
    pub idp_headers: Vec<(HeaderName, http::HeaderValue)>,
}

/// An IdP's endpoints, for one without a discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Where browsers are sent to sign in.
    pub authorization: Url,
    /// The code exchange.
    pub token: Url,
    /// The ID token's keys.
    pub jwks: Url,
    /// Userinfo, if any.
    pub userinfo: Option<Url>,
    /// RP-initiated logout, if any.
    pub end_session: Option<Url>,
}

/// Claim names for the identity mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// Tried in order for the user name.
    pub user: Vec<String>,
    /// The email.
    pub email: String,
    /// The role.
    pub role: String,
    /// The teams.
    pub teams: String,
}

/// One issuer whose access tokens API clients may present instead of a session.
#[derive(Debug)]
pub struct BearerIssuerConfig {
    /// The `iss` value, compared exactly.
    pub issuer: String,
    /// The `aud` value this deployment requires (the API's resource identifier).
    pub audience: String,
    /// JWKS location; discovered from `<issuer>/.well-known/openid-configuration` when absent.
    pub jwks_url: Option<Url>,
    /// Accepted signature algorithms (asymmetric only).
    pub allowed_algs: Vec<IdTokenAlg>,
    /// Accepted JOSE `typ` values, lower case without `application/` (default `at+jwt`).
    pub token_types: Vec<String>,
    /// Allowed clock difference for `exp`, `nbf` and `iat`.
    pub clock_skew: Duration,
    /// At most one JWKS refresh per this interval when an unknown `kid` shows up.
    pub jwks_min_refresh_interval: Duration,
    /// Timeout of each call to the issuer.
    pub http_timeout: Duration,
    /// RFC 7662 introspection for opaque tokens, if enabled.
    pub introspection: Option<IntrospectionConfig>,
    /// How long a checked token's result is reused (never past its `exp`).
    pub cache_ttl: Duration,
}

/// How to call an issuer's introspection endpoint.
#[derive(Debug)]
pub struct IntrospectionConfig {
    /// Endpoint; discovered (`introspection_endpoint`) when absent.
    pub url: Option<Url>,
    /// Client id sidegate authenticates with (HTTP Basic).
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
}

/// Other header names the signed assertion is also sent under, for apps that already
/// verify another proxy's format (same token, our issuer and JWKS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatHeader {
    /// `X-Pomerium-Jwt-Assertion`.
    Pomerium,
    /// `X-Goog-Iap-Jwt-Assertion`.
    Iap,
}

impl CompatHeader {
    /// The header name.
    pub fn header_name(self) -> HeaderName {
        HeaderName::from_static(match self {
            CompatHeader::Pomerium => "x-pomerium-jwt-assertion",
            CompatHeader::Iap => "x-goog-iap-jwt-assertion",
        })
    }
}

/// sidegate as a SAML 2.0 service provider, and the IdPs it trusts.
#[derive(Debug)]
pub struct SamlConfig {
    /// Our entity ID (default: the SP metadata URL).
    pub sp_entity_id: String,
    /// Key and certificate for signing requests and decrypting assertions.
    pub sp_key: Option<crate::keys::SamlSpKey>,
    /// Sign AuthnRequests (Redirect binding signature); needs `sp_key`.
    pub sign_authn_requests: bool,
    /// NameID format requested in the AuthnRequest.
    pub name_id_format: Option<String>,
    /// Largest accepted ACS POST body (bytes), checked before any XML parsing.
    pub max_response_bytes: usize,
    /// The IdPs, the default (used when a login names none) first.
    pub idps: Vec<SamlIdpConfig>,
}

/// One trusted SAML IdP.
#[derive(Debug)]
pub struct SamlIdpConfig {
    /// Its name in sidegate (`saml/login?idp=<name>`).
    pub name: String,
    /// Where its metadata (entity ID, endpoints, signing certificates) comes from.
    pub idp: IdpSource,
    /// If set, the metadata must be signed by this certificate (DER).
    pub metadata_signing_cert: Option<Vec<u8>>,
    /// Which attributes hold the user, email, role and teams.
    pub attributes: SamlAttributes,
    /// Allowed clock difference for every time check.
    pub clock_skew: Duration,
    /// What to do with responses nobody asked for.
    pub idp_initiated: IdpInitiated,
    /// Where IdP-initiated logins land when RelayState is not an allowed return URL.
    pub idp_initiated_landing: String,
    /// Which signature must cover the assertion.
    pub assertion_signature: AssertionSignature,
}

/// Where the SAML IdP's metadata comes from.
#[derive(Debug)]
pub enum IdpSource {
    /// A file, read and checked at start-up.
    File(Box<crate::login::saml::IdpMetadata>),
    /// A URL (https; http on loopback only), fetched in the background and refreshed.
    Url {
        /// The metadata URL.
        url: Url,
        /// How often to refetch it.
        refresh: Duration,
    },
}

/// SAML attribute names for the identity (`user` is tried in order, then the NameID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAttributes {
    /// Attributes tried in order for the user name; the NameID is the last resort.
    pub user: Vec<String>,
    /// Attribute holding the email address.
    pub email: String,
    /// Attribute holding the role (one or several values).
    pub role: String,
    /// Attribute holding the teams (groups).
    pub teams: String,
}

/// Handling of unsolicited (IdP-initiated) SAML responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpInitiated {
    /// Refused with a clear page (the default).
    Off,
    /// Fully checked, then discarded; a fresh SP-initiated login follows.
    Restart,
    /// Fully checked and used (no InResponseTo binding: CSRF-prone, see the docs).
    Accept,
}

/// Which signature must cover the assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionSignature {
    /// Its own signature, or a signed Response it sits in (the default).
    OwnOrResponse,
    /// Its own signature, always.
    Own,
}

/// `SameSite` attribute of sidegate's cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations (needed for the IdP's redirect back).
    Lax,
    /// Never sent cross-site.
    Strict,
    /// Always sent (requires `Secure`).
    None,
}

/// Session cookie settings.
#[derive(Debug)]
pub struct SessionConfig {
    /// Base cookie name; chunks are `<name>_0`, `<name>_1`, …
    pub cookie_name: String,
    /// Sealing keys, first seals.
    pub keys: CookieKeys,
    /// Hard limit on a session's age.
    pub absolute_lifetime: Duration,
    /// A session unused this long ends.
    pub idle_lifetime: Duration,
    /// `Secure` attribute (only off for plain-http development, explicitly).
    pub cookie_secure: bool,
    /// `Domain` attribute; host-only when absent.
    pub cookie_domain: Option<String>,
    /// `SameSite` attribute.
    pub same_site: SameSite,
    /// Lifetime of a login transaction (state, nonce, PKCE verifier).
    pub login_lifetime: Duration,
    /// Where sessions live.
    pub store: SessionStore,
    /// Login transactions kept in the store instead of a cookie (for deployments whose
    /// callback cannot see the cookie set at the start, e.g. another host).
    pub login_in_store: bool,
}

/// `session.store`: where session data live. Cookie sessions need nothing on the server;
/// the server-side stores keep only an opaque id and a per-session key in the cookie.
#[derive(Debug, Clone, Default)]
pub enum SessionStore {
    /// Everything sealed in the cookie (stateless; any replica reads it).
    #[default]
    Cookie,
    /// In this process (one replica; sessions end with a restart).
    Memory,
    /// In Redis, shared by every replica, with the state that must be global.
    Redis(RedisConfig),
}

/// `[session.redis]`: how to reach Redis (or Valkey).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Which deployment shape.
    pub target: RedisTarget,
    /// ACL user name (AUTH), if any.
    pub username: Option<String>,
    /// AUTH password, if any.
    pub password: Option<Secret>,
    /// A private CA (PEM) for `rediss://`, instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Prefix of every key sidegate writes.
    pub prefix: String,
    /// Per-command (and per-connect) timeout.
    pub timeout: Duration,
}

/// The shapes of a Redis deployment.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server (`redis://` or `rediss://` URL).
    Standalone(String),
    /// A master found through Sentinel.
    Sentinel {
        /// Sentinel URLs.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
    },
    /// Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

/// The signed assertion sent to the upstream.
#[derive(Debug)]
pub struct AssertionConfig {
    /// Signing keys, first signs, all published.
    pub keys: SigningKeys,
    /// `aud` claim.
    pub audience: String,
    /// Lifetime of one assertion (`exp - iat`).
    pub lifetime: Duration,
    /// Extra header names for the same assertion.
    pub compat_headers: Vec<CompatHeader>,
}

/// How claims become an identity.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Claims tried in order for the user name.
    pub user_claims: Vec<String>,
    /// Claim holding the email address.
    pub email_claim: String,
    /// Claim holding the role (string or array).
    pub role_claim: String,
    /// Allowed roles, highest priority first; empty means every user gets `default_role`.
    pub roles: Vec<String>,
    /// IdP value → role.
    pub role_map: BTreeMap<String, String>,
    /// Least-privilege role for missing or unknown values.
    pub default_role: String,
    /// Claim holding the teams (array or comma-separated string).
    pub teams_claim: String,
    /// If not empty, only these email domains may log in (lower case).
    pub allowed_email_domains: Vec<String>,
    /// Rules that set the role from teams, a claim or the email domain; first match wins,
    /// before the role claim is looked at.
    pub role_rules: Vec<RoleRule>,
    /// Which teams survive, and under which names.
    pub team_filter: TeamFilter,
    /// More claims carried into the session, the assertion and (optionally) a header.
    pub extra: Vec<ExtraClaim>,
}

/// "Users matching this get that role." Every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    /// The role given (one of `roles`).
    pub role: String,
    /// Any of these teams (as the IdP sends them, before the team filter).
    pub teams: Vec<String>,
    /// This claim (path) has any of `values`.
    pub claim: Option<(String, Vec<String>)>,
    /// The email's domain is one of these (lower case).
    pub email_domains: Vec<String>,
}

/// Team filtering, in order: keep only `prefix`-ed teams (and strip it), rename, allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamFilter {
    /// Keep only teams starting with this.
    pub prefix: Option<String>,
    /// Remove `prefix` from the kept names.
    pub strip_prefix: bool,
    /// IdP name → our name.
    pub rename: BTreeMap<String, String>,
    /// If not empty, only these (after renaming) are kept.
    pub allow: Vec<String>,
}

/// A claim (or SAML attribute) carried through with its JSON type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraClaim {
    /// Its name in the assertion and the session.
    pub name: String,
    /// Where it is read from (literal name first, else a dotted path).
    pub claim: String,
    /// The upstream header it is also sent in, if any.
    pub header: Option<HeaderName>,
}

/// Names of the identity headers sent upstream.
#[derive(Debug, Clone)]
pub struct HeaderConfig {
    /// User name header.
    pub user: HeaderName,
    /// Email header.
    pub email: HeaderName,
    /// Role header.
    pub role: HeaderName,
    /// Teams header (comma-separated).
    pub teams: HeaderName,
    /// Signed JWT assertion header.
    pub assertion: HeaderName,
    /// More names that clients must never send upstream.
    pub strip: Vec<HeaderName>,
    /// Headers of extra claims (`identity.extra`): (claim name, header).
    pub extra: Vec<(String, HeaderName)>,
}

/// A public path rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRule {
    /// Exactly this path.
    Exact(String),
    /// This path and everything below it (written with a trailing `/`).
    Prefix(String),
}

/// A host redirects may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// This host (and port, when given).
    Exact { host: String, port: Option<u16> },
    /// Any subdomain of this domain (written `*.example.com`).
    Subdomains { domain: String, port: Option<u16> },
}

impl HostRule {
    /// Whether `authority` (`host` or `host:port`, any case) is this rule's host; a rule
    /// without a port matches any port.
    pub fn matches_authority(&self, authority: &str) -> bool {
        let a = authority.to_ascii_lowercase();
        let (host, port) = match a.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_string(), p.parse::<u16>().ok())
            }
            _ => (a, None),
        };
        let (ok, want) = match self {
            HostRule::Exact { host: h, port } => (*h == host, port),
            HostRule::Subdomains { domain, port } => (
                host.len() > domain.len() + 1
                    && host.ends_with(domain.as_str())
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.',
                port,
            ),
        };
        ok && want.is_none_or(|w| port == Some(w))
    }
}

/// How a login picks its provider: the first matching rule, else the chooser page (when on
/// and there are several providers), else the default provider.
#[derive(Debug, Clone, Default)]
pub struct LoginConfig {
    /// Show a page listing the providers (and an email field for domain rules).
    pub chooser: bool,
    /// Rules, in order.
    pub rules: Vec<LoginRule>,
}

/// "Logins for these hosts / paths / email domains go to that provider."
#[derive(Debug, Clone)]
pub struct LoginRule {
    /// The provider's name (OIDC or SAML).
    pub provider: String,
    /// The request's host (any of); empty matches any.
    pub hosts: Vec<HostRule>,
    /// The return path's prefix (any of, normalized); empty matches any.
    pub paths: Vec<String>,
    /// The `login_hint` email's domain (any of, lower case); empty matches any.
    pub email_domains: Vec<String>,
}

/// Page templates read from `pages.dir` at start (each optional).
#[derive(Debug, Clone, Default)]
pub struct PagesConfig {
    /// `error.html`: `{{status}}`, `{{title}}`, `{{message}}`, `{{request_id}}`, `{{logo_url}}`.
    pub error: Option<String>,
    /// `signin.html`: `{{providers}}`, `{{email_form}}`, `{{logo_url}}`.
    pub signin: Option<String>,
    /// `signed-out.html`: `{{logo_url}}`.
    pub signed_out: Option<String>,
    /// `logo.svg` or `logo.png`, and its content type.
    pub logo: Option<(Vec<u8>, &'static str)>,
}

/// Local accounts: users with password hashes in a file, signing in on sidegate's own form
/// as the provider named `local`.
#[derive(Debug)]
pub struct LocalConfig {
    /// The users.
    pub users: Vec<LocalUser>,
    /// Failed sign-ins allowed per client address within `lockout`.
    pub max_failures: u32,
    /// How long a client address stays refused after `max_failures`.
    pub lockout: Duration,
}

/// One local user.
#[derive(Debug)]
pub struct LocalUser {
    /// Sign-in name (and subject).
    pub name: String,
    /// argon2 (PHC string) or bcrypt hash.
    pub password_hash: Secret,
    /// Email, if any.
    pub email: Option<String>,
    /// Role (one of `identity.roles`).
    pub role: String,
    /// Teams.
    pub teams: Vec<String>,
}

/// Per-route access rules, checked in order; the first route that matches decides.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// The routes, in order.
    pub routes: Vec<Route>,
    /// What unmatched requests need.
    pub default: DefaultAccess,
}

/// Access for requests no route matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefaultAccess {
    /// A valid credential (sidegate's behaviour without a policy).
    #[default]
    Authenticated,
    /// Refused (403) whoever asks.
    Deny,
}

/// One route: where it applies and what it needs.
#[derive(Debug, Clone)]
pub struct Route {
    /// Shown on the 403 page and in audit lines.
    pub name: String,
    /// Hosts (`app.example.com`, `*.example.com`); empty matches any.
    pub hosts: Vec<HostRule>,
    /// Normalized path prefixes, segment-aligned; empty matches any.
    pub paths: Vec<String>,
    /// Methods (upper case); empty matches any.
    pub methods: Vec<http::Method>,
    /// What it needs.
    pub access: RouteAccess,
    /// Request headers removed before forwarding (besides the identity set).
    pub strip_headers: Vec<HeaderName>,
    /// Request headers set before forwarding.
    pub add_headers: Vec<(HeaderName, http::HeaderValue)>,
    /// `aud` of the assertion on this route (else `assertion.audience`).
    pub audience: Option<String>,
}

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAccess {
    /// No credential (canonical paths only, like `access.public_paths`).
    Public,
    /// Any valid credential.
    Authenticated,
    /// A valid credential, no `deny` condition met, and (when `allow` is not empty) one
    /// `allow` condition met.
    Rules {
        /// Any one suffices.
        allow: Vec<Condition>,
        /// Any one refuses.
        deny: Vec<Condition>,
    },
    /// Refused whoever asks.
    Deny,
}

/// A condition over the identity: every field given must hold; each list is any-of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// One of these roles.
    pub roles: Vec<String>,
    /// One of these teams.
    pub teams: Vec<String>,
    /// Email in one of these domains (lower case).
    pub email_domains: Vec<String>,
    /// Signed in at one of these IdPs (their issuer or entity ID).
    pub idps: Vec<String>,
    /// Extra claim (`identity.extra` name) → accepted values (a list claim needs one of them).
    pub claims: Vec<(String, Vec<String>)>,
}

/// Who may pass without a session, and where redirects may go.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// Paths served without authentication.
    pub public_paths: Vec<PathRule>,
    /// Hosts allowed as login/logout return targets, besides `public_url`'s.
    pub allowed_redirect_hosts: Vec<HostRule>,
}

/// Whether connection threads are pinned to CPUs. Two always-busy threads the scheduler
/// puts on one core take turns a whole clock tick each, and every connection of the one
/// waiting waits with it; pinned, the session path's p99 at 64 connections fell by 28 %, and
/// at 256 and 1024 connections it was the same either way (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuAffinity {
    /// Pin thread i to the i-th CPU sidegate may use, but only when there are exactly as
    /// many of those CPUs as threads: then each thread has a core of its own. With more
    /// CPUs than threads (a container with a CPU quota on a big node) nothing is pinned,
    /// so replicas do not all crowd onto the node's first cores. The default.
    Auto,
    /// Leave placement to the kernel.
    Off,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, as `section.key`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.problem, self.fix)
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Parses and validates a configuration. `base_dir` resolves relative secret file paths.
pub fn load(text: &str, env: &Env, base_dir: &std::path::Path) -> Result<Config, ConfigError> {
    validate::load(text, env, base_dir)
}

impl Config {
    /// The effective configuration as TOML, secrets replaced by a description of their source.
    pub fn redacted_toml(&self) -> String {
        validate::describe(self)
    }
}
