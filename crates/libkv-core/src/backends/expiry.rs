//! The file store's expiry index, `ROOT/.libkv@expiry`: when each key written with
//! a `ttl` expires, kept beside the keys so that a key's file holds only its value.
//!
//! One line per key: `SEQUENCE DEADLINE KEY`, the deadline in milliseconds since
//! the Unix epoch. A line applies to the key only while the key's file has that
//! sequence: a later write without `ttl`, a delete, or a new key at that name gets a
//! new sequence (sequences are never reused), so no line ever has to be removed for
//! a key to live on. Lines whose deadline has passed are dropped (and their key's
//! file removed, when it still has that sequence) whenever the index is rewritten.
//! The index is rewritten whole (temp file, fsync, rename, fsync of the root) by
//! the holder of the store's lock; readers read it without a lock, since it is never
//! changed in place. A line that cannot be read is ignored.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The index's name in the root: not a key component (`@`), never listed.
pub const NAME: &str = ".libkv@expiry";
/// Where a new index is written before its rename: not a key component either.
pub const TEMP: &str = ".libkv@expiry.tmp";

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The deadline of a write made now with `ttl`.
pub fn deadline(ttl: Duration) -> u64 {
    now_ms().saturating_add(ttl.as_millis() as u64)
}

/// Key to (sequence, deadline).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Index(pub HashMap<String, (u64, u64)>);

impl Index {
    pub fn parse(text: &[u8]) -> Index {
        let mut map = HashMap::new();
        for line in text.split(|b| *b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let mut parts = line.splitn(3, ' ');
            let (Some(seq), Some(deadline), Some(key)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if let (Ok(seq), Ok(deadline)) = (seq.parse(), deadline.parse()) {
                map.insert(key.to_owned(), (seq, deadline));
            }
        }
        Index(map)
    }

    pub fn render(&self) -> Vec<u8> {
        let mut keys: Vec<_> = self.0.iter().collect();
        keys.sort();
        let mut out = Vec::new();
        for (key, (seq, deadline)) in keys {
            out.extend_from_slice(format!("{seq} {deadline} {key}\n").as_bytes());
        }
        out
    }

    /// Whether the key's file with sequence `seq` has expired at `now` (ms).
    pub fn expired(&self, key: &str, seq: u64, now: u64) -> bool {
        self.0
            .get(key)
            .is_some_and(|&(s, deadline)| s == seq && deadline <= now)
    }

    /// The lines whose deadline has passed at `now`, removed from the index.
    pub fn take_expired(&mut self, now: u64) -> Vec<(String, u64)> {
        let gone: Vec<(String, u64)> = self
            .0
            .iter()
            .filter(|(_, &(_, deadline))| deadline <= now)
            .map(|(key, &(seq, _))| (key.clone(), seq))
            .collect();
        for (key, _) in &gone {
            self.0.remove(key);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_apply_to_one_sequence_and_bad_lines_are_ignored() {
        let index = Index::parse(b"5 1000 /a/b\nnonsense\n7 x /c\n9 3000 /d e\n");
        assert_eq!(index.0.len(), 2);
        assert!(index.expired("/a/b", 5, 1000));
        assert!(!index.expired("/a/b", 5, 999));
        assert!(
            !index.expired("/a/b", 6, 5000),
            "another sequence is another write"
        );
        assert!(!index.expired("/c", 7, u64::MAX));
        assert_eq!(Index::parse(&index.render()), index);
        let mut index = index;
        assert_eq!(index.take_expired(2000), vec![("/a/b".to_owned(), 5)]);
        assert_eq!(index.0.len(), 1);
    }
}
