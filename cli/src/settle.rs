//! What every command that reads or changes an interface's policy does
//! first: take the interface lock, finish an interrupted change
//! (`crate::txn::recover`) and perform an overdue `--confirm` rollback
//! (`crate::confirm::overdue_rollback`). What was done is printed on
//! stderr.

use patronus_runtime::host::IfaceName;

use crate::common::CliError;
use crate::state_dir::{ApplyLock, Roots};

/// With the lock held: finishes an interrupted change, then performs an
/// overdue `--confirm` rollback.
pub(crate) fn settle_locked(
    roots: &Roots,
    lock: &ApplyLock,
    iface: &IfaceName,
) -> Result<(), CliError> {
    if let Some(note) = crate::txn::recover(roots, lock, iface)? {
        eprintln!("patronusc: {note}");
    }
    if let Some(note) = crate::confirm::overdue_rollback(roots, lock, iface)? {
        eprintln!("patronusc: warning: {note}");
    }
    Ok(())
}

/// Takes the interface lock and settles (see [`settle_locked`]).
pub(crate) fn settle(roots: &Roots, iface: &IfaceName) -> Result<ApplyLock, CliError> {
    let lock = ApplyLock::take(roots, iface)?;
    settle_locked(roots, &lock, iface)?;
    Ok(lock)
}
