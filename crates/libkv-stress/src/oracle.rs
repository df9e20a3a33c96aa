//! The key rule, written again from its statement in DESIGN.md, apart from the
//! core's validation so that the two can be compared:
//!
//! a key matches `^/[A-Za-z0-9._:\-/]*$`, has no `.`, `..` or empty component and
//! does not end with `/`; a component is at most 255 bytes, a key at most 1024. A
//! directory is `/`, a key, or a key followed by one `/` (which is dropped).

const MAX_KEY: usize = 1024;
const MAX_COMPONENT: usize = 255;

fn allowed(b: u8) -> bool {
    matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'-' | b'/')
}

fn component_shape(c: &[u8]) -> bool {
    !c.is_empty() && c.len() <= MAX_COMPONENT && c != b"." && c != b".."
}

/// A single component that a key may have.
pub fn component(c: &[u8]) -> bool {
    component_shape(c) && c.iter().all(|&b| allowed(b) && b != b'/')
}

/// Whether `s` is a valid key.
pub fn key(s: &[u8]) -> bool {
    s.len() <= MAX_KEY
        && s.first() == Some(&b'/')
        && s.iter().all(|&b| allowed(b))
        && s[1..].split(|&b| b == b'/').all(component_shape)
}

/// The directory `s` names (`/a/` is `/a`), or `None` when it is not a valid one.
pub fn dir(s: &[u8]) -> Option<&[u8]> {
    if s == b"/" {
        return Some(s);
    }
    let body = s.strip_suffix(b"/").unwrap_or(s);
    // Length and characters are judged on what was given, trailing '/' included.
    (s.len() <= MAX_KEY && key(body)).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["/a", "/a/b", "/...", "/.a/b.", "/A-z_0.9:x"] {
            assert!(key(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "a", "/", "/a/", "//a", "/a//b", "/.", "/..", "/a/./b", "/a/../b", "/a b", "/a@b",
            "/a\\b", "/%2e%2e", "/é",
        ] {
            assert!(!key(bad.as_bytes()), "{bad:?}");
        }
        assert!(key(format!("/{}", "a".repeat(255)).as_bytes()));
        assert!(!key(format!("/{}", "a".repeat(256)).as_bytes()));
        let long = format!("/{}/{}", "a".repeat(255), "b".repeat(767));
        assert_eq!(long.len(), 1024);
        assert!(!key(long.as_bytes()), "a component over 255 bytes");
        let at_limit = format!("{}/abc", "/abcdefghij".repeat(92)) + "/xyz";
        assert_eq!(at_limit.len(), 1020);
        assert!(key(at_limit.as_bytes()));
        assert!(!key(format!("{at_limit}/abcd").as_bytes()));
    }

    #[test]
    fn dirs() {
        assert_eq!(dir(b"/"), Some(&b"/"[..]));
        assert_eq!(dir(b"/a/"), Some(&b"/a"[..]));
        assert_eq!(dir(b"/a"), Some(&b"/a"[..]));
        for bad in ["", "//", "/a//", "/../", "a/", "/./"] {
            assert_eq!(dir(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn components() {
        assert!(component(b"abc"));
        assert!(component(b"..."));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a@b", b"\xff", b"a\0"] {
            assert!(!component(bad), "{bad:?}");
        }
    }
}
