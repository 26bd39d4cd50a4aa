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
//!
//! The install is cut along its seams: [`crate::pins`] (names, pinning,
//! live maps), `swap` (attach, link updates, publication, recovery),
//! `inplace` (map contents of a running policy), [`crate::counters`]
//! (counters read and carried) and [`crate::privileges`]. Which maps are
//! state is [`crate::deploy::roles`]'s question.

mod inplace;
mod swap;

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use patronus_codegen::Object;
use patronus_codegen::elf::ProgramKind;

use crate::deploy::decide;
use crate::error::RuntimeError;
use crate::loaded::{Loaded, MapShape};
use crate::pins::{
    create_dir, link_severed, pin_object, remove_dir_pins, remove_file, running_prog,
};
use crate::sys;

pub use crate::counters::{add_counters, count_entries, read_counters};
pub use crate::pins::{
    DEFAULT_PIN_ROOT, Pins, clean_staged, ensure_bpffs, live_map, live_map_ids, open_map,
    open_map_readonly, pinned_link,
};
pub use crate::privileges::{missing_in_status, missing_privileges};
pub use inplace::{Entry, InPlace, MapEntries, map_entries, update_in_place};
pub use swap::{Recovered, recover};

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

/// State maps of the running policy that the new object can take over:
/// pinned, with exactly the planned shape ([`decide::kept_state`]).
fn reusable_state(object: &Object, pins: &Pins) -> (Vec<(String, PathBuf)>, Vec<String>) {
    let pinned = |name: &str| {
        let fd = sys::obj_get(&pins.map(name)).ok()?;
        // A pin whose info cannot be read is not one to take over.
        Some(sys::map_info(fd.as_fd()).map_or(MapShape::UNKNOWN, |info| MapShape::of_info(&info)))
    };
    let kept = decide::kept_state(object, &pinned);
    let reuse = kept
        .kept
        .into_iter()
        .map(|name| {
            let path = pins.map(&name);
            (name, path)
        })
        .collect();
    (reuse, kept.reset)
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
        let result = swap::fresh_attach(&loaded, xdp, ifindex, mode, pins);
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
    let swap_time = match swap::swap(&loaded, xdp, ifindex, pins, hooks) {
        Ok(time) => time,
        Err(error) => {
            crate::pins::remove_staged(pins);
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
