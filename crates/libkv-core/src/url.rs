//! Store URLs: which store, where, and under which key prefix.
//!
//! | URL                                         | store                        |
//! |---------------------------------------------|------------------------------|
//! | `mock://` or `mock://NAME`                  | in memory                    |
//! | `file:///ABSOLUTE/ROOT`                     | a directory tree             |
//! | `legacy-simp6://`                           | SIMP 6's `simp_autofiles`    |
//! | `consul[+ssl[+verify\|+noverify]]://HOST:PORT/PREFIX` | Consul KV          |
//! | `etcd[+ssl]://HOST:PORT[,HOST:PORT...]/PREFIX` | etcd v3                   |
//! | `zookeeper://HOST:PORT[,HOST:PORT...]/PREFIX` | ZooKeeper 3.5+          |
//! | `sqlite:///ABSOLUTE/FILE.db`                | one SQLite file              |
//!
//! Credentials never go in a URL: a URL with `user:password@` is refused (and
//! masked in the error), as are query strings, which could carry a token.

use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::key::Key;

pub const CONSUL_DEFAULT_PORT: u16 = 8500;
pub const ETCD_DEFAULT_PORT: u16 = 2379;
pub const ZOOKEEPER_DEFAULT_PORT: u16 = 2181;

const FORMS: &str = "use mock://[NAME], file:///ROOT, legacy-simp6://, \
consul[+ssl|+ssl+verify|+ssl+noverify]://HOST[:PORT]/PREFIX, \
etcd[+ssl]://HOST[:PORT][,HOST[:PORT]...]/PREFIX, \
zookeeper://HOST[:PORT][,HOST[:PORT]...]/PREFIX or sqlite:///ABSOLUTE/FILE.db";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsulTls {
    /// Plain HTTP.
    None,
    /// HTTPS, verifying the server against the system or the `ca_file` CA.
    Verify,
    /// HTTPS without verifying the server certificate.
    NoVerify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Mock {
        name: String,
    },
    File {
        root: PathBuf,
    },
    LegacySimp6,
    Consul {
        tls: ConsulTls,
        endpoint: Endpoint,
        prefix: Key,
    },
    Etcd {
        tls: bool,
        endpoints: Vec<Endpoint>,
        prefix: Key,
    },
    Zookeeper {
        endpoints: Vec<Endpoint>,
        prefix: Key,
    },
    Sqlite {
        path: PathBuf,
    },
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl> {
        let bad = |reason: String| Error::InvalidUrl {
            url: mask(url),
            reason,
        };
        if url.trim() != url {
            return Err(bad(
                "it starts or ends with whitespace, which would name another store; remove it"
                    .into(),
            ));
        }
        if url.contains(|c: char| c.is_control()) {
            return Err(bad(
                "it contains a control character (a newline, a tab, ...); remove it".into(),
            ));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(format!("it has no '://'; {FORMS}")));
        };
        if rest.contains(['?', '#']) {
            return Err(bad(
                "query strings and fragments are not supported; pass options in the \
                 options hash and credentials in the auth option"
                    .into(),
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the URL; pass them in the auth option".into(),
            ));
        }
        match scheme {
            "mock" => {
                if !path.is_empty() {
                    return Err(bad(
                        "a mock URL is mock:// or mock://NAME, with no path".into()
                    ));
                }
                if !authority
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                {
                    return Err(bad("a mock store NAME uses only A-Z a-z 0-9 . _ -".into()));
                }
                Ok(StoreUrl::Mock {
                    name: authority.to_owned(),
                })
            }
            "file" => {
                if !(authority.is_empty() || authority == "localhost") {
                    return Err(bad(format!(
                        "a file store is on this machine: use file:///ABSOLUTE/ROOT, not host {authority:?}"
                    )));
                }
                Ok(StoreUrl::File {
                    root: parse_local_path(path, LocalPath::FileRoot).map_err(bad)?,
                })
            }
            "legacy-simp6" => {
                if !authority.is_empty() || !(path.is_empty() || path == "/") {
                    return Err(bad("legacy-simp6:// takes no host or path: its root is \
                         <vardir>/simp/environments/<environment>/simp_autofiles"
                        .into()));
                }
                Ok(StoreUrl::LegacySimp6)
            }
            "consul" | "consul+ssl" | "consul+ssl+verify" | "consul+ssl+noverify" => {
                let tls = match scheme {
                    "consul" => ConsulTls::None,
                    "consul+ssl+noverify" => ConsulTls::NoVerify,
                    _ => ConsulTls::Verify,
                };
                let endpoint = parse_endpoint(authority, CONSUL_DEFAULT_PORT).map_err(bad)?;
                Ok(StoreUrl::Consul {
                    tls,
                    endpoint,
                    prefix: parse_prefix(path).map_err(bad)?,
                })
            }
            "etcd" | "etcd+ssl" => Ok(StoreUrl::Etcd {
                tls: scheme == "etcd+ssl",
                endpoints: parse_endpoints(authority, ETCD_DEFAULT_PORT).map_err(bad)?,
                prefix: parse_prefix(path).map_err(bad)?,
            }),
            "zookeeper" => Ok(StoreUrl::Zookeeper {
                endpoints: parse_endpoints(authority, ZOOKEEPER_DEFAULT_PORT).map_err(bad)?,
                prefix: parse_prefix(path).map_err(bad)?,
            }),
            "sqlite" => {
                if !(authority.is_empty() || authority == "localhost") {
                    return Err(bad(format!(
                        "an SQLite store is a file on this machine: use sqlite:///ABSOLUTE/FILE.db, \
                         not host {authority:?}"
                    )));
                }
                let path = parse_local_path(path, LocalPath::SqliteFile).map_err(bad)?;
                Ok(StoreUrl::Sqlite { path })
            }
            other => Err(bad(format!("unknown scheme {other:?}; {FORMS}"))),
        }
    }

    /// The provider name of the store this URL selects.
    pub fn provider(&self) -> &'static str {
        match self {
            StoreUrl::Mock { .. } => "mock",
            StoreUrl::File { .. } => "file",
            StoreUrl::LegacySimp6 => "legacy-simp6",
            StoreUrl::Consul { .. } => "consul",
            StoreUrl::Etcd { .. } => "etcd",
            StoreUrl::Zookeeper { .. } => "zookeeper",
            StoreUrl::Sqlite { .. } => "sqlite",
        }
    }
}

/// The canonical form of the URL. It never holds a secret: URLs with credentials
/// are refused by [`StoreUrl::parse`].
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Mock { name } => write!(f, "mock://{name}"),
            StoreUrl::File { root } => write!(f, "file://{}", root.display()),
            StoreUrl::LegacySimp6 => f.write_str("legacy-simp6://"),
            StoreUrl::Consul {
                tls,
                endpoint,
                prefix,
            } => {
                let scheme = match tls {
                    ConsulTls::None => "consul",
                    ConsulTls::Verify => "consul+ssl",
                    ConsulTls::NoVerify => "consul+ssl+noverify",
                };
                write!(f, "{scheme}://{endpoint}{}", prefix_str(prefix))
            }
            StoreUrl::Etcd {
                tls,
                endpoints,
                prefix,
            } => {
                let scheme = if *tls { "etcd+ssl" } else { "etcd" };
                write!(
                    f,
                    "{scheme}://{}{}",
                    EndpointList(endpoints),
                    prefix_str(prefix)
                )
            }
            StoreUrl::Zookeeper { endpoints, prefix } => {
                write!(
                    f,
                    "zookeeper://{}{}",
                    EndpointList(endpoints),
                    prefix_str(prefix)
                )
            }
            StoreUrl::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
        }
    }
}

/// Endpoints as a URL lists them: `HOST:PORT,HOST:PORT`.
struct EndpointList<'a>(&'a [Endpoint]);

impl fmt::Display for EndpointList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

fn prefix_str(prefix: &Key) -> &str {
    if prefix.is_root() {
        ""
    } else {
        prefix.as_str()
    }
}

/// A URL as it may be shown in a message: user information and query strings,
/// which could hold a password or a token, are replaced by `***`.
pub fn mask(url: &str) -> String {
    let (head, query) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], Some(&url[i..i + 1])),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(sep) = query {
        out.push_str(sep);
        out.push_str("***");
    }
    out
}

/// What a local path in a URL names.
#[derive(Clone, Copy)]
enum LocalPath {
    /// `file:///ROOT`: a directory.
    FileRoot,
    /// `sqlite:///FILE.db`: a database file.
    SqliteFile,
}

fn parse_local_path(path: &str, kind: LocalPath) -> std::result::Result<PathBuf, String> {
    let noun = match kind {
        LocalPath::FileRoot => "root path",
        LocalPath::SqliteFile => "database path",
    };
    if path.is_empty() {
        return Err(match kind {
            LocalPath::FileRoot => "a file store needs an absolute root: file:///ABSOLUTE/ROOT",
            LocalPath::SqliteFile => {
                "an SQLite store needs an absolute file: sqlite:///ABSOLUTE/FILE.db"
            }
        }
        .into());
    }
    let bytes = percent_decode(path)?;
    if bytes.iter().any(|b| b.is_ascii_control()) {
        return Err(format!(
            "the {noun} contains a control character (NUL, a newline, ...)"
        ));
    }
    if bytes
        .split(|&b| b == b'/')
        .any(|segment| segment.trim_ascii() != segment)
    {
        return Err(format!(
            "a name in the {noun} starts or ends with whitespace, which would name \
             another one than the one meant; remove it"
        ));
    }
    if bytes
        .split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
    {
        return Err(format!("the {noun} must not have '.' or '..' components"));
    }
    let clean: PathBuf = PathBuf::from(std::ffi::OsString::from_vec(bytes))
        .components()
        .collect();
    if clean == Path::new("/") {
        return Err(match kind {
            LocalPath::FileRoot => "'/' cannot be a store root; choose a directory for the store",
            LocalPath::SqliteFile => {
                "'/' is a directory; name the database file: sqlite:///ABSOLUTE/FILE.db"
            }
        }
        .into());
    }
    if matches!(kind, LocalPath::SqliteFile) && path.ends_with('/') {
        return Err(format!(
            "the {noun} ends with '/', which names a directory; name the database file"
        ));
    }
    Ok(clean)
}

fn percent_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i} of the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// `HOST[:PORT][,HOST[:PORT]...]`: the members of one cluster.
fn parse_endpoints(
    authority: &str,
    default_port: u16,
) -> std::result::Result<Vec<Endpoint>, String> {
    authority
        .split(',')
        .map(|a| parse_endpoint(a, default_port))
        .collect()
}

fn parse_endpoint(authority: &str, default_port: u16) -> std::result::Result<Endpoint, String> {
    if authority.is_empty() {
        return Err("it names no HOST[:PORT]".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {authority:?}"))?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(format!("bad IPv6 address in {authority:?}"));
        }
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("unexpected {p:?} after ']' in {authority:?}")),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return Err(format!("bad host in {authority:?}"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("bad port in {authority:?}: use 1-65535")),
            Ok(p) => p,
        },
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

fn parse_prefix(path: &str) -> std::result::Result<Key, String> {
    if path.is_empty() {
        return Ok(Key::dir("/").expect("root is a valid dir"));
    }
    Key::dir(path).map_err(|e| match e {
        Error::InvalidKey { reason, .. } => format!("bad PREFIX {path:?}: {reason}"),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn mock_urls() {
        assert_eq!(
            StoreUrl::parse("mock://").unwrap(),
            StoreUrl::Mock { name: "".into() }
        );
        assert_eq!(
            StoreUrl::parse("mock://tests-1").unwrap(),
            StoreUrl::Mock {
                name: "tests-1".into()
            }
        );
        assert!(StoreUrl::parse("mock://a/b").is_err());
        assert!(StoreUrl::parse("mock://a b").is_err());
    }

    #[test]
    fn file_urls() {
        let u = StoreUrl::parse("file:///var/lib/libkv").unwrap();
        assert_eq!(
            u,
            StoreUrl::File {
                root: "/var/lib/libkv".into()
            }
        );
        assert_eq!(u.to_string(), "file:///var/lib/libkv");
        assert_eq!(u.provider(), "file");
        assert_eq!(
            StoreUrl::parse("file://localhost/srv/kv/").unwrap(),
            StoreUrl::File {
                root: "/srv/kv".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("file:///srv/my%20kv").unwrap(),
            StoreUrl::File {
                root: "/srv/my kv".into()
            }
        );
        for bad in [
            "file://",
            "file:///",
            "file://host/x",
            "file:///a/../b",
            "file:///a/./b",
            "file:///a%2",
            "file:///a%zz",
            "file:///a%00b",
            "file:///srv/kv ",
            " file:///srv/kv",
            "file:///srv/kv\n",
            "file:///srv/kv%20",
            "file:///srv/%20kv/x",
            "file:///srv/kv%0A",
            "file:///srv/k\tv",
            "etcd://127.0.0.1:2379/p ",
            "mock://\n",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_urls() {
        assert_eq!(
            StoreUrl::parse("legacy-simp6://").unwrap(),
            StoreUrl::LegacySimp6
        );
        assert_eq!(
            StoreUrl::parse("legacy-simp6:///").unwrap(),
            StoreUrl::LegacySimp6
        );
        assert!(StoreUrl::parse("legacy-simp6://x").is_err());
        assert!(StoreUrl::parse("legacy-simp6:///var").is_err());
    }

    #[test]
    fn consul_urls() {
        let u = StoreUrl::parse("consul://127.0.0.1:8500/puppet").unwrap();
        assert_eq!(
            u,
            StoreUrl::Consul {
                tls: ConsulTls::None,
                endpoint: ep("127.0.0.1", 8500),
                prefix: Key::dir("/puppet").unwrap()
            }
        );
        assert_eq!(u.to_string(), "consul://127.0.0.1:8500/puppet");
        for (url, tls) in [
            ("consul+ssl://h/p", ConsulTls::Verify),
            ("consul+ssl+verify://h/p", ConsulTls::Verify),
            ("consul+ssl+noverify://h/p", ConsulTls::NoVerify),
        ] {
            match StoreUrl::parse(url).unwrap() {
                StoreUrl::Consul {
                    tls: t, endpoint, ..
                } => {
                    assert_eq!(t, tls, "{url}");
                    assert_eq!(endpoint.port, CONSUL_DEFAULT_PORT);
                }
                other => panic!("{other:?}"),
            }
        }
        match StoreUrl::parse("consul://h:1").unwrap() {
            StoreUrl::Consul { prefix, .. } => assert!(prefix.is_root()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn etcd_urls() {
        let u = StoreUrl::parse("etcd://10.0.0.1:2379,10.0.0.2,[::1]:23790/puppet/kv/").unwrap();
        assert_eq!(
            u,
            StoreUrl::Etcd {
                tls: false,
                endpoints: vec![ep("10.0.0.1", 2379), ep("10.0.0.2", 2379), ep("::1", 23790)],
                prefix: Key::dir("/puppet/kv").unwrap(),
            }
        );
        assert_eq!(
            u.to_string(),
            "etcd://10.0.0.1:2379,10.0.0.2:2379,[::1]:23790/puppet/kv"
        );
        match StoreUrl::parse("etcd+ssl://e1:2379/").unwrap() {
            StoreUrl::Etcd { tls, prefix, .. } => {
                assert!(tls);
                assert!(prefix.is_root());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_urls_say_why() {
        let cases = [
            ("", "no '://'"),
            ("etcd:/h", "no '://'"),
            ("/var/lib/x", "no '://'"),
            ("redis://h/p", "unknown scheme \"redis\""),
            ("ETCD://h/p", "unknown scheme"),
            ("etcd:///p", "no HOST"),
            ("etcd://h:0/p", "bad port"),
            ("etcd://h:99999/p", "bad port"),
            ("etcd://h:x/p", "bad port"),
            ("etcd://h1,,h2/p", "no HOST"),
            ("etcd://[::1/p", "unclosed"),
            ("etcd://h/p//q", "bad PREFIX"),
            ("etcd://h/p/../q", "bad PREFIX"),
            ("consul://h/p q", "bad PREFIX"),
            ("consul://h/p?token=x", "query strings"),
            ("consul://h$/p", "bad host"),
        ];
        for (url, why) in cases {
            let err = StoreUrl::parse(url).expect_err(url).to_string();
            assert!(err.contains(why), "{url:?}: {err}");
            assert!(err.contains("invalid store URL"), "{url:?}: {err}");
        }
    }

    #[test]
    fn secrets_in_urls_are_refused_and_masked() {
        for url in [
            "etcd://root:s3cret@h:2379/p",
            "consul+ssl://s3cret@h/p",
            "consul://h/p?token=s3cret",
            "consul://h/p#s3cret",
        ] {
            let err = StoreUrl::parse(url).expect_err(url).to_string();
            assert!(!err.contains("s3cret"), "{url}: {err}");
            assert!(err.contains("***"), "{url}: {err}");
        }
        assert_eq!(mask("etcd://u:p@h:1/x"), "etcd://***@h:1/x");
        assert_eq!(mask("consul://h/x?token=t"), "consul://h/x?***");
        assert_eq!(mask("file:///a@b/c"), "file:///a@b/c");
    }
}
