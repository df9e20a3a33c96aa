//! The `Store` trait every backend implements.
//!
//! Stores move bytes; the codec turns values into bytes and back above them. Keys
//! arrive validated. Every method blocks the calling thread until the store has
//! answered or the store's timeout has passed; bindings release their interpreter
//! lock around calls.

use crate::error::Result;
use crate::key::Key;
use crate::op::Op;
use crate::value::Value;

/// A stored value with the store's modification number for its key. The sequence
/// is never 0 for a present key and never reused for the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub sequence: u64,
}

/// Entries below a directory: key relative to the directory, sorted.
pub type Listing<T> = Vec<(String, T)>;

pub trait Store: Send + Sync {
    /// `mock`, `file`, `legacy-simp6`, `consul` or `etcd`.
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
