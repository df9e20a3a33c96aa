//! The directory a hostile run works in:
//!
//! ```text
//! WORK/outside/   the sentinel tree: files holding a secret, never to be read or changed
//! WORK/root       the store's root: a real directory, or at times a symbolic link
//! WORK/root.away  the real root while `root` is a symbolic link
//! WORK/root.old   a root an admin moved away before making a new one
//! ```
//!
//! Hazards are planted inside the root: links pointing outside, special files, names
//! the store uses for itself. The sentinel tree is snapshotted at the start and
//! compared later: names, types, link targets and contents.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{mknodat, FileType, Mode, CWD};

/// What the secret files outside the root hold; no value a store returns may
/// contain it.
pub const SECRET_MARK: &[u8] = b"LIBKV-SENTINEL";

/// Files of the sentinel tree, relative to `WORK/outside`. Some have the names of
/// keys the run uses, so a store writing through a link to `outside` changes them.
const SENTINEL_FILES: &[&str] = &[
    "secret",
    "sub/secret",
    "sub/deeper/secret",
    "hardfile",
    "lockfile",
    "k",
    "c/a",
];

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Hazard {
    /// `ldir`: a symbolic link to the sentinel directory.
    DirLink,
    /// `lfile`: a symbolic link to a sentinel file.
    FileLink,
    /// `mid/link`: a link in the middle of key paths.
    MidLink,
    /// `deep/a/b/link`: a relative link climbing out of the root.
    RelativeLink,
    /// `dangling`, `dangdir`: links to names that do not exist outside.
    Dangling,
    /// `hard`: a hard link to a sentinel file.
    HardLink,
    /// `fifo`, `pipes/fifo`.
    Fifo,
    /// `sock`: a Unix socket.
    Socket,
    /// `dev`: a character device (`/dev/null`'s numbers); needs root to plant.
    Device,
    /// `.libkv@lock` as a symbolic link, to a sentinel file or to nothing.
    LockLink,
    /// `squat/.k@PID.N.tmp`: files, links and directories with the names of the
    /// temp files this process writes for the key `/squat/k`.
    TempNames,
    /// `junk/...`: entries no key can name: bytes that are not UTF-8, spaces,
    /// `@`, control characters, the lock file's name, a temp file's name.
    JunkNames,
}

impl Hazard {
    pub const ALL: &'static [Hazard] = &[
        Hazard::DirLink,
        Hazard::FileLink,
        Hazard::MidLink,
        Hazard::RelativeLink,
        Hazard::Dangling,
        Hazard::HardLink,
        Hazard::Fifo,
        Hazard::Socket,
        Hazard::Device,
        Hazard::LockLink,
        Hazard::TempNames,
        Hazard::JunkNames,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hazard::DirLink => "symlink to outside dir",
            Hazard::FileLink => "symlink to outside file",
            Hazard::MidLink => "symlink mid-path",
            Hazard::RelativeLink => "relative symlink out",
            Hazard::Dangling => "dangling symlink",
            Hazard::HardLink => "hard link to outside",
            Hazard::Fifo => "fifo",
            Hazard::Socket => "unix socket",
            Hazard::Device => "device node",
            Hazard::LockLink => "symlinked lock file",
            Hazard::TempNames => "squatted temp names",
            Hazard::JunkNames => "names no key has",
        }
    }

    /// The entries of the root it occupies.
    fn entries(self) -> &'static [&'static str] {
        match self {
            Hazard::DirLink => &["ldir"],
            Hazard::FileLink => &["lfile"],
            Hazard::MidLink => &["mid"],
            Hazard::RelativeLink => &["deep"],
            Hazard::Dangling => &["dangling", "dangdir"],
            Hazard::HardLink => &["hard"],
            Hazard::Fifo => &["fifo", "pipes"],
            Hazard::Socket => &["sock"],
            Hazard::Device => &["dev"],
            Hazard::LockLink => &[".libkv@lock"],
            Hazard::TempNames => &["squat"],
            Hazard::JunkNames => &["junk"],
        }
    }
}

/// How the root path is being tampered with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RootEvent {
    /// `root` becomes a symbolic link to `outside` (the real root moved aside).
    SymlinkAbsolute,
    /// The same with a relative link.
    SymlinkRelative,
    /// The root is moved away and a new, empty one made (a backup restored).
    Replaced,
    /// The root is removed; the store makes it again.
    Removed,
    /// The symbolic link is removed and the real root put back.
    Back,
}

impl RootEvent {
    pub const ALL: &'static [RootEvent] = &[
        RootEvent::SymlinkAbsolute,
        RootEvent::SymlinkRelative,
        RootEvent::Replaced,
        RootEvent::Removed,
        RootEvent::Back,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RootEvent::SymlinkAbsolute => "root -> symlink to outside",
            RootEvent::SymlinkRelative => "root -> relative symlink",
            RootEvent::Replaced => "root moved away, new one made",
            RootEvent::Removed => "root removed",
            RootEvent::Back => "symlink removed, root back",
        }
    }
}

/// One entry of a snapshot.
#[derive(PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
    Other(u32),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Dir => f.write_str("a directory"),
            Node::File(content) => write!(f, "a file {:?}", String::from_utf8_lossy(content)),
            Node::Link(target) => write!(f, "a link to {}", target.display()),
            Node::Other(mode) => write!(f, "a special file (mode {mode:o})"),
        }
    }
}

pub type Snapshot = BTreeMap<PathBuf, Node>;

pub struct Sandbox {
    pub work: PathBuf,
    pub root: PathBuf,
    outside: PathBuf,
    away: PathBuf,
    old: PathBuf,
    baseline: Snapshot,
    /// True while `root` is a symbolic link.
    pub root_is_link: bool,
}

impl Sandbox {
    /// Makes `WORK` (which must not exist), the sentinel tree and an empty root.
    pub fn create(work: PathBuf, seed: u64) -> io::Result<Sandbox> {
        fs::create_dir(&work)?;
        let outside = work.join("outside");
        let mut secret = SECRET_MARK.to_vec();
        secret.extend_from_slice(format!("-{seed:016x}").as_bytes());
        for name in SENTINEL_FILES {
            let path = outside.join(name);
            fs::create_dir_all(path.parent().expect("below outside"))?;
            let mut content = secret.clone();
            content.extend_from_slice(format!(" {name}\n").as_bytes());
            fs::write(path, content)?;
        }
        symlink("sub", outside.join("sublink"))?;
        let root = work.join("root");
        fs::create_dir(&root)?;
        let mut sandbox = Sandbox {
            away: work.join("root.away"),
            old: work.join("root.old"),
            work,
            root,
            outside,
            baseline: Snapshot::new(),
            root_is_link: false,
        };
        sandbox.baseline = sandbox.snapshot()?;
        Ok(sandbox)
    }

    /// Everything in `WORK` except the root's own directories.
    pub fn snapshot(&self) -> io::Result<Snapshot> {
        let mut out = Snapshot::new();
        for entry in fs::read_dir(&self.work)? {
            let entry = entry?;
            let name = entry.file_name();
            let path = entry.path();
            if path == self.root || path == self.away || path == self.old {
                continue;
            }
            walk(&self.work, Path::new(&name), &mut out)?;
        }
        Ok(out)
    }

    /// What changed outside the root since the start, described; empty when nothing.
    pub fn outside_changes(&self) -> io::Result<Vec<String>> {
        let now = self.snapshot()?;
        let mut changes = Vec::new();
        for (path, node) in &now {
            match self.baseline.get(path) {
                None => changes.push(format!("{} was created: {node:?}", path.display())),
                Some(before) if before != node => changes.push(format!(
                    "{} changed from {before:?} to {node:?}",
                    path.display()
                )),
                Some(_) => {}
            }
        }
        for path in self.baseline.keys().filter(|p| !now.contains_key(*p)) {
            changes.push(format!("{} was removed", path.display()));
        }
        Ok(changes)
    }

    /// Plants `hazard` afresh (after removing what was in its place). Returns false
    /// when it cannot be planted here (a device node without the right to make one,
    /// a socket whose path is too long).
    pub fn plant(&self, hazard: Hazard, pid: u32, first_temp: u64) -> io::Result<bool> {
        let r = &self.root;
        fs::create_dir_all(r)?;
        for entry in hazard.entries() {
            remove_any(&r.join(entry))?;
        }
        let out = &self.outside;
        match hazard {
            Hazard::DirLink => symlink(out, r.join("ldir"))?,
            Hazard::FileLink => symlink(out.join("secret"), r.join("lfile"))?,
            Hazard::MidLink => {
                fs::create_dir(r.join("mid"))?;
                symlink(out.join("sub"), r.join("mid/link"))?;
            }
            Hazard::RelativeLink => {
                fs::create_dir_all(r.join("deep/a/b"))?;
                symlink("../../../../outside", r.join("deep/a/b/link"))?;
            }
            Hazard::Dangling => {
                symlink(out.join("made-through-link"), r.join("dangling"))?;
                symlink(out.join("dir-made-through-link"), r.join("dangdir"))?;
            }
            Hazard::HardLink => fs::hard_link(out.join("hardfile"), r.join("hard"))?,
            Hazard::Fifo => {
                fs::create_dir(r.join("pipes"))?;
                for path in [r.join("fifo"), r.join("pipes/fifo")] {
                    mknodat(CWD, &path, FileType::Fifo, Mode::from_raw_mode(0o644), 0)?;
                }
            }
            Hazard::Socket => {
                // A socket's path has a length limit a long --dir can pass.
                if std::os::unix::net::UnixListener::bind(r.join("sock")).is_err() {
                    return Ok(false);
                }
            }
            Hazard::Device => {
                let null = rustix::fs::makedev(1, 3);
                let made = mknodat(
                    CWD,
                    r.join("dev"),
                    FileType::CharacterDevice,
                    Mode::from_raw_mode(0o644),
                    null,
                );
                if made.is_err() {
                    return Ok(false);
                }
            }
            Hazard::LockLink => {
                let target = if first_temp.is_multiple_of(2) {
                    out.join("lockfile")
                } else {
                    out.join("lock-made-through-link")
                };
                symlink(target, r.join(".libkv@lock"))?;
            }
            Hazard::TempNames => {
                let squat = r.join("squat");
                fs::create_dir(&squat)?;
                for n in first_temp..first_temp + 64 {
                    let path = squat.join(format!(".k@{pid}.{n}.tmp"));
                    match n % 3 {
                        0 => fs::write(path, b"a leftover")?,
                        1 => symlink(out.join("secret"), path)?,
                        _ => fs::create_dir(path)?,
                    }
                }
            }
            Hazard::JunkNames => {
                use std::os::unix::ffi::OsStrExt;
                let junk = r.join("junk");
                fs::create_dir(&junk)?;
                let long = [b'\x01'; 255];
                let names: [&[u8]; 9] = [
                    b"\xff\xfe",
                    b"a b",
                    b"x@y",
                    b"\n",
                    b".libkv@lock",
                    b".ok@1.2.tmp",
                    &long,
                    "caf\u{e9}".as_bytes(),
                    b"ok",
                ];
                for name in names {
                    fs::write(junk.join(std::ffi::OsStr::from_bytes(name)), b"junk")?;
                }
                fs::create_dir(junk.join("\u{e9}t\u{e9}"))?;
                fs::write(junk.join("\u{e9}t\u{e9}/x"), b"junk")?;
                symlink(out, junk.join("a link@"))?;
            }
        }
        Ok(true)
    }

    /// Tampers with the root path. `Back` applies only while it is a link, the
    /// others only while it is not; returns false when `event` does not apply now.
    pub fn root_event(&mut self, event: RootEvent) -> io::Result<bool> {
        if (event == RootEvent::Back) != self.root_is_link {
            return Ok(false);
        }
        remove_any(&self.old)?;
        match event {
            RootEvent::SymlinkAbsolute | RootEvent::SymlinkRelative => {
                fs::create_dir_all(&self.root)?;
                fs::rename(&self.root, &self.away)?;
                if event == RootEvent::SymlinkAbsolute {
                    symlink(&self.outside, &self.root)?;
                } else {
                    symlink("outside", &self.root)?;
                }
                self.root_is_link = true;
            }
            RootEvent::Replaced => {
                fs::create_dir_all(&self.root)?;
                fs::rename(&self.root, &self.old)?;
                fs::create_dir(&self.root)?;
            }
            RootEvent::Removed => remove_any(&self.root)?,
            RootEvent::Back => {
                fs::remove_file(&self.root)?;
                fs::rename(&self.away, &self.root)?;
                self.root_is_link = false;
            }
        }
        Ok(true)
    }

    /// Removes `WORK` and everything in it.
    pub fn remove(self) -> io::Result<()> {
        fs::remove_dir_all(&self.work)
    }
}

fn walk(base: &Path, rel: &Path, out: &mut Snapshot) -> io::Result<()> {
    let path = base.join(rel);
    let meta = fs::symlink_metadata(&path)?;
    let kind = meta.file_type();
    let node = if kind.is_symlink() {
        Node::Link(fs::read_link(&path)?)
    } else if kind.is_dir() {
        for entry in fs::read_dir(&path)? {
            walk(base, &rel.join(entry?.file_name()), out)?;
        }
        Node::Dir
    } else if kind.is_file() {
        Node::File(fs::read(&path)?)
    } else {
        Node::Other(meta.mode())
    };
    out.insert(rel.to_path_buf(), node);
    Ok(())
}

/// Removes a file, link or directory tree (never following links); absent is fine.
pub fn remove_any(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(name: &str) -> Sandbox {
        let work =
            std::env::temp_dir().join(format!("libkv-stress-test-{name}-{}", std::process::id()));
        let _ = remove_any(&work);
        Sandbox::create(work, 1).unwrap()
    }

    #[test]
    fn changes_outside_are_seen() {
        let sb = sandbox("changes");
        assert!(sb.outside_changes().unwrap().is_empty());
        fs::write(sb.root.join("inside"), b"fine").unwrap();
        assert!(sb.outside_changes().unwrap().is_empty());
        fs::write(sb.outside.join("sub/secret"), b"changed").unwrap();
        fs::write(sb.outside.join("new"), b"").unwrap();
        fs::write(sb.work.join("beside-root"), b"").unwrap();
        let changes = sb.outside_changes().unwrap().join("\n");
        assert!(changes.contains("outside/sub/secret changed"), "{changes}");
        assert!(changes.contains("outside/new was created"), "{changes}");
        assert!(changes.contains("beside-root was created"), "{changes}");
        sb.remove().unwrap();
    }

    #[test]
    fn every_hazard_plants_twice_and_the_root_goes_and_comes_back() {
        let mut sb = sandbox("plant");
        for &hazard in Hazard::ALL {
            for _ in 0..2 {
                sb.plant(hazard, 1, 0).unwrap();
            }
        }
        assert!(fs::symlink_metadata(sb.root.join("mid/link"))
            .unwrap()
            .is_symlink());
        assert!(sb.outside_changes().unwrap().is_empty());
        assert!(!sb.root_event(RootEvent::Back).unwrap());
        assert!(sb.root_event(RootEvent::SymlinkRelative).unwrap());
        assert!(
            fs::metadata(sb.root.join("secret")).is_ok(),
            "root -> outside"
        );
        assert!(sb.root_event(RootEvent::Back).unwrap());
        assert!(fs::symlink_metadata(sb.root.join("ldir")).is_ok());
        assert!(sb.root_event(RootEvent::Replaced).unwrap());
        assert_eq!(fs::read_dir(&sb.root).unwrap().count(), 0);
        assert!(sb.outside_changes().unwrap().is_empty());
        sb.remove().unwrap();
    }
}
