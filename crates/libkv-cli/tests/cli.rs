//! The `libkv` command, run as a process, against real stores: a file tree, a
//! real etcd and the Consul test double.

#[path = "../../libkv-core/tests/etcd/mod.rs"]
mod etcd;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use consul_double::{Config, Server};
use libkv_core::{codec, open, Key, OpenOptions, Store, Value};

const TOKEN: &str = "cli-consul-t0ken";

/// Runs `libkv ARGS` with `env` (and no other LIBKV_ variable), `stdin` as input.
fn libkv_with(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_libkv"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("LIBKV_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn libkv(args: &[&str]) -> Output {
    libkv_with(args, &[], b"")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[track_caller]
fn ok(out: Output) -> Output {
    assert!(out.status.success(), "libkv failed: {}", stderr(&out));
    out
}

#[track_caller]
fn status(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
}

fn consul() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        consul_double::start(Config::default(), "127.0.0.1:0".parse().unwrap()).unwrap()
    })
}

fn consul_acl() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let config = Config {
            acl_token: Some(TOKEN.to_owned()),
            ..Config::default()
        };
        consul_double::start(config, "127.0.0.1:0".parse().unwrap()).unwrap()
    })
}

fn store(url: &str) -> std::sync::Arc<dyn Store> {
    open(url, &OpenOptions::default()).unwrap()
}

/// A URL of each kind, each new and empty.
fn urls(tmp: &Path) -> Vec<String> {
    vec![
        format!("file://{}/store", tmp.display()),
        etcd::shared().url(&etcd::unique_prefix()),
        format!(
            "consul://127.0.0.1:{}{}",
            consul().port(),
            etcd::unique_prefix()
        ),
    ]
}

#[test]
fn every_command_has_help_and_usage_errors_exit_2() {
    for command in [
        "get", "put", "ls", "rm", "rmtree", "info", "cp", "diff", "dump", "load",
    ] {
        let out = ok(libkv(&[command, "--help"]));
        assert!(
            stdout(&out).contains(&format!("Usage: libkv {command}")),
            "{command}"
        );
    }
    assert!(stdout(&ok(libkv(&["--help"]))).contains("EXIT STATUS"));
    status(&libkv(&[]), 2);
    status(&libkv(&["get", "mock://"]), 2);
    // Credentials have no option: they never go on the command line.
    status(&libkv(&["--password", "x", "info", "mock://"]), 2);
    status(&libkv(&["get", "mock://", "no slash"]), 2);
    status(&libkv(&["get", "nosuch://x", "/k"]), 2);
}

#[test]
fn get_put_ls_rm_rmtree_info_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    for url in urls(tmp.path()) {
        let u = url.as_str();
        ok(libkv_with(
            &["put", u, "/app/password"],
            &[],
            b"correct horse\n",
        ));
        ok(libkv(&["put", u, "/app/port", "8080", "--type", "integer"]));
        ok(libkv(&[
            "put",
            u,
            "/app/settings",
            r#"{"tls":true,"peers":["a"]}"#,
            "--type",
            "json",
        ]));
        ok(libkv_with(
            &["put", u, "/app/keytab", "--type", "binary"],
            &[],
            &[0xff, 0x00, 0x0a],
        ));
        ok(libkv(&["put", u, "/other/x", "1"]));

        assert_eq!(
            stdout(&ok(libkv(&["get", u, "/app/password"]))),
            "correct horse\n"
        );
        assert_eq!(stdout(&ok(libkv(&["get", u, "/app/port"]))), "8080\n");
        assert_eq!(
            stdout(&ok(libkv(&["--json", "get", u, "/app/settings"]))),
            "{\"key\":\"/app/settings\",\"type\":\"Hash\",\"value\":{\"tls\":true,\"peers\":[\"a\"]}}\n"
        );
        assert_eq!(
            ok(libkv(&["get", "--raw", u, "/app/keytab"])).stdout,
            [0xff, 0x00, 0x0a]
        );
        assert_eq!(
            ok(libkv(&["get", "--raw", u, "/app/port"])).stdout,
            br#"{"libkv":1,"value":8080}"#
        );
        // What the command put, the library reads with its type.
        let s = store(u);
        assert_eq!(
            codec::decode(s.get(&Key::new("/app/port").unwrap()).unwrap().unwrap()),
            Value::Int(8080)
        );

        assert_eq!(
            stdout(&ok(libkv(&["ls", u, "/app"]))),
            "/app/keytab\n/app/password\n/app/port\n/app/settings\n"
        );
        assert_eq!(
            stdout(&ok(libkv(&["--json", "ls", u])))
                .matches("\"/")
                .count(),
            5
        );

        let absent = libkv(&["get", u, "/app/absent"]);
        status(&absent, 1);
        assert!(
            stderr(&absent).contains("/app/absent is not in"),
            "{}",
            stderr(&absent)
        );
        status(
            &libkv(&["put", u, "/app/port", "eighty", "--type", "integer"]),
            2,
        );

        ok(libkv(&["rm", u, "/app/password", "/app/never"]));
        status(&libkv(&["get", u, "/app/password"]), 1);
        let refused = libkv(&["rmtree", u, "/"]);
        status(&refused, 2);
        assert!(stderr(&refused).contains("--all"));
        ok(libkv(&["rmtree", u, "/app"]));
        assert_eq!(stdout(&ok(libkv(&["ls", u]))), "/other/x\n");
        let info = stdout(&ok(libkv(&["info", u])));
        assert!(info.contains(&format!("\"url\":\"{u}\"")), "{info}");
    }
}

#[test]
fn credentials_come_from_a_file_or_the_environment_and_are_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("consul://127.0.0.1:{}/creds", consul_acl().port());
    let u = url.as_str();
    let refused = libkv(&["put", u, "/k", "v"]);
    status(&refused, 1);
    assert!(
        stderr(&refused).contains("refused the credentials"),
        "{}",
        stderr(&refused)
    );

    let file = tmp.path().join("auth.yaml");
    fs::write(&file, format!("token: {TOKEN}\n")).unwrap();
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let f = file.to_str().unwrap();
    let out = ok(libkv(&["--auth-file", f, "put", u, "/k", "v"]));
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&ok(libkv_with(
            &["get", u, "/k"],
            &[("LIBKV_TOKEN", TOKEN)],
            b""
        ))),
        "v\n"
    );
    assert_eq!(
        stdout(&ok(libkv_with(
            &["get", u, "/k"],
            &[("LIBKV_AUTH_FILE", f)],
            b""
        ))),
        "v\n"
    );

    // A wrong token, and an auth file others may read: the token never shows.
    let wrong = "wrong-t0ken-value";
    fs::write(&file, format!("token: {wrong}\n")).unwrap();
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = libkv(&["--auth-file", f, "get", u, "/k"]);
    status(&out, 1);
    let all = format!("{}{}", stderr(&out), stdout(&out));
    assert!(all.contains("chmod 600"), "{all}");
    assert!(!all.contains(wrong), "{all}");
    fs::write(&file, format!("tokn: {wrong}\n")).unwrap();
    let out = libkv(&["--auth-file", f, "get", u, "/k"]);
    status(&out, 2);
    assert!(
        stderr(&out).contains("unknown auth key \"tokn\""),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(wrong));
}

/// N small files as a file store holds them (plain text, and some typed values).
fn file_tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("hosts/h{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        let value = if i % 10 == 0 {
            format!("{{\"libkv\":1,\"value\":{i}}}")
        } else {
            format!("10.0.{}.{}", i / 256, i % 256)
        };
        fs::write(dir.join(format!("n{i:05}")), value).unwrap();
    }
}

fn key_count(store: &dyn Store) -> usize {
    store.list(&Key::dir("/").unwrap()).unwrap().len()
}

#[test]
fn a_copy_killed_midway_completes_when_run_again_nothing_lost_nothing_written_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 6000;
    let src = format!("file://{}/src", tmp.path().display());
    file_tree(&tmp.path().join("src"), n);
    let dst = etcd::shared().url(&etcd::unique_prefix());
    let target = store(&dst);

    // One key per request, so that the copy is still going when it is killed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_libkv"))
        .args(["cp", &src, &dst, "--batch", "1", "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while key_count(&*target) < 500 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the copy did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = target.atomic_list(&Key::dir("/").unwrap()).unwrap();
    assert!(before.len() < n, "the copy finished before it was killed");

    let out = ok(libkv(&["cp", &src, &dst, "--verify"]));
    let report = stderr(&out);
    assert!(
        report.contains(&format!(
            "{} written, {} already there",
            n - before.len(),
            before.len()
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "verified: every key of the source is in the destination, byte for byte ({n} keys)"
        )),
        "{report}"
    );
    // The keys the killed copy wrote were not written again.
    let after: std::collections::HashMap<_, _> = target
        .atomic_list(&Key::dir("/").unwrap())
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(after.len(), n);
    for (name, versioned) in before {
        assert_eq!(after[&name], versioned, "{name}");
    }
    ok(libkv(&["diff", &src, &dst]));
    assert_eq!(
        stdout(&ok(libkv(&["get", &dst, "/hosts/h000/n00010"]))),
        "10\n"
    );
}

#[test]
fn dump_and_load_move_every_byte_and_diff_finds_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let [file, etcd_url, consul_url]: [String; 3] = urls(tmp.path()).try_into().unwrap();
    file_tree(&tmp.path().join("store"), 300);
    fs::write(tmp.path().join("store/bytes"), [0xff, 0xfe, 0x00]).unwrap();

    let dump = tmp.path().join("dump.jsonl");
    let d = dump.to_str().unwrap();
    ok(libkv(&["dump", &file, "-o", d]));
    let text = fs::read_to_string(&dump).unwrap();
    assert_eq!(text.lines().count(), 301);
    assert!(
        text.starts_with("{\"key\":\"/bytes\",\"base64\":\"//4A\"}\n"),
        "{text:.200}"
    );
    ok(libkv(&["load", &etcd_url, d]));
    // A dump streams into a load through a pipe too.
    let piped = ok(libkv(&["dump", &etcd_url]));
    ok(libkv_with(&["load", &consul_url], &[], &piped.stdout));
    ok(libkv(&["diff", &file, &consul_url]));
    assert_eq!(
        ok(libkv(&["get", "--raw", &consul_url, "/bytes"])).stdout,
        [0xff, 0xfe, 0x00]
    );

    ok(libkv(&[
        "put",
        &consul_url,
        "/hosts/h000/n00001",
        "changed",
    ]));
    ok(libkv(&["rm", &consul_url, "/hosts/h000/n00002"]));
    ok(libkv(&["put", &consul_url, "/only/here", "x"]));
    let out = libkv(&["diff", &file, &consul_url]);
    status(&out, 1);
    assert_eq!(
        stdout(&out),
        "missing /hosts/h000/n00002\ndifferent /hosts/h000/n00001\nextra /only/here\n"
    );
    let out = libkv(&["--json", "diff", &file, &consul_url]);
    status(&out, 1);
    assert!(
        stdout(&out).starts_with("{\"same\":299,"),
        "{}",
        stdout(&out)
    );

    fs::write(&dump, "{\"key\":\"/a\",\"value\":\"1\"}\nnot json\n").unwrap();
    let out = libkv(&["load", &etcd_url, d]);
    status(&out, 2);
    assert!(
        stderr(&out).contains("line 2 of the dump is not a libkv dump line"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn legacy_simp6_and_simpkv_trees_move_to_etcd_in_one_command() {
    let tmp = tempfile::tempdir().unwrap();
    let vardir = tmp.path().join("vardir");
    let autofiles = vardir.join("simp/environments/production/simp_autofiles");
    fs::create_dir_all(autofiles.join("gen_passwd")).unwrap();
    fs::write(autofiles.join("gen_passwd/web01"), "Q9x!secret").unwrap();
    fs::write(autofiles.join("gen_passwd/web01.salt"), "saltsalt").unwrap();
    let dst = etcd::shared().url(&etcd::unique_prefix());
    let v = vardir.to_str().unwrap();

    let out = libkv(&["cp", "legacy-simp6://", &dst]);
    status(&out, 2);
    assert!(stderr(&out).contains("--vardir"), "{}", stderr(&out));
    ok(libkv(&[
        "--vardir",
        v,
        "cp",
        "legacy-simp6://",
        &dst,
        "--verify",
    ]));
    assert_eq!(
        stdout(&ok(libkv(&["get", &dst, "/gen_passwd/web01"]))),
        "Q9x!secret\n"
    );

    let root = tmp.path().join("simpkv");
    fs::create_dir_all(root.join("globals/app")).unwrap();
    fs::create_dir_all(root.join("environments/production/app")).unwrap();
    fs::write(
        root.join("globals/app/port"),
        r#"{"value":8080,"metadata":{}}"#,
    )
    .unwrap();
    fs::write(
        root.join("environments/production/app/key"),
        r#"{"value":"/wAB","encoding":"base64","original_encoding":"ASCII-8BIT","metadata":{"by":"passgen"}}"#,
    )
    .unwrap();
    let src = format!("simpkv://{}", root.display());
    let out = ok(libkv(&["cp", &src, &dst, "--verify"]));
    assert!(
        stderr(&out).contains("1 simpkv keys had metadata, which libkv does not keep"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&ok(libkv(&["--json", "get", &dst, "/globals/app/port"]))),
        "{\"key\":\"/globals/app/port\",\"type\":\"Integer\",\"value\":8080}\n"
    );
    assert_eq!(
        ok(libkv(&[
            "get",
            "--raw",
            &dst,
            "/environments/production/app/key"
        ]))
        .stdout,
        [0xff, 0x00, 0x01]
    );
    status(&libkv(&["put", &src, "/globals/x", "1"]), 1);
}

#[test]
fn a_progress_bar_on_a_terminal_only() {
    let tmp = tempfile::tempdir().unwrap();
    file_tree(&tmp.path().join("src"), 1500);
    let src = format!("file://{}/src", tmp.path().display());
    let dst = etcd::shared().url(&etcd::unique_prefix());
    // `script` gives the command a terminal, and keeps what it drew.
    let command = format!(
        "{} cp {src} {dst} --batch 1 --concurrency 1",
        env!("CARGO_BIN_EXE_libkv")
    );
    let typescript = tmp.path().join("typescript");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, typescript.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn = String::from_utf8_lossy(&fs::read(&typescript).unwrap()).into_owned();
    assert!(drawn.contains("keys copied"), "{drawn}");
    assert!(drawn.contains("/s, "), "{drawn}");
    assert!(drawn.contains("left)"), "{drawn}");
    // Without a terminal: the summary line only.
    let dst2 = etcd::shared().url(&etcd::unique_prefix());
    let out = ok(libkv(&["cp", &src, &dst2]));
    assert!(!stderr(&out).contains("keys copied"), "{}", stderr(&out));
    assert!(!stderr(&out).contains('\u{1b}'));
}
