//! A URL that lists the members of one etcd cluster, against a real 3-member
//! cluster on 127.0.0.1: while a quorum is up every call succeeds, whichever members
//! are down. A call in flight when a member dies may fail once, within its timeout,
//! with a connection or timeout error, and the next call succeeds. "In flight"
//! lasts until the cluster has a leader again: a member that has not yet noticed
//! its leader's death holds a write it forwarded there.
//!
//! The tests share one cluster and take turns: each starts by restarting the
//! members the one before stopped.

mod etcd;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use etcd::Cluster;
use libkv_core::{open, ErrorKind, Key, OpenOptions, Store};

const TIMEOUT: Duration = Duration::from_secs(5);

fn cluster() -> (MutexGuard<'static, ()>, &'static Cluster) {
    static TURN: Mutex<()> = Mutex::new(());
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let cluster = CLUSTER.get_or_init(|| Cluster::start("cluster", 3));
    cluster.heal();
    (turn, cluster)
}

fn store(url: &str) -> Arc<dyn Store> {
    open(
        url,
        &OpenOptions {
            timeout: TIMEOUT,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// One call a worker made: what, when, how long, and how it ended.
struct Call {
    op: &'static str,
    started: Instant,
    took: Duration,
    failed: Option<(ErrorKind, String)>,
}

/// Workers calling every kind of operation in a loop, each on keys of its own and
/// all on one counter, until stopped.
struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(Vec<Call>, u64, u64)>>,
}

impl Workload {
    fn start(store: &Arc<dyn Store>, workers: usize, prefix: &str) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..workers)
            .map(|w| {
                let (store, stop) = (Arc::clone(store), Arc::clone(&stop));
                let prefix = prefix.to_owned();
                std::thread::spawn(move || work(&*store, &stop, &format!("{prefix}/w{w}"), prefix))
            })
            .collect();
        Workload { stop, threads }
    }

    /// Stops the workers: every call made, and the counter's increments that
    /// succeeded and that failed (which may or may not have been applied).
    fn finish(self) -> (Vec<Call>, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut calls = Vec::new();
        let (mut done, mut unknown) = (0, 0);
        for t in self.threads {
            let (c, d, u) = t.join().expect("a worker panicked");
            calls.extend(c);
            done += d;
            unknown += u;
        }
        (calls, done, unknown)
    }
}

fn work(store: &dyn Store, stop: &AtomicBool, mine: &str, shared: String) -> (Vec<Call>, u64, u64) {
    let mut calls = Vec::new();
    let (mut done, mut unknown) = (0, 0);
    let counter = k(&format!("{shared}/counter"));
    let dir = Key::dir(mine).unwrap();
    let mut record = |op: &'static str, f: &mut dyn FnMut() -> libkv_core::Result<()>| {
        let started = Instant::now();
        let outcome = f();
        calls.push(Call {
            op,
            started,
            took: started.elapsed(),
            failed: outcome.err().map(|e| (e.kind(), e.to_string())),
        });
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = k(&format!("{mine}/k{}", i % 10));
        let value = i.to_string().into_bytes();
        record("put", &mut || store.put(&key, &value));
        record("get", &mut || store.get(&key).map(drop));
        record("exists", &mut || store.exists(&key).map(drop));
        record("list", &mut || store.list(&dir).map(drop));
        // One increment of the shared counter, by compare-and-swap.
        let mut current = None;
        record("atomic_get", &mut || {
            current = store.atomic_get(&counter)?;
            Ok(())
        });
        if let Some(seen) = current.as_ref().map_or(Some((0, 0)), |v| {
            let n: u64 = String::from_utf8_lossy(&v.value).parse().ok()?;
            Some((n, v.sequence))
        }) {
            let next = (seen.0 + 1).to_string().into_bytes();
            let mut stored = None;
            record("atomic_put", &mut || {
                stored = Some(store.atomic_put(&counter, &next, seen.1)?);
                Ok(())
            });
            match stored {
                Some(true) => done += 1,
                Some(false) => {}
                None => unknown += 1,
            }
        }
        let created = k(&format!("{mine}/c{i}"));
        record("atomic_create", &mut || {
            store.atomic_create(&created, b"c").map(drop)
        });
        record("delete", &mut || store.delete(&created));
    }
    (calls, done, unknown)
}

/// A member's death: from its kill until the others have a leader again.
#[derive(Clone, Copy)]
struct Death {
    killed: Instant,
    settled: Instant,
}

/// Every call succeeded but those in flight at a death: at most one per worker and
/// death, each a connection or timeout error within the timeout (and a second).
fn check(calls: &[Call], kills: &[Death], workers: usize) {
    assert!(calls.len() > 100, "only {} calls were made", calls.len());
    let failures: Vec<&Call> = calls.iter().filter(|c| c.failed.is_some()).collect();
    for f in &failures {
        let (kind, message) = f.failed.as_ref().unwrap();
        let in_flight = kills
            .iter()
            .any(|d| f.started <= d.settled && d.killed <= f.started + f.took);
        assert!(
            in_flight,
            "{} failed while no member was being killed: {message}",
            f.op
        );
        assert!(
            matches!(kind, ErrorKind::Connection | ErrorKind::Timeout),
            "{} failed with {kind:?}: {message}",
            f.op
        );
        assert!(
            f.took <= TIMEOUT + Duration::from_secs(1),
            "{} took {:?} to fail: {message}",
            f.op,
            f.took
        );
    }
    assert!(
        failures.len() <= kills.len() * workers,
        "{} calls failed for {} kills: {:?}",
        failures.len(),
        kills.len(),
        failures
            .iter()
            .map(|f| f.failed.as_ref().unwrap().1.as_str())
            .collect::<Vec<_>>()
    );
    let slowest = calls.iter().map(|c| c.took).max().unwrap();
    eprintln!(
        "{} calls, {} failed in flight at {} kills, slowest {slowest:?}",
        calls.len(),
        failures.len(),
        kills.len()
    );
}

/// The counter holds every increment that succeeded, and at most those whose
/// answer a dying member took with it.
fn check_counter(store: &dyn Store, prefix: &str, done: u64, unknown: u64) {
    let value = store.get(&k(&format!("{prefix}/counter"))).unwrap();
    let n: u64 = value.map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap());
    assert!(
        (done..=done + unknown).contains(&n),
        "the counter is {n}, after {done} increments and {unknown} of unknown outcome"
    );
}

/// Runs the workload, calls `during` after a second, and goes on for two more.
fn run_through(
    url: &str,
    prefix: &str,
    during: impl FnOnce() -> Vec<Death>,
) -> (Vec<Call>, Vec<Death>) {
    let store = store(url);
    let workers = 2;
    let load = Workload::start(&store, workers, prefix);
    std::thread::sleep(Duration::from_secs(1));
    let kills = during();
    std::thread::sleep(Duration::from_secs(2));
    let (calls, done, unknown) = load.finish();
    check(&calls, &kills, workers);
    check_counter(&*store, prefix, done, unknown);
    (calls, kills)
}

fn kill(cluster: &Cluster, member: usize) -> Death {
    let killed = Instant::now();
    cluster.kill(member);
    cluster.leader();
    Death {
        killed,
        settled: Instant::now(),
    }
}

#[test]
fn a_dead_member_listed_first_costs_no_call() {
    let (_turn, cluster) = cluster();
    let dead = etcd::free_port();
    let prefix = etcd::unique_prefix();
    let url = cluster.url(&[0, 1, 2], &prefix).replacen(
        "etcd://",
        &format!("etcd://127.0.0.1:{dead},"),
        1,
    );
    // A store opened afresh for each call, as a new process would, and one shared.
    for _ in 0..20 {
        let s = store(&url);
        s.put(&k("/fresh"), b"v").unwrap();
        assert_eq!(s.get(&k("/fresh")).unwrap().as_deref(), Some(&b"v"[..]));
    }
    let (calls, _) = run_through(&url, &prefix, Vec::new);
    assert!(calls.iter().all(|c| c.failed.is_none()));
}

#[test]
fn the_member_in_use_killed_mid_run() {
    let (_turn, cluster) = cluster();
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let prefix = etcd::unique_prefix();
    // The first member listed is the one calls go to.
    let url = cluster.url(&[follower, leader, other], &prefix);
    run_through(&url, &prefix, || vec![kill(cluster, follower)]);
}

#[test]
fn the_leader_in_use_killed_mid_run() {
    let (_turn, cluster) = cluster();
    let leader = cluster.leader();
    let prefix = etcd::unique_prefix();
    let url = cluster.url(&[leader, (leader + 1) % 3, (leader + 2) % 3], &prefix);
    run_through(&url, &prefix, || vec![kill(cluster, leader)]);
}

#[test]
fn the_leader_killed_mid_run_while_a_follower_is_in_use() {
    let (_turn, cluster) = cluster();
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let prefix = etcd::unique_prefix();
    let url = cluster.url(&[follower, leader, (leader + 2) % 3], &prefix);
    run_through(&url, &prefix, || vec![kill(cluster, leader)]);
}

#[test]
fn a_restarted_member_serves_again() {
    let (_turn, cluster) = cluster();
    let prefix = etcd::unique_prefix();
    let url = cluster.url(&[0, 1, 2], &prefix);
    run_through(&url, &prefix, || {
        // Member 0 goes, and comes back. With member 1 gone too, the cluster has a
        // quorum only if member 0 is a working member again.
        let first = kill(cluster, 0);
        std::thread::sleep(Duration::from_secs(1));
        cluster.restart(0);
        cluster.leader();
        let second = kill(cluster, 1);
        vec![first, second]
    });
    // Only members 0 and 2 are up: every call still succeeds.
    let s = store(&cluster.url(&[1, 0, 2], &prefix));
    for i in 0..50 {
        s.put(&k("/after"), i.to_string().as_bytes()).unwrap();
        assert!(s.atomic_create(&k(&format!("/after-{i}")), b"x").unwrap());
    }
}

#[test]
fn no_member_up_fails_at_once_naming_every_endpoint() {
    let (_turn, cluster) = cluster();
    let dead: Vec<u16> = (0..3).map(|_| etcd::free_port()).collect();
    let url = format!(
        "etcd://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/p",
        dead[0], dead[1], dead[2]
    );
    let started = Instant::now();
    let err = store(&url).get(&k("/x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let message = err.to_string();
    for port in &dead {
        assert!(message.contains(&port.to_string()), "{message}");
    }
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    // And the cluster itself is untouched by the test.
    assert!(cluster.running(0));
}
