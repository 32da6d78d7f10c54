//! The sealed-value wire format shared by every sidegate cookie.
//!
//! `v1.` + base64url(key id (4) ‖ nonce (24) ‖ XChaCha20-Poly1305 ciphertext). The AAD names
//! the cookie's purpose, so a login-state value can never be replayed as a session value.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XNonce;

use crate::keys::{random_bytes, CookieKeys};

const PREFIX: &str = "v1.";

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not of the `v1.` form, or not base64url.
    #[error("malformed")]
    Malformed,
    /// Sealed with a key that is no longer configured (or forged).
    #[error("unknown key")]
    UnknownKey,
    /// Authentication failed: tampered, truncated, or sealed for another purpose.
    #[error("tampered")]
    Tampered,
    /// Larger than any value sidegate writes.
    #[error("oversized")]
    Oversized,
}

/// Largest sealed value accepted (all chunks together).
pub const MAX_SEALED_LEN: usize = 16 * 1024;

/// Seals `plaintext` for `purpose` with the first key.
pub fn seal(keys: &CookieKeys, purpose: &[u8], plaintext: &[u8]) -> String {
    let key = keys.sealing();
    let nonce = random_bytes::<24>();
    let ct = key
        .cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: purpose,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory data");
    let mut raw = Vec::with_capacity(4 + 24 + ct.len());
    raw.extend_from_slice(&key.id);
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&ct);
    let mut out = String::with_capacity(PREFIX.len() + raw.len() * 4 / 3 + 4);
    out.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(&raw, &mut out);
    out
}

/// Opens a value sealed by `seal` for the same `purpose`, with whichever key sealed it.
pub fn open(keys: &CookieKeys, purpose: &[u8], value: &str) -> Result<Vec<u8>, OpenError> {
    if value.len() > MAX_SEALED_LEN {
        return Err(OpenError::Oversized);
    }
    let body = value.strip_prefix(PREFIX).ok_or(OpenError::Malformed)?;
    let raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| OpenError::Malformed)?;
    if raw.len() < 4 + 24 + 16 {
        return Err(OpenError::Malformed);
    }
    let key = keys.by_id(&raw[..4]).ok_or(OpenError::UnknownKey)?;
    key.cipher
        .decrypt(
            XNonce::from_slice(&raw[4..28]),
            Payload {
                msg: &raw[28..],
                aad: purpose,
            },
        )
        .map_err(|_| OpenError::Tampered)
}
