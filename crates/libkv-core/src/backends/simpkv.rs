//! simpkv's file plugin tree, read only, for moving a SIMP site's data into a
//! libkv store (the `libkv` command's `simpkv:///ROOT` source; not a store Puppet
//! opens).
//!
//! simpkv keeps each key in a file `ROOT/globals/KEY` (global keys) or
//! `ROOT/environments/ENV/KEY`, holding a JSON envelope: `{"value": V, "metadata":
//! {...}}`, where a binary String is `{"value": "<base64>", "encoding": "base64",
//! "original_encoding": "ASCII-8BIT", ...}`. Here the key `/globals/KEY` or
//! `/environments/ENV/KEY` reads as the bytes libkv stores for that value: a
//! String as its text (simpkv's binary Strings too when their bytes are UTF-8
//! text, as Puppet took them), a String that is not text as a Binary, every other
//! type in libkv's envelope. libkv keeps no metadata: [`SimpkvTree::with_metadata`]
//! counts the keys whose metadata is not empty, which a copy leaves behind.
//!
//! Symbolic links are not followed: a link in the tree is not a key.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;

use crate::codec;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::op::Op;
use crate::store::{Listing, Store, Versioned};
use crate::value::Value;

/// The tree of simpkv's file plugin under a root directory.
pub struct SimpkvTree {
    root: PathBuf,
    url: String,
    /// The keys read so far whose metadata is not empty.
    with_metadata: Mutex<BTreeSet<String>>,
}

#[derive(Deserialize)]
struct Envelope {
    value: serde_json::Value,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

impl SimpkvTree {
    /// The tree at `simpkv:///ROOT` (an absolute path).
    pub fn open(url: &str) -> Result<SimpkvTree> {
        let root = url
            .strip_prefix("simpkv://")
            .filter(|r| r.starts_with('/'))
            .ok_or_else(|| Error::InvalidUrl {
                url: url.to_owned(),
                reason: "simpkv's file plugin tree is simpkv:///ROOT, with ROOT an absolute \
                         path (its root_path, like /var/simp/simpkv/file/default)"
                    .into(),
            })?;
        let root = PathBuf::from(root);
        if !root.is_dir() {
            return Err(Error::InvalidUrl {
                url: url.to_owned(),
                reason: format!("{} is not a directory", root.display()),
            });
        }
        Ok(SimpkvTree {
            url: format!("simpkv://{}", root.display()),
            root,
            with_metadata: Mutex::new(BTreeSet::new()),
        })
    }

    /// How many of the keys read so far had metadata (which libkv does not keep).
    pub fn with_metadata(&self) -> u64 {
        self.with_metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len() as u64
    }

    fn path(&self, key: &Key) -> PathBuf {
        key.components().fold(self.root.clone(), |p, c| p.join(c))
    }

    fn failed(&self, op: &'static str, key: &str, reason: impl std::fmt::Display) -> Error {
        Error::Store {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// The bytes libkv stores for the value in simpkv's envelope `raw`.
    fn value(&self, op: &'static str, key: &str, raw: &[u8]) -> Result<Vec<u8>> {
        let envelope: Envelope = serde_json::from_slice(raw).map_err(|e| {
            self.failed(
                op,
                key,
                format_args!("the file is not a simpkv value ({e})"),
            )
        })?;
        if envelope
            .metadata
            .as_ref()
            .is_some_and(|m| !(m.is_null() || m.as_object().is_some_and(|o| o.is_empty())))
        {
            self.with_metadata
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.to_owned());
        }
        let value = match (envelope.encoding.as_deref(), envelope.value) {
            (None, v) => Value::from(v),
            (Some("base64"), serde_json::Value::String(encoded)) => {
                let bytes = BASE64.decode(encoded).map_err(|e| {
                    self.failed(
                        op,
                        key,
                        format_args!("its base64 value does not decode ({e})"),
                    )
                })?;
                match String::from_utf8(bytes) {
                    Ok(text) => Value::String(text),
                    Err(e) => Value::Binary(e.into_bytes()),
                }
            }
            (Some(other), _) => {
                return Err(self.failed(
                    op,
                    key,
                    format_args!("its encoding {other:?} is not simpkv's (only base64 is)"),
                ))
            }
        };
        codec::encode(&value)
            .map(|bytes| bytes.into_owned())
            .map_err(|reason| self.failed(op, key, reason))
    }

    fn read(&self, op: &'static str, key: &Key) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.failed(op, key.as_str(), e)),
        }
        let raw = fs::read(&path).map_err(|e| self.failed(op, key.as_str(), e))?;
        self.value(op, key.as_str(), &raw).map(Some)
    }

    /// Every file below `dir` (a directory path), by its name relative to `base`.
    fn walk(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let name = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                self.walk(&entry.path(), &name, out)?;
            } else if kind.is_file() {
                out.push(name);
            }
        }
        Ok(())
    }

    fn read_only(&self, op: &'static str) -> Error {
        Error::Unsupported {
            op,
            provider: "simpkv",
        }
    }
}

impl Store for SimpkvTree {
    fn provider(&self) -> &'static str {
        "simpkv"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        self.read("get", key)
    }

    fn put(&self, _key: &Key, _value: &[u8]) -> Result<()> {
        Err(self.read_only("put"))
    }

    fn delete(&self, _key: &Key) -> Result<()> {
        Err(self.read_only("delete"))
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        Ok(fs::symlink_metadata(self.path(key)).is_ok_and(|m| m.is_file()))
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        let mut names = Vec::new();
        self.walk(&self.path(dir), "", &mut names)
            .map_err(|e| self.failed("list", dir.as_str(), e))?;
        names.retain(|rel| dir.lists(rel));
        names.sort();
        names
            .into_iter()
            .map(|rel| {
                let key = dir.join(&rel);
                let raw = fs::read(self.root.join(key.trim_start_matches('/')))
                    .map_err(|e| self.failed("list", &key, e))?;
                Ok((rel, self.value("list", &key, &raw)?))
            })
            .collect()
    }

    fn deletetree(&self, _dir: &Key) -> Result<()> {
        Err(self.read_only("deletetree"))
    }

    fn atomic_create(&self, _key: &Key, _value: &[u8]) -> Result<bool> {
        Err(self.read_only("atomic_create"))
    }

    fn atomic_get(&self, _key: &Key) -> Result<Option<Versioned>> {
        Err(self.read_only("atomic_get"))
    }

    fn atomic_put(&self, _key: &Key, _value: &[u8], _previous: u64) -> Result<bool> {
        Err(self.read_only("atomic_put"))
    }

    fn atomic_delete(&self, _key: &Key, _previous: u64) -> Result<bool> {
        Err(self.read_only("atomic_delete"))
    }

    fn atomic_list(&self, _dir: &Key) -> Result<Listing<Versioned>> {
        Err(self.read_only("atomic_list"))
    }

    fn info(&self) -> Result<Value> {
        Ok(Value::hash([
            ("provider", Value::from("simpkv")),
            ("url", Value::from(self.url.as_str())),
            ("root", Value::from(self.root.display().to_string())),
        ]))
    }

    fn supports(&self) -> &'static [Op] {
        &[
            Op::Get,
            Op::Exists,
            Op::List,
            Op::Info,
            Op::Provider,
            Op::Supports,
        ]
    }
}
