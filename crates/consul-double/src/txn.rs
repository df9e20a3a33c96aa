//! `PUT /v1/txn`: the request body as Consul's decoder reads it, and the
//! KV operations the store applies (see `Store::apply_txn`).

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::{Map, Value};

/// Consul's `maxTxnOps`: the most operations one transaction may hold. It
/// was 64 before Consul 1.14 and is 128 since (hashicorp/consul#14599);
/// the double claims 1.20.
pub(crate) const MAX_TXN_OPS: usize = 128;

/// Go's `base64.StdEncoding` as encoding/json decodes a `[]byte`: padding
/// required, trailing bits not checked (`\r` and `\n` are dropped first).
const GO_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// A KV verb (Consul's `api.KVOp`), exactly as spelled in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verb {
    Set,
    Cas,
    Get,
    GetOrEmpty,
    GetTree,
    CheckIndex,
    CheckNotExists,
    Delete,
    DeleteTree,
    DeleteCas,
    /// `lock`: as `PUT ?acquire=` (Consul's `kvsLockTxn`).
    Lock,
    /// `unlock`: as `PUT ?release=` (Consul's `kvsUnlockTxn`).
    Unlock,
    /// `check-session`: fails unless the key is held by the operation's
    /// `Session` (`""`: held by none).
    CheckSession,
    /// Any other string: Consul fails the operation (`unknown KV verb`).
    Unknown(String),
}

impl Verb {
    fn parse(verb: &str) -> Verb {
        match verb {
            "set" => Verb::Set,
            "cas" => Verb::Cas,
            "get" => Verb::Get,
            "get-or-empty" => Verb::GetOrEmpty,
            "get-tree" => Verb::GetTree,
            "check-index" => Verb::CheckIndex,
            "check-not-exists" => Verb::CheckNotExists,
            "delete" => Verb::Delete,
            "delete-tree" => Verb::DeleteTree,
            "delete-cas" => Verb::DeleteCas,
            "check-session" => Verb::CheckSession,
            "lock" => Verb::Lock,
            "unlock" => Verb::Unlock,
            other => Verb::Unknown(other.to_owned()),
        }
    }

    /// Consul's `isWrite`: a transaction with one of these goes through
    /// raft; one without is a read (and takes the read options).
    pub(crate) fn is_write(&self) -> bool {
        matches!(
            self,
            Verb::Set
                | Verb::Cas
                | Verb::Delete
                | Verb::DeleteTree
                | Verb::DeleteCas
                | Verb::Lock
                | Verb::Unlock
        )
    }

    /// The ACL permission Consul checks for the verb (for messages only).
    pub(crate) fn permission(&self) -> &'static str {
        match self {
            Verb::Get
            | Verb::GetOrEmpty
            | Verb::GetTree
            | Verb::CheckIndex
            | Verb::CheckNotExists
            | Verb::CheckSession => "key:read",
            _ => "key:write",
        }
    }
}

/// One `{"KV": {...}}` operation. `Namespace` and `Partition` are read
/// (and type-checked) but not kept; `Session` is used by the session verbs
/// only (a `set` keeps the key's holder, as in Consul).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KvOp {
    pub(crate) verb: Verb,
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) flags: u64,
    pub(crate) index: u64,
    pub(crate) session: String,
}

/// One element of the request array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Kv(KvOp),
    /// An operation the double does not implement (`Node`, `Service`,
    /// `Check`, `Session`, or one with no non-null `KV` member), described
    /// for the 400 answer: "is a Node operation", "is null", ...
    Other(&'static str),
}

/// A failed operation, as in Consul's `Errors` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnError {
    pub(crate) op_index: usize,
    pub(crate) what: String,
}

/// Reads the body as Consul's `decodeBody` into `api.TxnOps` does (Go's
/// encoding/json): the first JSON value only (what follows is not read),
/// `null` is no operations, object members match field names in any case,
/// unknown members are ignored, `null` members are left at their zero
/// value, `Value` is base64. The error is the text after Consul's
/// `Failed to parse body: `.
pub(crate) fn decode(body: &[u8]) -> Result<Vec<Op>, String> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let document = match values.next() {
        None => return Err("EOF".to_owned()),
        Some(Err(error)) if error.is_eof() && is_blank(body) => return Err("EOF".to_owned()),
        Some(Err(error)) => return Err(error.to_string()),
        Some(Ok(document)) => document,
    };
    let items = match document {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(type_error(&other, "Go value of type api.TxnOps")),
    };
    items.iter().map(decode_op).collect()
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

fn decode_op(item: &Value) -> Result<Op, String> {
    let fields = match item {
        // Consul would dereference a nil *TxnOp here.
        Value::Null => return Ok(Op::Other("is null")),
        Value::Object(fields) => fields,
        other => return Err(type_error(other, "Go value of type api.TxnOp")),
    };
    // `Session` is not a member of Consul's api.TxnOp (so Consul would drop
    // such an operation); the double refuses it like the other kinds.
    for (kind, described) in [
        ("Node", "is a Node operation"),
        ("Service", "is a Service operation"),
        ("Check", "is a Check operation"),
        ("Session", "is a Session operation"),
    ] {
        if field(fields, kind).is_some_and(|value| !value.is_null()) {
            return Ok(Op::Other(described));
        }
    }
    let kv = match field(fields, "KV") {
        None | Some(Value::Null) => return Ok(Op::Other("has no KV member")),
        Some(Value::Object(kv)) => kv,
        Some(other) => {
            return Err(type_error(
                other,
                "Go struct field TxnOp.KV of type api.KVTxnOp",
            ))
        }
    };
    let string = |name: &str| -> Result<String, String> {
        match field(kv, name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(type_error(other, &go_field(name, "string"))),
        }
    };
    let uint = |name: &str| -> Result<u64, String> {
        match field(kv, name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                format!(
                    "json: cannot unmarshal number {n} into {}",
                    go_field(name, "uint64")
                )
            }),
            Some(other) => Err(type_error(other, &go_field(name, "uint64"))),
        }
    };
    let value = match field(kv, "Value") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => {
            let cleaned: Vec<u8> = s.bytes().filter(|&b| b != b'\r' && b != b'\n').collect();
            GO_BASE64.decode(&cleaned).map_err(|error| {
                let at = match error {
                    base64::DecodeError::InvalidByte(at, _)
                    | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                    _ => cleaned.len(),
                };
                format!("illegal base64 data at input byte {at}")
            })?
        }
        Some(other) => return Err(type_error(other, &go_field("Value", "[]uint8"))),
    };
    // Type-checked like Consul's decoder, then not used.
    string("Namespace")?;
    string("Partition")?;
    Ok(Op::Kv(KvOp {
        verb: Verb::parse(&string("Verb")?),
        key: string("Key")?,
        value,
        flags: uint("Flags")?,
        index: uint("Index")?,
        session: string("Session")?,
    }))
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

fn go_field(name: &str, go_type: &str) -> String {
    format!("Go struct field KVTxnOp.KV.{name} of type {go_type}")
}

/// encoding/json's `UnmarshalTypeError` text.
fn type_error(value: &Value, target: &str) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    format!("json: cannot unmarshal {kind} into {target}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(verb: Verb, key: &str) -> KvOp {
        KvOp {
            verb,
            key: key.to_owned(),
            value: Vec::new(),
            flags: 0,
            index: 0,
            session: String::new(),
        }
    }

    #[test]
    fn decodes_kv_operations_like_go() {
        let ops = decode(
            br#"[{"KV":{"Verb":"set","Key":"a","Value":"YmFy","Flags":7,"Session":"s"}},
                 {"kv":{"verb":"check-index","KEY":"b","index":12,"Other":[1]}},
                 {"KV":{"Verb":"delete","Key":"c","Value":null,"Flags":null}}]
                 trailing bytes are not read"#,
        )
        .unwrap();
        let mut set = kv(Verb::Set, "a");
        set.value = b"bar".to_vec();
        set.flags = 7;
        set.session = "s".to_owned();
        let mut check = kv(Verb::CheckIndex, "b");
        check.index = 12;
        assert_eq!(
            ops,
            [Op::Kv(set), Op::Kv(check), Op::Kv(kv(Verb::Delete, "c"))]
        );
        assert_eq!(decode(b"null").unwrap(), []);
        assert_eq!(decode(b" [] ").unwrap(), []);
        // Go's decoder drops newlines in base64 and ignores trailing bits.
        let ops = decode(br#"[{"KV":{"Verb":"set","Key":"k","Value":"YW\nJj\r\n"}}]"#).unwrap();
        assert!(matches!(&ops[0], Op::Kv(op) if op.value == b"abc"));
        let ops = decode(br#"[{"KV":{"Verb":"set","Key":"k","Value":"YR=="}}]"#).unwrap();
        assert!(matches!(&ops[0], Op::Kv(op) if op.value == b"a"));
    }

    #[test]
    fn other_kinds_are_told_apart() {
        let ops = decode(
            br#"[{"Node":{"Verb":"get"}},{"Service":{}},{"check":{}},{"Session":{}},
                 {},{"KV":null},null,{"KV":{"Verb":"get","Key":"k"},"Node":null}]"#,
        )
        .unwrap();
        assert_eq!(
            ops,
            [
                Op::Other("is a Node operation"),
                Op::Other("is a Service operation"),
                Op::Other("is a Check operation"),
                Op::Other("is a Session operation"),
                Op::Other("has no KV member"),
                Op::Other("has no KV member"),
                Op::Other("is null"),
                Op::Kv(kv(Verb::Get, "k")),
            ]
        );
    }

    #[test]
    fn decode_errors_read_like_go() {
        assert_eq!(decode(b"").unwrap_err(), "EOF");
        assert_eq!(decode(b"  \n").unwrap_err(), "EOF");
        assert!(decode(b"[{").is_err());
        assert!(decode(b"{nope").is_err());
        assert_eq!(
            decode(br#"{"KV":{}}"#).unwrap_err(),
            "json: cannot unmarshal object into Go value of type api.TxnOps"
        );
        assert_eq!(
            decode(b"[1]").unwrap_err(),
            "json: cannot unmarshal number into Go value of type api.TxnOp"
        );
        assert_eq!(
            decode(br#"[{"KV":{"Verb":"set","Key":"k","Flags":"1"}}]"#).unwrap_err(),
            "json: cannot unmarshal string into Go struct field KVTxnOp.KV.Flags of type uint64"
        );
        assert_eq!(
            decode(br#"[{"KV":{"Verb":"cas","Key":"k","Index":-1}}]"#).unwrap_err(),
            "json: cannot unmarshal number -1 into Go struct field KVTxnOp.KV.Index of type uint64"
        );
        assert_eq!(
            decode(br#"[{"KV":{"Verb":"set","Key":5}}]"#).unwrap_err(),
            "json: cannot unmarshal number into Go struct field KVTxnOp.KV.Key of type string"
        );
        assert_eq!(
            decode(br#"[{"KV":{"Verb":"set","Key":"k","Value":"a!=="}}]"#).unwrap_err(),
            "illegal base64 data at input byte 1"
        );
        assert!(decode(br#"[{"KV":{"Verb":"set","Key":"k","Value":"YQ"}}]"#).is_err());
    }

    #[test]
    fn verbs() {
        for (name, write) in [
            ("set", true),
            ("cas", true),
            ("delete", true),
            ("delete-tree", true),
            ("delete-cas", true),
            ("lock", true),
            ("unlock", true),
            ("get", false),
            ("get-or-empty", false),
            ("get-tree", false),
            ("check-index", false),
            ("check-not-exists", false),
            ("check-session", false),
            ("SET", false),
        ] {
            assert_eq!(Verb::parse(name).is_write(), write, "{name}");
        }
        assert_eq!(Verb::parse("SET"), Verb::Unknown("SET".to_owned()));
        assert_eq!(Verb::parse("get-tree").permission(), "key:read");
        assert_eq!(Verb::parse("check-session").permission(), "key:read");
        assert_eq!(Verb::parse("lock").permission(), "key:write");
        assert_eq!(Verb::parse("delete-tree").permission(), "key:write");
    }
}
