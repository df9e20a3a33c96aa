//! The conformance suite on a real etcd, and what only the etcd store promises:
//! keys under the prefix, sequences that are mod_revisions, bounded waits when etcd
//! is down or silent, and a client made again once etcd is back.

mod common;
mod etcd;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{d, k};
use libkv_core::{open, Auth, ErrorKind, OpenOptions, Store};

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

fn etcd_store() -> (Arc<dyn Store>, ()) {
    let url = etcd::shared().url(&etcd::unique_prefix());
    (open_url(&url, Duration::from_secs(5)), ())
}

conformance_tests!(coordination etcd_store());

#[test]
fn keys_live_under_the_prefix() {
    let prefix = etcd::unique_prefix();
    let store = open_url(&etcd::shared().url(&prefix), Duration::from_secs(5));
    store.put(&k("/app/port"), b"8080").unwrap();
    let root = open_url(&etcd::shared().url(""), Duration::from_secs(5));
    let full = format!("{prefix}/app/port");
    assert_eq!(root.get(&k(&full)).unwrap().as_deref(), Some(&b"8080"[..]));
    // Another prefix sharing the first characters is a different store.
    let sibling = open_url(
        &etcd::shared().url(&format!("{prefix}x")),
        Duration::from_secs(5),
    );
    assert!(sibling.list(&d("/")).unwrap().is_empty());
    assert_eq!(
        store.list(&d("/")).unwrap(),
        vec![("app/port".to_owned(), b"8080".to_vec())]
    );
    assert_eq!(store.url(), etcd::shared().url(&prefix));
}

#[test]
fn sequences_are_store_wide_revisions() {
    let (store, _) = etcd_store();
    store.put(&k("/a"), b"1").unwrap();
    let a = common::sequence(&*store, "/a");
    store.put(&k("/b"), b"1").unwrap();
    let b = common::sequence(&*store, "/b");
    assert!(b > a, "etcd's revision is store-wide: {b} > {a}");
    // atomic_create is a transaction too: it fails without touching the key.
    assert!(!store.atomic_create(&k("/a"), b"2").unwrap());
    assert_eq!(common::sequence(&*store, "/a"), a);
}

#[test]
fn keys_below_keys_are_allowed() {
    let (store, _) = etcd_store();
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
fn info_reports_the_cluster() {
    let (store, _) = etcd_store();
    let info = format!("{:?}", store.info().unwrap());
    for field in [
        "\"provider\"",
        "\"etcd\"",
        "\"cluster_id\"",
        "\"member_id\"",
        "\"version\"",
        "String(\"3.",
    ] {
        assert!(info.contains(field), "{field} in {info}");
    }
}

#[test]
fn an_unreachable_etcd_fails_within_the_timeout_naming_the_endpoint() {
    let port = etcd::free_port();
    let store = open_url(
        &format!("etcd://127.0.0.1:{port}/x"),
        Duration::from_secs(1),
    );
    for _ in 0..2 {
        let started = Instant::now();
        let err = store.get(&k("/key")).unwrap_err();
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert!(
            matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(msg.contains("get /key"), "{msg}");
    }
}

#[test]
fn a_silent_etcd_times_out() {
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let store = open_url(
        &format!("etcd://127.0.0.1:{port}/x"),
        Duration::from_millis(700),
    );
    let started = Instant::now();
    let err = store.put(&k("/key"), b"v").unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("timed out after 0.7s"), "{err}");
    // It never answered the connection's first request, so the put was not sent.
    assert!(
        err.to_string()
            .contains("before the store took the request; nothing was changed"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(1700),
        "{waited:?}"
    );
    drop(silent);
}

#[test]
fn the_same_store_works_again_after_etcd_restarts() {
    let (server, pid) = etcd::start(etcd::data_dir("restart"));
    let store = open_url(&server.url("/r"), Duration::from_secs(1));
    store.put(&k("/before"), b"1").unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until etcd has gone, calls may still succeed; once gone, each fails in time.
    loop {
        let started = Instant::now();
        match store.get(&k("/before")) {
            Ok(_) => assert!(Instant::now() < deadline, "etcd did not stop"),
            Err(err) => {
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "{:?}",
                    started.elapsed()
                );
                assert!(
                    matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
                    "{err}"
                );
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    etcd::wait_gone(pid);
    server.run();
    assert_eq!(
        store.get(&k("/before")).unwrap().as_deref(),
        Some(&b"1"[..])
    );
    store.put(&k("/after"), b"2").unwrap();
}

#[test]
fn auth_settings_are_checked_when_opened() {
    let url = etcd::shared().url("/x");
    let open_with = |url: &str, pairs: &[(&str, &str)]| {
        let auth = Auth::new(pairs.iter().copied()).unwrap();
        open(
            url,
            &OpenOptions {
                auth,
                ..OpenOptions::default()
            },
        )
        .err()
        .map(|e| e.to_string())
    };
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (&url, &[("username", "root")], "no password"),
        (&url, &[("password", "s3cret")], "no username"),
        (
            &url,
            &[("ca_file", "/etc/ssl/ca.pem")],
            "use an etcd+ssl:// URL",
        ),
        (
            &url,
            &[("token", "s3cret")],
            "does not use the auth setting \"token\"",
        ),
        (
            "etcd+ssl://127.0.0.1:2379/x",
            &[("cert_file", "/c.pem")],
            "both cert_file and key_file",
        ),
    ];
    for (url, pairs, why) in cases {
        let msg = open_with(url, pairs).expect(why);
        assert!(msg.contains(why), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }
}

#[test]
fn an_unreadable_tls_file_is_named_without_its_contents() {
    let store = open(
        "etcd+ssl://127.0.0.1:1/x",
        &OpenOptions {
            auth: Auth::new([("ca_file", "/nonexistent/ca.pem")]).unwrap(),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let err = store.get(&k("/key")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.to_string()
            .contains("cannot read ca_file /nonexistent/ca.pem"),
        "{err}"
    );
}

/// Both network stores check their TLS files the same way before connecting.
#[test]
fn a_tls_file_holding_the_wrong_thing_is_a_settings_error_naming_it() {
    let tmp = tempfile::TempDir::new().unwrap();
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let junk = write("junk.pem", "not-a-pem-s3cret\n");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = write("key.pem", &cert.signing_key.serialize_pem());
    let cert = write("cert.pem", &cert.cert.pem());
    let cases = [
        (
            vec![("ca_file", &junk)],
            format!("ca_file {junk} holds no PEM certificate"),
        ),
        (
            vec![("ca_file", &key)],
            format!("ca_file {key} holds no PEM certificate"),
        ),
        (
            vec![("cert_file", &key), ("key_file", &key)],
            format!("cert_file {key} holds no PEM certificate"),
        ),
        (
            vec![("cert_file", &cert), ("key_file", &junk)],
            format!("key_file {junk} holds no PEM private key"),
        ),
        (
            vec![("cert_file", &cert), ("key_file", &cert)],
            format!("key_file {cert} holds no PEM private key"),
        ),
    ];
    for url in ["etcd+ssl://127.0.0.1:1/x", "consul+ssl://127.0.0.1:1/x"] {
        for (pairs, why) in &cases {
            let store = open(
                url,
                &OpenOptions {
                    auth: Auth::new(pairs.iter().map(|(k, v)| (*k, v.as_str()))).unwrap(),
                    ..OpenOptions::default()
                },
            )
            .unwrap();
            let err = store.get(&k("/key")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{url}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(why), "{url}: {msg}");
            assert!(!msg.contains("s3cret") && !msg.contains("BEGIN"), "{msg}");
        }
    }
}

#[test]
fn listings_larger_than_grpcs_default_message_limit_are_read() {
    let (store, _) = etcd_store();
    // Six values of 1 MB, each below etcd's request limit, 6 MB together: above
    // the 4 MiB a gRPC client accepts by default.
    let value = vec![b'x'; 1_000_000];
    for i in 0..6 {
        store.put(&k(&format!("/big/k{i}")), &value).unwrap();
    }
    let listed = store.list(&d("/big")).unwrap();
    assert_eq!(listed.len(), 6);
    assert!(listed.iter().all(|(_, v)| v == &value));
    assert_eq!(store.atomic_list(&d("/big")).unwrap().len(), 6);
}

#[test]
fn a_value_larger_than_etcd_takes_is_refused_saying_so() {
    let (store, _) = etcd_store();
    // Above etcd's request limit, and above its gRPC message limit.
    for size in [1_700_000, 10 << 20] {
        let err = store.put(&k("/huge"), &vec![b'x'; size]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("put /huge") && msg.contains("--max-request-bytes"),
            "{msg}"
        );
    }
    assert_eq!(store.get(&k("/huge")).unwrap(), None);
}

#[test]
fn names_another_client_wrote_that_are_not_keys_are_not_listed() {
    let prefix = etcd::unique_prefix();
    let store = open_url(&etcd::shared().url(&prefix), Duration::from_secs(5));
    store.put(&k("/hosts/web01"), b"10.0.0.1").unwrap();
    let endpoint = format!("127.0.0.1:{}", etcd::shared().client_port);
    for name in ["sp ace", "trailing/", "a//b", "../up", "caf\u{e9}", ""] {
        let status = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "put"])
            .arg(format!("{prefix}/hosts/{name}"))
            .arg("x")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("etcdctl runs (Debian package etcd-client)");
        assert!(status.success(), "etcdctl put {name:?}");
    }
    common::lists_only_keys(&*store);
}
