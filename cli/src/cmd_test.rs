//! `patronusc test`: runs the `test` blocks of policies (LANGUAGE.md §7).
//!
//! Each block runs against a fresh engine (empty conntrack, full buckets).
//!
//! Engines (`--engine`):
//! - `kernel`: the policy is compiled (check, `ir::lower`, `codegen::compile`),
//!   loaded with the runtime, and every `expect` packet runs through the XDP
//!   program and every `out` packet through the tc egress program under
//!   `BPF_PROG_TEST_RUN`. Before each block the stateful maps (conntrack,
//!   buckets, counters) are cleared. The program reads the kernel's clock, so
//!   packets are microseconds apart. A failing step's deciding phase and rule
//!   come from the counters the packet moved.
//! - `interpreter`: the reference interpreter. Time is virtual: the clock
//!   starts at 0 and advances 1 ms before every packet sent, inbound or out,
//!   and before each repetition of a `repeat N` step, so a block of N packets
//!   spans N ms (rate limits see 1000 packets/s).
//! - `auto` (default): the kernel when this process can load and test-run
//!   BPF programs, else the interpreter, saying so on stderr.
//!
//! Output (stdout): one line per block, then for each failing block its first
//! failing step with the expected and actual verdict, the deciding phase and
//! rule, the step and the rule underlined in the source; then a summary.
//! Exit 0 when every test passes, 1 when one failed, 2 on usage, I/O or
//! compile errors (the diagnostics go to stderr), on kernel errors (load,
//! verifier, test run), and with `--engine kernel` when the kernel cannot
//! be used.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel, Severity};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};
use patronus_codegen::insn::kernel::xdp_action;
use patronus_compiler::diag::{FileId, Files};
use patronus_compiler::interp::Interpreter;
use patronus_compiler::ir;
use patronus_compiler::semantics::{Counter, Outcome, Phase};
use patronus_compiler::typed::{Policy, RuleId, Test, TestStep};
use patronus_compiler::{check, packet};
use patronus_grammar::ast::{Action, Span, Verdict};
use patronus_runtime::{Loaded, ProgramKind, RuntimeError};

use crate::common::{
    CliError, ColorArgs, Status, TableAccessArgs, print_human_diagnostics, read_policy,
    write_stdout,
};

/// The virtual time between two packets of a test.
pub const PACKET_INTERVAL_NS: u64 = 1_000_000;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy files whose tests to run.
    #[arg(value_name = "POLICY", required = true)]
    pub policies: Vec<PathBuf>,
    /// What evaluates the packets.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub engine: Engine,
    #[command(flatten)]
    pub color: ColorArgs,
    #[command(flatten)]
    pub tables: TableAccessArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The kernel when it can be used, else the interpreter.
    Auto,
    /// The compiled program in the kernel (BPF_PROG_TEST_RUN); fails when
    /// the kernel cannot be used.
    Kernel,
    /// The reference interpreter in the compiler.
    Interpreter,
}

impl Engine {
    fn describe(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Kernel => "kernel, BPF_PROG_TEST_RUN",
            Engine::Interpreter => "reference interpreter",
        }
    }

    /// `Kernel` or `Interpreter`: what `self` means on this machine.
    fn resolve(self) -> Result<Engine, CliError> {
        match self {
            Engine::Interpreter => Ok(Engine::Interpreter),
            Engine::Kernel => match patronus_runtime::probe() {
                Ok(()) => Ok(Engine::Kernel),
                Err(error) => Err(CliError::new(format!("--engine kernel: {error}"))),
            },
            Engine::Auto => match patronus_runtime::probe() {
                Ok(()) => Ok(Engine::Kernel),
                Err(error) => {
                    eprintln!(
                        "patronusc: {error}\npatronusc: falling back to the reference interpreter"
                    );
                    Ok(Engine::Interpreter)
                }
            },
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
    let engine = args.engine.resolve()?;
    let loader = args.tables.loader()?;
    let mut passed = 0usize;
    let mut failed = 0usize;
    let mut broken_policies = 0usize;
    for path in &args.policies {
        let mut files = Files::new();
        let file = read_policy(&mut files, path)?;
        let checked = check(&mut files, file, &loader);
        let policy = match checked.policy {
            Some(policy) if !checked.has_errors() => policy,
            _ => {
                print_human_diagnostics(&files, &checked.diagnostics, args.color.color);
                broken_policies += 1;
                continue;
            }
        };
        let mut kernel = if engine == Engine::Kernel && !policy.tests.is_empty() {
            match KernelPolicy::load(&policy) {
                Ok(kernel) => Some(kernel),
                Err(error) => {
                    eprintln!("patronusc: error: {}: {error}", path.display());
                    broken_policies += 1;
                    continue;
                }
            }
        } else {
            None
        };
        let mut report = format!(
            "running {} from {} (engine: {})\n",
            plural(policy.tests.len(), "test"),
            path.display(),
            engine.describe()
        );
        let mut failures = Vec::new();
        let mut kernel_error = false;
        for test in &policy.tests {
            let result = match &mut kernel {
                Some(kernel) => match kernel.run_test(&policy, test) {
                    Ok(result) => result,
                    Err(error) => {
                        kernel_error = true;
                        let _ = writeln!(report, "test {:?} ... ERROR: {error}", test.name);
                        continue;
                    }
                },
                None => run_test(&policy, test),
            };
            match result {
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
        if kernel_error {
            broken_policies += 1;
        }
    }
    let (line, status) = summary(passed, failed, broken_policies);
    write_stdout(&line)?;
    if broken_policies > 0 {
        return Err(CliError::new(format!(
            "{} of {} did not compile, load or run",
            plural(broken_policies, "policy"),
            args.policies.len()
        )));
    }
    Ok(status)
}

/// The last line of `patronusc test` and its exit status: "ok" only when
/// tests ran and every one passed and every policy compiled and loaded;
/// nothing run is a failure, not a success.
pub fn summary(passed: usize, failed: usize, broken: usize) -> (String, Status) {
    let ok = failed == 0 && broken == 0 && passed > 0;
    let mut line = format!(
        "test result: {}. {passed} passed; {failed} failed",
        if ok { "ok" } else { "FAILED" }
    );
    if broken > 0 {
        let _ = write!(
            line,
            "; {} did not compile, load or run",
            plural(broken, "policy")
        );
    } else if passed + failed == 0 {
        line.push_str("; no tests ran (the policies have no `test` blocks)");
    }
    line.push('\n');
    (line, Status::failure_if(!ok))
}

/// A policy compiled and loaded into the kernel, ready to run its test
/// blocks: the kernel engine of `patronusc test`, also used by the kernel
/// tests of the root `tests` crate.
pub struct KernelPolicy {
    pub program: ir::Program,
    pub object: patronus_codegen::Object,
    pub loaded: Loaded,
    /// The per-CPU counters map (`program.counters` order), if the object has one.
    stats_map: Option<String>,
}

/// Why a policy could not be put into the kernel.
#[derive(Debug)]
pub enum KernelError {
    Codegen(patronus_codegen::CodegenError),
    Runtime(RuntimeError),
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Codegen(e) => write!(f, "code generation failed: {e}"),
            KernelError::Runtime(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// The name of the per-CPU counters map (`ir::plan`).
const STATS_MAP: &str = "stats";

impl KernelPolicy {
    /// Lowers, compiles and loads a checked policy.
    pub fn load(policy: &Policy) -> Result<KernelPolicy, KernelError> {
        let program = ir::lower(policy);
        let object = patronus_codegen::compile(&program).map_err(KernelError::Codegen)?;
        let loaded = Loaded::load_object(&object).map_err(KernelError::Runtime)?;
        let stats_map = loaded
            .map_names()
            .any(|name| name == STATS_MAP)
            .then(|| STATS_MAP.to_owned());
        Ok(KernelPolicy {
            program,
            object,
            loaded,
            stats_map,
        })
    }

    /// Runs one test block on fresh state (stateful maps cleared):
    /// `expect` packets through the XDP program, `out` packets through the
    /// tc egress program. `Ok(None)` when every step held.
    pub fn run_test<'t>(
        &mut self,
        policy: &Policy,
        test: &'t Test,
    ) -> Result<Option<Failure<'t>>, RuntimeError> {
        self.loaded.reset_state()?;
        for step in &test.steps {
            let frame = packet::build(&step.packet);
            for repetition in 0..step.packet.repeat.max(1) {
                let Some(expected) = step.expect else {
                    self.send_out(policy, &frame)?;
                    continue;
                };
                let before = self.counters()?;
                let run = self.loaded.run_xdp(&frame)?;
                let verdict = match run.retval as i32 {
                    xdp_action::PASS => Verdict::Pass,
                    xdp_action::DROP => Verdict::Drop,
                    other => {
                        return Err(RuntimeError::TestRun {
                            kind: ProgramKind::Xdp,
                            frame_len: frame.len(),
                            error: std::io::Error::other(format!(
                                "the program returned {other}, neither XDP_PASS nor XDP_DROP"
                            )),
                        });
                    }
                };
                if verdict != expected {
                    let after = self.counters()?;
                    return Ok(Some(Failure {
                        step,
                        repetition,
                        expected,
                        outcome: self.outcome(verdict, &before, &after),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// An `out` packet: through the egress program, which records the flow.
    /// Without conntrack there is nothing to record and no egress program.
    fn send_out(&self, policy: &Policy, frame: &[u8]) -> Result<(), RuntimeError> {
        if !self.loaded.has_program(ProgramKind::Tc) && !policy.options.conntrack {
            return Ok(());
        }
        self.loaded.run_tc(frame).map(drop)
    }

    fn counters(&self) -> Result<Vec<u64>, RuntimeError> {
        match &self.stats_map {
            Some(name) => Ok(self
                .loaded
                .read_counters(name)?
                .into_iter()
                .map(|words| words.first().copied().unwrap_or(0))
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    /// What the packet did, read back from the counters it moved: the
    /// phase counter that moved is the deciding phase; the deciding rule is
    /// the moved rule counter whose action fits that phase.
    fn outcome(&self, verdict: Verdict, before: &[u64], after: &[u64]) -> Outcome {
        let mut moved: Vec<Counter> = after
            .iter()
            .zip(before)
            .enumerate()
            .filter(|(_, (a, b))| a > b)
            .filter_map(|(i, _)| self.program.counters.get(i).copied())
            .collect();
        // The interpreter lists counters in the order the packet touched
        // them: rules as their phases run, the deciding phase last.
        moved.sort_by_key(|c| matches!(c, Counter::Phase(_)));
        let phase = moved
            .iter()
            .find_map(|c| match c {
                Counter::Phase(p) => Some(*p),
                Counter::Rule(_) => None,
            })
            .unwrap_or(Phase::Default);
        let fits = |rule: RuleId| {
            let Some(info) = self.program.rules.get(rule.0 as usize) else {
                return false;
            };
            match phase {
                Phase::Deny => info.action == Action::Deny,
                Phase::Allow => info.action == Action::Allow,
                Phase::RateLimit => info.rate.is_some(),
                _ => false,
            }
        };
        let rule = moved.iter().rev().find_map(|c| match c {
            Counter::Rule(rule) if fits(*rule) => Some(*rule),
            _ => None,
        });
        Outcome {
            verdict,
            phase,
            rule,
            counters: moved,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_ok_only_when_tests_ran_and_all_passed() {
        assert_eq!(
            summary(3, 0, 0),
            (
                "test result: ok. 3 passed; 0 failed\n".into(),
                Status::Success
            )
        );
        let (line, status) = summary(0, 0, 1);
        assert!(line.starts_with("test result: FAILED. 0 passed"), "{line}");
        assert!(
            line.contains("1 policy did not compile, load or run"),
            "{line}"
        );
        assert_eq!(status, Status::Failure);
        let (line, status) = summary(3, 0, 1);
        assert!(line.starts_with("test result: FAILED. 3 passed"), "{line}");
        assert_eq!(status, Status::Failure);
        let (line, status) = summary(0, 0, 0);
        assert!(
            line.contains("FAILED") && line.contains("no tests ran"),
            "{line}"
        );
        assert_eq!(status, Status::Failure);
        assert_eq!(summary(2, 1, 0).1, Status::Failure);
    }
}
