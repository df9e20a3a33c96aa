//! The arguments of one C call as the core's (`libkv_core::binding`, which checks
//! them in one order for every binding), and what the core answers as DATA.

use std::path::PathBuf;
use std::sync::Arc;

use std::borrow::Cow;

use libkv_core::binding::{self, Previous, Put, Refused};
use libkv_core::{codec, timeout_from_secs, Auth, Op, OpenOptions, Refusal, Store, Value};

use crate::{
    Failure, LIBKV_PREVIOUS_MALFORMED, LIBKV_PREVIOUS_SEQUENCE, LIBKV_TTL_NONE, LIBKV_TTL_SECONDS,
    LIBKV_VALUE_DATA, LIBKV_VALUE_NOT_STRING, LIBKV_VALUE_RAW, LIBKV_VALUE_REFUSED,
};

/// The arguments of `libkv_call` beside the store and the operation.
pub struct Request<'a> {
    /// UTF-8, or an invalid key.
    pub key: &'a [u8],
    pub value: (i32, &'a [u8]),
    pub previous: (i32, u64),
    pub serialize: bool,
    /// Seconds, unchecked: the core checks it against the operation and store.
    pub ttl: Option<i64>,
}

/// The ttl of `libkv_call` by its form.
pub fn ttl(form: i32, ttl: i64) -> Result<Option<i64>, Failure> {
    match form {
        LIBKV_TTL_NONE => Ok(None),
        LIBKV_TTL_SECONDS => Ok(Some(ttl)),
        other => Err(Failure::Internal(format!("ttl_form {other}"))),
    }
}

/// Opens a store, and describes it: `{"provider", "url", "supports", "class"}` as
/// DATA.
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
        ("class", Value::from(binding::class_name(store.provider()))),
    ]))?;
    Ok((store, described))
}

/// An argument the caller converted to UTF-8 (as the MRI binding's Strings are);
/// other bytes are a broken contract, never decoded lossily.
pub(crate) fn text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, Failure> {
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
    let op = std::str::from_utf8(op)
        .ok()
        .and_then(Op::named)
        .filter(|op| !matches!(op, Op::EmptyValue | Op::Provider | Op::Supports))
        .ok_or_else(|| {
            Failure::Internal(format!(
                "unknown operation {:?}",
                String::from_utf8_lossy(op)
            ))
        })?;
    let mut prepared = binding::prepare(
        op,
        req.key,
        req.serialize,
        || previous(op, req),
        || put(req),
    )
    .map_err(|refused| match refused {
        Refused::Core(e) => Failure::Core(e),
        Refused::Binding(failure) => failure,
    })?;
    // After the key, value and previous, as the MRI extension checks it.
    if let Some(ttl) = req.ttl {
        prepared.set_ttl(store, ttl)?;
    }
    data(binding::run(store, &prepared)?.into_value()?)
}

pub(crate) fn data(value: Value) -> Result<Vec<u8>, Failure> {
    codec::to_data(&value).map_err(Failure::Internal)
}

/// The value to store, by the request's value form.
fn put<'a>(req: &Request<'a>) -> Result<Put<'a>, Failure> {
    let (form, bytes) = req.value;
    match form {
        LIBKV_VALUE_DATA => codec::from_data(bytes)
            .map(Put::Value)
            .map_err(|e| Failure::Internal(format!("the value is not DATA: {e}"))),
        LIBKV_VALUE_RAW => Ok(Put::Raw(Cow::Borrowed(bytes))),
        LIBKV_VALUE_REFUSED => Ok(Put::Refused(refusal(bytes)?)),
        LIBKV_VALUE_NOT_STRING => Ok(Put::NotString),
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

fn previous(op: Op, req: &Request<'_>) -> Result<Previous, Failure> {
    match req.previous {
        (LIBKV_PREVIOUS_SEQUENCE, sequence) => Ok(Previous::Sequence(sequence)),
        (LIBKV_PREVIOUS_MALFORMED, _) => Ok(Previous::Malformed),
        (other, _) => Err(Failure::Internal(format!(
            "previous_form {other} for {}",
            op.name()
        ))),
    }
}
