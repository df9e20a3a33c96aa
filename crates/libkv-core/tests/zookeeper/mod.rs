//! A real ZooKeeper for the tests: Debian's ZooKeeper 3.8 (`QuorumPeerMain`) on
//! 127.0.0.1, free ports, a temp data dir, the admin server off, TTL nodes on
//! (`extendedTypesEnabled`), containers checked every 500 ms. It dies with the
//! test process (PR_SET_PDEATHSIG), and tests may stop it earlier.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lets this test process open zookeeper:// (see `libkv_core::open`): every test
/// starts a server or takes a port here first.
pub fn preview() {
    std::env::set_var("LIBKV_ZOOKEEPER_PREVIEW", "1");
}

pub fn free_port() -> u16 {
    preview();
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One server, standalone or a member of an ensemble.
pub struct Zk {
    pub client_port: u16,
    pub data_dir: PathBuf,
    config: PathBuf,
    pid: Mutex<Option<u32>>,
    /// How often the server removes empty containers and expired TTL nodes.
    check_interval_ms: u64,
    /// Whether it creates TTL nodes (`extendedTypesEnabled`).
    ttl_nodes: bool,
}

impl Zk {
    pub fn url(&self, prefix: &str) -> String {
        format!("zookeeper://127.0.0.1:{}{prefix}", self.client_port)
    }

    /// Starts (or restarts) this server; `wait` until it serves. Started by a thread
    /// that lives as long as the process, since the death signal follows the
    /// thread that forked it.
    fn run(&self, wait: bool) {
        let (tx, rx) = mpsc::channel();
        let (config, dir) = (self.config.clone(), self.data_dir.clone());
        let (interval, ttl_nodes) = (self.check_interval_ms, self.ttl_nodes);
        std::thread::spawn(move || {
            let mut child = spawn(&config, &dir, interval, ttl_nodes);
            tx.send(child.id()).unwrap();
            let _ = child.wait();
            loop {
                std::thread::park();
            }
        });
        *self.pid.lock().unwrap() = Some(rx.recv().unwrap());
        if wait {
            wait_serving(self.client_port);
        }
    }

    pub fn running(&self) -> bool {
        self.pid.lock().unwrap().is_some()
    }

    /// Kills the server with SIGKILL and waits until it is gone.
    pub fn kill(&self) {
        let Some(pid) = self.pid.lock().unwrap().take() else {
            return;
        };
        let target = rustix::process::Pid::from_raw(pid as i32).expect("a pid is not 0");
        let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
        wait_gone(pid);
    }

    pub fn restart(&self) {
        self.run(true);
    }
}

fn java_flags(check_interval_ms: u64, ttl_nodes: bool) -> Vec<String> {
    let mut flags: Vec<String> = [
        "-Dzookeeper.admin.enableServer=false",
        "-Dznode.container.maxPerMinute=100000",
        "-Dzookeeper.4lw.commands.whitelist=*",
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.push(format!(
        "-Dznode.container.checkIntervalMs={check_interval_ms}"
    ));
    flags.push(format!("-Dzookeeper.extendedTypesEnabled={ttl_nodes}"));
    // The server's log (zookeeper.log in its data dir): warnings, or the level
    // ZK_TEST_LOG names.
    let level = std::env::var("ZK_TEST_LOG").unwrap_or_else(|_| "warn".into());
    flags.push(format!("-Dorg.slf4j.simpleLogger.defaultLogLevel={level}"));
    flags.push("-Dorg.slf4j.simpleLogger.showDateTime=true".into());
    flags
}

fn spawn(config: &Path, dir: &Path, check_interval_ms: u64, ttl_nodes: bool) -> Child {
    let log = std::fs::File::create(dir.join("zookeeper.log")).unwrap();
    let mut cmd = Command::new("java");
    cmd.args(java_flags(check_interval_ms, ttl_nodes))
        .args([
            "-cp",
            "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar",
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        ])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: only an async-signal-safe prctl between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(Into::into)
        });
    }
    cmd.spawn()
        .expect("java runs ZooKeeper (Debian packages zookeeper, openjdk)")
}

/// Waits until the process `pid` has exited (its spawning thread reaps it).
pub fn wait_gone(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid is not 0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while rustix::process::test_kill_process(pid).is_ok() {
        assert!(Instant::now() < deadline, "zookeeper {pid:?} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server's answer to a four-letter word, if it answers.
pub fn four_letters(port: u16, word: &str) -> Option<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(word.as_bytes()).ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Whether the server serves requests (standalone, or in a quorum).
pub fn serving(port: u16) -> bool {
    four_letters(port, "srvr").is_some_and(|a| a.contains("Mode: "))
}

/// Waits until the server serves requests.
pub fn wait_serving(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !serving(port) {
        assert!(
            Instant::now() < deadline,
            "zookeeper did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A data dir under cargo's target tmp dir; those of finished test runs go.
pub fn data_dir(name: &str) -> PathBuf {
    preview();
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let pid = file_name
                .strip_prefix("zk-")
                .and_then(|rest| rest.split('-').next());
            if let Some(pid) = pid {
                if !PathBuf::from(format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let dir = base.join(format!("zk-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_config(dir: &Path, client_port: u16, servers: &str) -> PathBuf {
    let config = dir.join("zoo.cfg");
    std::fs::write(
        &config,
        format!(
            "tickTime=500\ninitLimit=10\nsyncLimit=4\ndataDir={}\nclientPort={client_port}\n\
             clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
             maxClientCnxns=0\n{servers}",
            dir.display()
        ),
    )
    .unwrap();
    config
}

/// Starts a standalone server on a free port and waits until it serves.
pub fn start(name: &str) -> Zk {
    start_with(name, 500)
}

/// `start`, with TTL nodes off (ZooKeeper's default).
pub fn start_without_ttl_nodes(name: &str) -> Zk {
    start_server(name, 500, false)
}

/// `start`, with the server's check of containers and TTL nodes every
/// `check_interval_ms`.
pub fn start_with(name: &str, check_interval_ms: u64) -> Zk {
    start_server(name, check_interval_ms, true)
}

fn start_server(name: &str, check_interval_ms: u64, ttl_nodes: bool) -> Zk {
    let data_dir = data_dir(name);
    let client_port = free_port();
    let config = write_config(&data_dir, client_port, "");
    let zk = Zk {
        client_port,
        data_dir,
        config,
        pid: Mutex::new(None),
        check_interval_ms,
        ttl_nodes,
    };
    zk.run(true);
    zk
}

/// One ZooKeeper shared by every test of a test binary; tests keep apart by prefix.
pub fn shared() -> &'static Zk {
    static ZK: OnceLock<Zk> = OnceLock::new();
    // ZK_TEST_TTL_NODES=false runs the suite with TTL nodes off (ephemeral ones
    // stand in for them).
    let ttl_nodes = std::env::var("ZK_TEST_TTL_NODES").map_or(true, |v| v != "false");
    ZK.get_or_init(|| start_server("shared", 500, ttl_nodes))
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

/// An ensemble of servers on 127.0.0.1.
pub struct Ensemble {
    pub members: Vec<Zk>,
}

impl Ensemble {
    pub fn start(name: &str, size: usize) -> Ensemble {
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, election))| {
                format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1)
            })
            .collect();
        let members: Vec<Zk> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, _, _))| {
                let data_dir = data_dir(&format!("{name}-m{i}"));
                std::fs::write(data_dir.join("myid"), format!("{}\n", i + 1)).unwrap();
                let config = write_config(&data_dir, *client, &servers);
                Zk {
                    client_port: *client,
                    data_dir,
                    config,
                    pid: Mutex::new(None),
                    check_interval_ms: 500,
                    ttl_nodes: true,
                }
            })
            .collect();
        for m in &members {
            m.run(false);
        }
        for m in &members {
            wait_serving(m.client_port);
        }
        Ensemble { members }
    }

    /// `zookeeper://` with the members in the order given, and a prefix.
    pub fn url(&self, order: &[usize], prefix: &str) -> String {
        let endpoints: Vec<String> = order
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.members[i].client_port))
            .collect();
        format!("zookeeper://{}{prefix}", endpoints.join(","))
    }

    /// The members that serve, and the clients each has (`cons`).
    pub fn connections(&self, i: usize) -> usize {
        four_letters(self.members[i].client_port, "cons")
            .map(|a| a.lines().filter(|l| l.contains("sid=")).count())
            .unwrap_or(0)
    }

    pub fn stop_all(&self) {
        for m in &self.members {
            m.kill();
        }
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        self.stop_all();
    }
}
