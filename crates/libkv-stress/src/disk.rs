//! What the file store's root holds at a key, looked at with `lstat` one component
//! at a time, never through a link: the run's own account of what the store should
//! have read, written or refused.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::oracle;

#[derive(Debug, PartialEq, Eq)]
pub enum At {
    /// Nothing at the key (maybe no directory on the way either).
    Absent,
    /// A regular file, its content and link count.
    File(Vec<u8>, u64),
    /// A directory, and whether it has entries.
    Dir { empty: bool },
    /// A regular file where a directory on the way should be: a key below a key.
    UnderFile,
    /// A link or special file on the way or at the key; the store must refuse.
    Hostile(String),
}

/// What `root` holds at `key` (a key or directory, `/` for the root itself).
pub fn at(root: &Path, key: &str) -> io::Result<At> {
    let mut path = root.to_path_buf();
    let components: Vec<&str> = key[1..].split('/').filter(|c| !c.is_empty()).collect();
    let Some(meta) = lstat(&path)? else {
        return Ok(At::Absent);
    };
    if !meta.is_dir() {
        return Ok(At::Hostile(format!(
            "the root {} is not a directory",
            root.display()
        )));
    }
    for (i, c) in components.iter().enumerate() {
        path.push(c);
        let last = i + 1 == components.len();
        let shown = format!("/{}", components[..=i].join("/"));
        let Some(meta) = lstat(&path)? else {
            return Ok(At::Absent);
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            if last {
                let empty = fs::read_dir(&path)?.next().is_none();
                return Ok(At::Dir { empty });
            }
        } else if kind.is_file() {
            return Ok(if last {
                At::File(fs::read(&path)?, meta.nlink())
            } else {
                At::UnderFile
            });
        } else if kind.is_symlink() {
            return Ok(At::Hostile(format!("{shown} is a symbolic link")));
        } else {
            return Ok(At::Hostile(format!("{shown} is a special file")));
        }
    }
    Ok(At::Dir {
        empty: fs::read_dir(&path)?.next().is_none(),
    })
}

/// Whether the store's lock file cannot be used: a link or not a regular file.
pub fn lock_is_hostile(root: &Path) -> io::Result<bool> {
    Ok(lstat(&root.join(".libkv@lock"))?.is_some_and(|m| !m.is_file()))
}

/// Keys relative to a directory, with their values.
pub type Listing = Vec<(String, Vec<u8>)>;

/// The keys a listing of `dir` should give, relative and sorted, with their
/// values; `Err` with the reason when the store must refuse the listing (a link,
/// special file or hard-linked file under a name a key can have).
pub fn listing(root: &Path, dir: &str) -> io::Result<Result<Listing, String>> {
    match at(root, dir)? {
        At::Hostile(why) => return Ok(Err(why)),
        At::Dir { .. } => {}
        _ => return Ok(Ok(Vec::new())),
    }
    let mut base = root.to_path_buf();
    base.extend(dir[1..].split('/').filter(|c| !c.is_empty()));
    let mut out = Vec::new();
    if let Err(why) = collect(&base, "", &mut out)? {
        return Ok(Err(why));
    }
    out.sort();
    Ok(Ok(out))
}

fn collect(dir: &PathBuf, rel: &str, out: &mut Listing) -> io::Result<Result<(), String>> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !oracle::component(name.as_bytes()) {
            continue;
        }
        let name = name.to_str().expect("a valid component is ASCII");
        let rel = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if let Err(why) = collect(&path, &rel, out)? {
                return Ok(Err(why));
            }
        } else if meta.is_file() && meta.nlink() == 1 {
            out.push((rel, fs::read(&path)?));
        } else if meta.is_file() {
            return Ok(Err(format!("{rel} has several hard links")));
        } else {
            return Ok(Err(format!("{rel} is a link or special file")));
        }
    }
    Ok(Ok(()))
}

fn lstat(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // ENOTDIR: a file on the way, which `at` reports before getting here.
        Err(e) if e.raw_os_error() == Some(20) => Ok(None),
        Err(e) => Err(e),
    }
}
