//! `LibKV::Store`: one open store. Ruby subclasses name the backend (`LibKV::Mock`,
//! `LibKV::File`, ...); `lib/libkv/store.rb` wraps these methods with keyword
//! arguments.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use libkv_core::{codec, Auth, Error as CoreError, Key, Listing, Op, OpenOptions, Refusal, Store};
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
    class.define_method("close", method!(RbStore::close, 0))?;
    class.define_method("closed?", method!(RbStore::is_closed, 0))?;
    class.define_method("_get", method!(RbStore::get, 2))?;
    class.define_method("_put", method!(RbStore::put, 3))?;
    class.define_method("_delete", method!(RbStore::delete, 1))?;
    class.define_method("_exists", method!(RbStore::exists, 1))?;
    class.define_method("_list", method!(RbStore::list, 2))?;
    class.define_method("_deletetree", method!(RbStore::deletetree, 1))?;
    class.define_method("_atomic_create", method!(RbStore::atomic_create, 3))?;
    class.define_method("_atomic_get", method!(RbStore::atomic_get, 2))?;
    class.define_method("_atomic_put", method!(RbStore::atomic_put, 4))?;
    class.define_method("_atomic_delete", method!(RbStore::atomic_delete, 2))?;
    class.define_method("_atomic_list", method!(RbStore::atomic_list, 2))?;
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
    let class_name = match store.provider() {
        "mock" => "Mock",
        "file" => "File",
        "legacy-simp6" => "LegacySimp6",
        "consul" => "Consul",
        "etcd" => "Etcd",
        other => unreachable!("unknown provider {other}"),
    };
    let module: RModule = ruby.class_object().const_get("LibKV")?;
    let class: RClass = module.const_get(class_name)?;
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

fn key(ruby: &Ruby, key: RString) -> Result<Key, Error> {
    Key::new(&key_text(ruby, key)?).map_err(|e| errors::to_ruby(ruby, e))
}

fn dir(ruby: &Ruby, dir: RString) -> Result<Key, Error> {
    Key::dir(&key_text(ruby, dir)?).map_err(|e| errors::to_ruby(ruby, e))
}

/// A key's text, in UTF-8; a String that is not text is an invalid key.
fn key_text(ruby: &Ruby, key: RString) -> Result<String, Error> {
    convert::text(ruby, key)
        .map_err(|bytes| errors::to_ruby(ruby, libkv_core::key::not_text(&bytes)))
}

/// The bytes to store for a Ruby value: encoded (`serialize`), or the String's own
/// bytes.
fn encode(ruby: &Ruby, key: &Key, value: magnus::Value, serialize: bool) -> Result<Vec<u8>, Error> {
    let refused = |reason: String| {
        errors::to_ruby(
            ruby,
            CoreError::InvalidValue {
                key: key.to_string(),
                reason,
            },
        )
    };
    if !serialize {
        return match RString::from_value(value) {
            // SAFETY: copied at once.
            Some(s) => Ok(unsafe { s.as_slice() }.to_vec()),
            None => Err(refused(Refusal::NotRaw.to_string())),
        };
    }
    let value = convert::to_value(ruby, value).map_err(|u| match u {
        Unconverted::Refused(r) => refused(r.to_string()),
        Unconverted::Raised(e) => e,
    })?;
    codec::encode(&value).map(Cow::into_owned).map_err(refused)
}

fn decode(ruby: &Ruby, bytes: Vec<u8>, serialize: bool) -> magnus::Value {
    let value = if serialize {
        codec::decode(bytes)
    } else {
        codec::decode_plain(bytes)
    };
    to_ruby(ruby, value)
}

// The keys of atomic_get's Hash, interned once: Ruby would intern a new String
// key at every insert.
static VALUE_KEY: Lazy<RString> = Lazy::new(|ruby| ruby.str_new("value").to_interned_str());
static SEQUENCE_KEY: Lazy<RString> = Lazy::new(|ruby| ruby.str_new("sequence").to_interned_str());

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

/// The sequence in `previous`: the Hash atomic_get returned, or an Integer.
fn previous_sequence(
    ruby: &Ruby,
    op: &'static str,
    key: &Key,
    previous: magnus::Value,
) -> Result<u64, Error> {
    let sequence = match RHash::from_value(previous) {
        Some(h) => h
            .get(ruby.get_inner(&SEQUENCE_KEY))
            .or_else(|| h.get(ruby.to_symbol("sequence"))),
        None => Some(previous),
    };
    match sequence.and_then(Integer::from_value).map(|i| i.to_u64()) {
        Some(Ok(seq)) => Ok(seq),
        _ => Err(errors::to_ruby(
            ruby,
            CoreError::InvalidPrevious {
                op,
                key: key.to_string(),
            },
        )),
    }
}

impl RbStore {
    fn run<T>(
        &self,
        ruby: &Ruby,
        f: impl FnOnce(&dyn Store) -> libkv_core::Result<T>,
    ) -> Result<T, Error> {
        // This call's own reference: a close meanwhile lets it finish.
        let store = self
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| errors::closed(ruby, &self.url))?;
        let store = &*store;
        let outcome = if store.waits() {
            nogvl(|| f(store))
        } else {
            f(store)
        };
        outcome.map_err(|e| errors::to_ruby(ruby, e))
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
        let info = rb_self.run(ruby, |s| s.info())?;
        Ok(to_ruby(ruby, info))
    }

    fn get(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        serialize: bool,
    ) -> Result<magnus::Value, Error> {
        let k = key(ruby, k)?;
        Ok(match rb_self.run(ruby, |s| s.get(&k))? {
            Some(bytes) => decode(ruby, bytes, serialize),
            None => ruby.qnil().as_value(),
        })
    }

    fn put(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        value: magnus::Value,
        serialize: bool,
    ) -> Result<bool, Error> {
        let k = key(ruby, k)?;
        let bytes = encode(ruby, &k, value, serialize)?;
        rb_self.run(ruby, |s| s.put(&k, &bytes))?;
        Ok(true)
    }

    fn delete(ruby: &Ruby, rb_self: &Self, k: RString) -> Result<bool, Error> {
        let k = key(ruby, k)?;
        rb_self.run(ruby, |s| s.delete(&k))?;
        Ok(true)
    }

    fn exists(ruby: &Ruby, rb_self: &Self, k: RString) -> Result<bool, Error> {
        let k = key(ruby, k)?;
        rb_self.run(ruby, |s| s.exists(&k))
    }

    fn list(ruby: &Ruby, rb_self: &Self, d: RString, serialize: bool) -> Result<RHash, Error> {
        let d = dir(ruby, d)?;
        let listing: Listing<Vec<u8>> = rb_self.run(ruby, |s| s.list(&d))?;
        let h = ruby.hash_new();
        for (rel, bytes) in listing {
            h.aset(listing_key(ruby, &rel), decode(ruby, bytes, serialize))?;
        }
        Ok(h)
    }

    fn deletetree(ruby: &Ruby, rb_self: &Self, d: RString) -> Result<bool, Error> {
        let d = dir(ruby, d)?;
        rb_self.run(ruby, |s| s.deletetree(&d))?;
        Ok(true)
    }

    fn atomic_create(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        value: magnus::Value,
        serialize: bool,
    ) -> Result<bool, Error> {
        let k = key(ruby, k)?;
        let bytes = encode(ruby, &k, value, serialize)?;
        rb_self.run(ruby, |s| s.atomic_create(&k, &bytes))
    }

    fn atomic_get(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        serialize: bool,
    ) -> Result<RHash, Error> {
        let k = key(ruby, k)?;
        match rb_self.run(ruby, |s| s.atomic_get(&k))? {
            Some(v) => versioned(ruby, decode(ruby, v.value, serialize), v.sequence),
            None => versioned(ruby, ruby.qnil().as_value(), 0),
        }
    }

    fn atomic_put(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        value: magnus::Value,
        previous: magnus::Value,
        serialize: bool,
    ) -> Result<bool, Error> {
        let k = key(ruby, k)?;
        let previous = previous_sequence(ruby, "atomic_put", &k, previous)?;
        let bytes = encode(ruby, &k, value, serialize)?;
        rb_self.run(ruby, |s| s.atomic_put(&k, &bytes, previous))
    }

    fn atomic_delete(
        ruby: &Ruby,
        rb_self: &Self,
        k: RString,
        previous: magnus::Value,
    ) -> Result<bool, Error> {
        let k = key(ruby, k)?;
        let previous = previous_sequence(ruby, "atomic_delete", &k, previous)?;
        rb_self.run(ruby, |s| s.atomic_delete(&k, previous))
    }

    fn atomic_list(
        ruby: &Ruby,
        rb_self: &Self,
        d: RString,
        serialize: bool,
    ) -> Result<RHash, Error> {
        let d = dir(ruby, d)?;
        let listing = rb_self.run(ruby, |s| s.atomic_list(&d))?;
        let h = ruby.hash_new();
        for (rel, v) in listing {
            let value = decode(ruby, v.value, serialize);
            h.aset(listing_key(ruby, &rel), versioned(ruby, value, v.sequence)?)?;
        }
        Ok(h)
    }
}
