//! The file floor, in its own directory (`ROOT/floor`, emptied first): a key is a
//! file. Writes are crash-safe as a careful program makes them: temp file in the
//! key's directory, fsync, rename over the key's file, fsync of the directory
//! (opened once, outside the timed loop). The read-modify-write holds an `flock`
//! on a lock file (also opened once) around the read and the write. Reads are
//! `open` and `read` until the end, the fewest system calls a read can make; a
//! listing opens each entry relative to the directory it read.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;

use rustix::buffer::spare_capacity;
use rustix::fs::{flock, openat, FlockOperation, Mode, OFlags};

use crate::stats::Bench;
use crate::{check, initial_counter, next_counter, Names, Result, LIST_LEN};

/// Replaces `path` (in `dir`) with `value`, atomically and durably.
fn write_atomic(path: &Path, dir: &File, value: &[u8]) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = File::create(&temp)?;
    file.write_all(value)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    dir.sync_all()
}

/// Everything in the file `name` (relative to `dir`, or a path), read until the end.
fn read(dir: impl AsFd, name: impl rustix::path::Arg) -> io::Result<Vec<u8>> {
    let fd = openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut value = Vec::with_capacity(4096);
    loop {
        if value.len() == value.capacity() {
            value.reserve(value.capacity());
        }
        if rustix::io::read(&fd, spare_capacity(&mut value))? == 0 {
            return Ok(value);
        }
    }
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn run(bench: &Bench, base: &Path, value: &[u8]) -> Result {
    if exists(base)? {
        fs::remove_dir_all(base)?;
    }
    let names = Names::under(&format!("{}/", base.display()));
    let (key, counter, list) = (
        Path::new(&names.key),
        Path::new(&names.counter),
        Path::new(&names.dir),
    );
    fs::create_dir_all(list)?;
    let dir = File::open(base)?;
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(base.join(".lock"))?;

    let list_dir = File::open(list)?;
    for i in 0..LIST_LEN {
        write_atomic(Path::new(&names.list_key(i)), &list_dir, value)?;
    }
    write_atomic(key, &dir, value)?;
    write_atomic(counter, &dir, &initial_counter(value.len()))?;

    bench.run("get", || {
        black_box(read(rustix::fs::CWD, key)?);
        Ok(())
    })?;
    bench.run("put", || Ok(write_atomic(key, &dir, value)?))?;
    bench.run("exists", || check(exists(key)?, "the key is missing"))?;
    bench.run("list100", || {
        let mut listing = Vec::with_capacity(LIST_LEN);
        let dir = File::open(list)?;
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_bytes().starts_with(b".") {
                let value = read(&dir, name)?;
                listing.push((name.to_string_lossy().into_owned(), value));
            }
        }
        listing.sort_unstable();
        check(
            black_box(listing).len() == LIST_LEN,
            "the directory does not hold 100 keys",
        )
    })?;
    bench.run("atomic_get_put", || {
        flock(&lock, FlockOperation::LockExclusive)?;
        let written = (|| -> Result {
            let current = read(rustix::fs::CWD, counter)?;
            Ok(write_atomic(counter, &dir, &next_counter(&current)?)?)
        })();
        flock(&lock, FlockOperation::Unlock)?;
        written
    })
}
