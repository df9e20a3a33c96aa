//! `libkv-stress`: stress and fault runs of libkv's core, bounded in cases and
//! time, each printing what it tried and found and, as its last line,
//! `SUMMARY <run> cases=<N> failures=<F>`. It exits 1 when a run found failures.
//!
//! ```text
//! libkv-stress hostile-keys [--cases N] [--seed S] [--dir PARENT]
//! ```

mod disk;
mod hostile_keys;
mod keygen;
mod oracle;
mod rng;
mod sandbox;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: libkv-stress hostile-keys [--cases N] [--seed S] [--dir PARENT]

hostile-keys  generated keys against the key rule, and every store operation on a
              file store whose root holds links and special files pointing outside
              it (default 100000 cases; the seed defaults to the clock and is
              printed, so a run can be replayed; the run works in a new directory
              under PARENT, by default the system's temp directory)";

fn parse(args: &[String]) -> Result<hostile_keys::Options, String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    if command != "hostile-keys" {
        return Err(format!("unknown run {command:?}\n{USAGE}"));
    }
    let mut cases = 100_000;
    let mut seed = None;
    let mut parent = std::env::temp_dir();
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--cases" => cases = number()?,
            "--seed" => seed = Some(number()?),
            "--dir" => parent = PathBuf::from(value),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
    });
    let work = parent.join(format!("libkv-stress-{}-{seed}", std::process::id()));
    Ok(hostile_keys::Options { cases, seed, work })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("libkv-stress: {e}");
            return ExitCode::from(2);
        }
    };
    let (cases, failures) = match hostile_keys::run(&options) {
        Ok(counts) => counts,
        Err(e) => {
            // The run could not start or clean up after itself: one failure.
            println!("FAIL the run's directory: {e}");
            (0, 1)
        }
    };
    println!("SUMMARY hostile-keys cases={cases} failures={failures}");
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
