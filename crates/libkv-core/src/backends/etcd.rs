//! `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` and `etcd+ssl://...`: etcd v3 over gRPC.
//!
//! - A key is `PREFIX + key` in etcd. Values are the codec's bytes, so `etcdctl get`
//!   shows Strings as they are.
//! - A key's sequence is its `mod_revision`: etcd's store-wide revision of the key's
//!   last write, never 0, never reused.
//! - `atomic_create`, `atomic_put` and `atomic_delete` are single transactions that
//!   compare `mod_revision` (0 for an absent key), so racing writers are
//!   linearizable. `list`, `atomic_list` and `deletetree` are one prefix range
//!   request on `PREFIX + dir + "/"`. Reads are etcd's default linearizable reads.
//!   Only names that are keys are listed.
//! - The URL's endpoints are the members of one cluster. A process keeps one client
//!   (one HTTP/2 connection) per member and auth settings, shared by every store
//!   object on them: made when a call first needs that member, dropped after a
//!   connection or credential failure and after `fork`, made again when needed.
//! - A call goes to the member that answered last. When that member cannot be
//!   reached, the call goes on to the next; when the members that answer have no
//!   leader (they ask for one: `require_leader`), it waits for the election and
//!   tries again. So while a quorum is up, every call succeeds:
//!   - reads, `put`, `delete` and `deletetree` may be sent again: when the
//!     connection fails under them, or when a quarter of the timeout passes without
//!     an answer (a member whose leader died holds a write it forwarded there until
//!     its own timeout), the next member gets them too, and the first answer wins;
//!   - the compare-and-swaps are sent again only when they never reached etcd: one
//!     whose connection failed after sending fails, saying it may have been
//!     applied. After a member failed, they are sent only to a member that follows
//!     another leader, so that they are not held by one that has not noticed yet.
//! - Every call, connecting included, ends within the store's timeout; each
//!   connection attempt gets a share of it, so a member that never answers leaves
//!   time for the others.
//! - A watch is one etcd Watch from a revision, on the member client every call
//!   uses (so a process's watches share its connection, each one HTTP/2 stream).
//!   When the stream fails, the watch opens another, on whichever member answers,
//!   from the revision after the last event it handed out: no gap, no repeat.
//!   History etcd has compacted away is an error that says to read again.

use std::cell::Cell;
use std::collections::VecDeque;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::WatchStream;

use etcd_client::{
    Certificate, Channel, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, Identity, KeyValue, KvClient, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tonic::Code;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::options::Auth;
use crate::remote::{batches, block_on_timeout, describe, ClientCache, Failure, PemFile, Remote};
use crate::store::{Listing, Page, Store, Versioned};
use crate::url::{Endpoint, StoreUrl};
use crate::value::Value;
use crate::watch::{Event, EventKind, Target, Watcher};

pub struct EtcdStore {
    /// Its URL and members, as errors name them.
    remote: Remote,
    /// Prepended to every key: "" for the root, "/PREFIX" otherwise.
    prefix: String,
    tls: bool,
    /// The cluster's members, in the URL's order, each with its own client.
    members: Vec<MemberKey>,
    /// The member a call goes to first: the last one that answered. A call that
    /// cannot reach it goes on to the next, so one dead member costs a refused
    /// connection once, not on every call.
    pinned: AtomicUsize,
    /// Members seen failing (by etcd member id), and when: until the others elect
    /// another leader, a member that still follows one of them forwards a write
    /// there and holds it until its own timeout, so compare-and-swaps wait for the
    /// election instead.
    failed_members: Mutex<Vec<(u64, Instant)>>,
    /// Each member's etcd id, once known (0 before).
    ids: Vec<AtomicU64>,
    timeout: Duration,
}

/// What a client of one member is made from: stores with the same share one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct MemberKey {
    endpoint: String,
    auth: Auth,
}

static CLIENTS: ClientCache<MemberKey, Conn> = ClientCache::new();

/// The largest response the client accepts: what etcd itself may send (grpc-go's
/// default limit), not tonic's 4 MiB, which a list of a few large values exceeds.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// The longest pause between two rounds over the members while the cluster has no
/// leader (an election after the leader died takes about a second).
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// A connected client of one member, and its KV client with the response limit
/// raised. A call takes a copy of its own (the KV client's requests take `&mut`):
/// the whole client, a dozen service clients, is shared rather than copied.
#[derive(Clone)]
struct Conn {
    client: Arc<Client>,
    kv: KvClient,
    /// The member's etcd id.
    id: u64,
}

/// Whether a call may be sent again, to another member, after the member it went to
/// failed without saying whether it did it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// A read, or a write whose second application leaves what one would (`put`,
    /// `delete`, `deletetree`): sent again to the next member.
    Safe,
    /// A compare-and-swap: applied once, its answer lost, a second try would answer
    /// `false` for a write that was made. Sent again only when it never reached etcd.
    Unsent,
}

/// What to tell a caller whose credentials etcd refused.
#[derive(Clone, Copy)]
enum AuthAdvice {
    /// Wrong or missing username or password.
    Credentials,
    /// The user has no role that allows this on the key.
    Permission,
    /// This etcd has authentication off, and refuses a username and password.
    NotEnabled,
}

impl EtcdStore {
    /// A store for the URL's endpoints and prefix. Nothing is connected until the
    /// first call.
    pub fn open(url: &StoreUrl, auth: &Auth, timeout: Duration) -> Result<EtcdStore> {
        let StoreUrl::Etcd {
            tls,
            endpoints,
            prefix,
        } = url
        else {
            unreachable!("EtcdStore::open is given etcd URLs only")
        };
        auth.only(
            "etcd",
            &["ca_file", "cert_file", "key_file", "username", "password"],
        )?;
        let settings_error = |reason: &str| Err(Error::InvalidArgument(reason.to_owned()));
        match (auth.get("username"), auth.get("password")) {
            (Some(_), None) => return settings_error("etcd auth has a username but no password"),
            (None, Some(_)) => return settings_error("etcd auth has a password but no username"),
            _ => {}
        }
        if auth.get("cert_file").is_some() != auth.get("key_file").is_some() {
            return settings_error("etcd auth needs both cert_file and key_file, or neither");
        }
        let has_tls_files = ["ca_file", "cert_file", "key_file"]
            .iter()
            .any(|k| auth.get(k).is_some());
        if has_tls_files && !tls {
            return settings_error(
                "ca_file, cert_file and key_file are for TLS: use an etcd+ssl:// URL",
            );
        }
        let scheme = if *tls { "https" } else { "http" };
        let members: Vec<MemberKey> = endpoints
            .iter()
            .map(|e: &Endpoint| MemberKey {
                endpoint: format!("{scheme}://{e}"),
                auth: auth.clone(),
            })
            .collect();
        let at: Vec<&str> = members.iter().map(|m| m.endpoint.as_str()).collect();
        Ok(EtcdStore {
            remote: Remote {
                url: url.to_string(),
                service: "etcd",
                at: at.join(", "),
                tls_scheme: "etcd+ssl",
            },
            prefix: if prefix.is_root() {
                String::new()
            } else {
                prefix.as_str().to_owned()
            },
            tls: *tls,
            members,
            pinned: AtomicUsize::new(0),
            failed_members: Mutex::new(Vec::new()),
            ids: endpoints.iter().map(|_| AtomicU64::new(0)).collect(),
            timeout,
        })
    }

    fn etcd_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    /// The range every key below `dir` falls in: `PREFIX + dir + "/"`.
    fn etcd_dir(&self, dir: &Key) -> String {
        format!("{}{}", self.prefix, dir.dir_prefix())
    }

    fn connect_options(&self) -> ConnectOptions {
        let auth = &self.members[0].auth;
        // A member that has lost its leader refuses a request at once, unread,
        // instead of holding it until its own timeout: the call then goes to
        // another member, or waits out the election, within the call's timeout.
        let mut options = ConnectOptions::new()
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if let (Some(user), Some(password)) = (auth.get("username"), auth.get("password")) {
            options = options.with_user(user, password);
        }
        options
    }

    /// The TLS settings of the auth Hash: its CA (else the system's), its client
    /// certificate.
    fn tls_options(&self) -> std::result::Result<TlsOptions, Failure> {
        let auth = &self.members[0].auth;
        let tls = match auth.get("ca_file") {
            Some(ca) => {
                TlsOptions::new().ca_certificate(Certificate::from_pem(read_certs("ca_file", ca)?))
            }
            None => TlsOptions::new().with_native_roots(),
        };
        Ok(match (auth.get("cert_file"), auth.get("key_file")) {
            (Some(cert), Some(key)) => tls.identity(Identity::from_pem(
                read_certs("cert_file", cert)?,
                read_key("key_file", key)?,
            )),
            _ => tls,
        })
    }

    /// This process's client of one member, and its generation, connecting it if
    /// needed, within `within`. A connection that cannot be made is `Unsent`.
    async fn member(
        &self,
        member: &MemberKey,
        within: Duration,
    ) -> std::result::Result<(Conn, u64), Failure> {
        if let Some(found) = CLIENTS.get(member) {
            return Ok(found);
        }
        let unsent = |e: tonic::transport::Error| Failure::Unsent {
            reason: describe(None, Some(&e)),
            answered: false,
        };
        // No request timeout of the client's own: `call` bounds every wait. No
        // HTTP/2 keep-alive pings either: nothing drives the connection between
        // calls (see `remote::runtime`), so a pong would wait unread in the socket
        // while the ping's timer ran out, and the next call would find a live
        // connection closed as dead. A watch checks its stream itself.
        let mut endpoint = tonic::transport::Endpoint::from_shared(member.endpoint.clone())
            .map_err(unsent)?
            .connect_timeout(within);
        if self.tls {
            endpoint = endpoint.tls_config(self.tls_options()?).map_err(unsent)?;
        }
        let channel = tokio::time::timeout(within, endpoint.connect())
            .await
            .map_err(|_| Failure::Unsent {
                reason: format!("no connection within {}", crate::error::fmt_secs(within)),
                answered: false,
            })?
            .map_err(unsent)?;
        // Authenticating (with a username) is the member's first request: a failure
        // to reach it there leaves the call unsent too.
        let client = Client::from_channel(Channel::Tonic(channel), Some(self.connect_options()))
            .await
            .map_err(|e| match self.classify(e) {
                Failure::Lost { reason, answered } => Failure::Unsent { reason, answered },
                other => other,
            })?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        // Which member this is, for `failed_members`.
        let id = client
            .maintenance_client()
            .status()
            .await
            .map_err(|e| match self.classify(e) {
                Failure::Lost { reason, answered } => Failure::Unsent { reason, answered },
                other => other,
            })?
            .header()
            .map_or(0, |h| h.member_id());
        let client = Arc::new(client);
        Ok(CLIENTS.insert(member, Conn { client, kv, id }))
    }

    /// Runs one request within the timeout, on the pinned member, or on the next
    /// ones when it cannot be reached. While the members that answer have no leader
    /// (an election), the call waits for one and tries again. A request that may
    /// have been applied is sent again only when `repeat` allows; such a request
    /// still unanswered after a quarter of the timeout is also sent to the next
    /// member of a cluster, and the first answer wins (a member that lost its
    /// leader holds a write it forwarded until its own timeout).
    fn call<T, F, Fut>(&self, op: &'static str, key: &str, repeat: Repeat, request: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call_within(op, key, repeat, self.timeout, request)
    }

    /// `call`, given `within` rather than the store's timeout (a lock's wait).
    fn call_within<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        repeat: Repeat,
        within: Duration,
        request: F,
    ) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let count = self.members.len();
        let first = self.pinned.load(Ordering::Relaxed) % count;
        let sent = Cell::new(false);
        let attempts = self.attempts(first, repeat, &request, &sent);
        self.remote.run(op, key, within, &sent, attempts, || {
            // The next call starts on the next member: this one may be stuck.
            let _ = self.pinned.compare_exchange(
                first,
                (first + 1) % count,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        })
    }

    /// Attempts at the members, in rounds starting with member `first`, until one
    /// answers or none can be reached.
    async fn attempts<T, F, Fut>(
        &self,
        first: usize,
        repeat: Repeat,
        request: &F,
        sent: &Cell<bool>,
    ) -> std::result::Result<T, Failure>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let count = self.members.len();
        let round = || -> VecDeque<usize> { (first..count).chain(0..first).collect() };
        let attempt = |i: usize| {
            // A connection gets a share of the time left, so that a member that
            // does not answer leaves time for the next ones.
            let within = self.timeout.saturating_sub(started.elapsed()) / count as u32;
            let member = &self.members[i];
            async move {
                let outcome = match self.member(member, within).await {
                    Err(failure) => {
                        if matches!(
                            failure,
                            Failure::Unsent {
                                answered: false,
                                ..
                            }
                        ) {
                            self.member_failed(self.ids[i].load(Ordering::Relaxed));
                        }
                        Err(failure)
                    }
                    Ok((conn, generation)) => {
                        let id = conn.id;
                        self.ids[i].store(id, Ordering::Relaxed);
                        let outcome = match self.follows_failed(repeat, &conn).await {
                            Err(failure) => Err(failure),
                            Ok(()) => {
                                sent.set(true);
                                request(conn).await.map_err(|e| self.classify(e))
                            }
                        };
                        match outcome {
                            Err(
                                Failure::Unsent { answered: true, .. }
                                | Failure::Lost { answered: true, .. },
                            ) => {}
                            Err(Failure::Unsent { .. } | Failure::Lost { .. }) => {
                                CLIENTS.forget(member, Some(generation));
                                self.member_failed(id);
                            }
                            Err(Failure::Auth { .. }) => CLIENTS.forget(member, Some(generation)),
                            _ => {}
                        }
                        outcome
                    }
                };
                (i, outcome)
            }
        };
        let mut queue = round();
        let mut running = FuturesUnordered::new();
        // Why each member of this round failed, and whether any was up.
        let mut reasons = Vec::with_capacity(count);
        let mut answered = false;
        let mut pause = Duration::from_millis(10);
        loop {
            if running.is_empty() {
                match queue.pop_front() {
                    Some(i) => running.push(attempt(i)),
                    // No member could be reached: fail now, as a single etcd does.
                    None if !answered => {
                        self.pinned.store((first + 1) % count, Ordering::Relaxed);
                        return Err(Failure::Unsent {
                            reason: reasons.join("; "),
                            answered: false,
                        });
                    }
                    // Members that answered without a leader are electing one.
                    None => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_PAUSE);
                        queue = round();
                        reasons.clear();
                        answered = false;
                        continue;
                    }
                }
            }
            // A single etcd gets no second copy: there is nowhere else to send it.
            let hedge = repeat == Repeat::Safe && count > 1;
            let done = tokio::select! {
                done = running.next() => Some(done.expect("an attempt is running")),
                _ = tokio::time::sleep(self.timeout / 4), if hedge => None,
            };
            let Some((i, outcome)) = done else {
                // Unanswered for a while: another member gets the request too, in
                // a new round once every member has had it.
                if queue.is_empty() {
                    queue = round();
                }
                running.push(attempt(queue.pop_front().expect("a round names a member")));
                continue;
            };
            let endpoint = &self.members[i].endpoint;
            match outcome {
                Ok(value) => {
                    self.pinned.store(i, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(Failure::Unsent {
                    reason,
                    answered: up,
                }) => {
                    answered |= up;
                    reasons.push(format!("{endpoint}: {reason}"));
                }
                Err(Failure::Lost {
                    reason,
                    answered: up,
                }) if repeat == Repeat::Safe => {
                    answered |= up;
                    reasons.push(format!("{endpoint}: {reason}"));
                }
                Err(failure) => {
                    // After a lost answer, the next call starts on the next member.
                    if matches!(failure, Failure::Lost { .. }) {
                        self.pinned.store((i + 1) % count, Ordering::Relaxed);
                    }
                    return Err(failure);
                }
            }
        }
    }

    /// Remembers that the member with etcd id `id` (0: not known) failed a request.
    fn member_failed(&self, id: u64) {
        if id == 0 {
            return;
        }
        let mut failed = self
            .failed_members
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failed.retain(|&(other, _)| other != id);
        failed.push((id, Instant::now()));
    }

    /// For a compare-and-swap after a member failed: whether the member about to
    /// get it still follows a failed one, which would hold the request until its
    /// own timeout. It then counts as a member without a leader (the call waits for
    /// the election); once it follows another, the failed ones are forgotten.
    async fn follows_failed(
        &self,
        repeat: Repeat,
        conn: &Conn,
    ) -> std::result::Result<(), Failure> {
        let failed: Vec<u64> = {
            let mut failed = self
                .failed_members
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            failed.retain(|(_, when)| when.elapsed() < self.timeout);
            failed.iter().map(|&(id, _)| id).collect()
        };
        if repeat == Repeat::Safe || failed.is_empty() {
            return Ok(());
        }
        let leader = conn
            .client
            .maintenance_client()
            .status()
            .await
            .map_err(|e| self.classify(e))
            .map_err(|failure| match failure {
                // Nothing was sent yet.
                Failure::Lost { reason, answered } => Failure::Unsent { reason, answered },
                other => other,
            })?
            .leader();
        if leader == 0 || failed.contains(&leader) {
            return Err(Failure::Unsent {
                reason: "it has no leader, or still follows one that failed; waiting for the \
                         election"
                    .into(),
                answered: true,
            });
        }
        self.failed_members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    /// The name below `dir` of an etcd key in its range, when it is a key's name:
    /// another client may have written names that are not.
    fn relative<'k>(dir: &Key, range: &str, etcd_key: &'k [u8]) -> Option<&'k str> {
        etcd_key
            .strip_prefix(range.as_bytes())
            .and_then(|rel| std::str::from_utf8(rel).ok())
            .filter(|rel| dir.lists(rel))
    }
}

/// The most puts one transaction carries: etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;
/// The most value bytes one transaction carries, well below etcd's default
/// request limit (1.5 MiB).
const TXN_BYTES: usize = 1 << 20;

/// The end of etcd's range for every key starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A PEM file of certificates, checked, for etcd-client (which takes PEM).
fn read_certs(name: &'static str, path: &str) -> std::result::Result<Vec<u8>, Failure> {
    let file = PemFile::read(name, path).map_err(Failure::Settings)?;
    file.certs().map_err(Failure::Settings)?;
    Ok(file.bytes)
}

/// A PEM private key file, checked, for etcd-client.
fn read_key(name: &'static str, path: &str) -> std::result::Result<Vec<u8>, Failure> {
    let file = PemFile::read(name, path).map_err(Failure::Settings)?;
    file.key().map_err(Failure::Settings)?;
    Ok(file.bytes)
}

impl EtcdStore {
    /// Sorts an etcd client error into the failures worded differently.
    fn classify(&self, e: etcd_client::Error) -> Failure {
        classify(e, |reason, advice| Failure::Auth {
            reason,
            advice: match advice {
                AuthAdvice::Credentials => "check the username and password in auth".to_owned(),
                AuthAdvice::Permission => format!(
                    "grant the user in auth a role with readwrite permission on the keys of this \
                     store (etcdctl role grant-permission ROLE readwrite --prefix=true {}/)",
                    self.prefix
                ),
                AuthAdvice::NotEnabled => "this etcd has authentication disabled: drop username \
                                           and password from auth"
                    .to_owned(),
            },
        })
    }
}

/// Sorts an etcd client error; `auth` words a refusal of the credentials.
fn classify(e: etcd_client::Error, auth: impl Fn(String, AuthAdvice) -> Failure) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message().trim_start_matches("etcdserver: ");
            let text = describe(Some(message), status.source());
            let refused = |advice| auth(text.clone(), advice);
            match status.code() {
                Code::Unauthenticated => refused(AuthAdvice::Credentials),
                _ if message.contains("authentication failed") => refused(AuthAdvice::Credentials),
                _ if message.contains("user name is empty") => auth(
                    format!(
                        "{text}: this etcd has authentication enabled and needs a username and \
                         password"
                    ),
                    AuthAdvice::Credentials,
                ),
                _ if message.contains("authentication is not enabled") => {
                    refused(AuthAdvice::NotEnabled)
                }
                Code::PermissionDenied => refused(AuthAdvice::Permission),
                _ if message.contains("permission denied") => refused(AuthAdvice::Permission),
                _ if message.contains("request is too large")
                    || (status.code() == Code::ResourceExhausted
                        && message.contains("larger than max")) =>
                {
                    Failure::Refused(format!(
                        "{text} ({:?}): the value is larger than this etcd takes in one request \
                         (its --max-request-bytes, 1.5 MiB by default); store a smaller value, or \
                         raise that limit on every etcd member",
                        status.code()
                    ))
                }
                // Asked to (require_leader), a member without a leader refuses a
                // request before reading it.
                Code::Unavailable if message == "no leader" => Failure::Unsent {
                    reason: text,
                    answered: true,
                },
                _ if while_connecting(status.source()) => Failure::Unsent {
                    reason: text,
                    answered: false,
                },
                // A status etcd sent has no error under it; one tonic made from a
                // failed connection has.
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Failure::Lost {
                    answered: status.source().is_none(),
                    reason: text,
                },
                Code::Unknown if status.source().is_some() => Failure::Lost {
                    reason: text,
                    answered: false,
                },
                code => Failure::Refused(format!("{text} ({code:?})")),
            }
        }
        etcd_client::Error::TransportError(e) if while_connecting(Some(&e)) => Failure::Unsent {
            reason: describe(None, Some(&e)),
            answered: false,
        },
        etcd_client::Error::TransportError(e) => Failure::Lost {
            reason: describe(None, Some(&e)),
            answered: false,
        },
        etcd_client::Error::IoError(e) => Failure::Lost {
            reason: e.to_string(),
            answered: false,
        },
        other => Failure::Refused(other.to_string()),
    }
}

/// Whether an error (or one under it) comes from making a connection: the request
/// it failed was never written to one.
fn while_connecting(mut error: Option<&(dyn StdError + 'static)>) -> bool {
    while let Some(e) = error {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        let text = e.to_string();
        if text.starts_with("tcp connect error") || text.starts_with("error trying to connect") {
            return true;
        }
        error = e.source();
    }
    false
}

fn sequence(mod_revision: i64) -> u64 {
    u64::try_from(mod_revision).unwrap_or(0)
}

fn revision(previous: u64) -> i64 {
    i64::try_from(previous).unwrap_or(i64::MAX)
}

impl Store for EtcdStore {
    fn provider(&self) -> &'static str {
        "etcd"
    }

    fn url(&self) -> &str {
        &self.remote.url
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let k = self.etcd_key(key);
        self.call("get", key.as_str(), Repeat::Safe, |mut c| {
            let k = k.clone();
            async move {
                let resp = c.kv.get(k, None).await?;
                Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
            }
        })
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<()> {
        let k = self.etcd_key(key);
        self.call("put", key.as_str(), Repeat::Safe, |mut c| {
            let k = k.clone();
            async move { c.kv.put(k, value, None).await.map(|_| ()) }
        })
    }

    fn delete(&self, key: &Key) -> Result<()> {
        let k = self.etcd_key(key);
        self.call("delete", key.as_str(), Repeat::Safe, |mut c| {
            let k = k.clone();
            async move { c.kv.delete(k, None).await.map(|_| ()) }
        })
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        let k = self.etcd_key(key);
        self.call("exists", key.as_str(), Repeat::Safe, |mut c| {
            let k = k.clone();
            async move {
                let resp =
                    c.kv.get(k, Some(GetOptions::new().with_count_only()))
                        .await?;
                Ok(resp.count() > 0)
            }
        })
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        self.below("list", dir, |kv| kv.value().to_vec())
    }

    fn deletetree(&self, dir: &Key) -> Result<()> {
        let range = self.etcd_dir(dir);
        self.call("deletetree", dir.as_str(), Repeat::Safe, |mut c| {
            let range = range.clone();
            async move {
                c.kv.delete(range, Some(DeleteOptions::new().with_prefix()))
                    .await
                    .map(|_| ())
            }
        })
    }

    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool> {
        self.atomic_put_as("atomic_create", key, value, 0)
    }

    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>> {
        let k = self.etcd_key(key);
        self.call("atomic_get", key.as_str(), Repeat::Safe, |mut c| {
            let k = k.clone();
            async move {
                let resp = c.kv.get(k, None).await?;
                Ok(resp.kvs().first().map(|kv| Versioned {
                    value: kv.value().to_vec(),
                    sequence: sequence(kv.mod_revision()),
                }))
            }
        })
    }

    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool> {
        self.atomic_put_as("atomic_put", key, value, previous)
    }

    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool> {
        let k = self.etcd_key(key);
        self.call("atomic_delete", key.as_str(), Repeat::Unsent, |mut c| {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    k.clone(),
                    CompareOp::Equal,
                    revision(previous),
                )])
                .and_then([TxnOp::delete(k.clone(), None)]);
            async move { Ok(c.kv.txn(txn).await?.succeeded()) }
        })
    }

    /// A lease of `ttl`, the key put with it (when `previous` matches), the
    /// lease revoked when it did not.
    fn put_ttl(
        &self,
        key: &Key,
        value: &[u8],
        previous: Option<u64>,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let op = crate::store::ttl_write_op(previous);
        let lease = self.grant(op, key, ttl)?;
        let k = self.etcd_key(key);
        let repeat = if previous.is_some() {
            Repeat::Unsent
        } else {
            Repeat::Safe
        };
        let written = self.call(op, key.as_str(), repeat, |mut c| {
            let put = TxnOp::put(k.clone(), value, Some(PutOptions::new().with_lease(lease)));
            let txn = match previous {
                Some(p) => Txn::new()
                    .when([Compare::mod_revision(
                        k.clone(),
                        CompareOp::Equal,
                        revision(p),
                    )])
                    .and_then([put]),
                None => Txn::new().and_then([put]),
            };
            async move {
                let resp = c.kv.txn(txn).await?;
                Ok(resp
                    .succeeded()
                    .then(|| sequence(resp.header().map_or(0, |h| h.revision()))))
            }
        });
        // Not taken: the lease has no key. (Failed: the put may have been made, and
        // the lease expires with it.)
        if matches!(written, Ok(None)) {
            self.revoke(lease);
        }
        written
    }

    /// etcd raises a shorter lease to its minimum, 2 s with its default election
    /// timeout (a larger minimum is refused when the lease is granted).
    fn ttl_bounds(&self) -> (u64, u64) {
        (2, crate::store::MAX_TTL)
    }

    /// Creates the key with a lease in a transaction that requires it absent;
    /// while another holds it, watches it from the revision read for its delete.
    fn lock(
        &self,
        key: &Key,
        owner: &str,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<Option<(u64, Instant)>> {
        let op = "newlock";
        let k = self.etcd_key(key);
        loop {
            let sent = Instant::now();
            let lease = self.grant(op, key, ttl)?;
            let taken = self.call(op, key.as_str(), Repeat::Unsent, |mut c| {
                let txn = Txn::new()
                    .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        k.clone(),
                        owner,
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                async move {
                    let resp = c.kv.txn(txn).await?;
                    let revision = resp.header().map_or(0, |h| h.revision());
                    Ok((resp.succeeded(), revision))
                }
            });
            let revision = match taken {
                Ok((true, revision)) => return Ok(Some((sequence(revision), sent))),
                Ok((false, revision)) => revision,
                Err(e) => {
                    self.revoke(lease);
                    return Err(e);
                }
            };
            self.revoke(lease);
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Wait for the holder's key to go, from the revision the attempt saw.
            let left = deadline - now;
            self.call_within(op, key.as_str(), Repeat::Safe, left + self.timeout, |c| {
                let k = k.clone();
                async move {
                    let mut watch = c.client.watch_client();
                    let opts = WatchOptions::new().with_start_revision(revision + 1);
                    let mut stream = watch.watch(k, Some(opts)).await?;
                    let gone = async {
                        while let Some(resp) = stream.message().await? {
                            if resp.canceled()
                                || resp
                                    .events()
                                    .iter()
                                    .any(|e| e.event_type() == EventType::Delete)
                            {
                                break;
                            }
                        }
                        Ok::<(), etcd_client::Error>(())
                    };
                    match tokio::time::timeout(left, gone).await {
                        Ok(done) => done,
                        Err(_) => Ok(()),
                    }
                }
            })?;
        }
    }

    /// Keeps the lock key's lease alive, when the key is still this owner's.
    fn renew(&self, key: &Key, owner: &str, _ttl: Duration) -> Result<bool> {
        let Some(kv) = self.lock_key(key, owner)? else {
            return Ok(false);
        };
        let lease = kv.1;
        self.call("renew", key.as_str(), Repeat::Safe, |c| async move {
            let (mut keeper, mut stream) = c.client.lease_client().keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        })
    }

    /// Deletes the lock key if it is still this owner's, and revokes its lease.
    fn unlock(&self, key: &Key, owner: &str) -> Result<bool> {
        let Some((created, lease)) = self.lock_key(key, owner)? else {
            return Ok(false);
        };
        let k = self.etcd_key(key);
        let deleted = self.call("unlock", key.as_str(), Repeat::Unsent, |mut c| {
            let txn = Txn::new()
                .when([
                    Compare::create_revision(k.clone(), CompareOp::Equal, created),
                    Compare::value(k.clone(), CompareOp::Equal, owner),
                ])
                .and_then([TxnOp::delete(k.clone(), None)]);
            async move { Ok(c.kv.txn(txn).await?.succeeded()) }
        })?;
        self.revoke(lease);
        Ok(deleted)
    }

    fn watch(
        self: Arc<Self>,
        target: &Target,
        from: Option<u64>,
    ) -> Result<Option<Box<dyn Watcher>>> {
        let (etcd_key, range_end) = if target.tree {
            let dir = self.etcd_dir(&target.key);
            let end = range_end(&dir);
            (dir, Some(end))
        } else {
            (self.etcd_key(&target.key), None)
        };
        let mut watcher = EtcdWatcher {
            store: self,
            target: target.clone(),
            etcd_key,
            range_end,
            next_revision: from.map_or(0, |s| revision(s).saturating_add(1)),
            stream: None,
            down_since: None,
            heard: Instant::now(),
            asked: None,
        };
        watcher.start()?;
        Ok(Some(Box::new(watcher)))
    }

    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>> {
        self.below("atomic_list", dir, |kv| Versioned {
            value: kv.value().to_vec(),
            sequence: sequence(kv.mod_revision()),
        })
    }

    fn put_many(&self, entries: &[(Key, Vec<u8>)]) -> Result<()> {
        for batch in batches(entries, TXN_OPS, TXN_BYTES) {
            let puts: Vec<(String, &[u8])> = batch
                .iter()
                .map(|(key, value)| (self.etcd_key(key), value.as_slice()))
                .collect();
            self.call("put", batch[0].0.as_str(), Repeat::Safe, |mut c| {
                let txn = Txn::new().and_then(
                    puts.iter()
                        .map(|(k, v)| TxnOp::put(k.clone(), *v, None))
                        .collect::<Vec<_>>(),
                );
                async move { c.kv.txn(txn).await.map(|_| ()) }
            })?;
        }
        Ok(())
    }

    /// Pages of one revision: the first page's, so the whole scan is one
    /// consistent snapshot of the range.
    fn scan(&self, dir: &Key, page: usize, each: &mut dyn FnMut(Page) -> Result<()>) -> Result<()> {
        let range = self.etcd_dir(dir);
        let end = range_end(&range);
        let mut start = range.clone().into_bytes();
        let mut revision = 0;
        loop {
            let (entries, remaining, more, at) =
                self.call("list", dir.as_str(), Repeat::Safe, |mut c| {
                    let start = start.clone();
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(page.max(1) as i64)
                        .with_revision(revision);
                    let range = &range;
                    async move {
                        let resp = c.kv.get(start, Some(options)).await?;
                        let last = resp.kvs().last().map(|kv| kv.key().to_vec());
                        let entries: Listing<Vec<u8>> = resp
                            .kvs()
                            .iter()
                            .filter_map(|kv| {
                                let rel = Self::relative(dir, range, kv.key())?;
                                Some((rel.to_owned(), kv.value().to_vec()))
                            })
                            .collect();
                        let at = resp.header().map_or(0, |h| h.revision());
                        Ok((
                            entries,
                            resp.count() as u64,
                            resp.more().then_some(last).flatten(),
                            at,
                        ))
                    }
                })?;
            if revision == 0 {
                revision = at;
            }
            if !entries.is_empty() {
                each(Page { entries, remaining })?;
            }
            match more {
                Some(mut last) => {
                    last.push(0);
                    start = last;
                }
                None => return Ok(()),
            }
        }
    }

    fn info(&self) -> Result<Value> {
        let status = self.call("info", "", Repeat::Safe, |c| async move {
            c.client.maintenance_client().status().await
        })?;
        let hex = |id: u64| Value::from(format!("{id:x}"));
        let mut facts = vec![
            ("provider", Value::from("etcd")),
            ("url", Value::from(self.remote.url.as_str())),
            (
                "endpoints",
                Value::Array(
                    self.members
                        .iter()
                        .map(|m| Value::from(m.endpoint.as_str()))
                        .collect(),
                ),
            ),
            ("version", Value::from(status.version())),
            ("leader", hex(status.leader())),
        ];
        if let Some(header) = status.header() {
            facts.push(("cluster_id", hex(header.cluster_id())));
            facts.push(("member_id", hex(header.member_id())));
            facts.push(("revision", Value::Int(header.revision())));
        }
        Ok(Value::hash(facts))
    }
}

impl EtcdStore {
    /// Every key below `dir`, by one prefix range request, each entry made by
    /// `entry`.
    fn below<T>(
        &self,
        op: &'static str,
        dir: &Key,
        entry: impl Fn(&KeyValue) -> T,
    ) -> Result<Listing<T>> {
        let range = self.etcd_dir(dir);
        self.call(op, dir.as_str(), Repeat::Safe, |mut c| {
            let range = range.clone();
            let entry = &entry;
            async move {
                let resp =
                    c.kv.get(range.clone(), Some(GetOptions::new().with_prefix()))
                        .await?;
                Ok(resp
                    .kvs()
                    .iter()
                    .filter_map(|kv| {
                        Some((Self::relative(dir, &range, kv.key())?.to_owned(), entry(kv)))
                    })
                    .collect())
            }
        })
    }

    /// A lease of `ttl`, refused when etcd raised it to a longer minimum.
    fn grant(&self, op: &'static str, key: &Key, ttl: Duration) -> Result<i64> {
        let secs = ttl.as_secs() as i64;
        let (id, granted) = self.call(op, key.as_str(), Repeat::Safe, |c| async move {
            let resp = c.client.lease_client().grant(secs, None).await?;
            Ok((resp.id(), resp.ttl()))
        })?;
        if granted > secs {
            self.revoke(id);
            return Err(Error::InvalidArgument(format!(
                "ttl {secs} is below the shortest lease {} grants ({granted}s)",
                self.remote.url
            )));
        }
        Ok(id)
    }

    /// Revokes a lease; best effort (it expires by itself).
    fn revoke(&self, lease: i64) {
        let _ = self.call("revoke", "", Repeat::Safe, |c| async move {
            c.client.lease_client().revoke(lease).await.map(|_| ())
        });
    }

    /// The lock key's create revision and lease, when it holds `owner`.
    fn lock_key(&self, key: &Key, owner: &str) -> Result<Option<(i64, i64)>> {
        let k = self.etcd_key(key);
        self.call("renew", key.as_str(), Repeat::Safe, |mut c| {
            let k = k.clone();
            async move {
                let resp = c.kv.get(k, None).await?;
                Ok(resp
                    .kvs()
                    .first()
                    .filter(|kv| kv.value() == owner.as_bytes())
                    .map(|kv| (kv.create_revision(), kv.lease())))
            }
        })
    }

    /// A put in one transaction that succeeds only if the key's mod_revision is
    /// still `previous` (0: the key is absent).
    fn atomic_put_as(
        &self,
        op: &'static str,
        key: &Key,
        value: &[u8],
        previous: u64,
    ) -> Result<bool> {
        let k = self.etcd_key(key);
        self.call(op, key.as_str(), Repeat::Unsent, |mut c| {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    k.clone(),
                    CompareOp::Equal,
                    revision(previous),
                )])
                .and_then([TxnOp::put(k.clone(), value, None)]);
            async move { Ok(c.kv.txn(txn).await?.succeeded()) }
        })
    }
}

/// A watch of a key or a directory: an etcd Watch stream, opened again from the
/// next revision when it fails.
struct EtcdWatcher {
    store: Arc<EtcdStore>,
    target: Target,
    /// The key, or the prefix of the directory's range.
    etcd_key: String,
    range_end: Option<Vec<u8>>,
    /// The revision the stream started from or goes on from: one past the last
    /// event handed out; 0 until known when the watch started from now.
    next_revision: i64,
    stream: Option<WatchStream>,
    /// Since when no stream could be opened.
    down_since: Option<Instant>,
    /// When the stream last answered, and when the watch asked it for progress
    /// since (see [`WATCH_QUIET`]).
    heard: Instant,
    asked: Option<Instant>,
}

/// How long a watch waits between attempts to open its stream again.
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// A stream silent this long is asked for etcd's progress; one that does not
/// answer within the store's timeout is taken for dead (a member that stopped
/// answering, a network that drops everything) and opened again, on whichever
/// member answers. Only while the watch is waited on: nothing is asked between
/// waits.
const WATCH_QUIET: Duration = Duration::from_secs(10);

impl EtcdWatcher {
    fn op(&self) -> &'static str {
        self.target.op()
    }

    /// Opens the stream from `next_revision`, within `within`.
    fn open(&self, within: Duration) -> Result<WatchStream> {
        let mut options = WatchOptions::new();
        if self.next_revision > 0 {
            options = options.with_start_revision(self.next_revision);
        }
        if let Some(end) = &self.range_end {
            options = options.with_range(end.clone());
        }
        let k = &self.etcd_key;
        self.store.call_within(
            self.op(),
            self.target.key.as_str(),
            Repeat::Safe,
            within,
            |c| {
                let options = options.clone();
                async move {
                    c.client
                        .watch_client()
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .watch(k.clone(), Some(options))
                        .await
                }
            },
        )
    }

    /// Opens the stream, and when the watch starts now, learns the revision it
    /// starts from (etcd's answer to the stream's creation), within the store's
    /// timeout: changes made once `watch` returned are the watch's.
    fn start(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.store.timeout;
        let mut stream = self.open(self.store.timeout)?;
        while self.next_revision == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = block_on_timeout(left, stream.message()).map_err(|e| {
                self.store.remote.failed(
                    self.op(),
                    self.target.key.as_str(),
                    format_args!("cannot start the I/O runtime: {e}"),
                )
            })?;
            match received {
                Some(Ok(Some(resp))) => {
                    // Nothing but the creation comes before the watch starts.
                    self.events(&resp)?;
                }
                Some(Ok(None)) | Some(Err(_)) | None => {
                    return Err(Error::Timeout {
                        op: self.op(),
                        key: self.target.key.to_string(),
                        store: self.store.remote.url.clone(),
                        after: self.store.timeout,
                        waiting: crate::error::Waiting::Store,
                    })
                }
            }
        }
        self.stream = Some(stream);
        Ok(())
    }

    /// The events of one response that are this watch's, libkv keys only.
    fn events(&mut self, resp: &etcd_client::WatchResponse) -> Result<Vec<Event>> {
        if resp.compact_revision() > 0 {
            self.stream = None;
            return Err(self.store.remote.failed(
                self.op(),
                self.target.key.as_str(),
                format_args!(
                    "etcd has compacted its history up to revision {}, past revision {} where \
                     this watch goes on: read again (atomic_get or atomic_list) and watch from \
                     the sequence read",
                    resp.compact_revision(),
                    self.next_revision
                ),
            ));
        }
        if resp.canceled() {
            self.stream = None;
            return Err(self.store.remote.failed(
                self.op(),
                self.target.key.as_str(),
                format_args!("etcd cancelled the watch: {}", resp.cancel_reason()),
            ));
        }
        if resp.created() && self.next_revision == 0 {
            if let Some(header) = resp.header() {
                self.next_revision = header.revision() + 1;
            }
        }
        let prefix = self.store.prefix.as_bytes();
        let mut events = Vec::with_capacity(resp.events().len());
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            self.next_revision = self.next_revision.max(kv.mod_revision() + 1);
            let Some(key) = kv
                .key()
                .strip_prefix(prefix)
                .and_then(|k| std::str::from_utf8(k).ok())
                .filter(|k| Key::new(k).is_ok() && self.target.covers(k))
            else {
                continue;
            };
            let (kind, value) = match event.event_type() {
                EventType::Put => (EventKind::Put, kv.value().to_vec()),
                EventType::Delete => (EventKind::Delete, Vec::new()),
            };
            events.push(Event {
                kind,
                key: key.to_owned(),
                value,
                sequence: sequence(kv.mod_revision()),
            });
        }
        Ok(events)
    }
}

impl Watcher for EtcdWatcher {
    fn next(&mut self, deadline: Instant) -> Result<Vec<Event>> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let Some(stream) = self.stream.as_mut() else {
                match self.open((deadline - now).min(self.store.timeout)) {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        self.down_since = None;
                        self.heard = Instant::now();
                        self.asked = None;
                    }
                    // etcd down or restarting: tried again until it has been down
                    // for the store's timeout.
                    Err(e @ (Error::Connection { .. } | Error::Timeout { .. })) => {
                        let since = *self.down_since.get_or_insert(now);
                        if since.elapsed() >= self.store.timeout {
                            return Err(e);
                        }
                        let now = Instant::now();
                        std::thread::sleep(
                            REWATCH_PAUSE.min(deadline.saturating_duration_since(now)),
                        );
                    }
                    Err(e) => return Err(e),
                }
                continue;
            };
            // Wait for a message until the deadline, or until the stream has been
            // quiet long enough to ask it for progress, or to give up on it.
            let check_at = match self.asked {
                None => self.heard + WATCH_QUIET,
                Some(asked) => asked + self.store.timeout,
            };
            if now >= check_at {
                if self.asked.is_some() {
                    // Asked, and no answer: another stream, from the next revision.
                    self.stream = None;
                    self.asked = None;
                    self.heard = now;
                    continue;
                }
                let asked = block_on_timeout(self.store.timeout, stream.request_progress());
                if !matches!(asked, Ok(Some(Ok(())))) {
                    self.stream = None;
                    self.heard = now;
                    continue;
                }
                self.asked = Some(now);
                continue;
            }
            let until = deadline.min(check_at);
            let received = block_on_timeout(until - now, stream.message()).map_err(|e| {
                self.store.remote.failed(
                    self.op(),
                    self.target.key.as_str(),
                    format_args!("cannot start the I/O runtime: {e}"),
                )
            })?;
            match received {
                None => continue,
                Some(Ok(Some(resp))) => {
                    self.heard = Instant::now();
                    self.asked = None;
                    let events = self.events(&resp)?;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                // The stream ended or failed: another, from the next revision.
                Some(Ok(None) | Err(_)) => {
                    self.stream = None;
                    self.down_since.get_or_insert(now);
                }
            }
        }
    }

    fn coalesces(&self) -> bool {
        false
    }
}
