//! The transaction around every change of an interface's policy (apply,
//! replace, in-place update, `table add|del`, rollback, unload) and the
//! recovery every later command runs first.
//!
//! A change first writes `STATE_ROOT/IFACE/txn.json` ([`Txn`]): what it is
//! about to do and everything the state files must say once it is done —
//! the new metadata, table metadata, saved sources, journal and pending
//! confirmation — plus, for a load, the kernel ids of the programs before
//! and after ([`install::Intent`]). Only then does it touch a pin, a link
//! or a map. `Txn::commit` writes the state files and removes
//! `txn.json` last. A process killed anywhere in between (SIGKILL, OOM, a
//! dropped SSH session: SIGHUP is ignored while a change runs) leaves
//! `txn.json` behind, and the next command on the interface, under the
//! interface lock, finishes it (`crate::settle`) before doing anything else:
//! - a load: [`install::recover`] asks the kernel which program the XDP
//!   link runs and rolls forward (tc link brought along, pins published,
//!   state files written) or back (staged pins removed);
//! - an in-place update or table change: the saved policy with its
//!   journal is compiled again and the maps brought to it in place
//!   (idempotent: the update diffs against the kernel);
//! - an unload: finished.
//!
//! `crate::settle` then performs an overdue `--confirm` rollback (the
//! deadline is in `pending.json`, so it does not depend on the watcher
//! being alive). State files go through `patronus_runtime::host::StateDir`
//! (verified directory, `O_EXCL` temporary, rename): a reader sees the old
//! or the new file, never half of one. Every write and removal here is a
//! kill point ([`patronus_runtime::fault`]).

use patronus_runtime::host::{IfaceName, StateDir, StateFile};
use patronus_runtime::install::{self, Intent, Recovered};
use serde::{Deserialize, Serialize};

use crate::common::{CliError, ColorArgs, ColorChoice};
use crate::pipeline::{Source, compile};
use crate::state_dir::{
    ApplyLock, Meta, Pending, Roots, Snapshot, TablesMeta, parse_journal, read_journal,
    read_snapshot, remove_state, write_state,
};

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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|e| CliError::new(format!("cannot encode {what}: {e}")))
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
    pub fn begin(&self, state: &StateDir) -> Result<(), CliError> {
        write_state(state, &StateFile::Txn, &encode("the transaction", self)?)
    }

    /// The change is done in the kernel (an unload: does it, pins first):
    /// writes the state files it implies, then forgets the transaction.
    pub(crate) fn commit(
        &self,
        roots: &Roots,
        lock: &ApplyLock,
        iface: &IfaceName,
    ) -> Result<(), CliError> {
        let state = &lock.state;
        if self.op == Op::Unload {
            patronus_runtime::fault::point("remove pins");
            if let Err(err) = roots.host().remove_pins(iface) {
                // Nothing to finish later: the state describing what may
                // still be attached stays, and the error is reported.
                abort(state);
                return Err(err.into());
            }
            for file in [
                StateFile::Meta,
                StateFile::Tables,
                StateFile::Journal,
                StateFile::Pending,
                StateFile::Snapshot,
            ] {
                remove_state(state, &file)?;
            }
        }
        if let Some(meta) = &self.meta {
            let text = serde_json::to_string_pretty(meta)
                .map_err(|e| CliError::new(format!("cannot encode metadata: {e}")))?;
            write_state(state, &StateFile::Meta, &text)?;
        }
        if let Some(tables) = &self.tables {
            write_state(
                state,
                &StateFile::Tables,
                &encode("table metadata", tables)?,
            )?;
        }
        if let Some(snapshot) = &self.snapshot {
            write_state(
                state,
                &StateFile::Snapshot,
                &encode("the saved policy", snapshot)?,
            )?;
        }
        match self.journal.as_deref() {
            None => {}
            Some("") => remove_state(state, &StateFile::Journal)?,
            Some(text) => write_state(state, &StateFile::Journal, text)?,
        }
        match &self.pending {
            PendingChange::Keep => {}
            PendingChange::Clear => remove_state(state, &StateFile::Pending)?,
            PendingChange::Set(pending) => write_state(
                state,
                &StateFile::Pending,
                &encode("the pending confirmation", pending)?,
            )?,
        }
        remove_state(state, &StateFile::Txn)
    }
}

/// The change did not happen (it failed cleanly before the kernel changed,
/// or its recovery rolled back): forget it.
pub fn abort(state: &StateDir) {
    let _ = remove_state(state, &StateFile::Txn);
}

/// The interrupted change recorded in `state`, if any.
pub fn interrupted(state: &StateDir) -> Result<Option<Txn>, CliError> {
    let Some(text) = state.read(&StateFile::Txn)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        CliError::new(format!(
            "`{}` is damaged ({e}): an interrupted change cannot be finished; check the \
             interface by hand, then remove the file",
            state.file_path(&StateFile::Txn).display()
        ))
    })
}

/// Finishes an interrupted change with the interface lock held. Returns
/// what was done, for the operator; `None` when there was nothing.
pub(crate) fn recover(
    roots: &Roots,
    lock: &ApplyLock,
    iface: &IfaceName,
) -> Result<Option<String>, CliError> {
    let pins = roots.pins(iface);
    let Some(txn) = interrupted(&lock.state)? else {
        // Staging pins of a run killed before it recorded anything.
        if roots.host().existing_pins(iface)?.is_some() {
            install::clean_staged(&pins);
        }
        return Ok(None);
    };
    let what = match txn.op {
        Op::Install => {
            let intent = txn.intent.as_ref().ok_or_else(|| {
                CliError::new(format!(
                    "`{}` names no programs: damaged",
                    lock.state.file_path(&StateFile::Txn).display()
                ))
            })?;
            match install::recover(&pins, &intent.intent()).map_err(|e| {
                CliError::new(format!("{iface}: cannot finish an interrupted apply: {e}"))
            })? {
                Recovered::Forward => {
                    txn.commit(roots, lock, iface)?;
                    "the new policy was running: its apply is finished"
                }
                Recovered::Back => {
                    abort(&lock.state);
                    "it had not taken effect: rolled back to the policy before it"
                }
            }
        }
        Op::InPlace | Op::Table => {
            reconcile(roots, lock, iface, &txn)?;
            txn.commit(roots, lock, iface)?;
            "its map contents are now written in full"
        }
        Op::Unload => {
            txn.commit(roots, lock, iface)?;
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
fn reconcile(
    roots: &Roots,
    lock: &ApplyLock,
    iface: &IfaceName,
    txn: &Txn,
) -> Result<(), CliError> {
    let snapshot = match &txn.snapshot {
        Some(snapshot) => snapshot.clone(),
        None => read_snapshot(lock, iface)?,
    };
    let path = lock.state.file_path(&StateFile::Journal);
    let journal = match &txn.journal {
        Some(text) => parse_journal(text, &path)?,
        None => read_journal(lock)?,
    };
    let color = ColorArgs {
        color: ColorChoice::Never,
    };
    let compiled = compile(Source::Saved(&snapshot), &journal, &color)?.ok_or_else(|| {
        CliError::new(format!(
            "{iface}: the saved policy `{}` no longer compiles: cannot finish an interrupted \
             update",
            snapshot.name
        ))
    })?;
    install::update_in_place(&roots.pins(iface), &compiled.content_maps())
        .map(drop)
        .map_err(|e| CliError::new(format!("{iface}: cannot finish an interrupted update: {e}")))
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
