//! The ZooKeeper floor: one `zookeeper_client::Client` (one session, one
//! connection), connected once, and every request awaited in one `block_on` on a
//! current-thread tokio runtime (see `super::runtime`), which also drives the
//! client's session task. A key is a znode holding the value; the listed
//! directory is a znode whose children are the 100 keys.
//!
//! Reads are linearizable, as libkv's will be: each is a `sync` of the path and
//! then the read, both requests created (and so sent, in that order: the client
//! sends a request when it is created) before either is awaited, so that they
//! cost one round trip and the server answers the read only once the sync is
//! through. That holds for `get`, `exists`, `list100` and the read of
//! `atomic_get_put`. The plain `getData` without the sync is measured too, as
//! the extra operation `get_nosync` (floor only: it is what a sync costs).
//!
//! - `get`: `sync` + `getData`;
//! - `put`: `setData` with no version (a create if the node is absent; never in
//!   the timed loop, where it exists);
//! - `exists`: `sync` + `exists` (`check_stat`);
//! - `list100`: `sync` + `getChildren` of the directory, then one multi read
//!   (`MultiReader`, ZooKeeper's `multiRead`) of the `getData` of every child:
//!   two round trips, the fewest a listing of names and values takes;
//! - `atomic_get_put`: `sync` + `getData` of the counter, then `setData` with the
//!   version read (failing on `BadVersion`).

use std::hint::black_box;

use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, MultiReadResult};

use crate::stats::Bench;
use crate::{check, initial_counter, next_counter, Names, Result, LIST_LEN};

/// Deletes `path` and everything below it, if it exists: the nodes found by
/// walking the tree, deepest first.
async fn delete_tree(client: &Client, path: &str) -> Result {
    let mut nodes = vec![path.to_owned()];
    let mut i = 0;
    while i < nodes.len() {
        match client.list_children(&nodes[i]).await {
            Ok(children) => {
                let parent = nodes[i].clone();
                nodes.extend(children.into_iter().map(|c| format!("{parent}/{c}")));
            }
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
        i += 1;
    }
    for node in nodes.iter().rev() {
        match client.delete(node, None).await {
            Ok(()) | Err(ZkError::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `setData`, or `create` when the node is absent.
pub async fn put(client: &Client, path: &str, value: &[u8]) -> Result {
    match client.set_data(path, value, None).await {
        Ok(_) => Ok(()),
        Err(ZkError::NoNode) => {
            let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
            match client.create(path, value, &options).await {
                Ok(_) => Ok(()),
                // Created meanwhile by someone else: set it after all.
                Err(ZkError::NodeExists) => {
                    Ok(client.set_data(path, value, None).await.map(drop)?)
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// `endpoints` as `HOST:PORT`; `base` the floor's path, `PREFIX/floor` (no
/// trailing slash).
pub fn run(bench: &Bench, endpoints: &[String], base: &str, value: &[u8]) -> Result {
    let names = Names::under(&format!("{base}/"));
    let (key, counter) = (names.key.as_str(), names.counter.as_str());
    // A znode path has no trailing slash; the listing's names are the children.
    let dir = names.dir.trim_end_matches('/');
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let client = Client::connect(&endpoints.join(",")).await?;

        delete_tree(&client, base).await?;
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client.mkdir(dir, &options).await?;
        for i in 0..LIST_LEN {
            put(&client, &names.list_key(i), value).await?;
        }
        put(&client, key, value).await?;
        put(&client, counter, &initial_counter(value.len())).await?;

        bench
            .run_async("get", async || {
                let synced = client.sync(key);
                let read = client.get_data(key);
                synced.await?;
                let (data, _) = read.await?;
                black_box(data);
                Ok(())
            })
            .await?;
        bench
            .run_async("get_nosync", async || {
                let (data, _) = client.get_data(key).await?;
                black_box(data);
                Ok(())
            })
            .await?;
        bench
            .run_async("put", async || put(&client, key, value).await)
            .await?;
        bench
            .run_async("exists", async || {
                let synced = client.sync(key);
                let stat = client.check_stat(key);
                synced.await?;
                check(stat.await?.is_some(), "the key is missing")
            })
            .await?;
        bench
            .run_async("list100", async || {
                let synced = client.sync(dir);
                let children = client.list_children(dir);
                synced.await?;
                let children = children.await?;
                let mut reader = client.new_multi_reader();
                for child in &children {
                    reader.add_get_data(&format!("{dir}/{child}"))?;
                }
                let results = reader.commit().await?;
                let mut listing = Vec::with_capacity(results.len());
                for (name, result) in children.into_iter().zip(results) {
                    match result {
                        MultiReadResult::Data { data, .. } => listing.push((name, data)),
                        // Deleted between the two reads: not listed.
                        MultiReadResult::Error {
                            err: ZkError::NoNode,
                        } => {}
                        MultiReadResult::Error { err } => return Err(err.into()),
                        other => return Err(format!("unexpected answer {other:?}").into()),
                    }
                }
                check(
                    black_box(listing).len() == LIST_LEN,
                    "the directory does not hold 100 keys",
                )
            })
            .await?;
        bench
            .run_async("atomic_get_put", async || {
                let synced = client.sync(counter);
                let read = client.get_data(counter);
                synced.await?;
                let (data, stat) = read.await?;
                let next = next_counter(&data)?;
                match client.set_data(counter, &next, Some(stat.version)).await {
                    Ok(_) => Ok(()),
                    Err(ZkError::BadVersion) => Err("the counter changed meanwhile".into()),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    })
}
