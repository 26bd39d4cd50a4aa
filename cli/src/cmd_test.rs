//! `patronusc test`: runs the `test` blocks of policies (LANGUAGE.md §7).
//!
//! Each block runs against a fresh engine (empty conntrack, full buckets).
//! Time is virtual: the clock starts at 0 and advances 1 ms before every
//! packet sent, inbound or out, and before each repetition of a `repeat N`
//! step, so a block of N packets spans N ms (rate limits see 1000 packets/s).
//!
//! Output (stdout): one line per block, then for each failing block its first
//! failing step with the expected and actual verdict, the deciding phase and
//! rule, the step and the rule underlined in the source; then a summary.
//! Exit 0 when every test passes, 1 when one failed, 2 on usage, I/O or
//! compile errors (the diagnostics go to stderr).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel, Severity};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};
use patronus_compiler::diag::{FileId, Files};
use patronus_compiler::interp::Interpreter;
use patronus_compiler::semantics::{Counter, Outcome, Phase};
use patronus_compiler::typed::{Policy, RuleId, Test, TestStep};
use patronus_compiler::{check, packet};
use patronus_grammar::ast::{Span, Verdict};

use crate::common::{
    CliError, ColorArgs, FsTableLoader, Status, print_human_diagnostics, read_policy, write_stdout,
};

/// The virtual time between two packets of a test.
pub const PACKET_INTERVAL_NS: u64 = 1_000_000;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy files whose tests to run.
    #[arg(value_name = "POLICY", required = true)]
    pub policies: Vec<PathBuf>,
    /// What evaluates the packets.
    #[arg(long, value_enum, default_value_t = Engine::Interpreter)]
    pub engine: Engine,
    #[command(flatten)]
    pub color: ColorArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The reference interpreter in the compiler.
    Interpreter,
}

impl Engine {
    fn describe(self) -> &'static str {
        match self {
            Engine::Interpreter => "reference interpreter",
        }
    }
}

/// The first step of a test whose verdict was not the expected one.
pub struct Failure<'t> {
    pub step: &'t TestStep,
    /// Which repetition (0-based) of a `repeat N` step failed.
    pub repetition: u64,
    pub expected: Verdict,
    pub outcome: Outcome,
}

/// Runs one test block on a fresh interpreter; `None` when every step held.
pub fn run_test<'t>(policy: &Policy, test: &'t Test) -> Option<Failure<'t>> {
    let mut interp = Interpreter::new(policy);
    let mut now_ns = 0u64;
    for step in &test.steps {
        let frame = packet::build(&step.packet);
        for repetition in 0..step.packet.repeat.max(1) {
            now_ns += PACKET_INTERVAL_NS;
            let Some(expected) = step.expect else {
                interp.outbound(&frame, now_ns);
                continue;
            };
            let outcome = interp.inbound(&frame, now_ns);
            if outcome.verdict != expected {
                return Some(Failure {
                    step,
                    repetition,
                    expected,
                    outcome,
                });
            }
        }
    }
    None
}

pub fn run(args: &TestArgs) -> Result<Status, CliError> {
    let mut passed = 0usize;
    let mut failed = 0usize;
    let mut broken_policies = 0usize;
    for path in &args.policies {
        let mut files = Files::new();
        let file = read_policy(&mut files, path)?;
        let checked = check(&mut files, file, &FsTableLoader);
        let policy = match checked.policy {
            Some(policy) if !checked.has_errors() => policy,
            _ => {
                print_human_diagnostics(&files, &checked.diagnostics, args.color.color);
                broken_policies += 1;
                continue;
            }
        };
        let mut report = format!(
            "running {} from {} (engine: {})\n",
            plural(policy.tests.len(), "test"),
            path.display(),
            args.engine.describe()
        );
        let mut failures = Vec::new();
        for test in &policy.tests {
            match run_test(&policy, test) {
                None => {
                    passed += 1;
                    let _ = writeln!(report, "test {:?} ... ok", test.name);
                }
                Some(failure) => {
                    failed += 1;
                    let _ = writeln!(report, "test {:?} ... FAILED", test.name);
                    failures.push((test, failure));
                }
            }
        }
        let color = args.color.color.for_stdout();
        for (test, failure) in &failures {
            report.push('\n');
            report.push_str(render_failure(&files, &policy, test, failure, color).trim_end());
            report.push('\n');
        }
        report.push('\n');
        write_stdout(&report)?;
    }
    let result = if failed == 0 { "ok" } else { "FAILED" };
    write_stdout(&format!(
        "test result: {result}. {passed} passed; {failed} failed\n"
    ))?;
    if broken_policies > 0 {
        return Err(CliError::new(format!(
            "{} of {} did not compile",
            plural(broken_policies, "policy"),
            args.policies.len()
        )));
    }
    Ok(Status::failure_if(failed > 0))
}

/// The failing step and the deciding rule, underlined rustc style.
fn render_failure(
    files: &Files,
    policy: &Policy,
    test: &Test,
    failure: &Failure,
    color: bool,
) -> String {
    let outcome = &failure.outcome;
    let step_message = format!(
        "expected {}, got {}",
        verdict_name(failure.expected),
        verdict_name(outcome.verdict)
    );
    let mut labels = vec![SourceLabel::primary(
        policy.file,
        failure.step.span,
        step_message,
    )];
    if let Some(rule) = outcome.rule {
        labels.push(SourceLabel::secondary(
            policy.file,
            rule_span(policy, rule),
            format!("decided by this rule ({})", phase_name(outcome.phase)),
        ));
    }
    let mut notes = vec![format!("deciding phase: {}", phase_name(outcome.phase))];
    if failure.step.packet.repeat > 1 {
        notes.push(format!(
            "failed at repetition {} of {}",
            failure.repetition + 1,
            failure.step.packet.repeat
        ));
    }
    notes.push(format!(
        "counters: {}",
        counters_text(policy, &outcome.counters)
    ));
    render_source(
        files,
        Severity::Error,
        &format!("test {:?} failed", test.name),
        &labels,
        &notes,
        color,
    )
}

/// A place in a source file to underline.
pub struct SourceLabel {
    pub primary: bool,
    pub file: FileId,
    pub span: Span,
    pub message: String,
}

impl SourceLabel {
    pub fn primary(file: FileId, span: Span, message: impl Into<String>) -> Self {
        SourceLabel {
            primary: true,
            file,
            span,
            message: message.into(),
        }
    }

    pub fn secondary(file: FileId, span: Span, message: impl Into<String>) -> Self {
        SourceLabel {
            primary: false,
            file,
            span,
            message: message.into(),
        }
    }
}

/// Renders a report with source excerpts, in the same style as compiler
/// diagnostics (codespan-reporting), but without a code: a test failure or
/// a trace is not a diagnostic of the policy.
pub fn render_source(
    files: &Files,
    severity: Severity,
    title: &str,
    labels: &[SourceLabel],
    notes: &[String],
    color: bool,
) -> String {
    let mut simple = SimpleFiles::new();
    for (_, f) in files.iter() {
        simple.add(f.name.clone(), f.text.clone());
    }
    let labels = labels
        .iter()
        .map(|l| {
            let label = if l.primary {
                CsLabel::primary(l.file.0, l.span.range())
            } else {
                CsLabel::secondary(l.file.0, l.span.range())
            };
            label.with_message(l.message.clone())
        })
        .collect();
    let diagnostic = CsDiagnostic::new(severity)
        .with_message(title)
        .with_labels(labels)
        .with_notes(notes.to_vec());
    let mut buffer = if color {
        termcolor::Buffer::ansi()
    } else {
        termcolor::Buffer::no_color()
    };
    let _ = term::emit(&mut buffer, &term::Config::default(), &simple, &diagnostic);
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

pub fn rule_span(policy: &Policy, rule: RuleId) -> Span {
    policy
        .rules
        .get(rule.0 as usize)
        .map_or(Span::default(), |r| r.span)
}

/// `rule 3 "ssh"` (with its label) or `rule 3`.
pub fn rule_name(policy: &Policy, rule: RuleId) -> String {
    match policy
        .rules
        .get(rule.0 as usize)
        .and_then(|r| r.label.as_ref())
    {
        Some(label) => format!("rule {} {label:?}", rule.0 + 1),
        None => format!("rule {}", rule.0 + 1),
    }
}

pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
    }
}

pub fn phase_name(phase: Phase) -> String {
    match phase {
        Phase::Arp => "arp".to_string(),
        Phase::Ndp => "ndp".to_string(),
        Phase::Invalid(class) => format!("invalid ({})", class.name()),
        Phase::Deny => "deny".to_string(),
        Phase::Established => "established".to_string(),
        Phase::RateLimit => "rate-limit".to_string(),
        Phase::Allow => "allow".to_string(),
        Phase::Default => "default".to_string(),
    }
}

/// `rule 2 "web", phase allow`.
pub fn counters_text(policy: &Policy, counters: &[Counter]) -> String {
    counters
        .iter()
        .map(|c| match c {
            Counter::Rule(rule) => rule_name(policy, *rule),
            Counter::Phase(phase) => format!("phase {}", phase_name(*phase)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "policy") => format!("{n} policies"),
        _ => format!("{n} {noun}s"),
    }
}
