//! `LibKV::Store`: one open store. Ruby subclasses name the backend (`LibKV::Mock`,
//! `LibKV::File`, ...); `lib/libkv/store.rb` wraps these methods with keyword
//! arguments. Each operation is the core's (`libkv_core::binding`): this file
//! converts its arguments and its answer.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use libkv_core::binding::{self, Answer, Previous, Put, Refused};
use libkv_core::{Auth, Error as CoreError, Op, OpenOptions, Store};
use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::typed_data::Obj;
use magnus::value::Lazy;
use magnus::{function, method, Error, Integer, RClass, RHash, RModule, RString, Ruby, Symbol};

use crate::convert::{self, to_ruby, Unconverted};
use crate::errors;
use crate::nogvl::nogvl;

#[magnus::wrap(class = "LibKV::Store", free_immediately, size)]
pub struct RbStore {
    /// The store, until `close`.
    store: RwLock<Option<Arc<dyn Store>>>,
    /// What a closed store still tells.
    provider: &'static str,
    url: String,
    supports: &'static [Op],
}

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("LibKV")?;
    let class = module.define_class("Store", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("_open", function!(open, 5))?;
    module.define_singleton_method("binary_inside?", function!(binary_inside, 1))?;
    class.define_method("provider", method!(RbStore::provider, 0))?;
    class.define_method("url", method!(RbStore::url, 0))?;
    class.define_method("supports", method!(RbStore::supports, 0))?;
    class.define_method("info", method!(RbStore::info, 0))?;
    class.define_method("_close", method!(RbStore::close, 0))?;
    class.define_method("closed?", method!(RbStore::is_closed, 0))?;
    class.define_method("_get", method!(RbStore::get, 2))?;
    class.define_method("_put", method!(RbStore::put, 4))?;
    class.define_method("_delete", method!(RbStore::delete, 1))?;
    class.define_method("_exists", method!(RbStore::exists, 1))?;
    class.define_method("_list", method!(RbStore::list, 2))?;
    class.define_method("_deletetree", method!(RbStore::deletetree, 1))?;
    class.define_method("_atomic_create", method!(RbStore::atomic_create, 4))?;
    class.define_method("_atomic_get", method!(RbStore::atomic_get, 2))?;
    class.define_method("_atomic_put", method!(RbStore::atomic_put, 5))?;
    class.define_method("_atomic_delete", method!(RbStore::atomic_delete, 2))?;
    class.define_method("_atomic_list", method!(RbStore::atomic_list, 2))?;
    class.define_method("_newlock", method!(RbStore::newlock, 4))?;
    class.define_method("_unlock", method!(RbStore::unlock, 2))?;
    class.define_method("_watch", method!(crate::watch::watch, 4))?;
    class.define_method("_changed", method!(crate::watch::changed, 5))?;
    crate::lock::init(ruby, module)?;
    crate::watch::init(ruby, module)?;
    Ok(())
}

/// `LibKV::Store._open(url, auth, timeout, vardir, environment)`: an instance of the
/// backend's class.
fn open(
    ruby: &Ruby,
    url: String,
    auth: RHash,
    timeout: f64,
    vardir: Option<String>,
    environment: Option<String>,
) -> Result<Obj<RbStore>, Error> {
    let options = OpenOptions {
        auth: auth_from(ruby, auth)?,
        timeout: libkv_core::timeout_from_secs(timeout).map_err(|e| errors::to_ruby(ruby, e))?,
        vardir: vardir.map(PathBuf::from),
        environment,
    };
    let store = nogvl(|| libkv_core::open(&url, &options)).map_err(|e| errors::to_ruby(ruby, e))?;
    let module: RModule = ruby.class_object().const_get("LibKV")?;
    let class: RClass = module.const_get(binding::class_name(store.provider()))?;
    let wrapped = RbStore {
        provider: store.provider(),
        url: store.url().to_owned(),
        supports: store.supports(),
        store: RwLock::new(Some(store)),
    };
    Ok(ruby.obj_wrap_as(wrapped, class))
}

/// `LibKV.binary_inside?(value)`: whether the value holds a binary String.
fn binary_inside(ruby: &Ruby, value: magnus::Value) -> bool {
    convert::binary_inside(ruby, value)
}

/// The auth Hash, with String or Symbol keys and String values. Errors name the
/// setting, never its value.
fn auth_from(ruby: &Ruby, hash: RHash) -> Result<Auth, Error> {
    let mut pairs = Vec::with_capacity(hash.len());
    hash.foreach(|k: magnus::Value, v: magnus::Value| {
        let name = match (RString::from_value(k), Symbol::from_value(k)) {
            (Some(s), _) => Some(s.to_string()?),
            (_, Some(sym)) => Some(sym.name()?.into_owned()),
            _ => None,
        };
        let value = RString::from_value(v).map(|s| s.to_string()).transpose()?;
        pairs.push((name, value));
        Ok(ForEach::Continue)
    })?;
    Auth::from_binding(pairs).map_err(|e| errors::to_ruby(ruby, e))
}

/// A key's bytes as the core takes them: its UTF-8 text, or, when it is not text,
/// its bytes (which the core refuses as an invalid key).
pub fn target(ruby: &Ruby, key: RString) -> Vec<u8> {
    match convert::text(ruby, key) {
        Ok(text) => text.into_bytes(),
        Err(bytes) => bytes,
    }
}

/// The value to store: converted (`serialize`), or a String's own bytes.
fn put_of(ruby: &Ruby, value: magnus::Value, serialize: bool) -> Result<Put<'static>, Error> {
    if !serialize {
        return Ok(match RString::from_value(value) {
            // SAFETY: copied at once.
            Some(s) => Put::Raw(Cow::Owned(unsafe { s.as_slice() }.to_vec())),
            None => Put::NotString,
        });
    }
    match convert::to_value(ruby, value) {
        Ok(v) => Ok(Put::Value(v)),
        Err(Unconverted::Refused(r)) => Ok(Put::Refused(r)),
        Err(Unconverted::Raised(e)) => Err(e),
    }
}

// The keys of atomic_get's Hash, interned once: Ruby would intern a new String
// key at every insert.
static VALUE_KEY: Lazy<RString> = Lazy::new(|ruby| ruby.str_new("value").to_interned_str());
static SEQUENCE_KEY: Lazy<RString> = Lazy::new(|ruby| ruby.str_new("sequence").to_interned_str());

/// `previous`: the Hash atomic_get returned, or an Integer sequence.
pub fn previous_of(ruby: &Ruby, previous: magnus::Value) -> Previous {
    let sequence = match RHash::from_value(previous) {
        Some(h) => h
            .get(ruby.get_inner(&SEQUENCE_KEY))
            .or_else(|| h.get(ruby.to_symbol("sequence"))),
        None => Some(previous),
    };
    match sequence.and_then(Integer::from_value).map(|i| i.to_u64()) {
        Some(Ok(seq)) => Previous::Sequence(seq),
        _ => Previous::Malformed,
    }
}

/// `{"value" => v, "sequence" => n}`
fn versioned(ruby: &Ruby, value: magnus::Value, sequence: u64) -> Result<RHash, Error> {
    let h = ruby.hash_new();
    h.aset(ruby.get_inner(&VALUE_KEY), value)?;
    h.aset(ruby.get_inner(&SEQUENCE_KEY), sequence)?;
    Ok(h)
}

/// A key of a listing as a frozen String: a Hash keeps a frozen key as it is, where
/// it would intern (look up and copy) one that is not.
fn listing_key(ruby: &Ruby, relative: &str) -> RString {
    let key = ruby.str_new(relative);
    key.freeze();
    key
}

/// An answer as Ruby values.
pub fn answer_to_ruby(ruby: &Ruby, answer: Answer) -> Result<magnus::Value, Error> {
    Ok(match answer {
        Answer::Value(v) => v.map_or_else(|| ruby.qnil().as_value(), |v| to_ruby(ruby, v)),
        Answer::Done => ruby.qtrue().as_value(),
        Answer::Bool(true) => ruby.qtrue().as_value(),
        Answer::Bool(false) => ruby.qfalse().as_value(),
        Answer::List(entries) => {
            let h = ruby.hash_new();
            for (rel, value) in entries {
                h.aset(listing_key(ruby, &rel), to_ruby(ruby, value))?;
            }
            h.as_value()
        }
        Answer::Versioned(Some((value, sequence))) => {
            versioned(ruby, to_ruby(ruby, value), sequence)?.as_value()
        }
        Answer::Versioned(None) => versioned(ruby, ruby.qnil().as_value(), 0)?.as_value(),
        Answer::VersionedList(entries) => {
            let h = ruby.hash_new();
            for (rel, value, sequence) in entries {
                let entry = versioned(ruby, to_ruby(ruby, value), sequence)?;
                h.aset(listing_key(ruby, &rel), entry)?;
            }
            h.as_value()
        }
        Answer::Info(v) => to_ruby(ruby, v),
    })
}

impl RbStore {
    /// This call's own reference to the store: a close meanwhile lets it finish.
    pub fn store(&self) -> Result<Arc<dyn Store>, CoreError> {
        self.store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| CoreError::Closed {
                store: self.url.clone(),
            })
    }

    /// Runs `op` through the core: its arguments checked and converted (with the
    /// GVL), the store called (without it, when the store may wait), the answer
    /// converted back.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        ruby: &Ruby,
        op: Op,
        key: RString,
        serialize: bool,
        previous: Option<magnus::Value>,
        value: Option<magnus::Value>,
        ttl: Option<i64>,
    ) -> Result<magnus::Value, Error> {
        let target = target(ruby, key);
        let mut prepared = binding::prepare(
            op,
            &target,
            serialize,
            || Ok(previous.map_or(Previous::Malformed, |p| previous_of(ruby, p))),
            || value.map_or(Ok(Put::NotString), |v| put_of(ruby, v, serialize)),
        )
        .map_err(|refused| match refused {
            Refused::Core(e) => errors::to_ruby(ruby, e),
            Refused::Binding(e) => e,
        })?;
        let store = self.store().map_err(|e| errors::to_ruby(ruby, e))?;
        let store = &*store;
        if let Some(ttl) = ttl {
            prepared
                .set_ttl(store, ttl)
                .map_err(|e| errors::to_ruby(ruby, e))?;
        }
        let answer = if store.waits() {
            nogvl(|| binding::run(store, &prepared))
        } else {
            binding::run(store, &prepared)
        };
        answer_to_ruby(ruby, answer.map_err(|e| errors::to_ruby(ruby, e))?)
    }

    /// `close`: the store goes (a call running on it finishes first); later calls
    /// raise `LibKV::ClosedError`. Closing twice is harmless.
    fn close(&self) {
        let store = self
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(store);
    }

    fn is_closed(&self) -> bool {
        self.store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    fn provider(&self) -> &'static str {
        self.provider
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn supports(&self) -> Vec<&'static str> {
        self.supports.iter().map(|op| op.name()).collect()
    }

    fn info(ruby: &Ruby, rb_self: &Self) -> Result<magnus::Value, Error> {
        let root = ruby.str_new("/");
        rb_self.call(ruby, Op::Info, root, true, None, None, None)
    }

    fn get(ruby: &Ruby, rb_self: &Self, k: RString, ser: bool) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::Get, k, ser, None, None, None)
    }

    fn put(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        value: magnus::Value,
        ser: bool,
        ttl: Option<i64>,
    ) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::Put, k, ser, None, Some(value), ttl)
    }

    fn delete(ruby: &Ruby, rb_self: &Self, k: RString) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::Delete, k, true, None, None, None)
    }

    fn exists(ruby: &Ruby, rb_self: &Self, k: RString) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::Exists, k, true, None, None, None)
    }

    fn list(ruby: &Ruby, rb_self: &Self, d: RString, ser: bool) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::List, d, ser, None, None, None)
    }

    fn deletetree(ruby: &Ruby, rb_self: &Self, d: RString) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::Deletetree, d, true, None, None, None)
    }

    fn atomic_create(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        value: magnus::Value,
        ser: bool,
        ttl: Option<i64>,
    ) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::AtomicCreate, k, ser, None, Some(value), ttl)
    }

    fn atomic_get(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        ser: bool,
    ) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::AtomicGet, k, ser, None, None, None)
    }

    fn atomic_put(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        value: magnus::Value,
        previous: magnus::Value,
        ser: bool,
        ttl: Option<i64>,
    ) -> Result<magnus::Value, Error> {
        rb_self.call(
            ruby,
            Op::AtomicPut,
            k,
            ser,
            Some(previous),
            Some(value),
            ttl,
        )
    }

    fn atomic_delete(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        previous: magnus::Value,
    ) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::AtomicDelete, k, true, Some(previous), None, None)
    }

    fn atomic_list(
        ruby: &Ruby,
        rb_self: &Self,
        d: RString,
        ser: bool,
    ) -> Result<magnus::Value, Error> {
        rb_self.call(ruby, Op::AtomicList, d, ser, None, None, None)
    }

    /// `_newlock(key, ttl, timeout, renew)`: a `LibKV::Lock`, taken without the GVL.
    fn newlock(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        ttl: i64,
        timeout: f64,
        renew: bool,
    ) -> Result<crate::lock::RbLock, Error> {
        let target = target(ruby, k);
        let store = rb_self.store().map_err(|e| errors::to_ruby(ruby, e))?;
        nogvl(|| binding::newlock(store, Op::Newlock, &target, ttl, timeout, renew))
            .map(crate::lock::RbLock::new)
            .map_err(|e| errors::to_ruby(ruby, e))
    }

    /// `_unlock(key, owner)`: releases the lock `owner` holds at `key`.
    fn unlock(ruby: &Ruby, rb_self: &Self, k: RString, owner: String) -> Result<bool, Error> {
        let target = target(ruby, k);
        let store = rb_self.store().map_err(|e| errors::to_ruby(ruby, e))?;
        nogvl(|| binding::unlock(&*store, &target, &owner)).map_err(|e| errors::to_ruby(ruby, e))
    }
}
