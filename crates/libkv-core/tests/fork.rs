//! Forking while another thread is inside a store call: the child starts with no
//! lock of the parent's held, so it can use the store at once, as the parent goes
//! on using it. One test, alone in its binary: a child of a multi-threaded process
//! must not meet locks of unrelated threads either.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use libkv_core::{open, Key, OpenOptions, Store};
use tempfile::TempDir;

fn k(key: &str) -> Key {
    Key::new(key).unwrap()
}

/// Forks `children` times while a thread of this process keeps calling `store`;
/// each child makes a few calls (a write through the store's lock among them) and
/// must exit 0 within `deadline`. Returns how many did; every call of the parent
/// must have worked meanwhile.
fn fork_while_busy(store: Arc<dyn Store>, children: usize, deadline: Duration) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let busy = {
        let (store, stop, calls) = (store.clone(), stop.clone(), calls.clone());
        thread::spawn(move || {
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                failed += usize::from(store.put(&k("/busy"), b"parent").is_err());
                failed += usize::from(store.atomic_get(&k("/busy")).is_err());
                calls.fetch_add(2, Ordering::Relaxed);
            }
            failed
        })
    };
    let mut ok = 0;
    for i in 0..children {
        // Let the busy thread get back inside a call.
        let waited = Instant::now();
        while calls.load(Ordering::Relaxed) < 2 * (i + 1) && waited.elapsed() < deadline {
            thread::yield_now();
        }
        // SAFETY: the child only calls the store and then _exit, never returning
        // into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let worked = store.put(&k(&format!("/child/{i}")), b"child").is_ok()
                && store.get(&k("/busy")).is_ok()
                && matches!(
                    store.atomic_create(&k(&format!("/created/{i}")), b"c"),
                    Ok(true)
                );
            unsafe { libc::_exit(if worked { 0 } else { 1 }) };
        }
        let started = Instant::now();
        let mut status = 0;
        loop {
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    ok += 1;
                }
                break;
            }
            if started.elapsed() > deadline {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let failed = busy.join().unwrap();
    assert_eq!(failed, 0, "calls of the parent failed meanwhile");
    ok
}

#[test]
fn children_forked_during_calls_use_the_store_at_once() {
    let tmp = TempDir::new().unwrap();
    let options = OpenOptions {
        // A child that inherited the parent's lock would wait this long, then fail.
        timeout: Duration::from_secs(2),
        ..OpenOptions::default()
    };
    let children = 40;
    let file = open(&format!("file://{}/root", tmp.path().display()), &options).unwrap();
    assert_eq!(
        fork_while_busy(file.clone(), children, Duration::from_secs(10)),
        children,
        "file store: children forked while the parent held its lock could not write"
    );
    for i in 0..children {
        assert_eq!(
            file.get(&k(&format!("/child/{i}"))).unwrap().as_deref(),
            Some(&b"child"[..])
        );
    }
    let mock = open("mock://", &options).unwrap();
    assert_eq!(
        fork_while_busy(mock, children, Duration::from_secs(10)),
        children,
        "mock store: children forked while the parent held its lock hung"
    );
}
