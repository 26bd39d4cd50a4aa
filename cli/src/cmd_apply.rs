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
//!   layout); a lock file beside it serialises concurrent applies. The
//!   `--confirm` rollback and the SSH-lockout warning live in
//!   `cmd_confirm`.
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
//! - `status` reads the pins and the metadata (`stats`: `cmd_stats`).
//! - `unload -i IFACE` detaches and removes the pins.
//! - `load POLICY --pin-dir DIR` loads and pins without attaching (for
//!   benchmark harnesses), optionally recording `--out` flows in conntrack.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use patronus_codegen::Object;
use patronus_compiler::diag::{self, Diagnostic, Files};
use patronus_compiler::ir;
use patronus_compiler::semantics::Counter;
use patronus_compiler::typed::Policy;
use patronus_compiler::{LoadedFile, TableLoader};
use patronus_runtime::install::{self, Pins, XdpMode};
use patronus_runtime::{ProgramKind, RuntimeError};
use serde::{Deserialize, Serialize};

use crate::cmd_test::phase_name;
use crate::common::{
    CliError, ColorArgs, FsTableLoader, Status, print_human_diagnostics, write_stdout,
};

/// Where metadata and lock files live by default.
pub const DEFAULT_STATE_ROOT: &str = "/run/patronus";

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
    pub fn pins(&self, iface: &str) -> Pins {
        Pins::new(self.pin_root.join(iface))
    }

    pub fn meta_path(&self, iface: &str) -> PathBuf {
        self.state_root.join(iface).join("meta.json")
    }

    /// Interfaces with a policy installed under the pin root.
    pub fn interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.pin_root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| Pins::new(e.path()).installed())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
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
    pub iface: Option<String>,
    /// How to attach the XDP program.
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: Mode,
    /// Roll back to the previous policy unless `patronusc confirm -i
    /// IFACE` comes within DURATION (`90s`, `5m`, `500ms`).
    #[arg(long, value_name = "DURATION", value_parser = crate::cmd_confirm::parse_duration)]
    pub confirm: Option<Duration>,
    /// Tests: do not spawn the rollback watcher (they run it in-process).
    #[arg(long, hide = true)]
    pub no_watcher: bool,
    #[command(flatten)]
    pub roots: Roots,
    #[command(flatten)]
    pub color: ColorArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this interface (default: every interface with a policy).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub roots: Roots,
}

#[derive(Debug, Args)]
pub struct UnloadArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: String,
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

/// Reads tables from disk ([`FsTableLoader`]) and remembers them.
#[derive(Default)]
struct RecordingLoader {
    read: std::cell::RefCell<Vec<(String, String, String, String)>>,
}

impl TableLoader for RecordingLoader {
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let file = FsTableLoader.load(policy_name, path)?;
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
pub(crate) fn compile(path: &Path, color: &ColorArgs) -> Result<Option<Compiled>, CliError> {
    let text = crate::common::read_text(path).map_err(CliError::new)?;
    let loader = RecordingLoader::default();
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

/// An exclusive `flock` on the interface's lock file, released on drop.
pub(crate) struct ApplyLock {
    _held: File,
}

impl ApplyLock {
    pub(crate) fn take(dir: &Path) -> Result<ApplyLock, CliError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CliError::new(format!("cannot create `{}`: {e}", dir.display())))?;
        let path = dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| CliError::new(format!("cannot open `{}`: {e}", path.display())))?;
        // Blocks until the other apply on this interface is done.
        file.lock()
            .map_err(|e| CliError::new(format!("cannot lock `{}`: {e}", path.display())))?;
        Ok(ApplyLock { _held: file })
    }
}

pub fn read_meta(path: &Path) -> Option<Meta> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn write_meta(path: &Path, meta: &Meta) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(meta)
        .map_err(|e| CliError::new(format!("cannot encode metadata: {e}")))?;
    write_private(path, &text)
}

/// Writes a state file readable by its owner only (mode 0600), through a
/// temporary file and a rename: a reader never sees half a file.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CliError::new(format!("cannot write `{}`: {e}", path.display())))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Adds the replaced policy's counters to the new stats map (see
/// [`carried_counters`]); returns how many counters were carried. A
/// failure here loses statistics, not filtering: it is a warning.
fn carry_counters(
    old_stats: &std::os::fd::OwnedFd,
    previous: &Meta,
    installed: &install::Installed,
    new: &[CounterMeta],
) -> usize {
    use std::os::fd::AsFd as _;
    let Some(new_stats) = installed.loaded.map_fd("stats") else {
        return 0;
    };
    let old_values = match install::read_counters(old_stats.as_fd()) {
        Ok(values) => values,
        Err(err) => {
            eprintln!("patronusc: warning: counters of the replaced policy not kept: {err}");
            return 0;
        }
    };
    let carried = carried_counters(&previous.counters, &old_values, new);
    for (index, words) in &carried {
        if let Err(err) = install::add_counters(new_stats, *index, words) {
            eprintln!("patronusc: warning: counter {index} of the replaced policy not kept: {err}");
        }
    }
    carried.len()
}

/// Refuses early, with a clear message (exit 2), when this process
/// cannot load or attach programs.
pub(crate) fn require_privileges() -> Result<(), CliError> {
    match install::missing_privileges() {
        Some(why) => Err(CliError::new(why)),
        None => Ok(()),
    }
}

pub fn run_apply(args: &ApplyArgs) -> Result<Status, CliError> {
    let started = Instant::now();
    let Some(compiled) = compile(&args.policy, &args.color)? else {
        eprintln!("patronusc: the policy has errors; nothing was changed");
        return Ok(Status::Failure);
    };
    let compile_time = started.elapsed();
    let iface = match (&args.iface, &compiled.policy.interface) {
        (Some(iface), _) => iface.clone(),
        (None, Some((iface, _))) => iface.clone(),
        (None, None) => {
            return Err(CliError::new(
                "no interface: give `-i IFACE` or declare `interface` in the policy",
            ));
        }
    };
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return Err(CliError::new(format!("`{iface}` is not an interface name")));
    }
    require_privileges()?;
    let ifindex = install::ifindex(&iface).map_err(runtime_err(&iface))?;
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
    let _lock = ApplyLock::take(&args.roots.state_root.join(&iface))?;
    let confirm = crate::cmd_confirm::before_apply(&args.roots, &iface, args.confirm)?;
    let source = std::fs::canonicalize(&args.policy).unwrap_or_else(|_| args.policy.clone());
    let report = apply_locked(
        &args.roots,
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
    )?;
    let mut report = report;
    crate::cmd_confirm::after_apply(
        &args.roots,
        &iface,
        &compiled.snapshot,
        confirm,
        args.no_watcher,
        &mut report,
    )?;
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

/// Installs a compiled policy on `iface` (the apply lock held), writes
/// its metadata, and returns the report.
pub(crate) fn apply_locked(
    roots: &Roots,
    iface: &str,
    ifindex: u32,
    compiled: &Compiled,
    requested_mode: Mode,
    applying: &Applying,
) -> Result<String, CliError> {
    apply_locked_with(
        roots,
        iface,
        ifindex,
        compiled,
        requested_mode,
        applying,
        false,
    )
}

/// The maps an in-place update rewrites: classifier maps and the
/// constant bitmaps of wide phases (never state, counters or log maps).
pub(crate) fn content_maps(compiled: &Compiled) -> Vec<&patronus_codegen::MapImage> {
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

/// [`apply_locked`]; `keep_journal`: the apply comes from `patronusc
/// table` (the run-time table changes stay recorded), not from files.
pub(crate) fn apply_locked_with(
    roots: &Roots,
    iface: &str,
    ifindex: u32,
    compiled: &Compiled,
    requested_mode: Mode,
    applying: &Applying,
    keep_journal: bool,
) -> Result<String, CliError> {
    let pins = roots.pins(iface);
    let object_hash = format!("{:016x}", fnv1a(&compiled.object.elf));
    let meta_path = roots.meta_path(iface);
    let previous = read_meta(&meta_path);
    if same_object(previous.as_ref(), compiled, &object_hash, &pins, ifindex) {
        let started = Instant::now();
        match install::update_in_place(&pins, &content_maps(compiled)) {
            Ok(done) => {
                let elapsed = started.elapsed();
                let Some(previous) = previous else {
                    return Err(CliError::new("internal: no previous metadata"));
                };
                let meta = Meta {
                    source: applying.source.clone(),
                    policy_hash: format!("{:016x}", fnv1a(compiled.text.as_bytes())),
                    replaced_at: Some(now_secs()),
                    counters: compiled.counters.clone(),
                    ..previous
                };
                write_meta(&meta_path, &meta)?;
                crate::cmd_table::after_apply(roots, iface, compiled, &object_hash, keep_journal)?;
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
            Err(RuntimeError::ShapeChanged { .. }) => {}
            Err(err) => {
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
    // Held open across the swap: the replaced policy's counters, final
    // once its program no longer runs.
    let old_stats = pins
        .installed()
        .then(|| install::open_map_readonly(&pins.map("stats")).ok())
        .flatten();
    let install_started = Instant::now();
    let installed = install::install(&compiled.object, ifindex, mode, &pins).map_err(
        runtime_err("cannot apply the policy (the running policy, if any, is unchanged)"),
    )?;
    let install_time = install_started.elapsed();
    let carried = match (&old_stats, &previous, installed.replaced) {
        (Some(old_stats), Some(previous), true) => {
            carry_counters(old_stats, previous, &installed, &compiled.counters)
        }
        _ => 0,
    };
    let mode_name = match (installed.mode, &previous) {
        (Some(mode), _) => mode.name().to_owned(),
        (None, Some(previous)) => previous.mode.clone(),
        (None, None) => "unknown".to_owned(),
    };
    let meta = Meta {
        interface: iface.to_owned(),
        source: applying.source.clone(),
        policy_hash: format!("{:016x}", fnv1a(compiled.text.as_bytes())),
        mode: mode_name.clone(),
        attached_at: match (&previous, installed.replaced) {
            (Some(previous), true) => previous.attached_at,
            _ => now_secs(),
        },
        replaced_at: installed.replaced.then(now_secs),
        counters: compiled.counters.clone(),
        object_hash: Some(object_hash.clone()),
        xdp_prog_id: installed
            .loaded
            .program_fd(ProgramKind::Xdp)
            .and_then(|fd| patronus_runtime::sys::prog_id(fd).ok()),
    };
    write_meta(&meta_path, &meta)?;
    crate::cmd_table::after_apply(roots, iface, compiled, &object_hash, keep_journal)?;

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
            ", tcx egress"
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
    installed: bool,
    ifindex: Option<u32>,
    xdp_prog_id: Option<u32>,
    tc_prog_id: Option<u32>,
    conntrack_entries: Option<usize>,
    /// What `apply` recorded.
    policy: Option<Meta>,
}

fn status_of(roots: &Roots, iface: &str) -> StatusEntry {
    let pins = roots.pins(iface);
    let xdp = install::pinned_link(&pins.xdp_link());
    let tc = install::pinned_link(&pins.tc_link());
    let conntrack = ["ct_v4", "ct_v6"]
        .iter()
        .filter_map(|name| install::open_map_readonly(&pins.map(name)).ok())
        .map(|fd| install::count_entries(std::os::fd::AsFd::as_fd(&fd)).unwrap_or(0))
        .reduce(|a, b| a + b);
    StatusEntry {
        interface: iface.to_owned(),
        installed: xdp.is_some(),
        ifindex: xdp.map(|l| l.ifindex),
        xdp_prog_id: xdp.map(|l| l.prog_id),
        tc_prog_id: tc.map(|l| l.prog_id),
        conntrack_entries: conntrack,
        policy: read_meta(&roots.meta_path(iface)),
    }
}

pub fn run_status(args: &StatusArgs) -> Result<Status, CliError> {
    let names = match &args.iface {
        Some(iface) => vec![iface.clone()],
        None => args.roots.interfaces(),
    };
    let entries: Vec<StatusEntry> = names.iter().map(|n| status_of(&args.roots, n)).collect();
    if args.json {
        let text = serde_json::to_string_pretty(&entries)
            .map_err(|e| CliError::new(format!("cannot encode JSON: {e}")))?;
        write_stdout(&format!("{text}\n"))?;
        return Ok(Status::Success);
    }
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no policy is applied\n");
    }
    for entry in &entries {
        if !entry.installed {
            let _ = writeln!(out, "{}: no policy applied", entry.interface);
            continue;
        }
        let _ = writeln!(
            out,
            "{}: XDP program {} (ifindex {}){}",
            entry.interface,
            entry.xdp_prog_id.unwrap_or(0),
            entry.ifindex.unwrap_or(0),
            entry
                .tc_prog_id
                .map(|id| format!(", tcx egress program {id}"))
                .unwrap_or_default()
        );
        if let Some(meta) = &entry.policy {
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
    }
    write_stdout(&out)?;
    Ok(Status::Success)
}

pub use crate::cmd_stats::run_stats;

pub fn run_unload(args: &UnloadArgs) -> Result<Status, CliError> {
    require_privileges()?;
    let _lock = ApplyLock::take(&args.roots.state_root.join(&args.iface))?;
    let pins = args.roots.pins(&args.iface);
    if !install::uninstall(&pins) {
        eprintln!("patronusc: {}: no policy applied", args.iface);
        return Ok(Status::Failure);
    }
    let _ = std::fs::remove_file(args.roots.meta_path(&args.iface));
    crate::cmd_table::forget(&args.roots, &args.iface);
    // A pending `--confirm` rollback would bring a policy back.
    crate::cmd_confirm::forget(&args.roots, &args.iface);
    write_stdout(&format!("unloaded the policy from {}\n", args.iface))?;
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
    let Some(compiled) = compile(&args.policy, &args.color)? else {
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
    fn rules_without_recorded_identity_are_not_carried() {
        let mut old = rule("rule 1", "x");
        old.identity = None;
        let new = [rule("rule 1", "x")];
        assert!(carried_counters(&[old], &[vec![1, 1]], &new).is_empty());
    }
}
