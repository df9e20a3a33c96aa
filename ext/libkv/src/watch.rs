//! `LibKV::Watch`: the changes to a key or below a directory
//! (`libkv_core::binding::Watch`), each wait made without the GVL;
//! `lib/libkv/watch.rb` streams them. Also Puppet's one wait for a change
//! (`Store#_changed`).

use std::time::Duration;

use libkv_core::binding::{self, State, Watch, WatchEvent};
use libkv_core::watch::EventKind;
use libkv_core::Op;
use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::{method, Error, RArray, RHash, RModule, RString, Ruby};

use crate::convert::to_ruby;
use crate::errors;
use crate::nogvl::nogvl;
use crate::store::{self, RbStore};

#[magnus::wrap(class = "LibKV::Watch", free_immediately, size)]
pub struct RbWatch(Watch);

pub fn init(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    let class = module.define_class("Watch", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_method("_next", method!(RbWatch::next, 1))?;
    class.define_method("stop", method!(RbWatch::stop, 0))?;
    class.define_method("stopped?", method!(RbWatch::stopped, 0))?;
    class.define_method("coalesces?", method!(RbWatch::coalesces, 0))?;
    Ok(())
}

fn op(tree: bool) -> Op {
    if tree {
        Op::Watchtree
    } else {
        Op::Watch
    }
}

/// `Store#_watch(key, tree, from, serialize)`: a `LibKV::Watch` from the sequence
/// `from` (nil: from now).
pub fn watch(
    ruby: &Ruby,
    rb_self: &RbStore,
    key: RString,
    tree: bool,
    from: Option<u64>,
    serialize: bool,
) -> Result<RbWatch, Error> {
    let target = store::target(ruby, key);
    let store = rb_self.store().map_err(|e| errors::to_ruby(ruby, e))?;
    nogvl(|| binding::watch(&store, op(tree), &target, from, serialize))
        .map(RbWatch)
        .map_err(|e| errors::to_ruby(ruby, e))
}

/// `Store#_changed(key, tree, previous, timeout, serialize)`: Puppet's `watch`
/// and `watchtree`, waited for without the GVL.
pub fn changed(
    ruby: &Ruby,
    rb_self: &RbStore,
    key: RString,
    tree: bool,
    previous: magnus::Value,
    timeout: f64,
    serialize: bool,
) -> Result<magnus::Value, Error> {
    let target = store::target(ruby, key);
    let previous = if previous.is_nil() {
        None
    } else if tree {
        Some(listing_of(ruby, previous)?)
    } else {
        Some(match store::previous_of(ruby, previous) {
            binding::Previous::Sequence(s) => State::Sequence(s),
            binding::Previous::Malformed => State::Malformed,
        })
    };
    let store = rb_self.store().map_err(|e| errors::to_ruby(ruby, e))?;
    let answer =
        nogvl(|| binding::changed(&store, op(tree), &target, previous, timeout, serialize))
            .map_err(|e| errors::to_ruby(ruby, e))?;
    store::answer_to_ruby(ruby, answer)
}

/// What `atomic_list` returned: relative key => { "value" => ..., "sequence" => n }.
fn listing_of(ruby: &Ruby, previous: magnus::Value) -> Result<State, Error> {
    let Some(hash) = RHash::from_value(previous) else {
        return Ok(State::Malformed);
    };
    let mut listing = Vec::with_capacity(hash.len());
    let mut malformed = false;
    hash.foreach(|k: magnus::Value, v: magnus::Value| {
        let sequence = match store::previous_of(ruby, v) {
            binding::Previous::Sequence(s) if RHash::from_value(v).is_some() => s,
            _ => {
                malformed = true;
                return Ok(ForEach::Stop);
            }
        };
        match RString::from_value(k) {
            Some(key) => listing.push((key.to_string()?, sequence)),
            None => {
                malformed = true;
                return Ok(ForEach::Stop);
            }
        }
        Ok(ForEach::Continue)
    })?;
    Ok(if malformed {
        State::Malformed
    } else {
        State::Listing(listing)
    })
}

impl RbWatch {
    /// `_next(wait)`: the changes that came within `wait` seconds, as
    /// `[type, key, value, sequence]` Arrays (`lib/libkv/watch.rb` makes them
    /// `LibKV::Event`s).
    fn next(ruby: &Ruby, rb_self: &Self, wait: f64) -> Result<RArray, Error> {
        let wait = Duration::try_from_secs_f64(wait.max(0.0)).unwrap_or(Duration::ZERO);
        let events = nogvl(|| rb_self.0.next(wait)).map_err(|e| errors::to_ruby(ruby, e))?;
        let out = ruby.ary_new_capa(events.len());
        for WatchEvent {
            kind,
            key,
            value,
            sequence,
        } in events
        {
            let kind = match kind {
                EventKind::Put => ruby.to_symbol("put"),
                EventKind::Delete => ruby.to_symbol("delete"),
            };
            let value = value.map_or_else(|| ruby.qnil().as_value(), |v| to_ruby(ruby, v));
            out.push(ruby.ary_new_from_values(&[
                kind.as_value(),
                ruby.str_new(&key).as_value(),
                value,
                ruby.integer_from_u64(sequence).as_value(),
            ]))?;
        }
        Ok(out)
    }

    fn stop(&self) -> bool {
        self.0.stop();
        true
    }

    fn stopped(&self) -> bool {
        self.0.stopped()
    }

    fn coalesces(&self) -> bool {
        self.0.coalesces()
    }
}
