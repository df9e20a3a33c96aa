//! The behaviour every store must show, written once and run against each store by
//! `conformance_tests!`. Each check gets a fresh, empty store.

#![allow(dead_code)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use libkv_core::watch::{self, Event, EventKind, Target, Watcher};
use libkv_core::{Key, Lock, Store, Versioned};

pub fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

pub fn d(s: &str) -> Key {
    Key::dir(s).unwrap()
}

pub fn sequence(store: &dyn Store, key: &str) -> u64 {
    store.atomic_get(&k(key)).unwrap().expect(key).sequence
}

pub fn get_put_exists_delete(store: &dyn Store) {
    let key = k("/app/password");
    assert_eq!(store.get(&key).unwrap(), None);
    assert!(!store.exists(&key).unwrap());
    store.put(&key, b"hunter2").unwrap();
    assert_eq!(store.get(&key).unwrap().as_deref(), Some(&b"hunter2"[..]));
    assert!(store.exists(&key).unwrap());
    store.put(&key, b"changed").unwrap();
    assert_eq!(store.get(&key).unwrap().as_deref(), Some(&b"changed"[..]));
    store.delete(&key).unwrap();
    assert_eq!(store.get(&key).unwrap(), None);
    assert!(!store.exists(&key).unwrap());
    store.delete(&key).unwrap();
    store.delete(&k("/never/there")).unwrap();
}

pub fn values_are_bytes_exactly(store: &dyn Store) {
    let all: Vec<u8> = (0..=255u8).collect();
    // Below Consul's default 512 KiB value limit, so every store takes it.
    let big: Vec<u8> = (0..400 * 1024).map(|i: u32| (i * 7 % 251) as u8).collect();
    for (key, value) in [
        ("/v/empty", Vec::new()),
        ("/v/all-bytes", all),
        ("/v/big", big),
        ("/v/newline", b"line\n".to_vec()),
    ] {
        store.put(&k(key), &value).unwrap();
        assert_eq!(store.get(&k(key)).unwrap(), Some(value), "{key}");
    }
    assert!(store.exists(&k("/v/empty")).unwrap());
}

pub fn list_is_relative_sorted_and_below(store: &dyn Store) {
    for key in ["/l/b", "/l/a/x", "/l/a/y/z", "/lz", "/l2/q", "/other"] {
        store.put(&k(key), key.as_bytes()).unwrap();
    }
    let listed = store.list(&d("/l")).unwrap();
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a/x", "a/y/z", "b"]);
    assert_eq!(listed[0].1, b"/l/a/x");
    assert_eq!(store.list(&d("/l/")).unwrap(), listed);
    let nested: Vec<String> = store
        .list(&d("/l/a"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(nested, ["x", "y/z"]);
    assert!(store.list(&d("/nothing/here")).unwrap().is_empty());
    assert!(
        store.list(&d("/l/b")).unwrap().is_empty(),
        "a key is not a directory"
    );
    let everything: Vec<String> = store
        .list(&d("/"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        everything,
        ["l/a/x", "l/a/y/z", "l/b", "l2/q", "lz", "other"]
    );
}

pub fn deletetree_removes_only_below(store: &dyn Store) {
    for key in ["/t/a", "/t/b/c", "/t/b/d/e", "/tt", "/t2/x"] {
        store.put(&k(key), b"v").unwrap();
    }
    store.deletetree(&d("/t/b")).unwrap();
    let left: Vec<String> = store
        .list(&d("/"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["t/a", "t2/x", "tt"]);
    store.deletetree(&d("/t")).unwrap();
    let left: Vec<String> = store
        .list(&d("/"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["t2/x", "tt"]);
    store.deletetree(&d("/absent")).unwrap();
    store.deletetree(&d("/")).unwrap();
    assert!(store.list(&d("/")).unwrap().is_empty());
    // The store still works after everything is gone.
    store.put(&k("/t/a"), b"again").unwrap();
    assert_eq!(
        store.get(&k("/t/a")).unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

pub fn atomic_create_only_once(store: &dyn Store) {
    let key = k("/lock/holder");
    assert!(store.atomic_create(&key, b"node1").unwrap());
    assert!(!store.atomic_create(&key, b"node2").unwrap());
    assert_eq!(store.get(&key).unwrap().as_deref(), Some(&b"node1"[..]));
}

pub fn atomic_get_put_delete(store: &dyn Store) {
    let key = k("/cas/counter");
    assert_eq!(store.atomic_get(&key).unwrap(), None);
    assert!(
        store.atomic_put(&key, b"1", 0).unwrap(),
        "previous 0 creates"
    );
    let v1 = store.atomic_get(&key).unwrap().unwrap();
    assert_eq!(v1.value, b"1");
    assert!(v1.sequence > 0);
    assert!(
        !store.atomic_put(&key, b"x", 0).unwrap(),
        "previous 0 fails when present"
    );
    assert!(store.atomic_put(&key, b"2", v1.sequence).unwrap());
    let v2 = store.atomic_get(&key).unwrap().unwrap();
    assert!(v2.sequence > v1.sequence);
    assert!(
        !store.atomic_put(&key, b"3", v1.sequence).unwrap(),
        "stale previous"
    );
    assert_eq!(store.get(&key).unwrap().as_deref(), Some(&b"2"[..]));
    store.put(&key, b"plain").unwrap();
    let v3 = store.atomic_get(&key).unwrap().unwrap();
    assert!(v3.sequence > v2.sequence, "a plain put moves the sequence");
    assert!(!store.atomic_put(&key, b"4", v2.sequence).unwrap());
    assert!(
        !store.atomic_delete(&key, v2.sequence).unwrap(),
        "stale delete"
    );
    assert!(
        !store.atomic_delete(&key, 0).unwrap(),
        "previous 0 while present"
    );
    assert!(store.exists(&key).unwrap());
    assert!(store.atomic_delete(&key, v3.sequence).unwrap());
    assert!(!store.exists(&key).unwrap());
    assert!(
        store.atomic_delete(&key, 0).unwrap(),
        "absent and previous empty"
    );
    assert!(
        !store.atomic_delete(&key, v3.sequence).unwrap(),
        "absent, previous not empty"
    );
    assert!(!store.atomic_put(&k("/cas/absent/deep"), b"x", 5).unwrap());
    assert!(!store.exists(&k("/cas/absent/deep")).unwrap());
}

pub fn sequences_are_never_reused(store: &dyn Store) {
    let key = k("/aba/key");
    store.put(&key, b"a").unwrap();
    let first = sequence(store, "/aba/key");
    store.delete(&key).unwrap();
    store.put(&key, b"a").unwrap();
    let second = sequence(store, "/aba/key");
    assert!(second > first, "{second} > {first}");
    assert!(
        !store.atomic_put(&key, b"b", first).unwrap(),
        "stale previous after re-create"
    );
    assert!(!store.atomic_delete(&key, first).unwrap());
    // Another key written later gets a larger sequence too: the counter is store-wide.
    store.put(&k("/aba/other"), b"x").unwrap();
    assert!(sequence(store, "/aba/other") > second);
}

pub fn atomic_list_matches_atomic_get(store: &dyn Store) {
    for key in ["/al/a", "/al/b/c"] {
        store.put(&k(key), key.as_bytes()).unwrap();
    }
    let listed = store.atomic_list(&d("/al")).unwrap();
    assert_eq!(listed.len(), 2);
    for (rel, Versioned { value, sequence }) in listed {
        let full = format!("/al/{rel}");
        let got = store.atomic_get(&k(&full)).unwrap().unwrap();
        assert_eq!(got.value, value);
        assert_eq!(got.sequence, sequence);
        assert_eq!(value, full.as_bytes());
    }
    assert!(store.atomic_list(&d("/none")).unwrap().is_empty());
}

pub fn info_names_provider_and_url(store: &dyn Store) {
    let info = format!("{:?}", store.info().unwrap());
    assert!(info.contains(store.provider()), "{info}");
    assert!(info.contains(store.url()), "{info}");
}

/// Of many threads racing `atomic_put` with the same previous, exactly one wins.
pub fn cas_race_has_one_winner(store: Arc<dyn Store>) {
    let key = k("/race/cas");
    store.put(&key, b"start").unwrap();
    let previous = sequence(&*store, "/race/cas");
    let threads = 16;
    let barrier = Arc::new(Barrier::new(threads));
    let wins: usize = (0..threads)
        .map(|i| {
            let (store, barrier, key) = (store.clone(), barrier.clone(), key.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .atomic_put(&key, format!("t{i}").as_bytes(), previous)
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap() as usize)
        .sum();
    assert_eq!(wins, 1);
    let create_key = k("/race/create");
    let barrier = Arc::new(Barrier::new(threads));
    let created: usize = (0..threads)
        .map(|i| {
            let (store, barrier, key) = (store.clone(), barrier.clone(), create_key.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .atomic_create(&key, format!("t{i}").as_bytes())
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap() as usize)
        .sum();
    assert_eq!(created, 1);
}

/// Adds one to the counter at `key` with an atomic_get/atomic_put retry loop.
pub fn increment(store: &dyn Store, key: &Key) {
    loop {
        let (count, previous) = match store.atomic_get(key).unwrap() {
            Some(v) => (
                std::str::from_utf8(&v.value)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
                v.sequence,
            ),
            None => (0, 0),
        };
        if store
            .atomic_put(key, (count + 1).to_string().as_bytes(), previous)
            .unwrap()
        {
            return;
        }
    }
}

/// Threads incrementing one counter end with the exact count.
pub fn counter_is_exact_under_threads(store: Arc<dyn Store>) {
    let key = k("/race/counter");
    let (threads, each) = (8, 50);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            std::thread::spawn(move || {
                for _ in 0..each {
                    increment(&*store, &key);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let count = store.get(&key).unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&count).unwrap(),
        (threads * each).to_string()
    );
}

/// 300 entries (more than one etcd or Consul transaction holds, one larger than a
/// Consul transaction's byte budget alone), stored by one `put_many`.
pub fn put_many_stores_every_entry(store: &dyn Store) {
    let mut entries: Vec<(Key, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                k(&format!("/many/k{i:03}")),
                format!("value {i}").into_bytes(),
            )
        })
        .collect();
    entries.push((k("/many/big"), vec![7u8; 300 * 1024]));
    store.put(&k("/many/k000"), b"overwritten").unwrap();
    store.put_many(&entries).unwrap();
    let mut expected: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(key, v)| (key.as_str()["/many/".len()..].to_owned(), v.clone()))
        .collect();
    expected.sort();
    assert_eq!(store.list(&d("/many")).unwrap(), expected);
    store.put_many(&[]).unwrap();
}

/// `scan` hands over what `list` has, in key order, in pages of the size asked,
/// each with the count from it on.
pub fn scan_pages_through_the_listing(store: &dyn Store) {
    let entries: Vec<(Key, Vec<u8>)> = (0..25)
        .map(|i| (k(&format!("/scan/k{i:02}")), vec![i as u8]))
        .collect();
    store.put_many(&entries).unwrap();
    store.put(&k("/scanned-not"), b"x").unwrap();
    let mut pages = Vec::new();
    store
        .scan(&d("/scan"), 10, &mut |page| {
            pages.push(page);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        pages
            .iter()
            .map(|p| (p.entries.len(), p.remaining))
            .collect::<Vec<_>>(),
        [(10, 25), (10, 15), (5, 5)]
    );
    let scanned: Vec<(String, Vec<u8>)> = pages.into_iter().flat_map(|p| p.entries).collect();
    assert_eq!(scanned, store.list(&d("/scan")).unwrap());
    let mut none = 0;
    store
        .scan(&d("/absent"), 10, &mut |_| {
            none += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(none, 0);
}

/// A dump of the store loaded into a mock store, copied back below another
/// directory-less store, compares equal byte for byte; a second copy writes
/// nothing and leaves every sequence as it was.
pub fn transfers_keep_bytes_and_sequences(store: &dyn Store) {
    use libkv_core::transfer::{self, Options, Silent};
    let not_text = vec![0xff, 0x00, 0xfe];
    store.put(&k("/t/text"), b"plain text").unwrap();
    store.put(&k("/t/bytes"), &not_text).unwrap();
    store
        .put(&k("/t/deep/er"), br#"{"libkv":1,"value":8080}"#)
        .unwrap();
    let mut dumped = Vec::new();
    let n = transfer::dump(store, &d("/t"), &mut dumped, Options::default(), &Silent).unwrap();
    assert_eq!(n, 3);
    let text = String::from_utf8(dumped.clone()).unwrap();
    assert!(
        text.contains(r#"{"key":"/t/bytes","base64":"/wD+"}"#),
        "{text}"
    );
    let mock = libkv_core::open("mock://", &libkv_core::OpenOptions::default()).unwrap();
    let loaded = transfer::load(&*mock, &mut &dumped[..], Options::default(), &Silent).unwrap();
    assert_eq!(loaded, 3);
    assert_eq!(mock.get(&k("/t/bytes")).unwrap(), Some(not_text));

    // Back into the store below /t: what is there already is left alone.
    store.put(&k("/t/text"), b"changed").unwrap();
    store.delete(&k("/t/deep/er")).unwrap();
    let untouched = sequence(store, "/t/bytes");
    let copied = transfer::copy(&*mock, store, &d("/t"), Options::default(), &Silent).unwrap();
    assert_eq!((copied.written, copied.unchanged), (2, 1));
    assert_eq!(sequence(store, "/t/bytes"), untouched);
    let compared = transfer::compare(&*mock, store, &d("/t"), Options::default(), &Silent).unwrap();
    assert!(compared.complete(), "{compared:?}");
    assert_eq!(compared.same, 3);
    let again = transfer::copy(&*mock, store, &d("/t"), Options::default(), &Silent).unwrap();
    assert_eq!((again.written, again.unchanged), (0, 3));
}

/// Generates one `#[test]` per conformance check, each on a fresh store from `$make`;
/// `conformance_tests!(coordination make())` adds the checks of keys that expire
/// and locks.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@plain $make;
            get_put_exists_delete, values_are_bytes_exactly, list_is_relative_sorted_and_below,
            deletetree_removes_only_below, atomic_create_only_once, atomic_get_put_delete,
            sequences_are_never_reused, atomic_list_matches_atomic_get, info_names_provider_and_url,
            put_many_stores_every_entry, scan_pages_through_the_listing,
            transfers_keep_bytes_and_sequences);
        $crate::conformance_tests!(@shared $make; cas_race_has_one_winner, counter_is_exact_under_threads);
    };
    (coordination $make:expr) => {
        $crate::conformance_tests!($make);
        $crate::conformance_tests!(@plain $make; ttl_keys_expire_and_rewrites_extend);
        $crate::conformance_tests!(@shared $make; locks_exclude_and_fences_grow,
            locks_renewed_are_kept_and_unrenewed_expire, locks_make_a_counter_exact,
            watch_sees_every_change_or_the_latest, watchtree_sees_puts_and_deletes_below,
            watch_from_a_sequence_starts_after_it, watches_do_not_wait_past_their_deadline);
    };
    (@plain $make:expr; $($name:ident),*) => {
        $(#[test]
        fn $name() {
            let (store, _guard) = $make;
            $crate::common::$name(&*store);
        })*
    };
    (@shared $make:expr; $($name:ident),*) => {
        $(#[test]
        fn $name() {
            let (store, _guard) = $make;
            $crate::common::$name(store);
        })*
    };
}

/// After another client wrote names below `/hosts` that no key can have, beside
/// the key `/hosts/web01` holding `10.0.0.1`: the store lists only that key, and
/// every name it lists can be read.
pub fn lists_only_keys(store: &dyn Store) {
    let expected = vec![("web01".to_owned(), b"10.0.0.1".to_vec())];
    assert_eq!(store.list(&d("/hosts")).unwrap(), expected);
    let listed: Vec<String> = store
        .atomic_list(&d("/"))
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(listed, ["hosts/web01"]);
    for (name, _) in store.list(&d("/")).unwrap() {
        assert!(store.get(&k(&format!("/{name}"))).unwrap().is_some());
    }
}

/// The shortest ttl the store keeps, and how long after it the store may still
/// show the key (etcd: its leader expires leases in rounds; Consul keeps a key's
/// deadline in its flags, which every read checks).
fn ttl_of(store: &dyn Store) -> (Duration, Duration) {
    let slack = match store.provider() {
        "etcd" => Duration::from_millis(1500),
        _ => Duration::from_millis(100),
    };
    (Duration::from_secs(store.ttl_bounds().0.max(1)), slack)
}

/// As `ttl_of`, for a lock not renewed: how long after its ttl it may stay
/// taken. A Consul lock is a session, which Consul ends somewhere between its
/// ttl and twice its ttl.
fn lock_ttl_of(store: &dyn Store) -> (Duration, Duration) {
    let (ttl, slack) = ttl_of(store);
    match store.provider() {
        "consul" => (ttl, ttl + slack),
        _ => (ttl, slack),
    }
}

fn sleep_until(at: Instant) {
    if let Some(left) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

fn visible(store: &dyn Store, key: &str) -> [bool; 5] {
    let rel = &key[5..];
    [
        store.get(&k(key)).unwrap().is_some(),
        store.exists(&k(key)).unwrap(),
        store.atomic_get(&k(key)).unwrap().is_some(),
        store
            .list(&d("/ttl"))
            .unwrap()
            .iter()
            .any(|(n, _)| n == rel),
        store
            .atomic_list(&d("/ttl"))
            .unwrap()
            .iter()
            .any(|(n, _)| n == rel),
    ]
}

pub fn ttl_keys_expire_and_rewrites_extend(store: &dyn Store) {
    let (ttl, slack) = ttl_of(store);
    let start = Instant::now();
    assert!(store
        .put_ttl(&k("/ttl/a"), b"a", None, ttl)
        .unwrap()
        .is_some());
    let b = store
        .put_ttl(&k("/ttl/b"), b"b", Some(0), ttl)
        .unwrap()
        .expect("created");
    assert_eq!(sequence(store, "/ttl/b"), b);
    assert_eq!(
        store.put_ttl(&k("/ttl/b"), b"b2", Some(0), ttl).unwrap(),
        None
    );
    assert_eq!(
        store
            .put_ttl(&k("/ttl/b"), b"b2", Some(b + 1000), ttl)
            .unwrap(),
        None
    );
    assert_eq!(store.get(&k("/ttl/b")).unwrap().as_deref(), Some(&b"b"[..]));
    // A plain write makes a key permanent; a ttl write makes a plain key expire.
    store.put_ttl(&k("/ttl/c"), b"c", None, ttl).unwrap();
    store.put(&k("/ttl/c"), b"c for good").unwrap();
    store.put(&k("/ttl/d"), b"d").unwrap();
    store.put_ttl(&k("/ttl/d"), b"d", None, ttl).unwrap();

    sleep_until(start + ttl - Duration::from_millis(250));
    assert_eq!(visible(store, "/ttl/a"), [true; 5], "before its ttl");
    assert_eq!(visible(store, "/ttl/b"), [true; 5], "before its ttl");
    // A rewrite keeps it another ttl from now.
    store.put_ttl(&k("/ttl/d"), b"d2", None, ttl).unwrap();

    sleep_until(start + ttl + slack);
    assert_eq!(visible(store, "/ttl/a"), [false; 5], "past its ttl");
    assert_eq!(visible(store, "/ttl/b"), [false; 5], "past its ttl");
    assert_eq!(visible(store, "/ttl/c"), [true; 5]);
    assert_eq!(
        visible(store, "/ttl/d"),
        [true; 5],
        "rewritten before its ttl"
    );
    // An expired key is absent to the atomic functions too, and its sequence is
    // never matched again.
    assert!(!store.atomic_put(&k("/ttl/b"), b"x", b).unwrap());
    assert!(store.atomic_create(&k("/ttl/b"), b"again").unwrap());
    assert!(sequence(store, "/ttl/b") > b);
    assert!(store
        .put_ttl(&k("/ttl/a"), b"a2", Some(0), ttl)
        .unwrap()
        .is_some());
    store.deletetree(&d("/ttl")).unwrap();
}

fn acquire(
    store: &Arc<dyn Store>,
    key: &str,
    ttl: Duration,
    timeout: Duration,
    renew: bool,
) -> libkv_core::Result<Lock> {
    Lock::acquire("newlock", Arc::clone(store), k(key), ttl, timeout, renew)
}

pub fn locks_exclude_and_fences_grow(store: Arc<dyn Store>) {
    let (ttl, _) = ttl_of(&*store);
    let ttl = ttl.max(Duration::from_secs(30).min(Duration::from_secs(store.ttl_bounds().1)));
    let first = acquire(&store, "/locks/a", ttl, Duration::from_millis(100), true).unwrap();
    assert!(first.held());
    assert_eq!(
        store.get(&k("/locks/a")).unwrap().as_deref(),
        Some(first.owner().as_bytes()),
        "the lock key says who holds it"
    );
    let asked = Instant::now();
    let err = acquire(&store, "/locks/a", ttl, Duration::from_millis(300), true)
        .err()
        .expect("held by another");
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(err.class(), libkv_core::ErrorClass::LockTimeout, "{err}");
    assert!(err.to_string().contains("/locks/a"), "{err}");
    // Another key is another lock.
    let other = acquire(&store, "/locks/b", ttl, Duration::from_millis(100), false).unwrap();
    first.unlock().unwrap();
    first.unlock().unwrap();
    assert!(!first.held());
    assert_eq!(store.get(&k("/locks/a")).unwrap(), None);
    let second = acquire(&store, "/locks/a", ttl, Duration::from_millis(100), true).unwrap();
    assert!(
        second.fence() > first.fence(),
        "{} then {}",
        first.fence(),
        second.fence()
    );
    assert_ne!(second.owner(), first.owner());
    // Released by its owner only.
    assert!(!store.unlock(&k("/locks/a"), first.owner()).unwrap());
    assert!(second.held());
    drop(second);
    assert_eq!(
        store.get(&k("/locks/a")).unwrap(),
        None,
        "dropping releases"
    );
    other.unlock().unwrap();
}

pub fn locks_renewed_are_kept_and_unrenewed_expire(store: Arc<dyn Store>) {
    let (ttl, slack) = lock_ttl_of(&*store);
    let kept = acquire(&store, "/locks/kept", ttl, Duration::from_millis(100), true).unwrap();
    let loose = acquire(
        &store,
        "/locks/loose",
        ttl,
        Duration::from_millis(100),
        false,
    )
    .unwrap();
    let taken = Instant::now();
    // A waiter gets the unrenewed lock once its ttl has passed, not before.
    let next = acquire(&store, "/locks/loose", ttl, ttl * 3 + slack, true).unwrap();
    let waited = taken.elapsed();
    assert!(
        waited + Duration::from_millis(50) >= ttl,
        "taken after {waited:?}"
    );
    assert!(
        waited <= ttl + slack + Duration::from_millis(500),
        "taken after {waited:?}"
    );
    assert!(next.fence() > loose.fence());
    assert!(!loose.held());
    assert!(loose.lost().is_some());
    let err = loose.unlock().unwrap_err();
    assert_eq!(err.class(), libkv_core::ErrorClass::LockLost, "{err}");
    assert!(
        next.held(),
        "the old holder's unlock must not release the new one's"
    );
    // The renewed lock is still held, well past its ttl.
    sleep_until(taken + ttl * 2 + slack);
    assert!(kept.held());
    assert!(kept.lost().is_none());
    assert!(acquire(
        &store,
        "/locks/kept",
        ttl,
        Duration::from_millis(200),
        false
    )
    .is_err());
    kept.unlock().unwrap();
    next.unlock().unwrap();
}

pub fn locks_make_a_counter_exact(store: Arc<dyn Store>) {
    let (ttl, _) = ttl_of(&*store);
    let threads = 4;
    let rounds = 10;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut fences = Vec::new();
                for _ in 0..rounds {
                    let lock = acquire(
                        &store,
                        "/locks/counter",
                        ttl * 5,
                        Duration::from_secs(60),
                        true,
                    )
                    .unwrap();
                    let n: u64 = store
                        .get(&k("/counter"))
                        .unwrap()
                        .map_or(0, |b| String::from_utf8(b).unwrap().parse().unwrap());
                    std::thread::sleep(Duration::from_millis(2));
                    store
                        .put(&k("/counter"), n.saturating_add(1).to_string().as_bytes())
                        .unwrap();
                    fences.push(lock.fence());
                    lock.unlock().unwrap();
                }
                fences
            })
        })
        .collect();
    let mut fences: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        store.get(&k("/counter")).unwrap(),
        Some((threads * rounds).to_string().into_bytes())
    );
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(
        fences.len(),
        threads * rounds,
        "every acquisition has its own fence"
    );
}

/// A watch of `key`, or of everything below it (`tree`).
pub fn watcher(
    store: &Arc<dyn Store>,
    key: &str,
    tree: bool,
    from: Option<u64>,
) -> Box<dyn Watcher> {
    let key = if tree { d(key) } else { k(key) };
    watch::open(store, Target { key, tree }, from).unwrap()
}

/// Events from `watcher` until one satisfies `done` (that one included); fails
/// when none did within 10 s.
pub fn events_until(watcher: &mut dyn Watcher, done: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        let batch = watcher
            .next(Instant::now() + Duration::from_millis(100))
            .unwrap();
        let found = batch.iter().any(&done);
        events.extend(batch);
        if found {
            return events;
        }
    }
    panic!("no awaited event within 10 s; events: {events:?}");
}

fn summary(events: &[Event]) -> Vec<(EventKind, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.key.clone(),
                String::from_utf8_lossy(&e.value).into_owned(),
            )
        })
        .collect()
}

/// The key is changed 5 times in a row, then 5 more, and deleted; after each burst
/// the watcher catches up. A store that keeps every change hands out each one, in
/// order; one that coalesces hands out some of them, in order, and always the last
/// of each burst. Sequences only grow, and each put's is the one `atomic_get` read.
pub fn watch_sees_every_change_or_the_latest(store: Arc<dyn Store>) {
    let key = k("/w/key");
    store.put(&key, b"before").unwrap();
    store.put(&k("/w/other"), b"x").unwrap();
    let mut w = watcher(&store, "/w/key", false, None);
    let mut all = Vec::new();
    let mut written = Vec::new();
    for burst in 0..2 {
        for i in 0..5 {
            let value = format!("v{}", burst * 5 + i);
            store.put(&key, value.as_bytes()).unwrap();
            store.put(&k("/w/other"), value.as_bytes()).unwrap();
            written.push((value, sequence(&*store, "/w/key")));
        }
        let last = written.last().unwrap().0.clone();
        all.extend(events_until(&mut *w, |e| e.value == last.as_bytes()));
    }
    store.delete(&key).unwrap();
    all.extend(events_until(&mut *w, |e| e.kind == EventKind::Delete));
    assert!(all.iter().all(|e| e.key == "/w/key"), "{:?}", summary(&all));
    let (delete, puts) = all.split_last().unwrap();
    assert_eq!(delete.kind, EventKind::Delete);
    assert!(delete.sequence >= written.last().unwrap().1);
    let seen: Vec<(String, u64)> = puts
        .iter()
        .map(|e| (String::from_utf8(e.value.clone()).unwrap(), e.sequence))
        .collect();
    if w.coalesces() {
        assert!(
            seen.contains(&written[4]) && seen.contains(&written[9]),
            "{seen:?}"
        );
        let mut rest = written.iter();
        assert!(
            seen.iter().all(|s| rest.any(|w| w == s)),
            "not in the order written: {seen:?}"
        );
    } else {
        assert_eq!(seen, written);
    }
    // Nothing more came.
    assert!(w
        .next(Instant::now() + Duration::from_millis(300))
        .unwrap()
        .is_empty());
}

/// A watch of a directory sees puts and deletes of keys at any depth below it,
/// nothing of keys beside it.
pub fn watchtree_sees_puts_and_deletes_below(store: Arc<dyn Store>) {
    store.put(&k("/t/old"), b"0").unwrap();
    let mut w = watcher(&store, "/t", true, None);
    store.put(&k("/tx"), b"beside").unwrap();
    store.put(&k("/t/a"), b"1").unwrap();
    let mut events = events_until(&mut *w, |e| e.key == "/t/a");
    store.put(&k("/t/b/c"), b"2").unwrap();
    events.extend(events_until(&mut *w, |e| e.key == "/t/b/c"));
    store.delete(&k("/t/old")).unwrap();
    events.extend(events_until(&mut *w, |e| e.key == "/t/old"));
    store.deletetree(&d("/t")).unwrap();
    events.extend(events_until(&mut *w, |e| {
        e.key == "/t/b/c" && e.kind == EventKind::Delete
    }));
    let mut deleted: Vec<String> = events
        .iter()
        .filter(|e| e.kind == EventKind::Delete && e.key != "/t/old")
        .map(|e| e.key.clone())
        .collect();
    if deleted.len() < 2 {
        deleted.extend(
            events_until(&mut *w, |e| e.kind == EventKind::Delete)
                .into_iter()
                .map(|e| e.key),
        );
    }
    deleted.sort();
    use EventKind::*;
    assert_eq!(
        summary(&events[..3]),
        [
            (Put, "/t/a".into(), "1".into()),
            (Put, "/t/b/c".into(), "2".into()),
            (Delete, "/t/old".into(), "".into())
        ]
    );
    assert_eq!(deleted, ["/t/a", "/t/b/c"]);
}

/// A watch from a sequence starts with what came after it: every change on a
/// store that keeps them, the latest on one that coalesces.
pub fn watch_from_a_sequence_starts_after_it(store: Arc<dyn Store>) {
    let key = k("/f/key");
    store.put(&key, b"1").unwrap();
    let first = sequence(&*store, "/f/key");
    store.put(&key, b"2").unwrap();
    store.put(&key, b"3").unwrap();
    let last = sequence(&*store, "/f/key");
    for tree in [false, true] {
        let mut w = watcher(
            &store,
            if tree { "/f" } else { "/f/key" },
            tree,
            Some(first),
        );
        let events = events_until(&mut *w, |e| e.value == b"3");
        let values: Vec<&[u8]> = events.iter().map(|e| &e.value[..]).collect();
        if w.coalesces() {
            assert_eq!(values, [b"3"]);
        } else {
            assert_eq!(values, [b"2", b"3"]);
        }
        assert_eq!(events.last().unwrap().sequence, last);
        // From the key's own sequence: nothing until it changes.
        let mut w = watcher(&store, if tree { "/f" } else { "/f/key" }, tree, Some(last));
        assert!(w
            .next(Instant::now() + Duration::from_millis(300))
            .unwrap()
            .is_empty());
    }
}

/// `next` answers nothing once its deadline passed, and not much later.
pub fn watches_do_not_wait_past_their_deadline(store: Arc<dyn Store>) {
    let mut w = watcher(&store, "/quiet", true, None);
    for wait in [0u64, 50, 400] {
        let started = Instant::now();
        assert!(w
            .next(started + Duration::from_millis(wait))
            .unwrap()
            .is_empty());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(wait) && took < Duration::from_millis(wait + 150),
            "next with a deadline {wait} ms away took {took:?}"
        );
    }
}
