//! The Redis store against real `redis-server` processes in every supported shape, each
//! running the same conformance suite as the memory store: standalone, AUTH with an ACL
//! user, TLS with a private CA, Sentinel, Cluster. A wrong password or an untrusted
//! certificate fails closed (an error, never a silent fallback).

use std::sync::Arc;
use std::time::Duration;

use sidegate::config::{RedisConfig, RedisTarget};
use sidegate::keys::Secret;
use sidegate::store::{conformance, Redis, Store, StoreError};

use crate::support::redis::{self as harness, Cluster, RedisOptions, Sentinel};

fn cfg(target: RedisTarget) -> RedisConfig {
    RedisConfig {
        target,
        username: None,
        password: None,
        ca_pem: None,
        prefix: "sg-test:".into(),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn standalone_redis_keeps_the_store_contract() {
    let r = harness::Redis::start().await;
    let store = Redis::new(&cfg(RedisTarget::Standalone(r.url())), 0).unwrap();
    conformance::run(Arc::new(store)).await;
    // Keys carry the configured prefix (several deployments can share one Redis).
    let keys = r.cli(&["--scan"]).await;
    assert!(keys.lines().all(|k| k.starts_with("sg-test:")), "{keys}");
}

#[tokio::test]
async fn redis_with_an_acl_user_and_password_keeps_the_contract_and_refuses_a_wrong_password() {
    let r = harness::Redis::start_with(RedisOptions {
        password: Some("s3cret-pw".into()),
        tls: false,
    })
    .await;
    let mut c = cfg(RedisTarget::Standalone(r.url()));
    c.username = Some(harness::ACL_USER.into());
    c.password = Some(Secret::new("s3cret-pw".into()));
    let store = Arc::new(Redis::new(&c, 0).unwrap());
    conformance::run(store.clone()).await;
    // The suite's connection is still open, as the ACL user.
    let who = r.cli(&["CLIENT", "LIST"]).await;
    assert!(
        who.contains(&format!("user={}", harness::ACL_USER)),
        "{who}"
    );

    c.password = Some(Secret::new("wrong".into()));
    let wrong = Redis::new(&c, 0).unwrap();
    assert!(
        matches!(wrong.get("k").await, Err(StoreError::Unavailable(_))),
        "a wrong password is an error"
    );
    let mut none = cfg(RedisTarget::Standalone(r.url()));
    none.timeout = Duration::from_millis(500);
    let anonymous = Redis::new(&none, 0).unwrap();
    assert!(
        anonymous
            .put("k", b"v", Duration::from_secs(5))
            .await
            .is_err(),
        "no AUTH, no access"
    );
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca_keeps_the_contract_and_refuses_an_untrusted_server() {
    let r = harness::Redis::start_with(RedisOptions {
        password: None,
        tls: true,
    })
    .await;
    assert!(r.url().starts_with("rediss://"));
    let mut c = cfg(RedisTarget::Standalone(r.url()));
    c.ca_pem = Some(r.ca_pem().unwrap().into_bytes());
    conformance::run(Arc::new(Redis::new(&c, 0).unwrap())).await;

    // Without the CA the server's certificate is not trusted: no connection.
    c.ca_pem = None;
    let untrusted = Redis::new(&c, 0).unwrap();
    assert!(
        matches!(untrusted.get("k").await, Err(StoreError::Unavailable(_))),
        "an untrusted certificate is refused"
    );
}

#[tokio::test]
async fn redis_through_sentinel_keeps_the_store_contract() {
    let s = Sentinel::start().await;
    let store = Redis::new(
        &cfg(RedisTarget::Sentinel {
            sentinels: vec![s.sentinel_url()],
            master: harness::MASTER_NAME.into(),
        }),
        0,
    )
    .unwrap();
    let store = Arc::new(store);
    conformance::run(store.clone()).await;
    // The data went to the master the sentinel named.
    store
        .put("where", b"master", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.master.cli(&["GET", "sg-test:where"]).await, "master");

    let wrong = Redis::new(
        &cfg(RedisTarget::Sentinel {
            sentinels: vec![s.sentinel_url()],
            master: "no-such-master".into(),
        }),
        0,
    )
    .unwrap();
    assert!(
        wrong.get("k").await.is_err(),
        "an unknown master name is an error"
    );
}

#[tokio::test]
async fn redis_cluster_keeps_the_store_contract() {
    let c = Cluster::start().await;
    let store = Redis::new(&cfg(RedisTarget::Cluster(c.urls())), 0).unwrap();
    conformance::run(Arc::new(store)).await;
    // Keys spread over the nodes' slots: more than one node holds some.
    let store = Redis::new(&cfg(RedisTarget::Cluster(c.urls())), 0).unwrap();
    for n in 0..30 {
        store
            .put(&format!("spread-{n}"), b"x", Duration::from_secs(60))
            .await
            .unwrap();
    }
    let mut holding = 0;
    for port in &c.ports {
        let node = harness::node_cli(*port, &["DBSIZE"]).await;
        holding += usize::from(node != "0");
    }
    assert!(holding > 1, "keys land on several cluster nodes");
}
