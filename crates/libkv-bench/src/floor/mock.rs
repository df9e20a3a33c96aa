//! The mock floor: a map behind a mutex. A `BTreeMap`, since listing a directory
//! is a range scan over sorted keys; each entry keeps its value and a sequence
//! from a map-wide counter.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound::{Included, Unbounded};
use std::sync::{Mutex, MutexGuard};

use crate::stats::Bench;
use crate::{check, initial_counter, next_counter, Names, Result, LIST_LEN};

#[derive(Default)]
struct Map {
    entries: BTreeMap<String, (Vec<u8>, u64)>,
    last_sequence: u64,
}

impl Map {
    fn put(&mut self, key: &str, value: &[u8]) {
        self.last_sequence += 1;
        self.entries
            .insert(key.to_owned(), (value.to_vec(), self.last_sequence));
    }
}

pub fn run(bench: &Bench, names: &Names, value: &[u8]) -> Result {
    let map = Mutex::new(Map::default());
    let lock = || -> MutexGuard<'_, Map> { map.lock().unwrap() };
    let (key, counter, dir) = (&names.key, &names.counter, &names.dir);

    for i in 0..LIST_LEN {
        lock().put(&names.list_key(i), value);
    }
    lock().put(key, value);
    lock().put(counter, &initial_counter(value.len()));

    bench.run("get", || {
        let found = lock().entries.get(key).map(|(v, _)| v.clone());
        black_box(found.ok_or("the key is missing")?);
        Ok(())
    })?;
    bench.run("put", || {
        lock().put(key, value);
        Ok(())
    })?;
    bench.run("exists", || {
        check(lock().entries.contains_key(key), "the key is missing")
    })?;
    bench.run("list100", || {
        let listing: Vec<(String, Vec<u8>)> = lock()
            .entries
            .range::<str, _>((Included(dir.as_str()), Unbounded))
            .take_while(|(k, _)| k.starts_with(dir.as_str()))
            .map(|(k, (v, _))| (k[dir.len()..].to_owned(), v.clone()))
            .collect();
        check(
            black_box(listing).len() == LIST_LEN,
            "the directory does not hold 100 keys",
        )
    })?;
    bench.run("atomic_get_put", || {
        // Two lock acquisitions, as the two calls of a read-modify-write make.
        let (current, sequence) = lock()
            .entries
            .get(counter)
            .cloned()
            .ok_or("the counter is missing")?;
        let next = next_counter(&current)?;
        let mut map = lock();
        let unchanged = map.entries.get(counter).map(|(_, s)| *s) == Some(sequence);
        if unchanged {
            map.put(counter, &next);
        }
        check(unchanged, "the counter changed meanwhile")
    })
}
