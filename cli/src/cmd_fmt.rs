//! `patronusc fmt`: rewrites policy files into the canonical layout
//! (`patronus_grammar::fmt`), or with `--check` reports which files are not
//! formatted, with a diff, for CI.

use std::path::PathBuf;

use clap::Args;
use patronus_compiler::diag::{Files, syntax_diagnostic};

use crate::common::{
    CliError, ColorChoice, Status, print_human_diagnostics, read_text, write_stdout,
};

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Policy files to format.
    #[arg(value_name = "POLICY", required = true)]
    pub policies: Vec<PathBuf>,
    /// Do not write; exit 1 with a diff if any file is not already formatted.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &FmtArgs) -> Result<Status, CliError> {
    let mut failed = false;
    for path in &args.policies {
        let source = read_text(path).map_err(CliError::new)?;
        let formatted = match patronus_grammar::fmt::format(&source) {
            Ok(text) => text,
            Err(errors) => {
                // Text that does not parse cannot be laid out; say why.
                let mut files = Files::new();
                let file = files.add(path.display().to_string(), source);
                let diagnostics: Vec<_> =
                    errors.iter().map(|e| syntax_diagnostic(file, e)).collect();
                print_human_diagnostics(&files, &diagnostics, ColorChoice::Auto);
                failed = true;
                continue;
            }
        };
        if formatted == source {
            continue;
        }
        if args.check {
            failed = true;
            write_stdout(&format!(
                "Diff in {}:\n{}",
                path.display(),
                unified_diff(&source, &formatted)
            ))?;
        } else {
            std::fs::write(path, formatted)
                .map_err(|e| CliError::new(format!("cannot write `{}`: {e}", path.display())))?;
        }
    }
    Ok(Status::failure_if(failed))
}

/// A line diff (`-` old, `+` new) with a line of context, from the longest
/// common subsequence of lines; policy files are small enough for O(n·m).
fn unified_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len().saturating_mul(b.len()) > 25_000_000 {
        return format!(
            "(file too large to diff: {} lines, formatted {} lines)\n",
            a.len(),
            b.len()
        );
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i + 1, a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', i + 1, b[j]));
            j += 1;
        } else {
            ops.push(('-', i + 1, a[i]));
            i += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(1)..(k + 2).min(ops.len())]
            .iter()
            .any(|op| op.0 != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line, text)) in ops.iter().enumerate() {
        if *op == ' ' && !near_change(k) {
            skipped = true;
            continue;
        }
        if skipped {
            out.push_str(&format!("@@ line {line} @@\n"));
            skipped = false;
        }
        out.push_str(&format!("{op}{text}\n"));
    }
    out
}
