//! The `Store` trait every backend implements, and `open`, which picks one by URL.
//!
//! Stores move bytes; the codec turns values into bytes and back above them. Keys
//! arrive validated. Every method blocks the calling thread until the store has
//! answered or the store's timeout has passed; bindings release their interpreter
//! lock around calls.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::consul::ConsulStore;
use crate::error::{Error, Result};
use crate::etcd::EtcdStore;
use crate::file::FileStore;
use crate::key::Key;
use crate::mock::MockStore;
use crate::url::StoreUrl;
use crate::value::Value;

/// A stored value with the store's modification number for its key. The sequence
/// is never 0 for a present key and never reused for the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub sequence: u64,
}

/// Entries below a directory: key relative to the directory, sorted.
pub type Listing<T> = Vec<(String, T)>;

/// The operations a store implements, by their function names (`pop_error`, which
/// reports the Puppet functions' soft failures, is none of a store's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    Delete,
    Exists,
    List,
    Deletetree,
    AtomicCreate,
    AtomicGet,
    AtomicPut,
    AtomicDelete,
    AtomicList,
    EmptyValue,
    Info,
    Provider,
    Supports,
}

impl Op {
    pub const ALL: &'static [Op] = &[
        Op::Get,
        Op::Put,
        Op::Delete,
        Op::Exists,
        Op::List,
        Op::Deletetree,
        Op::AtomicCreate,
        Op::AtomicGet,
        Op::AtomicPut,
        Op::AtomicDelete,
        Op::AtomicList,
        Op::EmptyValue,
        Op::Info,
        Op::Provider,
        Op::Supports,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::List => "list",
            Op::Deletetree => "deletetree",
            Op::AtomicCreate => "atomic_create",
            Op::AtomicGet => "atomic_get",
            Op::AtomicPut => "atomic_put",
            Op::AtomicDelete => "atomic_delete",
            Op::AtomicList => "atomic_list",
            Op::EmptyValue => "empty_value",
            Op::Info => "info",
            Op::Provider => "provider",
            Op::Supports => "supports",
        }
    }

    /// Whether the operation changes the store.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Op::Put
                | Op::Delete
                | Op::Deletetree
                | Op::AtomicCreate
                | Op::AtomicPut
                | Op::AtomicDelete
        )
    }
}

pub trait Store: Send + Sync {
    /// `mock`, `file`, `legacy-simp6`, `consul` or `etcd`.
    fn provider(&self) -> &'static str;
    /// The store's URL, safe to show: it never holds a secret.
    fn url(&self) -> &str;

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>>;
    fn put(&self, key: &Key, value: &[u8]) -> Result<()>;
    /// Deletes the key; deleting an absent key is not an error.
    fn delete(&self, key: &Key) -> Result<()>;
    fn exists(&self, key: &Key) -> Result<bool>;
    /// Every key below `dir` (not `dir` itself), relative to `dir`, sorted.
    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>>;
    /// Deletes every key below `dir`.
    fn deletetree(&self, dir: &Key) -> Result<()>;

    /// Stores the value only if the key is absent; false if it was present.
    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool>;
    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>>;
    /// Stores the value only if the key's sequence is still `previous` (0: absent).
    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool>;
    /// Deletes the key only if its sequence is still `previous` (0: absent, which
    /// then succeeds without doing anything).
    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool>;
    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>>;

    /// Facts about the store: at least `provider` and `url`.
    fn info(&self) -> Result<Value>;

    /// The functions this store implements.
    fn supports(&self) -> &'static [Op] {
        Op::ALL
    }

    /// Whether a call may wait: on disk, on the network, or on a lock another
    /// process holds. A binding lets other threads of its runtime run while such a
    /// call waits (Ruby's GVL is released); a call that never waits is cheaper made
    /// without that hand-over.
    fn waits(&self) -> bool {
        true
    }
}

/// Credentials and TLS files for a store. Secrets are kept out of `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Auth(BTreeMap<String, String>);

impl Auth {
    pub const KEYS: &'static [&'static str] = &[
        "ca_file",
        "cert_file",
        "key_file",
        "username",
        "password",
        "token",
    ];
    const SECRET: &'static [&'static str] = &["password", "token"];

    /// Builds auth settings, refusing keys libkv does not know. The error names the
    /// key, never a value.
    pub fn new<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Auth> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            let k = k.into();
            if !Self::KEYS.contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "unknown auth key {k:?}; libkv knows {}",
                    Self::KEYS.join(", ")
                )));
            }
            map.insert(k, v.into());
        }
        Ok(Auth(map))
    }

    /// Auth settings as a binding received them, `None` standing for a name that is
    /// not a String or Symbol, or a value that is not a String. The error names the
    /// setting, never a value.
    pub fn from_binding(pairs: Vec<(Option<String>, Option<String>)>) -> Result<Auth> {
        let mut checked = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let Some(name) = name else {
                return Err(Error::InvalidArgument(
                    "auth keys must be Strings or Symbols".into(),
                ));
            };
            let Some(value) = value else {
                return Err(Error::InvalidArgument(format!(
                    "the auth setting {name:?} must be a String"
                )));
            };
            checked.push((name, value));
        }
        Auth::new(checked)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses settings the given store does not use, so a misspelt or misplaced
    /// setting is not silently ignored.
    pub fn only(&self, provider: &str, allowed: &[&str]) -> Result<()> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) if allowed.is_empty() => Err(Error::InvalidArgument(format!(
                "the {provider} store takes no auth settings, but {k:?} was given"
            ))),
            Some(k) => Err(Error::InvalidArgument(format!(
                "the {provider} store does not use the auth setting {k:?}; it takes {}",
                allowed.join(", ")
            ))),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            if Self::SECRET.contains(&k.as_str()) {
                m.entry(k, &"***");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How to open a store, beside its URL.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub auth: Auth,
    /// Connect and request timeout; for the file store, how long to wait for its lock.
    pub timeout: Duration,
    /// Puppet's vardir and environment, which `legacy-simp6://` is rooted in.
    pub vardir: Option<PathBuf>,
    pub environment: Option<String>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            auth: Auth::default(),
            timeout: DEFAULT_TIMEOUT,
            vardir: None,
            environment: None,
        }
    }
}

/// Checks a timeout given in seconds.
pub fn timeout_from_secs(secs: f64) -> Result<Duration> {
    if !(secs.is_finite() && secs > 0.0 && secs <= MAX_TIMEOUT.as_secs_f64()) {
        return Err(Error::InvalidArgument(format!(
            "timeout must be a number of seconds above 0 and at most {}, not {secs}",
            MAX_TIMEOUT.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Opens the store a URL names.
pub fn open(url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    let parsed = StoreUrl::parse(url)?;
    match parsed {
        StoreUrl::Mock { name } => {
            options.auth.only("mock", &[])?;
            Ok(Arc::new(MockStore::new(&name)))
        }
        StoreUrl::File { root } => {
            options.auth.only("file", &[])?;
            Ok(Arc::new(FileStore::open(root, "file", options.timeout)))
        }
        StoreUrl::LegacySimp6 => {
            options.auth.only("legacy-simp6", &[])?;
            let root = legacy_simp6_root(options)?;
            Ok(Arc::new(FileStore::open(
                root,
                "legacy-simp6",
                options.timeout,
            )))
        }
        StoreUrl::Etcd { .. } => Ok(Arc::new(EtcdStore::open(
            &parsed,
            &options.auth,
            options.timeout,
        )?)),
        StoreUrl::Consul { .. } => Ok(Arc::new(ConsulStore::open(
            &parsed,
            &options.auth,
            options.timeout,
        )?)),
    }
}

/// `<vardir>/simp/environments/<environment>/simp_autofiles`: where SIMP 6 modules
/// kept generated files.
pub fn legacy_simp6_root(options: &OpenOptions) -> Result<PathBuf> {
    let (Some(vardir), Some(env)) = (&options.vardir, &options.environment) else {
        return Err(Error::InvalidArgument(
            "legacy-simp6:// needs Puppet's vardir and environment: from Ruby, pass \
             vardir: and environment: to LibKV.open"
                .into(),
        ));
    };
    if !vardir.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "vardir must be an absolute path, not {}",
            vardir.display()
        )));
    }
    if env.is_empty() || !env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Error::InvalidArgument(format!(
            "environment {env:?} is not a Puppet environment name (A-Z a-z 0-9 _)"
        )));
    }
    Ok(vardir
        .join("simp")
        .join("environments")
        .join(env)
        .join("simp_autofiles"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_refuses_unknown_keys_and_hides_secrets() {
        let err = Auth::new([("pasword", "x")]).unwrap_err().to_string();
        assert!(err.contains("\"pasword\""), "{err}");
        let auth = Auth::new([
            ("username", "root"),
            ("password", "s3cret"),
            ("token", "t0k"),
        ])
        .unwrap();
        let dbg = format!("{auth:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("t0k"), "{dbg}");
        assert!(dbg.contains("root"), "{dbg}");
        let err = auth.only("file", &[]).unwrap_err().to_string();
        assert!(err.contains("takes no auth"), "{err}");
        assert!(!err.contains("s3cret"));
    }

    #[test]
    fn timeouts_are_checked() {
        assert_eq!(timeout_from_secs(1.5).unwrap(), Duration::from_millis(1500));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(timeout_from_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_root_layout() {
        let opts = OpenOptions {
            vardir: Some("/var/lib/puppet".into()),
            environment: Some("production".into()),
            ..OpenOptions::default()
        };
        assert_eq!(
            legacy_simp6_root(&opts).unwrap(),
            PathBuf::from("/var/lib/puppet/simp/environments/production/simp_autofiles")
        );
        let bad_env = OpenOptions {
            environment: Some("../etc".into()),
            ..opts.clone()
        };
        assert!(legacy_simp6_root(&bad_env).is_err());
        assert!(legacy_simp6_root(&OpenOptions::default()).is_err());
    }

    #[test]
    fn op_names_are_the_function_names() {
        let names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), 15);
        assert!(names.contains(&"atomic_list"));
        // pop_error is a Puppet function about soft failures, not a store's operation.
        assert!(!names.contains(&"pop_error"));
    }
}
