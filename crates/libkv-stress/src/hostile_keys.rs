//! `libkv-stress hostile-keys`: hostile keys against key validation, and every
//! store operation against a file store whose root holds planted hazards.
//!
//! Each case checks one generated key, directory or component against the rule
//! written again in [`oracle`], then runs one store operation on a key aimed at
//! the hazards, a plain key or a generated one. Before the call the run looks at
//! the root itself ([`disk`]) to know what the store must return or may refuse;
//! after it, what a write left. Hazards are re-planted, the root path replaced by a
//! link and back, and the store reopened, at random cases. Every call runs under
//! `catch_unwind`; after every batch the tree outside the root is compared with
//! its first snapshot.

use std::collections::HashMap;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use libkv_core::key::is_valid_component;
use libkv_core::{open, Error, ErrorKind, Key, Op, OpenOptions, Store};

use crate::disk::{self, At, Listing};
use crate::keygen;
use crate::oracle;
use crate::rng::Rng;
use crate::sandbox::{Hazard, RootEvent, Sandbox, SECRET_MARK};

pub struct Options {
    pub cases: u64,
    pub seed: u64,
    /// The run's directory; it must not exist, and is removed after a clean run.
    pub work: PathBuf,
}

/// Cases between two comparisons of the tree outside the root.
const BATCH: u64 = 1000;
/// Failures of each kind shown in full; later ones are only counted.
const SHOWN_FAILURES: u64 = 8;

/// Store operations and their weights (per mille). Writes fsync twice on success,
/// so they are kept to about one operation in fifteen.
const STORE_OPS: &[(Op, u32)] = &[
    (Op::Get, 230),
    (Op::Exists, 150),
    (Op::AtomicGet, 180),
    (Op::List, 200),
    (Op::AtomicList, 130),
    (Op::Put, 35),
    (Op::AtomicCreate, 15),
    (Op::AtomicPut, 25),
    (Op::Delete, 15),
    (Op::AtomicDelete, 12),
    (Op::Deletetree, 8),
];

/// Keys that reach the planted hazards, or the names of sentinel files (which a
/// store following a link at its root would reach).
const AIMED_KEYS: &[&str] = &[
    "/ldir",
    "/ldir/secret",
    "/ldir/new",
    "/ldir/sub/secret",
    "/ldir/sublink/secret",
    "/lfile",
    "/lfile/x",
    "/mid/link",
    "/mid/link/secret",
    "/mid/link/deeper/secret",
    "/mid/link/new/x",
    "/mid/beside",
    "/deep/a/b/link",
    "/deep/a/b/link/secret",
    "/deep/a/b/c",
    "/dangling",
    "/dangling/x",
    "/dangdir/x",
    "/hard",
    "/hard/x",
    "/fifo",
    "/fifo/x",
    "/pipes/fifo",
    "/sock",
    "/dev",
    "/squat/k",
    "/junk/ok",
    "/junk/new",
    "/secret",
    "/sub/secret",
    "/hardfile",
    "/lockfile",
    "/made-through-link",
    "/k",
    "/c/a",
];

const PLAIN_KEYS: &[&str] = &[
    "/c/a", "/c/b/c", "/c/b/d", "/k", "/n/1", "/n/2/3", "/n/2/4", "/...", "/.x", "/x.", "/a:b/c-d",
];

const DIRS: &[&str] = &[
    "/",
    "/",
    "/ldir",
    "/ldir/sub",
    "/mid",
    "/mid/link",
    "/deep",
    "/deep/a/b/link",
    "/dangdir",
    "/pipes",
    "/fifo",
    "/hard",
    "/squat",
    "/junk",
    "/c",
    "/c/b/",
    "/n",
    "/n/2",
];

#[derive(Default)]
struct OpCount {
    calls: u64,
    ok: u64,
    refused: u64,
}

#[derive(Default)]
struct Stats {
    /// Inputs checked: (kind, valid by the oracle) => count.
    validated: HashMap<(&'static str, bool), u64>,
    ops: HashMap<&'static str, OpCount>,
    planted: HashMap<Hazard, u64>,
    not_plantable: HashMap<Hazard, u64>,
    root_events: HashMap<&'static str, u64>,
    reopened: u64,
    outside_checks: u64,
    values_checked: u64,
    writes_verified: u64,
    /// Failures by what went wrong.
    failed: HashMap<&'static str, u64>,
}

struct Run {
    rng: Rng,
    sandbox: Sandbox,
    url: String,
    store: Arc<dyn Store>,
    stats: Stats,
    failures: u64,
    /// The last sequence seen per key, for `previous`.
    sequences: HashMap<String, u64>,
    /// Write calls so far, about the number of the next temp file this process
    /// makes: squatted temp names are planted from there on.
    temp_files: u64,
}

/// What the root held before a call, looked at by the run itself.
struct Before {
    at: At,
    lock_hostile: bool,
    /// For listings, what they should give, or why they must be refused.
    listing: Option<Result<Listing, String>>,
}

/// What a store call returned, beside its error.
enum Done {
    Read(Option<Vec<u8>>),
    Exists(bool),
    /// A write that took place (true) or was declined (false).
    Wrote(bool),
    Removed(bool),
    Listed(Listing),
    TreeRemoved,
}

/// Runs the cases and prints what was tried and found; returns the cases run and
/// the failures found.
pub fn run(options: &Options) -> std::io::Result<(u64, u64)> {
    let started = Instant::now();
    println!(
        "hostile-keys: seed {seed}, {cases} cases (replay: libkv-stress hostile-keys --cases {cases} --seed {seed})",
        seed = options.seed,
        cases = options.cases
    );
    println!("work directory {}", options.work.display());
    let sandbox = Sandbox::create(options.work.clone(), options.seed)?;
    let url = format!("file://{}", sandbox.root.display());
    let store = open_store(&url);
    let mut run = Run {
        rng: Rng::new(options.seed),
        sandbox,
        url,
        store,
        stats: Stats::default(),
        failures: 0,
        sequences: HashMap::new(),
        temp_files: 0,
    };
    let mut done = 0;
    if let Err(e) = run.cases(options.cases, &mut done) {
        // The run's own files were changed under it, by the store: a failure too.
        run.fail(
            done,
            "run stopped",
            format_args!("the run could not go on: {e}"),
        );
        if run.sandbox.root_is_link {
            let _ = run.sandbox.root_event(RootEvent::Back);
        }
        let _ = run.check_outside(done);
    }
    run.report(done, started);
    let failures = run.failures;
    if failures == 0 {
        run.sandbox.remove()?;
    } else {
        println!("kept the work directory for inspection");
    }
    Ok((done, failures))
}

fn open_store(url: &str) -> Arc<dyn Store> {
    open(url, &OpenOptions::default()).expect("a file URL opens without I/O")
}

/// At most `max` characters of `s`, for showing a generated input.
fn clip(s: &str, max: usize) -> String {
    let shown: String = s.chars().take(max).collect();
    if shown.len() < s.len() {
        format!("{shown}... ({} bytes)", s.len())
    } else {
        shown
    }
}

impl Run {
    /// Plants the hazards, runs the cases (counting them in `done`), and compares
    /// the tree outside the root at the end.
    fn cases(&mut self, cases: u64, done: &mut u64) -> std::io::Result<()> {
        for &hazard in Hazard::ALL {
            if hazard != Hazard::LockLink {
                self.plant(hazard)?;
            }
        }
        for case in 0..cases {
            self.events()?;
            self.validate(case);
            self.store_op(case)?;
            *done = case + 1;
            if (*done).is_multiple_of(BATCH) {
                self.check_outside(case)?;
            }
        }
        if self.sandbox.root_is_link {
            self.sandbox.root_event(RootEvent::Back)?;
        }
        self.check_outside(cases)
    }

    fn fail(&mut self, case: u64, kind: &'static str, what: impl Display) {
        self.failures += 1;
        let of_kind = self.stats.failed.entry(kind).or_default();
        *of_kind += 1;
        if *of_kind <= SHOWN_FAILURES {
            println!(
                "FAIL case {case} ({kind}): {}",
                clip(&what.to_string(), 400)
            );
        }
    }

    /// Runs `f`, counting a panic as a failure.
    fn guarded<T>(&mut self, case: u64, what: &str, f: impl FnOnce() -> T) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(_) => {
                self.fail(case, "panic", format_args!("{what} panicked"));
                None
            }
        }
    }

    fn plant(&mut self, hazard: Hazard) -> std::io::Result<()> {
        let pid = std::process::id();
        let first_temp = if hazard == Hazard::LockLink {
            self.rng.next_u64()
        } else {
            self.temp_files
        };
        if self.sandbox.plant(hazard, pid, first_temp)? {
            *self.stats.planted.entry(hazard).or_default() += 1;
        } else {
            *self.stats.not_plantable.entry(hazard).or_default() += 1;
        }
        Ok(())
    }

    /// Re-plants hazards, tampers with the root path and reopens the store, each
    /// now and then.
    fn events(&mut self) -> std::io::Result<()> {
        if self.rng.chance(6) && !self.sandbox.root_is_link {
            for &hazard in Hazard::ALL {
                let odds = if hazard == Hazard::LockLink { 150 } else { 600 };
                if self.rng.chance(odds) {
                    self.plant(hazard)?;
                }
            }
        }
        // A link at the lock file blocks every write: take it away soon.
        if self.rng.chance(30)
            && !self.sandbox.root_is_link
            && disk::lock_is_hostile(&self.sandbox.root)?
        {
            crate::sandbox::remove_any(&self.sandbox.root.join(".libkv@lock"))?;
        }
        let event = if self.sandbox.root_is_link {
            self.rng.chance(40).then_some(RootEvent::Back)
        } else {
            self.rng
                .chance(3)
                .then(|| self.rng.pick(&RootEvent::ALL[..4]))
        };
        if let Some(event) = event {
            if self.sandbox.root_event(event)? {
                *self.stats.root_events.entry(event.name()).or_default() += 1;
            }
        }
        if self.rng.chance(5) {
            self.store = open_store(&self.url);
            self.stats.reopened += 1;
        }
        Ok(())
    }

    /// One generated input against the oracle.
    fn validate(&mut self, case: u64) {
        if self.rng.below(4) == 0 {
            let bytes = keygen::component_bytes(&mut self.rng);
            let want = oracle::component(&bytes);
            *self.stats.validated.entry(("component", want)).or_default() += 1;
            let Some(got) = self.guarded(case, "is_valid_component", || is_valid_component(&bytes))
            else {
                return;
            };
            if got != want {
                self.fail(
                    case,
                    "key rule",
                    format_args!("is_valid_component({bytes:?}) is {got}, the rule says {want}"),
                );
            }
            return;
        }
        let input = keygen::key(&mut self.rng);
        let as_dir = self.rng.below(3) == 0;
        let (kind, want) = if as_dir {
            ("dir", oracle::dir(input.as_bytes()).map(|d| d.to_vec()))
        } else {
            (
                "key",
                oracle::key(input.as_bytes()).then(|| input.clone().into_bytes()),
            )
        };
        *self
            .stats
            .validated
            .entry((kind, want.is_some()))
            .or_default() += 1;
        let Some(got) = self.guarded(case, &format!("Key::{kind}"), || {
            if as_dir {
                Key::dir(&input)
            } else {
                Key::new(&input)
            }
        }) else {
            return;
        };
        let shown = clip(&format!("{input:?}"), 80);
        match (got, want) {
            (Ok(key), Some(want)) if key.as_str().as_bytes() == want => {}
            (Ok(key), Some(_)) => self.fail(
                case,
                "key rule",
                format_args!("{kind} {shown} became {:?}", key.as_str()),
            ),
            (Ok(_), None) => self.fail(
                case,
                "key rule",
                format_args!("{kind} {shown} was accepted; the rule refuses it"),
            ),
            (Err(e), Some(_)) => self.fail(
                case,
                "key rule",
                format_args!("{kind} {shown} was refused ({e}); the rule accepts it"),
            ),
            (Err(e), None) => {
                let named = e.to_string().contains(&format!("{input:?}"));
                if e.kind() != ErrorKind::InvalidArgument || e.key() != Some(&input) || !named {
                    self.fail(
                        case, "key rule",
                        format_args!("{kind} {shown}: the error does not name the key as an invalid argument: {e}"),
                    );
                }
            }
        }
    }

    fn pick_key(&mut self, dir: bool) -> Key {
        if dir {
            return Key::dir(self.rng.pick(DIRS)).expect("DIRS are valid");
        }
        let choice = self.rng.below(10);
        if choice < 2 {
            if let Ok(key) = Key::new(&keygen::key(&mut self.rng)) {
                return key;
            }
        }
        let pool = if choice < 6 { AIMED_KEYS } else { PLAIN_KEYS };
        Key::new(self.rng.pick(pool)).expect("the pools hold valid keys")
    }

    fn value(&mut self, case: u64) -> Vec<u8> {
        let mut value = format!("v{case}:").into_bytes();
        let len = self.rng.below(32);
        value.extend((0..len).map(|_| b'a' + self.rng.below(26) as u8));
        value
    }

    fn previous(&mut self, key: &Key) -> u64 {
        match self.rng.below(4) {
            0 => 0,
            1 => self.rng.next_u64() >> 1,
            _ => self.sequences.get(key.as_str()).copied().unwrap_or(0),
        }
    }

    fn store_op(&mut self, case: u64) -> std::io::Result<()> {
        let weights: Vec<u32> = STORE_OPS.iter().map(|&(_, w)| w).collect();
        let op = STORE_OPS[self.rng.weighted(&weights)].0;
        let is_dir = matches!(op, Op::List | Op::AtomicList | Op::Deletetree);
        let key = self.pick_key(is_dir);
        let value = self.value(case);
        let previous = self.previous(&key);
        let root = self.sandbox.root.clone();
        let before = Before {
            at: disk::at(&root, key.as_str())?,
            lock_hostile: disk::lock_is_hostile(&root)?,
            listing: match op {
                Op::List | Op::AtomicList => Some(disk::listing(&root, key.as_str())?),
                _ => None,
            },
        };
        if matches!(op, Op::Put | Op::AtomicCreate | Op::AtomicPut) {
            self.temp_files += 1;
        }

        let store = Arc::clone(&self.store);
        let mut sequences = Vec::new();
        self.stats.ops.entry(op.name()).or_default().calls += 1;
        let Some(result) = self.guarded(case, &format!("{} {key}", op.name()), || {
            call(&*store, op, &key, &value, previous, &mut sequences)
        }) else {
            return Ok(());
        };
        self.sequences.extend(sequences);
        let count = self.stats.ops.entry(op.name()).or_default();
        match result {
            Ok(done) => {
                count.ok += 1;
                self.judge_done(case, op, &key, &value, done, before)
            }
            Err(e) => {
                count.refused += 1;
                self.judge_error(case, op, &key, &e, &before);
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn judge_error(&mut self, case: u64, op: Op, key: &Key, e: &Error, before: &Before) {
        let (lock_hostile, listing) = (before.lock_hostile, &before.listing);
        let before = &before.at;
        let msg = e.to_string();
        let what = format!("{} {key}", op.name());
        if e.key() != Some(key.as_str()) || !msg.contains(key.as_str()) || !msg.contains(&self.url)
        {
            self.fail(
                case,
                "error text",
                format_args!("{what}: the error does not name the key and the store: {msg}"),
            );
        }
        if self.sandbox.root_is_link {
            if e.kind() != ErrorKind::Store || !msg.contains("symbolic link") {
                self.fail(
                    case,
                    "root link",
                    format_args!("{what} while the root is a symbolic link: {msg}"),
                );
            }
            return;
        }
        let hostile = matches!(before, At::Hostile(_));
        let conflict = e.kind() == ErrorKind::Conflict
            && matches!(before, At::UnderFile | At::Dir { empty: false });
        let justified = match op {
            Op::Get | Op::AtomicGet => hostile || matches!(before, At::File(_, n) if *n > 1),
            Op::Exists => hostile,
            Op::List | Op::AtomicList => matches!(listing, Some(Err(_))),
            Op::Put | Op::AtomicCreate | Op::AtomicPut => lock_hostile || hostile || conflict,
            _ => lock_hostile || hostile,
        };
        if !justified {
            self.fail(
                case,
                "refused",
                format_args!(
                    "{what} refused without cause (the root holds {before:?} there): {msg}"
                ),
            );
        }
    }

    fn judge_done(
        &mut self,
        case: u64,
        op: Op,
        key: &Key,
        value: &[u8],
        done: Done,
        before: Before,
    ) -> std::io::Result<()> {
        let Before {
            at: before,
            listing,
            ..
        } = before;
        let before = &before;
        let what = format!("{} {key}", op.name());
        if self.sandbox.root_is_link {
            self.fail(
                case,
                "root link",
                format_args!("{what} succeeded while the root is a symbolic link to outside"),
            );
            return Ok(());
        }
        let root = self.sandbox.root.clone();
        let file = match before {
            At::File(content, 1) => Some(content.clone()),
            _ => None,
        };
        match done {
            Done::Read(got) => {
                self.check_values(case, &what, got.iter());
                if matches!(before, At::Hostile(_) | At::File(_, 2..)) {
                    self.fail(
                        case,
                        "not refused",
                        format_args!("{what} read {before:?}; it must refuse it"),
                    );
                } else if got != file {
                    self.fail(
                        case,
                        "wrong result",
                        format_args!("{what} returned {got:?}, the root holds {before:?}"),
                    );
                }
            }
            Done::Exists(got) => {
                if matches!(before, At::Hostile(_)) {
                    self.fail(
                        case,
                        "not refused",
                        format_args!("{what} answered on {before:?}; it must refuse it"),
                    );
                } else if got != matches!(before, At::File(..)) {
                    self.fail(
                        case,
                        "wrong result",
                        format_args!("{what} said {got}, the root holds {before:?}"),
                    );
                }
            }
            Done::Listed(got) => {
                self.check_values(case, &what, got.iter().map(|(_, v)| v));
                match listing.expect("computed for listings") {
                    Err(why) => self.fail(
                        case,
                        "not refused",
                        format_args!("{what} listed a tree where {why}"),
                    ),
                    Ok(want) if want != got => self.fail(
                        case,
                        "wrong result",
                        format_args!(
                            "{what} listed {} keys {:?}, the root holds {:?}",
                            got.len(),
                            names(&got),
                            names(&want)
                        ),
                    ),
                    Ok(_) => {}
                }
            }
            Done::Wrote(true) => {
                self.stats.writes_verified += 1;
                let after = disk::at(&root, key.as_str())?;
                if after != At::File(value.to_vec(), 1) {
                    self.fail(
                        case,
                        "wrong result",
                        format_args!("{what} returned, but the root holds {after:?} there"),
                    );
                }
            }
            Done::Wrote(false) => {
                if op == Op::AtomicCreate && !matches!(before, At::File(..)) {
                    self.fail(
                        case,
                        "wrong result",
                        format_args!("{what} declined, but the root holds {before:?} there"),
                    );
                }
            }
            Done::Removed(true) => {
                let after = disk::at(&root, key.as_str())?;
                if matches!(after, At::File(..) | At::Hostile(_)) {
                    self.fail(
                        case,
                        "wrong result",
                        format_args!("{what} returned, but the root holds {after:?} there"),
                    );
                }
            }
            Done::Removed(false) => {}
            Done::TreeRemoved => {
                let after = disk::at(&root, key.as_str())?;
                // A root that is not there (removed, and only read since) is left so.
                let gone = if key.is_root() {
                    match std::fs::read_dir(&root) {
                        Ok(entries) => entries
                            .filter_map(|e| e.ok())
                            .all(|e| e.file_name() == ".libkv@lock"),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                        Err(e) => return Err(e),
                    }
                } else {
                    !matches!(after, At::Dir { .. } | At::Hostile(_))
                };
                if !gone {
                    self.fail(
                        case,
                        "wrong result",
                        format_args!("{what} returned, but the root holds {after:?} there"),
                    );
                }
            }
        }
        Ok(())
    }

    fn check_values<'v>(
        &mut self,
        case: u64,
        what: &str,
        values: impl Iterator<Item = &'v Vec<u8>>,
    ) {
        for v in values {
            self.stats.values_checked += 1;
            if v.windows(SECRET_MARK.len()).any(|w| w == SECRET_MARK) {
                self.fail(
                    case,
                    "read outside",
                    format_args!(
                        "{what} returned the content of a file outside the root: {:?}",
                        String::from_utf8_lossy(v)
                    ),
                );
            }
        }
    }

    fn check_outside(&mut self, case: u64) -> std::io::Result<()> {
        self.stats.outside_checks += 1;
        for change in self.sandbox.outside_changes()? {
            self.fail(
                case,
                "outside changed",
                format_args!("outside the root: {change}"),
            );
        }
        Ok(())
    }

    fn report(&self, done: u64, started: Instant) {
        let s = &self.stats;
        println!("cases run: {done}");
        let v = |kind, valid| s.validated.get(&(kind, valid)).copied().unwrap_or(0);
        println!("key validation against the rule:");
        for kind in ["key", "dir", "component"] {
            println!(
                "  {kind:<10} {:>7} valid {:>7} invalid",
                v(kind, true),
                v(kind, false)
            );
        }
        println!("store operations:            calls      ok refused");
        for &(op, _) in STORE_OPS {
            let c = s.ops.get(op.name());
            let n = |f: fn(&OpCount) -> u64| c.map_or(0, f);
            println!(
                "  {:<24} {:>7} {:>7} {:>7}",
                op.name(),
                n(|c| c.calls),
                n(|c| c.ok),
                n(|c| c.refused)
            );
        }
        println!("hazards planted in the root:");
        for &hazard in Hazard::ALL {
            let planted = s.planted.get(&hazard).copied().unwrap_or(0);
            let skipped = match s.not_plantable.get(&hazard) {
                Some(n) => format!(" (could not be planted {n} times)"),
                None => String::new(),
            };
            println!("  {:<24} {planted:>7}{skipped}", hazard.name());
        }
        println!("root path tampered with:");
        for &event in RootEvent::ALL {
            let n = s.root_events.get(event.name()).copied().unwrap_or(0);
            println!("  {:<32} {n:>5}", event.name());
        }
        println!("store reopened {} times", s.reopened);
        println!(
            "checked: {} values returned, {} writes found in place, the tree outside the root {} times",
            s.values_checked, s.writes_verified, s.outside_checks
        );
        let mut kinds: Vec<_> = s.failed.iter().collect();
        kinds.sort();
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!(", {k}: {n}")).collect();
        println!("failures: {}{}", self.failures, kinds.concat());
        println!("time: {:.1} s", started.elapsed().as_secs_f64());
    }
}

fn names(listing: &[(String, Vec<u8>)]) -> Vec<&str> {
    listing.iter().map(|(k, _)| k.as_str()).collect()
}

fn call(
    store: &dyn Store,
    op: Op,
    key: &Key,
    value: &[u8],
    previous: u64,
    sequences: &mut Vec<(String, u64)>,
) -> Result<Done, Error> {
    Ok(match op {
        Op::Get => Done::Read(store.get(key)?),
        Op::Put => {
            store.put(key, value)?;
            Done::Wrote(true)
        }
        Op::Delete => {
            store.delete(key)?;
            Done::Removed(true)
        }
        Op::Exists => Done::Exists(store.exists(key)?),
        Op::List => Done::Listed(store.list(key)?),
        Op::Deletetree => {
            store.deletetree(key)?;
            Done::TreeRemoved
        }
        Op::AtomicCreate => Done::Wrote(store.atomic_create(key, value)?),
        Op::AtomicGet => {
            let got = store.atomic_get(key)?;
            if let Some(v) = &got {
                sequences.push((key.as_str().to_owned(), v.sequence));
            }
            Done::Read(got.map(|v| v.value))
        }
        Op::AtomicPut => Done::Wrote(store.atomic_put(key, value, previous)?),
        Op::AtomicDelete => Done::Removed(store.atomic_delete(key, previous)?),
        Op::AtomicList => {
            let listed = store.atomic_list(key)?;
            let dir = key.dir_prefix();
            sequences.extend(
                listed
                    .iter()
                    .map(|(k, v)| (format!("{dir}{k}"), v.sequence)),
            );
            Done::Listed(listed.into_iter().map(|(k, v)| (k, v.value)).collect())
        }
        other => unreachable!("{} is not a store operation here", other.name()),
    })
}
