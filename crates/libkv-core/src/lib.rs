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

pub mod codec;
pub mod consul;
pub mod error;
pub mod etcd;
pub mod file;
mod fork;
pub mod key;
pub mod mock;
mod net;
pub mod store;
pub mod url;
pub mod value;

pub use error::{Error, ErrorKind, Result, Waiting};
pub use key::Key;
pub use store::{open, timeout_from_secs, Auth, Listing, Op, OpenOptions, Store, Versioned};
pub use url::StoreUrl;
pub use value::{Refusal, Value};

/// The version of libkv.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
