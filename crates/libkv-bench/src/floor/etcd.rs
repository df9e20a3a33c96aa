//! The etcd floor: one `etcd_client::Client`, connected once, and every request
//! awaited in one `block_on` on a current-thread tokio runtime (see
//! `super::runtime`).

use std::hint::black_box;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};

use crate::stats::Bench;
use crate::{check, initial_counter, next_counter, Names, Result, LIST_LEN};

pub fn run(bench: &Bench, endpoints: &[String], names: &Names, value: &[u8]) -> Result {
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let mut client = Client::connect(endpoints, None).await?;
        let (key, counter, dir) = (names.key.as_str(), names.counter.as_str(), &names.dir);

        let everything_below = DeleteOptions::new().with_prefix();
        client.delete(dir.as_str(), Some(everything_below)).await?;
        for i in 0..LIST_LEN {
            client.put(names.list_key(i), value, None).await?;
        }
        client.put(key, value, None).await?;
        client
            .put(counter, initial_counter(value.len()), None)
            .await?;

        bench
            .run_async("get", async || {
                let resp = client.get(key, None).await?;
                let kv = resp.kvs().first().ok_or("the key is missing")?;
                black_box(kv.value().to_vec());
                Ok(())
            })
            .await?;
        bench
            .run_async("put", async || {
                client.put(key, value, None).await?;
                Ok(())
            })
            .await?;
        bench
            .run_async("exists", async || {
                let options = GetOptions::new().with_count_only();
                let resp = client.get(key, Some(options)).await?;
                check(resp.count() > 0, "the key is missing")
            })
            .await?;
        bench
            .run_async("list100", async || {
                let options = GetOptions::new().with_prefix();
                let resp = client.get(dir.as_str(), Some(options)).await?;
                let mut listing = Vec::with_capacity(resp.kvs().len());
                for kv in resp.kvs() {
                    let name = kv.key_str()?.strip_prefix(dir.as_str()).unwrap_or_default();
                    listing.push((name.to_owned(), kv.value().to_vec()));
                }
                check(
                    black_box(listing).len() == LIST_LEN,
                    "the directory does not hold 100 keys",
                )
            })
            .await?;
        bench
            .run_async("atomic_get_put", async || {
                let resp = client.get(counter, None).await?;
                let kv = resp.kvs().first().ok_or("the counter is missing")?;
                let next = next_counter(kv.value())?;
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        counter,
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([TxnOp::put(counter, next, None)]);
                let resp = client.txn(txn).await?;
                check(resp.succeeded(), "the counter changed meanwhile")
            })
            .await
    })
}
