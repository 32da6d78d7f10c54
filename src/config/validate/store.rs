//! `session.store` and `[session.redis]`: exactly one Redis shape (url, sentinels +
//! master_name, or cluster), AUTH from a file or the environment, a private CA for TLS.

use std::path::Path;
use std::time::Duration;

use super::{duration, secret, Problems};
use crate::config::raw;
use crate::config::{Env, RedisConfig, RedisTarget, SessionStore};
use crate::keys::Secret;

/// Builds the store choice; problems name `session.store` or `session.redis.<key>`.
pub(super) fn build(
    s: &raw::Session,
    env: &Env,
    base_dir: &Path,
    p: &mut Problems,
) -> SessionStore {
    match s.store.as_deref() {
        None | Some("cookie") => {
            if s.redis.is_some() {
                p.add(
                    "session.redis",
                    "is set but session.store is not \"redis\"",
                    "set session.store = \"redis\", or remove [session.redis]",
                );
            }
            SessionStore::Cookie
        }
        Some("memory") => SessionStore::Memory,
        Some("redis") => match &s.redis {
            Some(r) => redis(r, env, base_dir, p).map_or(SessionStore::Cookie, SessionStore::Redis),
            None => {
                p.add(
                    "session.redis",
                    "missing while session.store = \"redis\"",
                    "add [session.redis] with url = \"redis://host:6379\" (or sentinels + master_name, or cluster)",
                );
                SessionStore::Cookie
            }
        },
        Some(o) => {
            p.add(
                "session.store",
                format!("`{o}` is not a session store"),
                "use \"cookie\" (default), \"memory\" (one replica) or \"redis\"",
            );
            SessionStore::Cookie
        }
    }
}

/// `session.login_transactions`: `"cookie"` (default, bound to the browser) or `"store"`.
pub(super) fn login_transactions(s: &raw::Session, store: &SessionStore, p: &mut Problems) -> bool {
    match s.login_transactions.as_deref() {
        None | Some("cookie") => false,
        Some("store") => {
            if matches!(store, SessionStore::Cookie) {
                p.add(
                    "session.login_transactions",
                    "\"store\" needs a server-side session store",
                    "set session.store = \"redis\" (or \"memory\" for one replica), or keep \"cookie\"",
                );
            }
            true
        }
        Some(o) => {
            p.add(
                "session.login_transactions",
                format!("`{o}` is not a place for login transactions"),
                "use \"cookie\" (default) or \"store\"",
            );
            false
        }
    }
}

fn urls(p: &mut Problems, key: &str, list: &[String]) -> bool {
    let mut ok = true;
    for u in list {
        let parsed = url::Url::parse(u);
        let scheme_ok = parsed
            .as_ref()
            .is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some());
        if !scheme_ok {
            p.add(
                key,
                format!("`{u}` is not a redis:// or rediss:// URL"),
                "write it like \"redis://10.0.0.5:6379/0\" (rediss:// for TLS)",
            );
            ok = false;
        } else if parsed.is_ok_and(|u| u.password().is_some()) {
            p.add(
                key,
                format!("`{u}` carries a password"),
                "remove it from the URL and set session.redis.password_file (or password_env)",
            );
            ok = false;
        }
    }
    ok
}

fn redis(r: &raw::Redis, env: &Env, base_dir: &Path, p: &mut Problems) -> Option<RedisConfig> {
    let shapes = [
        r.url.is_some(),
        !r.sentinels.is_empty(),
        !r.cluster.is_empty(),
    ];
    let target = match shapes {
        [true, false, false] => {
            let u = r.url.clone().unwrap_or_default();
            urls(p, "session.redis.url", std::slice::from_ref(&u))
                .then_some(RedisTarget::Standalone(u))
        }
        [false, true, false] => match &r.master_name {
            Some(m) if !m.is_empty() => {
                urls(p, "session.redis.sentinels", &r.sentinels).then(|| RedisTarget::Sentinel {
                    sentinels: r.sentinels.clone(),
                    master: m.clone(),
                })
            }
            _ => {
                p.add(
                    "session.redis.master_name",
                    "missing while sentinels are set",
                    "name the master the sentinels monitor, e.g. master_name = \"mymaster\"",
                );
                None
            }
        },
        [false, false, true] => urls(p, "session.redis.cluster", &r.cluster)
            .then(|| RedisTarget::Cluster(r.cluster.clone())),
        _ => {
            p.add("session.redis", "needs exactly one of url, sentinels, cluster", "set url for one server, sentinels + master_name for Sentinel, or cluster for Redis Cluster");
            None
        }
    };
    if r.master_name.is_some() && r.sentinels.is_empty() {
        p.add(
            "session.redis.master_name",
            "is set without sentinels",
            "list the sentinels, or remove master_name",
        );
    }
    let password = if r.password.is_some() || r.password_file.is_some() || r.password_env.is_some()
    {
        secret(
            p,
            "session.redis.password",
            &r.password,
            &r.password_file,
            &r.password_env,
            env,
            base_dir,
        )
        .map(|s| Secret::new(s.trim_end_matches(['\r', '\n']).to_string()))
    } else {
        None
    };
    let ca_pem = r.ca_file.as_ref().and_then(|f| {
        let path = base_dir.join(f);
        match std::fs::read(&path) {
            Ok(b) if b.windows(11).any(|w| w == b"-----BEGIN ") => Some(b),
            Ok(_) => {
                p.add(
                    "session.redis.ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                    "point it at the PEM of the CA that signed Redis's certificate",
                );
                None
            }
            Err(e) => {
                p.add(
                    "session.redis.ca_file",
                    format!("cannot read {}: {e}", path.display()),
                    "point it at a readable PEM file",
                );
                None
            }
        }
    });
    let prefix = r.key_prefix.clone().unwrap_or_else(|| "sidegate:".into());
    let timeout = duration(
        p,
        "session.redis.timeout",
        &r.timeout,
        Duration::from_secs(1),
    );
    Some(RedisConfig {
        target: target?,
        username: r.username.clone(),
        password,
        ca_pem,
        prefix,
        timeout,
    })
}
