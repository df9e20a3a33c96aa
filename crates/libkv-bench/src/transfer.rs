//! `--transfer`: libkv's bulk transfer (`libkv_core::transfer`, what `libkv cp`
//! and `libkv dump` run) against raw etcd-client floors, all in one run.
//!
//! The source is a file store holding N keys below `/bench` (`/bench/k000001`
//! holding `value-1`, ...), written once with libkv and reused (it is kept when it
//! already holds exactly those keys). Each repetition then measures, on fresh
//! prefixes of one etcd, in an order that turns from one repetition to the next:
//!
//! - copy `raw-put` (floor 1): the same N keys and values put by a raw client,
//!   one `put` each, from as many tasks at once as libkv's copy has writers;
//! - copy `raw-txn` (floor 2): the same in transactions of 128 puts, as many at
//!   once: what libkv's batching alone buys;
//! - copy `libkv`: `transfer::copy` from the file store, default `Options`;
//! - source `libkv-scan`: the file store's `Store::scan` alone, which the copy
//!   does before its first write (the file store reads every key at once);
//! - copy `libkv-mem`: `transfer::copy` of the same keys from a `mock://` store
//!   in memory, whose read costs next to nothing: libkv's writing alone;
//!
//! and then, on the keys the last copy wrote (each copy's keys are deleted and
//! etcd compacted before the next copy, so every copy starts on the same store):
//!
//! - dump `raw-range` (the floor): a raw paged range read, pages of 1,000 keys,
//!   each starting just after the last key of the one before, every key and value
//!   copied out;
//! - dump `libkv`: `transfer::dump` into `std::io::sink()`;
//! - dump `libkv-scan`: etcd's `Store::scan` alone, the dump without its JSON.
//!
//! Prints a JSON line per measurement (`"transfer":"sample"`), then per
//! measurement the median of the repetitions (`"median"`), then the ratios
//! (`"ratio"`, of the medians, with each repetition's own ratio beside).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libkv_core::transfer::{self, Options, Silent};
use libkv_core::{open, Key, OpenOptions, Page, Store};
use serde::Serialize;

use crate::floor::etcd_transfer::{Entries, Raw};
use crate::{check, Result};

/// The directory every key is below, in the source and in each copy.
const DIR: &str = "/bench";
/// The puts of one transaction of floor 2: those of one of libkv's etcd
/// transactions (etcd's default `--max-txn-ops`).
const TXN_PUTS: usize = 128;

pub struct Config {
    /// `etcd://HOST:PORT[/PREFIX]`, as given.
    pub url: String,
    /// Parsed from it, for the raw client.
    pub endpoints: Vec<String>,
    /// `""` or `/PREFIX`.
    pub prefix: String,
    /// `file:///ROOT` of the source store.
    pub source: String,
    pub keys: usize,
    pub repeat: usize,
}

/// The writers of the copy, each below a directory of its own in a repetition's
/// prefix. The names have the same length, so every writer's etcd keys do too.
#[derive(Clone, Copy)]
enum Writer {
    RawPut,
    RawTxn,
    Libkv,
    LibkvMem,
}

impl Writer {
    fn layer(self) -> &'static str {
        match self {
            Writer::RawPut => "raw-put",
            Writer::RawTxn => "raw-txn",
            Writer::Libkv => "libkv",
            Writer::LibkvMem => "libkv-mem",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Writer::RawPut => "fl1",
            Writer::RawTxn => "fl2",
            Writer::Libkv => "lkv",
            Writer::LibkvMem => "lkm",
        }
    }
}

#[derive(Clone, Copy)]
enum Reader {
    RawRange,
    LibkvDump,
    LibkvScan,
}

#[derive(Serialize)]
struct SampleLine<'a> {
    transfer: &'static str,
    op: &'a str,
    layer: &'a str,
    rep: usize,
    keys: usize,
    secs: f64,
    keys_per_sec: f64,
}

#[derive(Serialize)]
struct MedianLine<'a> {
    transfer: &'static str,
    op: &'a str,
    layer: &'a str,
    keys: usize,
    reps: usize,
    secs: f64,
    min_secs: f64,
    max_secs: f64,
    keys_per_sec: f64,
}

#[derive(Serialize)]
struct RatioLine<'a> {
    transfer: &'static str,
    name: &'a str,
    of: &'a str,
    value: f64,
    per_rep: Vec<f64>,
}

#[derive(Serialize)]
struct SetupLine<'a> {
    transfer: &'static str,
    op: &'static str,
    source: &'a str,
    keys: usize,
    built: bool,
    secs: f64,
}

/// Seconds per (op, layer), one per repetition, in the order first measured.
#[derive(Default)]
struct Samples {
    order: Vec<(&'static str, &'static str)>,
    secs: BTreeMap<(&'static str, &'static str), Vec<f64>>,
}

impl Samples {
    fn add(
        &mut self,
        op: &'static str,
        layer: &'static str,
        rep: usize,
        keys: usize,
        took: Duration,
    ) -> Result {
        let secs = took.as_secs_f64();
        let line = SampleLine {
            transfer: "sample",
            op,
            layer,
            rep,
            keys,
            secs: round(secs, 4),
            keys_per_sec: round(keys as f64 / secs, 1),
        };
        println!("{}", serde_json::to_string(&line)?);
        eprintln!("libkv-bench: transfer rep {rep}: {op} {layer}: {secs:.3} s");
        if !self.secs.contains_key(&(op, layer)) {
            self.order.push((op, layer));
        }
        self.secs.entry((op, layer)).or_default().push(secs);
        Ok(())
    }

    fn of(&self, op: &'static str, layer: &'static str) -> &[f64] {
        self.secs.get(&(op, layer)).map_or(&[], Vec::as_slice)
    }
}

/// The name below `DIR` of key `i` (from 1), zero-padded so that names sort as
/// numbers, and its value.
fn entry(i: usize, width: usize) -> (String, Vec<u8>) {
    (format!("k{i:0width$}"), format!("value-{i}").into_bytes())
}

fn width(keys: usize) -> usize {
    keys.to_string().len().max(6)
}

/// The source's entries, as its listing has them.
fn expected(keys: usize) -> Vec<(String, Vec<u8>)> {
    let width = width(keys);
    (1..=keys).map(|i| entry(i, width)).collect()
}

/// The source file store, holding exactly the benchmark's keys below `DIR`:
/// kept when it already does, else emptied and written with `put_many`.
fn make_source(config: &Config) -> Result<Arc<dyn Store>> {
    let store = open(&config.source, &OpenOptions::default())?;
    check(
        store.provider() == "file",
        "--source must be a file:///ROOT store",
    )?;
    let dir = Key::dir(DIR)?;
    let want = expected(config.keys);
    let started = Instant::now();
    let built = store.list(&dir)? != want;
    if built {
        eprintln!(
            "libkv-bench: transfer: writing the source, {} keys in {} (each write fsyncs: minutes for 100,000)",
            config.keys, config.source
        );
        store.deletetree(&dir)?;
        let entries: Vec<(Key, Vec<u8>)> = want
            .into_iter()
            .map(|(rel, value)| Ok((Key::new(&dir.join(&rel))?, value)))
            .collect::<Result<_>>()?;
        let tenth = (entries.len() / 10).max(1);
        for (n, chunk) in entries.chunks(tenth).enumerate() {
            store.put_many(chunk)?;
            eprintln!(
                "libkv-bench: transfer: source {}%, {:.1} s",
                ((n + 1) * tenth * 100 / entries.len()).min(100),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let line = SetupLine {
        transfer: "setup",
        op: "source",
        source: &config.source,
        keys: config.keys,
        built,
        secs: round(started.elapsed().as_secs_f64(), 3),
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(store)
}

/// A `mock://` store holding the source's keys, in memory.
fn memory_source(keys: usize) -> Result<Arc<dyn Store>> {
    let store = open("mock://libkv-bench-transfer", &OpenOptions::default())?;
    let dir = Key::dir(DIR)?;
    store.deletetree(&dir)?;
    let entries: Vec<(Key, Vec<u8>)> = expected(keys)
        .into_iter()
        .map(|(rel, value)| Ok((Key::new(&dir.join(&rel))?, value)))
        .collect::<Result<_>>()?;
    store.put_many(&entries)?;
    Ok(store)
}

/// A libkv store on the etcd, below `sub` of the run's prefix, its connection made.
fn libkv_etcd(config: &Config, sub: &str) -> Result<Arc<dyn Store>> {
    let url = format!("{}/{sub}", config.url.trim_end_matches('/'));
    let store = open(&url, &OpenOptions::default())?;
    store.exists(&Key::new("/connected")?)?;
    Ok(store)
}

/// Every page of `store`'s scan of `DIR`, looked at and dropped; the keys seen.
fn scan_all(store: &dyn Store, page: usize) -> Result<(Duration, usize)> {
    let dir = Key::dir(DIR)?;
    let mut seen = 0;
    let started = Instant::now();
    store.scan(&dir, page, &mut |page: Page| {
        seen += page.entries.len();
        black_box(page);
        Ok(())
    })?;
    Ok((started.elapsed(), seen))
}

pub fn run(config: &Config) -> Result {
    let options = Options::default();
    let keys = config.keys;
    let source = make_source(config)?;
    let in_memory = memory_source(keys)?;
    let raw = Raw::connect(&config.endpoints)?;
    raw.clean(&format!("{}/", config.prefix))?;
    let dir = Key::dir(DIR)?;
    let mut samples = Samples::default();
    eprintln!(
        "libkv-bench: transfer: {keys} keys, {} repetitions, concurrency {}, batch {}, page {}",
        config.repeat, options.concurrency, options.batch, options.page
    );

    for rep in 1..=config.repeat {
        // The order turns from one repetition to the next, so that no writer is
        // always the first after the source's read, or the last.
        let mut writers = [
            Writer::RawPut,
            Writer::RawTxn,
            Writer::Libkv,
            Writer::LibkvMem,
        ];
        let turn = (rep - 1) % writers.len();
        writers.rotate_left(turn);
        let (took, seen) = scan_all(&*source, options.page)?;
        check(seen == keys, "the source does not hold every key")?;
        samples.add("source", "libkv-scan", rep, keys, took)?;
        for (n, &writer) in writers.iter().enumerate() {
            let sub = format!("r{rep}/{}", writer.dir());
            let base = format!("{}/{sub}", config.prefix);
            let took = match writer {
                Writer::RawPut | Writer::RawTxn => {
                    let width = width(keys);
                    let entries: Entries = Arc::new(
                        (1..=keys)
                            .map(|i| {
                                let (rel, value) = entry(i, width);
                                (format!("{base}{DIR}/{rel}"), value)
                            })
                            .collect(),
                    );
                    match writer {
                        Writer::RawPut => raw.put_each(&entries, options.concurrency)?,
                        _ => raw.put_txns(&entries, TXN_PUTS, options.concurrency)?,
                    }
                }
                Writer::Libkv | Writer::LibkvMem => {
                    let from = match writer {
                        Writer::Libkv => &*source,
                        _ => &*in_memory,
                    };
                    let dst = libkv_etcd(config, &sub)?;
                    let started = Instant::now();
                    let copied = transfer::copy(from, &*dst, &dir, options, &Silent)?;
                    let took = started.elapsed();
                    check(
                        copied.written == keys as u64 && copied.unchanged == 0,
                        "libkv's copy did not write every key",
                    )?;
                    took
                }
            };
            check(
                raw.count(&format!("{base}{DIR}/"))? == keys,
                "a copy left etcd without every key",
            )?;
            samples.add("copy", writer.layer(), rep, keys, took)?;
            if n + 1 < writers.len() {
                raw.clean(&format!("{base}/"))?;
            }
        }

        // The dumps read what the last copy wrote.
        let last = writers[writers.len() - 1];
        let sub = format!("r{rep}/{}", last.dir());
        let base = format!("{}/{sub}", config.prefix);
        let store = libkv_etcd(config, &sub)?;
        let mut readers = [Reader::RawRange, Reader::LibkvDump, Reader::LibkvScan];
        let turn = (rep - 1) % readers.len();
        readers.rotate_left(turn);
        for reader in readers {
            let (layer, (took, read)) = match reader {
                Reader::RawRange => (
                    "raw-range",
                    raw.read_paged(&format!("{base}{DIR}/"), options.page)?,
                ),
                Reader::LibkvDump => {
                    let started = Instant::now();
                    let dumped =
                        transfer::dump(&*store, &dir, &mut std::io::sink(), options, &Silent)?;
                    ("libkv", (started.elapsed(), dumped as usize))
                }
                Reader::LibkvScan => ("libkv-scan", scan_all(&*store, options.page)?),
            };
            check(read == keys, "a read of etcd did not see every key")?;
            samples.add("dump", layer, rep, keys, took)?;
        }
        raw.clean(&format!("{base}/"))?;
    }

    report(&samples, keys, config.repeat)
}

fn report(samples: &Samples, keys: usize, reps: usize) -> Result {
    for &(op, layer) in &samples.order {
        let secs = samples.of(op, layer);
        let mid = median(secs);
        let line = MedianLine {
            transfer: "median",
            op,
            layer,
            keys,
            reps,
            secs: round(mid, 4),
            min_secs: round(secs.iter().copied().fold(f64::INFINITY, f64::min), 4),
            max_secs: round(secs.iter().copied().fold(0.0, f64::max), 4),
            keys_per_sec: round(keys as f64 / mid, 1),
        };
        println!("{}", serde_json::to_string(&line)?);
    }
    let copy = samples.of("copy", "libkv");
    let ratios: [(&str, &str, &[f64], &[f64]); 6] = [
        (
            "copy/raw-put",
            "libkv copy / floor 1 (raw single puts, same concurrency)",
            copy,
            samples.of("copy", "raw-put"),
        ),
        (
            "copy/raw-txn",
            "libkv copy / floor 2 (raw transactions of 128, same concurrency)",
            copy,
            samples.of("copy", "raw-txn"),
        ),
        (
            "copy-mem/raw-txn",
            "libkv copy from memory (mock://) / floor 2",
            samples.of("copy", "libkv-mem"),
            samples.of("copy", "raw-txn"),
        ),
        (
            "raw-txn/raw-put",
            "floor 2 / floor 1 (what batching alone buys)",
            samples.of("copy", "raw-txn"),
            samples.of("copy", "raw-put"),
        ),
        (
            "dump/raw-range",
            "libkv dump / raw paged range read",
            samples.of("dump", "libkv"),
            samples.of("dump", "raw-range"),
        ),
        (
            "dump-scan/raw-range",
            "libkv etcd scan alone (the dump without JSON) / raw paged range read",
            samples.of("dump", "libkv-scan"),
            samples.of("dump", "raw-range"),
        ),
    ];
    for (name, of, top, bottom) in ratios {
        let line = RatioLine {
            transfer: "ratio",
            name,
            of,
            value: round(median(top) / median(bottom), 3),
            per_rep: top
                .iter()
                .zip(bottom)
                .map(|(t, b)| round(t / b, 3))
                .collect(),
        };
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(())
}

/// The median of non-empty samples (the mean of the middle two for an even count).
fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}
