//! `sqlite:///ABSOLUTE/FILE.db`: not built yet.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::{Listing, Store, Versioned};
use crate::value::Value;

pub struct SqliteStore(());

impl SqliteStore {
    pub fn open(path: PathBuf, timeout: Duration) -> Result<SqliteStore> {
        let _ = (path, timeout);
        Err(Error::InvalidArgument(
            "the sqlite store is not built yet".into(),
        ))
    }
}

impl Store for SqliteStore {
    fn provider(&self) -> &'static str {
        "sqlite"
    }
    fn url(&self) -> &str {
        unreachable!()
    }
    fn get(&self, _: &Key) -> Result<Option<Vec<u8>>> {
        unreachable!()
    }
    fn put(&self, _: &Key, _: &[u8]) -> Result<()> {
        unreachable!()
    }
    fn delete(&self, _: &Key) -> Result<()> {
        unreachable!()
    }
    fn exists(&self, _: &Key) -> Result<bool> {
        unreachable!()
    }
    fn list(&self, _: &Key) -> Result<Listing<Vec<u8>>> {
        unreachable!()
    }
    fn deletetree(&self, _: &Key) -> Result<()> {
        unreachable!()
    }
    fn atomic_create(&self, _: &Key, _: &[u8]) -> Result<bool> {
        unreachable!()
    }
    fn atomic_get(&self, _: &Key) -> Result<Option<Versioned>> {
        unreachable!()
    }
    fn atomic_put(&self, _: &Key, _: &[u8], _: u64) -> Result<bool> {
        unreachable!()
    }
    fn atomic_delete(&self, _: &Key, _: u64) -> Result<bool> {
        unreachable!()
    }
    fn atomic_list(&self, _: &Key) -> Result<Listing<Versioned>> {
        unreachable!()
    }
    fn info(&self) -> Result<Value> {
        unreachable!()
    }
}
