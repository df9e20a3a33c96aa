//! What network stores share: one tokio runtime per process, a per-process cache of
//! clients, a request run within a timeout, and how a failed request is worded.
//!
//! A forked child inherits the parent's runtime and clients in memory, but not the
//! runtime's threads nor, usefully, its connections: both belong to the process that
//! made them. After `fork` the child makes its own; the parent's are leaked there,
//! since dropping them could wait on threads that do not exist in the child. The
//! locks around the runtime and the clients are fork sections, so a child never
//! starts with one held.

use std::cell::Cell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::runtime::{Builder, Runtime};

use crate::error::{Error, Result, Waiting};
use crate::fork;
use crate::key::Key;
use crate::op::Op;

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// This process's runtime, made on first use. It is a current-thread runtime: the
/// thread waiting on a call drives the connection too, so a request and its answer
/// cross no threads (a worker thread cost two wake-ups a call, 50-60 µs on etcd,
/// more when the worker had gone to sleep between calls). Between calls nothing
/// polls the connections; what arrives meanwhile waits in the socket until the next
/// call. Threads calling at once take turns driving it.
pub fn runtime() -> std::io::Result<&'static Runtime> {
    let pid = fork::pid();
    let _section = fork::section();
    let mut current = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match *current {
        Some((owner, runtime)) if owner == pid => Ok(runtime),
        _ => {
            let runtime: &'static Runtime = Box::leak(Box::new(
                Builder::new_current_thread().enable_all().build()?,
            ));
            *current = Some((pid, runtime));
            Ok(runtime)
        }
    }
}

/// Runs `future` on this process's runtime for at most `timeout`: `Ok(None)` when
/// the time ran out (the future is then dropped, cancelling it). The future is
/// pinned on the heap once: a request's future is kilobytes, which the layers of
/// `timeout` and `block_on` would otherwise each copy.
pub fn block_on_timeout<T>(
    timeout: Duration,
    future: impl Future<Output = T>,
) -> std::io::Result<Option<T>> {
    let future = Box::pin(future);
    // The timer is made inside the runtime, which it registers with.
    Ok(runtime()?
        .block_on(async { tokio::time::timeout(timeout, future).await })
        .ok())
}

/// Clients of this process, one per key (what a client is made from), each with a
/// generation that tells it from the clients made before and after it.
pub struct ClientCache<K, C> {
    clients: Mutex<Option<HashMap<K, Cached<C>>>>,
    generation: AtomicU64,
}

struct Cached<C> {
    pid: u32,
    generation: u64,
    client: C,
}

impl<K: Hash + Eq + Clone, C: Clone> ClientCache<K, C> {
    pub const fn new() -> Self {
        ClientCache {
            clients: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The clients, locked. Callers hold a fork section around it (see `fork`).
    fn lock(&self) -> MutexGuard<'_, Option<HashMap<K, Cached<C>>>> {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This process's client for `key`, and its generation.
    pub fn get(&self, key: &K) -> Option<(C, u64)> {
        let pid = fork::pid();
        let _section = fork::section();
        let mut clients = self.lock();
        let map = clients.get_or_insert_with(HashMap::new);
        match map.get(key) {
            Some(c) if c.pid == pid => Some((c.client.clone(), c.generation)),
            // Made before fork, in the parent: leak it.
            Some(_) => {
                std::mem::forget(map.remove(key));
                None
            }
            None => None,
        }
    }

    /// Keeps `client` for `key`, unless another thread kept one meanwhile: returns
    /// the one kept, and its generation.
    pub fn insert(&self, key: &K, client: C) -> (C, u64) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let _section = fork::section();
        let mut clients = self.lock();
        let kept = clients
            .get_or_insert_with(HashMap::new)
            .entry(key.clone())
            .or_insert(Cached {
                pid: fork::pid(),
                generation,
                client,
            });
        (kept.client.clone(), kept.generation)
    }

    /// Drops the client a failed request went to, if it is still the one kept, so
    /// the next call makes a new one. A failure before any client was used has
    /// none to drop.
    pub fn forget(&self, key: &K, generation: Option<u64>) {
        let _section = fork::section();
        let mut clients = self.lock();
        if let Some(map) = clients.as_mut() {
            let current = map.get(key).map(|c| c.generation);
            if generation.is_some() && current == generation {
                map.remove(key);
            }
        }
    }
}

/// A failed request to a network store, before it is worded for the caller.
pub enum Failure {
    /// The request did not reach the store: no connection could be made, or (an
    /// etcd member without a leader) it was refused unread. `answered` is true
    /// when the server did answer: it is up.
    Unsent { reason: String, answered: bool },
    /// The connection failed, or the server gave up, after the request was sent:
    /// a write may or may not have been applied. `answered` as above.
    Lost { reason: String, answered: bool },
    /// The store refused the credentials; `advice` says what to do.
    Auth { reason: String, advice: String },
    /// The store answered with an error.
    Refused(String),
    /// The auth settings are unusable (a file that cannot be read, ...).
    Settings(String),
}

/// A network store, as its errors name it.
pub struct Remote {
    /// Its URL, safe to show.
    pub url: String,
    /// What it is: "etcd", "Consul".
    pub service: &'static str,
    /// Where it is: its endpoints.
    pub at: String,
    /// Its URL scheme with TLS: "etcd+ssl", "consul+ssl".
    pub tls_scheme: &'static str,
}

impl Remote {
    /// The store answered `op` with an error, or with what libkv cannot read.
    pub fn failed(&self, op: &'static str, key: &str, reason: impl Display) -> Error {
        Error::Store {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// A failed request, worded: what failed, and what to do.
    pub fn fail(&self, op: &'static str, key: &str, failure: Failure) -> Error {
        let connection = |reason: String| Error::Connection {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            reason,
        };
        let check = format!(
            "check that {} is up at {} and, for {}, the TLS settings",
            self.service, self.at, self.tls_scheme
        );
        match failure {
            Failure::Unsent { reason, .. } => connection(format!("{reason}; {check}")),
            Failure::Lost { reason, .. } if Op::named(op).is_some_and(Op::writes) => {
                connection(format!(
                    "{reason}; the connection failed while {} had the request, so {op} may or \
                     may not have been applied: read the key before trying again",
                    self.service
                ))
            }
            Failure::Lost { reason, .. } => connection(format!("{reason}; {check}")),
            Failure::Auth { reason, advice } => Error::Auth {
                op,
                key: key.to_owned(),
                store: self.url.clone(),
                reason: format!("{reason}; {advice}"),
            },
            Failure::Refused(reason) => self.failed(
                op,
                key,
                format_args!("{} refused it: {reason}", self.service),
            ),
            Failure::Settings(reason) => {
                Error::InvalidArgument(format!("{op} {key} on {}: {reason}", self.url))
            }
        }
    }

    /// Runs `request` on this process's runtime for at most `timeout`. `sent` says,
    /// when the time runs out, whether the request had gone out (a write may then
    /// have been applied); `timed_out` runs then.
    pub fn run<T>(
        &self,
        op: &'static str,
        key: &str,
        timeout: Duration,
        sent: &Cell<bool>,
        request: impl Future<Output = std::result::Result<T, Failure>>,
        timed_out: impl FnOnce(),
    ) -> Result<T> {
        let outcome = block_on_timeout(timeout, request)
            .map_err(|e| self.failed(op, key, format_args!("cannot start the I/O runtime: {e}")))?;
        match outcome {
            Some(Ok(value)) => Ok(value),
            Some(Err(failure)) => Err(self.fail(op, key, failure)),
            None => {
                timed_out();
                Err(Error::Timeout {
                    op,
                    key: key.to_owned(),
                    store: self.url.clone(),
                    after: timeout,
                    waiting: if sent.get() {
                        Waiting::Answer
                    } else {
                        Waiting::Store
                    },
                })
            }
        }
    }
}

/// A message and the errors under it, "outer: inner: innermost", without repeats
/// and without tonic's bare "transport error".
pub fn describe(message: Option<&str>, source: Option<&(dyn StdError + 'static)>) -> String {
    let mut texts: Vec<String> = message.map(str::to_owned).into_iter().collect();
    let mut next = source;
    while let Some(err) = next {
        texts.push(err.to_string());
        next = err.source();
    }
    let mut parts: Vec<&str> = Vec::new();
    for full in &texts {
        let text = full
            .trim_start_matches("transport error")
            .trim_start_matches(": ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// The TLS files of the auth settings `ca_file`, `cert_file` and `key_file`, read
/// and checked before connecting: a wrong file is a clear error about the setting,
/// not a failed handshake. Errors name the setting and the file, never what is in
/// it.
pub struct PemFile {
    name: &'static str,
    path: String,
    pub bytes: Vec<u8>,
}

impl PemFile {
    pub fn read(name: &'static str, path: &str) -> Result<PemFile, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {name} {path}: {e}"))?;
        Ok(PemFile {
            name,
            path: path.to_owned(),
            bytes,
        })
    }

    /// The certificates in the file; at least one.
    pub fn certs(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{} {} is not PEM: {e}", self.name, self.path))?;
        if certs.is_empty() {
            return Err(format!(
                "{} {} holds no PEM certificate",
                self.name, self.path
            ));
        }
        Ok(certs)
    }

    /// The private key in the file.
    pub fn key(&self) -> Result<PrivateKeyDer<'static>, String> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| {
            format!(
                "{} {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                self.name, self.path
            )
        })
    }
}

/// `entries` cut into runs of at most `ops` entries and `bytes` bytes of keys and
/// values (a larger entry alone).
pub(crate) fn batches<T: AsRef<[u8]>>(
    entries: &[(Key, T)],
    ops: usize,
    bytes: usize,
) -> Vec<&[(Key, T)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, (key, value)) in entries.iter().enumerate() {
        let len = key.as_str().len() + value.as_ref().len();
        if i > start && (i - start == ops || size + len > bytes) {
            out.push(&entries[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_ops_entries_and_bytes_of_keys_and_values() {
        let k = |s: &str| Key::new(s).unwrap();
        let entries = vec![
            (k("/a"), vec![0u8; 3]),
            (k("/b"), vec![0u8; 3]),
            (k("/c"), vec![0u8; 3]),
            (k("/big"), vec![0u8; 100]),
            (k("/d"), vec![0u8; 1]),
        ];
        let sizes = |ops, bytes| -> Vec<usize> {
            batches(&entries, ops, bytes)
                .iter()
                .map(|b| b.len())
                .collect()
        };
        // Each of /a, /b, /c is 2 + 3 bytes: two fit in 10, the third does not.
        assert_eq!(sizes(128, 10), [2, 1, 1, 1]);
        assert_eq!(sizes(2, 1000), [2, 2, 1]);
        assert_eq!(sizes(128, 1000), [5]);
        assert!(batches(&entries[..0], 128, 1000).is_empty());
    }
}
