//! Sessions, KV locks, lock-delays and TTL expiry, as a Consul client sees
//! them.

mod common;

use std::time::{Duration, Instant};

use common::{quick_sessions, Double};
use consul_double::Config;
use reqwest::Method;
use serde_json::{json, Value};

fn is_consul_id(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
            }
        })
}

async fn info(d: &Double, id: &str) -> Value {
    let resp = d.get(&format!("/v1/session/info/{id}")).await;
    assert_eq!(resp.status, 200, "info {id}: {}", resp.text());
    resp.json()
}

#[tokio::test]
async fn create_info_list_destroy() {
    let d = Double::plain();
    // No body at all: Consul's defaults.
    let resp = d.put("/v1/session/create", b"").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(resp.index(), 11, "a session create moves the index");
    let body = resp.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let id = body["ID"].as_str().unwrap().to_owned();
    assert!(is_consul_id(&id), "{id}");

    let resp = d.get(&format!("/v1/session/info/{id}")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.index(), 11);
    assert_eq!(
        resp.text(),
        format!(
            r#"[{{"ID":"{id}","Name":"","Node":"consul-double","LockDelay":15000000000,"Behavior":"release","TTL":"","NodeChecks":["serfHealth"],"ServiceChecks":null,"CreateIndex":11,"ModifyIndex":11}}]"#
        )
    );

    let other = d
        .create_session(&json!({"Name": "second", "Behavior": "delete"}))
        .await;
    assert_ne!(other, id);
    assert_eq!(d.store_index().await, 12);
    let list = d.get("/v1/session/list").await;
    assert_eq!(list.status, 200);
    let mut ids = vec![id.clone(), other.clone()];
    ids.sort();
    let listed: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ID"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids, "listed by ID");
    let node = d.get("/v1/session/node/consul-double").await.json();
    assert_eq!(node.as_array().unwrap().len(), 2);
    assert_eq!(d.get("/v1/session/node/elsewhere").await.json(), json!([]));

    // Destroy: true, one index; info is then empty, not 404.
    let resp = d.put(&format!("/v1/session/destroy/{id}"), b"").await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
    assert_eq!(resp.index(), 13);
    assert_eq!(info(&d, &id).await, json!([]));
    let list = d.get("/v1/session/list").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["ID"], other.as_str());
    assert_eq!(list[0]["Name"], "second");
    assert_eq!(list[0]["Behavior"], "delete");
    // Destroying an unknown session: true, and nothing moves.
    let resp = d.put(&format!("/v1/session/destroy/{id}"), b"").await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
    assert_eq!(resp.index(), 13);
    assert_eq!(info(&d, "no-such-session").await, json!([]));
    d.put(&format!("/v1/session/destroy/{other}"), b"").await;
    assert_eq!(d.get("/v1/session/list").await.json(), json!([]));
}

#[tokio::test]
async fn create_body_fields() {
    let d = Double::plain();
    let id = d
        .create_session(&json!({
            "Name": "my-lock",
            "TTL": "15s",
            "Behavior": "delete",
            "LockDelay": "250ms",
            "Node": "ignored",
            "Checks": ["ignored"],
            "NodeChecks": [],
            "ServiceChecks": null,
            "Unknown": {"x": 1},
        }))
        .await;
    let session = &info(&d, &id).await[0];
    assert_eq!(session["Name"], "my-lock");
    assert_eq!(session["TTL"], "15s");
    assert_eq!(session["Behavior"], "delete");
    assert_eq!(session["LockDelay"], 250_000_000);
    assert_eq!(session["Node"], "consul-double");
    assert_eq!(session["NodeChecks"], json!(["serfHealth"]));

    // Member names in any case; LockDelay as Consul reads it.
    for (body, lock_delay) in [
        (json!({"lockdelay": 7}), 7_000_000_000i64),
        (json!({"LOCKDELAY": "7ns"}), 7_000_000_000),
        (json!({"LockDelay": 2_500_000_000i64}), 2_500_000_000),
        (json!({"LockDelay": "0s"}), 0),
        (json!({"LockDelay": null}), 15_000_000_000),
        (json!({"ttl": "0s", "behavior": ""}), 15_000_000_000),
    ] {
        let id = d.create_session(&body).await;
        let session = &info(&d, &id).await[0];
        assert_eq!(session["LockDelay"], lock_delay, "{body}");
        assert_eq!(session["Behavior"], "release", "{body}");
    }
    // TTL bounds: 10s and 24h are fine, 0 means none.
    for ttl in ["10s", "86400s", "24h", "0", "0s"] {
        let id = d.create_session(&json!({ "TTL": ttl })).await;
        assert_eq!(info(&d, &id).await[0]["TTL"], ttl);
    }
}

#[tokio::test]
async fn create_errors_are_consuls() {
    let d = Double::plain();
    let before = d.store_index().await;
    for (body, status, message) in [
        (
            r#"{"TTL":"5s"}"#,
            500,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
        ),
        (
            r#"{"TTL":"86401s"}"#,
            500,
            "Invalid Session TTL '86401000000000', must be between [10s=24h0m0s]",
        ),
        (
            r#"{"TTL":"-10s"}"#,
            500,
            "Invalid Session TTL '-10000000000', must be between [10s=24h0m0s]",
        ),
        (
            r#"{"TTL":"abc"}"#,
            500,
            r#"Session TTL 'abc' invalid: time: invalid duration "abc""#,
        ),
        (
            r#"{"TTL":"10"}"#,
            500,
            r#"Session TTL '10' invalid: time: missing unit in duration "10""#,
        ),
        (
            r#"{"Behavior":"keep"}"#,
            500,
            "Invalid Behavior setting 'keep'",
        ),
        (
            r#"{"TTL":10}"#,
            400,
            "Request decode failed: json: cannot unmarshal number into Go struct field \
             Session.TTL of type string",
        ),
        (
            r#"{"LockDelay":"soon"}"#,
            400,
            r#"Request decode failed: time: invalid duration "soon""#,
        ),
    ] {
        let resp = d.put("/v1/session/create", body.as_bytes()).await;
        assert_eq!((resp.status, resp.text()), (status, message), "{body}");
    }
    for body in ["{", "[1]", "   "] {
        let resp = d.put("/v1/session/create", body.as_bytes()).await;
        assert_eq!(resp.status, 400, "{body}");
        assert!(
            resp.text().starts_with("Request decode failed: "),
            "{body}: {}",
            resp.text()
        );
    }
    assert_eq!(d.store_index().await, before, "nothing was created");
    assert_eq!(d.get("/v1/session/list").await.json(), json!([]));

    // A lowered minimum shows in the message.
    let quick = Double::start(quick_sessions());
    let resp = quick.put("/v1/session/create", br#"{"TTL":"50ms"}"#).await;
    assert_eq!(
        (resp.status, resp.text()),
        (
            500,
            "Invalid Session TTL '50000000', must be between [100ms=24h0m0s]"
        )
    );
}

#[tokio::test]
async fn session_paths_methods_and_datacenter() {
    let d = Double::plain();
    for (method, path) in [
        (Method::PUT, "/v1/session/destroy/"),
        (Method::PUT, "/v1/session/renew/"),
        (Method::GET, "/v1/session/info/"),
    ] {
        let resp = d.send(method.clone(), path, None, &[]).await;
        assert_eq!(
            (resp.status, resp.text()),
            (400, "Missing session"),
            "{path}"
        );
    }
    let resp = d.get("/v1/session/node/").await;
    assert_eq!((resp.status, resp.text()), (400, "Missing node name"));
    for (path, location) in [
        ("/v1/session/info", "/v1/session/info/"),
        ("/v1/session/destroy?dc=dc1", "/v1/session/destroy/?dc=dc1"),
        ("/v1/session//list", "/v1/session/list"),
    ] {
        let resp = d.get(path).await;
        assert_eq!(resp.status, 301, "{path}");
        assert_eq!(resp.header("location"), location, "{path}");
    }
    for (method, path, allow) in [
        (Method::GET, "/v1/session/create", "OPTIONS,PUT"),
        (Method::POST, "/v1/session/destroy/x", "OPTIONS,PUT"),
        (Method::GET, "/v1/session/renew/x", "OPTIONS,PUT"),
        (Method::PUT, "/v1/session/info/x", "OPTIONS,GET"),
        (Method::PUT, "/v1/session/list", "OPTIONS,GET"),
    ] {
        let resp = d.send(method.clone(), path, None, &[]).await;
        assert_eq!(resp.status, 405, "{method} {path}");
        assert_eq!(resp.header("allow"), allow, "{method} {path}");
    }
    for path in ["/v1/session/create/", "/v1/session/list/", "/v1/session/x"] {
        assert_eq!(d.put(path, b"").await.status, 404, "{path}");
    }
    for (method, path) in [
        (Method::PUT, "/v1/session/create?dc=dc2"),
        (Method::PUT, "/v1/session/destroy/x?dc=dc2"),
        (Method::PUT, "/v1/session/renew/x?dc=dc2"),
        (Method::GET, "/v1/session/info/x?dc=dc2"),
        (Method::GET, "/v1/session/list?dc=dc2"),
    ] {
        let resp = d.send(method.clone(), path, None, &[]).await;
        assert_eq!(
            (resp.status, resp.text()),
            (500, "No path to datacenter"),
            "{path}"
        );
    }
    let resp = d.get("/v1/session/list?stale&consistent").await;
    assert_eq!(resp.status, 400);
    assert_eq!(d.get("/v1/session/list?dc=dc1").await.status, 200);
    assert_eq!(d.store_index().await, 10, "nothing was created");
}

#[tokio::test]
async fn renew_answers_the_session_or_404() {
    let d = Double::plain();
    let id = d.create_session(&json!({"Name": "r", "TTL": "30s"})).await;
    let index = d.store_index().await;
    let resp = d.put(&format!("/v1/session/renew/{id}"), b"").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), "application/json");
    assert_eq!(resp.json(), info(&d, &id).await);
    assert_eq!(resp.json()[0]["TTL"], "30s");
    assert_eq!(d.store_index().await, index, "a renewal moves no index");
    // A session without TTL renews too.
    let plain = d.create_session(&json!({})).await;
    let resp = d.put(&format!("/v1/session/renew/{plain}"), b"").await;
    assert_eq!(resp.json()[0]["ID"], plain.as_str());

    let resp = d.put("/v1/session/renew/nope", b"").await;
    assert_eq!(
        (resp.status, resp.text()),
        (404, "Session id 'nope' not found")
    );
    d.put(&format!("/v1/session/destroy/{id}"), b"").await;
    let resp = d.put(&format!("/v1/session/renew/{id}"), b"").await;
    assert_eq!(
        (resp.status, resp.text()),
        (404, format!("Session id '{id}' not found").as_str())
    );
}

#[tokio::test]
async fn acquire_release_and_lock_index() {
    let d = Double::plain();
    let s1 = d.create_session(&json!({"Name": "one"})).await;
    let s2 = d.create_session(&json!({"Name": "two"})).await;

    // Acquiring an absent key creates it, held, LockIndex 1.
    assert!(d.acquire("lock", &s1, b"a").await);
    let resp = d.get("/v1/kv/lock").await;
    let index = resp.index();
    assert_eq!(
        resp.text(),
        format!(
            r#"[{{"LockIndex":1,"Key":"lock","Flags":0,"Value":"YQ==","Session":"{s1}","CreateIndex":{index},"ModifyIndex":{index}}}]"#
        )
    );
    // Another session: false, nothing moves.
    assert!(!d.acquire("lock", &s2, b"b").await);
    assert_eq!(d.store_index().await, index);
    // The holder again: the value (and flags) change, LockIndex does not.
    let resp = d
        .put(&format!("/v1/kv/lock?acquire={s1}&flags=42"), b"b")
        .await;
    assert_eq!(resp.text(), "true");
    let entry = d.entry("lock").await;
    assert_eq!(entry["LockIndex"], 1);
    assert_eq!(entry["Flags"], 42);
    assert_eq!(entry["Value"], "Yg==");
    assert_eq!(entry["ModifyIndex"], index + 1);
    assert_eq!(entry["CreateIndex"], index);

    // Release: only by the holder; the body is stored, Session cleared.
    assert!(!d.release("lock", &s2, b"x").await);
    assert!(d.release("lock", &s1, b"c").await);
    let resp = d.get("/v1/kv/lock").await;
    assert!(!resp.text().contains("Session"), "{}", resp.text());
    let entry = &resp.json()[0];
    assert_eq!(entry["LockIndex"], 1);
    assert_eq!(entry["Value"], "Yw==");
    assert_eq!(entry["Flags"], 0);
    assert!(!d.release("lock", &s1, b"c").await, "no longer held");
    assert!(!d.release("absent", &s1, b"").await);
    assert_eq!(d.get("/v1/kv/absent").await.status, 404);

    // A new holder: LockIndex grows by one.
    assert!(d.acquire("lock", &s2, b"d").await);
    let entry = d.entry("lock").await;
    assert_eq!(entry["LockIndex"], 2);
    assert_eq!(entry["Session"], s2.as_str());
    assert!(d.release("lock", &s2, b"").await);
    assert!(d.acquire("lock", &s1, b"e").await);
    assert_eq!(d.entry("lock").await["LockIndex"], 3);

    // A plain PUT keeps the holder but, as Consul, sets LockIndex to 0.
    d.set("lock", b"plain").await;
    let entry = d.entry("lock").await;
    assert_eq!(entry["Session"], s1.as_str());
    assert_eq!(entry["LockIndex"], 0);
    assert!(!d.acquire("lock", &s2, b"f").await, "still held");
    // Acquired again by its holder: LockIndex stays where it is.
    assert!(d.acquire("lock", &s1, b"g").await);
    assert_eq!(d.entry("lock").await["LockIndex"], 0);
    // Released and taken again: it grows from there.
    assert!(d.release("lock", &s1, b"").await);
    assert!(d.acquire("lock", &s1, b"g").await);
    assert_eq!(d.entry("lock").await["LockIndex"], 1);
    // A transaction set does as a plain PUT.
    let resp = d
        .txn(&json!([{"KV": {"Verb": "set", "Key": "lock", "Value": "dA=="}}]))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["Results"][0]["KV"]["Session"], s1.as_str());
    assert_eq!(resp.json()["Results"][0]["KV"]["LockIndex"], 0);
    let entry = d.entry("lock").await;
    assert_eq!(
        (entry["Session"].as_str(), entry["LockIndex"].as_u64()),
        (Some(s1.as_str()), Some(0))
    );

    // Deleting the key removes the lock with it.
    assert_eq!(d.delete("/v1/kv/lock").await.text(), "true");
    assert!(d.acquire("lock", &s2, b"h").await);
    let entry = d.entry("lock").await;
    assert_eq!(entry["Session"], s2.as_str());
    assert_eq!(entry["LockIndex"], 1);
}

#[tokio::test]
async fn lock_errors_and_conflicting_flags() {
    let d = Double::plain();
    let s = d.create_session(&json!({})).await;
    for (path, status, message) in [
        (
            "/v1/kv/k?acquire=5e2c1a9b-0000-4000-8000-000000000000".to_owned(),
            500,
            r#"invalid session "5e2c1a9b-0000-4000-8000-000000000000""#.to_owned(),
        ),
        (
            "/v1/kv/k?acquire".to_owned(),
            500,
            "missing session".to_owned(),
        ),
        (
            "/v1/kv/k?release=".to_owned(),
            500,
            "missing session".to_owned(),
        ),
        (
            format!("/v1/kv/k?cas=0&acquire={s}"),
            400,
            format!("Conflicting flags: acquire={s}&cas=0\n"),
        ),
        (
            format!("/v1/kv/k?release={s}&flags=1&cas=3"),
            400,
            format!("Conflicting flags: cas=3&flags=1&release={s}\n"),
        ),
        (
            "/v1/kv/?acquire=x".to_owned(),
            400,
            "Missing key name".to_owned(),
        ),
    ] {
        let resp = d.put(&path, b"v").await;
        assert_eq!(
            (resp.status, resp.text()),
            (status, message.as_str()),
            "{path}"
        );
    }
    assert_eq!(d.get("/v1/kv/k").await.status, 404);
    // ?flags= goes with a lock.
    assert_eq!(
        d.put(&format!("/v1/kv/k?acquire={s}&flags=7"), b"v")
            .await
            .text(),
        "true"
    );
    assert_eq!(d.entry("k").await["Flags"], 7);
    let resp = d.put(&format!("/v1/kv/k?release={s}&flags=x"), b"v").await;
    assert_eq!(resp.status, 400);
}

#[tokio::test]
async fn destroy_releases_or_deletes_then_lock_delay() {
    let d = Double::plain();
    let release = d
        .create_session(&json!({"Behavior": "release", "LockDelay": "1s"}))
        .await;
    let delete = d
        .create_session(&json!({"Behavior": "delete", "LockDelay": "1s"}))
        .await;
    let other = d.create_session(&json!({"LockDelay": "0s"})).await;
    assert!(d.acquire("r/1", &release, b"1").await);
    assert!(d.acquire("r/2", &release, b"2").await);
    assert!(d.acquire("free", &release, b"f").await);
    assert!(d.release("free", &release, b"f").await);
    assert!(d.acquire("d/1", &delete, b"3").await);
    d.set("untouched", b"u").await;
    let untouched = d.entry("untouched").await;

    // Release behavior: the keys stay, Session cleared, ModifyIndex moved,
    // all at one new index.
    let before = d.store_index().await;
    let resp = d.put(&format!("/v1/session/destroy/{release}"), b"").await;
    let destroyed_at = Instant::now();
    assert_eq!(resp.text(), "true");
    assert_eq!(resp.index(), before + 1);
    for key in ["r/1", "r/2"] {
        let entry = d.entry(key).await;
        assert!(entry.get("Session").is_none(), "{entry}");
        assert_eq!(entry["ModifyIndex"], before + 1, "{key}");
        assert_eq!(entry["LockIndex"], 1, "{key}");
    }
    assert_eq!(d.entry("r/1").await["Value"], "MQ==");
    assert_eq!(d.entry("untouched").await, untouched);

    // The lock-delay: no session may take those keys for now, not even an
    // unknown one (checked first, as Consul); an explicitly released key
    // has none.
    assert!(!d.acquire("r/1", &other, b"x").await);
    let resp = d.put("/v1/kv/r/2?acquire=not-a-session", b"x").await;
    assert_eq!((resp.status, resp.text()), (200, "false"));
    assert!(d.acquire("free", &other, b"x").await);
    // A plain write is not held back.
    d.set("r/2", b"written").await;

    // Delete behavior: the keys go.
    let before = d.store_index().await;
    let resp = d.put(&format!("/v1/session/destroy/{delete}"), b"").await;
    assert_eq!(resp.index(), before + 1);
    assert_eq!(d.get("/v1/kv/d/1").await.status, 404);
    assert!(!d.acquire("d/1", &other, b"x").await);
    assert_eq!(d.get("/v1/kv/d/1").await.status, 404);

    // After the lock-delay the keys can be taken again.
    let left = Duration::from_millis(1100).saturating_sub(destroyed_at.elapsed());
    tokio::time::sleep(left).await;
    assert!(d.acquire("r/1", &other, b"y").await);
    assert!(d.acquire("r/2", &other, b"y").await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(d.acquire("d/1", &other, b"y").await);
    assert_eq!(d.entry("d/1").await["LockIndex"], 1);

    // A session with no lock-delay: its keys are free at once.
    let resp = d.put(&format!("/v1/session/destroy/{other}"), b"").await;
    assert_eq!(resp.text(), "true");
    let again = d.create_session(&json!({})).await;
    assert!(d.acquire("r/1", &again, b"z").await);
    // Held by `release`, then `other`, now `again`.
    assert_eq!(d.entry("r/1").await["LockIndex"], 3);
}

/// Polls until the session is gone; the time from `started`.
async fn gone_after(d: &Double, id: &str, started: Instant) -> Duration {
    loop {
        if info(d, id).await == json!([]) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn ttl_expiry_deletes_by_the_timer() {
    let d = Double::start(quick_sessions());
    let started = Instant::now();
    let id = d
        .create_session(&json!({"TTL": "500ms", "Behavior": "delete", "LockDelay": "0s"}))
        .await;
    assert!(d.acquire("ephemeral", &id, b"v").await);
    let index = d.entry("ephemeral").await["ModifyIndex"].as_u64().unwrap();
    // Nothing but the timer changes the store now: a blocking query on the
    // key comes back when the key is deleted.
    let resp = d
        .get(&format!("/v1/kv/ephemeral?index={index}&wait=10s"))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.index(), index + 1, "the expiry moved the index by one");
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(900),
        "expired after {elapsed:?}"
    );
    assert_eq!(info(&d, &id).await, json!([]));
    let resp = d.put(&format!("/v1/session/renew/{id}"), b"").await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn ttl_expiry_releases_and_renewal_postpones_it() {
    let d = Double::start(quick_sessions());
    let started = Instant::now();
    let id = d
        .create_session(&json!({"TTL": "400ms", "LockDelay": "0s"}))
        .await;
    assert!(d.acquire("held", &id, b"v").await);
    // Renewed every 200ms for 1s: it outlives its TTL.
    let mut last_renewal = Instant::now();
    while started.elapsed() < Duration::from_millis(1000) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last_renewal = Instant::now();
        let resp = d.put(&format!("/v1/session/renew/{id}"), b"").await;
        assert_eq!(resp.status, 200, "renewal after {:?}", started.elapsed());
    }
    assert_eq!(d.entry("held").await["Session"], id.as_str());
    // Then it goes, 400ms after the last renewal.
    let elapsed = gone_after(&d, &id, last_renewal).await;
    assert!(
        elapsed >= Duration::from_millis(390) && elapsed < Duration::from_millis(800),
        "expired {elapsed:?} after the last renewal"
    );
    let entry = d.entry("held").await;
    assert!(entry.get("Session").is_none(), "{entry}");
    assert_eq!(entry["Value"], "dg==");
}

#[tokio::test]
async fn the_default_multiplier_doubles_the_ttl() {
    let d = Double::start(Config {
        min_session_ttl: Duration::from_millis(100),
        ..Config::default()
    });
    let started = Instant::now();
    let id = d.create_session(&json!({"TTL": "300ms"})).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        info(&d, &id).await.as_array().unwrap().len(),
        1,
        "still there past its TTL"
    );
    let elapsed = gone_after(&d, &id, started).await;
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_millis(1000),
        "expired after {elapsed:?}"
    );
}

#[tokio::test]
async fn ttl_zero_never_expires() {
    let d = Double::start(quick_sessions());
    let id = d.create_session(&json!({"TTL": "0s"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(info(&d, &id).await[0]["TTL"], "0s");
}

#[test]
fn a_bad_multiplier_is_refused() {
    for multiplier in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let config = Config {
            session_ttl_multiplier: multiplier,
            ..Config::default()
        };
        let error = consul_double::start(config, common::localhost()).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::InvalidInput,
            "{multiplier}"
        );
    }
}
