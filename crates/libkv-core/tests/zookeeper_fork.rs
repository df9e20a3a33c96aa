//! Forking a process that uses ZooKeeper: each child makes its own session (reads,
//! writes and a watch, within the store's timeout), the parent keeps its session
//! and goes on using it, and the child's writes are the parent's to read. Also
//! children forked while another thread of the parent is inside a call. One test,
//! alone in its binary (as tests/fork.rs): a child of a multi-threaded process
//! must not meet locks of unrelated threads either.

mod common;
mod zookeeper;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{d, k};
use libkv_core::watch::EventKind;
use libkv_core::{open, OpenOptions, Store, Value};

const TIMEOUT: Duration = Duration::from_secs(5);

fn open_store(prefix: &str) -> Arc<dyn Store> {
    open(
        &zookeeper::shared().url(prefix),
        &OpenOptions {
            timeout: TIMEOUT,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// The store's session id, from `info`.
fn session_id(store: &Arc<dyn Store>) -> String {
    let Value::Hash(facts) = store.info().unwrap() else {
        panic!("info is a Hash")
    };
    facts
        .into_iter()
        .find_map(|(name, value)| match (name, value) {
            (Value::String(name), Value::String(id)) if name == "session_id" => Some(id),
            _ => None,
        })
        .expect("a session_id")
}

/// Waits for `pid` at most `deadline`, killing it then: whether it exited 0.
fn reap(pid: libc::pid_t, deadline: Duration) -> bool {
    let started = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if started.elapsed() > deadline {
            // SAFETY: our own child, hung.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// What a child does: reads what the parent wrote, writes, compares-and-swaps,
/// lists and watches (with a watch of its own, and with the parent's, which it
/// inherited), on a session of its own; it leaves its session id and how long it
/// took at `/child/N/...` for the parent to read. Exits 0 when all worked.
fn child(
    store: &Arc<dyn Store>,
    n: usize,
    parent_session: &str,
    parent_watch: &mut dyn libkv_core::watch::Watcher,
) -> ! {
    let started = Instant::now();
    let worked = std::panic::AssertUnwindSafe(|| -> libkv_core::Result<bool> {
        let read = store.get(&k("/parent"))?.as_deref() == Some(&b"parent"[..]);
        let first = started.elapsed();
        let own = session_id(store);
        store.put(&k(&format!("/child/{n}/value")), b"child")?;
        let created = store.atomic_create(&k(&format!("/child/{n}/created")), b"c")?;
        let swapped = match store.atomic_get(&k("/counter"))? {
            Some(v) => store.atomic_put(&k("/counter"), format!("{n}").as_bytes(), v.sequence)?,
            None => false,
        };
        let listed = store.list(&d(&format!("/child/{n}")))?.len() == 2;
        // A watch, on the child's session: it sees the child's own write.
        let mut watcher = common::watcher(store, &format!("/child/{n}/w"), false, None);
        store.put(&k(&format!("/child/{n}/w")), b"seen")?;
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            seen = watcher
                .next(Instant::now() + Duration::from_millis(100))?
                .iter()
                .any(|e| e.kind == EventKind::Put && e.value == b"seen");
        }
        // The parent's watch, inherited: it goes on on the child's session.
        let mut inherited = false;
        while !inherited && Instant::now() < deadline {
            inherited = parent_watch
                .next(Instant::now() + Duration::from_millis(100))?
                .iter()
                .any(|e| e.key == format!("/child/{n}/w"));
        }
        let all = started.elapsed();
        store.put(&k(&format!("/child/{n}/session")), own.as_bytes())?;
        store.put(
            &k(&format!("/child/{n}/took")),
            format!("{} {}", first.as_millis(), all.as_millis()).as_bytes(),
        )?;
        Ok(read && own != parent_session && created && swapped && listed && seen && inherited)
    });
    // A panic must not unwind into the test harness's copy.
    let code = match std::panic::catch_unwind(worked) {
        Ok(Ok(true)) => 0,
        _ => 1,
    };
    // SAFETY: leaves without unwinding into the test harness.
    unsafe { libc::_exit(code) }
}

/// Forks `children` times while a thread of this process keeps calling `store`;
/// each child makes a few calls and must exit 0 within `deadline`. Returns how
/// many did; every call of the parent must have worked meanwhile.
fn fork_while_busy(store: &Arc<dyn Store>, children: usize, deadline: Duration) -> usize {
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
        let before = calls.load(Ordering::Relaxed);
        while calls.load(Ordering::Relaxed) < before + 2 && waited.elapsed() < deadline {
            thread::yield_now();
        }
        // SAFETY: the child only calls the store and then _exit, never returning
        // into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let worked = store.put(&k(&format!("/busy-child/{i}")), b"child").is_ok()
                && store.get(&k("/busy")).is_ok()
                && matches!(
                    store.atomic_create(&k(&format!("/busy-created/{i}")), b"c"),
                    Ok(true)
                );
            // SAFETY: leaves without unwinding into the test harness.
            unsafe { libc::_exit(if worked { 0 } else { 1 }) };
        }
        if reap(pid, deadline) {
            ok += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let failed = busy.join().unwrap();
    assert_eq!(failed, 0, "calls of the parent failed meanwhile");
    ok
}

#[test]
fn forked_children_make_their_own_sessions_and_the_parent_keeps_its_own() {
    let store = open_store(&zookeeper::unique_prefix());
    store.put(&k("/parent"), b"parent").unwrap();
    store.put(&k("/counter"), b"start").unwrap();
    let parent_session = session_id(&store);
    // A watch of the parent's, open across the forks.
    let mut parent_watch = common::watcher(&store, "/child", true, None);

    let children = 3;
    for n in 0..children {
        let forked = Instant::now();
        // SAFETY: the child makes store calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            child(&store, n, &parent_session, &mut *parent_watch);
        }
        // Meanwhile the parent goes on, on its own session.
        store.put(&k("/parent-while"), b"p").unwrap();
        assert!(reap(pid, TIMEOUT * 3), "child {n} failed or hung");
        let waited = forked.elapsed();
        let took = store.get(&k(&format!("/child/{n}/took"))).unwrap().unwrap();
        let child_session = store
            .get(&k(&format!("/child/{n}/session")))
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .get(&k(&format!("/child/{n}/value")))
                .unwrap()
                .as_deref(),
            Some(&b"child"[..]),
            "the child's write is the parent's to read"
        );
        assert_ne!(String::from_utf8(child_session).unwrap(), parent_session);
        let took = String::from_utf8(took).unwrap();
        let (first, all) = took.split_once(' ').unwrap();
        let (first, all): (u64, u64) = (first.parse().unwrap(), all.parse().unwrap());
        assert!(
            all < TIMEOUT.as_millis() as u64,
            "child {n} took {all} ms for its calls"
        );
        eprintln!(
            "child {n}: first call (new runtime and session) {first} ms, all its calls \
             {all} ms, fork to reaped {waited:?}"
        );
        assert_eq!(session_id(&store), parent_session, "the parent's session");
    }
    assert_eq!(
        store.get(&k("/counter")).unwrap().as_deref(),
        Some(format!("{}", children - 1).as_bytes())
    );
    // The parent's watch saw the children's writes, on the parent's session.
    let seen = common::events_until(&mut *parent_watch, |e| {
        e.key == format!("/child/{}/took", children - 1)
    });
    assert!(!seen.is_empty());
    assert_eq!(session_id(&store), parent_session, "the parent's session");

    // Children forked while another thread is inside a call.
    let children = 8;
    let started = Instant::now();
    assert_eq!(
        fork_while_busy(&store, children, TIMEOUT * 2),
        children,
        "children forked during a call failed or hung"
    );
    eprintln!(
        "{children} children forked during the parent's calls, each reaped: {:?} in all",
        started.elapsed()
    );
    for i in 0..children {
        assert_eq!(
            store
                .get(&k(&format!("/busy-child/{i}")))
                .unwrap()
                .as_deref(),
            Some(&b"child"[..])
        );
    }
    assert_eq!(session_id(&store), parent_session, "the parent's session");
    store.deletetree(&d("/")).unwrap();
}
