//! simpkv's file plugin tree, read as the bytes libkv stores for each value.

use std::fs;
use std::path::Path;

use libkv_core::backends::simpkv::SimpkvTree;
use libkv_core::{codec, ErrorKind, Key, Store, Value};

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn encoded(value: Value) -> Vec<u8> {
    codec::encode(&value).unwrap().into_owned()
}

fn tree() -> (tempfile::TempDir, SimpkvTree) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "globals/app/port", r#"{"value":8080,"metadata":{}}"#);
    write(
        root,
        "environments/production/app/password",
        r#"{"value":"s3cret","metadata":{"description":"made by passgen"}}"#,
    );
    // simpkv keeps a binary String in base64; text that came as a binary String
    // (a fact) is text.
    write(
        root,
        "globals/keytab",
        r#"{"value":"/wAB","encoding":"base64","original_encoding":"ASCII-8BIT","metadata":{}}"#,
    );
    write(
        root,
        "globals/certname",
        r#"{"value":"d2ViMDE=","encoding":"base64","original_encoding":"ASCII-8BIT","metadata":{}}"#,
    );
    write(
        root,
        "environments/production/app/settings",
        r#"{"value":{"tls":true,"peers":["a","b"],"ratio":0.5,"none":null},"metadata":null}"#,
    );
    std::os::unix::fs::symlink("/etc/passwd", root.join("globals/link")).unwrap();
    let url = format!("simpkv://{}", root.display());
    let tree = SimpkvTree::open(&url).unwrap();
    (dir, tree)
}

#[test]
fn values_read_as_libkv_stores_them_and_metadata_is_counted() {
    let (_dir, tree) = tree();
    let listed = tree.list(&Key::dir("/").unwrap()).unwrap();
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "environments/production/app/password",
            "environments/production/app/settings",
            "globals/app/port",
            "globals/certname",
            "globals/keytab",
        ]
    );
    let get = |key: &str| tree.get(&Key::new(key).unwrap()).unwrap().unwrap();
    assert_eq!(get("/globals/app/port"), encoded(Value::Int(8080)));
    assert_eq!(get("/environments/production/app/password"), b"s3cret");
    assert_eq!(get("/globals/keytab"), vec![0xff, 0x00, 0x01]);
    assert_eq!(get("/globals/certname"), b"web01");
    assert_eq!(
        codec::decode(get("/environments/production/app/settings")),
        Value::hash([
            ("tls", Value::Bool(true)),
            (
                "peers",
                Value::Array(vec![Value::from("a"), Value::from("b")])
            ),
            ("ratio", Value::Float(0.5)),
            ("none", Value::Undef),
        ])
    );
    assert_eq!(tree.get(&Key::new("/globals/link").unwrap()).unwrap(), None);
    // One key has metadata, read by the listing and by get.
    assert_eq!(tree.with_metadata(), 1);
}

#[test]
fn it_is_read_only_and_says_what_is_not_a_simpkv_value() {
    let (dir, tree) = tree();
    let key = Key::new("/globals/app/port").unwrap();
    assert_eq!(
        tree.put(&key, b"x").unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(
        tree.delete(&key).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    write(dir.path(), "globals/junk", "not json");
    let e = tree.get(&Key::new("/globals/junk").unwrap()).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "get /globals/junk on simpkv://{} failed: the file is not a simpkv value",
            dir.path().display()
        )),
        "{e}"
    );
    for bad in ["simpkv://relative/path", "simpkv:///no/such/dir"] {
        assert_eq!(
            SimpkvTree::open(bad).err().unwrap().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
