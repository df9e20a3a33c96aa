//! The stores, one module each: `mock://`, `file://` and `legacy-simp6://`,
//! `etcd://`, `consul://`, `zookeeper://`, `sqlite://`. A new store is a module here, a `StoreUrl` form in
//! `url`, and an arm in `open`. `simpkv` reads simpkv's file plugin tree for the
//! `libkv` command, which opens it itself.

pub mod consul;
pub mod etcd;
mod expiry;
pub mod file;
mod file_watch;
pub mod mock;
pub mod simpkv;
pub mod sqlite;
pub mod zookeeper;
