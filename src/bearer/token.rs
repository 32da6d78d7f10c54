//! The access-token check: a pure function of (token, keys, expectations, now).
//!
//! jsonwebtoken verifies the signature and that the key's family matches the algorithm (so an
//! RSA public key can never be used as an HMAC secret); everything else is checked here, with
//! our own clock: the algorithm allow-list (never `none` or HS*), `typ` (RFC 9068 `at+jwt`
//! unless configured otherwise), no ID-token markers, `iss`, `aud`, `sub`, a required `exp`,
//! `nbf` and `iat`.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::IdTokenAlg;

/// What a valid access token must satisfy.
pub struct Expect<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// Required member of `aud`.
    pub audience: &'a str,
    /// Accepted algorithms.
    pub algs: &'a [IdTokenAlg],
    /// Accepted `typ` values (lower case, without `application/`).
    pub types: &'a [String],
    /// Allowed clock difference.
    pub skew: Duration,
}

/// Why a bearer token was refused (logged; the client gets `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Algorithm outside the allow-list (`none`, HS*, …).
    #[error("algorithm not allowed: {0}")]
    Alg(String),
    /// `typ` missing or not an accepted access-token type.
    #[error("token type `{0}` is not an accepted access-token type")]
    Type(String),
    /// The token carries ID-token claims (`nonce`, `at_hash`, `c_hash`).
    #[error("an ID token is not an access token")]
    IdToken,
    /// `crit` header parameters we do not understand.
    #[error("unsupported critical header")]
    Critical,
    /// No key with the token's `kid`.
    #[error("no key matches the token's kid")]
    UnknownKey,
    /// The key does not fit the algorithm (kty/alg confusion).
    #[error("key does not match the algorithm")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `iss` differs.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not contain the required audience.
    #[error("wrong audience")]
    Audience,
    /// No `exp`.
    #[error("no exp claim")]
    NoExpiry,
    /// No `sub`.
    #[error("no sub claim")]
    NoSubject,
    /// Past `exp` (beyond the skew).
    #[error("expired")]
    Expired,
    /// `nbf` or `iat` in the future (beyond the skew).
    #[error("not yet valid")]
    NotYetValid,
}

fn decode_part(raw: &str, index: usize) -> Result<Map<String, Value>, TokenError> {
    let part = raw
        .split('.')
        .nth(index)
        .ok_or(TokenError::Malformed("not a compact JWS"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed("bad base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed("not a JSON object")),
    }
}

/// Whether `raw` looks like a JWS (three parts, JSON header) rather than an opaque token.
pub fn is_jwt(raw: &str) -> bool {
    raw.split('.').count() == 3 && decode_part(raw, 0).is_ok()
}

/// The unverified `iss`, used only to pick which issuer's keys to verify with.
pub fn peek_issuer(raw: &str) -> Option<String> {
    decode_part(raw, 1)
        .ok()?
        .get("iss")?
        .as_str()
        .map(str::to_string)
}

fn algorithm(a: IdTokenAlg) -> Algorithm {
    match a {
        IdTokenAlg::Rs256 => Algorithm::RS256,
        IdTokenAlg::Ps256 => Algorithm::PS256,
        IdTokenAlg::Es256 => Algorithm::ES256,
        IdTokenAlg::EdDsa => Algorithm::EdDSA,
    }
}

/// Verifies `raw` against `jwks` and returns its claims for the identity mapping.
pub fn verify(
    raw: &str,
    jwks: &JwkSet,
    expect: &Expect<'_>,
    now: i64,
) -> Result<Map<String, Value>, TokenError> {
    if raw.split('.').count() != 3 {
        return Err(TokenError::Malformed("not a compact JWS"));
    }
    let header = decode_part(raw, 0)?;
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let Some(alg) = expect
        .algs
        .iter()
        .copied()
        .find(|a| a.name() == alg_name)
        .map(algorithm)
    else {
        return Err(TokenError::Alg(alg_name.to_string()));
    };
    if header.contains_key("crit") {
        return Err(TokenError::Critical);
    }
    let typ = header
        .get("typ")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    if !expect.types.iter().any(|t| t == typ) {
        return Err(TokenError::Type(typ.to_string()));
    }
    let claims = decode_part(raw, 1)?;
    if ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|c| claims.contains_key(*c))
    {
        return Err(TokenError::IdToken);
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let jwk = match kid {
        Some(kid) => jwks.find(kid),
        // Without a kid, only an unambiguous single key will do.
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .ok_or(TokenError::UnknownKey)?;
    if jwk
        .common
        .key_algorithm
        .is_some_and(|ka| ka.to_string() != alg_name)
    {
        return Err(TokenError::KeyMismatch);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::KeyMismatch)?;
    let mut v = Validation::new(alg);
    // Time, issuer and audience are checked below with the caller's clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(raw, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => TokenError::KeyMismatch,
        _ => TokenError::Malformed("rejected by the JWS decoder"),
    })?;

    if claims.get("iss").and_then(Value::as_str) != Some(expect.issuer) {
        return Err(TokenError::Issuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == expect.audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(expect.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(TokenError::NoSubject);
    }
    check_times(&claims, expect.skew, now)?;
    Ok(claims)
}

/// `exp` (required), `nbf` and `iat` against `now` with `skew`; shared with introspection.
pub fn check_times(
    claims: &Map<String, Value>,
    skew: Duration,
    now: i64,
) -> Result<(), TokenError> {
    let skew = skew.as_secs() as i64;
    let num = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp = num("exp").ok_or(TokenError::NoExpiry)?;
    if now > exp + skew {
        return Err(TokenError::Expired);
    }
    for c in ["nbf", "iat"] {
        if claims.contains_key(c) && num(c).is_none_or(|t| t > now + skew) {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(())
}
