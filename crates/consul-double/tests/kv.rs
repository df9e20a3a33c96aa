//! The KV endpoint over HTTP, as a Consul client sees it.

mod common;

use std::time::{Duration, Instant};

use common::{raw, Double, RawConn};
use consul_double::Config;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn absent_key_is_404_with_empty_body_and_consul_headers() {
    let d = Double::plain();
    let resp = d.get("/v1/kv/missing").await;
    assert_eq!(resp.status, 404);
    assert!(resp.body.is_empty(), "{:?}", resp.text());
    assert_eq!(resp.index(), 10, "a fresh store's index starts at 10");
    assert_eq!(resp.header("x-consul-knownleader"), "true");
    assert_eq!(resp.header("x-consul-lastcontact"), "0");
    for path in [
        "/v1/kv/missing?raw",
        "/v1/kv/missing?recurse",
        "/v1/kv/missing?keys",
    ] {
        let resp = d.get(path).await;
        assert_eq!(resp.status, 404, "{path}");
        assert!(resp.body.is_empty(), "{path}");
        assert_eq!(resp.index(), 10, "{path}");
    }
}

#[tokio::test]
async fn put_then_get_gives_consul_json() {
    let d = Double::plain();
    let resp = d.put("/v1/kv/foo", b"bar").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(resp.text(), "true", "no newline after true");
    assert_eq!(resp.index(), 11);

    let resp = d.get("/v1/kv/foo").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(
        resp.text(),
        r#"[{"LockIndex":0,"Key":"foo","Flags":0,"Value":"YmFy","CreateIndex":11,"ModifyIndex":11}]"#
    );
    assert_eq!(
        resp.index(),
        11,
        "a present key's X-Consul-Index is its ModifyIndex"
    );

    // Another key moves the store index but not foo's ModifyIndex.
    d.set("other", b"x").await;
    let resp = d.get("/v1/kv/foo").await;
    assert_eq!(resp.index(), 11);
    assert_eq!(d.get("/v1/kv/missing").await.index(), 12);

    // Overwriting keeps CreateIndex and moves ModifyIndex.
    d.set("foo", b"baz").await;
    let entry = &d.get("/v1/kv/foo").await.json()[0];
    assert_eq!(entry["CreateIndex"], 11);
    assert_eq!(entry["ModifyIndex"], 13);
    assert_eq!(entry["Value"], "YmF6");
}

#[tokio::test]
async fn empty_value_is_null_and_raw_is_empty() {
    let d = Double::plain();
    d.set("empty", b"").await;
    let resp = d.get("/v1/kv/empty").await;
    assert_eq!(resp.json()[0]["Value"], serde_json::Value::Null);
    assert!(resp.text().contains(r#""Value":null"#));
    let resp = d.get("/v1/kv/empty?raw").await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
}

#[tokio::test]
async fn raw_gives_the_bytes() {
    let d = Double::plain();
    let bytes: Vec<u8> = (0..=255u8).chain([0, 10, 13]).collect();
    d.set("bin", &bytes).await;
    let resp = d.get("/v1/kv/bin?raw").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, bytes);
    // Presence is what counts: ?raw=false is raw too, as in Consul.
    assert_eq!(d.get("/v1/kv/bin?raw=false").await.body, bytes);
    // And the JSON form is base64 of the same bytes.
    use base64::Engine as _;
    let json = d.get("/v1/kv/bin").await.json();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(json[0]["Value"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, bytes);
    assert_eq!(d.get("/v1/kv/nope?raw").await.status, 404);
}

#[tokio::test]
async fn flags_are_set_and_reset_by_a_put_without_them() {
    let d = Double::plain();
    assert_eq!(d.put("/v1/kv/f?flags=42", b"v").await.text(), "true");
    assert_eq!(d.get("/v1/kv/f").await.json()[0]["Flags"], 42);
    let max = u64::MAX;
    assert_eq!(
        d.put(&format!("/v1/kv/f?flags={max}"), b"v").await.text(),
        "true"
    );
    assert_eq!(d.get("/v1/kv/f").await.json()[0]["Flags"], max);
    d.set("f", b"v").await;
    assert_eq!(d.get("/v1/kv/f").await.json()[0]["Flags"], 0);
    for bad in ["-1", "x", "", "1.5"] {
        let resp = d.put(&format!("/v1/kv/f?flags={bad}"), b"v").await;
        assert_eq!(resp.status, 400, "flags={bad}");
    }
}

#[tokio::test]
async fn cas_put_creates_updates_and_conflicts() {
    let d = Double::plain();
    // cas=0 on an absent key with a non-zero ModifyIndex: no.
    assert_eq!(d.put("/v1/kv/c?cas=5", b"v").await.text(), "false");
    assert_eq!(d.get("/v1/kv/c").await.status, 404);
    // cas=0: create only.
    let resp = d.put("/v1/kv/c?cas=0", b"one").await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
    let index = d.get("/v1/kv/c").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    let resp = d.put("/v1/kv/c?cas=0", b"two").await;
    assert_eq!((resp.status, resp.text()), (200, "false"));
    assert_eq!(resp.index(), index, "a failed CAS writes nothing");
    // A stale index: no.
    let resp = d.put(&format!("/v1/kv/c?cas={}", index - 1), b"two").await;
    assert_eq!(resp.text(), "false");
    assert_eq!(d.get("/v1/kv/c?raw").await.body, b"one");
    // The current index: yes, and the index moves.
    let resp = d.put(&format!("/v1/kv/c?cas={index}"), b"two").await;
    assert_eq!(resp.text(), "true");
    let entry = d.get("/v1/kv/c").await.json()[0].clone();
    assert_eq!(entry["ModifyIndex"], index + 1);
    assert_eq!(entry["Value"], "dHdv");
    // The old index no longer works.
    assert_eq!(
        d.put(&format!("/v1/kv/c?cas={index}"), b"three")
            .await
            .text(),
        "false"
    );
    assert_eq!(d.put("/v1/kv/c?cas=x", b"v").await.status, 400);
}

#[tokio::test]
async fn delete_plain_and_cas() {
    let d = Double::plain();
    d.set("d", b"v").await;
    let before = d.get("/v1/kv/d").await.index();

    // Plain delete of an absent key: true, and nothing moves.
    let resp = d.delete("/v1/kv/absent").await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(resp.index(), before);

    // cas=0 never deletes a present key; a wrong index neither.
    assert_eq!(d.delete("/v1/kv/d?cas=0").await.text(), "false");
    assert_eq!(
        d.delete(&format!("/v1/kv/d?cas={}", before + 7))
            .await
            .text(),
        "false"
    );
    assert_eq!(d.get("/v1/kv/d").await.status, 200);
    assert_eq!(d.get("/v1/kv/missing").await.index(), before);
    // The right index deletes.
    let resp = d.delete(&format!("/v1/kv/d?cas={before}")).await;
    assert_eq!(resp.text(), "true");
    assert_eq!(resp.index(), before + 1);
    assert_eq!(d.get("/v1/kv/d").await.status, 404);
    // CAS delete of an absent key: true, as Consul's kvsDeleteCASTxn.
    assert_eq!(d.delete("/v1/kv/d?cas=3").await.text(), "true");
    assert_eq!(d.delete("/v1/kv/d?cas=x").await.status, 400);

    // Plain delete of a present key.
    d.set("e", b"v").await;
    let index = d.get("/v1/kv/e").await.index();
    let resp = d.delete("/v1/kv/e").await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
    assert_eq!(resp.index(), index + 1);
    assert_eq!(d.get("/v1/kv/e").await.status, 404);
}

async fn seeded() -> Double {
    let d = Double::plain();
    for key in ["b", "a/b/c", "ab", "a", "a/b", "a/c/", "a-z"] {
        d.set(key, key.as_bytes()).await;
    }
    d
}

fn keys_of(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["Key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn recurse_is_a_plain_string_prefix_sorted() {
    let d = seeded().await;
    let resp = d.get("/v1/kv/a/?recurse").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(keys_of(&resp.json()), ["a/b", "a/b/c", "a/c/"]);
    assert_eq!(
        keys_of(&d.get("/v1/kv/a?recurse").await.json()),
        ["a", "a-z", "a/b", "a/b/c", "a/c/", "ab"]
    );
    assert_eq!(
        keys_of(&d.get("/v1/kv/?recurse").await.json()),
        ["a", "a-z", "a/b", "a/b/c", "a/c/", "ab", "b"]
    );
    // Entries are full entries with values.
    let all = d.get("/v1/kv/a/b?recurse").await.json();
    assert_eq!(all[1]["Key"], "a/b/c");
    assert_eq!(all[1]["Value"], "YS9iL2M=");
    assert_eq!(all[1]["LockIndex"], 0);
    // ?raw does not apply to a recursive read.
    assert_eq!(
        keys_of(&d.get("/v1/kv/a/?recurse&raw").await.json()).len(),
        3
    );
    let resp = d.get("/v1/kv/zz?recurse").await;
    assert_eq!(resp.status, 404);
    assert!(resp.body.is_empty());
}

#[tokio::test]
async fn keys_and_separator_folders() {
    let d = seeded().await;
    let resp = d.get("/v1/kv/?keys").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(
        resp.json(),
        json!(["a", "a-z", "a/b", "a/b/c", "a/c/", "ab", "b"])
    );
    assert_eq!(
        d.get("/v1/kv/?keys&separator=/").await.json(),
        json!(["a", "a-z", "a/", "ab", "b"])
    );
    assert_eq!(
        d.get("/v1/kv/a/?keys&separator=/").await.json(),
        json!(["a/b", "a/b/", "a/c/"])
    );
    assert_eq!(
        d.get("/v1/kv/a/b?keys&separator=/").await.json(),
        json!(["a/b", "a/b/"])
    );
    // Consul's historic spelling works too; %2F is the same separator.
    assert_eq!(
        d.get("/v1/kv/a/?keys&seperator=%2F").await.json(),
        json!(["a/b", "a/b/", "a/c/"])
    );
    assert_eq!(
        d.get("/v1/kv/a?keys").await.json(),
        json!(["a", "a-z", "a/b", "a/b/c", "a/c/", "ab"])
    );
    let resp = d.get("/v1/kv/zz?keys&separator=/").await;
    assert_eq!(resp.status, 404);
    assert!(resp.body.is_empty());
}

#[tokio::test]
async fn recursive_delete_takes_the_prefix_only() {
    let d = seeded().await;
    let index = d.get("/v1/kv/missing").await.index();
    let resp = d.delete("/v1/kv/a/?recurse").await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
    assert_eq!(resp.index(), index + 1, "one write for the whole tree");
    assert_eq!(
        d.get("/v1/kv/?keys").await.json(),
        json!(["a", "a-z", "ab", "b"])
    );
    // Nothing under the prefix: true, index unchanged.
    let resp = d.delete("/v1/kv/zz?recurse").await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
    assert_eq!(resp.index(), index + 1);
    // The empty prefix deletes everything.
    assert_eq!(d.delete("/v1/kv/?recurse").await.text(), "true");
    assert_eq!(d.get("/v1/kv/?recurse").await.status, 404);
}

#[tokio::test]
async fn value_limit_is_512_kib() {
    let d = Double::plain();
    let limit = consul_double::MAX_VALUE_SIZE;
    assert_eq!(limit, 524_288);
    d.set("big", &vec![b'x'; limit]).await;
    assert_eq!(d.get("/v1/kv/big?raw").await.body.len(), limit);
    let index = d.get("/v1/kv/missing").await.index();
    let resp = d.put("/v1/kv/big", &vec![b'y'; limit + 1]).await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.text(), "Value exceeds 524288 byte limit");
    assert_eq!(resp.index(), index, "nothing written");
    assert_eq!(d.get("/v1/kv/big?raw").await.body, vec![b'x'; limit]);
}

#[test]
fn value_limit_holds_for_chunked_bodies_too() {
    let server = consul_double::start(Config::default(), common::localhost()).unwrap();
    let mut conn = RawConn::open(server.addr());
    let chunk = vec![b'z'; 64 * 1024];
    let mut request =
        b"PUT /v1/kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..9 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let resp = conn.send(&request);
    assert_eq!(resp.status, 413);
    // The connection is still usable afterwards (the body was drained).
    let resp = conn.send(b"GET /v1/kv/chunked HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn missing_key_name_is_400() {
    let d = Double::plain();
    for (method, path) in [
        (Method::PUT, "/v1/kv/"),
        (Method::GET, "/v1/kv/"),
        (Method::GET, "/v1/kv/?raw"),
        (Method::DELETE, "/v1/kv/"),
        (Method::PUT, "/v1/kv/?recurse"),
    ] {
        let resp = d.send(method.clone(), path, Some(b"v".to_vec()), &[]).await;
        assert_eq!(resp.status, 400, "{method} {path}");
        assert_eq!(resp.text(), "Missing key name", "{method} {path}");
    }
}

#[tokio::test]
async fn lock_errors_write_nothing() {
    // Sessions and locks are tested in tests/session.rs.
    let d = Double::plain();
    for (path, status, message) in [
        ("/v1/kv/l?acquire=abc", 500, "invalid session \"abc\""),
        ("/v1/kv/l?acquire=", 500, "missing session"),
        ("/v1/kv/l?release=", 500, "missing session"),
        (
            "/v1/kv/l?acquire=abc&release=abc",
            400,
            "Conflicting flags: acquire=abc&release=abc\n",
        ),
    ] {
        let resp = d.put(path, b"v").await;
        assert_eq!((resp.status, resp.text()), (status, message), "{path}");
    }
    // Releasing a key nobody holds (or that is not there) is just false.
    assert_eq!(d.put("/v1/kv/l?release=abc", b"v").await.text(), "false");
    assert_eq!(d.get("/v1/kv/l").await.status, 404);
    assert_eq!(d.store_index().await, 10);
}

#[tokio::test]
async fn datacenter_parameter() {
    let d = Double::plain();
    d.set("k", b"v").await;
    assert_eq!(d.get("/v1/kv/k?dc=dc1").await.status, 200);
    assert_eq!(d.get("/v1/kv/k?dc=").await.status, 200);
    for (method, path) in [
        (Method::GET, "/v1/kv/k?dc=dc2"),
        (Method::PUT, "/v1/kv/k?dc=dc2"),
        (Method::DELETE, "/v1/kv/k?dc=dc2"),
        (Method::GET, "/v1/status/leader?dc=dc2"),
    ] {
        let resp = d.send(method.clone(), path, Some(b"w".to_vec()), &[]).await;
        assert_eq!(resp.status, 500, "{method} {path}");
        assert_eq!(resp.text(), "No path to datacenter");
    }
    assert_eq!(d.get("/v1/kv/k?raw").await.body, b"v");

    let east = Double::start(Config {
        datacenter: "east".into(),
        ..Config::default()
    });
    assert_eq!(east.put("/v1/kv/k?dc=east", b"v").await.text(), "true");
    assert_eq!(east.get("/v1/kv/k?dc=dc1").await.status, 500);
    let me = east.get("/v1/agent/self").await.json();
    assert_eq!(me["Config"]["Datacenter"], "east");
}

#[tokio::test]
async fn consistency_and_blocking_parameters() {
    let d = Double::plain();
    d.set("k", b"v").await;
    for path in [
        "/v1/kv/k?consistent",
        "/v1/kv/k?stale",
        "/v1/kv/k?index=1",
        "/v1/kv/k?index=0&wait=1m",
        "/v1/kv/k?index=999999&wait=100ms",
        "/v1/kv/k?wait=1m30s",
        "/v1/kv/?recurse&index=5&wait=100ms",
    ] {
        assert_eq!(d.get(path).await.status, 200, "{path}");
    }
    // A blocking query waits (tests/blocking.rs has more): even for an
    // index far in the future, as Consul does.
    let started = Instant::now();
    let resp = d.get("/v1/kv/k?index=1000000&wait=300ms").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.index(), 11);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );

    for (path, message) in [
        (
            "/v1/kv/k?stale&consistent",
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
        ("/v1/kv/k?wait=5", "Invalid wait time"),
        ("/v1/kv/k?wait=5x", "Invalid wait time"),
        ("/v1/kv/k?index=abc", "Invalid index"),
        ("/v1/kv/k?index=-1", "Invalid index"),
    ] {
        let resp = d.get(path).await;
        assert_eq!((resp.status, resp.text()), (400, message), "{path}");
    }
}

#[tokio::test]
async fn keys_are_percent_decoded() {
    let d = Double::plain();
    d.set("sp%20ace%3Fq%23h%25", b"1").await;
    d.set("enc%2Fslash", b"2").await;
    d.set("caf%C3%A9+plus", b"3").await;
    let keys = d.get("/v1/kv/?keys").await.json();
    assert_eq!(keys, json!(["café+plus", "enc/slash", "sp ace?q#h%"]));
    assert_eq!(d.get("/v1/kv/enc/slash?raw").await.body, b"2");
    assert_eq!(
        d.get("/v1/kv/sp%20ace%3Fq%23h%25").await.json()[0]["Key"],
        "sp ace?q#h%"
    );
    // Not UTF-8 once decoded: refused (Consul would take any bytes).
    let resp = d.put("/v1/kv/bad%FF", b"v").await;
    assert_eq!(resp.status, 400);
}

#[test]
fn bad_escapes_are_400() {
    let server = consul_double::start(Config::default(), common::localhost()).unwrap();
    let resp = raw(server.addr(), "GET /v1/kv/a%zz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 400);
}

#[test]
fn unclean_paths_are_redirected_like_go_servemux() {
    let server = consul_double::start(Config::default(), common::localhost()).unwrap();
    let addr = server.addr();
    for (target, location) in [
        ("/v1/kv//a", "/v1/kv/a"),
        ("/v1/kv/a//b?raw", "/v1/kv/a/b?raw"),
        ("/v1/kv/a/./b", "/v1/kv/a/b"),
        ("/v1/kv/a/../b", "/v1/kv/b"),
        ("/v1/kv/a%2F%2Fb", "/v1/kv/a/b"),
        ("/v1/kv/x/", "/v1/kv/x/"),
        ("/v1/kv", "/v1/kv/"),
        ("/v1/kv?recurse", "/v1/kv/?recurse"),
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let resp = raw(
                addr,
                &format!("{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            );
            if target == location {
                assert_ne!(resp.status, 301, "{method} {target}");
                continue;
            }
            assert_eq!(resp.status, 301, "{method} {target}");
            assert_eq!(resp.header("location"), Some(location), "{method} {target}");
        }
    }
    // Nothing was written by the redirected PUTs.
    let resp = raw(addr, "GET /v1/kv/?keys HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 404);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = consul_double::start(Config::default(), common::localhost()).unwrap();
    let mut conn = RawConn::open(server.addr());
    for i in 0..5 {
        let resp = conn.send(
            format!("PUT /v1/kv/k{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{i}")
                .as_bytes(),
        );
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"true"[..]));
        assert_ne!(resp.header("connection"), Some("close"));
    }
    let resp = conn.send(b"GET /v1/kv/?keys HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&resp.body).unwrap(),
        json!(["k0", "k1", "k2", "k3", "k4"])
    );
}

#[tokio::test]
async fn other_paths_and_methods() {
    let d = Double::plain();
    for path in [
        "/",
        "/v1/kvx",
        "/v1/catalog/nodes",
        "/v1/agent/self/",
        "/v1/txn/",
        "/v1/txnx",
    ] {
        let resp = d.get(path).await;
        assert_eq!(resp.status, 404, "{path}");
        assert!(resp.body.is_empty(), "{path}");
    }
    for (method, path) in [
        (Method::POST, "/v1/kv/k"),
        (Method::PATCH, "/v1/kv/k"),
        (Method::HEAD, "/v1/kv/k"),
        (Method::PUT, "/v1/agent/self"),
        (Method::POST, "/v1/status/leader"),
        (Method::GET, "/v1/txn"),
        (Method::POST, "/v1/txn"),
    ] {
        let resp = d.send(method.clone(), path, None, &[]).await;
        assert_eq!(resp.status, 405, "{method} {path}");
        assert!(resp.headers.contains_key("allow"), "{method} {path}");
    }
    let resp = d.send(Method::POST, "/v1/kv/k", None, &[]).await;
    assert_eq!(resp.text(), "method POST not allowed");
    assert_eq!(resp.header("allow"), "OPTIONS,GET,PUT,DELETE");
    let resp = d.send(Method::OPTIONS, "/v1/kv/k", None, &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("allow"), "OPTIONS,GET,PUT,DELETE");
    assert_eq!(d.get("/v1/kv/k").await.status, 404, "nothing was written");
}

#[tokio::test]
async fn pretty_is_indented_by_four_with_a_newline() {
    let d = Double::plain();
    d.set("p", b"v").await;
    let resp = d.get("/v1/kv/?keys&pretty").await;
    assert_eq!(resp.text(), "[\n    \"p\"\n]\n");
}

#[tokio::test]
async fn agent_self_and_status() {
    let d = Double::plain();
    let resp = d.get("/v1/agent/self").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), "application/json");
    let me = resp.json();
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["NodeName"], "consul-double");
    assert_eq!(me["Config"]["Version"], consul_double::CONSUL_VERSION);
    assert_eq!(me["Config"]["Server"], true);
    assert_eq!(me["Member"]["Name"], "consul-double");
    assert_eq!(me["Member"]["Addr"], "127.0.0.1");
    assert_eq!(me["Member"]["Port"], 8301);
    assert_eq!(me["Member"]["Status"], 1);
    assert!(resp.headers.contains_key("x-consul-index"));

    let resp = d.get("/v1/status/leader").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(resp.text(), r#""127.0.0.1:8300""#);
    assert_eq!(resp.header("x-consul-knownleader"), "true");
    assert_eq!(
        d.get("/v1/status/peers").await.json(),
        json!(["127.0.0.1:8300"])
    );
}

#[tokio::test]
async fn shutdown_and_drop_free_the_port() {
    let d = Double::plain();
    d.set("k", b"v").await;
    let addr = d.server.addr();
    assert_eq!(d.server.port(), addr.port());
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    d.server.shutdown();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening"
    );
    // The port is free again: a new double can take it, with a fresh store.
    let again = consul_double::start(Config::default(), addr).unwrap();
    assert_eq!(again.addr(), addr);
    let resp = raw(addr, "GET /v1/kv/k HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 404);
    drop(again);
    assert!(std::net::TcpStream::connect(addr).is_err(), "Drop stops it");
}

#[test]
fn start_reports_a_busy_port() {
    let first = consul_double::start(Config::default(), common::localhost()).unwrap();
    let error = consul_double::start(Config::default(), first.addr()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
}
