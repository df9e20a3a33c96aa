//! Go's standard library as Consul's answers show it: `time.ParseDuration`
//! with its error texts, `time.Duration.String`, and `url.Values.Encode`.

/// Nanoseconds in a second.
pub(crate) const SECOND: i64 = 1_000_000_000;

/// Go's `time.ParseDuration`: the duration in nanoseconds, or Go's error
/// text (`time: invalid duration "x"`, `time: missing unit in duration
/// "5"`, `time: unknown unit "x" in duration "5x"`).
pub(crate) fn parse_duration(original: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", quote(original));
    let mut s = original;
    let mut negative = false;
    if let Some(first) = s.chars().next() {
        if first == '-' || first == '+' {
            negative = first == '-';
            s = &s[1..];
        }
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        // [0-9]*: overflow is an invalid duration, as Go's leadingInt.
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut whole: u64 = 0;
        for b in s[..digits].bytes() {
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(b - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        s = &s[digits..];
        // (\.[0-9]*)?: digits past what fits are consumed and dropped.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut fraction_digits = 0;
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            fraction_digits = s.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for b in s[..fraction_digits].bytes() {
                if overflow {
                    continue;
                }
                if fraction > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(b - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            s = &s[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!(
                "time: missing unit in duration {}",
                quote(original)
            ));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit_name),
                    quote(original)
                ))
            }
        };
        if whole > LIMIT / unit {
            return Err(invalid());
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // As Go: through float64, truncated.
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(invalid());
            }
        }
        total += value;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if negative {
        // -(1<<63) is the one value that fits only when negative.
        return Ok((total as i64).wrapping_neg());
    }
    if total > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// Go's `time` package quoting of a string in its error texts.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if (c as u32) < 0x20 || (c as u32) >= 0x80 {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String`: `0s`, `1.5µs`, `100ms`, `10s`, `1m30s`,
/// `24h0m0s`.
pub(crate) fn format_duration(nanos: i64) -> String {
    let negative = nanos < 0;
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < SECOND as u64 {
        let (precision, unit) = match u {
            0 => return "0s".to_owned(),
            1..=999 => (0, "ns"),
            1_000..=999_999 => (3, "\u{b5}s"),
            _ => (6, "ms"),
        };
        let fraction = fraction_text(&mut u, precision);
        out.push_str(&u.to_string());
        out.push_str(&fraction);
        out.push_str(unit);
    } else {
        let fraction = fraction_text(&mut u, 9);
        let seconds = format!("{}{fraction}s", u % 60);
        u /= 60;
        if u > 0 {
            let minutes = format!("{}m", u % 60);
            u /= 60;
            if u > 0 {
                out.push_str(&format!("{u}h"));
            }
            out.push_str(&minutes);
        }
        out.push_str(&seconds);
    }
    if negative {
        out.insert(0, '-');
    }
    out
}

/// Go's `fmtFrac`: the last `precision` digits of `v` as a fraction without
/// trailing zeros (nothing when they are all zero); `v` keeps the rest.
fn fraction_text(v: &mut u64, precision: u32) -> String {
    let mut digits = Vec::new();
    let mut printed = false;
    for _ in 0..precision {
        let digit = *v % 10;
        printed = printed || digit != 0;
        if printed {
            digits.push(b'0' + digit as u8);
        }
        *v /= 10;
    }
    if !printed {
        return String::new();
    }
    digits.push(b'.');
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

/// Go's `url.Values.Encode`: pairs sorted by key (values of one key in
/// their order), each side `url.QueryEscape`d, joined by `&`.
pub(crate) fn encode_query(pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    // A stable sort keeps the order of the values of one key.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(key, value)| format!("{}={}", query_escape(key), query_escape(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        for (text, nanos) in [
            ("0", 0),
            ("-0", 0),
            ("5s", 5 * SECOND),
            ("1m30s", 90 * SECOND),
            ("1.5h", 5400 * SECOND),
            ("-2ms", -2_000_000),
            ("10us", 10_000),
            ("3µs", 3_000),
            ("3μs", 3_000),
            (".5s", SECOND / 2),
            ("1.s", SECOND),
            ("+15s", 15 * SECOND),
            ("1h1m1s1ms1us1ns", 3_661_001_001_001),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("0.000000001s", 1),
        ] {
            assert_eq!(parse_duration(text), Ok(nanos), "{text}");
        }
    }

    #[test]
    fn errors_read_like_go() {
        for (text, error) in [
            ("", r#"time: invalid duration """#),
            ("5", r#"time: missing unit in duration "5""#),
            ("1m30", r#"time: missing unit in duration "1m30""#),
            ("s", r#"time: invalid duration "s""#),
            (".s", r#"time: invalid duration ".s""#),
            ("+", r#"time: invalid duration "+""#),
            ("--1s", r#"time: invalid duration "--1s""#),
            ("1 s", r#"time: unknown unit " s" in duration "1 s""#),
            ("5x", r#"time: unknown unit "x" in duration "5x""#),
            (
                "9223372036854775808ns",
                r#"time: invalid duration "9223372036854775808ns""#,
            ),
            ("3000000h", r#"time: invalid duration "3000000h""#),
            ("é", r#"time: invalid duration "\xc3\xa9""#),
        ] {
            assert_eq!(parse_duration(text), Err(error.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn formats_like_go() {
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_234_567, "1.234567ms"),
            (10 * SECOND, "10s"),
            (SECOND + SECOND / 2, "1.5s"),
            (90 * SECOND, "1m30s"),
            (3600 * SECOND, "1h0m0s"),
            (86400 * SECOND, "24h0m0s"),
            (-5 * SECOND, "-5s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(format_duration(nanos), text, "{nanos}");
        }
    }

    #[test]
    fn encodes_like_url_values() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            encode_query(&pairs(&[("cas", "0"), ("acquire", "a b/c"), ("cas", "1")])),
            "acquire=a+b%2Fc&cas=0&cas=1"
        );
        assert_eq!(encode_query(&pairs(&[("release", "")])), "release=");
    }
}
