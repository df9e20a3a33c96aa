//! `--watch`: how long a put takes to reach a watcher of its key, through libkv's
//! watch (`libkv_core::watch::open`) and through the store's own raw way of
//! watching (the floor), for one store, in one run.
//!
//! Each layer has a watcher on one key, on a thread of its own, and a putter, the
//! thread of the benchmark, with a store object (or client) of its own:
//!
//! - `libkv`: `watch::open(&store, Target { key, tree: false }, None)`, waited
//!   on with `next` in 50 ms slices in a loop, as the bindings wait; the puts are
//!   `Store::put` on another store object of the same URL (for `mock://`, whose
//!   data lives in the store object, the same object);
//! - `floor`, etcd: etcd-client's own Watch, a `WatchStream` on a client of its
//!   own, awaited to each message on a current-thread runtime; puts by another
//!   etcd-client client on a runtime of its own;
//! - `floor`, Consul: a raw blocking-query loop with reqwest on a current-thread
//!   runtime (`GET /v1/kv/KEY?index=N&wait=5m`, N the `X-Consul-Index` of the last
//!   answer), the value decoded; puts by another reqwest client;
//! - `floor`, file: the `notify` crate alone (the version libkv's file store uses,
//!   inotify), watching the key's directory, its channel read in 50 ms slices; the
//!   puts are plain libkv puts, and the event is the first that names the key's
//!   file (the rename of the temp file over it);
//! - `floor`, ZooKeeper: a zookeeper-client persistent watch (`addWatch`,
//!   `PERSISTENT`) on the key, on a client of its own on a current-thread
//!   runtime, each `NodeDataChanged` followed by a `getData` of the key (the value
//!   then current: changes that came meanwhile are coalesced into it, as libkv's
//!   watcher does); puts (`setData`) by another client;
//! - `floor`, SQLite: a database of its own (`floor-watch.db` beside the store's
//!   file, WAL, `synchronous=FULL`) and two connections: the watcher's polls
//!   `PRAGMA data_version` every millisecond and, when it moved, reads the key
//!   (`SELECT`); the putter's writes it as the layers' floor does (`BEGIN
//!   IMMEDIATE`, upsert, `COMMIT`). SQLite has no change notification across
//!   connections; inotify on the `-wal` file is no substitute, since its last
//!   event (the commit frame's write) comes before the commit is visible (the
//!   fsync and the wal-index update in the mmapped `-shm` make none), so a read
//!   it wakes may still see the old value with nothing left to wake the next;
//! - no floor for the mock store, which is libkv's own and in-process.
//!
//! `--layers floor` (or `libkv`) measures one layer alone: the floor of a store
//! whose libkv store is not built yet.
//!
//! One sample: a pause (1-3 ms at random, so that each put finds the watcher
//! waiting, at a random point of any polling cycle), then the time from just
//! before the put call to the moment the watcher's wait returned the event
//! carrying that put's value (timed on the watcher's thread); the next put waits
//! for it. Every value is a different 64-byte string. The floor and libkv take
//! turns sample by sample, both watchers running throughout, so that both see the
//! store and the machine in the same moment.
//!
//! Consul: libkv's watch rate-limits the blocking queries that wake for a change
//! (a token bucket of 2, one token back every `watch::POLL_INTERVAL`, 250 ms), so
//! puts each made right after the last one's event are seen at most 4 a second. The
//! samples of both Consul layers are therefore made at least `POLL_INTERVAL` (plus
//! 10 ms) after the layer's last event, fewer of them (a fifth, at least 4); then
//! a few more libkv samples are made back to back (layer `libkv-burst`), which
//! show the limit.
//!
//! Prints a JSON line per layer (`"watch":"layer"`): the median, p90, p99 and max
//! in µs, and the median of the put calls alone (until they returned: an event
//! may come before its put returns). For etcd and Consul the libkv line also
//! gives how many TCP connections the process held open to the server at the
//! end, once the floor's were closed: libkv's watcher and putter together.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use etcd_client::EventType;
use libkv_core::watch::{self, EventKind, Target as WatchTarget, POLL_INTERVAL};
use libkv_core::{open, Key, OpenOptions};
use notify::{RecursiveMode, Watcher as _};
use serde::{Deserialize, Serialize};
use tokio::runtime::{Builder, Runtime};
use zookeeper_client::{Acls, AddWatchMode, CreateMode, EventType as ZkEventType};

use crate::floor::{sqlite as sqlite_floor, zookeeper as zookeeper_floor};
use crate::{check, Result, Target};

/// How long each wait of libkv's watcher (and of the file floor's) is: as the
/// bindings wait, so that they can stop between two.
const SLICE: Duration = Duration::from_millis(50);
/// The pause before each put: `PAUSE_MIN` plus up to `PAUSE_SPREAD`, at random.
const PAUSE_MIN: Duration = Duration::from_millis(1);
const PAUSE_SPREAD: Duration = Duration::from_millis(2);
/// How long a put's event may take before the run fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watcher may take to start, or to stop.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The bytes of each value put.
const VALUE_SIZE: usize = 64;
/// The keys of the two layers (the file floor's is a libkv key too).
const LIBKV_KEY: &str = "/watch/libkv/key";
const FLOOR_KEY: &str = "/watch/floor/key";

pub struct Config {
    /// `mock`, `file`, `etcd`, `consul`, `zookeeper` or `sqlite`.
    pub store: String,
    pub url: String,
    pub target: Target,
    /// Samples per layer (Consul: a fifth, see the module).
    pub puts: usize,
    /// Which layers run: the floor (where the store has one), libkv's watch.
    pub floor: bool,
    pub libkv: bool,
    /// Whether each line carries every sample.
    pub samples: bool,
}

/// What a watcher's thread tells the benchmark.
enum Seen {
    /// The watch is in place: changes from now on are its.
    Ready,
    /// An event, when the wait returned it: with the value put, or `None` where
    /// the watch carries none (notify).
    Event {
        value: Option<Vec<u8>>,
        at: Instant,
    },
    Failed(String),
}

/// A watcher on its thread.
struct Watch {
    name: &'static str,
    events: Receiver<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Runs `body` on a thread of its own, and waits until it said the watch is
    /// in place. `body` sends `Ready`, then the events, until `stop` is set.
    fn spawn(
        name: &'static str,
        body: impl FnOnce(&Sender<Seen>, &AtomicBool) -> Result + Send + 'static,
    ) -> Result<Watch> {
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("watch {name}"))
            .spawn(move || {
                if let Err(e) = body(&tx, &flag) {
                    let _ = tx.send(Seen::Failed(e.to_string()));
                }
            })?;
        let watch = Watch {
            name,
            events,
            stop,
            thread: Some(thread),
        };
        match watch.events.recv_timeout(START_TIMEOUT) {
            Ok(Seen::Ready) => Ok(watch),
            Ok(Seen::Failed(e)) => Err(format!("{name}: {e}").into()),
            Ok(Seen::Event { .. }) => {
                Err(format!("{name}: an event before the watch began").into())
            }
            Err(_) => {
                Err(format!("{name}: the watch did not begin within {START_TIMEOUT:?}").into())
            }
        }
    }

    /// Takes what came since the last put's event (nothing, normally): how many
    /// events.
    fn drain(&self) -> Result<usize> {
        let mut stray = 0;
        while let Ok(seen) = self.events.try_recv() {
            match seen {
                Seen::Event { .. } => stray += 1,
                Seen::Ready => {}
                Seen::Failed(e) => return Err(format!("{}: {e}", self.name).into()),
            }
        }
        Ok(stray)
    }

    /// Waits for the event of the put of `value` begun at `start`: when the
    /// watcher had it, and how many other events came first.
    fn wait_for(&self, value: &[u8], start: Instant) -> Result<(Instant, usize)> {
        let deadline = start + EVENT_TIMEOUT;
        let mut stray = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Seen::Event { value: Some(v), at }) if v == value => return Ok((at, stray)),
                Ok(Seen::Event { value: None, at }) if at >= start => return Ok((at, stray)),
                Ok(Seen::Event { .. }) | Ok(Seen::Ready) => stray += 1,
                Ok(Seen::Failed(e)) => return Err(format!("{}: {e}", self.name).into()),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{}: no event for a put within {EVENT_TIMEOUT:?}",
                        self.name
                    )
                    .into())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: the watcher's thread ended", self.name).into())
                }
            }
        }
    }

    /// Waits for the thread, told to stop (and woken by a last put), to end.
    fn join(&mut self) -> Result {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(format!("{}: the watcher did not stop", self.name).into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        thread
            .join()
            .map_err(|_| format!("{}: the watcher panicked", self.name))?;
        self.drain().map(drop)
    }
}

/// Sends `seen`; false when the benchmark no longer listens.
fn send(tx: &Sender<Seen>, seen: Seen) -> bool {
    tx.send(seen).is_ok()
}

/// A layer's put of a value, on the benchmark's thread.
type Put = Box<dyn FnMut(&[u8]) -> Result>;

/// One layer being measured: its watcher, its putter and its samples.
struct Layer {
    name: &'static str,
    watch: Watch,
    put: Put,
    /// How long after its last event a put may come at the earliest (Consul's).
    cycle: Duration,
    last_event: Option<Instant>,
    samples: Vec<Duration>,
    /// How long each sample's put call took, until it returned.
    puts: Vec<Duration>,
    /// Events that were not the awaited put's.
    stray: usize,
}

impl Layer {
    fn new(
        name: &'static str,
        watch: Watch,
        put: impl FnMut(&[u8]) -> Result + 'static,
        cycle: Duration,
    ) -> Layer {
        Layer {
            name,
            watch,
            put: Box::new(put),
            cycle,
            last_event: None,
            samples: Vec::new(),
            puts: Vec::new(),
            stray: 0,
        }
    }

    /// Pauses (see the module), puts `value` and waits for its event: the time
    /// from just before the put to the event, and the put call's own.
    fn sample(&mut self, value: &[u8], pause: Duration) -> Result<(Duration, Duration)> {
        if let Some(last) = self.last_event {
            sleep_until(last + self.cycle);
        }
        std::thread::sleep(pause);
        self.stray += self.watch.drain()?;
        let start = Instant::now();
        (self.put)(value).map_err(|e| format!("{}: put: {e}", self.name))?;
        let put = start.elapsed();
        let (at, stray) = self.watch.wait_for(value, start)?;
        self.stray += stray;
        self.last_event = Some(at);
        Ok((at.saturating_duration_since(start), put))
    }

    /// Stops the watcher: the flag, then a put that wakes a watcher waiting on its
    /// own (etcd's stream, Consul's 5-minute query).
    fn stop(mut self) -> Result {
        self.watch.stop.store(true, Ordering::Release);
        let woken = (self.put)(b"stop");
        self.watch.join()?;
        woken
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// The `n`th value put: `n` in decimal, zero-padded to `VALUE_SIZE` bytes.
fn value(n: usize) -> Vec<u8> {
    format!("{n:0VALUE_SIZE$}").into_bytes()
}

/// The network floors' runtime: current-thread, as the other floors' (see
/// `floor::runtime`).
fn runtime() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

// --- the layers ---------------------------------------------------------------

/// libkv's watch of `LIBKV_KEY`, and puts on another store object.
fn libkv_layer(url: &str, cycle: Duration) -> Result<Layer> {
    let key = Key::new(LIBKV_KEY)?;
    let watched = open(url, &OpenOptions::default())?;
    // The mock store's data lives in its store object: the putter must share it.
    let putter = if watched.provider() == "mock" {
        Arc::clone(&watched)
    } else {
        open(url, &OpenOptions::default())?
    };
    putter.put(&key, &value(0))?;
    let target = WatchTarget {
        key: key.clone(),
        tree: false,
    };
    let watch = Watch::spawn("libkv", move |tx, stop| {
        let mut watcher = watch::open(&watched, target, None)?;
        if !send(tx, Seen::Ready) {
            return Ok(());
        }
        while !stop.load(Ordering::Acquire) {
            let events = watcher.next(Instant::now() + SLICE)?;
            let at = Instant::now();
            for event in events {
                if event.kind == EventKind::Put {
                    let value = Some(event.value);
                    if !send(tx, Seen::Event { value, at }) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    })?;
    let put = move |v: &[u8]| -> Result { Ok(putter.put(&key, v)?) };
    Ok(Layer::new("libkv", watch, put, cycle))
}

/// etcd-client's Watch on a client of its own; puts by another client.
fn etcd_floor(endpoints: &[String], prefix: &str) -> Result<Layer> {
    let key = format!("{prefix}{FLOOR_KEY}");
    let rt = runtime()?;
    let mut client = rt.block_on(etcd_client::Client::connect(endpoints, None))?;
    rt.block_on(client.put(key.as_str(), value(0), None))?;
    let (endpoints, watched) = (endpoints.to_vec(), key.clone());
    let watch = Watch::spawn("etcd floor", move |tx, stop| {
        runtime()?.block_on(etcd_watch(endpoints, watched, tx, stop))
    })?;
    let put = move |v: &[u8]| -> Result {
        rt.block_on(client.put(key.as_str(), v, None))?;
        Ok(())
    };
    Ok(Layer::new("floor", watch, put, Duration::ZERO))
}

/// The etcd floor's watcher: a Watch stream, each message awaited.
async fn etcd_watch(
    endpoints: Vec<String>,
    key: String,
    tx: &Sender<Seen>,
    stop: &AtomicBool,
) -> Result {
    let mut client = etcd_client::Client::connect(endpoints, None).await?;
    let mut stream = client.watch(key, None).await?;
    let created = stream.message().await?.ok_or("the watch stream ended")?;
    check(
        created.created(),
        "etcd's first answer is not the watch's creation",
    )?;
    if !send(tx, Seen::Ready) {
        return Ok(());
    }
    while !stop.load(Ordering::Acquire) {
        let resp = stream.message().await?.ok_or("the watch stream ended")?;
        let at = Instant::now();
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            if event.event_type() == EventType::Put {
                let value = Some(kv.value().to_vec());
                if !send(tx, Seen::Event { value, at }) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// One entry of Consul's answer to a read of a key.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    value: Option<String>,
}

/// The `X-Consul-Index` of an answer.
fn consul_index(resp: &reqwest::Response) -> Result<u64> {
    let header = resp
        .headers()
        .get("x-consul-index")
        .ok_or("an answer without X-Consul-Index")?;
    Ok(header.to_str()?.parse()?)
}

/// A raw blocking-query loop with reqwest; puts by another client.
fn consul_floor(base: &str, prefix: &str, cycle: Duration) -> Result<Layer> {
    // reqwest built with rustls-no-provider needs a crypto provider (see
    // floor::consul).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("{base}/v1/kv/{prefix}{}", FLOOR_KEY.trim_start_matches('/'));
    let rt = runtime()?;
    let client = rt.block_on(async { reqwest::Client::builder().no_proxy().build() })?;
    let put_url = url.clone();
    let put = move |v: &[u8]| rt.block_on(consul_put(&client, &put_url, v));
    put(&value(0))?;
    let watch = Watch::spawn("consul floor", move |tx, stop| {
        runtime()?.block_on(consul_watch(url, tx, stop))
    })?;
    Ok(Layer::new("floor", watch, put, cycle))
}

async fn consul_put(client: &reqwest::Client, url: &str, v: &[u8]) -> Result {
    let resp = client.put(url).body(v.to_vec()).send().await?;
    let stored = resp.error_for_status()?.bytes().await?;
    check(stored.trim_ascii() == b"true", "Consul did not store it")
}

/// The Consul floor's watcher: a read, then blocking queries, each past the
/// index of the last answer.
async fn consul_watch(url: String, tx: &Sender<Seen>, stop: &AtomicBool) -> Result {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let resp = client.get(&url).send().await?.error_for_status()?;
    let mut index = consul_index(&resp)?.max(1);
    if !send(tx, Seen::Ready) {
        return Ok(());
    }
    while !stop.load(Ordering::Acquire) {
        let query = format!("{url}?index={index}&wait=5m");
        let resp = client.get(&query).send().await?.error_for_status()?;
        let answered = consul_index(&resp)?;
        let body = resp.bytes().await?;
        // Consul's rules: an index of at least 1; a wait that ended with the
        // index unchanged is no change.
        let moved = answered != index;
        index = answered.max(1);
        if !moved {
            continue;
        }
        let pairs: Vec<KvPair> = serde_json::from_slice(&body)?;
        let pair = pairs.first().ok_or("the key is missing")?;
        let value = BASE64.decode(pair.value.as_deref().unwrap_or_default())?;
        let at = Instant::now();
        if !send(
            tx,
            Seen::Event {
                value: Some(value),
                at,
            },
        ) {
            return Ok(());
        }
    }
    Ok(())
}

/// notify watching the key's directory; plain libkv puts.
fn file_floor(url: &str, root: &Path) -> Result<Layer> {
    let key = Key::new(FLOOR_KEY)?;
    let store = open(url, &OpenOptions::default())?;
    store.put(&key, &value(0))?; // makes the directory
    let file: PathBuf = root.join(FLOOR_KEY.trim_start_matches('/'));
    let dir = file
        .parent()
        .ok_or("the key has no directory")?
        .to_path_buf();
    let watch = Watch::spawn("file floor", move |tx, stop| {
        let (events_tx, events) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::RecommendedWatcher::new(events_tx, notify::Config::default())?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        if !send(tx, Seen::Ready) {
            return Ok(());
        }
        while !stop.load(Ordering::Acquire) {
            match events.recv_timeout(SLICE) {
                Ok(Ok(event)) => {
                    let at = Instant::now();
                    let opened_or_read = matches!(event.kind, notify::EventKind::Access(_));
                    if !opened_or_read
                        && event.paths.contains(&file)
                        && !send(tx, Seen::Event { value: None, at })
                    {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("notify's thread ended".into()),
            }
        }
        Ok(())
    })?;
    let put = move |v: &[u8]| -> Result { Ok(store.put(&key, v)?) };
    Ok(Layer::new("floor", watch, put, Duration::ZERO))
}

/// A persistent watch on the key, then getData, on a client of its own; puts
/// (`setData`) by another client.
fn zookeeper_floor(endpoints: &[String], prefix: &str) -> Result<Layer> {
    let key = format!("{prefix}{FLOOR_KEY}");
    let cluster = endpoints.join(",");
    let rt = runtime()?;
    let client = rt.block_on(zookeeper_client::Client::connect(&cluster))?;
    rt.block_on(async {
        let parent = &key[..key.rfind('/').unwrap_or_default()];
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client.mkdir(parent, &options).await?;
        zookeeper_floor::put(&client, &key, &value(0)).await
    })?;
    let watched = key.clone();
    let watch = Watch::spawn("zookeeper floor", move |tx, stop| {
        runtime()?.block_on(zookeeper_watch(cluster, watched, tx, stop))
    })?;
    let put = move |v: &[u8]| -> Result {
        rt.block_on(client.set_data(&key, v, None))?;
        Ok(())
    };
    Ok(Layer::new("floor", watch, put, Duration::ZERO))
}

/// The ZooKeeper floor's watcher: each change of the key's data, then its value.
async fn zookeeper_watch(
    cluster: String,
    key: String,
    tx: &Sender<Seen>,
    stop: &AtomicBool,
) -> Result {
    let client = zookeeper_client::Client::connect(&cluster).await?;
    let mut watcher = client.watch(&key, AddWatchMode::Persistent).await?;
    if !send(tx, Seen::Ready) {
        return Ok(());
    }
    while !stop.load(Ordering::Acquire) {
        let event = watcher.changed().await;
        match event.event_type {
            ZkEventType::NodeDataChanged | ZkEventType::NodeCreated => {
                let (value, _) = client.get_data(&key).await?;
                let at = Instant::now();
                if !send(
                    tx,
                    Seen::Event {
                        value: Some(value),
                        at,
                    },
                ) {
                    return Ok(());
                }
            }
            ZkEventType::Session if event.session_state.is_terminated() => {
                return Err(format!("the session ended: {:?}", event.session_state).into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// How often the SQLite floor's watcher polls `PRAGMA data_version`.
const SQLITE_POLL: Duration = Duration::from_millis(1);

/// `PRAGMA data_version` polled, then a `SELECT`, on a connection of its own;
/// puts on another, to a database of the floor's own beside the store's file.
fn sqlite_floor(path: &Path) -> Result<Layer> {
    let db = path
        .parent()
        .ok_or("the database file has no directory")?
        .join("floor-watch.db");
    let mut conn = sqlite_floor::create(&db)?;
    sqlite_floor::put(&mut conn, FLOOR_KEY, &value(0))?;
    let watch = Watch::spawn("sqlite floor", move |tx, stop| {
        let conn = sqlite_floor::connect(&db)?;
        let version = || -> rusqlite::Result<i64> {
            conn.prepare_cached("PRAGMA data_version")?
                .query_row([], |r| r.get(0))
        };
        let mut seen = version()?;
        if !send(tx, Seen::Ready) {
            return Ok(());
        }
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(SQLITE_POLL);
            let now = version()?;
            if now == seen {
                continue;
            }
            seen = now;
            let value: Vec<u8> = conn
                .prepare_cached(sqlite_floor::GET)?
                .query_row([FLOOR_KEY], |r| r.get(0))?;
            let at = Instant::now();
            if !send(
                tx,
                Seen::Event {
                    value: Some(value),
                    at,
                },
            ) {
                return Ok(());
            }
        }
        Ok(())
    })?;
    let put = move |v: &[u8]| sqlite_floor::put(&mut conn, FLOOR_KEY, v);
    Ok(Layer::new("floor", watch, put, Duration::ZERO))
}

// --- the run ----------------------------------------------------------------------

/// xorshift64*: the pauses' randomness (fixed seed: the same pauses every run).
struct Pauses(u64);

impl Pauses {
    fn next(&mut self) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        PAUSE_MIN + PAUSE_SPREAD.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// The port of `http://HOST:PORT`.
fn port_of(base: &str) -> Option<u16> {
    base.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// How many TCP connections this process holds open (established) to `port`:
/// its sockets (`/proc/self/fd`) found in the kernel's TCP tables.
fn connections(port: u16) -> Option<usize> {
    let mut sockets = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()? {
        let Ok(link) = std::fs::read_link(entry.ok()?.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|l| l.strip_suffix(']'))
        {
            sockets.insert(inode.to_owned());
        }
    }
    let mut count = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, _, remote, state, _, _, _, _, _, inode, ..] = fields[..] else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // 01: ESTABLISHED.
            if remote_port == Some(port) && state == "01" && sockets.contains(inode) {
                count += 1;
            }
        }
    }
    Some(count)
}

/// The JSON line of a layer.
#[derive(Serialize)]
struct Line<'a> {
    watch: &'static str,
    store: &'a str,
    layer: &'a str,
    n: usize,
    warmup: usize,
    /// The pause before each put, at least and at most (ms); for Consul, after
    /// the cycle.
    pause_ms: [f64; 2],
    /// How long after the layer's last event a put came at the earliest (ms).
    cycle_ms: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    min_us: f64,
    mean_us: f64,
    /// The median of the put calls alone, until they returned.
    put_p50_us: f64,
    /// Events that were not a put's awaited one (the file floor: notify's
    /// second event of each rename).
    stray_events: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    samples_us: Option<Vec<f64>>,
}

pub fn run(config: &Config) -> Result {
    let consul = matches!(config.target, Target::Consul { .. });
    // Consul: each put after the watch's rate limit gave a token back.
    let (puts, cycle) = if consul {
        (
            (config.puts / 5).max(4),
            POLL_INTERVAL + Duration::from_millis(10),
        )
    } else {
        (config.puts, Duration::ZERO)
    };
    let warmup = (puts / 10).clamp(2, 10);
    let burst = if consul { (config.puts / 25).max(4) } else { 0 };
    eprintln!(
        "libkv-bench: watch {}: {warmup} warmup + {puts} puts per layer{}",
        config.store,
        if consul {
            format!(
                ", each at least {cycle:?} after the layer's last event; then {burst} back to back"
            )
        } else {
            String::new()
        }
    );

    let started = Instant::now();
    let libkv = if config.libkv {
        Some(libkv_layer(&config.url, cycle)?)
    } else {
        None
    };
    let floor = match &config.target {
        _ if !config.floor => None,
        Target::Mock => None,
        Target::File { root } => Some(file_floor(&config.url, root)?),
        Target::Etcd { endpoints, prefix } => Some(etcd_floor(endpoints, prefix)?),
        Target::Consul { base, prefix } => Some(consul_floor(base, prefix, cycle)?),
        Target::Zookeeper { endpoints, prefix } => Some(zookeeper_floor(endpoints, prefix)?),
        Target::Sqlite { path } => Some(sqlite_floor(path)?),
    };
    check(
        libkv.is_some() || floor.is_some(),
        "no layer to measure (the mock store has no floor)",
    )?;
    let port = match &config.target {
        Target::Etcd { endpoints, .. } | Target::Zookeeper { endpoints, .. } => {
            endpoints.first().and_then(|e| port_of(e))
        }
        Target::Consul { base, .. } => port_of(base),
        _ => None,
    };
    let with_libkv = libkv.is_some();
    let mut layers: Vec<Layer> = floor.into_iter().chain(libkv).collect();

    let mut pauses = Pauses(0x9e37_79b9_7f4a_7c15);
    let mut n = 0;
    for i in 0..warmup + puts {
        // Floor and libkv take turns, the first of each pair alternating.
        let count = layers.len();
        for j in 0..count {
            let layer = &mut layers[(i + j) % count];
            n += 1;
            let (took, put) = layer.sample(&value(n), pauses.next())?;
            if i >= warmup {
                layer.samples.push(took);
                layer.puts.push(put);
            }
        }
    }
    let (mut burst_samples, mut burst_puts) = (Vec::new(), Vec::new());
    if let Some(libkv) = layers.last_mut().filter(|_| with_libkv) {
        libkv.cycle = Duration::ZERO;
        for _ in 0..burst {
            n += 1;
            let (took, put) = libkv.sample(&value(n), pauses.next())?;
            burst_samples.push(took);
            burst_puts.push(put);
        }
    }
    eprintln!(
        "libkv-bench: watch {}: {n} puts in {:.1} s",
        config.store,
        started.elapsed().as_secs_f64()
    );

    let libkv = if with_libkv { layers.pop() } else { None };
    let floor = layers.pop();
    let measured = |l: &Layer| Measured {
        samples: l.samples.clone(),
        puts: l.puts.clone(),
        warmup,
        cycle: l.cycle,
        stray: l.stray,
        connections: None,
    };
    let floor_measured = floor.as_ref().map(measured);
    let mut libkv_measured = libkv.as_ref().map(measured);
    if let Some(floor) = floor {
        floor.stop()?;
    }
    if let (Some(libkv), Some(measured)) = (libkv, libkv_measured.as_mut()) {
        measured.cycle = cycle;
        // The floor's connections are closed now: what is left is libkv's.
        measured.connections = port.and_then(connections);
        libkv.stop()?;
    }

    if let Some(floor) = floor_measured {
        report(config, "floor", floor)?;
    }
    if let Some(libkv) = libkv_measured {
        report(config, "libkv", libkv)?;
    }
    if burst > 0 && with_libkv {
        let burst = Measured {
            samples: burst_samples,
            puts: burst_puts,
            warmup: 0,
            cycle: Duration::ZERO,
            stray: 0,
            connections: None,
        };
        report(config, "libkv-burst", burst)?;
    }
    Ok(())
}

/// What a layer measured.
struct Measured {
    samples: Vec<Duration>,
    puts: Vec<Duration>,
    warmup: usize,
    cycle: Duration,
    stray: usize,
    connections: Option<usize>,
}

fn report(config: &Config, layer: &str, measured: Measured) -> Result {
    let Measured {
        mut samples,
        mut puts,
        warmup,
        cycle,
        stray,
        connections,
    } = measured;
    check(!samples.is_empty(), "no samples")?;
    let us = |d: Duration| round(d.as_secs_f64() * 1e6, 1);
    let raw = config
        .samples
        .then(|| samples.iter().map(|&d| us(d)).collect());
    samples.sort_unstable();
    puts.sort_unstable();
    let total: Duration = samples.iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let line = Line {
        watch: "layer",
        store: &config.store,
        layer,
        n: samples.len(),
        warmup,
        pause_ms: [ms(PAUSE_MIN), ms(PAUSE_MIN + PAUSE_SPREAD)],
        cycle_ms: ms(cycle),
        p50_us: us(percentile(&samples, 0.50)),
        p90_us: us(percentile(&samples, 0.90)),
        p99_us: us(percentile(&samples, 0.99)),
        max_us: us(samples[samples.len() - 1]),
        min_us: us(samples[0]),
        mean_us: us(total / samples.len() as u32),
        put_p50_us: us(percentile(&puts, 0.50)),
        stray_events: stray,
        connections,
        samples_us: raw,
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// The nearest-rank percentile of sorted, non-empty samples (as `stats`).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}
