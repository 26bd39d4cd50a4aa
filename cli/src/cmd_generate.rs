//! `patronusc completions SHELL` and `patronusc man DIR`: the shell
//! completion scripts and man pages a package installs, generated from the
//! same clap definitions the binary parses with, so they never drift from
//! the real options.

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::common::{CliError, Status};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write `patronusc.1` and one `patronusc-CMD.1` per
    /// subcommand into (created if missing).
    #[arg(value_name = "DIR")]
    pub out: PathBuf,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn run_completions(args: &CompletionsArgs) -> Result<Status, CliError> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "patronusc", &mut script);
    crate::common::write_stdout(&String::from_utf8_lossy(&script))?;
    Ok(Status::Success)
}

/// Writes the man pages into `args.out` and lists the files written.
pub fn run_man(args: &ManArgs) -> Result<Status, CliError> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::new(format!("cannot create `{}`: {e}", args.out.display())))?;
    let command = Cli::command();
    let pages = man_pages(&command);
    for (name, page) in &pages {
        let path = args.out.join(name);
        std::fs::write(&path, page)
            .map_err(|e| CliError::new(format!("cannot write `{}`: {e}", path.display())))?;
    }
    let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
    crate::common::write_stdout(&format!("{}\n", names.join("\n")))?;
    Ok(Status::Success)
}

/// One page for the command and one per visible subcommand, nested ones
/// included, named the way git and cargo name theirs (`patronusc-apply.1`,
/// `patronusc-table-add.1`): clap_mangen's own naming once the command is
/// built, rendered in memory so that callers (and tests) see every page.
pub fn man_pages(command: &clap::Command) -> Vec<(String, Vec<u8>)> {
    fn collect(command: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
        let man = clap_mangen::Man::new(command.clone());
        let mut page = Vec::new();
        // Rendering into a Vec cannot fail: the writer is infallible.
        let _ = man.render(&mut page);
        pages.push((man.get_filename(), page));
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            collect(sub.clone(), pages);
        }
    }
    let mut command = command.clone().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    collect(command, &mut pages);
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

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
