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
//! Coverage (`--coverage`, `--coverage=json`, `--min-coverage PERCENT`):
//! after the tests, which rules, deciding phases and regions of the packet
//! space the tests exercise, measured on the reference interpreter
//! ([`patronus_compiler::coverage`]), with the rules no test reaches and the
//! regions no test exercises. With `--coverage=json` stdout holds only the
//! JSON document and the test report goes to stderr. `--min-coverage`
//! fails (exit 1) when the tests reach fewer than PERCENT of the rules of
//! all the policies together.
//!
//! Exit 0 when every test passes, 1 when one failed, 2 on usage, I/O or
//! compile errors (the diagnostics go to stderr), on kernel errors (load,
//! verifier, test run), and with `--engine kernel` when the kernel cannot
//! be used.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use patronus_codegen::insn::kernel::xdp_action;
use patronus_compiler::diag::{Files, Label};
use patronus_compiler::diff::{self, Describer};
use patronus_compiler::interp::Interpreter;
use patronus_compiler::ir;
use patronus_compiler::render::{self, Level, Report};
use patronus_compiler::semantics::{Counter, Outcome, Phase};
use patronus_compiler::typed::{Policy, RuleId, Test, TestStep};
use patronus_compiler::{check, coverage, packet, regions};
use patronus_grammar::ast::{Action, Verdict};
use patronus_runtime::{Loaded, ProgramKind, RuntimeError};

use crate::common::{
    CliError, ColorArgs, Status, TableAccessArgs, print_human_diagnostics, read_policy,
    write_stdout,
};
use crate::names::{
    PACKET_INTERVAL_NS, counters_text, phase_name, rule_name, rule_span, verdict_name,
};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy files whose tests to run.
    #[arg(value_name = "POLICY", required = true)]
    pub policies: Vec<PathBuf>,
    /// What evaluates the packets.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub engine: Engine,
    /// Also report the rules, phases and regions the tests exercise
    /// (`--coverage=json`: JSON on stdout, the test report on stderr).
    #[arg(
        long,
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "human",
        value_name = "FORMAT"
    )]
    pub coverage: Option<CoverageFormat>,
    /// Exit 1 when the tests reach fewer than PERCENT of the rules
    /// (implies --coverage).
    #[arg(long, value_name = "PERCENT")]
    pub min_coverage: Option<f64>,
    #[command(flatten)]
    pub color: ColorArgs,
    #[command(flatten)]
    pub tables: TableAccessArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CoverageFormat {
    Human,
    Json,
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
    if let Some(min) = args.min_coverage
        && !(0.0..=100.0).contains(&min)
    {
        return Err(CliError::new(format!(
            "--min-coverage {min}: a percentage from 0 to 100"
        )));
    }
    let coverage_format = args
        .coverage
        .or(args.min_coverage.map(|_| CoverageFormat::Human));
    let json = coverage_format == Some(CoverageFormat::Json);
    // With JSON coverage, stdout is the JSON document alone.
    let emit = |text: &str| -> Result<(), CliError> {
        if json {
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes());
            Ok(())
        } else {
            write_stdout(text)
        }
    };
    let mut coverages: Vec<(String, Files, Policy, coverage::Coverage)> = Vec::new();
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
        emit(&report)?;
        if kernel_error {
            broken_policies += 1;
        }
        if coverage_format.is_some() {
            let program = ir::lower(&policy);
            let measured = coverage::measure(&policy, &program, PACKET_INTERVAL_NS);
            coverages.push((path.display().to_string(), files, policy, measured));
        }
    }
    let (line, mut status) = summary(passed, failed, broken_policies);
    emit(&line)?;
    if let Some(format) = coverage_format {
        let (covered, total) = coverages.iter().fold((0, 0), |(c, t), (_, _, _, cov)| {
            (c + cov.rules_covered(), t + cov.rules.len())
        });
        let percent = coverage::percent(covered, total);
        let below = args.min_coverage.is_some_and(|min| percent < min);
        match format {
            CoverageFormat::Human => {
                let mut text = String::new();
                for (name, files, policy, cov) in &coverages {
                    text.push_str(&coverage_human(name, files, policy, cov));
                }
                let _ = writeln!(
                    text,
                    "coverage: {covered} of {total} rules reached ({percent:.1}%)"
                );
                if let Some(min) = args.min_coverage {
                    let _ = writeln!(
                        text,
                        "coverage {}: --min-coverage {min}",
                        if below { "FAILED" } else { "ok" }
                    );
                }
                write_stdout(&text)?;
            }
            CoverageFormat::Json => {
                let v = serde_json::json!({
                    "rules_covered": covered,
                    "rules_total": total,
                    "rules_percent": percent,
                    "min_coverage": args.min_coverage,
                    "passed": !below,
                    "policies": coverages
                        .iter()
                        .map(|(name, files, policy, cov)| coverage_json(name, files, policy, cov))
                        .collect::<Vec<_>>(),
                });
                let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
                text.push('\n');
                write_stdout(&text)?;
            }
        }
        if below {
            status = Status::Failure;
        }
    }
    if broken_policies > 0 {
        return Err(CliError::new(format!(
            "{} of {} did not compile, load or run",
            plural(broken_policies, "policy"),
            args.policies.len()
        )));
    }
    Ok(status)
}

/// `rule 3 "http3" (web.pf:22)`.
fn rule_place(name: &str, files: &Files, policy: &Policy, rule: RuleId) -> String {
    let span = rule_span(policy, rule);
    let (line, _) = files.line_col(policy.file, span.start);
    format!("{} ({name}:{line})", rule_name(policy, rule))
}

fn coverage_human(name: &str, files: &Files, policy: &Policy, cov: &coverage::Coverage) -> String {
    let mut out = format!(
        "\ncoverage of {name} (reference interpreter, {} test packets):\n",
        cov.packets
    );
    let rules = cov.rules.len();
    let _ = writeln!(
        out,
        "  rules    {}/{rules} ({:.1}%)",
        cov.rules_covered(),
        coverage::percent(cov.rules_covered(), rules)
    );
    for (rule, hit) in &cov.rules {
        if !hit {
            let _ = writeln!(
                out,
                "    not reached: {}",
                rule_place(name, files, policy, *rule)
            );
        }
    }
    let reached = cov.phases.iter().filter(|p| p.1).count();
    let missing: Vec<String> = cov
        .phases
        .iter()
        .filter(|p| !p.1)
        .map(|p| phase_name(p.0))
        .collect();
    let _ = write!(out, "  phases   {reached}/{}", cov.phases.len());
    if !missing.is_empty() {
        let _ = write!(out, " (not reached: {})", missing.join(", "));
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "  regions  {}/{} ({:.1}%)",
        cov.regions_covered(),
        cov.regions.len(),
        coverage::percent(cov.regions_covered(), cov.regions.len())
    );
    let mut describer = Describer::new(8);
    for (region, hit) in &cov.regions {
        if !hit {
            let d = region.decisions[0];
            let _ = writeln!(
                out,
                "    not exercised: {} {}  => {}",
                verdict_name(d.verdict()),
                describer.matcher(region),
                diff::decision_text(policy, d)
            );
            // A test step to start from, ready to paste.
            if let Some(p) = regions::example(region) {
                let _ = writeln!(
                    out,
                    "      expect {} {}",
                    verdict_name(d.verdict()),
                    regions::packet_text(&p)
                );
            }
        }
    }
    out.push('\n');
    out
}

fn coverage_json(
    name: &str,
    files: &Files,
    policy: &Policy,
    cov: &coverage::Coverage,
) -> serde_json::Value {
    let mut describer = Describer::new(0);
    let rule_json = |rule: RuleId| {
        let r = &policy.rules[rule.0 as usize];
        let (line, _) = files.line_col(policy.file, r.span.start);
        serde_json::json!({"index": rule.0 + 1, "label": r.label, "text": r.identity, "line": line})
    };
    serde_json::json!({
        "policy": name,
        "packets": cov.packets,
        "rules": {
            "covered": cov.rules_covered(),
            "total": cov.rules.len(),
            "percent": coverage::percent(cov.rules_covered(), cov.rules.len()),
            "not_reached": cov.rules.iter().filter(|r| !r.1).map(|r| rule_json(r.0)).collect::<Vec<_>>(),
        },
        "phases": {
            "reached": cov.phases.iter().filter(|p| p.1).map(|p| phase_name(p.0)).collect::<Vec<_>>(),
            "not_reached": cov.phases.iter().filter(|p| !p.1).map(|p| phase_name(p.0)).collect::<Vec<_>>(),
        },
        "regions": {
            "covered": cov.regions_covered(),
            "total": cov.regions.len(),
            "percent": coverage::percent(cov.regions_covered(), cov.regions.len()),
            "not_exercised": cov.regions.iter().filter(|r| !r.1).map(|(region, _)| {
                let d = region.decisions[0];
                serde_json::json!({
                    "verdict": verdict_name(d.verdict()),
                    "match": describer.matcher(region),
                    "decided_by": diff::decision_text(policy, d),
                    "example": regions::example(region).map(|p| regions::packet_text(&p)),
                })
            }).collect::<Vec<_>>(),
        },
    })
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

impl KernelPolicy {
    /// Lowers, compiles and loads a checked policy.
    pub fn load(policy: &Policy) -> Result<KernelPolicy, KernelError> {
        let program = ir::lower(policy);
        let object = patronus_codegen::compile(&program).map_err(KernelError::Codegen)?;
        let loaded = Loaded::load_object(&object).map_err(KernelError::Runtime)?;
        let stats_map = patronus_runtime::deploy::roles::stats_map(&object).map(|m| m.name.clone());
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
    let secondary = outcome
        .rule
        .map(|rule| {
            Label::new(
                policy.file,
                rule_span(policy, rule),
                format!("decided by this rule ({})", phase_name(outcome.phase)),
            )
        })
        .into_iter()
        .collect();
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
    let report = Report {
        level: Level::Error,
        message: format!("test {:?} failed", test.name),
        primary: Label::new(policy.file, failure.step.span, step_message),
        secondary,
        notes,
    };
    render::human_report(files, &report, color)
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
