//! Layer `core`: libkv's `Store` trait called directly, with bytes (no codec).

use std::hint::black_box;

use libkv_core::{open, Key, OpenOptions, Store};

use crate::stats::Bench;
use crate::{check, initial_counter, next_counter, Names, Result, LIST_LEN};

pub fn run(bench: &Bench, url: &str, value: &[u8]) -> Result {
    let store = open(url, &OpenOptions::default())?;
    measure(bench, &*store, value)
}

fn measure(bench: &Bench, store: &dyn Store, value: &[u8]) -> Result {
    let names = Names::under("/core/");
    let key = Key::new(&names.key)?;
    let counter = Key::new(&names.counter)?;
    let dir = Key::dir(&names.dir)?;

    store.deletetree(&dir)?;
    for i in 0..LIST_LEN {
        store.put(&Key::new(&names.list_key(i))?, value)?;
    }
    store.put(&key, value)?;
    store.put(&counter, &initial_counter(value.len()))?;

    bench.run("get", || {
        black_box(store.get(&key)?.ok_or("the key is missing")?);
        Ok(())
    })?;
    bench.run("put", || Ok(store.put(&key, value)?))?;
    bench.run("exists", || {
        check(store.exists(&key)?, "the key is missing")
    })?;
    bench.run("list100", || {
        let listing = black_box(store.list(&dir)?);
        check(
            listing.len() == LIST_LEN,
            "the directory does not hold 100 keys",
        )
    })?;
    bench.run("atomic_get_put", || {
        let current = store
            .atomic_get(&counter)?
            .ok_or("the counter is missing")?;
        let next = next_counter(&current.value)?;
        check(
            store.atomic_put(&counter, &next, current.sequence)?,
            "the counter changed meanwhile",
        )
    })
}
