//! ID-token verification (`sidegate::login::oidc::id_token::verify`) against forged, stale,
//! misdirected and algorithm-confused tokens. Keys are generated in-process; the JWKS is
//! written by hand, as an IdP would publish it.

use std::sync::LazyLock;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::{ClientId, IssuerUrl, Nonce};
use serde_json::{json, Map, Value};
use sidegate::config::IdTokenAlg;
use sidegate::login::oidc::id_token::{verify, Expect, IdTokenError};

const ISSUER: &str = "https://idp.test";
const CLIENT: &str = "sidegate-client";
const NONCE: &str = "n-123";
/// The fixed "current time" every check runs at.
const NOW: i64 = 1_750_000_000;
const SKEW: Duration = Duration::from_secs(60);
const ALL_ALGS: &[IdTokenAlg] = &[
    IdTokenAlg::Rs256,
    IdTokenAlg::Ps256,
    IdTokenAlg::Es256,
    IdTokenAlg::EdDsa,
];

/// The IdP's keys (published in `jwks`) plus look-alike keys an attacker might hold.
struct Keys {
    ec: EncodingKey,
    rsa: EncodingKey,
    /// Another P-256 key, not in the JWKS.
    ec_other: EncodingKey,
    /// Another RSA key, not in the JWKS.
    rsa_other: EncodingKey,
    /// The published RSA public key as SubjectPublicKeyInfo DER and PEM.
    rsa_public_der: Vec<u8>,
    rsa_public_pem: String,
    jwks: CoreJsonWebKeySet,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A P-256 key: the signing key and its JWK coordinates (x, y).
fn ec_key() -> (EncodingKey, String, String) {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 0x04);
    (
        EncodingKey::from_ec_der(doc.as_ref()),
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..65]),
    )
}

/// An RSA-2048 key: the signing key, its JWK `n` and `e`, and its public key as SPKI DER.
fn rsa_key() -> (EncodingKey, String, String, Vec<u8>) {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = pair.as_der().unwrap();
    let encoding =
        EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
    let public = pair.public_key();
    let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
    let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
    let spki = public.as_der().unwrap().as_ref().to_vec();
    (encoding, n, e, spki)
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let (ec, x, y) = ec_key();
    let (rsa, n, e, rsa_public_der) = rsa_key();
    let (ec_other, _, _) = ec_key();
    let (rsa_other, _, _, _) = rsa_key();
    let jwks: CoreJsonWebKeySet = serde_json::from_value(json!({"keys": [
        {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "ec1", "alg": "ES256", "use": "sig"},
        {"kty": "RSA", "n": n, "e": e, "kid": "rsa1", "alg": "RS256", "use": "sig"},
    ]}))
    .unwrap();
    Keys {
        ec,
        rsa,
        ec_other,
        rsa_other,
        rsa_public_pem: pem("PUBLIC KEY", &rsa_public_der),
        rsa_public_der,
        jwks,
    }
});

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap()
}

/// A token that passes every check.
fn baseline() -> Value {
    json!({
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "u1",
        "nonce": NONCE,
        "iat": NOW - 10,
        "exp": NOW + 300,
        "email": "u1@example.com",
        "role": "admin",
        "groups": ["eng", "ops"],
    })
}

/// The baseline with `edit` applied to its claims.
fn claims(edit: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut v = baseline();
    edit(v.as_object_mut().unwrap());
    v
}

fn sign_with(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn es256(claims: &Value) -> String {
    sign_with(Algorithm::ES256, "ec1", &KEYS.ec, claims)
}

fn rs256(claims: &Value) -> String {
    sign_with(Algorithm::RS256, "rsa1", &KEYS.rsa, claims)
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn check_with(
    token: &str,
    algs: &[IdTokenAlg],
    skew: Duration,
) -> Result<Map<String, Value>, IdTokenError> {
    let issuer = IssuerUrl::new(ISSUER.into()).unwrap();
    let client_id = ClientId::new(CLIENT.into());
    let nonce = Nonce::new(NONCE.into());
    let expect = Expect {
        issuer: &issuer,
        client_id: &client_id,
        nonce: Some(&nonce),
        algs,
        skew,
    };
    verify(token, &KEYS.jwks, &expect, now())
}

fn check(token: &str) -> Result<Map<String, Value>, IdTokenError> {
    check_with(token, ALL_ALGS, SKEW)
}

#[track_caller]
fn assert_ok(token: &str) -> Map<String, Value> {
    match check(token) {
        Ok(m) => m,
        Err(e) => panic!("expected the token to verify, got {e:?}"),
    }
}

#[track_caller]
fn assert_variant(
    result: Result<Map<String, Value>, IdTokenError>,
    want: fn(&IdTokenError) -> bool,
    name: &str,
) {
    match result {
        Ok(claims) => panic!("expected {name}, but the token was ACCEPTED with claims {claims:?}"),
        Err(e) => assert!(want(&e), "expected {name}, got {e:?}"),
    }
}

macro_rules! assert_refused {
    ($result:expr, $pat:pat) => {
        assert_variant($result, |e| matches!(e, $pat), stringify!($pat))
    };
}

// ---- the baseline -------------------------------------------------------------------------

#[test]
fn valid_es256_token_is_accepted_with_its_claims() {
    let claims = assert_ok(&es256(&baseline()));
    assert_eq!(claims["sub"], "u1");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["groups"], json!(["eng", "ops"]));
    assert_eq!(claims["email"], "u1@example.com");
}

#[test]
fn valid_rs256_token_is_accepted_with_its_claims() {
    let claims = assert_ok(&rs256(&baseline()));
    assert_eq!(claims["sub"], "u1");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["groups"], json!(["eng", "ops"]));
}

// ---- who the token is for and who made it -------------------------------------------------

#[test]
fn token_issued_for_another_client_is_refused() {
    let t = es256(&claims(|c| {
        c.insert("aud".into(), json!("some-other-client"));
    }));
    assert_refused!(check(&t), IdTokenError::Audience(_));
}

#[test]
fn token_from_another_issuer_is_refused() {
    let t = es256(&claims(|c| {
        c.insert("iss".into(), json!("https://evil-idp.test"));
    }));
    assert_refused!(check(&t), IdTokenError::Issuer(_));
}

#[test]
fn several_audiences_without_azp_are_refused() {
    let t = es256(&claims(|c| {
        c.insert("aud".into(), json!([CLIENT, "other-client"]));
    }));
    assert_refused!(check(&t), IdTokenError::Azp);
}

#[test]
fn several_audiences_with_azp_naming_another_client_are_refused() {
    let t = es256(&claims(|c| {
        c.insert("aud".into(), json!([CLIENT, "other-client"]));
        c.insert("azp".into(), json!("other-client"));
    }));
    assert_refused!(check(&t), IdTokenError::Azp);
}

#[test]
fn several_audiences_with_azp_naming_us_are_accepted() {
    let t = es256(&claims(|c| {
        c.insert("aud".into(), json!([CLIENT, "other-client"]));
        c.insert("azp".into(), json!(CLIENT));
    }));
    let claims = assert_ok(&t);
    assert_eq!(claims["azp"], CLIENT);
}

// ---- time ---------------------------------------------------------------------------------

#[test]
fn expired_token_is_refused_beyond_the_skew() {
    let t = es256(&claims(|c| {
        c.insert("exp".into(), json!(NOW - 120));
    }));
    assert_refused!(check(&t), IdTokenError::Expired(_));
}

#[test]
fn token_expired_within_the_skew_is_accepted() {
    let t = es256(&claims(|c| {
        c.insert("iat".into(), json!(NOW - 600));
        c.insert("exp".into(), json!(NOW - 30));
    }));
    assert_ok(&t);
    // And the skew is what lets it through: without one the same token is expired.
    assert_refused!(
        check_with(&t, ALL_ALGS, Duration::ZERO),
        IdTokenError::Expired(_)
    );
}

#[test]
fn token_not_valid_before_a_future_nbf_is_refused() {
    let t = es256(&claims(|c| {
        c.insert("nbf".into(), json!(NOW + 600));
    }));
    assert_refused!(check(&t), IdTokenError::NotYetValid(_));
}

#[test]
fn nbf_slightly_ahead_is_accepted_within_the_skew() {
    let t = es256(&claims(|c| {
        c.insert("nbf".into(), json!(NOW + 30));
    }));
    assert_ok(&t);
    assert_refused!(
        check_with(&t, ALL_ALGS, Duration::ZERO),
        IdTokenError::NotYetValid(_)
    );
}

#[test]
fn non_numeric_nbf_is_refused() {
    let t = es256(&claims(|c| {
        c.insert("nbf".into(), json!("yesterday"));
    }));
    assert_refused!(check(&t), IdTokenError::Malformed(_));
}

#[test]
fn token_issued_in_the_future_is_refused() {
    let t = es256(&claims(|c| {
        c.insert("iat".into(), json!(NOW + 600));
        c.insert("exp".into(), json!(NOW + 900));
    }));
    assert_refused!(check(&t), IdTokenError::NotYetValid(_));
}

// ---- required claims ----------------------------------------------------------------------

#[test]
fn token_without_sub_is_malformed() {
    let t = es256(&claims(|c| {
        c.remove("sub");
    }));
    assert_refused!(check(&t), IdTokenError::Malformed(_));
}

#[test]
fn token_without_iat_is_malformed() {
    let t = es256(&claims(|c| {
        c.remove("iat");
    }));
    assert_refused!(check(&t), IdTokenError::Malformed(_));
}

#[test]
fn token_without_exp_is_refused() {
    let t = es256(&claims(|c| {
        c.remove("exp");
    }));
    assert_refused!(check(&t), IdTokenError::Malformed(_));
}

#[test]
fn token_with_another_nonce_is_refused() {
    let t = es256(&claims(|c| {
        c.insert("nonce".into(), json!("n-replayed-from-another-login"));
    }));
    assert_refused!(check(&t), IdTokenError::Nonce);
}

#[test]
fn token_without_nonce_is_refused() {
    let t = es256(&claims(|c| {
        c.remove("nonce");
    }));
    assert_refused!(check(&t), IdTokenError::Nonce);
}

// ---- signatures and keys ------------------------------------------------------------------

/// Replaces one character in the middle of the signature (the last one may only carry
/// padding bits, so it is left alone).
fn tamper_signature(token: &str) -> String {
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut sig: Vec<char> = sig.chars().collect();
    let i = sig.len() / 2;
    sig[i] = if sig[i] == 'A' { 'B' } else { 'A' };
    format!("{signed}.{}", sig.into_iter().collect::<String>())
}

#[test]
fn tampered_signature_is_refused() {
    for (name, token) in [("ES256", es256(&baseline())), ("RS256", rs256(&baseline()))] {
        let forged = tamper_signature(&token);
        assert_ne!(forged, token);
        match check(&forged) {
            Err(IdTokenError::Signature(_)) => {}
            other => panic!("{name}: expected Signature, got {other:?}"),
        }
    }
}

#[test]
fn payload_changed_after_signing_is_refused() {
    // Privilege escalation: keep the IdP's signature, swap in a payload with another role.
    let token = es256(&baseline());
    let parts: Vec<&str> = token.split('.').collect();
    let escalated = b64json(&claims(|c| {
        c.insert("role".into(), json!("superadmin"));
    }));
    let forged = format!("{}.{}.{}", parts[0], escalated, parts[2]);
    assert_refused!(check(&forged), IdTokenError::Signature(_));
}

#[test]
fn token_signed_by_another_key_under_a_published_kid_is_refused() {
    let ec = sign_with(Algorithm::ES256, "ec1", &KEYS.ec_other, &baseline());
    assert_refused!(check(&ec), IdTokenError::Signature(_));
    let rsa = sign_with(Algorithm::RS256, "rsa1", &KEYS.rsa_other, &baseline());
    assert_refused!(check(&rsa), IdTokenError::Signature(_));
}

#[test]
fn token_with_an_unknown_kid_is_refused() {
    let t = sign_with(Algorithm::ES256, "not-in-jwks", &KEYS.ec, &baseline());
    assert_refused!(check(&t), IdTokenError::UnknownKey);
}

// ---- algorithm confusion ------------------------------------------------------------------

#[test]
fn unsigned_alg_none_token_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let header = b64json(&json!({"alg": alg, "kid": "ec1", "typ": "JWT"}));
        let forged = format!("{header}.{}.", b64json(&baseline()));
        match check(&forged) {
            Err(IdTokenError::Alg(_)) => {}
            other => panic!("alg {alg:?}: expected Alg, got {other:?}"),
        }
    }
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the public key is public, so anyone can compute this HMAC.
    for (form, secret) in [
        ("PEM", KEYS.rsa_public_pem.as_bytes().to_vec()),
        ("DER", KEYS.rsa_public_der.clone()),
    ] {
        for kid in ["rsa1", "ec1"] {
            let t = sign_with(
                Algorithm::HS256,
                kid,
                &EncodingKey::from_secret(&secret),
                &baseline(),
            );
            match check(&t) {
                Err(IdTokenError::Alg(a)) => assert_eq!(a, "HS256"),
                other => panic!(
                    "HS256 with the {form} public key, kid {kid}: expected Alg, got {other:?}"
                ),
            }
        }
    }
}

#[test]
fn algorithm_outside_the_configured_allow_list_is_refused() {
    let t = rs256(&baseline());
    // Accepted when RS256 is allowed...
    assert!(check_with(&t, &[IdTokenAlg::Rs256], SKEW).is_ok());
    // ...refused when only ES256 is.
    match check_with(&t, &[IdTokenAlg::Es256], SKEW) {
        Err(IdTokenError::Alg(a)) => assert!(a.contains("RS256"), "{a}"),
        other => panic!("expected Alg, got {other:?}"),
    }
}
