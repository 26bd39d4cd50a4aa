//! `patronusc apply | status | stats | unload | load`: policies on real
//! interfaces.
//!
//! - `apply POLICY [-i IFACE]` compiles the policy, loads it and attaches
//!   it (XDP ingress + tcx egress), pinned under `PIN_ROOT/IFACE/`; on an
//!   interface that already has a policy it swaps the programs atomically
//!   and keeps conntrack and rate-limit state (see
//!   `patronus_runtime::install`). A small JSON metadata file in
//!   `STATE_ROOT/IFACE/` (bpffs holds no regular files) records the source,
//!   its hash, the mode and the stats layout; a lock file beside it
//!   serialises concurrent applies.
//! - `status` and `stats` read the pins and the metadata.
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
use patronus_runtime::install::{self, Pins, XdpMode};
use patronus_runtime::{ProgramKind, RuntimeError};
use serde::{Deserialize, Serialize};

use crate::cmd_test::phase_name;
use crate::common::{
    CliError, ColorArgs, FsTableLoader, Status, print_human_diagnostics, read_policy, write_stdout,
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
    fn pins(&self, iface: &str) -> Pins {
        Pins::new(self.pin_root.join(iface))
    }

    fn meta_path(&self, iface: &str) -> PathBuf {
        self.state_root.join(iface).join("meta.json")
    }

    /// Interfaces with a policy installed under the pin root.
    fn interfaces(&self) -> Vec<String> {
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
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn runtime_err(context: &str) -> impl FnOnce(RuntimeError) -> CliError + '_ {
    move |err| CliError::new(format!("{context}: {err}"))
}

/// A compiled policy and what the metadata needs from its source.
struct Compiled {
    policy: Policy,
    program: ir::Program,
    object: Object,
    text: String,
    counters: Vec<CounterMeta>,
}

/// check → lower → compile; `Ok(None)` when the policy has errors (they
/// are printed).
fn compile(path: &Path, color: &ColorArgs) -> Result<Option<Compiled>, CliError> {
    let mut files = Files::new();
    let file = read_policy(&mut files, path)?;
    let checked = patronus_compiler::check(&mut files, file, &FsTableLoader);
    print_human_diagnostics(&files, &checked.diagnostics, color.color);
    let policy = match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => return Ok(None),
    };
    let program = ir::lower(&policy);
    let object = patronus_codegen::compile(&program)
        .map_err(|err| CliError::new(format!("cannot compile `{}`: {err}", path.display())))?;
    let counters = program
        .counters
        .iter()
        .map(|counter| match counter {
            Counter::Rule(rule) => {
                let location = policy.rules.get(rule.0 as usize).map(|r| {
                    let (line, _) = files.line_col(policy.file, r.span.start);
                    format!("{}:{line}", path.display())
                });
                CounterMeta {
                    kind: "rule".into(),
                    name: crate::cmd_test::rule_name(&policy, *rule),
                    location,
                }
            }
            Counter::Phase(phase) => CounterMeta {
                kind: "phase".into(),
                name: phase_name(*phase),
                location: None,
            },
        })
        .collect();
    let text = files.get(file).text.clone();
    Ok(Some(Compiled {
        policy,
        program,
        object,
        text,
        counters,
    }))
}

/// An exclusive `flock` on the interface's lock file, released on drop.
struct ApplyLock {
    _held: File,
}

impl ApplyLock {
    fn take(dir: &Path) -> Result<ApplyLock, CliError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::new(format!("cannot create `{}`: {e}", dir.display())))?;
        let path = dir.join("lock");
        let file = File::create(&path)
            .map_err(|e| CliError::new(format!("cannot open `{}`: {e}", path.display())))?;
        // Blocks until the other apply on this interface is done.
        file.lock()
            .map_err(|e| CliError::new(format!("cannot lock `{}`: {e}", path.display())))?;
        Ok(ApplyLock { _held: file })
    }
}

fn read_meta(path: &Path) -> Option<Meta> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_meta(path: &Path, meta: &Meta) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(meta)
        .map_err(|e| CliError::new(format!("cannot encode metadata: {e}")))?;
    // Write then rename: a reader never sees half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CliError::new(format!("cannot write `{}`: {e}", path.display())))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
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
    let ifindex = install::ifindex(&iface).map_err(runtime_err(&iface))?;
    let _lock = ApplyLock::take(&args.roots.state_root.join(&iface))?;
    let pins = args.roots.pins(&iface);
    let mode = match args.mode {
        Mode::Auto => XdpMode::Auto,
        Mode::Native => XdpMode::Native,
        Mode::Generic => XdpMode::Generic,
    };
    let install_started = Instant::now();
    let installed = install::install(&compiled.object, ifindex, mode, &pins).map_err(
        runtime_err("cannot apply the policy (the running policy, if any, is unchanged)"),
    )?;
    let install_time = install_started.elapsed();

    let meta_path = args.roots.meta_path(&iface);
    let previous = read_meta(&meta_path);
    let mode_name = match (installed.mode, &previous) {
        (Some(mode), _) => mode.name().to_owned(),
        (None, Some(previous)) => previous.mode.clone(),
        (None, None) => "unknown".to_owned(),
    };
    let source = std::fs::canonicalize(&args.policy).unwrap_or_else(|_| args.policy.clone());
    let meta = Meta {
        interface: iface.clone(),
        source: source.display().to_string(),
        policy_hash: format!("{:016x}", fnv1a(compiled.text.as_bytes())),
        mode: mode_name.clone(),
        attached_at: match (&previous, installed.replaced) {
            (Some(previous), true) => previous.attached_at,
            _ => now_secs(),
        },
        replaced_at: installed.replaced.then(now_secs),
        counters: compiled.counters.clone(),
    };
    write_meta(&meta_path, &meta)?;

    let mut report = String::new();
    let requested = match args.mode {
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
        args.policy.display(),
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
        ms(compile_time),
        if installed.replaced { "swap" } else { "attach" },
        ms(install_time),
        ms(started.elapsed())
    );
    write_stdout(&report)?;
    Ok(Status::Success)
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
        .filter_map(|name| install::open_map(&pins.map(name)).ok())
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
                "  mode: {}, attached at {}{}",
                meta.mode,
                meta.attached_at,
                meta.replaced_at
                    .map(|t| format!(", replaced at {t}"))
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

#[derive(Debug, Serialize)]
struct StatRow {
    kind: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    packets: u64,
    bytes: u64,
}

pub fn run_stats(args: &StatusArgs) -> Result<Status, CliError> {
    let names = match &args.iface {
        Some(iface) => vec![iface.clone()],
        None => args.roots.interfaces(),
    };
    let mut all = Vec::new();
    for iface in &names {
        let pins = args.roots.pins(iface);
        let meta = read_meta(&args.roots.meta_path(iface)).ok_or_else(|| {
            CliError::new(format!(
                "{iface}: no policy metadata in {} (applied by patronusc apply?)",
                args.roots.state_root.display()
            ))
        })?;
        let fd = install::open_map(&pins.map("stats")).map_err(runtime_err(iface))?;
        let values =
            install::read_counters(std::os::fd::AsFd::as_fd(&fd)).map_err(runtime_err(iface))?;
        let rows: Vec<StatRow> = meta
            .counters
            .iter()
            .zip(values)
            .map(|(counter, words)| StatRow {
                kind: counter.kind.clone(),
                name: counter.name.clone(),
                location: counter.location.clone(),
                packets: words.first().copied().unwrap_or(0),
                bytes: words.get(1).copied().unwrap_or(0),
            })
            .collect();
        all.push((iface.clone(), rows));
    }
    if args.json {
        let json: serde_json::Map<String, serde_json::Value> = all
            .into_iter()
            .map(|(iface, rows)| (iface, serde_json::json!(rows)))
            .collect();
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| CliError::new(format!("cannot encode JSON: {e}")))?;
        write_stdout(&format!("{text}\n"))?;
        return Ok(Status::Success);
    }
    let mut out = String::new();
    for (iface, rows) in &all {
        let _ = writeln!(out, "{iface}:");
        let _ = writeln!(out, "  {:>12} {:>14}  counter", "packets", "bytes");
        for row in rows {
            let _ = writeln!(
                out,
                "  {:>12} {:>14}  {}{}{}",
                row.packets,
                row.bytes,
                if row.kind == "phase" { "phase " } else { "" },
                row.name,
                row.location
                    .as_ref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            );
        }
    }
    if all.is_empty() {
        out.push_str("no policy is applied\n");
    }
    write_stdout(&out)?;
    Ok(Status::Success)
}

pub fn run_unload(args: &UnloadArgs) -> Result<Status, CliError> {
    let _lock = ApplyLock::take(&args.roots.state_root.join(&args.iface))?;
    let pins = args.roots.pins(&args.iface);
    if !install::uninstall(&pins) {
        eprintln!("patronusc: {}: no policy applied", args.iface);
        return Ok(Status::Failure);
    }
    let _ = std::fs::remove_file(args.roots.meta_path(&args.iface));
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
