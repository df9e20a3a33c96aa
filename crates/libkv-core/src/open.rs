//! `open`: the store a URL names.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backends::consul::ConsulStore;
use crate::backends::etcd::EtcdStore;
use crate::backends::file::FileStore;
use crate::backends::mock::MockStore;
use crate::backends::sqlite::SqliteStore;
use crate::backends::zookeeper::ZookeeperStore;
use crate::error::{Error, Result};
use crate::options::OpenOptions;
use crate::store::Store;
use crate::url::StoreUrl;

/// The environment variable that lets `zookeeper://` open, while the ZooKeeper
/// store is unfinished (its tests set it).
pub const ZOOKEEPER_PREVIEW: &str = "LIBKV_ZOOKEEPER_PREVIEW";

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
        StoreUrl::Zookeeper { .. } => {
            if std::env::var_os(ZOOKEEPER_PREVIEW).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "the ZooKeeper store is not available yet: its locks and keys that \
                     expire are not yet safe under load (see the README's \"What is not \
                     done yet\"); use etcd, Consul or SQLite, or set {ZOOKEEPER_PREVIEW}=1 \
                     to try it"
                )));
            }
            Ok(Arc::new(ZookeeperStore::open(
                &parsed,
                &options.auth,
                options.timeout,
            )?))
        }
        StoreUrl::Sqlite { path } => {
            options.auth.only("sqlite", &[])?;
            Ok(Arc::new(SqliteStore::open(path, options.timeout)?))
        }
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
    fn zookeeper_waits_for_its_preview_variable() {
        if std::env::var_os(ZOOKEEPER_PREVIEW).is_some() {
            return;
        }
        let err = open("zookeeper://127.0.0.1:2181/p", &OpenOptions::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("not available yet"), "{err}");
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
}
