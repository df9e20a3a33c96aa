//! `consul://HOST:PORT/PREFIX`, `consul+ssl://` (verifying the server) and
//! `consul+ssl+noverify://`: Consul's KV HTTP API.
//!
//! - The key `/a/b` under the prefix `/puppet` is the Consul key `puppet/a/b`
//!   (Consul keys have no leading `/`), each segment URL-encoded. Values travel as
//!   raw bytes: `?raw` on reads of one value, the base64 `Value` of JSON answers.
//! - A key's sequence is its `ModifyIndex`. `atomic_create` is `PUT ?cas=0` and
//!   `atomic_put` `PUT ?cas=<sequence>`. `atomic_delete` is one transaction
//!   (`/v1/txn`: `check-index`, then `delete`), since Consul answers `true` to
//!   `DELETE ?cas=` when the key is already gone. Consul checks and writes in one
//!   step, so of racing writers with the same `previous` exactly one wins.
//!   `list` and `atomic_list` are one `GET ?recurse`, `deletetree` one
//!   `DELETE ?recurse`, on `PREFIX/dir/`. Reads ask for `?consistent`.
//! - The `token` auth setting is sent as `X-Consul-Token`; URLs never hold it.
//! - One HTTP client (with its connection pool) per URL and auth settings in a
//!   process, made on the first call, dropped after a connection failure and after
//!   `fork`. Every request ends within the store's timeout, a lock's wait by its
//!   deadline.
//!
//! Keys that expire and locks:
//!
//! - A write with a `ttl` makes a session (`TTL` = ttl, `Behavior: delete`,
//!   `LockDelay: 0s`) and writes the key holding it, in one transaction (`lock`,
//!   after `check-not-exists` or `check-index` for `atomic_create` and
//!   `atomic_put`, and after an `unlock` of the session that held the key, whose
//!   session is then destroyed when it was a ttl key's own). Consul ends such a
//!   session, deleting the key, somewhere between ttl and 2 x ttl after it was
//!   made; so the key's deadline is kept where every libkv reader sees it: its
//!   `Flags` hold [`TTL_MARK`] in the high 16 bits and the deadline, in
//!   milliseconds since the Unix epoch (the writer's clock), in the low 48. Every
//!   read treats a marked entry past its deadline (the reader's clock) as absent,
//!   and so do the conditions of the atomic writes. The deadline is taken before
//!   the session is made, so Consul never deletes the key before it.
//! - A plain write makes the key permanent again (Consul keeps a key's session
//!   across a plain set): `put` is one transaction, `set` then `check-session`
//!   with no session, which Consul refuses, writing nothing, when a session holds
//!   the key; then the key is read and replaced in a transaction that checks its
//!   `ModifyIndex` and `unlock`s its session with the new value. The atomic writes
//!   do the same after their `check-index` or `check-not-exists`. So the new value
//!   is never written under the old session, which could delete it. `put_many`
//!   sets a batch in one transaction, whose results name any session a key kept;
//!   each such key is written again as by `put`. Values larger than a
//!   transaction carries go by `PUT ?cas=` and `PUT ?release=` after a read.
//! - A lock is a session (`TTL` = ttl, `Behavior: release`, `LockDelay: 0s`)
//!   holding the key (a transaction's `lock`, the owner as the value); its fence
//!   is the key's `ModifyIndex` after the acquisition. A waiter reads the key and
//!   waits for it to change with a blocking query (`?index=&wait=`), then tries
//!   again; its session is renewed before each try. Renewing is
//!   `PUT /v1/session/renew/` of the session that holds the key with the owner;
//!   unlocking deletes the key in a transaction that checks it still holds the
//!   owner and that session, then destroys the session.
//! - Sessions are named `libkv ttl <Consul key>` and `libkv lock <Consul key>`.
//!   Every session a call made and did not leave holding a key is destroyed
//!   before it returns, and so is the session of a ttl key the call replaced. A
//!   ttl key's session left without its key (`delete`, `deletetree`) ends at its
//!   TTL, deleting nothing.
//!
//! Watches ([`watch`](crate::watch), coalescing):
//!
//! - A watch reads the key (`GET ?consistent`) or the directory (`?recurse`),
//!   as `atomic_get` and `atomic_list` do (same decoding, same names left out,
//!   keys past their ttl absent), and keeps the answer's `X-Consul-Index`. Each
//!   later wait is a blocking query (`?index=N&wait=5s`, whatever the watcher's
//!   deadline), whose request may take the wait, the sixteenth Consul adds at
//!   random, and the store's timeout. A query that ends with the index
//!   unchanged is sent again; otherwise the state read is handed to the
//!   watcher, which hands out what differs (Consul may answer an unchanged
//!   state). The wait is short for Consul (whose default is 5m) so that an
//!   index that went backwards, which Consul answers only once the wait is
//!   over, is noticed within seconds.
//! - A query outlives the watcher's calls: one whose deadline passes first
//!   leaves it in flight, and the next waits on it again. So a binding that
//!   waits in short slices sends a query per change (an idle watch one every
//!   5 seconds), not one per slice. A query left alone for more than half the
//!   store's timeout (the caller busy with events) is dropped and sent again,
//!   as is one a forked child inherited; a watcher dropped drops its query.
//! - Consul's rules for blocking queries: an index is taken as at least 1, and
//!   one lower than the last (a snapshot restored, ...) starts again with an
//!   ordinary read. Queries that wake for a change are rate limited by a token
//!   bucket of 2 filled one every 50 ms: a key changing without pause is read
//!   20 times a second, not in a busy loop.
//! - The expiry of a ttl key moves no index: a watch also reads again at the
//!   earliest deadline among the keys it holds (its query waits until then,
//!   when that is within its wait; one longer than 1.6 s asks for 16/17 of it,
//!   so that Consul's jitter does not carry it past), and hands the key out as
//!   deleted.
//! - Watches use the store's client, like every call: many watches in a
//!   process share its connection pool, each holding one connection while its
//!   query is under way (between changes, all the time).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::{Client, Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::error::{Error, Result, Waiting};
use crate::fork;
use crate::key::Key;
use crate::options::Auth;
use crate::remote::{
    batches, block_on_timeout, describe, runtime, ClientCache, Failure, PemFile, Remote,
};
use crate::store::{Listing, Store, Versioned};
use crate::url::{ConsulTls, StoreUrl};
use crate::value::Value;
use crate::watch::{Coalescing, Snapshot, Source, Target, Watcher};

pub struct ConsulStore {
    /// Its URL and server, as errors name them.
    remote: Remote,
    /// `http(s)://HOST:PORT`
    base: String,
    /// The Consul key prefix: "" or "puppet/".
    prefix: String,
    client_key: ClientKey,
    timeout: Duration,
}

/// What an HTTP client is made from: stores with the same share one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    base: String,
    tls: ConsulTls,
    auth: Auth,
}

static CLIENTS: ClientCache<ClientKey, Client> = ClientCache::new();

/// What to do when Consul refuses the token.
const TOKEN_ADVICE: &str = "check the token in auth and its ACL policy";

/// The mark in the high 16 bits of the `Flags` of a key written with a ttl ("LK");
/// the low 48 bits hold its deadline, in milliseconds since the Unix epoch.
pub const TTL_MARK: u64 = 0x4C4B;
const DEADLINE_BITS: u32 = 48;
const DEADLINE_MASK: u64 = (1 << DEADLINE_BITS) - 1;

/// The ttl a Consul session takes, in seconds: from 1 (a server's own minimum,
/// `session_ttl_min`, 10 s by default, refuses shorter ones when the session is
/// made, before anything is written) to 24 h, Consul's fixed maximum.
const SESSION_TTL: (u64, u64) = (1, 86400);

/// How many times a write reads the key again and tries again when others changed
/// it between its read and its write.
const ATTEMPTS: usize = 10;

/// How long a lock waiter sleeps while the key's lock-delay runs (set by another
/// client's session: libkv's have none).
const LOCK_DELAY_PAUSE: Duration = Duration::from_millis(250);

/// One entry of Consul's JSON answers.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    key: String,
    value: Option<String>,
    modify_index: u64,
    #[serde(default)]
    flags: u64,
    /// The session holding the key, if any.
    #[serde(default)]
    session: Option<String>,
}

impl KvPair {
    /// The session holding the key, or "".
    fn session(&self) -> &str {
        self.session.as_deref().unwrap_or("")
    }

    /// When a key written with a ttl expires, in milliseconds since the Unix epoch.
    fn deadline(&self) -> Option<u64> {
        (self.flags >> DEADLINE_BITS == TTL_MARK).then_some(self.flags & DEADLINE_MASK)
    }

    /// Whether its ttl has passed at `now` (milliseconds since the Unix epoch).
    fn expired(&self, now: u64) -> bool {
        self.deadline().is_some_and(|deadline| deadline <= now)
    }

    /// The session of a key written with a ttl: made for it alone, it goes when
    /// the key is replaced.
    fn ttl_session(&self) -> Option<&str> {
        self.deadline()
            .and(self.session.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// A live entry as a read hands it out: its key (relative to the directory of a
/// listing), value and sequence, and the deadline of a key written with a ttl.
struct Found {
    key: String,
    versioned: Versioned,
    /// Milliseconds since the Unix epoch.
    deadline: Option<u64>,
}

/// What a write requires of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Any,
    /// Absent, or past its ttl.
    Absent,
    /// Its sequence is this, and its ttl has not passed.
    Index(u64),
}

impl Cond {
    /// The function that writes with a ttl when this holds, as errors name it.
    fn ttl_op(self) -> &'static str {
        match self {
            Cond::Any => "put",
            Cond::Absent => "atomic_create",
            Cond::Index(_) => "atomic_put",
        }
    }

    /// Whether the key, as read, meets the condition at `now`.
    fn holds(self, found: Option<&KvPair>, now: u64) -> bool {
        let live = found.filter(|e| !e.expired(now));
        match self {
            Cond::Any => true,
            Cond::Absent => live.is_none(),
            Cond::Index(n) => live.is_some_and(|e| e.modify_index == n),
        }
    }
}

/// A transaction's answer: 200 with `Results`, or 409 with `Errors`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct TxnAnswer {
    #[serde(default)]
    results: Option<Vec<TxnResult>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Deserialize)]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: Option<KvPair>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnError {
    #[serde(default)]
    op_index: usize,
    what: String,
}

/// The entries a transaction's operations reported, or the operations that
/// failed their condition (nothing was written).
type Txn = std::result::Result<Vec<KvPair>, Vec<TxnError>>;

#[derive(Deserialize)]
struct SessionCreated {
    #[serde(rename = "ID")]
    id: String,
}

impl ConsulStore {
    /// A store for the URL's server and prefix. Nothing is connected until the first
    /// call.
    pub fn open(url: &StoreUrl, auth: &Auth, timeout: Duration) -> Result<ConsulStore> {
        let StoreUrl::Consul {
            tls,
            endpoint,
            prefix,
        } = url
        else {
            unreachable!("ConsulStore::open is given Consul URLs only")
        };
        auth.only("consul", &["token", "ca_file", "cert_file", "key_file"])?;
        if auth.get("cert_file").is_some() != auth.get("key_file").is_some() {
            return Err(Error::InvalidArgument(
                "consul auth needs both cert_file and key_file, or neither".into(),
            ));
        }
        let has_tls_files = ["ca_file", "cert_file", "key_file"]
            .iter()
            .any(|k| auth.get(k).is_some());
        if has_tls_files && *tls == ConsulTls::None {
            return Err(Error::InvalidArgument(
                "ca_file, cert_file and key_file are for TLS: use a consul+ssl:// URL".into(),
            ));
        }
        let scheme = if *tls == ConsulTls::None {
            "http"
        } else {
            "https"
        };
        let base = format!("{scheme}://{endpoint}");
        Ok(ConsulStore {
            remote: Remote {
                url: url.to_string(),
                service: "Consul",
                at: base.clone(),
                tls_scheme: "consul+ssl",
            },
            prefix: if prefix.is_root() {
                String::new()
            } else {
                format!("{}/", &prefix.as_str()[1..])
            },
            client_key: ClientKey {
                base: base.clone(),
                tls: *tls,
                auth: auth.clone(),
            },
            base,
            timeout,
        })
    }

    /// The Consul key of a key (or, ending in `/`, of a directory).
    fn consul_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key.trim_start_matches('/'))
    }

    /// The URL of a key (or, ending in `/`, a directory) in `/v1/kv/`.
    fn kv_url(&self, key: &str) -> String {
        let mut url = format!("{}/v1/kv/", self.base);
        for (i, segment) in self.consul_key(key).split('/').enumerate() {
            if i > 0 {
                url.push('/');
            }
            encode_segment(&mut url, segment);
        }
        url
    }

    fn dir_url(&self, dir: &Key) -> String {
        self.kv_url(&dir.dir_prefix())
    }

    /// The Consul key of `dir`'s entries start with this.
    fn consul_dir(&self, dir: &Key) -> String {
        self.consul_key(&dir.dir_prefix())
    }

    fn make_client(&self) -> std::result::Result<Client, Failure> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::Settings(format!("TLS: {e}")))?;
        let auth = &self.client_key.auth;
        let builder = match self.client_key.tls {
            ConsulTls::NoVerify => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider))),
            _ => {
                let mut roots = RootCertStore::empty();
                match auth.get("ca_file") {
                    Some(path) => {
                        let certs = PemFile::read("ca_file", path)
                            .and_then(|f| f.certs())
                            .map_err(Failure::Settings)?;
                        for cert in certs {
                            roots.add(cert).map_err(|e| {
                                Failure::Settings(format!(
                                    "ca_file {path} holds a bad certificate: {e}"
                                ))
                            })?;
                        }
                    }
                    None => {
                        let found = rustls_native_certs::load_native_certs();
                        roots.add_parsable_certificates(found.certs);
                    }
                }
                builder.with_root_certificates(roots)
            }
        };
        let tls = match (auth.get("cert_file"), auth.get("key_file")) {
            (Some(cert), Some(key)) => {
                let chain = PemFile::read("cert_file", cert)
                    .and_then(|f| f.certs())
                    .map_err(Failure::Settings)?;
                let key = PemFile::read("key_file", key)
                    .and_then(|f| f.key())
                    .map_err(Failure::Settings)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Failure::Settings(format!("cert_file and key_file: {e}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        Client::builder()
            .tls_backend_preconfigured(tls)
            // Consul is reached directly: proxy variables meant for the web do not apply.
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| {
                Failure::Settings(format!(
                    "cannot make the HTTP client: {}",
                    describe(None, Some(&e))
                ))
            })
    }

    fn client(&self) -> std::result::Result<(Client, u64), Failure> {
        if let Some(found) = CLIENTS.get(&self.client_key) {
            return Ok(found);
        }
        Ok(CLIENTS.insert(&self.client_key, self.make_client()?))
    }

    /// Sends one request within the timeout: the status and the body of a success,
    /// a 404 (absent) or a 409 (a transaction that did not apply).
    fn request(
        &self,
        op: &'static str,
        key: &str,
        method: Method,
        url: String,
        body: Option<&[u8]>,
    ) -> Result<(StatusCode, Vec<u8>)> {
        self.request_within(op, key, method, url, body, self.timeout)
    }

    /// [`ConsulStore::request`] within `timeout`.
    fn request_within(
        &self,
        op: &'static str,
        key: &str,
        method: Method,
        url: String,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>)> {
        self.exchange(op, key, method, url, body, timeout)
            .map(|(status, _, body)| (status, body))
    }

    /// [`ConsulStore::request_within`], with the answer's `X-Consul-Index` (`None`
    /// when it has none, or not a number).
    fn exchange(
        &self,
        op: &'static str,
        key: &str,
        method: Method,
        url: String,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Answer> {
        // The client the request went to, to drop that one only.
        let used = Cell::new(None);
        let sent = Cell::new(false);
        let request = self.send(method, url, body, |g| used.set(Some(g)), || sent.set(true));
        self.remote.run(op, key, timeout, &sent, request, || {
            CLIENTS.forget(&self.client_key, used.get())
        })
    }

    /// Sends one request, with no time limit: the status, `X-Consul-Index` and
    /// body of a success, a 404 (absent) or a 409 (a transaction that did not
    /// apply). `used` is told the generation of the client it goes to, `sent`
    /// when it goes out.
    async fn send(
        &self,
        method: Method,
        url: String,
        body: Option<&[u8]>,
        used: impl Fn(u64),
        sent: impl Fn(),
    ) -> std::result::Result<Answer, Failure> {
        let (client, generation) = self.client()?;
        used(generation);
        let mut request = client.request(method, url);
        if let Some(token) = self.client_key.auth.get("token") {
            request = request.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            request = request.body(body.to_vec());
        }
        sent();
        let answer = async {
            let response = request.send().await?;
            let status = response.status();
            let index = response
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            Ok((status, index, response.bytes().await?))
        };
        let (status, index, body) = answer.await.map_err(|e| {
            // A connection that failed is made again by the next call.
            CLIENTS.forget(&self.client_key, Some(generation));
            transport(e)
        })?;
        match status {
            s if s.is_success() || s == StatusCode::NOT_FOUND || s == StatusCode::CONFLICT => {
                Ok((s, index, body.to_vec()))
            }
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(Failure::Auth {
                reason: text(&body),
                advice: TOKEN_ADVICE.into(),
            }),
            StatusCode::PAYLOAD_TOO_LARGE => Err(Failure::Refused(format!(
                "{} (the value is larger than Consul's kv_max_value_size)",
                text(&body)
            ))),
            s => Err(Failure::Refused(format!("{s}: {}", text(&body)))),
        }
    }

    fn failed(&self, op: &'static str, key: &str, reason: impl std::fmt::Display) -> Error {
        self.remote.failed(op, key, reason)
    }

    fn unexpected(&self, op: &'static str, key: &str, status: StatusCode, body: &[u8]) -> Error {
        self.failed(
            op,
            key,
            format_args!("unexpected answer from Consul: {status}: {}", text(body)),
        )
    }

    /// A body Consul answers `true` or `false` to.
    fn boolean(&self, op: &'static str, key: &str, body: &[u8]) -> Result<bool> {
        match body.trim_ascii() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            other => Err(self.failed(
                op,
                key,
                format_args!("expected true or false from Consul, got {:?}", text(other)),
            )),
        }
    }

    fn pairs(&self, op: &'static str, key: &str, body: &[u8]) -> Result<Vec<KvPair>> {
        serde_json::from_slice(body)
            .map_err(|e| self.failed(op, key, format_args!("cannot read Consul's answer: {e}")))
    }

    fn value(&self, op: &'static str, key: &str, pair: &KvPair) -> Result<Vec<u8>> {
        match &pair.value {
            None => Ok(Vec::new()),
            Some(b64) => BASE64.decode(b64).map_err(|e| {
                self.failed(
                    op,
                    key,
                    format_args!("cannot decode the value Consul sent: {e}"),
                )
            }),
        }
    }

    /// Every key below `dir` but those past their ttl, relative to `dir`, sorted.
    fn below(&self, op: &'static str, dir: &Key) -> Result<Vec<Found>> {
        let url = format!("{}?recurse&consistent", self.dir_url(dir));
        let (status, body) = self.request(op, dir.as_str(), Method::GET, url, None)?;
        self.listed(op, dir, status, &body)
    }

    /// The entries of Consul's answer (`status`, `body`) to a `?recurse` read of
    /// `dir` but those past their ttl: keys relative to `dir`, sorted.
    fn listed(
        &self,
        op: &'static str,
        dir: &Key,
        status: StatusCode,
        body: &[u8],
    ) -> Result<Vec<Found>> {
        let body = match status {
            StatusCode::OK => body,
            StatusCode::NOT_FOUND => return Ok(Vec::new()),
            status => return Err(self.unexpected(op, dir.as_str(), status, body)),
        };
        let start = self.consul_dir(dir);
        let now = now_ms();
        let mut out = Vec::new();
        for pair in self.pairs(op, dir.as_str(), body)? {
            if pair.expired(now) {
                continue;
            }
            // Folder entries ("dir/") and names another client wrote that no key
            // can have are not listed.
            if let Some(rel) = pair.key.strip_prefix(&start).filter(|rel| dir.lists(rel)) {
                out.push(self.found(op, dir.as_str(), rel.to_owned(), &pair)?);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The key's entry as Consul has it, also when its ttl has passed.
    fn entry(&self, op: &'static str, key: &Key) -> Result<Option<KvPair>> {
        let url = format!("{}?consistent", self.kv_url(key.as_str()));
        let (status, body) = self.request(op, key.as_str(), Method::GET, url, None)?;
        self.entry_in(op, key, status, &body)
    }

    /// The key's entry in Consul's answer (`status`, `body`) to a read of it, also
    /// when its ttl has passed.
    fn entry_in(
        &self,
        op: &'static str,
        key: &Key,
        status: StatusCode,
        body: &[u8],
    ) -> Result<Option<KvPair>> {
        let body = match status {
            StatusCode::OK => body,
            StatusCode::NOT_FOUND => return Ok(None),
            status => return Err(self.unexpected(op, key.as_str(), status, body)),
        };
        Ok(self.pairs(op, key.as_str(), body)?.into_iter().next())
    }

    /// The key's entry, unless it is absent or past its ttl.
    fn live(&self, op: &'static str, key: &Key) -> Result<Option<KvPair>> {
        Ok(self.entry(op, key)?.filter(|e| !e.expired(now_ms())))
    }

    /// The key's value and ModifyIndex, for `op`.
    fn versioned(&self, op: &'static str, key: &Key) -> Result<Option<Versioned>> {
        self.live(op, key)?
            .map(|pair| self.versioned_of(op, key.as_str(), &pair))
            .transpose()
    }

    /// A live entry, named `name`, for `op` on `key`.
    fn found(&self, op: &'static str, key: &str, name: String, pair: &KvPair) -> Result<Found> {
        Ok(Found {
            key: name,
            versioned: self.versioned_of(op, key, pair)?,
            deadline: pair.deadline(),
        })
    }

    /// An entry's value and ModifyIndex.
    fn versioned_of(&self, op: &'static str, key: &str, pair: &KvPair) -> Result<Versioned> {
        Ok(Versioned {
            value: self.value(op, key, pair)?,
            sequence: pair.modify_index,
        })
    }

    /// `PUT ?<query>` of the value: Consul's `true` or `false`.
    fn put_query(&self, op: &'static str, key: &Key, value: &[u8], query: &str) -> Result<bool> {
        let url = format!("{}?{query}", self.kv_url(key.as_str()));
        let (_, body) = self.request(op, key.as_str(), Method::PUT, url, Some(value))?;
        self.boolean(op, key.as_str(), &body)
    }

    fn put_cas(&self, op: &'static str, key: &Key, value: &[u8], cas: u64) -> Result<bool> {
        self.put_query(op, key, value, &format!("cas={cas}"))
    }

    /// Runs a transaction of `ops`: the entries they reported, or the operations
    /// that failed only their condition (a check, a lock another session holds,
    /// an unlock of a lock not held); any other refusal is an error.
    fn txn(&self, op: &'static str, key: &str, ops: &[Json]) -> Result<Txn> {
        let url = format!("{}/v1/txn", self.base);
        let body = serde_json::to_vec(ops).expect("JSON values serialize");
        let (status, body) = self.request(op, key, Method::PUT, url, Some(&body))?;
        let read = |body: &[u8]| {
            serde_json::from_slice::<TxnAnswer>(body).map_err(|e| {
                self.failed(
                    op,
                    key,
                    format_args!("cannot read Consul's answer to a transaction: {e}"),
                )
            })
        };
        match status {
            StatusCode::OK => Ok(Ok(read(&body)?
                .results
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| r.kv)
                .collect())),
            StatusCode::CONFLICT => {
                let errors = read(&body)?.errors.unwrap_or_default();
                let conflict = |e: &TxnError| {
                    if e.what.contains("Permission denied") {
                        return false;
                    }
                    let verb = ops.get(e.op_index).and_then(|o| o["KV"]["Verb"].as_str());
                    match verb {
                        Some("check-index" | "check-not-exists" | "check-session") => true,
                        Some("lock") => e.what.contains("already held"),
                        Some("unlock") => e.what.contains("isn't held"),
                        _ => false,
                    }
                };
                if !errors.is_empty() && errors.iter().all(conflict) {
                    return Ok(Err(errors));
                }
                let what: Vec<&str> = errors.iter().map(|e| e.what.as_str()).collect();
                let reason = format!("Consul refused the transaction: {}", what.join("; "));
                Err(match what.iter().any(|w| w.contains("Permission denied")) {
                    true => self.remote.fail(
                        op,
                        key,
                        Failure::Auth {
                            reason,
                            advice: TOKEN_ADVICE.into(),
                        },
                    ),
                    false => self.failed(op, key, reason),
                })
            }
            status => Err(self.unexpected(op, key, status, &body)),
        }
    }

    /// A write that found the key changed every time it tried.
    fn kept_changing(&self, op: &'static str, key: &Key) -> Error {
        self.failed(
            op,
            key.as_str(),
            format_args!(
                "the key changed between each of {ATTEMPTS} reads and the write that \
                 followed it (other clients writing it): try again"
            ),
        )
    }

    /// The name of the session libkv makes for `key`: `kind` `ttl` for a key
    /// written with a ttl, `lock` for a lock.
    fn session_name(&self, kind: &str, key: &Key) -> String {
        format!("libkv {kind} {}", self.consul_key(key.as_str()))
    }

    /// A new session for `key`: `Behavior: delete` for a key written with a ttl
    /// (`kind` `ttl`), `release` for a lock (`lock`). Without lock-delay, so the
    /// key can be taken again as soon as it is free.
    fn create_session(
        &self,
        op: &'static str,
        key: &Key,
        ttl: Duration,
        kind: &str,
    ) -> Result<String> {
        let ttl = match ttl.subsec_nanos() {
            0 => format!("{}s", ttl.as_secs()),
            _ => format!("{}ms", ttl.as_millis().max(1)),
        };
        let behavior = if kind == "ttl" { "delete" } else { "release" };
        let body = json!({
            "Name": self.session_name(kind, key),
            "TTL": ttl,
            "Behavior": behavior,
            "LockDelay": "0s",
        });
        let url = format!("{}/v1/session/create", self.base);
        let body = body.to_string().into_bytes();
        let answer = match self.request(op, key.as_str(), Method::PUT, url, Some(&body)) {
            // Below the server's session_ttl_min: Consul answers 500.
            Err(Error::Store { reason, .. }) if reason.contains("Invalid Session TTL") => {
                return Err(Error::InvalidArgument(format!(
                    "ttl {ttl} is refused by {}: {reason} (the server's session_ttl_min, 10 s \
                     by default); use a longer ttl",
                    self.remote.url
                )))
            }
            answer => answer?,
        };
        match answer {
            (StatusCode::OK, body) => serde_json::from_slice::<SessionCreated>(&body)
                .map(|created| created.id)
                .map_err(|e| {
                    self.failed(
                        op,
                        key.as_str(),
                        format_args!("cannot read the session Consul made: {e}"),
                    )
                }),
            (status, body) => Err(self.unexpected(op, key.as_str(), status, &body)),
        }
    }

    fn session_url(&self, action: &str, id: &str) -> String {
        let mut url = format!("{}/v1/session/{action}/", self.base);
        encode_segment(&mut url, id);
        url
    }

    /// Renews a session: false when Consul no longer has it.
    fn renew_session(&self, op: &'static str, key: &Key, id: &str) -> Result<bool> {
        let url = self.session_url("renew", id);
        match self.request(op, key.as_str(), Method::PUT, url, None)? {
            (StatusCode::OK, _) => Ok(true),
            (StatusCode::NOT_FOUND, _) => Ok(false),
            (status, body) => Err(self.unexpected(op, key.as_str(), status, &body)),
        }
    }

    /// Destroys a session; best effort: one not destroyed ends after its TTL.
    fn destroy_session(&self, op: &'static str, key: &Key, id: &str) {
        let url = self.session_url("destroy", id);
        let _ = self.request(op, key.as_str(), Method::PUT, url, None);
    }

    /// Destroys the session of a ttl key that was replaced.
    fn end_ttl_session(&self, op: &'static str, key: &Key, replaced: &KvPair) {
        if let Some(id) = replaced.ttl_session() {
            self.destroy_session(op, key, id);
        }
    }

    /// Destroys a session that held `key` when its name says libkv made it for
    /// `key` written with a ttl (a write that replaced the key's flags no longer
    /// tells); best effort.
    fn end_named_ttl_session(&self, op: &'static str, key: &Key, id: &str) {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Named {
            name: String,
        }
        let url = self.session_url("info", id);
        if let Ok((StatusCode::OK, body)) = self.request(op, key.as_str(), Method::GET, url, None) {
            let named: Vec<Named> = serde_json::from_slice(&body).unwrap_or_default();
            if named
                .first()
                .is_some_and(|s| s.name == self.session_name("ttl", key))
            {
                self.destroy_session(op, key, id);
            }
        }
    }

    /// A write without ttl when `cond` holds: the key permanent, no session
    /// holding it. False when the condition failed.
    fn write_plain(&self, op: &'static str, key: &Key, value: &[u8], cond: Cond) -> Result<bool> {
        if value.len() > TXN_BYTES {
            return self.write_large(op, key, value, cond);
        }
        let k = self.consul_key(key.as_str());
        // First as if no session held the key, which Consul then refuses.
        let mut ops = match cond {
            Cond::Any => vec![write(&k, "set", value, 0, ""), check_session(&k, "")],
            Cond::Absent => vec![check_not_exists(&k), write(&k, "set", value, 0, "")],
            Cond::Index(n) => vec![
                check_index(&k, n),
                check_session(&k, ""),
                write(&k, "set", value, 0, ""),
            ],
        };
        // What the write replaces, once read.
        let mut replaced: Option<KvPair> = None;
        for _ in 0..ATTEMPTS {
            let failed = match self.txn(op, key.as_str(), &ops)? {
                Ok(_) => {
                    if let Some(replaced) = &replaced {
                        self.end_ttl_session(op, key, replaced);
                    }
                    return Ok(true);
                }
                Err(failed) => failed,
            };
            // A stale sequence (the first operation checks it).
            if matches!(cond, Cond::Index(_)) && failed.iter().any(|e| e.op_index == 0) {
                return Ok(false);
            }
            // A session holds the key, or (atomic_create) it is there, maybe past
            // its ttl, or it changed since it was read: read it, and replace what
            // is there if the condition holds.
            let found = self.entry(op, key)?;
            if !cond.holds(found.as_ref(), now_ms()) {
                return Ok(false);
            }
            ops = match &found {
                None => vec![check_not_exists(&k), write(&k, "set", value, 0, "")],
                Some(found) => vec![
                    check_index(&k, found.modify_index),
                    match found.session() {
                        "" => write(&k, "set", value, 0, ""),
                        session => write(&k, "unlock", value, 0, session),
                    },
                ],
            };
            replaced = found;
        }
        Err(self.kept_changing(op, key))
    }

    /// [`ConsulStore::write_plain`] of a value larger than a transaction carries:
    /// after a read, `PUT ?cas=` (no session holds the key) or `PUT ?release=`
    /// (one does: the value is stored as the session lets go of the key). A
    /// conditional write of a key a session holds is a `?cas=`, then a
    /// `?release=`; if the session deleted the key in between, it is written
    /// again.
    fn write_large(&self, op: &'static str, key: &Key, value: &[u8], cond: Cond) -> Result<bool> {
        for _ in 0..ATTEMPTS {
            let found = self.entry(op, key)?;
            if !cond.holds(found.as_ref(), now_ms()) {
                return Ok(false);
            }
            let Some(found) = found else {
                if self.put_cas(op, key, value, 0)? {
                    return Ok(true);
                }
                continue;
            };
            let session = found.session();
            if session.is_empty() {
                if self.put_cas(op, key, value, found.modify_index)? {
                    return Ok(true);
                }
                if matches!(cond, Cond::Index(_)) {
                    return Ok(false);
                }
                continue;
            }
            let release = format!("release={}", query_value(session));
            if let Cond::Index(n) = cond {
                if !self.put_cas(op, key, value, n)? {
                    return Ok(false);
                }
                if !self.put_query(op, key, value, &release)? && self.entry(op, key)?.is_none() {
                    self.put_cas(op, key, value, 0)?;
                }
                self.end_ttl_session(op, key, &found);
                return Ok(true);
            }
            if self.put_query(op, key, value, &release)? {
                self.end_ttl_session(op, key, &found);
                return Ok(true);
            }
        }
        Err(self.kept_changing(op, key))
    }

    /// A write with a ttl when `cond` holds, with the session made for it: the
    /// key's new sequence, or `None` when the condition failed. `found` is the
    /// key as read before, if it was.
    fn write_ttl(
        &self,
        key: &Key,
        value: &[u8],
        cond: Cond,
        flags: u64,
        session: &str,
        mut found: Option<Option<KvPair>>,
    ) -> Result<Option<u64>> {
        let op = cond.ttl_op();
        let k = self.consul_key(key.as_str());
        for _ in 0..ATTEMPTS {
            let mut ops = Vec::new();
            match &found {
                // Not read: as if it were absent, or (put) held by no session.
                None if cond == Cond::Any => {}
                None | Some(None) => ops.push(check_not_exists(&k)),
                Some(Some(e)) => {
                    ops.push(check_index(&k, e.modify_index));
                    if !e.session().is_empty() {
                        ops.push(write(&k, "unlock", value, flags, e.session()));
                    }
                }
            }
            ops.push(write(&k, "lock", value, flags, session));
            match self.txn(op, key.as_str(), &ops)? {
                Ok(written) => {
                    if let Some(Some(replaced)) = &found {
                        self.end_ttl_session(op, key, replaced);
                    }
                    // The lock's entry comes last.
                    return match written.last() {
                        Some(entry) => Ok(Some(entry.modify_index)),
                        None => Err(self.failed(
                            op,
                            key.as_str(),
                            "Consul's answer to the transaction has no entry",
                        )),
                    };
                }
                Err(_) => {
                    let now_found = self.entry(op, key)?;
                    if !cond.holds(now_found.as_ref(), now_ms()) {
                        return Ok(None);
                    }
                    found = Some(now_found);
                }
            }
        }
        Err(self.kept_changing(op, key))
    }

    /// Takes the lock with a session of its own, made or renewed before each try
    /// (the lock holds at least `ttl` from then), kept in `session`.
    fn take_lock(
        &self,
        key: &Key,
        owner: &str,
        ttl: Duration,
        deadline: Instant,
        session: &mut Option<String>,
    ) -> Result<Option<(u64, Instant)>> {
        let op = "newlock";
        let k = self.consul_key(key.as_str());
        loop {
            let sent = Instant::now();
            let renewed = match session.as_deref() {
                Some(id) => self.renew_session(op, key, id)?,
                None => false,
            };
            if !renewed {
                // Gone (waiting longer than its TTL), or not made yet.
                *session = None;
                *session = Some(self.create_session(op, key, ttl, "lock")?);
            }
            let id = session.as_deref().unwrap_or_default();
            let ops = [write(&k, "lock", owner.as_bytes(), 0, id)];
            let delayed = match self.txn_lock(op, key, &ops)? {
                Ok(taken) => match taken.first() {
                    Some(entry) => return Ok(Some((entry.modify_index, sent))),
                    None => {
                        return Err(self.failed(
                            op,
                            key.as_str(),
                            "Consul's answer to the transaction has no entry",
                        ))
                    }
                },
                Err(delayed) => delayed,
            };
            let now = Instant::now();
            if delayed {
                // Another client's session held the key, with a lock-delay.
                if now >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(LOCK_DELAY_PAUSE.min(deadline - now));
            } else if !self.wait_until_free(op, key, deadline)? {
                return Ok(None);
            }
        }
    }

    /// A lock's transaction: the entries, or whether it failed for the key's
    /// lock-delay (true) or because another session holds it (false).
    fn txn_lock(
        &self,
        op: &'static str,
        key: &Key,
        ops: &[Json],
    ) -> Result<std::result::Result<Vec<KvPair>, bool>> {
        match self.txn(op, key.as_str(), ops) {
            Ok(Ok(taken)) => Ok(Ok(taken)),
            Ok(Err(_)) => Ok(Err(false)),
            Err(Error::Store { reason, .. }) if reason.contains("due to lock delay") => {
                Ok(Err(true))
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until the lock key is absent or no session holds it (true), or the
    /// deadline has passed (false): reads it, then waits for its ModifyIndex to
    /// move with a blocking query, again while a session still holds it.
    fn wait_until_free(&self, op: &'static str, key: &Key, deadline: Instant) -> Result<bool> {
        // The ModifyIndex seen, never 0 for a present key: 0 reads at once.
        let mut seen = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let held = match seen {
                0 => self.entry(op, key)?,
                index => self.entry_after(op, key, index, deadline - now)?,
            };
            match held {
                Some(e) if !e.session().is_empty() => seen = e.modify_index,
                _ => return Ok(true),
            }
        }
    }

    /// A blocking query: the key once its ModifyIndex is above `index`, or as it
    /// is after about `left`.
    fn entry_after(
        &self,
        op: &'static str,
        key: &Key,
        index: u64,
        left: Duration,
    ) -> Result<Option<KvPair>> {
        // Consul waits up to a sixteenth longer than asked, at random.
        let wait = (left - left / 16).max(Duration::from_millis(1));
        let url = format!(
            "{}?index={index}&wait={}ms",
            self.kv_url(key.as_str()),
            wait.as_millis()
        );
        let (status, body) = self.request_within(
            op,
            key.as_str(),
            Method::GET,
            url,
            None,
            wait + self.timeout,
        )?;
        self.entry_in(op, key, status, &body)
    }
}

/// Milliseconds since the Unix epoch, by this host's clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `Flags` of a key written with a ttl that expires at `deadline` (ms).
fn ttl_flags(deadline: u64) -> u64 {
    (TTL_MARK << DEADLINE_BITS) | (deadline & DEADLINE_MASK)
}

/// A transaction's `check-index` of a key.
fn check_index(key: &str, index: u64) -> Json {
    json!({"KV": {"Verb": "check-index", "Key": key, "Index": index}})
}

fn check_not_exists(key: &str) -> Json {
    json!({"KV": {"Verb": "check-not-exists", "Key": key}})
}

/// A transaction's check that `session` holds the key ("": none does).
fn check_session(key: &str, session: &str) -> Json {
    json!({"KV": {"Verb": "check-session", "Key": key, "Session": session}})
}

/// A transaction's `set`, `lock` or `unlock` of a value.
fn write(key: &str, verb: &str, value: &[u8], flags: u64, session: &str) -> Json {
    json!({"KV": {
        "Verb": verb,
        "Key": key,
        "Value": BASE64.encode(value),
        "Flags": flags,
        "Session": session,
    }})
}

fn delete_op(key: &str) -> Json {
    json!({"KV": {"Verb": "delete", "Key": key}})
}

/// A query parameter's value, percent-encoded.
fn query_value(value: &str) -> String {
    let mut out = String::new();
    encode_segment(&mut out, value);
    out
}

/// The most operations one Consul transaction takes (64 before Consul 1.14).
const TXN_OPS: usize = 64;
/// The most value bytes one transaction carries (Consul's default
/// `txn_max_req_len` is 512 KiB, base64 included). A larger value goes by
/// `PUT /v1/kv/`.
const TXN_BYTES: usize = 256 << 10;

/// Appends a key segment, percent-encoding all but unreserved characters.
fn encode_segment(out: &mut String, segment: &str) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn text(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// A request that failed on its way: never sent when no connection was made.
fn transport(e: reqwest::Error) -> Failure {
    // Never the request URL: it is named by the error's caller, and tokens are
    // headers, not query parameters.
    let connecting = e.is_connect();
    let reason = describe(None, Some(&e.without_url()));
    if connecting {
        Failure::Unsent {
            reason,
            answered: false,
        }
    } else {
        Failure::Lost {
            reason,
            answered: false,
        }
    }
}

/// consul+ssl+noverify://: encrypts, but accepts any server certificate.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Store for ConsulStore {
    fn provider(&self) -> &'static str {
        "consul"
    }

    fn url(&self) -> &str {
        &self.remote.url
    }

    /// The JSON entry (not `?raw`, which has no `Flags`): a key past its ttl is
    /// absent.
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        match self.live("get", key)? {
            Some(pair) => Ok(Some(self.value("get", key.as_str(), &pair)?)),
            None => Ok(None),
        }
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<()> {
        match self.write_plain("put", key, value, Cond::Any)? {
            true => Ok(()),
            false => Err(self.failed("put", key.as_str(), "Consul did not store the value")),
        }
    }

    fn delete(&self, key: &Key) -> Result<()> {
        let url = self.kv_url(key.as_str());
        self.request("delete", key.as_str(), Method::DELETE, url, None)
            .map(|_| ())
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        Ok(self.live("exists", key)?.is_some())
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        Ok(self
            .below("list", dir)?
            .into_iter()
            .map(|found| (found.key, found.versioned.value))
            .collect())
    }

    fn deletetree(&self, dir: &Key) -> Result<()> {
        let url = format!("{}?recurse", self.dir_url(dir));
        self.request("deletetree", dir.as_str(), Method::DELETE, url, None)
            .map(|_| ())
    }

    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool> {
        self.write_plain("atomic_create", key, value, Cond::Absent)
    }

    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>> {
        self.versioned("atomic_get", key)
    }

    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool> {
        let cond = match previous {
            0 => Cond::Absent,
            n => Cond::Index(n),
        };
        self.write_plain("atomic_put", key, value, cond)
    }

    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool> {
        let op = "atomic_delete";
        if previous == 0 {
            // Consul never deletes with ?cas=0: true when the key is absent.
            return Ok(self.live(op, key)?.is_none());
        }
        let k = self.consul_key(key.as_str());
        // One transaction when no session holds the key; else the key is read
        // (a key past its ttl is absent) and deleted if it is still as read.
        let ops = [
            check_index(&k, previous),
            check_session(&k, ""),
            delete_op(&k),
        ];
        match self.txn(op, key.as_str(), &ops)? {
            Ok(_) => return Ok(true),
            Err(failed) if failed.iter().any(|e| e.op_index == 0) => return Ok(false),
            Err(_) => {}
        }
        let Some(found) = self.entry(op, key)? else {
            return Ok(false);
        };
        if !Cond::Index(previous).holds(Some(&found), now_ms()) {
            return Ok(false);
        }
        let ops = [check_index(&k, previous), delete_op(&k)];
        match self.txn(op, key.as_str(), &ops)? {
            Ok(_) => {
                self.end_ttl_session(op, key, &found);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Transactions of `set`s: Consul takes at most 64 operations in one, and
    /// applies each whole or not at all. A set keeps the session that held the
    /// key, which its result names: such a key is written again as by `put`, which
    /// releases the session, then destroyed if it was the key's own ttl session.
    /// An entry larger than a transaction carries is a `put` of its own.
    fn put_many(&self, entries: &[(Key, Vec<u8>)]) -> Result<()> {
        let op = "put";
        for batch in batches(entries, TXN_OPS, TXN_BYTES) {
            if let [(key, value)] = batch {
                if value.len() > TXN_BYTES {
                    self.put(key, value)?;
                    continue;
                }
            }
            let first = batch[0].0.as_str();
            let sets: Vec<Json> = batch
                .iter()
                .map(|(key, value)| write(&self.consul_key(key.as_str()), "set", value, 0, ""))
                .collect();
            let written = match self.txn(op, first, &sets)? {
                Ok(written) => written,
                Err(failed) => {
                    let what: Vec<&str> = failed.iter().map(|e| e.what.as_str()).collect();
                    return Err(self.failed(
                        op,
                        first,
                        format_args!("Consul refused the transaction: {}", what.join("; ")),
                    ));
                }
            };
            for entry in written.iter().filter(|e| !e.session().is_empty()) {
                if let Some((key, value)) = batch
                    .iter()
                    .find(|(key, _)| self.consul_key(key.as_str()) == entry.key)
                {
                    self.put(key, value)?;
                    self.end_named_ttl_session(op, key, entry.session());
                }
            }
        }
        Ok(())
    }

    /// A session with the ttl, `Behavior: delete`, held by the key, whose `Flags`
    /// carry the deadline (see the module's documentation). The session is
    /// destroyed when the key was not written.
    fn put_ttl(
        &self,
        key: &Key,
        value: &[u8],
        previous: Option<u64>,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let cond = match previous {
            None => Cond::Any,
            Some(0) => Cond::Absent,
            Some(n) => Cond::Index(n),
        };
        let op = cond.ttl_op();
        if value.len() > TXN_BYTES {
            return Err(Error::InvalidValue {
                key: key.to_string(),
                reason: format!(
                    "the Consul store writes a value with a ttl in a transaction, which \
                     carries at most {} KiB of value; this one is {} bytes: store it \
                     without ttl, or make it smaller",
                    TXN_BYTES >> 10,
                    value.len()
                ),
            });
        }
        // A stale sequence needs no session.
        let mut found = None;
        if let Cond::Index(_) = cond {
            let entry = self.entry(op, key)?;
            if !cond.holds(entry.as_ref(), now_ms()) {
                return Ok(None);
            }
            found = Some(entry);
        }
        // Taken before the session is made: Consul never ends it before.
        let deadline = now_ms().saturating_add(ttl.as_millis() as u64);
        let session = self.create_session(op, key, ttl, "ttl")?;
        let written = self.write_ttl(key, value, cond, ttl_flags(deadline), &session, found);
        if !matches!(written, Ok(Some(_))) {
            self.destroy_session(op, key, &session);
        }
        written
    }

    /// Consul's session TTL bounds (its minimum is the server's: see
    /// `SESSION_TTL`).
    fn ttl_bounds(&self) -> (u64, u64) {
        SESSION_TTL
    }

    /// A session with the ttl and `Behavior: release` takes the key (the owner
    /// as its value); while another holds it, a blocking query waits for the key
    /// to change. The session is destroyed when the lock was not taken.
    fn lock(
        &self,
        key: &Key,
        owner: &str,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<Option<(u64, Instant)>> {
        let mut session = None;
        let taken = self.take_lock(key, owner, ttl, deadline, &mut session);
        if !matches!(taken, Ok(Some(_))) {
            if let Some(id) = &session {
                self.destroy_session("newlock", key, id);
            }
        }
        taken
    }

    /// Renews the session that holds the key, when the key holds `owner`.
    fn renew(&self, key: &Key, owner: &str, _ttl: Duration) -> Result<bool> {
        let op = "renew";
        let Some(held) = self.entry(op, key)? else {
            return Ok(false);
        };
        if held.session().is_empty() || self.value(op, key.as_str(), &held)? != owner.as_bytes() {
            return Ok(false);
        }
        self.renew_session(op, key, held.session())
    }

    /// Deletes the key in a transaction that checks it still holds `owner` and its
    /// session, then destroys the session. A key left holding `owner` by a session
    /// that ended (the lock was lost) is deleted too, and answers false.
    fn unlock(&self, key: &Key, owner: &str) -> Result<bool> {
        let op = "unlock";
        let Some(held) = self.entry(op, key)? else {
            return Ok(false);
        };
        if self.value(op, key.as_str(), &held)? != owner.as_bytes() {
            return Ok(false);
        }
        let k = self.consul_key(key.as_str());
        let session = held.session();
        let mut ops = vec![check_index(&k, held.modify_index)];
        if !session.is_empty() {
            ops.push(check_session(&k, session));
        }
        ops.push(delete_op(&k));
        let deleted = self.txn(op, key.as_str(), &ops);
        if session.is_empty() {
            return deleted.map(|_| false);
        }
        self.destroy_session(op, key, session);
        Ok(deleted?.is_ok())
    }

    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>> {
        Ok(self
            .below("atomic_list", dir)?
            .into_iter()
            .map(|found| (found.key, found.versioned))
            .collect())
    }

    /// Reads the target, then waits for it to change with blocking queries
    /// (see the module's documentation).
    fn watch(
        self: Arc<Self>,
        target: &Target,
        from: Option<u64>,
    ) -> Result<Option<Box<dyn Watcher>>> {
        let source = ConsulSource {
            store: self,
            target: target.clone(),
            index: None,
            expires: None,
            tokens: WAKE_BURST,
            refilled: Instant::now(),
            query: None,
        };
        Ok(Some(Box::new(Coalescing::start(
            source,
            target.clone(),
            from,
        )?)))
    }

    fn info(&self) -> Result<Value> {
        let op = "info";
        let (_, body) = self.request(
            op,
            "",
            Method::GET,
            format!("{}/v1/agent/self", self.base),
            None,
        )?;
        let agent: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.failed(op, "", format_args!("cannot read /v1/agent/self: {e}")))?;
        let (_, leader) = self.request(
            op,
            "",
            Method::GET,
            format!("{}/v1/status/leader", self.base),
            None,
        )?;
        let leader: String = serde_json::from_slice(&leader).unwrap_or_else(|_| text(&leader));
        let config = |field: &str| {
            Value::from(
                agent["Config"][field]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        Ok(Value::hash([
            ("provider", Value::from("consul")),
            ("url", Value::from(self.remote.url.as_str())),
            ("datacenter", config("Datacenter")),
            ("node", config("NodeName")),
            ("version", config("Version")),
            ("leader", Value::from(leader)),
        ]))
    }
}

/// How long a watch's blocking query asks Consul to wait. The query outlives
/// the calls that wait on it, whatever their deadlines: this is how often an
/// idle watch asks again. It also bounds how late an index that went backwards
/// (a snapshot restored) is noticed, since Consul keeps a query waiting past an
/// index it no longer has until its wait is over, and (with the sixteenth
/// Consul adds and the store's timeout) how long a Consul that went silent,
/// keeping the connection open, goes unnoticed. Hence seconds, not Consul's
/// default of 5 minutes.
const WATCH_WAIT: Duration = Duration::from_secs(5);

/// How many blocking queries that woke for a change may follow one another at
/// once before the rate limit slows them down (Consul's advice: a token bucket
/// with a burst of 2). Then one goes every [`WAKE_EVERY`].
const WAKE_BURST: f64 = 2.0;
/// The pace of blocking queries that wake for changes, past the burst: a key
/// that changes without pause is handed out at most this much behind.
const WAKE_EVERY: Duration = Duration::from_millis(50);

/// A blocking query that waits for a ttl deadline at most this far away asks for
/// all of it: Consul's jitter (up to a sixteenth more) is then at most 100 ms.
/// Farther, it asks for 16/17 of it, so that it ends by the deadline.
const JITTER_FREE: Duration = Duration::from_millis(1600);

/// How long after a ttl deadline the key is read again: deadlines are in whole
/// milliseconds.
const EXPIRY_SLACK: Duration = Duration::from_millis(2);

/// Consul's answer: its status, `X-Consul-Index` and body.
type Answer = (StatusCode, Option<u64>, Vec<u8>);

/// A request with its timeout, owning what it needs: it can be left in flight
/// by one call and waited on again by the next.
type Request = Pin<Box<dyn Future<Output = Result<Answer>> + Send>>;

/// What a watch's read is, and so when its answer is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An ordinary read: always.
    Read,
    /// A blocking query waiting for the index to move: when it did.
    Change,
    /// A blocking query ending at a ttl deadline: always.
    Expiry,
}

/// A watch's read under way. It outlives the call that sent it: a call whose
/// deadline passes first leaves it in flight, and the next waits on it again.
struct Query {
    /// `None` once dropped.
    request: Option<Request>,
    kind: Kind,
    /// When the last call that waited on it returned.
    left: Instant,
    /// The process that sent it.
    pid: u32,
}

impl Query {
    /// Whether it is no longer waited on: sent by the process this one was
    /// forked from, or left alone for more than half the store's timeout. Its
    /// answer may then have come meanwhile, and the time the request has left
    /// (wall-clock) may be too short to take it from the connection: the read is
    /// asked again instead (a blocking query with the same index answers at once
    /// if anything changed).
    fn abandoned(&self, now: Instant, timeout: Duration) -> bool {
        self.pid != fork::pid() || now.saturating_duration_since(self.left) > timeout / 2
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        if self.pid != fork::pid() {
            // Its connection and timer are the parent's runtime's: leaked, as
            // the runtime is (see `remote`).
            std::mem::forget(request);
            return;
        }
        // Within the runtime, as a request cancelled at its timeout is.
        match runtime() {
            Ok(runtime) => {
                let _inside = runtime.enter();
                drop(request);
            }
            Err(_) => drop(request),
        }
    }
}

/// Where a Consul watcher reads from: a consistent read first, then blocking
/// queries, each waiting past the `X-Consul-Index` of the last answer.
struct ConsulSource {
    store: Arc<ConsulStore>,
    target: Target,
    /// The index of the last answer, which the next query waits past; `None`
    /// before the first read, 0 once the index went backwards (the next read is
    /// then an ordinary one, as the first).
    index: Option<u64>,
    /// The earliest ttl deadline (ms since the Unix epoch) among the keys of the
    /// last state: their expiry does not move Consul's index.
    expires: Option<u64>,
    /// The rate limit's tokens, as of `refilled`.
    tokens: f64,
    refilled: Instant,
    /// The read under way, if any.
    query: Option<Query>,
}

impl ConsulSource {
    /// The URL of a read of the target, at once (`blocking` is `None`) or by a
    /// blocking query (the index to wait past, and for how long), and the time
    /// its request may take.
    fn url(&self, blocking: Option<(u64, Duration)>) -> (String, Duration) {
        let store = &*self.store;
        let key = &self.target.key;
        let mut url = match self.target.tree {
            true => format!("{}?recurse&", store.dir_url(key)),
            false => format!("{}?", store.kv_url(key.as_str())),
        };
        let timeout = match blocking {
            None => {
                url.push_str("consistent");
                store.timeout
            }
            Some((index, wait)) => {
                url.push_str(&format!("index={index}&wait={}ms", wait.as_millis()));
                // Consul waits up to a sixteenth longer than asked, at random.
                wait + wait / 16 + store.timeout
            }
        };
        (url, timeout)
    }

    /// Makes the request of a read (see [`ConsulSource::url`]), which goes out
    /// when first waited on, and keeps it under way.
    fn send(&mut self, kind: Kind, blocking: Option<(u64, Duration)>) {
        let (url, timeout) = self.url(blocking);
        let store = Arc::clone(&self.store);
        let op = self.target.op();
        let key = self.target.key.as_str().to_owned();
        let ends = Instant::now() + timeout;
        let request = async move {
            // The generation of the client it went to (0: none yet), to drop
            // that one only.
            let used = AtomicU64::new(0);
            let sent = AtomicBool::new(false);
            let request = store.send(
                Method::GET,
                url,
                None,
                |generation| used.store(generation, Ordering::Relaxed),
                || sent.store(true, Ordering::Relaxed),
            );
            // As `Remote::run`, but timed here: the request outlives the calls
            // that wait on it.
            match tokio::time::timeout_at(ends.into(), request).await {
                Ok(answer) => answer.map_err(|failure| store.remote.fail(op, &key, failure)),
                Err(_) => {
                    let used = used.load(Ordering::Relaxed);
                    CLIENTS.forget(&store.client_key, (used != 0).then_some(used));
                    Err(Error::Timeout {
                        op,
                        key,
                        store: store.remote.url.clone(),
                        after: timeout,
                        waiting: match sent.load(Ordering::Relaxed) {
                            true => Waiting::Answer,
                            false => Waiting::Store,
                        },
                    })
                }
            }
        };
        self.query = Some(Query {
            request: Some(Box::pin(request)),
            kind,
            left: Instant::now(),
            pid: fork::pid(),
        });
    }

    /// Sends the next read, unless the rate limit holds it back: then sleeps,
    /// until `deadline` at most, and answers false.
    fn ask(&mut self, now: Instant, deadline: Instant) -> bool {
        let index = self.index.unwrap_or(0);
        let expires_in = self
            .expires
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
        if index == 0 || expires_in == Some(Duration::ZERO) {
            // The loop starts again after the index went backwards; a key's ttl
            // passed.
            self.send(Kind::Read, None);
            return true;
        }
        let expiry = expires_in.map(|left| left + EXPIRY_SLACK);
        let ready = self.ready_at(now);
        if ready > now {
            let until = expiry.map_or(deadline, |left| deadline.min(now + left));
            sleep_until(ready.min(until));
            return false;
        }
        let (kind, wait) = match expiry {
            Some(left) if left < WATCH_WAIT => match left > JITTER_FREE {
                true => (Kind::Expiry, left.mul_f64(16.0 / 17.0)),
                false => (Kind::Expiry, left),
            },
            _ => (Kind::Change, WATCH_WAIT),
        };
        self.send(kind, Some((index, wait.max(Duration::from_millis(1)))));
        true
    }

    /// Reads Consul's answer to a read of the target: the state, and whether the
    /// index moved.
    fn absorb(&mut self, (status, answered, body): Answer) -> Result<(Snapshot, bool)> {
        let store = &*self.store;
        let (op, key, tree) = (self.target.op(), &self.target.key, self.target.tree);
        let found: Vec<Found> = if tree {
            store
                .listed(op, key, status, &body)?
                .into_iter()
                .map(|f| Found {
                    key: key.join(&f.key),
                    ..f
                })
                .collect()
        } else {
            match store
                .entry_in(op, key, status, &body)?
                .filter(|pair| !pair.expired(now_ms()))
            {
                Some(pair) => {
                    vec![store.found(op, key.as_str(), key.as_str().to_owned(), &pair)?]
                }
                None => Vec::new(),
            }
        };
        // Consul's rules: an index is at least 1 (so that the next query
        // blocks), and one lower than the last starts the loop again.
        let answered = answered.unwrap_or(0).max(1);
        let previous = self.index;
        self.index = Some(match previous {
            Some(last) if answered < last => 0,
            _ => answered,
        });
        self.expires = found.iter().filter_map(|f| f.deadline).min();
        let snapshot = Snapshot {
            index: answered,
            entries: found.into_iter().map(|f| (f.key, f.versioned)).collect(),
        };
        Ok((snapshot, previous != Some(answered)))
    }

    /// When the next blocking query may go: at once, unless the last ones woke
    /// for changes in quick succession.
    fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        match self.tokens {
            t if t >= 1.0 - 1e-9 => now,
            t => now + WAKE_EVERY.mul_f64(1.0 - t),
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned =
            now.saturating_duration_since(self.refilled).as_secs_f64() / WAKE_EVERY.as_secs_f64();
        self.tokens = (self.tokens + earned).min(WAKE_BURST);
        self.refilled = now;
    }
}

impl Source for ConsulSource {
    fn next(&mut self, deadline: Instant) -> Result<Option<Snapshot>> {
        if self.index.is_none() {
            // The first read, at once, within the store's timeout.
            let (url, timeout) = self.url(None);
            let (op, key) = (self.target.op(), self.target.key.as_str());
            let answer = self
                .store
                .exchange(op, key, Method::GET, url, None, timeout)?;
            return Ok(Some(self.absorb(answer)?.0));
        }
        loop {
            let now = Instant::now();
            if let Some(query) = &self.query {
                if query.abandoned(now, self.store.timeout) {
                    self.query = None;
                }
            }
            if self.query.is_none() {
                if now >= deadline {
                    return Ok(None);
                }
                if !self.ask(now, deadline) {
                    continue;
                }
            }
            let query = self.query.as_mut().expect("a read under way");
            let request = query.request.as_mut().expect("not dropped");
            let left = deadline.saturating_duration_since(now);
            let answer = match block_on_timeout(left, request.as_mut()) {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    // The deadline passed first: the read stays under way.
                    query.left = Instant::now();
                    return Ok(None);
                }
                Err(e) => {
                    self.query = None;
                    return Err(self.store.failed(
                        self.target.op(),
                        self.target.key.as_str(),
                        format_args!("cannot start the I/O runtime: {e}"),
                    ));
                }
            };
            let kind = query.kind;
            self.query = None;
            let (snapshot, moved) = self.absorb(answer?)?;
            match kind {
                Kind::Read => return Ok(Some(snapshot)),
                _ if moved => {
                    self.refill(Instant::now());
                    self.tokens -= 1.0;
                    return Ok(Some(snapshot));
                }
                Kind::Expiry => return Ok(Some(snapshot)),
                // Consul's wait ended with nothing changed: another query.
                Kind::Change => {}
            }
        }
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}
