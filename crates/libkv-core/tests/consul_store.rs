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
}

impl Counting {
    fn to(server: &Server) -> Counting {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let blocking = Arc::new(AtomicUsize::new(0));
        let (counted, blocked, target) = (requests.clone(), blocking.clone(), server.addr());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
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
