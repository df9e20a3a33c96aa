//! How a store is opened beside its URL: credentials and TLS files, the timeout,
//! and the Puppet settings `legacy-simp6://` is rooted in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

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

/// The timeout when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest timeout libkv takes.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

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
}
