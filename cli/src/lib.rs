//! `patronusc`, the Patronus policy compiler command line: argument parsing
//! ([`cli`]), one module per subcommand (`cmd_*`), and what they share —
//! the file-system glue ([`common`]), the compile pipeline (`pipeline`),
//! the per-interface state files ([`state_dir`]), the apply (`change`),
//! the `--confirm` rollback (`confirm`), the change transaction ([`txn`])
//! and settling an interface first (`settle`). The binary (`main.rs`) only calls [`run_main`].

pub mod agent;
mod change;
pub mod cli;
pub mod cmd_apply;
pub mod cmd_build;
pub mod cmd_check;
pub mod cmd_confirm;
pub mod cmd_diff;
pub mod cmd_doctor;
pub mod cmd_explain;
pub mod cmd_fmt;
pub mod cmd_generate;
pub mod cmd_log;
pub mod cmd_snapshot;
pub mod cmd_stats;
pub mod cmd_table;
pub mod cmd_test;
pub mod common;
mod confirm;
pub mod lsp;
pub mod names;
mod pipeline;
pub mod policy_source;
mod settle;
pub mod state_dir;
pub mod txn;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::common::{CliError, Status};

/// Parses the command line, runs the subcommand, prints any usage or I/O
/// error, and maps the outcome to the documented exit code (0, 1 or 2).
pub fn run_main() -> ExitCode {
    let cli = match Cli::try_parse_from(apply_shorthand(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout (exit 0) and usage errors to
            // stderr; usage errors must exit 2 like every other usage error.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match dispatch(&cli.command) {
        Ok(status) => status.into(),
        Err(err) => {
            eprintln!("patronusc: error: {err}");
            ExitCode::from(2)
        }
    }
}

/// `patronusc POLICY.pf ...` is `patronusc apply POLICY.pf ...`: a first
/// argument that names a `.pf` file (not a subcommand) gets `apply` put
/// in front of it.
pub fn apply_shorthand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let is_policy = args.get(1).is_some_and(|first| {
        let path = std::path::Path::new(first);
        path.extension().is_some_and(|ext| ext == "pf") && path.is_file()
    });
    if is_policy {
        args.insert(1, "apply".into());
    }
    args
}

/// Parses and runs one `patronusc` command line in this process (the
/// agent runs `apply` and `table` so); a usage error is an error.
pub fn run_argv(args: impl IntoIterator<Item = String>) -> Result<Status, CliError> {
    let cli = Cli::try_parse_from(args).map_err(|e| CliError::new(e.to_string()))?;
    dispatch(&cli.command)
}

fn dispatch(command: &Command) -> Result<Status, CliError> {
    match command {
        Command::Check(args) => cmd_check::run(args),
        Command::ExplainCode(args) => cmd_check::run_explain_code(args),
        Command::Fmt(args) => cmd_fmt::run(args),
        Command::Test(args) => cmd_test::run(args),
        Command::Explain(args) => cmd_explain::run(args),
        Command::Diff(args) => cmd_diff::run(args),
        Command::Snapshot(args) => cmd_snapshot::run(args),
        Command::Build(args) => cmd_build::run(args),
        Command::Apply(args) => cmd_apply::run_apply(args),
        Command::Status(args) => cmd_apply::run_status(args),
        Command::Stats(args) => cmd_stats::run_stats(args),
        Command::Unload(args) => cmd_apply::run_unload(args),
        Command::Load(args) => cmd_apply::run_load(args),
        Command::Confirm(args) => cmd_confirm::run_confirm(args),
        Command::Log(args) => cmd_log::run_log(args),
        Command::Table(args) => cmd_table::run(args),
        Command::Agent(args) => agent::run_agent(args),
        Command::Completions(args) => cmd_generate::run_completions(args, Cli::command()),
        Command::Man(args) => cmd_generate::run_man(args, Cli::command()),
        Command::Doctor(args) => cmd_doctor::run(args),
        Command::Lsp(args) => lsp::run(args),
        Command::RollbackWatcher(args) => cmd_confirm::run_watcher(args),
    }
}
