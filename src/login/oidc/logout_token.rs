//! The back-channel logout token check (OpenID Connect Back-Channel Logout 1.0): a pure
//! function of (token, keys, expectations, now). The JWS part is the bearer-token check
//! (signature, algorithm allow-list, `iss`, `aud` = our client id, `exp`, `iat`, no `nonce`);
//! here: `typ` may be `logout+jwt`, `JWT` or absent, the `events` member, `sid` or `sub`,
//! `jti`, and an `iat` no older than `max_age`.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;

use crate::bearer::token::{self, TokenError};
use crate::config::IdTokenAlg;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a valid logout token must satisfy.
pub struct Expect<'a> {
    /// The provider's issuer as it signs tokens.
    pub issuer: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// Accepted algorithms.
    pub algs: &'a [IdTokenAlg],
    /// Allowed clock difference.
    pub skew: Duration,
    /// Oldest acceptable `iat`.
    pub max_age: Duration,
}

/// Whom the IdP logged out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// The IdP session (`sid`), if named.
    pub sid: Option<String>,
    /// The subject, if named.
    pub sub: Option<String>,
    /// Token id, for the replay cache.
    pub jti: String,
}

/// Why a logout token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// The JWS, time or audience checks failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No back-channel logout event.
    #[error("events has no back-channel logout event")]
    Event,
    /// Neither `sid` nor `sub`.
    #[error("names neither sid nor sub")]
    Nobody,
    /// No `jti`.
    #[error("no jti")]
    NoJti,
    /// `iat` missing or too old.
    #[error("iat missing or older than allowed")]
    Stale,
}

/// Verifies a logout token.
pub fn verify(
    raw: &str,
    jwks: &JwkSet,
    expect: &Expect<'_>,
    now: i64,
) -> Result<LogoutToken, LogoutTokenError> {
    let types = ["logout+jwt".to_string(), "jwt".to_string(), String::new()];
    let claims = token::verify(
        raw,
        jwks,
        &token::Expect {
            issuer: expect.issuer,
            audience: expect.client_id,
            algs: expect.algs,
            types: &types,
            skew: expect.skew,
            require_sub: false,
        },
        now,
    )?;
    if !claims
        .get("events")
        .and_then(|e| e.get(EVENT))
        .is_some_and(Value::is_object)
    {
        return Err(LogoutTokenError::Event);
    }
    let text = |n: &str| {
        claims
            .get(n)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (sid, sub) = (text("sid"), text("sub"));
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::Nobody);
    }
    let jti = text("jti").ok_or(LogoutTokenError::NoJti)?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(LogoutTokenError::Stale)?;
    if now - iat > (expect.max_age + expect.skew).as_secs() as i64 {
        return Err(LogoutTokenError::Stale);
    }
    Ok(LogoutToken { sid, sub, jti })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::bearer::token::test_key::{key, sign};

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Value {
        json!({"iss": "https://op", "aud": "sidegate", "iat": NOW - 10, "exp": NOW + 110, "jti": "j1",
               "sid": "s1", "sub": "alice", "events": {EVENT: {}}})
    }

    fn check(token: &str, jwks: &JwkSet) -> Result<LogoutToken, LogoutTokenError> {
        let e = Expect {
            issuer: "https://op",
            client_id: "sidegate",
            algs: &[IdTokenAlg::Es256],
            skew: Duration::from_secs(30),
            max_age: Duration::from_secs(300),
        };
        verify(token, jwks, &e, NOW)
    }

    #[test]
    fn each_rule_of_the_spec() {
        let k = key("k");
        let ok = check(&sign(&k, "logout+jwt", Some("k"), &claims()), &k.jwks).unwrap();
        assert_eq!(
            (ok.sid.as_deref(), ok.sub.as_deref(), ok.jti.as_str()),
            (Some("s1"), Some("alice"), "j1")
        );
        assert!(check(&sign(&k, "JWT", Some("k"), &claims()), &k.jwks).is_ok());
        let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut c = claims();
            f(c.as_object_mut().unwrap());
            sign(&k, "logout+jwt", Some("k"), &c)
        };
        let cases: Vec<(String, LogoutTokenError)> = vec![
            (
                edit(&|c| {
                    c.remove("events");
                }),
                LogoutTokenError::Event,
            ),
            (
                edit(&|c| {
                    c.insert("events".into(), json!({"other": {}}));
                }),
                LogoutTokenError::Event,
            ),
            (
                edit(&|c| {
                    c.remove("sid");
                    c.remove("sub");
                }),
                LogoutTokenError::Nobody,
            ),
            (
                edit(&|c| {
                    c.remove("jti");
                }),
                LogoutTokenError::NoJti,
            ),
            (
                edit(&|c| {
                    c.insert("iat".into(), json!(NOW - 400));
                }),
                LogoutTokenError::Stale,
            ),
            (
                edit(&|c| {
                    c.insert("nonce".into(), json!("n"));
                }),
                LogoutTokenError::Token(TokenError::IdToken),
            ),
            (
                edit(&|c| {
                    c.insert("aud".into(), json!("other"));
                }),
                LogoutTokenError::Token(TokenError::Audience),
            ),
            (
                edit(&|c| {
                    c.insert("iss".into(), json!("https://evil"));
                }),
                LogoutTokenError::Token(TokenError::Issuer),
            ),
            (
                edit(&|c| {
                    c.remove("exp");
                }),
                LogoutTokenError::Token(TokenError::NoExpiry),
            ),
            (
                sign(&k, "at+jwt", Some("k"), &claims()),
                LogoutTokenError::Token(TokenError::Type("at+jwt".into())),
            ),
            (
                sign(&key("k"), "logout+jwt", Some("k"), &claims()),
                LogoutTokenError::Token(TokenError::Signature),
            ),
        ];
        for (token, want) in cases {
            assert_eq!(check(&token, &k.jwks).unwrap_err(), want);
        }
        // Only sid, or only sub, is enough.
        assert!(check(
            &edit(&|c| {
                c.remove("sub");
            }),
            &k.jwks
        )
        .is_ok());
        assert!(check(
            &edit(&|c| {
                c.remove("sid");
            }),
            &k.jwks
        )
        .is_ok());
    }
}
