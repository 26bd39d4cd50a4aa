//! Installing a compiled policy on an interface and everything that reads
//! or removes an installed one.
//!
//! An installed policy is a bpffs directory ([`Pins`]): the XDP link and
//! the tcx egress link (the attachments: they live as long as their pins),
//! the programs, and every map under `maps/`. Replacing a policy loads the
//! new object completely, reusing the pinned conntrack and rate-limit maps
//! when their shapes match, pins it beside the old one, then swaps the
//! programs through the pinned links (`BPF_LINK_UPDATE`): packets see the
//! old or the new program, never none. Any failure before the swap leaves
//! the running policy untouched; a failed tc swap puts the old XDP program
//! back.
//!
//! [`update_in_place`] is the other way to change a running policy: when
//! the new object's programs and map definitions equal the running ones,
//! only map entries are written (new and changed first, removed last),
//! against the entries the kernel holds, with a best-effort restore on
//! failure.
//!
//! Crash consistency: [`install`] calls [`Hooks::before_swap`] once the
//! new object is loaded and before the first pin or link changes, with an
//! [`Intent`] naming the programs before and after (kernel ids); the
//! caller records it durably. A process killed anywhere after that leaves
//! a state [`recover`] finishes from the kernel's truth: if the XDP link
//! runs the new program, the tc link is brought to the new one too and
//! the staged pins are published (roll forward); otherwise the tc link is
//! put back and the staged pins go (roll back). The pins are published
//! only after the links are updated and [`Hooks::after_swap`] ran (the
//! counter carry-over), `maps_new/` replacing `maps/` through two renames
//! whose every intermediate state [`recover`] can tell apart. Readers that
//! must not act on a stale pin check it with [`live_map`]. Every mutating
//! step first calls [`crate::fault::point`] (kill-point tests).
//!
//! Serialising concurrent installs (a lock) is the caller's job: bpffs
//! holds no regular files.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use patronus_codegen::Object;
use patronus_codegen::elf::ProgramKind;

use crate::error::RuntimeError;
use crate::loaded::{Loaded, MapShape};
use crate::sys::{self, attach_type, xdp_flags};

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
    fn staged(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push("_new");
        PathBuf::from(name)
    }
}

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic when the driver
    /// refuses.
    Auto,
    Native,
    Generic,
}

/// The mode an XDP program ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
}

impl Attached {
    pub fn name(self) -> &'static str {
        match self {
            Attached::Native => "native",
            Attached::Generic => "generic",
        }
    }
}

/// Maps whose contents are traffic state (conntrack, rate-limit buckets):
/// carried over when a policy is replaced.
pub fn is_state_map(name: &str) -> bool {
    name.starts_with("ct_") || name.starts_with("rl_")
}

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    /// The loaded object (programs, maps, verifier statistics).
    pub loaded: Loaded,
    /// A running policy was replaced (its links updated in place).
    pub replaced: bool,
    /// The XDP mode of a fresh attachment; `None` on replacement (the
    /// link keeps the mode it was created with).
    pub mode: Option<Attached>,
    /// Why auto mode fell back to generic.
    pub fallback: Option<String>,
    /// State maps carried over from the replaced policy.
    pub reused: Vec<String>,
    /// State maps of the replaced policy not carried over (their shape
    /// changed): the new policy starts them empty.
    pub reset: Vec<String>,
    /// How long the program swap itself took (the link updates), on
    /// replacement.
    pub swap_time: Option<std::time::Duration>,
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> RuntimeError {
    move |error| RuntimeError::Io { context, error }
}

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32, RuntimeError> {
    let c_name = std::ffi::CString::new(name).map_err(|_| RuntimeError::Io {
        context: "looking up the interface",
        error: io::Error::new(io::ErrorKind::InvalidInput, "the name contains a NUL byte"),
    })?;
    // SAFETY: c_name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(RuntimeError::Io {
            context: "looking up the interface (is it in this network namespace?)",
            error: io::Error::last_os_error(),
        });
    }
    Ok(index)
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

fn create_dir(path: &Path) -> Result<(), RuntimeError> {
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

fn pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), RuntimeError> {
    // A leftover staging pin from a crashed run would make pinning fail.
    remove_file(path);
    crate::fault::point("pin");
    sys::obj_pin(fd, path).map_err(|error| RuntimeError::Io {
        context: "pinning",
        error: io::Error::new(error.kind(), format!("{}: {error}", path.display())),
    })
}

/// Removes a file if it is there (a fault point only when it is).
fn remove_file(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok() {
        crate::fault::point("unlink");
        let _ = std::fs::remove_file(path);
    }
}

/// Pins the object's programs and maps (state maps taken over from the
/// running policy too: a second pin of the same map) at `prog`-style
/// paths under `pins`, staged (`_new`) or final.
fn pin_object(loaded: &Loaded, pins: &Pins, staged: bool) -> Result<(), RuntimeError> {
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
fn remove_dir_pins(dir: &Path) {
    if dir.symlink_metadata().is_ok() {
        crate::fault::point("remove tree");
        let _ = crate::host::dirs::remove_path_tree(dir);
    }
}

/// Whether the pinned XDP link lost its interface (the kernel reports
/// ifindex 0 for a link whose device went away).
fn link_severed(pins: &Pins) -> bool {
    sys::obj_get(&pins.xdp_link())
        .and_then(|link| sys::link_info(link.as_fd()))
        .is_ok_and(|info| info.ifindex == 0)
}

/// Where the replaced policy's maps go between the two renames that
/// publish the new ones.
fn old_maps_dir(pins: &Pins) -> PathBuf {
    pins.dir.join("maps_old")
}

fn remove_staged(pins: &Pins) {
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

fn attach_xdp(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(OwnedFd, Attached, Option<String>), RuntimeError> {
    crate::features::current().require(crate::features::Feature::XdpLink)?;
    let create = |flags| {
        crate::fault::point("link_create xdp");
        sys::link_create(prog, ifindex, attach_type::XDP, flags)
    };
    let attach_err = |error| RuntimeError::Io {
        context: "attaching the XDP program",
        error,
    };
    match mode {
        XdpMode::Native => create(xdp_flags::DRV_MODE)
            .map(|fd| (fd, Attached::Native, None))
            .map_err(attach_err),
        XdpMode::Generic => create(xdp_flags::SKB_MODE)
            .map(|fd| (fd, Attached::Generic, None))
            .map_err(attach_err),
        XdpMode::Auto => match create(xdp_flags::DRV_MODE) {
            Ok(fd) => Ok((fd, Attached::Native, None)),
            Err(native) => create(xdp_flags::SKB_MODE)
                .map(|fd| (fd, Attached::Generic, Some(native.to_string())))
                .map_err(attach_err),
        },
    }
}

/// A tcx link to pin, or `None` for a `clsact` filter (no tcx: see
/// [`crate::attach`]).
fn attach_tc(prog: BorrowedFd<'_>, ifindex: u32) -> Result<Option<OwnedFd>, RuntimeError> {
    crate::fault::point("link_create tc");
    Ok(match crate::attach::egress(prog, ifindex)? {
        crate::attach::Egress::Link(link) => Some(link),
        crate::attach::Egress::Filter => None,
    })
}

/// State maps of the running policy that the new object can take over:
/// pinned, with exactly the planned shape.
fn reusable_state(object: &Object, pins: &Pins) -> (Vec<(String, PathBuf)>, Vec<String>) {
    let mut reuse = Vec::new();
    let mut reset = Vec::new();
    for map in object.maps.iter().filter(|m| is_state_map(&m.name)) {
        let path = pins.map(&map.name);
        let Ok(fd) = sys::obj_get(&path) else {
            continue;
        };
        match sys::map_info(fd.as_fd()) {
            Ok(info) if MapShape::of_info(&info) == MapShape::of(map) => {
                reuse.push((map.name.clone(), path));
            }
            _ => reset.push(map.name.clone()),
        }
    }
    (reuse, reset)
}

/// What an install is about to do, in kernel program ids: what a crash
/// recovery needs to tell whether the swap happened ([`recover`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// No policy runs before (a fresh attachment, pins made from scratch).
    pub fresh: bool,
    pub new_xdp: u32,
    pub new_tc: Option<u32>,
    /// The running programs (`None` on a fresh attachment).
    pub old_xdp: Option<u32>,
    pub old_tc: Option<u32>,
}

/// What the caller does at the two points of an install that matter for
/// crash consistency.
pub trait Hooks {
    /// The new object is loaded, nothing is pinned or attached yet:
    /// record `intent` durably (an error aborts the install, nothing
    /// changed). The new maps are not in use yet: writes to them (the
    /// counters carried over) are private.
    fn before_swap(&mut self, loaded: &Loaded, intent: &Intent) -> Result<(), RuntimeError>;
    /// A replace swapped the programs; the new pins are not published yet
    /// (readers of the pins still see the old, now frozen, maps).
    fn after_swap(&mut self, _loaded: &Loaded) {}
}

/// [`Hooks`] that do nothing (tests, benchmarks).
pub struct NoHooks;

impl Hooks for NoHooks {
    fn before_swap(&mut self, _: &Loaded, _: &Intent) -> Result<(), RuntimeError> {
        Ok(())
    }
}

/// The program id of a pinned link, when its interface is still there.
fn running_prog(link: &Path) -> Option<u32> {
    pinned_link(link)
        .filter(|info| info.ifindex != 0)
        .map(|info| info.prog_id)
}

/// Loads `object` and attaches it to interface `ifindex`, or replaces the
/// policy already installed at `pins` (see the module documentation).
pub fn install(
    object: &Object,
    ifindex: u32,
    mode: XdpMode,
    pins: &Pins,
    hooks: &mut dyn Hooks,
) -> Result<Installed, RuntimeError> {
    ensure_bpffs(&pins.dir)?;
    create_dir(&pins.dir)?;
    // The interface the policy was attached to is gone (deleted, maybe
    // re-created under the same name): nothing runs, so there is nothing
    // to swap; the dead pins are cleared and the policy attached afresh.
    let severed = pins.installed() && link_severed(pins);
    let replacing = pins.installed() && !severed;
    let (reuse, reset) = if replacing {
        reusable_state(object, pins)
    } else {
        (Vec::new(), Vec::new())
    };
    let reuse_refs: Vec<(&str, &Path)> = reuse
        .iter()
        .map(|(name, path)| (name.as_str(), path.as_path()))
        .collect();
    let loaded = Loaded::load_object_reusing(object, &reuse_refs)?;
    let reused: Vec<String> = reuse.into_iter().map(|(name, _)| name).collect();
    let xdp = loaded
        .program_fd(ProgramKind::Xdp)
        .ok_or(RuntimeError::NoProgram {
            kind: ProgramKind::Xdp,
        })?;
    let prog_id = |fd: BorrowedFd<'_>| sys::prog_id(fd).map_err(io_err("reading a program id"));
    let intent = Intent {
        fresh: !replacing,
        new_xdp: prog_id(xdp)?,
        new_tc: loaded
            .program_fd(ProgramKind::Tc)
            .map(prog_id)
            .transpose()?,
        old_xdp: if replacing {
            running_prog(&pins.xdp_link())
        } else {
            None
        },
        old_tc: if replacing {
            running_prog(&pins.tc_link())
        } else {
            None
        },
    };
    hooks.before_swap(&loaded, &intent)?;
    if !replacing {
        if severed {
            remove_dir_pins(&pins.dir);
            create_dir(&pins.dir)?;
        }
        let result = fresh_attach(&loaded, xdp, ifindex, mode, pins);
        return match result {
            Ok((attached, fallback)) => Ok(Installed {
                loaded,
                replaced: false,
                mode: Some(attached),
                fallback,
                reused,
                reset,
                swap_time: None,
            }),
            Err(error) => {
                remove_dir_pins(&pins.dir);
                Err(error)
            }
        };
    }
    let swap_time = match swap(&loaded, xdp, ifindex, pins, hooks) {
        Ok(time) => time,
        Err(error) => {
            remove_staged(pins);
            return Err(error);
        }
    };
    Ok(Installed {
        loaded,
        replaced: true,
        mode: None,
        fallback: None,
        reused,
        reset,
        swap_time: Some(swap_time),
    })
}

fn fresh_attach(
    loaded: &Loaded,
    xdp: BorrowedFd<'_>,
    ifindex: u32,
    mode: XdpMode,
    pins: &Pins,
) -> Result<(Attached, Option<String>), RuntimeError> {
    pin_object(loaded, pins, false)?;
    // tc first: a policy that cannot see its own replies must not start
    // filtering (established replies would be dropped).
    let tc_link = match loaded.program_fd(ProgramKind::Tc) {
        Some(tc) => attach_tc(tc, ifindex)?,
        None => None,
    };
    let (xdp_link, attached, fallback) = match attach_xdp(xdp, ifindex, mode) {
        Ok(attached) => attached,
        Err(error) => {
            // A filter outlives this process: take it down with the pins.
            if tc_link.is_none() && loaded.program_fd(ProgramKind::Tc).is_some() {
                let _ = crate::attach::remove_filter(ifindex);
            }
            return Err(error);
        }
    };
    if let Some(link) = &tc_link {
        pin(link.as_fd(), &pins.tc_link())?;
    }
    // The commit point of a fresh attachment: [`recover`] keeps a policy
    // whose XDP link is pinned and removes one whose is not.
    pin(xdp_link.as_fd(), &pins.xdp_link())?;
    Ok((attached, fallback))
}

fn rename(from: &Path, to: &Path) -> Result<(), RuntimeError> {
    crate::fault::point("rename");
    std::fs::rename(from, to).map_err(|error| RuntimeError::Io {
        context: "moving a pin into place",
        error: io::Error::new(
            error.kind(),
            format!("{} -> {}: {error}", from.display(), to.display()),
        ),
    })
}

fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>, what: &str) -> io::Result<()> {
    crate::fault::point(what);
    sys::link_update(link, prog)
}

/// Replacement: stage the new pins, swap the programs (XDP, then tc),
/// let the caller carry state over, publish the pins. Returns how long
/// the swap itself took.
fn swap(
    loaded: &Loaded,
    xdp: BorrowedFd<'_>,
    ifindex: u32,
    pins: &Pins,
    hooks: &mut dyn Hooks,
) -> Result<std::time::Duration, RuntimeError> {
    // Staging pins left by a replace that crashed half-way would otherwise
    // be renamed over the live ones (e.g. a stale `maps_new/ct_v4`).
    clean_staged(pins);
    pin_object(loaded, pins, true)?;
    let xdp_link = sys::obj_get(&pins.xdp_link()).map_err(io_err("opening the pinned XDP link"))?;
    let old_xdp = sys::obj_get(&pins.prog(ProgramKind::Xdp))
        .map_err(io_err("opening the running XDP program"))?;
    let old_tc_link = sys::obj_get(&pins.tc_link()).ok();
    // A new tc attachment is created before the swap so that a failure
    // leaves the old policy alone.
    // Without tcx the egress program is a filter: setting the new one
    // replaces the old program in place (before the XDP swap, as a new
    // tcx link would be created before it).
    let old_filter = crate::attach::filter_installed(pins);
    if let (Some(tc), None) = (loaded.program_fd(ProgramKind::Tc), &old_tc_link)
        && let Some(link) = attach_tc(tc, ifindex)?
    {
        pin(link.as_fd(), &Pins::staged(&pins.tc_link()))?;
    }
    let swap_started = std::time::Instant::now();
    if let Err(error) = link_update(xdp_link.as_fd(), xdp, "link_update xdp") {
        if old_filter && let Ok(old) = sys::obj_get(&pins.prog(ProgramKind::Tc)) {
            // The old policy keeps running: its egress program too.
            let _ = crate::attach::set_filter(old.as_fd(), ifindex);
        }
        return Err(io_err("swapping the XDP program")(error));
    }
    if let (Some(tc), Some(link)) = (loaded.program_fd(ProgramKind::Tc), &old_tc_link)
        && let Err(error) = link_update(link.as_fd(), tc, "link_update tc")
    {
        // Put the old XDP program back: the old policy keeps running.
        let _ = link_update(xdp_link.as_fd(), old_xdp.as_fd(), "link_update xdp back");
        return Err(RuntimeError::Io {
            context: "swapping the tc egress program",
            error,
        });
    }
    let swap_time = swap_started.elapsed();
    hooks.after_swap(loaded);
    if old_filter && loaded.program_fd(ProgramKind::Tc).is_none() {
        // The new policy has no egress program: the old filter goes.
        let _ = crate::attach::remove_filter(ifindex);
    }
    // The swap is done: from here on only pins move.
    publish(pins, loaded.program_fd(ProgramKind::Tc).is_some())?;
    Ok(swap_time)
}

/// Moves the staged pins of a swapped replace to their final names.
/// Idempotent, and every state a kill leaves in between is one it
/// continues from: `maps_new/` and `maps/` (nothing moved yet),
/// `maps_new/` and `maps_old/` (between the renames), `maps/` and
/// `maps_old/` (maps published).
fn publish(pins: &Pins, has_tc: bool) -> Result<(), RuntimeError> {
    let staged_maps = Pins::staged(&pins.maps_dir());
    let old_maps = old_maps_dir(pins);
    if staged_maps.exists() {
        if pins.maps_dir().exists() {
            remove_dir_pins(&old_maps);
            rename(&pins.maps_dir(), &old_maps)?;
        }
        rename(&staged_maps, &pins.maps_dir())?;
    }
    for kind in [ProgramKind::Xdp, ProgramKind::Tc] {
        let staged = Pins::staged(&pins.prog(kind));
        if staged.exists() {
            rename(&staged, &pins.prog(kind))?;
        }
    }
    let staged_tc_link = Pins::staged(&pins.tc_link());
    if staged_tc_link.exists() {
        rename(&staged_tc_link, &pins.tc_link())?;
    }
    if !has_tc {
        // The new policy has no egress program: unpinning detaches the
        // old one.
        remove_file(&pins.tc_link());
        remove_file(&pins.prog(ProgramKind::Tc));
    }
    // The replaced policy's maps (state maps live on in `maps/`).
    remove_dir_pins(&old_maps);
    Ok(())
}

/// How [`recover`] finished an interrupted install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// The new policy runs: its pins are published.
    Forward,
    /// The previous policy (or none) runs: the new one's pins are gone.
    Back,
}

/// Finishes an install interrupted after [`Hooks::before_swap`] recorded
/// `intent`, from what the kernel runs (see the module documentation).
pub fn recover(pins: &Pins, intent: &Intent) -> Result<Recovered, RuntimeError> {
    let running = running_prog(&pins.xdp_link());
    if running == Some(intent.new_xdp) {
        let tc_running = running_prog(&pins.tc_link());
        if let Some(new_tc) = intent.new_tc
            && tc_running != Some(new_tc)
            && !Pins::staged(&pins.tc_link()).exists()
        {
            // XDP was swapped, tc not: the pair is half-done. The new tc
            // program is pinned (staged, or final once renamed).
            let staged = Pins::staged(&pins.prog(ProgramKind::Tc));
            let prog_path = if staged.exists() {
                staged
            } else {
                pins.prog(ProgramKind::Tc)
            };
            let prog = sys::obj_get(&prog_path).map_err(io_err("opening the new tc program"))?;
            match sys::obj_get(&pins.tc_link()) {
                Ok(link) => link_update(link.as_fd(), prog.as_fd(), "link_update tc")
                    .map_err(io_err("swapping the tc egress program"))?,
                Err(_) => {
                    let ifindex = pinned_link(&pins.xdp_link()).map_or(0, |l| l.ifindex);
                    // Without tcx this sets the filter to the new program.
                    if let Some(link) = attach_tc(prog.as_fd(), ifindex)? {
                        pin(link.as_fd(), &pins.tc_link())?;
                    }
                }
            }
        }
        if !intent.fresh {
            publish(pins, intent.new_tc.is_some())?;
        }
        return Ok(Recovered::Forward);
    }
    if intent.fresh {
        // Nothing was attached before; what this install pinned goes
        // (an unpinned tc link detaches).
        remove_dir_pins(&pins.dir);
        return Ok(Recovered::Back);
    }
    // The old XDP program runs: the tc link must run the old one too.
    if let Some(old_tc) = intent.old_tc
        && running_prog(&pins.tc_link()).is_some_and(|id| id != old_tc)
    {
        let prog = sys::obj_get(&pins.prog(ProgramKind::Tc))
            .map_err(io_err("opening the running tc program"))?;
        let link = sys::obj_get(&pins.tc_link()).map_err(io_err("opening the pinned tc link"))?;
        link_update(link.as_fd(), prog.as_fd(), "link_update tc back")
            .map_err(io_err("putting the tc egress program back"))?;
    }
    if intent.old_tc.is_some()
        && crate::attach::filter_installed(pins)
        && let Ok(prog) = sys::obj_get(&pins.prog(ProgramKind::Tc))
        && let Some(link) = pinned_link(&pins.xdp_link())
        && link.ifindex != 0
    {
        // Without tcx: the old egress program back into the filter (the
        // new one may have replaced it before the XDP swap).
        crate::attach::set_filter(prog.as_fd(), link.ifindex)?;
    }
    remove_staged(pins);
    Ok(Recovered::Back)
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

/// Detaches the policy installed at `pins` and removes every pin,
/// following no symlink; best effort (cleanup of a failed load, tests).
/// `false` when nothing was installed there. `patronusc unload` uses
/// [`crate::host::Roots::remove_pins`], which reports what remains.
pub fn uninstall(pins: &Pins) -> bool {
    let existed = pins.dir.symlink_metadata().is_ok();
    crate::attach::remove_filter_of(pins);
    // Links first: the interface is unfiltered from here on.
    remove_file(&pins.xdp_link());
    remove_file(&pins.tc_link());
    remove_dir_pins(&pins.dir);
    existed
}

/// Loads `object` and pins its XDP program at `dir/prog` (tc egress at
/// `dir/prog_tc`) and its maps under `dir/maps/`, attaching nothing.
pub fn load_pinned(object: &Object, dir: &Path) -> Result<Loaded, RuntimeError> {
    ensure_bpffs(dir)?;
    let pins = Pins::new(dir);
    create_dir(dir)?;
    let loaded = Loaded::load_object(object)?;
    if let Err(error) = pin_object(&loaded, &pins, false) {
        remove_dir_pins(dir);
        return Err(error);
    }
    Ok(loaded)
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

/// Map types an in-place update handles (`enum bpf_map_type`).
use patronus_codegen::insn::kernel::map_type::{
    ARRAY as MAP_ARRAY, HASH as MAP_HASH, LPM_TRIE as MAP_LPM_TRIE,
    PERCPU_ARRAY as MAP_PERCPU_ARRAY,
};

/// Entries per batched map command of an in-place update.
const INPLACE_BATCH: usize = 8192;

/// What [`update_in_place`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InPlace {
    /// Keys that were not there.
    pub added: usize,
    /// Keys whose value changed.
    pub changed: usize,
    /// Keys removed (array slots: zeroed).
    pub removed: usize,
    /// Maps that had at least one change.
    pub maps: usize,
}

/// A map entry: key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A planned write: key, new value, old value (`None`: a new key).
type Upsert = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// One map's planned changes: `(key, new value, old value)` upserts and
/// `(key, old value)` deletes.
struct MapDelta {
    name: String,
    fd: OwnedFd,
    array: bool,
    upserts: Vec<Upsert>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A map's entries as read from the kernel, keys and values each laid end
/// to end (one allocation each, however many entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    pub key_size: usize,
    pub value_size: usize,
    pub keys: Vec<u8>,
    pub values: Vec<u8>,
}

impl MapEntries {
    pub fn len(&self) -> usize {
        self.keys.len().checked_div(self.key_size).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[i * self.key_size..(i + 1) * self.key_size]
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i * self.value_size..(i + 1) * self.value_size]
    }
}

/// Every entry of a (non-per-CPU) map: batched lookups, falling back to
/// walking the keys where the kernel has no batch lookup for the type.
pub fn map_entries(fd: BorrowedFd<'_>) -> Result<MapEntries, RuntimeError> {
    let info = sys::map_info(fd).map_err(io_err("reading map info"))?;
    let (ks, vs) = (info.key_size as usize, info.value_size as usize);
    let mut out = MapEntries {
        key_size: ks,
        value_size: vs,
        ..MapEntries::default()
    };
    let chunk = INPLACE_BATCH.min(info.max_entries.max(1) as usize);
    let mut keys = vec![0u8; ks * chunk];
    let mut values = vec![0u8; vs * chunk];
    // The batch cursor is opaque: a bucket index (hash, 4 bytes) or a key.
    let mut cursor: Vec<u8> = Vec::new();
    let mut next = vec![0u8; ks.max(8)];
    loop {
        let step = sys::map_lookup_batch(
            fd,
            (!cursor.is_empty()).then_some(cursor.as_slice()),
            &mut next,
            &mut keys,
            &mut values,
            chunk as u32,
        );
        match step {
            Ok((count, done)) => {
                let count = count as usize;
                out.keys.extend_from_slice(&keys[..count * ks]);
                out.values.extend_from_slice(&values[..count * vs]);
                if done {
                    return Ok(out);
                }
                cursor.clear();
                cursor.extend_from_slice(&next);
            }
            Err(error)
                if cursor.is_empty()
                    && matches!(
                        error.raw_os_error(),
                        Some(sys::ENOTSUPP | libc::EOPNOTSUPP | libc::EINVAL)
                    ) =>
            {
                break;
            }
            Err(error) => {
                return Err(RuntimeError::Io {
                    context: "reading map entries (batched)",
                    error,
                });
            }
        }
    }
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; ks];
    let mut value = vec![0u8; vs];
    // Bounded: a map never holds more than max_entries keys.
    while out.len() <= info.max_entries as usize {
        let more = sys::map_get_next_key(fd, key.as_deref(), &mut next)
            .map_err(io_err("listing map keys"))?;
        if !more {
            break;
        }
        if sys::map_lookup_elem(fd, &next, &mut value).map_err(io_err("reading an entry"))? {
            out.keys.extend_from_slice(&next);
            out.values.extend_from_slice(&value);
        }
        key = Some(next.clone());
    }
    Ok(out)
}

/// The first 20 bytes of a key as integers, big-endian: for keys of one
/// length, ordering by it (then by the bytes, for longer keys) is the
/// bytes' order, at the cost of integer compares instead of `memcmp`.
type SortKey = (u128, u32);

fn sort_key(key: &[u8]) -> SortKey {
    let mut bytes = [0u8; 20];
    let n = key.len().min(20);
    bytes[..n].copy_from_slice(&key[..n]);
    let mut head = [0u8; 16];
    head.copy_from_slice(&bytes[..16]);
    let mut tail = [0u8; 4];
    tail.copy_from_slice(&bytes[16..]);
    (u128::from_be_bytes(head), u32::from_be_bytes(tail))
}

/// The changes that turn `old` into `image`'s entries: a merge of both
/// sorted by key (no per-entry allocation for the old side, no hashing:
/// this runs over a million entries). For arrays, a slot the image leaves
/// out holds zeros.
fn delta(name: &str, fd: OwnedFd, array: bool, old: &MapEntries, image: &[Entry]) -> MapDelta {
    let mut old_order: Vec<(SortKey, u32)> = (0..old.len())
        .map(|i| (sort_key(old.key(i)), i as u32))
        .collect();
    old_order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| old.key(a.1 as usize).cmp(old.key(b.1 as usize)))
    });
    let old_order: Vec<u32> = old_order.into_iter().map(|(_, i)| i).collect();
    let mut new_order: Vec<(SortKey, &Entry)> = image.iter().map(|e| (sort_key(&e.0), e)).collect();
    new_order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.0.cmp(&b.1.0)));
    let new_order: Vec<&Entry> = new_order.into_iter().map(|(_, e)| e).collect();
    let zero = vec![0u8; old.value_size];
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let (mut i, mut j) = (0, 0);
    let mut removed = |key: &[u8], previous: &[u8], upserts: &mut Vec<Upsert>| {
        if !array {
            deletes.push((key.to_vec(), previous.to_vec()));
        } else if previous != zero.as_slice() {
            upserts.push((key.to_vec(), zero.clone(), Some(previous.to_vec())));
        }
    };
    while i < old_order.len() || j < new_order.len() {
        let old_at = old_order.get(i).map(|&o| o as usize);
        let order = match (old_at, new_order.get(j)) {
            (Some(o), Some(n)) => old.key(o).cmp(n.0.as_slice()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match (order, old_at) {
            (std::cmp::Ordering::Less, Some(o)) => {
                removed(old.key(o), old.value(o), &mut upserts);
                i += 1;
            }
            (std::cmp::Ordering::Equal, Some(o)) => {
                let (key, value) = new_order[j];
                if old.value(o) != value.as_slice() {
                    upserts.push((key.clone(), value.clone(), Some(old.value(o).to_vec())));
                }
                i += 1;
                j += 1;
            }
            _ => {
                let (key, value) = new_order[j];
                upserts.push((key.clone(), value.clone(), None));
                j += 1;
            }
        }
    }
    MapDelta {
        name: name.to_owned(),
        fd,
        array,
        upserts,
        deletes,
    }
}

/// Writes `entries` (key, value) into `fd`: batched, per element when the
/// batch command is refused. Returns how many were written before an error.
fn write_entries<'e>(
    fd: BorrowedFd<'_>,
    entries: impl ExactSizeIterator<Item = (&'e [u8], &'e [u8])> + Clone,
) -> Result<(), (io::Error, usize)> {
    let all: Vec<(&[u8], &[u8])> = entries.collect();
    let mut done = 0;
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut batched = true;
    while batched && done < all.len() {
        let chunk = &all[done..(done + INPLACE_BATCH).min(all.len())];
        keys.clear();
        values.clear();
        for (k, v) in chunk {
            keys.extend_from_slice(k);
            values.extend_from_slice(v);
        }
        crate::fault::point("map update batch");
        match sys::map_update_batch(fd, &keys, &values, chunk.len() as u32) {
            Ok(()) => done += chunk.len(),
            Err((error, 0))
                if done == 0
                    && matches!(
                        error.raw_os_error(),
                        Some(sys::ENOTSUPP | libc::EOPNOTSUPP | libc::EINVAL)
                    ) =>
            {
                batched = false;
            }
            Err((error, applied)) => return Err((error, done + applied as usize)),
        }
    }
    for (k, v) in &all[done..] {
        crate::fault::point("map update");
        sys::map_update_elem(fd, k, v).map_err(|e| (e, done))?;
        done += 1;
    }
    Ok(())
}

/// Deletes `keys` from `fd`: batched, per element when refused. A key
/// already gone counts as deleted.
fn delete_keys(fd: BorrowedFd<'_>, all: &[&[u8]]) -> Result<(), (io::Error, usize)> {
    let mut done = 0;
    let mut keys = Vec::new();
    let mut batched = true;
    while batched && done < all.len() {
        let chunk = &all[done..(done + INPLACE_BATCH).min(all.len())];
        keys.clear();
        for k in chunk {
            keys.extend_from_slice(k);
        }
        crate::fault::point("map delete batch");
        match sys::map_delete_batch(fd, &keys, chunk.len() as u32) {
            Ok(()) => done += chunk.len(),
            // Not supported, or a key vanished: finish one by one.
            Err((_, applied)) => {
                done += applied as usize;
                batched = false;
            }
        }
    }
    for k in &all[done..] {
        crate::fault::point("map delete");
        sys::map_delete_elem(fd, k).map_err(|e| (e, done))?;
        done += 1;
    }
    Ok(())
}

/// Puts back the old entries of the first `upserted` upserts and `deleted`
/// deletes of `d`.
fn restore(d: &MapDelta, upserted: usize, deleted: usize) -> Result<(), String> {
    let fd = d.fd.as_fd();
    let mut failed = 0usize;
    for (key, _, old) in &d.upserts[..upserted] {
        let ok = match old {
            Some(old) => sys::map_update_elem(fd, key, old).is_ok(),
            None => sys::map_delete_elem(fd, key).is_ok(),
        };
        failed += usize::from(!ok);
    }
    for (key, old) in &d.deletes[..deleted] {
        failed += usize::from(sys::map_update_elem(fd, key, old).is_err());
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(format!(
            "{failed} entries of map `{}` could not be put back",
            d.name
        ))
    }
}

/// Makes the maps pinned at `pins` hold exactly `images`' entries without
/// touching the programs or any other map: reads each map's current
/// entries from the kernel (so changes made at run time, e.g. by
/// `patronusc table add`, are accounted for), then writes new and changed
/// entries into every map first and deletes removed ones afterwards (an
/// address moving between prefixes is never in neither). Each map must be
/// pinned with exactly the image's shape ([`RuntimeError::ShapeChanged`]
/// otherwise, nothing changed). On failure the entries already changed are
/// restored (best effort: [`RuntimeError::InPlace`] says how it went).
pub fn update_in_place(
    pins: &Pins,
    images: &[&patronus_codegen::MapDef],
) -> Result<InPlace, RuntimeError> {
    let mut deltas = Vec::new();
    // Memory-mapped DIR-24 arrays: rewritten after the upserts (their
    // slots point into the bitmaps and tries updated there).
    let mut mapped = Vec::new();
    for image in images {
        let fd = sys::obj_get(&pins.map(&image.name)).map_err(|_| RuntimeError::ShapeChanged {
            map: image.name.clone(),
        })?;
        let info = sys::map_info(fd.as_fd()).map_err(io_err("reading map info"))?;
        if info.map_flags & patronus_codegen::xdp::dir24::MMAPABLE != 0 {
            if MapShape::of_info(&info) != MapShape::of(image) {
                return Err(RuntimeError::ShapeChanged {
                    map: image.name.clone(),
                });
            }
            mapped.push((image, fd, info));
            continue;
        }
        if MapShape::of_info(&info) != MapShape::of(image)
            || !matches!(info.map_type, MAP_HASH | MAP_ARRAY | MAP_LPM_TRIE)
        {
            return Err(RuntimeError::ShapeChanged {
                map: image.name.clone(),
            });
        }
        let old = map_entries(fd.as_fd())?;
        deltas.push(delta(
            &image.name,
            fd,
            info.map_type == MAP_ARRAY,
            &old,
            &image.entries,
        ));
    }
    let mut done = InPlace::default();
    // (map index, upserts applied, deletes applied) for the restore.
    let mut progress: Vec<(usize, usize)> = vec![(0, 0); deltas.len()];
    let fail = |cause: RuntimeError, progress: &[(usize, usize)]| {
        let restored = deltas
            .iter()
            .zip(progress)
            .map(|(d, (u, del))| restore(d, *u, *del))
            .filter_map(Result::err)
            .collect::<Vec<_>>();
        RuntimeError::InPlace {
            cause: Box::new(cause),
            restored: if restored.is_empty() {
                Ok(())
            } else {
                Err(restored.join("; "))
            },
        }
    };
    for (i, d) in deltas.iter().enumerate() {
        let entries = d
            .upserts
            .iter()
            .map(|(k, v, _)| (k.as_slice(), v.as_slice()));
        if let Err((error, applied)) = write_entries(d.fd.as_fd(), entries) {
            progress[i].0 = applied;
            let cause = RuntimeError::Map {
                map: d.name.clone(),
                op: "in-place update",
                error,
            };
            return Err(fail(cause, &progress));
        }
        progress[i].0 = d.upserts.len();
    }
    for (image, fd, info) in &mapped {
        crate::fault::point("rewrite mapped array");
        match crate::mapped::rewrite_runs(&image.name, fd.as_fd(), info, &image.entries) {
            Ok(changed) => {
                done.changed += changed;
                done.maps += usize::from(changed > 0);
            }
            Err(cause) => return Err(fail(cause, &progress)),
        }
    }
    for (i, d) in deltas.iter().enumerate() {
        if d.array {
            continue;
        }
        let keys: Vec<&[u8]> = d.deletes.iter().map(|(k, _)| k.as_slice()).collect();
        if let Err((error, applied)) = delete_keys(d.fd.as_fd(), &keys) {
            progress[i].1 = applied;
            let cause = RuntimeError::Map {
                map: d.name.clone(),
                op: "in-place delete",
                error,
            };
            return Err(fail(cause, &progress));
        }
        progress[i].1 = d.deletes.len();
    }
    for d in &deltas {
        let added = d.upserts.iter().filter(|u| u.2.is_none()).count();
        done.added += added;
        if d.array {
            // Zeroed slots are the array's deletions.
            let zeroed = d
                .upserts
                .iter()
                .filter(|u| u.1.iter().all(|b| *b == 0))
                .count();
            done.removed += zeroed;
            done.changed += d.upserts.len() - added - zeroed;
        } else {
            done.changed += d.upserts.len() - added;
            done.removed += d.deletes.len();
        }
        done.maps += usize::from(!d.upserts.is_empty() || !d.deletes.is_empty());
    }
    Ok(done)
}

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Why this process cannot load and attach programs, judged from its
/// effective capabilities: attaching needs `CAP_NET_ADMIN`, loading needs
/// `CAP_BPF` (or `CAP_SYS_ADMIN`, which kernels before 5.8 wanted).
/// `None` when it can, or when `/proc` cannot tell (the kernel will).
pub fn missing_privileges() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    missing_in_status(&status)
}

/// [`missing_privileges`] on the text of a `/proc/PID/status` file.
pub fn missing_in_status(status: &str) -> Option<String> {
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())?;
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "loading and attaching eBPF programs needs root (missing {}); run it with sudo",
            missing.join(" and ")
        )
    })
}

/// How many entries a pinned hash map holds (e.g. conntrack flows).
pub fn count_entries(map: BorrowedFd<'_>) -> Result<usize, RuntimeError> {
    let info = sys::map_info(map).map_err(io_err("reading map info"))?;
    let mut key = vec![0u8; info.key_size as usize];
    let mut next = vec![0u8; info.key_size as usize];
    let mut count = 0usize;
    let mut first = true;
    // Bounded: a map never holds more than max_entries keys.
    while count <= info.max_entries as usize {
        let more = sys::map_get_next_key(map, (!first).then_some(key.as_slice()), &mut next)
            .map_err(io_err("listing map keys"))?;
        if !more {
            break;
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        count += 1;
    }
    Ok(count)
}

/// A per-CPU (or plain) array of u64 counters: for each index, the
/// value's little-endian u64 words summed over CPUs.
pub fn read_counters(map: BorrowedFd<'_>) -> Result<Vec<Vec<u64>>, RuntimeError> {
    let info = sys::map_info(map).map_err(io_err("reading map info"))?;
    let value_size = info.value_size as usize;
    let percpu = info.map_type == MAP_PERCPU_ARRAY;
    if !(percpu || info.map_type == MAP_ARRAY) || !value_size.is_multiple_of(8) {
        return Err(RuntimeError::Io {
            context: "reading counters",
            error: io::Error::new(io::ErrorKind::InvalidInput, "not an array of u64 counters"),
        });
    }
    let cpus = if percpu {
        sys::possible_cpus().map_err(io_err("counting CPUs"))?
    } else {
        1
    };
    let mut buf = vec![0u8; value_size * cpus];
    let mut out = Vec::with_capacity(info.max_entries as usize);
    for index in 0..info.max_entries {
        buf.fill(0);
        sys::map_lookup_elem(map, &index.to_ne_bytes(), &mut buf)
            .map_err(io_err("reading a counter"))?;
        let mut sums = vec![0u64; value_size / 8];
        for cpu_value in buf.chunks_exact(value_size) {
            for (sum, word) in sums.iter_mut().zip(cpu_value.chunks_exact(8)) {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(word);
                *sum = sum.wrapping_add(u64::from_le_bytes(bytes));
            }
        }
        out.push(sums);
    }
    Ok(out)
}

/// Adds `words` (one total per u64 word of the value, e.g. packets and
/// bytes) to counter `index` of a per-CPU (or plain) u64 array, on the
/// first CPU's slot. Used to carry a replaced policy's counters over; a
/// packet the program counts on that CPU during this read-modify-write
/// can be lost, which is why it is done once, right after the swap.
pub fn add_counters(map: BorrowedFd<'_>, index: u32, words: &[u64]) -> Result<(), RuntimeError> {
    let info = sys::map_info(map).map_err(io_err("reading map info"))?;
    let value_size = info.value_size as usize;
    let percpu = info.map_type == MAP_PERCPU_ARRAY;
    if !(percpu || info.map_type == MAP_ARRAY)
        || !value_size.is_multiple_of(8)
        || index >= info.max_entries
    {
        return Err(RuntimeError::Io {
            context: "writing counters",
            error: io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an array of u64 counters, or the index is out of range",
            ),
        });
    }
    let cpus = if percpu {
        sys::possible_cpus().map_err(io_err("counting CPUs"))?
    } else {
        1
    };
    let mut buf = vec![0u8; value_size * cpus];
    sys::map_lookup_elem(map, &index.to_ne_bytes(), &mut buf)
        .map_err(io_err("reading a counter"))?;
    for (slot, add) in buf[..value_size].chunks_exact_mut(8).zip(words) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(slot);
        let sum = u64::from_le_bytes(bytes).wrapping_add(*add);
        slot.copy_from_slice(&sum.to_le_bytes());
    }
    sys::map_update_elem(map, &index.to_ne_bytes(), &buf).map_err(io_err("writing a counter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_come_from_the_effective_set() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(missing_in_status(root), None);
        let user = "CapPrm:\t000001ffffffffff\nCapEff:\t0000000000000000\n";
        assert_eq!(
            missing_in_status(user).as_deref(),
            Some(
                "loading and attaching eBPF programs needs root (missing CAP_BPF and \
                 CAP_NET_ADMIN); run it with sudo"
            )
        );
        // CAP_NET_ADMIN and CAP_SYS_ADMIN (an older kernel's CAP_BPF).
        let old_style = format!("CapEff:\t{:016x}\n", (1u64 << 12) | (1u64 << 21));
        assert_eq!(missing_in_status(&old_style), None);
        let bpf_only = format!("CapEff:\t{:016x}\n", 1u64 << 39);
        assert!(missing_in_status(&bpf_only).is_some_and(|m| m.contains("missing CAP_NET_ADMIN)")));
        assert_eq!(missing_in_status("no such line"), None);
    }
}
