//! The binary as the stress suite calls it: a short run ends with its SUMMARY line.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_libkv-stress"))
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn a_short_run_finds_nothing_and_ends_with_its_summary() {
    let (ok, out) = run(&["hostile-keys", "--cases", "2000", "--seed", "42"]);
    assert!(ok, "{out}");
    assert!(out.contains("seed 42, 2000 cases"), "{out}");
    assert!(out.contains("--cases 2000 --seed 42"), "replay line: {out}");
    for op in ["get", "put", "atomic_list", "deletetree"] {
        assert!(
            out.contains(&format!("\n  {op} ")),
            "{op} not counted: {out}"
        );
    }
    assert_eq!(
        out.lines().last(),
        Some("SUMMARY hostile-keys cases=2000 failures=0")
    );
}

#[test]
fn a_seed_is_chosen_and_shown_when_none_is_given() {
    let (ok, out) = run(&["hostile-keys", "--cases", "10"]);
    assert!(ok, "{out}");
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("hostile-keys: seed "), "{first}");
    assert!(first.contains("--cases 10 --seed "), "{first}");
}

#[test]
fn bad_arguments_are_refused() {
    for args in [&["hostile-keys", "--cases", "x"][..], &["nope"], &[]] {
        let out = Command::new(env!("CARGO_BIN_EXE_libkv-stress"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
