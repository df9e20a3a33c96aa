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
    /// The member's name, and the `--initial-cluster` it starts with.
    name: String,
    initial_cluster: String,
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
    let peer_port = free_port();
    let etcd = Etcd {
        client_port: free_port(),
        peer_port,
        data_dir,
        name: "test".into(),
        initial_cluster: format!("test=http://127.0.0.1:{peer_port}"),
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
        let (name, cluster) = (self.name.clone(), self.initial_cluster.clone());
        std::thread::spawn(move || {
            let mut child = spawn(&name, &cluster, client_port, peer_port, &dir);
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

fn spawn(
    name: &str,
    cluster: &str,
    client_port: u16,
    peer_port: u16,
    dir: &std::path::Path,
) -> Child {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", name, "--data-dir"])
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
        .args(["--initial-cluster", cluster])
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

/// A cluster of etcd members on 127.0.0.1, each on free ports with a data dir of
/// its own, for the tests of a URL that lists several members.
pub struct Cluster {
    pub members: Vec<Etcd>,
    /// The pid of each member, `None` while it is stopped.
    pids: std::sync::Mutex<Vec<Option<u32>>>,
}

impl Cluster {
    /// Starts `size` members that form one cluster, and waits until each serves.
    pub fn start(name: &str, size: usize) -> Cluster {
        let peer_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let initial_cluster = peer_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("m{i}=http://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let members: Vec<Etcd> = peer_ports
            .iter()
            .enumerate()
            .map(|(i, &peer_port)| Etcd {
                client_port: free_port(),
                peer_port,
                data_dir: data_dir(&format!("{name}-m{i}")),
                name: format!("m{i}"),
                initial_cluster: initial_cluster.clone(),
            })
            .collect();
        // Members wait for each other's votes at first start: start every one
        // before waiting on any.
        let (tx, rx) = mpsc::channel();
        for (i, m) in members.iter().enumerate() {
            let (client_port, peer_port, dir) = (m.client_port, m.peer_port, m.data_dir.clone());
            let (name, cluster, tx) = (m.name.clone(), m.initial_cluster.clone(), tx.clone());
            std::thread::spawn(move || {
                let mut child = spawn(&name, &cluster, client_port, peer_port, &dir);
                tx.send((i, child.id())).unwrap();
                let _ = child.wait();
                loop {
                    std::thread::park();
                }
            });
        }
        let mut pids = vec![None; size];
        for _ in 0..size {
            let (i, pid) = rx.recv().unwrap();
            pids[i] = Some(pid);
        }
        for m in &members {
            wait_listening(m.client_port);
        }
        Cluster {
            members,
            pids: std::sync::Mutex::new(pids),
        }
    }

    /// `etcd://` with the members' endpoints in the order given, and a prefix.
    pub fn url(&self, order: &[usize], prefix: &str) -> String {
        let endpoints: Vec<String> = order
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.members[i].client_port))
            .collect();
        format!("etcd://{}{prefix}", endpoints.join(","))
    }

    /// Kills member `i` with SIGKILL and waits until it is gone.
    pub fn kill(&self, i: usize) {
        let pid = self.pids.lock().unwrap()[i]
            .take()
            .expect("the member runs");
        let target = rustix::process::Pid::from_raw(pid as i32).expect("a pid is not 0");
        rustix::process::kill_process(target, rustix::process::Signal::KILL).unwrap();
        wait_gone(pid);
    }

    /// Starts member `i` again, on its ports and data, and waits until it serves.
    pub fn restart(&self, i: usize) {
        let pid = self.members[i].run();
        self.pids.lock().unwrap()[i] = Some(pid);
    }

    pub fn running(&self, i: usize) -> bool {
        self.pids.lock().unwrap()[i].is_some()
    }

    /// Starts every stopped member, and waits until the cluster has a leader.
    pub fn heal(&self) {
        for i in 0..self.members.len() {
            if !self.running(i) {
                self.restart(i);
            }
        }
        self.leader();
    }

    /// The index of the member that leads now, waiting (up to 30 s) for one.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = self.current_leader() {
                return i;
            }
            assert!(Instant::now() < deadline, "the cluster has no leader");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member that leads, as the running members see it, if they agree on one.
    fn current_leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if !self.running(i) {
                ids.push(None);
                continue;
            }
            let status = status(m.client_port)?;
            ids.push(Some(status.0));
            leaders.push(status.1);
        }
        let leader = *leaders.first()?;
        if leader == 0 || leaders.iter().any(|&l| l != leader) {
            return None;
        }
        ids.iter().position(|id| *id == Some(leader))
    }
}

/// A member's id and the id of the leader it knows (0: none), from its HTTP API
/// (etcd's gRPC gateway, `/v3/maintenance/status`).
fn status(port: u16) -> Option<(u64, u64)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let body = "{}";
    let request = format!(
        "POST /v3/maintenance/status HTTP/1.0\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    let json = answer.split("\r\n\r\n").nth(1)?;
    let field = |name: &str| -> Option<u64> {
        let at = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
        json[at..].split('"').next()?.parse().ok()
    };
    Some((field("member_id")?, field("leader").unwrap_or(0)))
}
