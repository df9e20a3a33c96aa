//! The conformance suite on `file://`, and what only the file store promises: its
//! layout on disk, refusing links, never leaving its root, its lock, and racing
//! OS processes.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{d, k};
use libkv_core::watch::{Event, EventKind, Target, Watcher};
use libkv_core::{open, ErrorKind, Key, OpenOptions, Store};
use tempfile::TempDir;

fn open_at(root: &Path, timeout: Duration) -> Arc<dyn Store> {
    let url = format!("file://{}", root.display());
    open(
        &url,
        &OpenOptions {
            timeout,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// A store over an existing, empty root directory.
fn file_store() -> (Arc<dyn Store>, TempDir) {
    let dir = TempDir::new().unwrap();
    fs::create_dir(dir.path().join("root")).unwrap();
    let store = open_at(&dir.path().join("root"), Duration::from_secs(5));
    (store, dir)
}

conformance_tests!(coordination file_store());

/// Everything under `dir`, as relative paths, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn keys_are_plain_files_in_simp6_layout() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    store.put(&k("/gen_passwd/web01"), b"s3cret").unwrap();
    let path = root.join("gen_passwd/web01");
    assert_eq!(fs::read(&path).unwrap(), b"s3cret");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.nlink(), 1);
    assert_eq!(
        fs::metadata(root.join("gen_passwd"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    // Only the key and the store's lock file; no temp file is left behind.
    assert_eq!(
        tree(&root),
        [".libkv@lock", "gen_passwd", "gen_passwd/web01"]
    );
}

#[test]
fn files_written_by_others_read_back_and_get_sequences() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("gen_passwd")).unwrap();
    fs::write(root.join("gen_passwd/legacy"), b"from simp 6\n").unwrap();
    assert_eq!(
        store.get(&k("/gen_passwd/legacy")).unwrap().as_deref(),
        Some(&b"from simp 6\n"[..])
    );
    let before = common::sequence(&*store, "/gen_passwd/legacy");
    assert!(before > 0);
    std::thread::sleep(Duration::from_millis(5));
    fs::write(root.join("gen_passwd/legacy"), b"edited by hand\n").unwrap();
    let after = common::sequence(&*store, "/gen_passwd/legacy");
    assert_ne!(before, after, "an outside edit must change the sequence");
    assert!(!store
        .atomic_put(&k("/gen_passwd/legacy"), b"x", before)
        .unwrap());
}

#[test]
fn sequences_survive_reopening_and_are_shared_by_store_objects() {
    let tmp = TempDir::new().unwrap();
    let a = open_at(tmp.path(), Duration::from_secs(5));
    let b = open_at(tmp.path(), Duration::from_secs(5));
    a.put(&k("/s"), b"1").unwrap();
    let first = common::sequence(&*a, "/s");
    assert_eq!(common::sequence(&*b, "/s"), first);
    assert!(b.atomic_put(&k("/s"), b"2", first).unwrap());
    assert!(!a.atomic_put(&k("/s"), b"3", first).unwrap());
    drop((a, b));
    let c = open_at(tmp.path(), Duration::from_secs(5));
    c.put(&k("/t"), b"x").unwrap();
    assert!(common::sequence(&*c, "/t") > first);
}

#[test]
fn a_key_cannot_sit_below_another_key() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    store.put(&k("/a"), b"value").unwrap();
    let err = store.put(&k("/a/b"), b"below").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let msg = err.to_string();
    assert!(
        msg.contains("/a/b") && msg.contains("/a holds a value"),
        "{msg}"
    );
    assert_eq!(fs::read(root.join("a")).unwrap(), b"value");

    store.put(&k("/x/y"), b"below").unwrap();
    let err = store.put(&k("/x"), b"above").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let msg = err.to_string();
    assert!(msg.contains("keys exist below /x (such as /x/y)"), "{msg}");
    let err = store.atomic_create(&k("/x"), b"above").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        store.get(&k("/x/y")).unwrap().as_deref(),
        Some(&b"below"[..])
    );
    // Nothing half-written: no temp file, no stray entry.
    assert_eq!(tree(&root), [".libkv@lock", "a", "x", "x/y"]);

    // Once the keys below are gone, the name is free for a value.
    store.delete(&k("/x/y")).unwrap();
    assert_eq!(
        tree(&root),
        [".libkv@lock", "a"],
        "empty directories are pruned"
    );
    store.put(&k("/x"), b"now a value").unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    store.put(&k("/empty"), b"over an empty directory").unwrap();
    assert_eq!(
        store.get(&k("/empty")).unwrap().as_deref(),
        Some(&b"over an empty directory"[..])
    );
}

#[test]
fn a_symlinked_directory_is_refused_and_nothing_outside_is_touched() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"outside data").unwrap();
    symlink(&outside, root.join("evil")).unwrap();

    for result in [
        store.get(&k("/evil/secret")).map(|_| ()),
        store.put(&k("/evil/secret"), b"overwrite").map(|_| ()),
        store.put(&k("/evil/new"), b"create").map(|_| ()),
        store.exists(&k("/evil/secret")).map(|_| ()),
        store.atomic_get(&k("/evil/secret")).map(|_| ()),
        store.atomic_create(&k("/evil/new"), b"x").map(|_| ()),
        store.atomic_put(&k("/evil/secret"), b"x", 0).map(|_| ()),
        store.list(&d("/evil")).map(|_| ()),
        store.list(&d("/")).map(|_| ()),
        store.atomic_list(&d("/")).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("symbolic link") && msg.contains("remove it"),
            "{msg}"
        );
    }
    // delete and deletetree remove the link itself, never what it points to.
    store.delete(&k("/evil/secret")).unwrap_or(());
    store.deletetree(&d("/")).unwrap();
    assert!(!root.join("evil").exists());
    assert_eq!(tree(&outside), ["secret"]);
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"outside data");
}

#[test]
fn a_symlinked_file_is_refused() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    fs::write(tmp.path().join("target"), b"outside").unwrap();
    fs::create_dir_all(root.join("dir")).unwrap();
    symlink(tmp.path().join("target"), root.join("dir/link")).unwrap();
    for result in [
        store.get(&k("/dir/link")).map(|_| ()),
        store.exists(&k("/dir/link")).map(|_| ()),
        store.atomic_get(&k("/dir/link")).map(|_| ()),
        store.put(&k("/dir/link"), b"x").map(|_| ()),
        store.list(&d("/dir")).map(|_| ()),
    ] {
        let msg = result.unwrap_err().to_string();
        assert!(msg.contains("/dir/link is a symbolic link"), "{msg}");
    }
    assert_eq!(fs::read(tmp.path().join("target")).unwrap(), b"outside");
    store.delete(&k("/dir/link")).unwrap();
    assert!(fs::symlink_metadata(root.join("dir/link")).is_err());
    assert_eq!(fs::read(tmp.path().join("target")).unwrap(), b"outside");
}

#[test]
fn a_hard_linked_file_is_refused_on_read_and_never_written_through() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    fs::write(tmp.path().join("target"), b"outside").unwrap();
    fs::hard_link(tmp.path().join("target"), root.join("linked")).unwrap();
    let msg = store.get(&k("/linked")).unwrap_err().to_string();
    assert!(msg.contains("hard links"), "{msg}");
    // A listing's error is about the listed directory, and names the file.
    for err in [
        store.list(&d("/")).unwrap_err(),
        store.atomic_list(&d("/")).unwrap_err(),
    ] {
        assert_eq!(err.key(), Some("/"), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("list / on file://"), "{msg}");
        assert!(
            msg.contains("/linked is a file with several hard links"),
            "{msg}"
        );
    }
    store.put(&k("/linked"), b"new value").unwrap();
    assert_eq!(fs::read(tmp.path().join("target")).unwrap(), b"outside");
    assert_eq!(
        store.get(&k("/linked")).unwrap().as_deref(),
        Some(&b"new value"[..])
    );
}

#[test]
fn a_planted_fifo_does_not_hang_reads() {
    let (store, tmp) = file_store();
    let fifo = tmp.path().join("root/fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let msg = store.get(&k("/fifo")).unwrap_err().to_string();
    assert!(msg.contains("not a regular file"), "{msg}");
    assert!(store.exists(&k("/fifo")).is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_lock_file_that_is_a_link_or_a_fifo_is_refused_without_waiting() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    let lock = root.join(".libkv@lock");
    fs::write(tmp.path().join("target"), b"outside").unwrap();
    for plant in ["link", "dangling", "fifo"] {
        match plant {
            "link" => symlink(tmp.path().join("target"), &lock).unwrap(),
            "dangling" => symlink(tmp.path().join("made-through-link"), &lock).unwrap(),
            _ => assert!(Command::new("mkfifo")
                .arg(&lock)
                .status()
                .unwrap()
                .success()),
        }
        let started = Instant::now();
        let msg = store.put(&k("/k"), b"v").unwrap_err().to_string();
        assert!(
            msg.contains(".libkv@lock is") && msg.contains("remove it"),
            "{plant}: {msg}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{plant}");
        fs::remove_file(&lock).unwrap();
    }
    assert_eq!(fs::read(tmp.path().join("target")).unwrap(), b"outside");
    assert!(!tmp.path().join("made-through-link").exists());
    store.put(&k("/k"), b"v").unwrap();
}

#[test]
fn store_files_and_leftover_temp_files_are_not_keys() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    store.put(&k("/a/b"), b"v").unwrap();
    fs::write(root.join("a/.b@999.0.tmp"), b"partial").unwrap();
    fs::write(root.join("a/not a key"), b"?").unwrap();
    let listed: Vec<String> = store
        .list(&d("/"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, ["a/b"]);
    store.deletetree(&d("/")).unwrap();
    assert_eq!(tree(&root), [".libkv@lock"]);
    store.put(&k("/a/b"), b"again").unwrap();
}

#[test]
fn a_store_root_that_cannot_exist_fails_each_call_as_a_store_error() {
    let tmp = TempDir::new().unwrap();
    fs::write(tmp.path().join("file"), b"").unwrap();
    let url = format!("file://{}/file/root", tmp.path().display());
    // Opening touches nothing: bad input is refused before any I/O.
    let store = open(&url, &OpenOptions::default()).unwrap();
    assert_eq!(store.provider(), "file");
    let err = Key::new("/bad key").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    for err in [
        store.get(&k("/x")).unwrap_err(),
        store.put(&k("/x"), b"v").unwrap_err(),
        store.list(&d("/")).unwrap_err(),
        store.deletetree(&d("/")).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Store);
        let msg = err.to_string();
        assert!(
            msg.contains("cannot use") && msg.contains("file/root"),
            "{msg}"
        );
    }
    assert_eq!(store.get(&k("/x")).unwrap_err().key(), Some("/x"));
    // Once the root can be made, the same store object works.
    fs::remove_file(tmp.path().join("file")).unwrap();
    store.put(&k("/x"), b"v").unwrap();
    assert_eq!(store.get(&k("/x")).unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn reads_of_a_store_whose_root_does_not_exist_find_nothing_and_make_nothing() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("not/yet");
    let store = open_at(&root, Duration::from_secs(5));
    assert_eq!(store.get(&k("/k")).unwrap(), None);
    assert!(!store.exists(&k("/k")).unwrap());
    assert_eq!(store.atomic_get(&k("/k")).unwrap(), None);
    assert!(store.list(&d("/")).unwrap().is_empty());
    assert!(store.atomic_list(&d("/a")).unwrap().is_empty());
    // Removing what is not there, and a compare-and-swap that cannot match, write
    // nothing either.
    store.delete(&k("/k")).unwrap();
    store.deletetree(&d("/")).unwrap();
    assert!(store.atomic_delete(&k("/k"), 0).unwrap());
    assert!(!store.atomic_delete(&k("/k"), 7).unwrap());
    assert!(!store.atomic_put(&k("/k"), b"v", 7).unwrap());
    assert!(!tmp.path().join("not").exists());
    // The first write makes it.
    assert!(store.atomic_put(&k("/k"), b"v", 0).unwrap());
    assert_eq!(fs::read(root.join("k")).unwrap(), b"v");
}

/// Every operation of the store, each returning only whether it succeeded.
fn every_operation(store: &dyn Store) -> Vec<(&'static str, libkv_core::Result<()>)> {
    let key = k("/k");
    vec![
        ("get", store.get(&key).map(drop)),
        ("put", store.put(&key, b"v")),
        ("delete", store.delete(&key)),
        ("exists", store.exists(&key).map(drop)),
        ("list", store.list(&d("/")).map(drop)),
        ("deletetree", store.deletetree(&d("/"))),
        ("atomic_create", store.atomic_create(&key, b"v").map(drop)),
        ("atomic_get", store.atomic_get(&key).map(drop)),
        ("atomic_put", store.atomic_put(&key, b"v", 0).map(drop)),
        ("atomic_delete", store.atomic_delete(&key, 0).map(drop)),
        ("atomic_list", store.atomic_list(&d("/")).map(drop)),
    ]
}

#[test]
fn a_root_that_is_a_symbolic_link_is_refused_by_every_operation() {
    let tmp = TempDir::new().unwrap();
    let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("k"), b"outside data").unwrap();
    let store = open_at(&root, Duration::from_secs(5));
    store.put(&k("/k"), b"inside").unwrap();

    // The root is moved aside and a link to another directory put in its place.
    fs::rename(&root, tmp.path().join("real")).unwrap();
    symlink(&outside, &root).unwrap();
    // A store object that held the old root, and one opened afresh.
    let fresh = open_at(&root, Duration::from_secs(5));
    for store in [&store, &fresh] {
        for (op, result) in every_operation(&**store) {
            let err = result.expect_err(op);
            assert_eq!(err.kind(), ErrorKind::Store, "{op}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!(
                    "the store root {} is a symbolic link",
                    root.display()
                )) && msg.contains(&format!("(to {})", outside.display()))
                    && msg.contains("point the store's URL at the real directory"),
                "{op}: {msg}"
            );
        }
    }
    assert_eq!(tree(&outside), ["k"], "nothing made outside the root");
    assert_eq!(fs::read(outside.join("k")).unwrap(), b"outside data");

    // With the real directory back, both store objects work on it.
    fs::remove_file(&root).unwrap();
    fs::rename(tmp.path().join("real"), &root).unwrap();
    for store in [&store, &fresh] {
        assert_eq!(
            store.get(&k("/k")).unwrap().as_deref(),
            Some(&b"inside"[..])
        );
    }
}

#[test]
fn a_symbolic_link_above_the_root_is_followed() {
    let tmp = TempDir::new().unwrap();
    fs::create_dir(tmp.path().join("real")).unwrap();
    symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
    let store = open_at(&tmp.path().join("link/root"), Duration::from_secs(5));
    store.put(&k("/k"), b"v").unwrap();
    assert_eq!(fs::read(tmp.path().join("real/root/k")).unwrap(), b"v");
}

#[test]
fn a_root_moved_away_and_made_again_is_the_one_used() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    let store = open_at(&root, Duration::from_secs(5));
    store.put(&k("/k"), b"before").unwrap();

    // An admin moves the root away and restores another copy in its place.
    fs::rename(&root, tmp.path().join("old")).unwrap();
    fs::create_dir(&root).unwrap();
    fs::write(root.join("restored"), b"from the backup").unwrap();
    assert_eq!(store.get(&k("/k")).unwrap(), None);
    assert_eq!(
        store.get(&k("/restored")).unwrap().as_deref(),
        Some(&b"from the backup"[..])
    );
    store.put(&k("/k"), b"after").unwrap();
    assert_eq!(fs::read(root.join("k")).unwrap(), b"after");
    assert_eq!(fs::read(tmp.path().join("old/k")).unwrap(), b"before");

    // Removed altogether, it is made again, as at first use.
    fs::remove_dir_all(&root).unwrap();
    assert_eq!(store.get(&k("/k")).unwrap(), None);
    store.put(&k("/k"), b"again").unwrap();
    assert_eq!(fs::read(root.join("k")).unwrap(), b"again");
}

/// The lock file's counter line.
fn counter_line(root: &Path) -> String {
    let text = fs::read_to_string(root.join(".libkv@lock")).unwrap();
    text.lines().next().unwrap().to_owned()
}

/// Writes the lock file as a writer killed after making its temp file `temp` left it.
fn record_leftover(root: &Path, temp: &str) {
    let counter = counter_line(root);
    fs::write(root.join(".libkv@lock"), format!("{counter}\n{temp}\n")).unwrap();
}

#[test]
fn a_leftover_temp_file_recorded_in_the_lock_file_is_removed_by_the_next_writer() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    store.put(&k("/a/b"), b"v").unwrap();
    let counter = counter_line(&root);
    assert_eq!(
        fs::read(root.join(".libkv@lock")).unwrap().len(),
        21,
        "a write leaves only the counter"
    );

    fs::write(root.join("a/.b@4000000.7.tmp"), b"partial").unwrap();
    fs::write(root.join("a/.b@4000000.8.tmp"), b"not recorded").unwrap();
    record_leftover(&root, "a/.b@4000000.7.tmp");
    store.put(&k("/other"), b"x").unwrap();
    assert!(!root.join("a/.b@4000000.7.tmp").exists());
    assert!(
        root.join("a/.b@4000000.8.tmp").exists(),
        "an unrecorded temp file is left alone"
    );
    assert_eq!(fs::read(root.join(".libkv@lock")).unwrap().len(), 21);
    assert!(counter_line(&root) > counter, "the counter went on");
    assert_eq!(store.get(&k("/a/b")).unwrap().as_deref(), Some(&b"v"[..]));

    // Any writer that takes the lock removes it: a delete of an absent key too.
    fs::write(root.join(".x@4000000.9.tmp"), b"partial").unwrap();
    record_leftover(&root, ".x@4000000.9.tmp");
    store.delete(&k("/absent")).unwrap();
    assert!(!root.join(".x@4000000.9.tmp").exists());
    assert_eq!(fs::read(root.join(".libkv@lock")).unwrap().len(), 21);

    // deletetree removes the unrecorded one.
    store.deletetree(&d("/")).unwrap();
    assert_eq!(tree(&root), [".libkv@lock"]);
}

#[test]
fn a_malicious_lock_file_record_removes_nothing_outside_and_no_key() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join(".x@1.2.tmp"), b"outside").unwrap();
    fs::write(outside.join("file"), b"outside").unwrap();
    symlink(&outside, root.join("evil")).unwrap();
    store.put(&k("/a/key"), b"a key").unwrap();
    store.put(&k("/key"), b"a key").unwrap();
    fs::create_dir(root.join("a/.dir@1.2.tmp")).unwrap();
    symlink(outside.join("file"), root.join("a/.lnk@1.2.tmp")).unwrap();
    let records = [
        "evil/.x@1.2.tmp",
        "../outside/.x@1.2.tmp",
        &format!("{}/.x@1.2.tmp", outside.display()),
        "a/key",
        "key",
        ".libkv@lock",
        "a/.dir@1.2.tmp",
        "a/.lnk@1.2.tmp",
        "a/../../outside/.x@1.2.tmp",
        "a//.x@1.2.tmp",
    ];
    for record in records {
        record_leftover(&root, record);
        store.put(&k("/c"), record.as_bytes()).unwrap();
        assert_eq!(fs::read(root.join(".libkv@lock")).unwrap().len(), 21);
    }
    assert_eq!(tree(&outside), [".x@1.2.tmp", "file"]);
    assert_eq!(fs::read(outside.join(".x@1.2.tmp")).unwrap(), b"outside");
    assert_eq!(fs::read(outside.join("file")).unwrap(), b"outside");
    assert_eq!(
        tree(&root),
        [
            ".libkv@lock",
            "a",
            "a/.dir@1.2.tmp",
            "a/.lnk@1.2.tmp",
            "a/key",
            "c",
            "evil",
            "key"
        ]
    );
    assert_eq!(
        store.get(&k("/a/key")).unwrap().as_deref(),
        Some(&b"a key"[..])
    );
}

/// The value the slow writer writes: long enough to be killed in the middle.
const SLOW_VALUE_LEN: usize = 256 << 20;

/// With `LIBKV_TEST_SLOW_WRITER_ROOT` set, a worker process of
/// `a_writer_killed_mid_write_leaves_a_temp_file_the_next_writer_removes`.
#[test]
fn slow_writer_process() {
    let Ok(root) = std::env::var("LIBKV_TEST_SLOW_WRITER_ROOT") else {
        return;
    };
    let store = open_at(Path::new(&root), Duration::from_secs(30));
    store
        .put(&k("/big/value"), &vec![b'x'; SLOW_VALUE_LEN])
        .unwrap();
}

#[test]
fn a_writer_killed_mid_write_leaves_a_temp_file_the_next_writer_removes() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("big");
    fs::create_dir(&dir).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "slow_writer_process", "--test-threads=1"])
        .env("LIBKV_TEST_SLOW_WRITER_ROOT", tmp.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let temp = loop {
        let found = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .find(|n| n.ends_with(".tmp"));
        if let Some(name) = found {
            break name;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no temp file");
        std::thread::sleep(Duration::from_micros(200));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(dir.join(&temp).exists(), "killed before the rename");
    assert!(!dir.join("value").exists());
    let store = open_at(tmp.path(), Duration::from_secs(5));
    assert_eq!(store.list(&d("/")).unwrap(), [], "the leftover is no key");
    store.put(&k("/small"), b"v").unwrap();
    assert!(!dir.join(&temp).exists(), "{temp} was not removed");
}

/// With `LIBKV_TEST_SQUATTED_ROOT` set, a worker process of
/// `temp_file_names_left_by_an_earlier_process_do_not_fail_writes`: a fresh process,
/// whose first temp files are numbered from 0.
#[test]
fn squatted_writer_process() {
    let Ok(root) = std::env::var("LIBKV_TEST_SQUATTED_ROOT") else {
        return;
    };
    let root = Path::new(&root);
    fs::create_dir_all(root.join("d")).unwrap();
    let pid = std::process::id();
    for n in 0..100 {
        fs::write(root.join(format!("d/.k@{pid}.{n}.tmp")), b"left over").unwrap();
    }
    let store = open_at(root, Duration::from_secs(5));
    store.put(&k("/d/k"), b"written").unwrap();
    assert_eq!(fs::read(root.join("d/k")).unwrap(), b"written");
}

#[test]
fn temp_file_names_left_by_an_earlier_process_do_not_fail_writes() {
    let tmp = TempDir::new().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "squatted_writer_process", "--test-threads=1"])
        .env("LIBKV_TEST_SQUATTED_ROOT", tmp.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::read(tmp.path().join("d/k")).unwrap(), b"written");
}

#[test]
fn writes_wait_for_the_lock_at_most_the_timeout() {
    let tmp = TempDir::new().unwrap();
    let store = open_at(tmp.path(), Duration::from_millis(300));
    store.put(&k("/held"), b"before").unwrap();
    let lock = fs::File::open(tmp.path().join(".libkv@lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let started = Instant::now();
    let err = store.put(&k("/held"), b"after").unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("timed out after 0.3s"), "{err}");
    assert!(
        err.to_string()
            .contains("waiting for the store's lock, held by another call; nothing was changed"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // Reads take no lock.
    assert_eq!(
        store.get(&k("/held")).unwrap().as_deref(),
        Some(&b"before"[..])
    );
    drop(lock);
    store.put(&k("/held"), b"after").unwrap();
}

/// When run with `LIBKV_TEST_WORKER_ROOT` set, this test is a worker process of
/// `processes_racing_increments_end_with_the_exact_count`; otherwise it checks that
/// it was not asked to be one.
#[test]
fn worker_process() {
    let Ok(root) = std::env::var("LIBKV_TEST_WORKER_ROOT") else {
        return;
    };
    let count: usize = std::env::var("LIBKV_TEST_WORKER_COUNT")
        .unwrap()
        .parse()
        .unwrap();
    let store = open_at(Path::new(&root), Duration::from_secs(30));
    for _ in 0..count {
        common::increment(&*store, &k("/counter"));
    }
}

#[test]
fn processes_racing_increments_end_with_the_exact_count() {
    let tmp = TempDir::new().unwrap();
    let (processes, each) = (6, 40);
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "worker_process", "--test-threads=1"])
                .env("LIBKV_TEST_WORKER_ROOT", tmp.path())
                .env("LIBKV_TEST_WORKER_COUNT", each.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let store = open_at(tmp.path(), Duration::from_secs(5));
    let count = store.get(&k("/counter")).unwrap().unwrap();
    assert_eq!(
        String::from_utf8(count).unwrap(),
        (processes * each).to_string()
    );
}

#[test]
fn expiry_is_kept_beside_plain_values_and_survives_reopening() {
    let (store, dir) = file_store();
    let root = dir.path().join("root");
    let ttl = Duration::from_secs(1);
    let seq = store
        .put_ttl(&k("/reg/web01"), b"10.0.0.1", None, ttl)
        .unwrap()
        .unwrap();
    // The key's file holds its value alone; the index names its sequence.
    assert_eq!(fs::read(root.join("reg/web01")).unwrap(), b"10.0.0.1");
    let index = fs::read_to_string(root.join(".libkv@expiry")).unwrap();
    assert!(index.starts_with(&format!("{seq} ")), "{index}");
    assert!(index.ends_with(" /reg/web01\n"), "{index}");
    assert_eq!(
        tree(&root),
        [".libkv@expiry", ".libkv@lock", "reg", "reg/web01"]
    );
    assert_eq!(
        store.list(&d("/")).unwrap(),
        vec![("reg/web01".to_owned(), b"10.0.0.1".to_vec())],
        "store files are not keys"
    );
    // Another store object (another process, a restart) sees the same expiry.
    let again = open_at(&root, Duration::from_secs(5));
    assert!(again.exists(&k("/reg/web01")).unwrap());
    std::thread::sleep(ttl + Duration::from_millis(50));
    assert!(!again.exists(&k("/reg/web01")).unwrap());
    assert_eq!(again.list(&d("/reg")).unwrap(), vec![]);
    // The file stays until the next write with a ttl removes it.
    assert!(root.join("reg/web01").exists());
    again
        .put_ttl(&k("/other"), b"x", None, Duration::from_secs(60))
        .unwrap();
    assert!(!root.join("reg/web01").exists());
    let index = fs::read_to_string(root.join(".libkv@expiry")).unwrap();
    assert!(!index.contains("/reg/web01"), "{index}");
}

/// The file store's own watcher of `key` (of everything below it, with `tree`),
/// from now: not the one that reads again at intervals, which `watch::open`
/// falls back on for a store without its own.
fn own_watcher(store: &Arc<dyn Store>, key: &str, tree: bool) -> Box<dyn Watcher> {
    let key = if tree { d(key) } else { k(key) };
    Arc::clone(store)
        .watch(&Target { key, tree }, None)
        .unwrap()
        .expect("the file store has its own watcher")
}

/// The first event satisfying `done` (10 s at most), and when it was handed out.
fn first_event(w: &mut dyn Watcher, done: impl Fn(&Event) -> bool) -> (Event, Instant) {
    let events = common::events_until(w, &done);
    let at = Instant::now();
    (events.into_iter().find(|e| done(e)).unwrap(), at)
}

/// How long after `written` (when a write returned) an event came at `seen`; 0
/// when it came first (the rename is notified before the write's last fsync).
fn after(written: Instant, seen: Instant) -> Duration {
    seen.saturating_duration_since(written)
}

/// Well below the re-read a watch makes every second without a notification, and
/// below the 250 ms of the watcher that only reads again.
const WAKE: Duration = Duration::from_millis(50);
/// The most a change that no notification tells of may take to be handed out.
const RESCAN_BOUND: Duration = Duration::from_millis(1200);

#[test]
fn a_write_by_another_store_object_wakes_the_watch_at_once() {
    let (store, tmp) = file_store();
    let other = open_at(&tmp.path().join("root"), Duration::from_secs(5));
    store.put(&k("/n/key"), b"0").unwrap();
    let mut w = own_watcher(&store, "/n/key", false);
    let mut took = Vec::new();
    for i in 1..=5u64 {
        let value = i.to_string();
        // While the watch waits, at another moment each time.
        let writer = {
            let (other, value) = (Arc::clone(&other), value.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20 + 37 * i));
                let started = Instant::now();
                other.put(&k("/n/key"), value.as_bytes()).unwrap();
                (started, Instant::now())
            })
        };
        let (event, seen) = first_event(&mut *w, |e| e.value == value.as_bytes());
        let (started, written) = writer.join().unwrap();
        assert_eq!(event.kind, EventKind::Put);
        assert_eq!(event.sequence, common::sequence(&*other, "/n/key"));
        took.push((after(written, seen), seen - started));
    }
    println!(
        "wake after a write by another store object (after it returned, after it began): {took:?}"
    );
    let worst = took.iter().map(|t| t.0).max().unwrap();
    assert!(
        worst < WAKE,
        "a watch woke {worst:?} after a write: {took:?}"
    );
}

/// With `LIBKV_TEST_WATCH_WRITER_ROOT` set, a worker process of
/// `a_write_by_another_process_wakes_the_watch_at_once`: writes the value
/// `LIBKV_TEST_WATCH_WRITER_VALUE`, then records when the write returned (ns of
/// the system clock) in `LIBKV_TEST_WATCH_WRITER_AT`.
#[test]
fn watch_writer_process() {
    let Ok(root) = std::env::var("LIBKV_TEST_WATCH_WRITER_ROOT") else {
        return;
    };
    let value = std::env::var("LIBKV_TEST_WATCH_WRITER_VALUE").unwrap();
    let store = open_at(Path::new(&root), Duration::from_secs(5));
    store.put(&k("/p/key"), value.as_bytes()).unwrap();
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    fs::write(
        std::env::var("LIBKV_TEST_WATCH_WRITER_AT").unwrap(),
        at.as_nanos().to_string(),
    )
    .unwrap();
}

#[test]
fn a_write_by_another_process_wakes_the_watch_at_once() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    let mut w = own_watcher(&store, "/p/key", false);
    let mut took = Vec::new();
    for i in 1..=3 {
        let value = format!("from process {i}");
        let at_file = tmp.path().join(format!("written-at-{i}"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "watch_writer_process", "--test-threads=1"])
            .env("LIBKV_TEST_WATCH_WRITER_ROOT", &root)
            .env("LIBKV_TEST_WATCH_WRITER_VALUE", &value)
            .env("LIBKV_TEST_WATCH_WRITER_AT", &at_file)
            .stdout(std::process::Stdio::null())
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
fn a_key_in_directories_made_after_the_watch_began_is_seen() {
    let (store, tmp) = file_store();
    let other = open_at(&tmp.path().join("root"), Duration::from_secs(5));
    // Nothing of /a exists: the watch waits on the root, then moves down.
    let mut w = own_watcher(&store, "/a", true);
    let writer = {
        let other = Arc::clone(&other);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            other.put(&k("/a/b/c/d"), b"deep").unwrap();
            Instant::now()
        })
    };
    let (event, seen) = first_event(&mut *w, |e| e.key == "/a/b/c/d");
    let first = after(writer.join().unwrap(), seen);
    assert_eq!(
        (event.kind, &event.value[..]),
        (EventKind::Put, &b"deep"[..])
    );
    assert!(first < RESCAN_BOUND, "{first:?}");
    // The watch is on /a and below now: a write deeper down wakes it at once.
    let written = {
        other.put(&k("/a/b/c/e/f"), b"deeper").unwrap();
        Instant::now()
    };
    let (event, seen) = first_event(&mut *w, |e| e.key == "/a/b/c/e/f");
    let second = after(written, seen);
    assert_eq!(event.value, b"deeper");
    println!("a key below new directories seen after {first:?}; the next, {second:?}");
    assert!(second < WAKE, "{second:?}");
    // Nothing beside /a.
    other.put(&k("/ab"), b"beside").unwrap();
    assert!(w
        .next(Instant::now() + Duration::from_millis(200))
        .unwrap()
        .is_empty());
}

#[test]
fn a_file_another_tool_writes_into_the_root_is_seen_as_a_put() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    let mut w = own_watcher(&store, "/legacy", false);
    // As SIMP 6 wrote its files: a temp file renamed into place, no lock.
    fs::write(root.join("legacy.new"), b"from simp 6").unwrap();
    fs::rename(root.join("legacy.new"), root.join("legacy")).unwrap();
    let written = Instant::now();
    let (event, seen) = first_event(&mut *w, |e| e.key == "/legacy");
    let took = after(written, seen);
    assert_eq!(
        (event.kind, &event.value[..]),
        (EventKind::Put, &b"from simp 6"[..])
    );
    assert_eq!(
        event.sequence,
        common::sequence(&*store, "/legacy"),
        "its sequence is the file's"
    );
    // Written over in place: the last of what was written is handed out.
    fs::write(root.join("legacy"), b"edited by hand").unwrap();
    let written = Instant::now();
    let (_, seen) = first_event(&mut *w, |e| e.value == b"edited by hand");
    println!(
        "a file written by another tool seen after {took:?}; edited, {:?}",
        after(written, seen)
    );
    assert!(took < WAKE && after(written, seen) < WAKE);
    // Removed by hand: a delete.
    fs::remove_file(root.join("legacy")).unwrap();
    let (event, _) = first_event(&mut *w, |e| e.kind == EventKind::Delete);
    assert_eq!(event.key, "/legacy");
}

#[test]
fn a_watched_key_whose_ttl_passes_is_handed_out_as_deleted() {
    let (store, _tmp) = file_store();
    let ttl = Duration::from_secs(1);
    // Written before the watch began: its first read knows the deadline.
    let before = Instant::now();
    store.put_ttl(&k("/ttl/known"), b"v", None, ttl).unwrap();
    let mut known = own_watcher(&store, "/ttl/known", false);
    // Written once the watch began.
    let mut later = own_watcher(&store, "/ttl", true);
    let started = Instant::now();
    store.put_ttl(&k("/ttl/later"), b"v", None, ttl).unwrap();
    let (put, _) = first_event(&mut *later, |e| e.key == "/ttl/later");
    assert_eq!(put.kind, EventKind::Put);
    let (gone, at) = first_event(&mut *known, |e| e.kind == EventKind::Delete);
    assert_eq!(gone.key, "/ttl/known");
    let known_late = at.saturating_duration_since(before + ttl);
    let (_, at) = first_event(&mut *later, |e| {
        e.kind == EventKind::Delete && e.key == "/ttl/later"
    });
    let later_late = at.saturating_duration_since(started + ttl);
    println!(
        "deletes of expired keys after their deadline: written once watched {later_late:?}, \
         watched once written {known_late:?}"
    );
    // The store's deadline is in whole milliseconds of the system clock.
    assert!(
        at + Duration::from_millis(5) >= started + ttl,
        "handed out as deleted before its ttl passed"
    );
    assert!(known_late < RESCAN_BOUND && later_late < RESCAN_BOUND);
    assert_eq!(store.get(&k("/ttl/later")).unwrap(), None);
}

#[test]
fn a_root_moved_away_and_made_again_is_watched_anew() {
    let (store, tmp) = file_store();
    let root = tmp.path().join("root");
    store.put(&k("/d/old"), b"1").unwrap();
    // The watch is on ROOT/d, which moves away with the root: no notification.
    let mut w = own_watcher(&store, "/d", true);
    fs::rename(&root, tmp.path().join("moved")).unwrap();
    fs::create_dir(&root).unwrap();
    store.put(&k("/d/new"), b"2").unwrap();
    let written = Instant::now();
    let mut events = common::events_until(&mut *w, |e| e.key == "/d/new");
    let took = after(written, Instant::now());
    if !events.iter().any(|e| e.key == "/d/old") {
        events.extend(common::events_until(&mut *w, |e| e.key == "/d/old"));
    }
    let mut summary: Vec<(EventKind, String)> =
        events.into_iter().map(|e| (e.kind, e.key)).collect();
    summary.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        summary,
        [
            (EventKind::Put, "/d/new".to_owned()),
            (EventKind::Delete, "/d/old".to_owned())
        ]
    );
    // The watch is on the new root's directory now.
    store.put(&k("/d/next"), b"3").unwrap();
    let written_next = Instant::now();
    let (_, seen) = first_event(&mut *w, |e| e.key == "/d/next");
    let next = after(written_next, seen);
    println!("a write in a root made again seen after {took:?}; the next, {next:?}");
    assert!(took < RESCAN_BOUND, "{took:?}");
    assert!(next < WAKE, "{next:?}");
    // What happens in the old root is no longer the store's.
    fs::write(tmp.path().join("moved/d/stray"), b"x").unwrap();
    assert!(w
        .next(Instant::now() + Duration::from_millis(200))
        .unwrap()
        .is_empty());
}

/// With `LIBKV_TEST_WATCH_FORK_ROOT` set, a worker process of
/// `a_forked_child_watches_with_its_own_notifier` (alone in its process, so that
/// the child meets no lock of another test's thread): a watch made and used
/// before a fork is used by the child, whose own write must wake it at once.
#[test]
fn watch_fork_process() {
    let Ok(root) = std::env::var("LIBKV_TEST_WATCH_FORK_ROOT") else {
        return;
    };
    let store = open_at(Path::new(&root), Duration::from_secs(5));
    let mut w = own_watcher(&store, "/forked", true);
    store.put(&k("/forked/parent"), b"p").unwrap();
    common::events_until(&mut *w, |e| e.key == "/forked/parent");
    // SAFETY: the child calls the store and the watch, then _exit, never
    // returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = (|| {
            store.put(&k("/forked/child"), b"c").ok()?;
            let written = Instant::now();
            while written.elapsed() < Duration::from_secs(3) {
                let events = w.next(Instant::now() + Duration::from_millis(50)).ok()?;
                if events.iter().any(|e| e.key == "/forked/child") {
                    // Late: at the re-read, the parent's notifier was used.
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
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
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
    // The parent's watch goes on.
    store.put(&k("/forked/after"), b"a").unwrap();
    common::events_until(&mut *w, |e| e.key == "/forked/after");
}

#[test]
fn a_forked_child_watches_with_its_own_notifier() {
    let tmp = TempDir::new().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "watch_fork_process", "--test-threads=1"])
        .env("LIBKV_TEST_WATCH_FORK_ROOT", tmp.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
