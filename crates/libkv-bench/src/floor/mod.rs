//! Layer `floor`: what each store costs without libkv, written as one would
//! against the store directly. Each floor sets up its data, then measures the same
//! five operations as the core layer, on its own keys: below `floor/` where the
//! core layer's are below `core/`, so both sit at the same depth (for the file
//! store, `ROOT/floor/key` and `ROOT/core/key`).

mod consul;
mod etcd;
mod file;
mod mock;

use tokio::runtime::{Builder, Runtime};

use crate::stats::Bench;
use crate::{Names, Result, Target};

/// The runtime the network floors run their `block_on` loop on: multi-thread with
/// one worker, as libkv-core's own runtime is. With a worker per CPU
/// (`Runtime::new()`), the connection's tasks compete with the loop and the server
/// for the CPUs, and the floor measured some 10 µs above libkv on a 2-CPU machine.
fn runtime() -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

pub fn run(bench: &Bench, target: &Target, value: &[u8]) -> Result {
    match target {
        Target::Mock => mock::run(bench, &Names::under("/floor/"), value),
        Target::File { root } => file::run(bench, &root.join("floor"), value),
        Target::Etcd { endpoints, prefix } => etcd::run(
            bench,
            endpoints,
            &Names::under(&format!("{prefix}/floor/")),
            value,
        ),
        Target::Consul { base, prefix } => consul::run(
            bench,
            base,
            &Names::under(&format!("{prefix}floor/")),
            value,
        ),
    }
}
