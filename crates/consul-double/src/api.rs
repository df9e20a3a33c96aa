//! The HTTP side: routing, Consul's checks in Consul's order, the answers.

use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::store::{Store, TxnEntry};
use crate::txn::{self, TxnError, Verb, MAX_TXN_OPS};
use crate::{Config, CONSUL_VERSION, MAX_VALUE_SIZE};

type Reply = Response<Full<Bytes>>;

/// Bodies larger than this are not even drained: the connection is closed.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The node name and addresses the double reports.
const NODE_NAME: &str = "consul-double";
const LEADER: &str = "127.0.0.1:8300";

const KV_METHODS: &[Method] = &[Method::GET, Method::PUT, Method::DELETE];
const READ_METHODS: &[Method] = &[Method::GET];
const TXN_METHODS: &[Method] = &[Method::PUT];

pub(crate) struct State {
    datacenter: String,
    acl_token: Option<String>,
    store: Mutex<Store>,
}

impl State {
    pub(crate) fn new(config: Config) -> Self {
        State {
            datacenter: config.datacenter,
            acl_token: config.acl_token,
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

pub(crate) async fn handle(state: &State, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body).await;
    let mut reply = route(state, &parts, body);
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
    AgentSelf,
    StatusLeader,
    StatusPeers,
}

fn route(state: &State, parts: &Parts, body: Body) -> Reply {
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
    if path == b"/v1/kv" {
        return redirect(&parts.method, b"/v1/kv/", parts.uri.query());
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
    } else {
        match path.as_str() {
            "/v1/txn" => (Endpoint::Txn, TXN_METHODS),
            "/v1/agent/self" => (Endpoint::AgentSelf, READ_METHODS),
            "/v1/status/leader" => (Endpoint::StatusLeader, READ_METHODS),
            "/v1/status/peers" => (Endpoint::StatusPeers, READ_METHODS),
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
            Method::GET => request.kv_get(key),
            Method::PUT => request.kv_put(key, body),
            _ => request.kv_delete(key),
        },
        Endpoint::Txn => request.txn(body),
        Endpoint::AgentSelf => request.agent_self(),
        Endpoint::StatusLeader => request.status(serde_json::json!(LEADER)),
        Endpoint::StatusPeers => request.status(serde_json::json!([LEADER])),
    }
}

/// One request's view: the state, its query and its headers.
struct Ctx<'a> {
    state: &'a State,
    query: &'a Query,
    headers: &'a HeaderMap,
}

/// A KV entry as Consul's JSON gives it (fields in Consul's order).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    create_index: u64,
    modify_index: u64,
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
    fn new(key: &'a str, entry: &crate::store::Entry) -> Self {
        KvPair {
            lock_index: 0,
            key,
            flags: entry.flags,
            // Go's encoding/json gives a nil []byte as null.
            value: (!entry.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value)),
            create_index: entry.create_index,
            modify_index: entry.modify_index,
        }
    }
}

impl Ctx<'_> {
    /// Consul's `parse()` for reads: consistency modes and blocking-query
    /// parameters are checked (and then ignored: the double never blocks).
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

    fn kv_get(&self, key: &str) -> Reply {
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
        let store = self.state.store();
        if keys {
            // Consul still honours its historic misspelling.
            let mut separator = self.query.get("seperator");
            if separator.is_empty() {
                separator = self.query.get("separator");
            }
            let names = store.keys(key, separator);
            if names.is_empty() {
                return empty(StatusCode::NOT_FOUND);
            }
            return self.json(&names);
        }
        if recurse {
            let pairs: Vec<KvPair<'_>> = store
                .list(key)
                .map(|(key, entry)| KvPair::new(key, entry))
                .collect();
            if pairs.is_empty() {
                return empty(StatusCode::NOT_FOUND);
            }
            return self.json(&pairs);
        }
        let Some(entry) = store.get(key) else {
            return empty(StatusCode::NOT_FOUND);
        };
        let mut reply = if self.query.has("raw") {
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
        reply
            .headers_mut()
            .insert("x-consul-index", HeaderValue::from(entry.modify_index));
        reply
    }

    fn kv_put(&self, key: &str, body: Body) -> Reply {
        if key.is_empty() {
            return text(StatusCode::BAD_REQUEST, "Missing key name");
        }
        if self.query.has("acquire") || self.query.has("release") {
            return text(
                StatusCode::BAD_REQUEST,
                "consul-double does not implement sessions: ?acquire and ?release are not supported",
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
        let written = self.state.store().put(key, value, flags, cas);
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
        let outcome = self.state.store().apply_txn(&kv_ops);
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
/// the limit (Consul's check, though the body limit is reached first), no
/// session verbs. The error is the status and text of the answer.
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
        if let Verb::Session(verb) = &op.verb {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "consul-double does not implement sessions: the KV verb {verb:?} \
                     (operation {i}) is not supported"
                ),
            ));
        }
        kv_ops.push(op);
    }
    Ok(kv_ops)
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

/// Whether Go's `time.ParseDuration` accepts `s` (range is not checked):
/// `0`, or a sign then one or more of number-and-unit, unit one of ns, us,
/// µs, μs, ms, s, m, h. So `5` (no unit) is refused, as Consul refuses it.
fn is_go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let whole = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut after = &rest[whole..];
        let mut fraction = 0;
        if let Some(tail) = after.strip_prefix('.') {
            fraction = tail.bytes().take_while(u8::is_ascii_digit).count();
            after = &tail[fraction..];
        }
        if whole == 0 && fraction == 0 {
            return false;
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        match &after[..unit_len] {
            "ns" | "us" | "\u{b5}s" | "\u{3bc}s" | "ms" | "s" | "m" | "h" => {}
            _ => return false,
        }
        rest = &after[unit_len..];
    }
    true
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
                verb: Verb::Set,
                key: "big".to_owned(),
                value,
                flags: 0,
                index: 0,
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
