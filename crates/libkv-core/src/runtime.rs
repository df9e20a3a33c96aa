//! The tokio runtime network stores wait on: one per process, made on first use.
//!
//! A forked child inherits the runtime's memory but not its threads, so a runtime is
//! only used by the process that made it: after `fork`, the child makes its own. The
//! parent's is leaked in the child, since dropping it would wait for threads that
//! do not exist there.

use std::sync::Mutex;

use tokio::runtime::{Builder, Runtime};

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// This process's runtime.
pub fn runtime() -> std::io::Result<&'static Runtime> {
    let pid = std::process::id();
    let mut current = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match *current {
        Some((owner, runtime)) if owner == pid => Ok(runtime),
        _ => {
            let runtime: &'static Runtime = Box::leak(Box::new(
                Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("libkv-io")
                    .enable_all()
                    .build()?,
            ));
            *current = Some((pid, runtime));
            Ok(runtime)
        }
    }
}
