//! The pins of an installed policy on bpffs ([`Pins`]): their names
//! (final and staged), pinning, removal, and opening a pinned map or link
//! with the check that the running programs use it ([`live_map`]).
//!
//! Both the install (`crate::install`) and the egress attachment
//! (`crate::attach`) stand on this module; it knows nothing of either.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use patronus_codegen::elf::ProgramKind;

use crate::error::RuntimeError;
use crate::loaded::Loaded;
use crate::sys;

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> RuntimeError {
    move |error| RuntimeError::Io { context, error }
}

/// Where `patronusc apply` pins by default: one directory per interface.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/patronus";

/// `BPF_FS_MAGIC`: the file-system type of a bpffs mount.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pins of one installed policy.
#[derive(Clone, Debug)]
pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: impl Into<PathBuf>) -> Pins {
        Pins { dir: dir.into() }
    }

    pub fn xdp_link(&self) -> PathBuf {
        self.dir.join("link_xdp")
    }

    pub fn tc_link(&self) -> PathBuf {
        self.dir.join("link_tc")
    }

    pub fn prog(&self, kind: ProgramKind) -> PathBuf {
        self.dir.join(match kind {
            ProgramKind::Xdp => "prog",
            ProgramKind::Tc => "prog_tc",
        })
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Whether a policy is attached through these pins.
    pub fn installed(&self) -> bool {
        self.xdp_link().exists()
    }

    /// Staging names: the new policy's pins before the swap (bpffs
    /// reserves names with dots).
    pub(crate) fn staged(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push("_new");
        PathBuf::from(name)
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; c_path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let ret = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    ret == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}

/// Makes sure `/sys/fs/bpf` is a bpffs when `root` lives under it
/// (mounting one, mode 0700, if not), then that `root` is on a bpffs.
pub fn ensure_bpffs(root: &Path) -> Result<(), RuntimeError> {
    let default_mount = Path::new("/sys/fs/bpf");
    if root.starts_with(default_mount) && !is_bpffs(default_mount) {
        if let Some(name) = named_netns() {
            // `ip netns exec` gives its command a private /sys without the
            // host's bpffs: a bpffs mounted here, and the pins and the
            // policy with it, would vanish when patronusc exits. Refuse
            // instead of "succeeding".
            return Err(RuntimeError::Io {
                context: "finding bpffs",
                error: io::Error::other(format!(
                    "/sys/fs/bpf is not mounted here, in network namespace `{name}` (under \
                     `ip netns exec`?): pins made here would vanish when patronusc exits; \
                     use `nsenter --net=/run/netns/{name} patronusc ...` instead"
                )),
            });
        }
        // SAFETY: constant NUL-terminated strings.
        let ret = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                0,
                c"mode=0700".as_ptr().cast(),
            )
        };
        if ret != 0 {
            return Err(RuntimeError::Io {
                context: "mounting bpffs at /sys/fs/bpf",
                error: io::Error::last_os_error(),
            });
        }
    }
    let mut existing = root;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    if !is_bpffs(existing) {
        return Err(RuntimeError::Io {
            context: "checking the pin directory",
            error: io::Error::other(format!("{} is not on a bpffs", existing.display())),
        });
    }
    Ok(())
}

/// The name under /run/netns of the network namespace this process is in,
/// if it is a named one (`ip netns add`).
fn named_netns() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/net").ok()?;
    std::fs::read_dir("/run/netns")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let meta = std::fs::metadata(entry.path()).ok()?;
            (meta.dev() == own.dev() && meta.ino() == own.ino())
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
}

pub(crate) fn create_dir(path: &Path) -> Result<(), RuntimeError> {
    if path.is_dir() {
        return Ok(());
    }
    crate::fault::point("mkdir");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err("creating the pin directory"))
}

pub(crate) fn pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), RuntimeError> {
    // A leftover staging pin from a crashed run would make pinning fail.
    remove_file(path);
    crate::fault::point("pin");
    sys::obj_pin(fd, path).map_err(|error| RuntimeError::Io {
        context: "pinning",
        error: io::Error::new(error.kind(), format!("{}: {error}", path.display())),
    })
}

/// Removes a file if it is there (a fault point only when it is).
pub(crate) fn remove_file(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok() {
        crate::fault::point("unlink");
        let _ = std::fs::remove_file(path);
    }
}

/// Pins the object's programs and maps (state maps taken over from the
/// running policy too: a second pin of the same map) at `prog`-style
/// paths under `pins`, staged (`_new`) or final.
pub(crate) fn pin_object(loaded: &Loaded, pins: &Pins, staged: bool) -> Result<(), RuntimeError> {
    let name = |path: PathBuf| if staged { Pins::staged(&path) } else { path };
    let maps_dir = name(pins.maps_dir());
    create_dir(&maps_dir)?;
    for map in loaded.map_names() {
        if let Some(fd) = loaded.map_fd(map) {
            pin(fd, &maps_dir.join(map))?;
        }
    }
    for kind in [ProgramKind::Xdp, ProgramKind::Tc] {
        if let Some(fd) = loaded.program_fd(kind) {
            pin(fd, &name(pins.prog(kind)))?;
        }
    }
    Ok(())
}

/// Removes every file of `dir` and `dir` itself (pins only: unpinning a
/// link detaches it once no descriptor holds it), following no symlink
/// (`crate::host::dirs`).
pub(crate) fn remove_dir_pins(dir: &Path) {
    if dir.symlink_metadata().is_ok() {
        crate::fault::point("remove tree");
        let _ = crate::host::dirs::remove_path_tree(dir);
    }
}

/// Whether the pinned XDP link lost its interface (the kernel reports
/// ifindex 0 for a link whose device went away).
pub(crate) fn link_severed(pins: &Pins) -> bool {
    sys::obj_get(&pins.xdp_link())
        .and_then(|link| sys::link_info(link.as_fd()))
        .is_ok_and(|info| info.ifindex == 0)
}

/// Where the replaced policy's maps go between the two renames that
/// publish the new ones.
pub(crate) fn old_maps_dir(pins: &Pins) -> PathBuf {
    pins.dir.join("maps_old")
}

pub(crate) fn remove_staged(pins: &Pins) {
    remove_dir_pins(&Pins::staged(&pins.maps_dir()));
    for kind in [ProgramKind::Xdp, ProgramKind::Tc] {
        remove_file(&Pins::staged(&pins.prog(kind)));
    }
    remove_file(&Pins::staged(&pins.tc_link()));
}

/// Removes staging pins (`maps_new/`, `prog_new`, `prog_tc_new`,
/// `link_tc_new`) left by a run killed before its swap, when no
/// transaction names them (the caller knows): they are never live.
pub fn clean_staged(pins: &Pins) {
    if pins.maps_dir().exists() && old_maps_dir(pins).exists() {
        // Killed after publishing: the old maps are leftovers too.
        remove_dir_pins(&old_maps_dir(pins));
    }
    remove_staged(pins);
}

/// The program id of a pinned link, when its interface is still there.
pub(crate) fn running_prog(link: &Path) -> Option<u32> {
    pinned_link(link)
        .filter(|info| info.ifindex != 0)
        .map(|info| info.prog_id)
}

/// The ids of the maps the programs attached through `pins` use (XDP and
/// tc): empty when nothing runs.
pub fn live_map_ids(pins: &Pins) -> Vec<u32> {
    [pins.xdp_link(), pins.tc_link()]
        .iter()
        .filter_map(|link| running_prog(link))
        .filter_map(|id| sys::prog_by_id(id).ok())
        .filter_map(|prog| sys::prog_map_ids(prog.as_fd()).ok())
        .flatten()
        .collect()
}

/// Opens map `name` pinned at `pins` (read-only for readers) and checks
/// that the running programs use it: a pin left by an interrupted replace
/// is an error, never a silent write to (or read of) a dead map.
pub fn live_map(pins: &Pins, name: &str, readonly: bool) -> Result<OwnedFd, RuntimeError> {
    let path = pins.map(name);
    let fd = if readonly {
        open_map_readonly(&path)?
    } else {
        open_map(&path)?
    };
    let id = sys::map_info(fd.as_fd())
        .map_err(io_err("reading map info"))?
        .id;
    let live = live_map_ids(pins);
    if live.is_empty() {
        return Err(RuntimeError::Io {
            context: "opening a pinned map",
            error: io::Error::other(format!(
                "{}: no program runs through these pins (the policy is not attached; see \
                 `patronusc status`)",
                path.display()
            )),
        });
    }
    if !live.contains(&id) {
        return Err(RuntimeError::Io {
            context: "opening a pinned map",
            error: io::Error::other(format!(
                "{} is not a map of the running program (a stale pin: run any patronusc \
                 command on the interface as root to repair it)",
                path.display()
            )),
        });
    }
    Ok(fd)
}

/// The attachment behind a pinned link: interface and program id.
pub fn pinned_link(path: &Path) -> Option<sys::LinkInfo> {
    let fd = sys::obj_get(path).ok()?;
    sys::link_info(fd.as_fd()).ok()
}

/// Opens a pinned map.
pub fn open_map(path: &Path) -> Result<OwnedFd, RuntimeError> {
    sys::obj_get(path).map_err(|error| RuntimeError::Io {
        context: "opening a pinned map",
        error: io::Error::new(error.kind(), format!("{}: {error}", path.display())),
    })
}

/// Opens a pinned map read-only (readers: `status`, `stats`).
pub fn open_map_readonly(path: &Path) -> Result<OwnedFd, RuntimeError> {
    sys::obj_get_readonly(path).map_err(|error| RuntimeError::Io {
        context: "opening a pinned map",
        error: io::Error::new(error.kind(), format!("{}: {error}", path.display())),
    })
}
