//! The HTTP side: routing, Consul's checks in Consul's order, the answers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::go;
use crate::session;
use crate::store::{Behavior, NewSession, Session, Snapshot, Store, TxnEntry};
use crate::txn::{self, TxnError, MAX_TXN_OPS};
use crate::{Config, CONSUL_VERSION, MAX_VALUE_SIZE};

type Reply = Response<Full<Bytes>>;

/// Bodies larger than this are not even drained: the connection is closed.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The node name and addresses the double reports.
const NODE_NAME: &str = "consul-double";
const LEADER: &str = "127.0.0.1:8300";

const KV_METHODS: &[Method] = &[Method::GET, Method::PUT, Method::DELETE];
const READ_METHODS: &[Method] = &[Method::GET];
const WRITE_METHODS: &[Method] = &[Method::PUT];
const SNAPSHOT_METHODS: &[Method] = &[Method::GET, Method::PUT];

/// Consul's `SessionTTLMax`: the longest TTL a session may have.
const MAX_SESSION_TTL: Duration = Duration::from_secs(86400);

/// Consul's default lock-delay of a new session.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);

/// Consul's `defaultQueryTime` and `maxQueryTime` for blocking queries.
const DEFAULT_QUERY_TIME: Duration = Duration::from_secs(300);
const MAX_QUERY_TIME: Duration = Duration::from_secs(600);

/// Subtrees, as registered with Go's `http.ServeMux`: the path without its
/// final slash is redirected to the subtree.
const SUBTREES: &[&str] = &[
    "/v1/kv",
    "/v1/session/destroy",
    "/v1/session/renew",
    "/v1/session/info",
    "/v1/session/node",
];

pub(crate) struct State {
    datacenter: String,
    acl_token: Option<String>,
    session_ttl_multiplier: f64,
    min_session_ttl: Duration,
    store: Mutex<Store>,
}

impl State {
    pub(crate) fn new(config: Config) -> Self {
        State {
            datacenter: config.datacenter,
            acl_token: config.acl_token,
            session_ttl_multiplier: config.session_ttl_multiplier,
            min_session_ttl: config.min_session_ttl,
            store: Mutex::new(Store::new()),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the map consistent enough
        // for a test double: go on with it.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request body as the KV `PUT` sees it.
enum Body {
    Value(Vec<u8>),
    TooLarge,
    Broken,
}

async fn read_body(headers: &HeaderMap, mut body: Incoming) -> Body {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > DRAIN_LIMIT as u64) {
        return Body::TooLarge;
    }
    let mut value = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Body::Broken;
        };
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > DRAIN_LIMIT {
                return Body::TooLarge;
            }
            // Past the limit the rest is only drained, so that the client
            // reads the 413 rather than a reset connection.
            if total <= MAX_VALUE_SIZE {
                value.extend_from_slice(&data);
            }
        }
    }
    if total > MAX_VALUE_SIZE {
        Body::TooLarge
    } else {
        Body::Value(value)
    }
}

/// Invalidates a session with a TTL once it has gone unrenewed for its
/// renew period: sleeps until the session's expiry, and again if it was
/// renewed meanwhile; ends when the session is gone.
async fn session_timer(state: Arc<State>, id: String) {
    loop {
        let expires = {
            let mut store = state.store();
            let now = Instant::now();
            match store.session(&id).and_then(|session| session.expires) {
                None => return,
                Some(expires) if expires <= now => {
                    store.destroy_session(&id, now);
                    return;
                }
                Some(expires) => expires,
            }
        };
        tokio::time::sleep_until(expires.into()).await;
    }
}

pub(crate) async fn handle(state: &Arc<State>, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body).await;
    let mut reply = route(state, &parts, body).await;
    let headers = reply.headers_mut();
    if !headers.contains_key("x-consul-index") {
        let index = state.store().index();
        headers.insert("x-consul-index", HeaderValue::from(index));
    }
    headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    headers.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    reply
}

enum Endpoint<'a> {
    Kv(&'a str),
    Txn,
    SessionCreate,
    SessionDestroy(&'a str),
    SessionRenew(&'a str),
    SessionInfo(&'a str),
    SessionNode(&'a str),
    SessionList,
    AgentSelf,
    StatusLeader,
    StatusPeers,
    Snapshot,
}

async fn route(state: &Arc<State>, parts: &Parts, body: Body) -> Reply {
    // Go's net/http answers a request-target with a bad %-escape with 400.
    let Some(path) = percent_decode(parts.uri.path().as_bytes(), false) else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request");
    };
    // Go's http.ServeMux (which Consul uses) redirects an unclean path to
    // its clean form, and a subtree root without its slash to the subtree.
    let cleaned = clean_path(&path);
    if cleaned != path {
        return redirect(&parts.method, &cleaned, parts.uri.query());
    }
    if let Some(root) = SUBTREES.iter().find(|root| root.as_bytes() == path) {
        return redirect(
            &parts.method,
            format!("{root}/").as_bytes(),
            parts.uri.query(),
        );
    }
    let Ok(path) = String::from_utf8(path) else {
        return text(
            StatusCode::BAD_REQUEST,
            "consul-double: the path (and so the key) is not valid UTF-8 once percent-decoded",
        );
    };
    let query = Query::parse(parts.uri.query());

    let (endpoint, methods) = if let Some(key) = path.strip_prefix("/v1/kv/") {
        (Endpoint::Kv(key), KV_METHODS)
    } else if let Some(id) = path.strip_prefix("/v1/session/destroy/") {
        (Endpoint::SessionDestroy(id), WRITE_METHODS)
    } else if let Some(id) = path.strip_prefix("/v1/session/renew/") {
        (Endpoint::SessionRenew(id), WRITE_METHODS)
    } else if let Some(id) = path.strip_prefix("/v1/session/info/") {
        (Endpoint::SessionInfo(id), READ_METHODS)
    } else if let Some(node) = path.strip_prefix("/v1/session/node/") {
        (Endpoint::SessionNode(node), READ_METHODS)
    } else {
        match path.as_str() {
            "/v1/txn" => (Endpoint::Txn, WRITE_METHODS),
            "/v1/session/create" => (Endpoint::SessionCreate, WRITE_METHODS),
            "/v1/session/list" => (Endpoint::SessionList, READ_METHODS),
            "/v1/agent/self" => (Endpoint::AgentSelf, READ_METHODS),
            "/v1/status/leader" => (Endpoint::StatusLeader, READ_METHODS),
            "/v1/status/peers" => (Endpoint::StatusPeers, READ_METHODS),
            "/v1/snapshot" => (Endpoint::Snapshot, SNAPSHOT_METHODS),
            _ => return empty(StatusCode::NOT_FOUND),
        }
    };
    if parts.method == Method::OPTIONS {
        let mut reply = empty(StatusCode::OK);
        reply.headers_mut().insert(header::ALLOW, allow(methods));
        return reply;
    }
    if !methods.contains(&parts.method) {
        let mut reply = text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {} not allowed", parts.method),
        );
        reply.headers_mut().insert(header::ALLOW, allow(methods));
        return reply;
    }

    let request = Ctx {
        state,
        query: &query,
        headers: &parts.headers,
    };
    match endpoint {
        Endpoint::Kv(key) => match parts.method {
            Method::GET => request.kv_get(key).await,
            Method::PUT => request.kv_put(key, body),
            _ => request.kv_delete(key),
        },
        Endpoint::Txn => request.txn(body),
        Endpoint::SessionCreate => request.session_create(body),
        Endpoint::SessionDestroy(id) => request.session_destroy(id),
        Endpoint::SessionRenew(id) => request.session_renew(id),
        Endpoint::SessionInfo(id) => request.session_info(id).await,
        Endpoint::SessionNode(node) => request.session_node(node).await,
        Endpoint::SessionList => request.session_list().await,
        Endpoint::AgentSelf => request.agent_self(),
        Endpoint::StatusLeader => request.status(serde_json::json!(LEADER)),
        Endpoint::StatusPeers => request.status(serde_json::json!([LEADER])),
        Endpoint::Snapshot => match parts.method {
            Method::GET => request.snapshot_save(),
            _ => request.snapshot_restore(body),
        },
    }
}

/// One request's view: the state, its query and its headers.
struct Ctx<'a> {
    state: &'a Arc<State>,
    query: &'a Query,
    headers: &'a HeaderMap,
}

/// A KV entry as Consul's JSON gives it (`structs.DirEntry`: fields in
/// Consul's order, `Session` only when a session holds the key).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    session: &'a str,
    create_index: u64,
    modify_index: u64,
}

/// A session as Consul's JSON gives it (`structs.Session` in Consul's
/// field order; `Checks` is omitted when empty, as since Consul 1.7).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    node: &'a str,
    /// Go's `time.Duration`: nanoseconds.
    lock_delay: i64,
    behavior: &'a str,
    #[serde(rename = "TTL")]
    ttl: &'a str,
    node_checks: [&'a str; 1],
    service_checks: Option<[(); 0]>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> SessionJson<'a> {
    fn new(session: &'a Session) -> Self {
        SessionJson {
            id: &session.id,
            name: &session.name,
            node: NODE_NAME,
            lock_delay: session.lock_delay,
            behavior: session.behavior.as_str(),
            ttl: &session.ttl,
            node_checks: ["serfHealth"],
            service_checks: None,
            create_index: session.create_index,
            modify_index: session.modify_index,
        }
    }
}

/// `PUT /v1/session/create`'s answer.
#[derive(Serialize)]
struct SessionCreated<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
}

/// The answer of a transaction that ran (200) or was rolled back (409).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnReply<'a> {
    results: Option<Vec<TxnResult<'a>>>,
    errors: Option<Vec<TxnErrorJson<'a>>>,
}

#[derive(Serialize)]
struct TxnResult<'a> {
    #[serde(rename = "KV")]
    kv: KvPair<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnErrorJson<'a> {
    op_index: usize,
    what: &'a str,
}

impl<'a> KvPair<'a> {
    fn new(key: &'a str, entry: &'a crate::store::Entry) -> Self {
        KvPair {
            lock_index: entry.lock_index,
            key,
            flags: entry.flags,
            // Go's encoding/json gives a nil []byte as null.
            value: (!entry.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value)),
            session: &entry.session,
            create_index: entry.create_index,
            modify_index: entry.modify_index,
        }
    }
}

impl Ctx<'_> {
    /// Consul's `parse()` for reads: consistency modes and blocking-query
    /// parameters are checked (the consistency modes are then ignored).
    fn check_read_options(&self) -> Option<Reply> {
        let q = self.query;
        if q.has("stale") && q.has("consistent") {
            return Some(text(
                StatusCode::BAD_REQUEST,
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        let wait = q.get("wait");
        if !wait.is_empty() && !is_go_duration(wait) {
            return Some(text(StatusCode::BAD_REQUEST, "Invalid wait time"));
        }
        let index = q.get("index");
        if !index.is_empty() && parse_go_uint(index).is_none() {
            return Some(text(StatusCode::BAD_REQUEST, "Invalid index"));
        }
        None
    }

    /// `?index=` (0 when absent: no blocking) and how long a blocking query
    /// may wait: `?wait=` within Consul's bounds (at most 10 minutes, 5 when
    /// absent or not positive), without Consul's jitter. The parameters
    /// were checked by `check_read_options`.
    fn blocking_params(&self) -> (u64, Duration) {
        blocking_params(self.query.get("index"), self.query.get("wait"))
    }

    /// Answers a read as Consul's `blockingQuery`: `read` gives the answer
    /// and its index. With `?index=N` (N > 0), while that index is not above
    /// N, the read runs again after each move of the store index, until the
    /// wait is over (then the last answer is given). An N above the current
    /// index (an index reset) waits too, as in Consul. The answer carries
    /// its index as `X-Consul-Index`.
    async fn blocking<F>(&self, read: F) -> Reply
    where
        F: Fn(&Store) -> (Reply, u64),
    {
        let (min_index, wait) = self.blocking_params();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Subscribed under the same lock as the read: no write is missed.
            let (mut changes, (mut reply, index)) = {
                let store = self.state.store();
                (store.subscribe(), read(&store))
            };
            let done = min_index == 0
                || index > min_index
                || !matches!(
                    tokio::time::timeout_at(deadline, changes.changed()).await,
                    Ok(Ok(()))
                );
            if done {
                reply
                    .headers_mut()
                    .insert("x-consul-index", HeaderValue::from(index));
                return reply;
            }
        }
    }

    /// `?dc=` naming a datacenter the double is not: Consul cannot forward.
    fn check_datacenter(&self) -> Option<Reply> {
        let dc = self.query.get("dc");
        (!dc.is_empty() && dc != self.state.datacenter)
            .then(|| text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter"))
    }

    /// The token the request presents, in Consul's order of precedence.
    fn token(&self) -> &str {
        let from_query = self.query.get("token");
        if !from_query.is_empty() {
            return from_query;
        }
        let header = |name| self.headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(token) = header(header::HeaderName::from_static("x-consul-token")) {
            if !token.is_empty() {
                return token;
            }
        }
        if let Some(authorization) = header(header::AUTHORIZATION) {
            // "<scheme> <value>", scheme Bearer in any case; the first word
            // of the value is the token (as Consul's parseTokenFromHeaders).
            if let Some((scheme, rest)) = authorization.split_once(' ') {
                if scheme.eq_ignore_ascii_case("bearer") {
                    return rest.trim().split(' ').next().unwrap_or("").trim();
                }
            }
        }
        ""
    }

    /// With ACLs on, the request must present the token; `permission` and
    /// `resource` only shape the message, as Consul's would read.
    fn check_acl(&self, permission: &str, resource: &str) -> Option<Reply> {
        let wanted = self.state.acl_token.as_deref()?;
        let presented = self.token();
        if presented == wanted {
            None
        } else if presented.is_empty() {
            Some(text(
                StatusCode::FORBIDDEN,
                &format!(
                    "Permission denied: anonymous token lacks permission '{permission}' on \
                     {resource:?}. The anonymous token is used implicitly when a request \
                     does not specify a token."
                ),
            ))
        } else {
            Some(text(StatusCode::FORBIDDEN, "ACL not found"))
        }
    }

    fn json(&self, value: &impl Serialize) -> Reply {
        // Consul: `?pretty` indents by four spaces and ends with a newline.
        let body = if self.query.has("pretty") {
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
            value
                .serialize(&mut serializer)
                .expect("serializing to memory");
            out.push(b'\n');
            out
        } else {
            serde_json::to_vec(value).expect("serializing to memory")
        };
        let mut reply = Response::new(Full::new(Bytes::from(body)));
        reply.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        reply
    }

    async fn kv_get(&self, key: &str) -> Reply {
        if let Some(reply) = self.check_read_options() {
            return reply;
        }
        let keys = self.query.has("keys");
        let recurse = self.query.has("recurse");
        if !keys && !recurse && key.is_empty() {
            return text(StatusCode::BAD_REQUEST, "Missing key name");
        }
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        let permission = if keys { "key:list" } else { "key:read" };
        if let Some(reply) = self.check_acl(permission, key) {
            return reply;
        }
        // Consul still honours its historic misspelling.
        let mut separator = self.query.get("seperator");
        if separator.is_empty() {
            separator = self.query.get("separator");
        }
        let raw = self.query.has("raw");
        self.blocking(|store| {
            if keys {
                self.kv_keys(store, key, separator)
            } else if recurse {
                self.kv_list(store, key)
            } else {
                self.kv_one(store, key, raw)
            }
        })
        .await
    }

    /// `?keys`: the names, with the store-wide index.
    fn kv_keys(&self, store: &Store, prefix: &str, separator: &str) -> (Reply, u64) {
        let names = store.keys(prefix, separator);
        let reply = if names.is_empty() {
            empty(StatusCode::NOT_FOUND)
        } else {
            self.json(&names)
        };
        (reply, store.index())
    }

    /// `?recurse`: the entries, with the store-wide index.
    fn kv_list(&self, store: &Store, prefix: &str) -> (Reply, u64) {
        let pairs: Vec<KvPair<'_>> = store
            .list(prefix)
            .map(|(key, entry)| KvPair::new(key, entry))
            .collect();
        let reply = if pairs.is_empty() {
            empty(StatusCode::NOT_FOUND)
        } else {
            self.json(&pairs)
        };
        (reply, store.index())
    }

    /// One key: with its ModifyIndex, or (absent) the store-wide index.
    fn kv_one(&self, store: &Store, key: &str, raw: bool) -> (Reply, u64) {
        let Some(entry) = store.get(key) else {
            return (empty(StatusCode::NOT_FOUND), store.index());
        };
        let reply = if raw {
            let content_type = if std::str::from_utf8(&entry.value).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            let mut reply = Response::new(Full::new(Bytes::from(entry.value.clone())));
            reply
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            reply
        } else {
            self.json(&[KvPair::new(key, entry)])
        };
        (reply, entry.modify_index)
    }

    fn kv_put(&self, key: &str, body: Body) -> Reply {
        if key.is_empty() {
            return text(StatusCode::BAD_REQUEST, "Missing key name");
        }
        // Consul's conflictingFlags: at most one of these.
        let given = ["cas", "acquire", "release"]
            .iter()
            .filter(|flag| self.query.has(flag))
            .count();
        if given > 1 {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("Conflicting flags: {}\n", go::encode_query(&self.query.0)),
            );
        }
        let mut flags = 0;
        if self.query.has("flags") {
            let raw = self.query.get("flags");
            let Some(parsed) = parse_go_uint(raw) else {
                return text(StatusCode::BAD_REQUEST, &format!("Invalid flags: {raw:?}"));
            };
            flags = parsed;
        }
        let cas = match self.cas() {
            Ok(cas) => cas,
            Err(message) => return text(StatusCode::BAD_REQUEST, &message),
        };
        let value = match body {
            Body::Value(value) => value,
            Body::TooLarge => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("Value exceeds {MAX_VALUE_SIZE} byte limit"),
                )
            }
            Body::Broken => return text(StatusCode::BAD_REQUEST, "400 Bad Request"),
        };
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        if let Some(reply) = self.check_acl("key:write", key) {
            return reply;
        }
        let mut store = self.state.store();
        let written = if self.query.has("acquire") {
            store.lock(key, value, flags, self.query.get("acquire"), Instant::now())
        } else if self.query.has("release") {
            store.unlock(key, value, flags, self.query.get("release"))
        } else {
            Ok(store.put(key, value, flags, cas))
        };
        drop(store);
        let written = match written {
            Ok(written) => written,
            Err(message) => return text(StatusCode::INTERNAL_SERVER_ERROR, &message),
        };
        self.json(&written)
    }

    fn kv_delete(&self, key: &str) -> Reply {
        let recurse = self.query.has("recurse");
        if !recurse && key.is_empty() {
            return text(StatusCode::BAD_REQUEST, "Missing key name");
        }
        let cas = match self.cas() {
            Ok(cas) => cas,
            Err(message) => return text(StatusCode::BAD_REQUEST, &message),
        };
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        if let Some(reply) = self.check_acl("key:write", key) {
            return reply;
        }
        let mut store = self.state.store();
        // As Consul: `cas` turns any delete, even a recursive one, into a
        // check-and-set delete of the one key.
        let deleted = match cas {
            Some(_) => store.delete(key, cas),
            None if recurse => store.delete_tree(key),
            None => store.delete(key, None),
        };
        drop(store);
        self.json(&deleted)
    }

    /// `PUT /v1/session/create`, in Consul's order: the body (read only
    /// when the request declares a `Content-Length` above 0, as Consul),
    /// the datacenter, the token, then Consul's `Session.Apply` checks
    /// (behavior, TTL: both answered 500 with Consul's message).
    fn session_create(&self, body: Body) -> Reply {
        let declared = self
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut request = session::Request::new(DEFAULT_LOCK_DELAY);
        if declared > 0 {
            let body = match body {
                Body::Value(body) => body,
                Body::TooLarge => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("consul-double: a session body is at most {MAX_VALUE_SIZE} bytes"),
                    )
                }
                Body::Broken => return text(StatusCode::BAD_REQUEST, "400 Bad Request"),
            };
            if let Err(error) = request.decode(&body) {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: {error}"),
                );
            }
        }
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        if let Some(reply) = self.check_acl("session:write", NODE_NAME) {
            return reply;
        }
        let behavior = match request.behavior.as_str() {
            "" | "release" => Behavior::Release,
            "delete" => Behavior::Delete,
            other => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("Invalid Behavior setting '{other}'"),
                )
            }
        };
        let mut renew_period = None;
        if !request.ttl.is_empty() {
            let ttl = match go::parse_duration(&request.ttl) {
                Ok(ttl) => ttl,
                Err(error) => {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("Session TTL '{}' invalid: {error}", request.ttl),
                    )
                }
            };
            let min = i64::try_from(self.state.min_session_ttl.as_nanos()).unwrap_or(i64::MAX);
            let max = MAX_SESSION_TTL.as_nanos() as i64;
            if ttl != 0 && (ttl < min || ttl > max) {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!(
                        "Invalid Session TTL '{ttl}', must be between [{}={}]",
                        go::format_duration(min),
                        go::format_duration(max)
                    ),
                );
            }
            if ttl > 0 {
                // A period too long to represent never comes.
                let period = Duration::from_nanos(ttl as u64).as_secs_f64()
                    * self.state.session_ttl_multiplier;
                renew_period = Some(Duration::try_from_secs_f64(period).unwrap_or(Duration::MAX));
            }
        }
        let new = NewSession {
            name: request.name,
            behavior,
            ttl: request.ttl,
            lock_delay: request.lock_delay,
            renew_period,
        };
        let id = self
            .state
            .store()
            .create_session(new, Instant::now())
            .id
            .clone();
        if renew_period.is_some() {
            tokio::spawn(session_timer(self.state.clone(), id.clone()));
        }
        self.json(&SessionCreated { id: &id })
    }

    /// `PUT /v1/session/destroy/<id>`: `true`, whether or not the session
    /// existed.
    fn session_destroy(&self, id: &str) -> Reply {
        if id.is_empty() {
            return text(StatusCode::BAD_REQUEST, "Missing session");
        }
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        if let Some(reply) = self.check_acl("session:write", NODE_NAME) {
            return reply;
        }
        self.state.store().destroy_session(id, Instant::now());
        self.json(&true)
    }

    /// `PUT /v1/session/renew/<id>`: the session, in an array of one, or
    /// 404 for an unknown (or expired) one.
    fn session_renew(&self, id: &str) -> Reply {
        if let Some(reply) = self.check_read_options() {
            return reply;
        }
        if id.is_empty() {
            return text(StatusCode::BAD_REQUEST, "Missing session");
        }
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        if let Some(reply) = self.check_acl("session:write", NODE_NAME) {
            return reply;
        }
        let mut store = self.state.store();
        match store.renew_session(id, Instant::now()) {
            Some(session) => self.json(&[SessionJson::new(session)]),
            None => text(
                StatusCode::NOT_FOUND,
                &format!("Session id '{id}' not found"),
            ),
        }
    }

    /// The checks of the session reads (`info`, `node`, `list`) after the
    /// read options and the path.
    fn check_session_read(&self) -> Option<Reply> {
        self.check_datacenter()
            .or_else(|| self.check_acl("session:read", NODE_NAME))
    }

    /// `GET /v1/session/info/<id>`: an array of 0 or 1 sessions.
    async fn session_info(&self, id: &str) -> Reply {
        if let Some(reply) = self.check_read_options() {
            return reply;
        }
        if id.is_empty() {
            return text(StatusCode::BAD_REQUEST, "Missing session");
        }
        if let Some(reply) = self.check_session_read() {
            return reply;
        }
        self.blocking(|store| {
            let found: Vec<SessionJson<'_>> = store
                .session(id)
                .map(SessionJson::new)
                .into_iter()
                .collect();
            (self.json(&found), store.index())
        })
        .await
    }

    /// `GET /v1/session/node/<node>`: every session is on the double's node.
    async fn session_node(&self, node: &str) -> Reply {
        if let Some(reply) = self.check_read_options() {
            return reply;
        }
        if node.is_empty() {
            return text(StatusCode::BAD_REQUEST, "Missing node name");
        }
        if let Some(reply) = self.check_session_read() {
            return reply;
        }
        let mine = node == NODE_NAME;
        self.blocking(|store| {
            let found: Vec<SessionJson<'_>> = store
                .sessions()
                .filter(|_| mine)
                .map(SessionJson::new)
                .collect();
            (self.json(&found), store.index())
        })
        .await
    }

    /// `GET /v1/session/list`: every session, by ID.
    async fn session_list(&self) -> Reply {
        if let Some(reply) = self.check_read_options() {
            return reply;
        }
        if let Some(reply) = self.check_session_read() {
            return reply;
        }
        self.blocking(|store| {
            let all: Vec<SessionJson<'_>> = store.sessions().map(SessionJson::new).collect();
            (self.json(&all), store.index())
        })
        .await
    }

    /// `PUT /v1/txn`, KV operations only, in Consul's order: the body
    /// (size, JSON, number of operations, each value's size), then for a
    /// read-only transaction the read options, the datacenter, the token,
    /// and last the transaction itself under the store's lock.
    fn txn(&self, body: Body) -> Reply {
        let body = match body {
            Body::Value(body) => body,
            Body::TooLarge => {
                let declared = self
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let size = match declared {
                    Some(length) => format!("Request body({length} bytes) too large"),
                    None => "Request body too large".to_owned(),
                };
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "{size}, max size: {MAX_VALUE_SIZE} bytes. See \
                         https://www.consul.io/docs/agent/config/config-files#txn_max_req_len."
                    ),
                );
            }
            Body::Broken => return text(StatusCode::BAD_REQUEST, "400 Bad Request"),
        };
        let ops = match txn::decode(&body) {
            Ok(ops) => ops,
            Err(error) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Failed to parse body: {error}"),
                )
            }
        };
        if ops.len() > MAX_TXN_OPS {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                    ops.len()
                ),
            );
        }
        let kv_ops = match kv_ops(ops) {
            Ok(kv_ops) => kv_ops,
            Err((status, message)) => return text(status, &message),
        };
        // Consul sends a transaction without writes down its read path,
        // which parses the consistency and blocking parameters.
        if !kv_ops.iter().any(|op| op.verb.is_write()) {
            if let Some(reply) = self.check_read_options() {
                return reply;
            }
        }
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        // One token for everything: the first operation shapes the message.
        let (permission, resource) = kv_ops.first().map_or(("key:read", ""), |op| {
            (op.verb.permission(), op.key.as_str())
        });
        if let Some(reply) = self.check_acl(permission, resource) {
            return reply;
        }
        let outcome = self.state.store().apply_txn(&kv_ops, Instant::now());
        match outcome {
            Ok(entries) => self.json(&TxnReply {
                results: Some(
                    entries
                        .iter()
                        .map(|TxnEntry { key, entry }| TxnResult {
                            kv: KvPair::new(key, entry),
                        })
                        .collect(),
                ),
                errors: None,
            }),
            Err(errors) => {
                let mut reply = self.json(&TxnReply {
                    results: None,
                    errors: Some(
                        errors
                            .iter()
                            .map(|TxnError { op_index, what }| TxnErrorJson {
                                op_index: *op_index,
                                what,
                            })
                            .collect(),
                    ),
                });
                *reply.status_mut() = StatusCode::CONFLICT;
                reply
            }
        }
    }

    /// `?cas=`, if there; an unparsable one is a 400 with this message.
    fn cas(&self) -> Result<Option<u64>, String> {
        if !self.query.has("cas") {
            return Ok(None);
        }
        let raw = self.query.get("cas");
        parse_go_uint(raw)
            .map(Some)
            .ok_or_else(|| format!("Invalid cas index: {raw:?}"))
    }

    fn agent_self(&self) -> Reply {
        if let Some(reply) = self.check_acl("agent:read", NODE_NAME) {
            return reply;
        }
        let dc = &self.state.datacenter;
        self.json(&serde_json::json!({
            "Config": {
                "Datacenter": dc,
                "PrimaryDatacenter": dc,
                "NodeName": NODE_NAME,
                "NodeID": "00000000-0000-4000-8000-000000000001",
                "Revision": "consul-double",
                "Server": true,
                "Version": CONSUL_VERSION,
                "BuildDate": "2024-10-14T00:00:00Z",
            },
            "Member": {
                "Name": NODE_NAME,
                "Addr": "127.0.0.1",
                "Port": 8301,
                "Tags": {
                    "build": format!("{CONSUL_VERSION}:consul-double"),
                    "dc": dc,
                    "port": "8300",
                    "role": "consul",
                    "vsn": "2",
                },
                "Status": 1,
                "ProtocolMin": 1,
                "ProtocolMax": 5,
                "ProtocolCur": 2,
                "DelegateMin": 2,
                "DelegateMax": 5,
                "DelegateCur": 4,
            },
            "Meta": { "consul-network-segment": "" },
        }))
    }

    /// `GET /v1/snapshot`: the state, in the double's own format (see
    /// `store::Snapshot`), with its index as `X-Consul-Index`. As Consul, it
    /// takes the read options and needs a token that may do everything.
    fn snapshot_save(&self) -> Reply {
        if let Some(reply) = self.check_read_options() {
            return reply;
        }
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        if let Some(reply) = self.check_acl("acl:write", "") {
            return reply;
        }
        let (saved, index) = {
            let store = self.state.store();
            (store.snapshot(), store.index())
        };
        let mut reply = self.json(&saved);
        reply
            .headers_mut()
            .insert("x-consul-index", HeaderValue::from(index));
        reply
    }

    /// `PUT /v1/snapshot`: restores a snapshot `GET /v1/snapshot` saved (see
    /// `Store::restore`); 200 with an empty body. A body the double cannot
    /// read is a 500, as Consul answers an archive it cannot read.
    fn snapshot_restore(&self, body: Body) -> Reply {
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        if let Some(reply) = self.check_acl("acl:write", "") {
            return reply;
        }
        let body = match body {
            Body::Value(body) => body,
            Body::TooLarge => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("consul-double: a snapshot is at most {MAX_VALUE_SIZE} bytes"),
                )
            }
            Body::Broken => return text(StatusCode::BAD_REQUEST, "400 Bad Request"),
        };
        let saved: Snapshot = match serde_json::from_slice(&body) {
            Ok(saved) => saved,
            Err(error) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("failed to read snapshot: {error}"),
                )
            }
        };
        let timed = self.state.store().restore(saved, Instant::now());
        for id in timed {
            tokio::spawn(session_timer(self.state.clone(), id));
        }
        empty(StatusCode::OK)
    }

    fn status(&self, answer: serde_json::Value) -> Reply {
        if let Some(reply) = self.check_datacenter() {
            return reply;
        }
        // Real Consul answers status/* without a token; the double asks for
        // one like everywhere else, so a client that forgets it is caught.
        if let Some(reply) = self.check_acl("operator:read", NODE_NAME) {
            return reply;
        }
        self.json(&answer)
    }
}

/// A transaction's operations once decoded: KV ones only, each value within
/// the limit (Consul's check, though the body limit is reached first). The
/// error is the status and text of the answer.
fn kv_ops(ops: Vec<txn::Op>) -> Result<Vec<txn::KvOp>, (StatusCode, String)> {
    let mut kv_ops = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let op = match op {
            txn::Op::Kv(op) => op,
            txn::Op::Other(described) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "consul-double only implements KV operations in transactions: \
                         operation {i} {described}"
                    ),
                ))
            }
        };
        if op.value.len() > MAX_VALUE_SIZE {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Value for key {:?} is too large ({} > {MAX_VALUE_SIZE} bytes)",
                    op.key,
                    op.value.len()
                ),
            ));
        }
        kv_ops.push(op);
    }
    Ok(kv_ops)
}

/// `?index=` and `?wait=` as Consul's `parseWait` and `RPCQueryTimeout`
/// take them (see `Ctx::blocking_params`).
fn blocking_params(index: &str, wait: &str) -> (u64, Duration) {
    let min_index = parse_go_uint(index).unwrap_or(0);
    let wait = go::parse_duration(wait).unwrap_or(0);
    let wait = if wait <= 0 {
        DEFAULT_QUERY_TIME
    } else {
        Duration::from_nanos(wait as u64).min(MAX_QUERY_TIME)
    };
    (min_index, wait)
}

fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply
}

fn text(status: StatusCode, message: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(message.to_owned())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

fn allow(methods: &[Method]) -> HeaderValue {
    let mut list = String::from("OPTIONS");
    for method in methods {
        list.push(',');
        list.push_str(method.as_str());
    }
    HeaderValue::from_str(&list).expect("method names are header-safe")
}

/// Go's `http.Redirect` with 301, as `http.ServeMux` answers.
fn redirect(method: &Method, path: &[u8], query: Option<&str>) -> Reply {
    let mut location = escape_path(path);
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    let mut reply = if *method == Method::GET || *method == Method::HEAD {
        let mut reply = Response::new(Full::new(Bytes::from(format!(
            "<a href=\"{location}\">Moved Permanently</a>.\n\n"
        ))));
        reply.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        reply
    } else {
        Response::new(Full::new(Bytes::new()))
    };
    *reply.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(value) = HeaderValue::from_str(&location) {
        reply.headers_mut().insert(header::LOCATION, value);
    }
    reply
}

/// Go's `cleanPath` in net/http: `path.Clean` of a rooted path, keeping a
/// trailing slash.
fn clean_path(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut cleaned = Vec::with_capacity(path.len() + 1);
    for segment in &segments {
        cleaned.push(b'/');
        cleaned.extend_from_slice(segment);
    }
    if cleaned.is_empty() || path.ends_with(b"/") {
        cleaned.push(b'/');
    }
    cleaned
}

/// Go's `url.PathEscape`-like escaping of a path (mode encodePath).
fn escape_path(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Strict %-decoding (a `%` not followed by two hex digits is an error, as
/// in Go's `url.Parse`); with `plus_is_space`, as Go's `QueryUnescape`.
fn percent_decode(input: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `strconv.ParseUint(s, 10, 64)`: digits only, no sign, no overflow.
fn parse_go_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether Go's `time.ParseDuration` accepts `s`. So `5` (no unit) is
/// refused, as Consul refuses it.
fn is_go_duration(s: &str) -> bool {
    go::parse_duration(s).is_ok()
}

/// A query string as Go's `url.ParseQuery` reads it: `&`-separated pairs,
/// `+` is a space, pairs with a `;` or a bad escape are dropped.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&') {
            if part.is_empty() || part.contains(';') {
                continue;
            }
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                percent_decode(s.as_bytes(), true).map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            if let (Some(key), Some(value)) = (decode(key), decode(value)) {
                pairs.push((key, value));
            }
        }
        Query(pairs)
    }

    /// Whether the parameter is there at all (`?raw`, `?raw=`, `?raw=false`
    /// all count, as Consul only looks at presence).
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }

    /// The parameter's first value, or "" (Go's `Values.Get`).
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for good in [
            "0", "5s", "1m30s", "1.5h", "-2ms", "10us", "3µs", ".5s", "1.s",
        ] {
            assert!(is_go_duration(good), "{good}");
        }
        for bad in ["", "5", "s", "1x", "1m30", ".s", "+", "1 s", "--1s"] {
            assert!(!is_go_duration(bad), "{bad}");
        }
    }

    #[test]
    fn blocking_waits_within_consuls_bounds() {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(blocking_params("", ""), (0, minutes(5)));
        assert_eq!(blocking_params("12", "1s"), (12, Duration::from_secs(1)));
        assert_eq!(blocking_params("12", "0"), (12, minutes(5)));
        assert_eq!(blocking_params("12", "-3s"), (12, minutes(5)));
        assert_eq!(blocking_params("12", "10m"), (12, minutes(10)));
        assert_eq!(blocking_params("12", "11m"), (12, minutes(10)));
        assert_eq!(blocking_params("12", "2540400h"), (12, minutes(10)));
    }

    #[test]
    fn go_uints() {
        assert_eq!(parse_go_uint("0"), Some(0));
        assert_eq!(parse_go_uint("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_go_uint("18446744073709551616"), None);
        assert_eq!(parse_go_uint("+1"), None);
        assert_eq!(parse_go_uint("-1"), None);
        assert_eq!(parse_go_uint(""), None);
    }

    #[test]
    fn paths_are_cleaned_like_go() {
        let clean = |p: &str| String::from_utf8(clean_path(p.as_bytes())).unwrap();
        assert_eq!(clean("/v1/kv/a/b"), "/v1/kv/a/b");
        assert_eq!(clean("/v1/kv/a/"), "/v1/kv/a/");
        assert_eq!(clean("/v1/kv//a"), "/v1/kv/a");
        assert_eq!(clean("/v1/kv/a//b/"), "/v1/kv/a/b/");
        assert_eq!(clean("/v1/kv/a/./b"), "/v1/kv/a/b");
        assert_eq!(clean("/v1/kv/a/../b"), "/v1/kv/b");
        assert_eq!(clean("/v1/kv/a/."), "/v1/kv/a");
        assert_eq!(clean("/.."), "/");
        assert_eq!(clean("/"), "/");
    }

    #[test]
    fn txn_values_over_the_limit_are_413() {
        let op = |value: Vec<u8>| {
            txn::Op::Kv(txn::KvOp {
                verb: txn::Verb::Set,
                key: "big".to_owned(),
                value,
                flags: 0,
                index: 0,
                session: String::new(),
            })
        };
        assert!(kv_ops(vec![op(vec![b'x'; MAX_VALUE_SIZE])]).is_ok());
        let refused = kv_ops(vec![op(Vec::new()), op(vec![b'x'; MAX_VALUE_SIZE + 1])]);
        assert_eq!(
            refused.unwrap_err(),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Value for key \"big\" is too large (524289 > 524288 bytes)".to_owned()
            )
        );
    }

    #[test]
    fn escapes_and_queries() {
        assert_eq!(escape_path(b"/v1/kv/a b?c%"), "/v1/kv/a%20b%3Fc%25");
        assert_eq!(percent_decode(b"a%2Fb", false).unwrap(), b"a/b");
        assert_eq!(percent_decode(b"a+b", false).unwrap(), b"a+b");
        assert!(percent_decode(b"a%2", false).is_none());
        assert!(percent_decode(b"a%zz", false).is_none());
        let q = Query::parse(Some("raw&cas=0&flags=&x=a+b%21&x=2&bad=%zz&semi=1;2"));
        assert!(q.has("raw") && q.has("cas") && q.has("flags"));
        assert_eq!(q.get("raw"), "");
        assert_eq!(q.get("cas"), "0");
        assert_eq!(q.get("x"), "a b!");
        assert!(!q.has("bad") && !q.has("semi"));
        assert!(!q.has("missing"));
    }
}
