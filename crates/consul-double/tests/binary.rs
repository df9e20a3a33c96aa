//! The `consul-double` binary: its one line, its flags, its exit on EOF.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{raw, temp_dir, Ca};

const BIN: &str = env!("CARGO_BIN_EXE_consul-double");

/// Spawns the binary with stdin and stdout piped; reads its line.
fn spawn(args: &[&str]) -> (Child, SocketAddr, BufReader<ChildStdout>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let port: u16 = addr.parse().unwrap();
    assert_ne!(port, 0);
    (child, SocketAddr::from(([127, 0, 0, 1], port)), stdout)
}

fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn finish(mut child: Child) -> ExitStatus {
    drop(child.stdin.take());
    match wait(&mut child, Duration::from_secs(10)) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("consul-double did not exit when its stdin closed");
        }
    }
}

#[test]
fn prints_its_line_serves_and_exits_when_stdin_closes() {
    let (child, addr, mut stdout) = spawn(&[]);
    let resp = raw(
        addr,
        "PUT /v1/kv/bin HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"true"[..]));
    let resp = raw(addr, "GET /v1/kv/bin?raw HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.body, b"ok");
    let status = finish(child);
    assert!(status.success(), "{status}");
    // Exactly one line on stdout.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "port still open"
    );
}

#[test]
fn flags_port_token_datacenter() {
    // A free port, then hand it to the binary.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port_arg = port.to_string();
    let (child, addr, _stdout) =
        spawn(&["--port", &port_arg, "--token", "tok", "--datacenter=east"]);
    assert_eq!(addr.port(), port);
    let resp = raw(addr, "GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 403);
    let resp = raw(
        addr,
        "GET /v1/agent/self HTTP/1.1\r\nHost: x\r\nX-Consul-Token: tok\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let me: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(me["Config"]["Datacenter"], "east");
    assert!(finish(child).success());
}

#[test]
fn session_flags() {
    let create = |addr, ttl: &str| {
        let body = format!(r#"{{"TTL":"{ttl}","Behavior":"delete"}}"#);
        raw(
            addr,
            &format!(
                "PUT /v1/session/create HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    // By default 10s is the shortest TTL.
    let (child, addr, _stdout) = spawn(&[]);
    assert_eq!(create(addr, "500ms").status, 500);
    assert!(finish(child).success());

    let (child, addr, _stdout) = spawn(&["--session-ttl-multiplier", "1", "--min-session-ttl=0.2"]);
    assert_eq!(create(addr, "100ms").status, 500);
    let started = Instant::now();
    let resp = create(addr, "300ms");
    assert_eq!(resp.status, 200);
    let id: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let info = format!(
        "GET /v1/session/info/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        id["ID"].as_str().unwrap()
    );
    // Gone after its TTL (multiplier 1), well before 2×TTL.
    while raw(addr, &info).body != b"[]" {
        assert!(
            started.elapsed() < Duration::from_millis(550),
            "not expired"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(finish(child).success());
}

#[tokio::test]
async fn tls_flags() {
    let ca = Ca::new("binary CA");
    let dir = temp_dir("binary-tls");
    let (cert, key) = ca.server().write(&dir, "server");
    let client_ca = dir.join("client-ca.pem");
    std::fs::write(&client_ca, ca.pem()).unwrap();
    let (child, addr, _stdout) = spawn(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--client-ca",
        client_ca.to_str().unwrap(),
    ]);
    let identity = ca.client("binary-client");
    let with_cert =
        common::client_with(common::client_tls(ca.roots(), Some(identity.for_client())));
    let url = format!("https://localhost:{}/v1/status/leader", addr.port());
    let resp = with_cert.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "\"127.0.0.1:8300\"");
    let without = common::client_with(common::client_tls(ca.roots(), None));
    assert!(without.get(&url).send().await.is_err());
    assert!(finish(child).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_exit_2_and_print_nothing_on_stdout() {
    for args in [
        &["--bogus"][..],
        &["--port"][..],
        &["--port", "x"][..],
        &["--tls-cert", "a.pem"][..],
        &["--client-ca", "ca.pem"][..],
        &["--session-ttl-multiplier", "0"][..],
        &["--session-ttl-multiplier", "x"][..],
        &["--min-session-ttl", "-1"][..],
        &["--min-session-ttl", "10s"][..],
    ] {
        let output = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn unreadable_tls_files_exit_1() {
    let output = Command::new(BIN)
        .args([
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
}

#[test]
fn ignore_stdin_keeps_serving_after_eof() {
    let mut child = Command::new(BIN)
        .arg("--ignore-stdin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim_end()
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "exited on EOF");
    let resp = raw(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
