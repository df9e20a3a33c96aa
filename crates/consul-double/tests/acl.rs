//! ACL tokens: required on every known endpoint when configured.

mod common;

use common::{Double, Resp};
use consul_double::Config;
use reqwest::Method;

const TOKEN: &str = "s3cr3t-2f1c";

fn guarded() -> Double {
    Double::start(Config {
        acl_token: Some(TOKEN.to_owned()),
        ..Config::default()
    })
}

/// Every endpoint, with a request that succeeds given the token.
const ENDPOINTS: &[(&str, &str)] = &[
    ("PUT", "/v1/kv/k"),
    ("GET", "/v1/kv/k"),
    ("GET", "/v1/kv/k?raw"),
    ("GET", "/v1/kv/?recurse"),
    ("GET", "/v1/kv/?keys"),
    ("DELETE", "/v1/kv/k"),
    ("PUT", "/v1/txn"),
    ("PUT", "/v1/session/create"),
    (
        "PUT",
        "/v1/session/destroy/00000000-0000-0000-0000-000000000000",
    ),
    (
        "GET",
        "/v1/session/info/00000000-0000-0000-0000-000000000000",
    ),
    ("GET", "/v1/session/node/consul-double"),
    ("GET", "/v1/session/list"),
    ("GET", "/v1/agent/self"),
    ("GET", "/v1/status/leader"),
];

async fn call(d: &Double, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    // A transaction that succeeds whatever the store holds.
    let body = if path.starts_with("/v1/txn") {
        Some(br#"[{"KV":{"Verb":"set","Key":"t","Value":"dg=="}}]"#.to_vec())
    } else if path.starts_with("/v1/session/create") {
        Some(br#"{"Name":"acl"}"#.to_vec())
    } else {
        (method == Method::PUT).then(|| b"v".to_vec())
    };
    d.send(method, path, body, headers).await
}

fn with_query_token(path: &str, token: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}token={token}")
}

#[tokio::test]
async fn no_token_is_permission_denied() {
    let d = guarded();
    for (method, path) in ENDPOINTS {
        let resp = call(&d, method, path, &[]).await;
        assert_eq!(resp.status, 403, "{method} {path}");
        assert!(
            resp.text()
                .starts_with("Permission denied: anonymous token lacks permission"),
            "{method} {path}: {}",
            resp.text()
        );
    }
    // Empty tokens are no tokens.
    for headers in [
        &[("X-Consul-Token", "")][..],
        &[("Authorization", "Bearer ")][..],
        &[("Authorization", "Basic abc")][..],
    ] {
        let resp = call(&d, "GET", "/v1/kv/k", headers).await;
        assert_eq!(resp.status, 403, "{headers:?}");
        assert!(resp.text().starts_with("Permission denied"), "{headers:?}");
    }
    let resp = call(&d, "GET", "/v1/kv/k?token=", &[]).await;
    assert!(resp.text().starts_with("Permission denied"));
}

#[tokio::test]
async fn a_wrong_token_is_acl_not_found_each_way() {
    let d = guarded();
    for (method, path) in ENDPOINTS {
        for (path, headers) in [
            (path.to_string(), vec![("X-Consul-Token", "wrong")]),
            (path.to_string(), vec![("Authorization", "Bearer wrong")]),
            (with_query_token(path, "wrong"), vec![]),
        ] {
            let resp = call(&d, method, &path, &headers).await;
            assert_eq!(
                (resp.status, resp.text()),
                (403, "ACL not found"),
                "{method} {path} {headers:?}"
            );
        }
    }
    // Nothing was written by the refused PUTs.
    let resp = call(&d, "GET", "/v1/kv/?keys", &[("X-Consul-Token", TOKEN)]).await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn the_right_token_works_each_way() {
    let d = guarded();
    let bearer = format!("Bearer {TOKEN}");
    let ways: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("header", vec![("X-Consul-Token", TOKEN)]),
        ("bearer", vec![("Authorization", bearer.as_str())]),
        ("query", vec![]),
    ];
    for (way, headers) in &ways {
        for (method, path) in ENDPOINTS {
            let path = if *way == "query" {
                with_query_token(path, TOKEN)
            } else {
                path.to_string()
            };
            let resp = call(&d, method, &path, headers).await;
            assert_eq!(resp.status, 200, "{way}: {method} {path}: {}", resp.text());
        }
    }
    // The scheme is case-insensitive, extra spaces are trimmed.
    let resp = call(
        &d,
        "PUT",
        "/v1/kv/z",
        &[("Authorization", &format!("bearer   {TOKEN}  "))],
    )
    .await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
}

#[tokio::test]
async fn token_precedence_is_query_then_header_then_bearer() {
    let d = guarded();
    let bearer_ok = format!("Bearer {TOKEN}");
    // ?token= wins over a right header.
    let resp = call(
        &d,
        "GET",
        "/v1/status/leader?token=wrong",
        &[("X-Consul-Token", TOKEN)],
    )
    .await;
    assert_eq!(resp.text(), "ACL not found");
    // X-Consul-Token wins over Authorization.
    let resp = call(
        &d,
        "GET",
        "/v1/status/leader",
        &[("X-Consul-Token", TOKEN), ("Authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(resp.status, 200);
    let resp = call(
        &d,
        "GET",
        "/v1/status/leader",
        &[("X-Consul-Token", "wrong"), ("Authorization", &bearer_ok)],
    )
    .await;
    assert_eq!(resp.status, 403);
}

#[tokio::test]
async fn session_renew_and_locks_need_the_token() {
    let d = guarded();
    let token = [("X-Consul-Token", TOKEN)];
    let resp = call(&d, "PUT", "/v1/session/renew/abc", &[]).await;
    assert_eq!(resp.status, 403);
    assert!(
        resp.text().starts_with(
            "Permission denied: anonymous token lacks permission 'session:write' on \"consul-double\""
        ),
        "{}",
        resp.text()
    );
    let resp = call(&d, "PUT", "/v1/session/renew/abc", &token).await;
    assert_eq!(
        (resp.status, resp.text()),
        (404, "Session id 'abc' not found")
    );
    let resp = call(&d, "GET", "/v1/session/list", &[]).await;
    assert!(resp.text().contains("'session:read'"), "{}", resp.text());

    let created = call(&d, "PUT", "/v1/session/create", &token).await;
    let id = created.json()["ID"].as_str().unwrap().to_owned();
    let resp = call(&d, "PUT", &format!("/v1/kv/l?acquire={id}"), &[]).await;
    assert_eq!(resp.status, 403);
    let resp = call(&d, "PUT", &format!("/v1/kv/l?acquire={id}"), &token).await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
    let resp = call(
        &d,
        "PUT",
        &format!("/v1/kv/l?release={id}"),
        &[("X-Consul-Token", "no")],
    )
    .await;
    assert_eq!((resp.status, resp.text()), (403, "ACL not found"));
    let resp = call(&d, "PUT", &format!("/v1/session/destroy/{id}"), &[]).await;
    assert_eq!(resp.status, 403);
    let resp = call(&d, "GET", &format!("/v1/session/info/{id}"), &token).await;
    assert_eq!(resp.json()[0]["ID"], id.as_str(), "still there");
}

#[tokio::test]
async fn unknown_paths_are_404_before_acl() {
    let d = guarded();
    let resp = call(&d, "GET", "/v1/catalog/nodes", &[]).await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn without_acl_tokens_are_ignored() {
    let d = Double::plain();
    let resp = call(
        &d,
        "PUT",
        "/v1/kv/k?token=anything",
        &[("X-Consul-Token", "x")],
    )
    .await;
    assert_eq!((resp.status, resp.text()), (200, "true"));
}
