//! The transaction around every change of an interface's policy (apply,
//! replace, in-place update, `table add|del`, rollback, unload) and the
//! recovery every later command runs first.
//!
//! A change first writes `STATE_ROOT/IFACE/txn.json` ([`Txn`]): what it is
//! about to do and everything the state files must say once it is done —
//! the new metadata, table metadata, saved sources, journal and pending
//! confirmation — plus, for a load, the kernel ids of the programs before
//! and after ([`install::Intent`]). Only then does it touch a pin, a link
//! or a map. [`Txn::commit`] writes the state files and removes
//! `txn.json` last. A process killed anywhere in between (SIGKILL, OOM, a
//! dropped SSH session: SIGHUP is ignored while a change runs) leaves
//! `txn.json` behind, and the next command on the interface, under the
//! interface lock, finishes it ([`settle`]) before doing anything else:
//! - a load: [`install::recover`] asks the kernel which program the XDP
//!   link runs and rolls forward (tc link brought along, pins published,
//!   state files written) or back (staged pins removed);
//! - an in-place update or table change: the saved policy with its
//!   journal is compiled again and the maps brought to it in place
//!   (idempotent: the update diffs against the kernel);
//! - an unload: finished.
//!
//! [`settle`] then performs an overdue `--confirm` rollback (the deadline
//! is in `pending.json`, so it does not depend on the watcher being
//! alive). Writes need no fsync: the state root and bpffs live in memory
//! and do not outlive a reboot.

use std::fs::File;
use std::path::{Path, PathBuf};

use patronus_runtime::install::{self, Intent, Recovered};
use serde::{Deserialize, Serialize};

use crate::cmd_apply::{Meta, Roots, Snapshot, write_private};
use crate::cmd_confirm::Pending;
use crate::cmd_table::TablesMeta;
use crate::common::{CliError, ColorArgs, ColorChoice};

/// What kind of change a [`Txn`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// A program load: a fresh attachment or a replace.
    Install,
    /// Map contents only, programs unchanged (an in-place apply, a
    /// recompiled table change).
    InPlace,
    /// `table add|del` through the fast path: map entries and the journal.
    Table,
    Unload,
}

/// [`install::Intent`] as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntentRecord {
    pub fresh: bool,
    pub new_xdp: u32,
    pub new_tc: Option<u32>,
    pub old_xdp: Option<u32>,
    pub old_tc: Option<u32>,
}

impl IntentRecord {
    pub fn of(intent: &Intent) -> IntentRecord {
        IntentRecord {
            fresh: intent.fresh,
            new_xdp: intent.new_xdp,
            new_tc: intent.new_tc,
            old_xdp: intent.old_xdp,
            old_tc: intent.old_tc,
        }
    }

    fn intent(&self) -> Intent {
        Intent {
            fresh: self.fresh,
            new_xdp: self.new_xdp,
            new_tc: self.new_tc,
            old_xdp: self.old_xdp,
            old_tc: self.old_tc,
        }
    }
}

/// What happens to `pending.json` when a change commits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PendingChange {
    #[default]
    Keep,
    /// A plain apply (the operator is there) or a rollback.
    Clear,
    /// An apply with `--confirm`.
    Set(Pending),
}

/// `STATE_ROOT/IFACE/txn.json`: a change in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Txn {
    pub op: Op,
    /// Milliseconds since the Unix epoch.
    pub started_ms: u64,
    #[serde(default)]
    pub intent: Option<IntentRecord>,
    /// The metadata once done (`None`: unchanged).
    #[serde(default)]
    pub meta: Option<Meta>,
    #[serde(default)]
    pub tables: Option<TablesMeta>,
    /// The saved sources once done (`None`: unchanged).
    #[serde(default)]
    pub snapshot: Option<Snapshot>,
    /// The journal once done: `Some("")` removes it, `None` keeps it.
    #[serde(default)]
    pub journal: Option<String>,
    #[serde(default)]
    pub pending: PendingChange,
}

pub fn state_dir(roots: &Roots, iface: &str) -> PathBuf {
    roots.state_root.join(iface)
}

fn txn_path(roots: &Roots, iface: &str) -> PathBuf {
    state_dir(roots, iface).join("txn.json")
}

pub(crate) fn snapshot_path(roots: &Roots, iface: &str) -> PathBuf {
    state_dir(roots, iface).join("snapshot.json")
}

pub(crate) fn pending_path(roots: &Roots, iface: &str) -> PathBuf {
    state_dir(roots, iface).join("pending.json")
}

pub(crate) fn tables_path(roots: &Roots, iface: &str) -> PathBuf {
    state_dir(roots, iface).join("tables.json")
}

pub(crate) fn journal_path(roots: &Roots, iface: &str) -> PathBuf {
    state_dir(roots, iface).join("journal")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|e| CliError::new(format!("cannot encode {what}: {e}")))
}

/// Writes a state file (a kill point).
fn write_state(path: &Path, text: &str) -> Result<(), CliError> {
    patronus_runtime::fault::point("write state");
    write_private(path, text)
}

/// Removes a state file if it is there (a kill point only when it is).
pub(crate) fn remove_state(path: &Path) {
    if path.exists() {
        patronus_runtime::fault::point("unlink state");
        let _ = std::fs::remove_file(path);
    }
}

impl Txn {
    pub fn new(op: Op) -> Txn {
        Txn {
            op,
            started_ms: now_ms(),
            intent: None,
            meta: None,
            tables: None,
            snapshot: None,
            journal: None,
            pending: PendingChange::Keep,
        }
    }

    /// Records the change durably: call before the first pin, link or map
    /// write.
    pub fn begin(&self, roots: &Roots, iface: &str) -> Result<(), CliError> {
        write_state(&txn_path(roots, iface), &encode("the transaction", self)?)
    }

    /// The change is done in the kernel: writes the state files it
    /// implies, then forgets the transaction.
    pub fn commit(&self, roots: &Roots, iface: &str) -> Result<(), CliError> {
        if self.op == Op::Unload {
            for path in [
                roots.meta_path(iface),
                tables_path(roots, iface),
                journal_path(roots, iface),
                pending_path(roots, iface),
                snapshot_path(roots, iface),
            ] {
                remove_state(&path);
            }
        }
        if let Some(meta) = &self.meta {
            let text = serde_json::to_string_pretty(meta)
                .map_err(|e| CliError::new(format!("cannot encode metadata: {e}")))?;
            write_state(&roots.meta_path(iface), &text)?;
        }
        if let Some(tables) = &self.tables {
            write_state(
                &tables_path(roots, iface),
                &encode("table metadata", tables)?,
            )?;
        }
        if let Some(snapshot) = &self.snapshot {
            write_state(
                &snapshot_path(roots, iface),
                &encode("the saved policy", snapshot)?,
            )?;
        }
        match self.journal.as_deref() {
            None => {}
            Some("") => remove_state(&journal_path(roots, iface)),
            Some(text) => write_state(&journal_path(roots, iface), text)?,
        }
        match &self.pending {
            PendingChange::Keep => {}
            PendingChange::Clear => remove_state(&pending_path(roots, iface)),
            PendingChange::Set(pending) => write_state(
                &pending_path(roots, iface),
                &encode("the pending confirmation", pending)?,
            )?,
        }
        remove_state(&txn_path(roots, iface));
        Ok(())
    }
}

/// The change did not happen (it failed cleanly before the kernel changed,
/// or its recovery rolled back): forget it.
pub fn abort(roots: &Roots, iface: &str) {
    remove_state(&txn_path(roots, iface));
}

/// The interrupted change on `iface`, if any.
pub fn interrupted(roots: &Roots, iface: &str) -> Result<Option<Txn>, CliError> {
    let path = txn_path(roots, iface);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::new(format!(
                "cannot read `{}`: {e}",
                path.display()
            )));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        CliError::new(format!(
            "`{}` is damaged ({e}): an interrupted change cannot be finished; check the \
             interface by hand, then remove the file",
            path.display()
        ))
    })
}

/// Finishes an interrupted change with the interface lock held. Returns
/// what was done, for the operator; `None` when there was nothing.
pub fn recover(roots: &Roots, iface: &str) -> Result<Option<String>, CliError> {
    let pins = roots.pins(iface);
    let Some(txn) = interrupted(roots, iface)? else {
        // Staging pins of a run killed before it recorded anything.
        if pins.dir.exists() {
            install::clean_staged(&pins);
        }
        return Ok(None);
    };
    let what = match txn.op {
        Op::Install => {
            let intent = txn.intent.as_ref().ok_or_else(|| {
                CliError::new(format!(
                    "`{}` names no programs: damaged",
                    txn_path(roots, iface).display()
                ))
            })?;
            match install::recover(&pins, &intent.intent()).map_err(|e| {
                CliError::new(format!("{iface}: cannot finish an interrupted apply: {e}"))
            })? {
                Recovered::Forward => {
                    txn.commit(roots, iface)?;
                    "the new policy was running: its apply is finished"
                }
                Recovered::Back => {
                    abort(roots, iface);
                    "it had not taken effect: rolled back to the policy before it"
                }
            }
        }
        Op::InPlace | Op::Table => {
            reconcile(roots, iface, &txn)?;
            txn.commit(roots, iface)?;
            "its map contents are now written in full"
        }
        Op::Unload => {
            install::uninstall(&pins);
            txn.commit(roots, iface)?;
            "the unload is finished"
        }
    };
    Ok(Some(format!(
        "{iface}: an interrupted change (started {} ms ago) was found: {what}",
        now_ms().saturating_sub(txn.started_ms)
    )))
}

/// Brings the maps of the running program to the saved policy with its
/// journal (as the transaction will leave them), in place.
fn reconcile(roots: &Roots, iface: &str, txn: &Txn) -> Result<(), CliError> {
    let snapshot = match &txn.snapshot {
        Some(snapshot) => snapshot.clone(),
        None => crate::cmd_table::read_snapshot(roots, iface)?,
    };
    let journal = match &txn.journal {
        Some(text) => crate::cmd_table::parse_journal(text, &journal_path(roots, iface))?,
        None => crate::cmd_table::read_journal(roots, iface)?,
    };
    let color = ColorArgs {
        color: ColorChoice::Never,
    };
    let compiled = crate::cmd_apply::compile_snapshot_edited(&snapshot, &color, &mut |policy| {
        crate::cmd_table::edit_tables(policy, &journal).map(drop)
    })?
    .ok_or_else(|| {
        CliError::new(format!(
            "{iface}: the saved policy `{}` no longer compiles: cannot finish an interrupted \
             update",
            snapshot.name
        ))
    })?;
    install::update_in_place(
        &roots.pins(iface),
        &crate::cmd_apply::content_maps(&compiled),
    )
    .map(drop)
    .map_err(|e| CliError::new(format!("{iface}: cannot finish an interrupted update: {e}")))
}

/// An exclusive `flock` on the interface's lock file, released on drop.
pub struct IfaceLock {
    _held: File,
}

fn lock_file(roots: &Roots, iface: &str) -> Result<File, CliError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let dir = state_dir(roots, iface);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| CliError::new(format!("cannot create `{}`: {e}", dir.display())))?;
    let path = dir.join("lock");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| CliError::new(format!("cannot open `{}`: {e}", path.display())))
}

impl IfaceLock {
    /// Blocks until no other command changes `iface`.
    pub fn take(roots: &Roots, iface: &str) -> Result<IfaceLock, CliError> {
        let file = lock_file(roots, iface)?;
        file.lock()
            .map_err(|e| CliError::new(format!("cannot lock the state of {iface}: {e}")))?;
        Ok(IfaceLock { _held: file })
    }

    /// The lock if it is free now (`status` does not wait for an apply).
    pub fn try_take(roots: &Roots, iface: &str) -> Result<Option<IfaceLock>, CliError> {
        let file = lock_file(roots, iface)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(IfaceLock { _held: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(CliError::new(format!(
                "cannot lock the state of {iface}: {e}"
            ))),
        }
    }
}

/// With the lock held: finishes an interrupted change, then performs an
/// overdue `--confirm` rollback. What was done is printed on stderr.
pub fn settle_locked(roots: &Roots, iface: &str) -> Result<(), CliError> {
    if let Some(note) = recover(roots, iface)? {
        eprintln!("patronusc: {note}");
    }
    if let Some(note) = crate::cmd_confirm::overdue_rollback(roots, iface)? {
        eprintln!("patronusc: warning: {note}");
    }
    Ok(())
}

/// Takes the interface lock and settles (see [`settle_locked`]): what
/// every command that reads or changes an interface's policy does first.
pub fn settle(roots: &Roots, iface: &str) -> Result<IfaceLock, CliError> {
    let lock = IfaceLock::take(roots, iface)?;
    settle_locked(roots, iface)?;
    Ok(lock)
}

/// Ignores SIGHUP for the rest of the process: a change in progress must
/// not die with the SSH session that started it (the very case
/// `--confirm` exists for). The signal is ignored, not handled, so the
/// change runs to its end.
pub fn ignore_hangup() {
    // SAFETY: installing SIG_IGN for SIGHUP has no preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}
