//! The conformance suite on the Consul test double (crates/consul-double), and what
//! only the Consul store promises: keys under the prefix, sequences that are
//! ModifyIndexes, the ACL token, clear errors, bounded waits, keys that expire as
//! sessions with their deadline in their flags, locks as sessions.

mod common;

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{d, k};
use consul_double::{Config, Server};
use libkv_core::{open, Auth, ErrorKind, OpenOptions, Store};

const TOKEN: &str = "consul-t0ken";

/// A double whose shortest session TTL is 1 s (a Consul agent's
/// `session_ttl_min: "1s"`), so that the conformance checks of ttl keys and locks
/// wait seconds, not tens of them; its sessions end between TTL and twice TTL, as
/// Consul's do.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let config = Config {
            min_session_ttl: Duration::from_secs(1),
            ..Config::default()
        };
        consul_double::start(config, "127.0.0.1:0".parse().unwrap()).unwrap()
    })
}

fn acl_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let config = Config {
            acl_token: Some(TOKEN.to_owned()),
            ..Config::default()
        };
        consul_double::start(config, "127.0.0.1:0".parse().unwrap()).unwrap()
    })
}

fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("/test-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn open_with(url: &str, auth: &[(&str, &str)], timeout: Duration) -> Arc<dyn Store> {
    let options = OpenOptions {
        auth: Auth::new(auth.iter().copied()).unwrap(),
        timeout,
        ..OpenOptions::default()
    };
    open(url, &options).unwrap()
}

fn url(server: &Server, prefix: &str) -> String {
    format!("consul://127.0.0.1:{}{prefix}", server.port())
}

fn consul_store() -> (Arc<dyn Store>, ()) {
    let url = url(server(), &unique_prefix());
    (open_with(&url, &[], Duration::from_secs(5)), ())
}

conformance_tests!(coordination consul_store());

#[test]
fn keys_live_under_the_prefix_without_a_leading_slash() {
    let prefix = unique_prefix();
    let store = open_with(&url(server(), &prefix), &[], Duration::from_secs(5));
    store.put(&k("/app/port"), b"8080").unwrap();
    let root = open_with(&url(server(), ""), &[], Duration::from_secs(5));
    // The Consul key is "test-N/app/port": libkv's root store sees it as /test-N/app/port.
    assert_eq!(
        root.get(&k(&format!("{prefix}/app/port")))
            .unwrap()
            .as_deref(),
        Some(&b"8080"[..])
    );
    let sibling = open_with(
        &url(server(), &format!("{prefix}x")),
        &[],
        Duration::from_secs(5),
    );
    assert!(sibling.list(&d("/")).unwrap().is_empty());
    assert_eq!(
        store.list(&d("/")).unwrap(),
        vec![("app/port".to_owned(), b"8080".to_vec())]
    );
}

#[test]
fn keys_below_keys_are_allowed() {
    let (store, _) = consul_store();
    store.put(&k("/a"), b"parent").unwrap();
    store.put(&k("/a/b"), b"child").unwrap();
    assert_eq!(
        store.get(&k("/a")).unwrap().as_deref(),
        Some(&b"parent"[..])
    );
    assert_eq!(
        store.list(&d("/a")).unwrap(),
        vec![("b".to_owned(), b"child".to_vec())]
    );
}

#[test]
fn the_token_is_sent_and_refusals_are_auth_errors() {
    let url = url(acl_server(), &unique_prefix());
    let store = open_with(&url, &[("token", TOKEN)], Duration::from_secs(5));
    store.put(&k("/k"), b"v").unwrap();
    assert_eq!(store.get(&k("/k")).unwrap().as_deref(), Some(&b"v"[..]));
    for auth in [&[][..], &[("token", "wr0ng-token")][..]] {
        let store = open_with(&url, auth, Duration::from_secs(5));
        let err = store.get(&k("/k")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("check the token"), "{msg}");
        assert!(
            !msg.contains("wr0ng-token") && !msg.contains(TOKEN),
            "{msg}"
        );
    }
}

#[test]
fn a_value_larger_than_consul_takes_is_a_clear_error() {
    let (store, _) = consul_store();
    let err = store.put(&k("/big"), &vec![b'x'; 600 * 1024]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("kv_max_value_size"), "{err}");
    assert!(!store.exists(&k("/big")).unwrap());
}

#[test]
fn info_reports_the_agent() {
    let (store, _) = consul_store();
    let info = format!("{:?}", store.info().unwrap());
    for field in [
        "\"consul\"",
        "\"datacenter\"",
        "\"dc1\"",
        "\"version\"",
        "\"leader\"",
        "8300",
    ] {
        assert!(info.contains(field), "{field} in {info}");
    }
}

#[test]
fn an_unreachable_consul_fails_within_the_timeout_naming_it() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = open_with(
        &format!("consul://127.0.0.1:{port}/x"),
        &[("token", "s3cret")],
        Duration::from_secs(1),
    );
    let started = Instant::now();
    let err = store.get(&k("/key")).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("get /key"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
}

#[test]
fn a_silent_consul_times_out() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let store = open_with(
        &format!("consul://127.0.0.1:{port}/x"),
        &[],
        Duration::from_millis(700),
    );
    let started = Instant::now();
    let err = store.put(&k("/key"), b"v").unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(1700),
        "{waited:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("put /key on consul://127.0.0.1:"), "{msg}");
    assert!(
        msg.contains("may or may not have applied the put: read the key"),
        "{msg}"
    );
    // A read that timed out changed nothing, and says only what to check.
    let msg = store.get(&k("/key")).unwrap_err().to_string();
    assert!(
        msg.contains("timed out after 0.7s; check that the store is up"),
        "{msg}"
    );
}

#[test]
fn auth_settings_are_checked_when_opened() {
    let url = url(server(), "/x");
    for (url, pairs, why) in [
        (
            url.as_str(),
            &[("ca_file", "/ca.pem")][..],
            "use a consul+ssl:// URL",
        ),
        (
            url.as_str(),
            &[("password", "s3cret")][..],
            "does not use the auth setting \"password\"",
        ),
        (
            "consul+ssl://127.0.0.1:1/x",
            &[("key_file", "/k.pem")][..],
            "both cert_file and key_file",
        ),
    ] {
        let options = OpenOptions {
            auth: Auth::new(pairs.iter().copied()).unwrap(),
            ..OpenOptions::default()
        };
        let msg = open(url, &options).err().expect(why).to_string();
        assert!(msg.contains(why), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }
}

/// Writes a Consul key as another client would, over Consul's HTTP API.
fn raw_put(server: &Server, path: &str, value: &[u8]) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
    let head = format!(
        "PUT /v1/kv/{path} HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
        value.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(value).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

#[test]
fn names_another_client_wrote_that_are_not_keys_are_not_listed() {
    let prefix = unique_prefix();
    let store = open_with(&url(server(), &prefix), &[], Duration::from_secs(5));
    store.put(&k("/hosts/web01"), b"10.0.0.1").unwrap();
    let consul_prefix = prefix.trim_start_matches('/');
    // A folder entry ("dir/", as the Consul UI makes), a deeper one, and names no
    // key can have.
    for name in ["", "sub/", "sp%20ace", "caf%C3%A9", "t%09ab", "x:y@z"] {
        raw_put(server(), &format!("{consul_prefix}/hosts/{name}"), b"x");
    }
    common::lists_only_keys(&*store);
}

/// A double of its own (so that its sessions are this test's only), with
/// sessions as short as 100ms that Consul ends at `multiplier` times their TTL.
fn own_server(multiplier: f64) -> Server {
    let config = Config {
        session_ttl_multiplier: multiplier,
        min_session_ttl: Duration::from_millis(100),
        ..Config::default()
    };
    consul_double::start(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A request as another Consul client makes it: the status and the body.
fn raw(server: &Server, method: &str, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
    let head = format!("{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8(answer).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The Consul entry of a key, as another client reads it.
fn raw_entry(server: &Server, consul_key: &str) -> Option<serde_json::Value> {
    match raw(server, "GET", &format!("/v1/kv/{consul_key}")) {
        (200, body) => Some(body[0].clone()),
        (404, _) => None,
        (status, body) => panic!("{status} {body}"),
    }
}

/// The sessions Consul has.
fn sessions(server: &Server) -> Vec<serde_json::Value> {
    let (status, body) = raw(server, "GET", "/v1/session/list");
    assert_eq!(status, 200);
    body.as_array().unwrap().clone()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_ttl_key_carries_the_mark_and_its_deadline_in_its_flags() {
    use libkv_core::backends::consul::TTL_MARK;
    let server = own_server(2.0);
    let store = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let before = now_ms();
    let sequence = store
        .put_ttl(&k("/t"), b"v", None, Duration::from_secs(30))
        .unwrap()
        .unwrap();
    let after = now_ms();
    let entry = raw_entry(&server, "p/t").unwrap();
    assert_eq!(entry["ModifyIndex"], sequence);
    assert_eq!(entry["Value"], "dg==");
    let flags = entry["Flags"].as_u64().unwrap();
    assert_eq!(flags >> 48, TTL_MARK, "{flags:#x}");
    assert_eq!(TTL_MARK, 0x4C4B, "\"LK\"");
    let deadline = flags & ((1 << 48) - 1);
    assert!(
        (before + 30_000..=after + 30_000).contains(&deadline),
        "{before} {deadline} {after}"
    );
    // Held by a session of its own that deletes it.
    let session = entry["Session"].as_str().unwrap();
    let all = sessions(&server);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["ID"], session);
    assert_eq!(all[0]["Name"], "libkv ttl p/t");
    assert_eq!(all[0]["TTL"], "30s");
    assert_eq!(all[0]["Behavior"], "delete");
    assert_eq!(all[0]["LockDelay"], 0);
    assert_eq!(
        store.atomic_get(&k("/t")).unwrap().unwrap().sequence,
        sequence
    );

    // A rewrite with a ttl moves the deadline, with a new session; the old one
    // is gone.
    std::thread::sleep(Duration::from_millis(20));
    store
        .put_ttl(&k("/t"), b"w", None, Duration::from_secs(60))
        .unwrap()
        .unwrap();
    let entry = raw_entry(&server, "p/t").unwrap();
    let moved = entry["Flags"].as_u64().unwrap() & ((1 << 48) - 1);
    assert!(moved >= deadline + 30_000, "{deadline} then {moved}");
    let all = sessions(&server);
    assert_eq!(all.len(), 1);
    assert_ne!(all[0]["ID"], session);
    assert_eq!(all[0]["ID"], entry["Session"]);

    // A plain write: no mark, no session.
    store.put(&k("/t"), b"plain").unwrap();
    let entry = raw_entry(&server, "p/t").unwrap();
    assert_eq!(entry["Flags"], 0);
    assert!(entry.get("Session").is_none(), "{entry}");
    assert_eq!(sessions(&server), Vec::<serde_json::Value>::new());
}

#[test]
fn plain_writes_over_ttl_keys_stay_after_their_sessions_end() {
    let server = own_server(1.0);
    let store = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let ttl = Duration::from_millis(1000);
    let big = vec![b'x'; 300 * 1024];
    for key in ["/put", "/big", "/create", "/cas", "/cas-big", "/many"] {
        store.put_ttl(&k(key), b"ttl", None, ttl).unwrap().unwrap();
    }
    let started = Instant::now();
    store.put(&k("/put"), b"kept").unwrap();
    store.put(&k("/big"), &big).unwrap();
    let cas = store.atomic_get(&k("/cas")).unwrap().unwrap().sequence;
    assert!(store.atomic_put(&k("/cas"), b"kept", cas).unwrap());
    let cas = store.atomic_get(&k("/cas-big")).unwrap().unwrap().sequence;
    assert!(store.atomic_put(&k("/cas-big"), &big, cas).unwrap());
    store
        .put_many(&[(k("/many"), b"kept".to_vec()), (k("/other"), b"o".to_vec())])
        .unwrap();
    // Not absent yet: atomic_create fails.
    assert!(!store.atomic_create(&k("/create"), b"kept").unwrap());
    // Every replaced key's session is gone; only /create's is left.
    assert_eq!(sessions(&server).len(), 1);
    assert!(started.elapsed() < ttl, "{:?}", started.elapsed());

    // Past the ttl, the sessions ended: every plain write is still there.
    std::thread::sleep(ttl + Duration::from_millis(300));
    assert_eq!(raw_entry(&server, "p/create"), None, "Consul deleted it");
    assert_eq!(sessions(&server), Vec::<serde_json::Value>::new());
    for (key, value) in [
        ("/put", &b"kept"[..]),
        ("/big", &big),
        ("/cas", b"kept"),
        ("/cas-big", &big),
        ("/many", b"kept"),
        ("/other", b"o"),
    ] {
        assert_eq!(store.get(&k(key)).unwrap().as_deref(), Some(value), "{key}");
    }
}

#[test]
fn a_ttl_key_is_absent_past_its_deadline_while_consul_still_has_it() {
    // Consul ends the session only at twice its TTL.
    let server = own_server(2.0);
    let store = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let ttl = Duration::from_millis(1000);
    let started = Instant::now();
    let sequence = store
        .put_ttl(&k("/d/t"), b"v", Some(0), ttl)
        .unwrap()
        .unwrap();
    assert_eq!(store.get(&k("/d/t")).unwrap().as_deref(), Some(&b"v"[..]));
    std::thread::sleep(ttl + Duration::from_millis(50));
    assert!(raw_entry(&server, "p/d/t").is_some(), "Consul still has it");
    assert_eq!(store.get(&k("/d/t")).unwrap(), None);
    assert!(!store.exists(&k("/d/t")).unwrap());
    assert_eq!(store.atomic_get(&k("/d/t")).unwrap(), None);
    assert!(store.list(&d("/d")).unwrap().is_empty());
    assert!(store.atomic_list(&d("/d")).unwrap().is_empty());
    let mut scanned = 0;
    store
        .scan(&d("/"), 10, &mut |page| {
            scanned += page.entries.len();
            Ok(())
        })
        .unwrap();
    assert_eq!(scanned, 0);
    // The atomic writes see it absent.
    assert!(!store.atomic_put(&k("/d/t"), b"x", sequence).unwrap());
    assert!(!store.atomic_delete(&k("/d/t"), sequence).unwrap());
    assert!(store.atomic_delete(&k("/d/t"), 0).unwrap());
    assert_eq!(
        store
            .put_ttl(&k("/d/t"), b"x", Some(sequence), ttl)
            .unwrap(),
        None
    );
    assert!(started.elapsed() < ttl * 2, "{:?}", started.elapsed());
    assert!(raw_entry(&server, "p/d/t").is_some(), "Consul still has it");
    // Created again over it: a new sequence, and the old session is gone.
    let again = store
        .put_ttl(&k("/d/t"), b"again", Some(0), Duration::from_secs(60))
        .unwrap()
        .unwrap();
    assert!(again > sequence);
    assert_eq!(sessions(&server).len(), 1);
    std::thread::sleep(ttl);
    assert_eq!(
        store.get(&k("/d/t")).unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

#[test]
fn locks_leave_no_session_behind() {
    let server = own_server(2.0);
    let store = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let ttl = Duration::from_secs(30);
    let soon = || Instant::now() + Duration::from_millis(200);
    let (fence, _) = store.lock(&k("/l"), "one", ttl, soon()).unwrap().unwrap();
    let entry = raw_entry(&server, "p/l").unwrap();
    assert_eq!(entry["ModifyIndex"], fence);
    assert_eq!(entry["Flags"], 0);
    assert_eq!(store.get(&k("/l")).unwrap().as_deref(), Some(&b"one"[..]));
    let held = sessions(&server);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["ID"], entry["Session"]);
    assert_eq!(held[0]["Name"], "libkv lock p/l");
    assert_eq!(held[0]["Behavior"], "release");
    assert_eq!(held[0]["TTL"], "30s");
    assert_eq!(held[0]["LockDelay"], 0);

    // A waiter that gives up destroys its session.
    assert_eq!(store.lock(&k("/l"), "two", ttl, soon()).unwrap(), None);
    assert_eq!(sessions(&server).len(), 1);
    // Renewed, unlocked only by its owner.
    assert!(store.renew(&k("/l"), "one", ttl).unwrap());
    assert!(!store.renew(&k("/l"), "two", ttl).unwrap());
    assert!(!store.unlock(&k("/l"), "two").unwrap());
    assert!(store.unlock(&k("/l"), "one").unwrap());
    assert_eq!(raw_entry(&server, "p/l"), None);
    assert_eq!(sessions(&server), Vec::<serde_json::Value>::new());
    assert!(!store.unlock(&k("/l"), "one").unwrap());
    assert!(!store.renew(&k("/l"), "one", ttl).unwrap());

    // A ttl write that does not happen leaves no session either.
    store.put(&k("/t"), b"v").unwrap();
    assert_eq!(store.put_ttl(&k("/t"), b"w", Some(0), ttl).unwrap(), None);
    assert_eq!(store.put_ttl(&k("/t"), b"w", Some(1), ttl).unwrap(), None);
    assert_eq!(sessions(&server), Vec::<serde_json::Value>::new());
}

#[test]
fn an_unrenewed_lock_goes_when_consul_ends_its_session() {
    let server = own_server(1.0);
    let store = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let ttl = Duration::from_millis(1000);
    let started = Instant::now();
    let (first, _) = store
        .lock(&k("/l"), "one", ttl, Instant::now())
        .unwrap()
        .unwrap();
    let (second, _) = store
        .lock(&k("/l"), "two", ttl, Instant::now() + ttl * 3)
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= ttl && waited < ttl + Duration::from_millis(300),
        "taken after {waited:?}"
    );
    eprintln!("a lock of ttl {ttl:?} not renewed was taken by a waiter after {waited:?}");
    assert!(second > first);
    assert_eq!(store.get(&k("/l")).unwrap().as_deref(), Some(&b"two"[..]));
    assert!(!store.renew(&k("/l"), "one", ttl).unwrap());
    assert!(!store.unlock(&k("/l"), "one").unwrap());
    assert!(store.unlock(&k("/l"), "two").unwrap());
    assert_eq!(sessions(&server), Vec::<serde_json::Value>::new());
}

/// A TCP proxy to `server` that counts the requests going through it, and the
/// blocking queries among them.
struct Counting {
    port: u16,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    blocking: Arc<std::sync::atomic::AtomicUsize>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Counting {
    fn to(server: &Server) -> Counting {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let blocking = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (counted, blocked, target) = (requests.clone(), blocking.clone(), server.addr());
        let connected = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                connected.fetch_add(1, Ordering::SeqCst);
                let mut upstream = std::net::TcpStream::connect(target).unwrap();
                let (mut from_client, mut to_client) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (counted, blocked) = (counted.clone(), blocked.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from_client.read(&mut buf) {
                        if n == 0 || upstream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]);
                        counted.fetch_add(text.matches(" HTTP/1.1\r\n").count(), Ordering::SeqCst);
                        blocked.fetch_add(text.matches("?index=").count(), Ordering::SeqCst);
                    }
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut to_client, &mut client);
                });
            }
        });
        Counting {
            port,
            requests,
            blocking,
            connections,
        }
    }
}

#[test]
fn a_lock_waiter_wakes_right_after_the_unlock_by_a_blocking_query() {
    use std::sync::atomic::Ordering;
    let server = own_server(2.0);
    let holder = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let proxy = Counting::to(&server);
    let waiter = open_with(
        &format!("consul://127.0.0.1:{}/p", proxy.port),
        &[],
        Duration::from_secs(5),
    );
    let ttl = Duration::from_secs(30);
    let mut delays = Vec::new();
    for round in 0..3 {
        let (fence, _) = holder
            .lock(&k("/l"), "holder", ttl, Instant::now())
            .unwrap()
            .unwrap();
        let waiting = {
            let waiter = waiter.clone();
            std::thread::spawn(move || {
                let taken = waiter
                    .lock(
                        &k("/l"),
                        "waiter",
                        ttl,
                        Instant::now() + Duration::from_secs(10),
                    )
                    .unwrap();
                (taken, Instant::now())
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let before = proxy.requests.load(Ordering::SeqCst);
        // Held for a second: a waiter that polled would ask again and again.
        std::thread::sleep(Duration::from_secs(1));
        let during = proxy.requests.load(Ordering::SeqCst) - before;
        assert!(during <= 1, "{during} requests while waiting");
        let unlocked = Instant::now();
        assert!(holder.unlock(&k("/l"), "holder").unwrap());
        let (taken, at) = waiting.join().unwrap();
        let (second, _) = taken.expect("taken");
        assert!(second > fence);
        let delay = at.duration_since(unlocked);
        assert!(
            delay < Duration::from_millis(100),
            "round {round}: {delay:?}"
        );
        delays.push(delay);
        assert!(waiter.unlock(&k("/l"), "waiter").unwrap());
    }
    assert!(proxy.blocking.load(Ordering::SeqCst) >= 3);
    eprintln!("the waiter took the lock {delays:?} after the unlock");
    assert_eq!(sessions(&server), Vec::<serde_json::Value>::new());
}

#[test]
fn a_value_with_a_ttl_must_fit_a_transaction() {
    let (store, _) = consul_store();
    let err = store
        .put_ttl(
            &k("/big"),
            &vec![b'x'; 300 * 1024],
            None,
            Duration::from_secs(10),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("without ttl"), "{err}");
    assert!(!store.exists(&k("/big")).unwrap());
}

#[test]
fn a_ttl_below_the_servers_session_ttl_min_is_refused_before_any_write() {
    // Consul's default session_ttl_min: 10 s.
    let server = consul_double::start(Config::default(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let store = open_with(&url(&server, &unique_prefix()), &[], Duration::from_secs(5));
    let err = store
        .put_ttl(&common::k("/short"), b"v", None, Duration::from_secs(5))
        .unwrap_err();
    assert_eq!(err.kind(), libkv_core::ErrorKind::InvalidArgument, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("ttl 5s is refused by consul://"),
        "{message}"
    );
    assert!(message.contains("session_ttl_min"), "{message}");
    assert_eq!(store.get(&common::k("/short")).unwrap(), None);
    assert!(store
        .put_ttl(&common::k("/long"), b"v", None, Duration::from_secs(10))
        .unwrap()
        .is_some());
}

/// A request with a body, as another Consul client makes it: the status and
/// the body.
fn raw_send(server: &Server, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let status = String::from_utf8_lossy(&answer[9..12]).parse().unwrap();
    let start = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, answer[start..].to_vec())
}

fn summary(events: &[libkv_core::watch::Event]) -> Vec<(&'static str, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.kind.name(),
                e.key.clone(),
                String::from_utf8_lossy(&e.value).into_owned(),
            )
        })
        .collect()
}

#[test]
fn a_watch_waits_in_one_blocking_query_and_wakes_right_after_a_put() {
    use std::sync::atomic::Ordering;
    let server = own_server(2.0);
    let writer = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let proxy = Counting::to(&server);
    let watching = open_with(
        &format!("consul://127.0.0.1:{}/p", proxy.port),
        &[],
        Duration::from_secs(5),
    );
    writer.put(&k("/w"), b"0").unwrap();
    let rounds = 3;
    let (found, events) = std::sync::mpsc::channel();
    let watch = {
        let mut w = common::watcher(&watching, "/w", false, None);
        std::thread::spawn(move || {
            for _ in 0..rounds {
                let batch = w.next(Instant::now() + Duration::from_secs(5)).unwrap();
                found.send((batch, Instant::now())).unwrap();
            }
        })
    };
    let (mut delays, mut idle) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(300));
        let before = proxy.requests.load(Ordering::SeqCst);
        // A second with nothing changing: a watcher that polled would ask
        // again and again.
        std::thread::sleep(Duration::from_secs(1));
        let during = proxy.requests.load(Ordering::SeqCst) - before;
        assert!(during <= 1, "round {round}: {during} requests while idle");
        idle.push(during);
        let value = format!("v{round}");
        // The event may come before the put's own answer: timed from the start.
        let put = Instant::now();
        writer.put(&k("/w"), value.as_bytes()).unwrap();
        let (batch, at) = events.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(summary(&batch), [("put", "/w".into(), value)]);
        let delay = at.saturating_duration_since(put);
        assert!(
            delay < Duration::from_millis(50),
            "round {round}: {delay:?}"
        );
        delays.push(delay);
    }
    watch.join().unwrap();
    assert!(proxy.blocking.load(Ordering::SeqCst) >= rounds);
    eprintln!("requests in each idle second: {idle:?}; events {delays:?} after the put started");
}

/// A watcher driven as the bindings drive it: `next` again and again with a
/// deadline 50 ms away. Its blocking query outlives the calls: it stays in
/// flight from one to the next.
#[test]
fn a_watch_waited_on_in_50ms_slices_keeps_one_blocking_query_in_flight() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = own_server(2.0);
    let writer = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let proxy = Counting::to(&server);
    let watching = open_with(
        &format!("consul://127.0.0.1:{}/p", proxy.port),
        &[],
        Duration::from_secs(5),
    );
    writer.put(&k("/w"), b"0").unwrap();
    let rounds = 3;
    let slice = Duration::from_millis(50);
    let calls = Arc::new(AtomicUsize::new(0));
    let (found, events) = std::sync::mpsc::channel();
    let watch = {
        let mut w = common::watcher(&watching, "/w", false, None);
        let calls = calls.clone();
        std::thread::spawn(move || {
            for _ in 0..rounds {
                let batch = loop {
                    let batch = w.next(Instant::now() + slice).unwrap();
                    calls.fetch_add(1, Ordering::SeqCst);
                    if !batch.is_empty() {
                        break batch;
                    }
                };
                found.send((batch, Instant::now())).unwrap();
            }
        })
    };
    let (mut delays, mut idle) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(300));
        let requests = proxy.requests.load(Ordering::SeqCst);
        let called = calls.load(Ordering::SeqCst);
        // Two seconds with nothing changing: 40 calls, which sent a query
        // each before (one ends every 5 s now).
        std::thread::sleep(Duration::from_secs(2));
        let during = proxy.requests.load(Ordering::SeqCst) - requests;
        let called = calls.load(Ordering::SeqCst) - called;
        assert!(called >= 30, "round {round}: {called} calls in 2 s");
        assert!(
            during <= 1,
            "round {round}: {during} requests in 2 idle s of {called} calls"
        );
        idle.push((during, called));
        let value = format!("v{round}");
        // By another store object, not through the proxy; timed from the start
        // of the put, whose answer may come after the event.
        let put = Instant::now();
        writer.put(&k("/w"), value.as_bytes()).unwrap();
        let (batch, at) = events.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(summary(&batch), [("put", "/w".into(), value)]);
        let delay = at.saturating_duration_since(put);
        assert!(
            delay < Duration::from_millis(50),
            "round {round}: {delay:?}"
        );
        delays.push(delay);
    }
    watch.join().unwrap();
    eprintln!(
        "(requests, calls) in each idle 2 s: {idle:?}; events {delays:?} after the put started"
    );
}

/// A watcher whose caller leaves it alone for a while (busy with events) takes
/// the answer its query got meanwhile; left longer than half the store's
/// timeout, it sends the query again, which answers at once: nothing is missed.
#[test]
fn a_watch_left_alone_takes_the_answer_that_came_or_asks_again() {
    use std::sync::atomic::Ordering;
    let server = own_server(2.0);
    let writer = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let proxy = Counting::to(&server);
    let watching = open_with(
        &format!("consul://127.0.0.1:{}/p", proxy.port),
        &[],
        Duration::from_secs(1),
    );
    writer.put(&k("/w"), b"0").unwrap();
    let mut w = common::watcher(&watching, "/w", false, None);
    let slice = || Instant::now() + Duration::from_millis(50);
    for (gap, asked) in [(Duration::from_millis(200), 0), (Duration::from_secs(1), 1)] {
        // A query goes out, and is left in flight.
        assert!(w.next(slice()).unwrap().is_empty());
        assert!(w.next(slice()).unwrap().is_empty());
        let before = proxy.requests.load(Ordering::SeqCst);
        let value = format!("after {gap:?}");
        writer.put(&k("/w"), value.as_bytes()).unwrap();
        std::thread::sleep(gap);
        let started = Instant::now();
        let events = w.next(started + Duration::from_secs(2)).unwrap();
        let took = started.elapsed();
        assert_eq!(summary(&events), [("put", "/w".into(), value)]);
        assert!(took < Duration::from_millis(100), "{gap:?}: {took:?}");
        let requests = proxy.requests.load(Ordering::SeqCst) - before;
        assert_eq!(requests, asked, "requests after a gap of {gap:?}");
    }
}

#[test]
fn a_watch_goes_on_when_the_index_goes_backwards() {
    let server = own_server(2.0);
    let store = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    store.put(&k("/k"), b"1").unwrap();
    let restored = common::sequence(&*store, "/k");
    let (status, saved) = raw_send(&server, "GET", "/v1/snapshot", b"");
    assert_eq!(status, 200);
    for i in 2..=6 {
        store.put(&k("/k"), i.to_string().as_bytes()).unwrap();
        store.put(&k("/other"), b"x").unwrap();
    }
    let before = common::sequence(&*store, "/k");
    let mut w = common::watcher(&store, "/k", false, None);
    // A snapshot restored: the key is back to 1, and Consul's index below the
    // one the watch waits past.
    let (status, _) = raw_send(&server, "PUT", "/v1/snapshot", &saved);
    assert_eq!(status, 200);
    let events = common::events_until(&mut *w, |e| e.value == b"1");
    assert_eq!(summary(&events), [("put", "/k".into(), "1".into())]);
    assert_eq!(events[0].sequence, restored);
    // A write now takes an index still below the one before the restore: the
    // watch sees it at once, not when its wait is over.
    let writer = store.clone();
    let putting = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let put = Instant::now();
        writer.put(&k("/k"), b"7").unwrap();
        put
    });
    let started = Instant::now();
    let events = w.next(started + Duration::from_secs(5)).unwrap();
    let seen = Instant::now();
    let put = putting.join().unwrap();
    assert_eq!(summary(&events), [("put", "/k".into(), "7".into())]);
    assert!(
        events[0].sequence < before,
        "{} {before}",
        events[0].sequence
    );
    let delay = seen.saturating_duration_since(put);
    assert!(delay < Duration::from_millis(100), "{delay:?}");
    eprintln!("after the index went backwards, a put was seen {delay:?} after it started");
}

#[test]
fn a_watched_ttl_key_is_deleted_at_its_deadline() {
    // Consul ends the key's session only at twice its TTL.
    let server = own_server(2.0);
    let store = open_with(&url(&server, "/p"), &[], Duration::from_secs(5));
    let ttl = Duration::from_secs(1);
    store.put(&k("/d/kept"), b"k").unwrap();
    let started = Instant::now();
    store.put_ttl(&k("/d/t"), b"v", None, ttl).unwrap().unwrap();
    let watches: Vec<_> = [("/d/t", false), ("/d", true)]
        .into_iter()
        .map(|(key, tree)| {
            let mut w = common::watcher(&store, key, tree, None);
            // One wait, well past the ttl: the watcher wakes at it by itself.
            std::thread::spawn(move || {
                let events = w.next(started + Duration::from_secs(5)).unwrap();
                (events, started.elapsed())
            })
        })
        .collect();
    for watch in watches {
        let (events, at) = watch.join().unwrap();
        assert_eq!(summary(&events), [("delete", "/d/t".into(), "".into())]);
        assert!(
            at >= ttl && at < ttl + Duration::from_millis(200),
            "deleted after {at:?}"
        );
        eprintln!("a watched key of ttl {ttl:?} was deleted after {at:?}");
    }
    assert!(raw_entry(&server, "p/d/t").is_some(), "Consul still has it");
}

#[test]
fn a_watch_fails_as_a_connection_error_when_consul_goes_down() {
    let server = own_server(2.0);
    let port = server.port();
    let store = open_with(&url(&server, "/p"), &[], Duration::from_secs(1));
    let mut w = common::watcher(&store, "/k", false, None);
    let stopping = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        server.shutdown();
    });
    let started = Instant::now();
    let err = w
        .next(started + Duration::from_secs(3))
        .expect_err("Consul went down");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    stopping.join().unwrap();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("watch /k on consul://127.0.0.1:{port}/p failed")),
        "{msg}"
    );
    // Down: the next wait fails at once, the same way.
    let started = Instant::now();
    let err = w.next(started + Duration::from_secs(3)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn watches_share_the_stores_connections() {
    use std::sync::atomic::Ordering;
    let server = own_server(2.0);
    let proxy = Counting::to(&server);
    let store = open_with(
        &format!("consul://127.0.0.1:{}/p", proxy.port),
        &[],
        Duration::from_secs(5),
    );
    store.put(&k("/d/k"), b"v").unwrap();
    let other = open_with(
        &format!("consul://127.0.0.1:{}/p", proxy.port),
        &[],
        Duration::from_secs(5),
    );
    // Each watch reads the target once as it starts, over the connection kept
    // by the one client of both stores.
    let watches: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { &store } else { &other };
            common::watcher(
                store,
                if i % 4 < 2 { "/d/k" } else { "/d" },
                i % 4 >= 2,
                None,
            )
        })
        .collect();
    assert_eq!(proxy.requests.load(Ordering::SeqCst), 21);
    // One, but for a request that went before the runtime had put the last
    // one's connection back in the pool (then it makes another): a client per
    // watch would have made 20.
    let connections = proxy.connections.load(Ordering::SeqCst);
    assert!(connections <= 3, "{connections} connections");
    drop(watches);
}
