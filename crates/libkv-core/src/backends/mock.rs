//! `mock://`: an in-memory store for tests. Its data lives as long as the store
//! object. Like etcd and Consul, it lets `/a` and `/a/b` both hold values. A key
//! written with a `ttl` is removed by the first call that finds its time passed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::fork;
use crate::key::Key;
use crate::store::{Listing, Store, Versioned};
use crate::value::Value;

pub struct MockStore {
    url: String,
    inner: Mutex<Inner>,
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
        self.expiry.retain(|key, at| {
            let live = *at > now;
            if !live {
                entries.remove(key);
            }
            live
        });
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
    _section: fork::Section,
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
        self.lock().entries.remove(key.as_str());
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
            inner.entries.remove(&k);
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
        inner.entries.remove(key.as_str());
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

    fn info(&self) -> Result<Value> {
        let inner = self.lock();
        Ok(Value::hash([
            ("provider", Value::from("mock")),
            ("url", Value::from(self.url.as_str())),
            ("keys", Value::Int(inner.entries.len() as i64)),
        ]))
    }
}
