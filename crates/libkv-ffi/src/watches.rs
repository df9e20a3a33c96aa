//! Watches behind handles (`libkv_core::binding::Watch`), and Puppet's one wait
//! for a change (`libkv_core::binding::changed`): their arguments and answers.

use std::sync::Arc;
use std::time::Duration;

use libkv_core::binding::{self, State, Watch};
use libkv_core::watch::EventKind;
use libkv_core::{Op, Store, Value};

use crate::call::data;
use crate::{Failure, LIBKV_PREVIOUS_MALFORMED, LIBKV_PREVIOUS_NONE, LIBKV_PREVIOUS_SEQUENCE};

fn op(tree: bool) -> Op {
    if tree {
        Op::Watchtree
    } else {
        Op::Watch
    }
}

/// Watches `key` (or below it, `tree`) from `from` (`None`: from now): the watch,
/// and `{"coalesces": Boolean}`.
pub fn start(
    store: &Arc<dyn Store>,
    key: &[u8],
    tree: bool,
    from: Option<u64>,
    serialize: bool,
) -> Result<(Watch, Vec<u8>), Failure> {
    let watch = binding::watch(store, op(tree), key, from, serialize)?;
    let described = data(Value::hash([("coalesces", Value::Bool(watch.coalesces()))]))?;
    Ok((watch, described))
}

/// The changes that came within `wait` seconds, as DATA: an Array of
/// `["put" | "delete", key, value, sequence]`.
pub fn next(watch: &Watch, wait: f64) -> Result<Vec<u8>, Failure> {
    let wait = Duration::try_from_secs_f64(wait.max(0.0)).unwrap_or(Duration::ZERO);
    let events = watch.next(wait)?;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let sequence = i64::try_from(e.sequence).map_err(|_| {
            Failure::Internal(format!("the sequence {} is beyond 2**63", e.sequence))
        })?;
        out.push(Value::Array(vec![
            Value::from(match e.kind {
                EventKind::Put => "put",
                EventKind::Delete => "delete",
            }),
            Value::from(e.key.as_str()),
            e.value.unwrap_or(Value::Undef),
            Value::Int(sequence),
        ]));
    }
    data(Value::Array(out))
}

/// Puppet's `watch` and `watchtree` (see `libkv_changed`): the state as DATA.
pub fn changed(
    store: &Arc<dyn Store>,
    key: &[u8],
    tree: bool,
    previous: (i32, u64),
    listing: &[u8],
    timeout: f64,
    serialize: bool,
) -> Result<Vec<u8>, Failure> {
    let previous = match previous {
        (LIBKV_PREVIOUS_NONE, _) => None,
        (LIBKV_PREVIOUS_SEQUENCE, sequence) => Some(State::Sequence(sequence)),
        (LIBKV_PREVIOUS_MALFORMED, _) => Some(State::Malformed),
        (LIBKV_PREVIOUS_LISTING, _) => {
            Some(State::Listing(serde_json::from_slice(listing).map_err(
                |e| Failure::Internal(format!("a listing is not JSON [[key, sequence], ...]: {e}")),
            )?))
        }
        (other, _) => return Err(Failure::Internal(format!("previous_form {other}"))),
    };
    let answer = binding::changed(store, op(tree), key, previous, timeout, serialize)?;
    data(answer.into_value()?)
}

/// `libkv_changed`'s `previous_form` for `watchtree`: `listing` holds
/// `[[relative key, sequence], ...]`, what `atomic_list` returned.
pub const LIBKV_PREVIOUS_LISTING: i32 = 3;
