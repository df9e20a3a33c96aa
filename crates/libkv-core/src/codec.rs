//! The value encoding: what a value looks like as bytes in a store.
//!
//! - A String is stored as its plain UTF-8 bytes, so other tools and files written
//!   by SIMP 6 interoperate.
//! - A Binary that is not valid UTF-8 is stored as its plain bytes too: such bytes
//!   read back as a Binary.
//! - Every other value (and a String or Binary that would otherwise read back as
//!   something else) is stored in the envelope, one line of JSON:
//!
//!   ```text
//!   {"libkv":1,"value":DATA}
//!   ```
//!
//!   DATA is JSON: `null` for undef, booleans, integers (no fraction or exponent),
//!   floats (always with a fraction or an exponent), strings, arrays and objects.
//!   Values JSON cannot express use Puppet's rich-data tags: a Binary is
//!   `{"__ptype":"Binary","__pvalue":"<base64>"}`, a Hash with a non-String key (or
//!   a key named `__ptype`) is `{"__ptype":"Hash","__pvalue":[k1,v1,k2,v2,...]}`.
//!
//! Decoding: bytes that start with `{"libkv":1,"value":` and parse as an envelope
//! give its value; any other bytes read back as a String, or as a Binary when they
//! are not valid UTF-8. Encoding always envelopes a String starting with that
//! prefix, so every value reads back exactly as it was put.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::value::{Refusal, Value, MAX_DEPTH};

/// How every envelope starts.
pub const ENVELOPE_PREFIX: &[u8] = br#"{"libkv":1,"value":"#;

const PTYPE: &str = "__ptype";
const PVALUE: &str = "__pvalue";

/// Encodes a value for the store. The error says why the value cannot be stored.
pub fn encode(value: &Value) -> Result<Cow<'_, [u8]>, String> {
    match value {
        Value::String(s) if !s.as_bytes().starts_with(ENVELOPE_PREFIX) => {
            Ok(Cow::Borrowed(s.as_bytes()))
        }
        Value::Binary(b) if std::str::from_utf8(b).is_err() => Ok(Cow::Borrowed(b)),
        _ => {
            check(value, 0, MAX_DEPTH)?;
            let mut out = Vec::with_capacity(ENVELOPE_PREFIX.len() + 32);
            out.extend_from_slice(ENVELOPE_PREFIX);
            serde_json::to_writer(&mut out, &Data(value)).map_err(|e| e.to_string())?;
            out.push(b'}');
            Ok(Cow::Owned(out))
        }
    }
}

/// Decodes bytes read from the store (see the module documentation).
pub fn decode(bytes: Vec<u8>) -> Value {
    if bytes.starts_with(ENVELOPE_PREFIX) && bytes.ends_with(b"}") {
        if let Some(v) = decode_envelope(&bytes) {
            return v;
        }
    }
    decode_plain(bytes)
}

/// The bytes as a String, or a Binary when they are not valid UTF-8: what a value
/// stored with `serialize => false` reads back as.
pub fn decode_plain(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(s) => Value::String(s),
        Err(e) => Value::Binary(e.into_bytes()),
    }
}

fn decode_envelope(bytes: &[u8]) -> Option<Value> {
    from_data(&bytes[ENVELOPE_PREFIX.len()..bytes.len() - 1]).ok()
}

/// A value as envelope DATA alone: the JSON an envelope carries after `"value":`.
/// Bindings that pass values across a language boundary as JSON use this form
/// (the C ABI does), so every type keeps its rich-data tag on the way. Unlike
/// [`encode`] it takes values nested deeper than [`MAX_DEPTH`]: results wrap
/// stored values (`{"value" => v, ...}`), and foreign envelopes may nest deeper.
pub fn to_data(value: &Value) -> Result<Vec<u8>, String> {
    check(value, 0, usize::MAX)?;
    serde_json::to_vec(&Data(value)).map_err(|e| e.to_string())
}

/// The value of envelope DATA alone (see [`to_data`]); refuses anything that is not
/// DATA, nested deeper than [`to_data`] writes included.
pub fn from_data(data: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(data);
    // Depth is bounded by DataSeed itself, before serde_json recurses any deeper.
    de.disable_recursion_limit();
    let value = DataSeed { depth: 0 }
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Refuses what the envelope cannot carry exactly, before anything is written:
/// non-finite Floats, and Arrays and Hashes nested more than `max_depth` levels.
fn check(value: &Value, depth: usize, max_depth: usize) -> Result<(), String> {
    match value {
        Value::Float(f) if !f.is_finite() => Err(Refusal::NonFinite(*f).to_string()),
        Value::Array(items) => {
            deeper(depth, max_depth)?;
            items
                .iter()
                .try_for_each(|v| check(v, depth + 1, max_depth))
        }
        Value::Hash(pairs) => {
            deeper(depth, max_depth)?;
            pairs.iter().try_for_each(|(k, v)| {
                check(k, depth + 1, max_depth).and_then(|_| check(v, depth + 1, max_depth))
            })
        }
        _ => Ok(()),
    }
}

fn deeper(depth: usize, max_depth: usize) -> Result<(), String> {
    if depth >= max_depth {
        Err(format!(
            "it nests Arrays and Hashes more than {MAX_DEPTH} levels deep"
        ))
    } else {
        Ok(())
    }
}

/// Serializes a value as envelope DATA.
struct Data<'a>(&'a Value);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Undef => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Binary(b) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry(PTYPE, "Binary")?;
                m.serialize_entry(PVALUE, &BASE64.encode(b))?;
                m.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Data(item))?;
                }
                seq.end()
            }
            Value::Hash(pairs) => {
                let plain = pairs
                    .iter()
                    .all(|(k, _)| matches!(k, Value::String(k) if k != PTYPE));
                if plain {
                    let mut m = s.serialize_map(Some(pairs.len()))?;
                    for (k, v) in pairs {
                        if let Value::String(k) = k {
                            m.serialize_entry(k, &Data(v))?;
                        }
                    }
                    m.end()
                } else {
                    let mut m = s.serialize_map(Some(2))?;
                    m.serialize_entry(PTYPE, "Hash")?;
                    m.serialize_entry(PVALUE, &FlatPairs(pairs))?;
                    m.end()
                }
            }
        }
    }
}

struct FlatPairs<'a>(&'a [(Value, Value)]);

impl Serialize for FlatPairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len() * 2))?;
        for (k, v) in self.0 {
            seq.serialize_element(&Data(k))?;
            seq.serialize_element(&Data(v))?;
        }
        seq.end()
    }
}

/// Deserializes envelope DATA, refusing JSON nested deeper than the encoder writes.
#[derive(Clone, Copy)]
struct DataSeed {
    depth: usize,
}

/// JSON levels per value level: a tagged Hash is an object holding an array.
const MAX_JSON_DEPTH: usize = 2 * MAX_DEPTH + 2;

impl<'de> DeserializeSeed<'de> for DataSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl DataSeed {
    fn child<E: de::Error>(self) -> Result<DataSeed, E> {
        if self.depth >= MAX_JSON_DEPTH {
            Err(E::custom("nested too deep"))
        } else {
            Ok(DataSeed {
                depth: self.depth + 1,
            })
        }
    }
}

impl<'de> Visitor<'de> for DataSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("libkv envelope data")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Undef)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        let mut tagged = false;
        while let Some(k) = map.next_key::<String>()? {
            tagged |= k == PTYPE;
            let v = map.next_value_seed(child)?;
            pairs.push((Value::String(k), v));
        }
        if tagged {
            untag(pairs).ok_or_else(|| de::Error::custom("malformed __ptype object"))
        } else {
            Ok(Value::Hash(pairs))
        }
    }
}

/// The value of a `{"__ptype": ..., "__pvalue": ...}` object.
fn untag(pairs: Vec<(Value, Value)>) -> Option<Value> {
    let mut ptype = None;
    let mut pvalue = None;
    if pairs.len() != 2 {
        return None;
    }
    for (k, v) in pairs {
        match (k, v) {
            (Value::String(k), Value::String(t)) if k == PTYPE => ptype = Some(t),
            (Value::String(k), v) if k == PVALUE => pvalue = Some(v),
            _ => return None,
        }
    }
    match (ptype?.as_str(), pvalue?) {
        ("Binary", Value::String(b64)) => BASE64.decode(b64).ok().map(Value::Binary),
        ("Hash", Value::Array(flat)) if flat.len() % 2 == 0 => {
            let mut it = flat.into_iter();
            let mut pairs = Vec::with_capacity(it.len() / 2);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Some(Value::Hash(pairs))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: Value) -> Vec<u8> {
        let bytes = encode(&v).unwrap().into_owned();
        assert_eq!(
            decode(bytes.clone()),
            v,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        bytes
    }

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn strings_are_plain_bytes() {
        assert_eq!(roundtrip(s("hunter2")), b"hunter2");
        assert_eq!(roundtrip(s("")), b"");
        assert_eq!(roundtrip(s("line\n")), b"line\n");
        assert_eq!(roundtrip(s("naïve ✓")), "naïve ✓".as_bytes());
        assert_eq!(roundtrip(s("nul\0byte")), b"nul\0byte");
        assert_eq!(roundtrip(s(r#"{"a":1}"#)), br#"{"a":1}"#);
        assert_eq!(roundtrip(s("42")), b"42");
        assert_eq!(roundtrip(s("null")), b"null");
    }

    #[test]
    fn strings_that_look_like_envelopes_are_enveloped() {
        let tricky = r#"{"libkv":1,"value":42}"#;
        let bytes = roundtrip(s(tricky));
        assert_ne!(bytes, tricky.as_bytes());
        assert!(bytes.starts_with(ENVELOPE_PREFIX));
        roundtrip(s(r#"{"libkv":1,"value":"#));
        roundtrip(s(r#"{"libkv":1,"value":not json}"#));
    }

    #[test]
    fn scalars_keep_their_type() {
        assert_eq!(roundtrip(Value::Int(42)), br#"{"libkv":1,"value":42}"#);
        roundtrip(Value::Int(0));
        roundtrip(Value::Int(i64::MIN));
        roundtrip(Value::Int(i64::MAX));
        assert_eq!(roundtrip(Value::Float(1.0)), br#"{"libkv":1,"value":1.0}"#);
        roundtrip(Value::Float(-0.0));
        roundtrip(Value::Float(0.1 + 0.2));
        roundtrip(Value::Float(f64::MAX));
        roundtrip(Value::Float(f64::MIN_POSITIVE));
        roundtrip(Value::Float(5e-324));
        roundtrip(Value::Float(1e300));
        assert_eq!(roundtrip(Value::Bool(true)), br#"{"libkv":1,"value":true}"#);
        roundtrip(Value::Bool(false));
        assert_eq!(roundtrip(Value::Undef), br#"{"libkv":1,"value":null}"#);
    }

    #[test]
    fn binary_is_plain_unless_it_would_read_as_a_string() {
        let raw = vec![0xff, 0x00, 0xfe, 0x80];
        assert_eq!(roundtrip(Value::Binary(raw.clone())), raw);
        let utf8 = roundtrip(Value::Binary(b"plain text".to_vec()));
        assert_eq!(
            utf8,
            br#"{"libkv":1,"value":{"__ptype":"Binary","__pvalue":"cGxhaW4gdGV4dA=="}}"#
        );
        roundtrip(Value::Binary(vec![]));
        let mut prefixed = ENVELOPE_PREFIX.to_vec();
        prefixed.push(0xff);
        assert_eq!(roundtrip(Value::Binary(prefixed.clone())), prefixed);
    }

    #[test]
    fn collections_nest_with_every_type_inside() {
        let v = Value::Hash(vec![
            (s("int"), Value::Int(1)),
            (s("float"), Value::Float(2.5)),
            (s("bool"), Value::Bool(false)),
            (s("undef"), Value::Undef),
            (s("bin"), Value::Binary(vec![0, 1, 255])),
            (
                s("list"),
                Value::Array(vec![
                    Value::Undef,
                    s("x"),
                    Value::Array(vec![Value::Binary(b"ok".to_vec())]),
                ]),
            ),
            (
                s("nested"),
                Value::Hash(vec![(Value::Int(1), s("integer key"))]),
            ),
            (s("a"), s("order kept: a after nested")),
        ]);
        roundtrip(v);
        roundtrip(Value::Array(vec![]));
        roundtrip(Value::Hash(vec![]));
    }

    #[test]
    fn hashes_keep_order_and_key_types() {
        let v = Value::Hash(vec![
            (s("z"), Value::Int(1)),
            (s("a"), Value::Int(2)),
            (s("m"), Value::Int(3)),
        ]);
        assert_eq!(roundtrip(v), br#"{"libkv":1,"value":{"z":1,"a":2,"m":3}}"#);
        let mixed = Value::Hash(vec![
            (Value::Int(1), s("one")),
            (s("1"), s("string one")),
            (Value::Bool(true), Value::Undef),
            (Value::Undef, Value::Int(0)),
            (Value::Array(vec![Value::Int(1)]), s("array key")),
        ]);
        let bytes = roundtrip(mixed);
        assert!(String::from_utf8(bytes)
            .unwrap()
            .contains(r#""__ptype":"Hash""#));
    }

    #[test]
    fn ptype_lookalike_hashes_are_escaped() {
        let v = Value::Hash(vec![
            (s("__ptype"), s("Binary")),
            (s("__pvalue"), s("AAAA")),
        ]);
        roundtrip(v);
        roundtrip(Value::Hash(vec![(s("__ptype"), Value::Int(1))]));
        roundtrip(Value::Hash(vec![(s("__pvalue"), Value::Int(1))]));
    }

    #[test]
    fn refuses_what_it_cannot_store_exactly() {
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = encode(&Value::Array(vec![Value::Float(f)])).unwrap_err();
            assert!(err.contains("finite"), "{err}");
        }
        let mut deep = Value::Int(1);
        for _ in 0..MAX_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        roundtrip(deep.clone());
        let too_deep = Value::Array(vec![deep]);
        let err = encode(&too_deep).unwrap_err();
        assert!(err.contains("more than 100 levels"), "{err}");
        let mut deep_hash = Value::Undef;
        for _ in 0..MAX_DEPTH {
            deep_hash = Value::Hash(vec![(Value::Int(0), deep_hash)]);
        }
        roundtrip(deep_hash);
    }

    #[test]
    fn foreign_bytes_read_as_strings_or_binary() {
        assert_eq!(decode(b"simp6 password".to_vec()), s("simp6 password"));
        assert_eq!(decode(vec![0xc3, 0x28]), Value::Binary(vec![0xc3, 0x28]));
        for almost in [
            &br#"{"libkv":1,"value":}"#[..],
            br#"{"libkv":1,"value":1,"x":2}"#,
            br#"{"libkv":1,"value":{"__ptype":"Nope","__pvalue":1}}"#,
            br#"{"libkv":1,"value":{"__ptype":"Binary","__pvalue":"%%%"}}"#,
            br#"{"libkv":1,"value":{"__ptype":"Hash","__pvalue":[1]}}"#,
            br#"{"libkv":1,"value":18446744073709551615}"#,
            br#"{"libkv": 1, "value": 2}"#,
            br#"{"libkv":2,"value":2}"#,
        ] {
            let text = String::from_utf8(almost.to_vec()).unwrap();
            assert_eq!(decode(almost.to_vec()), Value::String(text));
        }
        assert_eq!(decode(br#"{"libkv":1,"value":7 }"#.to_vec()), Value::Int(7));
        let mut bomb = ENVELOPE_PREFIX.to_vec();
        bomb.extend(std::iter::repeat_n(b'[', 100_000));
        bomb.extend(std::iter::repeat_n(b']', 100_000));
        bomb.push(b'}');
        assert!(matches!(decode(bomb), Value::String(_)));
    }

    #[test]
    fn data_alone_round_trips_and_refuses_what_is_not_data() {
        let v = Value::Hash(vec![
            (s("__ptype"), Value::Binary(vec![0xff])),
            (
                Value::Int(1),
                Value::Array(vec![Value::Float(-0.0), Value::Undef]),
            ),
        ]);
        let data = to_data(&v).unwrap();
        assert_eq!(from_data(&data).unwrap(), v);
        let mut envelope = ENVELOPE_PREFIX.to_vec();
        envelope.extend_from_slice(&data);
        envelope.push(b'}');
        assert_eq!(decode(envelope), v);
        assert_eq!(to_data(&s("x")).unwrap(), br#""x""#);
        let mut deep = Value::Int(1);
        for _ in 0..=MAX_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        assert!(encode(&deep).is_err());
        assert_eq!(from_data(&to_data(&deep).unwrap()).unwrap(), deep);
        assert!(to_data(&Value::Float(f64::NAN))
            .unwrap_err()
            .contains("finite"));
        for bad in [
            &b""[..],
            b"1 2",
            b"{\"__ptype\":\"Nope\",\"__pvalue\":1}",
            b"NaN",
        ] {
            assert!(from_data(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn plain_decoding_ignores_envelopes() {
        let bytes = encode(&Value::Int(3)).unwrap().into_owned();
        assert_eq!(decode_plain(bytes), s(r#"{"libkv":1,"value":3}"#));
        assert_eq!(decode_plain(vec![0xff]), Value::Binary(vec![0xff]));
    }
}
