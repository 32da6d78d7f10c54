//! The configuration exactly as written: TOML (plus `SIDEGATE_*` overrides) deserialized into
//! plain structs, no validation, no IO. `validate` turns it into the typed `Config`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The whole file. Every section is optional so that one missing section is reported
/// with the rest instead of stopping the parse.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Raw {
    pub server: Server,
    pub upstream: Option<Upstream>,
    pub oidc: Option<Oidc>,
    pub saml: Option<Saml>,
    pub bearer: Option<Bearer>,
    pub session: Session,
    pub assertion: Assertion,
    pub identity: Identity,
    pub headers: Headers,
    pub access: Access,
    pub policy: Policy,
    pub login: Login,
    pub local: Option<Local>,
    pub pages: Pages,
    pub log: Log,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Pages {
    pub dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Local {
    pub users_file: Option<String>,
    #[serde(deserialize_with = "whole_number")]
    pub max_failures: Option<u32>,
    pub lockout: Option<String>,
}

/// The local users file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalUsers {
    pub users: Vec<LocalUser>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalUser {
    pub name: Option<String>,
    pub password_hash: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub teams: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Login {
    pub chooser: Option<bool>,
    pub rules: Vec<LoginRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginRule {
    pub provider: Option<String>,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub email_domains: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub default: Option<String>,
    pub routes: Vec<PolicyRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PolicyRoute {
    pub name: Option<String>,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub access: Option<String>,
    pub allow: Vec<PolicyCondition>,
    pub deny: Vec<PolicyCondition>,
    pub strip_headers: Vec<String>,
    pub add_headers: BTreeMap<String, String>,
    pub audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PolicyCondition {
    pub roles: Vec<String>,
    pub teams: Vec<String>,
    pub email_domains: Vec<String>,
    pub idps: Vec<String>,
    pub claims: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Server {
    pub listen: Vec<String>,
    pub admin_listen: Option<String>,
    pub public_url: Option<String>,
    pub prefix: Option<String>,
    pub trusted_proxies: Vec<String>,
    pub tls: Option<Tls>,
    pub header_read_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    #[serde(deserialize_with = "whole_number")]
    pub max_connections: Option<usize>,
    #[serde(deserialize_with = "whole_number")]
    pub threads: Option<usize>,
    pub cpu_affinity: Option<String>,
    #[serde(deserialize_with = "whole_number")]
    pub login_rate_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Tls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Upstream {
    pub url: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub pass_host_header: Option<bool>,
    #[serde(deserialize_with = "whole_number")]
    pub max_idle_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Oidc {
    // The first provider, written directly in [oidc] (named by `name`, default "oidc").
    // Spelled out rather than flattened, so that typos are reported (see `Saml`).
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub extra_authorize_params: BTreeMap<String, String>,
    pub pkce: Option<bool>,
    pub clock_skew: Option<String>,
    pub allowed_algs: Option<Vec<String>>,
    pub userinfo: Option<bool>,
    pub http_timeout: Option<String>,
    pub jwks_min_refresh_interval: Option<String>,
    pub refresh_interval: Option<String>,
    pub preset: Option<String>,
    pub hosted_domain: Option<String>,
    pub tenant: Option<String>,
    pub domain: Option<String>,
    pub authorization_server: Option<String>,
    pub base_url: Option<String>,
    pub realm: Option<String>,
    pub claims_namespace: Option<String>,
    pub required_claims: BTreeMap<String, String>,
    pub group_overage: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub idp_headers_env: Option<String>,
    // More providers: [oidc.providers.<name>].
    pub providers: BTreeMap<String, OidcProvider>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct OidcProvider {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub extra_authorize_params: BTreeMap<String, String>,
    pub pkce: Option<bool>,
    pub clock_skew: Option<String>,
    pub allowed_algs: Option<Vec<String>>,
    pub userinfo: Option<bool>,
    pub http_timeout: Option<String>,
    pub jwks_min_refresh_interval: Option<String>,
    pub refresh_interval: Option<String>,
    pub preset: Option<String>,
    pub hosted_domain: Option<String>,
    pub tenant: Option<String>,
    pub domain: Option<String>,
    pub authorization_server: Option<String>,
    pub base_url: Option<String>,
    pub realm: Option<String>,
    pub claims_namespace: Option<String>,
    pub required_claims: BTreeMap<String, String>,
    pub group_overage: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub idp_headers_env: Option<String>,
}

impl Oidc {
    /// The inline provider's keys, in the shape of a named one.
    pub fn inline(&self) -> OidcProvider {
        OidcProvider {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            client_secret_file: self.client_secret_file.clone(),
            client_secret_env: self.client_secret_env.clone(),
            scopes: self.scopes.clone(),
            extra_authorize_params: self.extra_authorize_params.clone(),
            pkce: self.pkce,
            clock_skew: self.clock_skew.clone(),
            allowed_algs: self.allowed_algs.clone(),
            userinfo: self.userinfo,
            http_timeout: self.http_timeout.clone(),
            jwks_min_refresh_interval: self.jwks_min_refresh_interval.clone(),
            refresh_interval: self.refresh_interval.clone(),
            preset: self.preset.clone(),
            hosted_domain: self.hosted_domain.clone(),
            tenant: self.tenant.clone(),
            domain: self.domain.clone(),
            authorization_server: self.authorization_server.clone(),
            base_url: self.base_url.clone(),
            realm: self.realm.clone(),
            claims_namespace: self.claims_namespace.clone(),
            required_claims: self.required_claims.clone(),
            group_overage: self.group_overage.clone(),
            authorization_endpoint: self.authorization_endpoint.clone(),
            token_endpoint: self.token_endpoint.clone(),
            userinfo_endpoint: self.userinfo_endpoint.clone(),
            jwks_uri: self.jwks_uri.clone(),
            end_session_endpoint: self.end_session_endpoint.clone(),
            idp_headers_env: self.idp_headers_env.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Session {
    pub cookie_name: Option<String>,
    pub secrets: Option<String>,
    pub secrets_file: Option<String>,
    pub secrets_env: Option<String>,
    pub absolute_lifetime: Option<String>,
    pub idle_lifetime: Option<String>,
    pub cookie_secure: Option<bool>,
    pub cookie_domain: Option<String>,
    pub same_site: Option<String>,
    pub login_lifetime: Option<String>,
    pub store: Option<String>,
    pub login_transactions: Option<String>,
    pub redis: Option<Redis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Redis {
    pub url: Option<String>,
    pub sentinels: Vec<String>,
    pub master_name: Option<String>,
    pub cluster: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Assertion {
    pub signing_keys: Option<String>,
    pub signing_keys_file: Option<String>,
    pub signing_keys_env: Option<String>,
    pub audience: Option<String>,
    pub lifetime: Option<String>,
    pub compat_headers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Bearer {
    pub issuers: Vec<BearerIssuer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BearerIssuer {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_url: Option<String>,
    pub allowed_algs: Option<Vec<String>>,
    pub token_types: Option<Vec<String>>,
    pub clock_skew: Option<String>,
    pub jwks_min_refresh_interval: Option<String>,
    pub refresh_interval: Option<String>,
    pub preset: Option<String>,
    pub hosted_domain: Option<String>,
    pub tenant: Option<String>,
    pub domain: Option<String>,
    pub authorization_server: Option<String>,
    pub base_url: Option<String>,
    pub realm: Option<String>,
    pub claims_namespace: Option<String>,
    pub required_claims: BTreeMap<String, String>,
    pub group_overage: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub idp_headers_env: Option<String>,
    pub http_timeout: Option<String>,
    pub introspection: Option<bool>,
    pub introspection_url: Option<String>,
    pub introspection_client_id: Option<String>,
    pub introspection_client_secret: Option<String>,
    pub introspection_client_secret_file: Option<String>,
    pub introspection_client_secret_env: Option<String>,
    pub cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub user_claims: Option<Vec<String>>,
    pub email_claim: Option<String>,
    pub role_claim: Option<String>,
    pub roles: Vec<String>,
    pub role_map: BTreeMap<String, String>,
    pub default_role: Option<String>,
    pub teams_claim: Option<String>,
    pub allowed_email_domains: Vec<String>,
    pub role_rules: Vec<RoleRule>,
    pub teams_prefix: Option<String>,
    pub teams_strip_prefix: Option<bool>,
    pub teams_rename: BTreeMap<String, String>,
    pub teams_allow: Vec<String>,
    pub extra: Vec<ExtraClaim>,
    pub sample: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoleRule {
    pub role: Option<String>,
    pub teams: Vec<String>,
    pub claim: Option<String>,
    pub values: Vec<String>,
    pub email_domains: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExtraClaim {
    pub name: Option<String>,
    pub claim: Option<String>,
    pub header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Headers {
    pub user: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub teams: Option<String>,
    pub assertion: Option<String>,
    pub strip: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Access {
    pub public_paths: Vec<String>,
    pub allowed_redirect_hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Log {
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Saml {
    // The SP, shared by every IdP.
    pub sp_entity_id: Option<String>,
    pub sp_key_file: Option<String>,
    pub sp_cert_file: Option<String>,
    pub sign_authn_requests: Option<bool>,
    pub name_id_format: Option<String>,
    #[serde(deserialize_with = "whole_number")]
    pub max_response_bytes: Option<usize>,
    // The first IdP, written directly in [saml] (named by `name`, default "default").
    // Spelled out, not `#[serde(flatten)] SamlIdp`: flatten hides unknown keys from
    // serde_ignored, and a typo in [saml] must be reported.
    pub name: Option<String>,
    pub idp_metadata_file: Option<String>,
    pub idp_metadata_url: Option<String>,
    pub idp_metadata_refresh: Option<String>,
    pub idp_metadata_signing_cert_file: Option<String>,
    pub preset: Option<String>,
    pub attributes: SamlAttributes,
    pub clock_skew: Option<String>,
    pub idp_initiated: Option<String>,
    pub idp_initiated_landing: Option<String>,
    pub assertion_signature: Option<String>,
    // More IdPs: [saml.idps.<name>].
    pub idps: BTreeMap<String, SamlIdp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SamlIdp {
    pub idp_metadata_file: Option<String>,
    pub idp_metadata_url: Option<String>,
    pub idp_metadata_refresh: Option<String>,
    pub idp_metadata_signing_cert_file: Option<String>,
    pub preset: Option<String>,
    pub attributes: SamlAttributes,
    pub clock_skew: Option<String>,
    pub idp_initiated: Option<String>,
    pub idp_initiated_landing: Option<String>,
    pub assertion_signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SamlAttributes {
    pub user: Option<Vec<String>>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub teams: Option<String>,
}

/// A whole number, written as one or as text: an environment override is always text
/// (`SIDEGATE_SERVER__THREADS=4`), and only these fields say a number is meant.
fn whole_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + std::str::FromStr,
{
    struct Visit<T>(std::marker::PhantomData<T>);
    impl<T: TryFrom<u64> + std::str::FromStr> serde::de::Visitor<'_> for Visit<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
            T::try_from(n)
                .map(Some)
                .map_err(|_| E::custom(format!("{n} is too large")))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
            let n = u64::try_from(n).map_err(|_| E::custom(format!("{n} is negative")))?;
            self.visit_u64(n)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            s.parse()
                .map(Some)
                .map_err(|_| E::custom(format!("\"{s}\" is not a whole number")))
        }
    }
    d.deserialize_any(Visit(std::marker::PhantomData))
}
