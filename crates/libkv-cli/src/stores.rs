//! The stores the command names: their URLs, with credentials from a file or
//! the environment, never from the command line.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use libkv_core::backends::simpkv::SimpkvTree;
use libkv_core::{open, timeout_from_secs, Auth, Error, OpenOptions, Store};
use yaml_rust2::{Yaml, YamlLoader};

use crate::cli::Global;

/// Which side of a copy a store is: its credentials' file option and variables.
#[derive(Clone, Copy)]
pub enum Side {
    /// The only store of a command, or the source of cp and diff.
    From,
    /// The destination of cp and diff.
    To,
}

impl Side {
    fn variable_prefix(self) -> &'static str {
        match self {
            Side::From => "LIBKV_",
            Side::To => "LIBKV_TO_",
        }
    }
}

/// An open store, and simpkv's tree when that is what the URL names (to tell
/// what it held that a copy leaves behind).
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub simpkv: Option<Arc<SimpkvTree>>,
}

/// Opens `url` with the credentials of `side`.
pub fn open_store(url: &str, side: Side, global: &Global) -> Result<Opened, Error> {
    if url.starts_with("simpkv:") {
        let tree = Arc::new(SimpkvTree::open(url)?);
        return Ok(Opened {
            store: tree.clone(),
            simpkv: Some(tree),
        });
    }
    let file = match side {
        Side::From => global.auth_file.as_deref(),
        Side::To => global.to_auth_file.as_deref(),
    };
    let options = OpenOptions {
        auth: auth(file, side)?,
        timeout: timeout_from_secs(global.timeout)?,
        vardir: global.vardir.clone(),
        environment: Some(global.environment.clone()),
    };
    if url.starts_with("legacy-simp6:") && global.vardir.is_none() {
        return Err(Error::InvalidArgument(
            "legacy-simp6:// needs --vardir: the Puppet server's vardir, which \
             `puppet config print vardir --section server` prints"
                .into(),
        ));
    }
    Ok(Opened {
        store: open(url, &options)?,
        simpkv: None,
    })
}

/// The credentials of `side`: its auth file's settings, then its variables
/// (which win).
fn auth(file: Option<&Path>, side: Side) -> Result<Auth, Error> {
    let mut settings = BTreeMap::new();
    if let Some(path) = file {
        settings.extend(read_auth_file(path)?);
    }
    for name in Auth::KEYS {
        let variable = format!("{}{}", side.variable_prefix(), name.to_uppercase());
        if let Ok(value) = std::env::var(&variable) {
            settings.insert((*name).to_owned(), value);
        }
    }
    Auth::new(settings)
}

/// The settings of a YAML auth file: a mapping of names to strings. Its contents
/// never appear in a message.
fn read_auth_file(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let bad = |reason: &str| {
        Error::InvalidArgument(format!(
            "the auth file {}: {reason}; it holds a YAML mapping like `username: puppet` and \
             `password: ...` (settings: {})",
            path.display(),
            Auth::KEYS.join(", ")
        ))
    };
    let text = fs::read_to_string(path).map_err(|e| bad(&format!("cannot read it: {e}")))?;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "libkv: warning: the auth file {} can be read by others (mode {:o}): chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    let docs = YamlLoader::load_from_str(&text).map_err(|_| bad("it is not YAML"))?;
    let mut settings = BTreeMap::new();
    match docs.first() {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Hash(pairs)) => {
            for (k, v) in pairs {
                let Yaml::String(name) = k else {
                    return Err(bad("a name in it is not a string"));
                };
                let value = match v {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    _ => return Err(bad(&format!("the value of {name} is not a string"))),
                };
                settings.insert(name.clone(), value);
            }
        }
        Some(_) => return Err(bad("it is not a mapping")),
    }
    Ok(settings)
}
