//! Keys: one validation for every store, run before any I/O.
//!
//! A key matches `^/[A-Za-z0-9._:\-/]*$`, has no `.` or `..` component, no empty
//! component (`//`) and does not end with `/`. A directory argument (`list`,
//! `deletetree`, ...) follows the same rule, except that it may be `/` itself and may
//! end with `/`, which is dropped. Components are at most 255 bytes (a file name on
//! every file system) and keys at most 1024 bytes.

use std::fmt;

use crate::error::{Error, Result};

pub const MAX_KEY_LEN: usize = 1024;
pub const MAX_COMPONENT_LEN: usize = 255;

/// A validated key or directory, always starting with `/`, never ending with `/`
/// unless it is the root directory `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates a key that names a value.
    pub fn new(key: &str) -> Result<Key> {
        validate(key, false)?;
        Ok(Key(key.to_owned()))
    }

    /// Validates a directory: a key, `/`, or a key followed by `/`.
    pub fn dir(dir: &str) -> Result<Key> {
        validate(dir, true)?;
        let trimmed = if dir.len() > 1 {
            dir.strip_suffix('/').unwrap_or(dir)
        } else {
            dir
        };
        Ok(Key(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The components between the slashes; none for the root.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> + Clone {
        self.0[1..].split('/').filter(|c| !c.is_empty())
    }

    /// The key of `relative` below this directory.
    pub fn join(&self, relative: &str) -> String {
        if self.is_root() {
            format!("/{relative}")
        } else {
            format!("{}/{relative}", self.0)
        }
    }

    /// The prefix every key below this directory starts with: `/a/` for `/a`, `/` for `/`.
    pub fn dir_prefix(&self) -> String {
        self.join("")
    }

    /// Whether `relative`, a name a store holds below this directory, is a key's: the
    /// only names a store lists. Other clients of a store can write names no key can
    /// have (`sp ace`, `a//b`, `a/`), which no libkv call could then read.
    pub fn lists(&self, relative: &str) -> bool {
        let len = if self.is_root() { 0 } else { self.0.len() } + 1 + relative.len();
        len <= MAX_KEY_LEN
            && relative
                .split('/')
                .all(|c| is_valid_component(c.as_bytes()))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The text of a key or directory given as bytes (a binding's string): its UTF-8,
/// or [`not_text`]'s error.
pub fn text(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| not_text(bytes))
}

/// The error for a key or directory given as bytes that are not text, shown as
/// well as they can be.
pub fn not_text(bytes: &[u8]) -> Error {
    invalid(
        &String::from_utf8_lossy(bytes),
        format!("it is not valid UTF-8; {RULE}"),
    )
}

/// True when `c` is a valid single component: what a file store may list as a key.
pub fn is_valid_component(c: &[u8]) -> bool {
    !c.is_empty()
        && c.len() <= MAX_COMPONENT_LEN
        && c != b"."
        && c != b".."
        && c.iter().all(|&b| is_key_byte(b) && b != b'/')
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'/')
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidKey {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

const RULE: &str = "keys look like /dir/name and use only A-Z a-z 0-9 . _ : - /";

fn validate(key: &str, dir: bool) -> Result<()> {
    if key.is_empty() {
        return Err(invalid(key, format!("it is empty; {RULE}")));
    }
    if !key.starts_with('/') {
        return Err(invalid(key, format!("it must start with '/'; {RULE}")));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(
            key,
            format!("it is {} bytes long, the limit is {MAX_KEY_LEN}", key.len()),
        ));
    }
    if let Some(pos) = key.bytes().position(|b| !is_key_byte(b)) {
        let ch = key[pos..].chars().next().unwrap_or('?');
        return Err(invalid(
            key,
            format!("character {ch:?} at byte {pos} is not allowed; {RULE}"),
        ));
    }
    if key == "/" {
        return if dir {
            Ok(())
        } else {
            Err(invalid(
                key,
                "'/' is a directory, a key needs a name after it",
            ))
        };
    }
    if !dir && key.ends_with('/') {
        return Err(invalid(key, "a key must not end with '/'"));
    }
    let body = if dir {
        key.strip_suffix('/').unwrap_or(key)
    } else {
        key
    };
    for component in body[1..].split('/') {
        match component {
            "" => return Err(invalid(key, "it has an empty component ('//')")),
            "." | ".." => {
                return Err(invalid(
                    key,
                    format!("'{component}' components are not allowed"),
                ))
            }
            c if c.len() > MAX_COMPONENT_LEN => {
                return Err(invalid(
                    key,
                    format!("a component is longer than {MAX_COMPONENT_LEN} bytes"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_keys() {
        for k in [
            "/a",
            "/a/b/c",
            "/A-Z_a.z:0-9",
            "/gen_passwd/host.example.com",
            "/.hidden",
            "/a/...",
            "/a.b/..c/c..",
            "/x:y/1.2.3",
        ] {
            let key = Key::new(k).unwrap_or_else(|e| panic!("{k}: {e}"));
            assert_eq!(key.as_str(), k);
        }
    }

    #[test]
    fn rejects_invalid_keys_naming_them() {
        let cases = [
            ("", "empty"),
            ("a", "start with '/'"),
            ("/", "directory"),
            ("/a/", "end with '/'"),
            ("/a//b", "empty component"),
            ("/.", "'.' components"),
            ("/..", "'..' components"),
            ("/a/../b", "'..' components"),
            ("/a/./b", "'.' components"),
            ("/a b", "not allowed"),
            ("/a\0b", "not allowed"),
            ("/a\\b", "not allowed"),
            ("/a*", "not allowed"),
            ("/a?x=1", "not allowed"),
            ("/caf\u{e9}", "not allowed"),
            ("/\u{1F600}", "not allowed"),
            ("/a\nb", "not allowed"),
            ("/a~", "not allowed"),
            ("/a@b", "not allowed"),
        ];
        for (k, why) in cases {
            let err = Key::new(k).expect_err(k).to_string();
            assert!(err.contains(why), "{k:?}: {err}");
            assert!(err.contains(&format!("{k:?}")), "{k:?} not named in: {err}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_an_invalid_key() {
        assert_eq!(text(b"/a/b").unwrap(), "/a/b");
        let err = text(b"/a\xffb").unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid key \"/a\u{fffd}b\": it is not valid UTF-8"),
            "{msg}"
        );
    }

    #[test]
    fn non_ascii_error_names_the_character() {
        let err = Key::new("/ключ").unwrap_err().to_string();
        assert!(err.contains("'к'"), "{err}");
    }

    #[test]
    fn length_limits() {
        let long_component = format!("/{}", "a".repeat(256));
        assert!(Key::new(&long_component).is_err());
        assert!(Key::new(&format!("/{}", "a".repeat(255))).is_ok());
        let long_key = "/abcdefgh".repeat(114); // 1026 bytes
        let err = Key::new(&long_key).unwrap_err().to_string();
        assert!(err.contains("limit is 1024"), "{err}");
    }

    #[test]
    fn dirs_accept_root_and_trailing_slash() {
        assert_eq!(Key::dir("/").unwrap().as_str(), "/");
        assert!(Key::dir("/").unwrap().is_root());
        assert_eq!(Key::dir("/a/").unwrap().as_str(), "/a");
        assert_eq!(Key::dir("/a/b").unwrap().as_str(), "/a/b");
        assert!(Key::dir("//").is_err());
        assert!(Key::dir("/a//").is_err());
        assert!(Key::dir("/../").is_err());
        assert!(Key::dir("").is_err());
        assert!(Key::dir("a/").is_err());
    }

    #[test]
    fn components_join_and_prefix() {
        let k = Key::new("/a/b/c").unwrap();
        assert_eq!(k.components().collect::<Vec<_>>(), ["a", "b", "c"]);
        let root = Key::dir("/").unwrap();
        assert_eq!(root.components().count(), 0);
        assert_eq!(root.join("x/y"), "/x/y");
        assert_eq!(root.dir_prefix(), "/");
        let d = Key::dir("/a/").unwrap();
        assert_eq!(d.join("x"), "/a/x");
        assert_eq!(d.dir_prefix(), "/a/");
    }

    #[test]
    fn only_names_that_are_keys_are_listed() {
        let d = Key::dir("/a").unwrap();
        let root = Key::dir("/").unwrap();
        for rel in ["b", "b/c", ".hidden", "x:y-z_1.2"] {
            assert!(d.lists(rel), "{rel}");
            assert!(root.lists(rel), "{rel}");
            assert!(Key::new(&d.join(rel)).is_ok(), "{rel}");
        }
        for rel in [
            "",
            "sp ace",
            "b/",
            "/b",
            "b//c",
            "..",
            "b/./c",
            "caf\u{e9}",
            ".x@tmp",
        ] {
            assert!(!d.lists(rel), "{rel:?}");
            assert!(Key::new(&d.join(rel)).is_err(), "{rel:?}");
        }
        let longest = "b".repeat(MAX_KEY_LEN - "/a/".len());
        assert!(d.lists(&longest.replace("bbbb", "bbb/")));
        assert!(!d.lists(&format!("{longest}b").replace("bbbb", "bbb/")));
        assert!(root.lists("c/".repeat(511).trim_end_matches('/')));
    }

    #[test]
    fn component_check_matches_key_rules() {
        assert!(is_valid_component(b"abc.def"));
        assert!(!is_valid_component(b""));
        assert!(!is_valid_component(b"."));
        assert!(!is_valid_component(b".."));
        assert!(!is_valid_component(b"a/b"));
        assert!(!is_valid_component(b".x@tmp"));
        assert!(!is_valid_component(".libkv@lock".as_bytes()));
        assert!(!is_valid_component(&[b'a'; 256]));
    }
}
