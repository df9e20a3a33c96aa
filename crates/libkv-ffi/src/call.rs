//! The arguments of one C call to core calls, and what the core answers to DATA.
//! Checks run in the MRI extension's order: the key, then `previous`, then the
//! value, then the store.

use std::path::PathBuf;
use std::sync::Arc;

use libkv_core::{
    codec, timeout_from_secs, Auth, Error as CoreError, Key, OpenOptions, Refusal, Store, Value,
    Versioned,
};

use crate::{
    Failure, LIBKV_PREVIOUS_MALFORMED, LIBKV_PREVIOUS_SEQUENCE, LIBKV_VALUE_DATA,
    LIBKV_VALUE_NOT_STRING, LIBKV_VALUE_RAW, LIBKV_VALUE_REFUSED,
};

/// The arguments of `libkv_call` beside the store and the operation.
pub struct Request<'a> {
    /// UTF-8, or an invalid key.
    pub key: &'a [u8],
    pub value: (i32, &'a [u8]),
    pub previous: (i32, u64),
    pub serialize: bool,
}

/// Opens a store, and describes it: `{"provider", "url", "supports"}` as DATA.
pub fn open(
    url: &[u8],
    auth: &[u8],
    timeout: f64,
    vardir: Option<&[u8]>,
    environment: Option<&[u8]>,
) -> Result<(Arc<dyn Store>, Vec<u8>), Failure> {
    let url = text(url, "url")?;
    let options = OpenOptions {
        auth: auth_from(auth)?,
        timeout: timeout_from_secs(timeout)?,
        vardir: vardir
            .map(|v| text(v, "vardir"))
            .transpose()?
            .map(PathBuf::from),
        environment: environment
            .map(|e| text(e, "environment"))
            .transpose()?
            .map(str::to_owned),
    };
    let store = libkv_core::open(url, &options)?;
    let supports = store
        .supports()
        .iter()
        .map(|op| Value::from(op.name()))
        .collect();
    let described = data(Value::hash([
        ("provider", Value::from(store.provider())),
        ("url", Value::from(store.url())),
        ("supports", Value::Array(supports)),
    ]))?;
    Ok((store, described))
}

/// An argument the caller converted to UTF-8 (as the MRI binding's Strings are);
/// other bytes are a broken contract, never decoded lossily.
fn text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, Failure> {
    std::str::from_utf8(bytes).map_err(|e| Failure::Internal(format!("{what} is not UTF-8 ({e})")))
}

/// `[[name, value], ...]`, each a String or null. Errors name the setting, never
/// its value.
fn auth_from(json: &[u8]) -> Result<Auth, Failure> {
    let pairs = serde_json::from_slice(json)
        .map_err(|e| Failure::Internal(format!("auth is not a JSON array of pairs: {e}")))?;
    Ok(Auth::from_binding(pairs)?)
}

/// Runs `op` on `store`; the answer is DATA.
pub fn run(store: &dyn Store, op: &[u8], req: &Request<'_>) -> Result<Vec<u8>, Failure> {
    let ser = req.serialize;
    let answer = match op {
        b"get" => {
            let k = key(req)?;
            store
                .get(&k)?
                .map_or(Value::Undef, |bytes| decode(bytes, ser))
        }
        b"put" => {
            let k = key(req)?;
            let bytes = encode(&k, req)?;
            store.put(&k, &bytes)?;
            Value::Bool(true)
        }
        b"delete" => {
            store.delete(&key(req)?)?;
            Value::Bool(true)
        }
        b"exists" => Value::Bool(store.exists(&key(req)?)?),
        b"list" => {
            let listing = store.list(&dir(req)?)?;
            Value::hash(
                listing
                    .into_iter()
                    .map(|(rel, bytes)| (rel, decode(bytes, ser))),
            )
        }
        b"deletetree" => {
            store.deletetree(&dir(req)?)?;
            Value::Bool(true)
        }
        b"atomic_create" => {
            let k = key(req)?;
            let bytes = encode(&k, req)?;
            Value::Bool(store.atomic_create(&k, &bytes)?)
        }
        b"atomic_get" => versioned(store.atomic_get(&key(req)?)?, ser)?,
        b"atomic_put" => {
            let k = key(req)?;
            let previous = previous("atomic_put", &k, req)?;
            let bytes = encode(&k, req)?;
            Value::Bool(store.atomic_put(&k, &bytes, previous)?)
        }
        b"atomic_delete" => {
            let k = key(req)?;
            let previous = previous("atomic_delete", &k, req)?;
            Value::Bool(store.atomic_delete(&k, previous)?)
        }
        b"atomic_list" => {
            let listing = store.atomic_list(&dir(req)?)?;
            let mut pairs = Vec::with_capacity(listing.len());
            for (rel, v) in listing {
                pairs.push((rel, versioned(Some(v), ser)?));
            }
            Value::hash(pairs)
        }
        b"info" => store.info()?,
        other => {
            return Err(Failure::Internal(format!(
                "unknown operation {:?}",
                String::from_utf8_lossy(other)
            )))
        }
    };
    data(answer)
}

fn data(value: Value) -> Result<Vec<u8>, Failure> {
    codec::to_data(&value).map_err(Failure::Internal)
}

fn key(req: &Request<'_>) -> Result<Key, Failure> {
    Ok(Key::new(key_text(req.key)?)?)
}

fn dir(req: &Request<'_>) -> Result<Key, Failure> {
    Ok(Key::dir(key_text(req.key)?)?)
}

/// A key's text (the caller converts it to UTF-8); bytes that are not UTF-8 are an
/// invalid key, as on MRI.
fn key_text(bytes: &[u8]) -> Result<&str, Failure> {
    Ok(libkv_core::key::text(bytes)?)
}

fn decode(bytes: Vec<u8>, serialize: bool) -> Value {
    if serialize {
        codec::decode(bytes)
    } else {
        codec::decode_plain(bytes)
    }
}

/// The bytes to store for the request's value.
fn encode(key: &Key, req: &Request<'_>) -> Result<Vec<u8>, Failure> {
    let refused = |reason: String| {
        Failure::Core(CoreError::InvalidValue {
            key: key.to_string(),
            reason,
        })
    };
    let (form, bytes) = req.value;
    match form {
        LIBKV_VALUE_DATA => {
            let value = codec::from_data(bytes)
                .map_err(|e| Failure::Internal(format!("the value is not DATA: {e}")))?;
            codec::encode(&value)
                .map(|encoded| encoded.into_owned())
                .map_err(refused)
        }
        LIBKV_VALUE_RAW => Ok(bytes.to_vec()),
        LIBKV_VALUE_REFUSED => Err(refused(refusal(bytes)?.to_string())),
        LIBKV_VALUE_NOT_STRING => Err(refused(Refusal::NotRaw.to_string())),
        other => Err(Failure::Internal(format!(
            "value_form {other} for an operation that stores a value"
        ))),
    }
}

/// The refusal a caller sent with [`LIBKV_VALUE_REFUSED`]: a JSON array of its kind
/// and, for some kinds, a detail (see the crate documentation).
fn refusal(bytes: &[u8]) -> Result<Refusal, Failure> {
    let parts: Vec<String> = serde_json::from_slice(bytes)
        .map_err(|e| Failure::Internal(format!("a refusal is not a JSON array of Strings: {e}")))?;
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(match parts[..] {
        ["integer-range"] => Refusal::IntegerRange,
        ["too-deep"] => Refusal::TooDeep,
        ["not-utf8"] => Refusal::NotUtf8,
        ["not-convertible", why] => Refusal::NotConvertible(why.to_owned()),
        ["class", name] => Refusal::Class(name.to_owned()),
        ["non-finite", f] => match f.parse::<f64>() {
            Ok(f) if !f.is_finite() => Refusal::NonFinite(f),
            _ => {
                return Err(Failure::Internal(format!(
                    "{f:?} is not a non-finite Float"
                )))
            }
        },
        _ => return Err(Failure::Internal(format!("unknown refusal {parts:?}"))),
    })
}

fn previous(op: &'static str, key: &Key, req: &Request<'_>) -> Result<u64, Failure> {
    match req.previous {
        (LIBKV_PREVIOUS_SEQUENCE, sequence) => Ok(sequence),
        (LIBKV_PREVIOUS_MALFORMED, _) => Err(Failure::Core(CoreError::InvalidPrevious {
            op,
            key: key.to_string(),
        })),
        (other, _) => Err(Failure::Internal(format!("previous_form {other} for {op}"))),
    }
}

/// `{"value" => v, "sequence" => n}`, the empty value for an absent key.
fn versioned(found: Option<Versioned>, serialize: bool) -> Result<Value, Failure> {
    let (value, sequence) = match found {
        Some(v) => (decode(v.value, serialize), v.sequence),
        None => (Value::Undef, 0),
    };
    let sequence = i64::try_from(sequence)
        .map_err(|_| Failure::Internal(format!("sequence {sequence} is beyond 2**63")))?;
    Ok(Value::hash([
        ("value", value),
        ("sequence", Value::Int(sequence)),
    ]))
}
