//! SAML 2.0 service provider on samael: SP metadata, the AuthnRequest (HTTP-Redirect
//! binding, optionally signed), and the ACS check run off the async threads.
//!
//! The protocol check itself is `check::verify`, pure; this module owns the state around
//! it: samael's `ServiceProvider`, the assertion replay cache and the CPU budget for XML.

pub mod check;
pub mod logout;
pub mod metadata;
pub mod prescan;
pub mod redirect;
mod xmlsec_log;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use samael::service_provider::ServiceProvider;
use serde_json::{Map, Value};
use url::Url;

pub use self::check::{SamlError, Verified};
pub use self::metadata::{load as load_metadata, IdpMetadata, MetadataError};
use crate::config::{IdentityConfig, IdpSource, SamlConfig};
use crate::keys::{random_bytes, random_token};

/// Why the SAML service provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// samael could not produce the SP metadata.
    #[error("building SP metadata: {0}")]
    Metadata(String),
}

/// Why an AuthnRequest or LogoutRequest could not be made.
#[derive(Debug, thiserror::Error)]
#[error("building the SAML request: {0}")]
pub struct RequestError(String);

/// Why a logout message from the IdP was refused.
#[derive(Debug, thiserror::Error)]
pub enum SloError {
    /// The Redirect binding (encoding, size, signature).
    #[error(transparent)]
    Binding(#[from] redirect::BindingError),
    /// The message itself.
    #[error(transparent)]
    Message(#[from] logout::LogoutError),
    /// The IdP's metadata is not loaded.
    #[error("the IdP's metadata is not loaded")]
    NotReady,
    /// Not from our IdP.
    #[error("issuer {0:?} is not the IdP")]
    Issuer(Option<String>),
    /// Not addressed to our SLO endpoint.
    #[error("destination {0} is not our SLO endpoint")]
    Destination(String),
    /// Past its NotOnOrAfter.
    #[error("expired at {0}")]
    Expired(String),
}

impl SloError {
    /// A short stable code for audit lines.
    pub fn reason(&self) -> &'static str {
        match self {
            SloError::Binding(redirect::BindingError::Unsigned) => "unsigned",
            SloError::Binding(redirect::BindingError::BadSignature) => "signature",
            SloError::Binding(_) => "binding",
            SloError::Message(_) => "message",
            SloError::NotReady => "not_ready",
            SloError::Issuer(_) => "issuer",
            SloError::Destination(_) => "destination",
            SloError::Expired(_) => "expired",
        }
    }
}

/// The ACS POST, decoded.
pub struct AcsForm {
    /// The Response XML.
    pub xml: String,
    /// RelayState, if sent.
    pub relay_state: Option<String>,
}

/// Replay-cache expiry: each assertion ID lives until its own validity ends.
struct UntilValid;

impl moka::Expiry<String, Duration> for UntilValid {
    fn expire_after_create(
        &self,
        _key: &String,
        ttl: &Duration,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(*ttl)
    }
}

/// The IdP as currently known: its metadata and what is built from it. Swapped whole when
/// metadata fetched from a URL changes, so a check never mixes two versions.
pub struct Idp {
    /// The parsed, checked metadata.
    pub metadata: IdpMetadata,
    sp: ServiceProvider,
    verifier: Arc<check::Verifier>,
}

/// The configured SAML IdP and sidegate as its SP.
pub struct Saml {
    cfg: SamlConfig,
    urls: SpUrls,
    sp_metadata: Bytes,
    idp: std::sync::RwLock<Option<Arc<Idp>>>,
    used: moka::sync::Cache<String, Duration>,
    cpu: Arc<tokio::sync::Semaphore>,
}

/// Why the IdP cannot be used right now.
#[derive(Debug, thiserror::Error)]
#[error("the SAML IdP's metadata has not been loaded yet (see the log for why)")]
pub struct NotReady;

/// Public URLs of the SP endpoints.
pub struct SpUrls {
    /// `…/saml/metadata` (also the default entity ID).
    pub metadata: String,
    /// `…/saml/acs`.
    pub acs: String,
    /// `…/saml/slo`.
    pub slo: String,
}

impl SpUrls {
    /// The endpoints under `prefix` at `origin`.
    pub fn new(origin: &str, prefix: &str) -> Self {
        SpUrls {
            metadata: format!("{origin}{prefix}/saml/metadata"),
            acs: format!("{origin}{prefix}/saml/acs"),
            slo: format!("{origin}{prefix}/saml/slo"),
        }
    }
}

impl Saml {
    /// Builds the SP from the validated config. Metadata from a file is in use at once;
    /// metadata from a URL arrives with `keep_metadata_fresh`.
    pub fn new(cfg: SamlConfig, urls: SpUrls) -> Result<Self, SetupError> {
        xmlsec_log::install();
        let sp_metadata = sp_metadata_xml(&Self::base_sp(&cfg, &urls), cfg.sign_authn_requests)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let saml = Saml {
            sp_metadata,
            idp: std::sync::RwLock::new(None),
            used: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .expire_after(UntilValid)
                .build(),
            cpu: Arc::new(tokio::sync::Semaphore::new(cores)),
            urls,
            cfg,
        };
        if let IdpSource::File(m) = &saml.cfg.idp {
            saml.install((**m).clone());
        }
        Ok(saml)
    }

    /// samael's SP without IdP metadata.
    fn base_sp(cfg: &SamlConfig, urls: &SpUrls) -> ServiceProvider {
        ServiceProvider {
            entity_id: Some(cfg.sp_entity_id.clone()),
            key: cfg.sp_key.as_ref().map(|k| k.key.clone()),
            certificate: cfg.sp_key.as_ref().map(|k| k.cert_der.clone().into()),
            metadata_url: Some(urls.metadata.clone()),
            acs_url: Some(urls.acs.clone()),
            slo_url: Some(urls.slo.clone()),
            authn_name_id_format: cfg.name_id_format.clone(),
            ..ServiceProvider::default()
        }
    }

    /// Puts `metadata` in use for every later request.
    fn install(&self, metadata: IdpMetadata) {
        let mut sp = Self::base_sp(&self.cfg, &self.urls);
        sp.idp_metadata = metadata.descriptor().clone();
        let verifier = check::Verifier::new(
            sp.clone(),
            self.cfg.clock_skew,
            self.cfg.assertion_signature,
        );
        let idp = Arc::new(Idp {
            metadata,
            sp,
            verifier: Arc::new(verifier),
        });
        *self.idp.write().expect("IdP lock poisoned") = Some(idp);
    }

    /// The IdP in use, if its metadata is loaded.
    pub fn idp(&self) -> Result<Arc<Idp>, NotReady> {
        self.idp
            .read()
            .expect("IdP lock poisoned")
            .clone()
            .ok_or(NotReady)
    }

    /// Whether logins can start (metadata loaded).
    pub fn is_ready(&self) -> bool {
        self.idp().is_ok()
    }

    /// For metadata from a URL: fetches it until it loads (backoff with jitter), then
    /// refreshes it every `refresh`. A failed refresh keeps the metadata in use.
    pub async fn keep_metadata_fresh(self: Arc<Self>, http: super::idp_http::IdpHttp) {
        let IdpSource::Url { url, refresh } = &self.cfg.idp else {
            return;
        };
        let mut retry = Duration::from_millis(500);
        loop {
            let wait = match self.fetch_metadata(&http, url).await {
                Ok(m) => {
                    let changed = self.idp().map_or(true, |i| {
                        i.metadata.signing_certs != m.signing_certs
                            || i.metadata.entity_id != m.entity_id
                    });
                    tracing::info!(url = %url, entity = %m.entity_id, certs = m.signing_certs, changed, "SAML IdP metadata loaded");
                    self.install(m);
                    retry = Duration::from_millis(500);
                    *refresh
                }
                Err(e) => {
                    tracing::warn!(url = %url, error = %e, retry_in = ?retry, "SAML IdP metadata fetch failed; keeping what is in use");
                    let r = retry;
                    retry = (retry * 2).min(Duration::from_secs(60)).min(*refresh);
                    r + Duration::from_millis(u64::from(random_bytes::<1>()[0]) * 4)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn fetch_metadata(
        &self,
        http: &super::idp_http::IdpHttp,
        url: &Url,
    ) -> Result<IdpMetadata, String> {
        let req = http::Request::get(url.as_str())
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let resp = http.send(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let xml = String::from_utf8(resp.into_body()).map_err(|_| "not UTF-8".to_string())?;
        metadata::load(&xml, self.cfg.metadata_signing_cert.as_deref()).map_err(|e| e.to_string())
    }

    /// The validated config.
    pub fn config(&self) -> &SamlConfig {
        &self.cfg
    }

    /// SP metadata XML for the IdP administrator.
    pub fn sp_metadata(&self) -> Bytes {
        self.sp_metadata.clone()
    }

    /// A new AuthnRequest to the IdP (HTTP-Redirect binding), carrying `relay_state`.
    /// Returns the URL to send the browser to and the request ID to expect back.
    pub fn authn_request(&self, relay_state: &str) -> Result<(Url, String), RequestError> {
        let idp = self.idp().map_err(|e| RequestError(e.to_string()))?;
        let err = |e: Box<dyn std::error::Error>| RequestError(e.to_string());
        let mut req = idp
            .sp
            .make_authentication_request(idp.metadata.sso_redirect.as_str())
            .map_err(err)?;
        // samael's IDs carry 32 random bits; ours carry 160 (and start with a letter).
        req.id = format!("sg_{}", random_token::<20>());
        let url = match (&self.cfg.sp_key, self.cfg.sign_authn_requests) {
            (Some(k), true) => req.signed_redirect(relay_state, &k.key).map_err(err)?,
            _ => req.redirect(relay_state).map_err(err)?,
        }
        .ok_or_else(|| RequestError("no destination".into()))?;
        Ok((url, req.id))
    }

    /// Whether the IdP takes LogoutRequests (HTTP-Redirect binding).
    pub fn has_slo(&self) -> bool {
        self.idp().is_ok_and(|i| i.metadata.slo_redirect.is_some())
    }

    /// The IdP's entity ID, if its metadata is loaded.
    pub fn idp_entity_id(&self) -> Option<String> {
        self.idp().ok().map(|i| i.metadata.entity_id.clone())
    }

    /// A LogoutRequest for `name_id`'s IdP session, carrying `relay_state`: the URL to send
    /// the browser to, and the request ID the LogoutResponse must answer.
    pub fn logout_request(
        &self,
        name_id: &str,
        idp_session: &crate::session::IdpSession,
        relay_state: &str,
        now: SystemTime,
    ) -> Result<(Url, String), RequestError> {
        let idp = self.idp().map_err(|e| RequestError(e.to_string()))?;
        let dest = idp
            .metadata
            .slo_redirect
            .as_ref()
            .ok_or_else(|| RequestError("the IdP has no SLO endpoint".into()))?;
        let id = format!("sg_{}", random_token::<20>());
        let xml = logout::request_xml(
            &id,
            now.into(),
            dest.as_str(),
            &self.cfg.sp_entity_id,
            name_id,
            idp_session.name_id_format.as_deref(),
            &idp_session.session_index,
        );
        let url = redirect::encode(
            dest,
            redirect::Kind::Request,
            &xml,
            Some(relay_state),
            self.signing_key(),
        )
        .map_err(|e| RequestError(e.to_string()))?;
        Ok((url, id))
    }

    /// Our LogoutResponse to the IdP's request, as the URL to send the browser to.
    pub fn logout_response(
        &self,
        in_response_to: &str,
        status: &str,
        relay_state: Option<&str>,
        now: SystemTime,
    ) -> Result<Url, RequestError> {
        let idp = self.idp().map_err(|e| RequestError(e.to_string()))?;
        let dest = idp
            .metadata
            .slo_response
            .as_ref()
            .ok_or_else(|| RequestError("the IdP has no SLO endpoint".into()))?;
        let xml = logout::response_xml(
            &format!("sg_{}", random_token::<20>()),
            now.into(),
            dest.as_str(),
            &self.cfg.sp_entity_id,
            in_response_to,
            status,
        );
        redirect::encode(
            dest,
            redirect::Kind::Response,
            &xml,
            relay_state,
            self.signing_key(),
        )
        .map_err(|e| RequestError(e.to_string()))
    }

    fn signing_key(&self) -> Option<&openssl::pkey::PKey<openssl::pkey::Private>> {
        self.cfg.sp_key.as_ref().map(|k| &k.key)
    }

    fn check_sender(
        &self,
        idp: &Idp,
        issuer: Option<&str>,
        destination: Option<&str>,
    ) -> Result<(), SloError> {
        if issuer != Some(idp.metadata.entity_id.as_str()) {
            return Err(SloError::Issuer(issuer.map(str::to_string)));
        }
        match destination {
            Some(d) if d != self.urls.slo => Err(SloError::Destination(d.to_string())),
            _ => Ok(()),
        }
    }

    /// Reads the IdP's LogoutRequest from a raw query: it must be signed by a pinned key,
    /// come from the IdP, be addressed to us and not be expired.
    pub fn read_logout_request(
        &self,
        query: &str,
        now: SystemTime,
    ) -> Result<(logout::LogoutRequestIn, Option<String>), SloError> {
        let idp = self.idp().map_err(|_| SloError::NotReady)?;
        let m = redirect::decode(query, redirect::Kind::Request)?;
        redirect::verify(&m, &idp.metadata.signing_keys, true)?;
        let req = logout::parse_request(&m.xml)?;
        self.check_sender(&idp, Some(&req.issuer), req.destination.as_deref())?;
        if let Some(na) = req.not_on_or_after {
            let skew = chrono::Duration::from_std(self.cfg.clock_skew).unwrap_or_default();
            if chrono::DateTime::<chrono::Utc>::from(now) >= na + skew {
                return Err(SloError::Expired(na.to_rfc3339()));
            }
        }
        Ok((req, m.relay_state))
    }

    /// Reads the IdP's LogoutResponse from a raw query (a signature, when present, must
    /// verify; it only decides where the browser goes next).
    pub fn read_logout_response(
        &self,
        query: &str,
    ) -> Result<(logout::LogoutResponseIn, Option<String>), SloError> {
        let idp = self.idp().map_err(|_| SloError::NotReady)?;
        let m = redirect::decode(query, redirect::Kind::Response)?;
        redirect::verify(&m, &idp.metadata.signing_keys, false)?;
        let resp = logout::parse_response(&m.xml)?;
        self.check_sender(&idp, resp.issuer.as_deref(), resp.destination.as_deref())?;
        Ok((resp, m.relay_state))
    }

    /// Decodes an ACS POST body (`SAMLResponse`, `RelayState`).
    pub fn decode_form(&self, body: &[u8]) -> Result<AcsForm, SamlError> {
        let mut response = None;
        let mut relay_state = None;
        for (k, v) in url::form_urlencoded::parse(body) {
            match k.as_ref() {
                "SAMLResponse" if response.is_none() => response = Some(v.into_owned()),
                "RelayState" if relay_state.is_none() => relay_state = Some(v.into_owned()),
                "SAMLResponse" | "RelayState" => {
                    return Err(SamlError::Unreadable(format!("{k} sent twice")))
                }
                _ => {}
            }
        }
        let b64: String = response
            .ok_or_else(|| SamlError::Unreadable("no SAMLResponse".into()))?
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| SamlError::Unreadable(format!("SAMLResponse is not base64: {e}")))?;
        let xml = String::from_utf8(bytes)
            .map_err(|_| SamlError::Unreadable("SAMLResponse is not UTF-8".into()))?;
        Ok(AcsForm { xml, relay_state })
    }

    /// `check::verify` with this SP's verifier, on the calling thread (tests, fuzzing).
    pub fn check(
        &self,
        xml: &str,
        expected_request: Option<&str>,
        now: SystemTime,
    ) -> Result<Verified, SamlError> {
        let idp = self.idp().map_err(|_| SamlError::NotReady)?;
        check::verify(xml, &idp.verifier, expected_request, now)
    }

    /// Runs `check::verify` on the blocking pool, at most one per core at a time, so XML
    /// work never stalls the proxy's threads.
    pub async fn verify(
        &self,
        xml: String,
        expected_request: Option<String>,
        now: SystemTime,
    ) -> Result<Verified, SamlError> {
        let _permit = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let verifier = self
            .idp()
            .map_err(|_| SamlError::NotReady)?
            .verifier
            .clone();
        tokio::task::spawn_blocking(move || {
            check::verify(&xml, &verifier, expected_request.as_deref(), now)
        })
        .await
        .unwrap_or_else(|e| Err(SamlError::Unreadable(format!("check aborted: {e}"))))
    }

    /// Records the assertion as consumed; false if it was consumed before (a replay).
    pub fn first_use(&self, v: &Verified, now: SystemTime) -> bool {
        let ttl = (v.valid_until - crate::session::unix(now)).max(60) as u64;
        self.used
            .entry(v.assertion_id.clone())
            .or_insert_with(|| Duration::from_secs(ttl))
            .is_fresh()
    }

    /// The assertion as claims for `identity::resolve`: `sub` is the NameID, every
    /// attribute by name (one value: a string; several: a list).
    pub fn claims(v: &Verified) -> Map<String, Value> {
        let mut m = Map::new();
        for (name, values) in &v.attributes {
            let value = match values.as_slice() {
                [one] => Value::String(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::String).collect()),
            };
            m.insert(name.clone(), value);
        }
        m.insert("sub".into(), Value::String(v.name_id.clone()));
        m
    }

    /// The identity mapping for SAML: the shared rules with attribute names for claims.
    pub fn identity_config(&self, base: &IdentityConfig) -> IdentityConfig {
        let a = &self.cfg.attributes;
        let mut c = base.clone();
        c.user_claims = a.user.iter().cloned().chain(["sub".to_string()]).collect();
        c.email_claim = a.email.clone();
        c.role_claim = a.role.clone();
        c.teams_claim = a.teams.clone();
        c
    }
}

/// samael's SP metadata, corrected: the second key is for encryption, SLO uses the
/// Redirect binding, and AuthnRequestsSigned says what we do.
fn sp_metadata_xml(sp: &ServiceProvider, signs: bool) -> Result<Bytes, SetupError> {
    use samael::traits::ToXml;
    let err = |e: &dyn std::fmt::Display| SetupError::Metadata(e.to_string());
    let mut md = sp.metadata().map_err(|e| err(&e))?;
    md.valid_until = None;
    for d in md.sp_sso_descriptors.iter_mut().flatten() {
        d.valid_until = None;
        d.authn_requests_signed = Some(signs);
        if let Some(keys) = d.key_descriptors.as_mut() {
            if let Some(enc) = keys.get_mut(1) {
                enc.key_use = Some("encryption".into());
            }
        }
        for slo in d.single_logout_services.iter_mut().flatten() {
            slo.binding = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect".into();
        }
    }
    let xml = md.to_string().map_err(|e| err(&e))?;
    Ok(Bytes::from(xml))
}
