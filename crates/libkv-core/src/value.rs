//! The values libkv stores: Puppet's data types.

/// Arrays and Hashes may nest this deep; deeper values are refused on put.
pub const MAX_DEPTH: usize = 100;

/// A Puppet data value. Hashes keep their order and may have keys of any type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Undef,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Binary(Vec<u8>),
    Array(Vec<Value>),
    Hash(Vec<(Value, Value)>),
}

impl Value {
    /// The Puppet name of this value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Undef => "Undef",
            Value::Bool(_) => "Boolean",
            Value::Int(_) => "Integer",
            Value::Float(_) => "Float",
            Value::String(_) => "String",
            Value::Binary(_) => "Binary",
            Value::Array(_) => "Array",
            Value::Hash(_) => "Hash",
        }
    }

    /// A Hash with String keys, as built for results such as `info()`.
    pub fn hash<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Hash(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::String(k.into()), v))
                .collect(),
        )
    }
}

/// Plain JSON as the Puppet value it reads as: objects are Hashes with String
/// keys, a number is an Integer when it is one within 64 bits, else a Float.
impl From<serde_json::Value> for Value {
    fn from(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Undef,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => {
                Value::Array(items.into_iter().map(Value::from).collect())
            }
            serde_json::Value::Object(pairs) => Value::Hash(
                pairs
                    .into_iter()
                    .map(|(k, v)| (Value::String(k), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// Why a binding cannot turn a value of its language into a [`Value`] to store.
/// Both bindings give these reasons, in these words; they become the reason of an
/// [`Error::InvalidValue`](crate::Error::InvalidValue).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("an Integer outside the 64-bit range Puppet supports cannot be stored")]
    IntegerRange,
    #[error("the Float {0} cannot be stored; only finite numbers can")]
    NonFinite(f64),
    #[error(
        "it nests Arrays and Hashes more than {} levels deep (or contains itself)",
        MAX_DEPTH
    )]
    TooDeep,
    #[error("a String is not valid UTF-8; pass bytes as a binary String (String#b)")]
    NotUtf8,
    /// A String in another encoding that has no UTF-8 form; holds why.
    #[error(
        "a String could not be converted to UTF-8 ({0}); pass bytes as a binary String (String#b)"
    )]
    NotConvertible(String),
    /// A value of a class libkv does not store; holds the class name.
    #[error(
        "a value of class {0} cannot be stored; libkv stores nil, true, false, Integer, Float, \
         String, binary String, Symbol, Array and Hash"
    )]
    Class(String),
    /// With `serialize` false, a value that is not a String.
    #[error("with serialize false the value must be a String (its string form)")]
    NotRaw,
}
