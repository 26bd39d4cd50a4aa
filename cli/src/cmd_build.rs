//! `patronusc build`: checks a policy, lowers it, and emits the lowered IR
//! (`--emit ir`) or the map plan with every entry (`--emit maps`) as the
//! deterministic text of `patronus_compiler::ir::text`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use patronus_compiler::diag::Files;
use patronus_compiler::ir;

use crate::common::{
    CliError, ColorArgs, FsTableLoader, Status, print_human_diagnostics, read_policy, write_stdout,
};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    pub policy: PathBuf,
    /// What to emit.
    #[arg(long, value_enum)]
    pub emit: Emit,
    /// Write here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub color: ColorArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The lowered intermediate representation.
    Ir,
    /// The BPF maps the program needs and their initial contents.
    Maps,
}

pub fn run(args: &BuildArgs) -> Result<Status, CliError> {
    let mut files = Files::new();
    let file = read_policy(&mut files, &args.policy)?;
    let checked = patronus_compiler::check(&mut files, file, &FsTableLoader);
    // Warnings are shown but do not stop the build; errors do.
    print_human_diagnostics(&files, &checked.diagnostics, args.color.color);
    let policy = match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => return Ok(Status::Failure),
    };
    let program = ir::lower(&policy);
    let text = match args.emit {
        Emit::Ir => ir::text::ir(&program),
        Emit::Maps => ir::text::maps(&program),
    };
    match &args.output {
        None => write_stdout(&text)?,
        Some(path) => std::fs::write(path, text)
            .map_err(|err| CliError::new(format!("cannot write `{}`: {err}", path.display())))?,
    }
    Ok(Status::Success)
}
