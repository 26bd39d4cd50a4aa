//! `patronusc table add|del|list -i IFACE TABLE [CIDR...]`: a running
//! policy's tables changed at run time, like `nft add element`. The table
//! files are not touched: a later `apply` from files makes the kernel
//! match the files again.
//!
//! State, in `STATE_ROOT/IFACE/` beside the apply metadata:
//! - `tables.json` (written by every apply, `crate::state_dir::TablesMeta`):
//!   per table and address family, the classifier maps it can be changed
//!   in directly — the fast path, decided and edited by
//!   `patronus_runtime::deploy::tables` (DIR-24 slot arrays included) —
//!   with the key layout and the one value every entry of such a map has.
//! - `journal`: one `add|del TABLE PREFIX` line per change made, appended
//!   after the kernel accepted it; an apply from files removes it.
//!
//! Everything else (a map that mixes the table with other sets, a family
//! without a map, a non-host prefix for a host-only hash map) takes the
//! general path: the saved policy (`snapshot.json`) is compiled again with
//! the journal and the new changes applied to its tables, and applied
//! through the normal apply (in place when the programs and map
//! definitions are unchanged, else a full atomic replace).

use std::fmt::Write as _;
use std::time::Instant;

use clap::{Args, Subcommand};
use patronus_runtime::deploy::tables::{self, EditError, Edited};
use patronus_runtime::host::IfaceName;
use patronus_runtime::install;

use crate::change::{Applying, Commit, Mode, apply_compiled};
use crate::common::{CliError, ColorArgs, Status, require_privileges, runtime_err, write_stdout};
use crate::pipeline::{Source, compile};
use crate::state_dir::{
    Change, Roots, TablesMeta, journal_with, parse_prefix, read_journal, read_snapshot,
    read_tables_meta,
};
use crate::txn::{Op, PendingChange, Txn};

#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(subcommand)]
    pub action: TableAction,
}

#[derive(Debug, Subcommand)]
pub enum TableAction {
    /// Add prefixes to a table of the running policy (a prefix already
    /// there is left alone).
    Add(TableEditArgs),
    /// Delete prefixes from a table of the running policy.
    Del(TableEditArgs),
    /// Print the running policy's tables (names and sizes), or one table's
    /// prefixes.
    List(TableListArgs),
}

#[derive(Debug, Args)]
pub struct TableEditArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    /// The table's name in the policy (without `@`).
    #[arg(value_name = "TABLE")]
    pub table: String,
    /// Addresses or CIDR prefixes (IPv4 or IPv6), host bits clear.
    #[arg(value_name = "CIDR", required = true)]
    pub cidrs: Vec<String>,
    /// Benchmarks: print the time spent in this process (µs) on stderr.
    #[arg(long, hide = true)]
    pub timing: bool,
    #[command(flatten)]
    pub roots: Roots,
    #[command(flatten)]
    pub color: ColorArgs,
}

#[derive(Debug, Args)]
pub struct TableListArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    /// Print this table's prefixes.
    #[arg(value_name = "TABLE")]
    pub table: Option<String>,
    #[command(flatten)]
    pub roots: Roots,
    #[command(flatten)]
    pub color: ColorArgs,
}

fn unknown_table(name: &str, meta: &TablesMeta) -> CliError {
    let names: Vec<&str> = meta.tables.iter().map(|t| t.name.as_str()).collect();
    CliError::new(if names.is_empty() {
        format!("the running policy has no tables (no table `{name}`)")
    } else {
        format!(
            "the running policy has no table `{name}`; its tables: {}",
            names.join(", ")
        )
    })
}

pub fn run(args: &TableArgs) -> Result<Status, CliError> {
    match &args.action {
        TableAction::Add(edit) => run_edit(edit, true),
        TableAction::Del(edit) => run_edit(edit, false),
        TableAction::List(list) => run_list(list),
    }
}

fn run_edit(args: &TableEditArgs, add: bool) -> Result<Status, CliError> {
    let started = Instant::now();
    let iface = &args.iface;
    let prefixes = args
        .cidrs
        .iter()
        .map(|c| parse_prefix(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::new)?;
    require_privileges()?;
    let pins = args.roots.pins(iface);
    crate::txn::ignore_hangup();
    let lock = crate::settle::settle(&args.roots, iface)?;
    if !pins.installed() {
        return Err(CliError::new(format!(
            "{iface}: no policy applied (interfaces with one: {})",
            list_or_none(&args.roots.interfaces()?)
        )));
    }
    let state = &lock.state;
    // Begun before the first map write: a kill before the commit below
    // brings the maps back to the journal as it was (the change did not
    // happen), a kill after it finds the journal complete.
    let txn = Txn::new(Op::Table);
    let mut begun = false;
    let meta = read_tables_meta(state, iface)?;
    let table = meta
        .tables
        .iter()
        .find(|t| t.name == args.table)
        .ok_or_else(|| unknown_table(&args.table, &meta))?;
    let mut journal = Vec::new();
    let mut general = Vec::new();
    let mut unchanged = Vec::new();
    let mut kernel_time = std::time::Duration::ZERO;
    for prefix in prefixes {
        let change = Change {
            add,
            table: args.table.clone(),
            prefix,
        };
        let fast = if prefix.is_ipv4() {
            &table.v4
        } else {
            &table.v6
        };
        let Some(maps) = fast else {
            general.push(change);
            continue;
        };
        let maps = maps
            .iter()
            .map(|m| m.routed())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| CliError::new("the table metadata is damaged (value)"))?;
        let t0 = Instant::now();
        let mut begin = || -> Result<(), CliError> {
            if !begun {
                txn.begin(state)?;
                begun = true;
            }
            Ok(())
        };
        let edited =
            tables::edit_running(&pins, &maps, &prefix, add, &mut begin).map_err(|e| match e {
                EditError::Hook(e) => e,
                EditError::Failed(what) => CliError::new(what),
            })?;
        kernel_time += t0.elapsed();
        match edited {
            Edited::Changed => journal.push(change),
            Edited::Unchanged => unchanged.push(prefix),
            Edited::Recompile => general.push(change),
        }
    }
    // Recorded before the general path compiles: it replays the journal.
    if begun {
        let mut txn = txn;
        if !journal.is_empty() {
            txn.journal = Some(journal_with(state, &journal)?);
        }
        txn.commit(&args.roots, &lock, iface)?;
    }
    let mut report = String::new();
    if !general.is_empty() {
        let t0 = Instant::now();
        let snapshot = read_snapshot(&lock, iface)?;
        let recorded = read_journal(&lock)?;
        let edits: Vec<Change> = recorded.iter().chain(&general).cloned().collect();
        let compiled = compile(Source::Saved(&snapshot), &edits, &args.color)?;
        let Some(compiled) = compiled else {
            eprintln!(
                "patronusc: the saved policy with these table changes has errors; nothing was changed"
            );
            return Ok(Status::Failure);
        };
        let effective = compiled.effective.get(recorded.len()..).unwrap_or_default();
        let applied: Vec<Change> = general
            .iter()
            .zip(effective)
            .filter(|(_, e)| **e)
            .map(|(c, _)| c.clone())
            .collect();
        unchanged.extend(
            general
                .iter()
                .zip(effective)
                .filter(|(_, e)| !**e)
                .map(|(c, _)| c.prefix),
        );
        if !applied.is_empty() {
            let ifindex = install::ifindex(iface.as_str()).map_err(runtime_err(iface.as_str()))?;
            report = apply_compiled(
                &args.roots,
                &lock,
                iface,
                ifindex,
                &compiled,
                Mode::Auto,
                &Applying {
                    label: format!("table {}", args.table),
                    source: snapshot.name.clone(),
                    started: t0,
                    compile_time: t0.elapsed(),
                },
                Commit {
                    snapshot: None,
                    journal: Some(journal_with(state, &applied)?),
                    pending: PendingChange::Keep,
                    watcher: None,
                },
            )?
            .render();
        }
    }
    let mut status = Status::Success;
    for prefix in &unchanged {
        if add {
            eprintln!("patronusc: {prefix} is already in table `{}`", args.table);
        } else {
            eprintln!("patronusc: {prefix} is not in table `{}`", args.table);
            status = Status::Failure;
        }
    }
    if args.timing {
        eprintln!(
            "timing: kernel {:.1} µs, total {:.1} µs",
            kernel_time.as_secs_f64() * 1e6,
            started.elapsed().as_secs_f64() * 1e6
        );
    }
    if !report.is_empty() {
        write_stdout(&report)?;
    }
    Ok(status)
}

fn list_or_none(names: &[IfaceName]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        let names: Vec<&str> = names.iter().map(IfaceName::as_str).collect();
        names.join(", ")
    }
}

fn run_list(args: &TableListArgs) -> Result<Status, CliError> {
    let iface = &args.iface;
    let lock = crate::settle::settle(&args.roots, iface)?;
    let state = &lock.state;
    let meta = read_tables_meta(state, iface)?;
    if let Some(name) = &args.table
        && !meta.tables.iter().any(|t| &t.name == name)
    {
        return Err(unknown_table(name, &meta));
    }
    let snapshot = read_snapshot(&lock, iface)?;
    let journal = read_journal(&lock)?;
    let compiled = compile(Source::Saved(&snapshot), &journal, &args.color)?;
    let tables: Vec<_> = compiled
        .iter()
        .flat_map(|c| &c.policy.tables)
        .map(|t| (t.name.clone(), t.prefixes.clone()))
        .collect();
    let mut out = String::new();
    for (name, prefixes) in &tables {
        match &args.table {
            Some(wanted) if wanted == name => {
                for p in prefixes {
                    let _ = writeln!(out, "{p}");
                }
            }
            Some(_) => {}
            None => {
                let fast = meta
                    .tables
                    .iter()
                    .find(|t| &t.name == name)
                    .map(|t| match (&t.v4, &t.v6) {
                        (Some(_), Some(_)) => "fast path: IPv4, IPv6",
                        (Some(_), None) => "fast path: IPv4",
                        (None, Some(_)) => "fast path: IPv6",
                        (None, None) => "recompiled on change",
                    })
                    .unwrap_or("");
                let _ = writeln!(out, "{name}: {} prefixes ({fast})", prefixes.len());
            }
        }
    }
    if !journal.is_empty() && args.table.is_none() {
        let _ = writeln!(
            out,
            "{} run-time change(s) since the last apply from files",
            journal.len()
        );
    }
    write_stdout(&out)?;
    Ok(Status::Success)
}
