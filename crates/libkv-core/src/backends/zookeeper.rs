//! `zookeeper://HOST:PORT[,HOST:PORT...]/PREFIX`: ZooKeeper 3.5+ (Debian's 3.8).
//!
//! - The key `/a/b` under the prefix `/p` is the node `/p/a/b`, holding the value's
//!   plain bytes. Directories libkv makes (the prefix's nodes included) are
//!   CONTAINER nodes, which ZooKeeper removes once empty; keys are PERSISTENT nodes,
//!   or TTL nodes for a `ttl` write.
//! - A key is a leaf node; a node with children is a directory (data another
//!   tool left on it is not a key). ZooKeeper shows clients no sign of a
//!   container, so libkv makes a directory in the same multi as its first key:
//!   a leaf whose children version (`cversion`) is not 0 once had children, and
//!   is an empty directory awaiting removal, not a key (a put there replaces
//!   it); one that never had any is a key. As in the file store, a key cannot
//!   also be a directory: a put of `/a/b` when `/a` is a key, or of `/a` when
//!   keys live below `/a`, fails with a Conflict naming both keys, nothing
//!   written (every write is one multi: directories, key, ttl).
//! - A key's sequence is its node's `mzxid`: the zxid of its last data change,
//!   ensemble-wide and only growing, so a key deleted and created again gets a
//!   larger one. The compare-and-swaps compare `mzxid` with `previous`, then write
//!   conditioned on the node's `version` (a node replaced in between fails the
//!   version; one deleted and created again to the same version in that single
//!   round trip would not: ZooKeeper has no compare on `mzxid`).
//! - No stale read: every read is pipelined behind a `sync`, so it follows
//!   everything the leader had committed when the read began (one round trip;
//!   the client orders requests as they are made).
//! - `list`, `atomic_list` and `deletetree` walk the tree level by level, each
//!   level's data and children in multi-reads; only names that are key
//!   components are listed (or deleted).
//! - TTL: a TTL node (the server needs `zookeeper.extendedTypesEnabled=true`).
//!   ZooKeeper shows clients no sign of a TTL node, so its ttl (ms, as text) is
//!   kept beside it in `NAME@ttl` (a TTL node too, written in the same multi;
//!   `@` is no key's, so it is never listed). ZooKeeper reaps expired TTL nodes
//!   lazily (its container check interval), so reads and lists treat a key whose
//!   `mtime` + ttl has passed as absent, and writes replace it. A plain put over
//!   a TTL key, or a ttl put over a plain one, replaces the node in one multi.
//!   Bounds: 1 s to [`MAX_TTL`].
//! - Where the server has TTL nodes off (ZooKeeper's default), a ttl write makes
//!   EPHEMERAL nodes instead: such a key is absent to reads once its ttl has
//!   passed without a write (as above), and ZooKeeper deletes it when the
//!   session that wrote it ends (this process's session: the process exits, or
//!   its session expires). So there a ttl is an upper bound while the writer
//!   lives, and a key outlives its writer by at most the session timeout, not
//!   by its ttl.
//! - Sessions: one ZooKeeper session per connect string and auth settings per
//!   process, shared by every store object, with a session timeout of twice the
//!   store's timeout (4 s to 40 s, ZooKeeper's default bounds). The session's
//!   connection runs on a runtime thread of its own, which answers ZooKeeper's
//!   pings between calls. A session that expired or was closed is made again by
//!   the next call. Every call ends within the store's timeout.
//! - Auth: `username` and `password` (digest). With them, the nodes libkv makes
//!   carry the creator-only ACL (`auth`, that digest user), else the open ACL.
//! - Watches: a persistent (recursive, for a directory) ZooKeeper watch on the
//!   session drives a [`Coalescing`] watcher, which reads the target again on
//!   each notification and at the earliest TTL deadline of what it read.
//! - Fork: as the etcd store's clients (see `remote`), the runtime and the
//!   sessions are per process. A forked child's first call makes its own runtime
//!   and its own session; the parent's runtime, session and any watch on it are
//!   leaked in the child, never dropped there: dropping them would signal the
//!   parent's session task, on a runtime whose worker thread the child does not
//!   have (and whose locks that thread may have held at the fork), or close the
//!   parent's session. The parent keeps its session. The store is on
//!   zookeeper-client 0.8.1 for this: its I/O, timers and tasks are tokio's
//!   (`tokio::net`, `tokio::time`, `tokio::spawn`), so they live on the runtime
//!   they are made on, which a child can make anew. 0.9 and later do their I/O on
//!   `async-io`'s process-wide reactor instead, whose thread a forked child does
//!   not have, whose lock it may hold forever, and whose epoll instance the child
//!   shares with its parent: a child of a process that had used ZooKeeper could
//!   not make a session at all.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use tokio::runtime::{Builder, Runtime};
use zookeeper_client::{
    Acls, AddWatchMode, Client, CreateMode, CreateOptions, EventType, MultiReadResult,
    MultiWriteResult, PersistentWatcher, Stat,
};

use crate::error::{Error, Result, Waiting};
use crate::fork;
use crate::key::{is_valid_component, Key};
use crate::options::Auth;
use crate::remote::ClientCache;
use crate::store::{Listing, Store, Versioned, MAX_TTL};
use crate::url::StoreUrl;
use crate::value::Value;
use crate::watch::{Coalescing, Snapshot, Source, Target, Watcher};

type ZkError = zookeeper_client::Error;

pub struct ZookeeperStore {
    /// Its URL, safe to show.
    url: String,
    /// The endpoints, comma-separated: the session's connect string.
    connect: String,
    /// Prepended to every key: "" for the root, "/PREFIX" otherwise.
    root: String,
    session: SessionKey,
    timeout: Duration,
    /// Whether the server creates TTL nodes: [`TTL_UNKNOWN`] until a ttl write
    /// finds out.
    ttl_nodes: AtomicU8,
}

const TTL_UNKNOWN: u8 = 0;
const TTL_NODES: u8 = 1;
const TTL_EPHEMERAL: u8 = 2;

/// What a session is made from: stores with the same share one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    connect: String,
    auth: Auth,
}

static SESSIONS: ClientCache<SessionKey, Client> = ClientCache::new();

/// This process's runtime for ZooKeeper sessions, and the pid it belongs to.
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// How often a write reads and tries again when the node changed under it.
const MAX_ATTEMPTS: usize = 32;

/// Paths per multi-read.
const READ_BATCH: usize = 64;

/// A runtime with one worker thread, so a session's connection is served (pings
/// answered, watch events received) between calls too. Made per process.
fn runtime() -> std::io::Result<&'static Runtime> {
    let pid = fork::pid();
    let _section = fork::section();
    let mut current = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match *current {
        Some((owner, runtime)) if owner == pid => Ok(runtime),
        _ => {
            let runtime: &'static Runtime = Box::leak(Box::new(
                Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("libkv-zookeeper")
                    .enable_all()
                    .build()?,
            ));
            *current = Some((pid, runtime));
            Ok(runtime)
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The name beside a key's node that holds its ttl, when it has one: ZooKeeper
/// shows clients no sign of a TTL node (its `ephemeralOwner` reads 0). `@` is
/// no key's, so it is never listed.
const TTL_SUFFIX: &str = "@ttl";

fn companion(path: &str) -> String {
    format!("{path}{TTL_SUFFIX}")
}

/// The ttl (ms) a companion node holds.
fn parse_ttl(data: &[u8]) -> Option<i64> {
    std::str::from_utf8(data).ok()?.trim().parse().ok()
}

/// What a node is to libkv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A key: a leaf that never had children, not past its ttl (ms).
    Key { ttl: Option<i64> },
    /// A key past its ttl, which ZooKeeper has not reaped yet: absent.
    Expired,
    /// A directory whose last key went (its children version is not 0), awaiting
    /// removal: absent.
    EmptyDir,
    /// A node with children: a directory.
    Dir,
}

/// What a node is, given its companion's ttl. ZooKeeper shows clients no sign of
/// a container either: a directory libkv makes is created with its first child,
/// in one multi, so a leaf whose children version is 0 is a key, one that had
/// children an empty directory.
fn kind(stat: &Stat, ttl: Option<i64>) -> Kind {
    if stat.num_children > 0 {
        return Kind::Dir;
    }
    if stat.cversion > 0 {
        return Kind::EmptyDir;
    }
    match ttl {
        Some(ttl) if stat.mtime.saturating_add(ttl) <= now_ms() => Kind::Expired,
        ttl => Kind::Key { ttl },
    }
}

fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Why a call failed, before it is worded.
enum Fail {
    Zk(ZkError),
    /// A key below a key, or above keys.
    Conflict(String),
    /// The node kept changing under a write.
    Busy,
}

impl From<ZkError> for Fail {
    fn from(e: ZkError) -> Fail {
        Fail::Zk(e)
    }
}

type Outcome<T> = std::result::Result<T, Fail>;

/// What a write requires of the key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cond {
    Any,
    Absent,
    Sequence(u64),
}

/// A node read: its data, stat and ttl (ms; from its companion).
type Node = (Vec<u8>, Stat, Option<i64>);

/// A key found: its node's path, value, stat and ttl (ms).
type Found = (String, Vec<u8>, Stat, Option<i64>);

/// Live keys found below a directory, its directories (deepest last), and the
/// companions of keys with a ttl (expired ones' included).
#[derive(Default)]
struct Walk {
    keys: Vec<Found>,
    dirs: Vec<String>,
    companions: Vec<String>,
}

impl ZookeeperStore {
    /// A store for the URL's endpoints and prefix. Nothing is connected until the
    /// first call.
    pub fn open(url: &StoreUrl, auth: &Auth, timeout: Duration) -> Result<ZookeeperStore> {
        let StoreUrl::Zookeeper { endpoints, prefix } = url else {
            unreachable!("ZookeeperStore::open is given zookeeper URLs only")
        };
        auth.only("zookeeper", &["username", "password"])?;
        match (auth.get("username"), auth.get("password")) {
            (Some(_), None) => {
                return Err(Error::InvalidArgument(
                    "zookeeper auth has a username but no password".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(
                    "zookeeper auth has a password but no username".into(),
                ))
            }
            (Some(user), Some(_)) if user.is_empty() || user.contains(':') => {
                return Err(Error::InvalidArgument(
                    "the zookeeper auth username must be non-empty and hold no ':'".into(),
                ))
            }
            _ => {}
        }
        let connect = endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(",");
        Ok(ZookeeperStore {
            url: url.to_string(),
            connect: connect.clone(),
            root: if prefix.is_root() {
                String::new()
            } else {
                prefix.as_str().to_owned()
            },
            session: SessionKey {
                connect,
                auth: auth.clone(),
            },
            timeout,
            ttl_nodes: AtomicU8::new(TTL_UNKNOWN),
        })
    }

    fn node(&self, key: &Key) -> String {
        format!("{}{}", self.root, key.as_str())
    }

    fn dir_node(&self, dir: &Key) -> String {
        if dir.is_root() {
            if self.root.is_empty() {
                "/".to_owned()
            } else {
                self.root.clone()
            }
        } else {
            self.node(dir)
        }
    }

    /// The key a node below the prefix stands for.
    fn key_of<'a>(&self, path: &'a str) -> &'a str {
        &path[self.root.len()..]
    }

    /// Whether a node is in the key space (below the prefix), not the prefix's own.
    fn in_key_space(&self, path: &str) -> bool {
        path.len() > self.root.len() + 1 && path.starts_with(&self.root)
    }

    fn acls(&self) -> Acls<'static> {
        if self.session.auth.get("username").is_some() {
            Acls::creator_all()
        } else {
            Acls::anyone_all()
        }
    }

    fn session_timeout(&self) -> Duration {
        (self.timeout * 2).clamp(Duration::from_secs(4), Duration::from_secs(40))
    }

    /// Whether every member refuses a TCP connection (nothing listens there), as
    /// opposed to one that does not answer, or a session that could not be made
    /// for another reason.
    async fn all_refuse(&self) -> bool {
        for member in self.connect.split(',') {
            let connect = tokio::net::TcpStream::connect(member);
            match tokio::time::timeout(Duration::from_millis(500), connect).await {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                _ => return false,
            }
        }
        true
    }

    /// This process's session, made if needed.
    async fn client(&self) -> std::result::Result<(Client, u64), ZkError> {
        if let Some((client, generation)) = SESSIONS.get(&self.session) {
            if !client.state().is_terminated() {
                return Ok((client, generation));
            }
            SESSIONS.forget(&self.session, Some(generation));
        }
        // A connection silent for half the store's timeout is taken for lost (and
        // the session goes on over another, or is made again), so a call can
        // still end within its timeout.
        let session_timeout = self.session_timeout();
        let connection_timeout =
            (self.timeout / 2).clamp(Duration::from_millis(500), session_timeout * 2 / 5);
        let mut connector = Client::connector();
        connector
            .session_timeout(session_timeout)
            .connection_timeout(connection_timeout)
            .fail_eagerly();
        if let (Some(user), Some(password)) = (
            self.session.auth.get("username"),
            self.session.auth.get("password"),
        ) {
            connector.auth(
                "digest".to_owned(),
                format!("{user}:{password}").into_bytes(),
            );
        }
        let client = connector.connect(&self.connect).await?;
        Ok(SESSIONS.insert(&self.session, client))
    }

    /// Runs `body` on this process's session within the store's timeout. Reads and
    /// writes that may be repeated (`cas` false) are sent again after a lost
    /// connection or session; a compare-and-swap whose answer was lost fails
    /// saying it may have been applied.
    fn call<T, F, Fut>(&self, op: &'static str, key: &str, cas: bool, body: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        self.call_within(op, key, cas, self.timeout, body)
    }

    fn call_within<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        cas: bool,
        within: Duration,
        body: F,
    ) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        let runtime = runtime()
            .map_err(|e| self.failed(op, key, format!("cannot start the I/O runtime: {e}")))?;
        let sent = std::cell::Cell::new(false);
        let last_unreachable: std::cell::RefCell<Option<String>> = Default::default();
        let attempts =
            async {
                loop {
                    let (client, generation) = match self.client().await {
                        Ok(found) => found,
                        Err(ZkError::AuthFailed) => {
                            return Err(self.auth_error(op, key, "authentication failed"))
                        }
                        Err(e) => {
                            // Nothing listens at any member (etcd's calls fail
                            // as fast there): no use waiting out the timeout.
                            if self.all_refuse().await {
                                return Err(Error::Connection {
                                    op,
                                    key: key.to_owned(),
                                    store: self.url.clone(),
                                    reason: format!(
                                        "{e}: every member refused the connection; check \
                                         that ZooKeeper is up at {}",
                                        self.connect
                                    ),
                                });
                            }
                            *last_unreachable.borrow_mut() = Some(e.to_string());
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    sent.set(true);
                    match body(client).await {
                        Ok(value) => return Ok(value),
                        Err(Fail::Conflict(reason)) => {
                            return Err(Error::Conflict {
                                op,
                                key: key.to_owned(),
                                store: self.url.clone(),
                                reason,
                            })
                        }
                        Err(Fail::Busy) => {
                            return Err(self.failed(
                                op,
                                key,
                                "the node kept changing under the write; try again",
                            ))
                        }
                        Err(Fail::Zk(e)) => match e {
                            ZkError::SessionExpired
                            | ZkError::ClientClosed
                            | ZkError::SessionMoved
                            | ZkError::ConnectionLoss
                            | ZkError::Custom(_)
                                if !cas =>
                            {
                                if matches!(
                                    e,
                                    ZkError::SessionExpired
                                        | ZkError::ClientClosed
                                        | ZkError::SessionMoved
                                ) {
                                    SESSIONS.forget(&self.session, Some(generation));
                                }
                                *last_unreachable.borrow_mut() = Some(e.to_string());
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            ZkError::SessionExpired
                            | ZkError::ClientClosed
                            | ZkError::SessionMoved
                            | ZkError::ConnectionLoss
                            | ZkError::Custom(_) => {
                                if matches!(
                                    e,
                                    ZkError::SessionExpired
                                        | ZkError::ClientClosed
                                        | ZkError::SessionMoved
                                ) {
                                    SESSIONS.forget(&self.session, Some(generation));
                                }
                                return Err(Error::Connection {
                                    op,
                                    key: key.to_owned(),
                                    store: self.url.clone(),
                                    reason: format!(
                                        "{e}; the connection failed while ZooKeeper had the \
                                     request, so {op} may or may not have been applied: read \
                                     the key before trying again"
                                    ),
                                });
                            }
                            ZkError::NoAuth => {
                                return Err(self.auth_error(
                                    op,
                                    key,
                                    "not authorized: the node's ACL does not allow this session \
                                 (check the auth username and password: nodes libkv makes \
                                 with auth are readable only by that user)",
                                ))
                            }
                            ZkError::AuthFailed => {
                                SESSIONS.forget(&self.session, Some(generation));
                                return Err(self.auth_error(op, key, "authentication failed"));
                            }
                            ZkError::Unimplemented => return Err(self.failed(
                                op,
                                key,
                                "ZooKeeper does not implement this request (it needs ZooKeeper \
                                 3.5 or later)",
                            )),
                            other => {
                                return Err(self.failed(
                                    op,
                                    key,
                                    format!("ZooKeeper refused it: {other}"),
                                ))
                            }
                        },
                    }
                }
            };
        let outcome = runtime.block_on(async { tokio::time::timeout(within, attempts).await });
        match outcome {
            Ok(result) => result,
            Err(_) => {
                if let Some(reason) = last_unreachable.into_inner() {
                    return Err(Error::Connection {
                        op,
                        key: key.to_owned(),
                        store: self.url.clone(),
                        reason: format!(
                            "{reason} (for {}); check that ZooKeeper is up at {}",
                            crate::error::fmt_secs(within),
                            self.connect
                        ),
                    });
                }
                Err(Error::Timeout {
                    op,
                    key: key.to_owned(),
                    store: self.url.clone(),
                    after: within,
                    waiting: if sent.get() {
                        Waiting::Answer
                    } else {
                        Waiting::Store
                    },
                })
            }
        }
    }

    fn failed(&self, op: &'static str, key: &str, reason: impl Into<String>) -> Error {
        Error::Store {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            reason: reason.into(),
        }
    }

    fn auth_error(&self, op: &'static str, key: &str, reason: &str) -> Error {
        Error::Auth {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            reason: reason.to_owned(),
        }
    }

    /// The key's node (data and stat) and its ttl, after a sync when `sync`:
    /// `None` when absent.
    async fn read(client: &Client, path: &str, sync: bool) -> Outcome<Option<Node>> {
        let synced = sync.then(|| client.sync("/"));
        let get = client.get_data(path);
        let ttl = client.get_data(&companion(path));
        if let Some(synced) = synced {
            synced.await?;
        }
        let ttl = match ttl.await {
            Ok((data, _)) => parse_ttl(&data),
            Err(ZkError::NoNode) => None,
            Err(e) => return Err(e.into()),
        };
        match get.await {
            Ok((data, stat)) => Ok(Some((data, stat, ttl))),
            Err(ZkError::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The key's value and stat, and its ttl, when it is a live key.
    fn get_versioned(&self, op: &'static str, key: &Key) -> Result<Option<Node>> {
        let path = self.node(key);
        self.call(op, key.as_str(), false, |c| {
            let path = path.clone();
            async move {
                Ok(Self::read(&c, &path, true)
                    .await?
                    .filter(|(_, stat, ttl)| matches!(kind(stat, *ttl), Kind::Key { .. })))
            }
        })
    }

    /// Walks everything below `base` (a node path).
    async fn walk(client: &Client, base: &str, sync: bool) -> Outcome<Walk> {
        let synced = sync.then(|| client.sync("/"));
        let children = client.get_children(base);
        if let Some(synced) = synced {
            synced.await?;
        }
        let children = match children.await {
            Ok((children, _)) => children,
            Err(ZkError::NoNode) => return Ok(Walk::default()),
            Err(e) => return Err(e.into()),
        };
        let mut walk = Walk::default();
        // The children that may be keys or directories, each with whether it has
        // a companion; the companions found.
        let valid = |parent: &str, names: Vec<String>, companions: &mut Vec<String>| {
            let all: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
            let mut out = Vec::new();
            for name in &names {
                if is_valid_component(name.as_bytes()) {
                    let has = all.contains(format!("{name}{TTL_SUFFIX}").as_str());
                    if has {
                        companions.push(join(parent, &companion(name)));
                    }
                    out.push((join(parent, name), has));
                }
            }
            out
        };
        let mut level = valid(base, children, &mut walk.companions);
        // ZooKeeper's own node (quotas, the ensemble's config) holds no keys.
        if base == "/" {
            level.retain(|(path, _)| path != "/zookeeper");
        }
        while !level.is_empty() {
            let mut pending = Vec::new();
            for chunk in level.chunks(READ_BATCH) {
                let mut reader = client.new_multi_reader();
                for (path, has_ttl) in chunk {
                    reader.add_get_data(path)?;
                    reader.add_get_children(path)?;
                    if *has_ttl {
                        reader.add_get_data(&companion(path))?;
                    }
                }
                pending.push(reader.commit());
            }
            let mut next = Vec::new();
            for (chunk, results) in level.chunks(READ_BATCH).zip(pending) {
                let mut results = results.await?.into_iter();
                for (path, has_ttl) in chunk {
                    let (Some(data), Some(children)) = (results.next(), results.next()) else {
                        break;
                    };
                    let ttl = match has_ttl.then(|| results.next()).flatten() {
                        Some(MultiReadResult::Data { data, .. }) => parse_ttl(&data),
                        _ => None,
                    };
                    let MultiReadResult::Data { data, stat } = data else {
                        continue;
                    };
                    match kind(&stat, ttl) {
                        Kind::Key { ttl } => walk.keys.push((path.clone(), data, stat, ttl)),
                        Kind::Dir | Kind::EmptyDir => {
                            walk.dirs.push(path.clone());
                            if let MultiReadResult::Children { children } = children {
                                next.extend(valid(path, children, &mut walk.companions));
                            }
                        }
                        Kind::Expired => {}
                    }
                }
            }
            level = next;
        }
        walk.keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(walk)
    }

    /// The keys below `dir`, relative, each made an entry by `entry`.
    fn listing<T>(
        &self,
        op: &'static str,
        dir: &Key,
        entry: impl Fn(Vec<u8>, &Stat, Option<i64>) -> T,
    ) -> Result<Listing<T>> {
        let base = self.dir_node(dir);
        let walk = self.call(op, dir.as_str(), false, |c| {
            let base = base.clone();
            async move { Self::walk(&c, &base, true).await }
        })?;
        let cut = if base == "/" { 1 } else { base.len() + 1 };
        Ok(walk
            .keys
            .into_iter()
            .filter_map(|(path, data, stat, ttl)| {
                let rel = path.get(cut..)?.to_owned();
                dir.lists(&rel).then(|| (rel, entry(data, &stat, ttl)))
            })
            .collect())
    }

    /// A key below `path` (a directory), for errors.
    async fn some_key_below(&self, client: &Client, path: &str) -> String {
        match Self::walk(client, path, false).await {
            Ok(walk) => walk
                .keys
                .first()
                .map(|(p, ..)| self.key_of(p).to_owned())
                .unwrap_or_else(|| format!("{}/...", self.key_of(path))),
            Err(_) => format!("{}/...", self.key_of(path)),
        }
    }

    /// How a key with `ttl` is created: a TTL node, or where the server has TTL
    /// nodes off, an ephemeral node (see the module).
    fn create_options(&self, ttl: Option<Duration>) -> CreateOptions<'static> {
        match ttl {
            Some(_) if self.ttl_nodes.load(Ordering::Relaxed) == TTL_EPHEMERAL => {
                CreateMode::Ephemeral.with_acls(self.acls())
            }
            Some(ttl) => CreateMode::Persistent.with_acls(self.acls()).with_ttl(ttl),
            None => CreateMode::Persistent.with_acls(self.acls()),
        }
    }

    /// The one write every put and compare-and-swap is: stores `value` at `key`
    /// (with `ttl`) when `cond` holds, in one multi with the directories it needs
    /// (containers made with it) and its companion. Answers the new sequence, or
    /// `None` when `cond` did not hold.
    async fn write(
        &self,
        client: &Client,
        key: &Key,
        value: &[u8],
        cond: Cond,
        ttl: Option<Duration>,
    ) -> Outcome<Option<u64>> {
        let path = self.node(key);
        let ttl_path = companion(&path);
        let mut ancestors = Vec::new();
        let mut at = parent_of(&path);
        while at != "/" {
            ancestors.push(at.to_owned());
            at = parent_of(at);
        }
        ancestors.reverse();
        let mut options = self.create_options(ttl);
        // Whether this attempt makes TTL nodes.
        let mut ttl_node = ttl.is_some() && self.ttl_nodes.load(Ordering::Relaxed) != TTL_EPHEMERAL;
        let container = CreateMode::Container.with_acls(self.acls());
        let ttl_ms = ttl.map(|t| t.as_millis() as i64);
        let ttl_text = ttl_ms.map(|t| t.to_string());
        for _ in 0..MAX_ATTEMPTS {
            // Everything the write depends on, in one round trip.
            let synced = matches!(cond, Cond::Sequence(_)).then(|| client.sync("/"));
            let leaf = client.check_stat(&path);
            let leaf_ttl = client.get_data(&ttl_path);
            let above: Vec<_> = ancestors
                .iter()
                .map(|a| {
                    let in_keys = self.in_key_space(a);
                    (
                        client.check_stat(a),
                        in_keys.then(|| client.get_data(&companion(a))),
                    )
                })
                .collect();
            if let Some(synced) = synced {
                synced.await?;
            }
            let leaf = leaf.await?;
            let (leaf_ttl, companion_stat) = match leaf_ttl.await {
                Ok((data, stat)) => (parse_ttl(&data), Some(stat)),
                Err(ZkError::NoNode) => (None, None),
                Err(e) => return Err(e.into()),
            };
            let mut parents = Vec::with_capacity(above.len());
            for (stat, ttl) in above {
                let ttl = match ttl {
                    Some(ttl) => match ttl.await {
                        Ok((data, stat)) => Some((parse_ttl(&data), stat)),
                        Err(ZkError::NoNode) => None,
                        Err(e) => return Err(e.into()),
                    },
                    None => None,
                };
                parents.push((stat.await?, ttl));
            }
            let found = leaf.map(|stat| (stat, kind(&stat, leaf_ttl)));
            match (cond, found) {
                (_, Some((_, Kind::Dir))) => {
                    let below = self.some_key_below(client, &path).await;
                    return Err(Fail::Conflict(format!(
                        "{key} has keys below it (such as {below}), and in the zookeeper store \
                         a key cannot also be a directory"
                    )));
                }
                (Cond::Absent, Some((_, Kind::Key { .. }))) => return Ok(None),
                (Cond::Sequence(_), None | Some((_, Kind::Expired | Kind::EmptyDir))) => {
                    return Ok(None)
                }
                (Cond::Sequence(previous), Some((stat, _))) if stat.mzxid as u64 != previous => {
                    return Ok(None)
                }
                _ => {}
            }
            let mut multi = client.new_multi_writer();
            let mut ops = 0;
            // The directories: made where missing, refused where a key is.
            for (a, (stat, ttl)) in ancestors.iter().zip(&parents) {
                let Some(stat) = stat else {
                    multi.add_create(a, b"", &container)?;
                    ops += 1;
                    continue;
                };
                if !self.in_key_space(a) {
                    continue;
                }
                match kind(stat, ttl.and_then(|(t, _)| t)) {
                    Kind::Key { .. } => {
                        return Err(Fail::Conflict(format!(
                            "{} is a key, and in the zookeeper store a key cannot also be a \
                             directory: {key} cannot be stored below it (delete {} first, or \
                             choose another key)",
                            self.key_of(a),
                            self.key_of(a)
                        )))
                    }
                    Kind::Expired => {
                        // An expired key stands in the way: replaced by a directory.
                        if let Some((_, ttl_stat)) = ttl {
                            multi.add_delete(&companion(a), Some(ttl_stat.version))?;
                        }
                        multi.add_delete(a, Some(stat.version))?;
                        multi.add_create(a, b"", &container)?;
                        ops += 3;
                    }
                    Kind::Dir | Kind::EmptyDir => {}
                }
            }
            // The key, and its companion.
            let leaf_op;
            match found {
                Some((stat, Kind::Key { ttl: now })) if now == ttl_ms => {
                    multi.add_set_data(&path, value, Some(stat.version))?;
                    leaf_op = ops;
                    if let (Some(text), Some(cstat)) = (&ttl_text, companion_stat) {
                        multi.add_set_data(&ttl_path, text.as_bytes(), Some(cstat.version))?;
                    }
                }
                found => {
                    if let Some(cstat) = companion_stat {
                        multi.add_delete(&ttl_path, Some(cstat.version))?;
                        ops += 1;
                    }
                    if let Some((stat, _)) = found {
                        multi.add_delete(&path, Some(stat.version))?;
                        ops += 1;
                    }
                    multi.add_create(&path, value, &options)?;
                    leaf_op = ops;
                    if let Some(text) = &ttl_text {
                        multi.add_create(&ttl_path, text.as_bytes(), &options)?;
                    }
                }
            }
            match multi.commit().await {
                Ok(results) => {
                    if ttl.is_some() {
                        let _ = self.ttl_nodes.compare_exchange(
                            TTL_UNKNOWN,
                            TTL_NODES,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    let stat = match results.into_iter().nth(leaf_op) {
                        Some(MultiWriteResult::Create { stat, .. })
                        | Some(MultiWriteResult::SetData { stat }) => Some(stat),
                        _ => None,
                    };
                    let mzxid = match stat.filter(|s| !s.is_invalid()) {
                        Some(stat) => stat.mzxid,
                        None => client.check_stat(&path).await?.map_or(0, |s| s.mzxid),
                    };
                    return Ok(Some(mzxid as u64));
                }
                Err(e) => match ZkError::from(e) {
                    // TTL nodes are off: ephemeral nodes instead.
                    ZkError::Unimplemented if ttl.is_some() && ttl_node => {
                        self.ttl_nodes.store(TTL_EPHEMERAL, Ordering::Relaxed);
                        options = self.create_options(ttl);
                        ttl_node = false;
                    }
                    // Something changed under the write: read again.
                    ZkError::BadVersion
                    | ZkError::NoNode
                    | ZkError::NodeExists
                    | ZkError::NotEmpty => {}
                    e => return Err(e.into()),
                },
            }
        }
        Err(Fail::Busy)
    }

    fn write_call(
        &self,
        op: &'static str,
        key: &Key,
        value: &[u8],
        cond: Cond,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>> {
        let cas = cond != Cond::Any;
        self.call(op, key.as_str(), cas, |c| async move {
            self.write(&c, key, value, cond, ttl).await
        })
    }

    /// Deletes the key (and its companion), when its node is still `version`
    /// (any, for `None`); false when it was not.
    async fn delete_key(client: &Client, path: &str, version: Option<i32>) -> Outcome<bool> {
        let ttl_path = companion(path);
        for _ in 0..MAX_ATTEMPTS {
            let mut multi = client.new_multi_writer();
            let has_companion = client.check_stat(&ttl_path).await?.is_some();
            if has_companion {
                multi.add_delete(&ttl_path, None)?;
            }
            multi.add_delete(path, version)?;
            match multi.commit().await.map_err(ZkError::from) {
                Ok(_) => return Ok(true),
                // The companion came or went meanwhile.
                Err(ZkError::NoNode) if has_companion => continue,
                Err(ZkError::NoNode | ZkError::NotEmpty | ZkError::BadVersion) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Fail::Busy)
    }
}

impl Store for ZookeeperStore {
    fn provider(&self) -> &'static str {
        "zookeeper"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned("get", key)?.map(|(data, ..)| data))
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<()> {
        self.write_call("put", key, value, Cond::Any, None)
            .map(|_| ())
    }

    fn delete(&self, key: &Key) -> Result<()> {
        let path = self.node(key);
        self.call("delete", key.as_str(), false, |c| {
            let path = path.clone();
            async move {
                match Self::read(&c, &path, false).await? {
                    Some((_, stat, ttl))
                        if matches!(kind(&stat, ttl), Kind::Key { .. } | Kind::Expired) =>
                    {
                        Self::delete_key(&c, &path, None).await.map(|_| ())
                    }
                    _ => Ok(()),
                }
            }
        })
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        Ok(self.get_versioned("exists", key)?.is_some())
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        self.listing("list", dir, |data, _, _| data)
    }

    fn deletetree(&self, dir: &Key) -> Result<()> {
        let base = self.dir_node(dir);
        self.call("deletetree", dir.as_str(), false, |c| {
            let base = base.clone();
            async move {
                let walk = Self::walk(&c, &base, false).await?;
                let ignore = |r: std::result::Result<(), ZkError>| match r {
                    Ok(()) | Err(ZkError::NoNode | ZkError::NotEmpty) => Ok(()),
                    Err(e) => Err(Fail::Zk(e)),
                };
                // Companions first (a key without one is a key for good for a
                // moment, never one with another's ttl), then keys, pipelined.
                let companions: Vec<_> =
                    walk.companions.iter().map(|p| c.delete(p, None)).collect();
                let keys: Vec<_> = walk.keys.iter().map(|(p, ..)| c.delete(p, None)).collect();
                for deleted in companions.into_iter().chain(keys) {
                    ignore(deleted.await)?;
                }
                // Directories, deepest first (ZooKeeper removes empty containers
                // too, later).
                for dir in walk.dirs.iter().rev() {
                    ignore(c.delete(dir, None).await)?;
                }
                Ok(())
            }
        })
    }

    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool> {
        Ok(self
            .write_call("atomic_create", key, value, Cond::Absent, None)?
            .is_some())
    }

    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>> {
        Ok(self
            .get_versioned("atomic_get", key)?
            .map(|(value, stat, _)| Versioned {
                value,
                sequence: stat.mzxid as u64,
            }))
    }

    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool> {
        let cond = if previous == 0 {
            Cond::Absent
        } else {
            Cond::Sequence(previous)
        };
        Ok(self
            .write_call("atomic_put", key, value, cond, None)?
            .is_some())
    }

    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool> {
        let path = self.node(key);
        self.call("atomic_delete", key.as_str(), true, |c| {
            let path = path.clone();
            async move {
                let found = Self::read(&c, &path, true)
                    .await?
                    .filter(|(_, stat, ttl)| matches!(kind(stat, *ttl), Kind::Key { .. }));
                match (previous, found) {
                    (0, found) => Ok(found.is_none()),
                    (_, None) => Ok(false),
                    (previous, Some((_, stat, _))) if stat.mzxid as u64 != previous => Ok(false),
                    (_, Some((_, stat, _))) => {
                        Self::delete_key(&c, &path, Some(stat.version)).await
                    }
                }
            }
        })
    }

    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>> {
        self.listing("atomic_list", dir, |value, stat, _| Versioned {
            value,
            sequence: stat.mzxid as u64,
        })
    }

    /// A TTL node: see the module. Without TTL nodes on the server, fails saying
    /// how to turn them on.
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
            Some(s) => Cond::Sequence(s),
        };
        self.write_call(
            crate::store::ttl_write_op(previous),
            key,
            value,
            cond,
            Some(ttl),
        )
    }

    fn ttl_bounds(&self) -> (u64, u64) {
        (1, MAX_TTL)
    }

    fn watch(
        self: Arc<Self>,
        target: &Target,
        from: Option<u64>,
    ) -> Result<Option<Box<dyn Watcher>>> {
        let source = ZkSource {
            store: self,
            target: target.clone(),
            watch: None,
            ttl_at: None,
        };
        Ok(Some(Box::new(Coalescing::start(
            source,
            target.clone(),
            from,
        )?)))
    }

    fn info(&self) -> Result<Value> {
        let (session, timeout, users, config) = self.call("info", "", false, |c| async move {
            let users = c.list_auth_users();
            let config = c.get_config();
            let users = users.await.unwrap_or_default();
            let config = config.await.map(|(data, _)| data).unwrap_or_default();
            Ok((
                c.session_id().to_string(),
                c.session_timeout(),
                users,
                config,
            ))
        })?;
        let mut facts = vec![
            ("provider", Value::from("zookeeper")),
            ("url", Value::from(self.url.as_str())),
            (
                "endpoints",
                Value::Array(self.connect.split(',').map(Value::from).collect()),
            ),
            ("session_id", Value::from(session)),
            ("session_timeout_ms", Value::Int(timeout.as_millis() as i64)),
            (
                "authenticated_as",
                Value::Array(
                    users
                        .iter()
                        .map(|u| Value::from(format!("{}:{}", u.scheme(), u.user())))
                        .collect(),
                ),
            ),
        ];
        let config = String::from_utf8_lossy(&config).trim().to_owned();
        if !config.is_empty() {
            facts.push((
                "ensemble",
                Value::Array(config.lines().map(Value::from).collect()),
            ));
        }
        Ok(Value::hash(facts))
    }
}

/// The source of a ZooKeeper watch: a persistent watch on the session, read again
/// on each notification and at the earliest TTL deadline.
struct ZkSource {
    store: Arc<ZookeeperStore>,
    target: Target,
    /// The watch, the session it is on (kept so the session outlives it) and the
    /// process both belong to.
    watch: Option<(PersistentWatcher, Client, u32)>,
    /// When the earliest TTL key read last expires.
    ttl_at: Option<Instant>,
}

impl ZkSource {
    fn open_watch(&mut self) -> Result<()> {
        let store = &self.store;
        let path = if self.target.tree {
            store.dir_node(&self.target.key)
        } else {
            store.node(&self.target.key)
        };
        let mode = if self.target.tree {
            AddWatchMode::PersistentRecursive
        } else {
            AddWatchMode::Persistent
        };
        let watch = store.call(self.target.op(), self.target.key.as_str(), false, |c| {
            let path = path.clone();
            async move {
                let watcher = c.watch(&path, mode).await?;
                Ok((watcher, c))
            }
        })?;
        self.watch = Some((watch.0, watch.1, fork::pid()));
        Ok(())
    }

    /// Leaks a watch made before `fork`, in the parent: dropping it would signal
    /// the parent's session task, on a runtime whose threads this process does
    /// not have (see the module).
    fn leak_if_forked(&mut self) {
        if self
            .watch
            .as_ref()
            .is_some_and(|(_, _, pid)| *pid != fork::pid())
        {
            std::mem::forget(self.watch.take());
        }
    }

    fn read(&mut self) -> Result<Snapshot> {
        let store = &self.store;
        let (entries, deadlines): (Vec<(String, Versioned)>, Vec<i64>) = if self.target.tree {
            let base = store.dir_node(&self.target.key);
            let dir = &self.target.key;
            let walk = store.call(self.target.op(), dir.as_str(), false, |c| {
                let base = base.clone();
                async move { ZookeeperStore::walk(&c, &base, true).await }
            })?;
            let cut = if base == "/" { 1 } else { base.len() + 1 };
            let mut deadlines = Vec::new();
            let entries = walk
                .keys
                .into_iter()
                .filter_map(|(path, value, stat, ttl)| {
                    let rel = path.get(cut..)?;
                    if !dir.lists(rel) {
                        return None;
                    }
                    deadlines.extend(ttl.map(|t| stat.mtime.saturating_add(t)));
                    Some((
                        dir.join(rel),
                        Versioned {
                            value,
                            sequence: stat.mzxid as u64,
                        },
                    ))
                })
                .collect();
            (entries, deadlines)
        } else {
            match store.get_versioned(self.target.op(), &self.target.key)? {
                Some((value, stat, ttl)) => (
                    vec![(
                        self.target.key.as_str().to_owned(),
                        Versioned {
                            value,
                            sequence: stat.mzxid as u64,
                        },
                    )],
                    ttl.map(|t| stat.mtime.saturating_add(t))
                        .into_iter()
                        .collect(),
                ),
                None => (Vec::new(), Vec::new()),
            }
        };
        let now = now_ms();
        self.ttl_at = deadlines
            .into_iter()
            .min()
            .map(|at| Instant::now() + Duration::from_millis((at - now).max(0) as u64 + 5));
        Ok(Snapshot { index: 0, entries })
    }
}

impl Drop for ZkSource {
    fn drop(&mut self) {
        self.leak_if_forked();
    }
}

impl Source for ZkSource {
    fn next(&mut self, deadline: Instant) -> Result<Option<Snapshot>> {
        self.leak_if_forked();
        if self.watch.is_none() {
            // First, or after the session ended: the watch, then the state.
            self.open_watch()?;
            return self.read().map(Some);
        }
        let now = Instant::now();
        let until = self.ttl_at.map_or(deadline, |at| at.min(deadline));
        let runtime = runtime().map_err(|e| {
            self.store.failed(
                self.target.op(),
                self.target.key.as_str(),
                format!("cannot start the I/O runtime: {e}"),
            )
        })?;
        let (watcher, ..) = self.watch.as_mut().expect("a watch");
        let event = runtime.block_on(async {
            tokio::time::timeout(until.saturating_duration_since(now), watcher.changed()).await
        });
        match event {
            Ok(event) => {
                let mut ended =
                    event.event_type == EventType::Session && event.session_state.is_terminated();
                // Whatever else came meanwhile is covered by one read.
                while !ended {
                    let Some(more) = watcher.changed().now_or_never() else {
                        break;
                    };
                    ended =
                        more.event_type == EventType::Session && more.session_state.is_terminated();
                }
                if ended {
                    // The session ended: never asked again (it panics); the next
                    // call watches again on a new session.
                    self.watch = None;
                    return self.next(deadline);
                }
                self.read().map(Some)
            }
            Err(_) if self.ttl_at.is_some_and(|at| Instant::now() >= at) => self.read().map(Some),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(num_children: i32, cversion: i32, mtime: i64) -> Stat {
        Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: mtime,
            mtime,
            version: 0,
            cversion,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children,
        }
    }

    #[test]
    fn nodes_are_keys_directories_or_absent() {
        let now = now_ms();
        assert_eq!(kind(&stat(0, 0, now), None), Kind::Key { ttl: None });
        assert_eq!(kind(&stat(2, 2, now), None), Kind::Dir);
        assert_eq!(kind(&stat(0, 3, now), None), Kind::EmptyDir, "had children");
        assert_eq!(
            kind(&stat(0, 0, now), Some(60_000)),
            Kind::Key { ttl: Some(60_000) }
        );
        assert_eq!(kind(&stat(0, 0, now - 2000), Some(1000)), Kind::Expired);
        assert_eq!(parse_ttl(b"1500"), Some(1500));
        assert_eq!(parse_ttl(b"x"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(companion("/p/a"), "/p/a@ttl");
        assert!(!is_valid_component(b"a@ttl"), "never listed");
    }
}
