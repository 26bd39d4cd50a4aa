//! The benchmark corpus (`patronus_compiler::corpus`) judged by the
//! reference interpreter under the benchmark's policy
//! (`benches/reference.pf`, its blocklist the corpus's 1,000-prefix one):
//! every frame must get the verdict the corpus expects. The kernel half of
//! the same check is `tests/tests/kernel_bench.rs`.
//!
//! Like the benchmark, each packet meets conntrack with the corpus's flows
//! already established: the host sends one ACK of each flow out of the
//! interface (`Interpreter::outbound`) first.

use std::fs;
use std::path::Path;

use patronus_compiler::corpus;
use patronus_compiler::diag::Files;
use patronus_compiler::interp::Interpreter;
use patronus_compiler::typed::Policy;
use patronus_compiler::{LoadedFile, TableLoader, check, render};

/// Serves the policy's one table, `blocklist-N.txt`, from the corpus.
struct CorpusTables;

impl TableLoader for CorpusTables {
    fn load(&self, _policy: &str, path: &str) -> Result<LoadedFile, String> {
        let n = path
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_prefix("blocklist-"))
            .and_then(|f| f.strip_suffix(".txt"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("not a corpus blocklist: {path}"))?;
        Ok(LoadedFile {
            name: path.to_owned(),
            text: corpus::blocklist_text(n),
        })
    }
}

fn reference_policy() -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/reference.pf");
    let text = fs::read_to_string(&path).expect("benches/reference.pf is readable");
    let mut files = Files::new();
    let file = files.add(path.display().to_string(), text);
    let checked = check(&mut files, file, &CorpusTables);
    match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => panic!(
            "benches/reference.pf does not check:\n{}",
            render::human(&files, &checked.diagnostics, false)
        ),
    }
}

fn with_flows(policy: &Policy) -> Interpreter<'_> {
    let mut interp = Interpreter::new(policy);
    for flow in corpus::flows() {
        interp.outbound(&flow.host_frame(), 0);
    }
    interp
}

#[test]
fn reference_policy_gives_every_expected_verdict() {
    let policy = reference_policy();
    let mut failures = Vec::new();
    for case in corpus::packets() {
        let mut interp = with_flows(&policy);
        let out = interp.inbound(&case.frame, 1_000);
        if out.verdict != case.first {
            failures.push(format!(
                "{} first: expected {:?}, got {out:?}",
                case.name, case.first
            ));
        }
        // Steady state: many repeats in quick succession (1 µs apart), as
        // `bpftool prog run ... repeat` does; the last verdict counts.
        let mut last = out;
        for i in 0..200u64 {
            last = interp.inbound(&case.frame, 2_000 + i * 1_000);
        }
        if last.verdict != case.steady {
            failures.push(format!(
                "{} steady: expected {:?}, got {last:?}",
                case.name, case.steady
            ));
        }
    }
    for case in corpus::edge_cases() {
        let out = with_flows(&policy).inbound(&case.frame, 1_000);
        if out.verdict != case.expect {
            failures.push(format!(
                "edge {} ({}): expected {:?}, got {out:?}",
                case.name, case.what, case.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The corpus is not trivially satisfied: without the flows, the two
/// established packets are dropped; without the blocklist entry, the
/// blocklisted packet passes. (So the test above can fail.)
#[test]
fn the_corpus_depends_on_the_flows_and_the_blocklist() {
    let policy = reference_policy();
    let verdict_without_flows = |name: &str| {
        let case = corpus::packets()
            .into_iter()
            .find(|c| c.name == name)
            .expect("corpus packet");
        Interpreter::new(&policy)
            .inbound(&case.frame, 1_000)
            .verdict
    };
    use patronus_grammar::ast::Verdict::Drop;
    assert_eq!(verdict_without_flows("tcp_est_reply"), Drop);
    assert!(corpus::blocklist_text(10).contains(corpus::BLOCKED_PREFIX));
}
