//! The conformance suite on a real ZooKeeper (Debian's 3.8), and what only the
//! ZooKeeper store promises: nodes under the prefix, containers for directories,
//! mzxid sequences, no key below a key, TTL nodes read as absent once expired,
//! digest auth, a session made again after it ended, a forked child that makes
//! a session of its own (more in zookeeper_fork.rs), bounded waits when
//! ZooKeeper is down.

mod common;
mod zookeeper;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{d, k};
use libkv_core::{open, Auth, ErrorKind, OpenOptions, Store};
use zookeeper_client::{Acls, Client, CreateMode};

fn open_url(url: &str, timeout: Duration) -> Arc<dyn Store> {
    open(
        url,
        &OpenOptions {
            timeout,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn zk_store() -> (Arc<dyn Store>, ()) {
    let url = zookeeper::shared().url(&zookeeper::unique_prefix());
    (open_url(&url, Duration::from_secs(5)), ())
}

conformance_tests!(coordination zk_store());

/// The test's own runtime for raw clients (a session's task lives on it).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A client of our own, beside the store's, on `port`.
fn raw_client(port: u16) -> Client {
    block(Client::connect(&format!("127.0.0.1:{port}"))).unwrap()
}

/// Runs a future of a raw client on the test's runtime.
fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    rt().block_on(f)
}

#[test]
fn keys_are_nodes_under_the_prefix_and_directories_are_containers() {
    let zk = zookeeper::shared();
    let prefix = zookeeper::unique_prefix();
    let store = open_url(&zk.url(&prefix), Duration::from_secs(5));
    store.put(&k("/app/port"), b"8080").unwrap();
    let client = raw_client(zk.client_port);
    let (data, stat) = block(client.get_data(&format!("{prefix}/app/port"))).unwrap();
    assert_eq!(data, b"8080");
    assert_eq!(
        (stat.ephemeral_owner, stat.cversion),
        (0, 0),
        "a key is a leaf"
    );
    let (_, dir) = block(client.get_data(&format!("{prefix}/app"))).unwrap();
    assert_eq!(
        (dir.num_children, dir.cversion),
        (1, 1),
        "made with its key"
    );
    let root = open_url(&zk.url(""), Duration::from_secs(5));
    assert_eq!(
        root.get(&k(&format!("{prefix}/app/port")))
            .unwrap()
            .as_deref(),
        Some(&b"8080"[..])
    );
    let sibling = open_url(&zk.url(&format!("{prefix}x")), Duration::from_secs(5));
    assert!(sibling.list(&d("/")).unwrap().is_empty());
    assert_eq!(store.url(), zk.url(&prefix));
    // Once its last key is gone, ZooKeeper removes the directory (checked every
    // 500 ms here).
    store.delete(&k("/app/port")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while block(client.check_stat(&format!("{prefix}/app")))
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the empty container stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sequences_are_zxids_never_reused_across_delete_and_create() {
    let (store, _) = zk_store();
    store.put(&k("/a"), b"1").unwrap();
    let first = common::sequence(&*store, "/a");
    store.put(&k("/b"), b"1").unwrap();
    assert!(
        common::sequence(&*store, "/b") > first,
        "zxids are store-wide"
    );
    store.delete(&k("/a")).unwrap();
    store.put(&k("/a"), b"1").unwrap();
    let second = common::sequence(&*store, "/a");
    assert!(
        second > first,
        "created again: mzxid {second} > {first}, though the node's version is 0 both times"
    );
    assert!(!store.atomic_put(&k("/a"), b"stale", first).unwrap());
    assert!(!store.atomic_delete(&k("/a"), first).unwrap());
    assert!(store.atomic_put(&k("/a"), b"2", second).unwrap());
    assert!(!store.atomic_create(&k("/a"), b"x").unwrap());
    eprintln!("sequence of /a: {first}, then {second} once deleted and created again");
}

#[test]
fn a_key_cannot_be_a_directory() {
    let (store, _) = zk_store();
    store.put(&k("/a"), b"parent").unwrap();
    let err = store.put(&k("/a/b"), b"child").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("/a/b") && text.contains("/a is a key"),
        "{text}"
    );
    assert_eq!(store.get(&k("/a/b")).unwrap(), None);
    assert!(!store.atomic_create(&k("/a/b/c"), b"x").is_ok_and(|c| c));

    store.put(&k("/x/y"), b"child").unwrap();
    let err = store.put(&k("/x"), b"parent").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let text = err.to_string();
    assert!(text.contains("/x ") && text.contains("/x/y"), "{text}");
    assert_eq!(store.get(&k("/x")).unwrap(), None);
    let err = store.atomic_create(&k("/x"), b"parent").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // Nothing half-written: the tree is what it was.
    assert_eq!(
        store.list(&d("/")).unwrap(),
        vec![
            ("a".to_owned(), b"parent".to_vec()),
            ("x/y".to_owned(), b"child".to_vec())
        ]
    );
    eprintln!("{text}");
}

#[test]
fn lists_only_names_that_are_keys() {
    let zk = zookeeper::shared();
    let prefix = zookeeper::unique_prefix();
    let store = open_url(&zk.url(&prefix), Duration::from_secs(5));
    store.put(&k("/hosts/web01"), b"10.0.0.1").unwrap();
    let client = raw_client(zk.client_port);
    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    for name in ["sp ace", "bad@name", "ünï", "a\\b"] {
        block(client.create(&format!("{prefix}/hosts/{name}"), b"x", &opts)).unwrap();
    }
    common::lists_only_keys(&*store);
    // deletetree leaves what is not a key.
    store.deletetree(&d("/")).unwrap();
    assert!(store.list(&d("/")).unwrap().is_empty());
    assert!(block(client.check_stat(&format!("{prefix}/hosts/sp ace")))
        .unwrap()
        .is_some());
}

#[test]
fn expired_ttl_nodes_are_absent_before_zookeeper_reaps_them() {
    // A server that looks for expired TTL nodes only every minute.
    let zk = zookeeper::start_with("lazy", 60_000);
    let prefix = "/lazy";
    let store = open_url(&zk.url(prefix), Duration::from_secs(5));
    let ttl = Duration::from_secs(1);
    let seq = store
        .put_ttl(&k("/t/a"), b"a", Some(0), ttl)
        .unwrap()
        .unwrap();
    store.put_ttl(&k("/t/b"), b"b", None, ttl).unwrap();
    let client = raw_client(zk.client_port);
    // ZooKeeper shows no sign of a TTL node: its ttl is beside it.
    let (ttl_ms, _) = block(client.get_data(&format!("{prefix}/t/a@ttl"))).unwrap();
    assert_eq!(ttl_ms, b"1000");
    assert!(store.exists(&k("/t/a")).unwrap());
    std::thread::sleep(ttl + Duration::from_millis(100));
    assert!(
        block(client.check_stat(&format!("{prefix}/t/a")))
            .unwrap()
            .is_some(),
        "ZooKeeper has not reaped it yet"
    );
    assert_eq!(store.get(&k("/t/a")).unwrap(), None);
    assert!(!store.exists(&k("/t/a")).unwrap());
    assert_eq!(store.atomic_get(&k("/t/a")).unwrap(), None);
    assert!(store.list(&d("/t")).unwrap().is_empty());
    assert!(!store.atomic_put(&k("/t/a"), b"x", seq).unwrap());
    // A write replaces it: a plain put makes a plain node, atomic_create works.
    store.put(&k("/t/b"), b"for good").unwrap();
    assert!(block(client.check_stat(&format!("{prefix}/t/b@ttl")))
        .unwrap()
        .is_none());
    assert!(store.atomic_create(&k("/t/a"), b"again").unwrap());
    assert!(common::sequence(&*store, "/t/a") > seq);
    zk.kill();
}

fn auth(user: &str, password: &str) -> Auth {
    Auth::new([("username", user), ("password", password)]).unwrap()
}

fn open_auth(url: &str, auth: Auth) -> Arc<dyn Store> {
    open(
        url,
        &OpenOptions {
            auth,
            timeout: Duration::from_secs(3),
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn digest_auth_keeps_nodes_to_their_user_and_secrets_out() {
    let zk = zookeeper::shared();
    let url = zk.url(&zookeeper::unique_prefix());
    let secret = "s3cr3t-Pa55";
    let owner = open_auth(&url, auth("puppet", secret));
    owner.put(&k("/db/password"), b"hunter2").unwrap();
    assert_eq!(
        owner.get(&k("/db/password")).unwrap().as_deref(),
        Some(&b"hunter2"[..])
    );
    let info = format!("{:?}", owner.info().unwrap());
    assert!(info.contains("digest:puppet"), "{info}");
    assert!(!info.contains(secret), "{info}");

    let stranger = open_url(&url, Duration::from_secs(3));
    let wrong = open_auth(&url, auth("puppet", "not-it"));
    for store in [&stranger, &wrong] {
        let err = store.get(&k("/db/password")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
        let text = err.to_string();
        assert!(text.contains("not authorized"), "{text}");
        assert!(
            text.contains("/db/password") && text.contains(&url),
            "{text}"
        );
        assert!(!text.contains(secret) && !text.contains("not-it"), "{text}");
        let err = store.put(&k("/db/password"), b"mine").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
        assert!(store.list(&d("/db")).is_err());
    }
    // Another store object with the same credentials shares the session.
    let again = open_auth(&url, auth("puppet", secret));
    assert_eq!(
        again.get(&k("/db/password")).unwrap().as_deref(),
        Some(&b"hunter2"[..])
    );
    assert_eq!(
        format!("{:?}", again.info().unwrap()),
        format!("{:?}", owner.info().unwrap())
    );
    // Settings other than username and password are refused, naming the setting.
    let err = open(
        &url,
        &OpenOptions {
            auth: Auth::new([("token", secret)]).unwrap(),
            ..OpenOptions::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("\"token\"") && !err.contains(secret), "{err}");
    owner.deletetree(&d("/")).unwrap();
}

#[test]
fn an_expired_session_is_made_again() {
    // A server of its own, which forgets every session: stopped, its data
    // wiped, started again on its port, and written to by another client until
    // its zxid is past every one the store's client saw (ZooKeeper refuses a
    // client that has seen more than it has). The store's client reconnects to
    // it, and hears that its session has expired.
    let zk = zookeeper::start("expiry");
    let store = open_url(&zk.url("/expiry"), Duration::from_secs(5));
    store.put(&k("/a"), b"1").unwrap();
    let before = format!("{:?}", store.info().unwrap());
    zk.kill();
    std::fs::remove_dir_all(zk.data_dir.join("version-2")).unwrap();
    zk.restart();
    let client = raw_client(zk.client_port);
    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    for i in 0..20 {
        block(client.create(&format!("/pad{i}"), b"", &opts)).unwrap();
    }
    // The store's client reconnects at its own pace (zookeeper-client backs off
    // exponentially while the server is down): calls meanwhile time out within
    // the store's timeout; then the first that reaches the server finds the
    // session gone and goes on on a new one.
    let started = Instant::now();
    let mut timeouts = 0;
    loop {
        match store.get(&k("/a")) {
            Ok(found) => {
                assert_eq!(found, None, "its data went too");
                break;
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Connection),
                    "{e}"
                );
                timeouts += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no new session"
        );
    }
    let first_call = started.elapsed();
    eprintln!("calls that timed out while the client reconnected: {timeouts}");
    store.put(&k("/a"), b"2").unwrap();
    assert_eq!(store.get(&k("/a")).unwrap().as_deref(), Some(&b"2"[..]));
    let after = format!("{:?}", store.info().unwrap());
    assert_ne!(before, after, "a new session");
    eprintln!("session expired: the next call took {first_call:?} ({before} / {after})");
    zk.kill();
}

#[test]
fn zookeeper_down_fails_within_the_timeout() {
    let port = zookeeper::free_port();
    let url = format!("zookeeper://127.0.0.1:{port}/down");
    let store = open_url(&url, Duration::from_secs(1));
    let calls: [(&str, &dyn Fn() -> libkv_core::Result<()>); 3] = [
        ("get", &|| store.get(&k("/a")).map(|_| ())),
        ("put", &|| store.put(&k("/a"), b"x")),
        ("list", &|| store.list(&d("/")).map(|_| ())),
    ];
    for (op, call) in calls {
        let started = Instant::now();
        let err = call().unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{op}: {took:?}");
        assert_eq!(err.kind(), ErrorKind::Connection, "{op}: {err}");
        let text = err.to_string();
        assert!(text.contains(&url) && text.contains(op), "{text}");
    }
    // Nothing listens at the member: the call fails at once, saying so.
    let started = Instant::now();
    let err = store.atomic_get(&k("/a")).unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "{took:?}: {err}");
    assert!(
        err.to_string()
            .contains("every member refused the connection"),
        "{err}"
    );
    eprintln!("ZooKeeper down: {err} (after {took:?})");
}

#[test]
fn a_forked_child_makes_its_own_session() {
    let (store, _) = zk_store();
    store.put(&k("/f"), b"parent").unwrap();
    let info = format!("{:?}", store.info().unwrap());
    // SAFETY: the child makes store calls and exits without unwinding.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let started = Instant::now();
        let worked = store.get(&k("/f")).ok().flatten().as_deref() == Some(&b"parent"[..])
            && store.put(&k("/f"), b"child").is_ok()
            && store.info().is_ok_and(|own| format!("{own:?}") != info)
            && started.elapsed() < Duration::from_secs(5);
        unsafe { libc::_exit(if worked { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    // The parent's session lives on, and sees the child's write.
    assert_eq!(format!("{:?}", store.info().unwrap()), info);
    assert_eq!(store.get(&k("/f")).unwrap().as_deref(), Some(&b"child"[..]));
}

#[test]
fn info_names_the_session_and_no_secret() {
    let (store, _) = zk_store();
    let info = format!("{:?}", store.info().unwrap());
    assert!(
        info.contains("zookeeper") && info.contains("session_id"),
        "{info}"
    );
}

#[test]
fn without_ttl_nodes_ttl_keys_are_ephemeral() {
    let zk = zookeeper::start_without_ttl_nodes("no-ttl");
    let store = open_url(&zk.url("/e"), Duration::from_secs(5));
    let ttl = Duration::from_secs(1);
    let seq = store
        .put_ttl(&k("/lock"), b"me", Some(0), ttl)
        .unwrap()
        .expect("created");
    let client = raw_client(zk.client_port);
    let (_, stat) = block(client.get_data("/e/lock")).unwrap();
    assert_ne!(
        stat.ephemeral_owner, 0,
        "an ephemeral node of the store's session"
    );
    assert_eq!(common::sequence(&*store, "/lock"), seq);
    assert_eq!(
        store.put_ttl(&k("/lock"), b"other", Some(0), ttl).unwrap(),
        None
    );
    std::thread::sleep(ttl + Duration::from_millis(100));
    assert_eq!(store.get(&k("/lock")).unwrap(), None, "past its ttl");
    assert!(store
        .put_ttl(&k("/lock"), b"other", Some(0), ttl)
        .unwrap()
        .is_some());
    store.put(&k("/lock"), b"for good").unwrap();
    let (_, stat) = block(client.get_data("/e/lock")).unwrap();
    assert_eq!(stat.ephemeral_owner, 0, "a plain put makes it persistent");
    zk.kill();
}

#[test]
fn a_watch_sees_a_key_expire_when_its_ttl_passes() {
    let (store, _) = zk_store();
    store.put(&k("/w/stays"), b"s").unwrap();
    let mut w = common::watcher(&store, "/w", true, None);
    assert!(w.coalesces());
    let started = Instant::now();
    store
        .put_ttl(&k("/w/brief"), b"b", None, Duration::from_secs(1))
        .unwrap();
    let put = common::events_until(&mut *w, |e| e.key == "/w/brief");
    assert_eq!(put.last().unwrap().kind, libkv_core::watch::EventKind::Put);
    // Nothing writes it again, and ZooKeeper reaps it only later: the watch
    // reads again at its deadline.
    let gone = common::events_until(&mut *w, |e| {
        e.key == "/w/brief" && e.kind == libkv_core::watch::EventKind::Delete
    });
    let took = started.elapsed();
    assert!(gone.iter().all(|e| e.key == "/w/brief"), "{gone:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    eprintln!("the watch saw the ttl key go after {took:?}");
}

#[test]
fn the_root_store_lists_no_node_of_zookeepers_own() {
    let zk = zookeeper::shared();
    let root = open_url(&zk.url(""), Duration::from_secs(5));
    let listed = root.list(&d("/")).unwrap();
    assert!(
        listed
            .iter()
            .all(|(name, _)| !name.starts_with("zookeeper/")),
        "{listed:?}"
    );
}
