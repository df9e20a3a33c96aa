//! Hostile keys: strings biased toward the edges of the key rule. Most are made of
//! components joined by separators, each drawn from valid names, names that are
//! almost valid, the store's own file names and bytes that are no key's.

use crate::rng::Rng;

const KEY_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";

/// Names at the edges: dots, encodings of dots and slashes, other separators, the
/// store's lock and temp file names, control characters and look-alikes.
const EDGE_COMPONENTS: &[&str] = &[
    ".",
    "..",
    "...",
    ".a",
    "a.",
    "",
    "%2e%2e",
    "%2e",
    "%2f",
    "..%2f..",
    "\\",
    "..\\..",
    "a\\b",
    "@",
    "a@b",
    ".libkv@lock",
    ".libkv@lock.tmp",
    ".k@1.0.tmp",
    ".k@4294967295.18446744073709551615.tmp",
    "k@",
    "~",
    "*",
    "?",
    "a?b=1",
    "#",
    " ",
    "a b",
    "\t",
    "\0",
    "a\0b",
    "\n",
    "\r\n",
    "\u{1b}[2J",
    "\u{7f}",
    "é",
    "\u{202e}txt",
    "\u{ff0e}\u{ff0e}",
    "\u{2215}",
    "\u{2024}\u{2024}",
    "\u{fffd}",
    "\u{feff}",
    "CON",
    "nul",
    ":",
    "-",
    "--",
    "_",
    "-rf",
    "$HOME",
    "`id`",
];

const SEPARATORS: &[&str] = &["/", "/", "/", "/", "/", "/", "//", "/./", "/../", "\\", ""];

/// One component: usually valid, often an edge name, sometimes long or random.
pub fn component(rng: &mut Rng) -> String {
    match rng.weighted(&[45, 30, 10, 10, 5]) {
        0 => {
            let len = 1 + rng.below(12);
            valid_name(rng, len)
        }
        1 => rng.pick(EDGE_COMPONENTS).to_owned(),
        2 => {
            let len = rng.pick(&[200, 254, 255, 256, 300]);
            valid_name(rng, len)
        }
        3 => String::from_utf8_lossy(&component_bytes(rng)).into_owned(),
        _ => {
            let len = 1 + rng.below(6);
            let mut c = valid_name(rng, len);
            c.insert_str(rng.below(c.len() + 1), rng.pick(EDGE_COMPONENTS));
            c
        }
    }
}

fn valid_name(rng: &mut Rng, len: usize) -> String {
    (0..len).map(|_| rng.pick(KEY_CHARS) as char).collect()
}

/// A component as raw bytes, for the byte-level check: valid names, control bytes,
/// NUL, '/', and bytes that are not UTF-8.
pub fn component_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => rng.pick(&[0, 254, 255, 256]),
        _ => 1 + rng.below(10),
    };
    (0..len)
        .map(|_| match rng.below(4) {
            0 => rng.next_u64() as u8,
            1 => rng.pick(b"\0\x01\x1f\x7f\x80\xc0\xc3\xff/@.\\%"),
            _ => rng.pick(KEY_CHARS),
        })
        .collect()
}

/// A whole key or directory argument.
pub fn key(rng: &mut Rng) -> String {
    let mut s = String::new();
    match rng.below(20) {
        0 => {}                                                  // empty
        1 => s.push_str(rng.pick(&["a", ".", "..", "~", "\\"])), // relative
        _ => s.push('/'),
    }
    if rng.below(8) == 0 {
        return long_key(rng, s);
    }
    let parts = rng.below(6);
    for i in 0..parts {
        if i > 0 {
            s.push_str(rng.pick(SEPARATORS));
        }
        s.push_str(&component(rng));
    }
    if rng.below(5) == 0 {
        s.push_str(rng.pick(&["/", "//", "/.", "/..", "\\"]));
    }
    s
}

/// A key around the 1024-byte limit, made of valid components around 255 bytes.
fn long_key(rng: &mut Rng, mut s: String) -> String {
    let target = rng.pick(&[1022, 1023, 1024, 1025, 1026, 2048]);
    let part = rng.pick(&[8, 100, 254, 255, 256]);
    while s.len() < target {
        if !s.ends_with('/') && !s.is_empty() {
            s.push('/');
        }
        let n = part.min(target - s.len()).max(1);
        s.push_str(&valid_name(rng, n));
    }
    if rng.below(4) == 0 {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle;

    #[test]
    fn keys_reach_both_sides_of_the_rule() {
        let mut rng = Rng::new(3);
        let (mut valid, mut invalid, mut long) = (0, 0, 0);
        for _ in 0..5000 {
            let k = key(&mut rng);
            if oracle::key(k.as_bytes()) {
                valid += 1;
            } else {
                invalid += 1;
            }
            if (1020..=1030).contains(&k.len()) {
                long += 1;
            }
        }
        assert!(
            valid > 500 && invalid > 500,
            "{valid} valid, {invalid} invalid"
        );
        assert!(long > 100, "{long} keys near the length limit");
    }
}
