//! The conformance suite on `sqlite://`, and what only the SQLite store promises: its
//! schema readable by the `sqlite3` shell, sequences across reopening, racing and
//! killed processes, its write lock and timeout, forks, watches, bad paths.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{d, k};
use libkv_core::watch::{Event, EventKind, Target, Watcher};
use libkv_core::{open, ErrorKind, OpenOptions, Store};
use tempfile::TempDir;

fn open_at(path: &Path, timeout: Duration) -> libkv_core::Result<Arc<dyn Store>> {
    open(
        &format!("sqlite://{}", path.display()),
        &OpenOptions {
            timeout,
            ..OpenOptions::default()
        },
    )
}

fn store_at(path: &Path) -> Arc<dyn Store> {
    open_at(path, Duration::from_secs(5)).unwrap()
}

/// A store in a fresh database, in a directory that does not exist yet.
fn sqlite_store() -> (Arc<dyn Store>, TempDir) {
    let dir = TempDir::new().unwrap();
    let store = store_at(&dir.path().join("db/libkv.db"));
    (store, dir)
}

conformance_tests!(coordination sqlite_store());

fn db_of(tmp: &TempDir) -> PathBuf {
    tmp.path().join("db/libkv.db")
}

/// The `sqlite3` shell's answer to `sql` on the database.
fn shell(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 shell");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

#[test]
fn the_sqlite3_shell_reads_what_libkv_wrote() {
    let (store, tmp) = sqlite_store();
    let db = db_of(&tmp);
    store.put(&k("/app/password"), b"hunter2").unwrap();
    store.put(&k("/app/bytes"), &[0xff, 0x00, 0x01]).unwrap();
    let seq = common::sequence(&*store, "/app/password");
    // The command the module's documentation gives.
    assert_eq!(
        shell(
            &db,
            "SELECT CAST(value AS TEXT) FROM kv WHERE key = '/app/password' \
             AND (expires IS NULL OR expires > (julianday('now') - 2440587.5) * 86400000)"
        ),
        "hunter2"
    );
    assert_eq!(
        shell(&db, "SELECT hex(value) FROM kv WHERE key = '/app/bytes'"),
        "FF0001"
    );
    assert_eq!(
        shell(&db, "SELECT sequence FROM kv WHERE key = '/app/password'"),
        seq.to_string()
    );
    assert_eq!(shell(&db, "PRAGMA journal_mode"), "wal");
    assert_eq!(shell(&db, "PRAGMA user_version"), "1");
    assert_eq!(
        shell(&db, "SELECT last FROM counter"),
        common::sequence(&*store, "/app/bytes").to_string()
    );
    // Written by the shell, read by libkv (another client of the file).
    shell(
        &db,
        "INSERT INTO kv (key, value, sequence) VALUES ('/from/shell', 'typed', \
         (SELECT last + 1 FROM counter)); UPDATE counter SET last = last + 1",
    );
    assert_eq!(
        store.get(&k("/from/shell")).unwrap().as_deref(),
        Some(&b"typed"[..])
    );
    // Names no key can have are not listed.
    shell(
        &db,
        "INSERT INTO kv (key, value, sequence) VALUES ('/from/sp ace', 'x', 1000000), \
         ('/from/', 'x', 1000000), ('/from//x', 'x', 1000000)",
    );
    assert_eq!(
        store.list(&d("/from")).unwrap(),
        vec![("shell".to_owned(), b"typed".to_vec())]
    );
    // Modes: as the file store's root and files.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o640);
    assert_eq!(mode(db.parent().unwrap()), 0o750);
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    assert_eq!(mode(&wal), 0o640, "the WAL takes the database's mode");
}

#[test]
fn a_key_and_keys_below_it_live_side_by_side() {
    let (store, _tmp) = sqlite_store();
    store.put(&k("/a"), b"a").unwrap();
    store.put(&k("/a/b"), b"b").unwrap();
    store.put(&k("/a-b"), b"sibling").unwrap();
    store.put(&k("/a0"), b"sibling").unwrap();
    assert_eq!(store.get(&k("/a")).unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(
        store.list(&d("/a")).unwrap(),
        vec![("b".to_owned(), b"b".to_vec())]
    );
    store.deletetree(&d("/a")).unwrap();
    assert!(store.exists(&k("/a")).unwrap(), "deletetree is below only");
    assert!(!store.exists(&k("/a/b")).unwrap());
    assert!(store.exists(&k("/a-b")).unwrap() && store.exists(&k("/a0")).unwrap());
}

#[test]
fn sequences_only_grow_across_delete_create_and_reopening() {
    let tmp = TempDir::new().unwrap();
    let db = tmp.path().join("s.db");
    let mut seen = Vec::new();
    for round in 0..3 {
        // Every store object of the path dropped: the connection is closed.
        let store = store_at(&db);
        store.put(&k("/s/key"), b"v").unwrap();
        seen.push(common::sequence(&*store, "/s/key"));
        store.delete(&k("/s/key")).unwrap();
        assert!(store.atomic_create(&k("/s/key"), b"again").unwrap());
        seen.push(common::sequence(&*store, "/s/key"));
        if round == 2 {
            assert!(!store.atomic_put(&k("/s/key"), b"x", seen[0]).unwrap());
        }
        store.delete(&k("/s/key")).unwrap();
        drop(store);
    }
    println!("sequences across delete, create and reopening: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
    // Store objects of one path share one connection and one counter.
    let (a, b) = (store_at(&db), store_at(&db));
    a.put(&k("/x"), b"1").unwrap();
    b.put(&k("/y"), b"2").unwrap();
    assert!(common::sequence(&*b, "/y") > common::sequence(&*a, "/x"));
    assert!(common::sequence(&*a, "/x") > *seen.last().unwrap());
}

#[test]
fn expiry_is_a_column_beside_the_plain_value() {
    let (store, tmp) = sqlite_store();
    let db = db_of(&tmp);
    let ttl = Duration::from_secs(1);
    let seq = store
        .put_ttl(&k("/reg/web01"), b"10.0.0.1", None, ttl)
        .unwrap()
        .unwrap();
    store.put(&k("/reg/plain"), b"p").unwrap();
    let row = shell(
        &db,
        "SELECT CAST(value AS TEXT), sequence, expires - (julianday('now') - 2440587.5) * 86400000 > 500, \
         expires IS NULL FROM kv WHERE key = '/reg/web01'",
    );
    assert_eq!(row, format!("10.0.0.1|{seq}|1|0"));
    // Another store object of another path spelling? The same file, reopened.
    let again = store_at(&db);
    assert!(again.exists(&k("/reg/web01")).unwrap());
    std::thread::sleep(ttl + Duration::from_millis(50));
    assert!(!again.exists(&k("/reg/web01")).unwrap());
    assert_eq!(again.get(&k("/reg/web01")).unwrap(), None);
    assert_eq!(
        again.list(&d("/reg")).unwrap(),
        vec![("plain".to_owned(), b"p".to_vec())]
    );
    // The row stays until a write deletes it.
    assert_eq!(shell(&db, "SELECT count(*) FROM kv"), "2");
    again.put(&k("/other"), b"x").unwrap();
    assert_eq!(
        shell(&db, "SELECT key FROM kv ORDER BY key"),
        "/other\n/reg/plain"
    );
}

/// With `LIBKV_TEST_SQLITE_WORKER_DB` set, a worker process of
/// `processes_racing_increments_end_with_the_exact_count`.
#[test]
fn worker_process() {
    let Ok(db) = std::env::var("LIBKV_TEST_SQLITE_WORKER_DB") else {
        return;
    };
    let count: usize = std::env::var("LIBKV_TEST_SQLITE_WORKER_COUNT")
        .unwrap()
        .parse()
        .unwrap();
    let store = open_at(Path::new(&db), Duration::from_secs(30)).unwrap();
    for _ in 0..count {
        common::increment(&*store, &k("/counter"));
    }
}

#[test]
fn processes_racing_increments_end_with_the_exact_count() {
    let tmp = TempDir::new().unwrap();
    let db = tmp.path().join("race.db");
    // Both databases are new: the workers race to make the schema too (the
    // second in a directory none of them has made yet).
    let (processes, each) = (8, 50);
    for db in [db.clone(), tmp.path().join("fresh/race.db")] {
        let started = Instant::now();
        let children: Vec<_> = (0..processes)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "worker_process", "--test-threads=1"])
                    .env("LIBKV_TEST_SQLITE_WORKER_DB", &db)
                    .env("LIBKV_TEST_SQLITE_WORKER_COUNT", each.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let took = started.elapsed();
        let store = store_at(&db);
        let count = store.get(&k("/counter")).unwrap().unwrap();
        println!(
            "{processes} processes x {each} increments: {} in {took:?}",
            String::from_utf8_lossy(&count)
        );
        assert_eq!(
            String::from_utf8(count).unwrap(),
            (processes * each).to_string()
        );
    }
}

/// With `LIBKV_TEST_SQLITE_ACK_DB` set, a worker of
/// `every_acknowledged_write_survives_sigkill`: writes keys one after another and
/// prints `ACK n` once the write of `/ack/n` returned, until killed.
#[test]
fn ack_writer_process() {
    let Ok(db) = std::env::var("LIBKV_TEST_SQLITE_ACK_DB") else {
        return;
    };
    let store = store_at(Path::new(&db));
    let mut out = std::io::stdout();
    for n in 0u64.. {
        let value = format!("value {n}");
        store
            .put(&k(&format!("/ack/{n}")), value.as_bytes())
            .unwrap();
        writeln!(out, "ACK {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let tmp = TempDir::new().unwrap();
    let db = tmp.path().join("ack.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ack_writer_process",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("LIBKV_TEST_SQLITE_ACK_DB", &db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The harness prints the test's name on the line where the first ACK goes.
    let ack = |line: &str| line.split("ACK ").nth(1).map(|n| n.parse::<u64>().unwrap());
    let mut acked = Vec::new();
    let mut started = None;
    // Killed mid-run: 200 ms into its writing (and 20 writes at least), at
    // whatever it is doing then.
    while started.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(200))
        || acked.len() < 20
    {
        let line = lines.next().expect("the writer ended").unwrap();
        if let Some(n) = ack(&line) {
            started.get_or_insert_with(Instant::now);
            acked.push(n);
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What it acknowledged before dying and we had not read yet counts too.
    for line in lines {
        if let Some(n) = ack(&line.unwrap()) {
            acked.push(n);
        }
    }
    assert_eq!(acked, (0..acked.len() as u64).collect::<Vec<_>>());
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
    let store = store_at(&db);
    for n in &acked {
        assert_eq!(
            store.get(&k(&format!("/ack/{n}"))).unwrap(),
            Some(format!("value {n}").into_bytes()),
            "/ack/{n} was acknowledged"
        );
    }
    let stored = store.list(&d("/ack")).unwrap().len();
    println!(
        "SIGKILL after {} acknowledged writes: all {} read back ({stored} stored)",
        acked.len(),
        acked.len()
    );
    assert!(stored >= acked.len() && stored <= acked.len() + 1);
}

#[test]
fn a_writer_holding_the_lock_makes_a_call_fail_within_the_timeout() {
    let tmp = TempDir::new().unwrap();
    let db = tmp.path().join("locked.db");
    let store = open_at(&db, Duration::from_millis(300)).unwrap();
    store.put(&k("/held"), b"before").unwrap();
    // Another process holds the write lock: the sqlite3 shell in BEGIN IMMEDIATE.
    let mut holder = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(stdin, "BEGIN IMMEDIATE; SELECT 'locked';").unwrap();
    stdin.flush().unwrap();
    let mut answer = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut answer)
        .unwrap();
    assert_eq!(answer.trim(), "locked");
    let mut took = Vec::new();
    for (op, call) in [
        (
            "put",
            Box::new(|| store.put(&k("/held"), b"after")) as Box<dyn Fn() -> _>,
        ),
        (
            "atomic_put",
            Box::new(|| store.atomic_put(&k("/held"), b"after", 1).map(|_| ())),
        ),
        ("deletetree", Box::new(|| store.deletetree(&d("/")))),
    ] {
        let started = Instant::now();
        let err = call().unwrap_err();
        let waited = started.elapsed();
        took.push((op, waited));
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(op) && text.contains(&format!("sqlite://{}", db.display())),
            "{text}"
        );
        assert!(text.contains("timed out after 0.3s"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_millis(600),
            "{op}: {waited:?}"
        );
        if op == "put" {
            println!("{err}");
        }
    }
    println!("calls failed against a held write lock after {took:?}");
    // Reads go on (WAL).
    assert_eq!(
        store.get(&k("/held")).unwrap().as_deref(),
        Some(&b"before"[..])
    );
    writeln!(stdin, "COMMIT;").unwrap();
    drop(stdin);
    holder.wait().unwrap();
    store.put(&k("/held"), b"after").unwrap();
    assert_eq!(
        store.get(&k("/held")).unwrap().as_deref(),
        Some(&b"after"[..])
    );
}

/// Calls of one process wait for each other (one connection) at most the timeout
/// all told, not the timeout once per wait.
#[test]
fn threads_of_one_process_share_the_connection_within_the_timeout() {
    let tmp = TempDir::new().unwrap();
    let db = tmp.path().join("threads.db");
    let store = open_at(&db, Duration::from_millis(300)).unwrap();
    store.put(&k("/k"), b"0").unwrap();
    let mut holder = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(stdin, "BEGIN IMMEDIATE; SELECT 'locked';").unwrap();
    let mut answer = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut answer)
        .unwrap();
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let err = store.put(&k("/k"), b"x").unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let took = started.elapsed();
    println!("4 threads against a held lock all failed after {took:?}");
    assert!(took < Duration::from_millis(700), "{took:?}");
    writeln!(stdin, "COMMIT;").unwrap();
    drop(stdin);
    holder.wait().unwrap();
}

/// With `LIBKV_TEST_SQLITE_FORK_DB` set, a worker of
/// `a_forked_child_uses_its_own_connection` (alone in its process, so that the
/// child meets no lock of another test's thread).
#[test]
fn fork_process() {
    let Ok(db) = std::env::var("LIBKV_TEST_SQLITE_FORK_DB") else {
        return;
    };
    let db = PathBuf::from(db);
    let store = store_at(&db);
    store.put(&k("/forked/parent"), b"p").unwrap();
    assert_eq!(opened(&db), 1, "the parent's connection has the file open");
    // SAFETY: the child calls the store, then _exit, never returning into the
    // test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = (|| {
            let parent = store.get(&k("/forked/parent")).ok()??;
            if parent != b"p" {
                return Some(2);
            }
            store.put(&k("/forked/child"), b"c").ok()?;
            let seq = store.atomic_get(&k("/forked/child")).ok()??.sequence;
            if !store.atomic_put(&k("/forked/child"), b"c2", seq).ok()? {
                return Some(3);
            }
            // Its own connection, and none inherited: the parent's was closed
            // before the fork, so the database file is open once, here.
            if opened(&db) != 1 {
                return Some(4);
            }
            // Dropping its store object closes its own connection, never the
            // parent's.
            drop(store);
            Some(0)
        })()
        .unwrap_or(1);
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    let started = Instant::now();
    loop {
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the forked child hung");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(libc::WIFEXITED(status), "the child died: {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "the child failed");
    // The parent goes on with its connection, and sees the child's write.
    assert_eq!(
        store.get(&k("/forked/child")).unwrap().as_deref(),
        Some(&b"c2"[..])
    );
    store.put(&k("/forked/after"), b"a").unwrap();
    assert!(
        PathBuf::from(format!("{}-wal", db.display())).exists(),
        "the parent's WAL is still there"
    );
    assert_eq!(
        store.list(&d("/forked")).unwrap().len(),
        3,
        "parent, child, after"
    );
}

/// How many of this process's descriptors have `path` open.
fn opened(path: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[test]
fn a_forked_child_uses_its_own_connection() {
    let tmp = TempDir::new().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fork_process", "--test-threads=1"])
        .env("LIBKV_TEST_SQLITE_FORK_DB", tmp.path().join("fork.db"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let store = store_at(&tmp.path().join("fork.db"));
    assert_eq!(store.list(&d("/forked")).unwrap().len(), 3);
    assert_eq!(
        shell(&tmp.path().join("fork.db"), "PRAGMA integrity_check"),
        "ok"
    );
}

/// The store's own watcher.
fn own_watcher(store: &Arc<dyn Store>, key: &str, tree: bool) -> Box<dyn Watcher> {
    let key = if tree { d(key) } else { k(key) };
    Arc::clone(store)
        .watch(&Target { key, tree }, None)
        .unwrap()
        .expect("the sqlite store has its own watcher")
}

fn first_event(w: &mut dyn Watcher, done: impl Fn(&Event) -> bool) -> (Event, Instant) {
    let events = common::events_until(w, &done);
    let at = Instant::now();
    (events.into_iter().find(|e| done(e)).unwrap(), at)
}

/// Well below the re-read a watch makes every second without a notification.
const WAKE: Duration = Duration::from_millis(50);

/// With `LIBKV_TEST_SQLITE_WATCH_DB` set, a worker of
/// `a_write_by_another_process_wakes_the_watch_at_once`: writes the value, then
/// records when the write returned (ns of the system clock).
#[test]
fn watch_writer_process() {
    let Ok(db) = std::env::var("LIBKV_TEST_SQLITE_WATCH_DB") else {
        return;
    };
    let value = std::env::var("LIBKV_TEST_SQLITE_WATCH_VALUE").unwrap();
    let store = store_at(Path::new(&db));
    // Opened before the moment measured: the write alone.
    std::thread::sleep(Duration::from_millis(50));
    store.put(&k("/p/key"), value.as_bytes()).unwrap();
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    fs::write(
        std::env::var("LIBKV_TEST_SQLITE_WATCH_AT").unwrap(),
        at.as_nanos().to_string(),
    )
    .unwrap();
}

#[test]
fn a_write_by_another_process_wakes_the_watch_at_once() {
    let (store, tmp) = sqlite_store();
    let db = db_of(&tmp);
    let mut w = own_watcher(&store, "/p/key", false);
    let mut took = Vec::new();
    for i in 1..=5 {
        let value = format!("from process {i}");
        let at_file = tmp.path().join(format!("written-at-{i}"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "watch_writer_process", "--test-threads=1"])
            .env("LIBKV_TEST_SQLITE_WATCH_DB", &db)
            .env("LIBKV_TEST_SQLITE_WATCH_VALUE", &value)
            .env("LIBKV_TEST_SQLITE_WATCH_AT", &at_file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (event, _) = first_event(&mut *w, |e| e.value == value.as_bytes());
        let seen = SystemTime::now();
        assert!(child.wait().unwrap().success());
        let written: u64 = fs::read_to_string(&at_file).unwrap().parse().unwrap();
        let written = UNIX_EPOCH + Duration::from_nanos(written);
        assert_eq!(event.sequence, common::sequence(&*store, "/p/key"));
        took.push(seen.duration_since(written).unwrap_or_default());
    }
    println!("wake after a write by another process (after it returned): {took:?}");
    let worst = *took.iter().max().unwrap();
    assert!(
        worst < WAKE,
        "a watch woke {worst:?} after a write: {took:?}"
    );
}

#[test]
fn a_write_by_another_store_object_wakes_the_watch_at_once() {
    let (store, tmp) = sqlite_store();
    let other = store_at(&db_of(&tmp));
    store.put(&k("/n/key"), b"0").unwrap();
    let mut w = own_watcher(&store, "/n", true);
    let mut took = Vec::new();
    for i in 1..=5u64 {
        let value = i.to_string();
        let writer = {
            let (other, value) = (Arc::clone(&other), value.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20 + 37 * i));
                other.put(&k("/n/key"), value.as_bytes()).unwrap();
                Instant::now()
            })
        };
        let (event, seen) = first_event(&mut *w, |e| e.value == value.as_bytes());
        let written = writer.join().unwrap();
        assert_eq!(event.kind, EventKind::Put);
        took.push(seen.saturating_duration_since(written));
    }
    println!("wake after a write by another store object of this process: {took:?}");
    let worst = *took.iter().max().unwrap();
    assert!(worst < WAKE, "{took:?}");
}

#[test]
fn a_watched_key_whose_ttl_passes_is_handed_out_as_deleted() {
    let (store, _tmp) = sqlite_store();
    let ttl = Duration::from_secs(1);
    let written = Instant::now();
    store.put_ttl(&k("/ttl/key"), b"v", None, ttl).unwrap();
    let mut w = own_watcher(&store, "/ttl", true);
    let (gone, at) = first_event(&mut *w, |e| e.kind == EventKind::Delete);
    assert_eq!(gone.key, "/ttl/key");
    let late = at.saturating_duration_since(written + ttl);
    println!("an expired key handed out as deleted {late:?} after its deadline");
    assert!(
        at + Duration::from_millis(5) >= written + ttl,
        "before its ttl"
    );
    // At its deadline, not at the next read of every second (a loaded machine
    // wakes a thread tens of milliseconds late).
    assert!(late < Duration::from_millis(300), "{late:?}");
}

/// The error of the first call on the store at `path` (which opens the database).
fn open_error(path: &Path) -> String {
    let store = open_at(path, Duration::from_secs(1)).unwrap();
    let err = store.get(&k("/k")).expect_err("the first call fails");
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    text
}

#[test]
fn bad_paths_give_clear_errors_naming_them() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("a-directory");
    fs::create_dir(&dir).unwrap();
    let text = open_error(&dir);
    println!("{text}");
    assert!(text.contains("is a directory"), "{text}");

    let not_db = tmp.path().join("notes.txt");
    fs::write(
        &not_db,
        "these are not the droids you are looking for\n".repeat(100),
    )
    .unwrap();
    let text = open_error(&not_db);
    println!("{text}");
    assert!(text.contains("is not an SQLite database"), "{text}");
    assert_eq!(
        fs::read(&not_db).unwrap(),
        "these are not the droids you are looking for\n"
            .repeat(100)
            .into_bytes(),
        "left as it was"
    );

    let below_file = not_db.join("x.db");
    let text = open_error(&below_file);
    println!("{text}");
    assert!(text.contains("not a directory"), "{text}");

    let other = tmp.path().join("other.db");
    shell(&other, "CREATE TABLE mine (x)");
    let text = open_error(&other);
    println!("{text}");
    assert!(text.contains("not libkv's"), "{text}");

    let newer = tmp.path().join("newer.db");
    drop(store_at(&newer));
    shell(&newer, "PRAGMA user_version = 7");
    let text = open_error(&newer);
    println!("{text}");
    assert!(text.contains("schema version 7"), "{text}");
}

/// With `LIBKV_TEST_SQLITE_UNWRITABLE` set, a worker of
/// `an_unwritable_directory_gives_a_clear_error` (run as another user when the
/// tests run as root, whom permissions do not stop).
#[test]
fn unwritable_process() {
    let Ok(dir) = std::env::var("LIBKV_TEST_SQLITE_UNWRITABLE") else {
        return;
    };
    let dir = PathBuf::from(dir);
    for (path, expect) in [
        (dir.join("new.db"), "Permission denied"),
        (dir.join("sub/new.db"), "Permission denied"),
        (dir.join("existing.db"), "Permission denied"),
    ] {
        let store = open_at(&path, Duration::from_secs(1)).unwrap();
        let err = store.put(&k("/k"), b"v").expect_err("fails");
        let text = err.to_string();
        println!("{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(expect), "{text}");
        assert!(text.contains("give the user running Puppet"), "{text}");
    }
}

#[test]
fn an_unwritable_directory_gives_a_clear_error() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("ro");
    fs::create_dir(&dir).unwrap();
    drop(store_at(&dir.join("existing.db")));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "unwritable_process",
        "--test-threads=1",
        "--nocapture",
    ])
    .env("LIBKV_TEST_SQLITE_UNWRITABLE", &dir);
    if rustix::process::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let output = cmd.output().unwrap();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn info_says_what_the_store_is() {
    let (store, tmp) = sqlite_store();
    store.put(&k("/x"), b"1").unwrap();
    let info = format!("{:?}", store.info().unwrap());
    assert!(info.contains(&db_of(&tmp).display().to_string()), "{info}");
    assert!(info.contains("sqlite_version"), "{info}");
    println!("{info}");
}

#[test]
fn a_database_moved_away_while_open_fails_calls_instead_of_writing_nowhere() {
    let tmp = TempDir::new().unwrap();
    let db = tmp.path().join("moved.db");
    let store = store_at(&db);
    let other = store_at(&db);
    store.put(&k("/kept"), b"1").unwrap();
    let moved = tmp.path().join("elsewhere.db");
    fs::rename(&db, &moved).unwrap();
    for s in [&store, &other] {
        let err = s.put(&k("/lost"), b"2").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Store, "{text}");
        assert!(text.contains("is gone (moved away or deleted)"), "{text}");
        assert!(text.contains("nothing was read or written"), "{text}");
        assert!(s.get(&k("/kept")).is_err());
    }
    println!("{}", store.get(&k("/kept")).unwrap_err());
    assert!(!db.exists(), "nothing made at the path meanwhile");
    // Another file at the path: the same.
    fs::write(&db, b"").unwrap();
    let err = store.get(&k("/kept")).unwrap_err();
    assert!(err.to_string().contains("is another file now"), "{err}");
    assert!(store_at(&tmp.path().join("unrelated.db"))
        .put(&k("/x"), b"1")
        .is_ok());
    // Once every store object of the path is dropped, the path opens anew.
    drop((store, other));
    let again = store_at(&db);
    assert_eq!(again.get(&k("/kept")).unwrap(), None, "a new database");
    again.put(&k("/new"), b"n").unwrap();
    drop(again);
    // The moved file is a sound database, though what its WAL held (kept at the
    // old name, not checkpointed into a moved file) is not in it: why a database
    // moved while in use is refused.
    assert_eq!(shell(&moved, "PRAGMA integrity_check"), "ok");
    assert_eq!(
        shell(
            &db,
            "SELECT key FROM kv ORDER BY key; PRAGMA integrity_check"
        ),
        "/new\nok"
    );
}

/// With `LIBKV_TEST_SQLITE_WATCH_FORK_DB` set, a worker of
/// `a_forked_child_watches_with_its_own_notifier`: a watch made and used before a
/// fork is used by the child, whose own write must wake it at once.
#[test]
fn watch_fork_process() {
    let Ok(db) = std::env::var("LIBKV_TEST_SQLITE_WATCH_FORK_DB") else {
        return;
    };
    let store = store_at(Path::new(&db));
    let mut w = own_watcher(&store, "/forked", true);
    store.put(&k("/forked/parent"), b"p").unwrap();
    common::events_until(&mut *w, |e| e.key == "/forked/parent");
    // SAFETY: the child calls the store and the watch, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = (|| {
            store.put(&k("/forked/child"), b"c").ok()?;
            let written = Instant::now();
            while written.elapsed() < Duration::from_secs(3) {
                let events = w.next(Instant::now() + Duration::from_millis(50)).ok()?;
                if events.iter().any(|e| e.key == "/forked/child") {
                    return Some(if written.elapsed() < WAKE { 0 } else { 2 });
                }
            }
            Some(3)
        })()
        .unwrap_or(1);
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    let started = Instant::now();
    loop {
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the forked child hung");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(libc::WIFEXITED(status), "the child died: {status}");
    match libc::WEXITSTATUS(status) {
        0 => {}
        1 => panic!("the child's store call or watch failed"),
        2 => panic!("the child's watch saw its write only at the re-read"),
        code => panic!("the child's watch did not see its write ({code})"),
    }
    store.put(&k("/forked/after"), b"a").unwrap();
    common::events_until(&mut *w, |e| e.key == "/forked/after");
}

#[test]
fn a_forked_child_watches_with_its_own_notifier() {
    let tmp = TempDir::new().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "watch_fork_process", "--test-threads=1"])
        .env("LIBKV_TEST_SQLITE_WATCH_FORK_DB", tmp.path().join("w.db"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// With `LIBKV_TEST_SQLITE_FORK_CLOSE_DB` set, a worker of
/// `a_child_goes_on_when_its_parent_closes_the_database`: the parent's last store
/// object is dropped (its connection closed) while a forked child uses its own.
#[test]
fn fork_close_process() {
    let Ok(db) = std::env::var("LIBKV_TEST_SQLITE_FORK_CLOSE_DB") else {
        return;
    };
    let store = store_at(Path::new(&db));
    store.put(&k("/f/parent"), b"p").unwrap();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child calls the store, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = (|| {
            store.put(&k("/f/child1"), b"1").ok()?;
            unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
            // Until the parent closed its connection.
            std::thread::sleep(Duration::from_millis(300));
            store.put(&k("/f/child2"), b"2").ok()?;
            store.put(&k("/f/child3"), b"3").ok()?;
            Some(0)
        })()
        .unwrap_or(1);
        unsafe { libc::_exit(code) };
    }
    let mut byte = [0u8; 1];
    assert_eq!(
        unsafe { libc::read(fds[0], byte.as_mut_ptr().cast(), 1) },
        1
    );
    drop(store); // The parent's connection, closed while the child's is open.
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

#[test]
fn a_child_goes_on_when_its_parent_closes_the_database() {
    let tmp = TempDir::new().unwrap();
    let db = tmp.path().join("fc.db");
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fork_close_process", "--test-threads=1"])
        .env("LIBKV_TEST_SQLITE_FORK_CLOSE_DB", &db)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let store = store_at(&db);
    let keys: Vec<String> = store
        .list(&d("/f"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["child1", "child2", "child3", "parent"]);
    assert_eq!(shell(&db, "PRAGMA integrity_check"), "ok");
}
