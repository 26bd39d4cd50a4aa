//! `patronusc apply | status | stats | unload | load`: policies on real
//! interfaces.
//!
//! - `apply POLICY [-i IFACE]` compiles the policy, loads it and attaches
//!   it (XDP ingress + tcx egress), pinned under `PIN_ROOT/IFACE/`; on an
//!   interface that already has a policy it swaps the programs atomically
//!   and keeps conntrack and rate-limit state (see
//!   `patronus_runtime::install`). A small JSON metadata file in
//!   `STATE_ROOT/IFACE/` (bpffs holds no regular files) records the source,
//!   its hash, the mode and the stats layout (with rule identities, so
//!   that a replace carries the counters of rules still there into the new
//!   layout); a lock file beside it serialises concurrent applies. Every
//!   change runs as a transaction that any later command finishes or
//!   rolls back after a crash (`crate::txn`); the replaced policy's
//!   counters are carried before the new stats map is published
//!   (`Carry`). The `--confirm` rollback and the SSH-lockout warning
//!   live in `cmd_confirm`.
//! - Incremental apply: when the new policy compiles to the very object
//!   already running (same ELF bytes: same programs, same map
//!   definitions; FNV-1a of the ELF recorded as `object_hash` in the
//!   metadata, together with the XDP program id it was loaded as, checked
//!   against the pinned link) and the same counter layout, nothing is
//!   loaded: the classifier maps are brought to the new images in place
//!   (`install::update_in_place`, which diffs against the entries the
//!   kernel holds now — the cheapest correct source of the previous
//!   contents: it needs no stored copy, costs one batched read per map,
//!   and includes run-time `patronusc table` changes). Conntrack,
//!   rate-limit state and counters are untouched. A map whose pinned
//!   shape differs falls back to a full replace; a failed in-place write
//!   restores the old entries and fails the apply.
//! - `status` settles the interface (when it may: root, lock free), then
//!   reads the pins and the metadata and compares them with the kernel:
//!   the pinned link's interface and program against the interface of
//!   that name now and the recorded programs (XDP and its tc pair); it
//!   shows a pending or overdue `--confirm` (`stats`: `cmd_stats`).
//! - `unload -i IFACE` detaches and removes the pins, then the state.
//!
//! Which directories and files belong to an interface, and how they are
//! created, written and removed safely, is `patronus_runtime::host`'s: the
//! CLI names state files ([`StateFile`]) and never builds their paths.
//! - `load POLICY --pin-dir DIR` loads and pins without attaching (for
//!   benchmark harnesses), optionally recording `--out` flows in conntrack.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use patronus_codegen::Object;
use patronus_compiler::diag::{self, Diagnostic, Files};
use patronus_compiler::ir;
use patronus_compiler::semantics::Counter;
use patronus_compiler::typed::Policy;
use patronus_compiler::{LoadedFile, TableLoader};
use patronus_runtime::host::{self, IfaceName, StateDir, StateFile, StateLock};
use patronus_runtime::install::{self, Pins, XdpMode};
use patronus_runtime::{ProgramKind, RuntimeError};

use crate::cmd_confirm::Watcher;
use crate::txn::{Op, Txn};
use serde::{Deserialize, Serialize};

use crate::cmd_test::phase_name;
use crate::common::{CliError, ColorArgs, Status, print_human_diagnostics, write_stdout};

/// Where metadata and lock files live by default.
pub const DEFAULT_STATE_ROOT: &str = host::paths::DEFAULT_STATE_ROOT;

/// `--pin-root` and `--state-root`: the command-line face of
/// [`host::Roots`], which owns every path below them.
#[derive(Debug, Clone, Args)]
pub struct Roots {
    /// The bpffs directory holding one pin directory per interface.
    #[arg(long, value_name = "DIR", default_value = install::DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
    /// The directory holding one metadata directory per interface.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_ROOT)]
    pub state_root: PathBuf,
}

impl Roots {
    pub fn host(&self) -> host::Roots {
        host::Roots::new(&self.pin_root, &self.state_root)
    }

    /// `PIN_ROOT/IFACE` as paths (no file-system access).
    pub fn pins(&self, iface: &IfaceName) -> Pins {
        self.host().pins(iface)
    }

    /// `STATE_ROOT/IFACE`, created when absent, verified.
    pub fn state(&self, iface: &IfaceName) -> Result<StateDir, CliError> {
        Ok(self.host().state(iface)?)
    }

    /// `STATE_ROOT/IFACE` if it exists, verified.
    pub fn existing_state(&self, iface: &IfaceName) -> Result<Option<StateDir>, CliError> {
        Ok(self.host().existing_state(iface)?)
    }

    /// Interfaces with a policy installed under the pin root, or with an
    /// unfinished change or a pending confirmation in the state root.
    pub fn interfaces(&self) -> Result<Vec<IfaceName>, CliError> {
        let mut names = self.host().interfaces()?;
        if let Ok(entries) = std::fs::read_dir(&self.state_root) {
            for entry in entries.flatten() {
                let Some(iface) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| IfaceName::new(n).ok())
                else {
                    continue;
                };
                if let Ok(Some(state)) = self.existing_state(&iface)
                    && (state.exists(&StateFile::Txn) || state.exists(&StateFile::Pending))
                {
                    names.push(iface);
                }
            }
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup_by(|a, b| a.as_str() == b.as_str());
        Ok(names)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Native XDP, falling back to generic with a warning.
    Auto,
    /// Native (driver) XDP only.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    pub policy: PathBuf,
    /// The interface (default: the policy's `interface` declaration).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: Option<IfaceName>,
    /// How to attach the XDP program.
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: Mode,
    /// Roll back to the previous policy unless `patronusc confirm -i
    /// IFACE` comes within DURATION (`90s`, `5m`, `500ms`).
    #[arg(long, value_name = "DURATION", value_parser = crate::cmd_confirm::parse_duration)]
    pub confirm: Option<Duration>,
    /// Apply to a loopback interface anyway (refused by default: local
    /// traffic there has source = destination, which the policy drops as
    /// `land`).
    #[arg(long)]
    pub force: bool,
    /// Tests: do not spawn the rollback watcher (they run it in-process).
    #[arg(long, hide = true)]
    pub no_watcher: bool,
    #[command(flatten)]
    pub roots: Roots,
    #[command(flatten)]
    pub color: ColorArgs,
    #[command(flatten)]
    pub tables: crate::common::TableAccessArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this interface (default: every interface with a policy).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: Option<IfaceName>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub roots: Roots,
}

#[derive(Debug, Args)]
pub struct UnloadArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    #[command(flatten)]
    pub roots: Roots,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    pub policy: PathBuf,
    /// The bpffs directory: the XDP program is pinned at DIR/prog (tc
    /// egress at DIR/prog_tc), the maps under DIR/maps/.
    #[arg(long, value_name = "DIR")]
    pub pin_dir: PathBuf,
    /// A packet in test syntax sent through the egress program after
    /// loading, so that conntrack holds its flow (repeatable).
    #[arg(long = "out", value_name = "PACKET")]
    pub out: Vec<String>,
    #[command(flatten)]
    pub color: ColorArgs,
    #[command(flatten)]
    pub tables: crate::common::TableAccessArgs,
}

/// One stats counter as recorded at apply time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounterMeta {
    /// `rule` or `phase`.
    pub kind: String,
    /// `rule 2 "web"` or the phase's name.
    pub name: String,
    /// `file:line` of the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The rule's identity (`typed::Rule::identity`: its label, else its
    /// normalised text): how a replace finds the same rule's counter in
    /// the new layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The rule's number in the file (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// The rule's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl CounterMeta {
    /// What identifies this counter across policies: the rule identity,
    /// or the phase name. `None` for a rule recorded without identity.
    fn carry_key(&self) -> Option<String> {
        match self.kind.as_str() {
            "phase" => Some(format!("phase:{}", self.name)),
            _ => self.identity.as_ref().map(|id| format!("rule:{id}")),
        }
    }
}

/// Which counters of the replaced policy go where in the new one: pairs
/// `(new index, summed words)` for every new counter whose rule identity
/// (or phase name) the old layout also had. An identity held by several
/// old counters (identical unlabelled rules) is carried to the first new
/// counter with it only, so nothing is counted twice.
pub fn carried_counters(
    old: &[CounterMeta],
    old_values: &[Vec<u64>],
    new: &[CounterMeta],
) -> Vec<(u32, Vec<u64>)> {
    let mut by_key: std::collections::HashMap<String, Vec<u64>> = std::collections::HashMap::new();
    for (counter, words) in old.iter().zip(old_values) {
        let Some(key) = counter.carry_key() else {
            continue;
        };
        let total = by_key.entry(key).or_insert_with(|| vec![0; words.len()]);
        for (sum, word) in total.iter_mut().zip(words) {
            *sum = sum.wrapping_add(*word);
        }
    }
    new.iter()
        .enumerate()
        .filter_map(|(index, counter)| {
            let words = by_key.remove(&counter.carry_key()?)?;
            let index = u32::try_from(index).ok()?;
            words.iter().any(|w| *w != 0).then_some((index, words))
        })
        .collect()
}

/// What `apply` records about an installed policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub interface: String,
    pub source: String,
    /// FNV-1a 64 of the policy text, hex.
    pub policy_hash: String,
    pub mode: String,
    /// Seconds since the Unix epoch.
    pub attached_at: u64,
    pub replaced_at: Option<u64>,
    /// Stats map layout: counter `i` is at index `i`.
    pub counters: Vec<CounterMeta>,
    /// FNV-1a 64 of the object's ELF, hex: equal objects allow an
    /// in-place update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_hash: Option<String>,
    /// The kernel id of the XDP program loaded for `object_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_prog_id: Option<u32>,
    /// The kernel id of its tc egress program: `status` checks that the
    /// pair runs together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc_prog_id: Option<u32>,
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn runtime_err(context: &str) -> impl FnOnce(RuntimeError) -> CliError + '_ {
    move |err| CliError::new(format!("{context}: {err}"))
}

/// A compiled policy and what the metadata needs from its source.
pub(crate) struct Compiled {
    pub(crate) policy: Policy,
    pub(crate) program: ir::Program,
    pub(crate) object: Object,
    pub(crate) text: String,
    pub(crate) counters: Vec<CounterMeta>,
    /// The sources it was compiled from, to compile it again later
    /// (rollback) whatever happens to the files meanwhile.
    pub(crate) snapshot: Snapshot,
}

/// A policy's source text and the table files it read, as they were.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The policy's file name, as given (table paths resolve against it).
    pub name: String,
    pub text: String,
    /// `(policy name, path as written, resolved name, contents)`.
    pub tables: Vec<(String, String, String, String)>,
}

/// Reads tables from disk ([`crate::common::TableFiles`]) and remembers them.
struct RecordingLoader {
    files: crate::common::TableFiles,
    read: std::cell::RefCell<Vec<(String, String, String, String)>>,
}

impl TableLoader for RecordingLoader {
    fn may_quote(&self, policy_name: &str, file: &LoadedFile) -> bool {
        self.files.may_quote(policy_name, file)
    }

    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let file = self.files.load(policy_name, path)?;
        self.read.borrow_mut().push((
            policy_name.to_owned(),
            path.to_owned(),
            file.name.clone(),
            file.text.clone(),
        ));
        Ok(file)
    }
}

/// Serves the tables of a [`Snapshot`].
struct SnapshotLoader<'a>(&'a Snapshot);

impl TableLoader for SnapshotLoader<'_> {
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        self.0
            .tables
            .iter()
            .find(|(p, t, _, _)| p == policy_name && t == path)
            .map(|(_, _, name, text)| LoadedFile {
                name: name.clone(),
                text: text.clone(),
            })
            .ok_or_else(|| format!("`{path}` is not in the saved policy"))
    }
}

/// check → lower → compile the policy file at `path`; `Ok(None)` when the
/// policy has errors (they are printed).
pub(crate) fn compile(
    path: &Path,
    color: &ColorArgs,
    tables: &crate::common::TableAccessArgs,
) -> Result<Option<Compiled>, CliError> {
    let text = crate::common::read_text(path).map_err(CliError::new)?;
    let loader = RecordingLoader {
        files: tables.loader()?,
        read: Default::default(),
    };
    let name = path.display().to_string();
    let Some(mut compiled) = compile_text(&name, &text, &loader, color)? else {
        return Ok(None);
    };
    compiled.snapshot.tables = loader.read.into_inner();
    Ok(Some(compiled))
}

/// Compiles a saved policy again (its tables from the snapshot).
pub(crate) fn compile_snapshot(
    snapshot: &Snapshot,
    color: &ColorArgs,
) -> Result<Option<Compiled>, CliError> {
    let mut compiled = compile_text(
        &snapshot.name,
        &snapshot.text,
        &SnapshotLoader(snapshot),
        color,
    )?;
    if let Some(compiled) = &mut compiled {
        compiled.snapshot.tables = snapshot.tables.clone();
    }
    Ok(compiled)
}

fn compile_text(
    name: &str,
    text: &str,
    loader: &dyn TableLoader,
    color: &ColorArgs,
) -> Result<Option<Compiled>, CliError> {
    compile_text_edited(name, text, loader, color, &mut |_| Ok(()))
}

/// [`compile_snapshot`] with the checked policy edited before lowering
/// (`patronusc table`: run-time table contents).
pub(crate) fn compile_snapshot_edited(
    snapshot: &Snapshot,
    color: &ColorArgs,
    edit: &mut dyn FnMut(&mut Policy) -> Result<(), CliError>,
) -> Result<Option<Compiled>, CliError> {
    let mut compiled = compile_text_edited(
        &snapshot.name,
        &snapshot.text,
        &SnapshotLoader(snapshot),
        color,
        edit,
    )?;
    if let Some(compiled) = &mut compiled {
        compiled.snapshot.tables = snapshot.tables.clone();
    }
    Ok(compiled)
}

fn compile_text_edited(
    name: &str,
    text: &str,
    loader: &dyn TableLoader,
    color: &ColorArgs,
    edit: &mut dyn FnMut(&mut Policy) -> Result<(), CliError>,
) -> Result<Option<Compiled>, CliError> {
    let mut files = Files::new();
    let file = files.add(name.to_owned(), text.to_owned());
    let checked = patronus_compiler::check(&mut files, file, loader);
    print_human_diagnostics(&files, &checked.diagnostics, color.color);
    let mut policy = match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => return Ok(None),
    };
    edit(&mut policy)?;
    let program = ir::lower(&policy);
    // The code this kernel's verifier accepts (the fast path when it
    // keeps bounds through byte swaps).
    let limits = patronus_runtime::features::current().limits();
    let mut object = patronus_codegen::compile_with_limits(&program, &limits)
        .map_err(|err| CliError::new(format!("cannot compile `{name}`: {err}")))?;
    test_knob_break_verifier(&mut object)?;
    let counters = program
        .counters
        .iter()
        .map(|counter| match counter {
            Counter::Rule(rule) => {
                let location = policy.rules.get(rule.0 as usize).map(|r| {
                    let (line, _) = files.line_col(policy.file, r.span.start);
                    format!("{name}:{line}")
                });
                CounterMeta {
                    kind: "rule".into(),
                    name: crate::cmd_test::rule_name(&policy, *rule),
                    location,
                    identity: policy
                        .rules
                        .get(rule.0 as usize)
                        .map(|r| r.identity.clone()),
                    rule: Some(rule.0 + 1),
                    label: policy
                        .rules
                        .get(rule.0 as usize)
                        .and_then(|r| r.label.clone()),
                }
            }
            Counter::Phase(phase) => CounterMeta {
                kind: "phase".into(),
                name: phase_name(*phase),
                location: None,
                identity: None,
                rule: None,
                label: None,
            },
        })
        .collect();
    Ok(Some(Compiled {
        policy,
        program,
        object,
        text: text.to_owned(),
        counters,
        snapshot: Snapshot {
            name: name.to_owned(),
            text: text.to_owned(),
            tables: Vec::new(),
        },
    }))
}

/// An interface's state directory with its lock held (`STATE_ROOT/IFACE/lock`,
/// see [`host::StateDir::lock`]), released on drop.
pub(crate) struct ApplyLock {
    pub(crate) state: StateDir,
    _held: StateLock,
}

impl ApplyLock {
    /// Blocks until the other command changing `iface` is done.
    pub(crate) fn take(roots: &Roots, iface: &IfaceName) -> Result<ApplyLock, CliError> {
        let state = roots.state(iface)?;
        let held = state.lock()?;
        Ok(ApplyLock { state, _held: held })
    }

    /// The lock if nobody holds it now (`status` does not wait for an
    /// apply).
    pub(crate) fn try_take(
        roots: &Roots,
        iface: &IfaceName,
    ) -> Result<Option<ApplyLock>, CliError> {
        let state = roots.state(iface)?;
        Ok(state
            .try_lock()?
            .map(|held| ApplyLock { state, _held: held }))
    }
}

/// The metadata `apply` recorded for `iface`; `None` when there is none
/// (or it is damaged). Permission and trust problems are errors.
pub fn read_meta(roots: &Roots, iface: &IfaceName) -> Result<Option<Meta>, CliError> {
    let Some(state) = roots.existing_state(iface)? else {
        return Ok(None);
    };
    Ok(state
        .read(&StateFile::Meta)?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Carries the replaced policy's counters into the new stats map (see
/// [`carried_counters`]) in two steps that keep them monotonic for a
/// reader: before the swap, the old totals are written into the new map
/// (not in use yet); after the swap and before the new pins are
/// published, what the old program counted in between is added. (The
/// race this closes: the new map used to be published under `maps/stats`
/// before anything was carried, and a `stats` read in that window saw
/// the new policy's few packets instead of the running totals.) A
/// failure here loses statistics, not filtering: it is a warning.
struct Carry<'a> {
    old_stats: std::os::fd::OwnedFd,
    previous: &'a Meta,
    new: &'a [CounterMeta],
    baseline: Vec<Vec<u64>>,
    carried: usize,
}

impl Carry<'_> {
    fn add(&mut self, stats: std::os::fd::BorrowedFd<'_>, values: &[Vec<u64>]) -> usize {
        let carried = carried_counters(&self.previous.counters, values, self.new);
        // One kill point per carry, whatever the number of counters (it
        // depends on the traffic): kill-point numbers stay stable.
        patronus_runtime::fault::point("carry counters");
        for (index, words) in &carried {
            if let Err(err) = install::add_counters(stats, *index, words) {
                eprintln!(
                    "patronusc: warning: counter {index} of the replaced policy not kept: {err}"
                );
            }
        }
        carried.len()
    }

    fn read(&self) -> Option<Vec<Vec<u64>>> {
        use std::os::fd::AsFd as _;
        match install::read_counters(self.old_stats.as_fd()) {
            Ok(values) => Some(values),
            Err(err) => {
                eprintln!("patronusc: warning: counters of the replaced policy not kept: {err}");
                None
            }
        }
    }

    fn before(&mut self, loaded: &patronus_runtime::Loaded) {
        let (Some(stats), Some(values)) = (loaded.map_fd("stats"), self.read()) else {
            return;
        };
        self.carried = self.add(stats, &values);
        self.baseline = values;
    }

    fn after(&mut self, loaded: &patronus_runtime::Loaded) {
        let (Some(stats), Some(values)) = (loaded.map_fd("stats"), self.read()) else {
            return;
        };
        let delta: Vec<Vec<u64>> = values
            .iter()
            .enumerate()
            .map(|(i, words)| {
                let base = self.baseline.get(i);
                words
                    .iter()
                    .enumerate()
                    .map(|(w, v)| v.wrapping_sub(base.and_then(|b| b.get(w)).copied().unwrap_or(0)))
                    .collect()
            })
            .collect();
        self.carried = self.carried.max(self.add(stats, &delta));
    }
}

/// The install hooks of an apply: the transaction record and the watcher
/// before the swap, the counters around it.
struct ApplyHooks<'a> {
    roots: &'a Roots,
    lock: &'a ApplyLock,
    iface: &'a IfaceName,
    txn: &'a mut Txn,
    carry: Option<Carry<'a>>,
    watcher: Option<&'a Watcher>,
    begun: bool,
}

impl install::Hooks for ApplyHooks<'_> {
    fn before_swap(
        &mut self,
        loaded: &patronus_runtime::Loaded,
        intent: &install::Intent,
    ) -> Result<(), RuntimeError> {
        let to_runtime = |e: CliError| RuntimeError::Io {
            context: "recording the apply",
            error: std::io::Error::other(e.to_string()),
        };
        self.txn.intent = Some(crate::txn::IntentRecord::of(intent));
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
        self.txn.begin(&self.lock.state).map_err(to_runtime)?;
        self.begun = true;
        if let Some(watcher) = self.watcher {
            watcher.start(self.roots, self.iface).map_err(to_runtime)?;
        }
        Ok(())
    }

    fn after_swap(&mut self, loaded: &patronus_runtime::Loaded) {
        if let Some(carry) = &mut self.carry {
            carry.after(loaded);
        }
    }
}

/// Refuses early, with a clear message (exit 2), when this process
/// cannot load or attach programs.
pub(crate) fn require_privileges() -> Result<(), CliError> {
    match install::missing_privileges() {
        Some(why) => Err(CliError::new(why)),
        None => Ok(()),
    }
}

/// Readers (`status`, `stats`, `log`): the pins and the state are root's
/// alone, so without privileges "nothing applied" would be a lie.
pub(crate) fn require_root_to_read() -> Result<(), CliError> {
    match install::missing_privileges() {
        Some(_) => Err(CliError::new(
            "permission denied: run as root (the pins and the state of applied policies are \
             readable by root only)",
        )),
        None => Ok(()),
    }
}

pub fn run_apply(args: &ApplyArgs) -> Result<Status, CliError> {
    // Before anything: a hang-up (a dropped SSH session, the case
    // `--confirm` exists for) must not cut an apply short.
    crate::txn::ignore_hangup();
    let started = Instant::now();
    let Some(compiled) = compile(&args.policy, &args.color, &args.tables)? else {
        eprintln!("patronusc: the policy has errors; nothing was changed");
        return Ok(Status::Failure);
    };
    let compile_time = started.elapsed();
    let iface = match (&args.iface, &compiled.policy.interface) {
        (Some(iface), _) => iface.clone(),
        (None, Some((iface, _))) => IfaceName::new(iface)
            .map_err(|e| CliError::new(format!("the policy's `interface`: {e}")))?,
        (None, None) => {
            return Err(CliError::new(
                "no interface: give `-i IFACE` or declare `interface` in the policy",
            ));
        }
    };
    require_privileges()?;
    let ifindex = install::ifindex(iface.as_str()).map_err(runtime_err(iface.as_str()))?;
    if !args.force && host::netdev::is_loopback(&iface).unwrap_or(false) {
        return Err(CliError::new(format!(
            "{iface} is a loopback interface: the host's own traffic there has the same source \
             and destination address, which every policy drops as invalid (`land`), so local \
             services would stop working; give --force to apply it anyway"
        )));
    }
    if let Some(warning) = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|session| crate::cmd_confirm::ssh_lockout(&compiled.policy, &session))
    {
        match args.confirm {
            Some(within) => eprintln!(
                "patronusc: warning: {warning}; it is rolled back in {within:.0?} unless confirmed"
            ),
            None => eprintln!(
                "patronusc: warning: {warning} (if this is the session you are using, \
                 `--confirm 60s` rolls back unless you confirm)"
            ),
        }
    }
    let lock = crate::txn::settle(&args.roots, &iface)?;
    let confirm = crate::cmd_confirm::before_apply(&args.roots, &lock, &iface, args.confirm)?;
    let source = std::fs::canonicalize(&args.policy).unwrap_or_else(|_| args.policy.clone());
    let (pending, watcher) = match &confirm {
        Some(plan) => {
            let (pending, watcher) = plan.arm(!args.no_watcher);
            (crate::txn::PendingChange::Set(pending), Some(watcher))
        }
        None => (crate::txn::PendingChange::Clear, None),
    };
    let had_pending = crate::cmd_confirm::pending(&lock.state)?.is_some();
    let mut report = apply_locked_with(
        &args.roots,
        &lock,
        &iface,
        ifindex,
        &compiled,
        args.mode,
        &Applying {
            label: args.policy.display().to_string(),
            source: source.display().to_string(),
            started,
            compile_time,
        },
        Commit {
            snapshot: Some(compiled.snapshot.clone()),
            journal: Some(String::new()),
            pending,
            watcher,
        },
    )?;
    match &confirm {
        Some(plan) => plan.report(&iface, &mut report),
        None if had_pending => {
            let _ = writeln!(report, "  the pending rollback is cancelled");
        }
        None => {}
    }
    write_stdout(&report)?;
    Ok(Status::Success)
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
    pub(crate) pending: crate::txn::PendingChange,
    /// `--confirm`: the rollback watcher, started before the swap.
    pub(crate) watcher: Option<Watcher>,
}

/// The maps an in-place update rewrites: classifier maps and the
/// constant bitmaps of wide phases (never state, counters or log maps).
pub(crate) fn content_maps(compiled: &Compiled) -> Vec<&patronus_codegen::MapDef> {
    let classifier: Vec<&str> = compiled
        .program
        .maps
        .iter()
        .filter(|m| matches!(m.contents, ir::plan::Contents::Classifier { .. }))
        .map(|m| m.name.as_str())
        .collect();
    compiled
        .object
        .maps
        .iter()
        .filter(|m| {
            // A classifier map, a phase's constants, or the DIR-24 arrays in
            // front of a classifier trie (`<map>_d24`, `<map>_d24b`).
            let base = patronus_codegen::xdp::dir24::trie_of(&m.name).unwrap_or(&m.name);
            classifier.contains(&base) || m.name.starts_with("consts_")
        })
        .collect()
}

/// Whether `previous` describes the very object `compiled` holds, still
/// running at `pins` on interface `ifindex`, with the same counter layout.
fn same_object(
    previous: Option<&Meta>,
    compiled: &Compiled,
    object_hash: &str,
    pins: &Pins,
    ifindex: u32,
) -> bool {
    let Some(previous) = previous else {
        return false;
    };
    // A link severed by its interface going away (ifindex 0), or one on
    // another interface of that name, runs nothing here: reload.
    let running = install::pinned_link(&pins.xdp_link())
        .filter(|l| l.ifindex == ifindex)
        .map(|l| l.prog_id);
    let keys = |c: &[CounterMeta]| c.iter().map(CounterMeta::carry_key).collect::<Vec<_>>();
    previous.object_hash.as_deref() == Some(object_hash)
        && running.is_some()
        && previous.xdp_prog_id == running
        && keys(&previous.counters) == keys(&compiled.counters)
}

/// Installs a compiled policy on `iface` (the interface lock held,
/// settled) inside a transaction ([`crate::txn`]): in place when only map
/// contents change, else a load and an atomic replace. Returns the report.
#[allow(clippy::too_many_arguments)] // the apply's inputs, no natural grouping yet
pub(crate) fn apply_locked_with(
    roots: &Roots,
    lock: &ApplyLock,
    iface: &IfaceName,
    ifindex: u32,
    compiled: &Compiled,
    requested_mode: Mode,
    applying: &Applying,
    commit: Commit,
) -> Result<String, CliError> {
    let pins = roots.host().prepare_pins(iface)?;
    let object_hash = format!("{:016x}", fnv1a(&compiled.object.elf));
    let previous = read_meta(roots, iface)?;
    let mut txn = Txn::new(Op::InPlace);
    txn.tables = Some(crate::cmd_table::tables_meta(compiled, &object_hash));
    txn.snapshot = commit.snapshot;
    txn.journal = commit.journal;
    txn.pending = commit.pending;
    let policy_hash = format!("{:016x}", fnv1a(compiled.text.as_bytes()));
    if let Some(previous) = previous
        .as_ref()
        .filter(|p| same_object(Some(p), compiled, &object_hash, &pins, ifindex))
    {
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
        match install::update_in_place(&pins, &content_maps(compiled)) {
            Ok(done) => {
                let elapsed = started.elapsed();
                txn.commit(roots, lock, iface)?;
                let mut report = String::new();
                let _ = writeln!(
                    report,
                    "{}: updated in place on {iface}: +{} ~{} -{} entries in {} maps, {} (program unchanged)",
                    applying.label,
                    done.added,
                    done.changed,
                    done.removed,
                    done.maps,
                    ms(elapsed)
                );
                let _ = writeln!(
                    report,
                    "  time: compile {}, in-place update {}, total {}",
                    ms(applying.compile_time),
                    ms(elapsed),
                    ms(applying.started.elapsed())
                );
                return Ok(report);
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
    let carry = match (&previous, pins.installed()) {
        (Some(previous), true) => install::live_map(&pins, "stats", true)
            .ok()
            .map(|old_stats| Carry {
                old_stats,
                previous,
                new: &compiled.counters,
                baseline: Vec::new(),
                carried: 0,
            }),
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

    let mut report = String::new();
    let requested = match requested_mode {
        Mode::Auto => None,
        Mode::Native => Some("native"),
        Mode::Generic => Some("generic"),
    };
    if let Some(requested) = requested.filter(|r| installed.replaced && *r != mode_name) {
        eprintln!(
            "patronusc: warning: the running {mode_name} XDP attachment was kept (--mode {requested} \
             needs `patronusc unload` first)"
        );
    }
    if let Some(reason) = &installed.fallback {
        eprintln!("patronusc: warning: native XDP refused ({reason}); attached in generic mode");
    }
    let verb = if installed.replaced {
        "replaced the policy on"
    } else {
        "applied to"
    };
    let _ = writeln!(
        report,
        "{} {verb} {iface} (XDP {mode_name}{})",
        applying.label,
        if installed.loaded.has_program(ProgramKind::Tc) {
            ", tc egress"
        } else {
            ""
        }
    );
    let _ = writeln!(
        report,
        "  rules: {}, maps: {}, pinned at {}",
        compiled.program.rules.len(),
        compiled.object.maps.len(),
        pins.dir.display()
    );
    for map in &compiled.object.maps {
        let _ = writeln!(
            report,
            "    {:<14} {:>6} initial entries (max {})",
            map.name,
            map.entries.len(),
            map.max_entries
        );
    }
    for kind in [ProgramKind::Xdp, ProgramKind::Tc] {
        if let Some(insns) = installed.loaded.stats(kind).and_then(|s| s.verified_insns) {
            let name = match kind {
                ProgramKind::Xdp => "XDP",
                ProgramKind::Tc => "tc egress",
            };
            let _ = writeln!(report, "  {name}: {insns} instructions verified");
        }
    }
    if !installed.reused.is_empty() {
        let _ = writeln!(report, "  kept state: {}", installed.reused.join(", "));
    }
    if !installed.reset.is_empty() {
        let _ = writeln!(
            report,
            "  state reset (map shape changed): {}",
            installed.reset.join(", ")
        );
    }
    if carried > 0 {
        let _ = writeln!(
            report,
            "  counters kept: {carried} (rules still present, phases)"
        );
    }
    if let Some(swap) = installed.swap_time {
        let _ = writeln!(
            report,
            "  swap: {:.0} µs (link update; no detach window)",
            swap.as_secs_f64() * 1e6
        );
    }
    let _ = writeln!(
        report,
        "  time: compile {}, load+{} {}, total {}",
        ms(applying.compile_time),
        if installed.replaced { "swap" } else { "attach" },
        ms(install_time),
        ms(applying.started.elapsed())
    );
    Ok(report)
}

#[derive(Debug, Serialize)]
struct StatusEntry {
    interface: String,
    /// Pins of a policy exist.
    installed: bool,
    /// The kernel runs the recorded program on the interface of that name
    /// now (see [`attachment_problem`]).
    attached: bool,
    /// Why a policy that is installed is not attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    ifindex: Option<u32>,
    xdp_prog_id: Option<u32>,
    tc_prog_id: Option<u32>,
    conntrack_entries: Option<usize>,
    /// What `apply` recorded.
    policy: Option<Meta>,
    /// An apply with `--confirm` waiting for `patronusc confirm`.
    confirmation: Option<ConfirmationStatus>,
    /// What does not agree (kernel, pins, metadata, a change left
    /// unfinished): `status -i` exits 1 when this is not empty.
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ConfirmationStatus {
    /// Milliseconds since the Unix epoch.
    deadline_ms: u64,
    /// Negative once the deadline has passed.
    seconds_left: f64,
    overdue: bool,
}

/// Finishes an interrupted change and an overdue rollback when this
/// process may (root, the lock free); else says why the state may be in
/// flux.
fn settle_for_status(roots: &Roots, iface: &IfaceName, problems: &mut Vec<String>) {
    if install::missing_privileges().is_some() {
        return;
    }
    match ApplyLock::try_take(roots, iface) {
        Ok(Some(lock)) => {
            if let Err(err) = crate::txn::settle_locked(roots, &lock, iface) {
                problems.push(err.to_string());
            }
        }
        Ok(None) => {
            let interrupted = roots
                .existing_state(iface)
                .ok()
                .flatten()
                .is_some_and(|state| state.exists(&StateFile::Txn));
            if interrupted {
                problems.push("a change is in progress (another patronusc holds the lock)".into());
            }
        }
        Err(err) => problems.push(err.to_string()),
    }
}

/// Why the policy pinned for `iface` does not filter it, comparing the
/// kernel's view (the pinned XDP link's interface and program) with the
/// interface of that name now and with what `apply` recorded; `None`
/// when it does. A deleted interface severs the link (ifindex 0); one
/// re-created under the same name has a new index the link is not on.
/// `link`: the pinned XDP link's `(ifindex, program id)`.
fn attachment_problem(
    iface: &IfaceName,
    link: (u32, u32),
    current_ifindex: Option<u32>,
    recorded_prog: Option<u32>,
) -> Option<String> {
    let (link_ifindex, link_prog) = link;
    if link_ifindex == 0 {
        return Some(match current_ifindex {
            Some(now) => format!(
                "the interface the policy was attached to was deleted; {iface} now (ifindex \
                 {now}) is a new interface and is NOT filtered: run `patronusc apply` again"
            ),
            None => format!(
                "the interface the policy was attached to was deleted: nothing is filtered; \
                 `patronusc apply` it again once {iface} exists, or `patronusc unload -i {iface}`"
            ),
        });
    }
    if current_ifindex != Some(link_ifindex) {
        return Some(format!(
            "the policy is attached to ifindex {link_ifindex}, which is not {iface} (ifindex {}) \
             in this network namespace: {iface} is NOT filtered here",
            current_ifindex.map_or_else(|| "none".to_owned(), |i| i.to_string())
        ));
    }
    match recorded_prog {
        Some(recorded) if recorded != link_prog => Some(format!(
            "the kernel runs XDP program {link_prog} on {iface}, not the program {recorded} that \
             was recorded: the metadata does not describe what is running; apply the policy again"
        )),
        _ => None,
    }
}

fn status_of(roots: &Roots, iface: &IfaceName) -> Result<StatusEntry, CliError> {
    // Verifies the pin directories (and fails on permission) first.
    let _ = roots.host().existing_pins(iface)?;
    let mut problems = Vec::new();
    settle_for_status(roots, iface, &mut problems);
    let pins = roots.pins(iface);
    let xdp = install::pinned_link(&pins.xdp_link());
    // A tcx link, or without tcx a clsact filter (runtime::attach).
    let tc_running = patronus_runtime::attach::running_egress(&pins);
    let conntrack = ["ct_v4", "ct_v6"]
        .iter()
        .filter_map(|name| install::live_map(&pins, name, true).ok())
        .map(|fd| install::count_entries(std::os::fd::AsFd::as_fd(&fd)).unwrap_or(0))
        .reduce(|a, b| a + b);
    let policy = read_meta(roots, iface)?;
    let problem = xdp.as_ref().and_then(|link| {
        attachment_problem(
            iface,
            (link.ifindex, link.prog_id),
            host::netdev::ifindex(iface),
            policy.as_ref().and_then(|m| m.xdp_prog_id),
        )
    });
    if let (Some(meta), true) = (&policy, problem.is_none() && xdp.is_some())
        && meta.xdp_prog_id.is_some()
        && meta.tc_prog_id != tc_running
    {
        problems.push(format!(
            "the tc egress program running ({}) is not the pair of the XDP program \
             (expected {})",
            tc_running.map_or("none".into(), |id| id.to_string()),
            meta.tc_prog_id.map_or("none".into(), |id| id.to_string()),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let pending = match roots.existing_state(iface)? {
        Some(state) => crate::cmd_confirm::pending(&state)?,
        None => None,
    };
    let confirmation = pending.map(|p| {
        let overdue = now >= p.deadline_ms;
        if overdue {
            problems.push(format!(
                "OVERDUE: the apply was not confirmed and its deadline passed {:.1} s ago, but \
                 it was not rolled back (the watcher is gone); the next patronusc command on \
                 this interface run as root rolls it back",
                (now - p.deadline_ms) as f64 / 1000.0
            ));
        }
        ConfirmationStatus {
            deadline_ms: p.deadline_ms,
            seconds_left: (p.deadline_ms as f64 - now as f64) / 1000.0,
            overdue,
        }
    });
    Ok(StatusEntry {
        interface: iface.to_string(),
        installed: xdp.is_some(),
        attached: xdp.is_some() && problem.is_none(),
        problem,
        ifindex: xdp.map(|l| l.ifindex),
        xdp_prog_id: xdp.map(|l| l.prog_id),
        tc_prog_id: tc_running,
        conntrack_entries: conntrack,
        policy,
        confirmation,
        problems,
    })
}

/// `status`: exit 1 when a policy is installed but not attached.
pub fn run_status(args: &StatusArgs) -> Result<Status, CliError> {
    require_root_to_read()?;
    let names = match &args.iface {
        Some(iface) => vec![iface.clone()],
        None => args.roots.interfaces()?,
    };
    let entries = names
        .iter()
        .map(|n| status_of(&args.roots, n))
        .collect::<Result<Vec<StatusEntry>, CliError>>()?;
    let broken = entries
        .iter()
        .any(|e| e.problem.is_some() || !e.problems.is_empty());
    if args.json {
        let text = serde_json::to_string_pretty(&entries)
            .map_err(|e| CliError::new(format!("cannot encode JSON: {e}")))?;
        write_stdout(&format!("{text}\n"))?;
        return Ok(Status::failure_if(broken));
    }
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no policy is applied\n");
    }
    for entry in &entries {
        if !entry.installed {
            let _ = writeln!(out, "{}: no policy applied", entry.interface);
        } else if let Some(problem) = &entry.problem {
            let _ = writeln!(out, "{}: NOT ATTACHED: {problem}", entry.interface);
        } else {
            let _ = writeln!(
                out,
                "{}: XDP program {} (ifindex {}){}",
                entry.interface,
                entry.xdp_prog_id.unwrap_or(0),
                entry.ifindex.unwrap_or(0),
                entry
                    .tc_prog_id
                    .map(|id| format!(", tc egress program {id}"))
                    .unwrap_or_default()
            );
        }
        if let (true, Some(meta)) = (entry.installed, &entry.policy) {
            let _ = writeln!(out, "  policy: {} (hash {})", meta.source, meta.policy_hash);
            let _ = writeln!(
                out,
                "  mode: {}, attached at {} UTC{}",
                meta.mode,
                crate::cmd_log::utc_time(meta.attached_at.saturating_mul(1_000_000_000)),
                meta.replaced_at
                    .map(|t| format!(
                        ", replaced at {} UTC",
                        crate::cmd_log::utc_time(t.saturating_mul(1_000_000_000))
                    ))
                    .unwrap_or_default()
            );
        }
        if let Some(count) = entry.conntrack_entries {
            let _ = writeln!(out, "  conntrack entries: {count}");
        }
        if let Some(c) = entry.confirmation.as_ref().filter(|c| !c.overdue) {
            let _ = writeln!(
                out,
                "  confirmation pending: rolled back in {:.1} s unless `patronusc confirm -i {}`",
                c.seconds_left, entry.interface
            );
        }
        for problem in &entry.problems {
            let _ = writeln!(out, "  PROBLEM: {problem}");
        }
    }
    write_stdout(&out)?;
    Ok(Status::failure_if(broken))
}

pub use crate::cmd_stats::run_stats;

pub fn run_unload(args: &UnloadArgs) -> Result<Status, CliError> {
    require_privileges()?;
    crate::txn::ignore_hangup();
    let iface = &args.iface;
    let lock = crate::txn::settle(&args.roots, iface)?;
    if args.roots.host().existing_pins(iface)?.is_none() {
        eprintln!("patronusc: {iface}: no policy applied");
        return Ok(Status::Failure);
    }
    // The kernel side first (links first), then the state files, the
    // pending `--confirm` rollback with them (it would bring a policy
    // back); a failure to remove pins keeps the state and exits non-zero.
    let txn = Txn::new(Op::Unload);
    txn.begin(&lock.state)?;
    txn.commit(&args.roots, &lock, iface)?;
    write_stdout(&format!("unloaded the policy from {iface}\n"))?;
    Ok(Status::Success)
}

/// Types one `--out` packet; syntax and type errors are printed.
fn out_frame(text: &str, index: usize, color: &ColorArgs) -> Result<Vec<u8>, CliError> {
    let mut files = Files::new();
    let name = format!("--out #{}", index + 1);
    let file = files.add(name.clone(), text.to_owned());
    let diagnostics: Vec<Diagnostic> = match patronus_grammar::parse_packet(text) {
        Err(err) => vec![diag::syntax_diagnostic(file, &err)],
        Ok(spec) => match patronus_compiler::packet_from_spec(file, text, &spec) {
            Ok(packet) => return Ok(patronus_compiler::packet::build(&packet)),
            Err(diagnostics) => diagnostics,
        },
    };
    print_human_diagnostics(&files, &diagnostics, color.color);
    Err(CliError::new(format!(
        "{name} is not a valid packet: `{text}`"
    )))
}

pub fn run_load(args: &LoadArgs) -> Result<Status, CliError> {
    let Some(compiled) = compile(&args.policy, &args.color, &args.tables)? else {
        return Ok(Status::Failure);
    };
    require_privileges()?;
    let frames = args
        .out
        .iter()
        .enumerate()
        .map(|(i, text)| out_frame(text, i, &args.color))
        .collect::<Result<Vec<_>, _>>()?;
    if !frames.is_empty() && !compiled.program.usage.conntrack {
        return Err(CliError::new(
            "--out needs a policy with `conntrack = on` (nothing would record the flow)",
        ));
    }
    host::paths::prepare_pin_dir(&args.pin_dir)?;
    let loaded = install::load_pinned(&compiled.object, &args.pin_dir)
        .map_err(runtime_err("cannot load the policy"))?;
    for frame in &frames {
        loaded.run_tc(frame).map_err(|err| {
            install::uninstall(&Pins::new(&args.pin_dir));
            CliError::new(format!("cannot record an --out flow: {err}"))
        })?;
    }
    let mut report = format!(
        "loaded {} into {} (XDP program at prog, maps under maps/)\n",
        args.policy.display(),
        args.pin_dir.display()
    );
    if let Some(insns) = loaded
        .stats(ProgramKind::Xdp)
        .and_then(|s| s.verified_insns)
    {
        let _ = writeln!(report, "  XDP: {insns} instructions verified");
    }
    if !frames.is_empty() {
        let _ = writeln!(report, "  conntrack: {} flow(s) recorded", frames.len());
    }
    write_stdout(&report)?;
    Ok(Status::Success)
}

/// Test-only (tests/tests/e2e_failures.rs): with
/// `PATRONUS_TEST_BREAK_VERIFIER=1` in the environment, the XDP program
/// reads a byte through the packet pointer before any bounds check (its
/// third instruction, right after `r7 = data`), which the verifier must
/// reject. Not a user option: it exists to test the verifier error path.
fn test_knob_break_verifier(object: &mut Object) -> Result<(), CliError> {
    if std::env::var_os("PATRONUS_TEST_BREAK_VERIFIER").is_none_or(|v| v != "1") {
        return Ok(());
    }
    let elf = &mut object.elf;
    let field = |at: usize, len: usize| -> usize {
        elf.get(at..at + len).map_or(0, |b| {
            b.iter().rev().fold(0, |n, &x| n << 8 | usize::from(x))
        })
    };
    let (shoff, shentsize, shnum) = (field(0x28, 8), field(0x3a, 2), field(0x3c, 2));
    let strtab = field(shoff + field(0x3e, 2) * shentsize + 0x18, 8);
    let xdp = (0..shnum).map(|i| shoff + i * shentsize).find(|&header| {
        let name = strtab + field(header, 4);
        elf.get(name..name + 4) == Some(b"xdp\0")
    });
    // `r7 = *(u32 *)(r6 + 0)` (data) must be instruction 1.
    let patch = xdp
        .map(|header| field(header + 0x18, 8) + 16)
        .filter(|&at| elf.get(at - 8..at - 4) == Some(&[0x61, 0x67, 0, 0]));
    let Some(at) = patch else {
        return Err(CliError::new(
            "PATRONUS_TEST_BREAK_VERIFIER: unexpected program prologue",
        ));
    };
    // `r1 = *(u8 *)(r7 + 0)`: BPF_LDX | BPF_MEM | BPF_B, dst r1, src r7.
    elf[at..at + 8].copy_from_slice(&[0x71, 0x71, 0, 0, 0, 0, 0, 0]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, identity: &str) -> CounterMeta {
        CounterMeta {
            kind: "rule".into(),
            name: name.into(),
            location: None,
            identity: Some(identity.into()),
            rule: None,
            label: None,
        }
    }

    fn phase(name: &str) -> CounterMeta {
        CounterMeta {
            kind: "phase".into(),
            name: name.into(),
            location: None,
            identity: None,
            rule: None,
            label: None,
        }
    }

    #[test]
    fn counters_follow_rule_identity_and_phase_name() {
        let old = [
            rule("rule 1 \"web\"", "web"),
            rule("rule 2", "allow udp to port 53"),
            rule("rule 3", "allow udp to port 53"),
            phase("allow"),
            phase("default"),
        ];
        let old_values = vec![
            vec![10, 1000],
            vec![2, 200],
            vec![3, 300],
            vec![15, 1500],
            vec![0, 0],
        ];
        let new = [
            rule("rule 1 \"ssh\"", "ssh"),
            rule("rule 2 \"web\"", "web"),
            rule("rule 3", "allow udp to port 53"),
            phase("default"),
            phase("allow"),
            rule("rule 4", "allow udp to port 53"),
        ];
        let carried = carried_counters(&old, &old_values, &new);
        // "web" moved from 0 to 1; both identical udp rules summed onto the
        // first new one; "allow" moved; zero "default" is not written.
        assert_eq!(
            carried,
            vec![(1, vec![10, 1000]), (2, vec![5, 500]), (4, vec![15, 1500])]
        );
    }

    #[test]
    fn status_compares_the_link_with_the_interface_and_the_record() {
        let eth0 = IfaceName::new("eth0").unwrap();
        assert_eq!(attachment_problem(&eth0, (7, 40), Some(7), Some(40)), None);
        assert_eq!(attachment_problem(&eth0, (7, 40), Some(7), None), None);
        // Deleted: the kernel severs the link (ifindex 0).
        let gone = attachment_problem(&eth0, (0, 40), None, Some(40)).unwrap();
        assert!(gone.contains("was deleted"), "{gone}");
        // Deleted and re-created under the same name.
        let again = attachment_problem(&eth0, (0, 40), Some(9), Some(40)).unwrap();
        assert!(again.contains("NOT filtered"), "{again}");
        // Another interface's index (another namespace, a rename).
        let other = attachment_problem(&eth0, (7, 40), Some(8), Some(40)).unwrap();
        assert!(other.contains("ifindex 7"), "{other}");
        // Another program than the recorded one.
        let stale = attachment_problem(&eth0, (7, 41), Some(7), Some(40)).unwrap();
        assert!(stale.contains("program 41"), "{stale}");
    }

    #[test]
    fn rules_without_recorded_identity_are_not_carried() {
        let mut old = rule("rule 1", "x");
        old.identity = None;
        let new = [rule("rule 1", "x")];
        assert!(carried_counters(&[old], &[vec![1, 1]], &new).is_empty());
    }
}
