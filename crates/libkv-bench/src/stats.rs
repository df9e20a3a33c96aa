//! Timing single operations and summing them up as one JSON line.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Result;

/// One layer of one store being measured.
pub struct Bench {
    pub store: String,
    pub layer: String,
    pub iterations: usize,
    pub warmup: usize,
    /// Operations per timed sample: 1, or more for operations shorter than what
    /// reading the clock costs (the mock store's), each sample then being the
    /// batch's time divided by its size.
    pub batch: usize,
    /// Whether the printed line carries every sample, for a caller that pools the
    /// samples of several runs.
    pub samples: bool,
    /// Untimed busy work between two timed operations (see [`Gap`]).
    pub gap: Gap,
}

/// The JSON line printed per operation.
#[derive(Serialize)]
struct Line<'a> {
    store: &'a str,
    layer: &'a str,
    op: &'a str,
    n: usize,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    batch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    samples_us: Option<Vec<f64>>,
}

impl Bench {
    /// Runs `op` `warmup` times unrecorded, then `iterations` times, timed in
    /// batches of `batch` (one sample per batch), and prints the summary.
    pub fn run(&self, name: &str, mut op: impl FnMut() -> Result) -> Result {
        for _ in 0..self.warmup {
            op().map_err(|e| self.failed(name, e))?;
        }
        let mut samples = Vec::with_capacity(self.iterations / self.batch);
        for _ in 0..self.iterations / self.batch {
            self.gap.fill();
            let start = Instant::now();
            for _ in 0..self.batch {
                op().map_err(|e| self.failed(name, e))?;
            }
            samples.push(start.elapsed() / self.batch as u32);
        }
        self.report(name, samples)
    }

    /// `run` for an operation that is awaited, inside the caller's `block_on`.
    pub async fn run_async(&self, name: &str, mut op: impl AsyncFnMut() -> Result) -> Result {
        for _ in 0..self.warmup {
            op().await.map_err(|e| self.failed(name, e))?;
        }
        let mut samples = Vec::with_capacity(self.iterations / self.batch);
        for _ in 0..self.iterations / self.batch {
            self.gap.fill();
            let start = Instant::now();
            for _ in 0..self.batch {
                op().await.map_err(|e| self.failed(name, e))?;
            }
            samples.push(start.elapsed() / self.batch as u32);
        }
        self.report(name, samples)
    }

    fn failed(&self, op: &str, e: Box<dyn std::error::Error>) -> Box<dyn std::error::Error> {
        format!("{} {} {op}: {e}", self.store, self.layer).into()
    }

    fn report(&self, op: &str, mut samples: Vec<Duration>) -> Result {
        let us = |d: Duration| round(d.as_secs_f64() * 1e6, 3);
        let raw = self
            .samples
            .then(|| samples.iter().map(|&d| us(d)).collect());
        samples.sort_unstable();
        let n = samples.len();
        let total: Duration = samples.iter().sum();
        let line = Line {
            store: &self.store,
            layer: &self.layer,
            op,
            n,
            ops_per_sec: round(n as f64 / total.as_secs_f64(), 1),
            p50_us: us(percentile(&samples, 0.50)),
            p99_us: us(percentile(&samples, 0.99)),
            mean_us: round(total.as_secs_f64() * 1e6 / n as f64, 3),
            batch: self.batch,
            samples_us: raw,
        };
        println!("{}", serde_json::to_string(&line)?);
        Ok(())
    }
}

/// What runs between two timed operations: nothing, or busy work for a while, as
/// a catalog compilation evaluates Puppet code between two function calls. The
/// work allocates and frees small buffers and writes across a scratch area larger
/// than the CPU's caches, so the operation that follows finds the caches and
/// branch predictors in the state an interpreter leaves them in. With it, the
/// floor answers what a raw client costs where libkv's Puppet functions run.
pub struct Gap {
    length: Duration,
    work: RefCell<Work>,
}

/// The gap's memory, kept from one gap to the next.
struct Work {
    scratch: Vec<u8>,
    held: Vec<Vec<u64>>,
    round: usize,
}

/// The scratch area the gap writes across.
const SCRATCH_BYTES: usize = 8 << 20;
/// How many of the gap's small buffers are alive at once.
const HELD: usize = 512;

impl Gap {
    pub fn of(length: Duration) -> Gap {
        let scratch = if length.is_zero() {
            Vec::new()
        } else {
            vec![0; SCRATCH_BYTES]
        };
        Gap {
            length,
            work: RefCell::new(Work {
                scratch,
                held: Vec::with_capacity(HELD),
                round: 0,
            }),
        }
    }

    /// How long each gap lasts.
    pub fn length(&self) -> Duration {
        self.length
    }

    fn fill(&self) {
        if self.length.is_zero() {
            return;
        }
        let work = &mut *self.work.borrow_mut();
        let start = Instant::now();
        while start.elapsed() < self.length {
            for _ in 0..16 {
                work.round = work.round.wrapping_add(1);
                let n = work.round;
                // Buffers of 16 to 1,024 bytes, each written once; the oldest freed.
                let buffer: Vec<u64> = (0..2 + n % 127).map(|i| (i * n) as u64).collect();
                if work.held.len() < HELD {
                    work.held.push(buffer);
                } else {
                    work.held[n % HELD] = buffer;
                }
                // One cache line in each of 64 places spread over the scratch area.
                let stride = SCRATCH_BYTES / 64;
                for line in 0..64 {
                    let at = (line * stride + (n * 64) % stride) % SCRATCH_BYTES;
                    work.scratch[at] = work.scratch[at].wrapping_add(n as u8);
                }
            }
        }
        black_box(&work.held);
        black_box(&work.scratch);
    }
}

/// The nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}
