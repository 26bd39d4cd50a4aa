//! What the agent watches: an inotify instance on the directories that hold
//! policies and their table files, and a fingerprint of a policy with the
//! table files it names, so that only a real change triggers an apply
//! (editors, `kubectl` ConfigMap updates and `mv` all look alike here:
//! some event in the directory, then the content decides).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashSet};
use std::ffi::CString;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use patronus_grammar::ast::{Item, TableSource};

use crate::common::FsTableLoader;

/// The content of a policy and of every table file it names, hashed; and
/// the directories those files are in (to watch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: u64,
    pub dirs: BTreeSet<PathBuf>,
}

/// Reads `policy` and the table files its `table NAME file "PATH"` lines
/// name (relative to the policy, as `apply` resolves them). A table file
/// that cannot be read counts as its error text: `apply` will report it.
pub fn fingerprint(policy: &Path) -> io::Result<Fingerprint> {
    let text = std::fs::read(policy)?;
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    let mut dirs = BTreeSet::new();
    dirs.insert(parent(policy));
    let source = String::from_utf8_lossy(&text);
    let (ast, _) = patronus_grammar::parse(&source);
    let name = policy.display().to_string();
    for item in &ast.items {
        if let Item::Table(table) = item
            && let TableSource::File(path) = &table.source
        {
            let resolved = FsTableLoader::resolve(&name, &path.value);
            resolved.hash(&mut hasher);
            match std::fs::read(&resolved) {
                Ok(bytes) => bytes.hash(&mut hasher),
                Err(error) => error.to_string().hash(&mut hasher),
            }
            dirs.insert(parent(&resolved));
        }
    }
    Ok(Fingerprint {
        hash: hasher.finish(),
        dirs,
    })
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An inotify instance watching whole directories (files are replaced by
/// renames, which a watch on the file itself would not follow).
pub struct Watcher {
    fd: OwnedFd,
    watched: HashSet<PathBuf>,
}

impl Watcher {
    pub fn new() -> io::Result<Watcher> {
        // SAFETY: plain inotify_init1; the descriptor is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watcher {
            // SAFETY: a fresh descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            watched: HashSet::new(),
        })
    }

    /// Watches `dir` for files written, moved in or out, created or
    /// deleted; a directory that does not exist yet is tried again on the
    /// next call.
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        if self.watched.contains(dir) {
            return Ok(());
        }
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))?;
        let mask = libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_ATTRIB;
        // SAFETY: a valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.watched.insert(dir.to_path_buf());
        Ok(())
    }

    /// Waits up to `timeout` for events; `true` when any came (they are
    /// drained: the caller re-reads what it cares about).
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, millis) } <= 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return any;
            }
            any = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_the_policy_and_its_table_files() {
        let dir = std::env::temp_dir().join(format!("patronus-fp-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tables")).unwrap();
        let policy = dir.join("p.pf");
        std::fs::write(&policy, "table t file \"tables/t.txt\"\ndeny from @t\n").unwrap();
        std::fs::write(dir.join("tables/t.txt"), "192.0.2.1\n").unwrap();
        let first = fingerprint(&policy).unwrap();
        assert!(first.dirs.contains(&dir.join("tables")));
        assert_eq!(fingerprint(&policy).unwrap(), first, "stable");
        std::fs::write(dir.join("tables/t.txt"), "192.0.2.2\n").unwrap();
        let second = fingerprint(&policy).unwrap();
        assert_ne!(second.hash, first.hash, "a table edit changes it");
        std::fs::write(&policy, "table t file \"tables/t.txt\"\ndeny from @t # x\n").unwrap();
        assert_ne!(fingerprint(&policy).unwrap().hash, second.hash);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
