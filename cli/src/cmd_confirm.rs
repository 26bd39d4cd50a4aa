//! `patronusc confirm -i IFACE` and the hidden `rollback-watcher`
//! subcommand behind `apply --confirm DURATION`; what a confirmation
//! arms and rolls back to is `crate::confirm`'s.
//!
//! `confirm` writes the token's marker (the commit point of a confirm)
//! under the interface lock, unless the deadline has passed, in which
//! case the rollback happens now; the watcher sleeps until the deadline,
//! then settles the interface like any command.

use std::time::Duration;

use clap::Args;
use patronus_runtime::host::{IfaceName, StateFile};

use crate::common::{CliError, Status, write_stdout};
use crate::confirm::{now_ms, overdue_rollback};
use crate::state_dir::{ApplyLock, Roots, log_rollback as log, pending, remove_state};

#[derive(Debug, Args)]
pub struct ConfirmArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    #[command(flatten)]
    pub roots: Roots,
}

/// The hidden watcher subcommand `apply --confirm` starts.
#[derive(Debug, Args)]
pub struct WatcherArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    #[arg(long)]
    pub token: String,
    /// How long to wait before rolling back, in milliseconds.
    #[arg(long)]
    pub after_ms: u64,
    #[command(flatten)]
    pub roots: Roots,
}

pub fn run_confirm(args: &ConfirmArgs) -> Result<Status, CliError> {
    let (roots, iface) = (&args.roots, &args.iface);
    crate::txn::ignore_hangup();
    let lock = ApplyLock::take(roots, iface)?;
    let state = &lock.state;
    if let Some(note) = crate::txn::recover(roots, &lock, iface)? {
        eprintln!("patronusc: {note}");
    }
    let Some(pending) = pending(state)? else {
        eprintln!(
            "patronusc: {iface}: no apply is waiting for confirmation (already confirmed, rolled \
             back, or applied without --confirm)"
        );
        return Ok(Status::Failure);
    };
    let marker = StateFile::confirmed(&pending.token)?;
    let now = now_ms();
    if now >= pending.deadline_ms && !state.exists(&marker) {
        // Too late: the rollback is due and happens now, not a confirm
        // "with 0.0 s left".
        let late = (now - pending.deadline_ms) as f64 / 1000.0;
        let done = overdue_rollback(roots, &lock, iface)?;
        eprintln!(
            "patronusc: {iface}: too late to confirm: the deadline passed {late:.1} s ago; {}",
            done.unwrap_or_else(|| "the rollback is due".into())
        );
        return Ok(Status::Failure);
    }
    // The marker is the commit point: a kill after it is a confirm (the
    // next command removes `pending.json`), a kill before it is not.
    patronus_runtime::fault::point("write confirm marker");
    state.write(&marker, b"")?;
    remove_state(state, &StateFile::Pending)?;
    log(state, iface, &format!("confirmed {}", pending.token));
    let left_ms = pending.deadline_ms.saturating_sub(now);
    write_stdout(&format!(
        "confirmed the policy on {iface} ({:.1} s were left)\n",
        left_ms as f64 / 1000.0
    ))?;
    Ok(Status::Success)
}

/// The watcher: waits for the deadline, then settles the interface (which
/// rolls back unless confirmed). Also what tests run in-process.
pub fn run_watcher(args: &WatcherArgs) -> Result<Status, CliError> {
    let marker = StateFile::confirmed(&args.token)?;
    crate::txn::ignore_hangup();
    std::thread::sleep(Duration::from_millis(args.after_ms));
    let (roots, iface) = (&args.roots, &args.iface);
    // The apply that started us may still be running: wait for it, then
    // for the deadline it recorded.
    loop {
        let lock = ApplyLock::take(roots, iface)?;
        let state = &lock.state;
        if let Some(note) = crate::txn::recover(roots, &lock, iface)? {
            eprintln!("patronusc: {note}");
        }
        let Some(pending) = pending(state)?.filter(|p| p.token == args.token) else {
            // Confirmed, cancelled by a plain apply, superseded by a newer
            // --confirm apply, or an apply that never took effect.
            if !state.remove(&marker)? {
                log(
                    state,
                    iface,
                    &format!("{}: superseded, nothing to do", args.token),
                );
            }
            return Ok(Status::Success);
        };
        let left = pending.deadline_ms.saturating_sub(now_ms());
        if left == 0 || state.exists(&marker) {
            overdue_rollback(roots, &lock, iface)?;
            let _ = state.remove(&marker);
            return Ok(Status::Success);
        }
        drop(lock);
        std::thread::sleep(Duration::from_millis(left));
    }
}
