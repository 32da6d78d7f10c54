//! The contract every `Store` must keep, as one suite that the memory store's unit test and
//! the Redis integration tests (standalone, AUTH, TLS, Sentinel, Cluster) all run. Public so
//! that both can reach it; it only reads and writes keys under a fresh random prefix.

use std::sync::Arc;
use std::time::Duration;

use super::Store;

const LONG: Duration = Duration::from_secs(60);

/// Runs every check against `store`; panics with the broken rule.
pub async fn run<S: Store + 'static>(store: Arc<S>) {
    let p = format!("conf-{}:", crate::keys::random_token::<6>());
    let k = |s: &str| format!("{p}{s}");

    // save, load, overwrite, delete
    assert_eq!(
        store.get(&k("a")).await.unwrap(),
        None,
        "absent key loads as None"
    );
    store.put(&k("a"), b"one", LONG).await.unwrap();
    assert_eq!(
        store.get(&k("a")).await.unwrap().as_deref(),
        Some(&b"one"[..]),
        "put then get"
    );
    store.put(&k("a"), b"two", LONG).await.unwrap();
    assert_eq!(
        store.get(&k("a")).await.unwrap().as_deref(),
        Some(&b"two"[..]),
        "put replaces"
    );
    let binary: Vec<u8> = (0..=255u8).collect();
    store.put(&k("bin"), &binary, LONG).await.unwrap();
    assert_eq!(
        store.get(&k("bin")).await.unwrap(),
        Some(binary),
        "values are bytes, not text"
    );
    assert!(
        store.delete(&k("a")).await.unwrap(),
        "delete reports a present key"
    );
    assert!(
        !store.delete(&k("a")).await.unwrap(),
        "delete reports an absent key"
    );
    assert_eq!(
        store.get(&k("a")).await.unwrap(),
        None,
        "deleted key is gone"
    );

    // expiry and touch
    store
        .put(&k("short"), b"x", Duration::from_millis(300))
        .await
        .unwrap();
    store
        .put(&k("kept"), b"x", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        store.touch(&k("kept"), LONG).await.unwrap(),
        "touch reports a present key"
    );
    assert!(
        !store.touch(&k("never"), LONG).await.unwrap(),
        "touch reports an absent key"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        store.get(&k("short")).await.unwrap(),
        None,
        "entries expire after their ttl"
    );
    assert!(
        store.get(&k("kept")).await.unwrap().is_some(),
        "touch extends the ttl"
    );
    assert!(
        !store.touch(&k("short"), LONG).await.unwrap(),
        "an expired key cannot be touched back"
    );

    // once-only: exactly one of many concurrent writers wins; the loser never overwrites
    let mut tasks = Vec::new();
    for n in 0..32u8 {
        let s = store.clone();
        let key = k("once");
        tasks.push(tokio::spawn(async move {
            s.put_new(&key, &[n], LONG).await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(
        winners, 1,
        "put_new: exactly one of 32 concurrent writers wins"
    );
    let held = store
        .get(&k("once"))
        .await
        .unwrap()
        .expect("the winner's value");
    assert!(
        !store.put_new(&k("once"), b"late", LONG).await.unwrap(),
        "a later put_new loses"
    );
    assert_eq!(
        store.get(&k("once")).await.unwrap(),
        Some(held),
        "a losing put_new writes nothing"
    );
    store
        .put_new(&k("brief"), b"x", Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        store.put_new(&k("brief"), b"y", LONG).await.unwrap(),
        "put_new wins once the old entry expired"
    );

    // a lock: taken, refused while held, free again once released
    assert!(
        store.put_new(&k("lock"), b"A", LONG).await.unwrap(),
        "lock taken"
    );
    assert!(
        !store.put_new(&k("lock"), b"B", LONG).await.unwrap(),
        "lock held"
    );
    assert!(store.delete(&k("lock")).await.unwrap(), "lock released");
    assert!(
        store.put_new(&k("lock"), b"B", LONG).await.unwrap(),
        "lock free after release"
    );

    // indexes: what revocation by sid / sub walks
    for m in ["s1", "s2", "s3"] {
        store.index_add(&k("sub:alice"), m, LONG).await.unwrap();
    }
    store.index_add(&k("sub:alice"), "s2", LONG).await.unwrap();
    store.index_add(&k("sid:x"), "s1", LONG).await.unwrap();
    let mut taken = store.index_take(&k("sub:alice")).await.unwrap();
    taken.sort();
    assert_eq!(
        taken,
        ["s1", "s2", "s3"],
        "index_take returns each member once"
    );
    assert!(
        store.index_take(&k("sub:alice")).await.unwrap().is_empty(),
        "index_take empties the index"
    );
    assert_eq!(
        store.index_take(&k("sid:x")).await.unwrap(),
        ["s1"],
        "indexes are independent"
    );
    store.index_add(&k("sub:alice"), "s4", LONG).await.unwrap();
    assert_eq!(
        store.index_take(&k("sub:alice")).await.unwrap(),
        ["s4"],
        "a member added after a take starts a new set"
    );
    store
        .index_add(&k("sub:brief"), "s5", Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        store.index_take(&k("sub:brief")).await.unwrap().is_empty(),
        "indexes expire"
    );

    for key in ["bin", "kept", "once", "brief", "lock"] {
        store.delete(&k(key)).await.unwrap();
    }
}
