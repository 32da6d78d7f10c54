//! Shared state: one small key-value contract (`Store`) that server-side sessions and every
//! piece of state that must be global across replicas use: consumed SAML assertions and
//! login states, back-channel logout token ids, the refresh lock, and the session indexes
//! that revocation by `sid`/`sub` walks.
//!
//! Two implementations: `Memory` (moka, one replica) and `Redis` (standalone, Sentinel or
//! Cluster; TLS and AUTH). Both pass the same conformance suite (`conformance`). Values are
//! opaque bytes: callers seal what is secret before it gets here.

pub mod conformance;
mod memory;
mod redis;

use std::future::Future;
use std::time::Duration;

pub use memory::Memory;
pub use redis::Redis;

use crate::config::SessionStore;

/// Why the store could not answer. Callers fail closed on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Not connected, or the connection broke (the store reconnects by itself).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// No answer within `session.redis.timeout`.
    #[error("store did not answer in time")]
    Timeout,
}

/// The operations sidegate needs from a shared store. Keys are plain strings chosen by
/// the callers; each implementation adds its own prefix.
pub trait Store: Send + Sync {
    /// Writes `value` under `key` for `ttl`, replacing what was there.
    fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes `value` only if `key` is absent: true when this call wrote it. The basis of
    /// every once-only check (replay caches) and of locks.
    fn put_new(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The value under `key`, if present and not expired.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Sets `key` to expire `ttl` from now; false if it was absent.
    fn touch(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes `key`; false if it was absent.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Adds `member` to the set `index`, which then lives `ttl` from now.
    fn index_add(
        &self,
        index: &str,
        member: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the set `index` and returns its members (atomically: a member added after
    /// this call starts a new set).
    fn index_take(
        &self,
        index: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// Marks `id` of `kind` (an assertion ID, a login state, a logout token's `jti`) as used
/// for `ttl`: true the first time, on any replica sharing the store.
pub async fn first_use(
    store: &Shared,
    kind: &str,
    id: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    store.put_new(&once_key(kind, id), b"1", ttl).await
}

/// Whether `id` of `kind` was marked used.
pub async fn was_used(store: &Shared, kind: &str, id: &str) -> Result<bool, StoreError> {
    Ok(store.get(&once_key(kind, id)).await?.is_some())
}

fn once_key(kind: &str, id: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let h = sha2::Sha256::digest(id.as_bytes());
    format!(
        "u:{kind}:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h)
    )
}

/// The configured store: what the rest of sidegate holds.
pub enum Shared {
    /// In this process only.
    Memory(Memory),
    /// On Redis, shared by every replica that points at it.
    Redis(Box<Redis>),
}

impl Shared {
    /// The store for `session.store`: Redis when configured, memory otherwise (cookie
    /// sessions still need a place for replay caches and locks). `threads`:
    /// `server.threads`, for Redis's connection per thread.
    pub fn new(cfg: &SessionStore, threads: usize) -> Result<Self, StoreError> {
        Ok(match cfg {
            SessionStore::Redis(r) => Shared::Redis(Box::new(Redis::new(r, threads)?)),
            SessionStore::Cookie | SessionStore::Memory => Shared::Memory(Memory::default()),
        })
    }

    /// Whether other replicas see what this one writes.
    pub fn is_shared(&self) -> bool {
        matches!(self, Shared::Redis(_))
    }

    /// For `/readyz`: `None` when ready, else why not.
    pub async fn not_ready(&self) -> Option<String> {
        match self {
            Shared::Memory(_) => None,
            Shared::Redis(r) => r.ping().await.err().map(|e| e.to_string()),
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Shared::Memory($s) => $e,
            Shared::Redis($s) => $e,
        }
    };
}

impl Store for Shared {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        each!(self, s => s.put(key, value, ttl).await)
    }
    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        each!(self, s => s.put_new(key, value, ttl).await)
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        each!(self, s => s.get(key).await)
    }
    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        each!(self, s => s.touch(key, ttl).await)
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        each!(self, s => s.delete(key).await)
    }
    async fn index_add(&self, index: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        each!(self, s => s.index_add(index, member, ttl).await)
    }
    async fn index_take(&self, index: &str) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.index_take(index).await)
    }
}
