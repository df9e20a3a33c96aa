//! `PUT /v1/txn` with KV operations, as a Consul client sees it.

mod common;

use common::Double;
use consul_double::Config;
use reqwest::Method;
use serde_json::{json, Value};

/// base64 of a value, as the transaction body carries it.
fn b64(value: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(value)
}

fn kv(verb: &str, key: &str) -> Value {
    json!({"KV": {"Verb": verb, "Key": key}})
}

fn kv_index(verb: &str, key: &str, index: u64) -> Value {
    json!({"KV": {"Verb": verb, "Key": key, "Index": index}})
}

fn kv_set(verb: &str, key: &str, value: &[u8], index: u64) -> Value {
    json!({"KV": {"Verb": verb, "Key": key, "Value": b64(value), "Index": index}})
}

/// The `Errors` of a 409, as (OpIndex, What) pairs, after checking the
/// rest of the answer's shape.
fn errors_of(resp: &common::Resp) -> Vec<(u64, String)> {
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert_eq!(resp.header("content-type"), "application/json");
    let body = resp.json();
    assert_eq!(body["Results"], Value::Null, "{body}");
    body["Errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no Errors list in {body}"))
        .iter()
        .map(|error| {
            assert_eq!(error.as_object().unwrap().len(), 2, "{error}");
            (
                error["OpIndex"].as_u64().unwrap(),
                error["What"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `Results` of a 200, one `KV` entry each.
fn results_of(resp: &common::Resp) -> Vec<Value> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), "application/json");
    let body = resp.json();
    assert_eq!(body["Errors"], Value::Null, "{body}");
    body["Results"]
        .as_array()
        .unwrap_or_else(|| panic!("no Results list in {body}"))
        .iter()
        .map(|result| {
            assert_eq!(result.as_object().unwrap().len(), 1, "{result}");
            result["KV"].clone()
        })
        .collect()
}

#[tokio::test]
async fn check_index_then_delete_succeeds() {
    let d = Double::plain();
    d.set("k", b"v").await;
    let index = d.modify_index("k").await;

    let resp = d
        .txn(&json!([
            kv_index("check-index", "k", index),
            kv("delete", "k")
        ]))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), "application/json");
    // check-index reports the entry it checked, without its value (as
    // Consul's txnKVS); the delete reports nothing.
    assert_eq!(
        resp.text(),
        format!(
            r#"{{"Results":[{{"KV":{{"LockIndex":0,"Key":"k","Flags":0,"Value":null,"CreateIndex":{index},"ModifyIndex":{index}}}}}],"Errors":null}}"#
        )
    );
    assert_eq!(resp.index(), index + 1, "the transaction is one write");
    assert_eq!(d.get("/v1/kv/k").await.status, 404);
    assert_eq!(d.store_index().await, index + 1);

    // Only deletes: nothing to report, an empty list.
    d.set("k", b"v").await;
    let resp = d.txn(&json!([kv("delete", "k")])).await;
    assert_eq!(
        (resp.status, resp.text()),
        (200, r#"{"Results":[],"Errors":null}"#)
    );
    assert_eq!(d.get("/v1/kv/k").await.status, 404);
}

#[tokio::test]
async fn a_stale_index_is_409_and_deletes_nothing() {
    let d = Double::plain();
    d.set("k", b"one").await;
    let stale = d.modify_index("k").await;
    d.set("k", b"two").await;
    let current = d.modify_index("k").await;
    assert_eq!(current, stale + 1);

    let resp = d
        .txn(&json!([
            kv_index("check-index", "k", stale),
            kv("delete", "k")
        ]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [(
            0,
            format!("failed index check for key \"k\", current modify index {current} != {stale}")
        )]
    );
    assert_eq!(resp.index(), current, "nothing written");
    assert_eq!(d.get("/v1/kv/k?raw").await.body, b"two");

    // delete-cas with a stale index fails the transaction too (Consul's
    // wording), and with the current one deletes.
    let resp = d.txn(&json!([kv_index("delete-cas", "k", stale)])).await;
    assert_eq!(
        errors_of(&resp),
        [(0, "failed to delete key \"k\", index is stale".to_owned())]
    );
    assert_eq!(d.get("/v1/kv/k?raw").await.body, b"two");
    let resp = d.txn(&json!([kv_index("delete-cas", "k", 0)])).await;
    assert_eq!(resp.status, 409, "Index 0 never deletes a present key");
    let resp = d.txn(&json!([kv_index("delete-cas", "k", current)])).await;
    assert!(results_of(&resp).is_empty());
    assert_eq!(d.get("/v1/kv/k").await.status, 404);
    // delete-cas of an absent key: nothing to delete, not a failure.
    let resp = d.txn(&json!([kv_index("delete-cas", "k", current)])).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.index(), current + 1, "no write");
}

#[tokio::test]
async fn check_index_of_an_absent_key_is_409_with_consuls_errors() {
    let d = Double::plain();
    d.set("other", b"v").await;
    let before = d.store_index().await;
    let resp = d
        .txn(&json!([
            kv_index("check-index", "gone", 11),
            kv("delete", "gone")
        ]))
        .await;
    assert_eq!(resp.status, 409);
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(
        resp.text(),
        r#"{"Results":null,"Errors":[{"OpIndex":0,"What":"failed to check index, key \"gone\" doesn't exist"}]}"#
    );
    assert_eq!(resp.index(), before);
    assert_eq!(resp.header("x-consul-knownleader"), "true");
    assert_eq!(d.store_index().await, before);

    // Every failing operation is listed, each seeing the ones before it.
    let resp = d
        .txn(&json!([
            kv("delete", "other"),
            kv_index("check-index", "other", before),
            kv("get", "gone"),
            kv("get", "fine-if-absent-later"),
        ]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [
            (
                1,
                "failed to check index, key \"other\" doesn't exist".to_owned()
            ),
            (2, "key \"gone\" doesn't exist".to_owned()),
            (3, "key \"fine-if-absent-later\" doesn't exist".to_owned()),
        ]
    );
    assert_eq!(
        d.get("/v1/kv/other").await.status,
        200,
        "delete rolled back"
    );
}

#[tokio::test]
async fn cas_with_index_0_creates_only_when_absent() {
    let d = Double::plain();
    let before = d.store_index().await;
    let resp = d.txn(&json!([kv_set("cas", "c", b"one", 0)])).await;
    let results = results_of(&resp);
    assert_eq!(
        results,
        [
            json!({"LockIndex": 0, "Key": "c", "Flags": 0, "Value": null,
                "CreateIndex": before + 1, "ModifyIndex": before + 1})
        ]
    );
    assert_eq!(d.get("/v1/kv/c?raw").await.body, b"one");

    let resp = d.txn(&json!([kv_set("cas", "c", b"two", 0)])).await;
    assert_eq!(
        errors_of(&resp),
        [(0, "failed to set key \"c\", index is stale".to_owned())]
    );
    assert_eq!(d.get("/v1/kv/c?raw").await.body, b"one");

    // With the current index it writes; with an old one or on an absent key
    // with a non-zero index it does not.
    let resp = d
        .txn(&json!([kv_set("cas", "c", b"two", before + 1)]))
        .await;
    assert_eq!(results_of(&resp)[0]["ModifyIndex"], before + 2);
    assert_eq!(results_of(&resp)[0]["CreateIndex"], before + 1);
    assert_eq!(d.get("/v1/kv/c?raw").await.body, b"two");
    let resp = d
        .txn(&json!([kv_set("cas", "c", b"three", before + 1)]))
        .await;
    assert_eq!(resp.status, 409);
    let resp = d
        .txn(&json!([kv_set("cas", "new", b"x", before + 2)]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [(0, "failed to set key \"new\", index is stale".to_owned())]
    );
    assert_eq!(d.get("/v1/kv/c?raw").await.body, b"two");
    assert_eq!(d.get("/v1/kv/new").await.status, 404);
}

#[tokio::test]
async fn check_not_exists_guards_a_create() {
    let d = Double::plain();
    let resp = d
        .txn(&json!([
            kv("check-not-exists", "n"),
            kv_set("set", "n", b"first", 0)
        ]))
        .await;
    let results = results_of(&resp);
    assert_eq!(results.len(), 1, "check-not-exists reports nothing");
    assert_eq!(results[0]["Key"], "n");
    assert_eq!(d.get("/v1/kv/n?raw").await.body, b"first");

    let index = d.store_index().await;
    let resp = d
        .txn(&json!([
            kv("check-not-exists", "n"),
            kv_set("set", "n", b"second", 0)
        ]))
        .await;
    assert_eq!(errors_of(&resp), [(0, "key \"n\" exists".to_owned())]);
    assert_eq!(d.get("/v1/kv/n?raw").await.body, b"first");
    assert_eq!(d.store_index().await, index);
}

#[tokio::test]
async fn all_writes_share_one_index() {
    let d = Double::plain();
    for key in ["a", "d", "t/1", "t/2"] {
        d.set(key, b"old").await;
    }
    let before = d.store_index().await;
    let resp = d
        .txn(&json!([
            kv_set("set", "a", b"A", 0),
            {"KV": {"Verb": "set", "Key": "b", "Value": b64(b"B"), "Flags": 42}},
            kv_set("cas", "c", b"C", 0),
            kv("delete", "d"),
            kv("delete-tree", "t/"),
        ]))
        .await;
    let results = results_of(&resp);
    assert_eq!(resp.index(), before + 1);
    let keys: Vec<&str> = results.iter().map(|r| r["Key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    for result in &results {
        assert_eq!(result["ModifyIndex"], before + 1, "{result}");
        assert_eq!(result["Value"], Value::Null, "no values for writes");
        assert_eq!(result["LockIndex"], 0);
    }
    assert_eq!(results[0]["CreateIndex"], 11, "a keeps its CreateIndex");
    assert_eq!(results[1]["CreateIndex"], before + 1);
    assert_eq!(results[1]["Flags"], 42);
    for key in ["a", "b", "c"] {
        assert_eq!(d.modify_index(key).await, before + 1, "{key}");
    }
    assert_eq!(d.get("/v1/kv/b").await.json()[0]["Flags"], 42);
    assert_eq!(d.get("/v1/kv/b?raw").await.body, b"B");
    assert_eq!(d.get("/v1/kv/d").await.status, 404);
    assert_eq!(d.get("/v1/kv/t/?recurse").await.status, 404);
    assert_eq!(d.store_index().await, before + 1);

    // A transaction that changes nothing moves no index.
    let resp = d
        .txn(&json!([
            kv("get", "a"),
            kv("delete", "d"),
            kv("delete-tree", "zz")
        ]))
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.index(), before + 1);
    assert_eq!(d.store_index().await, before + 1);
}

#[tokio::test]
async fn a_failing_operation_rolls_back_an_earlier_set() {
    let d = Double::plain();
    d.set("keep", b"old").await;
    let before = d.store_index().await;
    let resp = d
        .txn(&json!([
            kv_set("set", "fresh", b"x", 0),
            kv_set("set", "keep", b"new", 0),
            kv("delete-tree", "keep"),
            kv("get", "missing"),
        ]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [(3, "key \"missing\" doesn't exist".to_owned())]
    );
    assert_eq!(resp.index(), before);
    assert_eq!(d.get("/v1/kv/fresh").await.status, 404);
    assert_eq!(d.get("/v1/kv/keep?raw").await.body, b"old");
    assert_eq!(d.modify_index("keep").await, before);
    assert_eq!(d.store_index().await, before);

    // An unknown verb fails like any operation (Consul: 409, not 400).
    let resp = d
        .txn(&json!([
            kv_set("set", "fresh", b"x", 0),
            kv("SET", "fresh")
        ]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [(1, "unknown KV verb \"SET\"".to_owned())]
    );
    assert_eq!(d.get("/v1/kv/fresh").await.status, 404);

    // A missing key fails before anything runs (Consul's preCheck), for
    // every verb but delete-tree.
    let resp = d
        .txn(&json!([
            kv("get", "keep"),
            kv_set("set", "", b"x", 0),
            kv("get-tree", ""),
            kv("delete-tree", "")
        ]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [
            (1, "Must provide key".to_owned()),
            (2, "Must provide key".to_owned())
        ]
    );
    assert_eq!(d.get("/v1/kv/keep?raw").await.body, b"old");
}

#[tokio::test]
async fn get_and_get_tree_give_entries_with_values() {
    let d = Double::plain();
    for key in ["a", "a/b", "a/c", "ab", "b"] {
        d.set(key, key.as_bytes()).await;
    }
    assert_eq!(d.put("/v1/kv/a/c?flags=9", b"").await.text(), "true");
    let resp = d
        .txn(&json!([
            kv("get", "a/b"),
            kv("get-tree", "a/"),
            kv("get-tree", "zz"),
            kv("get", "b"),
        ]))
        .await;
    let results = results_of(&resp);
    let keys: Vec<&str> = results.iter().map(|r| r["Key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["a/b", "a/b", "a/c", "b"]);
    assert_eq!(
        results[0],
        json!({"LockIndex": 0, "Key": "a/b", "Flags": 0, "Value": b64(b"a/b"),
               "CreateIndex": 12, "ModifyIndex": 12})
    );
    assert_eq!(results[1], results[0]);
    assert_eq!(results[2]["Value"], Value::Null, "an empty value is null");
    assert_eq!(results[2]["Flags"], 9);
    assert_eq!(results[3]["Value"], b64(b"b"));
    // A read-only transaction writes nothing.
    assert_eq!(resp.index(), d.store_index().await);

    // get sees the writes made before it in the same transaction.
    let resp = d
        .txn(&json!([
            kv_set("set", "a/new", b"n", 0),
            kv("get", "a/new"),
            kv("get-tree", "a/n")
        ]))
        .await;
    let results = results_of(&resp);
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["Value"], Value::Null);
    assert_eq!(results[1]["Value"], b64(b"n"));
    assert_eq!(results[2]["Value"], b64(b"n"));
    assert_eq!(results[1]["ModifyIndex"], results[0]["ModifyIndex"]);

    // get-or-empty answers an absent key with the operation's own fields.
    let resp = d
        .txn(&json!([{"KV": {"Verb": "get-or-empty", "Key": "nope", "Flags": 3}}]))
        .await;
    assert_eq!(
        results_of(&resp),
        [
            json!({"LockIndex": 0, "Key": "nope", "Flags": 3, "Value": null,
                "CreateIndex": 0, "ModifyIndex": 0})
        ]
    );
}

#[tokio::test]
async fn acl_token_is_required() {
    const TOKEN: &str = "txn-t0ken";
    let d = Double::start(Config {
        acl_token: Some(TOKEN.to_owned()),
        ..Config::default()
    });
    let write = json!([kv_set("set", "w", b"v", 0)]);
    let resp = d.txn(&write).await;
    assert_eq!(resp.status, 403);
    assert!(
        resp.text().starts_with(
            "Permission denied: anonymous token lacks permission 'key:write' on \"w\"."
        ),
        "{}",
        resp.text()
    );
    let resp = d.txn(&json!([kv("get", "w")])).await;
    assert_eq!(resp.status, 403);
    assert!(
        resp.text()
            .starts_with("Permission denied: anonymous token lacks permission 'key:read'"),
        "{}",
        resp.text()
    );
    let resp = d.txn_with("", &write, &[("X-Consul-Token", "wrong")]).await;
    assert_eq!((resp.status, resp.text()), (403, "ACL not found"));
    let resp = d.txn_with("?token=wrong", &write, &[]).await;
    assert_eq!((resp.status, resp.text()), (403, "ACL not found"));

    let auth = [("X-Consul-Token", TOKEN)];
    let resp = d.send(Method::GET, "/v1/kv/w", None, &auth).await;
    assert_eq!(resp.status, 404, "nothing was written");

    let resp = d.txn_with("", &write, &auth).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let bearer = format!("Bearer {TOKEN}");
    let resp = d
        .txn_with(
            "",
            &json!([kv("get", "w")]),
            &[("Authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(results_of(&resp)[0]["Value"], b64(b"v"));
    let resp = d
        .txn_with(&format!("?token={TOKEN}"), &json!([kv("delete", "w")]), &[])
        .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let d = Double::plain();
    let before = d.store_index().await;
    for (body, message) in [
        ("", Some("Failed to parse body: EOF")),
        (r#"[{"KV":"#, None),
        ("not json", None),
        (r#"[{"KV":{"Verb":"set","Key":"k"}},]"#, None),
        (
            r#"{"KV":{"Verb":"set","Key":"k"}}"#,
            Some("Failed to parse body: json: cannot unmarshal object into Go value of type api.TxnOps"),
        ),
        (
            r#"[{"KV":{"Verb":"set","Key":"k","Flags":"1"}}]"#,
            Some("Failed to parse body: json: cannot unmarshal string into Go struct field KVTxnOp.KV.Flags of type uint64"),
        ),
        (
            r#"[{"KV":{"Verb":"set","Key":"k","Value":"not base64!"}}]"#,
            Some("Failed to parse body: illegal base64 data at input byte 3"),
        ),
    ] {
        let resp = d
            .send(Method::PUT, "/v1/txn", Some(body.as_bytes().to_vec()), &[])
            .await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
        assert!(
            resp.text().starts_with("Failed to parse body: "),
            "{body}: {}",
            resp.text()
        );
        if let Some(message) = message {
            assert_eq!(resp.text(), message, "{body}");
        }
    }
    assert_eq!(d.store_index().await, before, "nothing written");
    assert_eq!(d.get("/v1/kv/k").await.status, 404);

    // As Go's decoder: field names in any case, unknown members ignored,
    // what follows the array not read.
    let resp = d
        .send(
            Method::PUT,
            "/v1/txn",
            Some(
                br#"[{"kv":{"verb":"set","KEY":"k","value":"dg==","Extra":1}}] trailing"#.to_vec(),
            ),
            &[],
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(d.get("/v1/kv/k?raw").await.body, b"v");
}

#[tokio::test]
async fn too_many_operations_is_413() {
    let d = Double::plain();
    let ops = |n: usize| {
        Value::Array(
            (0..n)
                .map(|i| kv_set("set", &format!("k{i:03}"), b"v", 0))
                .collect(),
        )
    };
    let resp = d.txn(&ops(129)).await;
    assert_eq!(
        (resp.status, resp.text()),
        (413, "Transaction contains too many operations (129 > 128)")
    );
    assert_eq!(d.get("/v1/kv/?keys").await.status, 404, "nothing written");

    let before = d.store_index().await;
    let resp = d.txn(&ops(128)).await;
    assert_eq!(results_of(&resp).len(), 128);
    assert_eq!(
        d.get("/v1/kv/?keys").await.json().as_array().unwrap().len(),
        128
    );
    assert_eq!(d.store_index().await, before + 1);
}

#[tokio::test]
async fn the_body_limit_is_512_kib() {
    let d = Double::plain();
    // 400 KiB of value is more than 512 KiB of base64: the body is refused
    // before the value is looked at, as by Consul (txn_max_req_len).
    let ops = json!([kv_set("set", "big", &vec![b'x'; 400 * 1024], 0)]);
    let length = serde_json::to_vec(&ops).unwrap().len();
    let resp = d.txn(&ops).await;
    assert_eq!(resp.status, 413);
    assert_eq!(
        resp.text(),
        format!(
            "Request body({length} bytes) too large, max size: 524288 bytes. \
             See https://www.consul.io/docs/agent/config/config-files#txn_max_req_len."
        )
    );
    assert_eq!(d.get("/v1/kv/big").await.status, 404);
    // Within the limit is fine.
    let ops = json!([kv_set("set", "big", &vec![b'x'; 300 * 1024], 0)]);
    assert_eq!(d.txn(&ops).await.status, 200);
    assert_eq!(d.get("/v1/kv/big?raw").await.body.len(), 300 * 1024);
}

#[tokio::test]
async fn only_kv_operations() {
    let d = Double::plain();
    for (op, needle) in [
        (
            json!({"Node": {"Verb": "get", "Node": {"Node": "n"}}}),
            "operation 1 is a Node operation",
        ),
        (
            json!({"Service": {"Verb": "get", "Node": "n"}}),
            "operation 1 is a Service operation",
        ),
        (
            json!({"Check": {"Verb": "get"}}),
            "operation 1 is a Check operation",
        ),
        (
            json!({"Session": {"Verb": "delete"}}),
            "operation 1 is a Session operation",
        ),
        (json!({}), "operation 1 has no KV member"),
    ] {
        let resp = d.txn(&json!([kv_set("set", "k", b"v", 0), op])).await;
        assert_eq!(resp.status, 400, "{needle}");
        assert!(
            resp.text()
                .starts_with("consul-double only implements KV operations in transactions")
                && resp.text().ends_with(needle),
            "{}",
            resp.text()
        );
    }
    assert_eq!(d.get("/v1/kv/k").await.status, 404, "nothing written");
}

/// A session verb: `lock`, `unlock` (with a value and flags) or
/// `check-session`.
fn kv_session(verb: &str, key: &str, session: &str, value: &[u8], flags: u64) -> Value {
    json!({"KV": {"Verb": verb, "Key": key, "Value": b64(value), "Flags": flags, "Session": session}})
}

#[tokio::test]
async fn lock_unlock_and_check_session_as_acquire_and_release() {
    let d = Double::plain();
    let s1 = d.create_session(&json!({"LockDelay": "0s"})).await;
    let s2 = d.create_session(&json!({"LockDelay": "0s"})).await;

    // lock of an absent key creates it, held, LockIndex 1; the result is
    // the entry without its value.
    let before = d.store_index().await;
    let resp = d
        .txn(&json!([kv_session("lock", "k", &s1, b"one", 7)]))
        .await;
    let results = results_of(&resp);
    let index = before + 1;
    assert_eq!(
        results,
        [
            json!({"LockIndex": 1, "Key": "k", "Flags": 7, "Value": null, "Session": s1,
                "CreateIndex": index, "ModifyIndex": index})
        ]
    );
    let entry = d.entry("k").await;
    assert_eq!(
        (entry["Value"].as_str(), entry["Flags"].as_u64()),
        (Some("b25l"), Some(7))
    );
    assert_eq!(entry["Session"], s1.as_str());

    // check-session: the holder passes and gets the entry; another session,
    // or none, fails with Consul's message.
    let results = results_of(
        &d.txn(&json!([kv_session("check-session", "k", &s1, b"", 0)]))
            .await,
    );
    assert_eq!(results[0]["Session"], s1.as_str());
    assert_eq!(results[0]["Value"], Value::Null);
    assert_eq!(results[0]["ModifyIndex"], index);
    for other in [s2.as_str(), ""] {
        let resp = d
            .txn(&json!([kv_session("check-session", "k", other, b"", 0)]))
            .await;
        assert_eq!(
            errors_of(&resp),
            [(
                0,
                format!(
                    "failed session check for key \"k\", current session \"{s1}\" != \"{other}\""
                )
            )]
        );
    }
    let resp = d
        .txn(&json!([kv_session("check-session", "absent", "", b"", 0)]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [(
            0,
            "failed to check session, key \"absent\" doesn't exist".to_owned()
        )]
    );

    // Another session cannot lock or unlock it; nothing moves.
    let resp = d
        .txn(&json!([kv_session("lock", "k", &s2, b"two", 0)]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [(
            0,
            "failed to lock key \"k\", lock is already held".to_owned()
        )]
    );
    let resp = d
        .txn(&json!([kv_session("unlock", "k", &s2, b"two", 0)]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [(
            0,
            "failed to unlock key \"k\", lock isn't held, or is held by another session".to_owned()
        )]
    );
    assert_eq!(d.store_index().await, index);

    // The holder locks again: value and flags change, LockIndex does not.
    let results = results_of(
        &d.txn(&json!([kv_session("lock", "k", &s1, b"1b", 8)]))
            .await,
    );
    assert_eq!(results[0]["LockIndex"], 1);
    assert_eq!(results[0]["ModifyIndex"], index + 1);
    // unlock then lock by another session in one transaction: the lock
    // passes from one to the other, one index for both.
    let resp = d
        .txn(&json!([
            kv_index("check-index", "k", index + 1),
            kv_session("unlock", "k", &s1, b"between", 0),
            kv_session("lock", "k", &s2, b"two", 9),
        ]))
        .await;
    let results = results_of(&resp);
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[1]["Session"],
        Value::Null,
        "unlocked: {}",
        results[1]
    );
    assert_eq!(results[1]["LockIndex"], 1);
    assert_eq!(results[2]["Session"], s2.as_str());
    assert_eq!(results[2]["LockIndex"], 2);
    // check-index reports the entry as it found it.
    assert_eq!(results[0]["ModifyIndex"], index + 1);
    for result in &results[1..] {
        assert_eq!(result["ModifyIndex"], index + 2);
    }
    let entry = d.entry("k").await;
    assert_eq!(
        (entry["Value"].as_str(), entry["Flags"].as_u64()),
        (Some("dHdv"), Some(9))
    );
    assert_eq!(entry["Session"], s2.as_str());

    // unlock by the holder stores the value and flags and frees the key:
    // a plain PUT ?acquire= by the other session then takes it.
    let resp = d
        .txn(&json!([kv_session("unlock", "k", &s2, b"free", 3)]))
        .await;
    let results = results_of(&resp);
    assert_eq!(results[0]["Session"], Value::Null);
    let entry = d.entry("k").await;
    assert_eq!(
        (entry["Value"].as_str(), entry["Flags"].as_u64()),
        (Some("ZnJlZQ=="), Some(3))
    );
    assert!(entry.get("Session").is_none(), "{entry}");
    results_of(
        &d.txn(&json!([kv_session("check-session", "k", "", b"", 0)]))
            .await,
    );
    let resp = d
        .txn(&json!([kv_session("unlock", "k", &s2, b"", 0)]))
        .await;
    assert_eq!(errors_of(&resp).len(), 1, "no longer held");
    assert!(d.acquire("k", &s1, b"again").await);
    assert_eq!(d.entry("k").await["LockIndex"], 3);

    // A key locked in a transaction goes with its session.
    let resp = d.put(&format!("/v1/session/destroy/{s1}"), b"").await;
    assert_eq!(resp.text(), "true");
    assert!(d.entry("k").await.get("Session").is_none());
}

#[tokio::test]
async fn session_verbs_fail_as_consuls_and_roll_back() {
    let d = Double::plain();
    let s = d.create_session(&json!({"LockDelay": "0s"})).await;
    let unknown = "5e2c1a9b-0000-4000-8000-000000000000";
    d.set("plain", b"p").await;
    let before = d.store_index().await;
    for (op, what) in [
        (
            kv_session("lock", "k", "", b"v", 0),
            "missing session".to_owned(),
        ),
        (
            kv_session("lock", "k", unknown, b"v", 0),
            format!("invalid session \"{unknown}\""),
        ),
        (
            kv_session("unlock", "k", "", b"v", 0),
            "missing session".to_owned(),
        ),
        (
            kv_session("unlock", "plain", &s, b"v", 0),
            "failed to unlock key \"plain\", lock isn't held, or is held by another session"
                .to_owned(),
        ),
    ] {
        // A set before it is rolled back with it.
        let resp = d.txn(&json!([kv_set("set", "other", b"x", 0), op])).await;
        assert_eq!(errors_of(&resp), [(1, what)]);
    }
    // A lock after a failed check is not kept either.
    let resp = d
        .txn(&json!([
            kv_index("check-index", "plain", before + 100),
            kv_session("lock", "k", &s, b"v", 0),
        ]))
        .await;
    assert_eq!(errors_of(&resp).len(), 1);
    assert_eq!(d.store_index().await, before, "nothing written");
    assert_eq!(d.get("/v1/kv/k").await.status, 404);
    assert_eq!(d.get("/v1/kv/other").await.status, 404);

    // A lock-delay fails the lock before anything runs, as Consul's
    // pre-check.
    let delayed = d.create_session(&json!({"LockDelay": "10s"})).await;
    assert!(d.acquire("d", &delayed, b"v").await);
    assert_eq!(
        d.put(&format!("/v1/session/destroy/{delayed}"), b"")
            .await
            .text(),
        "true"
    );
    let resp = d
        .txn(&json!([
            kv_set("set", "other", b"x", 0),
            kv_session("lock", "d", &s, b"v", 0)
        ]))
        .await;
    assert_eq!(
        errors_of(&resp),
        [(1, "failed to lock key \"d\" due to lock delay".to_owned())]
    );
    assert_eq!(d.get("/v1/kv/other").await.status, 404);
    // unlock and check-session are not delayed.
    results_of(
        &d.txn(&json!([kv_session("check-session", "d", "", b"", 0)]))
            .await,
    );
}

#[tokio::test]
async fn a_key_locked_in_a_transaction_is_deleted_with_its_session() {
    let d = Double::start(common::quick_sessions());
    let started = std::time::Instant::now();
    let s = d
        .create_session(&json!({"TTL": "300ms", "Behavior": "delete", "LockDelay": "0s"}))
        .await;
    let resp = d
        .txn(&json!([
            kv("check-not-exists", "ttl"),
            kv_session("lock", "ttl", &s, b"v", 1)
        ]))
        .await;
    let index = results_of(&resp)[0]["ModifyIndex"].as_u64().unwrap();
    let resp = d.get(&format!("/v1/kv/ttl?index={index}&wait=5s")).await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(300)
            && waited < std::time::Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn datacenter_read_options_methods_and_pretty() {
    let d = Double::plain();
    let write = json!([kv_set("set", "k", b"v", 0)]);
    let resp = d.txn_with("?dc=dc2", &write, &[]).await;
    assert_eq!((resp.status, resp.text()), (500, "No path to datacenter"));
    assert_eq!(d.get("/v1/kv/k").await.status, 404);
    assert_eq!(d.txn_with("?dc=dc1", &write, &[]).await.status, 200);

    // A read-only transaction takes the read options; one that writes
    // ignores them, as Consul.
    let read = json!([kv("get", "k")]);
    for query in ["?stale", "?consistent", "?stale&consistent"] {
        assert_eq!(d.txn_with(query, &write, &[]).await.status, 200, "{query}");
    }
    assert_eq!(d.txn_with("?stale", &read, &[]).await.status, 200);
    let resp = d.txn_with("?stale&consistent", &read, &[]).await;
    assert_eq!(
        (resp.status, resp.text()),
        (
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics."
        )
    );
    let resp = d.txn_with("?wait=5", &read, &[]).await;
    assert_eq!((resp.status, resp.text()), (400, "Invalid wait time"));

    // PUT only.
    let resp = d.send(Method::GET, "/v1/txn", None, &[]).await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), "OPTIONS,PUT");
    assert_eq!(resp.text(), "method GET not allowed");
    let resp = d.send(Method::OPTIONS, "/v1/txn", None, &[]).await;
    assert_eq!((resp.status, resp.header("allow")), (200, "OPTIONS,PUT"));
    assert_eq!(d.txn_with("/", &write, &[]).await.status, 404);

    let resp = d
        .txn_with("?pretty", &json!([kv("get", "missing")]), &[])
        .await;
    assert_eq!(resp.status, 409);
    assert!(
        resp.text().starts_with("{\n    \"Results\": null,"),
        "{}",
        resp.text()
    );
    assert!(resp.text().ends_with("}\n"));
}
