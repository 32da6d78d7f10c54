//! Server-side sessions: what the cookie and the store each hold.
//!
//! The cookie carries `r1.` + base64url(id (16) ‖ key (32)), both random per session. The
//! store holds the payload sealed with that per-session key (XChaCha20-Poly1305, the record
//! key as AAD) under a hash of the id, so a copy of the store alone opens nothing and names
//! no cookie.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::keys::random_bytes;

const PREFIX: &str = "r1.";

/// One server-side session's handle: the cookie's content.
#[derive(Clone, PartialEq, Eq)]
pub struct Handle {
    id: [u8; 16],
    key: [u8; 32],
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handle(<redacted>)")
    }
}

impl Handle {
    /// A new random handle.
    pub fn random() -> Self {
        Handle {
            id: random_bytes(),
            key: random_bytes(),
        }
    }

    /// Reads a cookie value; `None` when it is not of this form.
    pub fn parse(cookie: &str) -> Option<Self> {
        let b = URL_SAFE_NO_PAD.decode(cookie.strip_prefix(PREFIX)?).ok()?;
        if b.len() != 48 {
            return None;
        }
        Some(Handle {
            id: b[..16].try_into().ok()?,
            key: b[16..].try_into().ok()?,
        })
    }

    /// The cookie value.
    pub fn cookie_value(&self) -> String {
        let mut b = [0u8; 48];
        b[..16].copy_from_slice(&self.id);
        b[16..].copy_from_slice(&self.key);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(b))
    }

    /// The store key: a hash of the id (the id itself never reaches the store).
    pub fn record_key(&self) -> String {
        format!("s:{}", URL_SAFE_NO_PAD.encode(Sha256::digest(self.id)))
    }

    /// Seals `plain` for the store.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<24>();
        let aad = self.record_key();
        let ct = XChaCha20Poly1305::new((&self.key).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail");
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a record read from the store; `None` if it was not sealed with this key.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 24 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(24);
        let aad = self.record_key();
        XChaCha20Poly1305::new((&self.key).into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .ok()
    }
}

/// The index of every session of one subject, or of one IdP session.
pub fn index_key(kind: &str, issuer: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(issuer.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    format!("i:{kind}:{}", URL_SAFE_NO_PAD.encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip_and_sealing_is_bound_to_the_handle() {
        let h = Handle::random();
        let back = Handle::parse(&h.cookie_value()).expect("parses");
        assert_eq!(back, h);
        assert!(
            !h.record_key().contains(&h.cookie_value()[3..]),
            "the store key does not reveal the id"
        );
        let sealed = h.seal(b"payload");
        assert!(
            !sealed.windows(7).any(|w| w == b"payload"),
            "sealed at rest"
        );
        assert_eq!(h.open(&sealed).as_deref(), Some(&b"payload"[..]));
        assert_eq!(
            Handle::random().open(&sealed),
            None,
            "another session's key opens nothing"
        );
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert_eq!(h.open(&tampered), None, "tampering is detected");
        for bad in ["", "r1.", "r1.AAAA", "v1.abc", &h.cookie_value()[..60]] {
            assert!(Handle::parse(bad).is_none(), "{bad:?} is not a handle");
        }
    }
}
