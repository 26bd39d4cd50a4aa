//! `patronusc check` and `patronusc explain-code`: checks policies and
//! reports their diagnostics in the format asked for (human text on
//! stderr; JSON lines, SARIF or GitHub annotations on stdout).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use patronus_compiler::codes::Code;
use patronus_compiler::diag::{Diagnostic, Files};
use patronus_compiler::render;

use crate::common::{
    CliError, ColorArgs, Counts, Status, TableAccessArgs, print_human_diagnostics, read_policy,
    write_stdout,
};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy files to check.
    #[arg(
        value_name = "POLICY",
        required_unless_present = "explain",
        conflicts_with = "explain"
    )]
    pub policies: Vec<PathBuf>,
    /// How to report diagnostics: human text on stderr, or json, sarif or
    /// github on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 1 when there are warnings, even without errors.
    #[arg(long)]
    pub deny_warnings: bool,
    #[command(flatten)]
    pub color: ColorArgs,
    #[command(flatten)]
    pub tables: TableAccessArgs,
    /// Print the explanation of a diagnostic code instead of checking.
    #[arg(long, value_name = "CODE")]
    pub explain: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// rustc-style text with source excerpts, on stderr, and a summary line.
    Human,
    /// One JSON object per diagnostic per line, on stdout.
    Json,
    /// One SARIF 2.1.0 log for all policies, on stdout (GitHub code scanning).
    Sarif,
    /// GitHub Actions workflow commands (`::error file=...::message`), on stdout.
    Github,
}

#[derive(Debug, Args)]
pub struct ExplainCodeArgs {
    /// A code number (P0103) or name (shadowed-rule).
    #[arg(value_name = "CODE")]
    pub code: String,
}

/// The tool as SARIF describes it.
pub fn tool_info() -> render::ToolInfo {
    render::ToolInfo {
        name: "patronusc".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

pub fn run(args: &CheckArgs) -> Result<Status, CliError> {
    if let Some(code) = &args.explain {
        return explain_code(code);
    }
    let loader = args.tables.loader()?;
    let mut counts = Counts::default();
    let mut checked_files = 0usize;
    let mut unreadable = 0usize;
    // SARIF is one document for every policy, so it is written at the end;
    // the other formats stream policy by policy.
    let mut sarif_batches: Vec<(Files, Vec<Diagnostic>)> = Vec::new();
    for path in &args.policies {
        let mut files = Files::new();
        let policy = match read_policy(&mut files, path) {
            Ok(id) => id,
            // One policy: its error is the whole story. Several: report it,
            // check the rest, and still exit 2 at the end.
            Err(err) if args.policies.len() == 1 => return Err(err),
            Err(err) => {
                eprintln!("patronusc: error: {err}");
                unreadable += 1;
                continue;
            }
        };
        let checked = patronus_compiler::check(&mut files, policy, &loader);
        checked_files += 1;
        counts.add(&checked.diagnostics);
        match args.format {
            Format::Human => {
                print_human_diagnostics(&files, &checked.diagnostics, args.color.color)
            }
            Format::Json => write_stdout(&render::json_lines(&files, &checked.diagnostics))?,
            Format::Github => write_stdout(&render::github(&files, &checked.diagnostics))?,
            Format::Sarif => sarif_batches.push((files, checked.diagnostics)),
        }
    }
    if args.format == Format::Sarif {
        let batches: Vec<(&Files, &[Diagnostic])> = sarif_batches
            .iter()
            .map(|(files, diagnostics)| (files, diagnostics.as_slice()))
            .collect();
        write_stdout(&render::sarif(&batches, &tool_info()))?;
    }
    if args.format == Format::Human && checked_files > 0 {
        eprintln!("{}", counts.summary(checked_files));
    }
    if unreadable > 0 {
        return Err(CliError::new(format!(
            "{unreadable} of {} policy files could not be read",
            args.policies.len()
        )));
    }
    let failed = counts.errors > 0 || (args.deny_warnings && counts.warnings > 0);
    Ok(Status::failure_if(failed))
}

pub fn run_explain_code(args: &ExplainCodeArgs) -> Result<Status, CliError> {
    explain_code(&args.code)
}

fn explain_code(text: &str) -> Result<Status, CliError> {
    let code = Code::lookup(text.trim()).ok_or_else(|| {
        let known: Vec<&str> = Code::ALL.iter().map(|c| c.info().code).collect();
        CliError::new(format!(
            "unknown diagnostic code `{text}`; known codes: {}",
            known.join(", ")
        ))
    })?;
    write_stdout(&explanation_page(code))?;
    Ok(Status::Success)
}

/// The header line (`P0103 shadowed-rule (warning): ...`) and the page.
fn explanation_page(code: Code) -> String {
    let info = code.info();
    let severity = match info.severity {
        patronus_compiler::diag::Severity::Error => "error",
        patronus_compiler::diag::Severity::Warning => "warning",
    };
    let mut page = format!(
        "{} {} ({severity}): {}\n\n{}",
        info.code, info.name, info.summary, info.explanation
    );
    if !page.ends_with('\n') {
        page.push('\n');
    }
    page
}
