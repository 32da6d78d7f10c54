//! Cookie sessions already opened, so a repeat request skips base64, AEAD and JSON, and
//! shares the opened session instead of copying it.
//!
//! Keyed by the sealed value's last bytes (inside the AEAD tag: random per seal); a hit
//! counts only when the whole presented value equals the one that opened, so a forged value
//! sharing those bytes is a miss and goes through the full open, which refuses it. Only
//! values that opened are ever kept, and the cache belongs to one `Sessions` (a reload with
//! other keys starts empty). Time checks (expiry, idle, revocation) stay with the caller.
//!
//! A full cache takes no new entries until old ones expire (each lives a minute). Evicting
//! to make room would only churn when more sessions are active than fit: each miss would
//! allocate an entry for the cache to throw away. The room an expired entry leaves goes to
//! the next session opened, most often a busy one.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxSeededState;

use super::Session;

/// Bytes of the sealed value that key an entry.
const KEY_LEN: usize = 32;
/// Cap on the cache: about 350 sessions with small cookies, 125 with 3 KB OIDC ones (the
/// hot set of an admin UI or a dashboard); the others pay the open, about 2 to 5 µs.
const MAX_BYTES: u64 = 512 * 1024;
/// What an entry costs besides its cookie text: the opened session, its strings and the
/// cache's own bookkeeping (about 1 KB in massif).
const ENTRY_OVERHEAD: usize = 1024;
/// How long an entry lives: a busy session opens its cookie once a minute, and the
/// memory returns a minute after traffic stops.
const LIFETIME: Duration = Duration::from_secs(60);

struct Entry {
    value: Box<str>,
    session: Arc<Session>,
}

/// Opened cookie sessions by sealed value (bounded by bytes, each kept a minute).
pub(super) struct Opened {
    cache: moka::sync::Cache<[u8; KEY_LEN], Arc<Entry>, FxSeededState>,
}

/// An entry's share of `MAX_BYTES`.
fn weight(value: &str) -> usize {
    value.len() + ENTRY_OVERHEAD
}

fn key(b: &[u8]) -> [u8; KEY_LEN] {
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
                .weigher(|_, e: &Arc<Entry>| u32::try_from(weight(&e.value)).unwrap_or(u32::MAX))
                .time_to_live(LIFETIME)
                // A fast hash suffices: only values that opened are kept, and their keys
                // are AEAD tag bytes, which nobody without the cookie key can choose.
                .build_with_hasher(FxSeededState::with_seed(rand::random::<u64>() as usize)),
        }
    }

    /// The session `value` opened to before, if this exact value did (so a hit is text).
    pub(super) fn get(&self, value: &[u8]) -> Option<Arc<Session>> {
        let e = self.cache.get(&key(value))?;
        same(e.value.as_bytes(), value).then(|| e.session.clone())
    }

    /// Remembers that `value` opened to `session`, if the cache has room.
    pub(super) fn keep(&self, value: &str, session: &Arc<Session>) {
        if self.cache.weighted_size() + weight(value) as u64 > MAX_BYTES {
            return;
        }
        self.cache.insert(
            key(value.as_bytes()),
            Arc::new(Entry {
                value: value.into(),
                session: session.clone(),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{same, weight, Opened, Session, MAX_BYTES};

    fn session(sid: &str) -> Arc<Session> {
        Arc::new(Session {
            sid: sid.to_string(),
            identity: crate::identity::Identity {
                issuer: "https://idp.test".into(),
                subject: sid.into(),
                user: sid.into(),
                email: None,
                role: "viewer".into(),
                teams: Vec::new(),
                extra: Vec::new(),
            },
            issued: 0,
            expires: i64::MAX,
            idle_until: i64::MAX,
            idp_session: None,
            handle: None,
        })
    }

    /// A sealed-looking value of `len` bytes whose last bytes (the key) are its own.
    fn value(n: usize, len: usize) -> String {
        let tail = format!("{n:032}");
        format!("{}{tail}", "v".repeat(len - tail.len()))
    }

    #[test]
    fn a_full_cache_keeps_what_it_has_and_takes_nothing_new() {
        let opened = Opened::new();
        let len = 16 * 1024;
        let fit = (MAX_BYTES as usize) / weight(&value(0, len));
        for n in 0..fit + 8 {
            if n >= fit {
                // Asked for often: an evicting cache would admit it over the old entries.
                for _ in 0..50 {
                    assert!(opened.get(value(n, len).as_bytes()).is_none());
                }
            }
            opened.keep(&value(n, len), &session(&n.to_string()));
            opened.cache.run_pending_tasks();
        }
        for n in 0..fit {
            let got = opened.get(value(n, len).as_bytes()).map(|s| s.sid.clone());
            assert_eq!(got, Some(n.to_string()), "entry {n} of {fit} was not kept");
        }
        for n in fit..fit + 8 {
            assert!(
                opened.get(value(n, len).as_bytes()).is_none(),
                "entry {n} went past the cap"
            );
        }
        assert!(opened.cache.weighted_size() <= MAX_BYTES);
    }

    #[test]
    fn a_value_sharing_the_key_but_not_the_rest_is_a_miss() {
        let opened = Opened::new();
        let real = value(7, 600);
        opened.keep(&real, &session("alice"));
        let mut forged = real.clone().into_bytes();
        forged[0] = b'x';
        let forged = String::from_utf8(forged).expect("ascii");
        assert_eq!(
            opened.get(real.as_bytes()).map(|s| s.sid.clone()),
            Some("alice".into())
        );
        assert!(opened.get(forged.as_bytes()).is_none());
    }

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
