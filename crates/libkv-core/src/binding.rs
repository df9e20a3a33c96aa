//! What every binding of the core needs, so that each refuses the same input in the
//! same order and the same words, and answers the same:
//!
//! - [`prepare`]: the arguments of an operation checked, in one order: the key (or
//!   directory), then `previous`, then the value, which is encoded for the store.
//!   A binding calls it holding its interpreter's lock, since it converts its own
//!   values on the way; nothing in it touches the store.
//! - [`run`]: the operation, on the store, and its answer decoded. It needs no
//!   interpreter: a binding lets its other threads run meanwhile.
//! - [`Answer`], which a binding turns into values of its language, or
//!   [`Answer::into_value`] for one that takes the core's `Value`s.
//! - [`class_name`]: the class a binding gives a store of each provider; errors
//!   carry theirs ([`crate::Error::class`]).
//! - [`newlock`], [`unlock`]: locks; [`watch`] (a [`Watch`] a binding drives in
//!   short waits, so it can stop between them) and [`changed`] (Puppet's
//!   `watch`: one bounded wait for a change).
//!
//! A new operation is an [`Op`] (with its [`Op::arguments`]), an arm in [`run`],
//! and what each binding makes of its answer.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::codec;
use crate::error::{Error, Result};
use crate::key::{self, Key};
use crate::lock::{self, Lock};
use crate::op::{Op, Target};
use crate::store::{Store, Versioned};
use crate::value::{Refusal, Value};
use crate::watch::{self, EventKind, Target as WatchTarget, Watcher};

/// `previous`, as a binding found it in what its caller passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// What `atomic_get` returned held this sequence (or it was the sequence).
    Sequence(u64),
    /// It held none: not what `atomic_get` returns.
    Malformed,
}

/// A value to store, as a binding converted it.
#[derive(Debug, Clone, PartialEq)]
pub enum Put<'a> {
    /// A value, to be encoded (`serialize` true).
    Value(Value),
    /// Bytes to store as they are (`serialize` false: a String's bytes).
    Raw(Cow<'a, [u8]>),
    /// `serialize` false, and the value is not a String.
    NotString,
    /// What the binding could not convert, and why.
    Refused(Refusal),
}

/// Why `prepare` refused: the core's error, or one the binding's own conversion
/// raised (its interpreter's exception, say).
#[derive(Debug)]
pub enum Refused<E> {
    Core(Error),
    Binding(E),
}

impl<E> From<Error> for Refused<E> {
    fn from(e: Error) -> Self {
        Refused::Core(e)
    }
}

/// The checked arguments of one operation, owned: what [`run`] takes.
#[derive(Debug, Clone)]
pub struct Prepared {
    op: Op,
    key: Key,
    previous: u64,
    value: Vec<u8>,
    serialize: bool,
    ttl: Option<Duration>,
}

impl Prepared {
    /// Writes the value for `ttl` seconds, checked against what `store` keeps.
    pub fn set_ttl(&mut self, store: &dyn Store, ttl: i64) -> Result<()> {
        if !self.op.takes_ttl() {
            return Err(Error::InvalidArgument(format!(
                "ttl is an option of put, atomic_create and atomic_put, not of {}",
                self.op.name()
            )));
        }
        self.ttl = Some(lock::check_ttl(store, ttl)?);
        Ok(())
    }

    pub fn op(&self) -> Op {
        self.op
    }

    pub fn key(&self) -> &Key {
        &self.key
    }
}

/// Checks the arguments of `op`: `target` (a key or directory, as a binding's
/// string: UTF-8, else an invalid key), then `previous`, then `value`, each asked
/// for only when `op` takes it and the ones before passed (a binding's own
/// failure to give one is `Refused::Binding`). `serialize` false stores and reads
/// strings as they are.
pub fn prepare<'a, E>(
    op: Op,
    target: &[u8],
    serialize: bool,
    previous: impl FnOnce() -> std::result::Result<Previous, E>,
    value: impl FnOnce() -> std::result::Result<Put<'a>, E>,
) -> std::result::Result<Prepared, Refused<E>> {
    let arguments = op.arguments();
    let key = match arguments.target {
        Target::Key => Key::new(key::text(target)?)?,
        Target::Dir => Key::dir(key::text(target)?)?,
        Target::None => Key::dir("/").expect("/ is a directory"),
    };
    let previous = if arguments.previous {
        match previous().map_err(Refused::Binding)? {
            Previous::Sequence(sequence) => sequence,
            Previous::Malformed => {
                return Err(Refused::Core(Error::InvalidPrevious {
                    op: op.name(),
                    key: key.to_string(),
                }))
            }
        }
    } else {
        0
    };
    let value = if arguments.value {
        let refused = |reason: String| {
            Refused::Core(Error::InvalidValue {
                key: key.to_string(),
                reason,
            })
        };
        match value().map_err(Refused::Binding)? {
            Put::Value(v) if serialize => {
                codec::encode(&v).map(Cow::into_owned).map_err(refused)?
            }
            Put::Raw(bytes) if !serialize => bytes.into_owned(),
            Put::Refused(r) => return Err(refused(r.to_string())),
            Put::NotString | Put::Value(_) | Put::Raw(_) => {
                return Err(refused(Refusal::NotRaw.to_string()))
            }
        }
    } else {
        Vec::new()
    };
    Ok(Prepared {
        op,
        key,
        previous,
        value,
        serialize,
        ttl: None,
    })
}

/// What an operation answered, its values decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `get`: the value, `None` when the key is absent.
    Value(Option<Value>),
    /// `put`, `delete`, `deletetree`: done (Puppet's `true`).
    Done,
    /// `exists` and the compare-and-swaps.
    Bool(bool),
    /// `list`: relative key and value, sorted.
    List(Vec<(String, Value)>),
    /// `atomic_get`: the value and its sequence, `None` when absent.
    Versioned(Option<(Value, u64)>),
    /// `atomic_list`: relative key, value and sequence, sorted.
    VersionedList(Vec<(String, Value, u64)>),
    /// `info`.
    Info(Value),
}

impl Answer {
    /// The answer as one core value, as Puppet's functions return it: `true` for
    /// `Done`, `undef` for an absent key, `{'value' => v, 'sequence' => n}` (the
    /// empty value for an absent key) for what `atomic_get` and `atomic_list`
    /// answer. A sequence beyond a signed 64-bit Integer is an error.
    pub fn into_value(self) -> Result<Value> {
        Ok(match self {
            Answer::Value(v) => v.unwrap_or(Value::Undef),
            Answer::Done => Value::Bool(true),
            Answer::Bool(b) => Value::Bool(b),
            Answer::List(entries) => Value::hash(entries),
            Answer::Versioned(found) => {
                let (value, sequence) = found.unwrap_or((Value::Undef, 0));
                versioned(value, sequence)?
            }
            Answer::VersionedList(entries) => {
                let mut pairs = Vec::with_capacity(entries.len());
                for (rel, value, sequence) in entries {
                    pairs.push((rel, versioned(value, sequence)?));
                }
                Value::hash(pairs)
            }
            Answer::Info(v) => v,
        })
    }
}

/// `{'value' => v, 'sequence' => n}`.
fn versioned(value: Value, sequence: u64) -> Result<Value> {
    let sequence = i64::try_from(sequence)
        .map_err(|_| Error::InvalidArgument(format!("the sequence {sequence} is beyond 2**63")))?;
    Ok(Value::hash([
        ("value", value),
        ("sequence", Value::Int(sequence)),
    ]))
}

/// Runs a prepared operation on `store`, and decodes what it read.
pub fn run(store: &dyn Store, call: &Prepared) -> Result<Answer> {
    let key = &call.key;
    let decode = |bytes: Vec<u8>| {
        if call.serialize {
            codec::decode(bytes)
        } else {
            codec::decode_plain(bytes)
        }
    };
    if let Some(ttl) = call.ttl {
        let previous = match call.op {
            Op::AtomicCreate => Some(0),
            Op::AtomicPut => Some(call.previous),
            _ => None,
        };
        let written = store.put_ttl(key, &call.value, previous, ttl)?;
        return Ok(match call.op {
            Op::Put => Answer::Done,
            _ => Answer::Bool(written.is_some()),
        });
    }
    Ok(match call.op {
        Op::Get => Answer::Value(store.get(key)?.map(decode)),
        Op::Put => {
            store.put(key, &call.value)?;
            Answer::Done
        }
        Op::Delete => {
            store.delete(key)?;
            Answer::Done
        }
        Op::Exists => Answer::Bool(store.exists(key)?),
        Op::List => Answer::List(
            store
                .list(key)?
                .into_iter()
                .map(|(rel, bytes)| (rel, decode(bytes)))
                .collect(),
        ),
        Op::Deletetree => {
            store.deletetree(key)?;
            Answer::Done
        }
        Op::AtomicCreate => Answer::Bool(store.atomic_create(key, &call.value)?),
        Op::AtomicGet => Answer::Versioned(
            store
                .atomic_get(key)?
                .map(|Versioned { value, sequence }| (decode(value), sequence)),
        ),
        Op::AtomicPut => Answer::Bool(store.atomic_put(key, &call.value, call.previous)?),
        Op::AtomicDelete => Answer::Bool(store.atomic_delete(key, call.previous)?),
        Op::AtomicList => Answer::VersionedList(
            store
                .atomic_list(key)?
                .into_iter()
                .map(|(rel, Versioned { value, sequence })| (rel, decode(value), sequence))
                .collect(),
        ),
        Op::Info => Answer::Info(store.info()?),
        Op::EmptyValue
        | Op::Provider
        | Op::Supports
        | Op::Newlock
        | Op::Unlock
        | Op::WithLock
        | Op::Watch
        | Op::Watchtree => {
            return Err(Error::InvalidArgument(format!(
                "{} is answered by the binding, not run on the store",
                call.op.name()
            )))
        }
    })
}

/// Takes the lock at `key` (a binding's string, as `prepare` takes it) for `ttl`
/// seconds, waiting at most `timeout` seconds (0: one attempt), renewed in the
/// background when `renew`. `op` is `newlock` or `with_lock`.
pub fn newlock(
    store: Arc<dyn Store>,
    op: Op,
    key: &[u8],
    ttl: i64,
    timeout: f64,
    renew: bool,
) -> Result<Lock> {
    let key = Key::new(key::text(key)?)?;
    if !store.supports().contains(&Op::Newlock) {
        return Err(Error::Unsupported {
            op: op.name(),
            provider: store.provider(),
        });
    }
    let ttl = lock::check_ttl(&*store, ttl)?;
    let timeout = if timeout == 0.0 {
        Duration::ZERO
    } else {
        crate::timeout_from_secs(timeout)?
    };
    Lock::acquire(op.name(), store, key, ttl, timeout, renew)
}

/// Releases the lock `owner` holds at `key`, from what `newlock` told of it
/// (another process may have taken it); false when `owner` no longer held it.
pub fn unlock(store: &dyn Store, key: &[u8], owner: &str) -> Result<bool> {
    let key = Key::new(key::text(key)?)?;
    if !store.supports().contains(&Op::Unlock) {
        return Err(Error::Unsupported {
            op: "unlock",
            provider: store.provider(),
        });
    }
    store.unlock(&key, owner)
}

/// The key or directory of `watch` or `watchtree` (a binding's string), on a
/// store that has them.
fn watch_target(store: &dyn Store, op: Op, target: &[u8]) -> Result<WatchTarget> {
    let text = key::text(target)?;
    let target = match op {
        Op::Watch => WatchTarget {
            key: Key::new(text)?,
            tree: false,
        },
        Op::Watchtree => WatchTarget {
            key: Key::dir(text)?,
            tree: true,
        },
        other => unreachable!("{} is not a watch", other.name()),
    };
    if !store.supports().contains(&op) {
        return Err(Error::Unsupported {
            op: op.name(),
            provider: store.provider(),
        });
    }
    Ok(target)
}

/// One change a [`Watch`] hands out, its value decoded (`None` for a delete).
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: String,
    pub value: Option<Value>,
    pub sequence: u64,
}

/// A watch of the Ruby API (`watch`, `watchtree`): its events in order, each wait
/// as long as the binding asks, so that it can stop (or let its interpreter
/// interrupt) between waits. A stop from any thread ends it after the wait
/// under way.
pub struct Watch {
    watcher: Mutex<Box<dyn Watcher>>,
    coalesces: bool,
    serialize: bool,
    stopped: AtomicBool,
}

/// Watches `target` (a binding's string: a key for `Op::Watch`, a directory for
/// `Op::Watchtree`) from the sequence `from` (`None`: from now), its values
/// decoded as `serialize` says.
pub fn watch(
    store: &Arc<dyn Store>,
    op: Op,
    target: &[u8],
    from: Option<u64>,
    serialize: bool,
) -> Result<Watch> {
    let target = watch_target(&**store, op, target)?;
    let watcher = watch::open(store, target, from)?;
    Ok(Watch {
        coalesces: watcher.coalesces(),
        watcher: Mutex::new(watcher),
        serialize,
        stopped: AtomicBool::new(false),
    })
}

impl Watch {
    /// The changes that came, waiting at most `wait` for some; none once stopped.
    pub fn next(&self, wait: Duration) -> Result<Vec<WatchEvent>> {
        if self.stopped() {
            return Ok(Vec::new());
        }
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        let events = watcher.next(Instant::now() + wait)?;
        Ok(events
            .into_iter()
            .map(|e| WatchEvent {
                value: match e.kind {
                    EventKind::Delete => None,
                    EventKind::Put if self.serialize => Some(codec::decode(e.value)),
                    EventKind::Put => Some(codec::decode_plain(e.value)),
                },
                kind: e.kind,
                key: e.key,
                sequence: e.sequence,
            })
            .collect())
    }

    /// Ends the watch: `next` answers nothing from now on.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Whether changes between two reads may come as one, the latest.
    pub fn coalesces(&self) -> bool {
        self.coalesces
    }
}

/// What Puppet's `watch` and `watchtree` compare: a key's sequence, or each key's
/// below a directory (relative, as `atomic_list` has them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Sequence(u64),
    Listing(Vec<(String, u64)>),
    /// What the binding was given is neither: not what `atomic_get` (`watch`) or
    /// `atomic_list` (`watchtree`) returns.
    Malformed,
}

impl State {
    fn of(answer: &Answer) -> State {
        match answer {
            Answer::Versioned(found) => State::Sequence(found.as_ref().map_or(0, |(_, s)| *s)),
            Answer::VersionedList(entries) => {
                let mut listing: Vec<(String, u64)> =
                    entries.iter().map(|(k, _, s)| (k.clone(), *s)).collect();
                listing.sort();
                State::Listing(listing)
            }
            _ => State::Malformed,
        }
    }
}

/// Puppet's `watch` (`Op::Watch`, a key) and `watchtree` (`Op::Watchtree`, a
/// directory): waits until the target's state differs from `previous` (`None`:
/// its state as the call starts), at most `timeout` seconds, and answers its
/// state then, as `atomic_get` or `atomic_list` answer it: the changed one, or
/// the unchanged one at the timeout.
pub fn changed(
    store: &Arc<dyn Store>,
    op: Op,
    target: &[u8],
    previous: Option<State>,
    timeout: f64,
    serialize: bool,
) -> Result<Answer> {
    let watched = watch_target(&**store, op, target)?;
    let mut previous = match previous {
        Some(State::Malformed) => {
            return Err(Error::InvalidArgument(format!(
                "previous for {} {} must be what {} returned",
                op.name(),
                watched.key,
                if watched.tree {
                    "atomic_list"
                } else {
                    "atomic_get"
                }
            )))
        }
        Some(State::Listing(mut listing)) if watched.tree => {
            listing.sort();
            Some(State::Listing(listing))
        }
        Some(State::Sequence(s)) if !watched.tree => Some(State::Sequence(s)),
        Some(_) => {
            return Err(Error::InvalidArgument(format!(
                "previous for {} {} must be what {} returned",
                op.name(),
                watched.key,
                if watched.tree {
                    "atomic_list (a Hash)"
                } else {
                    "atomic_get (or its sequence)"
                }
            )))
        }
        None => None,
    };
    let wait = crate::timeout_from_secs(timeout)?;
    let deadline = Instant::now() + wait;
    let read = Prepared {
        op: if watched.tree {
            Op::AtomicList
        } else {
            Op::AtomicGet
        },
        key: watched.key.clone(),
        previous: 0,
        value: Vec::new(),
        serialize,
        ttl: None,
    };
    // Watching before reading: a change made after the read is the watch's.
    let mut watcher = watch::open(store, watched, None)?;
    loop {
        let answer = run(&**store, &read)?;
        let state = State::of(&answer);
        let before = previous.get_or_insert_with(|| state.clone());
        if state != *before || Instant::now() >= deadline {
            return Ok(answer);
        }
        // A change the read already showed may come again: read, and compare.
        if watcher.next(deadline)?.is_empty() {
            return run(&**store, &read);
        }
    }
}

/// The class a binding gives a store of `provider`, below `LibKV`.
pub fn class_name(provider: &str) -> &'static str {
    match provider {
        "mock" => "Mock",
        "file" => "File",
        "legacy-simp6" => "LegacySimp6",
        "consul" => "Consul",
        "etcd" => "Etcd",
        "zookeeper" => "ZooKeeper",
        "sqlite" => "SQLite",
        other => unreachable!("a store of unknown provider {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{open, OpenOptions};

    type Given<T> = std::result::Result<T, &'static str>;

    fn mock() -> std::sync::Arc<dyn Store> {
        open("mock://", &OpenOptions::default()).unwrap()
    }

    fn no_previous() -> Given<Previous> {
        panic!("previous asked for where it must not be")
    }

    fn no_value() -> Given<Put<'static>> {
        panic!("the value asked for where it must not be")
    }

    #[test]
    fn arguments_are_checked_key_then_previous_then_value() {
        let err = prepare(Op::AtomicPut, b"/bad key", true, no_previous, no_value);
        assert!(matches!(err, Err(Refused::Core(Error::InvalidKey { .. }))));
        let err = prepare(
            Op::AtomicPut,
            b"/k",
            true,
            || Ok(Previous::Malformed),
            no_value,
        );
        assert!(matches!(
            err,
            Err(Refused::Core(Error::InvalidPrevious {
                op: "atomic_put",
                ..
            }))
        ));
        let err = prepare(Op::Put, b"/k", true, no_previous, || {
            Ok(Put::Refused(Refusal::TooDeep))
        });
        match err {
            Err(Refused::Core(e @ Error::InvalidValue { .. })) => {
                assert!(e.to_string().contains("100 levels"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let err = prepare(Op::Put, b"/k", false, no_previous, || Ok(Put::NotString));
        assert!(matches!(
            err,
            Err(Refused::Core(Error::InvalidValue { .. }))
        ));
        let err = prepare(Op::Put, b"/k", true, no_previous, || Err("raised"));
        assert!(matches!(err, Err(Refused::Binding("raised"))));
        let err = prepare(Op::List, b"/a\xff", true, no_previous, no_value);
        assert!(matches!(err, Err(Refused::Core(Error::InvalidKey { .. }))));
        // A directory may be / or end with /; a key may not.
        assert!(prepare(Op::List, b"/", true, no_previous, no_value).is_ok());
        assert!(prepare(Op::Get, b"/", true, no_previous, no_value).is_err());
    }

    #[test]
    fn operations_run_and_answer_decoded_values() {
        let store = mock();
        let write = |op, key: &[u8], value: Value, previous: Previous| {
            let call = prepare(
                op,
                key,
                true,
                || Given::Ok(previous),
                || Ok(Put::Value(value)),
            )
            .unwrap();
            run(&*store, &call).unwrap()
        };
        let read = |op, key: &[u8]| {
            let call = prepare(op, key, true, no_previous, no_value).unwrap();
            run(&*store, &call).unwrap()
        };
        let seven = Value::Int(7);
        assert_eq!(
            write(Op::Put, b"/a/k", seven.clone(), Previous::Malformed),
            Answer::Done
        );
        assert_eq!(read(Op::Get, b"/a/k"), Answer::Value(Some(seven.clone())));
        assert_eq!(read(Op::Get, b"/a/none"), Answer::Value(None));
        assert_eq!(
            read(Op::List, b"/a/"),
            Answer::List(vec![("k".into(), seven.clone())])
        );
        let Answer::Versioned(Some((value, seq))) = read(Op::AtomicGet, b"/a/k") else {
            panic!("no versioned answer")
        };
        assert_eq!(value, seven);
        let cas = |value| write(Op::AtomicPut, b"/a/k", value, Previous::Sequence(seq));
        assert_eq!(cas(Value::Int(8)), Answer::Bool(true));
        assert_eq!(cas(Value::Int(9)), Answer::Bool(false));
        assert_eq!(
            read(Op::AtomicGet, b"/a/none").into_value().unwrap(),
            Value::hash([("value", Value::Undef), ("sequence", Value::Int(0))])
        );
        // serialize false: bytes as they are, read back as a String.
        let envelope: &[u8] = br#"{"libkv":1,"value":1}"#;
        let raw = prepare(Op::Put, b"/raw", false, no_previous, || {
            Ok(Put::Raw(Cow::Borrowed(envelope)))
        })
        .unwrap();
        run(&*store, &raw).unwrap();
        let get = prepare(Op::Get, b"/raw", false, no_previous, no_value).unwrap();
        assert_eq!(
            run(&*store, &get).unwrap(),
            Answer::Value(Some(Value::String(r#"{"libkv":1,"value":1}"#.into())))
        );
    }

    #[test]
    fn every_store_class_has_a_name() {
        for provider in ["mock", "file", "legacy-simp6", "consul", "etcd"] {
            assert!(!class_name(provider).is_empty());
        }
    }
}
