//! Ruby values to core values and back.
//!
//! | Ruby                                    | core                 |
//! |-----------------------------------------|----------------------|
//! | `nil`, `true`, `false`                  | Undef, Bool          |
//! | Integer (64-bit range), Float           | Int, Float           |
//! | String with BINARY (ASCII-8BIT) encoding | Binary              |
//! | any other String (valid, made UTF-8)    | String               |
//! | Symbol                                  | String (its name)    |
//! | Array, Hash (any key types, in order)   | Array, Hash          |

use libkv_core::value::MAX_DEPTH;
use libkv_core::{Refusal, Value};
use magnus::encoding::{Coderange, EncodingCapable};
use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::value::{Qfalse, Qnil, Qtrue};
use magnus::{Float, Integer, RArray, RHash, RString, Ruby, Symbol};

/// Why a Ruby value was not converted: libkv refuses it, or Ruby raised while it
/// was walked.
pub enum Unconverted {
    Refused(Refusal),
    Raised(magnus::Error),
}

impl From<Refusal> for Unconverted {
    fn from(r: Refusal) -> Self {
        Unconverted::Refused(r)
    }
}

impl From<magnus::Error> for Unconverted {
    fn from(e: magnus::Error) -> Self {
        Unconverted::Raised(e)
    }
}

pub fn to_value(ruby: &Ruby, v: magnus::Value) -> Result<Value, Unconverted> {
    convert(ruby, v, 0)
}

fn convert(ruby: &Ruby, v: magnus::Value, depth: usize) -> Result<Value, Unconverted> {
    if Qnil::from_value(v).is_some() {
        return Ok(Value::Undef);
    }
    if Qtrue::from_value(v).is_some() {
        return Ok(Value::Bool(true));
    }
    if Qfalse::from_value(v).is_some() {
        return Ok(Value::Bool(false));
    }
    if let Some(s) = RString::from_value(v) {
        return Ok(string(ruby, s)?);
    }
    if let Some(i) = Integer::from_value(v) {
        return i
            .to_i64()
            .map(Value::Int)
            .map_err(|_| Refusal::IntegerRange.into());
    }
    if let Some(f) = Float::from_value(v) {
        return Ok(Value::Float(f.to_f64()));
    }
    if let Some(a) = RArray::from_value(v) {
        let depth = nest(depth)?;
        let mut items = Vec::with_capacity(a.len());
        for i in 0..a.len() {
            let item: magnus::Value = a.entry(i as isize)?;
            items.push(convert(ruby, item, depth)?);
        }
        return Ok(Value::Array(items));
    }
    if let Some(h) = RHash::from_value(v) {
        let depth = nest(depth)?;
        let mut pairs = Vec::with_capacity(h.len());
        let mut refusal = None;
        let walked = h.foreach(|k: magnus::Value, v: magnus::Value| {
            match (convert(ruby, k, depth), convert(ruby, v, depth)) {
                (Ok(k), Ok(v)) => {
                    pairs.push((k, v));
                    Ok(ForEach::Continue)
                }
                (Err(e), _) | (_, Err(e)) => {
                    refusal = Some(e);
                    Ok(ForEach::Stop)
                }
            }
        });
        if let Some(e) = refusal {
            return Err(e);
        }
        walked?;
        return Ok(Value::Hash(pairs));
    }
    if let Some(sym) = Symbol::from_value(v) {
        return sym
            .name()
            .map(|n| Value::String(n.into_owned()))
            .map_err(|_| Refusal::NotUtf8.into());
    }
    // SAFETY: the class name is copied before any other Ruby call.
    let class = unsafe { v.classname() }.into_owned();
    Err(Refusal::Class(class).into())
}

fn nest(depth: usize) -> Result<usize, Refusal> {
    if depth >= MAX_DEPTH {
        Err(Refusal::TooDeep)
    } else {
        Ok(depth + 1)
    }
}

fn string(ruby: &Ruby, s: RString) -> Result<Value, Refusal> {
    let index = s.enc_get();
    if index == ruby.ascii8bit_encindex() {
        // SAFETY: the bytes are copied before any other Ruby call.
        return Ok(Value::Binary(unsafe { s.as_slice() }.to_vec()));
    }
    let s = if index == ruby.utf8_encindex() || index == ruby.usascii_encindex() {
        s
    } else {
        s.conv_enc(ruby.utf8_encoding())
            .map_err(|e| Refusal::NotConvertible(e.to_string()))?
    };
    if s.enc_coderange_scan() == Coderange::Broken {
        return Err(Refusal::NotUtf8);
    }
    // SAFETY: copied at once; validity was checked just above.
    let bytes = unsafe { s.as_slice() }.to_vec();
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| Refusal::NotUtf8)
}

/// A String of any encoding as UTF-8 text: a binary String's bytes as they are,
/// others converted to UTF-8. `Err` holds the bytes when they are not text.
pub fn text(ruby: &Ruby, s: RString) -> Result<String, Vec<u8>> {
    // SAFETY (both): the bytes are copied before any other Ruby call.
    let bytes = |s: RString| unsafe { s.as_slice() }.to_vec();
    let index = s.enc_get();
    let utf8 = if index == ruby.ascii8bit_encindex()
        || index == ruby.utf8_encindex()
        || index == ruby.usascii_encindex()
    {
        s
    } else {
        s.conv_enc(ruby.utf8_encoding()).map_err(|_| bytes(s))?
    };
    String::from_utf8(bytes(utf8)).map_err(|e| e.into_bytes())
}

/// True when `v` is, or holds at any depth, a BINARY-encoded String: what a caller
/// turning binary Strings into its own Binary type has to walk. Deeper than a
/// value can be stored, it answers true, so the caller's own walk decides.
pub fn binary_inside(ruby: &Ruby, v: magnus::Value) -> bool {
    binary_at(ruby, v, 0)
}

fn binary_at(ruby: &Ruby, v: magnus::Value, depth: usize) -> bool {
    if let Some(s) = RString::from_value(v) {
        return s.enc_get() == ruby.ascii8bit_encindex();
    }
    if depth > MAX_DEPTH {
        return true;
    }
    if let Some(a) = RArray::from_value(v) {
        return (0..a.len()).any(|i| {
            a.entry::<magnus::Value>(i as isize)
                .map_or(true, |item| binary_at(ruby, item, depth + 1))
        });
    }
    if let Some(h) = RHash::from_value(v) {
        let mut found = false;
        let walked = h.foreach(|k: magnus::Value, v: magnus::Value| {
            found = binary_at(ruby, k, depth + 1) || binary_at(ruby, v, depth + 1);
            Ok(if found {
                ForEach::Stop
            } else {
                ForEach::Continue
            })
        });
        return found || walked.is_err();
    }
    false
}

/// Bytes as a Ruby String: BINARY-encoded.
pub fn binary(ruby: &Ruby, bytes: &[u8]) -> RString {
    ruby.enc_str_new(bytes, ruby.ascii8bit_encoding())
}

pub fn to_ruby(ruby: &Ruby, v: Value) -> magnus::Value {
    match v {
        Value::Undef => ruby.qnil().as_value(),
        Value::Bool(true) => ruby.qtrue().as_value(),
        Value::Bool(false) => ruby.qfalse().as_value(),
        Value::Int(i) => ruby.integer_from_i64(i).as_value(),
        Value::Float(f) => ruby.float_from_f64(f).as_value(),
        Value::String(s) => ruby.str_new(&s).as_value(),
        Value::Binary(b) => binary(ruby, &b).as_value(),
        Value::Array(items) => {
            let a = ruby.ary_new_capa(items.len());
            for item in items {
                a.push(to_ruby(ruby, item))
                    .expect("a new Array is not frozen");
            }
            a.as_value()
        }
        Value::Hash(pairs) => {
            let h = ruby.hash_new();
            for (k, v) in pairs {
                h.aset(to_ruby(ruby, k), to_ruby(ruby, v))
                    .expect("a new Hash is not frozen");
            }
            h.as_value()
        }
    }
}
