//! A 3-server ZooKeeper ensemble on loopback ports: when the member the store's
//! session is connected to dies, every call goes on working within its timeout
//! (the session moves to another member), and every write made before is there.

mod zookeeper;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libkv_core::{open, Key, OpenOptions, Store};

fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

fn d(s: &str) -> Key {
    Key::dir(s).unwrap()
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// The member the store's session is on: the one with a session of a client
/// (`cons` lists sessions as `sid=0x...`).
fn connected(ensemble: &zookeeper::Ensemble) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let with: Vec<usize> = (0..ensemble.members.len())
            .filter(|&i| ensemble.members[i].running() && ensemble.connections(i) > 0)
            .collect();
        if with.len() == 1 {
            return with[0];
        }
        assert!(Instant::now() < deadline, "sessions on {with:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(ensemble: &zookeeper::Ensemble, i: usize) -> String {
    zookeeper::four_letters(ensemble.members[i].client_port, "srvr")
        .and_then(|a| {
            a.lines()
                .find_map(|l| l.strip_prefix("Mode: ").map(str::to_owned))
        })
        .unwrap_or_else(|| "down".into())
}

/// Runs `call`, which must work within the store's timeout; answers how long it took.
fn timed<T>(what: &str, call: impl FnOnce() -> libkv_core::Result<T>) -> (T, Duration) {
    let started = Instant::now();
    let value = call().unwrap_or_else(|e| panic!("{what}: {e}"));
    let took = started.elapsed();
    assert!(took < TIMEOUT, "{what} took {took:?}");
    (value, took)
}

/// Every kind of call, right after the member the session was on died.
fn every_call_works(store: &Arc<dyn Store>, round: usize, keys: &[(String, Vec<u8>, u64)]) {
    let mut times = Vec::new();
    let mut t = |what: &str, took: Duration| times.push(format!("{what} {took:.0?}"));
    let (got, took) = timed("get", || store.get(&k(&keys[0].0)));
    assert_eq!(got.as_deref(), Some(&keys[0].1[..]));
    t("get", took);
    let (listed, took) = timed("atomic_list", || store.atomic_list(&d("/data")));
    t("atomic_list", took);
    let expected: Vec<(String, Vec<u8>, u64)> = keys
        .iter()
        .map(|(key, value, seq)| (key["/data/".len()..].to_owned(), value.clone(), *seq))
        .collect();
    let listed: Vec<(String, Vec<u8>, u64)> = listed
        .into_iter()
        .map(|(key, v)| (key, v.value, v.sequence))
        .collect();
    assert_eq!(listed, expected, "every write made before is there");
    let new = format!("/round{round}/new");
    let (_, took) = timed("put", || store.put(&k(&new), b"v"));
    t("put", took);
    let (created, took) = timed("atomic_create", || {
        store.atomic_create(&k(&format!("/round{round}/once")), b"1")
    });
    assert!(created);
    t("atomic_create", took);
    let (seq, took) = timed("atomic_get", || store.atomic_get(&k(&new)));
    t("atomic_get", took);
    let seq = seq.unwrap().sequence;
    let (swapped, took) = timed("atomic_put", || store.atomic_put(&k(&new), b"w", seq));
    assert!(swapped);
    t("atomic_put", took);
    let (ttl, took) = timed("put_ttl", || {
        store.put_ttl(
            &k(&format!("/round{round}/ttl")),
            b"t",
            Some(0),
            Duration::from_secs(60),
        )
    });
    assert!(ttl.is_some());
    t("put_ttl", took);
    let (seq, _) = timed("atomic_get", || store.atomic_get(&k(&new)));
    let (deleted, took) = timed("atomic_delete", || {
        store.atomic_delete(&k(&new), seq.unwrap().sequence)
    });
    assert!(deleted);
    t("atomic_delete", took);
    let (_, took) = timed("deletetree", || {
        store.deletetree(&d(&format!("/round{round}")))
    });
    t("deletetree", took);
    let (_, took) = timed("info", || store.info());
    t("info", took);
    eprintln!("round {round}: {}", times.join(", "));
}

#[test]
fn calls_go_on_when_the_connected_member_dies() {
    let started = Instant::now();
    let ensemble = zookeeper::Ensemble::start("cluster", 3);
    eprintln!("ensemble up in {:?}", started.elapsed());
    let store = open(
        &ensemble.url(&[0, 1, 2], "/cluster"),
        &OpenOptions {
            timeout: TIMEOUT,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let mut keys = Vec::new();
    for i in 0..50 {
        let key = format!("/data/k{i:02}");
        let value = format!("value {i}").into_bytes();
        store.put(&k(&key), &value).unwrap();
        let seq = store.atomic_get(&k(&key)).unwrap().unwrap().sequence;
        keys.push((key, value, seq));
    }
    for round in 0..2 {
        let victim = connected(&ensemble);
        let modes: Vec<String> = (0..3).map(|i| mode(&ensemble, i)).collect();
        eprintln!("round {round}: killing member {victim} ({modes:?})");
        ensemble.members[victim].kill();
        every_call_works(&store, round, &keys);
        let now = connected(&ensemble);
        assert_ne!(now, victim);
        eprintln!("round {round}: the session moved to member {now}");
        ensemble.members[victim].restart();
    }
    ensemble.stop_all();
    eprintln!("whole test: {:?}", started.elapsed());
}
