//! Secret material: cookie sealing keys, assertion signing keys and the OIDC client secret.
//!
//! Secrets never print: their `Debug` is redacted and there is no `Display`. Key sets are
//! ordered: the first key seals or signs, every key opens or verifies, so rotating a key
//! is "prepend the new one" and nobody is logged out.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use sha2::{Digest, Sha256};

/// A secret string (client secret). Only `expose` reveals it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret read from a file or an environment variable.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why key material was refused; the message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Nothing usable in the material.
    #[error("no keys found: {0}")]
    Empty(&'static str),
    /// A cookie secret line that is not 32 bytes of base64.
    #[error("line {line}: a cookie secret must be 32 random bytes in base64 (generate one with `sidegate keys generate`)")]
    BadCookieSecret { line: usize },
    /// A PEM block that is not a PKCS#8 P-256 or Ed25519 private key.
    #[error("key {index}: {problem}")]
    BadSigningKey { index: usize, problem: String },
    /// The SAML SP key or certificate is unusable.
    #[error("{0}")]
    SamlSp(String),
}

/// One cookie sealing key with its short id, so opening does not try every key.
pub struct CookieKey {
    /// First 4 bytes of SHA-256 of the key: names the key inside a sealed value.
    pub id: [u8; 4],
    /// The AEAD, ready to use.
    pub cipher: XChaCha20Poly1305,
}

/// Ordered cookie keys: `keys[0]` seals, all open.
pub struct CookieKeys {
    keys: Vec<CookieKey>,
}

impl CookieKeys {
    /// Parses one base64 secret of 32 bytes per line; `#` comments and blank lines are ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let raw = STANDARD
                .decode(line)
                .or_else(|_| URL_SAFE_NO_PAD.decode(line.trim_end_matches('=')))
                .map_err(|_| KeyError::BadCookieSecret { line: n + 1 })?;
            if raw.len() != 32 {
                return Err(KeyError::BadCookieSecret { line: n + 1 });
            }
            keys.push(Self::key_from_bytes(&raw));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty(
                "add a line made by `sidegate keys generate`",
            ));
        }
        Ok(CookieKeys { keys })
    }

    fn key_from_bytes(raw: &[u8]) -> CookieKey {
        let digest = Sha256::digest(raw);
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest[..4]);
        CookieKey {
            id,
            cipher: XChaCha20Poly1305::new_from_slice(raw).expect("32-byte key"),
        }
    }

    /// The key that seals new values.
    pub fn sealing(&self) -> &CookieKey {
        &self.keys[0]
    }

    /// The key with this id, if it is still configured.
    pub fn by_id(&self, id: &[u8]) -> Option<&CookieKey> {
        self.keys.iter().find(|k| k.id[..] == *id)
    }

    /// How many keys are configured (for `check-config`).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: parsing refuses an empty set.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} cookie keys redacted>", self.keys.len())
    }
}

/// Signature algorithm of an assertion key; chosen by the key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    /// ECDSA P-256 with SHA-256 (the default).
    Es256,
    /// Ed25519.
    EdDsa,
}

/// One assertion signing key with its public JWK.
pub struct SigningKey {
    /// The algorithm this key signs with.
    pub alg: SigningAlg,
    /// RFC 7638 thumbprint of the public key, used as `kid`.
    pub kid: String,
    /// The private key in the form jsonwebtoken signs with.
    pub encoding: jsonwebtoken::EncodingKey,
    /// The public key as a JWK, published at `jwks.json`.
    pub public_jwk: serde_json::Value,
}

impl SigningKey {
    /// A JWS header naming this key's algorithm and `kid`, for `jsonwebtoken::encode`.
    pub fn jwt_header(&self) -> jsonwebtoken::Header {
        let mut h = jsonwebtoken::Header::new(match self.alg {
            SigningAlg::Es256 => jsonwebtoken::Algorithm::ES256,
            SigningAlg::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        });
        h.kid = Some(self.kid.clone());
        h
    }
}

/// Ordered assertion keys: `keys[0]` signs, all are published.
pub struct SigningKeys {
    keys: Vec<SigningKey>,
}

impl SigningKeys {
    /// Parses PEM text holding one or more PKCS#8 `PRIVATE KEY` blocks (P-256 or Ed25519).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        let mut reader = std::io::Cursor::new(text.as_bytes());
        for (index, item) in rustls_pemfile::read_all(&mut reader).enumerate() {
            let index = index + 1;
            let der = match item {
                Ok(rustls_pemfile::Item::Pkcs8Key(der)) => der.secret_pkcs8_der().to_vec(),
                Ok(rustls_pemfile::Item::Sec1Key(_)) => {
                    return Err(KeyError::BadSigningKey {
                        index,
                        problem: "an `EC PRIVATE KEY` (SEC1) block; convert it with `openssl pkcs8 -topk8 -nocrypt` or use `sidegate keys generate`".into(),
                    })
                }
                Ok(_) => continue,
                Err(e) => {
                    return Err(KeyError::BadSigningKey {
                        index,
                        problem: format!("unreadable PEM: {e}"),
                    })
                }
            };
            keys.push(Self::key_from_pkcs8(index, &der)?);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty(
                "expected a PKCS#8 `PRIVATE KEY` PEM block (make one with `sidegate keys generate`)",
            ));
        }
        Ok(SigningKeys { keys })
    }

    fn key_from_pkcs8(index: usize, der: &[u8]) -> Result<SigningKey, KeyError> {
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            let point = pair.public_key().as_ref();
            let (x, y) = (
                URL_SAFE_NO_PAD.encode(&point[1..33]),
                URL_SAFE_NO_PAD.encode(&point[33..65]),
            );
            let kid = thumbprint(&format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
            ));
            let public_jwk = serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": x, "y": y,
                "use": "sig", "alg": "ES256", "kid": kid,
            });
            return Ok(SigningKey {
                alg: SigningAlg::Es256,
                kid,
                encoding: jsonwebtoken::EncodingKey::from_ec_der(der),
                public_jwk,
            });
        }
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            let kid = thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
            let public_jwk = serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": x,
                "use": "sig", "alg": "EdDSA", "kid": kid,
            });
            return Ok(SigningKey {
                alg: SigningAlg::EdDsa,
                kid,
                encoding: jsonwebtoken::EncodingKey::from_ed_der(der),
                public_jwk,
            });
        }
        Err(KeyError::BadSigningKey {
            index,
            problem: "not a P-256 (ES256) or Ed25519 (EdDSA) private key".into(),
        })
    }

    /// The key that signs new assertions.
    pub fn current(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// Every key, current first: all of them are published for verification.
    pub fn all(&self) -> &[SigningKey] {
        &self.keys
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        write!(f, "<signing keys {kids:?}, private parts redacted>")
    }
}

fn thumbprint(canonical_jwk: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical_jwk.as_bytes()))
}

/// Fresh random bytes from the OS generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the OS random generator failed");
    out
}

/// A random token of `N` bytes, base64url without padding (state, nonce, session ids).
pub fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

/// Material made by `sidegate keys generate`.
pub struct Generated {
    /// One cookie secret line (base64 of 32 random bytes).
    pub cookie_secret: String,
    /// A PKCS#8 PEM private key for assertions.
    pub signing_key_pem: String,
}

/// Makes a new cookie secret and assertion key (`eddsa` picks Ed25519, else P-256).
pub fn generate(eddsa: bool) -> Generated {
    let rng = SystemRandom::new();
    let doc = if eddsa {
        Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key generation")
    } else {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key generation")
    };
    let b64 = STANDARD.encode(doc.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Generated {
        cookie_secret: STANDARD.encode(random_bytes::<32>()),
        signing_key_pem: pem,
    }
}

/// The SAML service provider's key pair: the private key signs AuthnRequests and
/// LogoutRequests and decrypts `EncryptedAssertion`s; the certificate is published in the
/// SP metadata.
pub struct SamlSpKey {
    /// The private key (RSA or EC), as xmlsec takes it.
    pub key: openssl::pkey::PKey<openssl::pkey::Private>,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
}

impl SamlSpKey {
    /// Parses a PEM private key (PKCS#8 or PKCS#1) and a PEM certificate, and checks that
    /// they belong together.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, KeyError> {
        let bad = KeyError::SamlSp;
        let key = openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes())
            .map_err(|e| bad(format!("unreadable SP private key: {e}")))?;
        let cert = openssl::x509::X509::from_pem(cert_pem.as_bytes())
            .map_err(|e| bad(format!("unreadable SP certificate: {e}")))?;
        let public = cert
            .public_key()
            .map_err(|e| bad(format!("SP certificate without a public key: {e}")))?;
        if !key.public_eq(&public) {
            return Err(bad(
                "the SP certificate is not for the SP private key".into()
            ));
        }
        let cert_der = cert
            .to_der()
            .map_err(|e| bad(format!("SP certificate: {e}")))?;
        Ok(SamlSpKey { key, cert_der })
    }
}

impl fmt::Debug for SamlSpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<SAML SP key, private part redacted>")
    }
}
