//! The ID-token check: a pure function of (token, keys, expectations, now).
//!
//! openidconnect verifies signature, `iss`, `aud`, `exp` and `nonce`; we add what it leaves
//! out (see CRATES.md): the algorithm allow-list, clock skew on `exp`, `iat` in the future,
//! `nbf`, and `azp` when there are several audiences.

use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    ClaimsVerificationError, ClientId, IssuerUrl, Nonce, SignatureVerificationError,
};
use serde_json::{Map, Value};

use crate::config::IdTokenAlg;

/// What a valid ID token must satisfy.
pub struct Expect<'a> {
    /// The discovered issuer.
    pub issuer: &'a IssuerUrl,
    /// Our client id (must be in `aud`; must be `azp` with several audiences).
    pub client_id: &'a ClientId,
    /// The nonce sealed in the login transaction; `None` for an ID token from a refresh,
    /// which carries no new nonce (OIDC Core 12.2).
    pub nonce: Option<&'a Nonce>,
    /// Accepted algorithms.
    pub algs: &'a [IdTokenAlg],
    /// Allowed clock difference.
    pub skew: Duration,
}

/// Why an ID token was refused (logged; the browser sees a generic failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// Not a JWS with the required claims (`sub`, `iat`, `exp`, `iss`, `aud`).
    #[error("malformed or missing required claims: {0}")]
    Malformed(String),
    /// `kid` not in the JWKS (the caller refreshes it once).
    #[error("no key matches the token's kid")]
    UnknownKey,
    /// Algorithm outside the allow-list (`none`, HS*, …).
    #[error("algorithm not allowed: {0}")]
    Alg(String),
    /// The signature does not verify.
    #[error("bad signature: {0}")]
    Signature(String),
    /// `iss` differs from the discovered issuer.
    #[error("wrong issuer: {0}")]
    Issuer(String),
    /// `aud` does not contain our client id.
    #[error("wrong audience: {0}")]
    Audience(String),
    /// Several audiences and `azp` missing or not us.
    #[error("authorized party (azp) missing or wrong")]
    Azp,
    /// Past `exp` (beyond the skew).
    #[error("expired: {0}")]
    Expired(String),
    /// `iat` or `nbf` in the future (beyond the skew).
    #[error("not yet valid: {0}")]
    NotYetValid(String),
    /// `nonce` missing or different.
    #[error("nonce mismatch")]
    Nonce,
}

fn alg(a: IdTokenAlg) -> CoreJwsSigningAlgorithm {
    match a {
        IdTokenAlg::Rs256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        IdTokenAlg::Ps256 => CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        IdTokenAlg::Es256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        IdTokenAlg::EdDsa => CoreJwsSigningAlgorithm::EdDsa,
    }
}

/// Verifies `raw` and returns all its claims as JSON for the identity mapping.
pub fn verify(
    raw: &str,
    jwks: &CoreJsonWebKeySet,
    expect: &Expect<'_>,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, IdTokenError> {
    // The header is read first so a disallowed algorithm is named as such, not as "malformed".
    let header = decode_part(raw, 0)?;
    let header_alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let allowed: Vec<CoreJwsSigningAlgorithm> = expect.algs.iter().copied().map(alg).collect();
    let alg_ok = expect.algs.iter().any(|a| a.name() == header_alg);
    if !alg_ok {
        return Err(IdTokenError::Alg(header_alg));
    }
    let token = CoreIdToken::from_str(raw).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    let skew = chrono::Duration::from_std(expect.skew).unwrap_or_default();
    let latest_iat = now + skew;
    let verifier = CoreIdTokenVerifier::new_public_client(
        expect.client_id.clone(),
        expect.issuer.clone(),
        jwks.clone(),
    )
    .set_allowed_algs(allowed)
    .set_time_fn(move || now - skew)
    .set_issue_time_verifier_fn(move |iat| {
        if iat > latest_iat {
            Err(format!("iat {iat} is in the future"))
        } else {
            Ok(())
        }
    })
    // Extra audiences are judged below by `azp`, as OIDC Core 3.1.3.7 steps 4-5 describe.
    .set_other_audience_verifier_fn(|_| true);
    let checked = match expect.nonce {
        Some(n) => token.claims(&verifier, n).map(|_| ()),
        None => token
            .claims(&verifier, |_: Option<&Nonce>| Ok::<(), String>(()))
            .map(|_| ()),
    };
    checked.map_err(|e| match e {
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => IdTokenError::UnknownKey,
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::DisallowedAlg(a),
        ) => IdTokenError::Alg(a),
        ClaimsVerificationError::SignatureVerification(s) => IdTokenError::Signature(s.to_string()),
        ClaimsVerificationError::InvalidIssuer(s) => IdTokenError::Issuer(s),
        ClaimsVerificationError::InvalidAudience(s) => IdTokenError::Audience(s),
        ClaimsVerificationError::Expired(s) if s.contains("iat") => IdTokenError::NotYetValid(s),
        ClaimsVerificationError::Expired(s) => IdTokenError::Expired(s),
        ClaimsVerificationError::InvalidNonce(_) => IdTokenError::Nonce,
        other => IdTokenError::Malformed(other.to_string()),
    })?;

    let claims = decode_part(raw, 1)?;
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf
            .as_i64()
            .ok_or_else(|| IdTokenError::Malformed("nbf is not a number".into()))?;
        if nbf > latest_iat.timestamp() {
            return Err(IdTokenError::NotYetValid(format!(
                "nbf {nbf} is in the future"
            )));
        }
    }
    let several_audiences = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == expect.client_id.as_str() => {}
        None if !several_audiences => {}
        _ => return Err(IdTokenError::Azp),
    }
    Ok(claims)
}

/// Decodes the JOSE header (0) or payload (1) of a compact JWS as a JSON object.
fn decode_part(raw: &str, index: usize) -> Result<Map<String, Value>, IdTokenError> {
    let part = raw
        .split('.')
        .nth(index)
        .ok_or_else(|| IdTokenError::Malformed("not a compact JWS".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IdTokenError::Malformed("bad base64".into()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(IdTokenError::Malformed("not a JSON object".into())),
    }
}
