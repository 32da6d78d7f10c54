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
use crate::config::{
    IdentityConfig, IdpInitiated, IdpSource, SamlAttributes, SamlConfig, SamlIdpConfig,
};
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

/// One IdP as currently known: its metadata and what is built from it. Swapped whole when
/// metadata fetched from a URL changes, so a check never mixes two versions.
pub struct Idp {
    /// Its name in sidegate.
    pub name: String,
    /// The parsed, checked metadata.
    pub metadata: IdpMetadata,
    sp: ServiceProvider,
    verifier: Arc<check::Verifier>,
    attributes: SamlAttributes,
    idp_initiated: IdpInitiated,
    landing: String,
}

impl Idp {
    /// How unsolicited responses from this IdP are handled.
    pub fn idp_initiated(&self) -> IdpInitiated {
        self.idp_initiated
    }

    /// Where IdP-initiated logins land when RelayState is not an allowed return URL.
    pub fn landing(&self) -> &str {
        &self.landing
    }

    /// Whether the IdP takes LogoutRequests (HTTP-Redirect binding).
    pub fn has_slo(&self) -> bool {
        self.metadata.slo_redirect.is_some()
    }

    /// The identity mapping for this IdP: the shared rules with its attribute names.
    pub fn identity_config(&self, base: &IdentityConfig) -> IdentityConfig {
        let a = &self.attributes;
        let mut c = base.clone();
        c.user_claims = a.user.iter().cloned().chain(["sub".to_string()]).collect();
        c.email_claim = a.email.clone();
        c.role_claim = a.role.clone();
        c.teams_claim = a.teams.clone();
        c
    }
}

/// A configured IdP and its current state (`None` until its metadata loads).
struct Slot {
    cfg: SamlIdpConfig,
    state: std::sync::RwLock<Option<Arc<Idp>>>,
}

/// sidegate as a SAML SP and the IdPs it trusts.
pub struct Saml {
    cfg: SamlConfig,
    urls: SpUrls,
    sp_metadata: Bytes,
    slots: Vec<Slot>,
    cpu: Arc<tokio::sync::Semaphore>,
}

/// Why an IdP cannot be used right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No IdP has that name.
    #[error("no SAML IdP is named `{0}`")]
    Unknown(String),
    /// Its metadata has not loaded (yet).
    #[error("the metadata of SAML IdP `{0}` has not been loaded yet (see the log for why)")]
    NotLoaded(String),
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
    /// Builds the SP from the validated config. Metadata from files is in use at once;
    /// metadata from URLs arrives with `keep_metadata_fresh`.
    pub fn new(mut cfg: SamlConfig, urls: SpUrls) -> Result<Self, SetupError> {
        xmlsec_log::install();
        let sp_metadata = sp_metadata_xml(&Self::base_sp(&cfg, &urls), cfg.sign_authn_requests)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let slots = std::mem::take(&mut cfg.idps)
            .into_iter()
            .map(|c| Slot {
                cfg: c,
                state: std::sync::RwLock::new(None),
            })
            .collect();
        let saml = Saml {
            sp_metadata,
            slots,
            cpu: Arc::new(tokio::sync::Semaphore::new(cores)),
            urls,
            cfg,
        };
        for slot in &saml.slots {
            if let IdpSource::File(m) = &slot.cfg.idp {
                saml.install(slot, (**m).clone());
            }
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

    /// Puts `metadata` in use for every later request to `slot`'s IdP.
    fn install(&self, slot: &Slot, metadata: IdpMetadata) {
        let c = &slot.cfg;
        let mut sp = Self::base_sp(&self.cfg, &self.urls);
        sp.idp_metadata = metadata.descriptor().clone();
        let verifier = check::Verifier::new(sp.clone(), c.clock_skew, c.assertion_signature);
        let idp = Arc::new(Idp {
            name: c.name.clone(),
            metadata,
            sp,
            verifier: Arc::new(verifier),
            attributes: c.attributes.clone(),
            idp_initiated: c.idp_initiated,
            landing: c.idp_initiated_landing.clone(),
        });
        *slot.state.write().expect("IdP lock poisoned") = Some(idp);
    }

    fn loaded(slot: &Slot) -> Option<Arc<Idp>> {
        slot.state.read().expect("IdP lock poisoned").clone()
    }

    /// The IdP named `name` (the default one, listed first, for `None`).
    pub fn idp(&self, name: Option<&str>) -> Result<Arc<Idp>, Unavailable> {
        let slot = match name {
            None => self.slots.first(),
            Some(n) => self.slots.iter().find(|s| s.cfg.name == n),
        }
        .ok_or_else(|| Unavailable::Unknown(name.unwrap_or("").to_string()))?;
        Self::loaded(slot).ok_or_else(|| Unavailable::NotLoaded(slot.cfg.name.clone()))
    }

    /// The loaded IdP whose entity ID is `entity`.
    pub fn idp_by_entity(&self, entity: &str) -> Option<Arc<Idp>> {
        self.slots
            .iter()
            .filter_map(Self::loaded)
            .find(|i| i.metadata.entity_id == entity)
    }

    /// Whether every configured IdP's metadata is loaded.
    pub fn is_ready(&self) -> bool {
        self.slots.iter().all(|s| Self::loaded(s).is_some())
    }

    /// For metadata from URLs: fetches each until it loads (backoff with jitter), then
    /// refreshes it at its interval. A failed refresh keeps the metadata in use.
    pub async fn keep_metadata_fresh(self: Arc<Self>, http: super::idp_http::IdpHttp) {
        let loops = self.slots.iter().map(|slot| self.refresh_loop(slot, &http));
        futures_util::future::join_all(loops).await;
    }

    async fn refresh_loop(&self, slot: &Slot, http: &super::idp_http::IdpHttp) {
        let IdpSource::Url { url, refresh } = &slot.cfg.idp else {
            return;
        };
        let name = &slot.cfg.name;
        let mut retry = Duration::from_millis(500);
        loop {
            let wait = match self.fetch_metadata(slot, http, url).await {
                Ok(m) => {
                    tracing::info!(idp = %name, url = %url, entity = %m.entity_id, certs = m.signing_certs, "SAML IdP metadata loaded");
                    self.install(slot, m);
                    retry = Duration::from_millis(500);
                    *refresh
                }
                Err(e) => {
                    tracing::warn!(idp = %name, url = %url, error = %e, retry_in = ?retry, "SAML IdP metadata fetch failed; keeping what is in use");
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
        slot: &Slot,
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
        metadata::load(&xml, slot.cfg.metadata_signing_cert.as_deref()).map_err(|e| e.to_string())
    }

    /// The SP-wide config.
    pub fn config(&self) -> &SamlConfig {
        &self.cfg
    }

    /// SP metadata XML for the IdP administrators.
    pub fn sp_metadata(&self) -> Bytes {
        self.sp_metadata.clone()
    }

    /// A new AuthnRequest to `idp` (HTTP-Redirect binding), carrying `relay_state`.
    /// Returns the URL to send the browser to and the request ID to expect back.
    pub fn authn_request(
        &self,
        idp: &Idp,
        relay_state: &str,
    ) -> Result<(Url, String), RequestError> {
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

    /// A LogoutRequest to `idp` for `name_id`'s IdP session, carrying `relay_state`: the
    /// URL to send the browser to, and the request ID the LogoutResponse must answer.
    pub fn logout_request(
        &self,
        idp: &Idp,
        name_id: &str,
        idp_session: &crate::session::IdpSession,
        relay_state: &str,
        now: SystemTime,
    ) -> Result<(Url, String), RequestError> {
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

    /// Our LogoutResponse to `idp`'s request, as the URL to send the browser to.
    pub fn logout_response(
        &self,
        idp: &Idp,
        in_response_to: &str,
        status: &str,
        relay_state: Option<&str>,
        now: SystemTime,
    ) -> Result<Url, RequestError> {
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

    /// The IdP a logout message claims to come from (checked by its signature next), and
    /// that it is addressed to us.
    fn sender(
        &self,
        issuer: Option<&str>,
        destination: Option<&str>,
    ) -> Result<Arc<Idp>, SloError> {
        let idp = issuer
            .and_then(|i| self.idp_by_entity(i))
            .ok_or_else(|| SloError::Issuer(issuer.map(str::to_string)))?;
        match destination {
            Some(d) if d != self.urls.slo => Err(SloError::Destination(d.to_string())),
            _ => Ok(idp),
        }
    }

    /// Reads an IdP's LogoutRequest from a raw query: it must be signed by a key pinned for
    /// the IdP it names, be addressed to us and not be expired.
    pub fn read_logout_request(
        &self,
        query: &str,
        now: SystemTime,
    ) -> Result<(Arc<Idp>, logout::LogoutRequestIn, Option<String>), SloError> {
        let m = redirect::decode(query, redirect::Kind::Request)?;
        let req = logout::parse_request(&m.xml)?;
        let idp = self.sender(Some(&req.issuer), req.destination.as_deref())?;
        redirect::verify(&m, &idp.metadata.signing_keys, true)?;
        if let Some(na) = req.not_on_or_after {
            let skew = chrono::Duration::from_std(idp.verifier.skew()).unwrap_or_default();
            if chrono::DateTime::<chrono::Utc>::from(now) >= na + skew {
                return Err(SloError::Expired(na.to_rfc3339()));
            }
        }
        Ok((idp, req, m.relay_state))
    }

    /// Reads an IdP's LogoutResponse from a raw query (a signature, when present, must
    /// verify; it only decides where the browser goes next).
    pub fn read_logout_response(
        &self,
        query: &str,
    ) -> Result<(logout::LogoutResponseIn, Option<String>), SloError> {
        let m = redirect::decode(query, redirect::Kind::Response)?;
        let resp = logout::parse_response(&m.xml)?;
        let idp = self.sender(resp.issuer.as_deref(), resp.destination.as_deref())?;
        redirect::verify(&m, &idp.metadata.signing_keys, false)?;
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

    /// The IdP an unsolicited response comes from, by its (not yet verified) Issuer: only
    /// that IdP's certificates will then be tried.
    pub fn unsolicited_idp(&self, xml: &str) -> Result<Arc<Idp>, SamlError> {
        let shape = prescan::scan(xml)?;
        let issuer = shape
            .issuer
            .ok_or_else(|| SamlError::Issuer("no Issuer".into()))?;
        self.idp_by_entity(&issuer)
            .ok_or_else(|| SamlError::Issuer(format!("{issuer} is not a configured IdP")))
    }

    /// `check::verify` on the calling thread (tests, fuzzing): `Some(request)` answers a
    /// request sent to the default IdP; `None` is unsolicited, from whichever IdP issued it.
    pub fn check(
        &self,
        xml: &str,
        expected_request: Option<&str>,
        now: SystemTime,
    ) -> Result<Verified, SamlError> {
        let idp = match expected_request {
            Some(_) => self.idp(None).map_err(|_| SamlError::NotReady)?,
            None => self.unsolicited_idp(xml)?,
        };
        check::verify(xml, &idp.verifier, expected_request, now)
    }

    /// Runs `check::verify` against `idp` on the blocking pool, at most one per core at a
    /// time, so XML work never stalls the proxy's threads.
    pub async fn verify(
        &self,
        idp: Arc<Idp>,
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
        tokio::task::spawn_blocking(move || {
            check::verify(&xml, &idp.verifier, expected_request.as_deref(), now)
        })
        .await
        .unwrap_or_else(|e| Err(SamlError::Unreadable(format!("check aborted: {e}"))))
    }

    /// Whether the assertion ID in `xml` (read by the pre-scan, not yet verified) was
    /// consumed before. Checked before any signature work: only verified assertions enter
    /// the cache, so a match is a replay of a real one, refused without spending ~1 ms of
    /// CPU on it.
    /// A store failure counts as unseen: `first_use` decides after verification.
    pub async fn seen_before(&self, store: &crate::store::Shared, xml: &str) -> bool {
        let Some(id) = prescan::scan(xml).ok().and_then(|s| s.assertion_id) else {
            return false;
        };
        crate::store::was_used(store, "saml", &id)
            .await
            .unwrap_or(false)
    }

    /// Records the assertion as consumed, on every replica sharing the store; false if it
    /// was consumed before (a replay). Kept until the assertion could no longer be accepted.
    pub async fn first_use(
        &self,
        store: &crate::store::Shared,
        v: &Verified,
        now: SystemTime,
    ) -> Result<bool, crate::store::StoreError> {
        let ttl = (v.valid_until - crate::session::unix(now)).max(60) as u64;
        crate::store::first_use(store, "saml", &v.assertion_id, Duration::from_secs(ttl)).await
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
