//! OIDC authorization code flow with PKCE: discovery and JWKS (cached, refreshed at most once
//! per interval on an unknown `kid`), the authorize redirect, the code exchange, the ID-token
//! check (`id_token`) and the optional userinfo call.

pub mod id_token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{Map, Value};

use self::id_token::{Expect, IdTokenError};
use super::idp_http::IdpHttp;
use crate::config::OidcConfig;

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
    /// The userinfo call failed or its `sub` differs.
    #[error("userinfo: {0}")]
    Userinfo(String),
}

/// Discovery metadata and keys as last fetched.
struct Discovered {
    metadata: CoreProviderMetadata,
    jwks: CoreJsonWebKeySet,
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
        let issuer = IssuerUrl::new(cfg.issuer.as_str().trim_end_matches('/').to_string())
            .expect("validated issuer URL");
        Provider {
            http: IdpHttp::new(cfg.http_timeout),
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
                let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
                    .await
                    .map_err(|e| crate::error::chain(&e))?;
                let jwks = metadata.jwks().clone();
                tracing::info!(issuer = %self.issuer.as_str(), keys = jwks.keys().len(), "IdP discovery and JWKS loaded");
                Ok::<_, String>(Arc::new(Discovered { metadata, jwks }))
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
                let fresh = Arc::new(Discovered {
                    metadata: d.metadata.clone(),
                    jwks,
                });
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
    /// userinfo when enabled) and the issuer.
    pub async fn complete(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: Option<&str>,
        now: SystemTime,
    ) -> Result<Map<String, Value>, OidcError> {
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
        let raw = token.id_token().ok_or(OidcError::NoIdToken)?.to_string();
        let nonce = Nonce::new(nonce.to_string());
        let now: DateTime<Utc> = now.into();
        let expect = Expect {
            issuer: d.metadata.issuer(),
            client_id: &self.client_id,
            nonce: &nonce,
            algs: &self.cfg.allowed_algs,
            skew: self.cfg.clock_skew,
        };
        let mut claims = match id_token::verify(&raw, &d.jwks, &expect, now) {
            Err(IdTokenError::UnknownKey) => match self.refresh_jwks(&d).await {
                Some(fresh) => id_token::verify(&raw, &fresh.jwks, &expect, now)?,
                None => return Err(IdTokenError::UnknownKey.into()),
            },
            other => other?,
        };
        if self.cfg.userinfo {
            let info = self.userinfo(&d, token.access_token().secret()).await?;
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
