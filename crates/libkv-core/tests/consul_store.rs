//! The conformance suite on the Consul test double (crates/consul-double), and what
//! only the Consul store promises: keys under the prefix, sequences that are
//! ModifyIndexes, the ACL token, clear errors, bounded waits.

mod common;

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{d, k};
use consul_double::{Config, Server};
use libkv_core::{open, Auth, ErrorKind, OpenOptions, Store};

const TOKEN: &str = "consul-t0ken";

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        consul_double::start(Config::default(), "127.0.0.1:0".parse().unwrap()).unwrap()
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

conformance_tests!(consul_store());

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
