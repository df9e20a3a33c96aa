//! A real etcd server for the tests: Debian's `etcd` on 127.0.0.1, free ports, a
//! temp data dir. It dies with the test process (PR_SET_PDEATHSIG).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

pub struct Etcd {
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
}

impl Etcd {
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}{prefix}", self.client_port)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts etcd on free ports and waits until it serves. Returns its pid too.
pub fn start(data_dir: PathBuf) -> (Etcd, u32) {
    let etcd = Etcd {
        client_port: free_port(),
        peer_port: free_port(),
        data_dir,
    };
    let pid = etcd.run();
    (etcd, pid)
}

impl Etcd {
    /// Starts (or restarts) this server and waits until it serves. It is started
    /// by a thread that lives as long as the process, since the death signal
    /// follows the thread that forked it.
    pub fn run(&self) -> u32 {
        let (tx, rx) = mpsc::channel();
        let (client_port, peer_port, dir) =
            (self.client_port, self.peer_port, self.data_dir.clone());
        std::thread::spawn(move || {
            let mut child = spawn(client_port, peer_port, &dir);
            tx.send(child.id()).unwrap();
            let _ = child.wait();
            loop {
                std::thread::park();
            }
        });
        let pid = rx.recv().unwrap();
        wait_listening(self.client_port);
        pid
    }
}

fn spawn(client_port: u16, peer_port: u16, dir: &std::path::Path) -> Child {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", "test", "--data-dir"])
        .arg(dir)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("test={peer}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only an async-signal-safe prctl between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(Into::into)
        });
    }
    cmd.spawn().expect("etcd runs (Debian package etcd-server)")
}

/// Waits until the process `pid` has exited (its spawning thread reaps it), so a
/// restart on the same ports and data dir does not race its shutdown.
pub fn wait_gone(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid is not 0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while rustix::process::test_kill_process(pid).is_ok() {
        assert!(Instant::now() < deadline, "etcd {pid:?} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until etcd answers its health check, so it serves requests.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(port) {
        assert!(
            Instant::now() < deadline,
            "etcd did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healthy(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    conn.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
        && conn.read_to_string(&mut answer).is_ok()
        && answer.contains(r#""health":"true""#)
}

/// A data dir under cargo's target tmp dir; those of finished test runs go.
pub fn data_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let pid = file_name
                .strip_prefix("etcd-")
                .and_then(|rest| rest.split('-').next());
            if let Some(pid) = pid {
                if !PathBuf::from(format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    base.join(format!("etcd-{}-{name}", std::process::id()))
}

/// One etcd shared by every test of a test binary; tests keep apart by prefix.
pub fn shared() -> &'static Etcd {
    static ETCD: OnceLock<Etcd> = OnceLock::new();
    ETCD.get_or_init(|| start(data_dir("shared")).0)
}

/// A prefix no other test uses.
pub fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "/test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
