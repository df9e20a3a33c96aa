//! Locks behind handles: the core's `Lock` as the registry keeps it, and the
//! arguments and answers of the lock functions. Taking, renewing and releasing
//! are the core's (`libkv_core::binding`, `libkv_core::lock`).

use std::sync::Arc;

use libkv_core::binding;
use libkv_core::{Lock, Op, Store};

use crate::call::text;
use crate::Failure;

/// A lock the registry holds. The last reference to it, wherever it is dropped
/// (`libkv_lock_free`, or a call that was running on the handle meanwhile),
/// releases a lock still held on a thread of its own, so that no caller (a
/// garbage collector's finalizer thread) waits on the store.
pub struct Registered(Option<Lock>);

impl Registered {
    pub fn lock(&self) -> &Lock {
        self.0
            .as_ref()
            .expect("the lock is only taken out when dropped")
    }
}

impl From<Lock> for Registered {
    fn from(lock: Lock) -> Registered {
        Registered(Some(lock))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let Some(lock) = self.0.take() else { return };
        // Released or detached: nothing is left to wait on. Held, it is released
        // on the store; lost, its renewing thread may still be waiting on the
        // store, and dropping it waits for that thread.
        if !lock.held() && lock.lost().is_none() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libkv-unlock".into())
            .spawn(move || drop(lock));
        // No thread (the process is out of them): the lock was dropped in
        // `spawn`, here. It is released all the same, only not in the background.
        drop(spawned);
    }
}

/// Takes the lock at `key` (see `libkv_lock`): the lock, and what it is as
/// `{"key", "owner", "fence", "ttl"}`.
pub fn take(
    store: Arc<dyn Store>,
    key: &[u8],
    ttl: i64,
    timeout: f64,
    renew: bool,
) -> Result<(Registered, Vec<u8>), Failure> {
    let lock = binding::newlock(store, Op::Newlock, key, ttl, timeout, renew)?;
    let described = json(&serde_json::json!({
        "key": lock.key().to_string(),
        "owner": lock.owner(),
        "fence": lock.fence(),
        "ttl": lock.ttl().as_secs(),
    }))?;
    Ok((lock.into(), described))
}

/// Why the lock was lost, as a JSON String, or `null`.
pub fn lost(lock: &Registered) -> Result<Vec<u8>, Failure> {
    json(&lock.lock().lost().into())
}

/// Releases the lock `owner` holds at `key` on `store`: `true` or `false`.
pub fn unlock(store: &dyn Store, key: &[u8], owner: &[u8]) -> Result<Vec<u8>, Failure> {
    let owner = text(owner, "owner")?;
    let released = binding::unlock(store, key, owner)?;
    Ok(if released { &b"true"[..] } else { b"false" }.to_vec())
}

fn json(value: &serde_json::Value) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value).map_err(|e| Failure::Internal(format!("cannot write JSON: {e}")))
}
