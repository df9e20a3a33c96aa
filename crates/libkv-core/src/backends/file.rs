//! `file:///ROOT` and `legacy-simp6://`: each key is a file under a root directory,
//! `/a/b` is `ROOT/a/b`, the layout SIMP 6 used for `simp_autofiles`.
//!
//! - **No torn writes.** A write goes to a temp file in the key's directory, which is
//!   fsynced, renamed over the key's file, and the directory fsynced: a reader sees the
//!   old value or the new, and a write that returned survives a crash.
//! - **Linearizable writes.** Every write holds an exclusive `flock` on `ROOT/.libkv@lock`
//!   (opened afresh per call, so threads and forked processes exclude each other too),
//!   waiting at most the store's timeout. Reads take no lock: files are never changed
//!   in place, so an open file is one version.
//! - **Sequences.** A key's sequence is its file's modification time in nanoseconds.
//!   Writes set it from a store-wide counter kept in the lock file: the larger of the
//!   clock and one past both the last sequence issued and the key's current one. So it
//!   only grows, a key deleted and created again gets a larger one, and a file written
//!   by another tool gets a new sequence too. Checking and writing happen under the
//!   lock, so of many writers racing with the same `previous`, exactly one wins.
//! - **Nothing outside the root.** Paths are walked one component at a time from an
//!   open handle on the root with `O_NOFOLLOW`: a symbolic link inside the root is
//!   refused, never followed. A read takes one `openat2` that follows no link
//!   instead, where the kernel has it: by the whole path when the root path held no
//!   link (which also looks at the root path), else below the root's handle; what
//!   that cannot answer (a link or a file in the way) goes to the walk, which says
//!   what it found. A file with more than one hard link is refused on read,
//!   since it may also be a file outside the root; writes replace the name, never the
//!   linked file.
//! - **The root is the directory the URL names, now.** The root is opened once and
//!   the handle kept, but every operation first looks at the root path (one `lstat`,
//!   its device and inode compared with the handle's). When the path names another
//!   directory (moved away and made again, a backup restored), that one is opened
//!   and used from then on; when nothing is there, the next write makes the
//!   directory, as at first use, and reads find no keys (they never make it). So a
//!   long-running Puppet server never keeps writing into a directory that is no
//!   longer the store. An operation that started just before such a change finishes
//!   on the directory it started on.
//! - **No symbolic link as the root.** When the root path itself is a symbolic link,
//!   at first use or later, every operation fails with a store error that says so:
//!   a link that someone can change would send every key elsewhere. Point the URL
//!   at the real directory. Links in the directories above the root are the admin's
//!   choice and are followed.
//! - **Keys that expire.** A key written with a `ttl` is recorded, with its
//!   sequence and deadline, in the expiry index `ROOT/.libkv@expiry` (see
//!   `expiry`), by the writer holding the lock, after the key's file: the file holds
//!   the value alone, as every other key's. Every read looks at the index (one
//!   `stat`, and a read when it changed) and treats a key past its deadline as
//!   absent; writes under the lock do too, and the next write with a `ttl` removes
//!   the files of expired keys. A writer killed between the key's rename and the
//!   index's leaves the new value without expiry, as a write that did not return.
//! - **Watches** (`file_watch`): the kernel's change notification (inotify) on the
//!   watched directory (a key's: its directory) says something may have changed;
//!   the watch then reads the state as any read does, and hands out what differs
//!   from the last it read. It reads again at least every second, and at the
//!   deadline of a watched key with a ttl, so a lost notice, a replaced root or an
//!   expiry costs at most that.
//! - Names that cannot be key components (`.libkv@lock`, `.libkv@expiry`, temp
//!   files `.NAME@PID.N.tmp`) are the store's own and never listed or read as keys.
//! - **Leftover temp files are removed.** A writer creates and renames its temp file
//!   only while it holds the lock, so a temp file seen by the lock's holder is a
//!   leftover of a writer killed mid-write. Before creating it, the writer records
//!   the temp file's path below the root on a second line of the lock file, in the
//!   same `pwrite` as the counter, and truncates that line away after the rename (no
//!   extra fsync). Whoever takes the lock next and finds a record removes the file it
//!   names: walked to from the root handle without following links, only when every
//!   directory is a valid key component and the name has the temp file form (which
//!   no key and not the lock file can have), and only a regular file. A lock file
//!   holding just the counter (all earlier versions wrote that) reads as before; a
//!   libkv older than this one, taking the lock after a crash left a record, cannot
//!   read the counter and falls back to the clock and the key's own sequence, as
//!   with any lock file it cannot read. A temp file whose record did not survive
//!   (a power loss before the lock file reached the disk) stays, ignored by every
//!   read and listing, until `deletetree` removes it. A temp file name that exists
//!   already (left by an earlier process with the same PID) is skipped for the next
//!   number, so it never fails a write.

use std::cell::Cell;
use std::ffi::CStr;
use std::fmt::Display;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::buffer::spare_capacity;
use rustix::fs::{
    fstat, fsync, ftruncate, futimens, mkdirat, openat, openat2, renameat, statat, unlinkat,
    AtFlags, Dir, FileType, FlockOperation, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps,
    CWD, UTIME_OMIT,
};
use rustix::io::Errno;

use super::expiry::{self, Index};
use super::file_watch::FileSource;
use crate::error::{Error, Result, Waiting};
use crate::fork;
use crate::key::{is_valid_component, Key};
use crate::store::{Listing, Store, Versioned};
use crate::value::Value;
use crate::watch::{Coalescing, Target, Watcher};

pub const LOCK_NAME: &str = ".libkv@lock";
/// How a key's file is opened to be read. NONBLOCK: opening a planted FIFO must not
/// hang. NOCTTY: a planted terminal must not become the process's controlling
/// terminal.
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);
/// How `openat2` resolves a key's path below the root: the guarantee of the walk
/// (nothing outside the root, no link followed) in one call.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// How `openat2` resolves a key's whole path, the root's included (keys have no
/// `..`, so a walk down them stays below the root).
const BENEATH_PATH: ResolveFlags = ResolveFlags::NO_SYMLINKS.union(ResolveFlags::NO_MAGICLINKS);

/// Whether this kernel lets this process use `openat2` (Linux 5.6 and later, when
/// no seccomp filter forbids it); false once it said it cannot. Off too when the
/// environment's `LIBKV_FILE_OPENAT2` is `0` (the tests run both ways).
static OPENAT2: LazyLock<AtomicBool> = LazyLock::new(|| {
    AtomicBool::new(std::env::var_os("LIBKV_FILE_OPENAT2").is_none_or(|v| v != "0"))
});
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
/// Deeper than any key can reach (keys have at most 512 components); a deeper tree
/// was not made by libkv and is refused rather than walked.
const MAX_TREE_DEPTH: usize = 600;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct FileStore {
    url: String,
    provider: &'static str,
    root_path: PathBuf,
    /// The root directory last opened; checked against the root path by every
    /// operation.
    root: RwLock<Option<Arc<RootDir>>>,
    /// Whether the root path held no symbolic link when the root was last opened:
    /// then a read opens the key's file by its whole path, the root's included,
    /// refusing every link on the way, in one call (see `read_key`).
    plain_path: AtomicBool,
    timeout: Duration,
    /// The expiry index last read, and which file it was read from.
    expiry: std::sync::Mutex<Option<(IndexFile, Arc<Index>)>>,
}

/// Which expiry index file was read: device, inode, size, modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexFile(u64, u64, i64, i64, i64);

impl IndexFile {
    fn of(st: &Stat) -> IndexFile {
        IndexFile(
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime,
            st.st_mtime_nsec as i64,
        )
    }
}

/// An open handle on the root directory, and which directory it is.
struct RootDir {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
}

impl AsFd for RootDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A directory handle: the root's, borrowed, or one opened below it.
enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Sub(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(fd) => *fd,
            DirFd::Sub(fd) => fd.as_fd(),
        }
    }
}

/// The store lock, held until dropped (closing the file releases the `flock`). It
/// is a fork section: a child forked meanwhile would hold the lock for its whole
/// life (see `fork`). Fields drop in order: the file is closed first.
struct Locked {
    fd: OwnedFd,
    /// The last sequence issued, read from the lock file when the lock was taken.
    last: u64,
    /// The lock file's length as last read or written.
    len: Cell<usize>,
    _section: fork::Section,
}

impl Locked {
    /// Writes the counter and the temp file about to be made (its path below the
    /// root) in one `pwrite`, so that a writer killed before its rename leaves a
    /// record of its temp file for the next one.
    fn record(&self, seq: u64, temp: &str) -> rustix::io::Result<()> {
        let text = format!("{seq:020}\n{temp}\n");
        rustix::io::pwrite(&self.fd, text.as_bytes(), 0)?;
        if self.len.get() > text.len() {
            ftruncate(&self.fd, text.len() as u64)?;
        }
        self.len.set(text.len());
        Ok(())
    }

    /// Leaves only the counter in the lock file. Best effort, no fsync: a record
    /// left behind names a file that is gone, which is harmless.
    fn clear(&self) {
        if self.len.get() > COUNTER_LEN && ftruncate(&self.fd, COUNTER_LEN as u64).is_ok() {
            self.len.set(COUNTER_LEN);
        }
    }
}

/// The lock file's first line, the last sequence issued: 20 digits and a newline.
const COUNTER_LEN: usize = 21;
/// The most the lock file holds: the counter and the path of one temp file.
const LOCK_FILE_MAX: usize = 2048;
/// Temp file names tried for one write when earlier ones exist (left by an earlier
/// process with the same PID whose record did not survive).
const TEMP_ATTEMPTS: usize = 1000;

/// What the lock file says: the last sequence issued (0 when unreadable) and the
/// temp file a writer was about to make, if it recorded one and did not clear it.
fn parse_lock_file(text: &[u8]) -> (u64, Option<&str>) {
    let (first, rest) = match text.iter().position(|&b| b == b'\n') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &[][..]),
    };
    let last = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let pending = rest
        .strip_suffix(b"\n")
        .filter(|r| !r.is_empty() && !r.contains(&b'\n'))
        .and_then(|r| std::str::from_utf8(r).ok());
    (last, pending)
}

/// A recorded temp file's directories and name, if the record is one the store
/// writes: valid key components, then a name `.STEM@PID.N.tmp`, which no key and
/// not the lock file can have. Anything else is not acted on.
fn parse_leftover(record: &str) -> Option<(Vec<&str>, &str)> {
    let mut parts: Vec<&str> = record.split('/').collect();
    let name = parts.pop()?;
    if !parts.iter().all(|c| is_valid_component(c.as_bytes())) {
        return None;
    }
    let (stem, numbers) = name
        .strip_prefix('.')?
        .strip_suffix(".tmp")?
        .rsplit_once('@')?;
    let (pid, n) = numbers.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    (stem.len() <= TEMP_STEM && is_valid_component(stem.as_bytes()) && digits(pid) && digits(n))
        .then_some((parts, name))
}

/// The characters of a key's name that start its temp files' names.
const TEMP_STEM: usize = 200;

/// The directories opened on the way to a key or directory, below the root.
struct Walked<'a> {
    root: BorrowedFd<'a>,
    chain: Vec<OwnedFd>,
}

impl Walked<'_> {
    /// The last directory reached: where the key's file lives.
    fn dir(&self) -> BorrowedFd<'_> {
        self.chain.last().map_or(self.root, |fd| fd.as_fd())
    }
}

/// What a directory entry is, as far as the store is concerned.
enum Entry {
    Absent,
    Dir,
    File(Stat),
}

impl FileStore {
    /// A store rooted at `root`. Nothing is touched until the first operation, which
    /// creates the root directory if needed: so bad input is refused before any I/O,
    /// and a root that cannot be used now can be retried by the next call.
    pub fn open(root: PathBuf, provider: &'static str, timeout: Duration) -> FileStore {
        let url = match provider {
            "legacy-simp6" => "legacy-simp6://".to_owned(),
            _ => format!("file://{}", root.display()),
        };
        FileStore {
            url,
            provider,
            root_path: root,
            root: RwLock::new(None),
            plain_path: AtomicBool::new(false),
            timeout,
            expiry: std::sync::Mutex::new(None),
        }
    }

    /// The root directory's handle, for an operation that writes: `root_or_none`,
    /// making the directory when nothing is at the root path, as at first use.
    fn root(&self, op: &'static str, key: &str) -> Result<Arc<RootDir>> {
        Ok(self
            .root_or_none(op, key, true)?
            .expect("the root was made"))
    }

    /// The root directory's handle, for an operation that only reads or removes:
    /// `None` when nothing is at the root path, which is then left alone (a store
    /// nobody wrote to holds no keys).
    fn existing_root(&self, op: &'static str, key: &str) -> Result<Option<Arc<RootDir>>> {
        self.root_or_none(op, key, false)
    }

    /// Every operation checks, with one `lstat` of the root path, that the path
    /// still names the directory held; when it names another one (moved away and
    /// made again), that one is opened; when nothing is there, the directory is
    /// made (`create`) or `None` returned. A symbolic link at the root path is
    /// refused.
    fn root_or_none(
        &self,
        op: &'static str,
        key: &str,
        create: bool,
    ) -> Result<Option<Arc<RootDir>>> {
        let fail = |e: std::io::Error| {
            self.failed(
                op,
                key,
                format_args!(
                    "cannot use {} as the store root: {e}{}",
                    self.root_path.display(),
                    hint(e.raw_os_error())
                ),
            )
        };
        // The handle's lock is a fork section, as every lock a child could inherit.
        let _section = fork::section();
        let found = match statat(CWD, &self.root_path, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(fail(e.into())),
        };
        if let Some(st) = &found {
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                return Err(self.root_is_a_link(op, key));
            }
            // The handle held keeps its directory's inode allocated, so a directory
            // made at the path since cannot have the same number.
            let held = self.root.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(held) = held
                .as_ref()
                .filter(|h| h.dev == st.st_dev && h.ino == st.st_ino)
            {
                return Ok(Some(Arc::clone(held)));
            }
        } else if !create {
            return Ok(None);
        } else {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                DIR_MODE,
            )
            .create(&self.root_path)
            .map_err(fail)?;
        }
        let fd = openat(
            CWD,
            &self.root_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP => self.root_is_a_link(op, key),
            e => fail(e.into()),
        })?;
        let st = fstat(&fd).map_err(|e| fail(e.into()))?;
        let plain = std::fs::canonicalize(&self.root_path).is_ok_and(|real| real == self.root_path);
        self.plain_path.store(plain, Ordering::Relaxed);
        let opened = Arc::new(RootDir {
            fd,
            dev: st.st_dev,
            ino: st.st_ino,
        });
        // Threads racing here each open one; each uses its own, the last is kept.
        *self.root.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&opened));
        Ok(Some(opened))
    }

    fn root_is_a_link(&self, op: &'static str, key: &str) -> Error {
        let target = rustix::fs::readlinkat(CWD, &self.root_path, Vec::new())
            .map(|t| format!(" (to {})", t.to_string_lossy()))
            .unwrap_or_default();
        self.failed(
            op,
            key,
            format_args!(
                "the store root {} is a symbolic link{target}; the file store does not follow \
                 a link at its root, which could be changed to send every key elsewhere: point \
                 the store's URL at the real directory",
                self.root_path.display()
            ),
        )
    }

    fn failed(&self, op: &'static str, key: &str, reason: impl Display) -> Error {
        Error::Store {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    fn io(&self, op: &'static str, key: &str, what: &str, e: Errno) -> Error {
        let e = std::io::Error::from(e);
        self.failed(
            op,
            key,
            format_args!("{what}: {e}{}", hint(e.raw_os_error())),
        )
    }

    fn refused(&self, op: &'static str, key: &str, at: &str, what: &str) -> Error {
        self.failed(
            op,
            key,
            format_args!(
                "{at} is {what}; the file store refuses it so that nothing outside {} is \
                 ever read or written: remove it",
                self.root_path.display()
            ),
        )
    }

    fn lock(&self, op: &'static str, key: &str, root: BorrowedFd<'_>) -> Result<Locked> {
        let section = fork::section();
        let fd = openat(
            root,
            LOCK_NAME,
            // As for keys: a FIFO or terminal planted here is refused, never waited on.
            OFlags::RDWR
                | OFlags::CREATE
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::NOCTTY
                | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|e| match e {
            Errno::LOOP => self.refused(op, key, LOCK_NAME, "a symbolic link"),
            e => self.io(op, key, "cannot open the lock file", e),
        })?;
        let st = fstat(&fd).map_err(|e| self.io(op, key, "cannot stat the lock file", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.refused(op, key, LOCK_NAME, "not a regular file"));
        }
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return self.locked(op, key, root, fd, section),
                Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Timeout {
                            op,
                            key: key.to_owned(),
                            store: self.url.clone(),
                            after: self.timeout,
                            waiting: Waiting::Lock,
                        });
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(e) => return Err(self.io(op, key, "cannot lock the store", e)),
            }
        }
    }

    /// The lock just taken: reads the counter, and removes the temp file a writer
    /// recorded and did not clear (it was killed before its rename). Whoever holds
    /// the lock is the only writer, so a recorded temp file is nobody's now.
    fn locked(
        &self,
        op: &'static str,
        key: &str,
        root: BorrowedFd<'_>,
        fd: OwnedFd,
        section: fork::Section,
    ) -> Result<Locked> {
        let mut buf = [0u8; LOCK_FILE_MAX + 1];
        let n = rustix::io::pread(&fd, &mut buf, 0)
            .map_err(|e| self.io(op, key, "cannot read the lock file", e))?;
        let (last, pending) = parse_lock_file(&buf[..n.min(LOCK_FILE_MAX)]);
        if let Some((dirs, name)) = pending.and_then(parse_leftover) {
            remove_leftover(root, &dirs, name);
        }
        let locked = Locked {
            fd,
            last,
            len: Cell::new(n),
            _section: section,
        };
        locked.clear();
        Ok(locked)
    }

    /// The next sequence: above the clock's reading, the last one issued and `current`.
    fn next_sequence(
        &self,
        op: &'static str,
        key: &str,
        lock: &Locked,
        current: u64,
    ) -> Result<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seq = now.max(lock.last.max(current) + 1);
        if seq > i64::MAX as u64 {
            return Err(self.failed(op, key, "the store's sequence counter is exhausted"));
        }
        Ok(seq)
    }

    /// Opens the directories along `components` below the root, one at a time, never
    /// following a link. With `create`, missing ones are made; without, a missing
    /// one (or a file in the way) gives `None`. Returns the handles, root excluded.
    fn walk<'r, 'c>(
        &self,
        op: &'static str,
        key: &str,
        root: BorrowedFd<'r>,
        components: impl Iterator<Item = &'c str>,
        create: bool,
    ) -> Result<Option<Walked<'r>>> {
        let mut chain: Vec<OwnedFd> = Vec::new();
        let mut walked = String::new();
        for c in components {
            walked.push('/');
            walked.push_str(c);
            let parent = chain.last().map_or(root, |fd| fd.as_fd());
            let mut made = false;
            loop {
                match openat(
                    parent,
                    c,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => {
                        chain.push(fd);
                        break;
                    }
                    Err(Errno::NOENT) if create && !made => {
                        match mkdirat(parent, c, Mode::from_raw_mode(DIR_MODE)) {
                            Ok(()) | Err(Errno::EXIST) => {}
                            Err(e) => {
                                return Err(self.io(op, key, &format!("cannot create {walked}"), e))
                            }
                        }
                        fsync(parent)
                            .map_err(|e| self.io(op, key, "cannot sync a directory", e))?;
                        made = true;
                    }
                    Err(Errno::NOENT) if !create => return Ok(None),
                    Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                        match self.entry(op, key, parent, c, &walked)? {
                            Entry::File(_) if create => {
                                return Err(Error::Conflict {
                                    op,
                                    key: key.to_owned(),
                                    store: self.url.clone(),
                                    reason: format!(
                                        "{walked} holds a value, and the file store cannot keep a \
                                         key below another key; delete {walked} or choose another key"
                                    ),
                                })
                            }
                            Entry::File(_) | Entry::Absent => return Ok(None),
                            Entry::Dir => {
                                return Err(self.failed(
                                    op,
                                    key,
                                    format_args!("{walked} changed while being opened; try again"),
                                ))
                            }
                        }
                    }
                    Err(e) => return Err(self.io(op, key, &format!("cannot open {walked}"), e)),
                }
            }
        }
        Ok(Some(Walked { root, chain }))
    }

    /// `walk`, making missing directories; a directory that vanishes meanwhile is an
    /// error the caller may retry.
    fn walk_creating<'r, 'c>(
        &self,
        op: &'static str,
        key: &Key,
        root: BorrowedFd<'r>,
        components: impl Iterator<Item = &'c str>,
    ) -> Result<Walked<'r>> {
        self.walk(op, key.as_str(), root, components, true)?
            .ok_or_else(|| {
                self.failed(
                    op,
                    key.as_str(),
                    "a directory changed while being opened; try again",
                )
            })
    }

    /// What `name` in `dir` is, refusing links and special files.
    fn entry(
        &self,
        op: &'static str,
        key: &str,
        dir: impl AsFd,
        name: &str,
        shown: &str,
    ) -> Result<Entry> {
        match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Ok(Entry::File(st)),
                FileType::Directory => Ok(Entry::Dir),
                FileType::Symlink => Err(self.refused(op, key, shown, "a symbolic link")),
                _ => Err(self.refused(op, key, shown, "not a regular file or directory")),
            },
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(Entry::Absent),
            Err(e) => Err(self.io(op, key, &format!("cannot stat {shown}"), e)),
        }
    }

    /// Reads one file and its status from the same open file, so value and sequence
    /// belong to one version. `None` when absent (or a directory). `key` is the
    /// key of the call, `shown` the key of the file (a key below it when listing).
    fn read(
        &self,
        op: &'static str,
        key: &str,
        dir: impl AsFd,
        name: &str,
        shown: &str,
    ) -> Result<Option<(Vec<u8>, Stat)>> {
        let fd = match openat(dir, name, READ_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(None),
            Err(Errno::LOOP) => return Err(self.refused(op, key, shown, "a symbolic link")),
            Err(e) => return Err(self.io(op, key, &doing("cannot open", key, shown), e)),
        };
        self.read_open(op, key, fd, shown)
    }

    /// Reads an open file and its status, refusing what is not a plain file of its
    /// own. `None` for a directory.
    fn read_open(
        &self,
        op: &'static str,
        key: &str,
        fd: OwnedFd,
        shown: &str,
    ) -> Result<Option<(Vec<u8>, Stat)>> {
        let what = |action: &str| doing(action, key, shown);
        let st = fstat(&fd).map_err(|e| self.io(op, key, &what("cannot stat"), e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Ok(None),
            _ => return Err(self.refused(op, key, shown, "not a regular file")),
        }
        if st.st_nlink > 1 {
            return Err(self.refused(
                op,
                key,
                shown,
                "a file with several hard links (it may also be a file outside the store)",
            ));
        }
        let size = usize::try_from(st.st_size).unwrap_or(0);
        let value =
            read_to_end(&fd, size).map_err(|e| self.io(op, key, &what("cannot read"), e))?;
        Ok(Some((value, st)))
    }

    /// Opens the key's file below the root in one `openat2`, when this kernel lets
    /// us: `None` when it does not, or when what is in the way (a link, a file where
    /// a directory should be) needs the walk to be told. `Some(Ok(None))`: absent.
    fn open_beneath(
        &self,
        root: BorrowedFd<'_>,
        key: &Key,
        flags: OFlags,
    ) -> Option<Result<Option<OwnedFd>>> {
        if !OPENAT2.load(Ordering::Relaxed) {
            return None;
        }
        opened(openat2(
            root,
            &key.as_str()[1..],
            flags,
            Mode::empty(),
            BENEATH,
        ))
    }

    /// Opens the key's file by its whole path in one `openat2` refusing every link
    /// on the way, when the root path held none (and this kernel lets us): the root
    /// path is looked at, and the key's path walked below it without following a
    /// link, by one call. `None` when that cannot say (a link in the way, which the
    /// walk words; a file where a directory should be). `Some(Ok(None))`: absent.
    fn open_by_path(&self, key: &Key, flags: OFlags) -> Option<Result<Option<OwnedFd>>> {
        if !(self.plain_path.load(Ordering::Relaxed) && OPENAT2.load(Ordering::Relaxed)) {
            return None;
        }
        let mut path = self.root_path.clone().into_os_string();
        path.push(key.as_str());
        opened(openat2(CWD, &path, flags, Mode::empty(), BENEATH_PATH))
    }

    /// Every key below `dir`, sorted, each entry made by `entry` of its value and
    /// status.
    fn below<T>(
        &self,
        op: &'static str,
        dir: &Key,
        entry: impl Fn(Vec<u8>, &Stat) -> T,
    ) -> Result<Listing<T>> {
        let mut out = Vec::new();
        let Some(root) = self.existing_root(op, dir.as_str())? else {
            return Ok(out);
        };
        if let Some(fd) = self.open_dir(op, dir, root.as_fd())? {
            self.visit_tree(op, dir, fd.as_fd(), "", 0, &mut |rel, value, st| {
                out.push((rel, entry(value, &st)))
            })?;
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// What `below` finds, less the keys that have expired.
    fn live_below(&self, op: &'static str, dir: &Key) -> Result<Listing<Versioned>> {
        let found = self.below(op, dir, |value, st| Versioned {
            value,
            sequence: sequence_of(st),
        })?;
        let Some(root) = self.existing_root(op, dir.as_str())? else {
            return Ok(found);
        };
        let Some(index) = self.index(op, dir.as_str(), root.as_fd())? else {
            return Ok(found);
        };
        let now = expiry::now_ms();
        Ok(found
            .into_iter()
            .filter(|(rel, v)| !index.expired(&dir.join(rel), v.sequence, now))
            .collect())
    }

    /// A key's value and status, as `get` and `atomic_get` read them.
    fn read_key(&self, op: &'static str, key: &Key) -> Result<Option<(Vec<u8>, Stat)>> {
        match self.open_by_path(key, READ_FLAGS) {
            Some(Ok(Some(fd))) => return self.read_open(op, key.as_str(), fd, key.as_str()),
            Some(Ok(None)) => return Ok(None),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let Some(root) = self.existing_root(op, key.as_str())? else {
            return Ok(None);
        };
        match self.open_beneath(root.as_fd(), key, READ_FLAGS) {
            Some(Ok(Some(fd))) => return self.read_open(op, key.as_str(), fd, key.as_str()),
            Some(Ok(None)) => return Ok(None),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let (dirs, name) = Self::parents(key);
        let Some(walked) = self.walk(op, key.as_str(), root.as_fd(), dirs, false)? else {
            return Ok(None);
        };
        self.read(op, key.as_str(), walked.dir(), name, key.as_str())
    }

    /// The key's current sequence, 0 when absent.
    fn current(&self, op: &'static str, key: &Key, dir: impl AsFd, name: &str) -> Result<u64> {
        Ok(
            match self.entry(op, key.as_str(), dir, name, key.as_str())? {
                Entry::File(st) => sequence_of(&st),
                Entry::Absent | Entry::Dir => 0,
            },
        )
    }

    /// Writes `value` as the file `name` in `dir`, with the next sequence above
    /// `current` as its modification time: temp file (recorded in the lock file),
    /// fsync, rename over the old file, fsync of the directory.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        op: &'static str,
        key: &Key,
        lock: &Locked,
        dir: impl AsFd,
        name: &str,
        value: &[u8],
        current: u64,
    ) -> Result<u64> {
        let dir = dir.as_fd();
        let k = key.as_str();
        let seq = self.next_sequence(op, k, lock, current)?;
        let (temp, fd) = self.create_temp(op, k, lock, dir, name, seq)?;
        let written = (|| {
            write_all(&fd, value).map_err(|e| self.io(op, k, "cannot write", e))?;
            let mtime = Timespec {
                tv_sec: (seq / 1_000_000_000) as i64,
                tv_nsec: (seq % 1_000_000_000) as _,
            };
            futimens(
                &fd,
                &Timestamps {
                    last_access: Timespec {
                        tv_sec: 0,
                        tv_nsec: UTIME_OMIT,
                    },
                    last_modification: mtime,
                },
            )
            .map_err(|e| self.io(op, k, "cannot set the sequence", e))?;
            let st = fstat(&fd).map_err(|e| self.io(op, k, "cannot stat", e))?;
            if sequence_of(&st) != seq {
                return Err(self.failed(
                    op,
                    k,
                    format_args!(
                        "the file system under {} does not keep modification times to the \
                         nanosecond, which the file store's sequences need; put the store on \
                         ext4, XFS, btrfs or tmpfs",
                        self.root_path.display()
                    ),
                ));
            }
            fsync(&fd).map_err(|e| self.io(op, k, "cannot sync", e))?;
            drop(fd);
            self.rename_into_place(op, k, dir, &temp, name)?;
            fsync(dir).map_err(|e| self.io(op, k, "cannot sync the directory", e))
        })();
        if written.is_err() {
            let _ = unlinkat(dir, temp.as_str(), AtFlags::empty());
        }
        lock.clear();
        written.map(|()| seq)
    }

    /// The expiry index as it is now in `root`, `None` when there is none: one
    /// `stat`, and a read when the file changed since last read.
    fn index(
        &self,
        op: &'static str,
        key: &str,
        root: BorrowedFd<'_>,
    ) -> Result<Option<Arc<Index>>> {
        let st = match statat(root, expiry::NAME, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.io(op, key, "cannot stat the expiry index", e)),
        };
        let file = IndexFile::of(&st);
        let mut cached = self.expiry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, index)) = &*cached {
            if *seen == file {
                return Ok(Some(Arc::clone(index)));
            }
        }
        let Some((text, st)) = self.read(op, key, root, expiry::NAME, expiry::NAME)? else {
            return Ok(None);
        };
        let index = Arc::new(Index::parse(&text));
        *cached = Some((IndexFile::of(&st), Arc::clone(&index)));
        Ok(Some(index))
    }

    /// Whether the key's file of sequence `seq` has expired.
    fn expired(&self, op: &'static str, key: &Key, seq: u64) -> Result<bool> {
        let Some(root) = self.existing_root(op, key.as_str())? else {
            return Ok(false);
        };
        Ok(self
            .index(op, key.as_str(), root.as_fd())?
            .is_some_and(|index| index.expired(key.as_str(), seq, expiry::now_ms())))
    }

    /// A key's value and status unless it has expired.
    fn read_live(&self, op: &'static str, key: &Key) -> Result<Option<(Vec<u8>, Stat)>> {
        match self.read_key(op, key)? {
            Some((value, st)) if !self.expired(op, key, sequence_of(&st))? => Some((value, st)),
            _ => None,
        }
        .map_or(Ok(None), |found| Ok(Some(found)))
    }

    /// The key's current sequence under the lock, 0 when absent or expired.
    fn live_current(
        &self,
        op: &'static str,
        key: &Key,
        root: BorrowedFd<'_>,
        dir: impl AsFd,
        name: &str,
    ) -> Result<u64> {
        let current = self.current(op, key, dir, name)?;
        if current == 0 {
            return Ok(0);
        }
        let expired = self
            .index(op, key.as_str(), root)?
            .is_some_and(|index| index.expired(key.as_str(), current, expiry::now_ms()));
        Ok(if expired { 0 } else { current })
    }

    /// Records that the key's file of sequence `seq` expires at `deadline`, and
    /// removes the files of keys expired meanwhile. Holding the lock.
    fn record_expiry(
        &self,
        op: &'static str,
        key: &Key,
        root: BorrowedFd<'_>,
        seq: u64,
        deadline: u64,
    ) -> Result<()> {
        let k = key.as_str();
        let mut index = self
            .index(op, k, root)?
            .map_or_else(Index::default, |index| (*index).clone());
        for (gone, gone_seq) in index.take_expired(expiry::now_ms()) {
            let Ok(gone) = Key::new(&gone) else { continue };
            let (dirs, name) = Self::parents(&gone);
            if let Some(walked) = self.walk(op, k, root, dirs, false)? {
                if self.current(op, &gone, walked.dir(), name)? == gone_seq {
                    self.unlink_key(op, &gone, &walked, name)?;
                }
            }
        }
        index.0.insert(k.to_owned(), (seq, deadline));
        let fd = openat(
            root,
            expiry::TEMP,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|e| self.io(op, k, "cannot create the expiry index", e))?;
        write_all(&fd, &index.render())
            .and_then(|()| fsync(&fd))
            .map_err(|e| self.io(op, k, "cannot write the expiry index", e))?;
        drop(fd);
        renameat(root, expiry::TEMP, root, expiry::NAME)
            .and_then(|()| fsync(root))
            .map_err(|e| self.io(op, k, "cannot rename the expiry index into place", e))
    }

    /// Makes a new temp file for the key `k` (whose name is `name`) in `dir`,
    /// recording it and the sequence `seq` in the lock file first. A name that
    /// exists already is skipped for the next one.
    fn create_temp(
        &self,
        op: &'static str,
        k: &str,
        lock: &Locked,
        dir: BorrowedFd<'_>,
        name: &str,
        seq: u64,
    ) -> Result<(String, OwnedFd)> {
        let stem: String = name.chars().take(TEMP_STEM).collect();
        // The key's directories below the root, as the record names them: "a/b/".
        let dirs = &k[1..k.len() - name.len()];
        let mut attempts = 0;
        loop {
            let temp = format!(
                ".{stem}@{}.{}.tmp",
                fork::pid(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            lock.record(seq, &format!("{dirs}{temp}"))
                .map_err(|e| self.io(op, k, "cannot write the lock file", e))?;
            match openat(
                dir,
                temp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(FILE_MODE),
            ) {
                Ok(fd) => return Ok((temp, fd)),
                Err(Errno::EXIST) if attempts < TEMP_ATTEMPTS => attempts += 1,
                Err(e) => {
                    lock.clear();
                    return Err(self.io(op, k, "cannot create a temp file", e));
                }
            }
        }
    }

    fn rename_into_place(
        &self,
        op: &'static str,
        key: &str,
        dir: BorrowedFd<'_>,
        temp: &str,
        name: &str,
    ) -> Result<()> {
        match renameat(dir, temp, dir, name) {
            Ok(()) => Ok(()),
            // The key's name is a directory: fine if it is empty (left by keys since
            // deleted), a conflict if keys live below it.
            Err(Errno::ISDIR) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
                match unlinkat(dir, name, AtFlags::REMOVEDIR) {
                    Ok(()) => renameat(dir, temp, dir, name)
                        .map_err(|e| self.io(op, key, "cannot rename the temp file into place", e)),
                    Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
                        let below = first_key_below(dir, name, key)
                            .map_or_else(String::new, |k| format!(" (such as {k})"));
                        Err(Error::Conflict {
                            op,
                            key: key.to_owned(),
                            store: self.url.clone(),
                            reason: format!(
                                "keys exist below {key}{below}, and the file store cannot keep a \
                                 value at a key that has keys below it; deletetree {key} or choose \
                                 another key"
                            ),
                        })
                    }
                    Err(e) => Err(self.io(op, key, "cannot replace a directory", e)),
                }
            }
            Err(e) => Err(self.io(op, key, "cannot rename the temp file into place", e)),
        }
    }

    /// Removes directories left empty along the walked path, deepest first, never the
    /// root.
    fn prune(&self, key: &Key, walked: &Walked<'_>) {
        let names: Vec<&str> = key.components().collect();
        for i in (0..walked.chain.len()).rev() {
            let parent = if i == 0 {
                walked.root
            } else {
                walked.chain[i - 1].as_fd()
            };
            if unlinkat(parent, names[i], AtFlags::REMOVEDIR).is_err() {
                break;
            }
            let _ = fsync(parent);
        }
    }

    /// The directories leading to `key`'s file.
    fn parents(key: &Key) -> (impl Iterator<Item = &str>, &str) {
        let mut all = key.components();
        let name = all.next_back().expect("a key has a name");
        (all, name)
    }

    /// The handle of the directory `dir`, or `None` when it does not exist.
    fn open_dir<'r>(
        &self,
        op: &'static str,
        dir: &Key,
        root: BorrowedFd<'r>,
    ) -> Result<Option<DirFd<'r>>> {
        if dir.is_root() {
            return Ok(Some(DirFd::Root(root)));
        }
        Ok(self
            .walk(op, dir.as_str(), root, dir.components(), false)?
            .and_then(|mut walked| walked.chain.pop())
            .map(DirFd::Sub))
    }

    /// Every key below `dir` with its file's status, via `visit`.
    fn visit_tree(
        &self,
        op: &'static str,
        dir: &Key,
        fd: BorrowedFd<'_>,
        relative: &str,
        depth: usize,
        visit: &mut dyn FnMut(String, Vec<u8>, Stat),
    ) -> Result<()> {
        let shown = |rel: &str| dir.join(rel);
        if depth > MAX_TREE_DEPTH {
            return Err(self.refused(
                op,
                dir.as_str(),
                &shown(relative),
                "a directory tree deeper than any key",
            ));
        }
        for (name, kind) in self.read_dir(op, dir.as_str(), fd)? {
            let Some(name) = name
                .to_str()
                .ok()
                .filter(|n| is_valid_component(n.as_bytes()))
            else {
                continue; // the store's own files, and names no key can have
            };
            let rel = if relative.is_empty() {
                name.to_owned()
            } else {
                format!("{relative}/{name}")
            };
            let kind = match kind {
                FileType::Unknown => match self.entry(op, dir.as_str(), fd, name, &shown(&rel))? {
                    Entry::Dir => FileType::Directory,
                    Entry::File(_) => FileType::RegularFile,
                    Entry::Absent => continue,
                },
                k => k,
            };
            match kind {
                FileType::Directory => {
                    let sub = match openat(
                        fd,
                        name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(sub) => sub,
                        Err(Errno::NOENT) => continue,
                        Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                            return Err(self.refused(
                                op,
                                dir.as_str(),
                                &shown(&rel),
                                "a symbolic link",
                            ))
                        }
                        Err(e) => {
                            return Err(self.io(
                                op,
                                dir.as_str(),
                                &format!("cannot open {}", shown(&rel)),
                                e,
                            ))
                        }
                    };
                    self.visit_tree(op, dir, sub.as_fd(), &rel, depth + 1, visit)?;
                }
                FileType::RegularFile => {
                    if let Some((value, st)) =
                        self.read(op, dir.as_str(), fd, name, &shown(&rel))?
                    {
                        visit(rel, value, st);
                    }
                }
                FileType::Symlink => {
                    return Err(self.refused(op, dir.as_str(), &shown(&rel), "a symbolic link"))
                }
                _ => {
                    return Err(self.refused(
                        op,
                        dir.as_str(),
                        &shown(&rel),
                        "not a regular file or directory",
                    ))
                }
            }
        }
        Ok(())
    }

    fn read_dir(
        &self,
        op: &'static str,
        key: &str,
        fd: BorrowedFd<'_>,
    ) -> Result<Vec<(std::ffi::CString, FileType)>> {
        let dir = Dir::read_from(fd).map_err(|e| self.io(op, key, "cannot read a directory", e))?;
        let mut entries = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| self.io(op, key, "cannot read a directory", e))?;
            let name: &CStr = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            entries.push((name.to_owned(), entry.file_type()));
        }
        Ok(entries)
    }

    /// Removes everything inside the directory `fd` (the lock file excepted at the root).
    fn remove_contents(
        &self,
        op: &'static str,
        key: &str,
        fd: BorrowedFd<'_>,
        at_root: bool,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_TREE_DEPTH {
            return Err(self.refused(op, key, key, "a directory tree deeper than any key"));
        }
        for (name, kind) in self.read_dir(op, key, fd)? {
            if at_root && name.to_bytes() == LOCK_NAME.as_bytes() {
                continue;
            }
            let is_dir = match kind {
                FileType::Directory => true,
                FileType::Unknown => statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                    .unwrap_or(false),
                _ => false,
            };
            if is_dir {
                match openat(
                    fd,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(sub) => self.remove_contents(op, key, sub.as_fd(), false, depth + 1)?,
                    Err(Errno::NOENT) => continue,
                    Err(e) => {
                        return Err(self.io(op, key, "cannot open a directory to delete it", e))
                    }
                }
            }
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            match unlinkat(fd, name.as_c_str(), flags) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(self.io(op, key, "cannot delete", e)),
            }
        }
        fsync(fd).map_err(|e| self.io(op, key, "cannot sync a directory", e))
    }

    /// Deletes the key's file under the lock, then removes directories left empty.
    fn unlink_key(
        &self,
        op: &'static str,
        key: &Key,
        walked: &Walked<'_>,
        name: &str,
    ) -> Result<()> {
        let dir = walked.dir();
        match unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) => {
                fsync(dir)
                    .map_err(|e| self.io(op, key.as_str(), "cannot sync the directory", e))?;
                self.prune(key, walked);
                Ok(())
            }
            Err(Errno::NOENT) | Err(Errno::ISDIR) | Err(Errno::NOTDIR) => Ok(()),
            Err(e) => Err(self.io(op, key.as_str(), "cannot delete", e)),
        }
    }
}

/// Removes the temp file `name` in the directories `dirs` below the root, walking
/// there without following links; only a regular file is removed. Best effort:
/// whatever stands in the way, nothing is done.
fn remove_leftover(root: BorrowedFd<'_>, dirs: &[&str], name: &str) {
    let mut held: Option<OwnedFd> = None;
    for c in dirs {
        let parent = held.as_ref().map_or(root, |fd| fd.as_fd());
        match openat(
            parent,
            *c,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => held = Some(fd),
            Err(_) => return,
        }
    }
    let dir = held.as_ref().map_or(root, |fd| fd.as_fd());
    if statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
    {
        let _ = unlinkat(dir, name, AtFlags::empty());
    }
}

/// A key below the directory `name` in `dir`, to name in a conflict; best effort.
fn first_key_below(dir: BorrowedFd<'_>, name: &str, key: &str) -> Option<String> {
    let mut fd = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut found = key.to_owned();
    for _ in 0..MAX_TREE_DEPTH {
        let entry = Dir::read_from(&fd)
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| is_valid_component(e.file_name().to_bytes()))?;
        let component = entry.file_name().to_str().ok()?.to_owned();
        found.push('/');
        found.push_str(&component);
        match openat(
            &fd,
            component.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(sub) => fd = sub,
            Err(_) => return Some(found),
        }
    }
    None
}

/// A file's sequence: its modification time in nanoseconds, never 0.
fn sequence_of(st: &Stat) -> u64 {
    let ns = i128::from(st.st_mtime) * 1_000_000_000 + st.st_mtime_nsec as i128;
    ns.clamp(1, i64::MAX as i128) as u64
}

fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn hint(errno: Option<i32>) -> &'static str {
    match errno.map(Errno::from_raw_os_error) {
        Some(Errno::ACCESS) | Some(Errno::PERM) => {
            "; give the user running Puppet read and write access to the store's root"
        }
        Some(Errno::NOSPC) | Some(Errno::DQUOT) => "; free space on the store's file system",
        Some(Errno::ROFS) => "; the store's file system is read-only",
        Some(Errno::NOTDIR) | Some(Errno::NOENT) => "; check the store's root path",
        _ => "",
    }
}

/// The rest of `fd`, which `fstat` found `size` bytes long: usually one read of
/// the data and one that finds the end. (`File::read_to_end` would ask the size
/// and the position again first: two more system calls on every read.)
/// What a read was doing, naming the file when it is not the call's key's (a key
/// below the directory listed).
fn doing(action: &str, key: &str, shown: &str) -> String {
    if shown == key {
        action.to_owned()
    } else {
        format!("{action} {shown}")
    }
}

/// What an `openat2` of a key's file tells: the file, or its absence; `None` for
/// what the walk must look at (a link or a file in the way), and on a kernel
/// that cannot (older, or a seccomp filter), which the walk serves from then on.
fn opened(result: rustix::io::Result<OwnedFd>) -> Option<Result<Option<OwnedFd>>> {
    match result {
        Ok(fd) => Some(Ok(Some(fd))),
        Err(Errno::NOENT) => Some(Ok(None)),
        Err(Errno::NOSYS) | Err(Errno::PERM) => {
            OPENAT2.store(false, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
}

fn read_to_end(fd: &OwnedFd, size: usize) -> rustix::io::Result<Vec<u8>> {
    // One byte more than the size, so that a file of that size is read by one
    // read: a read of a regular file that gives less than it was asked for has
    // reached the end.
    let mut value = Vec::with_capacity(size.saturating_add(1));
    loop {
        if value.len() == value.capacity() {
            value.reserve(value.capacity().max(4096));
        }
        let asked = value.capacity() - value.len();
        match rustix::io::read(fd, spare_capacity(&mut value)) {
            Ok(0) => return Ok(value),
            Ok(n) if n < asked => return Ok(value),
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// What a watch of the store (`file_watch`) needs of it.
impl FileStore {
    pub(super) fn root_path(&self) -> &std::path::Path {
        &self.root_path
    }

    /// A watch's error, as the store's others are worded.
    pub(super) fn watch_failed(&self, op: &'static str, key: &str, reason: impl Display) -> Error {
        self.failed(op, key, reason)
    }

    /// The last sequence issued, as the lock file's counter has it, read without
    /// taking the lock (a file opened as a key's is, never waited on); 0 when
    /// there is no lock file or it cannot be read.
    pub(super) fn last_issued(&self, op: &'static str, key: &str) -> u64 {
        let Ok(Some(root)) = self.existing_root(op, key) else {
            return 0;
        };
        let Ok(fd) = openat(root.as_fd(), LOCK_NAME, READ_FLAGS, Mode::empty()) else {
            return 0;
        };
        let mut counter = [0u8; COUNTER_LEN];
        rustix::io::pread(&fd, &mut counter, 0).map_or(0, |n| parse_lock_file(&counter[..n]).0)
    }

    /// The expiry index as it is now, `None` when there is none (or no root).
    pub(super) fn expiry_index(&self, op: &'static str, key: &str) -> Result<Option<Arc<Index>>> {
        match self.existing_root(op, key)? {
            Some(root) => self.index(op, key, root.as_fd()),
            None => Ok(None),
        }
    }
}

impl Store for FileStore {
    fn provider(&self) -> &'static str {
        self.provider
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        Ok(self.read_live("get", key)?.map(|(value, _)| value))
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<()> {
        let op = "put";
        let root = self.root(op, key.as_str())?;
        let lock = self.lock(op, key.as_str(), root.as_fd())?;
        let (dirs, name) = Self::parents(key);
        let walked = self.walk_creating(op, key, root.as_fd(), dirs)?;
        let dir = walked.dir();
        let current = self.current(op, key, dir, name)?;
        self.write(op, key, &lock, dir, name, value, current)?;
        Ok(())
    }

    fn delete(&self, key: &Key) -> Result<()> {
        let op = "delete";
        let Some(root) = self.existing_root(op, key.as_str())? else {
            return Ok(());
        };
        let _lock = self.lock(op, key.as_str(), root.as_fd())?;
        let (dirs, name) = Self::parents(key);
        match self.walk(op, key.as_str(), root.as_fd(), dirs, false)? {
            Some(walked) => self.unlink_key(op, key, &walked, name),
            None => Ok(()),
        }
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        // With keys that expire, whether this one has needs its sequence.
        if let Some(root) = self.existing_root("exists", key.as_str())? {
            if self.index("exists", key.as_str(), root.as_fd())?.is_some() {
                return Ok(self.read_live("exists", key)?.is_some());
            }
        }
        // O_PATH opens the name itself, whatever it is, without reading it.
        let path = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let kind = |found: Option<Result<Option<OwnedFd>>>| match found {
            Some(Ok(Some(fd))) => match fstat(&fd).map(|st| FileType::from_raw_mode(st.st_mode)) {
                Ok(FileType::RegularFile) => Some(Ok(true)),
                Ok(FileType::Directory) => Some(Ok(false)),
                // Something else: the walk says what.
                _ => None,
            },
            Some(Ok(None)) => Some(Ok(false)),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        if let Some(answer) = kind(self.open_by_path(key, path)) {
            return answer;
        }
        let Some(root) = self.existing_root("exists", key.as_str())? else {
            return Ok(false);
        };
        if let Some(answer) = kind(self.open_beneath(root.as_fd(), key, path)) {
            return answer;
        }
        let (dirs, name) = Self::parents(key);
        let Some(walked) = self.walk("exists", key.as_str(), root.as_fd(), dirs, false)? else {
            return Ok(false);
        };
        Ok(matches!(
            self.entry("exists", key.as_str(), walked.dir(), name, key.as_str())?,
            Entry::File(_)
        ))
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        Ok(self
            .live_below("list", dir)?
            .into_iter()
            .map(|(rel, v)| (rel, v.value))
            .collect())
    }

    fn deletetree(&self, dir: &Key) -> Result<()> {
        let op = "deletetree";
        let Some(root) = self.existing_root(op, dir.as_str())? else {
            return Ok(());
        };
        let _lock = self.lock(op, dir.as_str(), root.as_fd())?;
        if dir.is_root() {
            return self.remove_contents(op, dir.as_str(), root.as_fd(), true, 0);
        }
        let Some(walked) = self.walk(op, dir.as_str(), root.as_fd(), dir.components(), false)?
        else {
            return Ok(());
        };
        self.remove_contents(op, dir.as_str(), walked.dir(), false, 0)?;
        // The directory itself goes too, with parents it leaves empty.
        self.prune(dir, &walked);
        Ok(())
    }

    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool> {
        let op = "atomic_create";
        let root = self.root(op, key.as_str())?;
        let lock = self.lock(op, key.as_str(), root.as_fd())?;
        let (dirs, name) = Self::parents(key);
        let walked = self.walk_creating(op, key, root.as_fd(), dirs)?;
        let dir = walked.dir();
        let current = self.live_current(op, key, root.as_fd(), dir, name)?;
        if current != 0 {
            return Ok(false);
        }
        self.write(op, key, &lock, dir, name, value, current)?;
        Ok(true)
    }

    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>> {
        Ok(self
            .read_live("atomic_get", key)?
            .map(|(value, st)| Versioned {
                value,
                sequence: sequence_of(&st),
            }))
    }

    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool> {
        let op = "atomic_put";
        // Only a create (previous 0) may need the root and directories made.
        let Some(root) = self.root_or_none(op, key.as_str(), previous == 0)? else {
            return Ok(false);
        };
        let lock = self.lock(op, key.as_str(), root.as_fd())?;
        let (dirs, name) = Self::parents(key);
        let Some(walked) = self.walk(op, key.as_str(), root.as_fd(), dirs, previous == 0)? else {
            return Ok(false);
        };
        let dir = walked.dir();
        let current = self.live_current(op, key, root.as_fd(), dir, name)?;
        if current != previous {
            return Ok(false);
        }
        self.write(op, key, &lock, dir, name, value, current)?;
        Ok(true)
    }

    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool> {
        let op = "atomic_delete";
        let Some(root) = self.existing_root(op, key.as_str())? else {
            return Ok(previous == 0);
        };
        let _lock = self.lock(op, key.as_str(), root.as_fd())?;
        let (dirs, name) = Self::parents(key);
        let Some(walked) = self.walk(op, key.as_str(), root.as_fd(), dirs, false)? else {
            return Ok(previous == 0);
        };
        let current = self.live_current(op, key, root.as_fd(), walked.dir(), name)?;
        if current != previous {
            return Ok(false);
        }
        if current != 0 {
            self.unlink_key(op, key, &walked, name)?;
        }
        Ok(true)
    }

    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>> {
        self.live_below("atomic_list", dir)
    }

    fn put_ttl(
        &self,
        key: &Key,
        value: &[u8],
        previous: Option<u64>,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let op = crate::store::ttl_write_op(previous);
        let create = previous.is_none_or(|p| p == 0);
        let Some(root) = self.root_or_none(op, key.as_str(), create)? else {
            return Ok(None);
        };
        let lock = self.lock(op, key.as_str(), root.as_fd())?;
        let (dirs, name) = Self::parents(key);
        let Some(walked) = self.walk(op, key.as_str(), root.as_fd(), dirs, create)? else {
            return Ok(None);
        };
        let dir = walked.dir();
        let current = self.live_current(op, key, root.as_fd(), dir, name)?;
        if previous.is_some_and(|p| p != current) {
            return Ok(None);
        }
        let deadline = expiry::deadline(ttl);
        let seq = self.write(op, key, &lock, dir, name, value, current)?;
        self.record_expiry(op, key, root.as_fd(), seq, deadline)?;
        Ok(Some(seq))
    }

    /// A watcher that waits on the kernel's change notification and reads the
    /// target again (see `file_watch`).
    fn watch(
        self: Arc<Self>,
        target: &Target,
        from: Option<u64>,
    ) -> Result<Option<Box<dyn Watcher>>> {
        let source = FileSource::new(self, target.clone());
        Ok(Some(Box::new(Coalescing::start(
            source,
            target.clone(),
            from,
        )?)))
    }

    fn info(&self) -> Result<Value> {
        Ok(Value::hash([
            ("provider", Value::from(self.provider)),
            ("url", Value::from(self.url.as_str())),
            ("root", Value::from(self.root_path.display().to_string())),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this kernel the reads take the one-call path, and hand what is in the
    /// way to the walk.
    #[test]
    fn reads_open_beneath_the_root_in_one_call_and_leave_links_to_the_walk() {
        if std::env::var_os("LIBKV_FILE_OPENAT2").is_some_and(|v| v == "0") {
            return; // The run without openat2 checks the walk alone.
        }
        let tmp = tempfile::TempDir::new().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let store = FileStore::open(base.join("root"), "file", Duration::from_secs(5));
        let key = |k: &str| Key::new(k).unwrap();
        store.put(&key("/a/b"), b"v").unwrap();
        std::os::unix::fs::symlink(&base, base.join("root/link")).unwrap();
        let root = store.existing_root("get", "/a/b").unwrap().unwrap();
        let open = |k: &str| store.open_beneath(root.as_fd(), &key(k), READ_FLAGS);
        let opened = |found: Option<Result<Option<OwnedFd>>>| matches!(found, Some(Ok(Some(_))));
        let absent = |found: Option<Result<Option<OwnedFd>>>| matches!(found, Some(Ok(None)));
        assert!(opened(open("/a/b")), "this kernel has openat2");
        assert!(absent(open("/a/none")) && absent(open("/none/b")));
        // A link, or a file where a directory should be: the walk words it.
        assert!(open("/link/root/a/b").is_none() && open("/a/b/c").is_none());
        assert!(OPENAT2.load(Ordering::Relaxed));
        // The root path holds no link: a read opens the whole path in one call.
        let by_path = |k: &str| store.open_by_path(&key(k), READ_FLAGS);
        assert!(opened(by_path("/a/b")) && absent(by_path("/a/none")));
        assert!(by_path("/link/root/a/b").is_none());
        // Below a root reached through a linked directory, it cannot: the root is
        // looked up on its own.
        std::os::unix::fs::symlink(&base, base.join("up")).unwrap();
        let through = FileStore::open(base.join("up/root"), "file", Duration::from_secs(5));
        assert_eq!(
            through.get(&key("/a/b")).unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert!(through.open_by_path(&key("/a/b"), READ_FLAGS).is_none());
        let refused = store.get(&key("/link/root/a/b")).unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert_eq!(store.get(&key("/a/b/c")).unwrap(), None);
    }

    #[test]
    fn lock_files_with_only_the_counter_still_parse() {
        assert_eq!(parse_lock_file(b""), (0, None));
        assert_eq!(parse_lock_file(b"00000000000000000042\n"), (42, None));
        assert_eq!(parse_lock_file(b"42"), (42, None));
        assert_eq!(parse_lock_file(b"garbage\n"), (0, None));
        assert_eq!(
            parse_lock_file(b"00000000000000000042\na/.b@1.2.tmp\n"),
            (42, Some("a/.b@1.2.tmp"))
        );
        // A record cut short, or followed by more lines, is no record.
        assert_eq!(parse_lock_file(b"42\na/.b@1.2.t"), (42, None));
        assert_eq!(parse_lock_file(b"42\na/.b@1.2.tmp\nx\n"), (42, None));
    }

    #[test]
    fn only_temp_file_names_below_valid_directories_are_leftovers() {
        assert_eq!(parse_leftover(".b@1.2.tmp"), Some((vec![], ".b@1.2.tmp")));
        assert_eq!(
            parse_leftover("a/..x/.b.c@123.4567.tmp"),
            Some((vec!["a", "..x"], ".b.c@123.4567.tmp"))
        );
        for bad in [
            "",
            "a/b",
            "a/.libkv@lock",
            ".libkv@lock",
            "../.b@1.2.tmp",
            "./.b@1.2.tmp",
            "/.b@1.2.tmp",
            "a//.b@1.2.tmp",
            "a b/.b@1.2.tmp",
            "a/.b@1.2.tmp/",
            "a/.b@1.2.tmp/c",
            "a/b@1.2.tmp",
            "a/.@1.2.tmp",
            "a/...@1.2.tmp",
            "a/.b@x.2.tmp",
            "a/.b@1.tmp",
            "a/.b@1.2.3.tmp",
            "a/.b@@1.2.tmp",
            "a/.b c@1.2.tmp",
            "a/.b@1.2.tmpx",
        ] {
            assert_eq!(parse_leftover(bad), None, "{bad:?}");
        }
    }
}
