//! The libkv core: key validation, store URLs, the value codec and the store
//! backends. It knows nothing of Ruby or Puppet; bindings sit on top of it.
//!
//! ```
//! use libkv_core::{codec, open, Key, OpenOptions, Value};
//!
//! let store = open("mock://", &OpenOptions::default()).unwrap();
//! let key = Key::new("/app/port").unwrap();
//! store.put(&key, &codec::encode(&Value::Int(8080)).unwrap()).unwrap();
//! let bytes = store.get(&key).unwrap().unwrap();
//! assert_eq!(codec::decode(bytes), Value::Int(8080));
//! ```
//!
//! The modules, each importing only those above it in this list:
//!
//! - `op`, `value`, `fork`: the operations; Puppet's values; what a forked child
//!   must not inherit.
//! - `error`: every error, and what bindings make of it.
//! - `key`, `url`, `codec`, `options`: keys, store URLs, values as bytes, how a
//!   store is opened beside its URL.
//! - `store`, `watch`: the `Store` trait; watches of a store's changes (a store
//!   answers its own watcher, `watch` has what they share).
//! - `remote`: what the network stores share (the runtime, clients, failures).
//! - `backends`: the stores, one module each.
//! - `open`: the store a URL names.
//! - `lock`: locks this process holds, renewed in the background.
//! - `transfer`: every key below a directory at once, as stored bytes: copied,
//!   compared, dumped, loaded (the `libkv` command).
//! - `binding`: what every binding needs (arguments checked in one order, an
//!   operation run, its answer decoded).

pub mod backends;
pub mod binding;
pub mod codec;
pub mod error;
mod fork;
pub mod key;
pub mod lock;
pub mod op;
mod open;
pub mod options;
mod remote;
pub mod store;
pub mod transfer;
pub mod url;
pub mod value;
pub mod watch;

pub use error::{Error, ErrorClass, ErrorKind, Result, Waiting};
pub use key::Key;
pub use lock::Lock;
pub use op::Op;
pub use open::{legacy_simp6_root, open};
pub use options::{timeout_from_secs, Auth, OpenOptions};
pub use store::{Listing, Page, Store, Versioned, MAX_TTL};
pub use url::StoreUrl;
pub use value::{Refusal, Value};

/// The version of libkv.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
