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

fn watch_of(
    store: &Arc<dyn Store>,
    dir: &str,
    from: Option<u64>,
) -> Box<dyn libkv_core::watch::Watcher> {
    libkv_core::watch::open(
        store,
        libkv_core::watch::Target {
            key: d(dir),
            tree: true,
        },
        from,
    )
    .unwrap()
}

/// The values of `n` events from `watcher`, waiting at most 20 s.
fn next_values(watcher: &mut dyn libkv_core::watch::Watcher, n: usize) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.len() < n && Instant::now() < deadline {
        for e in watcher
            .next(Instant::now() + Duration::from_millis(200))
            .unwrap()
        {
            seen.push((String::from_utf8(e.value).unwrap(), e.sequence));
        }
    }
    seen
}

/// A watch goes on after etcd restarts, from the revision after the last event it
/// handed out: the changes made before, and those made once etcd is back (before
/// the watch has noticed), each come once, in order.
#[test]
fn a_watch_across_an_etcd_restart_sees_every_change_once_in_order() {
    let (server, pid) = etcd::start(etcd::data_dir("watch-restart"));
    let store = open_url(&server.url("/wr"), Duration::from_secs(5));
    let mut watcher = watch_of(&store, "/w", None);
    for i in 0..5 {
        store.put(&k("/w/key"), format!("v{i}").as_bytes()).unwrap();
    }
    let mut seen = next_values(&mut *watcher, 5);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    etcd::wait_gone(pid);
    server.run();
    // Written while the watch's stream is still the dead one.
    for i in 5..10 {
        store.put(&k("/w/key"), format!("v{i}").as_bytes()).unwrap();
    }
    seen.extend(next_values(&mut *watcher, 5));
    let values: Vec<&str> = seen.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        values,
        ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9"]
    );
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{seen:?}");
    assert!(watcher
        .next(Instant::now() + Duration::from_millis(300))
        .unwrap()
        .is_empty());
}

/// A watch from a revision etcd has compacted away fails, saying to read again.
#[test]
fn a_watch_from_compacted_history_says_to_read_again() {
    let (server, _pid) = etcd::start(etcd::data_dir("watch-compact"));
    let store = open_url(&server.url("/wc"), Duration::from_secs(5));
    store.put(&k("/c/key"), b"1").unwrap();
    let old = common::sequence(&*store, "/c/key");
    store.put(&k("/c/key"), b"2").unwrap();
    store.put(&k("/c/key"), b"3").unwrap();
    let now = common::sequence(&*store, "/c/key");
    let endpoint = format!("http://127.0.0.1:{}", server.client_port);
    libkv_core_test_runtime().block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        client.compact(now as i64, None).await.unwrap();
    });
    let err = match libkv_core::watch::open(
        &store,
        libkv_core::watch::Target {
            key: k("/c/key"),
            tree: false,
        },
        Some(old),
    ) {
        Err(e) => e,
        Ok(mut w) => w
            .next(Instant::now() + Duration::from_secs(5))
            .expect_err("a watch from compacted history"),
    };
    let message = err.to_string();
    assert!(
        message.contains("compacted") && message.contains("read again"),
        "{message}"
    );
    assert!(message.contains("/c/key"), "{message}");
    // From the sequence read now, it works.
    let mut w = watch_of(&store, "/c", Some(now));
    store.put(&k("/c/key"), b"4").unwrap();
    assert_eq!(next_values(&mut *w, 1)[0].0, "4");
}

fn libkv_core_test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The established TCP connections of this process to `port` on 127.0.0.1 (the
/// sockets among its open files).
fn connections_to(port: u16) -> usize {
    let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str())
                && fields.get(3) == Some(&"01")
                && fields.get(9).is_some_and(|inode| ours.contains(*inode))
        })
        .count()
}

/// 100 watches in one process, on store objects of their own, share the one
/// connection every call uses, and each sees a change.
#[test]
fn a_hundred_watches_share_one_connection() {
    let (server, _pid) = etcd::start(etcd::data_dir("watch-many"));
    let url = server.url("/wm");
    let mut watchers: Vec<_> = (0..100)
        .map(|i| {
            let store = open_url(&url, Duration::from_secs(5));
            watch_of(&store, &format!("/many/{}", i % 10), None)
        })
        .collect();
    let store = open_url(&url, Duration::from_secs(5));
    for i in 0..10 {
        store.put(&k(&format!("/many/{i}/key")), b"x").unwrap();
    }
    for w in &mut watchers {
        assert_eq!(next_values(&mut **w, 1).len(), 1);
    }
    assert_eq!(connections_to(server.client_port), 1);
}

/// A watch whose etcd stops answering (SIGSTOP: the connection stays open, silent)
/// asks for progress once it has been quiet 10 s, gives the stream up when no
/// answer comes within the store's timeout, and goes on once etcd answers again,
/// from the revision after its last event.
#[test]
fn a_watch_on_a_silent_etcd_gives_its_stream_up_and_goes_on() {
    let (server, pid) = etcd::start(etcd::data_dir("watch-silent"));
    let store = open_url(&server.url("/ws"), Duration::from_secs(2));
    let mut watcher = watch_of(&store, "/s", None);
    store.put(&k("/s/key"), b"v0").unwrap();
    assert_eq!(next_values(&mut *watcher, 1)[0].0, "v0");
    let signal = |sig| {
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig)
            .unwrap()
    };
    signal(rustix::process::Signal::STOP);
    // Waited on in steps while etcd is silent: no event, no error for a while,
    // then (the stream given up, no new one answering) an error.
    let started = Instant::now();
    let outcome = loop {
        match watcher.next(Instant::now() + Duration::from_millis(200)) {
            Ok(events) => assert!(events.is_empty()),
            Err(e) => break e,
        }
        assert!(started.elapsed() < Duration::from_secs(30), "still waiting");
    };
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(10), "{took:?}: {outcome}");
    signal(rustix::process::Signal::CONT);
    // A write another client made meanwhile is not missed.
    let other = open_url(&server.url("/ws"), Duration::from_secs(5));
    other.put(&k("/s/key"), b"v1").unwrap();
    other.put(&k("/s/key"), b"v2").unwrap();
    let values: Vec<String> = next_values(&mut *watcher, 2)
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(values, ["v1", "v2"]);
}
