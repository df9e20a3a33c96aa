//! `zookeeper://HOST:PORT/PREFIX`: not built yet.

use crate::options::Auth;
use crate::url::StoreUrl;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::{Listing, Store, Versioned};
use crate::value::Value;

pub struct ZookeeperStore(());

impl ZookeeperStore {
    pub fn open(url: &StoreUrl, auth: &Auth, timeout: Duration) -> Result<ZookeeperStore> {
        let _ = (url, auth, timeout);
        Err(Error::InvalidArgument(
            "the zookeeper store is not built yet".into(),
        ))
    }
}

impl Store for ZookeeperStore {
    fn provider(&self) -> &'static str {
        "zookeeper"
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
