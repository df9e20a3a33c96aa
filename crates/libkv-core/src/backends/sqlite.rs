//! `sqlite:///ABSOLUTE/FILE.db`: every key a row of one SQLite database file on this
//! machine (in BoltDB's place in docker's libkv).
//!
//! # Schema (version 1, `PRAGMA user_version = 1`)
//!
//! ```sql
//! CREATE TABLE kv (
//!     key      TEXT PRIMARY KEY,    -- the whole key: '/app/password'
//!     value    BLOB NOT NULL,       -- the stored bytes, exactly
//!     sequence INTEGER NOT NULL,    -- the key's sequence (> 0)
//!     expires  INTEGER              -- unix milliseconds past which the row is absent; NULL: never
//! );
//! CREATE INDEX kv_expires ON kv (expires) WHERE expires IS NOT NULL;
//! CREATE TABLE counter (
//!     id   INTEGER PRIMARY KEY CHECK (id = 1),
//!     last INTEGER NOT NULL         -- the last sequence issued
//! );                                -- one row: (1, last)
//! ```
//!
//! Any SQLite client reads it; a value libkv wrote, with the `sqlite3` shell:
//!
//! ```sh
//! sqlite3 /var/lib/libkv/store.db \
//!   "SELECT CAST(value AS TEXT) FROM kv WHERE key = '/app/password'
//!      AND (expires IS NULL OR expires > (julianday('now') - 2440587.5) * 86400000)"
//! ```
//!
//! A database with another `user_version` is refused with an error naming it (a
//! newer libkv's), as is a database holding other tables and no `user_version`.
//!
//! # How it keeps the store's guarantees
//!
//! - **Durable, never torn.** The database is in WAL mode with `synchronous=FULL`:
//!   a write that returned survives SIGKILL and power loss, a reader sees the state
//!   before a transaction or after it.
//! - **Linearizable writes.** Every write is one `BEGIN IMMEDIATE` transaction (the
//!   atomic functions compare and write inside it), waiting for another writer at
//!   most the store's timeout (`busy_timeout`); past it, a timeout error that says
//!   nothing was changed. Reads are one statement, or one deferred transaction (a
//!   watch's read of the counter and the keys), so `list` is one snapshot.
//! - **Sequences.** `counter.last` only grows: each write transaction that changes
//!   a key takes one more (and more than the key's current sequence, should another
//!   client have written rows), so a key deleted and created again gets a larger
//!   one, also across reopening. A delete takes one too, which a watch hands out as
//!   the delete's sequence.
//! - **Keys.** `/a` and `/a/b` may both hold a value (as in etcd). `list` is a range
//!   scan of the primary key: `key >= 'dir/' AND key < 'dir0'` (`0` is the byte after
//!   `/`; keys compare as bytes), keeping only names that are keys.
//! - **Keys that expire.** `expires` is set by a write with a ttl and cleared by one
//!   without; every read treats a row past it as absent, and every write
//!   transaction first deletes the rows past it (through the partial index).
//! - **Files.** The database's directory is made as the file store makes its root
//!   (mode 0750, parents too) and the file with mode 0640 (SQLite gives its `-wal` and
//!   `-shm` files the database file's mode). A path that is a directory, a file that
//!   is no database, a directory that cannot be written: errors naming the path.
//! - **The database stays the file the connection opened.** SQLite cannot follow
//!   a database file moved, deleted or replaced (a backup renamed over it) while
//!   connections have it open: its `-wal` and `-shm` files stay at the path's name
//!   and would be read into, or deleted under, another file. So every call looks
//!   at the path (one `stat`) and, when it no longer names the file opened, fails
//!   with an error that says so, rather than writing where nobody reads; the
//!   process's store objects must be dropped (or the process restarted) to open
//!   the new file. Restore backups with the `sqlite3` shell's `.restore`, or while
//!   no process uses the database.
//! - **Connections.** One connection per database path per process, shared by
//!   every store object of that path and taken by one call at a time (a call waits
//!   for it at most the timeout, all told). Calls hold a fork section (see `fork`),
//!   so a fork never happens amid a transaction, and every connection is closed
//!   just before a fork (`fork::before_fork`): no connection crosses a fork, as
//!   SQLite asks. (SQLite keeps its lock state per process and file; a child that
//!   inherited a connection's would believe it holds locks the kernel never gave
//!   it, and once the parent closed, another process could delete the WAL the
//!   child writes to.) Parent and child open the connection again at their next
//!   call; closing skips the checkpoint SQLite makes when the last connection
//!   closes, so a fork costs no I/O.
//! - **`put_many`** writes one transaction per 256 entries; **locks** are the
//!   `Store` defaults over `put_ttl` (the lock's key created with previous 0 and
//!   a ttl; its fence the key's sequence).
//! - **Watches.** The kernel's change notification (inotify, through `notify`) on
//!   the database's directory, for changes of the database file or its `-wal`,
//!   wakes a watch, which then reads the counter and the target in one transaction
//!   ([`Snapshot::index`] is the counter). It also reads at least every second, and
//!   at the earliest ttl deadline of a key it watches.

use std::collections::HashMap;
use std::fmt::Display;
use std::fs;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Config, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::expiry;
use crate::error::{Error, Result, Waiting};
use crate::fork;
use crate::key::Key;
use crate::store::{Listing, Store, Versioned};
use crate::value::Value;
use crate::watch::{Coalescing, Snapshot, Source, Target, Watcher};

/// The schema this libkv writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE kv (
    key      TEXT PRIMARY KEY,
    value    BLOB NOT NULL,
    sequence INTEGER NOT NULL,
    expires  INTEGER
);
CREATE INDEX kv_expires ON kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO counter (id, last) VALUES (1, 0);
PRAGMA user_version = 1;
";
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
/// Entries a `put_many` writes in one transaction.
const PUT_MANY_CHUNK: usize = 256;

/// How long a watch waits after a notification for the rest of its burst.
const DEBOUNCE: Duration = Duration::from_millis(2);
/// How long a watch goes at most without reading the target.
const RESCAN: Duration = Duration::from_secs(1);
/// How long after a ttl deadline a watch reads (deadlines are whole milliseconds).
const EXPIRY_SLACK: Duration = Duration::from_millis(2);

/// This process's connections, by database path: shared by the store objects of a
/// path, closed when the last of them is dropped.
static CONNECTIONS: Mutex<Option<HashMap<PathBuf, Weak<Shared>>>> = Mutex::new(None);

/// Closes, before a fork, every connection of this process (a call's section
/// keeps a connection in use from being closed: the fork waits for it).
fn close_before_fork() {
    let Ok(all) = CONNECTIONS.try_lock() else {
        return;
    };
    for shared in all.iter().flatten().filter_map(|(_, w)| w.upgrade()) {
        if let Ok(mut conn) = shared.conn.try_lock() {
            if let Some(conn) = conn.take() {
                // No checkpoint on this close: the fork goes on at once, and
                // the next connection finds the WAL as it was.
                let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
            }
        }
    }
}

/// One connection, taken by one call at a time.
struct Shared {
    /// The database file it opened (device, inode): when the path no longer names
    /// it (moved away, deleted, a backup renamed over it), calls fail (`opened`).
    file: (u64, u64),
    /// Whether a call has the connection; `freed` tells waiters it was given back.
    busy: Mutex<bool>,
    freed: Condvar,
    /// `None` once closed before a fork, until the next call opens it again.
    conn: Mutex<Option<Connection>>,
}

/// A call's hold on the connection: given back when dropped.
struct Taken<'a> {
    shared: &'a Shared,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        *lock(&self.shared.busy) = false;
        self.shared.freed.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A failure of a call, before it is worded for the caller.
enum Fail {
    Sql(rusqlite::Error),
    /// Waited for the connection (another call of this process) past the timeout.
    Busy,
    Other(String),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

type SqlResult<T> = std::result::Result<T, Fail>;

pub struct SqliteStore {
    url: String,
    path: PathBuf,
    timeout: Duration,
    /// The connection this store object uses: this process's for its path.
    shared: Mutex<Option<Arc<Shared>>>,
}

impl SqliteStore {
    /// The store of the database at `path`, which its first call opens (creating
    /// when needed: its directory, the file, WAL mode, the schema), as other
    /// stores connect at their first call. A path that is a directory, not a
    /// database, of an unknown schema, or cannot be written fails every call with
    /// an error naming it.
    pub fn open(path: PathBuf, timeout: Duration) -> Result<SqliteStore> {
        Ok(SqliteStore {
            url: format!("sqlite://{}", path.display()),
            path,
            timeout,
            shared: Mutex::new(None),
        })
    }

    /// This process's connection for the path: the one kept, or a new one.
    fn connection(&self, op: &'static str, key: &str) -> Result<Arc<Shared>> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| fork::before_fork(close_before_fork));
        let mut all = lock(&CONNECTIONS);
        let map = all.get_or_insert_with(HashMap::new);
        if let Some(shared) = map.get(&self.path).and_then(Weak::upgrade) {
            return self.opened(op, key, &shared).map(|()| shared);
        }
        let conn = self.connect().map_err(|e| self.error(op, key, e, "open"))?;
        let file = fs::metadata(&self.path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| {
                let reason = format!("cannot use {}: {e}{}", self.path.display(), hint(&e));
                self.error(op, key, Fail::Other(reason), "")
            })?;
        let shared = Arc::new(Shared {
            file,
            busy: Mutex::new(false),
            freed: Condvar::new(),
            conn: Mutex::new(Some(conn)),
        });
        map.insert(self.path.clone(), Arc::downgrade(&shared));
        Ok(shared)
    }

    /// Fails when the database path no longer names the file `shared` opened (one
    /// `stat`): nothing there, or another file. When the path cannot be looked at,
    /// the connection says what is wrong.
    fn opened(&self, op: &'static str, key: &str, shared: &Shared) -> Result<()> {
        let now = match fs::metadata(&self.path) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == IoKind::NotFound => None,
            Err(_) => return Ok(()),
        };
        if now == Some(shared.file) {
            return Ok(());
        }
        let path = self.path.display();
        let what = if now.is_none() {
            "is gone (moved away or deleted)"
        } else {
            "is another file now (replaced, or moved away and made again)"
        };
        Err(self.error(
            op,
            key,
            Fail::Other(format!(
                "the database file {path} this process opened {what} while in use; SQLite \
                 cannot follow that safely (its {path}-wal would be read into, or deleted \
                 under, another file), so nothing was read or written: restart this process \
                 (or drop its store objects and open the store again) to use the file now \
                 at {path}, and restore backups with the sqlite3 shell's .restore or while no \
                 process uses the database"
            )),
            "",
        ))
    }

    /// A new connection to the database, made ready: directory, file, pragmas,
    /// schema.
    fn connect(&self) -> SqlResult<Connection> {
        let path = &self.path;
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(Fail::Other(format!(
                    "{} is a directory, not a database file: point the URL at a file in it, \
                     such as sqlite://{}/libkv.db",
                    path.display(),
                    path.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == IoKind::NotFound => {
                if let Some(dir) = path.parent() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(DIR_MODE)
                        .create(dir)
                        .map_err(|e| {
                            Fail::Other(format!(
                                "cannot make the database's directory {}: {e}{}",
                                dir.display(),
                                hint(&e)
                            ))
                        })?;
                }
            }
            Err(e) => {
                return Err(Fail::Other(format!(
                    "cannot use {}: {e}{}",
                    path.display(),
                    hint(&e)
                )))
            }
        }
        // Made here with the store's mode (SQLite would use 0644); opened for
        // writing so that a file this user cannot write is said so now (SQLite
        // would open it read-only and fail each write).
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
            .map_err(|e| {
                Fail::Other(format!(
                    "cannot open the database file {} for writing: {e}{}",
                    path.display(),
                    hint(&e)
                ))
            })?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_EXRESCODE,
        )?;
        conn.busy_timeout(self.timeout)?;
        // Processes opening a new database at once: the first read of a file in
        // rollback mode, switching it to WAL, may be told BUSY at once rather than
        // waiting (SQLite's way out of two readers each waiting to write), so the
        // setup is tried again until the timeout has passed.
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.set_up(&conn) {
                Err(Fail::Sql(e))
                    if matches!(
                        e.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(conn),
            }
        }
    }

    /// WAL mode, `synchronous=FULL`, the WAL's size limit, the schema made or checked.
    fn set_up(&self, conn: &Connection) -> SqlResult<()> {
        let path = &self.path;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Fail::Other(format!(
                "{} stays in journal mode {mode}, not WAL",
                path.display()
            )));
        }
        // A WAL a large put_many grew is cut back to 64 MiB once checkpointed.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            SCHEMA_VERSION => {}
            0 => {
                // BEGIN IMMEDIATE: two processes may make the schema at once.
                conn.execute_batch("BEGIN IMMEDIATE")?;
                let made = (|| -> SqlResult<()> {
                    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                    if version == 0 {
                        let tables: i64 =
                            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
                        if tables > 0 {
                            return Err(Fail::Other(format!(
                                "{} is an SQLite database, but not libkv's (it has other \
                                 tables and no libkv schema version): point the URL at \
                                 another file",
                                path.display()
                            )));
                        }
                        conn.execute_batch(SCHEMA)?;
                    } else if version != SCHEMA_VERSION {
                        return Err(unknown_schema(path, version));
                    }
                    Ok(())
                })();
                match made.and_then(|()| Ok(conn.execute_batch("COMMIT")?)) {
                    Ok(()) => {}
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        return Err(e);
                    }
                }
            }
            other => return Err(unknown_schema(path, other)),
        }
        Ok(())
    }

    /// Runs `f` with this process's connection, taken for the call (waiting for
    /// another call of this process at most the timeout), inside a fork section.
    fn with<T>(
        &self,
        op: &'static str,
        key: &str,
        f: impl FnOnce(&mut Connection) -> SqlResult<T>,
    ) -> Result<T> {
        let _section = fork::section();
        let shared = {
            let mut slot = lock(&self.shared);
            match slot.as_ref() {
                Some(shared) => {
                    self.opened(op, key, shared)?;
                    Arc::clone(shared)
                }
                None => {
                    let shared = self.connection(op, key)?;
                    *slot = Some(Arc::clone(&shared));
                    shared
                }
            }
        };
        let deadline = Instant::now() + self.timeout;
        let _taken = {
            let mut busy = lock(&shared.busy);
            while *busy {
                let now = Instant::now();
                if now >= deadline {
                    return Err(self.error(op, key, Fail::Busy, ""));
                }
                busy = shared
                    .freed
                    .wait_timeout(busy, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            *busy = true;
            Taken { shared: &shared }
        };
        let mut conn = lock(&shared.conn);
        if conn.is_none() {
            // Closed before a fork (in this process or its parent).
            *conn = Some(self.connect().map_err(|e| self.error(op, key, e, "open"))?);
        }
        let conn = conn.as_mut().expect("opened above");
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let run = (|| {
            conn.busy_timeout(left)?;
            f(conn)
        })();
        run.map_err(|e| self.error(op, key, e, ""))
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, after deleting the rows that
    /// expired; commits when it returns.
    fn write<T>(
        &self,
        op: &'static str,
        key: &str,
        f: impl FnOnce(&Tx<'_, '_>) -> SqlResult<T>,
    ) -> Result<T> {
        self.with(op, key, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = expiry::now_ms() as i64;
            tx.prepare_cached("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?1")?
                .execute([now])?;
            let out = f(&Tx { tx: &tx, now })?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// An error of `op` on `key`, worded: what failed, and what to do.
    fn error(&self, op: &'static str, key: &str, fail: Fail, doing: &str) -> Error {
        let store_error = |reason: String| Error::Store {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            reason,
        };
        let timeout = || Error::Timeout {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            after: self.timeout,
            waiting: Waiting::Lock,
        };
        let path = self.path.display();
        match fail {
            Fail::Busy => timeout(),
            Fail::Other(reason) => store_error(reason),
            Fail::Sql(e) => {
                let code = e.sqlite_error_code();
                let what = if doing.is_empty() {
                    String::new()
                } else {
                    format!("cannot {doing} {path}: ")
                };
                match code {
                    Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => timeout(),
                    Some(ErrorCode::NotADatabase) => store_error(format!(
                        "{path} is not an SQLite database: point the URL at a libkv database \
                         file (or a path where none is yet), or move that file away"
                    )),
                    Some(ErrorCode::DatabaseCorrupt) => store_error(format!(
                        "{what}the database {path} is damaged ({e}): restore it from a backup"
                    )),
                    Some(ErrorCode::CannotOpen)
                    | Some(ErrorCode::PermissionDenied)
                    | Some(ErrorCode::ReadOnly) => store_error(format!(
                        "{what}{e}: give the user running Puppet read and write access to {path} \
                         and to its directory, where SQLite keeps {path}-wal and {path}-shm"
                    )),
                    Some(ErrorCode::DiskFull) => store_error(format!(
                        "{what}{e}: free space on the file system of {path}"
                    )),
                    _ => store_error(format!("{what}{e} ({path})")),
                }
            }
        }
    }

    /// The target's live entries (whole keys), and the earliest of their expiries
    /// (unix ms), inside the read transaction `tx`.
    fn read_rows(
        tx: &rusqlite::Transaction<'_>,
        target: &Target,
        now: i64,
    ) -> SqlResult<(Entries, Option<i64>)> {
        let mut entries = Vec::new();
        let mut earliest: Option<i64> = None;
        let mut take = |row: &rusqlite::Row<'_>| -> rusqlite::Result<()> {
            if let Some((key, v, expires)) = row_of(row)? {
                if let Some(at) = expires {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
                entries.push((key, v));
            }
            Ok(())
        };
        if target.tree {
            let (from, to) = bounds(&target.key);
            let prefix_len = from.len();
            let mut stmt = tx.prepare_cached(LIST)?;
            let mut rows = stmt.query(params![from, to, now])?;
            while let Some(row) = rows.next()? {
                take(row)?;
            }
            entries.retain(|(key, _)| target.key.lists(&key[prefix_len..]));
        } else {
            let mut stmt = tx.prepare_cached(GET)?;
            let mut rows = stmt.query(params![target.key.as_str(), now])?;
            if let Some(row) = rows.next()? {
                take(row)?;
            }
        }
        Ok((entries, earliest))
    }

    /// The live entries below `dir`, relative to it, sorted, in one statement.
    fn below(&self, op: &'static str, dir: &Key) -> Result<Listing<Versioned>> {
        let (from, to) = bounds(dir);
        self.with(op, dir.as_str(), |conn| {
            let mut stmt = conn.prepare_cached(LIST)?;
            let mut rows = stmt.query(params![from, to, expiry::now_ms() as i64])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                if let Some((key, v, _)) = row_of(row)? {
                    let rel = &key[from.len()..];
                    if dir.lists(rel) {
                        out.push((rel.to_owned(), v));
                    }
                }
            }
            Ok(out)
        })
    }

    /// The key's live row, in one statement.
    fn live(&self, op: &'static str, key: &Key) -> Result<Option<Versioned>> {
        self.with(op, key.as_str(), |conn| {
            let mut stmt = conn.prepare_cached(GET)?;
            let mut rows = stmt.query(params![key.as_str(), expiry::now_ms() as i64])?;
            match rows.next()? {
                Some(row) => Ok(row_of(row)?.map(|(_, v, _)| v)),
                None => Ok(None),
            }
        })
    }

    /// Writes `value` at `key` with a ttl (`None`: none) if its sequence is still
    /// `previous` (`None`: whatever it is); its new sequence, `None` when
    /// `previous` did not match.
    fn write_key(
        &self,
        op: &'static str,
        key: &Key,
        value: &[u8],
        previous: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>> {
        self.write(op, key.as_str(), |tx| {
            let current = tx.current(key.as_str())?;
            if previous.is_some_and(|p| p != current) {
                return Ok(None);
            }
            let expires = ttl.map(|ttl| tx.now.saturating_add(ttl.as_millis() as i64));
            Ok(Some(tx.upsert(key.as_str(), value, current, expires)?))
        })
    }

    /// The store's counter: the last sequence issued.
    fn counter(&self, op: &'static str, key: &str) -> Result<u64> {
        self.with(op, key, |conn| {
            Ok(
                conn.query_row("SELECT last FROM counter WHERE id = 1", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            )
        })
    }
}

/// Whole keys with their values and sequences.
type Entries = Vec<(String, Versioned)>;
/// A row of `kv`: key, value and sequence, expires.
type Row = (String, Versioned, Option<i64>);

const GET: &str = "SELECT key, value, sequence, expires FROM kv \
                   WHERE key = ?1 AND (expires IS NULL OR expires > ?2)";
const LIST: &str = "SELECT key, value, sequence, expires FROM kv \
                    WHERE key >= ?1 AND key < ?2 AND (expires IS NULL OR expires > ?3) \
                    ORDER BY key";

/// The range of keys below `dir`: from its prefix (`/a/`) to the prefix with its
/// last byte, `/`, made the next one, `0` (`/a0`). Keys compare as bytes.
fn bounds(dir: &Key) -> (String, String) {
    let from = dir.dir_prefix();
    let to = format!("{}0", &from[..from.len() - 1]);
    (from, to)
}

/// A row of `kv` as (key, value and sequence, expires); `None` for a row no libkv
/// key can be (another client's: a key that is not text, a sequence not > 0).
fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Row>> {
    let Ok(key) = row.get_ref(0)?.as_str() else {
        return Ok(None);
    };
    let value = match row.get_ref(1)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(f) => f.to_string().into_bytes(),
        ValueRef::Null => return Ok(None),
    };
    let sequence = match row.get_ref(2)? {
        ValueRef::Integer(i) if i > 0 => i as u64,
        _ => return Ok(None),
    };
    let expires = match row.get_ref(3)? {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    };
    Ok(Some((
        key.to_owned(),
        Versioned { value, sequence },
        expires,
    )))
}

/// A write transaction under way, and its time (unix ms).
struct Tx<'a, 'c> {
    tx: &'a rusqlite::Transaction<'c>,
    now: i64,
}

impl Tx<'_, '_> {
    /// The key's sequence, 0 when absent (expired rows were deleted already).
    fn current(&self, key: &str) -> SqlResult<u64> {
        let seq: Option<i64> = self
            .tx
            .prepare_cached("SELECT sequence FROM kv WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        Ok(seq.map_or(0, |s| s.max(0) as u64))
    }

    /// Takes the next sequence: one past the counter and `floor`.
    fn next(&self, floor: u64) -> SqlResult<u64> {
        let seq: i64 = self
            .tx
            .prepare_cached(
                "UPDATE counter SET last = max(last, ?1) + 1 WHERE id = 1 RETURNING last",
            )?
            .query_row([floor as i64], |r| r.get(0))
            .optional()?
            .ok_or_else(|| {
                Fail::Other(
                    "the database's counter row is missing (table counter, id 1): restore the \
                     database from a backup"
                        .into(),
                )
            })?;
        Ok(seq as u64)
    }

    /// Writes the key with a new sequence; answers it.
    fn upsert(
        &self,
        key: &str,
        value: &[u8],
        current: u64,
        expires: Option<i64>,
    ) -> SqlResult<u64> {
        let seq = self.next(current)?;
        self.tx
            .prepare_cached(
                "INSERT INTO kv (key, value, sequence, expires) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                 sequence = excluded.sequence, expires = excluded.expires",
            )?
            .execute(params![key, value, seq as i64, expires])?;
        Ok(seq)
    }

    /// Deletes the key; a new sequence is taken when it was there.
    fn delete(&self, key: &str) -> SqlResult<bool> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM kv WHERE key = ?1")?
            .execute([key])?;
        if n > 0 {
            self.next(0)?;
        }
        Ok(n > 0)
    }
}

fn unknown_schema(path: &Path, version: i64) -> Fail {
    Fail::Other(format!(
        "{} has libkv schema version {version} (PRAGMA user_version), which this libkv \
         (schema {SCHEMA_VERSION}) does not know: use the libkv that wrote it, or a newer one",
        path.display()
    ))
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "; give the user running Puppet read and write access to the database file and \
             its directory"
        }
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "; free space on the file system",
        Some(libc::EROFS) => "; the file system is read-only",
        Some(libc::ENOTDIR) => "; a part of the path is a file, not a directory",
        Some(libc::ELOOP) => "; check the links in the path",
        _ => "",
    }
}

impl Store for SqliteStore {
    fn provider(&self) -> &'static str {
        "sqlite"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        Ok(self.live("get", key)?.map(|v| v.value))
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<()> {
        self.write_key("put", key, value, None, None)?;
        Ok(())
    }

    fn delete(&self, key: &Key) -> Result<()> {
        self.write("delete", key.as_str(), |tx| tx.delete(key.as_str()))?;
        Ok(())
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        self.with("exists", key.as_str(), |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM kv WHERE key = ?1 AND (expires IS NULL OR expires > ?2) \
                     AND sequence > 0",
                )?
                .exists(params![key.as_str(), expiry::now_ms() as i64])?)
        })
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        Ok(self
            .below("list", dir)?
            .into_iter()
            .map(|(rel, v)| (rel, v.value))
            .collect())
    }

    fn deletetree(&self, dir: &Key) -> Result<()> {
        let (from, to) = bounds(dir);
        self.write("deletetree", dir.as_str(), |tx| {
            let n = tx
                .tx
                .prepare_cached("DELETE FROM kv WHERE key >= ?1 AND key < ?2")?
                .execute([&from, &to])?;
            if n > 0 {
                tx.next(0)?;
            }
            Ok(())
        })
    }

    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool> {
        Ok(self
            .write_key("atomic_create", key, value, Some(0), None)?
            .is_some())
    }

    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>> {
        self.live("atomic_get", key)
    }

    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool> {
        Ok(self
            .write_key("atomic_put", key, value, Some(previous), None)?
            .is_some())
    }

    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool> {
        self.write("atomic_delete", key.as_str(), |tx| {
            let current = tx.current(key.as_str())?;
            if current != previous {
                return Ok(false);
            }
            if current != 0 {
                tx.delete(key.as_str())?;
            }
            Ok(true)
        })
    }

    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>> {
        self.below("atomic_list", dir)
    }

    /// One transaction per chunk of [`PUT_MANY_CHUNK`] entries.
    fn put_many(&self, entries: &[(Key, Vec<u8>)]) -> Result<()> {
        for chunk in entries.chunks(PUT_MANY_CHUNK) {
            let first = chunk[0].0.as_str();
            self.write("put", first, |tx| {
                for (key, value) in chunk {
                    let current = tx.current(key.as_str())?;
                    tx.upsert(key.as_str(), value, current, None)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn put_ttl(
        &self,
        key: &Key,
        value: &[u8],
        previous: Option<u64>,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let op = crate::store::ttl_write_op(previous);
        self.write_key(op, key, value, previous, Some(ttl))
    }

    /// A watcher woken by the kernel's change notification on the database's
    /// files (see the module).
    fn watch(
        self: Arc<Self>,
        target: &Target,
        from: Option<u64>,
    ) -> Result<Option<Box<dyn Watcher>>> {
        // The database (and its directory, which the notifier watches) made
        // first, as the first call of a new store makes them.
        let op = if target.tree { "watchtree" } else { "watch" };
        self.with(op, target.key.as_str(), |_| Ok(()))?;
        let source = SqliteSource {
            store: self,
            target: target.clone(),
            notifier: None,
            read_by: None,
            woken: false,
            last_index: None,
            recheck: None,
        };
        Ok(Some(Box::new(Coalescing::start(
            source,
            target.clone(),
            from,
        )?)))
    }

    fn info(&self) -> Result<Value> {
        let counter = self.counter("info", "")?;
        Ok(Value::hash([
            ("provider", Value::from("sqlite")),
            ("url", Value::from(self.url.as_str())),
            ("path", Value::from(self.path.display().to_string())),
            ("sqlite_version", Value::from(rusqlite::version())),
            ("schema_version", Value::from(SCHEMA_VERSION)),
            ("journal_mode", Value::from("wal")),
            ("sequence", Value::from(counter as i64)),
        ]))
    }
}

/// What a watch of the store reads from: woken by inotify, it reads the counter
/// and the target in one transaction.
struct SqliteSource {
    store: Arc<SqliteStore>,
    target: Target,
    /// `None` until the first call, and after its thread ended.
    notifier: Option<Notifier>,
    /// When to read without a notification; `None`: at once.
    read_by: Option<Instant>,
    /// Whether a notification came since the last read.
    woken: bool,
    /// The counter at the last read.
    last_index: Option<u64>,
    /// After a notification whose read found the counter unchanged, the pause
    /// before reading again (see [`RECHECK_MAX`]).
    recheck: Option<Duration>,
}

/// The longest pause of the reads again after a notification that found nothing
/// new: the last event of a commit comes from writing its WAL frames, before the
/// fsync and the WAL index update that make it visible, which raise no event. So
/// such a read is followed by more, 2, 4, ... 64 ms later, until one sees the
/// commit (else the read every second does).
const RECHECK_MAX: Duration = Duration::from_millis(64);

impl SqliteSource {
    fn failed(&self, reason: impl Display) -> Error {
        Error::Store {
            op: self.target.op(),
            key: self.target.key.as_str().to_owned(),
            store: self.store.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// This process's notifier (a forked child leaves its parent's alone and
    /// makes its own); a new one reads at once.
    fn notifier(&mut self) -> Result<()> {
        if self.notifier.as_ref().is_some_and(|n| n.pid != fork::pid()) {
            std::mem::forget(self.notifier.take());
        }
        if self.notifier.is_none() {
            let made = Notifier::new(&self.store.path).map_err(|e| {
                self.failed(format_args!(
                    "cannot watch {} for changes (inotify): {e}",
                    self.store.path.display()
                ))
            })?;
            self.notifier = Some(made);
            self.read_by = None;
        }
        Ok(())
    }

    /// Waits for a notification until `read_by` or `deadline`; whether to read now.
    fn wait(&mut self, deadline: Instant, read_by: Instant) -> bool {
        let Some(notifier) = self.notifier.as_mut() else {
            return true;
        };
        loop {
            let now = Instant::now();
            if now >= read_by {
                return true;
            }
            if now >= deadline {
                return false;
            }
            match notifier.events.recv_timeout(deadline.min(read_by) - now) {
                Ok(()) => {
                    self.woken = true;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Its thread is gone: a new notifier at the next call.
                    std::mem::forget(self.notifier.take());
                    return true;
                }
            }
        }
        let now = Instant::now();
        let until = (now + DEBOUNCE).min(deadline.max(now));
        if until > now {
            std::thread::sleep(until - now);
        }
        true
    }

    fn read(&mut self) -> Result<Snapshot> {
        self.read_by = Some(Instant::now() + RESCAN);
        if let Some(n) = self.notifier.as_mut() {
            n.pending.store(false, Ordering::SeqCst);
            while n.events.try_recv().is_ok() {}
        }
        let target = self.target.clone();
        let now = expiry::now_ms() as i64;
        let (index, entries, earliest) =
            self.store.with(target.op(), target.key.as_str(), |conn| {
                let tx = conn.transaction()?;
                let index: i64 =
                    tx.query_row("SELECT last FROM counter WHERE id = 1", [], |r| r.get(0))?;
                let (entries, earliest) = SqliteStore::read_rows(&tx, &target, now)?;
                tx.commit()?;
                Ok((index as u64, entries, earliest))
            })?;
        let nothing_new = Some(index) == self.last_index;
        self.recheck = match self.recheck {
            _ if !nothing_new => None,
            None if self.woken => Some(Duration::from_millis(2)),
            Some(pause) if pause < RECHECK_MAX => Some(pause * 2),
            _ => None,
        };
        self.woken = false;
        self.last_index = Some(index);
        if let Some(pause) = self.recheck {
            let at = Instant::now() + pause;
            self.read_by = self.read_by.map(|by| by.min(at));
        }
        if let Some(at) = earliest {
            let left =
                Duration::from_millis(at.saturating_sub(expiry::now_ms() as i64).max(0) as u64);
            let at = Instant::now() + left + EXPIRY_SLACK;
            self.read_by = self.read_by.map(|by| by.min(at));
        }
        Ok(Snapshot { index, entries })
    }
}

impl Source for SqliteSource {
    fn next(&mut self, deadline: Instant) -> Result<Option<Snapshot>> {
        self.notifier()?;
        if let Some(read_by) = self.read_by {
            if !self.wait(deadline, read_by) {
                return Ok(None);
            }
        }
        self.notifier()?;
        self.read().map(Some)
    }
}

/// notify's watcher of the database's directory (its thread and inotify
/// instance), and what it sends: `()` for "the database may have changed".
struct Notifier {
    /// Always there but while being dropped.
    watcher: Option<RecommendedWatcher>,
    events: Receiver<()>,
    /// Whether a notice was sent that no read has begun after: one per burst.
    pending: Arc<AtomicBool>,
    pid: u32,
}

impl Notifier {
    fn new(db: &Path) -> notify::Result<Notifier> {
        let (tx, events) = mpsc::channel();
        let pending = Arc::new(AtomicBool::new(false));
        let sent = Arc::clone(&pending);
        let name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let mut wal = name.clone();
        wal.push("-wal");
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = &event {
                let ours = event.need_rescan()
                    || event.paths.is_empty()
                    || event.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|n| n == name.as_os_str() || n == wal.as_os_str())
                    });
                let kind = match event.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => false,
                    _ => true,
                };
                if !(ours && kind) {
                    return;
                }
            }
            if !sent.swap(true, Ordering::SeqCst) {
                let _ = tx.send(());
            }
        };
        let dir = db.parent().unwrap_or(Path::new("/")).to_path_buf();
        let config = Config::default().with_follow_symlinks(false);
        let mut watcher = guarded(|| RecommendedWatcher::new(handler, config))?;
        guarded(|| watcher.watch(&dir, RecursiveMode::NonRecursive))?;
        Ok(Notifier {
            watcher: Some(watcher),
            events,
            pending,
            pid: fork::pid(),
        })
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(watcher)));
        }
    }
}

/// notify's call, a panic of which (its thread is gone) is an error.
fn guarded<T>(call: impl FnOnce() -> notify::Result<T>) -> notify::Result<T> {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(notify::Error::generic(
            "the thread that waits for inotify's notifications is gone",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cover_exactly_the_keys_below() {
        let d = |s: &str| Key::dir(s).unwrap();
        assert_eq!(bounds(&d("/a")), ("/a/".to_owned(), "/a0".to_owned()));
        assert_eq!(bounds(&d("/")), ("/".to_owned(), "0".to_owned()));
        // Every byte a key may hold after the prefix sorts inside; the ones of
        // siblings outside.
        let (from, to) = bounds(&d("/a"));
        for key in ["/a/-", "/a/.x", "/a/0", "/a/Z", "/a/z", "/a/_", "/a/:"] {
            assert!(key >= from.as_str() && key < to.as_str(), "{key}");
        }
        for key in ["/a", "/a-b", "/a.b", "/a0", "/aa", "/a:"] {
            assert!(!(key >= from.as_str() && key < to.as_str()), "{key}");
        }
    }
}
