//! `consul-double`: a **test double** for Consul's KV HTTP API (with sessions,
//! locks and blocking queries). It is *not* Consul.
//!
//! It exists so that libkv's tests can exercise a Consul client (the Consul
//! store of `libkv-core`) on a machine where no Consul can be installed. It
//! keeps everything in memory, serves one "datacenter" from one process, and
//! answers on `127.0.0.1` (or wherever [`start`] is told to listen) over
//! HTTP/1.1 with keep-alive, optionally over TLS (rustls with the `ring`
//! provider, ALPN `http/1.1` only) and optionally requiring a client
//! certificate.
//!
//! # What it implements (Consul HTTP API v1)
//!
//! * `GET /v1/kv/<key>`, with `?raw`, `?recurse`, `?keys` (with
//!   `&separator=`, also Consul's historic spelling `&seperator=`), and
//!   `?pretty`; `?consistent`, `?stale`, `?index=`, `?wait=` are checked the
//!   way Consul checks them (`?stale` with `?consistent` is a 400, a `wait`
//!   that is not a Go duration such as `5` without a unit is a 400, an
//!   `index` that is not a number is a 400); `?index=` and `?wait=` make a
//!   **blocking query** (see [Blocking queries](#blocking-queries)); the
//!   consistency modes are then ignored.
//! * `PUT /v1/kv/<key>` with `?cas=`, `?flags=` (stored and returned as
//!   `Flags`), and the locks `?acquire=<session>` and `?release=<session>`
//!   (see [Sessions and locks](#sessions-and-locks)); the 512 KiB value
//!   limit (Consul's default `kv_max_value_size`, 524288 bytes) answered
//!   with 413. At most one of `cas`, `acquire`, `release`, as Consul: two
//!   are a 400 `Conflicting flags: <the query, as Go's url.Values.Encode>`
//!   followed by a newline.
//! * `DELETE /v1/kv/<key>` with `?recurse` and `?cas=`. Deleting a key
//!   removes its lock with it.
//! * Sessions: `PUT /v1/session/create`, `PUT /v1/session/destroy/<id>`,
//!   `PUT /v1/session/renew/<id>`, `GET /v1/session/info/<id>`,
//!   `GET /v1/session/node/<node>` and `GET /v1/session/list` (see
//!   [Sessions and locks](#sessions-and-locks)).
//! * `PUT /v1/txn` with **KV operations only**, the session verbs `lock`,
//!   `unlock` and `check-session` included (see
//!   [Transactions](#transactions)).
//! * `?dc=`: the configured datacenter (or none) is served; any other one is
//!   answered 500 `No path to datacenter`, as Consul answers for a
//!   datacenter it does not know.
//! * Snapshots: `GET /v1/snapshot` saves the KV entries, the sessions and
//!   the index, and `PUT /v1/snapshot` (with that body) restores them, so
//!   tests can make the index go **backwards** as Consul's blocking-query
//!   documentation warns it can ("a raft snapshot is restored on the
//!   servers with older version of the data"). The body is the double's
//!   own JSON, not Consul's gzipped archive, and at most 512 KiB; one it
//!   cannot read is a 500. After a restore the index is the snapshot's and
//!   later writes go on from it (in Consul the raft index goes on, but the
//!   table indexes reads give go back: the double has one index); every
//!   session TTL starts again, and lock-delays are gone.
//! * ACL tokens: when [`Config::acl_token`] is set, every known endpoint
//!   (KV, `txn`, `session/*`, `snapshot`, `agent/self`, `status/*`) requires exactly
//!   that token, taken (in Consul's order) from `?token=`, the
//!   `X-Consul-Token` header, or `Authorization: Bearer <token>`. No token:
//!   403 `Permission denied: anonymous token lacks permission ...`; another
//!   token: 403 `ACL not found`. (Real Consul looks an unknown session up
//!   before the token on `session/renew`, answering it 404.)
//! * `GET /v1/agent/self` (a small subset of Consul's answer, see
//!   [`CONSUL_VERSION`]), `GET /v1/status/leader` (`"127.0.0.1:8300"`) and
//!   `GET /v1/status/peers` (`["127.0.0.1:8300"]`).
//! * Consul's HTTP framing: `X-Consul-Index`, `X-Consul-KnownLeader: true`
//!   and `X-Consul-LastContact: 0` on **every** response (real Consul only
//!   sends them on reads); a store-wide raft index that starts at 10 and
//!   grows by one on every write that changed something: KV writes,
//!   transactions, and session creations and invalidations (destroy or
//!   expiry; one index for the session and every key it released or
//!   deleted). A renewal does not move it (Consul renews outside raft). A
//!   single-key `GET` of a present key carries that key's `ModifyIndex` (as
//!   Consul does); every other response carries the store-wide index. Real
//!   Consul gives a missing key, a `?recurse` or `?keys` read the highest
//!   index of the KV entries (and tombstones) concerned, and the session
//!   reads the index of the sessions table: the double gives all of them
//!   the store-wide index, which is never lower, but also moves on writes
//!   elsewhere (other keys, sessions).
//! * The path handling of Go's `http.ServeMux` that Consul inherits: a path
//!   that is not clean (`//`, `/./`, `/../`, after percent-decoding) is
//!   answered `301 Moved Permanently` to the cleaned path, and `/v1/kv` to
//!   `/v1/kv/`. So a client that builds `/v1/kv//key` is caught here, as
//!   it would be against Consul. Unknown paths are 404 with an empty body;
//!   a known path with another method is 405 with an `Allow` header and
//!   `OPTIONS` on a known path is 200 with `Allow`, as Consul answers. The
//!   session subtrees redirect the same way (`/v1/session/info` to
//!   `/v1/session/info/`).
//!
//! # Sessions and locks
//!
//! Every session is on the double's one node, `consul-double`, with the
//! `serfHealth` check, which never fails: only a destroy or a TTL ends it.
//!
//! * `PUT /v1/session/create` answers `{"ID":"<id>"}`, a random ID in the
//!   form of Consul's (8-4-4-4-12 hex digits). The body is read, as Consul
//!   reads it, only when the request declares a `Content-Length` above 0;
//!   it is JSON with `Name`, `TTL`, `Behavior`, `LockDelay` (member names in
//!   any case, unknown members ignored; `Node`, `Checks`, `NodeChecks`,
//!   `ServiceChecks`, `ID` are type-checked and ignored). A body that is
//!   not such JSON is a 400 `Request decode failed: ...` (the rest is the
//!   double's approximation of Go's message).
//!   * `Behavior`: `release` (the default, also for `""`) or `delete`;
//!     another is a 500 `Invalid Behavior setting 'x'`.
//!   * `TTL`: a Go duration string; empty (the default) or zero means none.
//!     One that does not parse is a 500 `Session TTL 'x' invalid: time:
//!     invalid duration "x"`; one outside [`Config::min_session_ttl`] (10s)
//!     to 24h is a 500 `Invalid Session TTL '5000000000', must be between
//!     [10s=24h0m0s]` (Consul's message, the TTL in nanoseconds). Consul
//!     answers both 500, as every error of its `Session.Apply`.
//!   * `LockDelay`: a Go duration string or a number of nanoseconds, and as
//!     in Consul, a value under 1000 (ns) is taken as seconds (`15` and
//!     `"15ns"` are 15s); 15s by default; another JSON type is 0.
//! * `PUT /v1/session/destroy/<id>` answers `true`, also for an unknown
//!   session (which changes nothing).
//! * `PUT /v1/session/renew/<id>` answers the session in an array of one;
//!   an unknown or expired session is a 404 `Session id '<id>' not found`.
//! * `GET /v1/session/info/<id>` answers an array of 0 or 1 sessions,
//!   `GET /v1/session/node/<node>` those of the node (all of them for
//!   `consul-double`, none for another), `GET /v1/session/list` all of
//!   them, by ID. A session reads as in Consul 1.7+: `{"ID", "Name",
//!   "Node", "LockDelay" (nanoseconds), "Behavior", "TTL" (as given),
//!   "NodeChecks": ["serfHealth"], "ServiceChecks": null, "CreateIndex",
//!   "ModifyIndex"}`. These three are blocking queries. An empty `<id>` or
//!   `<node>` is a 400 `Missing session` / `Missing node name`.
//! * TTL: as Consul's session timers, a session with a TTL is invalidated
//!   by a timer in the double once it has gone unrenewed (since its
//!   creation or last renewal) for its TTL times
//!   [`Config::session_ttl_multiplier`] (2, as Consul, which promises
//!   only that a session lives at least its TTL; tests may set 1).
//! * Invalidation (destroy or expiry), as Consul's `deleteSessionTxn`: each
//!   key the session holds is released (`Session` cleared, `ModifyIndex`
//!   moved) for `release`, or deleted for `delete`. Then, for the session's
//!   lock-delay (at most 60s, Consul's `MaxLockDelay`), any `?acquire=` of
//!   those keys answers `false`, whatever the session (even an unknown
//!   one: the lock-delay is checked first, as in Consul). An explicit
//!   `?release=` starts no lock-delay.
//! * `PUT /v1/kv/<key>?acquire=<session>` (Consul's `kvsLockTxn`): `true`
//!   if the key was free (it is created if absent) or already held by that
//!   session, `false` if another session holds it or its lock-delay runs.
//!   On success the body and `?flags=` are stored as by a plain `PUT`, the
//!   session holds the key (`Session`), and `LockIndex` grows by one unless
//!   the session already held it (a new key starts at 1); `ModifyIndex`
//!   moves even when nothing changed (see the end of
//!   [Transactions](#transactions)). An empty session
//!   is a 500 `missing session`, an unknown one a 500 `invalid session
//!   "<id>"` (real Consul first fails an ID that is not a UUID with another
//!   500 message).
//! * `PUT /v1/kv/<key>?release=<session>` (Consul's `kvsUnlockTxn`): `true`
//!   only if that session holds the key; then the body and flags are
//!   stored, `Session` is cleared, `LockIndex` is kept. An absent key or
//!   another holder is `false`; an empty session is a 500 `missing
//!   session`; the session is not looked up.
//! * A plain `PUT` (or a transaction `set`/`cas`) of a held key keeps its
//!   holder and, as in Consul (whose request entry replaces the stored
//!   one), sets `LockIndex` to 0.
//! * KV entries read as Consul's: `LockIndex`, `Key`, `Flags`, `Value`,
//!   `Session` (only when a session holds the key), `CreateIndex`,
//!   `ModifyIndex`.
//!
//! # Blocking queries
//!
//! `GET /v1/kv/<key>` (also with `?recurse`, `?keys`, `?raw`) and the
//! session reads are blocking queries, as Consul's `blockingQuery`: with
//! `?index=N` and N above 0, the answer waits until its `X-Consul-Index`
//! (see above: a present key's `ModifyIndex`, else the store-wide index)
//! would exceed N, or until the wait is over, and is then given as usual.
//! The wait is `?wait=` (a Go duration), 5 minutes when absent or not
//! positive, at most 10 minutes; Consul adds up to a sixteenth of it at
//! random, the double does not. As in Consul, an N above the current index
//! (an index that went backwards, which clients must reset) also waits
//! until the wait is over; it is the client's job to notice that the index
//! went down. A blocking query may answer with data that did not change
//! (another key or a session moved the store-wide index), as Consul may.
//!
//! # Transactions
//!
//! `PUT /v1/txn` takes a JSON array of `{"KV": {"Verb", "Key", "Value",
//! "Flags", "Index", "Session"}}` operations, read as Consul's Go decoder
//! reads them (member names in any case, unknown members ignored, `Value`
//! base64 or null; `Session` is used by the session verbs only), and
//! applies them as Consul's `Txn.Apply` does:
//!
//! * Verbs `set`, `cas` (`Index` 0: only if absent), `get` (fails if
//!   absent), `get-or-empty`, `get-tree`, `check-index`, `check-not-exists`,
//!   `delete`, `delete-tree`, `delete-cas` (an index that does not match
//!   fails the transaction, `failed to delete key "k", index is stale`; an
//!   absent key is nothing to delete). Another verb fails its operation
//!   (`unknown KV verb "x"`), as in Consul; an empty `Key` fails every verb
//!   but `delete-tree` (`Must provide key`) before anything runs.
//! * The session verbs, as Consul's `kvsLockTxn`, `kvsUnlockTxn` and
//!   `kvsCheckSessionTxn`:
//!   * `lock`: as `PUT ?acquire=<Session>` with the operation's `Value`
//!     and `Flags` (see [Sessions and locks](#sessions-and-locks)); a key
//!     another session holds fails it, `failed to lock key "k", lock is
//!     already held`; an empty or unknown `Session` fails it with
//!     `missing session` / `invalid session "<id>"`; a key whose
//!     lock-delay runs fails it before anything runs (Consul's pre-check),
//!     `failed to lock key "k" due to lock delay`.
//!   * `unlock`: as `PUT ?release=<Session>`; a key that is absent or not
//!     held by that session fails it, `failed to unlock key "k", lock
//!     isn't held, or is held by another session`; an empty `Session` is
//!     `missing session`.
//!   * `check-session`: fails unless the key is held by `Session` (an
//!     empty `Session`: held by none), `failed session check for key "k",
//!     current session "<held>" != "<given>"`, or `failed to check
//!     session, key "k" doesn't exist`.
//! * All or nothing, under the store's lock: each operation sees the ones
//!   before it; if any fails, nothing is kept and the answer is `409` with
//!   `{"Results":null,"Errors":[{"OpIndex":i,"What":"..."}, ...]}`, every
//!   failed operation listed with Consul's message. Otherwise `200` with
//!   `{"Results":[{"KV":{...}}, ...],"Errors":null}`: `get`,
//!   `get-or-empty` and `get-tree` give their entries with values; `set`,
//!   `cas`, `check-index`, `lock`, `unlock` and `check-session` give the
//!   entry with `"Value":null`; deletes and `check-not-exists` give
//!   nothing (so `"Results":[]` is possible).
//! * All the writes of a transaction share one new index: the store index
//!   grows by one for the whole transaction if it changed anything.
//! * Limits, answered 413 as by Consul: the body is at most 512 KiB
//!   (Consul's default `txn_max_req_len`), at most [`MAX_TXN_OPS`] (128)
//!   operations, each value at most [`MAX_VALUE_SIZE`]. A body that is not
//!   JSON (or not of the right shape) is a 400 `Failed to parse body: ...`.
//! * A transaction without writes takes the read options (`?stale` with
//!   `?consistent` is a 400, ...); every transaction takes `?dc=` and the
//!   token. With ACLs on, a transaction without the right token is a 403
//!   as everywhere in the double. Real Consul answers an unknown token 403
//!   `ACL not found` too, but for a known token (the anonymous one
//!   included) fails each operation it may not do, with a 409, and silently
//!   drops the `get` results it may not read.
//! * Not implemented, answered 400: `Node`, `Service`, `Check` and
//!   `Session` operations (and an element without a `KV` member, which
//!   Consul would skip).
//! * Unlike recent Consul, a `set` that changes nothing still moves the
//!   entry's `ModifyIndex` (as `PUT /v1/kv` does in the double).
//!
//! # What it leaves out
//!
//! Sessions tied to health checks (only a destroy or a TTL ends one),
//! `?hash=` blocking queries, the non-KV operations of transactions, every endpoint not listed above (catalog, health, ...),
//! ACL policies and rules (one token can do everything; real Consul may
//! instead filter list results, answering 404 rather than 403), namespaces
//! and partitions, HTTP/2, gzip, persistence, more than one node. Keys must
//! be valid UTF-8 after percent-decoding (Consul takes any bytes): others
//! are answered 400.
//!
//! # Use
//!
//! ```no_run
//! let server = consul_double::start(
//!     consul_double::Config::default(),
//!     "127.0.0.1:0".parse().unwrap(),
//! )?;
//! let url = format!("http://{}/v1/kv/some/key", server.addr());
//! # let _ = url;
//! server.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The `consul-double` binary is a thin command line over [`start`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

mod api;
mod go;
mod session;
mod store;
mod tls;
mod txn;

/// The Consul version the double claims to be in `GET /v1/agent/self`.
///
/// This is the double's own choice, a realistic recent Consul release; the
/// double does not behave differently for any version.
pub const CONSUL_VERSION: &str = "1.20.0";

/// Consul's default `kv_max_value_size`: the largest value a `PUT` may carry.
/// It is also the largest body `PUT /v1/txn` takes (Consul's default
/// `txn_max_req_len` is the same 512 KiB).
pub const MAX_VALUE_SIZE: usize = 512 * 1024;

/// The most operations `PUT /v1/txn` takes: Consul's `maxTxnOps`, 128
/// since Consul 1.14 (64 before).
pub const MAX_TXN_OPS: usize = txn::MAX_TXN_OPS;

/// How the double serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The datacenter the double is (`dc1` by default); `?dc=` naming
    /// another one is answered 500 `No path to datacenter`.
    pub datacenter: String,
    /// When set, every request to a known endpoint must present this token.
    pub acl_token: Option<String>,
    /// When set, the double serves HTTPS only.
    pub tls: Option<TlsConfig>,
    /// A session with a TTL is invalidated once it has gone unrenewed for
    /// its TTL times this (2.0 by default: Consul's `SessionTTLMultiplier`,
    /// so a session lives between TTL and 2×TTL past its last renewal).
    /// Tests may set 1.0 to have it expire right at its TTL. It must be a
    /// finite number above 0, or [`start`] fails; below 1.0 a session
    /// expires before its TTL, which Consul never does.
    pub session_ttl_multiplier: f64,
    /// The shortest TTL a session may be created with (Consul's agent
    /// setting `session_ttl_min`, 10s by default). Tests may lower it to
    /// have short TTLs. The longest is Consul's fixed 24h.
    pub min_session_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            datacenter: "dc1".to_owned(),
            acl_token: None,
            tls: None,
            session_ttl_multiplier: 2.0,
            min_session_ttl: Duration::from_secs(10),
        }
    }
}

/// TLS for the double: PEM files read once by [`start`].
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, a client must present a certificate signed by one of the
    /// CA certificates in this PEM file, or the TLS handshake fails.
    pub client_ca_file: Option<PathBuf>,
}

/// A running double. [`Server::shutdown`] or dropping it stops it and frees
/// its port (open connections are closed).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// The address the double listens on (with the port it was given).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the double listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops the double and waits until its port is free.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a double listening on `addr` (`127.0.0.1:0` picks a free port).
///
/// The double runs on its own thread with its own tokio runtime, so this
/// may be called from synchronous code or from within another runtime. It
/// returns once the socket is listening; the TLS files, if any, are read
/// before that, and a bad one (or a [`Config::session_ttl_multiplier`]
/// that is not a finite number above 0) is an
/// [`io::ErrorKind::InvalidInput`] error.
pub fn start(config: Config, addr: SocketAddr) -> io::Result<Server> {
    let multiplier = config.session_ttl_multiplier;
    if !(multiplier.is_finite() && multiplier > 0.0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("session_ttl_multiplier must be a finite number above 0, not {multiplier}"),
        ));
    }
    let acceptor = match &config.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(tls)?)),
        None => None,
    };
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    // Time for the blocking queries and the session TTL timers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let state = Arc::new(api::State::new(config));
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("consul-double:{}", addr.port()))
        .spawn(move || {
            runtime.spawn(accept_loop(listener, state, acceptor));
            // Either a send or the sender's drop ends the wait.
            let _ = runtime.block_on(stopped);
            // Dropping the runtime drops the listener and every connection.
            drop(runtime);
        })?;
    Ok(Server {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<api::State>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => {
                // Out of file descriptors or a connection reset before it was
                // accepted: let other tasks run, then go on.
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    // A failed handshake (no or a wrong client certificate,
                    // plain HTTP on the TLS port) just closes the connection.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(TokioIo::new(stream), state).await;
                    }
                }
                None => serve_connection(TokioIo::new(stream), state).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, state: Arc<api::State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(api::handle(&state, request).await) }
    });
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
}
