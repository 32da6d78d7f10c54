//! The in-process store (moka): for one replica, and for cookie sessions' replay caches.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Store, StoreError};

#[derive(Clone)]
enum Value {
    Bytes(Arc<[u8]>),
    Set(Arc<Mutex<BTreeSet<String>>>),
}

#[derive(Clone)]
struct Entry {
    value: Value,
    until: Instant,
}

struct ByDeadline;

impl moka::Expiry<String, Entry> for ByDeadline {
    fn expire_after_create(&self, _: &String, e: &Entry, now: Instant) -> Option<Duration> {
        Some(e.until.saturating_duration_since(now))
    }
    fn expire_after_update(
        &self,
        _: &String,
        e: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.until.saturating_duration_since(now))
    }
}

/// Entries with their own deadlines, bounded in number.
pub struct Memory {
    cache: moka::sync::Cache<String, Entry>,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            cache: moka::sync::Cache::builder()
                .max_capacity(2_000_000)
                .expire_after(ByDeadline)
                .build(),
        }
    }
}

impl Memory {
    /// A live entry (moka may still hold one whose deadline just passed).
    fn live(&self, key: &str) -> Option<Entry> {
        self.cache.get(key).filter(|e| e.until > Instant::now())
    }
}

impl Store for Memory {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.cache.insert(
            key.to_string(),
            Entry {
                value: Value::Bytes(value.into()),
                until: Instant::now() + ttl,
            },
        );
        Ok(())
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let fresh = Entry {
            value: Value::Bytes(value.into()),
            until: now + ttl,
        };
        let mut wrote = false;
        self.cache
            .entry(key.to_string())
            .and_compute_with(|old| match old {
                Some(e) if e.value().until > now => moka::ops::compute::Op::Nop,
                _ => {
                    wrote = true;
                    moka::ops::compute::Op::Put(fresh)
                }
            });
        Ok(wrote)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.live(key).and_then(|e| match e.value {
            Value::Bytes(b) => Some(b.to_vec()),
            Value::Set(_) => None,
        }))
    }

    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut found = false;
        self.cache
            .entry(key.to_string())
            .and_compute_with(|old| match old {
                Some(e) if e.value().until > now => {
                    found = true;
                    let mut e = e.into_value();
                    e.until = now + ttl;
                    moka::ops::compute::Op::Put(e)
                }
                _ => moka::ops::compute::Op::Nop,
            });
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .cache
            .remove(key)
            .is_some_and(|e| e.until > Instant::now()))
    }

    async fn index_add(&self, index: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        self.cache.entry(index.to_string()).and_compute_with(|old| {
            let set = match old.map(|e| e.into_value()) {
                Some(Entry {
                    value: Value::Set(s),
                    until,
                }) if until > now => s,
                _ => Arc::default(),
            };
            set.lock().expect("index lock").insert(member.to_string());
            moka::ops::compute::Op::Put(Entry {
                value: Value::Set(set),
                until: now + ttl,
            })
        });
        Ok(())
    }

    async fn index_take(&self, index: &str) -> Result<Vec<String>, StoreError> {
        let taken = self.cache.remove(index);
        Ok(match taken {
            Some(Entry {
                value: Value::Set(s),
                until,
            }) if until > Instant::now() => std::mem::take(&mut *s.lock().expect("index lock"))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_keeps_the_store_contract() {
        super::super::conformance::run(std::sync::Arc::new(super::Memory::default())).await;
    }
}
