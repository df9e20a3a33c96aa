//! What each command does.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::time::Instant;

use libkv_core::transfer::{self, Comparison, Options};
use libkv_core::{codec, Error, Key, Value};
use serde_json::json;

use crate::cli::{Command, Global, Transfer, ValueType};
use crate::progress::Bar;
use crate::stores::{open_store, Opened, Side};

/// How a command ended, when it did not fail outright.
pub enum Outcome {
    Done,
    /// It ran, and found what it reports on stderr: a key that is absent, a copy
    /// that differs.
    Failed,
}

pub fn run(command: Command, global: &Global) -> Result<Outcome, Error> {
    match command {
        Command::Get { url, key, raw } => get(&url, &key, raw, global),
        Command::Put {
            url,
            key,
            value,
            kind,
        } => put(&url, &key, value, kind, global),
        Command::Ls { url, dir } => ls(&url, &dir, global),
        Command::Rm { url, keys } => {
            let keys = keys
                .iter()
                .map(|k| Key::new(k))
                .collect::<Result<Vec<_>, _>>()?;
            let store = open_store(&url, Side::From, global)?.store;
            keys.iter().try_for_each(|k| store.delete(k))?;
            Ok(Outcome::Done)
        }
        Command::Rmtree { url, dir, all } => {
            let dir = Key::dir(&dir)?;
            if dir.is_root() && !all {
                return Err(Error::InvalidArgument(
                    "rmtree / deletes every key of the store: add --all to mean it".into(),
                ));
            }
            open_store(&url, Side::From, global)?
                .store
                .deletetree(&dir)?;
            Ok(Outcome::Done)
        }
        Command::Info { url } => {
            let info = open_store(&url, Side::From, global)?.store.info()?;
            print_json(&data(&info)?);
            Ok(Outcome::Done)
        }
        Command::Cp {
            src,
            dst,
            dir,
            verify,
            transfer,
        } => cp(&src, &dst, &dir, verify, transfer, global),
        Command::Diff { src, dst, dir } => diff(&src, &dst, &dir, global),
        Command::Dump { url, dir, output } => {
            let dir = Key::dir(&dir)?;
            let store = open_store(&url, Side::From, global)?.store;
            let mut out: Box<dyn Write> = match output {
                Some(path) => Box::new(BufWriter::new(File::create(&path).map_err(|e| {
                    Error::InvalidArgument(format!("cannot write {}: {e}", path.display()))
                })?)),
                None => Box::new(BufWriter::new(io::stdout().lock())),
            };
            let bar = Bar::new("dumped", global.quiet || global.json);
            let started = Instant::now();
            let count = transfer::dump(&*store, &dir, &mut out, Options::default(), &bar);
            bar.finish();
            let count = count?;
            summary(
                global,
                &format!("dumped {count} keys of {}", store.url()),
                count,
                started,
            );
            Ok(Outcome::Done)
        }
        Command::Load {
            url,
            file,
            transfer,
        } => {
            let store = open_store(&url, Side::From, global)?.store;
            let mut input: Box<dyn io::BufRead> = match file {
                Some(path) => Box::new(BufReader::new(File::open(&path).map_err(|e| {
                    Error::InvalidArgument(format!("cannot read {}: {e}", path.display()))
                })?)),
                None => Box::new(io::stdin().lock()),
            };
            let bar = Bar::new("loaded", global.quiet || global.json);
            let started = Instant::now();
            let count = transfer::load(&*store, &mut input, options(transfer), &bar);
            bar.finish();
            let count = count?;
            if global.json {
                print_json(&json!({"loaded": count, "seconds": started.elapsed().as_secs_f64()}));
            } else {
                summary(
                    global,
                    &format!("loaded {count} keys into {}", store.url()),
                    count,
                    started,
                );
            }
            Ok(Outcome::Done)
        }
    }
}

fn options(transfer: Transfer) -> Options {
    Options {
        concurrency: usize::from(transfer.concurrency),
        batch: transfer.batch as usize,
        ..Options::default()
    }
}

fn get(url: &str, key: &str, raw: bool, global: &Global) -> Result<Outcome, Error> {
    let key = Key::new(key)?;
    let store = open_store(url, Side::From, global)?.store;
    let Some(bytes) = store.get(&key)? else {
        eprintln!("libkv: {} is not in {}", key.as_str(), store.url());
        return Ok(Outcome::Failed);
    };
    let mut out = io::stdout().lock();
    if raw {
        out.write_all(&bytes).map_err(output_failed)?;
        return Ok(Outcome::Done);
    }
    let value = codec::decode(bytes);
    if global.json {
        print_json(
            &json!({"key": key.as_str(), "type": value.type_name(), "value": data(&value)?}),
        );
    } else {
        match &value {
            Value::String(text) => writeln!(out, "{text}"),
            other => writeln!(out, "{}", data(other)?),
        }
        .map_err(output_failed)?;
    }
    Ok(Outcome::Done)
}

fn put(
    url: &str,
    key: &str,
    value: Option<String>,
    kind: ValueType,
    global: &Global,
) -> Result<Outcome, Error> {
    let key = Key::new(key)?;
    let bytes = match value.filter(|v| v != "-") {
        Some(v) => v.into_bytes(),
        None => {
            let mut input = Vec::new();
            io::stdin().read_to_end(&mut input).map_err(|e| {
                Error::InvalidArgument(format!("cannot read the value from stdin: {e}"))
            })?;
            // A line typed or echoed ends with a newline that is not the value's.
            if kind != ValueType::Binary && input.last() == Some(&b'\n') {
                input.pop();
            }
            input
        }
    };
    let value = parse_value(bytes, kind)?;
    let encoded = codec::encode(&value).map_err(|reason| Error::InvalidValue {
        key: key.as_str().to_owned(),
        reason,
    })?;
    open_store(url, Side::From, global)?
        .store
        .put(&key, &encoded)?;
    Ok(Outcome::Done)
}

fn parse_value(bytes: Vec<u8>, kind: ValueType) -> Result<Value, Error> {
    if kind == ValueType::Binary {
        return Ok(Value::Binary(bytes));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::InvalidArgument("the value is not UTF-8 text: store bytes with --type binary".into())
    })?;
    let bad = |what: &str| Error::InvalidArgument(format!("the value {text:?} is not {what}"));
    Ok(match kind {
        ValueType::String => Value::String(text.clone()),
        ValueType::Integer => Value::Int(text.trim().parse().map_err(|_| bad("an integer"))?),
        ValueType::Float => Value::Float(
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad("a finite number"))?,
        ),
        ValueType::Boolean => match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("true or false")),
        },
        ValueType::Json => Value::from(
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| Error::InvalidArgument(format!("the value is not JSON: {e}")))?,
        ),
        ValueType::Binary => unreachable!("handled above"),
    })
}

fn ls(url: &str, dir: &str, global: &Global) -> Result<Outcome, Error> {
    let dir = Key::dir(dir)?;
    let store = open_store(url, Side::From, global)?.store;
    let keys: Vec<String> = store
        .list(&dir)?
        .into_iter()
        .map(|(rel, _)| dir.join(&rel))
        .collect();
    if global.json {
        print_json(&json!(keys));
    } else {
        let mut out = BufWriter::new(io::stdout().lock());
        for key in keys {
            writeln!(out, "{key}").map_err(output_failed)?;
        }
        out.flush().map_err(output_failed)?;
    }
    Ok(Outcome::Done)
}

fn cp(
    src: &str,
    dst: &str,
    dir: &str,
    verify: bool,
    transfer: Transfer,
    global: &Global,
) -> Result<Outcome, Error> {
    let dir = Key::dir(dir)?;
    let from = open_store(src, Side::From, global)?;
    let to = open_store(dst, Side::To, global)?;
    let bar = Bar::new("copied", global.quiet || global.json);
    let started = Instant::now();
    let copied = transfer::copy(&*from.store, &*to.store, &dir, options(transfer), &bar);
    bar.finish();
    let copied = copied?;
    let seconds = started.elapsed().as_secs_f64();
    let comparison = if verify {
        let bar = Bar::new("compared", global.quiet || global.json);
        let compared = transfer::compare(&*from.store, &*to.store, &dir, Options::default(), &bar);
        bar.finish();
        Some(compared?)
    } else {
        None
    };
    let left_behind = metadata_left_behind(&from);
    if global.json {
        let mut report = json!({
            "written": copied.written, "unchanged": copied.unchanged, "seconds": seconds,
        });
        if let Some(c) = &comparison {
            report["verified"] = json!(c.complete());
            report["missing"] = json!(c.missing);
            report["different"] = json!(c.different);
        }
        if let Some(n) = left_behind {
            report["simpkv_metadata_not_copied"] = json!(n);
        }
        print_json(&report);
    } else if !global.quiet {
        let total = copied.written + copied.unchanged;
        eprintln!(
            "copied {total} keys below {} from {} to {}: {} written, {} already there, in {seconds:.1} s ({:.0} keys/s)",
            dir.as_str(),
            from.store.url(),
            to.store.url(),
            copied.written,
            copied.unchanged,
            total as f64 / seconds.max(1e-9)
        );
        if let Some(n) = left_behind.filter(|n| *n > 0) {
            eprintln!(
                "{n} simpkv keys had metadata, which libkv does not keep: their values were copied, their metadata was not"
            );
        }
        if let Some(c) = &comparison {
            if c.complete() {
                eprintln!("verified: every key of the source is in the destination, byte for byte ({} keys)", c.same);
            }
        }
    }
    match comparison {
        Some(c) if !c.complete() => {
            report_differences(&c);
            Ok(Outcome::Failed)
        }
        _ => Ok(Outcome::Done),
    }
}

fn diff(src: &str, dst: &str, dir: &str, global: &Global) -> Result<Outcome, Error> {
    let dir = Key::dir(dir)?;
    let from = open_store(src, Side::From, global)?;
    let to = open_store(dst, Side::To, global)?;
    let bar = Bar::new("compared", global.quiet || global.json);
    let compared = transfer::compare(&*from.store, &*to.store, &dir, Options::default(), &bar);
    bar.finish();
    let c = compared?;
    if global.json {
        print_json(&json!({
            "same": c.same, "missing": c.missing, "different": c.different, "extra": c.extra,
        }));
    } else {
        let mut out = BufWriter::new(io::stdout().lock());
        for (what, keys) in [
            ("missing", &c.missing),
            ("different", &c.different),
            ("extra", &c.extra),
        ] {
            for key in keys {
                writeln!(out, "{what} {key}").map_err(output_failed)?;
            }
        }
        out.flush().map_err(output_failed)?;
    }
    Ok(if c.complete() {
        Outcome::Done
    } else {
        Outcome::Failed
    })
}

/// The first differences of a copy that did not verify, on stderr.
fn report_differences(c: &Comparison) {
    eprintln!(
        "libkv: the copy differs: {} keys missing, {} different",
        c.missing.len(),
        c.different.len()
    );
    for key in c.missing.iter().take(10) {
        eprintln!("  missing {key}");
    }
    for key in c.different.iter().take(10) {
        eprintln!("  different {key}");
    }
}

fn metadata_left_behind(from: &Opened) -> Option<u64> {
    from.simpkv.as_ref().map(|tree| tree.with_metadata())
}

/// A value as JSON: Puppet's rich data, as in the envelope on disk (a Binary is
/// {"__ptype":"Binary","__pvalue":"<base64>"}).
fn data(value: &Value) -> Result<serde_json::Value, Error> {
    let bytes = codec::to_data(value).map_err(Error::InvalidArgument)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::InvalidArgument(e.to_string()))
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

fn summary(global: &Global, what: &str, count: u64, started: Instant) {
    if global.quiet || global.json {
        return;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{what} in {seconds:.1} s ({:.0} keys/s)",
        count as f64 / seconds.max(1e-9)
    );
}

fn output_failed(e: io::Error) -> Error {
    Error::InvalidArgument(format!("cannot write the output: {e}"))
}
