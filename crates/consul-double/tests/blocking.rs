//! Blocking queries (`?index=` and `?wait=`), as Consul answers them.

mod common;

use std::time::{Duration, Instant};

use common::{Double, Resp};
use serde_json::json;

/// Starts a GET on its own task; the answer and how long it took.
fn spawn_get(d: &Double, path: &str) -> tokio::task::JoinHandle<(Resp, Duration)> {
    let client = d.client.clone();
    let url = format!("{}{path}", d.base);
    tokio::spawn(async move {
        let started = Instant::now();
        let resp = Resp::read(client.get(url).send().await.unwrap()).await;
        (resp, started.elapsed())
    })
}

fn between(elapsed: Duration, low_ms: u64, high_ms: u64) -> bool {
    elapsed >= Duration::from_millis(low_ms) && elapsed < Duration::from_millis(high_ms)
}

#[tokio::test]
async fn a_write_releases_a_blocking_get() {
    let d = Double::plain();
    d.set("k", b"one").await;
    let index = d.modify_index("k").await;
    let pending = spawn_get(&d, &format!("/v1/kv/k?index={index}&wait=10s"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "answered before the write");
    d.set("k", b"two").await;
    let (resp, elapsed) = pending.await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.index(), index + 1);
    assert_eq!(resp.json()[0]["Value"], "dHdv");
    assert_eq!(resp.json()[0]["ModifyIndex"], index + 1);
    assert!(between(elapsed, 300, 5000), "{elapsed:?}");
}

#[tokio::test]
async fn a_blocking_get_times_out_by_wait() {
    let d = Double::plain();
    d.set("k", b"v").await;
    let index = d.modify_index("k").await;
    let started = Instant::now();
    let resp = d.get(&format!("/v1/kv/k?index={index}&wait=500ms")).await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.index(), index, "the same answer, at its index");
    assert_eq!(resp.json()[0]["Value"], "dg==");
    assert!(between(elapsed, 500, 2000), "{elapsed:?}");
    // ?raw blocks the same way.
    let started = Instant::now();
    let resp = d
        .get(&format!("/v1/kv/k?raw&index={index}&wait=200ms"))
        .await;
    assert_eq!(resp.body, b"v");
    assert!(between(started.elapsed(), 200, 2000));
}

#[tokio::test]
async fn writes_elsewhere_do_not_release_a_single_key() {
    let d = Double::plain();
    d.set("k", b"v").await;
    let index = d.modify_index("k").await;
    let pending = spawn_get(&d, &format!("/v1/kv/k?index={index}&wait=800ms"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.set("other", b"x").await;
    d.create_session(&json!({})).await;
    let (resp, elapsed) = pending.await.unwrap();
    assert_eq!(resp.index(), index, "k's ModifyIndex did not move");
    assert!(between(elapsed, 800, 3000), "{elapsed:?}");
}

#[tokio::test]
async fn an_older_index_or_zero_answers_at_once() {
    let d = Double::plain();
    d.set("k", b"v").await;
    d.set("k", b"w").await;
    let index = d.modify_index("k").await;
    for path in [
        format!("/v1/kv/k?index={}&wait=10s", index - 1),
        "/v1/kv/k?index=0&wait=10s".to_owned(),
        "/v1/kv/k?wait=10s".to_owned(),
        format!("/v1/kv/?recurse&index={}&wait=10s", index - 1),
        format!("/v1/kv/?keys&index={}&wait=10s", index - 1),
    ] {
        let started = Instant::now();
        let resp = d.get(&path).await;
        assert_eq!(resp.status, 200, "{path}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
}

#[tokio::test]
async fn a_future_index_waits_like_consul() {
    // An index above the current one (an index reset, e.g. after a restart
    // of the double) is not answered at once: as Consul, the query waits for
    // the index to exceed it or for the wait to pass.
    let d = Double::plain();
    d.set("k", b"v").await;
    let index = d.modify_index("k").await;
    let started = Instant::now();
    let resp = d
        .get(&format!("/v1/kv/k?index={}&wait=400ms", index + 1000))
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.index(), index);
    assert!(
        between(started.elapsed(), 400, 2000),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn missing_keys_and_prefixes_block_on_the_store_index() {
    let d = Double::plain();
    d.set("a/1", b"1").await;
    let index = d.store_index().await;

    // A missing key: released by any write (the store-wide index).
    let missing = spawn_get(&d, &format!("/v1/kv/nope?index={index}&wait=10s"));
    // A prefix: released by a write under it.
    let recurse = spawn_get(&d, &format!("/v1/kv/a/?recurse&index={index}&wait=10s"));
    let keys = spawn_get(&d, &format!("/v1/kv/a/?keys&index={index}&wait=10s"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!missing.is_finished() && !recurse.is_finished() && !keys.is_finished());
    d.set("a/2", b"2").await;

    let (resp, _) = missing.await.unwrap();
    assert_eq!((resp.status, resp.index()), (404, index + 1));
    let (resp, _) = recurse.await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.index(), index + 1);
    assert_eq!(resp.json().as_array().unwrap().len(), 2);
    let (resp, _) = keys.await.unwrap();
    assert_eq!(resp.json(), json!(["a/1", "a/2"]));
    assert_eq!(resp.index(), index + 1);

    // A deleted key's query comes back 404 at the delete's index.
    let index = d.modify_index("a/1").await;
    let pending = spawn_get(&d, &format!("/v1/kv/a/1?index={index}&wait=10s"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deleted = d.delete("/v1/kv/a/1").await.index();
    let (resp, _) = pending.await.unwrap();
    assert_eq!((resp.status, resp.index()), (404, deleted));
}

#[tokio::test]
async fn a_lock_release_and_a_session_destroy_release_queries() {
    let d = Double::plain();
    let s = d.create_session(&json!({"LockDelay": "0s"})).await;
    assert!(d.acquire("leader", &s, b"me").await);
    let index = d.modify_index("leader").await;
    let on_key = spawn_get(&d, &format!("/v1/kv/leader?index={index}&wait=10s"));
    let on_info = spawn_get(&d, &format!("/v1/session/info/{s}?index={index}&wait=10s"));
    let on_list = spawn_get(&d, &format!("/v1/session/list?index={index}&wait=10s"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!on_key.is_finished() && !on_info.is_finished() && !on_list.is_finished());
    d.put(&format!("/v1/session/destroy/{s}"), b"").await;

    let (resp, _) = on_key.await.unwrap();
    assert_eq!(resp.index(), index + 1);
    assert!(resp.json()[0].get("Session").is_none());
    let (resp, _) = on_info.await.unwrap();
    assert_eq!((resp.json(), resp.index()), (json!([]), index + 1));
    let (resp, _) = on_list.await.unwrap();
    assert_eq!(resp.json(), json!([]));
}

#[tokio::test]
async fn blocking_parameters_are_still_checked() {
    let d = Double::plain();
    for (path, message) in [
        ("/v1/kv/k?index=1&wait=5", "Invalid wait time"),
        ("/v1/kv/k?index=x", "Invalid index"),
        ("/v1/session/list?index=-1", "Invalid index"),
        ("/v1/session/info/x?wait=1y", "Invalid wait time"),
    ] {
        let resp = d.get(path).await;
        assert_eq!((resp.status, resp.text()), (400, message), "{path}");
    }
    // A negative wait is the default (5 minutes): released by a write.
    d.set("k", b"v").await;
    let index = d.modify_index("k").await;
    let pending = spawn_get(&d, &format!("/v1/kv/k?index={index}&wait=-1s"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished());
    d.set("k", b"w").await;
    let (resp, _) = pending.await.unwrap();
    assert_eq!(resp.index(), index + 1);
}
