//! The in-memory KV state: Consul's `kvs` table and its raft index.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::txn::{KvOp, TxnError, Verb};

/// The raft index of a fresh double. Consul's is never 0 once it has a
/// leader; starting above 0 catches clients that treat 0 specially.
pub(crate) const FIRST_INDEX: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) value: Vec<u8>,
    pub(crate) flags: u64,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

/// An entry a transaction reports, with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnEntry {
    pub(crate) key: String,
    pub(crate) entry: Entry,
}

#[derive(Debug)]
pub(crate) struct Store {
    index: u64,
    entries: BTreeMap<String, Entry>,
}

impl Store {
    pub(crate) fn new() -> Self {
        Store {
            index: FIRST_INDEX,
            entries: BTreeMap::new(),
        }
    }

    /// The store-wide index: that of the last write that changed something.
    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Every entry whose key starts with `prefix` (a plain string prefix),
    /// in key order (bytewise, as Consul's memdb).
    pub(crate) fn list<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Entry)> {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| (key.as_str(), entry))
    }

    /// The key names under `prefix`; with a non-empty `separator`, each one
    /// is cut just after the first separator that follows the prefix and
    /// the "folders" this makes are given once (Consul's `KVSListKeys`).
    pub(crate) fn keys(&self, prefix: &str, separator: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut previous_folder: Option<String> = None;
        for (key, _) in self.list(prefix) {
            if separator.is_empty() {
                keys.push(key.to_owned());
                continue;
            }
            let after = &key[prefix.len()..];
            match after.find(separator) {
                Some(at) => {
                    let folder = &key[..prefix.len() + at + separator.len()];
                    let seen = previous_folder
                        .as_deref()
                        .is_some_and(|previous| folder.starts_with(previous));
                    if !seen {
                        keys.push(folder.to_owned());
                        previous_folder = Some(folder.to_owned());
                    }
                }
                None => keys.push(key.to_owned()),
            }
        }
        keys
    }

    /// Sets `key`. With `cas` = `Some(0)` only if the key is absent; with
    /// `Some(n)` only if the key's ModifyIndex is `n`. Answers whether it
    /// wrote. A write replaces the flags too (absent `?flags` means 0).
    pub(crate) fn put(&mut self, key: &str, value: Vec<u8>, flags: u64, cas: Option<u64>) -> bool {
        let existing = self.entries.get(key);
        match (cas, existing) {
            (Some(0), Some(_)) => return false,
            (Some(n), None) if n != 0 => return false,
            (Some(n), Some(entry)) if entry.modify_index != n => return false,
            _ => {}
        }
        let index = self.index + 1;
        let create_index = existing.map_or(index, |entry| entry.create_index);
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                flags,
                create_index,
                modify_index: index,
            },
        );
        self.index = index;
        true
    }

    /// Deletes `key`. Without `cas` it answers `true` whether or not the key
    /// was there. With `cas`, as Consul's `kvsDeleteCASTxn`: an absent key
    /// answers `true` (nothing to delete); a present key is deleted only if
    /// its ModifyIndex equals `cas`, so `cas=0` never deletes one.
    pub(crate) fn delete(&mut self, key: &str, cas: Option<u64>) -> bool {
        let Some(entry) = self.entries.get(key) else {
            return true;
        };
        if let Some(cas) = cas {
            if entry.modify_index != cas {
                return false;
            }
        }
        self.entries.remove(key);
        self.index += 1;
        true
    }

    /// Deletes every key starting with `prefix` (every key when it is empty).
    pub(crate) fn delete_tree(&mut self, prefix: &str) -> bool {
        let doomed: Vec<String> = self.list(prefix).map(|(key, _)| key.to_owned()).collect();
        if !doomed.is_empty() {
            for key in &doomed {
                self.entries.remove(key);
            }
            self.index += 1;
        }
        true
    }
}

impl Store {
    /// Applies a transaction's KV operations all or nothing, as Consul's
    /// `Txn.Apply` (its `preCheck`, then `TxnRW`): every write shares one
    /// new index (the store index grows by one if anything changed), each
    /// operation sees the effects of those before it, and if any fails,
    /// nothing is kept and every failure is answered.
    ///
    /// Results, as Consul's `txnKVS`: `get`, `get-or-empty` and `get-tree`
    /// give their entries with the value; `set`, `cas` and `check-index`
    /// give the entry without it; deletes and `check-not-exists` give none.
    pub(crate) fn apply_txn(&mut self, ops: &[KvOp]) -> Result<Vec<TxnEntry>, Vec<TxnError>> {
        // Consul's preCheck (kvsPreApply), before anything runs.
        let missing_keys: Vec<TxnError> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.key.is_empty() && op.verb != Verb::DeleteTree)
            .map(|(op_index, _)| TxnError {
                op_index,
                what: "Must provide key".to_owned(),
            })
            .collect();
        if !missing_keys.is_empty() {
            return Err(missing_keys);
        }

        let index = self.index + 1;
        let mut scratch = Txn {
            entries: self.entries.clone(),
            index,
            changed: false,
            results: Vec::new(),
        };
        let mut errors = Vec::new();
        for (op_index, op) in ops.iter().enumerate() {
            if let Err(what) = scratch.run(op) {
                errors.push(TxnError { op_index, what });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if scratch.changed {
            self.entries = scratch.entries;
            self.index = index;
        }
        Ok(scratch.results)
    }
}

/// A transaction under way, on a copy of the entries.
struct Txn {
    entries: BTreeMap<String, Entry>,
    index: u64,
    changed: bool,
    results: Vec<TxnEntry>,
}

impl Txn {
    fn report(&mut self, key: &str, entry: &Entry, with_value: bool) {
        let mut entry = entry.clone();
        if !with_value {
            entry.value = Vec::new();
        }
        self.results.push(TxnEntry {
            key: key.to_owned(),
            entry,
        });
    }

    /// One operation; the error is Consul's message for it.
    fn run(&mut self, op: &KvOp) -> Result<(), String> {
        let key = op.key.as_str();
        let existing = self.entries.get(key);
        match &op.verb {
            Verb::Set => self.set(op),
            Verb::Cas => {
                let fresh = match existing {
                    None => op.index == 0,
                    Some(entry) => op.index != 0 && entry.modify_index == op.index,
                };
                if !fresh {
                    return Err(format!("failed to set key {key:?}, index is stale"));
                }
                self.set(op)
            }
            Verb::Get => {
                let Some(entry) = existing.cloned() else {
                    return Err(format!("key {key:?} doesn't exist"));
                };
                self.report(key, &entry, true);
                Ok(())
            }
            Verb::GetOrEmpty => {
                // Consul answers the operation's own fields for an absent key.
                let entry = existing.cloned().unwrap_or(Entry {
                    value: Vec::new(),
                    flags: op.flags,
                    create_index: 0,
                    modify_index: op.index,
                });
                self.report(key, &entry, true);
                Ok(())
            }
            Verb::GetTree => {
                let found: Vec<(String, Entry)> = self
                    .entries
                    .range::<str, _>((Bound::Included(key), Bound::Unbounded))
                    .take_while(|(name, _)| name.starts_with(key))
                    .map(|(name, entry)| (name.clone(), entry.clone()))
                    .collect();
                for (name, entry) in &found {
                    self.report(name, entry, true);
                }
                Ok(())
            }
            Verb::CheckIndex => {
                let Some(entry) = existing.cloned() else {
                    return Err(format!("failed to check index, key {key:?} doesn't exist"));
                };
                if entry.modify_index != op.index {
                    return Err(format!(
                        "failed index check for key {key:?}, current modify index {} != {}",
                        entry.modify_index, op.index
                    ));
                }
                self.report(key, &entry, false);
                Ok(())
            }
            Verb::CheckNotExists => match existing {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(()),
            },
            Verb::Delete => {
                if self.entries.remove(key).is_some() {
                    self.changed = true;
                }
                Ok(())
            }
            Verb::DeleteCas => match existing {
                // As kvsDeleteCASTxn: an absent key is nothing to delete.
                None => Ok(()),
                Some(entry) if entry.modify_index == op.index => {
                    self.entries.remove(key);
                    self.changed = true;
                    Ok(())
                }
                Some(_) => Err(format!("failed to delete key {key:?}, index is stale")),
            },
            Verb::DeleteTree => {
                let before = self.entries.len();
                self.entries.retain(|name, _| !name.starts_with(key));
                if self.entries.len() != before {
                    self.changed = true;
                }
                Ok(())
            }
            // The HTTP side refuses these before the store sees them.
            Verb::Session(verb) => Err(format!(
                "consul-double does not implement sessions: the KV verb {verb:?} is not supported"
            )),
            Verb::Unknown(verb) => Err(format!("unknown KV verb {verb:?}")),
        }
    }

    /// `set` (and a `cas` that passed): the value and flags replace the
    /// entry's; CreateIndex is kept; ModifyIndex is the transaction's.
    fn set(&mut self, op: &KvOp) -> Result<(), String> {
        let create_index = self
            .entries
            .get(&op.key)
            .map_or(self.index, |entry| entry.create_index);
        let entry = Entry {
            value: op.value.clone(),
            flags: op.flags,
            create_index,
            modify_index: self.index,
        };
        self.report(&op.key, &entry, false);
        self.entries.insert(op.key.clone(), entry);
        self.changed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(keys: &[&str]) -> Store {
        let mut store = Store::new();
        for key in keys {
            assert!(store.put(key, b"v".to_vec(), 0, None));
        }
        store
    }

    #[test]
    fn index_starts_above_zero_and_grows_only_on_changes() {
        let mut s = Store::new();
        assert_eq!(s.index(), FIRST_INDEX);
        assert!(s.put("a", vec![], 0, None));
        assert_eq!(s.index(), FIRST_INDEX + 1);
        assert!(!s.put("a", vec![], 0, Some(0)));
        assert_eq!(s.index(), FIRST_INDEX + 1);
        assert!(s.delete("missing", None));
        assert_eq!(s.index(), FIRST_INDEX + 1);
        assert!(s.delete_tree("zzz"));
        assert_eq!(s.index(), FIRST_INDEX + 1);
        assert!(s.delete_tree(""));
        assert_eq!(s.index(), FIRST_INDEX + 2);
        assert!(s.get("a").is_none());
    }

    #[test]
    fn put_keeps_create_index_and_replaces_flags() {
        let mut s = Store::new();
        assert!(s.put("k", b"1".to_vec(), 7, None));
        assert!(s.put("k", b"2".to_vec(), 0, None));
        let entry = s.get("k").unwrap();
        assert_eq!(entry.create_index, FIRST_INDEX + 1);
        assert_eq!(entry.modify_index, FIRST_INDEX + 2);
        assert_eq!(entry.flags, 0);
        assert_eq!(entry.value, b"2");
    }

    #[test]
    fn keys_with_separator_are_folders() {
        let s = store(&["a/b", "a/c/d", "a/c/e", "a/c/", "ab", "a-x", "b"]);
        assert_eq!(s.keys("", "/"), ["a-x", "a/", "ab", "b"]);
        assert_eq!(s.keys("a/", "/"), ["a/b", "a/c/"]);
        assert_eq!(s.keys("a/c/", "/"), ["a/c/", "a/c/d", "a/c/e"]);
        assert_eq!(
            s.keys("a", ""),
            ["a-x", "a/b", "a/c/", "a/c/d", "a/c/e", "ab"]
        );
        assert!(s.keys("c", "/").is_empty());
    }

    fn op(verb: Verb, key: &str, index: u64) -> KvOp {
        KvOp {
            verb,
            key: key.to_owned(),
            value: b"new".to_vec(),
            flags: 3,
            index,
        }
    }

    #[test]
    fn txn_writes_share_one_index_and_report_without_values() {
        let mut s = store(&["a", "d"]);
        let before = s.index();
        let results = s
            .apply_txn(&[
                op(Verb::Set, "a", 0),
                op(Verb::Cas, "b", 0),
                op(Verb::Delete, "d", 0),
                op(Verb::Get, "a", 0),
                op(Verb::CheckIndex, "b", before + 1),
                op(Verb::CheckNotExists, "d", 0),
            ])
            .unwrap();
        assert_eq!(s.index(), before + 1);
        let keys: Vec<_> = results.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "a", "b"]);
        for result in &results {
            assert_eq!(result.entry.modify_index, before + 1);
            assert_eq!(result.entry.flags, 3);
        }
        assert!(results[0].entry.value.is_empty(), "set: no value");
        assert_eq!(results[0].entry.create_index, FIRST_INDEX + 1);
        assert_eq!(results[1].entry.create_index, before + 1);
        assert_eq!(results[2].entry.value, b"new", "get: the value");
        assert!(results[3].entry.value.is_empty(), "check-index: no value");
        assert!(s.get("d").is_none());
        assert_eq!(s.get("b").unwrap().value, b"new");
    }

    #[test]
    fn txn_failures_keep_nothing_and_are_all_reported() {
        let mut s = store(&["a"]);
        let before = s.index();
        let errors = s
            .apply_txn(&[
                op(Verb::Set, "x", 0),
                op(Verb::CheckIndex, "x", before),
                op(Verb::DeleteTree, "", 0),
                op(Verb::Get, "a", 0),
                op(Verb::Unknown("nope".into()), "a", 0),
            ])
            .unwrap_err();
        // Each operation sees the ones before it: x was just set (so its
        // index moved), and the delete-tree took a.
        assert_eq!(
            errors,
            [
                TxnError {
                    op_index: 1,
                    what: format!(
                        "failed index check for key \"x\", current modify index {} != {before}",
                        before + 1
                    ),
                },
                TxnError {
                    op_index: 3,
                    what: "key \"a\" doesn't exist".into(),
                },
                TxnError {
                    op_index: 4,
                    what: "unknown KV verb \"nope\"".into(),
                },
            ]
        );
        assert_eq!(s.index(), before);
        assert!(s.get("a").is_some() && s.get("x").is_none());

        // An empty key fails every verb but delete-tree, before anything runs.
        let errors = s
            .apply_txn(&[op(Verb::DeleteTree, "", 0), op(Verb::GetTree, "", 0)])
            .unwrap_err();
        assert_eq!(
            errors,
            [TxnError {
                op_index: 1,
                what: "Must provide key".into()
            }]
        );
        assert!(s.get("a").is_some());
    }

    #[test]
    fn txn_cas_delete_cas_and_get_or_empty() {
        let mut s = store(&["k"]);
        let index = s.get("k").unwrap().modify_index;
        for bad in [
            op(Verb::Cas, "k", 0),
            op(Verb::Cas, "k", index + 1),
            op(Verb::Cas, "absent", index),
            op(Verb::DeleteCas, "k", 0),
            op(Verb::CheckNotExists, "k", 0),
            op(Verb::CheckIndex, "absent", 0),
        ] {
            assert!(s.apply_txn(std::slice::from_ref(&bad)).is_err(), "{bad:?}");
        }
        assert_eq!(s.index(), index);
        // delete-cas of an absent key: nothing to do, and no write.
        assert_eq!(s.apply_txn(&[op(Verb::DeleteCas, "absent", 5)]), Ok(vec![]));
        assert_eq!(s.index(), index);
        let absent = s.apply_txn(&[op(Verb::GetOrEmpty, "absent", 9)]).unwrap();
        assert_eq!(absent[0].entry.modify_index, 9);
        assert_eq!(absent[0].entry.create_index, 0);
        assert!(s.apply_txn(&[op(Verb::DeleteCas, "k", index)]).is_ok());
        assert!(s.get("k").is_none());
        assert_eq!(s.index(), index + 1);
    }

    #[test]
    fn list_is_a_plain_prefix() {
        let s = store(&["a", "a/b", "ab", "b"]);
        let keys: Vec<_> = s.list("a").map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "a/b", "ab"]);
        let keys: Vec<_> = s.list("a/").map(|(k, _)| k).collect();
        assert_eq!(keys, ["a/b"]);
    }
}
