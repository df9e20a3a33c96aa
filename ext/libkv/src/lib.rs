//! The Ruby binding of libkv: converts Ruby values to core types and back, maps core
//! errors to Ruby exceptions, and waits for stores with the GVL released. No storage
//! logic lives here.

mod convert;
mod errors;
mod nogvl;
mod store;

use magnus::{Error, Ruby};

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    ruby.require("libkv/errors")?;
    errors::init(ruby);
    store::init(ruby)
}
