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
    /// Whether `sub` must be present (access tokens: yes; logout tokens may name only `sid`).
    pub require_sub: bool,
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
    #[error("carries ID-token claims (nonce, at_hash or c_hash)")]
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
    if expect.require_sub
        && claims
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

/// A P-256 key and its one-key JWKS, for the crafted-token tests here and in
/// `login::oidc::logout_token`.
#[cfg(test)]
pub(crate) mod test_key {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};

    pub(crate) struct Key {
        pub der: Vec<u8>,
        pub jwks: JwkSet,
    }

    pub(crate) fn key(kid: &str) -> Key {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let p = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])});
        Key {
            der: doc.as_ref().to_vec(),
            jwks: serde_json::from_value(json!({"keys": [jwk]})).unwrap(),
        }
    }

    pub(crate) fn sign(k: &Key, typ: &str, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some(typ.into());
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_der(&k.der)).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::test_key::{key, sign};
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Value {
        json!({"iss": "https://idp", "aud": ["https://api", "x"], "sub": "s", "iat": NOW - 1, "exp": NOW + 60})
    }

    fn check(jwks: &JwkSet, token: &str) -> Result<Map<String, Value>, TokenError> {
        let types = ["at+jwt".to_string()];
        let e = Expect {
            issuer: "https://idp",
            audience: "https://api",
            algs: &[IdTokenAlg::Es256, IdTokenAlg::Rs256],
            types: &types,
            skew: Duration::from_secs(30),
            require_sub: true,
        };
        verify(token, jwks, &e, NOW)
    }

    #[test]
    fn each_check_names_its_refusal() {
        let k = key("k");
        let good = sign(&k, "at+jwt", Some("k"), &claims());
        assert!(check(&k.jwks, &good).is_ok());
        assert!(
            check(
                &k.jwks,
                &sign(&k, "application/AT+JWT", Some("k"), &claims())
            )
            .is_ok(),
            "media type form and case"
        );
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut c = claims();
            f(&mut c);
            sign(&k, "at+jwt", Some("k"), &c)
        };
        let cases: Vec<(String, TokenError)> = vec![
            (
                sign(&k, "JWT", Some("k"), &claims()),
                TokenError::Type("jwt".into()),
            ),
            (edit(&|c| c["nonce"] = json!("n")), TokenError::IdToken),
            (
                sign(&k, "at+jwt", Some("other"), &claims()),
                TokenError::UnknownKey,
            ),
            (
                sign(&key("k"), "at+jwt", Some("k"), &claims()),
                TokenError::Signature,
            ),
            (
                edit(&|c| c["iss"] = json!("https://evil")),
                TokenError::Issuer,
            ),
            (
                edit(&|c| c["aud"] = json!("https://other")),
                TokenError::Audience,
            ),
            (
                edit(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                TokenError::NoExpiry,
            ),
            (edit(&|c| c["exp"] = json!(NOW - 31)), TokenError::Expired),
            (
                edit(&|c| c["iat"] = json!(NOW + 31)),
                TokenError::NotYetValid,
            ),
            (edit(&|c| c["nbf"] = json!("soon")), TokenError::NotYetValid),
            (edit(&|c| c["sub"] = json!("")), TokenError::NoSubject),
        ];
        for (token, want) in cases {
            assert_eq!(check(&k.jwks, &token).unwrap_err(), want);
        }
        // Within the skew is fine.
        assert!(check(&k.jwks, &edit(&|c| c["exp"] = json!(NOW - 29))).is_ok());
        // No kid: only a single-key set is unambiguous.
        assert!(check(&k.jwks, &sign(&k, "at+jwt", None, &claims())).is_ok());
    }

    #[test]
    fn algorithm_and_key_confusion() {
        let k = key("k");
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let none = format!(
            "{}.{body}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt","kid":"k"}"#)
        );
        assert_eq!(
            check(&k.jwks, &none).unwrap_err(),
            TokenError::Alg("none".into())
        );
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some("k".into());
        let hs = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(b"public")).unwrap();
        assert_eq!(
            check(&k.jwks, &hs).unwrap_err(),
            TokenError::Alg("HS256".into())
        );
        // RS256 is allowed, but the kid names an EC key: never verified with the wrong family.
        let rs = format!(
            "{}.{body}.AAAA",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#)
        );
        assert_eq!(check(&k.jwks, &rs).unwrap_err(), TokenError::KeyMismatch);
        let crit = format!(
            "{}.{body}.AAAA",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"at+jwt","kid":"k","crit":["x"]}"#)
        );
        assert_eq!(check(&k.jwks, &crit).unwrap_err(), TokenError::Critical);
        assert!(matches!(
            check(&k.jwks, "a.b").unwrap_err(),
            TokenError::Malformed(_)
        ));
    }
}
