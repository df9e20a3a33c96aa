//! Timing single operations and summing them up as one JSON line.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Result;

/// One layer of one store being measured.
pub struct Bench {
    pub store: String,
    pub layer: String,
    pub iterations: usize,
    pub warmup: usize,
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
}

impl Bench {
    /// Runs `op` `warmup` times unrecorded, then `iterations` times, each timed on
    /// its own, and prints the summary.
    pub fn run(&self, name: &str, mut op: impl FnMut() -> Result) -> Result {
        for _ in 0..self.warmup {
            op().map_err(|e| self.failed(name, e))?;
        }
        let mut samples = Vec::with_capacity(self.iterations);
        for _ in 0..self.iterations {
            let start = Instant::now();
            let outcome = op();
            samples.push(start.elapsed());
            outcome.map_err(|e| self.failed(name, e))?;
        }
        self.report(name, samples)
    }

    /// `run` for an operation that is awaited, inside the caller's `block_on`.
    pub async fn run_async(&self, name: &str, mut op: impl AsyncFnMut() -> Result) -> Result {
        for _ in 0..self.warmup {
            op().await.map_err(|e| self.failed(name, e))?;
        }
        let mut samples = Vec::with_capacity(self.iterations);
        for _ in 0..self.iterations {
            let start = Instant::now();
            let outcome = op().await;
            samples.push(start.elapsed());
            outcome.map_err(|e| self.failed(name, e))?;
        }
        self.report(name, samples)
    }

    fn failed(&self, op: &str, e: Box<dyn std::error::Error>) -> Box<dyn std::error::Error> {
        format!("{} {} {op}: {e}", self.store, self.layer).into()
    }

    fn report(&self, op: &str, mut samples: Vec<Duration>) -> Result {
        samples.sort_unstable();
        let n = samples.len();
        let total: Duration = samples.iter().sum();
        let us = |d: Duration| round(d.as_secs_f64() * 1e6, 3);
        let line = Line {
            store: &self.store,
            layer: &self.layer,
            op,
            n,
            ops_per_sec: round(n as f64 / total.as_secs_f64(), 1),
            p50_us: us(percentile(&samples, 0.50)),
            p99_us: us(percentile(&samples, 0.99)),
            mean_us: round(total.as_secs_f64() * 1e6 / n as f64, 3),
        };
        println!("{}", serde_json::to_string(&line)?);
        Ok(())
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
