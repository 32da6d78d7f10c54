//! The IdP's SAML metadata: parsed once (samael's types), checked for what sidegate relies
//! on, and kept as the one source of the IdP's entity ID, endpoints and pinned certificates.

use samael::metadata::EntityDescriptor;
use samael::service_provider::ServiceProvider;
use url::Url;

const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";

/// Why IdP metadata was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// DTDs are never parsed.
    #[error("contains a DOCTYPE")]
    Doctype,
    /// Not an `md:EntityDescriptor` samael can read.
    #[error("not SAML metadata (an md:EntityDescriptor): {0}")]
    Xml(String),
    /// No `entityID`.
    #[error("the EntityDescriptor has no entityID")]
    NoEntityId,
    /// No `IDPSSODescriptor`.
    #[error("no IDPSSODescriptor: this is not an identity provider's metadata")]
    NoIdp,
    /// No SSO endpoint with the HTTP-Redirect binding.
    #[error("no SingleSignOnService with the HTTP-Redirect binding")]
    NoRedirectSso,
    /// An endpoint URL does not parse.
    #[error("endpoint `{0}` is not a URL")]
    BadUrl(String),
    /// No signing certificate: every response would be unverifiable.
    #[error("no signing certificate (KeyDescriptor use=\"signing\" with an X509Certificate)")]
    NoSigningCert,
    /// A certificate does not decode.
    #[error("a certificate does not decode: {0}")]
    BadCert(String),
    /// The metadata is not signed as a whole by the pinned certificate.
    #[error("metadata signature: {0}")]
    Signature(String),
}

/// Checks and parses metadata; with `pinned_cert` (DER), only metadata signed as a whole
/// (the EntityDescriptor) by that certificate is accepted, and only the signed content is read.
pub fn load(xml: &str, pinned_cert: Option<&[u8]>) -> Result<IdpMetadata, MetadataError> {
    let Some(cert) = pinned_cert else {
        return IdpMetadata::parse(xml);
    };
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return Err(MetadataError::Doctype);
    }
    use samael::crypto::{Crypto, CryptoProvider, ReduceMode};
    let signed = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &[cert.to_vec().into()],
        ReduceMode::ValidateAndMarkNoAncestors,
        Some(&super::check::ALLOWED_ALGS),
    )
    .map_err(|e| MetadataError::Signature(e.to_string()))?;
    IdpMetadata::parse(&signed).map_err(|e| match e {
        MetadataError::Xml(_) => MetadataError::Signature(
            "the signature does not cover the whole EntityDescriptor".into(),
        ),
        other => other,
    })
}

/// The IdP as its metadata describes it.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    /// The IdP's entity ID (`Issuer` of its responses).
    pub entity_id: String,
    /// Where AuthnRequests go (HTTP-Redirect binding).
    pub sso_redirect: Url,
    /// Where LogoutRequests go (HTTP-Redirect binding), if the IdP does SLO.
    pub slo_redirect: Option<Url>,
    /// Where our LogoutResponses go (`ResponseLocation`, else `Location`).
    pub slo_response: Option<Url>,
    /// How many signing certificates are pinned (several during a rotation).
    pub signing_certs: usize,
    /// Their public keys, for Redirect-binding (query string) signatures.
    pub(crate) signing_keys: Vec<openssl::pkey::PKey<openssl::pkey::Public>>,
    descriptor: EntityDescriptor,
}

impl IdpMetadata {
    /// Parses and checks metadata XML.
    pub fn parse(xml: &str) -> Result<Self, MetadataError> {
        if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
            return Err(MetadataError::Doctype);
        }
        let descriptor: EntityDescriptor =
            xml.parse()
                .map_err(|e: <EntityDescriptor as std::str::FromStr>::Err| {
                    MetadataError::Xml(e.to_string())
                })?;
        let entity_id = descriptor
            .entity_id
            .clone()
            .filter(|e| !e.is_empty())
            .ok_or(MetadataError::NoEntityId)?;
        let idps = descriptor
            .idp_sso_descriptors
            .as_deref()
            .filter(|d| !d.is_empty())
            .ok_or(MetadataError::NoIdp)?;
        let find = |pick: &dyn Fn(&samael::metadata::IdpSsoDescriptor) -> Option<String>| {
            idps.iter().find_map(pick)
        };
        let url = |s: String| Url::parse(&s).map_err(|_| MetadataError::BadUrl(s));
        let sso = find(&|d| {
            d.single_sign_on_services
                .iter()
                .find(|e| e.binding == REDIRECT_BINDING)
                .map(|e| e.location.clone())
        })
        .ok_or(MetadataError::NoRedirectSso)?;
        let slo_endpoint = idps.iter().find_map(|d| {
            d.single_logout_services
                .iter()
                .find(|e| e.binding == REDIRECT_BINDING)
        });
        let slo = slo_endpoint.map(|e| e.location.clone());
        let slo_response =
            slo_endpoint.map(|e| e.response_location.clone().unwrap_or(e.location.clone()));
        let probe = ServiceProvider {
            idp_metadata: descriptor.clone(),
            ..ServiceProvider::default()
        };
        let certs = probe
            .idp_signing_certs()
            .map_err(|e| MetadataError::BadCert(e.to_string()))?
            .unwrap_or_default();
        if certs.is_empty() {
            return Err(MetadataError::NoSigningCert);
        }
        let mut signing_keys = Vec::new();
        for c in &certs {
            let x = openssl::x509::X509::from_der(c.der_data())
                .map_err(|e| MetadataError::BadCert(e.to_string()))?;
            signing_keys.push(
                x.public_key()
                    .map_err(|e| MetadataError::BadCert(e.to_string()))?,
            );
        }
        Ok(IdpMetadata {
            entity_id,
            sso_redirect: url(sso)?,
            slo_redirect: slo.map(url).transpose()?,
            slo_response: slo_response.map(url).transpose()?,
            signing_certs: certs.len(),
            signing_keys,
            descriptor,
        })
    }

    /// samael's view, for building its `ServiceProvider`.
    pub(crate) fn descriptor(&self) -> &EntityDescriptor {
        &self.descriptor
    }
}
