//! `mock://`: an in-memory store for tests. Its data lives as long as the store
//! object. Like etcd and Consul, it lets `/a` and `/a/b` both hold values. A key
//! written with a `ttl` is removed by the first call that finds its time passed.
//! Every change (a delete too) takes the next store-wide sequence; a watcher
//! looks at the last one every 2 ms, and reads the state when it moved (it
//! coalesces: changes between two looks come as the latest).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::fork;
use crate::key::Key;
use crate::store::{Listing, Store, Versioned};
use crate::value::Value;
use crate::watch::{Coalescing, Snapshot, Source, Target, Watcher};

pub struct MockStore {
    url: String,
    inner: Mutex<Inner>,
    /// The last sequence handed out, as of the last call: what watchers look at.
    changed: AtomicU64,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<String, Versioned>,
    /// The last sequence handed out: store-wide, so a key deleted and created again
    /// gets a larger one.
    sequence: u64,
    /// When each key written with a ttl expires.
    expiry: HashMap<String, Instant>,
}

impl Inner {
    /// Removes the keys whose ttl has passed.
    fn expire(&mut self) {
        if self.expiry.is_empty() {
            return;
        }
        let now = Instant::now();
        let entries = &mut self.entries;
        let mut removed = false;
        self.expiry.retain(|key, at| {
            let live = *at > now;
            if !live {
                removed |= entries.remove(key).is_some();
            }
            live
        });
        if removed {
            self.sequence += 1;
        }
    }

    /// Removes the key; a change (the next sequence) when it was there.
    fn remove(&mut self, key: &str) -> bool {
        self.expiry.remove(key);
        let removed = self.entries.remove(key).is_some();
        if removed {
            self.sequence += 1;
        }
        removed
    }

    fn write(&mut self, key: &Key, value: &[u8]) {
        self.expiry.remove(key.as_str());
        self.sequence += 1;
        self.entries.insert(
            key.as_str().to_owned(),
            Versioned {
                value: value.to_vec(),
                sequence: self.sequence,
            },
        );
    }

    fn sequence_of(&self, key: &Key) -> u64 {
        self.entries.get(key.as_str()).map_or(0, |v| v.sequence)
    }

    fn below<'a>(&'a self, dir: &Key) -> impl Iterator<Item = (&'a str, &'a Versioned)> + 'a {
        let prefix = dir.dir_prefix();
        let start = prefix.len();
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(move |(k, v)| (&k[start..], v))
    }
}

/// The store's data, locked; a fork waits until it is unlocked (see `fork`).
struct Locked<'a> {
    guard: MutexGuard<'a, Inner>,
    changed: &'a AtomicU64,
    _section: fork::Section,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.changed.store(self.guard.sequence, Ordering::Release);
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

impl MockStore {
    pub fn new(name: &str) -> MockStore {
        MockStore {
            url: format!("mock://{name}"),
            inner: Mutex::new(Inner::default()),
            changed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Locked<'_> {
        let section = fork::section();
        // A panic while holding the lock cannot leave an entry half-written: every
        // change is a single map operation. Keep serving.
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.expire();
        Locked {
            guard,
            changed: &self.changed,
            _section: section,
        }
    }
}

impl Store for MockStore {
    fn provider(&self) -> &'static str {
        "mock"
    }

    /// Every call is a map operation under a lock held for no longer than that.
    fn waits(&self) -> bool {
        false
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .entries
            .get(key.as_str())
            .map(|v| v.value.clone()))
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<()> {
        self.lock().write(key, value);
        Ok(())
    }

    fn delete(&self, key: &Key) -> Result<()> {
        self.lock().remove(key.as_str());
        Ok(())
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        Ok(self.lock().entries.contains_key(key.as_str()))
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        let inner = self.lock();
        Ok(inner
            .below(dir)
            .map(|(k, v)| (k.to_owned(), v.value.clone()))
            .collect())
    }

    fn deletetree(&self, dir: &Key) -> Result<()> {
        let mut inner = self.lock();
        let doomed: Vec<String> = inner.below(dir).map(|(k, _)| dir.join(k)).collect();
        for k in doomed {
            inner.remove(&k);
        }
        Ok(())
    }

    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool> {
        let mut inner = self.lock();
        if inner.entries.contains_key(key.as_str()) {
            return Ok(false);
        }
        inner.write(key, value);
        Ok(true)
    }

    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>> {
        Ok(self.lock().entries.get(key.as_str()).cloned())
    }

    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool> {
        let mut inner = self.lock();
        if inner.sequence_of(key) != previous {
            return Ok(false);
        }
        inner.write(key, value);
        Ok(true)
    }

    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool> {
        let mut inner = self.lock();
        if inner.sequence_of(key) != previous {
            return Ok(false);
        }
        inner.remove(key.as_str());
        Ok(true)
    }

    fn put_ttl(
        &self,
        key: &Key,
        value: &[u8],
        previous: Option<u64>,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let mut inner = self.lock();
        if previous.is_some_and(|p| p != inner.sequence_of(key)) {
            return Ok(None);
        }
        inner.write(key, value);
        inner
            .expiry
            .insert(key.as_str().to_owned(), Instant::now() + ttl);
        Ok(Some(inner.sequence))
    }

    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>> {
        let inner = self.lock();
        Ok(inner
            .below(dir)
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect())
    }

    fn watch(
        self: Arc<Self>,
        target: &Target,
        from: Option<u64>,
    ) -> Result<Option<Box<dyn Watcher>>> {
        let source = MockSource {
            store: self,
            target: target.clone(),
            seen: None,
        };
        Ok(Some(Box::new(Coalescing::start(
            source,
            target.clone(),
            from,
        )?)))
    }

    fn info(&self) -> Result<Value> {
        let inner = self.lock();
        Ok(Value::hash([
            ("provider", Value::from("mock")),
            ("url", Value::from(self.url.as_str())),
            ("keys", Value::Int(inner.entries.len() as i64)),
        ]))
    }
}

/// How often a mock watcher looks at the store's last sequence.
const LOOK: Duration = Duration::from_millis(2);
/// How often it reads the state even when nothing changed, so that a key whose
/// ttl passed is removed (and handed out as deleted) without another call.
const READ_AT_LEAST: Duration = Duration::from_millis(250);

struct MockSource {
    store: Arc<MockStore>,
    target: Target,
    /// The sequence as of the last state read; `None` before the first.
    seen: Option<(u64, Instant)>,
}

impl Source for MockSource {
    fn next(&mut self, deadline: Instant) -> Result<Option<Snapshot>> {
        if let Some((seen, at)) = self.seen {
            let read_by = at + READ_AT_LEAST;
            while self.store.changed.load(Ordering::Acquire) == seen {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                if now >= read_by {
                    break;
                }
                std::thread::sleep(LOOK.min(deadline - now));
            }
        }
        let inner = self.store.lock();
        let entries = if self.target.tree {
            inner
                .below(&self.target.key)
                .map(|(rel, v)| (self.target.key.join(rel), v.clone()))
                .collect()
        } else {
            inner
                .entries
                .get(self.target.key.as_str())
                .map(|v| vec![(self.target.key.as_str().to_owned(), v.clone())])
                .unwrap_or_default()
        };
        self.seen = Some((inner.sequence, Instant::now()));
        Ok(Some(Snapshot {
            index: inner.sequence,
            entries,
        }))
    }
}
