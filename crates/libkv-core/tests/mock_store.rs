//! The conformance suite on `mock://`.

mod common;

use std::sync::Arc;

use libkv_core::{open, OpenOptions, Store};

fn mock() -> (Arc<dyn Store>, ()) {
    (open("mock://test", &OpenOptions::default()).unwrap(), ())
}

conformance_tests!(coordination mock());

#[test]
fn each_open_is_a_new_empty_store() {
    let (a, _) = mock();
    a.put(&common::k("/x"), b"1").unwrap();
    let (b, _) = mock();
    assert_eq!(b.get(&common::k("/x")).unwrap(), None);
    assert_eq!(a.provider(), "mock");
    assert_eq!(a.url(), "mock://test");
}

#[test]
fn keys_below_keys_are_allowed() {
    let (store, _) = mock();
    store.put(&common::k("/a"), b"parent").unwrap();
    store.put(&common::k("/a/b"), b"child").unwrap();
    assert_eq!(
        store.get(&common::k("/a")).unwrap().as_deref(),
        Some(&b"parent"[..])
    );
    let listed = store.list(&common::d("/a")).unwrap();
    assert_eq!(listed, vec![("b".to_owned(), b"child".to_vec())]);
}
