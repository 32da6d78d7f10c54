//! The SAML Response check: a pure function of (bytes, verifier, expected request, now).
//!
//! Layers, each able to refuse alone:
//! 1. `prescan`: no DTD, bounded shape, exactly one assertion directly in the Response, every
//!    signature on the Response or the assertion and referencing exactly its parent.
//! 2. samael + xmlsec: signatures verified against the metadata-pinned certificates (never
//!    KeyInfo), only signed content kept, Destination/Issuer/Status/Recipient/InResponseTo
//!    checked. Its wall-clock checks are neutralised: time is ours (`now`) so tests can
//!    place it anywhere.
//! 3. Ours after samael: the assertion returned is the one the pre-scan saw (same ID), the
//!    right signature covers it, Audience is required and ours, every time window with skew.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use samael::crypto::AllowedSignatureAlgorithm;
use samael::schema::Assertion;
use samael::service_provider::{Error as SamaelError, ServiceProvider};

use super::prescan::{self, Refused};
use crate::config::AssertionSignature;

/// Longest accepted time between the assertion's IssueInstant and its use (plus skew).
const MAX_ISSUE_AGE: Duration = Duration::from_secs(300);
/// samael's own clock checks get a window this wide, so only ours decide.
const NEUTRAL_SKEW_DAYS: i64 = 3650;
/// Signature algorithms accepted (SHA-1 and DSA are not).
pub const ALLOWED_ALGS: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// Why a response was refused; `reason()` is the short code for metrics and audit logs.
#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    /// The structural pre-scan refused it.
    #[error("{0}")]
    Shape(#[from] Refused),
    /// No signature verified against the pinned certificates (or the algorithm is refused).
    #[error("signature did not verify against the IdP's pinned certificate(s)")]
    Signature,
    /// The assertion is only covered by the Response signature, and its own is required.
    #[error("the assertion is not signed itself (saml.assertion_signature = \"own\")")]
    AssertionUnsigned,
    /// samael returned a different assertion than the one the pre-scan saw.
    #[error("the verified assertion is not the one in the document (ID {0})")]
    WrongAssertion(String),
    /// Issuer is not the IdP.
    #[error("issuer mismatch: {0}")]
    Issuer(String),
    /// Destination is not our ACS.
    #[error("destination mismatch: {0}")]
    Destination(String),
    /// Recipient is not our ACS.
    #[error("recipient mismatch: {0}")]
    Recipient(String),
    /// InResponseTo is not the request this browser sent (or present on an unsolicited one).
    #[error("InResponseTo mismatch: {0}")]
    InResponseTo(String),
    /// Status is not Success.
    #[error("status is not Success: {0}")]
    Status(String),
    /// Audience missing or not our entity ID.
    #[error("audience: {0}")]
    Audience(String),
    /// Past NotOnOrAfter (or IssueInstant too old).
    #[error("expired: {0}")]
    Expired(String),
    /// Before NotBefore (or IssueInstant in the future).
    #[error("not yet valid: {0}")]
    NotYetValid(String),
    /// No usable bearer SubjectConfirmation, or no NameID.
    #[error("subject: {0}")]
    Subject(String),
    /// An encrypted assertion could not be decrypted.
    #[error("encrypted assertion: {0}")]
    Decrypt(String),
    /// Anything else samael refused (parse errors of the signed content).
    #[error("unreadable response: {0}")]
    Unreadable(String),
    /// The IdP's metadata is not loaded yet.
    #[error("the IdP's metadata is not loaded")]
    NotReady,
}

impl SamlError {
    /// A short stable code for metrics labels and audit lines.
    pub fn reason(&self) -> &'static str {
        match self {
            SamlError::Shape(Refused::Doctype | Refused::Entity(_)) => "doctype",
            SamlError::Shape(Refused::Unsigned) => "unsigned",
            SamlError::Shape(Refused::CommentInAssertion) => "comment",
            SamlError::Shape(_) => "shape",
            SamlError::Signature => "signature",
            SamlError::AssertionUnsigned => "assertion_unsigned",
            SamlError::WrongAssertion(_) => "wrapping",
            SamlError::Issuer(_) => "issuer",
            SamlError::Destination(_) => "destination",
            SamlError::Recipient(_) => "recipient",
            SamlError::InResponseTo(_) => "in_response_to",
            SamlError::Status(_) => "status",
            SamlError::Audience(_) => "audience",
            SamlError::Expired(_) => "expired",
            SamlError::NotYetValid(_) => "not_yet_valid",
            SamlError::Subject(_) => "subject",
            SamlError::Decrypt(_) => "decrypt",
            SamlError::Unreadable(_) => "unreadable",
            SamlError::NotReady => "not_ready",
        }
    }
}

/// What the check needs, built once from the config.
pub struct Verifier {
    solicited: ServiceProvider,
    unsolicited: ServiceProvider,
    sp_entity_id: String,
    acs_url: String,
    skew: chrono::Duration,
    assertion_signature: AssertionSignature,
}

impl Verifier {
    /// `sp` is samael's service provider with the IdP metadata, our entity ID, ACS URL and
    /// (optionally) decryption key; its clock and algorithm settings are overridden here.
    pub fn new(
        mut sp: ServiceProvider,
        skew: Duration,
        assertion_signature: AssertionSignature,
    ) -> Self {
        sp.max_clock_skew = chrono::Duration::days(NEUTRAL_SKEW_DAYS);
        sp.max_issue_delay = chrono::Duration::days(NEUTRAL_SKEW_DAYS);
        sp.allowed_signature_algorithms = Some(ALLOWED_ALGS.to_vec());
        sp.allow_idp_initiated = false;
        let mut unsolicited = sp.clone();
        unsolicited.allow_idp_initiated = true;
        Verifier {
            sp_entity_id: sp.entity_id.clone().unwrap_or_default(),
            acs_url: sp.acs_url.clone().unwrap_or_default(),
            solicited: sp,
            unsolicited,
            skew: chrono::Duration::from_std(skew).unwrap_or_else(|_| chrono::Duration::zero()),
            assertion_signature,
        }
    }
}

impl Verifier {
    /// The allowed clock skew.
    pub fn skew(&self) -> Duration {
        self.skew.to_std().unwrap_or_default()
    }
}

/// A checked assertion: only what sidegate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The assertion's ID (replay cache key).
    pub assertion_id: String,
    /// The IdP that issued it.
    pub issuer: String,
    /// NameID text (full text: comments were refused).
    pub name_id: String,
    /// NameID format, if given.
    pub name_id_format: Option<String>,
    /// The IdP session index (for single logout).
    pub session_index: Option<String>,
    /// Attribute name (and friendly name, when different) → values.
    pub attributes: Vec<(String, Vec<String>)>,
    /// InResponseTo of the subject confirmation, when solicited.
    pub in_response_to: Option<String>,
    /// Until when the assertion could be replayed (Unix seconds): the replay cache keeps
    /// its ID at least this long.
    pub valid_until: i64,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn map_samael(e: SamaelError) -> SamlError {
    use SamaelError as E;
    match e {
        E::FailedToValidateSignature => SamlError::Signature,
        E::DestinationValidationError {
            response_destination,
            ..
        } => SamlError::Destination(format!("{response_destination:?}")),
        E::AssertionIssuerMismatch { issuer, .. } | E::ResponseIssuerMismatch { issuer, .. } => {
            SamlError::Issuer(format!("{issuer:?}"))
        }
        E::AssertionRecipientMismatch {
            assertion_recipient,
            ..
        } => SamlError::Recipient(format!("{assertion_recipient:?}")),
        E::AssertionInResponseToInvalid { .. } | E::ResponseInResponseToInvalid { .. } => {
            SamlError::InResponseTo("not the request this browser sent".into())
        }
        E::ResponseBadStatusCode { code } => SamlError::Status(code),
        E::AssertionConditionAudienceRestrictionFailed { requirement } => {
            SamlError::Audience(format!("not restricted to {requirement}"))
        }
        E::AssertionBearerSubjectConfirmationMissing | E::AssertionSubjectConfirmationMissing => {
            SamlError::Subject("no bearer SubjectConfirmation with NotOnOrAfter".into())
        }
        E::MissingPrivateKeySP
        | E::MissingEncryptedKeyInfo
        | E::MissingEncryptedValueInfo
        | E::EncryptedAssertionKeyMethodUnsupported { .. }
        | E::EncryptedAssertionValueMethodUnsupported { .. }
        | E::EncryptedAssertionInvalid
        | E::FailedToDecryptAssertion
        | E::UnsupportedKey => SamlError::Decrypt(e.to_string()),
        other => SamlError::Unreadable(other.to_string()),
    }
}

/// Checks one Response. `expected_request` is the AuthnRequest ID this browser's login
/// cookie holds (`None`: unsolicited, which the caller only allows when configured).
pub fn verify(
    xml: &str,
    v: &Verifier,
    expected_request: Option<&str>,
    now: SystemTime,
) -> Result<Verified, SamlError> {
    let shape = prescan::scan(xml)?;
    if expected_request.is_none() && shape.in_response_to.is_some() {
        return Err(SamlError::InResponseTo(
            "a response to some other request arrived without its login transaction".into(),
        ));
    }
    if v.assertion_signature == AssertionSignature::Own && !shape.assertion_signed {
        return Err(SamlError::AssertionUnsigned);
    }
    let (sp, ids) = match expected_request {
        Some(id) => (&v.solicited, Some([id])),
        None => (&v.unsolicited, None),
    };
    // PreDigest: the strictest reduction (exactly the bytes xmlsec digested). The default
    // mode rebuilds the tree through libxml 0.3.3 paths that leak ~2.7 KiB per check of an
    // assertion-only signature (found by fuzzing); this one leaks nothing and is faster.
    let assertion = sp
        .parse_xml_response_with_mode(
            xml,
            ids.as_ref().map(|a| a.as_slice()),
            samael::crypto::ReduceMode::PreDigest,
        )
        .map_err(map_samael)?;
    if let Some(id) = &shape.assertion_id {
        if &assertion.id != id {
            return Err(SamlError::WrongAssertion(assertion.id));
        }
    }
    let now: DateTime<Utc> = now.into();
    let valid_until = times(&assertion, v, now)?;
    audience(&assertion, &v.sp_entity_id)?;
    let (name_id, name_id_format, in_response_to) = subject(&assertion, v, now)?;
    if let Some(expected) = expected_request {
        if in_response_to.as_deref() != Some(expected) {
            return Err(SamlError::InResponseTo(
                "the subject confirmation answers another request".into(),
            ));
        }
    } else if in_response_to.is_some() {
        return Err(SamlError::InResponseTo(
            "an unsolicited response must not answer a request".into(),
        ));
    }
    Ok(Verified {
        assertion_id: assertion.id.clone(),
        issuer: assertion.issuer.value.clone().unwrap_or_default(),
        name_id,
        name_id_format,
        session_index: assertion
            .authn_statements
            .iter()
            .flatten()
            .find_map(|s| s.session_index.clone()),
        attributes: attributes(&assertion),
        in_response_to,
        valid_until,
    })
}

/// IssueInstant and Conditions windows; returns the replay horizon (Unix seconds).
fn times(a: &Assertion, v: &Verifier, now: DateTime<Utc>) -> Result<i64, SamlError> {
    if a.issue_instant > now + v.skew {
        return Err(SamlError::NotYetValid(format!(
            "IssueInstant {} is in the future",
            ts(a.issue_instant)
        )));
    }
    let age = chrono::Duration::from_std(MAX_ISSUE_AGE).expect("small duration");
    if a.issue_instant + age + v.skew < now {
        return Err(SamlError::Expired(format!(
            "IssueInstant {} is older than {}s",
            ts(a.issue_instant),
            MAX_ISSUE_AGE.as_secs()
        )));
    }
    let c = a
        .conditions
        .as_ref()
        .ok_or_else(|| SamlError::Audience("no Conditions".into()))?;
    if let Some(nb) = c.not_before {
        if now + v.skew < nb {
            return Err(SamlError::NotYetValid(format!(
                "Conditions NotBefore {}",
                ts(nb)
            )));
        }
    }
    let mut horizon = a.issue_instant + age;
    if let Some(na) = c.not_on_or_after {
        if now >= na + v.skew {
            return Err(SamlError::Expired(format!(
                "Conditions NotOnOrAfter {}",
                ts(na)
            )));
        }
        horizon = horizon.max(na);
    }
    Ok((horizon + v.skew).timestamp())
}

fn audience(a: &Assertion, sp_entity_id: &str) -> Result<(), SamlError> {
    let restrictions = a
        .conditions
        .as_ref()
        .and_then(|c| c.audience_restrictions.as_deref())
        .unwrap_or_default();
    if restrictions.is_empty() {
        return Err(SamlError::Audience("no AudienceRestriction".into()));
    }
    // Every restriction must admit us (SAML core 2.5.1.4: they are ANDed).
    for r in restrictions {
        if !r.audience.iter().any(|aud| aud == sp_entity_id) {
            return Err(SamlError::Audience(format!(
                "{:?} does not include {sp_entity_id}",
                r.audience
            )));
        }
    }
    Ok(())
}

type SubjectParts = (String, Option<String>, Option<String>);

/// NameID, and a bearer confirmation for our ACS that is valid now.
fn subject(a: &Assertion, v: &Verifier, now: DateTime<Utc>) -> Result<SubjectParts, SamlError> {
    let subject = a
        .subject
        .as_ref()
        .ok_or_else(|| SamlError::Subject("no Subject".into()))?;
    let name_id = subject
        .name_id
        .as_ref()
        .filter(|n| !n.value.trim().is_empty())
        .ok_or_else(|| SamlError::Subject("no NameID".into()))?;
    let mut last = SamlError::Subject("no bearer SubjectConfirmation".into());
    for c in subject.subject_confirmations.iter().flatten() {
        if c.method.as_deref() != Some("urn:oasis:names:tc:SAML:2.0:cm:bearer") {
            continue;
        }
        let Some(d) = &c.subject_confirmation_data else {
            continue;
        };
        if d.recipient.as_deref() != Some(v.acs_url.as_str()) {
            last = SamlError::Recipient(format!("{:?}", d.recipient));
            continue;
        }
        match (d.not_before, d.not_on_or_after) {
            (Some(nb), _) if now + v.skew < nb => {
                last =
                    SamlError::NotYetValid(format!("SubjectConfirmationData NotBefore {}", ts(nb)));
            }
            (_, Some(na)) if now >= na + v.skew => {
                last =
                    SamlError::Expired(format!("SubjectConfirmationData NotOnOrAfter {}", ts(na)));
            }
            (_, None) => {
                last = SamlError::Subject("SubjectConfirmationData without NotOnOrAfter".into());
            }
            _ => {
                return Ok((
                    name_id.value.trim().to_string(),
                    name_id.format.clone(),
                    d.in_response_to.clone(),
                ))
            }
        }
    }
    Err(last)
}

fn attributes(a: &Assertion) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for st in a.attribute_statements.iter().flatten() {
        for at in &st.attributes {
            let values: Vec<String> = at.values.iter().filter_map(|v| v.value.clone()).collect();
            for name in [&at.name, &at.friendly_name].into_iter().flatten() {
                if !out.iter().any(|(n, _): &(String, Vec<String>)| n == name) {
                    out.push((name.clone(), values.clone()));
                }
            }
        }
    }
    out
}
