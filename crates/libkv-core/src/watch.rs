//! Watches: the changes to a key, or to everything below a directory, as they
//! happen.
//!
//! A [`Watcher`] hands out [`Event`]s in order: a put (with the value and its
//! sequence) or a delete. Two kinds:
//!
//! - **Every change.** etcd keeps its history: its watcher asks for every event
//!   from a revision on, and after a lost connection goes on from the revision
//!   after the last one it handed out, so nothing is missed or repeated.
//! - **The latest state** ([`Coalescing`]). Consul's blocking queries, the file
//!   store's change notifications and the mock say *that* something changed, not
//!   every step: the watcher reads the state again and hands out what differs from
//!   the last state it saw, a put for each key whose sequence changed and a delete
//!   for each key gone. Several changes between two reads come as one: the last.
//!   A delete's sequence is the store's at the read that found the key gone
//!   (where the store has none, the key's last sequence).
//!
//! `from` is where a watch starts: `None` from now, `Some(s)` with every change
//! after the sequence `s`. A watcher that coalesces starts with the state as it
//! finds it: below a directory it hands out the keys whose sequence is beyond
//! `s` (and cannot know of deletes before it started); for a key, the key when
//! its sequence is no longer `s` (a delete when it is absent and `s` was not 0).
//!
//! [`Watcher::next`] waits until a deadline, so a binding waits in short slices
//! and can stop between them (a stop from another thread, an interrupt).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::key::Key;
use crate::store::{Store, Versioned};

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Put => "put",
            EventKind::Delete => "delete",
        }
    }
}

/// One change: the key (the whole key, not relative to a watched directory), its
/// new value (empty for a delete) and the store's sequence of the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    pub value: Vec<u8>,
    pub sequence: u64,
}

/// The changes to a watched key or directory, in order.
pub trait Watcher: Send {
    /// The changes that came since the last call, waiting for some until
    /// `deadline`; none when the deadline passed first.
    fn next(&mut self, deadline: Instant) -> Result<Vec<Event>>;

    /// Whether changes between two reads may come as one, the latest.
    fn coalesces(&self) -> bool;
}

/// What a watch is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The key, or the directory (`tree`).
    pub key: Key,
    /// Everything below `key` rather than `key` itself.
    pub tree: bool,
}

impl Target {
    /// Whether `key` (a whole key) is this target's.
    pub fn covers(&self, key: &str) -> bool {
        if self.tree {
            key.starts_with(&self.key.dir_prefix())
        } else {
            key == self.key.as_str()
        }
    }

    /// The operation errors name.
    pub fn op(&self) -> &'static str {
        if self.tree {
            "watchtree"
        } else {
            "watch"
        }
    }

    /// The state of the target as the store has it now: each key (whole) with its
    /// value and sequence.
    pub fn read(&self, store: &dyn Store) -> Result<Vec<(String, Versioned)>> {
        if self.tree {
            Ok(store
                .atomic_list(&self.key)?
                .into_iter()
                .map(|(rel, v)| (self.key.join(&rel), v))
                .collect())
        } else {
            Ok(store
                .atomic_get(&self.key)?
                .map(|v| vec![(self.key.as_str().to_owned(), v)])
                .unwrap_or_default())
        }
    }
}

/// The state of a watched target, as a [`Source`] read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store's sequence as of this read, when it has one (Consul's index, the
    /// mock's counter); 0 otherwise.
    pub index: u64,
    pub entries: Vec<(String, Versioned)>,
}

/// Where a [`Coalescing`] watcher reads from.
pub trait Source: Send {
    /// The state of the target, once it may differ from the state this answered
    /// last (the first call answers at once); `None` when `deadline` passed first.
    /// It may answer an unchanged state.
    fn next(&mut self, deadline: Instant) -> Result<Option<Snapshot>>;
}

/// A watcher over a [`Source`]: each state it reads is compared with the last,
/// and what differs is handed out.
pub struct Coalescing<S> {
    source: S,
    target: Target,
    /// The sequence of every key of the last state.
    known: BTreeMap<String, u64>,
    /// What the first state held beyond `from`, not handed out yet.
    pending: Vec<Event>,
}

impl<S: Source> Coalescing<S> {
    /// Reads the first state, within the store's own timeout: the watch starts
    /// there (see the module for `from`).
    pub fn start(mut source: S, target: Target, from: Option<u64>) -> Result<Coalescing<S>> {
        let first = source
            .next(Instant::now() + Duration::from_secs(3600))?
            .unwrap_or_default();
        // What the first state holds as already seen: everything, when the
        // watch starts now; else what is not beyond `from` (for a key: its
        // sequence being `from`, so that any other, an absent key's included, is a
        // change).
        let known = match from {
            None => first
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), v.sequence))
                .collect(),
            Some(0) => BTreeMap::new(),
            Some(from) if !target.tree => BTreeMap::from([(target.key.as_str().to_owned(), from)]),
            Some(from) => first
                .entries
                .iter()
                .filter(|(_, v)| v.sequence <= from)
                .map(|(k, v)| (k.clone(), v.sequence))
                .collect(),
        };
        let mut watcher = Coalescing {
            source,
            target,
            known,
            pending: Vec::new(),
        };
        watcher.pending = watcher.changes(first);
        Ok(watcher)
    }

    /// What differs between the last state and `snapshot`, which becomes the last.
    fn changes(&mut self, snapshot: Snapshot) -> Vec<Event> {
        let mut known = std::mem::take(&mut self.known);
        let mut events = Vec::new();
        let mut seen = BTreeMap::new();
        for (key, v) in snapshot.entries {
            if known.remove(&key) != Some(v.sequence) {
                events.push(Event {
                    kind: EventKind::Put,
                    key: key.clone(),
                    value: v.value,
                    sequence: v.sequence,
                });
            }
            seen.insert(key, v.sequence);
        }
        // What is left of the last state is gone.
        for (key, last) in known {
            events.push(Event {
                kind: EventKind::Delete,
                key,
                value: Vec::new(),
                sequence: snapshot.index.max(last),
            });
        }
        events.sort_by_key(|e| e.sequence);
        self.known = seen;
        events
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

impl<S: Source> Watcher for Coalescing<S> {
    fn next(&mut self, deadline: Instant) -> Result<Vec<Event>> {
        if !self.pending.is_empty() {
            return Ok(std::mem::take(&mut self.pending));
        }
        loop {
            let Some(snapshot) = self.source.next(deadline)? else {
                return Ok(Vec::new());
            };
            let events = self.changes(snapshot);
            if !events.is_empty() || Instant::now() >= deadline {
                return Ok(events);
            }
        }
    }

    fn coalesces(&self) -> bool {
        true
    }
}

/// The source of a store with no way to wait for a change: it reads the target
/// again every `interval`.
pub struct Polled {
    store: Arc<dyn Store>,
    target: Target,
    interval: Duration,
    /// When it may read next; `None` before the first read.
    next_read: Option<Instant>,
}

impl Polled {
    pub fn new(store: Arc<dyn Store>, target: Target, interval: Duration) -> Polled {
        Polled {
            store,
            target,
            interval,
            next_read: None,
        }
    }
}

impl Source for Polled {
    fn next(&mut self, deadline: Instant) -> Result<Option<Snapshot>> {
        if let Some(at) = self.next_read {
            if at > deadline {
                sleep_until(deadline);
                return Ok(None);
            }
            sleep_until(at);
        }
        self.next_read = Some(Instant::now() + self.interval);
        Ok(Some(Snapshot {
            index: 0,
            entries: self.target.read(&*self.store)?,
        }))
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// How often a store without its own way of waiting is read again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Watches `target` on `store` from `from` (see the module): the store's own
/// watcher, else one that reads it again every [`POLL_INTERVAL`].
pub fn open(store: &Arc<dyn Store>, target: Target, from: Option<u64>) -> Result<Box<dyn Watcher>> {
    if let Some(watcher) = Arc::clone(store).watch(&target, from)? {
        return Ok(watcher);
    }
    let source = Polled::new(Arc::clone(store), target.clone(), POLL_INTERVAL);
    Ok(Box::new(Coalescing::start(source, target, from)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: &str, sequence: u64) -> Versioned {
        Versioned {
            value: value.as_bytes().to_vec(),
            sequence,
        }
    }

    /// A source that answers the given states, then nothing.
    struct States(std::vec::IntoIter<Snapshot>);

    impl Source for States {
        fn next(&mut self, _deadline: Instant) -> Result<Option<Snapshot>> {
            Ok(self.0.next())
        }
    }

    fn snapshot(index: u64, entries: &[(&str, &str, u64)]) -> Snapshot {
        Snapshot {
            index,
            entries: entries
                .iter()
                .map(|(k, value, s)| (k.to_string(), v(value, *s)))
                .collect(),
        }
    }

    fn watcher(tree: bool, from: Option<u64>, states: Vec<Snapshot>) -> Coalescing<States> {
        let key = if tree { Key::dir("/d") } else { Key::new("/d") }.unwrap();
        Coalescing::start(States(states.into_iter()), Target { key, tree }, from).unwrap()
    }

    fn summary(events: Vec<Event>) -> Vec<(EventKind, String, u64)> {
        events
            .into_iter()
            .map(|e| (e.kind, e.key, e.sequence))
            .collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(10)
    }

    #[test]
    fn from_now_hands_out_what_differs_from_the_state_found_first() {
        let mut w = watcher(
            true,
            None,
            vec![
                snapshot(5, &[("/d/a", "1", 3), ("/d/b", "2", 5)]),
                snapshot(7, &[("/d/a", "1", 3), ("/d/b", "3", 6), ("/d/c", "4", 7)]),
                snapshot(9, &[("/d/c", "4", 7)]),
            ],
        );
        use EventKind::*;
        assert_eq!(
            summary(w.next(soon()).unwrap()),
            [(Put, "/d/b".into(), 6), (Put, "/d/c".into(), 7)]
        );
        assert_eq!(
            summary(w.next(soon()).unwrap()),
            [(Delete, "/d/a".into(), 9), (Delete, "/d/b".into(), 9)]
        );
        assert!(w.next(soon()).unwrap().is_empty());
    }

    #[test]
    fn from_a_sequence_hands_out_what_is_beyond_it_first() {
        use EventKind::*;
        let mut w = watcher(
            true,
            Some(4),
            vec![snapshot(6, &[("/d/a", "1", 3), ("/d/b", "2", 5)])],
        );
        assert_eq!(summary(w.next(soon()).unwrap()), [(Put, "/d/b".into(), 5)]);
        // A key: any sequence but `from` is a change; absent, a delete.
        let mut w = watcher(false, Some(5), vec![snapshot(0, &[("/d", "x", 5)])]);
        assert!(w.next(soon()).unwrap().is_empty());
        let mut w = watcher(false, Some(5), vec![snapshot(0, &[])]);
        assert_eq!(summary(w.next(soon()).unwrap()), [(Delete, "/d".into(), 5)]);
        let mut w = watcher(false, Some(0), vec![snapshot(0, &[("/d", "x", 2)])]);
        assert_eq!(summary(w.next(soon()).unwrap()), [(Put, "/d".into(), 2)]);
    }
}
