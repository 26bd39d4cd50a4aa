//! `patronusc apply | status | stats | unload | load`: policies on real
//! interfaces.
//!
//! - `apply POLICY [-i IFACE]` compiles the policy (`crate::pipeline`),
//!   loads it and attaches
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
//!   (`patronus_runtime::deploy::carry`). The apply itself is
//!   `crate::change`'s, the state files `crate::state_dir`'s; the
//!   `--confirm` rollback and the SSH-lockout warning live in
//!   `crate::confirm`.
//! - Incremental apply (decided by `patronus_runtime::deploy::decide`):
//!   when the new policy compiles to the very object
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
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use patronus_compiler::diag::{self, Diagnostic, Files};
use patronus_runtime::ProgramKind;
use patronus_runtime::deploy::roles;
use patronus_runtime::host::{self, IfaceName, StateFile};
use patronus_runtime::install::{self, Pins};
use serde::Serialize;

use crate::change::{Applying, Commit, apply_compiled};
use crate::common::{
    CliError, ColorArgs, Status, print_human_diagnostics, require_privileges, require_root_to_read,
    runtime_err, utc_time, write_stdout,
};
use crate::pipeline::{Source, compile};
use crate::state_dir::{ApplyLock, Meta, read_meta};
use crate::txn::{Op, Txn};

pub use crate::change::Mode;
pub use crate::state_dir::{DEFAULT_STATE_ROOT, Roots};

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
    #[arg(long, value_name = "DURATION", value_parser = crate::common::parse_duration)]
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

pub fn run_apply(args: &ApplyArgs) -> Result<Status, CliError> {
    // Before anything: a hang-up (a dropped SSH session, the case
    // `--confirm` exists for) must not cut an apply short.
    crate::txn::ignore_hangup();
    let started = Instant::now();
    let source = Source::File {
        path: &args.policy,
        tables: &args.tables,
    };
    let Some(compiled) = compile(source, &[], &args.color)? else {
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
        .and_then(|session| crate::confirm::ssh_lockout(&compiled.policy, &session))
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
    let lock = crate::settle::settle(&args.roots, &iface)?;
    let confirm = crate::confirm::before_apply(&args.roots, &lock, &iface, args.confirm)?;
    let source = std::fs::canonicalize(&args.policy).unwrap_or_else(|_| args.policy.clone());
    let (pending, watcher) = match &confirm {
        Some(plan) => {
            let (pending, watcher) = plan.arm(!args.no_watcher);
            (crate::txn::PendingChange::Set(pending), Some(watcher))
        }
        None => (crate::txn::PendingChange::Clear, None),
    };
    let had_pending = crate::state_dir::pending(&lock.state)?.is_some();
    let mut report = apply_compiled(
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
    )?
    .render();
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
    if patronus_runtime::privileges::missing_privileges().is_some() {
        return;
    }
    match ApplyLock::try_take(roots, iface) {
        Ok(Some(lock)) => {
            if let Err(err) = crate::settle::settle_locked(roots, &lock, iface) {
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
    let conntrack = roles::CONNTRACK_MAPS
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
        Some(state) => crate::state_dir::pending(&state)?,
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
                utc_time(meta.attached_at.saturating_mul(1_000_000_000)),
                meta.replaced_at
                    .map(|t| format!(
                        ", replaced at {} UTC",
                        utc_time(t.saturating_mul(1_000_000_000))
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

pub fn run_unload(args: &UnloadArgs) -> Result<Status, CliError> {
    require_privileges()?;
    crate::txn::ignore_hangup();
    let iface = &args.iface;
    let lock = crate::settle::settle(&args.roots, iface)?;
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
    let source = Source::File {
        path: &args.policy,
        tables: &args.tables,
    };
    let Some(compiled) = compile(source, &[], &args.color)? else {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
