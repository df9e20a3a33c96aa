//! The floors of `--transfer` (see `crate::transfer`): bulk writes and a paged
//! read with a raw `etcd_client` client, connected once, on a current-thread tokio
//! runtime (see `super::runtime`). The concurrent writers are tokio tasks on that
//! runtime, all on the client's one connection, as libkv's writer threads share
//! its one connection.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, DeleteOptions, GetOptions, KvClient, Txn, TxnOp};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use crate::Result;

/// Keys with their values, as etcd holds them (the store's prefix included).
pub type Entries = Arc<Vec<(String, Vec<u8>)>>;

/// A raw client of one etcd and the runtime it waits on.
pub struct Raw {
    runtime: Runtime,
    kv: KvClient,
}

impl Raw {
    pub fn connect(endpoints: &[String]) -> Result<Raw> {
        let runtime = super::runtime()?;
        let client = runtime.block_on(Client::connect(endpoints, None))?;
        let kv = client.kv_client();
        Ok(Raw { runtime, kv })
    }

    /// Floor 1: every entry by a single `put`, `concurrency` tasks at once, each
    /// taking the next entry when its last `put` has been answered.
    pub fn put_each(&self, entries: &Entries, concurrency: usize) -> Result<Duration> {
        let all = Arc::clone(entries);
        self.in_tasks(concurrency, entries.len(), 1, move |mut kv, range| {
            let entries = Arc::clone(&all);
            async move {
                let (key, value) = &entries[range.start];
                kv.put(key.as_str(), value.as_slice(), None).await?;
                Ok(kv)
            }
        })
    }

    /// Floor 2: the entries in transactions of `batch` puts, `concurrency`
    /// transactions at once, as libkv's `put_many` sends them.
    pub fn put_txns(
        &self,
        entries: &Entries,
        batch: usize,
        concurrency: usize,
    ) -> Result<Duration> {
        let all = Arc::clone(entries);
        self.in_tasks(concurrency, entries.len(), batch, move |mut kv, range| {
            let entries = Arc::clone(&all);
            async move {
                let puts: Vec<TxnOp> = entries[range]
                    .iter()
                    .map(|(key, value)| TxnOp::put(key.as_str(), value.as_slice(), None))
                    .collect();
                kv.txn(Txn::new().and_then(puts)).await?;
                Ok(kv)
            }
        })
    }

    /// Runs `request` on every run of `step` of the `len` entries, `concurrency`
    /// tasks at once, each taking the next run when its last is answered; the time
    /// from the first request sent to the last answered.
    fn in_tasks<F, Fut>(
        &self,
        concurrency: usize,
        len: usize,
        step: usize,
        request: F,
    ) -> Result<Duration>
    where
        F: Fn(KvClient, std::ops::Range<usize>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<KvClient, etcd_client::Error>> + Send,
    {
        self.runtime.block_on(async {
            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut tasks = JoinSet::new();
            for _ in 0..concurrency.max(1) {
                let (next, request, mut kv) = (Arc::clone(&next), request.clone(), self.kv.clone());
                tasks.spawn(async move {
                    loop {
                        let start = next.fetch_add(step, Ordering::Relaxed);
                        if start >= len {
                            return Ok::<_, etcd_client::Error>(());
                        }
                        kv = request(kv, start..(start + step).min(len)).await?;
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            Ok(started.elapsed())
        })
    }

    /// The dump's floor: every key below `dir` (which ends with `/`) and its value,
    /// read in pages of `page` keys, each page starting just after the last key of
    /// the one before. Returns the time and the number of keys read.
    pub fn read_paged(&self, dir: &str, page: usize) -> Result<(Duration, usize)> {
        let mut kv = self.kv.clone();
        self.runtime.block_on(async {
            let end = range_end(dir);
            let started = Instant::now();
            let mut start = dir.as_bytes().to_vec();
            let mut read = 0;
            loop {
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(page as i64);
                let resp = kv.get(start, Some(options)).await?;
                let mut entries = Vec::with_capacity(resp.kvs().len());
                for kv in resp.kvs() {
                    let name = kv.key_str()?.strip_prefix(dir).unwrap_or_default();
                    entries.push((name.to_owned(), kv.value().to_vec()));
                }
                read += entries.len();
                let Some(last) = resp.kvs().last().filter(|_| resp.more()) else {
                    black_box(entries);
                    return Ok((started.elapsed(), read));
                };
                start = last.key().to_vec();
                start.push(0);
                black_box(entries);
            }
        })
    }

    /// How many keys there are below `dir`.
    pub fn count(&self, dir: &str) -> Result<usize> {
        let mut kv = self.kv.clone();
        let options = GetOptions::new().with_prefix().with_count_only();
        let resp = self.runtime.block_on(kv.get(dir, Some(options)))?;
        Ok(resp.count() as usize)
    }

    /// Deletes every key below `dir` and compacts etcd's history up to then, so
    /// that the next measurement starts on a store as small as the first's.
    pub fn clean(&self, dir: &str) -> Result {
        let mut kv = self.kv.clone();
        self.runtime.block_on(async {
            let resp = kv
                .delete(dir, Some(DeleteOptions::new().with_prefix()))
                .await?;
            let revision = resp.header().map_or(0, |h| h.revision());
            // Nothing deleted, no new revision: etcd refuses to compact again at
            // the revision it last compacted at.
            if resp.deleted() > 0 {
                let physical = CompactionOptions::new().with_physical();
                kv.compact(revision, Some(physical)).await?;
            }
            Ok(())
        })
    }
}

/// The end of etcd's range for every key starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
