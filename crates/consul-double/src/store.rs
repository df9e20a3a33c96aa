//! The in-memory state: Consul's `kvs` and `sessions` tables, the
//! lock-delays, and the raft index (with a channel that tells blocking
//! queries it moved).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher as _;
use std::ops::Bound;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::txn::{KvOp, TxnError, Verb};

/// The raft index of a fresh double. Consul's is never 0 once it has a
/// leader; starting above 0 catches clients that treat 0 specially.
pub(crate) const FIRST_INDEX: u64 = 10;

/// Consul's `MaxLockDelay`: a session's lock-delay is enforced for at most
/// this long, whatever it says.
pub(crate) const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) value: Vec<u8>,
    pub(crate) flags: u64,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    /// How many times a session acquired the key (Consul's `LockIndex`;
    /// a plain write sets it to 0, as in Consul).
    pub(crate) lock_index: u64,
    /// The session holding the lock, or "" (Consul's `Session`).
    pub(crate) session: String,
}

/// What happens to the keys a session holds when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Behavior {
    Release,
    Delete,
}

impl Behavior {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// A session as created (Consul's `structs.Session`, less what the double
/// ignores), and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) behavior: Behavior,
    /// The TTL as the client gave it ("" for none).
    pub(crate) ttl: String,
    /// The lock-delay in nanoseconds, as Consul keeps it (not capped).
    pub(crate) lock_delay: i64,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    /// How long after a renewal the session is invalidated (its TTL times
    /// the multiplier); `None` for a session without TTL.
    pub(crate) renew_period: Option<Duration>,
    /// When the session is invalidated unless renewed first (not saved in a
    /// snapshot: a restore starts it again).
    #[serde(skip)]
    pub(crate) expires: Option<Instant>,
}

/// What `GET /v1/snapshot` saves and `PUT /v1/snapshot` restores: the `kvs`
/// and `sessions` tables and the index. The double's own format (JSON), not
/// Consul's archive: only the double reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    index: u64,
    entries: BTreeMap<String, Entry>,
    sessions: BTreeMap<String, Session>,
}

/// A session to create: what the request asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewSession {
    pub(crate) name: String,
    pub(crate) behavior: Behavior,
    pub(crate) ttl: String,
    pub(crate) lock_delay: i64,
    pub(crate) renew_period: Option<Duration>,
}

/// An entry a transaction reports, with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnEntry {
    pub(crate) key: String,
    pub(crate) entry: Entry,
}

#[derive(Debug)]
pub(crate) struct Store {
    index: u64,
    entries: BTreeMap<String, Entry>,
    /// By ID, so that listing them gives Consul's order.
    sessions: BTreeMap<String, Session>,
    /// Keys that may not be locked before the instant (Consul's `Delay`).
    lock_delays: HashMap<String, Instant>,
    /// Carries the index to blocking queries each time it moves.
    changes: watch::Sender<u64>,
    ids: RandomState,
    ids_made: u64,
}

impl Store {
    pub(crate) fn new() -> Self {
        Store {
            index: FIRST_INDEX,
            entries: BTreeMap::new(),
            sessions: BTreeMap::new(),
            lock_delays: HashMap::new(),
            changes: watch::channel(FIRST_INDEX).0,
            ids: RandomState::new(),
            ids_made: 0,
        }
    }

    /// The store-wide index: that of the last write that changed something.
    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    /// A receiver that sees every later move of the index.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn set_index(&mut self, index: u64) {
        self.index = index;
        self.changes.send_replace(index);
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Every entry whose key starts with `prefix` (a plain string prefix),
    /// in key order (bytewise, as Consul's memdb).
    pub(crate) fn list<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Entry)> {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| (key.as_str(), entry))
    }

    /// The key names under `prefix`; with a non-empty `separator`, each one
    /// is cut just after the first separator that follows the prefix and
    /// the "folders" this makes are given once (Consul's `KVSListKeys`).
    pub(crate) fn keys(&self, prefix: &str, separator: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut previous_folder: Option<String> = None;
        for (key, _) in self.list(prefix) {
            if separator.is_empty() {
                keys.push(key.to_owned());
                continue;
            }
            let after = &key[prefix.len()..];
            match after.find(separator) {
                Some(at) => {
                    let folder = &key[..prefix.len() + at + separator.len()];
                    let seen = previous_folder
                        .as_deref()
                        .is_some_and(|previous| folder.starts_with(previous));
                    if !seen {
                        keys.push(folder.to_owned());
                        previous_folder = Some(folder.to_owned());
                    }
                }
                None => keys.push(key.to_owned()),
            }
        }
        keys
    }

    /// Sets `key`. With `cas` = `Some(0)` only if the key is absent; with
    /// `Some(n)` only if the key's ModifyIndex is `n`. Answers whether it
    /// wrote. A write replaces the flags too (absent `?flags` means 0).
    ///
    /// As Consul's `kvsSetTxn`: a lock holder stays (a plain write does not
    /// release the lock), but `LockIndex` is set to 0, because the request's
    /// entry (with `LockIndex` 0) replaces the stored one.
    pub(crate) fn put(&mut self, key: &str, value: Vec<u8>, flags: u64, cas: Option<u64>) -> bool {
        let existing = self.entries.get(key);
        match (cas, existing) {
            (Some(0), Some(_)) => return false,
            (Some(n), None) if n != 0 => return false,
            (Some(n), Some(entry)) if entry.modify_index != n => return false,
            _ => {}
        }
        let index = self.index + 1;
        let create_index = existing.map_or(index, |entry| entry.create_index);
        let session = existing
            .map(|entry| entry.session.clone())
            .unwrap_or_default();
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                flags,
                create_index,
                modify_index: index,
                lock_index: 0,
                session,
            },
        );
        self.set_index(index);
        true
    }

    /// Deletes `key`. Without `cas` it answers `true` whether or not the key
    /// was there. With `cas`, as Consul's `kvsDeleteCASTxn`: an absent key
    /// answers `true` (nothing to delete); a present key is deleted only if
    /// its ModifyIndex equals `cas`, so `cas=0` never deletes one.
    pub(crate) fn delete(&mut self, key: &str, cas: Option<u64>) -> bool {
        let Some(entry) = self.entries.get(key) else {
            return true;
        };
        if let Some(cas) = cas {
            if entry.modify_index != cas {
                return false;
            }
        }
        self.entries.remove(key);
        self.set_index(self.index + 1);
        true
    }

    /// Deletes every key starting with `prefix` (every key when it is empty).
    pub(crate) fn delete_tree(&mut self, prefix: &str) -> bool {
        let doomed: Vec<String> = self.list(prefix).map(|(key, _)| key.to_owned()).collect();
        if !doomed.is_empty() {
            for key in &doomed {
                self.entries.remove(key);
            }
            self.set_index(self.index + 1);
        }
        true
    }
}

/// Snapshots, as Consul's `GET` and `PUT /v1/snapshot`.
impl Store {
    /// The tables and the index as they are.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            index: self.index,
            entries: self.entries.clone(),
            sessions: self.sessions.clone(),
        }
    }

    /// Replaces the tables with a snapshot's, and the index with its index:
    /// the index goes back, as the indexes of the tables a Consul restores
    /// do (blocking queries are told it moved). Every session with a TTL
    /// starts its TTL again from `now`, as Consul's leader arms its session
    /// timers anew after a restore; lock-delays, which Consul keeps in
    /// memory only, are gone. Answers the IDs of the sessions with a TTL,
    /// whose timers the caller starts.
    pub(crate) fn restore(&mut self, saved: Snapshot, now: Instant) -> Vec<String> {
        self.entries = saved.entries;
        self.sessions = saved.sessions;
        for session in self.sessions.values_mut() {
            session.expires = session
                .renew_period
                .and_then(|period| now.checked_add(period));
        }
        self.lock_delays.clear();
        self.set_index(saved.index);
        self.sessions
            .values()
            .filter(|session| session.expires.is_some())
            .map(|session| session.id.clone())
            .collect()
    }
}

/// Locks and sessions, as Consul's `kvsLockTxn`, `kvsUnlockTxn` and
/// `deleteSessionTxn`.
impl Store {
    /// `PUT ?acquire=<session>`: `Ok(false)` while the key's lock-delay
    /// runs (checked first, as Consul's `kvsPreApply`) or while another
    /// session holds it; an empty or unknown session is an error (Consul's
    /// message, answered 500). On success the value and flags are set, the
    /// session holds the key, and `LockIndex` grows by one unless the
    /// session already held it.
    pub(crate) fn lock(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
        now: Instant,
    ) -> Result<bool, String> {
        if self.lock_delayed(key, now) {
            return Ok(false);
        }
        check_session(&self.sessions, session)?;
        let index = self.index + 1;
        let Some(entry) = locked(self.entries.get(key), value, flags, session, index) else {
            return Ok(false);
        };
        self.entries.insert(key.to_owned(), entry);
        self.set_index(index);
        Ok(true)
    }

    /// Whether the key's lock-delay still runs at `now`.
    fn lock_delayed(&self, key: &str, now: Instant) -> bool {
        self.lock_delays.get(key).is_some_and(|until| *until > now)
    }

    /// `PUT ?release=<session>`: `Ok(false)` unless the key exists and that
    /// session holds it; then the value and flags are set and the lock is
    /// released (`LockIndex` kept). The session is not looked up. No
    /// lock-delay follows an explicit release.
    pub(crate) fn unlock(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<bool, String> {
        if session.is_empty() {
            return Err("missing session".to_owned());
        }
        let index = self.index + 1;
        let Some(entry) = unlocked(self.entries.get(key), value, flags, session, index) else {
            return Ok(false);
        };
        self.entries.insert(key.to_owned(), entry);
        self.set_index(index);
        Ok(true)
    }

    /// A new session with a fresh random ID; the index grows by one.
    pub(crate) fn create_session(&mut self, new: NewSession, now: Instant) -> &Session {
        let id = loop {
            let id = self.session_id();
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let index = self.index + 1;
        let session = Session {
            id: id.clone(),
            name: new.name,
            behavior: new.behavior,
            ttl: new.ttl,
            lock_delay: new.lock_delay,
            create_index: index,
            modify_index: index,
            renew_period: new.renew_period,
            expires: new.renew_period.and_then(|period| now.checked_add(period)),
        };
        self.set_index(index);
        self.sessions.entry(id).or_insert(session)
    }

    /// A random ID in the form of Consul's (`go-uuid`: 16 random bytes
    /// as 8-4-4-4-12 hex digits).
    fn session_id(&mut self) -> String {
        self.ids_made += 1;
        let high = self.ids.hash_one((self.ids_made, 0u8));
        let low = self.ids.hash_one((self.ids_made, 1u8));
        let hex = format!("{high:016x}{low:016x}");
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    pub(crate) fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Every session, by ID.
    pub(crate) fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Renews a session: with a TTL, it now expires a renew period from
    /// `now`. The index does not move (Consul renews outside raft).
    pub(crate) fn renew_session(&mut self, id: &str, now: Instant) -> Option<&Session> {
        let session = self.sessions.get_mut(id)?;
        if let Some(period) = session.renew_period {
            session.expires = now.checked_add(period);
        }
        Some(session)
    }

    /// Destroys (invalidates) a session, as Consul's `deleteSessionTxn`:
    /// every key it holds is released (Session cleared, ModifyIndex moved)
    /// or deleted, per its behavior, and then may not be locked for the
    /// session's lock-delay (at most [`MAX_LOCK_DELAY`]) from `now`. All
    /// of it shares one new index. Answers whether the session existed (an
    /// unknown one changes nothing).
    pub(crate) fn destroy_session(&mut self, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let index = self.index + 1;
        let held: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.session == id)
            .map(|(key, _)| key.clone())
            .collect();
        let delay = (session.lock_delay > 0)
            .then(|| Duration::from_nanos(session.lock_delay as u64).min(MAX_LOCK_DELAY));
        self.lock_delays.retain(|_, until| *until > now);
        for key in held {
            match session.behavior {
                Behavior::Release => {
                    if let Some(entry) = self.entries.get_mut(&key) {
                        entry.session.clear();
                        entry.modify_index = index;
                    }
                }
                Behavior::Delete => {
                    self.entries.remove(&key);
                }
            }
            if let Some(delay) = delay {
                self.lock_delays.insert(key, now + delay);
            }
        }
        self.set_index(index);
        true
    }
}

/// The first checks of Consul's `kvsLockTxn`: a session is given, and
/// exists.
fn check_session(sessions: &BTreeMap<String, Session>, session: &str) -> Result<(), String> {
    if session.is_empty() {
        return Err("missing session".to_owned());
    }
    if !sessions.contains_key(session) {
        // Go's %#v of a string.
        return Err(format!("invalid session {session:?}"));
    }
    Ok(())
}

/// The entry a lock by `session` makes at `index` (Consul's `kvsLockTxn`
/// once the session is checked), or `None` while another session holds
/// the key. `LockIndex` grows by one unless the session already held it
/// (a new key starts at 1).
fn locked(
    existing: Option<&Entry>,
    value: Vec<u8>,
    flags: u64,
    session: &str,
    index: u64,
) -> Option<Entry> {
    let (create_index, lock_index) = match existing {
        Some(entry) if entry.session == session => (entry.create_index, entry.lock_index),
        Some(entry) if !entry.session.is_empty() => return None,
        Some(entry) => (entry.create_index, entry.lock_index + 1),
        None => (index, 1),
    };
    Some(Entry {
        value,
        flags,
        create_index,
        modify_index: index,
        lock_index,
        session: session.to_owned(),
    })
}

/// The entry a release by `session` makes at `index` (Consul's
/// `kvsUnlockTxn`), or `None` unless the key exists and `session` holds
/// it. `LockIndex` is kept.
fn unlocked(
    existing: Option<&Entry>,
    value: Vec<u8>,
    flags: u64,
    session: &str,
    index: u64,
) -> Option<Entry> {
    let existing = existing.filter(|entry| entry.session == session)?;
    Some(Entry {
        value,
        flags,
        create_index: existing.create_index,
        modify_index: index,
        lock_index: existing.lock_index,
        session: String::new(),
    })
}

impl Store {
    /// Applies a transaction's KV operations all or nothing, as Consul's
    /// `Txn.Apply` (its `preCheck`, then `TxnRW`): every write shares one
    /// new index (the store index grows by one if anything changed), each
    /// operation sees the effects of those before it, and if any fails,
    /// nothing is kept and every failure is answered.
    ///
    /// The pre-check (Consul's `kvsPreApply`, for every operation before
    /// any runs): an empty key fails every verb but `delete-tree`, and a
    /// `lock` of a key whose lock-delay runs at `now` fails.
    ///
    /// Results, as Consul's `txnKVS`: `get`, `get-or-empty` and `get-tree`
    /// give their entries with the value; `set`, `cas`, `check-index`,
    /// `lock`, `unlock` and `check-session` give the entry without it;
    /// deletes and `check-not-exists` give none.
    pub(crate) fn apply_txn(
        &mut self,
        ops: &[KvOp],
        now: Instant,
    ) -> Result<Vec<TxnEntry>, Vec<TxnError>> {
        let refused: Vec<TxnError> = ops
            .iter()
            .enumerate()
            .filter_map(|(op_index, op)| {
                let what = if op.key.is_empty() && op.verb != Verb::DeleteTree {
                    "Must provide key".to_owned()
                } else if op.verb == Verb::Lock && self.lock_delayed(&op.key, now) {
                    format!("failed to lock key {:?} due to lock delay", op.key)
                } else {
                    return None;
                };
                Some(TxnError { op_index, what })
            })
            .collect();
        if !refused.is_empty() {
            return Err(refused);
        }

        let index = self.index + 1;
        let mut scratch = Txn {
            entries: self.entries.clone(),
            sessions: &self.sessions,
            index,
            changed: false,
            results: Vec::new(),
        };
        let mut errors = Vec::new();
        for (op_index, op) in ops.iter().enumerate() {
            if let Err(what) = scratch.run(op) {
                errors.push(TxnError { op_index, what });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let Txn {
            entries,
            changed,
            results,
            ..
        } = scratch;
        if changed {
            self.entries = entries;
            self.set_index(index);
        }
        Ok(results)
    }
}

/// A transaction under way, on a copy of the entries.
struct Txn<'a> {
    entries: BTreeMap<String, Entry>,
    /// The sessions, which a transaction does not change.
    sessions: &'a BTreeMap<String, Session>,
    index: u64,
    changed: bool,
    results: Vec<TxnEntry>,
}

impl Txn<'_> {
    fn report(&mut self, key: &str, entry: &Entry, with_value: bool) {
        let mut entry = entry.clone();
        if !with_value {
            entry.value = Vec::new();
        }
        self.results.push(TxnEntry {
            key: key.to_owned(),
            entry,
        });
    }

    /// One operation; the error is Consul's message for it.
    fn run(&mut self, op: &KvOp) -> Result<(), String> {
        let key = op.key.as_str();
        let existing = self.entries.get(key);
        match &op.verb {
            Verb::Set => self.set(op),
            Verb::Cas => {
                let fresh = match existing {
                    None => op.index == 0,
                    Some(entry) => op.index != 0 && entry.modify_index == op.index,
                };
                if !fresh {
                    return Err(format!("failed to set key {key:?}, index is stale"));
                }
                self.set(op)
            }
            Verb::Get => {
                let Some(entry) = existing.cloned() else {
                    return Err(format!("key {key:?} doesn't exist"));
                };
                self.report(key, &entry, true);
                Ok(())
            }
            Verb::GetOrEmpty => {
                // Consul answers the operation's own fields for an absent key.
                let entry = existing.cloned().unwrap_or(Entry {
                    value: Vec::new(),
                    flags: op.flags,
                    create_index: 0,
                    modify_index: op.index,
                    lock_index: 0,
                    session: String::new(),
                });
                self.report(key, &entry, true);
                Ok(())
            }
            Verb::GetTree => {
                let found: Vec<(String, Entry)> = self
                    .entries
                    .range::<str, _>((Bound::Included(key), Bound::Unbounded))
                    .take_while(|(name, _)| name.starts_with(key))
                    .map(|(name, entry)| (name.clone(), entry.clone()))
                    .collect();
                for (name, entry) in &found {
                    self.report(name, entry, true);
                }
                Ok(())
            }
            Verb::CheckIndex => {
                let Some(entry) = existing.cloned() else {
                    return Err(format!("failed to check index, key {key:?} doesn't exist"));
                };
                if entry.modify_index != op.index {
                    return Err(format!(
                        "failed index check for key {key:?}, current modify index {} != {}",
                        entry.modify_index, op.index
                    ));
                }
                self.report(key, &entry, false);
                Ok(())
            }
            Verb::CheckNotExists => match existing {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(()),
            },
            Verb::Delete => {
                if self.entries.remove(key).is_some() {
                    self.changed = true;
                }
                Ok(())
            }
            Verb::DeleteCas => match existing {
                // As kvsDeleteCASTxn: an absent key is nothing to delete.
                None => Ok(()),
                Some(entry) if entry.modify_index == op.index => {
                    self.entries.remove(key);
                    self.changed = true;
                    Ok(())
                }
                Some(_) => Err(format!("failed to delete key {key:?}, index is stale")),
            },
            Verb::DeleteTree => {
                let before = self.entries.len();
                self.entries.retain(|name, _| !name.starts_with(key));
                if self.entries.len() != before {
                    self.changed = true;
                }
                Ok(())
            }
            Verb::Lock => {
                check_session(self.sessions, &op.session)?;
                let entry = locked(
                    existing,
                    op.value.clone(),
                    op.flags,
                    &op.session,
                    self.index,
                )
                .ok_or_else(|| format!("failed to lock key {key:?}, lock is already held"))?;
                self.write(key, entry);
                Ok(())
            }
            Verb::Unlock => {
                if op.session.is_empty() {
                    return Err("missing session".to_owned());
                }
                let entry = unlocked(
                    existing,
                    op.value.clone(),
                    op.flags,
                    &op.session,
                    self.index,
                )
                .ok_or_else(|| {
                    format!(
                        "failed to unlock key {key:?}, lock isn't held, or is held by \
                             another session"
                    )
                })?;
                self.write(key, entry);
                Ok(())
            }
            Verb::CheckSession => {
                let Some(entry) = existing.cloned() else {
                    return Err(format!(
                        "failed to check session, key {key:?} doesn't exist"
                    ));
                };
                if entry.session != op.session {
                    return Err(format!(
                        "failed session check for key {key:?}, current session {:?} != {:?}",
                        entry.session, op.session
                    ));
                }
                self.report(key, &entry, false);
                Ok(())
            }
            Verb::Unknown(verb) => Err(format!("unknown KV verb {verb:?}")),
        }
    }

    /// `set` (and a `cas` that passed): the value and flags replace the
    /// entry's; CreateIndex and the lock holder are kept, LockIndex is 0
    /// (as `Store::put`); ModifyIndex is the transaction's.
    fn set(&mut self, op: &KvOp) -> Result<(), String> {
        let existing = self.entries.get(&op.key);
        let create_index = existing.map_or(self.index, |entry| entry.create_index);
        let session = existing
            .map(|entry| entry.session.clone())
            .unwrap_or_default();
        let entry = Entry {
            value: op.value.clone(),
            flags: op.flags,
            create_index,
            modify_index: self.index,
            lock_index: 0,
            session,
        };
        self.write(&op.key, entry);
        Ok(())
    }

    /// Stores an entry the transaction wrote, and reports it without its
    /// value.
    fn write(&mut self, key: &str, entry: Entry) {
        self.report(key, &entry, false);
        self.entries.insert(key.to_owned(), entry);
        self.changed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Store {
        fn apply_txn_now(&mut self, ops: &[KvOp]) -> Result<Vec<TxnEntry>, Vec<TxnError>> {
            self.apply_txn(ops, Instant::now())
        }
    }

    fn store(keys: &[&str]) -> Store {
        let mut store = Store::new();
        for key in keys {
            assert!(store.put(key, b"v".to_vec(), 0, None));
        }
        store
    }

    #[test]
    fn index_starts_above_zero_and_grows_only_on_changes() {
        let mut s = Store::new();
        assert_eq!(s.index(), FIRST_INDEX);
        assert!(s.put("a", vec![], 0, None));
        assert_eq!(s.index(), FIRST_INDEX + 1);
        assert!(!s.put("a", vec![], 0, Some(0)));
        assert_eq!(s.index(), FIRST_INDEX + 1);
        assert!(s.delete("missing", None));
        assert_eq!(s.index(), FIRST_INDEX + 1);
        assert!(s.delete_tree("zzz"));
        assert_eq!(s.index(), FIRST_INDEX + 1);
        assert!(s.delete_tree(""));
        assert_eq!(s.index(), FIRST_INDEX + 2);
        assert!(s.get("a").is_none());
    }

    #[test]
    fn put_keeps_create_index_and_replaces_flags() {
        let mut s = Store::new();
        assert!(s.put("k", b"1".to_vec(), 7, None));
        assert!(s.put("k", b"2".to_vec(), 0, None));
        let entry = s.get("k").unwrap();
        assert_eq!(entry.create_index, FIRST_INDEX + 1);
        assert_eq!(entry.modify_index, FIRST_INDEX + 2);
        assert_eq!(entry.flags, 0);
        assert_eq!(entry.value, b"2");
    }

    #[test]
    fn keys_with_separator_are_folders() {
        let s = store(&["a/b", "a/c/d", "a/c/e", "a/c/", "ab", "a-x", "b"]);
        assert_eq!(s.keys("", "/"), ["a-x", "a/", "ab", "b"]);
        assert_eq!(s.keys("a/", "/"), ["a/b", "a/c/"]);
        assert_eq!(s.keys("a/c/", "/"), ["a/c/", "a/c/d", "a/c/e"]);
        assert_eq!(
            s.keys("a", ""),
            ["a-x", "a/b", "a/c/", "a/c/d", "a/c/e", "ab"]
        );
        assert!(s.keys("c", "/").is_empty());
    }

    fn op(verb: Verb, key: &str, index: u64) -> KvOp {
        KvOp {
            verb,
            key: key.to_owned(),
            value: b"new".to_vec(),
            flags: 3,
            index,
            session: String::new(),
        }
    }

    #[test]
    fn txn_writes_share_one_index_and_report_without_values() {
        let mut s = store(&["a", "d"]);
        let before = s.index();
        let results = s
            .apply_txn_now(&[
                op(Verb::Set, "a", 0),
                op(Verb::Cas, "b", 0),
                op(Verb::Delete, "d", 0),
                op(Verb::Get, "a", 0),
                op(Verb::CheckIndex, "b", before + 1),
                op(Verb::CheckNotExists, "d", 0),
            ])
            .unwrap();
        assert_eq!(s.index(), before + 1);
        let keys: Vec<_> = results.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "a", "b"]);
        for result in &results {
            assert_eq!(result.entry.modify_index, before + 1);
            assert_eq!(result.entry.flags, 3);
        }
        assert!(results[0].entry.value.is_empty(), "set: no value");
        assert_eq!(results[0].entry.create_index, FIRST_INDEX + 1);
        assert_eq!(results[1].entry.create_index, before + 1);
        assert_eq!(results[2].entry.value, b"new", "get: the value");
        assert!(results[3].entry.value.is_empty(), "check-index: no value");
        assert!(s.get("d").is_none());
        assert_eq!(s.get("b").unwrap().value, b"new");
    }

    #[test]
    fn txn_failures_keep_nothing_and_are_all_reported() {
        let mut s = store(&["a"]);
        let before = s.index();
        let errors = s
            .apply_txn_now(&[
                op(Verb::Set, "x", 0),
                op(Verb::CheckIndex, "x", before),
                op(Verb::DeleteTree, "", 0),
                op(Verb::Get, "a", 0),
                op(Verb::Unknown("nope".into()), "a", 0),
            ])
            .unwrap_err();
        // Each operation sees the ones before it: x was just set (so its
        // index moved), and the delete-tree took a.
        assert_eq!(
            errors,
            [
                TxnError {
                    op_index: 1,
                    what: format!(
                        "failed index check for key \"x\", current modify index {} != {before}",
                        before + 1
                    ),
                },
                TxnError {
                    op_index: 3,
                    what: "key \"a\" doesn't exist".into(),
                },
                TxnError {
                    op_index: 4,
                    what: "unknown KV verb \"nope\"".into(),
                },
            ]
        );
        assert_eq!(s.index(), before);
        assert!(s.get("a").is_some() && s.get("x").is_none());

        // An empty key fails every verb but delete-tree, before anything runs.
        let errors = s
            .apply_txn_now(&[op(Verb::DeleteTree, "", 0), op(Verb::GetTree, "", 0)])
            .unwrap_err();
        assert_eq!(
            errors,
            [TxnError {
                op_index: 1,
                what: "Must provide key".into()
            }]
        );
        assert!(s.get("a").is_some());
    }

    #[test]
    fn txn_cas_delete_cas_and_get_or_empty() {
        let mut s = store(&["k"]);
        let index = s.get("k").unwrap().modify_index;
        for bad in [
            op(Verb::Cas, "k", 0),
            op(Verb::Cas, "k", index + 1),
            op(Verb::Cas, "absent", index),
            op(Verb::DeleteCas, "k", 0),
            op(Verb::CheckNotExists, "k", 0),
            op(Verb::CheckIndex, "absent", 0),
        ] {
            assert!(
                s.apply_txn_now(std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(s.index(), index);
        // delete-cas of an absent key: nothing to do, and no write.
        assert_eq!(
            s.apply_txn_now(&[op(Verb::DeleteCas, "absent", 5)]),
            Ok(vec![])
        );
        assert_eq!(s.index(), index);
        let absent = s
            .apply_txn_now(&[op(Verb::GetOrEmpty, "absent", 9)])
            .unwrap();
        assert_eq!(absent[0].entry.modify_index, 9);
        assert_eq!(absent[0].entry.create_index, 0);
        assert!(s.apply_txn_now(&[op(Verb::DeleteCas, "k", index)]).is_ok());
        assert!(s.get("k").is_none());
        assert_eq!(s.index(), index + 1);
    }

    fn new_session(behavior: Behavior, lock_delay: Duration) -> NewSession {
        NewSession {
            name: String::new(),
            behavior,
            ttl: String::new(),
            lock_delay: lock_delay.as_nanos() as i64,
            renew_period: None,
        }
    }

    #[test]
    fn sessions_get_unique_ids_and_one_index_each() {
        let mut s = Store::new();
        let now = Instant::now();
        let mut ids = std::collections::HashSet::new();
        for i in 1..=50 {
            let id = s
                .create_session(new_session(Behavior::Release, Duration::ZERO), now)
                .id
                .clone();
            assert_eq!(id.len(), 36);
            assert_eq!(id.matches('-').count(), 4);
            assert!(ids.insert(id.clone()), "{id} twice");
            let session = s.session(&id).unwrap();
            assert_eq!(session.create_index, FIRST_INDEX + i);
            assert_eq!(session.modify_index, FIRST_INDEX + i);
        }
        let listed: Vec<&str> = s.sessions().map(|s| s.id.as_str()).collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        assert_eq!(listed, sorted);
    }

    #[test]
    fn locks_as_kvs_lock_txn() {
        let mut s = Store::new();
        let now = Instant::now();
        let a = s
            .create_session(new_session(Behavior::Release, Duration::ZERO), now)
            .id
            .clone();
        let b = s
            .create_session(new_session(Behavior::Release, Duration::ZERO), now)
            .id
            .clone();
        assert_eq!(
            s.lock("k", b"1".to_vec(), 3, "", now),
            Err("missing session".into())
        );
        assert_eq!(
            s.lock("k", b"1".to_vec(), 3, "zz", now),
            Err("invalid session \"zz\"".into())
        );
        assert_eq!(s.lock("k", b"1".to_vec(), 3, &a, now), Ok(true));
        let entry = s.get("k").unwrap().clone();
        assert_eq!((entry.lock_index, entry.session.as_str()), (1, a.as_str()));
        assert_eq!(
            (entry.create_index, entry.modify_index),
            (s.index(), s.index())
        );
        assert_eq!(s.lock("k", b"2".to_vec(), 0, &b, now), Ok(false));
        assert_eq!(s.unlock("k", b"2".to_vec(), 0, &b), Ok(false));
        assert_eq!(s.unlock("nope", vec![], 0, &a), Ok(false));
        assert_eq!(s.unlock("k", vec![], 0, ""), Err("missing session".into()));
        assert_eq!(s.get("k").unwrap(), &entry, "nothing changed");
        assert_eq!(s.lock("k", b"3".to_vec(), 4, &a, now), Ok(true));
        assert_eq!(s.get("k").unwrap().lock_index, 1);
        assert_eq!(s.unlock("k", b"4".to_vec(), 5, &a), Ok(true));
        let entry = s.get("k").unwrap();
        assert_eq!((entry.lock_index, entry.session.as_str()), (1, ""));
        assert_eq!((entry.value.as_slice(), entry.flags), (&b"4"[..], 5));
        assert_eq!(s.lock("k", vec![], 0, &b, now), Ok(true));
        assert_eq!(s.get("k").unwrap().lock_index, 2);
        // A plain put keeps the holder, LockIndex 0.
        assert!(s.put("k", vec![], 0, None));
        let entry = s.get("k").unwrap();
        assert_eq!((entry.lock_index, entry.session.as_str()), (0, b.as_str()));
    }

    #[test]
    fn invalidation_releases_or_deletes_with_lock_delays() {
        let mut s = Store::new();
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let rel = s
            .create_session(new_session(Behavior::Release, 10 * second), t0)
            .id
            .clone();
        let del = s
            .create_session(new_session(Behavior::Delete, 120 * second), t0)
            .id
            .clone();
        let other = s
            .create_session(new_session(Behavior::Release, Duration::ZERO), t0)
            .id
            .clone();
        for key in ["r1", "r2"] {
            assert_eq!(s.lock(key, b"v".to_vec(), 0, &rel, t0), Ok(true));
        }
        assert_eq!(s.lock("d", b"v".to_vec(), 0, &del, t0), Ok(true));
        assert!(s.put("plain", vec![], 0, None));
        let mut changes = s.subscribe();

        let before = s.index();
        assert!(s.destroy_session(&rel, t0));
        assert_eq!(s.index(), before + 1);
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), before + 1);
        for key in ["r1", "r2"] {
            let entry = s.get(key).unwrap();
            assert_eq!(entry.session, "");
            assert_eq!(entry.modify_index, before + 1);
            assert_eq!(entry.lock_index, 1);
        }
        assert!(s.session(&rel).is_none());
        assert!(!s.destroy_session(&rel, t0), "already gone");
        assert_eq!(s.index(), before + 1);
        assert!(!changes.has_changed().unwrap());

        let lock = |s: &mut Store, key: &str, at| s.lock(key, vec![], 0, &other, at);
        assert_eq!(lock(&mut s, "r1", t0 + 9 * second), Ok(false));
        assert_eq!(lock(&mut s, "plain", t0), Ok(true), "not held: no delay");
        assert_eq!(lock(&mut s, "r1", t0 + 10 * second), Ok(true));

        assert!(s.destroy_session(&del, t0));
        assert!(s.get("d").is_none());
        // Enforced for Consul's MaxLockDelay at most.
        assert_eq!(lock(&mut s, "d", t0 + 59 * second), Ok(false));
        assert_eq!(lock(&mut s, "d", t0 + 60 * second), Ok(true));
        assert_eq!(s.get("d").unwrap().lock_index, 1);
    }

    #[test]
    fn renewal_moves_the_expiry_not_the_index() {
        let mut s = Store::new();
        let t0 = Instant::now();
        let mut new = new_session(Behavior::Release, Duration::ZERO);
        new.renew_period = Some(Duration::from_secs(20));
        let id = s.create_session(new, t0).id.clone();
        assert_eq!(
            s.session(&id).unwrap().expires,
            Some(t0 + Duration::from_secs(20))
        );
        let index = s.index();
        let later = t0 + Duration::from_secs(5);
        let renewed = s.renew_session(&id, later).unwrap();
        assert_eq!(renewed.expires, Some(later + Duration::from_secs(20)));
        assert_eq!(s.index(), index);
        assert!(s.renew_session("nope", later).is_none());
    }

    #[test]
    fn a_restore_takes_the_index_back_and_starts_ttls_again() {
        let mut s = store(&["a"]);
        let t0 = Instant::now();
        let mut new = new_session(Behavior::Delete, Duration::from_secs(15));
        new.renew_period = Some(Duration::from_secs(20));
        let id = s.create_session(new, t0).id.clone();
        let saved = s.snapshot();
        let at = s.index();
        assert!(s.put("a", b"w".to_vec(), 0, None));
        assert!(s.put("b", b"v".to_vec(), 0, None));
        assert!(s.destroy_session(&id, t0));
        let changes = s.subscribe();
        // Through the snapshot's own format.
        let saved: Snapshot = serde_json::from_slice(&serde_json::to_vec(&saved).unwrap()).unwrap();
        let later = t0 + Duration::from_secs(5);
        assert_eq!(s.restore(saved, later), std::slice::from_ref(&id));
        assert_eq!(s.index(), at);
        assert!(changes.has_changed().unwrap());
        assert_eq!(s.get("a").unwrap().value, b"v");
        assert_eq!(s.get("b"), None);
        assert_eq!(
            s.session(&id).unwrap().expires,
            Some(later + Duration::from_secs(20))
        );
        assert!(!s.lock_delayed("a", later));
        // Writes go on from the snapshot's index.
        assert!(s.put("a", b"x".to_vec(), 0, None));
        assert_eq!(s.get("a").unwrap().modify_index, at + 1);
    }

    #[test]
    fn list_is_a_plain_prefix() {
        let s = store(&["a", "a/b", "ab", "b"]);
        let keys: Vec<_> = s.list("a").map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "a/b", "ab"]);
        let keys: Vec<_> = s.list("a/").map(|(k, _)| k).collect();
        assert_eq!(keys, ["a/b"]);
    }
}
