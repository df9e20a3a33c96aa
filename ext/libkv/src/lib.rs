//! The Ruby binding of libkv: converts Ruby values to core types and back, maps core
//! errors to Ruby exceptions, and waits for stores with the GVL released. No storage
//! logic lives here.

mod convert;
mod errors;
mod lock;
mod nogvl;
mod store;
mod watch;

use magnus::{Error, Module, Ruby};

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    ruby.require("libkv/errors")?;
    errors::init(ruby);
    let module = ruby.define_module("LibKV")?;
    // The core's timeouts, in seconds.
    module.const_set(
        "DEFAULT_TIMEOUT",
        libkv_core::options::DEFAULT_TIMEOUT.as_secs_f64(),
    )?;
    module.const_set(
        "MAX_TIMEOUT",
        libkv_core::options::MAX_TIMEOUT.as_secs_f64(),
    )?;
    store::init(ruby)
}
