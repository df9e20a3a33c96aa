//! Every key below a directory at once, as stored bytes: copied from one store to
//! another, compared, dumped as JSON lines and loaded back. The `libkv` command's
//! work.
//!
//! Bytes travel as they are stored, never decoded and encoded again, so every
//! type, every envelope and every file another tool wrote arrives exactly. Writes
//! go in batches ([`Store::put_many`]) from several threads at once, as the
//! source's pages arrive ([`Store::scan`]: etcd reads page by page, other stores
//! read their listing whole first).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::{Page, Store};

/// Told how the work goes, from any thread.
pub trait Progress: Sync {
    /// How many keys the work has in all, once it is known.
    fn total(&self, _total: u64) {}
    /// `n` more keys done.
    fn advance(&self, _n: u64) {}
}

/// No one to tell.
pub struct Silent;

impl Progress for Silent {}

/// How the work is cut up.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Batches written at once.
    pub concurrency: usize,
    /// Keys per batch ([`Store::put_many`] cuts them further as its store needs).
    pub batch: usize,
    /// Keys per page read.
    pub page: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 8,
            batch: 512,
            page: 1000,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Keys written to the destination.
    pub written: u64,
    /// Keys the destination already held with the same bytes, left alone.
    pub unchanged: u64,
}

/// Copies every key below `dir` from `src` to the same key in `dst`. A key the
/// destination already holds with the same bytes is not written again, so a copy
/// run again after an interruption writes only what is missing or different, and
/// leaves the sequence of every key already copied as it was. Keys only the
/// destination holds stay.
pub fn copy(
    src: &dyn Store,
    dst: &dyn Store,
    dir: &Key,
    options: Options,
    progress: &dyn Progress,
) -> Result<Copied> {
    let held = read_all(dst, dir, options.page)?;
    let mut copied = Copied::default();
    let batch_size = options.batch.max(1);
    with_writers(dst, options.concurrency, progress, |send| {
        let mut batch = Vec::with_capacity(batch_size);
        let mut told = false;
        src.scan(dir, options.page, &mut |page: Page| {
            if !told {
                progress.total(page.remaining);
                told = true;
            }
            for (rel, value) in page.entries {
                if held.get(&rel) == Some(&value) {
                    copied.unchanged += 1;
                    progress.advance(1);
                    continue;
                }
                batch.push((Key::new(&dir.join(&rel))?, value));
                if batch.len() == batch_size {
                    copied.written += batch.len() as u64;
                    send(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(batch_size),
                    ))?;
                }
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            copied.written += batch.len() as u64;
            send(batch)?;
        }
        Ok(())
    })?;
    Ok(copied)
}

/// How the keys below a directory of two stores compare. Keys are full names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Keys both hold with the same bytes.
    pub same: u64,
    /// Keys the source holds and the destination does not.
    pub missing: Vec<String>,
    /// Keys both hold, with different bytes.
    pub different: Vec<String>,
    /// Keys only the destination holds.
    pub extra: Vec<String>,
}

impl Comparison {
    /// Whether the destination holds every key of the source, byte for byte.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.different.is_empty()
    }
}

/// Compares every key below `dir` of `src` with the same key of `dst`, byte for
/// byte.
pub fn compare(
    src: &dyn Store,
    dst: &dyn Store,
    dir: &Key,
    options: Options,
    progress: &dyn Progress,
) -> Result<Comparison> {
    let mut held = read_all(dst, dir, options.page)?;
    let mut comparison = Comparison::default();
    let mut told = false;
    src.scan(dir, options.page, &mut |page: Page| {
        if !told {
            progress.total(page.remaining);
            told = true;
        }
        let n = page.entries.len() as u64;
        for (rel, value) in page.entries {
            match held.remove(&rel) {
                Some(other) if other == value => comparison.same += 1,
                Some(_) => comparison.different.push(dir.join(&rel)),
                None => comparison.missing.push(dir.join(&rel)),
            }
        }
        progress.advance(n);
        Ok(())
    })?;
    comparison.extra = held.into_keys().map(|rel| dir.join(&rel)).collect();
    comparison.extra.sort();
    Ok(comparison)
}

/// One line of a dump: the key's full name and its bytes, as text when they are
/// UTF-8, else in base64.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

/// Writes every key below `dir` of `src` to `out`, one JSON object per line, in
/// key order: `{"key":"/app/port","value":"{\"libkv\":1,\"value\":8080}"}`, or
/// `{"key":...,"base64":"..."}` for bytes that are not UTF-8. Returns the number
/// of keys.
pub fn dump(
    src: &dyn Store,
    dir: &Key,
    out: &mut dyn Write,
    options: Options,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut count = 0;
    let mut told = false;
    src.scan(dir, options.page, &mut |page: Page| {
        if !told {
            progress.total(page.remaining);
            told = true;
        }
        let n = page.entries.len() as u64;
        for (rel, value) in page.entries {
            let key = dir.join(&rel);
            let line = match String::from_utf8(value) {
                Ok(text) => Line {
                    key,
                    value: Some(text),
                    base64: None,
                },
                Err(e) => Line {
                    key,
                    value: None,
                    base64: Some(BASE64.encode(e.into_bytes())),
                },
            };
            serde_json::to_writer(&mut *out, &line)
                .map_err(std::io::Error::from)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|e| output_failed(&e))?;
        }
        count += n;
        progress.advance(n);
        Ok(())
    })?;
    out.flush().map_err(|e| output_failed(&e))?;
    Ok(count)
}

/// Puts every key of a dump (see [`dump`]) read from `input` into `dst`. A line
/// that is not one is refused by its number, before anything after it is written.
/// Returns the number of keys.
pub fn load(
    dst: &dyn Store,
    input: &mut dyn BufRead,
    options: Options,
    progress: &dyn Progress,
) -> Result<u64> {
    let batch_size = options.batch.max(1);
    let mut count = 0;
    with_writers(dst, options.concurrency, progress, |send| {
        let mut batch = Vec::with_capacity(batch_size);
        for (n, line) in input.lines().enumerate() {
            let line = line.map_err(|e| {
                Error::InvalidArgument(format!("cannot read the dump at line {}: {e}", n + 1))
            })?;
            if line.trim().is_empty() {
                continue;
            }
            batch.push(parse_line(&line, n + 1)?);
            if batch.len() == batch_size {
                count += batch.len() as u64;
                send(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(batch_size),
                ))?;
            }
        }
        if !batch.is_empty() {
            count += batch.len() as u64;
            send(batch)?;
        }
        Ok(())
    })?;
    Ok(count)
}

fn parse_line(line: &str, number: usize) -> Result<(Key, Vec<u8>)> {
    let bad = |reason: String| {
        Error::InvalidArgument(format!(
            "line {number} of the dump is not a libkv dump line ({reason}): lines look like \
             {{\"key\":\"/app/port\",\"value\":\"8080\"}} or {{\"key\":\"/k\",\"base64\":\"AP8=\"}}"
        ))
    };
    let parsed: Line = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let bytes = match (parsed.value, parsed.base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map_err(|e| bad(format!("base64: {e}")))?,
        _ => return Err(bad("it needs one of value and base64".into())),
    };
    Ok((Key::new(&parsed.key)?, bytes))
}

fn output_failed(e: &std::io::Error) -> Error {
    Error::InvalidArgument(format!("cannot write the dump: {e}"))
}

/// Every key below `dir` with its bytes, by name relative to `dir`.
fn read_all(store: &dyn Store, dir: &Key, page: usize) -> Result<HashMap<String, Vec<u8>>> {
    let mut all = HashMap::new();
    store.scan(dir, page, &mut |page: Page| {
        all.extend(page.entries);
        Ok(())
    })?;
    Ok(all)
}

type Batch = Vec<(Key, Vec<u8>)>;

/// Runs `produce`, whose batches `concurrency` threads write to `dst` as they
/// come. The first write that fails stops the work: `produce`'s next send fails,
/// and that write's error is the answer.
fn with_writers<F>(
    dst: &dyn Store,
    concurrency: usize,
    progress: &dyn Progress,
    produce: F,
) -> Result<()>
where
    F: FnOnce(&dyn Fn(Batch) -> Result<()>) -> Result<()>,
{
    let concurrency = concurrency.max(1);
    let (tx, rx) = mpsc::sync_channel::<Batch>(concurrency);
    let rx = Mutex::new(rx);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let produced = thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| loop {
                let batch = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                    Ok(batch) => batch,
                    Err(_) => return,
                };
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                match dst.put_many(&batch) {
                    Ok(()) => {
                        written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        progress.advance(batch.len() as u64);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
        let tx = tx;
        let send = |batch: Batch| -> Result<()> {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::InvalidArgument("stopped: a write failed".into()));
            }
            tx.send(batch)
                .map_err(|_| Error::InvalidArgument("stopped: a write failed".into()))
        };
        let produced = produce(&send);
        drop(tx);
        produced
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    produced
}
