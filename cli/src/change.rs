//! Putting a compiled policy onto an interface: the apply that `apply`,
//! a recompiled `table add|del` and a `--confirm` rollback share.
//!
//! With the interface lock held and the interface settled, one
//! transaction (`crate::txn`) records what the state files will say, then
//! `patronus_runtime::deploy::decide` chooses between an in-place update
//! of the classifier maps (same object still running, same counters) and
//! a load with an atomic replace (`patronus_runtime::install`), which
//! keeps the state maps of an unchanged shape and carries the counters by
//! rule identity (`patronus_runtime::deploy::carry`). The `--confirm`
//! watcher is started before the swap ([`Watcher`]). The outcome is an
//! [`ApplyReport`], data the command renders.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use patronus_runtime::deploy::carry::Carry;
use patronus_runtime::deploy::decide::{self, Candidate, Change, Link, Recorded};
use patronus_runtime::host::IfaceName;
use patronus_runtime::install::{self, InPlace, XdpMode};
use patronus_runtime::{Loaded, ProgramKind, RuntimeError};

use crate::common::{CliError, runtime_err};
use crate::pipeline::Compiled;
use crate::state_dir::{ApplyLock, Meta, Roots, Snapshot};
use crate::txn::{IntentRecord, Op, PendingChange, Txn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Native XDP, falling back to generic with a warning.
    Auto,
    /// Native (driver) XDP only.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// What the apply report says about where the policy came from and how
/// long it took so far.
pub(crate) struct Applying {
    /// The policy as named on the command line.
    pub(crate) label: String,
    /// Recorded in the metadata (canonical path).
    pub(crate) source: String,
    pub(crate) started: Instant,
    pub(crate) compile_time: Duration,
}

/// What a change leaves in the state files besides the metadata.
pub(crate) struct Commit {
    /// The saved sources (`None`: unchanged).
    pub(crate) snapshot: Option<Snapshot>,
    /// The run-time table journal (`Some("")`: removed; `None`: kept).
    pub(crate) journal: Option<String>,
    pub(crate) pending: PendingChange,
    /// `--confirm`: the rollback watcher, started before the swap.
    pub(crate) watcher: Option<Watcher>,
}

/// The rollback watcher of one `--confirm` apply: this binary again
/// (hidden `rollback-watcher` subcommand), detached.
pub(crate) struct Watcher {
    pub(crate) token: String,
    pub(crate) after_ms: u64,
    /// Tests run the watcher in-process instead (`--no-watcher`).
    pub(crate) spawn: bool,
}

impl Watcher {
    /// Starts the watcher (before the swap: a kill after the swap must
    /// not leave the policy without one).
    pub(crate) fn start(&self, roots: &Roots, iface: &IfaceName) -> Result<(), CliError> {
        if !self.spawn {
            return Ok(());
        }
        use std::os::unix::process::CommandExt as _;
        let exe = std::env::current_exe().map_err(|e| {
            CliError::new(format!(
                "cannot find this program to start the watcher: {e}"
            ))
        })?;
        patronus_runtime::fault::point("spawn watcher");
        std::process::Command::new(exe)
            .arg("rollback-watcher")
            .args(["-i", iface.as_str(), "--token", &self.token, "--after-ms"])
            .arg(self.after_ms.to_string())
            .arg("--pin-root")
            .arg(&roots.pin_root)
            .arg("--state-root")
            .arg(&roots.state_root)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group: the terminal's hang-up or Ctrl-C (the
            // very thing --confirm guards against) does not reach it.
            .process_group(0)
            // The fault hook is for the apply under test, not its watcher.
            .env_remove(patronus_runtime::fault::FAULT_AT_VAR)
            .spawn()
            .map_err(|e| CliError::new(format!("cannot start the rollback watcher: {e}")))?;
        Ok(())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// What an apply did, for the operator.
pub(crate) struct ApplyReport {
    pub(crate) label: String,
    pub(crate) iface: String,
    pub(crate) how: Applied,
    pub(crate) compile_time: Duration,
    pub(crate) total: Duration,
    /// Printed on stderr when the apply is done.
    pub(crate) warnings: Vec<String>,
}

/// The two ways an apply goes.
pub(crate) enum Applied {
    /// Only map contents changed.
    InPlace { done: InPlace, elapsed: Duration },
    /// A load: a fresh attachment or a replace.
    Loaded(Box<LoadReport>),
}

/// What a load and attach (or replace) did.
pub(crate) struct LoadReport {
    pub(crate) replaced: bool,
    pub(crate) mode: String,
    pub(crate) tc: bool,
    pub(crate) rules: usize,
    /// `(name, initial entries, max entries)` of every map.
    pub(crate) maps: Vec<(String, usize, u32)>,
    pub(crate) pin_dir: PathBuf,
    /// `(program, instructions verified)`.
    pub(crate) verified: Vec<(&'static str, u32)>,
    pub(crate) kept: Vec<String>,
    pub(crate) reset: Vec<String>,
    pub(crate) counters_kept: usize,
    pub(crate) swap: Option<Duration>,
    pub(crate) install_time: Duration,
}

impl ApplyReport {
    /// The report's text (stdout).
    pub(crate) fn render(&self) -> String {
        let mut report = String::new();
        let (label, iface) = (&self.label, &self.iface);
        match &self.how {
            Applied::InPlace { done, elapsed } => {
                let _ = writeln!(
                    report,
                    "{label}: updated in place on {iface}: +{} ~{} -{} entries in {} maps, {} (program unchanged)",
                    done.added,
                    done.changed,
                    done.removed,
                    done.maps,
                    ms(*elapsed)
                );
                let _ = writeln!(
                    report,
                    "  time: compile {}, in-place update {}, total {}",
                    ms(self.compile_time),
                    ms(*elapsed),
                    ms(self.total)
                );
            }
            Applied::Loaded(load) => {
                let verb = if load.replaced {
                    "replaced the policy on"
                } else {
                    "applied to"
                };
                let _ = writeln!(
                    report,
                    "{label} {verb} {iface} (XDP {}{})",
                    load.mode,
                    if load.tc { ", tc egress" } else { "" }
                );
                let _ = writeln!(
                    report,
                    "  rules: {}, maps: {}, pinned at {}",
                    load.rules,
                    load.maps.len(),
                    load.pin_dir.display()
                );
                for (name, entries, max) in &load.maps {
                    let _ = writeln!(
                        report,
                        "    {name:<14} {entries:>6} initial entries (max {max})"
                    );
                }
                for (name, insns) in &load.verified {
                    let _ = writeln!(report, "  {name}: {insns} instructions verified");
                }
                if !load.kept.is_empty() {
                    let _ = writeln!(report, "  kept state: {}", load.kept.join(", "));
                }
                if !load.reset.is_empty() {
                    let _ = writeln!(
                        report,
                        "  state reset (map shape changed): {}",
                        load.reset.join(", ")
                    );
                }
                if load.counters_kept > 0 {
                    let _ = writeln!(
                        report,
                        "  counters kept: {} (rules still present, phases)",
                        load.counters_kept
                    );
                }
                if let Some(swap) = load.swap {
                    let _ = writeln!(
                        report,
                        "  swap: {:.0} µs (link update; no detach window)",
                        swap.as_secs_f64() * 1e6
                    );
                }
                let _ = writeln!(
                    report,
                    "  time: compile {}, load+{} {}, total {}",
                    ms(self.compile_time),
                    if load.replaced { "swap" } else { "attach" },
                    ms(load.install_time),
                    ms(self.total)
                );
            }
        }
        report
    }
}

/// The install hooks of an apply: the transaction record and the watcher
/// before the swap, the counters around it.
struct ApplyHooks<'a> {
    roots: &'a Roots,
    lock: &'a ApplyLock,
    iface: &'a IfaceName,
    txn: &'a mut Txn,
    carry: Option<Carry>,
    watcher: Option<&'a Watcher>,
    begun: bool,
}

impl ApplyHooks<'_> {
    /// Carry-over warnings so far, printed as they come.
    fn warn(&mut self) {
        if let Some(carry) = &mut self.carry {
            for warning in carry.warnings.drain(..) {
                eprintln!("patronusc: warning: {warning}");
            }
        }
    }
}

impl install::Hooks for ApplyHooks<'_> {
    fn before_swap(
        &mut self,
        loaded: &Loaded,
        intent: &install::Intent,
    ) -> Result<(), RuntimeError> {
        let to_runtime = |e: CliError| RuntimeError::Io {
            context: "recording the apply",
            error: std::io::Error::other(e.to_string()),
        };
        self.txn.intent = Some(IntentRecord::of(intent));
        if let Some(meta) = &mut self.txn.meta {
            meta.xdp_prog_id = Some(intent.new_xdp);
            meta.tc_prog_id = intent.new_tc;
            if intent.fresh {
                meta.attached_at = now_secs();
                meta.replaced_at = None;
            }
        }
        if !intent.fresh
            && let Some(carry) = &mut self.carry
        {
            carry.before(loaded);
        }
        self.warn();
        self.txn.begin(&self.lock.state).map_err(to_runtime)?;
        self.begun = true;
        if let Some(watcher) = self.watcher {
            watcher.start(self.roots, self.iface).map_err(to_runtime)?;
        }
        Ok(())
    }

    fn after_swap(&mut self, loaded: &Loaded) {
        if let Some(carry) = &mut self.carry {
            carry.after(loaded);
        }
        self.warn();
    }
}

/// Installs a compiled policy on `iface` (the interface lock held,
/// settled) inside a transaction ([`crate::txn`]): in place when only map
/// contents change, else a load and an atomic replace.
#[allow(clippy::too_many_arguments)] // the apply's inputs, no natural grouping yet
pub(crate) fn apply_compiled(
    roots: &Roots,
    lock: &ApplyLock,
    iface: &IfaceName,
    ifindex: u32,
    compiled: &Compiled,
    requested_mode: Mode,
    applying: &Applying,
    commit: Commit,
) -> Result<ApplyReport, CliError> {
    let pins = roots.host().prepare_pins(iface)?;
    let object_hash = compiled.object_hash();
    let previous = crate::state_dir::read_meta(roots, iface)?;
    let mut txn = Txn::new(Op::InPlace);
    txn.tables = Some(compiled.tables_meta(&object_hash));
    txn.snapshot = commit.snapshot;
    txn.journal = commit.journal;
    txn.pending = commit.pending;
    let policy_hash = compiled.policy_hash();
    let counter_keys = compiled.counter_keys();
    let recorded = previous.as_ref().map(|p| Recorded {
        object_hash: p.object_hash.clone(),
        xdp_prog_id: p.xdp_prog_id,
        counter_keys: p.counters.iter().map(|c| c.carry_key()).collect(),
    });
    let link = install::pinned_link(&pins.xdp_link()).map(|l| Link {
        ifindex: l.ifindex,
        prog_id: l.prog_id,
    });
    let candidate = Candidate {
        object_hash: &object_hash,
        counter_keys: &counter_keys,
        ifindex,
    };
    let report = |how, warnings| ApplyReport {
        label: applying.label.clone(),
        iface: iface.to_string(),
        how,
        compile_time: applying.compile_time,
        total: applying.started.elapsed(),
        warnings,
    };
    if let (Change::InPlace, Some(previous)) = (
        decide::decide(recorded.as_ref(), link, &candidate),
        &previous,
    ) {
        txn.meta = Some(Meta {
            source: applying.source.clone(),
            policy_hash: policy_hash.clone(),
            replaced_at: Some(now_secs()),
            counters: compiled.counters.clone(),
            ..previous.clone()
        });
        txn.begin(&lock.state)?;
        if let Some(watcher) = &commit.watcher {
            watcher.start(roots, iface)?;
        }
        let started = Instant::now();
        match install::update_in_place(&pins, &compiled.content_maps()) {
            Ok(done) => {
                let elapsed = started.elapsed();
                txn.commit(roots, lock, iface)?;
                return Ok(report(Applied::InPlace { done, elapsed }, Vec::new()));
            }
            // The pinned maps are not what the metadata says: reload.
            Err(RuntimeError::ShapeChanged { .. }) => crate::txn::abort(&lock.state),
            Err(err) => {
                crate::txn::abort(&lock.state);
                return Err(CliError::new(format!(
                    "cannot apply the policy (the running program is unchanged): {err}"
                )));
            }
        }
    }
    let mode = match requested_mode {
        Mode::Auto => XdpMode::Auto,
        Mode::Native => XdpMode::Native,
        Mode::Generic => XdpMode::Generic,
    };
    txn.op = Op::Install;
    txn.meta = Some(Meta {
        interface: iface.to_string(),
        source: applying.source.clone(),
        policy_hash,
        // Known once attached; a recovery that finishes a fresh auto-mode
        // attachment cannot tell which mode the kernel chose.
        mode: match (requested_mode, &previous) {
            (_, Some(previous)) if pins.installed() => previous.mode.clone(),
            (Mode::Native, _) => "native".to_owned(),
            (Mode::Generic, _) => "generic".to_owned(),
            (Mode::Auto, _) => "auto".to_owned(),
        },
        attached_at: previous.as_ref().map_or_else(now_secs, |p| p.attached_at),
        replaced_at: Some(now_secs()),
        counters: compiled.counters.clone(),
        object_hash: Some(object_hash.clone()),
        xdp_prog_id: None,
        tc_prog_id: None,
    });
    // The replaced policy's counters, final once its program no longer
    // runs; only from a map the running program uses.
    let carry = match (&recorded, pins.installed()) {
        (Some(recorded), true) => Carry::open(&pins, recorded.counter_keys.clone(), counter_keys),
        _ => None,
    };
    let install_started = Instant::now();
    let mut hooks = ApplyHooks {
        roots,
        lock,
        iface,
        txn: &mut txn,
        carry,
        watcher: commit.watcher.as_ref(),
        begun: false,
    };
    let result = install::install(&compiled.object, ifindex, mode, &pins, &mut hooks);
    let begun = hooks.begun;
    let carried = hooks.carry.as_ref().map_or(0, |c| c.carried);
    let installed = match result {
        Ok(installed) => installed,
        Err(err) => {
            if begun {
                // Whatever the failure left, the transaction's recovery
                // knows what runs and tidies up to match.
                if let Err(more) = crate::txn::recover(roots, lock, iface) {
                    eprintln!("patronusc: {more}");
                }
            }
            return Err(runtime_err(
                "cannot apply the policy (the running policy, if any, is unchanged)",
            )(err));
        }
    };
    let install_time = install_started.elapsed();
    let mut meta = txn
        .meta
        .take()
        .ok_or_else(|| CliError::new("internal: no metadata"))?;
    if let Some(mode) = installed.mode {
        meta.mode = mode.name().to_owned();
    }
    if !installed.replaced {
        meta.replaced_at = None;
    }
    let mode_name = meta.mode.clone();
    txn.meta = Some(meta);
    txn.commit(roots, lock, iface)?;

    let mut warnings = Vec::new();
    let requested = match requested_mode {
        Mode::Auto => None,
        Mode::Native => Some("native"),
        Mode::Generic => Some("generic"),
    };
    if let Some(requested) = requested.filter(|r| installed.replaced && *r != mode_name) {
        warnings.push(format!(
            "the running {mode_name} XDP attachment was kept (--mode {requested} \
             needs `patronusc unload` first)"
        ));
    }
    if let Some(reason) = &installed.fallback {
        warnings.push(format!(
            "native XDP refused ({reason}); attached in generic mode"
        ));
    }
    let verified = [(ProgramKind::Xdp, "XDP"), (ProgramKind::Tc, "tc egress")]
        .into_iter()
        .filter_map(|(kind, name)| {
            let insns = installed.loaded.stats(kind)?.verified_insns?;
            Some((name, insns))
        })
        .collect();
    let load = LoadReport {
        replaced: installed.replaced,
        mode: mode_name,
        tc: installed.loaded.has_program(ProgramKind::Tc),
        rules: compiled.program.rules.len(),
        maps: compiled
            .object
            .maps
            .iter()
            .map(|m| (m.name.clone(), m.entries.len(), m.max_entries))
            .collect(),
        pin_dir: pins.dir.clone(),
        verified,
        kept: installed.reused.clone(),
        reset: installed.reset.clone(),
        counters_kept: carried,
        swap: installed.swap_time,
        install_time,
    };
    let report = report(Applied::Loaded(Box::new(load)), warnings);
    for warning in &report.warnings {
        eprintln!("patronusc: warning: {warning}");
    }
    Ok(report)
}
