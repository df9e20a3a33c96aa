//! `consul-double`: runs the Consul KV test double (not Consul) on 127.0.0.1.
//!
//! ```text
//! consul-double [--port N] [--token T] [--tls-cert F --tls-key F [--client-ca F]]
//!               [--datacenter DC] [--session-ttl-multiplier X]
//!               [--min-session-ttl SECONDS] [--ignore-stdin]
//! ```
//!
//! `--session-ttl-multiplier` and `--min-session-ttl` set
//! `Config::session_ttl_multiplier` (default 2) and `Config::min_session_ttl`
//! (default 10; seconds, fractions allowed, e.g. `0.5`).
//!
//! Once it listens it prints exactly one line to stdout, `listening on
//! 127.0.0.1:PORT`, and flushes it; it prints nothing else there (errors go
//! to stderr). Port 0 (the default) lets the system pick a free port: read
//! the line to learn it.
//!
//! It serves until it is killed (SIGTERM or SIGINT, whose default action
//! ends it; the system frees the port) or until its **standard input
//! reaches end of file**: a parent should give it a pipe and keep the
//! writing end open, so that the double goes away with the parent even if
//! the parent dies without killing it. Started with stdin on `/dev/null`
//! (or closed) it would exit at once: pass `--ignore-stdin` to serve until
//! killed whatever stdin is.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use consul_double::{Config, TlsConfig};

const USAGE: &str = "usage: consul-double [--port N] [--token T] \
[--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--datacenter DC] \
[--session-ttl-multiplier X] [--min-session-ttl SECONDS] [--ignore-stdin]

A Consul KV HTTP API test double (not Consul), in memory, on 127.0.0.1.
Prints `listening on 127.0.0.1:PORT` once ready; exits when stdin reaches
end of file (unless --ignore-stdin) or when killed.";

struct Options {
    port: u16,
    config: Config,
    ignore_stdin: bool,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut port = 0;
    let mut config = Config::default();
    let (mut cert, mut key, mut client_ca) = (None, None, None);
    let mut ignore_stdin = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--port" => {
                let v = value()?;
                port = v.parse().map_err(|_| format!("--port: not a port: {v}"))?;
            }
            "--token" => config.acl_token = Some(value()?),
            "--datacenter" => config.datacenter = value()?,
            "--session-ttl-multiplier" => {
                let v = value()?;
                config.session_ttl_multiplier = v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| {
                        format!("--session-ttl-multiplier: not a number above 0: {v}")
                    })?;
            }
            "--min-session-ttl" => {
                let v = value()?;
                config.min_session_ttl = v
                    .parse::<f64>()
                    .ok()
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .ok_or_else(|| format!("--min-session-ttl: not a number of seconds: {v}"))?;
            }
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            "--client-ca" => client_ca = Some(PathBuf::from(value()?)),
            "--ignore-stdin" => ignore_stdin = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    config.tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file: client_ca,
        }),
        (None, None) if client_ca.is_none() => None,
        (None, None) => return Err("--client-ca needs --tls-cert and --tls-key".into()),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok(Options {
        port,
        config,
        ignore_stdin,
    })
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("consul-double: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, options.port));
    let server = match consul_double::start(options.config, addr) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("consul-double: cannot start on {addr}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = io::stdout().lock();
    if writeln!(stdout, "listening on {}", server.addr())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    if options.ignore_stdin {
        loop {
            std::thread::park();
        }
    }
    // Serve until stdin reaches end of file (or cannot be read at all).
    let mut buffer = [0u8; 4096];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    server.shutdown();
    ExitCode::SUCCESS
}
