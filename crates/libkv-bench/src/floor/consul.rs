//! The Consul floor: one `reqwest::Client` (plain HTTP), built once, and every
//! request awaited in one `block_on` on a current-thread tokio runtime (see
//! `super::runtime`). URLs are formatted once, outside the timed loops.

use std::hint::black_box;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde::Deserialize;

use crate::stats::Bench;
use crate::{check, initial_counter, next_counter, Names, Result, LIST_LEN};

/// One entry of Consul's JSON answers.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    key: String,
    value: Option<String>,
    modify_index: u64,
}

impl KvPair {
    fn decoded(&self) -> Result<Vec<u8>> {
        Ok(BASE64.decode(self.value.as_deref().unwrap_or_default())?)
    }
}

pub fn run(bench: &Bench, base: &str, names: &Names, value: &[u8]) -> Result {
    // reqwest built with rustls-no-provider panics when it makes a client without
    // a crypto provider, even one that only speaks plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kv = |key: &str| format!("{base}/v1/kv/{key}");
    let key_url = kv(&names.key);
    let get_url = format!("{key_url}?raw&consistent");
    let exists_url = format!("{key_url}?keys&separator=/&consistent");
    let list_url = format!("{}?recurse&consistent", kv(&names.dir));
    let counter_url = kv(&names.counter);
    let counter_get_url = format!("{counter_url}?consistent");

    let runtime = super::runtime()?;
    runtime.block_on(async {
        let client = Client::builder().no_proxy().build()?;
        let put = async |url: &str, body: Vec<u8>| -> Result<bool> {
            let resp = client.put(url).body(body).send().await?;
            Ok(resp.error_for_status()?.bytes().await?.trim_ascii() == b"true")
        };

        let delete_url = format!("{}?recurse", kv(&names.dir));
        client
            .delete(&delete_url)
            .send()
            .await?
            .error_for_status()?;
        for i in 0..LIST_LEN {
            check(
                put(&kv(&names.list_key(i)), value.to_vec()).await?,
                "cannot write",
            )?;
        }
        check(put(&key_url, value.to_vec()).await?, "cannot write")?;
        let zero = initial_counter(value.len());
        check(put(&counter_url, zero).await?, "cannot write")?;

        bench
            .run_async("get", async || {
                let resp = client.get(&get_url).send().await?.error_for_status()?;
                black_box(resp.bytes().await?);
                Ok(())
            })
            .await?;
        bench
            .run_async("put", async || {
                check(
                    put(&key_url, value.to_vec()).await?,
                    "Consul did not store it",
                )
            })
            .await?;
        bench
            .run_async("exists", async || {
                let resp = client.get(&exists_url).send().await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Err("the key is missing".into());
                }
                let body = resp.error_for_status()?.bytes().await?;
                let keys: Vec<String> = serde_json::from_slice(&body)?;
                check(keys.contains(&names.key), "the key is missing")
            })
            .await?;
        bench
            .run_async("list100", async || {
                let resp = client.get(&list_url).send().await?.error_for_status()?;
                let pairs: Vec<KvPair> = serde_json::from_slice(&resp.bytes().await?)?;
                let mut listing = Vec::with_capacity(pairs.len());
                for pair in &pairs {
                    let name = pair.key.strip_prefix(&names.dir).unwrap_or_default();
                    listing.push((name.to_owned(), pair.decoded()?));
                }
                check(
                    black_box(listing).len() == LIST_LEN,
                    "the directory does not hold 100 keys",
                )
            })
            .await?;
        bench
            .run_async("atomic_get_put", async || {
                let resp = client.get(&counter_get_url).send().await?;
                let pairs: Vec<KvPair> =
                    serde_json::from_slice(&resp.error_for_status()?.bytes().await?)?;
                let pair = pairs.first().ok_or("the counter is missing")?;
                let next = next_counter(&pair.decoded()?)?;
                let cas_url = format!("{counter_url}?cas={}", pair.modify_index);
                check(put(&cas_url, next).await?, "the counter changed meanwhile")
            })
            .await
    })
}
