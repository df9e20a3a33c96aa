//! Errors of the core. Every message names what failed, the key and the store
//! (its URL with secrets masked), and what to do about it. No variant carries a
//! secret: URLs are masked before they get here and credentials never do.

use std::time::Duration;

use crate::op::Op;

/// The kind of an [`Error`], which bindings map to their exception classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: key, URL, value, option. Fix the call; retrying cannot help.
    InvalidArgument,
    /// The store cannot do this operation.
    Unsupported,
    /// The store holds something that makes this write impossible (a key below a key
    /// in the file store).
    Conflict,
    /// The store failed: I/O error, refused entry, server error.
    Store,
    /// The store could not be reached.
    Connection,
    /// The store did not answer in time.
    Timeout,
    /// The store refused the credentials.
    Auth,
    /// A lock was not taken within the timeout: another holder kept it.
    LockTimeout,
    /// A held lock was lost: not renewed within its ttl, or taken by another.
    LockLost,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("cannot store the value of {key}: {reason}")]
    InvalidValue { key: String, reason: String },

    #[error("previous for {op} {key} must be what atomic_get returned ({{'value' => ..., 'sequence' => Integer >= 0}}), or empty_value for an absent key")]
    InvalidPrevious { op: &'static str, key: String },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("{op} is not supported by the {provider} store")]
    Unsupported {
        op: &'static str,
        provider: &'static str,
    },

    #[error("{op}{} on {store}: {reason}", on_key(key))]
    Conflict {
        op: &'static str,
        key: String,
        store: String,
        reason: String,
    },

    #[error("{op}{} on {store} failed: {reason}", on_key(key))]
    Store {
        op: &'static str,
        key: String,
        store: String,
        reason: String,
    },

    #[error(
        "{op}{} on {store} failed: cannot reach the store: {reason}",
        on_key(key)
    )]
    Connection {
        op: &'static str,
        key: String,
        store: String,
        reason: String,
    },

    #[error("{op}{} on {store} timed out after {}{}", on_key(key), fmt_secs(*.after), timeout_advice(op, *.waiting))]
    Timeout {
        op: &'static str,
        key: String,
        store: String,
        after: Duration,
        /// What the call was waiting for when the time ran out.
        waiting: Waiting,
    },

    #[error(
        "{op}{} on {store} failed: the store refused the credentials: {reason}",
        on_key(key)
    )]
    Auth {
        op: &'static str,
        key: String,
        store: String,
        reason: String,
    },

    #[error(
        "{op} {key} on {store}: the lock is held by another and was not released within \
         {}: try again later, or raise the timeout option; the key holds its owner",
        fmt_secs(*.after)
    )]
    LockTimeout {
        op: &'static str,
        key: String,
        store: String,
        after: Duration,
    },

    #[error(
        "the lock {key} on {store} was lost: {reason}; work done under it since may have \
         overlapped another holder's"
    )]
    LockLost {
        key: String,
        store: String,
        reason: String,
    },

    /// A call on a store object its binding closed.
    #[error("the store object for {store} is closed; open the store again")]
    Closed { store: String },
}

/// What a binding makes of an error: the exception class both Rubies raise (its
/// name in `lib/libkv/errors.rb`) and the status number of the C ABI, which stays
/// the same from one version to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidArgument = 1,
    InvalidKey = 2,
    Unsupported = 3,
    Store = 4,
    Conflict = 5,
    Connection = 6,
    Timeout = 7,
    Auth = 8,
    /// A bug: a panic, or a binding that broke the C ABI's contract.
    Internal = 9,
    Closed = 10,
    LockTimeout = 11,
    LockLost = 12,
}

impl ErrorClass {
    pub const ALL: &'static [ErrorClass] = &[
        ErrorClass::InvalidArgument,
        ErrorClass::InvalidKey,
        ErrorClass::Unsupported,
        ErrorClass::Store,
        ErrorClass::Conflict,
        ErrorClass::Connection,
        ErrorClass::Timeout,
        ErrorClass::Auth,
        ErrorClass::Internal,
        ErrorClass::Closed,
        ErrorClass::LockTimeout,
        ErrorClass::LockLost,
    ];

    /// The C ABI's status for this class.
    pub const fn code(self) -> i32 {
        self as i32
    }

    pub fn from_code(code: i32) -> Option<ErrorClass> {
        ErrorClass::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// The exception class, below `LibKV`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorClass::InvalidArgument => "InvalidArgumentError",
            ErrorClass::InvalidKey => "InvalidKeyError",
            ErrorClass::Unsupported => "UnsupportedError",
            ErrorClass::Store => "StoreError",
            ErrorClass::Conflict => "ConflictError",
            ErrorClass::Connection => "ConnectionError",
            ErrorClass::Timeout => "TimeoutError",
            ErrorClass::Auth => "AuthError",
            ErrorClass::Internal => "Error",
            ErrorClass::Closed => "ClosedError",
            ErrorClass::LockTimeout => "LockTimeoutError",
            ErrorClass::LockLost => "LockLostError",
        }
    }
}

/// " KEY", or nothing for errors about the whole store (an empty key).
fn on_key(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" {key}")
    }
}

/// What a call that timed out was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The store's answer to a request it may have received: a write may have been
    /// applied.
    Answer,
    /// The file store's lock, held by another call: nothing was changed.
    Lock,
    /// A store that could take the request (a connection, a cluster member with a
    /// leader): nothing was sent, so nothing was changed.
    Store,
}

/// What a timeout means for the caller's data, and what to do.
fn timeout_advice(op: &str, waiting: Waiting) -> String {
    let writes = Op::named(op).is_some_and(Op::writes);
    let unchanged = if writes { "; nothing was changed" } else { "" };
    match (waiting, writes) {
        (Waiting::Lock, _) => format!(
            " waiting for the store's lock, held by another call{unchanged}: try again, or \
             raise the timeout option"
        ),
        (Waiting::Store, _) => format!(
            " before the store took the request{unchanged}: check that the store is up and \
             reachable (for an etcd cluster, that most of its members are), or raise the \
             timeout option"
        ),
        (Waiting::Answer, true) => format!(
            "; the store may or may not have applied the {op}: read the key before trying \
             again, and check that the store is up and reachable, or raise the timeout option"
        ),
        (Waiting::Answer, false) => "; check that the store is up and reachable, or raise the \
                                     timeout option"
            .to_owned(),
    }
}

pub(crate) fn fmt_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKey { .. }
            | Error::InvalidUrl { .. }
            | Error::InvalidValue { .. }
            | Error::InvalidPrevious { .. }
            | Error::InvalidArgument(_)
            | Error::Closed { .. } => ErrorKind::InvalidArgument,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Store { .. } => ErrorKind::Store,
            Error::Connection { .. } => ErrorKind::Connection,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::LockTimeout { .. } => ErrorKind::LockTimeout,
            Error::LockLost { .. } => ErrorKind::LockLost,
        }
    }

    /// The exception class and C ABI status of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidKey { .. } => ErrorClass::InvalidKey,
            Error::Closed { .. } => ErrorClass::Closed,
            _ => match self.kind() {
                ErrorKind::InvalidArgument => ErrorClass::InvalidArgument,
                ErrorKind::Unsupported => ErrorClass::Unsupported,
                ErrorKind::Conflict => ErrorClass::Conflict,
                ErrorKind::Store => ErrorClass::Store,
                ErrorKind::Connection => ErrorClass::Connection,
                ErrorKind::Timeout => ErrorClass::Timeout,
                ErrorKind::Auth => ErrorClass::Auth,
                ErrorKind::LockTimeout => ErrorClass::LockTimeout,
                ErrorKind::LockLost => ErrorClass::LockLost,
            },
        }
    }

    /// The key this error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::InvalidKey { key, .. } => Some(key),
            // Errors about the whole store (opening it) have an empty key.
            Error::InvalidValue { key, .. }
            | Error::InvalidPrevious { key, .. }
            | Error::Conflict { key, .. }
            | Error::Store { key, .. }
            | Error::Connection { key, .. }
            | Error::Timeout { key, .. }
            | Error::Auth { key, .. }
            | Error::LockTimeout { key, .. }
            | Error::LockLost { key, .. } => Some(key.as_str()).filter(|k| !k.is_empty()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
