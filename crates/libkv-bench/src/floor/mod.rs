//! Layer `floor`: what each store costs without libkv, written as one would
//! against the store directly. Each floor sets up its data, then measures the same
//! five operations as the core layer, on its own keys: below `floor/` where the
//! core layer's are below `core/`, so both sit at the same depth (for the file
//! store, `ROOT/floor/key` and `ROOT/core/key`). The SQLite floor has a database
//! file of its own instead, `floor.db` beside the store's (see `sqlite`).

mod consul;
mod etcd;
pub mod etcd_transfer;
mod file;
mod mock;
pub mod sqlite;
pub mod zookeeper;

use tokio::runtime::{Builder, Runtime};

use crate::stats::Bench;
use crate::{check, Names, Result, Target};

/// The runtime the network floors run their `block_on` loop on: a current-thread
/// runtime, so the looping thread drives the connection itself and a request and
/// its answer cross no threads. That is the fastest way to wait on one connection
/// from one thread, and it is how libkv-core waits, so the floor is what the core
/// would cost with nothing of libkv's own in it. (A runtime with worker threads
/// pays one or two wake-ups of another thread per request: 50-60 µs per etcd call
/// on a 2-CPU machine whose idle CPUs halt.)
fn runtime() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
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
        Target::Zookeeper { endpoints, prefix } => {
            zookeeper::run(bench, endpoints, &format!("{prefix}/floor"), value)
        }
        Target::Sqlite { path } => {
            let dir = path.parent().ok_or("the database file has no directory")?;
            check(
                path.file_name() != Some("floor.db".as_ref()),
                "the SQLite floor's database is floor.db beside the store's: name the store's file otherwise",
            )?;
            sqlite::run(bench, &dir.join("floor.db"), value)
        }
    }
}
