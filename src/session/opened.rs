//! Cookie sessions already opened, so a repeat request skips base64, AEAD and JSON.
//!
//! Keyed by the sealed value's last bytes (inside the AEAD tag: random per seal); a hit
//! counts only when the whole presented value equals the one that opened, so a forged value
//! sharing those bytes is a miss and goes through the full open, which refuses it. Only
//! values that opened are ever kept, and the cache belongs to one `Sessions` (a reload with
//! other keys starts empty). Time checks (expiry, idle, revocation) stay with the caller.

use std::sync::Arc;
use std::time::Duration;

use super::Session;

/// Bytes of the sealed value that key an entry.
const KEY_LEN: usize = 32;
/// Cap on the cache: cookie text plus about as much again for the opened session.
const MAX_BYTES: u64 = 4 * 1024 * 1024;
/// An entry unused this long is dropped (its memory returns when traffic stops).
const IDLE: Duration = Duration::from_secs(300);

struct Entry {
    value: Box<str>,
    session: Session,
}

/// Opened cookie sessions by sealed value (bounded by bytes, dropped when idle).
pub(super) struct Opened {
    cache: moka::sync::Cache<[u8; KEY_LEN], Arc<Entry>>,
}

fn key(value: &str) -> [u8; KEY_LEN] {
    let b = value.as_bytes();
    let tail = &b[b.len().saturating_sub(KEY_LEN)..];
    let mut k = [0u8; KEY_LEN];
    k[KEY_LEN - tail.len()..].copy_from_slice(tail);
    k
}

/// Equality without an early exit (the time does not tell where a guess first differs),
/// a word at a time: `subtle`'s byte-wise loop would cost more than the open it saves.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
    let (x, y) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = x
        .remainder()
        .iter()
        .zip(y.remainder())
        .fold(0u64, |acc, (p, q)| acc | u64::from(p ^ q));
    let diff = x.zip(y).fold(tail, |acc, (p, q)| acc | (word(p) ^ word(q)));
    std::hint::black_box(diff) == 0
}

impl Opened {
    pub(super) fn new() -> Self {
        Opened {
            cache: moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|_, e: &Arc<Entry>| {
                    u32::try_from(2 * e.value.len() + 512).unwrap_or(u32::MAX)
                })
                .time_to_idle(IDLE)
                .build(),
        }
    }

    /// The session `value` opened to before, if this exact value did.
    pub(super) fn get(&self, value: &str) -> Option<Session> {
        let e = self.cache.get(&key(value))?;
        same(e.value.as_bytes(), value.as_bytes()).then(|| e.session.clone())
    }

    /// Remembers that `value` opened to `session`.
    pub(super) fn keep(&self, value: &str, session: &Session) {
        self.cache.insert(
            key(value),
            Arc::new(Entry {
                value: value.into(),
                session: session.clone(),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_compares_every_byte() {
        let a = b"v1.abcdefghijklmnopqrstuvwxyz0123456789";
        assert!(same(a, a));
        for i in 0..a.len() {
            let mut b = *a;
            b[i] ^= 1;
            assert!(!same(a, &b), "a difference at byte {i} was missed");
        }
        assert!(!same(a, &a[..a.len() - 1]));
        assert!(same(b"", b""));
    }
}
