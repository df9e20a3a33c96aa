//! A lock taken before a fork stays the parent's: the child's copy is not held,
//! cannot be released, and dropping it releases nothing. Alone in its binary, as
//! every test that forks a multi-threaded process.

use std::sync::Arc;
use std::time::Duration;

use libkv_core::{open, Key, Lock, OpenOptions, Store};
use tempfile::TempDir;

#[test]
fn a_forked_child_neither_holds_nor_releases_its_parents_lock() {
    let dir = TempDir::new().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let store: Arc<dyn Store> = open(&url, &OpenOptions::default()).unwrap();
    let key = Key::new("/locks/forked").unwrap();
    let lock = Lock::acquire(
        "newlock",
        Arc::clone(&store),
        key.clone(),
        Duration::from_secs(30),
        Duration::from_secs(1),
        true,
    )
    .unwrap();
    // SAFETY: the child only reads the lock, drops it and _exits, never returning
    // into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let refused = !lock.held() && lock.unlock().is_err();
        drop(lock);
        unsafe { libc::_exit(if refused { 0 } else { 1 }) };
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    assert!(lock.held());
    assert_eq!(
        store.get(&key).unwrap().as_deref(),
        Some(lock.owner().as_bytes()),
        "the child released the parent's lock"
    );
    lock.unlock().unwrap();
    assert_eq!(store.get(&key).unwrap(), None);
}
