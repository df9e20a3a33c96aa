//! The SQLite floor: rusqlite alone (SQLite compiled in, as libkv-core builds it),
//! one connection to a database of its own, `floor.db` beside the store's file
//! (it and its `-wal` and `-shm` files removed first), in WAL mode with
//! `synchronous=FULL`: every commit is durable (the WAL fsynced) when it returns.
//! One table, `kv(key TEXT PRIMARY KEY, value BLOB NOT NULL, sequence INTEGER NOT
//! NULL)`, keys being the full key paths (`/floor/key`). Every statement is
//! prepared once and taken from rusqlite's statement cache after that.
//!
//! - `get`: `SELECT value ... WHERE key = ?` (autocommit: its own read
//!   transaction);
//! - `put`: `BEGIN IMMEDIATE`, `INSERT ... ON CONFLICT(key) DO UPDATE` (the
//!   sequence incremented), `COMMIT`;
//! - `exists`: `SELECT 1 ... WHERE key = ?`;
//! - `list100`: `SELECT key, value ... WHERE key >= 'DIR/' AND key < 'DIR0'
//!   ORDER BY key` (`0` follows `/`: the range is exactly the keys below the
//!   directory), a range scan of the primary key's index;
//! - `atomic_get_put`: `BEGIN IMMEDIATE`, `SELECT value, sequence`, `UPDATE ...
//!   WHERE key = ? AND sequence = ?` (the sequence read), `COMMIT`.

use std::fs;
use std::hint::black_box;
use std::io;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::stats::Bench;
use crate::{check, initial_counter, next_counter, Names, Result, LIST_LEN};

pub const GET: &str = "SELECT value FROM kv WHERE key = ?1";
const PUT: &str = "INSERT INTO kv (key, value, sequence) VALUES (?1, ?2, 1) \
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value, sequence = sequence + 1";
const EXISTS: &str = "SELECT 1 FROM kv WHERE key = ?1";
const LIST: &str = "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key";
const ATOMIC_GET: &str = "SELECT value, sequence FROM kv WHERE key = ?1";
const ATOMIC_PUT: &str =
    "UPDATE kv SET value = ?2, sequence = sequence + 1 WHERE key = ?1 AND sequence = ?3";

/// Removes `path` if it exists.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `put`'s transaction.
pub fn put(conn: &mut Connection, key: &str, value: &[u8]) -> Result {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(PUT)?.execute(params![key, value])?;
    Ok(tx.commit()?)
}

/// A connection to `db` as the floor uses it: WAL, `synchronous=FULL`.
pub fn connect(db: &Path) -> Result<Connection> {
    let conn = Connection::open(db)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    check(mode.eq_ignore_ascii_case("wal"), "SQLite refused WAL mode")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A new database at `db` (any old one and its `-wal` and `-shm` files removed)
/// holding the empty table, and a connection to it.
pub fn create(db: &Path) -> Result<Connection> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        remove(Path::new(&format!("{}{suffix}", db.display())))?;
    }
    let conn = connect(db)?;
    conn.execute_batch(
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, sequence INTEGER NOT NULL)",
    )?;
    Ok(conn)
}

/// `db` is the floor's database file (`floor.db` beside the store's).
pub fn run(bench: &Bench, db: &Path, value: &[u8]) -> Result {
    let mut conn = create(db)?;

    let names = Names::under("/floor/");
    let (key, counter, dir) = (names.key.as_str(), names.counter.as_str(), &names.dir);
    // The end of the directory's range: its trailing `/` and the next byte, `0`.
    let dir_end = format!("{}0", dir.trim_end_matches('/'));
    for i in 0..LIST_LEN {
        put(&mut conn, &names.list_key(i), value)?;
    }
    put(&mut conn, key, value)?;
    put(&mut conn, counter, &initial_counter(value.len()))?;

    bench.run("get", || {
        let mut get = conn.prepare_cached(GET)?;
        let data: Vec<u8> = get
            .query_row([key], |r| r.get(0))
            .optional()?
            .ok_or("the key is missing")?;
        black_box(data);
        Ok(())
    })?;
    bench.run("put", || put(&mut conn, key, value))?;
    bench.run("exists", || {
        let mut exists = conn.prepare_cached(EXISTS)?;
        check(exists.exists([key])?, "the key is missing")
    })?;
    bench.run("list100", || {
        let mut list = conn.prepare_cached(LIST)?;
        let mut rows = list.query([dir.as_str(), dir_end.as_str()])?;
        let mut listing = Vec::with_capacity(LIST_LEN);
        while let Some(row) = rows.next()? {
            let name = row.get_ref(0)?.as_str()?;
            let name = name.strip_prefix(dir.as_str()).unwrap_or_default();
            listing.push((name.to_owned(), row.get::<_, Vec<u8>>(1)?));
        }
        check(
            black_box(listing).len() == LIST_LEN,
            "the directory does not hold 100 keys",
        )
    })?;
    bench.run("atomic_get_put", || {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (current, sequence): (Vec<u8>, i64) = tx
            .prepare_cached(ATOMIC_GET)?
            .query_row([counter], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or("the counter is missing")?;
        let next = next_counter(&current)?;
        let updated = tx
            .prepare_cached(ATOMIC_PUT)?
            .execute(params![counter, next, sequence])?;
        check(updated == 1, "the counter changed meanwhile")?;
        Ok(tx.commit()?)
    })
}
