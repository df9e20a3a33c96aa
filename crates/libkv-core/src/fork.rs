//! Fork safety for what a process shares between its threads.
//!
//! A forked child gets a copy of every lock and file descriptor of the parent, but
//! only the thread that called `fork`. A mutex another thread held stays locked in
//! the child forever; a lock file another thread had open keeps its `flock` held for
//! as long as the child lives, since the lock belongs to the open file, which the
//! child's copy of the descriptor keeps open (`O_CLOEXEC` only helps a child that
//! execs).
//!
//! So code that holds such a mutex or lock file runs inside a [`Section`], and `fork`
//! waits, in a `pthread_atfork` handler, until no other thread is inside one: a child
//! never starts with one held. Sections are short: a mutex held for a lookup, a file
//! store write held for its I/O (waiting for the store's lock at most its timeout).
//! While a fork waits, new sections wait for it. Sections nest.
//!
//! What must not cross a fork at all (an SQLite connection: SQLite keeps its lock
//! state per process, and a child that inherits a connection's believes it holds
//! locks the kernel never gave it) is closed by a [`before_fork`] hook, which the
//! forking thread runs once no other thread is inside a section; parent and child
//! open it again when they next need it.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

/// Threads inside a section.
static INSIDE: AtomicUsize = AtomicUsize::new(0);
/// Forks waiting for the sections to end, or under way.
static FORKING: AtomicUsize = AtomicUsize::new(0);
static HANDLERS: Once = Once::new();
/// Whether the handlers are in place (so that a child forgets `PID`).
static REGISTERED: AtomicBool = AtomicBool::new(false);
/// This process's id once asked, 0 before; a forked child starts at 0 again.
static PID: AtomicU32 = AtomicU32::new(0);

/// What the forking thread runs before each fork (see [`before_fork`]).
static BEFORE_FORK: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

thread_local! {
    /// How deep this thread is in sections.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

const PAUSE: Duration = Duration::from_micros(50);

/// Held while code holds a lock a forked child must not inherit. Not `Send`: it
/// ends on the thread it began on.
#[must_use = "a section lasts as long as its value"]
pub struct Section(PhantomData<*const ()>);

/// Begins a section, after any fork under way.
pub fn section() -> Section {
    HANDLERS.call_once(register);
    DEPTH.with(|depth| {
        if depth.get() == 0 {
            loop {
                while FORKING.load(SeqCst) > 0 {
                    std::thread::sleep(PAUSE);
                }
                INSIDE.fetch_add(1, SeqCst);
                if FORKING.load(SeqCst) == 0 {
                    break;
                }
                INSIDE.fetch_sub(1, SeqCst);
            }
        }
        depth.set(depth.get() + 1);
    });
    Section(PhantomData)
}

impl Drop for Section {
    fn drop(&mut self) {
        DEPTH.with(|depth| {
            depth.set(depth.get() - 1);
            if depth.get() == 0 {
                INSIDE.fetch_sub(1, SeqCst);
            }
        });
    }
}

/// Runs `hook` in the forking thread before every fork from now on, once no other
/// thread is inside a section (so a lock a section guards is free, unless the
/// forking thread holds it itself: a hook takes locks with `try_lock`). A hook
/// closes what must not cross a fork; it must not begin a section.
pub fn before_fork(hook: fn()) {
    HANDLERS.call_once(register);
    BEFORE_FORK
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(hook);
}

/// This process's id, asked of the kernel once per process rather than on every
/// call (`getpid` is a system call each time): a forked child forgets it.
pub fn pid() -> u32 {
    HANDLERS.call_once(register);
    if !REGISTERED.load(SeqCst) {
        return std::process::id();
    }
    match PID.load(SeqCst) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, SeqCst);
            pid
        }
        pid => pid,
    }
}

/// Sections of the forking thread itself (it cannot wait for its own).
fn own() -> usize {
    DEPTH.with(|depth| usize::from(depth.get() > 0))
}

extern "C" fn prepare() {
    FORKING.fetch_add(1, SeqCst);
    while INSIDE.load(SeqCst) > own() {
        std::thread::sleep(PAUSE);
    }
    let hooks = BEFORE_FORK
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for hook in hooks {
        hook();
    }
}

extern "C" fn parent() {
    FORKING.fetch_sub(1, SeqCst);
}

extern "C" fn child() {
    // Only this thread lives on: forks of other threads are not under way here.
    FORKING.store(0, SeqCst);
    INSIDE.store(own(), SeqCst);
    PID.store(0, SeqCst);
}

fn register() {
    // SAFETY: the handlers touch atomics, this thread's own depth, and (prepare,
    // before the fork) the hooks, which take their locks with try_lock.
    let status = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    // Only ENOMEM can fail it; without handlers, forking is as unsafe as before,
    // and `pid` asks the kernel every time.
    debug_assert_eq!(status, 0, "pthread_atfork failed");
    REGISTERED.store(status == 0, SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_nest_and_end() {
        let before = INSIDE.load(SeqCst);
        {
            let _outer = section();
            let _inner = section();
            assert_eq!(INSIDE.load(SeqCst), before + 1);
            assert_eq!(own(), 1);
        }
        assert_eq!(own(), 0);
    }

    #[test]
    fn pid_is_this_process_also_in_a_forked_child() {
        assert_eq!(pid(), std::process::id());
        // SAFETY: the child only reads its pid and exits, without unwinding.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let ok = pid() == std::process::id() && pid() != 0;
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child saw its parent's pid"
        );
        assert_eq!(pid(), std::process::id());
    }
}
