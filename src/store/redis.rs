//! The Redis store: standalone, Sentinel (the master is looked up again after a failover)
//! or Cluster; TLS (`rediss://`, optionally a private CA) and AUTH (ACL user + password).
//!
//! Connects lazily and reconnects by itself: a request never waits on more than one
//! connection attempt, and after a failed attempt the store answers `Unavailable` at once
//! for a second instead of piling up connects. Every command has `timeout`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline};

use super::{Store, StoreError};
use crate::config::{RedisConfig, RedisTarget};

const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Live {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A Redis deployment and the live connections to it: one per connection thread and one
/// for every other thread, each multiplexed (shared by that thread's requests).
pub struct Redis {
    cfg: RedisConfig,
    slots: Box<[Slot]>,
}

/// A connection opened on the thread that uses it, so the task that drives it (spawned
/// where it opens) runs beside its requests: no hand-off to another thread per command.
#[derive(Default)]
struct Slot {
    live: Mutex<Option<Live>>,
    connecting: tokio::sync::Mutex<Option<Instant>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Redis {
    /// Checks the addresses; connects on first use. `threads`: the connection threads
    /// (`server.threads`), each of which gets its own connection.
    pub fn new(cfg: &RedisConfig, threads: usize) -> Result<Self, StoreError> {
        let urls: Vec<&String> = match &cfg.target {
            RedisTarget::Standalone(u) => vec![u],
            RedisTarget::Sentinel { sentinels, .. } => sentinels.iter().collect(),
            RedisTarget::Cluster(nodes) => nodes.iter().collect(),
        };
        for u in urls {
            u.as_str().into_connection_info().map_err(unavailable)?;
        }
        Ok(Redis {
            cfg: cfg.clone(),
            slots: (0..=threads).map(|_| Slot::default()).collect(),
        })
    }

    /// This thread's slot: its own on a connection thread, the last one elsewhere.
    fn slot(&self) -> &Slot {
        let others = self.slots.len() - 1;
        match crate::accept::current_thread() {
            Some(t) if others > 0 => &self.slots[t % others],
            _ => &self.slots[others],
        }
    }

    fn key(&self, k: &str) -> String {
        let mut s = String::with_capacity(self.cfg.prefix.len() + k.len());
        s.push_str(&self.cfg.prefix);
        s.push_str(k);
        s
    }

    fn certs(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: self.cfg.ca_pem.clone(),
        }
    }

    fn node_info(&self, url: &str) -> Result<redis::ConnectionInfo, StoreError> {
        let info = url.into_connection_info().map_err(unavailable)?;
        let mut r = info.redis_settings().clone();
        if let Some(u) = &self.cfg.username {
            r = r.set_username(u);
        }
        if let Some(p) = &self.cfg.password {
            r = r.set_password(p.expose());
        }
        Ok(info.set_redis_settings(r))
    }

    fn client(&self, info: redis::ConnectionInfo) -> Result<redis::Client, StoreError> {
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if tls && self.cfg.ca_pem.is_some() {
            redis::Client::build_with_tls(info, self.certs()).map_err(unavailable)
        } else {
            redis::Client::open(info).map_err(unavailable)
        }
    }

    fn conn_config(&self) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout))
            .set_response_timeout(Some(self.cfg.timeout))
    }

    async fn open(&self) -> Result<Live, StoreError> {
        match &self.cfg.target {
            RedisTarget::Standalone(url) => {
                let client = self.client(self.node_info(url)?)?;
                let c = client
                    .get_multiplexed_async_connection_with_config(&self.conn_config())
                    .await
                    .map_err(unavailable)?;
                Ok(Live::Node(c))
            }
            RedisTarget::Sentinel { sentinels, master } => {
                let mut addrs = Vec::new();
                let mut sentinel_tls = false;
                for s in sentinels {
                    let info = s.as_str().into_connection_info().map_err(unavailable)?;
                    sentinel_tls |= matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
                    addrs.push(info.addr().clone());
                }
                let mut b = redis::sentinel::SentinelClientBuilder::new(
                    addrs,
                    master,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(unavailable)?;
                if let Some(u) = &self.cfg.username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = &self.cfg.password {
                    b = b.set_client_to_redis_password(p.expose());
                }
                if sentinel_tls {
                    b = b
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                    if self.cfg.ca_pem.is_some() {
                        b = b
                            .set_client_to_redis_certificates(self.certs())
                            .set_client_to_sentinel_certificates(self.certs());
                    }
                }
                let mut sc = b.build().map_err(unavailable)?;
                let client = sc.async_get_client().await.map_err(unavailable)?;
                let c = client
                    .get_multiplexed_async_connection_with_config(&self.conn_config())
                    .await
                    .map_err(unavailable)?;
                Ok(Live::Node(c))
            }
            RedisTarget::Cluster(nodes) => {
                let infos = nodes
                    .iter()
                    .map(|n| self.node_info(n))
                    .collect::<Result<Vec<_>, _>>()?;
                let tls = infos
                    .iter()
                    .any(|i| matches!(i.addr(), redis::ConnectionAddr::TcpTls { .. }));
                let mut b = redis::cluster::ClusterClient::builder(infos)
                    .connection_timeout(self.cfg.timeout)
                    .response_timeout(self.cfg.timeout)
                    .retries(2);
                if let Some(u) = &self.cfg.username {
                    b = b.username(u);
                }
                if let Some(p) = &self.cfg.password {
                    b = b.password(p.expose());
                }
                if tls {
                    b = b.tls(redis::TlsMode::Secure);
                    if self.cfg.ca_pem.is_some() {
                        b = b.certs(self.certs());
                    }
                }
                let c = b
                    .build()
                    .map_err(unavailable)?
                    .get_async_connection()
                    .await
                    .map_err(unavailable)?;
                Ok(Live::Cluster(c))
            }
        }
    }

    /// This thread's live connection, opening one if there is none (one attempt at a time;
    /// after a failure, none for `RETRY_AFTER`).
    async fn conn(&self, slot: &Slot) -> Result<Live, StoreError> {
        if let Some(c) = slot.live.lock().expect("redis conn lock").clone() {
            return Ok(c);
        }
        let mut last_failure = slot.connecting.lock().await;
        if let Some(c) = slot.live.lock().expect("redis conn lock").clone() {
            return Ok(c);
        }
        if last_failure.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return Err(StoreError::Unavailable(
                "not connected (retrying shortly)".into(),
            ));
        }
        match tokio::time::timeout(self.cfg.timeout * 2, self.open()).await {
            Ok(Ok(c)) => {
                *last_failure = None;
                *slot.live.lock().expect("redis conn lock") = Some(c.clone());
                tracing::info!("connected to the Redis store");
                Ok(c)
            }
            Ok(Err(e)) => {
                *last_failure = Some(Instant::now());
                tracing::warn!(error = %e, "cannot connect to the Redis store; requests that need it answer 503");
                Err(e)
            }
            Err(_) => {
                *last_failure = Some(Instant::now());
                tracing::warn!(
                    "connecting to the Redis store timed out; requests that need it answer 503"
                );
                Err(StoreError::Timeout)
            }
        }
    }

    /// Forgets a broken connection so the next call reconnects (after a Sentinel
    /// failover this finds the new master).
    fn drop_conn(slot: &Slot, why: &redis::RedisError) {
        let broken = why.is_io_error()
            || why.is_timeout()
            || why.is_connection_dropped()
            || why.is_connection_refusal()
            || why.is_unrecoverable_error()
            || matches!(why.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
        if broken {
            tracing::warn!(error = %why, "Redis connection lost; reconnecting");
            Self::forget(slot);
        }
    }

    fn forget(slot: &Slot) {
        slot.live.lock().expect("redis conn lock").take();
    }

    async fn run<T: FromRedisValue>(&self, cmd: Query<'_>) -> Result<T, StoreError> {
        let slot = self.slot();
        let c = self.conn(slot).await?;
        let answer = tokio::time::timeout(self.cfg.timeout, async {
            match (c, cmd) {
                (Live::Node(mut n), Query::Cmd(q)) => q.query_async(&mut n).await,
                (Live::Node(mut n), Query::Pipe(q)) => q.query_async(&mut n).await,
                (Live::Cluster(mut x), Query::Cmd(q)) => q.query_async(&mut x).await,
                (Live::Cluster(mut x), Query::Pipe(q)) => q.query_async(&mut x).await,
            }
        })
        .await;
        match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                Self::drop_conn(slot, &e);
                Err(unavailable(e))
            }
            Err(_) => {
                // A half-open connection never answers again: start over next time.
                tracing::warn!("Redis did not answer in time; reconnecting");
                Self::forget(slot);
                Err(StoreError::Timeout)
            }
        }
    }

    /// One round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run::<String>(Query::Cmd(&redis::cmd("PING")))
            .await
            .map(|_| ())
    }
}

enum Query<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl Store for Redis {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut c = redis::cmd("SET");
        c.arg(self.key(key)).arg(value).arg("PX").arg(millis(ttl));
        self.run::<()>(Query::Cmd(&c)).await
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let mut c = redis::cmd("SET");
        c.arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        Ok(self.run::<Option<String>>(Query::Cmd(&c)).await?.is_some())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = redis::cmd("GET");
        c.arg(self.key(key));
        self.run(Query::Cmd(&c)).await
    }

    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = redis::cmd("PEXPIRE");
        c.arg(self.key(key)).arg(millis(ttl));
        Ok(self.run::<i64>(Query::Cmd(&c)).await? == 1)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut c = redis::cmd("DEL");
        c.arg(self.key(key));
        Ok(self.run::<i64>(Query::Cmd(&c)).await? == 1)
    }

    async fn index_add(&self, index: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let k = self.key(index);
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SADD")
            .arg(&k)
            .arg(member)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(millis(ttl))
            .ignore();
        self.run::<()>(Query::Pipe(&p)).await
    }

    async fn index_take(&self, index: &str) -> Result<Vec<String>, StoreError> {
        let k = self.key(index);
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SMEMBERS")
            .arg(&k)
            .cmd("DEL")
            .arg(&k)
            .ignore();
        let (members,): (Vec<String>,) = self.run(Query::Pipe(&p)).await?;
        Ok(members)
    }
}
