//! Verified directories: a directory opened without following symlinks,
//! checked to be owned by this (root) user with mode 0700, and every
//! create, read, rename and remove inside it done relative to that
//! descriptor (`openat`/`mkdirat`/`unlinkat`/`renameat`, `O_NOFOLLOW`).
//!
//! Why: `/sys/fs/bpf` is often mode 1777 and a state root may sit in a
//! world-writable directory. A directory someone else owns can be emptied
//! or swapped for a symlink between our check and our use; a root-owned
//! 0700 directory opened once cannot, so everything below it is trusted
//! only through the descriptor.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use super::HostError;

/// `BPF_FS_MAGIC`: the file-system type of a bpffs mount.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What is wrong with an existing directory we were about to trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirProblem {
    /// A symlink, a regular file, ...: not a plain directory.
    NotADirectory,
    /// Owned by another user.
    Owner { uid: u32 },
    /// Not exactly mode 0700.
    Mode { mode: u32 },
}

impl DirProblem {
    pub fn describe(&self) -> String {
        match self {
            DirProblem::NotADirectory => "is not a directory (a symlink or a file)".into(),
            DirProblem::Owner { uid } => {
                format!("is owned by uid {uid}, not root: that user could change or remove it")
            }
            DirProblem::Mode { mode } => format!(
                "has mode {mode:04o}, not 0700: other users could change or remove what is in it"
            ),
        }
    }
}

/// Whether a directory with `st_mode` and `st_uid` may be trusted by a
/// process running as `euid`: a directory, owned by `euid`, mode 0700.
pub fn judge_dir(st_mode: u32, st_uid: u32, euid: u32) -> Result<(), DirProblem> {
    if st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(DirProblem::NotADirectory);
    }
    if st_uid != euid {
        return Err(DirProblem::Owner { uid: st_uid });
    }
    let mode = st_mode & 0o7777;
    if mode != 0o700 {
        return Err(DirProblem::Mode { mode });
    }
    Ok(())
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid out pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) })?;
    Ok(stat)
}

/// Whether `fd` lives on a bpffs.
pub fn fd_on_bpffs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: statfs is plain data.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid out pointer.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut stat) })?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs per target
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn io_error(what: &str, path: &Path, error: io::Error) -> HostError {
    if error.kind() == io::ErrorKind::PermissionDenied {
        return HostError::PermissionDenied {
            path: path.to_path_buf(),
        };
    }
    HostError::Io {
        what: what.to_owned(),
        path: path.to_path_buf(),
        error,
    }
}

/// A directory opened without following symlinks and checked with
/// [`judge_dir`]; `path` is for messages only.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl SafeDir {
    /// Opens `path` (its last component must not be a symlink) and
    /// verifies it; `Ok(None)` when it does not exist.
    pub fn open(path: &Path) -> Result<Option<SafeDir>, HostError> {
        let c = cstr(path.as_os_str()).map_err(|e| io_error("opening", path, e))?;
        // SAFETY: c is NUL-terminated.
        let fd = unsafe { libc::open(c.as_ptr(), DIR_FLAGS) };
        Self::adopt(fd, path)
    }

    /// Opens, creating it (mode 0700) with any missing parents when absent,
    /// and verifies `path`. A directory that already exists is never
    /// "repaired": it is refused unless it passes [`judge_dir`].
    pub fn create(path: &Path) -> Result<SafeDir, HostError> {
        if let Some(dir) = Self::open(path)? {
            return Ok(dir);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| io_error("creating", parent, e))?;
        }
        let c = cstr(path.as_os_str()).map_err(|e| io_error("creating", path, e))?;
        // SAFETY: c is NUL-terminated.
        let made = unsafe { libc::mkdir(c.as_ptr(), 0o700) } == 0;
        let error = io::Error::last_os_error();
        if !made && error.kind() != io::ErrorKind::AlreadyExists {
            return Err(io_error("creating", path, error));
        }
        // SAFETY: c is NUL-terminated.
        let fd = unsafe { libc::open(c.as_ptr(), DIR_FLAGS) };
        if made {
            // Ours: the umask may have taken bits away, set exactly 0700.
            // SAFETY: fchmod on a descriptor we own (or -1: fails).
            unsafe { libc::fchmod(fd, 0o700) };
        }
        Self::adopt(fd, path)?.ok_or_else(|| HostError::Io {
            what: "creating".into(),
            path: path.to_path_buf(),
            error: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    fn adopt(fd: libc::c_int, path: &Path) -> Result<Option<SafeDir>, HostError> {
        if fd < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                // O_NOFOLLOW on a symlink, O_DIRECTORY on a file.
                Some(libc::ELOOP | libc::ENOTDIR) => Err(HostError::Untrusted {
                    path: path.to_path_buf(),
                    problem: DirProblem::NotADirectory,
                }),
                _ => Err(io_error("opening", path, error)),
            };
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let stat = fstat(fd.as_fd()).map_err(|e| io_error("checking", path, e))?;
        judge_dir(stat.st_mode, stat.st_uid, euid()).map_err(|problem| HostError::Untrusted {
            path: path.to_path_buf(),
            problem,
        })?;
        Ok(Some(SafeDir {
            fd,
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn child_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn openat(&self, name: &str, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
        let c = cstr(OsStr::new(name))?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = check(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        })?;
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The subdirectory `name`, verified; `Ok(None)` when absent.
    pub fn open_dir(&self, name: &str) -> Result<Option<SafeDir>, HostError> {
        let path = self.child_path(name);
        let fd = match cstr(OsStr::new(name)) {
            // SAFETY: a valid directory descriptor and a NUL-terminated name.
            Ok(c) => unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), DIR_FLAGS) },
            Err(e) => return Err(io_error("opening", &path, e)),
        };
        Self::adopt(fd, &path)
    }

    /// The subdirectory `name`, created mode 0700 when absent, verified.
    pub fn create_dir(&self, name: &str) -> Result<SafeDir, HostError> {
        let path = self.child_path(name);
        let c = cstr(OsStr::new(name)).map_err(|e| io_error("creating", &path, e))?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let made = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) } == 0;
        let error = io::Error::last_os_error();
        if !made && error.kind() != io::ErrorKind::AlreadyExists {
            return Err(io_error("creating", &path, error));
        }
        // SAFETY: as above.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), DIR_FLAGS) };
        if made && fd >= 0 {
            // SAFETY: a descriptor we own.
            unsafe { libc::fchmod(fd, 0o700) };
        }
        Self::adopt(fd, &path)?.ok_or_else(|| HostError::Io {
            what: "creating".into(),
            path,
            error: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    /// The contents of regular file `name`; `Ok(None)` when absent.
    pub fn read(&self, name: &str) -> Result<Option<String>, HostError> {
        let path = self.child_path(name);
        let fd = match self.openat(name, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        let stat = fstat(fd.as_fd()).map_err(|e| io_error("reading", &path, e))?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io_error(
                "reading",
                &path,
                io::Error::other("not a regular file"),
            ));
        }
        let mut text = String::new();
        File::from(fd)
            .read_to_string(&mut text)
            .map_err(|e| io_error("reading", &path, e))?;
        Ok(Some(text))
    }

    /// Whether `name` exists (not following a symlink).
    pub fn exists(&self, name: &str) -> bool {
        let Ok(c) = cstr(OsStr::new(name)) else {
            return false;
        };
        // SAFETY: stat is plain data.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, name and out pointer.
        unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
        }
    }

    /// Replaces file `name` with `bytes` (mode 0600): written to a fresh
    /// `O_EXCL | O_NOFOLLOW` temporary beside it, synced, then renamed over
    /// it, so a reader sees the old or the new file, never half of one, and
    /// no planted symlink is followed.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), HostError> {
        let path = self.child_path(name);
        let tmp = format!("{name}.tmp");
        // A temporary left by a crashed writer: remove the entry itself.
        let _ = self.remove(&tmp);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        let fd = self
            .openat(&tmp, flags, 0o600)
            .map_err(|e| io_error("writing", &path, e))?;
        let mut file = File::from(fd);
        let written = file.write_all(bytes).and_then(|()| file.sync_data());
        drop(file);
        if let Err(e) = written.and_then(|()| self.rename(&tmp, name)) {
            let _ = self.remove(&tmp);
            return Err(io_error("writing", &path, e));
        }
        Ok(())
    }

    /// Appends `bytes` to file `name` (created mode 0600).
    pub fn append(&self, name: &str, bytes: &[u8]) -> Result<(), HostError> {
        let path = self.child_path(name);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND;
        self.openat(name, flags, 0o600)
            .and_then(|fd| File::from(fd).write_all(bytes))
            .map_err(|e| io_error("appending to", &path, e))
    }

    /// Opens (creating, mode 0600) file `name` for an exclusive `flock`.
    pub fn open_lock_file(&self, name: &str) -> Result<File, HostError> {
        let path = self.child_path(name);
        self.openat(name, libc::O_RDWR | libc::O_CREAT, 0o600)
            .map(File::from)
            .map_err(|e| io_error("opening", &path, e))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (cstr(OsStr::new(from))?, cstr(OsStr::new(to))?);
        let dir = self.fd.as_raw_fd();
        // SAFETY: valid descriptors and NUL-terminated names.
        check(unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) }).map(drop)
    }

    fn unlink(&self, name: &CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
    }

    /// Removes the entry `name` (a file, a pin or a symlink itself, never
    /// what a symlink points to). `Ok(false)`: it was not there.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        match self.unlink(&cstr(OsStr::new(name))?, 0) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes file `name`, reporting any failure but absence.
    pub fn remove_file(&self, name: &str) -> Result<bool, HostError> {
        let path = self.child_path(name);
        self.remove(name)
            .map_err(|e| io_error("removing", &path, e))
    }

    /// Entry names of this directory.
    pub fn names(&self) -> Result<Vec<String>, HostError> {
        // Listing through the descriptor: the path may have been swapped.
        let proc = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        let entries = std::fs::read_dir(&proc).map_err(|e| io_error("listing", &self.path, e))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes everything in this directory, depth first, without
    /// following symlinks (a symlink is removed, not its target); the
    /// errors are collected, not stopped at.
    pub fn remove_contents(&self, errors: &mut Vec<String>) {
        let names = match self.names() {
            Ok(names) => names,
            Err(e) => {
                errors.push(e.to_string());
                return;
            }
        };
        for name in names {
            self.remove_tree(&name, errors);
        }
    }

    /// Removes `name` and, if it is a directory (not a symlink to one),
    /// everything beneath it; failures are added to `errors`.
    pub fn remove_tree(&self, name: &str, errors: &mut Vec<String>) {
        let path = self.child_path(name);
        let Ok(c) = cstr(OsStr::new(name)) else {
            return;
        };
        match self.unlink(&c, 0) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            // EISDIR (or EPERM on some file systems): a directory.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {}
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                return;
            }
        }
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), DIR_FLAGS) };
        if fd < 0 {
            errors.push(format!(
                "{}: {}",
                path.display(),
                io::Error::last_os_error()
            ));
            return;
        }
        // Not judged: what is beneath a verified directory is ours.
        let sub = SafeDir {
            // SAFETY: a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.clone(),
        };
        sub.remove_contents(errors);
        drop(sub);
        if let Err(e) = self.unlink(&c, libc::AT_REMOVEDIR)
            && e.kind() != io::ErrorKind::NotFound
        {
            errors.push(format!("{}: {e}", path.display()));
        }
    }
}

/// Removes `path` and everything beneath it without following a symlink
/// at `path` or below (a symlink is removed itself): cleanup of pins whose
/// directory the caller made. Returns the failures.
pub fn remove_path_tree(path: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(OsStr::to_str))
    else {
        errors.push(format!("{}: not a removable path", path.display()));
        return errors;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let fd = match cstr(parent.as_os_str()) {
        // SAFETY: a NUL-terminated path.
        Ok(c) => unsafe { libc::open(c.as_ptr(), DIR_FLAGS & !libc::O_NOFOLLOW) },
        Err(e) => {
            errors.push(format!("{}: {e}", parent.display()));
            return errors;
        }
    };
    if fd < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::NotFound {
            errors.push(format!("{}: {error}", parent.display()));
        }
        return errors;
    }
    let dir = SafeDir {
        // SAFETY: a fresh descriptor we own.
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
        path: parent.to_path_buf(),
    };
    dir.remove_tree(name, &mut errors);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: u32 = libc::S_IFDIR;

    /// A fresh scratch directory (the test's own user owns it).
    fn scratch(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("patronus-dirs-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        dir
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn created_directories_are_0700_and_others_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = scratch("create");
        let root = base.join("a/b/root");
        let dir = SafeDir::create(&root).expect("created");
        assert_eq!(mode_of(&root), 0o700);
        let sub = dir.create_dir("eth0").expect("created");
        assert_eq!(mode_of(sub.path()), 0o700);
        // Existing and right: opened again.
        assert!(SafeDir::open(&root).expect("verified").is_some());
        // Existing and open to others: refused, never repaired.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = SafeDir::create(&root).expect_err("a 0755 directory");
        assert!(
            matches!(
                &err,
                HostError::Untrusted {
                    problem: DirProblem::Mode { mode: 0o755 },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("rm -r"), "{err}");
        assert_eq!(mode_of(&root), 0o755, "not repaired");
        // A symlink to a good directory is not a directory.
        let link = base.join("link");
        std::os::unix::fs::symlink(sub.path(), &link).expect("symlink");
        let err = SafeDir::open(&link).expect_err("a symlink");
        assert!(
            matches!(
                err,
                HostError::Untrusted {
                    problem: DirProblem::NotADirectory,
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn writes_and_removals_follow_no_symlink() {
        let base = scratch("nofollow");
        let victim = base.join("victim");
        std::fs::write(&victim, "keep").expect("writing the victim");
        let dir = SafeDir::create(&base.join("state")).expect("created");
        // A symlink where the temporary goes, and one where the file goes.
        std::os::unix::fs::symlink(&victim, dir.path().join("meta.json.tmp")).expect("symlink");
        std::os::unix::fs::symlink(&victim, dir.path().join("journal")).expect("symlink");
        dir.write("meta.json", b"{}").expect("written");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        assert_eq!(dir.read("meta.json").expect("read").as_deref(), Some("{}"));
        assert_eq!(mode_of(&dir.path().join("meta.json")), 0o600);
        // Appending through a symlink fails rather than writing the target.
        assert!(dir.append("journal", b"x").is_err());
        assert!(dir.read("journal").is_err(), "reading through a symlink");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        // A symlinked directory inside is removed as a link, not emptied.
        let target = base.join("target");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("file"), "keep").expect("write");
        std::os::unix::fs::symlink(&target, dir.path().join("maps")).expect("symlink");
        let mut errors = Vec::new();
        dir.remove_contents(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(dir.names().expect("listing").is_empty());
        assert_eq!(
            std::fs::read_to_string(target.join("file")).expect("kept"),
            "keep"
        );
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        // The same through a path whose last component is a symlink.
        let link = base.join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(remove_path_tree(&link).is_empty());
        assert!(target.join("file").exists() && !link.exists());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn only_own_0700_directories_are_trusted() {
        assert_eq!(judge_dir(DIR | 0o700, 0, 0), Ok(()));
        assert_eq!(
            judge_dir(DIR | 0o700, 1000, 0),
            Err(DirProblem::Owner { uid: 1000 })
        );
        assert_eq!(
            judge_dir(DIR | 0o755, 0, 0),
            Err(DirProblem::Mode { mode: 0o755 })
        );
        // The sticky world-writable mode /sys/fs/bpf often has.
        assert_eq!(
            judge_dir(DIR | 0o1777, 0, 0),
            Err(DirProblem::Mode { mode: 0o1777 })
        );
        assert_eq!(
            judge_dir(libc::S_IFLNK | 0o777, 0, 0),
            Err(DirProblem::NotADirectory)
        );
        assert_eq!(
            judge_dir(libc::S_IFREG | 0o700, 0, 0),
            Err(DirProblem::NotADirectory)
        );
    }
}
