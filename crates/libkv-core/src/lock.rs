//! Locks this process holds: taken on a store ([`Store::lock`]), renewed in the
//! background, released. What every binding hands its callers.
//!
//! - A lock is taken for an owner token no other acquisition has (host, process,
//!   time and a counter), which the store keeps as the lock key's value: `get` of
//!   the key says who holds it.
//! - Renewing: a thread of the lock's own renews it every third of its `ttl`,
//!   needing no interpreter (a binding's callers keep running). A renewal that
//!   the store refuses (another holder has it) loses the lock at once; one that
//!   fails (the store unreachable) is tried again until `ttl` has passed since the
//!   last renewal that succeeded was sent, and then the lock is lost. A lock
//!   taken without renewing holds for `ttl` from the moment it was asked for.
//! - [`Lock::held`] is false from the moment the lock may have passed to another
//!   holder: conservatively, `ttl` after the last successful request was sent.
//! - [`Lock::unlock`] releases it on the store; it says so when the lock was lost
//!   before, since work done under it may then have overlapped another holder's.
//!   Dropping a held lock releases it too.
//! - A lock belongs to the process that took it. A forked child holds none of
//!   its parent's locks: `held` is false there, `unlock` refuses, and dropping the
//!   child's copy touches neither the store nor the parent's renewing thread (which
//!   the child does not have).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::fork;
use crate::key::Key;
use crate::store::{Store, MAX_TTL};

/// Checks a `ttl` in whole seconds against what `store` keeps.
pub fn check_ttl(store: &dyn Store, ttl: i64) -> Result<Duration> {
    let (min, max) = store.ttl_bounds();
    let max = max.min(MAX_TTL);
    match u64::try_from(ttl) {
        Ok(secs) if secs >= min && secs <= max => Ok(Duration::from_secs(secs)),
        _ => Err(Error::InvalidArgument(format!(
            "ttl must be a whole number of seconds from {min} to {max} on the {} store, \
             not {ttl}",
            store.provider()
        ))),
    }
}

/// A new owner token: this host, this process, the time and a counter.
pub fn new_owner() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let host = rustix::system::uname();
    let host = host.nodename().to_string_lossy();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{host}:{}:{nanos:x}:{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

enum State {
    /// Held until this instant, unless renewed before.
    Held {
        until: Instant,
    },
    Lost(String),
    Released,
}

struct Shared {
    store: Arc<dyn Store>,
    key: Key,
    owner: String,
    fence: u64,
    ttl: Duration,
    /// The process that took it.
    pid: u32,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    /// Whether this is a forked child of the process that took the lock.
    fn in_child(&self) -> bool {
        fork::pid() != self.pid
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, a lock whose time ran out without renewal marked lost.
    fn current(&self) -> MutexGuard<'_, State> {
        let mut state = self.state();
        if let State::Held { until } = *state {
            if Instant::now() >= until {
                *state = State::Lost(format!(
                    "it was not renewed within its ttl of {}s",
                    self.ttl.as_secs()
                ));
            }
        }
        state
    }

    fn lost(&self, reason: String) -> Error {
        Error::LockLost {
            key: self.key.to_string(),
            store: self.store.url().to_owned(),
            reason,
        }
    }

    /// Renews every third of the ttl until the lock is released or lost.
    fn renew_until_done(&self) {
        let period = self.ttl / 3;
        let mut wait = period;
        loop {
            {
                let state = self.current();
                let state = match self
                    .wake
                    .wait_timeout_while(state, wait, |s| matches!(s, State::Held { .. }))
                {
                    Ok((state, _)) => state,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                if !matches!(*state, State::Held { .. }) {
                    return;
                }
            }
            let sent = Instant::now();
            let answer = self.store.renew(&self.key, &self.owner, self.ttl);
            let mut state = self.current();
            let State::Held { until } = *state else {
                return;
            };
            match answer {
                Ok(true) => {
                    *state = State::Held {
                        until: until.max(sent + self.ttl),
                    };
                    wait = period;
                }
                Ok(false) => {
                    *state = State::Lost(
                        "the store no longer has it as this holder's: it expired, or was \
                         deleted or taken by another"
                            .into(),
                    );
                    return;
                }
                // Try again soon; `current` marks it lost once `until` passes.
                Err(_) => wait = (period / 4).max(Duration::from_millis(100)),
            }
        }
    }
}

/// A lock this process took.
pub struct Lock {
    shared: Arc<Shared>,
    renewer: Mutex<Option<JoinHandle<()>>>,
}

impl Lock {
    /// Takes the lock at `key` for `ttl` (checked with [`check_ttl`] first),
    /// waiting at most `timeout`; renewed in the background when `renew`. `op`
    /// names the call in errors.
    pub fn acquire(
        op: &'static str,
        store: Arc<dyn Store>,
        key: Key,
        ttl: Duration,
        timeout: Duration,
        renew: bool,
    ) -> Result<Lock> {
        let owner = new_owner();
        let Some((fence, sent)) = store.lock(&key, &owner, ttl, Instant::now() + timeout)? else {
            return Err(Error::LockTimeout {
                op,
                key: key.to_string(),
                store: store.url().to_owned(),
                after: timeout,
            });
        };
        let shared = Arc::new(Shared {
            store,
            key,
            owner,
            fence,
            ttl,
            pid: fork::pid(),
            state: Mutex::new(State::Held { until: sent + ttl }),
            wake: Condvar::new(),
        });
        let renewer = if renew {
            let renewing = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("libkv-lock".into())
                .spawn(move || renewing.renew_until_done());
            match spawned {
                Ok(handle) => Some(handle),
                Err(e) => {
                    let _ = shared.store.unlock(&shared.key, &shared.owner);
                    return Err(Error::Store {
                        op,
                        key: shared.key.to_string(),
                        store: shared.store.url().to_owned(),
                        reason: format!("cannot start the thread that renews the lock: {e}"),
                    });
                }
            }
        } else {
            None
        };
        Ok(Lock {
            shared,
            renewer: Mutex::new(renewer),
        })
    }

    pub fn key(&self) -> &Key {
        &self.shared.key
    }

    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Larger than every earlier acquisition's of this key on this store.
    pub fn fence(&self) -> u64 {
        self.shared.fence
    }

    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// Whether this process still holds the lock for certain.
    pub fn held(&self) -> bool {
        !self.shared.in_child() && matches!(*self.shared.current(), State::Held { .. })
    }

    /// Why the lock was lost, once it was.
    pub fn lost(&self) -> Option<String> {
        match &*self.shared.current() {
            State::Lost(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Fails with `LockLost` when the lock was lost.
    pub fn check(&self) -> Result<()> {
        match self.lost() {
            Some(reason) => Err(self.shared.lost(reason)),
            None => Ok(()),
        }
    }

    /// Stops renewing and leaves the lock on the store, held until its ttl has
    /// passed or `Store::unlock` with its owner releases it (Puppet's `newlock`
    /// hands the lock to what follows the compilation). Dropping it then does
    /// nothing more.
    pub fn detach(&self) {
        *self.shared.state() = State::Released;
        self.stop_renewing();
    }

    fn stop_renewing(&self) {
        self.shared.wake.notify_all();
        if let Some(handle) = self
            .renewer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            if self.shared.in_child() {
                // The parent's thread: not in this process, never to be joined.
                std::mem::forget(handle);
            } else {
                let _ = handle.join();
            }
        }
    }

    /// Stops renewing and releases the lock on the store. Fails with `LockLost`
    /// when it had been lost (the store is left to whoever holds it now);
    /// releasing twice does nothing.
    pub fn unlock(&self) -> Result<()> {
        if self.shared.in_child() {
            *self.shared.state() = State::Released;
            self.stop_renewing();
            return Err(Error::InvalidArgument(format!(
                "the lock {} on {} was taken by process {}: a forked child cannot release it",
                self.shared.key,
                self.shared.store.url(),
                self.shared.pid
            )));
        }
        let was = {
            let mut state = self.shared.current();
            std::mem::replace(&mut *state, State::Released)
        };
        self.stop_renewing();
        match was {
            State::Released => Ok(()),
            State::Lost(reason) => Err(self.shared.lost(reason)),
            State::Held { .. } => {
                if self
                    .shared
                    .store
                    .unlock(&self.shared.key, &self.shared.owner)?
                {
                    Ok(())
                } else {
                    Err(self.shared.lost(
                        "the store no longer had it as this holder's when it was released".into(),
                    ))
                }
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.unlock();
    }
}
