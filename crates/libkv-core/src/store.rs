//! The `Store` trait every backend implements.
//!
//! Stores move bytes; the codec turns values into bytes and back above them. Keys
//! arrive validated. Every method blocks the calling thread until the store has
//! answered or the store's timeout has passed; bindings release their interpreter
//! lock around calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::op::Op;
use crate::value::Value;
use crate::watch::{Target, Watcher};

/// A stored value with the store's modification number for its key. The sequence
/// is never 0 for a present key and never reused for the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub sequence: u64,
}

/// Entries below a directory: key relative to the directory, sorted.
pub type Listing<T> = Vec<(String, T)>;

/// A page of a [`Store::scan`]: entries in key order, and how many entries there
/// are from this page's first on (this page's included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Listing<Vec<u8>>,
    pub remaining: u64,
}

/// The function a `put_ttl` with this `previous` does, as errors name it.
pub fn ttl_write_op(previous: Option<u64>) -> &'static str {
    match previous {
        None => "put",
        Some(0) => "atomic_create",
        Some(_) => "atomic_put",
    }
}

/// The longest `ttl` libkv takes anywhere: ten years, in seconds.
pub const MAX_TTL: u64 = 10 * 365 * 24 * 3600;

pub trait Store: Send + Sync {
    /// `mock`, `file`, `legacy-simp6`, `consul`, `etcd`, `zookeeper` or `sqlite`.
    fn provider(&self) -> &'static str;
    /// The store's URL, safe to show: it never holds a secret.
    fn url(&self) -> &str;

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>>;
    fn put(&self, key: &Key, value: &[u8]) -> Result<()>;
    /// Deletes the key; deleting an absent key is not an error.
    fn delete(&self, key: &Key) -> Result<()>;
    fn exists(&self, key: &Key) -> Result<bool>;
    /// Every key below `dir` (not `dir` itself), relative to `dir`, sorted.
    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>>;
    /// Deletes every key below `dir`.
    fn deletetree(&self, dir: &Key) -> Result<()>;

    /// Stores the value only if the key is absent; false if it was present.
    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool>;
    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>>;
    /// Stores the value only if the key's sequence is still `previous` (0: absent).
    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool>;
    /// Deletes the key only if its sequence is still `previous` (0: absent, which
    /// then succeeds without doing anything).
    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool>;
    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>>;

    /// Stores every entry, in as few requests as the store allows (etcd:
    /// transactions of up to 128 puts; Consul: transactions of up to 64 sets;
    /// elsewhere one put each). Not atomic as a whole: when it fails, each entry is
    /// stored whole or not at all, and doing it again completes it.
    fn put_many(&self, entries: &[(Key, Vec<u8>)]) -> Result<()> {
        entries
            .iter()
            .try_for_each(|(key, value)| self.put(key, value))
    }

    /// Every key below `dir` with its bytes, as `list` has them, handed to `each`
    /// a page of at most `page` entries at a time, in key order, with the number
    /// of entries from that page on. etcd reads page by page; other stores read
    /// once.
    fn scan(&self, dir: &Key, page: usize, each: &mut dyn FnMut(Page) -> Result<()>) -> Result<()> {
        let entries = self.list(dir)?;
        let mut remaining = entries.len() as u64;
        let mut entries = entries.into_iter();
        loop {
            let chunk: Listing<Vec<u8>> = entries.by_ref().take(page.max(1)).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            let n = chunk.len() as u64;
            each(Page {
                entries: chunk,
                remaining,
            })?;
            remaining -= n;
        }
    }

    /// Stores the value for `ttl`: the key disappears once `ttl` has passed without
    /// another write of it, and no read returns it after that. With `previous`,
    /// only if the key's sequence is still that (0: absent), as `atomic_put`.
    /// Answers the key's new sequence, or `None` when `previous` did not match.
    /// `ttl` is within [`Store::ttl_bounds`] (the caller checked).
    fn put_ttl(
        &self,
        key: &Key,
        value: &[u8],
        previous: Option<u64>,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let _ = (key, value, previous, ttl);
        Err(Error::Unsupported {
            op: "ttl",
            provider: self.provider(),
        })
    }

    /// The shortest and longest `ttl` this store keeps, in whole seconds.
    fn ttl_bounds(&self) -> (u64, u64) {
        (1, MAX_TTL)
    }

    /// Takes the lock at `key` for `owner` (a token no other holder has) for
    /// `ttl`, waiting until `deadline` while another holds it. Answers the
    /// acquisition's fence, larger than every earlier acquisition's of this key,
    /// and when the request that took it was sent (the lock's ttl runs from
    /// then); `None` when the deadline passed first. The default creates the key
    /// with `put_ttl`, trying again as it disappears.
    fn lock(
        &self,
        key: &Key,
        owner: &str,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<Option<(u64, Instant)>> {
        let mut pause = Duration::from_millis(5);
        loop {
            let sent = Instant::now();
            if let Some(fence) = self.put_ttl(key, owner.as_bytes(), Some(0), ttl)? {
                return Ok(Some((fence, sent)));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Keeps the lock `owner` holds at `key` for another `ttl`; false when it no
    /// longer holds it (it expired, or another holder has it).
    fn renew(&self, key: &Key, owner: &str, ttl: Duration) -> Result<bool> {
        match self.atomic_get(key)? {
            Some(held) if held.value == owner.as_bytes() => Ok(self
                .put_ttl(key, owner.as_bytes(), Some(held.sequence), ttl)?
                .is_some()),
            _ => Ok(false),
        }
    }

    /// Releases the lock `owner` holds at `key`; false when it did not hold it.
    fn unlock(&self, key: &Key, owner: &str) -> Result<bool> {
        match self.atomic_get(key)? {
            Some(held) if held.value == owner.as_bytes() => self.atomic_delete(key, held.sequence),
            _ => Ok(false),
        }
    }

    /// This store's own watcher of `target`, from the sequence `from` (`None`:
    /// from now), as `watch::open` describes it; `None` when the store has no
    /// way to wait for a change, and is read again at intervals instead.
    fn watch(
        self: Arc<Self>,
        target: &Target,
        from: Option<u64>,
    ) -> Result<Option<Box<dyn Watcher>>> {
        let _ = (target, from);
        Ok(None)
    }

    /// Facts about the store: at least `provider` and `url`.
    fn info(&self) -> Result<Value>;

    /// The functions this store implements.
    fn supports(&self) -> &'static [Op] {
        Op::ALL
    }

    /// Whether a call may wait: on disk, on the network, or on a lock another
    /// process holds. A binding lets other threads of its runtime run while such a
    /// call waits (Ruby's GVL is released); a call that never waits is cheaper made
    /// without that hand-over.
    fn waits(&self) -> bool {
        true
    }
}
