//! The C ABI of libkv: the core behind plain `extern "C"` functions, for runtimes
//! that call C through an FFI rather than load an MRI extension. puppetserver's
//! JRuby does, through `lib/libkv/ffi.rb`. This crate only converts: every storage
//! decision is the core's.
//!
//! # Functions
//!
//! ```c
//! uint32_t      libkv_abi_version(void);   // LIBKV_ABI_VERSION below
//! const char   *libkv_version(void);       // libkv's version, static
//! const char   *libkv_error_name(int32_t status);  // "StoreError", ...: static; NULL for no status
//! double        libkv_default_timeout(void);       // seconds: the timeout when none is given
//! double        libkv_max_timeout(void);           // seconds: the longest timeout libkv takes
//! libkv_result *libkv_open(const uint8_t *url, size_t url_len,    // UTF-8
//!                          const uint8_t *auth, size_t auth_len,  // JSON, see below
//!                          double timeout,                        // seconds
//!                          const uint8_t *vardir, size_t vardir_len,        // UTF-8; NULL: none
//!                          const uint8_t *environment, size_t environment_len);  // likewise
//! libkv_result *libkv_call(uint64_t store,                        // a handle from libkv_open
//!                          const uint8_t *op, size_t op_len,      // "get", "atomic_put", ...
//!                          const uint8_t *key, size_t key_len,    // the key or dir, UTF-8
//!                          int32_t value_form, const uint8_t *value, size_t value_len,
//!                          int32_t previous_form, uint64_t previous,
//!                          int32_t serialize,                     // 0 or 1
//!                          int32_t ttl_form, int64_t ttl);        // LIBKV_TTL_*; seconds
//! void          libkv_store_free(uint64_t store);
//!
//! libkv_result *libkv_lock(uint64_t store,                        // a handle from libkv_open
//!                          const uint8_t *key, size_t key_len,    // UTF-8
//!                          int64_t ttl,                           // whole seconds
//!                          double timeout,                        // seconds; 0: one try
//!                          int32_t renew);                        // 0 or 1
//! int32_t       libkv_lock_held(uint64_t lock);    // 1 held, 0 not; -1 no such handle
//! libkv_result *libkv_lock_lost(uint64_t lock);    // why it was lost: JSON String, or null
//! libkv_result *libkv_lock_unlock(uint64_t lock);  // true, or LIBKV_E_LOCK_LOST
//! libkv_result *libkv_lock_detach(uint64_t lock);  // true
//! void          libkv_lock_free(uint64_t lock);
//! libkv_result *libkv_unlock(uint64_t store,                      // a handle from libkv_open
//!                            const uint8_t *key, size_t key_len,  // UTF-8
//!                            const uint8_t *owner, size_t owner_len);  // UTF-8
//!
//! libkv_result *libkv_watch(uint64_t store,                       // a handle from libkv_open
//!                           const uint8_t *key, size_t key_len,   // key, or dir (tree); UTF-8
//!                           int32_t tree,                         // 0 or 1
//!                           int32_t from_form, uint64_t from,     // LIBKV_FROM_*
//!                           int32_t serialize);                   // 0 or 1
//! libkv_result *libkv_watch_next(uint64_t watch, double wait);   // seconds
//! int32_t       libkv_watch_stop(uint64_t watch);  // 1; -1 no such handle
//! void          libkv_watch_free(uint64_t watch);
//! libkv_result *libkv_changed(uint64_t store,                     // a handle from libkv_open
//!                             const uint8_t *key, size_t key_len, // key, or dir (tree); UTF-8
//!                             int32_t tree,                       // 0 or 1
//!                             int32_t previous_form, uint64_t previous,  // LIBKV_PREVIOUS_*
//!                             const uint8_t *listing, size_t listing_len, // JSON, see below
//!                             double timeout,                     // seconds
//!                             int32_t serialize);                 // 0 or 1
//!
//! void          libkv_result_free(libkv_result *result);
//! ```
//!
//! Byte arguments are a pointer and a length; the pointer may be NULL when the
//! length is 0. libkv copies what it needs before returning, and never keeps a
//! caller's pointer.
//!
//! # Results
//!
//! Every function that returns a `libkv_result *` always returns a
//! [`LibkvResult`] (never NULL), which the caller frees with `libkv_result_free`
//! once it has copied what it needs. `status` is [`LIBKV_OK`] or the class of
//! error (`LIBKV_E_*`, whose exception class `libkv_error_name` names). On
//! success `data` is a JSON document in the encoding below; on error it is the
//! message (UTF-8, never holding a secret) and `key` the key the error is about,
//! or NULL.
//! `libkv_open` also sets `handle`, the handle of the store it opened, and
//! `libkv_lock` the handle of the lock it took; it is 0 in every other result.
//!
//! # Store handles
//!
//! A store handle is an opaque number, never a pointer: an id into a registry of
//! the open stores, from 1 up, never reused (0 is no store). `libkv_store_free`
//! removes the store from the registry; the result does not own it. Using a
//! handle cannot touch freed memory whatever the caller does, so a runtime may
//! free it from a garbage collector's finalizer thread while other threads still
//! call it:
//!
//! - `libkv_call` takes its own reference to the store, then runs the operation
//!   without holding the registry's lock. A call that started before the free
//!   finishes normally; the store itself is dropped when the last such call
//!   returns.
//! - `libkv_call` on a freed handle, or on one `libkv_open` never returned, fails
//!   with [`LIBKV_E_INTERNAL`]: `store handle N is closed` (or `was never
//!   opened`).
//! - `libkv_store_free` of a freed or unknown handle (or 0) does nothing, so
//!   freeing twice is harmless.
//! - Should dropping a store panic (a bug), `libkv_store_free` ignores the panic
//!   and leaks what the store still held rather than unwind into the caller or
//!   abort the process (puppetserver's whole JVM).
//!
//! A store may be used by many threads at once.
//!
//! `url`, `vardir`, `environment`, `key` and `owner` are UTF-8 text: the caller
//! converts them first, and refuses what does not convert, as the MRI binding
//! does (`lib/libkv/ffi.rb` raises the same `EncodingError`s). A `url`, `vardir`,
//! `environment` or `owner` that is not UTF-8 is a broken contract
//! ([`LIBKV_E_INTERNAL`]), never decoded lossily; a `key` that is not is an
//! invalid key, as on MRI.
//!
//! # Keys that expire: `ttl`
//!
//! `libkv_call` writes the value for `ttl` whole seconds when `ttl_form` is
//! [`LIBKV_TTL_SECONDS`]: the key disappears once `ttl` has passed without another
//! write of it. With [`LIBKV_TTL_NONE`] (`ttl` ignored) it writes as always. Only
//! `put`, `atomic_create` and `atomic_put` take a ttl, and it must be within the
//! store's bounds (from its shortest, 1 s on most stores, to ten years), which
//! the message refusing another states. Any other `ttl` (whatever number the
//! caller was given: 0, negative) fails with [`LIBKV_E_INVALID_ARGUMENT`] before
//! anything is written, after the key, the value and `previous` have been
//! checked, as by the MRI extension. A store without keys that expire fails with
//! [`LIBKV_E_UNSUPPORTED`] (`ttl is not supported by the ... store`).
//!
//! # Locks
//!
//! `libkv_lock` takes the lock at `key` for `ttl` seconds, waiting at most
//! `timeout` seconds (0: one try; else as a store's timeout, above 0 and at most
//! `libkv_max_timeout`) while another holds it: the call blocks that long. With
//! `renew` a thread of the library renews it every third of its ttl while it is
//! held, needing nothing from the caller. It answers
//! `{"key": ..., "owner": ..., "fence": n, "ttl": seconds}` and sets `handle`. It
//! fails with [`LIBKV_E_LOCK_TIMEOUT`] (and `key`) when the lock was not taken
//! within `timeout`, [`LIBKV_E_UNSUPPORTED`] on a store without locks, and
//! [`LIBKV_E_INVALID_ARGUMENT`] for a `ttl` or `timeout` out of bounds. While it
//! is held, the lock key's value is the owner (a `get` of it says who holds it).
//!
//! - `libkv_lock_held`: 1 while this process holds the lock for certain, 0 once
//!   it was released, detached or lost; -1 for a handle that is not open (freed,
//!   never made), -2 should the library panic (a bug).
//! - `libkv_lock_lost`: why the lock was lost, as a JSON String, or `null`.
//! - `libkv_lock_unlock`: stops renewing and releases the lock on the store:
//!   `true`, or [`LIBKV_E_LOCK_LOST`] (with the reason and `key`) when it had
//!   been lost before (work done under it may have overlapped another holder's;
//!   the store is left to whoever holds it now). Unlocking again answers `true`.
//! - `libkv_lock_detach`: stops renewing and leaves the lock on the store, held
//!   until its ttl passes or `libkv_unlock` releases it; `true`. After it,
//!   `libkv_lock_held` is 0 and unlocking or freeing does nothing more.
//! - `libkv_lock_free`: removes the handle (see below). A lock freed while held
//!   (or lost with its renewing thread running) is released on a thread of its
//!   own: the free never waits on the store, so a garbage collector's finalizer
//!   thread may call it.
//! - `libkv_unlock`: releases the lock `owner` holds at `key` (what `libkv_lock`
//!   answered, from any process): `true`, or `false` when `owner` no longer holds
//!   it. It needs no lock handle.
//!
//! The lock functions on a handle that is not open fail with [`LIBKV_E_INTERNAL`]
//! (`lock handle N is closed`, or `was never opened`). A lock keeps its store
//! open: freeing the store's handle while a lock of it is held leaves the lock
//! working.
//!
//! # Watches
//!
//! `libkv_watch` watches `key` (with `tree`, everything below the directory
//! `key`) from now ([`LIBKV_FROM_NOW`]) or after the sequence `from`
//! ([`LIBKV_FROM_SEQUENCE`]); it answers `{"coalesces": Boolean}` (whether several
//! changes between two reads come as the latest: Consul, file, mock; etcd hands
//! out every change) and sets `handle`, a watch handle (a registry of its own, as
//! for locks). `libkv_watch_next` waits at most `wait` seconds for changes and
//! answers them as DATA, an Array of `["put" | "delete", key, value, sequence]`
//! (value `null` for a delete), empty when none came or the watch was stopped: a
//! caller waits in short steps, and can stop between them. `libkv_watch_stop`
//! (from any thread) ends the watch after the wait under way: every later
//! `libkv_watch_next` answers `[]`. `libkv_watch_free` removes the handle.
//!
//! `libkv_changed` is Puppet's `watch` (and `watchtree`, with `tree`): it waits
//! until the key's sequence (each key's below the directory) differs from
//! `previous`, at most `timeout` seconds, and answers the state then as
//! `atomic_get` (`atomic_list`) answers it. `previous_form`:
//! [`LIBKV_PREVIOUS_NONE`] (the state as the call starts),
//! [`LIBKV_PREVIOUS_SEQUENCE`] with `previous` (a key), [`LIBKV_PREVIOUS_MALFORMED`]
//! (the caller's previous was not what `atomic_get` or `atomic_list` returns), or
//! [`LIBKV_PREVIOUS_LISTING`] (a directory) with `listing` the JSON
//! `[[relative key, sequence], ...]` of what `atomic_list` returned.
//!
//! # Lock handles
//!
//! A lock handle is an opaque number like a store handle, from a registry of its
//! own: from 1 up, never reused, 0 no lock, never a pointer. As for stores, a call
//! takes its own reference to the lock and runs without the registry's lock, so
//! `libkv_lock_free` may run on any thread (a finalizer's) while others use the
//! handle: their calls finish normally, and the lock is released (on a thread of
//! its own, when still held) as the last of them returns. Freeing a freed or
//! unknown handle (or 0) does nothing; a panic while freeing is ignored.
//!
//! # Values: the envelope's DATA
//!
//! Values cross in one encoding both ways: the JSON that the core's envelope
//! carries (`{"libkv":1,"value":DATA}`, see the core's `codec` module), without
//! the envelope. `null`, booleans, integers, floats (always with a fraction or an
//! exponent), strings, arrays and objects are themselves; a Binary is
//! `{"__ptype":"Binary","__pvalue":"<base64>"}`; a Hash with a key that is not a
//! String (or a String key `__ptype`) is `{"__ptype":"Hash","__pvalue":[k1,v1,...]}`.
//! So every JSON object that has a `__ptype` key is such a tag.
//!
//! What `libkv_call` answers, per operation: `get` the value (`null` when absent);
//! `put`, `delete` and `deletetree` `true`; `exists`, `atomic_create`, `atomic_put`
//! and `atomic_delete` a Boolean; `list` a Hash of relative key => value;
//! `atomic_get` `{"value": v, "sequence": n}` (`{"value": null, "sequence": 0}` when
//! absent); `atomic_list` a Hash of relative key => that; `info` a Hash.
//! `libkv_open` answers `{"provider": ..., "url": ..., "supports": [...], "class": ...}`,
//! `class` naming the store's class below `LibKV` (`"Etcd"`).
//!
//! A value to store is passed by `value_form`:
//! - [`LIBKV_VALUE_DATA`]: `value` is DATA, encoded for the store by the core's codec;
//! - [`LIBKV_VALUE_RAW`]: `value` is the bytes to store as they are (`serialize`
//!   false);
//! - [`LIBKV_VALUE_NOT_STRING`]: `serialize` is false but the value is not a String;
//! - [`LIBKV_VALUE_REFUSED`]: the caller could not convert the value; `value` is
//!   why, as a JSON array of a kind and its detail: `["integer-range"]`,
//!   `["too-deep"]`, `["not-utf8"]`, `["not-convertible", why]`, `["class", name]`,
//!   `["non-finite", "NaN" | "inf" | "-inf"]`. The library words the message, so
//!   that both bindings refuse in the same words ([`libkv_core::Refusal`]).
//!
//! The last two fail with `LIBKV_E_INVALID_ARGUMENT`, but only after the key has
//! been checked, so a bad key is reported first, as by the MRI extension.
//! `previous` (of `atomic_put` and `atomic_delete`) is [`LIBKV_PREVIOUS_SEQUENCE`]
//! with the sequence, or [`LIBKV_PREVIOUS_MALFORMED`] when the caller's previous
//! held none. `auth` is a JSON array of `[name, value]` pairs, each a String or
//! `null` for a name or value of a type libkv does not take.
//!
//! # Safety of the boundary
//!
//! No panic crosses it: every function body runs inside `catch_unwind`, and a panic
//! becomes a [`LIBKV_E_INTERNAL`] result (-2 from `libkv_lock_held`; in
//! `libkv_store_free` and `libkv_lock_free`, is ignored). Calls block the calling
//! thread until the store answers or its timeout passes (`libkv_lock` up to its
//! own `timeout` besides); the core's runtime lets any number of threads (JRuby
//! threads, several JRuby instances in one JVM) call at once. No call holds a
//! lock of the library while it waits on a store.

mod call;
mod locks;
mod watches;

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use locks::Registered;

use libkv_core::binding::Watch;
use libkv_core::{Error as CoreError, ErrorClass, Store};

pub use watches::LIBKV_PREVIOUS_LISTING;

/// Bumped whenever a signature, a struct or an encoding above changes.
pub const LIBKV_ABI_VERSION: u32 = 6;

pub const LIBKV_OK: i32 = 0;
// The error statuses are the core's `ErrorClass` numbers; `libkv_error_name`
// names each one's exception class.
/// Bad input: URL, value, option, previous. `LibKV::InvalidArgumentError`.
pub const LIBKV_E_INVALID_ARGUMENT: i32 = ErrorClass::InvalidArgument.code();
/// A key or directory that breaks the key rules. `LibKV::InvalidKeyError`.
pub const LIBKV_E_INVALID_KEY: i32 = ErrorClass::InvalidKey.code();
pub const LIBKV_E_UNSUPPORTED: i32 = ErrorClass::Unsupported.code();
pub const LIBKV_E_STORE: i32 = ErrorClass::Store.code();
pub const LIBKV_E_CONFLICT: i32 = ErrorClass::Conflict.code();
pub const LIBKV_E_CONNECTION: i32 = ErrorClass::Connection.code();
pub const LIBKV_E_TIMEOUT: i32 = ErrorClass::Timeout.code();
pub const LIBKV_E_AUTH: i32 = ErrorClass::Auth.code();
/// A bug: libkv panicked, or the caller broke this contract.
pub const LIBKV_E_INTERNAL: i32 = ErrorClass::Internal.code();
/// A call on a store its binding closed. `LibKV::ClosedError`.
pub const LIBKV_E_CLOSED: i32 = ErrorClass::Closed.code();
/// A lock not taken within the timeout. `LibKV::LockTimeoutError`.
pub const LIBKV_E_LOCK_TIMEOUT: i32 = ErrorClass::LockTimeout.code();
/// A lock that had been lost when it was released. `LibKV::LockLostError`.
pub const LIBKV_E_LOCK_LOST: i32 = ErrorClass::LockLost.code();

pub const LIBKV_VALUE_NONE: i32 = 0;
pub const LIBKV_VALUE_DATA: i32 = 1;
pub const LIBKV_VALUE_RAW: i32 = 2;
pub const LIBKV_VALUE_REFUSED: i32 = 3;
pub const LIBKV_VALUE_NOT_STRING: i32 = 4;

pub const LIBKV_PREVIOUS_NONE: i32 = 0;
pub const LIBKV_PREVIOUS_SEQUENCE: i32 = 1;
pub const LIBKV_PREVIOUS_MALFORMED: i32 = 2;

/// `libkv_watch`'s `from_form`: from now (`from` is ignored).
pub const LIBKV_FROM_NOW: i32 = 0;
/// `libkv_watch`'s `from_form`: every change after the sequence `from`.
pub const LIBKV_FROM_SEQUENCE: i32 = 1;

/// `libkv_call`'s `ttl_form`: no ttl (`ttl` is ignored).
pub const LIBKV_TTL_NONE: i32 = 0;
/// `libkv_call`'s `ttl_form`: `ttl` is the ttl in whole seconds, to be checked.
pub const LIBKV_TTL_SECONDS: i32 = 1;

/// Open handles of one kind (stores, locks): numbers from 1 up, never reused (0
/// is none); see "Store handles" in the crate documentation.
pub(crate) struct Registry<T: ?Sized> {
    /// What a handle is of, for errors: "store", "lock".
    what: &'static str,
    entries: RwLock<BTreeMap<u64, Arc<T>>>,
    next: AtomicU64,
}

impl<T: ?Sized> Registry<T> {
    const fn new(what: &'static str) -> Registry<T> {
        Registry {
            what,
            entries: RwLock::new(BTreeMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Registers an entry; returns its new handle.
    pub(crate) fn register(&self, entry: Arc<T>) -> u64 {
        let handle = self.next.fetch_add(1, Ordering::Relaxed);
        // A panic while the lock was held cannot leave the map half-changed
        // (insert, remove and get are each whole), so a poisoned lock is used as
        // it is.
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.insert(handle, entry);
        handle
    }

    /// The entry of `handle`: a reference of the caller's own, taken under the
    /// read lock, which is released before the caller uses it.
    pub(crate) fn lookup(&self, handle: u64) -> Result<Arc<T>, Failure> {
        let found = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&handle)
            .cloned();
        found.ok_or_else(|| {
            let what = self.what;
            if handle == 0 || handle >= self.next.load(Ordering::Relaxed) {
                Failure::Internal(format!("{what} handle {handle} was never opened"))
            } else {
                Failure::Internal(format!("{what} handle {handle} is closed"))
            }
        })
    }

    /// Removes `handle`; its entry, if the registry held the last reference
    /// (dropped by the caller once the lock is released). A handle that is not
    /// there is ignored.
    pub(crate) fn unregister(&self, handle: u64) -> Option<Arc<T>> {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle)
    }

    /// Removes `handle` and drops its entry after the registry's lock is
    /// released, ignoring a panic (the entry leaks; no unwind reaches the caller,
    /// nothing aborts).
    fn free(&self, handle: u64) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| drop(self.unregister(handle)))) {
            std::mem::forget(payload);
        }
    }
}

/// The open stores.
pub(crate) static STORES: Registry<dyn Store> = Registry::new("store");
/// The locks taken, released or not, until their handles are freed.
pub(crate) static LOCKS: Registry<Registered> = Registry::new("lock");
pub(crate) static WATCHES: Registry<Watch> = Registry::new("watch");

/// What the functions return; see "Results" in the crate documentation.
#[repr(C)]
pub struct LibkvResult {
    pub status: i32,
    pub data: *mut u8,
    pub data_len: usize,
    pub key: *mut u8,
    pub key_len: usize,
    /// The store `libkv_open` opened or the lock `libkv_lock` took; 0 otherwise.
    pub handle: u64,
}

/// Why a call failed: a core error, or a broken contract (a bug somewhere).
pub(crate) enum Failure {
    Core(CoreError),
    Internal(String),
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Failure {
        Failure::Core(e)
    }
}

/// Bytes handed to C: a leaked boxed slice, freed by `free_bytes`.
fn leak_bytes(bytes: Vec<u8>) -> (*mut u8, usize) {
    let len = bytes.len();
    (Box::into_raw(bytes.into_boxed_slice()) as *mut u8, len)
}

/// # Safety
/// `ptr` and `len` come from `leak_bytes`, and are freed once.
unsafe fn free_bytes(ptr: *mut u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: see above; a boxed slice of `len` bytes at `ptr`.
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(ptr, len)) });
    }
}

fn result(outcome: Result<(Vec<u8>, u64), Failure>) -> *mut LibkvResult {
    let (status, data, key, handle) = match outcome {
        Ok((data, handle)) => (LIBKV_OK, data, None, handle),
        Err(Failure::Core(e)) => (
            e.class().code(),
            e.to_string().into_bytes(),
            e.key().map(|k| k.as_bytes().to_vec()),
            0,
        ),
        Err(Failure::Internal(message)) => (
            LIBKV_E_INTERNAL,
            format!("libkv internal error: {message}").into_bytes(),
            None,
            0,
        ),
    };
    let (data, data_len) = leak_bytes(data);
    let (key, key_len) = key.map_or((ptr::null_mut(), 0), leak_bytes);
    Box::into_raw(Box::new(LibkvResult {
        status,
        data,
        data_len,
        key,
        key_len,
        handle,
    }))
}

/// Runs `f`, turning a panic into an internal error: nothing unwinds into C.
fn guarded(f: impl FnOnce() -> Result<(Vec<u8>, u64), Failure>) -> *mut LibkvResult {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(Failure::Internal(format!("panicked: {what}")))
    });
    // Building the result only allocates; should even that panic, abort rather
    // than unwind into C.
    catch_unwind(AssertUnwindSafe(|| result(outcome))).unwrap_or_else(|_| std::process::abort())
}

/// The bytes at `ptr`, or None for a NULL pointer.
///
/// # Safety
/// A non-NULL `ptr` points at `len` readable bytes for the duration of the call.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: see above.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

/// The bytes at `ptr`, empty for NULL with length 0; NULL with a length is a
/// broken contract.
///
/// # Safety
/// As for `bytes`.
unsafe fn required<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    match unsafe { bytes(ptr, len) } {
        Some(b) => Ok(b),
        None if len == 0 => Ok(&[]),
        None => Err(Failure::Internal(format!(
            "{what} is NULL with length {len}"
        ))),
    }
}

#[no_mangle]
pub extern "C" fn libkv_abi_version() -> u32 {
    LIBKV_ABI_VERSION
}

#[no_mangle]
pub extern "C" fn libkv_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr() as *const c_char
}

/// The timeout libkv takes when none is given, in seconds.
#[no_mangle]
pub extern "C" fn libkv_default_timeout() -> f64 {
    libkv_core::options::DEFAULT_TIMEOUT.as_secs_f64()
}

/// The longest timeout libkv takes, in seconds.
#[no_mangle]
pub extern "C" fn libkv_max_timeout() -> f64 {
    libkv_core::options::MAX_TIMEOUT.as_secs_f64()
}

/// The name of the exception class of an error status (`"StoreError"`, below
/// `LibKV`), static; NULL for a number that is no status.
#[no_mangle]
pub extern "C" fn libkv_error_name(status: i32) -> *const c_char {
    // The core's names, with a NUL each, made once and kept for the process.
    static NAMES: LazyLock<Vec<(i32, CString)>> = LazyLock::new(|| {
        ErrorClass::ALL
            .iter()
            .map(|c| {
                (
                    c.code(),
                    CString::new(c.name()).expect("no NUL in a class name"),
                )
            })
            .collect()
    });
    NAMES
        .iter()
        .find(|(code, _)| *code == status)
        .map_or(ptr::null(), |(_, name)| name.as_ptr())
}

/// Opens the store `url` names. See the crate documentation.
///
/// # Safety
/// Every pointer is NULL or points at its length of readable bytes.
#[no_mangle]
pub unsafe extern "C" fn libkv_open(
    url: *const u8,
    url_len: usize,
    auth: *const u8,
    auth_len: usize,
    timeout: f64,
    vardir: *const u8,
    vardir_len: usize,
    environment: *const u8,
    environment_len: usize,
) -> *mut LibkvResult {
    guarded(|| {
        // SAFETY: the caller's promise, above.
        let (url, auth, vardir, environment) = unsafe {
            (
                required(url, url_len, "url")?,
                required(auth, auth_len, "auth")?,
                bytes(vardir, vardir_len),
                bytes(environment, environment_len),
            )
        };
        let (store, answer) = call::open(url, auth, timeout, vardir, environment)?;
        Ok((answer, STORES.register(store)))
    })
}

/// Runs one operation on a store. See the crate documentation.
///
/// # Safety
/// Every pointer is NULL or points at its length of readable bytes. `store` may
/// be any number: a handle that is not open is an error.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn libkv_call(
    store: u64,
    op: *const u8,
    op_len: usize,
    key: *const u8,
    key_len: usize,
    value_form: i32,
    value: *const u8,
    value_len: usize,
    previous_form: i32,
    previous: u64,
    serialize: i32,
    ttl_form: i32,
    ttl: i64,
) -> *mut LibkvResult {
    guarded(|| {
        // SAFETY: the caller's promise, above.
        let (op, key, value) = unsafe {
            (
                required(op, op_len, "op")?,
                required(key, key_len, "key")?,
                required(value, value_len, "value")?,
            )
        };
        // This call's own reference: a free meanwhile cannot drop the store under it.
        let store = STORES.lookup(store)?;
        let request = call::Request {
            key,
            value: (value_form, value),
            previous: (previous_form, previous),
            serialize: serialize != 0,
            ttl: call::ttl(ttl_form, ttl)?,
        };
        Ok((call::run(&*store, op, &request)?, 0))
    })
}

/// Closes a store handle from `libkv_open`. A handle that is not open (0, freed
/// already, never opened) is ignored. Calls running on the store finish first;
/// see "Store handles" in the crate documentation.
#[no_mangle]
pub extern "C" fn libkv_store_free(store: u64) {
    // The registry's lock is released before the store is dropped, and a panic
    // in either is ignored: the store leaks, no unwind reaches the caller,
    // nothing aborts.
    STORES.free(store);
}

/// Takes the lock at `key` on a store. See "Locks" in the crate documentation.
///
/// # Safety
/// `key` is NULL or points at `key_len` readable bytes. `store` may be any
/// number: a handle that is not open is an error.
#[no_mangle]
pub unsafe extern "C" fn libkv_lock(
    store: u64,
    key: *const u8,
    key_len: usize,
    ttl: i64,
    timeout: f64,
    renew: i32,
) -> *mut LibkvResult {
    guarded(|| {
        // SAFETY: the caller's promise, above.
        let key = unsafe { required(key, key_len, "key")? };
        let store = STORES.lookup(store)?;
        let (lock, described) = locks::take(store, key, ttl, timeout, renew != 0)?;
        Ok((described, LOCKS.register(Arc::new(lock))))
    })
}

/// 1 while the lock is held, 0 once released, detached or lost; -1 for a handle
/// that is not open, -2 for a panic.
#[no_mangle]
pub extern "C" fn libkv_lock_held(lock: u64) -> i32 {
    let held = catch_unwind(|| LOCKS.lookup(lock).map(|l| i32::from(l.lock().held())));
    match held {
        Ok(Ok(held)) => held,
        Ok(Err(_)) => -1,
        Err(payload) => {
            std::mem::forget(payload);
            -2
        }
    }
}

/// Why the lock was lost: a JSON String, or `null`.
#[no_mangle]
pub extern "C" fn libkv_lock_lost(lock: u64) -> *mut LibkvResult {
    guarded(|| Ok((locks::lost(&*LOCKS.lookup(lock)?)?, 0)))
}

/// Releases the lock: `true`, or `LIBKV_E_LOCK_LOST` when it had been lost.
#[no_mangle]
pub extern "C" fn libkv_lock_unlock(lock: u64) -> *mut LibkvResult {
    guarded(|| {
        LOCKS.lookup(lock)?.lock().unlock()?;
        Ok((b"true".to_vec(), 0))
    })
}

/// Stops renewing the lock and leaves it on the store: `true`.
#[no_mangle]
pub extern "C" fn libkv_lock_detach(lock: u64) -> *mut LibkvResult {
    guarded(|| {
        LOCKS.lookup(lock)?.lock().detach();
        Ok((b"true".to_vec(), 0))
    })
}

/// Frees a lock handle from `libkv_lock`; a lock still held is released on a
/// thread of its own. A handle that is not open is ignored. See "Lock handles"
/// in the crate documentation.
#[no_mangle]
pub extern "C" fn libkv_lock_free(lock: u64) {
    LOCKS.free(lock);
}

/// Releases the lock `owner` holds at `key` on a store: `true`, or `false` when
/// `owner` no longer held it.
///
/// # Safety
/// Every pointer is NULL or points at its length of readable bytes. `store` may
/// be any number: a handle that is not open is an error.
#[no_mangle]
pub unsafe extern "C" fn libkv_unlock(
    store: u64,
    key: *const u8,
    key_len: usize,
    owner: *const u8,
    owner_len: usize,
) -> *mut LibkvResult {
    guarded(|| {
        // SAFETY: the caller's promise, above.
        let (key, owner) = unsafe {
            (
                required(key, key_len, "key")?,
                required(owner, owner_len, "owner")?,
            )
        };
        let store = STORES.lookup(store)?;
        Ok((locks::unlock(&*store, key, owner)?, 0))
    })
}

/// Frees a result, its data and key (not its handle). NULL is ignored.
///
/// # Safety
/// `result` came from a function of this library and is freed once.
#[no_mangle]
pub unsafe extern "C" fn libkv_result_free(result: *mut LibkvResult) {
    if result.is_null() {
        return;
    }
    // SAFETY: the caller's promise, above: the result and its buffers came from
    // `result()`.
    unsafe {
        let r = Box::from_raw(result);
        free_bytes(r.data, r.data_len);
        free_bytes(r.key, r.key_len);
    }
}

#[cfg(test)]
mod tests;

/// Watches a key or a directory. See "Watches" in the crate documentation.
///
/// # Safety
/// `key` is NULL or points at `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn libkv_watch(
    store: u64,
    key: *const u8,
    key_len: usize,
    tree: i32,
    from_form: i32,
    from: u64,
    serialize: i32,
) -> *mut LibkvResult {
    guarded(|| {
        // SAFETY: the caller's promise, above.
        let key = unsafe { required(key, key_len, "key")? };
        let from = match from_form {
            LIBKV_FROM_NOW => None,
            LIBKV_FROM_SEQUENCE => Some(from),
            other => return Err(Failure::Internal(format!("from_form {other}"))),
        };
        let store = STORES.lookup(store)?;
        let (watch, described) = watches::start(&store, key, tree != 0, from, serialize != 0)?;
        Ok((described, WATCHES.register(Arc::new(watch))))
    })
}

/// The changes that came within `wait` seconds. See "Watches".
#[no_mangle]
pub extern "C" fn libkv_watch_next(watch: u64, wait: f64) -> *mut LibkvResult {
    guarded(|| Ok((watches::next(&*WATCHES.lookup(watch)?, wait)?, 0)))
}

/// Ends a watch after the wait under way: 1; -1 for a handle that is not open,
/// -2 should the library panic (a bug).
#[no_mangle]
pub extern "C" fn libkv_watch_stop(watch: u64) -> i32 {
    catch_unwind(|| WATCHES.lookup(watch).map(|w| w.stop())).map_or(-2, |stopped| {
        if stopped.is_ok() {
            1
        } else {
            -1
        }
    })
}

/// Removes a watch handle, stopping it. Freeing a freed or unknown handle does
/// nothing.
#[no_mangle]
pub extern "C" fn libkv_watch_free(watch: u64) {
    if let Ok(w) = WATCHES.lookup(watch) {
        w.stop();
    }
    WATCHES.free(watch);
}

/// Puppet's `watch` and `watchtree`: one wait for a change. See "Watches".
///
/// # Safety
/// `key` and `listing` are NULL or point at their length of readable bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn libkv_changed(
    store: u64,
    key: *const u8,
    key_len: usize,
    tree: i32,
    previous_form: i32,
    previous: u64,
    listing: *const u8,
    listing_len: usize,
    timeout: f64,
    serialize: i32,
) -> *mut LibkvResult {
    guarded(|| {
        // SAFETY: the caller's promise, above.
        let (key, listing) = unsafe {
            (
                required(key, key_len, "key")?,
                required(listing, listing_len, "listing")?,
            )
        };
        let store = STORES.lookup(store)?;
        let answer = watches::changed(
            &store,
            key,
            tree != 0,
            (previous_form, previous),
            listing,
            timeout,
            serialize != 0,
        )?;
        Ok((answer, 0))
    })
}
