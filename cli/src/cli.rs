//! The command-line grammar: the top-level `patronusc` parser and its
//! subcommands. Each subcommand's own options live beside its code
//! (`cmd_*::XxxArgs`); this module only assembles them.

use clap::{Parser, Subcommand};

use crate::{
    agent, cmd_apply, cmd_build, cmd_check, cmd_confirm, cmd_diff, cmd_doctor, cmd_explain,
    cmd_fmt, cmd_generate, cmd_log, cmd_snapshot, cmd_stats, cmd_table, cmd_test, lsp,
};

const AFTER_HELP: &str = "\
Exit status:
  0  success (warnings alone do not fail, unless --deny-warnings)
  1  check/build: the policy has errors (or warnings with --deny-warnings);
     test: a test failed (or coverage below --min-coverage);
     fmt --check: a file is not formatted; diff --exit-code: a verdict
     changed; snapshot --check: the policy no longer matches its snapshot;
     doctor: a check failed
  2  usage error or I/O error (missing, unreadable or non-UTF-8 file);
     test/explain/diff/snapshot/doctor: the policy has errors

See `patronusc explain-code P0103` for what a diagnostic code means.";

/// The Patronus firewall policy compiler.
#[derive(Debug, Parser)]
#[command(name = "patronusc", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse, resolve, type-check and lint policies; report diagnostics.
    Check(cmd_check::CheckArgs),
    /// Print the explanation page of a diagnostic code (P0103 or shadowed-rule).
    ExplainCode(cmd_check::ExplainCodeArgs),
    /// Reformat policies in place (or only report with --check).
    Fmt(cmd_fmt::FmtArgs),
    /// Run the `test` blocks of policies.
    Test(cmd_test::TestArgs),
    /// Trace how a policy decides one packet.
    Explain(cmd_explain::ExplainArgs),
    /// Show which packets a policy change passes or drops differently
    /// (exact regions, with example packets and the deciding rules).
    Diff(cmd_diff::DiffArgs),
    /// Write, check (--check) or update (--update) a policy's verdict
    /// snapshot, POLICY.snap.
    Snapshot(cmd_snapshot::SnapshotArgs),
    /// Compile a policy and emit its IR or its map plan.
    Build(cmd_build::BuildArgs),
    /// Compile a policy and attach it to an interface (atomically replacing
    /// the one there, keeping conntrack state).
    Apply(cmd_apply::ApplyArgs),
    /// Show the policies applied to interfaces.
    Status(cmd_apply::StatusArgs),
    /// Per-rule and per-phase packet and byte counters of applied policies.
    Stats(cmd_stats::StatsArgs),
    /// Detach an interface's policy and remove its pins.
    Unload(cmd_apply::UnloadArgs),
    /// Load and pin a policy without attaching it (benchmark harnesses).
    Load(cmd_apply::LoadArgs),
    /// Change a table of an applied policy at run time (add, del, list).
    Table(cmd_table::TableArgs),
    /// Print the events of `log` rules of an applied policy.
    Log(cmd_log::LogArgs),
    /// Keep the policy applied with `apply --confirm` (cancel its rollback).
    Confirm(cmd_confirm::ConfirmArgs),
    /// Keep policies applied: watch their files, re-apply on change or when
    /// an interface returns, serve /metrics and /healthz, take table updates.
    Agent(agent::AgentArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd_generate::CompletionsArgs),
    /// Write the man pages (patronusc.1, patronusc-CMD.1) into a directory.
    Man(cmd_generate::ManArgs),
    /// Check this host (and an interface, a policy) against the production
    /// checklist: pass / warn / fail / unknown, each with its fix.
    Doctor(cmd_doctor::DoctorArgs),
    /// Serve the Language Server Protocol on stdin/stdout (for editors).
    Lsp(lsp::LspArgs),
    /// Started by `apply --confirm`: rolls back unless confirmed in time.
    #[command(hide = true)]
    RollbackWatcher(cmd_confirm::WatcherArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cmd_generate::man_pages;

    #[test]
    fn every_visible_subcommand_has_a_page_and_hidden_ones_none() {
        let pages = man_pages(&Cli::command());
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        for want in [
            "patronusc.1",
            "patronusc-apply.1",
            "patronusc-table-add.1",
            "patronusc-completions.1",
        ] {
            assert!(names.contains(&want), "no {want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("rollback-watcher")));
        let apply = &pages
            .iter()
            .find(|(n, _)| n == "patronusc-apply.1")
            .unwrap()
            .1;
        let apply = String::from_utf8_lossy(apply);
        assert!(apply.contains("\\-\\-confirm"), "the page lists --confirm");
    }
}
