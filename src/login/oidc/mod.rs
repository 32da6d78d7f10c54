//! OIDC authorization code flow with PKCE: discovery and JWKS (cached, refreshed at most once
//! per interval on an unknown `kid`), the authorize redirect, the code exchange, the ID-token
//! check (`id_token`) and the optional userinfo call.

pub mod id_token;
pub mod logout_token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, Scope,
    TokenResponse,
};
use serde_json::{Map, Value};

use self::id_token::{Expect, IdTokenError};
use super::idp_http::IdpHttp;
use crate::config::OidcConfig;

/// Whether the token says the groups did not fit (`_claim_names.groups`, or `hasgroups`)
/// and carries none itself.
fn overage(claims: &Map<String, Value>) -> bool {
    !claims.contains_key("groups")
        && (claims
            .get("_claim_names")
            .and_then(|n| n.get("groups"))
            .is_some()
            || claims.get("hasgroups") == Some(&Value::Bool(true)))
}

/// A discovery document checked the way discovery must be: parsed, and its `issuer` exactly
/// the expected string (no trailing-slash leniency: tokens carry it byte for byte). Returns
/// the metadata and the `end_session_endpoint`, which openidconnect's type does not keep.
pub fn parse_discovery(
    body: &[u8],
    issuer: &str,
) -> Result<(CoreProviderMetadata, Option<url::Url>), String> {
    let metadata: CoreProviderMetadata =
        serde_json::from_slice(body).map_err(|e| format!("not a discovery document: {e}"))?;
    if metadata.issuer().as_str() != issuer {
        return Err(format!(
            "issuer `{}` is not the configured `{issuer}`",
            metadata.issuer().as_str()
        ));
    }
    let end_session = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("end_session_endpoint")?.as_str().map(str::to_string))
        .and_then(|s| url::Url::parse(&s).ok());
    Ok((metadata, end_session))
}

/// A finished code exchange.
pub struct Completed {
    /// The verified claims (userinfo merged when enabled).
    pub claims: Map<String, Value>,
    /// The refresh token, when refresh is on and one was issued.
    pub refresh_token: Option<String>,
    /// The raw ID token, kept as `id_token_hint` when the provider has RP-initiated logout
    /// (some, like Okta, require it there).
    pub id_token_hint: Option<String>,
}

fn hint(d: &Discovered, token: &openidconnect::core::CoreTokenResponse) -> Option<String> {
    d.end_session.as_ref()?;
    token.id_token().map(|t| t.to_string())
}

/// Why a refresh did not renew the session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    /// The provider said no (`invalid_grant`, a bad ID token): the session ends.
    #[error("refresh refused: {0}")]
    Rejected(String),
    /// The provider could not be asked: the session goes on as it is for now.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

/// Oldest `iat` a logout token may have.
const LOGOUT_TOKEN_MAX_AGE: Duration = Duration::from_secs(300);

/// Why the IdP part of a login failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Discovery has not succeeded yet (IdP unreachable since start-up).
    #[error("IdP discovery not loaded: {0}")]
    NotReady(String),
    /// The code exchange failed (bad code, IdP error, network).
    #[error("code exchange failed: {0}")]
    Exchange(String),
    /// The token response had no ID token.
    #[error("token response has no id_token")]
    NoIdToken,
    /// The ID token was refused.
    #[error("ID token refused: {0}")]
    IdToken(#[from] IdTokenError),
    /// The groups overflowed the token and the lookup failed.
    #[error("group overage lookup failed: {0}")]
    GroupOverage(String),
    /// A claim the provider's preset requires (Google `hd`, Entra `tid`) is missing or other.
    #[error("ID token claim `{0}` is not the required value")]
    RequiredClaim(String),
    /// The userinfo call failed or its `sub` differs.
    #[error("userinfo: {0}")]
    Userinfo(String),
}

/// Discovery metadata and keys as last fetched.
struct Discovered {
    metadata: CoreProviderMetadata,
    jwks: CoreJsonWebKeySet,
    /// The same keys for the logout-token check (jsonwebtoken's form).
    logout_keys: jsonwebtoken::jwk::JwkSet,
    /// RP-initiated logout, when the provider offers it.
    end_session: Option<url::Url>,
}

impl Discovered {
    fn new(
        metadata: CoreProviderMetadata,
        jwks: CoreJsonWebKeySet,
        end_session: Option<url::Url>,
    ) -> Self {
        let logout_keys = serde_json::to_vec(&jwks)
            .ok()
            .and_then(|b| crate::bearer::parse_jwks(&b).ok())
            .unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() });
        Discovered {
            metadata,
            jwks,
            logout_keys,
            end_session,
        }
    }
}

/// A login to send the browser to.
pub struct Authorize {
    /// The IdP URL with all parameters.
    pub url: String,
    /// Random state.
    pub state: String,
    /// Random nonce.
    pub nonce: String,
    /// PKCE verifier to keep for the exchange.
    pub pkce_verifier: Option<String>,
}

/// One OIDC provider.
pub struct Provider {
    cfg: OidcConfig,
    http: IdpHttp,
    redirect: RedirectUrl,
    issuer: IssuerUrl,
    client_id: ClientId,
    // moka's get-with coalesces concurrent fetches: a burst of callbacks makes one request.
    discovered: moka::future::Cache<(), Arc<Discovered>>,
    last_jwks_refresh: Mutex<Option<Instant>>,
}

impl Provider {
    /// Prepares the provider; nothing is fetched until `load` or the first login.
    pub fn new(cfg: OidcConfig, redirect_url: String) -> Self {
        // `Url` adds a `/` to a bare host; only a provider that publishes one keeps it.
        let text = if cfg.issuer_trailing_slash {
            cfg.issuer.as_str()
        } else {
            cfg.issuer.as_str().trim_end_matches('/')
        };
        let issuer = IssuerUrl::new(text.to_string()).expect("validated issuer URL");
        Provider {
            http: IdpHttp::new(cfg.http_timeout).with_headers(cfg.idp_headers.clone()),
            redirect: RedirectUrl::new(redirect_url).expect("redirect URL built from public_url"),
            client_id: ClientId::new(cfg.client_id.clone()),
            issuer,
            cfg,
            discovered: moka::future::Cache::builder().max_capacity(1).build(),
            last_jwks_refresh: Mutex::new(None),
        }
    }

    /// Whether discovery and keys are loaded (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.discovered.contains_key(&())
    }

    /// Fetches discovery and JWKS if not cached; concurrent callers share one fetch.
    pub async fn load(&self) -> Result<(), OidcError> {
        self.current().await.map(|_| ())
    }

    async fn current(&self) -> Result<Arc<Discovered>, OidcError> {
        self.discovered
            .try_get_with((), async {
                // Endpoints given by hand stand in for a discovery document.
                if let Some(ep) = &self.cfg.endpoints {
                    let doc = serde_json::json!({
                        "issuer": self.issuer.as_str(),
                        "authorization_endpoint": ep.authorization.as_str(),
                        "token_endpoint": ep.token.as_str(),
                        "userinfo_endpoint": ep.userinfo.as_ref().map(|u| u.as_str()),
                        "end_session_endpoint": ep.end_session.as_ref().map(|u| u.as_str()),
                        "jwks_uri": ep.jwks.as_str(),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported":
                            self.cfg.allowed_algs.iter().map(|a| a.name()).collect::<Vec<_>>(),
                    });
                    let (metadata, end_session) = parse_discovery(doc.to_string().as_bytes(), self.issuer.as_str())?;
                    let jwks = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
                        .await
                        .map_err(|e| crate::error::chain(&e))?;
                    tracing::info!(issuer = %self.issuer.as_str(), keys = jwks.keys().len(), "IdP endpoints (configured) and JWKS loaded");
                    return Ok(Arc::new(Discovered::new(metadata, jwks, end_session)));
                }
                // Read the document ourselves (openidconnect's discovery drops what it has no
                // field for, e.g. end_session_endpoint), then check it as discovery would.
                let url = format!("{}/.well-known/openid-configuration", self.issuer.as_str());
                let req = ::http::Request::get(&url)
                    .header("accept", "application/json")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                let resp = self.http.send(req).await.map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("{url}: status {}", resp.status()));
                }
                let (metadata, end_session) = parse_discovery(resp.body(), self.issuer.as_str())
                    .map_err(|e| format!("{url}: {e}"))?;
                let jwks = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
                    .await
                    .map_err(|e| crate::error::chain(&e))?;
                tracing::info!(issuer = %self.issuer.as_str(), keys = jwks.keys().len(), "IdP discovery and JWKS loaded");
                Ok::<_, String>(Arc::new(Discovered::new(metadata, jwks, end_session)))
            })
            .await
            .map_err(|e: Arc<String>| OidcError::NotReady(e.to_string()))
    }

    /// Refetches the JWKS, at most once per `jwks_min_refresh_interval`. Returns whether it did.
    async fn refresh_jwks(&self, d: &Discovered) -> Option<Arc<Discovered>> {
        {
            let mut last = self.last_jwks_refresh.lock().expect("lock");
            if last.is_some_and(|t| t.elapsed() < self.cfg.jwks_min_refresh_interval) {
                return None;
            }
            *last = Some(Instant::now());
        }
        match CoreJsonWebKeySet::fetch_async(d.metadata.jwks_uri(), &self.http).await {
            Ok(jwks) => {
                tracing::info!(
                    keys = jwks.keys().len(),
                    "JWKS refreshed after an unknown kid"
                );
                let fresh = Arc::new(Discovered::new(
                    d.metadata.clone(),
                    jwks,
                    d.end_session.clone(),
                ));
                self.discovered.insert((), fresh.clone()).await;
                Some(fresh)
            }
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "JWKS refresh failed");
                None
            }
        }
    }

    fn client(
        &self,
        d: &Discovered,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        let basic_ok = d
            .metadata
            .token_endpoint_auth_methods_supported()
            .is_none_or(|m| {
                m.contains(&openidconnect::core::CoreClientAuthMethod::ClientSecretBasic)
            });
        CoreClient::from_provider_metadata(
            d.metadata.clone(),
            self.client_id.clone(),
            Some(ClientSecret::new(
                self.cfg.client_secret.expose().to_string(),
            )),
        )
        .set_redirect_uri(self.redirect.clone())
        .set_auth_type(if basic_ok {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        })
    }

    /// Its name in the config.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The identity mapping for this provider's claims: `[identity]` with the preset's
    /// claim names where `[identity]` did not name them.
    pub fn identity_config<'a>(
        &self,
        base: &'a crate::config::IdentityConfig,
    ) -> std::borrow::Cow<'a, crate::config::IdentityConfig> {
        match &self.cfg.claims {
            None => std::borrow::Cow::Borrowed(base),
            Some(n) => {
                let mut c = base.clone();
                c.user_claims = n.user.clone();
                c.email_claim = n.email.clone();
                c.role_claim = n.role.clone();
                c.teams_claim = n.teams.clone();
                std::borrow::Cow::Owned(c)
            }
        }
    }

    /// How often sessions from this provider are refreshed, if at all.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.cfg.refresh_interval
    }

    /// Builds the authorize redirect with fresh state, nonce and PKCE challenge, passing on
    /// a `login_hint` when the user typed one on the chooser.
    pub async fn authorize(&self, login_hint: Option<&str>) -> Result<Authorize, OidcError> {
        let d = self.current().await?;
        let client = self.client(&d);
        let state = crate::keys::random_token::<32>();
        let nonce = crate::keys::random_token::<32>();
        let (s, n) = (state.clone(), nonce.clone());
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(s),
            move || Nonce::new(n),
        );
        for scope in self.cfg.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        for (k, v) in &self.cfg.extra_authorize_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        if let Some(hint) = login_hint {
            req = req.add_extra_param("login_hint", hint.to_string());
        }
        let mut pkce_verifier = None;
        if self.cfg.pkce {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            req = req.set_pkce_challenge(challenge);
            pkce_verifier = Some(verifier.secret().to_string());
        }
        let (url, _, _) = req.url();
        Ok(Authorize {
            url: url.to_string(),
            state,
            nonce,
            pkce_verifier,
        })
    }

    /// Exchanges the code and verifies the ID token; returns the verified claims (merged with
    /// userinfo when enabled) and the refresh token, when one was issued and refresh is on.
    pub async fn complete(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: Option<&str>,
        now: SystemTime,
    ) -> Result<Completed, OidcError> {
        let d = self.current().await?;
        let client = self.client(&d);
        let mut req = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?;
        if let Some(v) = pkce_verifier {
            req = req.set_pkce_verifier(PkceCodeVerifier::new(v.to_string()));
        }
        let token = req
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(crate::error::chain(&e)))?;
        let nonce = Nonce::new(nonce.to_string());
        let claims = self.checked_claims(&d, &token, Some(&nonce), now).await?;
        Ok(Completed {
            claims,
            refresh_token: self.kept_refresh_token(&token),
            id_token_hint: hint(&d, &token),
        })
    }

    /// Uses a refresh token: a new token response whose ID token (required, no nonce) must
    /// name the same subject. Returns the fresh claims and the refresh token to keep (the
    /// new one when the provider rotates, else the old one).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        subject: &str,
        now: SystemTime,
    ) -> Result<(Map<String, Value>, String, Option<String>), RefreshError> {
        let d = self
            .current()
            .await
            .map_err(|e| RefreshError::Unavailable(e.to_string()))?;
        let client = self.client(&d);
        let token = client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
            .map_err(|e| RefreshError::Rejected(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::Request(_) => {
                    RefreshError::Unavailable(crate::error::chain(&e))
                }
                other => RefreshError::Rejected(crate::error::chain(&other)),
            })?;
        let claims = self
            .checked_claims(&d, &token, None, now)
            .await
            .map_err(|e| RefreshError::Rejected(e.to_string()))?;
        if claims.get("sub").and_then(Value::as_str) != Some(subject) {
            return Err(RefreshError::Rejected(
                "the refreshed ID token names another subject".into(),
            ));
        }
        let kept = token
            .refresh_token()
            .map(|t| t.secret().to_string())
            .unwrap_or_else(|| refresh_token.to_string());
        Ok((claims, kept, hint(&d, &token)))
    }

    fn kept_refresh_token(&self, token: &openidconnect::core::CoreTokenResponse) -> Option<String> {
        self.cfg.refresh_interval?;
        token.refresh_token().map(|t| t.secret().to_string())
    }

    /// The ID token of a token response checked (and userinfo merged when enabled).
    async fn checked_claims(
        &self,
        d: &Discovered,
        token: &openidconnect::core::CoreTokenResponse,
        nonce: Option<&Nonce>,
        now: SystemTime,
    ) -> Result<Map<String, Value>, OidcError> {
        let raw = token.id_token().ok_or(OidcError::NoIdToken)?.to_string();
        let now: DateTime<Utc> = now.into();
        let expect = Expect {
            issuer: d.metadata.issuer(),
            client_id: &self.client_id,
            nonce,
            algs: &self.cfg.allowed_algs,
            skew: self.cfg.clock_skew,
        };
        let mut claims: Map<String, Value> = match id_token::verify(&raw, &d.jwks, &expect, now) {
            Err(IdTokenError::UnknownKey) => match self.refresh_jwks(d).await {
                Some(fresh) => id_token::verify(&raw, &fresh.jwks, &expect, now)?,
                None => return Err(IdTokenError::UnknownKey.into()),
            },
            other => other?,
        };
        if let Some(graph) = &self.cfg.group_overage {
            if overage(&claims) {
                let groups = self
                    .member_objects(graph, token.access_token().secret())
                    .await?;
                claims.insert("groups".into(), Value::Array(groups));
            }
        }
        for (name, want) in &self.cfg.required_claims {
            if claims.get(name).and_then(Value::as_str) != Some(want.as_str()) {
                return Err(OidcError::RequiredClaim(name.clone()));
            }
        }
        if self.cfg.userinfo {
            let info = self.userinfo(d, token.access_token().secret()).await?;
            if info.get("sub") != claims.get("sub") {
                return Err(OidcError::Userinfo(
                    "sub differs from the ID token's".into(),
                ));
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(claims)
    }

    /// The user's group ids from Microsoft Graph (`getMemberObjects`), for a token whose
    /// groups overflowed. Any failure is an error: "no teams" would be a silent downgrade.
    async fn member_objects(
        &self,
        url: &url::Url,
        access_token: &str,
    ) -> Result<Vec<Value>, OidcError> {
        let req = ::http::Request::post(url.as_str())
            .header("authorization", format!("Bearer {access_token}"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(br#"{"securityEnabledOnly":false}"#.to_vec())
            .map_err(|e| OidcError::GroupOverage(e.to_string()))?;
        let resp = self
            .http
            .send(req)
            .await
            .map_err(|e| OidcError::GroupOverage(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(OidcError::GroupOverage(format!("status {}", resp.status())));
        }
        match serde_json::from_slice::<Value>(resp.body()) {
            Ok(v) => match v.get("value").and_then(Value::as_array) {
                Some(ids) if ids.iter().all(Value::is_string) => Ok(ids.clone()),
                _ => Err(OidcError::GroupOverage("no `value` list of ids".into())),
            },
            Err(e) => Err(OidcError::GroupOverage(format!("not JSON: {e}"))),
        }
    }

    async fn userinfo(
        &self,
        d: &Discovered,
        access_token: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let url = d
            .metadata
            .userinfo_endpoint()
            .ok_or_else(|| OidcError::Userinfo("IdP has no userinfo endpoint".into()))?;
        let req = ::http::Request::get(url.as_str())
            .header("authorization", format!("Bearer {access_token}"))
            .header("accept", "application/json")
            .body(Vec::new())
            .map_err(|e| OidcError::Userinfo(e.to_string()))?;
        let resp = self
            .http
            .send(req)
            .await
            .map_err(|e| OidcError::Userinfo(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(OidcError::Userinfo(format!("status {}", resp.status())));
        }
        match serde_json::from_slice(resp.body()) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(OidcError::Userinfo(
                "not a JSON object (signed userinfo is not supported)".into(),
            )),
        }
    }

    /// The issuer as configured (recorded in sessions).
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// The RP-initiated logout URL (`end_session_endpoint` with our client id, where to come
    /// back and `state`), when the provider has one and discovery is loaded.
    pub async fn end_session_url(
        &self,
        post_logout: &str,
        state: &str,
        id_token_hint: Option<&str>,
    ) -> Option<String> {
        let d = self.discovered.get(&()).await?;
        let mut url = d.end_session.clone()?;
        if let Some(h) = id_token_hint {
            url.query_pairs_mut().append_pair("id_token_hint", h);
        }
        url.query_pairs_mut()
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("post_logout_redirect_uri", post_logout)
            .append_pair("state", state);
        Some(url.into())
    }

    /// Checks a back-channel logout token (one refresh of the keys on an unknown `kid`; each
    /// `jti` once).
    pub async fn verify_logout_token(
        &self,
        store: &crate::store::Shared,
        raw: &str,
        now: i64,
    ) -> Result<logout_token::LogoutToken, String> {
        let d = self.current().await.map_err(|e| e.to_string())?;
        let expect = logout_token::Expect {
            issuer: d.metadata.issuer().as_str(),
            client_id: &self.cfg.client_id,
            algs: &self.cfg.allowed_algs,
            skew: self.cfg.clock_skew,
            max_age: LOGOUT_TOKEN_MAX_AGE,
        };
        let unknown_key =
            logout_token::LogoutTokenError::Token(crate::bearer::token::TokenError::UnknownKey);
        let t = match logout_token::verify(raw, &d.logout_keys, &expect, now) {
            Err(e) if e == unknown_key => match self.refresh_jwks(&d).await {
                Some(fresh) => logout_token::verify(raw, &fresh.logout_keys, &expect, now),
                None => Err(e),
            },
            other => other,
        }
        .map_err(|e| e.to_string())?;
        let jti = format!("{}\u{0}{}", self.issuer(), t.jti);
        match crate::store::first_use(store, "jti", &jti, LOGOUT_TOKEN_MAX_AGE * 2).await {
            Ok(true) => Ok(t),
            Ok(false) => Err("logout token replayed (jti seen before)".into()),
            Err(e) => Err(format!("logout token's jti could not be recorded: {e}")),
        }
    }

    /// Retries discovery with backoff until it succeeds or `stop` resolves.
    pub async fn load_with_retry(self: Arc<Self>) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.load().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "IdP discovery failed; logins answer 503 until it succeeds");
                    let jitter =
                        Duration::from_millis(u64::from(crate::keys::random_bytes::<1>()[0]) * 4);
                    tokio::time::sleep(delay + jitter).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
