//! `patronusc doctor [-i IFACE] [POLICY] [--json]`: the production
//! checklist and troubleshooting steps as checks. The checks and their
//! decisions live in `patronus_runtime::doctor`; this module parses the
//! arguments, compiles POLICY (for its kernel features and map sizes) and
//! renders the report as text or JSON, in [`render_text`] and
//! [`render_json`] only. Exit 1 when a check fails.

use std::path::PathBuf;

use clap::Args;
use patronus_compiler::diag::Files;
use patronus_compiler::ir;
use patronus_runtime::doctor::{self, Options, PolicyPlan, Report, Status as CheckStatus};
use patronus_runtime::host::IfaceName;
use patronus_runtime::install;
use serde::Serialize;

use crate::common::{
    CliError, ColorArgs, Status, TableAccessArgs, print_human_diagnostics, read_policy,
    write_stdout,
};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check this interface: native XDP, programs attached, RX
    /// queues, IRQs, offloads, rings.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: Option<IfaceName>,
    /// Also check what this policy needs: kernel features, map memory.
    #[arg(value_name = "POLICY")]
    pub policy: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The bpffs directory holding one pin directory per interface (tells
    /// Patronus's XDP program from others).
    #[arg(long, value_name = "DIR", default_value = install::DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
    #[command(flatten)]
    pub color: ColorArgs,
    #[command(flatten)]
    pub tables: TableAccessArgs,
}

pub fn run(args: &DoctorArgs) -> Result<Status, CliError> {
    let report = report(args)?;
    let text = if args.json {
        render_json(&report)
    } else {
        render_text(&report)
    };
    write_stdout(&text)?;
    Ok(Status::failure_if(report.failed()))
}

/// Runs the checks `args` ask for (the policy compiled first).
pub fn report(args: &DoctorArgs) -> Result<Report, CliError> {
    let plan = match &args.policy {
        Some(path) => Some(plan(args, path)?),
        None => None,
    };
    Ok(doctor::run(&Options {
        iface: args.iface.as_ref(),
        policy: plan.as_ref(),
        pin_root: Some(&args.pin_root),
    }))
}

/// check → lower → compile, for this kernel's verifier as `apply` does.
/// A policy with errors is an input error (exit 2): there is nothing to
/// check the host against.
fn plan(args: &DoctorArgs, path: &std::path::Path) -> Result<PolicyPlan, CliError> {
    let loader = args.tables.loader()?;
    let mut files = Files::new();
    let file = read_policy(&mut files, path)?;
    let checked = patronus_compiler::check(&mut files, file, &loader);
    print_human_diagnostics(&files, &checked.diagnostics, args.color.color);
    let policy = match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => {
            return Err(CliError::new(format!(
                "`{}` has errors: nothing to check the host against",
                path.display()
            )));
        }
    };
    let program = ir::lower(&policy);
    let limits = patronus_runtime::features::current().limits();
    let object = patronus_codegen::compile_with_limits(&program, &limits)
        .map_err(|e| CliError::new(format!("cannot compile `{}`: {e}", path.display())))?;
    PolicyPlan::of(&object)
        .map_err(|e| CliError::new(format!("cannot read `{}`'s object: {e}", path.display())))
}

/// One line per check (`STATUS  id  detail`), its fix indented below,
/// then the counts.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for check in &report.checks {
        out.push_str(&format!(
            "{:<7}  {:<width$}  {}: {}\n",
            check.status.as_str(),
            check.id,
            check.title,
            check.detail
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("{:<7}  {:<width$}  fix: {fix}\n", "", ""));
        }
    }
    out.push_str(&format!(
        "\n{} checks: {} pass, {} warn, {} fail, {} unknown\n",
        report.checks.len(),
        report.count(CheckStatus::Pass),
        report.count(CheckStatus::Warn),
        report.count(CheckStatus::Fail),
        report.count(CheckStatus::Unknown),
    ));
    out
}

/// One check in JSON, its fields in this order.
#[derive(Serialize)]
struct JsonCheck<'a> {
    id: &'a str,
    title: &'a str,
    status: &'static str,
    detail: &'a str,
    fix: Option<&'a str>,
}

/// `{"checks": [{id, title, status, detail, fix}], "summary": {...}}`.
pub fn render_json(report: &Report) -> String {
    let checks: Vec<JsonCheck<'_>> = report
        .checks
        .iter()
        .map(|c| JsonCheck {
            id: &c.id,
            title: &c.title,
            status: c.status.as_str(),
            detail: &c.detail,
            fix: c.fix.as_deref(),
        })
        .collect();
    let summary = serde_json::json!({
        "pass": report.count(CheckStatus::Pass),
        "warn": report.count(CheckStatus::Warn),
        "fail": report.count(CheckStatus::Fail),
        "unknown": report.count(CheckStatus::Unknown),
    });
    // Plain strings and numbers: serialising cannot fail.
    let mut text = serde_json::to_string_pretty(&serde_json::json!({
        "checks": checks,
        "summary": summary,
    }))
    .unwrap_or_default();
    text.push('\n');
    text
}
