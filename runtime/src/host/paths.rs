//! The one mapping from an interface name to its directories.
//!
//! `PIN_ROOT/IFACE/` (bpffs) holds the pins of the policy on `IFACE`;
//! `STATE_ROOT/IFACE/` holds the files bpffs cannot ([`StateFile`]). An
//! interface name is a path component here, so it is validated once, as
//! an [`IfaceName`] with the kernel's rules, before any path is built:
//! `""`, `.`, `..` or `../x` never reach the file system.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::dirs::{self, SafeDir};
use super::{HostError, mounts};
use crate::pins::{self, Pins};

/// Where metadata and lock files live by default.
pub const DEFAULT_STATE_ROOT: &str = "/run/patronus";

/// Where policies are pinned by default.
pub const DEFAULT_PIN_ROOT: &str = pins::DEFAULT_PIN_ROOT;

/// `IFNAMSIZ - 1`: the longest interface name the kernel accepts.
pub const MAX_IFACE_LEN: usize = 15;

/// Why a string is not an interface name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    pub name: String,
    pub why: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an interface name: {}",
            self.name.escape_debug(),
            self.why
        )
    }
}

impl std::error::Error for NameError {}

/// An interface name valid by the kernel's rules (`dev_valid_name`): 1 to
/// 15 bytes, no `/`, `:`, whitespace or NUL, not `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfaceName(String);

impl IfaceName {
    pub fn new(name: &str) -> Result<IfaceName, NameError> {
        let bad = |why| {
            Err(NameError {
                // Bounded: the name is quoted in the message.
                name: name.chars().take(64).collect(),
                why,
            })
        };
        if name.is_empty() {
            return bad("it is empty (an unset shell variable?)");
        }
        if name.len() > MAX_IFACE_LEN {
            return bad("it is longer than 15 bytes");
        }
        if name == "." || name == ".." {
            return bad("`.` and `..` are directories, not interfaces");
        }
        if name.contains('/') {
            return bad("it contains `/`");
        }
        if name.contains(':') {
            return bad("it contains `:`");
        }
        if name.contains('\0') {
            return bad("it contains a NUL byte");
        }
        if name.chars().any(char::is_whitespace) {
            return bad("it contains whitespace");
        }
        if name.chars().any(char::is_control) {
            return bad("it contains a control character");
        }
        Ok(IfaceName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfaceName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<IfaceName, NameError> {
        IfaceName::new(name)
    }
}

impl fmt::Display for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for IfaceName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for IfaceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The files of `STATE_ROOT/IFACE/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateFile {
    /// `meta.json`: what `apply` recorded (source, hash, mode, counters).
    Meta,
    /// `snapshot.json`: the sources of the running policy.
    Snapshot,
    /// `tables.json`: the fast paths of `patronusc table`.
    Tables,
    /// `journal`: run-time table changes.
    Journal,
    /// `pending.json`: an apply waiting for `confirm`.
    Pending,
    /// `lock`: serialises the commands that change the interface.
    Lock,
    /// `rollback.log`: what the rollback watcher did.
    RollbackLog,
    /// `confirmed-TOKEN`: a confirmation the watcher of TOKEN looks for.
    Confirmed(String),
    /// `txn.json`: a change in progress (the CLI's `txn` module).
    Txn,
}

impl StateFile {
    /// The marker for confirmation token `token`, which `apply` makes from
    /// hex digits and `-` (it also arrives on a command line: checked).
    pub fn confirmed(token: &str) -> Result<StateFile, HostError> {
        let valid = !token.is_empty()
            && token.len() <= 64
            && token.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !valid {
            return Err(HostError::BadToken {
                token: token.chars().take(64).collect(),
            });
        }
        Ok(StateFile::Confirmed(token.to_owned()))
    }

    pub fn name(&self) -> String {
        match self {
            StateFile::Meta => "meta.json".into(),
            StateFile::Snapshot => "snapshot.json".into(),
            StateFile::Tables => "tables.json".into(),
            StateFile::Journal => "journal".into(),
            StateFile::Pending => "pending.json".into(),
            StateFile::Lock => "lock".into(),
            StateFile::RollbackLog => "rollback.log".into(),
            StateFile::Confirmed(token) => format!("confirmed-{token}"),
            StateFile::Txn => "txn.json".into(),
        }
    }
}

/// The pin root and the state root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    pub pin_root: PathBuf,
    pub state_root: PathBuf,
}

impl Default for Roots {
    fn default() -> Roots {
        Roots::new(DEFAULT_PIN_ROOT, DEFAULT_STATE_ROOT)
    }
}

impl Roots {
    pub fn new(pin_root: impl Into<PathBuf>, state_root: impl Into<PathBuf>) -> Roots {
        Roots {
            pin_root: pin_root.into(),
            state_root: state_root.into(),
        }
    }

    /// `PIN_ROOT/IFACE`, as paths (no file-system access): for readers
    /// that open pins by path after [`Roots::existing_pins`] verified the
    /// directories, and for messages.
    pub fn pins(&self, iface: &IfaceName) -> Pins {
        Pins::new(self.pin_root.join(iface.as_str()))
    }

    /// `STATE_ROOT/IFACE` (a path, for messages).
    pub fn state_path(&self, iface: &IfaceName) -> PathBuf {
        self.state_root.join(iface.as_str())
    }

    /// `STATE_ROOT/IFACE/FILE` (a path, for messages).
    pub fn state_file_path(&self, iface: &IfaceName, file: &StateFile) -> PathBuf {
        self.state_path(iface).join(file.name())
    }

    /// The pin root, verified; `None` when it does not exist.
    fn pin_root_dir(&self) -> Result<Option<SafeDir>, HostError> {
        SafeDir::open(&self.pin_root)
    }

    /// Makes sure bpffs is mounted, that pins made there outlive this
    /// process, creates (mode 0700) or verifies the pin root and
    /// `PIN_ROOT/IFACE`, and returns the pins of `iface`.
    pub fn prepare_pins(&self, iface: &IfaceName) -> Result<Pins, HostError> {
        pins::ensure_bpffs(&self.pin_root).map_err(|e| HostError::Ephemeral {
            reason: e.to_string(),
        })?;
        let root = SafeDir::create(&self.pin_root)?;
        if !dirs::fd_on_bpffs(root.fd()).unwrap_or(false) {
            return Err(HostError::NotBpffs {
                path: self.pin_root.clone(),
            });
        }
        if let Some(reason) = mounts::ephemeral_reason(&self.pin_root) {
            return Err(HostError::Ephemeral { reason });
        }
        root.create_dir(iface.as_str())?;
        Ok(self.pins(iface))
    }

    /// The pins of `iface` when its pin directory exists (verified: the
    /// pin root and `PIN_ROOT/IFACE` owned by root, mode 0700).
    pub fn existing_pins(&self, iface: &IfaceName) -> Result<Option<Pins>, HostError> {
        let Some(root) = self.pin_root_dir()? else {
            return Ok(None);
        };
        Ok(root.open_dir(iface.as_str())?.map(|_| self.pins(iface)))
    }

    /// Interfaces with a policy attached through pins under the pin root.
    pub fn interfaces(&self) -> Result<Vec<IfaceName>, HostError> {
        let Some(root) = self.pin_root_dir()? else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for name in root.names()? {
            // Not ours (a stray file or an invalid name): skipped, never
            // touched.
            let Ok(iface) = IfaceName::new(&name) else {
                continue;
            };
            if root.open_dir(&name)?.is_some() && self.pins(&iface).installed() {
                names.push(iface);
            }
        }
        Ok(names)
    }

    /// Removes the pins of `iface` (detaching its policy), links first.
    /// Refuses a pin directory that is not verified or not on a bpffs;
    /// `Ok(false)`: there was none. Any pin that cannot be removed is an
    /// error ([`HostError::PinsRemain`]): the caller must then keep the
    /// state that describes the policy.
    pub fn remove_pins(&self, iface: &IfaceName) -> Result<bool, HostError> {
        let Some(root) = self.pin_root_dir()? else {
            return Ok(false);
        };
        let Some(dir) = root.open_dir(iface.as_str())? else {
            return Ok(false);
        };
        if !dirs::fd_on_bpffs(dir.fd()).unwrap_or(false) {
            return Err(HostError::NotBpffs {
                path: dir.path().to_path_buf(),
            });
        }
        let remain = |errors| HostError::PinsRemain {
            path: dir.path().to_path_buf(),
            errors,
        };
        // A clsact egress filter (no tcx) has no pin to remove: delete it
        // while the XDP link still names the interface.
        crate::attach::remove_filter_of(&crate::pins::Pins::new(dir.path()));
        // The links first: once they are gone nothing runs, and if they
        // cannot go, nothing else is touched.
        for link in ["link_xdp", "link_tc"] {
            if let Err(e) = dir.remove(link) {
                return Err(remain(vec![format!("{link}: {e}")]));
            }
        }
        let mut errors = Vec::new();
        dir.remove_contents(&mut errors);
        if errors.is_empty() {
            root.remove_tree(iface.as_str(), &mut errors);
        }
        if !errors.is_empty() {
            return Err(remain(errors));
        }
        Ok(true)
    }

    /// `STATE_ROOT/IFACE`, created (mode 0700) when absent, verified.
    pub fn state(&self, iface: &IfaceName) -> Result<StateDir, HostError> {
        let root = SafeDir::create(&self.state_root)?;
        Ok(StateDir {
            dir: root.create_dir(iface.as_str())?,
        })
    }

    /// `STATE_ROOT/IFACE` when it exists, verified (readers).
    pub fn existing_state(&self, iface: &IfaceName) -> Result<Option<StateDir>, HostError> {
        let Some(root) = SafeDir::open(&self.state_root)? else {
            return Ok(None);
        };
        Ok(root.open_dir(iface.as_str())?.map(|dir| StateDir { dir }))
    }
}

/// `patronusc load --pin-dir DIR`: makes sure bpffs is mounted and that
/// pins there outlive this process, creates (mode 0700) or verifies `dir`.
pub fn prepare_pin_dir(dir: &Path) -> Result<Pins, HostError> {
    pins::ensure_bpffs(dir).map_err(|e| HostError::Ephemeral {
        reason: e.to_string(),
    })?;
    let verified = SafeDir::create(dir)?;
    if !dirs::fd_on_bpffs(verified.fd()).unwrap_or(false) {
        return Err(HostError::NotBpffs {
            path: dir.to_path_buf(),
        });
    }
    if let Some(reason) = mounts::ephemeral_reason(dir) {
        return Err(HostError::Ephemeral { reason });
    }
    Ok(Pins::new(dir))
}

/// A verified `STATE_ROOT/IFACE` directory: every file operation is
/// relative to its descriptor and follows no symlink.
#[derive(Debug)]
pub struct StateDir {
    dir: SafeDir,
}

impl StateDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `file` (for messages).
    pub fn file_path(&self, file: &StateFile) -> PathBuf {
        self.dir.path().join(file.name())
    }

    /// The file's contents; `Ok(None)` when it does not exist.
    pub fn read(&self, file: &StateFile) -> Result<Option<String>, HostError> {
        self.dir.read(&file.name())
    }

    /// Replaces the file atomically (see [`SafeDir::write`]).
    pub fn write(&self, file: &StateFile, bytes: &[u8]) -> Result<(), HostError> {
        self.dir.write(&file.name(), bytes)
    }

    pub fn append(&self, file: &StateFile, bytes: &[u8]) -> Result<(), HostError> {
        self.dir.append(&file.name(), bytes)
    }

    /// Removes the file; `Ok(false)`: it was not there.
    pub fn remove(&self, file: &StateFile) -> Result<bool, HostError> {
        self.dir.remove_file(&file.name())
    }

    pub fn exists(&self, file: &StateFile) -> bool {
        self.dir.exists(&file.name())
    }

    /// Takes the interface's lock (blocking until whoever holds it is
    /// done); released when the returned value is dropped.
    pub fn lock(&self) -> Result<StateLock, HostError> {
        let file = self.dir.open_lock_file(&StateFile::Lock.name())?;
        file.lock().map_err(|error| HostError::Io {
            what: "locking".into(),
            path: self.file_path(&StateFile::Lock),
            error,
        })?;
        Ok(StateLock { _held: file })
    }
}

impl StateDir {
    /// Takes the interface's lock if nobody holds it; `Ok(None)` if
    /// somebody does (readers that must not wait for an apply).
    pub fn try_lock(&self) -> Result<Option<StateLock>, HostError> {
        let file = self.dir.open_lock_file(&StateFile::Lock.name())?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StateLock { _held: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(HostError::Io {
                what: "locking".into(),
                path: self.file_path(&StateFile::Lock),
                error,
            }),
        }
    }
}

/// An exclusive `flock` on `STATE_ROOT/IFACE/lock`, released on drop.
#[derive(Debug)]
pub struct StateLock {
    _held: File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for good in ["eth0", "lo", "veth-a.10", "x", "abcdefghijklmno", "wg_0@x"] {
            assert!(IfaceName::new(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "directories"),
            ("..", "directories"),
            ("../x", "`/`"),
            ("a/b", "`/`"),
            ("/", "`/`"),
            ("abcdefghijklmnop", "15 bytes"),
            ("eth0 ", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\nb", "whitespace"),
            ("a\0b", "NUL"),
            ("eth0:1", "`:`"),
            ("a\u{7f}", "control"),
        ] {
            let err = IfaceName::new(bad).expect_err(bad);
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
        }
        // Bytes, not characters: 8 two-byte characters are 16 bytes.
        assert!(IfaceName::new("éééééééé").is_err());
        assert!(IfaceName::new("ééééééé").is_ok());
    }

    #[test]
    fn names_map_under_the_roots_only() {
        let roots = Roots::new("/sys/fs/bpf/p", "/run/p");
        let eth0 = IfaceName::new("eth0").unwrap();
        assert_eq!(roots.pins(&eth0).dir, Path::new("/sys/fs/bpf/p/eth0"));
        assert_eq!(
            roots.state_file_path(&eth0, &StateFile::Meta),
            Path::new("/run/p/eth0/meta.json")
        );
    }

    #[test]
    fn confirmation_tokens_are_hex_and_dashes_only() {
        assert_eq!(
            StateFile::confirmed("18f3a-2b").unwrap().name(),
            "confirmed-18f3a-2b"
        );
        for bad in ["", "../../x", "a/b", "zz", "1 2"] {
            assert!(StateFile::confirmed(bad).is_err(), "{bad}");
        }
    }
}
