//! Attaching and swapping: the XDP link and the egress attachment of a
//! fresh install, the atomic replace through the pinned links
//! (`BPF_LINK_UPDATE`) with its publication of the staged pins, and the
//! recovery of a replace interrupted half-way (see `crate::install`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use patronus_codegen::elf::ProgramKind;

use super::{Attached, Hooks, Intent, XdpMode};
use crate::error::RuntimeError;
use crate::loaded::Loaded;
use crate::pins::{
    Pins, clean_staged, old_maps_dir, pin, pin_object, pinned_link, remove_dir_pins, remove_file,
    remove_staged, running_prog,
};
use crate::sys::{self, attach_type, xdp_flags};

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> RuntimeError {
    move |error| RuntimeError::Io { context, error }
}

pub(super) fn attach_xdp(
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
pub(super) fn attach_tc(
    prog: BorrowedFd<'_>,
    ifindex: u32,
) -> Result<Option<OwnedFd>, RuntimeError> {
    crate::fault::point("link_create tc");
    Ok(match crate::attach::egress(prog, ifindex)? {
        crate::attach::Egress::Link(link) => Some(link),
        crate::attach::Egress::Filter => None,
    })
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
pub(super) fn swap(
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

/// A fresh attachment: pins, the egress program, then the XDP link.
pub(super) fn fresh_attach(
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
