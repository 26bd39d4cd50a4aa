//! `patronusc completions SHELL` and `patronusc man DIR`: the shell
//! completion scripts and man pages a package installs, generated from the
//! same clap definitions the binary parses with, so they never drift from
//! the real options.

use std::path::PathBuf;

use clap::Args;
use clap_complete::Shell;

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
/// `command` is the whole `patronusc` grammar (`crate::cli::Cli`).
pub fn run_completions(
    args: &CompletionsArgs,
    mut command: clap::Command,
) -> Result<Status, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "patronusc", &mut script);
    crate::common::write_stdout(&String::from_utf8_lossy(&script))?;
    Ok(Status::Success)
}

/// Writes the man pages into `args.out` and lists the files written.
/// `command` is the whole `patronusc` grammar (`crate::cli::Cli`).
pub fn run_man(args: &ManArgs, command: clap::Command) -> Result<Status, CliError> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::new(format!("cannot create `{}`: {e}", args.out.display())))?;
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
