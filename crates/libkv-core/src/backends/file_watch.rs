//! Watches on the file store: a [`Coalescing`](crate::watch::Coalescing) watcher
//! over a [`FileSource`], which learns from the kernel's change notification
//! (inotify, through `notify`) that something below the watched directory may have
//! changed, and then reads the target with the store's own `atomic_get` or
//! `atomic_list` (so what it hands out is what a read would answer: expired keys
//! and the store's own files left out, links refused).
//!
//! - **Where it looks.** A key's directory (not below it), or a watched directory
//!   and everything below it. A directory that does not exist yet is stood in for
//!   by its nearest existing ancestor inside the root (not below it), and the watch
//!   moves down as the directories appear. Directories are looked at one component
//!   at a time from the root path without following a link: nothing outside the
//!   root, and nothing through a link, is watched (notify, watching a tree,
//!   follows no link below it either). No root yet: nothing is watched until it
//!   is made.
//! - **What wakes it.** Creates, renames, deletes, writes and changes of
//!   attributes; not opens and reads (the watch's own reads would wake it again).
//!   Nor changes of the store's own files that every write makes, the lock file
//!   and temp files (`.NAME@PID.N.tmp`, the expiry index's too): a write (a temp
//!   file made, written and renamed over the key) wakes it once or twice. After
//!   the first notification it waits [`DEBOUNCE`] for the rest of the burst, then
//!   reads once.
//! - **Nothing missed.** Before each read it checks where the watch should be (a
//!   directory made, the watched one removed, the root moved away and made again)
//!   and moves it there first: a change after the move is notified, a change
//!   before it is in the read. It also reads at least every [`RESCAN`] without a
//!   notification, and at the earliest deadline of a watched key written with a
//!   ttl (expiry changes no file; the expiry index has the deadlines), so that a
//!   notification lost (the kernel's queue overflowed, the root replaced while a
//!   directory below it was watched) costs at most that delay.
//! - **The store's sequence** of a read ([`Snapshot::index`]) is one less than the
//!   lock file's counter, read before the state: every write of the store with a
//!   sequence up to that had renamed its file into place by then (writes take
//!   their sequences and rename in order, under the lock), while the one that
//!   wrote the counter may still be under way. 0 where there is no counter.
//! - **Threads and forks.** The notification's thread belongs to the source and
//!   ends when the source is dropped. A forked child has no copy of it: a source
//!   used in a child leaves its parent's notifier untouched (not even dropped: its
//!   channel may have been mid-message at the fork) and makes its own.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Config, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use rustix::fs::{statat, AtFlags, FileType, CWD};

use super::expiry;
use super::file::{FileStore, LOCK_NAME};
use crate::error::{Error, Result};
use crate::fork;
use crate::store::Versioned;
use crate::watch::{Snapshot, Source, Target};

/// How long a watch waits after a notification for the rest of its burst.
pub const DEBOUNCE: Duration = Duration::from_millis(2);
/// How long a watch goes at most without reading the target.
pub const RESCAN: Duration = Duration::from_secs(1);
/// How long after a ttl deadline a watch reads: the index keeps whole milliseconds.
const EXPIRY_SLACK: Duration = Duration::from_millis(2);
/// How often one read moves the watch at most before reading (each move goes as
/// deep as the directories exist; more are needed only while they keep changing).
const MOVES: usize = 16;

/// What a watch of the file store reads from (see the module).
pub(super) struct FileSource {
    store: Arc<FileStore>,
    target: Target,
    /// `None` until the first call, and after its thread ended.
    notifier: Option<Notifier>,
    /// When to read without a notification; `None`: at once.
    read_by: Option<Instant>,
}

impl FileSource {
    pub(super) fn new(store: Arc<FileStore>, target: Target) -> FileSource {
        FileSource {
            store,
            target,
            notifier: None,
            read_by: None,
        }
    }

    fn failed(&self, reason: impl Display) -> Error {
        self.store
            .watch_failed(self.target.op(), self.target.key.as_str(), reason)
    }

    /// This process's notifier: a forked child leaves its parent's alone and makes
    /// its own, and so does a source whose notifier's thread ended. A new one
    /// reads at once: what happened before it was there was not notified.
    fn notifier(&mut self) -> Result<&mut Notifier> {
        if self.notifier.as_ref().is_some_and(|n| n.pid != fork::pid()) {
            std::mem::forget(self.notifier.take());
        }
        if self.notifier.is_none() {
            let made = Notifier::new().map_err(|e| {
                self.failed(format_args!(
                    "cannot start watching for changes (inotify): {e}{}",
                    instances_hint(&e)
                ))
            })?;
            self.notifier = Some(made);
            self.read_by = None;
        }
        Ok(self.notifier.as_mut().expect("a notifier was made"))
    }

    /// Waits for a notification (and the rest of its burst) until `read_by` or
    /// `deadline`, whichever comes first; whether to read now.
    fn wait(&mut self, deadline: Instant, read_by: Instant) -> Result<bool> {
        let notifier = self.notifier.as_mut().expect("a notifier");
        loop {
            let now = Instant::now();
            if now >= read_by {
                return Ok(true);
            }
            if now >= deadline {
                return Ok(false);
            }
            match notifier.events.recv_timeout(deadline.min(read_by) - now) {
                Ok(Signal::Changed) => break,
                Ok(Signal::Failed(e)) => {
                    let path = e.paths.first().cloned().unwrap_or_default();
                    return Err(self.failed(cannot_watch(&path, &e)));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Its thread is gone (notify's drop would panic telling it to
                    // stop): a new notifier reads at once at the next call.
                    std::mem::forget(self.notifier.take());
                    return Ok(true);
                }
            }
        }
        let now = Instant::now();
        let until = (now + DEBOUNCE).min(deadline.max(now));
        if until > now {
            std::thread::sleep(until - now);
        }
        Ok(true)
    }

    /// Moves the watch where it should be (see the module), then reads the target.
    fn read(&mut self) -> Result<Snapshot> {
        // Also after a failure: the next call waits rather than failing at once.
        self.read_by = Some(Instant::now() + RESCAN);
        let settled = self.settle();
        // Every notification taken in so far is of a change this read sees (when
        // the watch could not be moved, one the next read will see); those after
        // this are sent anew.
        let failure = self.notifier.as_mut().and_then(|notifier| {
            notifier.pending.store(false, Ordering::SeqCst);
            notifier.drain()
        });
        settled?;
        if let Some(e) = failure {
            self.read_by = Some(Instant::now());
            let path = e.paths.first().cloned().unwrap_or_default();
            return Err(self.failed(cannot_watch(&path, &e)));
        }
        let op = self.target.op();
        let counter = self.store.last_issued(op, self.target.key.as_str());
        let entries = self
            .target
            .read(&*self.store)
            .map_err(|e| as_watch_error(e, op))?;
        if let Some(at) = self.expiry(&entries).map_err(|e| as_watch_error(e, op))? {
            self.read_by = self.read_by.map(|by| by.min(at));
        }
        Ok(Snapshot {
            index: counter.saturating_sub(1),
            entries,
        })
    }

    /// Puts the watch where the target's directory is now, or its nearest
    /// existing ancestor, again until that stays put.
    fn settle(&mut self) -> Result<()> {
        for _ in 0..MOVES {
            let want = place(self.store.root_path(), &self.target);
            let notifier = self.notifier.as_mut().expect("a notifier");
            if want == notifier.at {
                return Ok(());
            }
            if let Some(at) = notifier.at.take() {
                // Gone already when its directory was removed: nothing to do.
                let _ = notifier.unwatch(&at.path);
            }
            let Some(want) = want else {
                return Ok(()); // No root: the next read looks again.
            };
            match notifier.watch(&want.path, want.recursive) {
                Ok(()) => notifier.at = Some(want),
                // It changed meanwhile: look again.
                Err(e) if vanished(&e) => {}
                Err(e) => return Err(self.failed(cannot_watch(&want.path, &e))),
            }
        }
        Ok(())
    }

    /// When the first of the keys read that were written with a ttl expires.
    fn expiry(&self, entries: &[(String, Versioned)]) -> Result<Option<Instant>> {
        if entries.is_empty() {
            return Ok(None);
        }
        let op = self.target.op();
        let Some(index) = self.store.expiry_index(op, self.target.key.as_str())? else {
            return Ok(None);
        };
        let earliest = entries
            .iter()
            .filter_map(|(key, v)| match index.0.get(key) {
                Some(&(seq, deadline)) if seq == v.sequence => Some(deadline),
                _ => None,
            })
            .min();
        Ok(earliest.map(|deadline| {
            let left = Duration::from_millis(deadline.saturating_sub(expiry::now_ms()));
            Instant::now() + left + EXPIRY_SLACK
        }))
    }
}

impl Source for FileSource {
    fn next(&mut self, deadline: Instant) -> Result<Option<Snapshot>> {
        self.notifier()?;
        if let Some(read_by) = self.read_by {
            if !self.wait(deadline, read_by)? {
                return Ok(None);
            }
        }
        if self.notifier.is_none() {
            self.notifier()?;
        }
        self.read().map(Some)
    }
}

/// A directory watched: where, whether everything below it, and which directory
/// it was (so that another one made at its path is watched anew).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    path: PathBuf,
    recursive: bool,
    dev: u64,
    ino: u64,
}

/// Where a watch of `target` should be now: its directory (for a key, the key's),
/// or the nearest existing one above it, inside the root; looked at a component
/// at a time, a link being no directory. `None` when the root is no directory.
fn place(root: &Path, target: &Target) -> Option<Place> {
    let dir = |path: &Path| {
        statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
    };
    let mut st = dir(root)?;
    let mut path = root.to_path_buf();
    let mut components = target.key.components();
    if !target.tree {
        components.next_back(); // the key's own name
    }
    let mut reached = true;
    for c in components {
        let below = path.join(c);
        match dir(&below) {
            Some(found) => {
                st = found;
                path = below;
            }
            None => {
                reached = false;
                break;
            }
        }
    }
    Some(Place {
        path,
        recursive: target.tree && reached,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// What the notification's thread tells a source.
enum Signal {
    /// Something below the watched directory may have changed.
    Changed,
    /// A directory below could not be watched: the user's inotify watches are
    /// used up.
    Failed(notify::Error),
}

/// notify's watcher (its thread and inotify instance) and what it sends.
struct Notifier {
    /// Always there but while being dropped.
    watcher: Option<RecommendedWatcher>,
    events: Receiver<Signal>,
    /// Whether a `Changed` was sent that no read has begun after: the thread sends
    /// one per burst rather than one per event.
    pending: Arc<AtomicBool>,
    /// The process that made it.
    pid: u32,
    /// Where it watches.
    at: Option<Place>,
}

impl Notifier {
    fn new() -> notify::Result<Notifier> {
        let (tx, events) = mpsc::channel();
        let pending = Arc::new(AtomicBool::new(false));
        let sent = Arc::clone(&pending);
        let handler = move |event: notify::Result<notify::Event>| {
            let signal = match event {
                Ok(event) if !wakes(&event) => return,
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => Signal::Failed(e),
                // A read error of the thread, or a change: read again.
                _ if sent.swap(true, Ordering::SeqCst) => return,
                _ => Signal::Changed,
            };
            let _ = tx.send(signal);
        };
        let config = Config::default().with_follow_symlinks(false);
        let watcher = guarded(|| RecommendedWatcher::new(handler, config))?;
        Ok(Notifier {
            watcher: Some(watcher),
            events,
            pending,
            pid: fork::pid(),
            at: None,
        })
    }

    fn watch(&mut self, path: &Path, recursive: bool) -> notify::Result<()> {
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let watcher = self.watcher.as_mut().expect("a watcher");
        guarded(|| watcher.watch(path, mode))
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        let watcher = self.watcher.as_mut().expect("a watcher");
        guarded(|| watcher.unwatch(path))
    }

    /// Takes what the thread sent: the first failure, if any.
    fn drain(&mut self) -> Option<notify::Error> {
        let mut failure = None;
        loop {
            match self.events.try_recv() {
                Ok(Signal::Changed) => {}
                Ok(Signal::Failed(e)) => {
                    failure.get_or_insert(e);
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return failure,
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // Tells its thread to stop. notify panics doing so when the thread is gone
        // already; nothing is left to stop then.
        if let Some(watcher) = self.watcher.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(watcher)));
        }
    }
}

/// notify's call, a panic of which (its thread is gone: it could not be started,
/// or it failed) is an error.
fn guarded<T>(call: impl FnOnce() -> notify::Result<T>) -> notify::Result<T> {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(notify::Error::generic(
            "the thread that waits for inotify's notifications is gone",
        ))
    })
}

/// Whether a notification may be of a change of the target: not an open or a
/// read, nor a change of the store's own files alone.
fn wakes(event: &notify::Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event.need_rescan() || event.paths.is_empty() || !event.paths.iter().all(|p| own_file(p))
}

/// Whether `path` is a file the store changes on every write: its lock file, or
/// a temp file (`.NAME@PID.N.tmp`, `.libkv@expiry.tmp`); no key has such a name.
fn own_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name == LOCK_NAME || (name.starts_with('.') && name.ends_with(".tmp") && name.contains('@'))
}

/// Whether a watch failed because its directory changed meanwhile.
fn vanished(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound | notify::ErrorKind::WatchNotFound => true,
        notify::ErrorKind::Io(io) => {
            io.kind() == std::io::ErrorKind::NotFound
                || io.raw_os_error() == Some(libc::ENOTDIR)
                || io.raw_os_error() == Some(libc::ELOOP)
        }
        _ => false,
    }
}

fn cannot_watch(path: &Path, e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "cannot watch {} for changes: the inotify watches this user may have are used up; \
             raise the sysctl fs.inotify.max_user_watches, or watch a smaller directory",
            path.display()
        ),
        notify::ErrorKind::Io(io) => format!("cannot watch {} for changes: {io}", path.display()),
        _ => format!("cannot watch {} for changes: {e}", path.display()),
    }
}

fn instances_hint(e: &notify::Error) -> &'static str {
    match &e.kind {
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
            "; the inotify instances this user may have (or the files this process may \
             open) are used up: raise the sysctl fs.inotify.max_user_instances, or close \
             other watches"
        }
        _ => "",
    }
}

/// A read's error, named as the watch's.
fn as_watch_error(e: Error, op: &'static str) -> Error {
    match e {
        Error::Store {
            key, store, reason, ..
        } => Error::Store {
            op,
            key,
            store,
            reason,
        },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn target(key: &str, tree: bool) -> Target {
        let key = if tree { Key::dir(key) } else { Key::new(key) }.unwrap();
        Target { key, tree }
    }

    #[test]
    fn the_watch_is_on_the_nearest_directory_inside_the_root_never_through_a_link() {
        let tmp = tempfile::TempDir::new().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(outside.join("x")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let at = |key: &str, tree: bool| {
            place(&root, &target(key, tree)).map(|p| {
                let below = p.path.strip_prefix(&root).unwrap().display().to_string();
                (below, p.recursive)
            })
        };
        assert_eq!(at("/a/b", true), Some(("a/b".into(), true)));
        assert_eq!(at("/a/b/key", false), Some(("a/b".into(), false)));
        assert_eq!(at("/key", false), Some(("".into(), false)));
        assert_eq!(at("/", true), Some(("".into(), true)));
        // Not there yet: the nearest ancestor, and not below it.
        assert_eq!(at("/a/b/c/d", true), Some(("a/b".into(), false)));
        assert_eq!(at("/a/b/c/key", false), Some(("a/b".into(), false)));
        // A link is no directory: never watched through.
        assert_eq!(at("/link/x", true), Some(("".into(), false)));
        assert_eq!(at("/link/x/key", false), Some(("".into(), false)));
        // No root, or a link as the root: nothing.
        assert_eq!(place(&tmp.path().join("none"), &target("/a", true)), None);
        assert_eq!(place(&root.join("link"), &target("/x", true)), None);
    }

    #[test]
    fn reads_and_the_stores_own_files_do_not_wake_a_watch() {
        let event = |kind: EventKind, paths: &[&str]| {
            paths.iter().fold(notify::Event::new(kind), |e, p| {
                e.add_path(PathBuf::from(p))
            })
        };
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let create = EventKind::Create(CreateKind::File);
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(!wakes(&event(open, &["/r/key"])));
        assert!(!wakes(&event(read, &["/r/key"])));
        assert!(wakes(&event(written, &["/r/key"])));
        assert!(wakes(&event(create, &["/r/key"])));
        for own in [
            "/r/.libkv@lock",
            "/r/a/.key@123.4.tmp",
            "/r/.libkv@expiry.tmp",
        ] {
            assert!(!wakes(&event(create, &[own])), "{own}");
        }
        // The rename of a temp file over a key, the expiry index replaced.
        assert!(wakes(&event(renamed, &["/r/a/.key@123.4.tmp", "/r/a/key"])));
        assert!(wakes(&event(create, &["/r/.libkv@expiry"])));
        // The kernel's queue overflowed: read again.
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(wakes(&overflow));
    }
}
