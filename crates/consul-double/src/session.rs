//! `PUT /v1/session/create`: the request body as Consul's decoder reads it
//! into its `structs.Session` (with `Session.UnmarshalJSON`'s handling of
//! `LockDelay`).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::go;

/// Consul's `lockDelayMinThreshold`: a lock-delay below this many
/// nanoseconds is taken as seconds (so `15` and `"15ns"` mean 15s).
const LOCK_DELAY_MIN_THRESHOLD: i64 = 1000;

/// What a create request asks for; fields the double ignores (`Node`,
/// `Checks`, `NodeChecks`, `ServiceChecks`, `ID`) are only type-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) name: String,
    /// A Go duration string, checked later ("" for none).
    pub(crate) ttl: String,
    /// "" (release), "release", "delete", or another string (refused later).
    pub(crate) behavior: String,
    /// Nanoseconds, as Go's `time.Duration`.
    pub(crate) lock_delay: i64,
}

impl Request {
    /// Consul's defaults: no name, no TTL, `release`, the given lock-delay.
    pub(crate) fn new(lock_delay: Duration) -> Self {
        Request {
            name: String::new(),
            ttl: String::new(),
            behavior: String::new(),
            lock_delay: i64::try_from(lock_delay.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// Reads the body over the defaults as Go's encoding/json would: the
    /// first JSON value only, `null` changes nothing, member names in any
    /// case, unknown members ignored, `null` members left alone. The error
    /// is the text after Consul's `Request decode failed: `.
    pub(crate) fn decode(&mut self, body: &[u8]) -> Result<(), String> {
        let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
        let document = match values.next() {
            None => return Err("EOF".to_owned()),
            Some(Err(error)) if error.is_eof() && is_blank(body) => return Err("EOF".to_owned()),
            Some(Err(error)) => return Err(error.to_string()),
            Some(Ok(document)) => document,
        };
        let fields = match document {
            Value::Null => return Ok(()),
            Value::Object(fields) => fields,
            other => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go value of type structs.Session",
                    kind(&other)
                ))
            }
        };
        for name in ["ID", "Node"] {
            string(&fields, name)?;
        }
        for name in ["Checks", "NodeChecks"] {
            match field(&fields, name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        if !matches!(item, Value::String(_) | Value::Null) {
                            return Err(type_error(item, name, "string"));
                        }
                    }
                }
                Some(other) => return Err(type_error(other, name, "[]string")),
            }
        }
        match field(&fields, "ServiceChecks") {
            None | Some(Value::Null) | Some(Value::Array(_)) => {}
            Some(other) => {
                return Err(type_error(other, "ServiceChecks", "[]structs.ServiceCheck"))
            }
        }
        if let Some(name) = string(&fields, "Name")? {
            self.name = name;
        }
        if let Some(ttl) = string(&fields, "TTL")? {
            self.ttl = ttl;
        }
        if let Some(behavior) = string(&fields, "Behavior")? {
            self.behavior = behavior;
        }
        // As Session.UnmarshalJSON: a string is a Go duration, a number is
        // nanoseconds, anything else is 0; then small values are seconds.
        let lock_delay = match field(&fields, "LockDelay") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(go::parse_duration(text)?),
            // Go converts the float64 to an integer, truncating.
            Some(Value::Number(number)) => Some(number.as_f64().unwrap_or(0.0) as i64),
            Some(_) => Some(0),
        };
        if let Some(mut delay) = lock_delay {
            if delay < LOCK_DELAY_MIN_THRESHOLD {
                // Go's int64 multiplication wraps.
                delay = delay.wrapping_mul(go::SECOND);
            }
            self.lock_delay = delay;
        }
        Ok(())
    }
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// A string member: `None` when absent or null.
fn string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match field(fields, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(type_error(other, name, "string")),
    }
}

/// The member for a Go struct field: the exact name, else one that
/// matches it regardless of (ASCII) case, as encoding/json matches.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// encoding/json's `UnmarshalTypeError` text, as near as the double gets.
fn type_error(value: &Value, name: &str, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field Session.{name} of type {go_type}",
        kind(value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(body: &str) -> Result<Request, String> {
        let mut request = Request::new(Duration::from_secs(15));
        request.decode(body.as_bytes()).map(|()| request)
    }

    #[test]
    fn defaults_and_fields() {
        let defaults = decoded("null").unwrap();
        assert_eq!(defaults, Request::new(Duration::from_secs(15)));
        assert_eq!(defaults.lock_delay, 15 * go::SECOND);
        let request = decoded(
            r#"{"name":"n","ttl":"10s","BEHAVIOR":"delete","Node":"x",
                "Checks":["serfHealth"],"ServiceChecks":[{"ID":"c"}],"Other":1} trailing"#,
        )
        .unwrap();
        assert_eq!(request.name, "n");
        assert_eq!(request.ttl, "10s");
        assert_eq!(request.behavior, "delete");
        assert_eq!(request.lock_delay, 15 * go::SECOND);
    }

    #[test]
    fn lock_delay_as_consul_reads_it() {
        for (value, nanos) in [
            (r#""15s""#, 15 * go::SECOND),
            (r#""250ms""#, 250_000_000),
            (r#""0s""#, 0),
            (r#""5ns""#, 5 * go::SECOND),
            ("5", 5 * go::SECOND),
            ("0", 0),
            ("1.9", go::SECOND),
            ("2500000000", 2_500_000_000),
            ("true", 0),
            ("null", 15 * go::SECOND),
        ] {
            let request = decoded(&format!(r#"{{"LockDelay":{value}}}"#)).unwrap();
            assert_eq!(request.lock_delay, nanos, "{value}");
        }
        assert_eq!(
            decoded(r#"{"LockDelay":"5"}"#).unwrap_err(),
            r#"time: missing unit in duration "5""#
        );
    }

    #[test]
    fn errors() {
        assert_eq!(decoded("").unwrap_err(), "EOF");
        assert_eq!(decoded(" \n").unwrap_err(), "EOF");
        assert!(decoded("{").is_err());
        assert_eq!(
            decoded("[]").unwrap_err(),
            "json: cannot unmarshal array into Go value of type structs.Session"
        );
        assert_eq!(
            decoded(r#"{"TTL":10}"#).unwrap_err(),
            "json: cannot unmarshal number into Go struct field Session.TTL of type string"
        );
        assert!(decoded(r#"{"Checks":"serfHealth"}"#).is_err());
    }
}
