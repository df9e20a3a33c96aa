//! The C ABI called as C calls it: pointers and lengths in, results to copy and free.

use std::ptr;

use super::*;

/// What a result held, copied out; the result is freed.
#[derive(Debug)]
struct Answer {
    status: i32,
    data: String,
    key: Option<String>,
    handle: u64,
}

fn take(result: *mut LibkvResult) -> Answer {
    assert!(!result.is_null());
    // SAFETY: a result from libkv_open or libkv_call, freed once below.
    unsafe {
        let r = &*result;
        let copy = |p: *mut u8, n: usize| {
            String::from_utf8(std::slice::from_raw_parts(p, n).to_vec()).unwrap()
        };
        let answer = Answer {
            status: r.status,
            data: copy(r.data, r.data_len),
            key: (!r.key.is_null()).then(|| copy(r.key, r.key_len)),
            handle: r.handle,
        };
        libkv_result_free(result);
        answer
    }
}

fn open(url: &str, auth: &str) -> Answer {
    // SAFETY: every pointer points at its length of bytes.
    take(unsafe {
        libkv_open(
            url.as_ptr(),
            url.len(),
            auth.as_ptr(),
            auth.len(),
            5.0,
            ptr::null(),
            0,
            ptr::null(),
            0,
        )
    })
}

/// A store to call; freed when dropped.
struct Opened(u64);

impl Drop for Opened {
    fn drop(&mut self) {
        libkv_store_free(self.0)
    }
}

fn mock() -> Opened {
    let a = open("mock://", "[]");
    assert_eq!(a.status, LIBKV_OK, "{}", a.data);
    Opened(a.handle)
}

fn call(store: &Opened, op: &str, key: &str, value: (i32, &[u8]), previous: (i32, u64)) -> Answer {
    call_handle(store.0, op, key, value, previous)
}

fn call_handle(
    store: u64,
    op: &str,
    key: &str,
    value: (i32, &[u8]),
    previous: (i32, u64),
) -> Answer {
    call_ttl(store, op, key, value, previous, (LIBKV_TTL_NONE, 0))
}

fn call_ttl(
    store: u64,
    op: &str,
    key: &str,
    value: (i32, &[u8]),
    previous: (i32, u64),
    ttl: (i32, i64),
) -> Answer {
    // SAFETY: every pointer points at its length of bytes.
    take(unsafe {
        libkv_call(
            store,
            op.as_ptr(),
            op.len(),
            key.as_ptr(),
            key.len(),
            value.0,
            value.1.as_ptr(),
            value.1.len(),
            previous.0,
            previous.1,
            1,
            ttl.0,
            ttl.1,
        )
    })
}

const NONE: (i32, &[u8]) = (LIBKV_VALUE_NONE, b"");
const NO_PREVIOUS: (i32, u64) = (LIBKV_PREVIOUS_NONE, 0);

fn data(json: &str) -> (i32, &[u8]) {
    (LIBKV_VALUE_DATA, json.as_bytes())
}

#[test]
fn versions() {
    assert_eq!(libkv_abi_version(), LIBKV_ABI_VERSION);
    // SAFETY: a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(libkv_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

/// Every status names an exception class that lib/libkv/errors.rb declares, and
/// nothing else has a name.
#[test]
fn every_status_names_a_declared_exception_class() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../lib/libkv/errors.rb");
    let ruby = std::fs::read_to_string(file).unwrap();
    for status in LIBKV_E_INVALID_ARGUMENT..=LIBKV_E_LOCK_LOST {
        // SAFETY: a static NUL-terminated string, or NULL.
        let name = unsafe { std::ffi::CStr::from_ptr(libkv_error_name(status)) };
        let name = name.to_str().unwrap();
        let declared = name == "Error" || ruby.contains(&format!("class {name} < "));
        assert!(declared, "status {status}: LibKV::{name} is not in {file}");
    }
    assert!(libkv_error_name(LIBKV_OK).is_null());
    assert!(libkv_error_name(LIBKV_E_LOCK_LOST + 1).is_null());
}

/// The library refuses to load beside Ruby code of another version, so the
/// crates (Cargo.toml's workspace version) and the gem (LibKV::VERSION) must say
/// the same.
#[test]
fn the_gem_has_the_crate_version() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../lib/libkv/version.rb");
    let ruby = std::fs::read_to_string(file).unwrap();
    let gem = ruby
        .lines()
        .find_map(|l| l.trim().strip_prefix("VERSION = "))
        .map(|v| v.trim_matches('"'))
        .unwrap_or_else(|| panic!("no VERSION in {file}"));
    assert_eq!(
        gem,
        env!("CARGO_PKG_VERSION"),
        "LibKV::VERSION in lib/libkv/version.rb and version in Cargo.toml"
    );
}

#[test]
fn open_describes_the_store() {
    let a = open("mock://name", "[]");
    assert_eq!(a.status, LIBKV_OK);
    assert!(a
        .data
        .starts_with(r#"{"provider":"mock","url":"mock://name","supports":["get","#));
    drop(Opened(a.handle));
    let bad = open("ftp://x", "[]");
    assert_eq!(bad.status, LIBKV_E_INVALID_ARGUMENT);
    assert!(bad.data.contains("unknown scheme"), "{}", bad.data);
    assert!(bad.handle == 0 && bad.key.is_none());
}

#[test]
fn url_vardir_and_environment_must_be_utf8() {
    let a = open("mock://caf\u{e9}", "[]");
    assert_eq!(a.status, LIBKV_E_INVALID_ARGUMENT, "{}", a.data);
    let latin1 = |url: &[u8], vardir: &[u8], environment: &[u8]| {
        // SAFETY: every pointer points at its length of bytes.
        take(unsafe {
            libkv_open(
                url.as_ptr(),
                url.len(),
                b"[]".as_ptr(),
                2,
                5.0,
                vardir.as_ptr(),
                vardir.len(),
                environment.as_ptr(),
                environment.len(),
            )
        })
    };
    let a = latin1(b"mock://caf\xe9", b"/v", b"production");
    assert_eq!(a.status, LIBKV_E_INTERNAL);
    assert!(a.data.contains("url is not UTF-8"), "{}", a.data);
    let a = latin1(b"legacy-simp6://", b"/v\xe9", b"production");
    assert!(a.data.contains("vardir is not UTF-8"), "{}", a.data);
    let a = latin1(b"legacy-simp6://", b"/v", b"prod\xe9");
    assert!(a.data.contains("environment is not UTF-8"), "{}", a.data);
}

#[test]
fn auth_errors_name_the_setting_never_the_value() {
    let a = open("mock://", r#"[["password","hunter2"]]"#);
    assert_eq!(a.status, LIBKV_E_INVALID_ARGUMENT);
    assert!(
        a.data.contains("password") && !a.data.contains("hunter2"),
        "{}",
        a.data
    );
    let a = open("mock://", r#"[[null,"hunter2"]]"#);
    assert_eq!(a.data, "auth keys must be Strings or Symbols");
    let a = open("mock://", r#"[["token",null]]"#);
    assert_eq!(a.data, r#"the auth setting "token" must be a String"#);
    let a = open("mock://", "{");
    assert_eq!(a.status, LIBKV_E_INTERNAL);
}

#[test]
fn values_round_trip_as_data() {
    let s = mock();
    let value = r#"{"i":1,"f":-0.0,"b":{"__ptype":"Binary","__pvalue":"/w=="},"h":{"__ptype":"Hash","__pvalue":[1,null]}}"#;
    assert_eq!(call(&s, "put", "/k", data(value), NO_PREVIOUS).data, "true");
    assert_eq!(call(&s, "get", "/k", NONE, NO_PREVIOUS).data, value);
    assert_eq!(call(&s, "get", "/absent", NONE, NO_PREVIOUS).data, "null");
    let listed = call(&s, "list", "/", NONE, NO_PREVIOUS);
    assert_eq!(listed.data, format!(r#"{{"k":{value}}}"#));
    let got = call(&s, "atomic_get", "/k", NONE, NO_PREVIOUS).data;
    assert!(
        got.starts_with(&format!(r#"{{"value":{value},"sequence":"#)),
        "{got}"
    );
    assert_eq!(
        call(&s, "atomic_get", "/absent", NONE, NO_PREVIOUS).data,
        r#"{"value":null,"sequence":0}"#
    );
    // A key named like a tag is escaped, so every __ptype object is a tag.
    call(&s, "put", "/d/__ptype", data("1"), NO_PREVIOUS);
    assert_eq!(
        call(&s, "list", "/d", NONE, NO_PREVIOUS).data,
        r#"{"__ptype":"Hash","__pvalue":["__ptype",1]}"#
    );
    // Strings are stored as plain bytes.
    call(&s, "put", "/s", data(r#""text""#), NO_PREVIOUS);
    // SAFETY: a live store; every pointer points at its length of bytes.
    let raw = take(unsafe {
        libkv_call(
            s.0,
            "get".as_ptr(),
            3,
            "/k".as_ptr(),
            2,
            0,
            ptr::null(),
            0,
            0,
            0,
            0,
            LIBKV_TTL_NONE,
            0,
        )
    });
    assert!(
        raw.data.starts_with(r#""{\"libkv\":1,\"value\":"#),
        "{}",
        raw.data
    );
}

#[test]
fn the_key_is_checked_first_and_errors_carry_it() {
    let s = mock();
    let refused = (LIBKV_VALUE_REFUSED, &br#"["class","Object"]"#[..]);
    let a = call(&s, "put", "bad", refused, NO_PREVIOUS);
    assert_eq!(a.status, LIBKV_E_INVALID_KEY);
    assert_eq!(a.key.as_deref(), Some("bad"));
    let a = call(&s, "put", "/k", refused, NO_PREVIOUS);
    assert_eq!(a.status, LIBKV_E_INVALID_ARGUMENT);
    assert_eq!(a.key.as_deref(), Some("/k"));
    assert!(
        a.data.contains("/k") && a.data.contains("class Object"),
        "{}",
        a.data
    );
    let a = call(&s, "put", "/k", (LIBKV_VALUE_NOT_STRING, b""), NO_PREVIOUS);
    assert!(a.data.contains("must be a String"), "{}", a.data);
    let a = call(
        &s,
        "put",
        "/k",
        (LIBKV_VALUE_REFUSED, br#"["non-finite","-inf"]"#),
        NO_PREVIOUS,
    );
    assert_eq!(a.status, LIBKV_E_INVALID_ARGUMENT);
    assert!(
        a.data.contains("the Float -inf cannot be stored"),
        "{}",
        a.data
    );
    for unknown in [
        &br#"["class"]"#[..],
        br#"["non-finite","1.5"]"#,
        b"too-deep",
    ] {
        let a = call(&s, "put", "/k", (LIBKV_VALUE_REFUSED, unknown), NO_PREVIOUS);
        assert_eq!(a.status, LIBKV_E_INTERNAL, "{}", a.data);
    }
    let malformed = (LIBKV_PREVIOUS_MALFORMED, 0);
    let a = call(&s, "atomic_put", "/k", refused, malformed);
    assert!(a.data.contains("previous for atomic_put /k"), "{}", a.data);
    let a = call(&s, "atomic_delete", "/x", NONE, malformed);
    assert_eq!(
        (a.status, a.key.as_deref()),
        (LIBKV_E_INVALID_ARGUMENT, Some("/x"))
    );
    let a = call(&s, "put", "/k", data("[1e999]"), NO_PREVIOUS);
    assert_eq!(a.status, LIBKV_E_INTERNAL, "{}", a.data);
    // SAFETY: a live store; every pointer points at its length of bytes.
    let a = take(unsafe {
        libkv_call(
            s.0,
            "get".as_ptr(),
            3,
            b"/a\xffb".as_ptr(),
            4,
            0,
            ptr::null(),
            0,
            0,
            0,
            1,
            LIBKV_TTL_NONE,
            0,
        )
    });
    assert_eq!(a.status, LIBKV_E_INVALID_KEY);
    assert!(
        a.data
            .starts_with("invalid key \"/a\u{fffd}b\": it is not valid UTF-8"),
        "{}",
        a.data
    );
    let a = call(&s, "frobnicate", "/k", NONE, NO_PREVIOUS);
    assert_eq!(a.status, LIBKV_E_INTERNAL);
}

#[test]
fn store_errors_map_to_their_kinds() {
    let dir = std::env::temp_dir().join(format!("libkv-ffi-test-{}", std::process::id()));
    std::fs::write(&dir, "a file, not a directory").unwrap();
    let a = open(&format!("file://{}/store", dir.display()), "[]");
    let s = Opened(a.handle);
    let a = call(&s, "put", "/k", data("1"), NO_PREVIOUS);
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(a.status, LIBKV_E_STORE, "{}", a.data);
    assert_eq!(a.key.as_deref(), Some("/k"));
    let a = open("etcd://127.0.0.1:1/p", "[]");
    let s = Opened(a.handle);
    let a = call(&s, "get", "/k", NONE, NO_PREVIOUS);
    assert_eq!(a.status, LIBKV_E_CONNECTION, "{}", a.data);
}

#[test]
fn a_null_store_or_pointer_is_an_internal_error_not_a_crash() {
    // SAFETY: NULL is allowed and refused.
    let a = take(unsafe {
        libkv_call(
            0,
            ptr::null(),
            0,
            ptr::null(),
            0,
            0,
            ptr::null(),
            0,
            0,
            0,
            1,
            LIBKV_TTL_NONE,
            0,
        )
    });
    assert_eq!(a.status, LIBKV_E_INTERNAL);
    assert!(
        a.data.contains("store handle 0 was never opened"),
        "{}",
        a.data
    );
    let s = mock();
    // SAFETY: a live store; a NULL key with a length is refused.
    let a = take(unsafe {
        libkv_call(
            s.0,
            "get".as_ptr(),
            3,
            ptr::null(),
            5,
            0,
            ptr::null(),
            0,
            0,
            0,
            1,
            LIBKV_TTL_NONE,
            0,
        )
    });
    assert_eq!(a.status, LIBKV_E_INTERNAL);
    assert!(a.data.contains("key is NULL"), "{}", a.data);
    // SAFETY: NULL is ignored.
    unsafe { libkv_result_free(ptr::null_mut()) };
    libkv_store_free(0);
}

#[test]
fn a_panic_becomes_an_internal_error() {
    let a = take(guarded(|| panic!("boom")));
    assert_eq!(a.status, LIBKV_E_INTERNAL);
    assert!(a.data.contains("panicked: boom"), "{}", a.data);
}

#[test]
fn threads_share_a_store() {
    let s = mock();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..50 {
                    loop {
                        let got = call(&s, "atomic_get", "/n", NONE, NO_PREVIOUS).data;
                        let n: i64 = got
                            .split("\"value\":")
                            .nth(1)
                            .and_then(|rest| rest.split(',').next())
                            .map(|v| v.parse().unwrap_or(0))
                            .unwrap();
                        let seq: u64 = got
                            .rsplit("\"sequence\":")
                            .next()
                            .unwrap()
                            .trim_end_matches('}')
                            .parse()
                            .unwrap();
                        let next = (n + 1).to_string();
                        let put = call(
                            &s,
                            "atomic_put",
                            "/n",
                            data(&next),
                            (LIBKV_PREVIOUS_SEQUENCE, seq),
                        );
                        if put.data == "true" {
                            break;
                        }
                    }
                }
            });
        }
    });
    assert_eq!(call(&s, "get", "/n", NONE, NO_PREVIOUS).data, "400");
}

#[test]
fn handles_are_numbers_from_one_never_reused() {
    let a = mock();
    let b = mock();
    assert!(a.0 >= 1 && b.0 > a.0, "{} then {}", a.0, b.0);
    let freed = a.0;
    drop(a);
    let c = mock();
    assert!(c.0 > b.0 && c.0 != freed);
}

#[test]
fn a_call_after_free_is_an_error_not_a_crash() {
    let s = mock();
    assert_eq!(call(&s, "put", "/k", data("1"), NO_PREVIOUS).data, "true");
    let handle = s.0;
    drop(s);
    let a = call_handle(handle, "get", "/k", NONE, NO_PREVIOUS);
    assert_eq!(a.status, LIBKV_E_INTERNAL);
    assert_eq!(
        a.data,
        format!("libkv internal error: store handle {handle} is closed")
    );
    let never = call_handle(u64::MAX, "get", "/k", NONE, NO_PREVIOUS);
    assert_eq!(never.status, LIBKV_E_INTERNAL);
    assert!(never.data.contains("was never opened"), "{}", never.data);
}

#[test]
fn freeing_twice_or_an_unknown_handle_is_harmless() {
    let s = mock();
    let handle = s.0;
    libkv_store_free(handle);
    libkv_store_free(handle);
    libkv_store_free(u64::MAX);
    libkv_store_free(0);
    // Opened's drop frees it a third time.
    drop(s);
    let other = mock();
    assert_eq!(
        call(&other, "put", "/k", data("1"), NO_PREVIOUS).data,
        "true"
    );
}

/// A store freed (as a garbage collector's finalizer frees it) while several
/// threads call it: every call either completes or says the handle is closed.
#[test]
fn freeing_while_threads_call_never_crashes() {
    use std::sync::atomic::AtomicBool;
    let mut completed_in_all = 0;
    for round in 0..200 {
        let handle = mock();
        let id = handle.0;
        call(&handle, "put", "/k", data("1"), NO_PREVIOUS);
        let started = AtomicBool::new(false);
        let (completed, closed) = std::thread::scope(|scope| {
            let callers: Vec<_> = (0..4)
                .map(|t| {
                    let started = &started;
                    scope.spawn(move || {
                        // Until the free has been seen a few times: calls before,
                        // during and after it.
                        let (mut completed, mut closed) = (0, 0);
                        for i in 0.. {
                            if closed == 3 {
                                break;
                            }
                            started.store(true, Ordering::Relaxed);
                            let op = ["get", "put", "atomic_get", "list"][(t + i) % 4];
                            let value = if op == "put" { data("2") } else { NONE };
                            let a = call_handle(id, op, "/k", value, NO_PREVIOUS);
                            match a.status {
                                LIBKV_OK => completed += 1,
                                LIBKV_E_INTERNAL
                                    if a.data
                                        .ends_with(&format!("store handle {id} is closed")) =>
                                {
                                    closed += 1
                                }
                                _ => panic!("round {round}: {} {}", a.status, a.data),
                            }
                        }
                        (completed, closed)
                    })
                })
                .collect();
            while !started.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            // Free it while the calls run (and, from another thread, again).
            let freer = scope.spawn(move || libkv_store_free(id));
            libkv_store_free(id);
            freer.join().unwrap();
            callers
                .into_iter()
                .map(|c| c.join().unwrap())
                .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
        });
        assert_eq!(closed, 4 * 3, "round {round}");
        completed_in_all += completed;
        drop(handle);
    }
    assert!(completed_in_all > 0, "no call ever ran before the free");
}

/// A store whose drop panics, as a bug in a backend's drop would.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("dropping the store failed");
    }
}

/// The methods of a store that holds nothing and never fails.
macro_rules! inert_store {
    () => {
        fn provider(&self) -> &'static str {
            "mock"
        }
        fn url(&self) -> &str {
            "mock://"
        }
        fn get(&self, _: &libkv_core::Key) -> libkv_core::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn put(&self, _: &libkv_core::Key, _: &[u8]) -> libkv_core::Result<()> {
            Ok(())
        }
        fn delete(&self, _: &libkv_core::Key) -> libkv_core::Result<()> {
            Ok(())
        }
        fn exists(&self, _: &libkv_core::Key) -> libkv_core::Result<bool> {
            Ok(false)
        }
        fn list(&self, _: &libkv_core::Key) -> libkv_core::Result<libkv_core::Listing<Vec<u8>>> {
            Ok(Default::default())
        }
        fn deletetree(&self, _: &libkv_core::Key) -> libkv_core::Result<()> {
            Ok(())
        }
        fn atomic_create(&self, _: &libkv_core::Key, _: &[u8]) -> libkv_core::Result<bool> {
            Ok(true)
        }
        fn atomic_get(
            &self,
            _: &libkv_core::Key,
        ) -> libkv_core::Result<Option<libkv_core::Versioned>> {
            Ok(None)
        }
        fn atomic_put(&self, _: &libkv_core::Key, _: &[u8], _: u64) -> libkv_core::Result<bool> {
            Ok(true)
        }
        fn atomic_delete(&self, _: &libkv_core::Key, _: u64) -> libkv_core::Result<bool> {
            Ok(true)
        }
        fn atomic_list(
            &self,
            _: &libkv_core::Key,
        ) -> libkv_core::Result<libkv_core::Listing<libkv_core::Versioned>> {
            Ok(Default::default())
        }
        fn info(&self) -> libkv_core::Result<libkv_core::Value> {
            Ok(libkv_core::Value::Undef)
        }
    };
}

impl Store for PanicsOnDrop {
    inert_store!();
}

#[test]
fn a_store_whose_drop_panics_is_freed_without_unwinding_or_aborting() {
    let handle = STORES.register(Arc::new(PanicsOnDrop));
    assert_eq!(
        call_handle(handle, "get", "/k", NONE, NO_PREVIOUS).data,
        "null"
    );
    libkv_store_free(handle);
    let a = call_handle(handle, "get", "/k", NONE, NO_PREVIOUS);
    assert!(a.data.ends_with("is closed"), "{}", a.data);
    // The registry still works.
    let s = mock();
    assert_eq!(call(&s, "put", "/k", data("1"), NO_PREVIOUS).data, "true");
}

// Keys that expire and locks.

const TTL: i32 = LIBKV_TTL_SECONDS;

fn lock(store: u64, key: &str, ttl: i64, timeout: f64, renew: bool) -> Answer {
    // SAFETY: the key points at its length of bytes.
    take(unsafe {
        libkv_lock(
            store,
            key.as_ptr(),
            key.len(),
            ttl,
            timeout,
            i32::from(renew),
        )
    })
}

fn unlock(store: u64, key: &str, owner: &[u8]) -> Answer {
    // SAFETY: every pointer points at its length of bytes.
    take(unsafe { libkv_unlock(store, key.as_ptr(), key.len(), owner.as_ptr(), owner.len()) })
}

/// A lock handle; freed when dropped.
struct Locked {
    handle: u64,
    described: serde_json::Value,
}

impl Drop for Locked {
    fn drop(&mut self) {
        libkv_lock_free(self.handle)
    }
}

impl Locked {
    fn owner(&self) -> String {
        self.described["owner"].as_str().unwrap().to_owned()
    }

    fn fence(&self) -> u64 {
        self.described["fence"].as_u64().unwrap()
    }
}

fn locked(store: &Opened, key: &str, ttl: i64, renew: bool) -> Locked {
    let a = lock(store.0, key, ttl, 0.0, renew);
    assert_eq!(a.status, LIBKV_OK, "{}", a.data);
    assert!(a.handle >= 1);
    Locked {
        handle: a.handle,
        described: serde_json::from_str(&a.data).unwrap(),
    }
}

fn millis(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

#[test]
fn ttl_is_carried_and_checked_by_the_core() {
    let s = mock();
    let put = |key: &str, ttl| call_ttl(s.0, "put", key, data("1"), NO_PREVIOUS, (TTL, ttl));
    assert_eq!(put("/t", 1).data, "true");
    assert_eq!(call(&s, "get", "/t", NONE, NO_PREVIOUS).data, "1");
    let created = call_ttl(s.0, "atomic_create", "/c", data("2"), NO_PREVIOUS, (TTL, 1));
    assert_eq!(created.data, "true");
    let again = call_ttl(s.0, "atomic_create", "/c", data("3"), NO_PREVIOUS, (TTL, 1));
    assert_eq!(again.data, "false");
    let got = call(&s, "atomic_get", "/c", NONE, NO_PREVIOUS).data;
    let seq: u64 = got
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('}')
        .parse()
        .unwrap();
    let replaced = call_ttl(
        s.0,
        "atomic_put",
        "/c",
        data("4"),
        (LIBKV_PREVIOUS_SEQUENCE, seq),
        (TTL, 60),
    );
    assert_eq!(replaced.data, "true");
    // Out of the store's bounds, or on an operation without one: refused before
    // anything is written.
    for ttl in [0, -1, i64::MIN, 315_360_001, i64::MAX] {
        let a = put("/refused", ttl);
        assert_eq!(a.status, LIBKV_E_INVALID_ARGUMENT, "{ttl}: {}", a.data);
        assert!(
            a.data.contains(&format!("not {ttl}")) && a.data.contains("mock"),
            "{}",
            a.data
        );
    }
    assert_eq!(
        call(&s, "exists", "/refused", NONE, NO_PREVIOUS).data,
        "false"
    );
    let a = call_ttl(s.0, "get", "/t", NONE, NO_PREVIOUS, (TTL, 5));
    assert_eq!(a.status, LIBKV_E_INVALID_ARGUMENT, "{}", a.data);
    assert!(a.data.contains("not of get"), "{}", a.data);
    // The key is checked first, as on MRI.
    let a = call_ttl(s.0, "put", "bad", data("1"), NO_PREVIOUS, (TTL, 0));
    assert_eq!(a.status, LIBKV_E_INVALID_KEY, "{}", a.data);
    let a = call_ttl(s.0, "put", "/k", data("1"), NO_PREVIOUS, (7, 5));
    assert_eq!(a.status, LIBKV_E_INTERNAL, "{}", a.data);
    assert!(a.data.contains("ttl_form 7"), "{}", a.data);
    // The shortest ttl passes: gone, where put with ttl 60 is not.
    millis(1300);
    assert_eq!(call(&s, "get", "/t", NONE, NO_PREVIOUS).data, "null");
    assert_eq!(call(&s, "get", "/c", NONE, NO_PREVIOUS).data, "4");
}

#[test]
fn a_lock_is_held_refused_to_another_then_unlocked() {
    let s = mock();
    let l = locked(&s, "/l", 30, true);
    assert_eq!(l.described["key"], "/l");
    assert_eq!(l.described["ttl"], 30);
    assert!(l.fence() >= 1);
    assert_eq!(libkv_lock_held(l.handle), 1);
    assert_eq!(take(libkv_lock_lost(l.handle)).data, "null");
    // The lock key holds the owner.
    let owner = l.owner();
    assert_eq!(
        call(&s, "get", "/l", NONE, NO_PREVIOUS).data,
        serde_json::to_string(&owner).unwrap()
    );
    // Another attempt waits its timeout, then fails with the key.
    let started = std::time::Instant::now();
    let a = lock(s.0, "/l", 30, 0.2, true);
    let waited = started.elapsed().as_secs_f64();
    assert_eq!(a.status, LIBKV_E_LOCK_TIMEOUT, "{}", a.data);
    assert_eq!((a.key.as_deref(), a.handle), (Some("/l"), 0));
    assert!(a.data.contains("/l"), "{}", a.data);
    assert!((0.2..3.0).contains(&waited), "{waited}");
    // Released: not held, the key is free, and unlocking again is harmless.
    let a = take(libkv_lock_unlock(l.handle));
    assert_eq!((a.status, a.data.as_str()), (LIBKV_OK, "true"));
    assert_eq!(libkv_lock_held(l.handle), 0);
    assert_eq!(take(libkv_lock_unlock(l.handle)).data, "true");
    assert_eq!(call(&s, "exists", "/l", NONE, NO_PREVIOUS).data, "false");
    let next = locked(&s, "/l", 30, true);
    assert!(
        next.fence() > l.fence(),
        "{} then {}",
        l.fence(),
        next.fence()
    );
    assert!(next.handle > l.handle);
    // Released by owner, from what libkv_lock answered: once.
    let owner = next.owner();
    assert_eq!(unlock(s.0, "/l", owner.as_bytes()).data, "true");
    assert_eq!(unlock(s.0, "/l", owner.as_bytes()).data, "false");
    let a = unlock(s.0, "/l", b"\xff");
    assert_eq!(a.status, LIBKV_E_INTERNAL);
    assert!(a.data.contains("owner is not UTF-8"), "{}", a.data);
    let a = unlock(s.0, "bad", b"o");
    assert_eq!(
        (a.status, a.key.as_deref()),
        (LIBKV_E_INVALID_KEY, Some("bad"))
    );
}

/// A store without locks nor keys that expire.
struct Lockless;

impl Store for Lockless {
    inert_store!();

    fn supports(&self) -> &'static [libkv_core::Op] {
        use libkv_core::Op::*;
        &[
            Get,
            Put,
            Delete,
            Exists,
            List,
            Deletetree,
            AtomicCreate,
            AtomicGet,
            AtomicPut,
        ]
    }
}

#[test]
fn lock_arguments_are_checked_by_the_core() {
    let s = mock();
    for (key, ttl, timeout, status) in [
        ("bad", 30, 0.0, LIBKV_E_INVALID_KEY),
        ("/l", 0, 0.0, LIBKV_E_INVALID_ARGUMENT),
        ("/l", -1, 0.0, LIBKV_E_INVALID_ARGUMENT),
        ("/l", 30, -1.0, LIBKV_E_INVALID_ARGUMENT),
        ("/l", 30, f64::NAN, LIBKV_E_INVALID_ARGUMENT),
    ] {
        let a = lock(s.0, key, ttl, timeout, true);
        assert_eq!(a.status, status, "{key} {ttl} {timeout}: {}", a.data);
        assert_eq!(a.handle, 0);
    }
    assert_eq!(call(&s, "exists", "/l", NONE, NO_PREVIOUS).data, "false");
    // A store without locks (its supports lacks newlock and unlock): refused,
    // naming the operation, before the store is asked.
    let lockless = Opened(STORES.register(Arc::new(Lockless)));
    let a = lock(lockless.0, "/l", 30, 0.0, true);
    assert_eq!(a.status, LIBKV_E_UNSUPPORTED, "{}", a.data);
    assert_eq!(a.data, "newlock is not supported by the mock store");
    let a = unlock(lockless.0, "/l", b"owner");
    assert_eq!(a.status, LIBKV_E_UNSUPPORTED, "{}", a.data);
    assert_eq!(a.data, "unlock is not supported by the mock store");
    let a = call_ttl(lockless.0, "put", "/k", data("1"), NO_PREVIOUS, (TTL, 60));
    assert_eq!(a.status, LIBKV_E_UNSUPPORTED, "{}", a.data);
    assert_eq!(a.data, "ttl is not supported by the mock store");
    let a = lock(123_456_789, "/l", 30, 0.0, true);
    assert_eq!(a.status, LIBKV_E_INTERNAL);
    assert!(a.data.contains("store handle 123456789 was never opened"));
}

#[test]
fn a_lost_lock_says_why_and_its_unlock_fails_with_lock_lost() {
    let s = mock();
    let l = locked(&s, "/lost", 1, false);
    assert_eq!(libkv_lock_held(l.handle), 1);
    millis(1300);
    assert_eq!(libkv_lock_held(l.handle), 0);
    let lost = take(libkv_lock_lost(l.handle));
    let reason: Option<String> = serde_json::from_str(&lost.data).unwrap();
    assert!(reason.unwrap().contains("ttl"), "{}", lost.data);
    let a = take(libkv_lock_unlock(l.handle));
    assert_eq!(a.status, LIBKV_E_LOCK_LOST, "{}", a.data);
    assert_eq!(a.key.as_deref(), Some("/lost"));
    assert!(a.data.contains("/lost"), "{}", a.data);
    // Twice is harmless.
    assert_eq!(take(libkv_lock_unlock(l.handle)).status, LIBKV_OK);
}

#[test]
fn a_detached_lock_stays_on_the_store() {
    let s = mock();
    let l = locked(&s, "/d", 30, true);
    let a = take(libkv_lock_detach(l.handle));
    assert_eq!((a.status, a.data.as_str()), (LIBKV_OK, "true"));
    assert_eq!(libkv_lock_held(l.handle), 0);
    drop(l);
    assert_eq!(lock(s.0, "/d", 30, 0.0, true).status, LIBKV_E_LOCK_TIMEOUT);
}

#[test]
fn lock_handles_are_never_reused_and_freeing_twice_is_harmless() {
    let s = mock();
    let a = locked(&s, "/a", 30, true);
    let b = locked(&s, "/b", 30, true);
    assert!(b.handle > a.handle);
    let id = a.handle;
    libkv_lock_free(id);
    libkv_lock_free(id);
    libkv_lock_free(u64::MAX);
    libkv_lock_free(0);
    assert_eq!(libkv_lock_held(id), -1);
    assert_eq!(libkv_lock_held(0), -1);
    for f in [libkv_lock_lost, libkv_lock_unlock, libkv_lock_detach] {
        let closed = take(f(id));
        assert_eq!(closed.status, LIBKV_E_INTERNAL);
        assert_eq!(
            closed.data,
            format!("libkv internal error: lock handle {id} is closed")
        );
        let never = take(f(u64::MAX));
        assert!(never.data.ends_with("was never opened"), "{}", never.data);
    }
    // Locked's drop frees it a third time.
    drop(a);
    // Store and lock handles are of separate registries.
    assert_eq!(
        call_handle(b.handle, "get", "/k", NONE, NO_PREVIOUS).status,
        LIBKV_E_INTERNAL
    );
    let c = locked(&s, "/c", 30, true);
    assert!(c.handle > b.handle);
}

/// A lock freed while held (by a finalizer) is released, without the free
/// waiting on the store; one whose store handle was freed keeps working.
#[test]
fn a_lock_freed_while_held_is_released_in_the_background() {
    let s = mock();
    let l = locked(&s, "/f", 30, true);
    libkv_lock_free(l.handle);
    let again = lock(s.0, "/f", 30, 3.0, true);
    assert_eq!(again.status, LIBKV_OK, "{}", again.data);
    let again = Locked {
        handle: again.handle,
        described: serde_json::from_str(&again.data).unwrap(),
    };
    drop(s);
    assert_eq!(libkv_lock_held(again.handle), 1);
    assert_eq!(take(libkv_lock_unlock(again.handle)).data, "true");
}

/// A lock freed while threads use its handle: every call answers or says the
/// handle is closed, and the lock is released once the last call returns.
#[test]
fn freeing_a_lock_while_threads_use_it_never_crashes() {
    use std::sync::atomic::AtomicBool;
    let s = mock();
    for round in 0..50 {
        let l = locked(&s, "/t", 30, true);
        let id = l.handle;
        let started = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let started = &started;
                scope.spawn(move || {
                    let mut closed = 0;
                    while closed < 3 {
                        started.store(true, Ordering::Relaxed);
                        if t % 2 == 0 {
                            match libkv_lock_held(id) {
                                1 => {}
                                -1 => closed += 1,
                                other => panic!("round {round}: held {other}"),
                            }
                        } else {
                            let a = take(libkv_lock_lost(id));
                            match a.status {
                                LIBKV_OK => assert_eq!(a.data, "null"),
                                LIBKV_E_INTERNAL if a.data.ends_with("is closed") => closed += 1,
                                _ => panic!("round {round}: {} {}", a.status, a.data),
                            }
                        }
                    }
                });
            }
            while !started.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            let freer = scope.spawn(move || libkv_lock_free(id));
            libkv_lock_free(id);
            freer.join().unwrap();
        });
        drop(l);
        let next = lock(s.0, "/t", 30, 3.0, true);
        assert_eq!(next.status, LIBKV_OK, "round {round}: {}", next.data);
        libkv_lock_free(next.handle);
        // Released in the background: wait for it before the next round.
        let free = lock(s.0, "/t", 30, 3.0, true);
        assert_eq!(free.status, LIBKV_OK, "round {round}: {}", free.data);
        assert_eq!(take(libkv_lock_unlock(free.handle)).data, "true");
        libkv_lock_free(free.handle);
    }
}

fn watch(store: &Opened, key: &str, tree: bool, from: Option<u64>) -> Answer {
    let (form, from) = from.map_or((LIBKV_FROM_NOW, 0), |s| (LIBKV_FROM_SEQUENCE, s));
    // SAFETY: the key points at its length of bytes.
    take(unsafe {
        libkv_watch(
            store.0,
            key.as_ptr(),
            key.len(),
            i32::from(tree),
            form,
            from,
            1,
        )
    })
}

fn changed(store: &Opened, key: &str, tree: bool, previous: (i32, u64), listing: &str) -> Answer {
    // SAFETY: the key and listing point at their length of bytes.
    take(unsafe {
        libkv_changed(
            store.0,
            key.as_ptr(),
            key.len(),
            i32::from(tree),
            previous.0,
            previous.1,
            listing.as_ptr(),
            listing.len(),
            2.0,
            1,
        )
    })
}

#[test]
fn a_watch_hands_out_changes_as_data_and_stops() {
    let store = mock();
    let w = watch(&store, "/w", true, None);
    assert_eq!(
        (w.status, w.data.as_str()),
        (LIBKV_OK, r#"{"coalesces":true}"#)
    );
    assert!(w.handle > 0);
    assert_eq!(take(libkv_watch_next(w.handle, 0.05)).data, "[]");
    call(
        &store,
        "put",
        "/w/a",
        data("8080"),
        (LIBKV_PREVIOUS_NONE, 0),
    );
    let next = take(libkv_watch_next(w.handle, 5.0));
    assert_eq!(next.status, LIBKV_OK, "{}", next.data);
    assert_eq!(next.data, r#"[["put","/w/a",8080,1]]"#);
    call(
        &store,
        "delete",
        "/w/a",
        (LIBKV_VALUE_NONE, b""),
        (LIBKV_PREVIOUS_NONE, 0),
    );
    assert_eq!(
        take(libkv_watch_next(w.handle, 5.0)).data,
        r#"[["delete","/w/a",null,2]]"#
    );
    // A caller waits in short steps: a stop from another thread ends the watch
    // once the step under way is over, and later waits answer [].
    let handle = w.handle;
    let waiting = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let answer = take(libkv_watch_next(handle, 0.05));
        (answer.data, started.elapsed())
    });
    assert_eq!(libkv_watch_stop(w.handle), 1);
    let (answered, took) = waiting.join().unwrap();
    assert_eq!(answered, "[]");
    assert!(took < std::time::Duration::from_millis(100), "{took:?}");
    call(&store, "put", "/w/b", data("1"), (LIBKV_PREVIOUS_NONE, 0));
    assert_eq!(take(libkv_watch_next(w.handle, 0.2)).data, "[]");
    libkv_watch_free(w.handle);
    libkv_watch_free(w.handle);
    assert_eq!(libkv_watch_stop(w.handle), -1);
    let gone = take(libkv_watch_next(w.handle, 0.01));
    assert_eq!(gone.status, LIBKV_E_INTERNAL);
    assert!(gone.data.contains("watch handle"), "{}", gone.data);
}

#[test]
fn a_watch_checks_its_key_and_from() {
    let store = mock();
    let bad = watch(&store, "/a b", false, None);
    assert_eq!(bad.status, LIBKV_E_INVALID_KEY, "{}", bad.data);
    let bad = watch(&store, "relative", true, None);
    assert_eq!(bad.status, LIBKV_E_INVALID_KEY, "{}", bad.data);
    // SAFETY: the key points at its length of bytes.
    let bad = take(unsafe { libkv_watch(store.0, b"/k".as_ptr(), 2, 0, 7, 0, 1) });
    assert_eq!(bad.status, LIBKV_E_INTERNAL, "{}", bad.data);
}

#[test]
fn changed_compares_a_sequence_or_a_listing() {
    let store = mock();
    call(&store, "put", "/c/a", data("1"), (LIBKV_PREVIOUS_NONE, 0));
    let now = changed(&store, "/c/a", false, (LIBKV_PREVIOUS_SEQUENCE, 0), "");
    assert_eq!(now.data, r#"{"value":1,"sequence":1}"#);
    let listing = changed(&store, "/c", true, (LIBKV_PREVIOUS_LISTING, 0), "[]");
    assert_eq!(listing.data, r#"{"a":{"value":1,"sequence":1}}"#);
    // Unchanged: the same state, at the timeout.
    let same = changed(
        &store,
        "/c",
        true,
        (LIBKV_PREVIOUS_LISTING, 0),
        r#"[["a",1]]"#,
    );
    assert_eq!(same.data, listing.data);
    let bad = changed(&store, "/c", true, (LIBKV_PREVIOUS_MALFORMED, 0), "");
    assert_eq!(bad.status, LIBKV_E_INVALID_ARGUMENT, "{}", bad.data);
    assert!(bad.data.contains("atomic_list"), "{}", bad.data);
    let bad = changed(&store, "/c", true, (LIBKV_PREVIOUS_LISTING, 0), "not json");
    assert_eq!(bad.status, LIBKV_E_INTERNAL, "{}", bad.data);
}
