//! `libkv-bench`: measures what each store costs raw (the `floor` layer) and
//! through libkv's core `Store` trait (the `core` layer), printing one JSON object
//! per store, layer and operation on stdout. Diagnostics go to stderr.
//!
//! ```text
//! libkv-bench --store mock|file|etcd|consul|zookeeper|sqlite --url URL --iterations N
//!             [--warmup W] [--layers floor,core] [--value-size BYTES] [--gap-us US]
//!             [--batch B] [--samples]
//! libkv-bench --transfer --url etcd://HOST:PORT/PREFIX --source file:///ROOT --keys N
//!             [--repeat R]
//! libkv-bench --watch --url URL --iterations N [--layers floor,libkv] [--samples]
//! libkv-bench --versions
//! ```
//!
//! With `--gap-us`, US microseconds of untimed busy work run before each timed
//! operation (see [`stats::Gap`]), and the layers are named `floor-gap` and
//! `core-gap`. With `--batch`, operations are timed B at a time (for operations
//! shorter than reading the clock); `--samples` prints every sample too.
//!
//! `--transfer` measures libkv's bulk copy and dump against raw etcd-client
//! floors instead (see [`transfer`]); `--watch`, the time from a put to a
//! watcher's event, libkv's watch against the store's own (see [`watch`]).

mod core_layer;
mod floor;
mod stats;
mod transfer;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use stats::{Bench, Gap};

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: libkv-bench --store mock|file|etcd|consul|zookeeper|sqlite --url URL \
--iterations N \
[--warmup W] [--layers floor,core] [--value-size BYTES] [--gap-us US] [--batch B] [--samples]
       libkv-bench --transfer --url etcd://HOST:PORT/PREFIX --source file:///ROOT --keys N \
[--repeat R]
       libkv-bench --watch --url URL --iterations N [--layers floor,libkv] [--samples]
       libkv-bench --versions

URL is mock://, file:///ABS/ROOT, etcd://HOST:PORT/PREFIX, consul://HOST:PORT/PREFIX,
zookeeper://HOST:PORT[,HOST:PORT...]/PREFIX or sqlite:///ABS/FILE.db (whose floor
uses floor.db in the same directory).
Prints one JSON object per layer and operation (get, put, exists, list100,
atomic_get_put; the ZooKeeper floor adds get_nosync, a get without its sync) on
stdout. --gap-us runs US microseconds of untimed busy work (allocations, memory
traffic) before each timed operation, as a catalog compilation does between two
function calls; the layers are then named floor-gap and core-gap. --batch B
times B operations at a time, each sample being the batch's time divided by B
(for operations shorter than reading the clock). --samples adds every sample (µs)
to each line as samples_us.

--transfer copies N keys from the file store at --source (written first unless it
holds exactly them) to etcd with libkv's transfer::copy and with two raw
etcd-client floors (single puts, and transactions of 128 puts, as many at once as
libkv's writers), and dumps them with transfer::dump against a raw paged range
read, R times (3 by default), each on fresh prefixes below PREFIX. It deletes
everything below PREFIX and compacts etcd's history: give it an etcd of its own.
Prints a JSON line per measurement, the medians and their ratios.

--watch measures, for the store at URL, the time from a put to the event of a
watcher of the key: libkv's watch (waited on in 50 ms slices) against the store's
own raw watch (etcd-client's Watch, a raw Consul blocking-query loop, notify on
the file store's directory, a ZooKeeper persistent watch then getData, SQLite's
PRAGMA data_version polled every millisecond then a SELECT; none for mock), N
puts each, taking turns. Consul's puts are a fifth as many, paced past libkv's
rate limit, then a few back to back. --layers floor or libkv runs one of the two
alone. Prints a JSON line per layer: median, p90, p99 and max in µs.

--versions prints, as a JSON line, the version of SQLite compiled in (rusqlite's
bundled one, libkv-core's too).";

/// How many keys the listed directory holds.
pub const LIST_LEN: usize = 100;

/// The names a layer uses, all below one base (which ends with `/`): the key read
/// and written, the counter of `atomic_get_put`, and the listed directory.
pub struct Names {
    pub key: String,
    pub counter: String,
    /// Ends with `/`.
    pub dir: String,
}

impl Names {
    pub fn under(base: &str) -> Names {
        Names {
            key: format!("{base}key"),
            counter: format!("{base}counter"),
            dir: format!("{base}list/"),
        }
    }

    /// The `i`th key of the listed directory.
    pub fn list_key(&self, i: usize) -> String {
        format!("{}k{i:03}", self.dir)
    }
}

/// The counter's first value: 0 in decimal, zero-padded to `size` bytes.
pub fn initial_counter(size: usize) -> Vec<u8> {
    format!("{:0size$}", 0).into_bytes()
}

/// The read-modify-write of `atomic_get_put`: the counter plus one, same width.
pub fn next_counter(current: &[u8]) -> Result<Vec<u8>> {
    let n: u64 = std::str::from_utf8(current)?.parse()?;
    Ok(format!("{:0width$}", n + 1, width = current.len()).into_bytes())
}

/// Fails with `what` unless `ok`.
pub fn check(ok: bool, what: &str) -> Result {
    if ok {
        Ok(())
    } else {
        Err(what.into())
    }
}

/// Where the floor finds the store, parsed from the URL.
pub enum Target {
    Mock,
    File {
        root: PathBuf,
    },
    /// Endpoints as `http://HOST:PORT`; prefix `""` or `/PREFIX`, as libkv does.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// Base `http://HOST:PORT`; prefix `""` or `PREFIX/` (Consul keys have no
    /// leading slash).
    Consul {
        base: String,
        prefix: String,
    },
    /// Endpoints as `HOST:PORT` (2181 by default); prefix `""` or `/PREFIX`, a
    /// znode path.
    Zookeeper {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// The store's database file (`sqlite:///ABSOLUTE/FILE.db`).
    Sqlite {
        path: PathBuf,
    },
}

impl Target {
    fn parse(store: &str, url: &str) -> Result<Target> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url}: not a URL"))?;
        if scheme != store {
            return Err(format!("--store {store} does not match the URL {url}").into());
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let with_port = |default: u16| {
            if authority.contains(':') {
                authority.to_owned()
            } else {
                format!("{authority}:{default}")
            }
        };
        Ok(match store {
            "mock" => Target::Mock,
            "file" if authority.is_empty() && path.len() > 1 => Target::File { root: path.into() },
            "file" => return Err(format!("{url}: use file:///ABSOLUTE/ROOT").into()),
            "etcd" => Target::Etcd {
                endpoints: with_port(2379)
                    .split(',')
                    .map(|e| format!("http://{e}"))
                    .collect(),
                prefix: path.trim_end_matches('/').to_owned(),
            },
            "zookeeper" => Target::Zookeeper {
                endpoints: authority
                    .split(',')
                    .map(|e| match e.rsplit_once(':') {
                        // `HOST:PORT`, or `[IPV6]:PORT`; not the colons of a bare `[IPV6]`.
                        Some((_, port)) if !port.ends_with(']') => e.to_owned(),
                        _ => format!("{e}:2181"),
                    })
                    .collect(),
                prefix: path.trim_end_matches('/').to_owned(),
            },
            "sqlite" if authority.is_empty() && path.len() > 1 && !path.ends_with('/') => {
                Target::Sqlite { path: path.into() }
            }
            "sqlite" => return Err(format!("{url}: use sqlite:///ABSOLUTE/FILE.db").into()),
            "consul" => Target::Consul {
                base: format!("http://{}", with_port(8500)),
                prefix: match path.trim_matches('/') {
                    "" => String::new(),
                    p => format!("{p}/"),
                },
            },
            other => return Err(format!("unknown store {other:?}").into()),
        })
    }
}

struct Args {
    store: String,
    url: String,
    iterations: usize,
    warmup: Option<usize>,
    layers: Vec<String>,
    value_size: usize,
    gap_us: usize,
    batch: usize,
    samples: bool,
}

/// What a run measures.
enum Command {
    Layers(Args),
    Transfer(transfer::Config),
    Watch(watch::Config),
    /// The versions of what is compiled in that a report names.
    Versions,
}

impl Args {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Command> {
        let (mut store, mut url, mut iterations, mut warmup) = (None, None, None, None);
        let mut layers = None;
        let mut value_size = 64;
        let mut gap_us = 0;
        let mut batch = 1;
        let mut samples = false;
        let (mut transfer, mut source, mut keys, mut repeat) = (false, None, None, 3);
        let mut watch = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (arg, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let number = |v: String| {
                v.parse::<usize>()
                    .map_err(|_| format!("{name}: not a number: {v}"))
            };
            match name.as_str() {
                "--store" => store = Some(value()?),
                "--url" => url = Some(value()?),
                "--iterations" => iterations = Some(number(value()?)?),
                "--warmup" => warmup = Some(number(value()?)?),
                "--value-size" => value_size = number(value()?)?,
                "--gap-us" => gap_us = number(value()?)?,
                "--batch" => batch = number(value()?)?,
                "--samples" => samples = true,
                "--transfer" => transfer = true,
                "--watch" => watch = true,
                "--versions" => return Ok(Command::Versions),
                "--source" => source = Some(value()?),
                "--keys" => keys = Some(number(value()?)?),
                "--repeat" => repeat = number(value()?)?,
                "--layers" => layers = Some(value()?.split(',').map(str::to_owned).collect()),
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
            }
        }
        check(
            !(transfer && watch),
            "--transfer and --watch are runs of their own",
        )?;
        if transfer {
            return Args::transfer(store, url, source, keys, repeat);
        }
        if watch {
            return Args::watch(store, url, iterations, layers, samples);
        }
        let layers: Vec<String> = layers.unwrap_or_else(|| vec!["floor".into(), "core".into()]);
        if let Some(bad) = layers
            .iter()
            .find(|l| !["floor", "core"].contains(&l.as_str()))
        {
            return Err(format!("unknown layer {bad:?}: use floor, core or floor,core").into());
        }
        let (Some(store), Some(url), Some(iterations)) = (store, url, iterations) else {
            return Err(format!("--store, --url and --iterations are required\n{USAGE}").into());
        };
        check(iterations > 0, "--iterations must be at least 1")?;
        check(value_size > 0, "--value-size must be at least 1")?;
        check(batch > 0, "--batch must be at least 1")?;
        check(iterations >= batch, "--iterations must be at least --batch")?;
        Ok(Command::Layers(Args {
            store,
            url,
            iterations,
            warmup,
            layers,
            value_size,
            gap_us,
            batch,
            samples,
        }))
    }

    fn transfer(
        store: Option<String>,
        url: Option<String>,
        source: Option<String>,
        keys: Option<usize>,
        repeat: usize,
    ) -> Result<Command> {
        let (Some(url), Some(source), Some(keys)) = (url, source, keys) else {
            return Err(format!("--transfer needs --url, --source and --keys\n{USAGE}").into());
        };
        let store = store.unwrap_or_else(|| "etcd".to_owned());
        check(store == "etcd", "--transfer measures etcd only")?;
        let Target::Etcd { endpoints, prefix } = Target::parse(&store, &url)? else {
            unreachable!("an etcd URL is an etcd target")
        };
        check(
            !prefix.is_empty(),
            "--transfer needs a URL with a prefix, etcd://HOST:PORT/PREFIX: it deletes \
             everything below it",
        )?;
        check(keys > 0, "--keys must be at least 1")?;
        check(repeat > 0, "--repeat must be at least 1")?;
        Ok(Command::Transfer(transfer::Config {
            url,
            endpoints,
            prefix,
            source,
            keys,
            repeat,
        }))
    }

    fn watch(
        store: Option<String>,
        url: Option<String>,
        iterations: Option<usize>,
        layers: Option<Vec<String>>,
        samples: bool,
    ) -> Result<Command> {
        let layers = layers.unwrap_or_else(|| vec!["floor".into(), "libkv".into()]);
        if let Some(bad) = layers
            .iter()
            .find(|l| !["floor", "libkv"].contains(&l.as_str()))
        {
            return Err(format!("--watch: unknown layer {bad:?}: use floor, libkv or both").into());
        }
        let (Some(url), Some(puts)) = (url, iterations) else {
            return Err(format!("--watch needs --url and --iterations\n{USAGE}").into());
        };
        // The store is the URL's scheme unless given.
        let scheme = url.split_once("://").map_or("", |(s, _)| s).to_owned();
        let store = store.unwrap_or(scheme);
        let target = Target::parse(&store, &url)?;
        check(puts > 0, "--iterations must be at least 1")?;
        Ok(Command::Watch(watch::Config {
            store,
            url,
            target,
            puts,
            floor: layers.iter().any(|l| l == "floor"),
            libkv: layers.iter().any(|l| l == "libkv"),
            samples,
        }))
    }
}

fn run() -> Result {
    let args = match Args::parse(std::env::args().skip(1))? {
        Command::Layers(args) => args,
        Command::Transfer(config) => return transfer::run(&config),
        Command::Watch(config) => return watch::run(&config),
        Command::Versions => {
            let versions = serde_json::json!({ "sqlite": rusqlite::version() });
            println!("{versions}");
            return Ok(());
        }
    };
    let target = Target::parse(&args.store, &args.url)?;
    let value = vec![b'v'; args.value_size];
    for layer in &args.layers {
        let gap = Gap::of(Duration::from_micros(args.gap_us as u64));
        let bench = Bench {
            store: args.store.clone(),
            layer: if gap.length().is_zero() {
                layer.clone()
            } else {
                format!("{layer}-gap")
            },
            iterations: args.iterations,
            warmup: args.warmup.unwrap_or((args.iterations / 10).max(10)),
            batch: args.batch,
            samples: args.samples,
            gap,
        };
        eprintln!(
            "libkv-bench: {} {}: {} warmup + {} iterations, {} µs gaps",
            args.store, bench.layer, bench.warmup, bench.iterations, args.gap_us
        );
        match layer.as_str() {
            "floor" => floor::run(&bench, &target, &value)?,
            _ => core_layer::run(&bench, &args.url, &value)?,
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("libkv-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
