//! The host's files of a deployment: which directories a policy on an
//! interface lives in, and how they are created, trusted, written and
//! removed.
//!
//! - [`paths`]: the one mapping from a validated interface name
//!   ([`IfaceName`]) to its pin directory (`PIN_ROOT/IFACE`, bpffs) and its
//!   state directory (`STATE_ROOT/IFACE`: metadata, saved sources, table
//!   journal, pending confirmation, lock, rollback log). Every command
//!   goes through it, so `unload -i ..` cannot reach outside the roots.
//! - [`dirs`]: directories opened without following symlinks, refused
//!   unless owned by root with mode 0700, and every operation inside them
//!   relative to the verified descriptor.
//! - [`mounts`]: whether a bpffs mount outlives this process.
//! - [`netdev`]: an interface's index and loopback flag, by name.
//!
//! Errors are data ([`HostError`]), each with a message saying what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub mod dirs;
pub mod mounts;
pub mod netdev;
pub mod paths;

pub use dirs::{DirProblem, SafeDir};
pub use paths::{IfaceName, NameError, Roots, StateDir, StateFile, StateLock};

/// What went wrong with the host's pin or state directories.
#[derive(Debug)]
pub enum HostError {
    /// Not a valid interface name (used as a path component).
    BadName(NameError),
    /// This user cannot read or change the directory (not root).
    PermissionDenied { path: PathBuf },
    /// An existing directory we will not trust.
    Untrusted { path: PathBuf, problem: DirProblem },
    /// A pin directory that is not on a bpffs.
    NotBpffs { path: PathBuf },
    /// Pins pinned here would not outlive this process (why).
    Ephemeral { reason: String },
    /// Pins that could not be removed: the policy may still be attached.
    PinsRemain { path: PathBuf, errors: Vec<String> },
    /// A confirmation token that is not one `apply` makes.
    BadToken { token: String },
    /// Any other failure of a file operation.
    Io {
        what: String,
        path: PathBuf,
        error: io::Error,
    },
}

impl HostError {
    /// Whether this is [`HostError::PermissionDenied`] (exit 2 "run as
    /// root" rather than "nothing there").
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, HostError::PermissionDenied { .. })
    }
}

impl From<NameError> for HostError {
    fn from(error: NameError) -> HostError {
        HostError::BadName(error)
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::BadName(error) => error.fmt(f),
            HostError::PermissionDenied { path } => write!(
                f,
                "permission denied: run as root (`{}` is readable by root only)",
                path.display()
            ),
            HostError::Untrusted { path, problem } => write!(
                f,
                "`{}` {}; patronusc only uses pin and state directories owned by root with mode \
                 0700 that it created itself. Check what is in it, remove it (`rm -r {}`) and \
                 run the command again",
                path.display(),
                problem.describe(),
                path.display()
            ),
            HostError::NotBpffs { path } => write!(
                f,
                "`{}` is not on a bpffs: refusing to remove anything there",
                path.display()
            ),
            HostError::Ephemeral { reason } => f.write_str(reason),
            HostError::PinsRemain { path, errors } => write!(
                f,
                "cannot remove the pins under `{}` ({}): the policy may still be attached; its \
                 state was kept",
                path.display(),
                errors.join("; ")
            ),
            HostError::BadToken { token } => {
                write!(f, "`{}` is not a confirmation token", token.escape_debug())
            }
            HostError::Io { what, path, error } => {
                write!(f, "{what} `{}`: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HostError::Io { error, .. } => Some(error),
            HostError::BadName(error) => Some(error),
            _ => None,
        }
    }
}
