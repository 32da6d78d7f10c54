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

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use samael::service_provider::ServiceProvider;
use serde_json::{Map, Value};
use url::Url;

pub use self::check::{SamlError, Verified};
pub use self::metadata::{IdpMetadata, MetadataError};
use crate::config::{IdentityConfig, SamlConfig};
use crate::keys::random_token;

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

/// The configured SAML IdP and sidegate as its SP.
pub struct Saml {
    cfg: SamlConfig,
    slo_url: String,
    sp: ServiceProvider,
    verifier: Arc<check::Verifier>,
    sp_metadata: Bytes,
    used: moka::sync::Cache<String, Duration>,
    cpu: Arc<tokio::sync::Semaphore>,
}

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
    /// Builds samael's SP and our verifier from the validated config.
    pub fn new(cfg: SamlConfig, urls: SpUrls) -> Result<Self, SetupError> {
        let sp = ServiceProvider {
            entity_id: Some(cfg.sp_entity_id.clone()),
            key: cfg.sp_key.as_ref().map(|k| k.key.clone()),
            certificate: cfg.sp_key.as_ref().map(|k| k.cert_der.clone().into()),
            metadata_url: Some(urls.metadata.clone()),
            acs_url: Some(urls.acs.clone()),
            slo_url: Some(urls.slo.clone()),
            idp_metadata: cfg.idp.descriptor().clone(),
            authn_name_id_format: cfg.name_id_format.clone(),
            ..ServiceProvider::default()
        };
        let sp_metadata = sp_metadata_xml(&sp, cfg.sign_authn_requests)?;
        let verifier = check::Verifier::new(sp.clone(), cfg.clock_skew, cfg.assertion_signature);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Saml {
            slo_url: urls.slo.clone(),
            sp,
            verifier: Arc::new(verifier),
            sp_metadata,
            used: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .expire_after(UntilValid)
                .build(),
            cpu: Arc::new(tokio::sync::Semaphore::new(cores)),
            cfg,
        })
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
        let err = |e: Box<dyn std::error::Error>| RequestError(e.to_string());
        let mut req = self
            .sp
            .make_authentication_request(self.cfg.idp.sso_redirect.as_str())
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
        self.cfg.idp.slo_redirect.is_some()
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
        let dest = self
            .cfg
            .idp
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
        let dest = self
            .cfg
            .idp
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

    fn from_idp(&self, issuer: Option<&str>, destination: Option<&str>) -> Result<(), SloError> {
        if issuer != Some(self.cfg.idp.entity_id.as_str()) {
            return Err(SloError::Issuer(issuer.map(str::to_string)));
        }
        match destination {
            Some(d) if d != self.slo_url => Err(SloError::Destination(d.to_string())),
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
        let m = redirect::decode(query, redirect::Kind::Request)?;
        redirect::verify(&m, &self.cfg.idp.signing_keys, true)?;
        let req = logout::parse_request(&m.xml)?;
        self.from_idp(Some(&req.issuer), req.destination.as_deref())?;
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
        let m = redirect::decode(query, redirect::Kind::Response)?;
        redirect::verify(&m, &self.cfg.idp.signing_keys, false)?;
        let resp = logout::parse_response(&m.xml)?;
        self.from_idp(resp.issuer.as_deref(), resp.destination.as_deref())?;
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
        check::verify(xml, &self.verifier, expected_request, now)
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
        let verifier = self.verifier.clone();
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
