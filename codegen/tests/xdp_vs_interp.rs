//! Differential test: generated policies × generated frames (valid and
//! malformed) through the generated XDP program in the kernel
//! (`BPF_PROG_TEST_RUN`) and through the reference interpreter. Verdicts
//! and the counters each packet increments (deciding phase or invalid
//! class, rules) must be identical.
//!
//! Stateless policies (conntrack off, no rates): the kernel's clock cannot
//! follow the generators' virtual time, so state is compared by the state
//! generators' own kernel tests and by the repository policies' test
//! packets (`xdp_kernel.rs`).

mod xdp_common;

use patronus_compiler::interp::Interpreter;
use patronus_compiler::ir;
use patronus_compiler::typed::{Match, Options, Policy, Rate};
use patronus_grammar::ast::{Action, Verdict};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

use xdp_common::generate::{Step, apply, build_policy, options, rule, steps};

type RuleSpec = (Action, Match, Option<Rate>);

/// The stateless version of a generated policy.
fn stateless(mut options: Options, rules: Vec<RuleSpec>) -> (Options, Vec<RuleSpec>) {
    options.conntrack = false;
    let rules = rules
        .into_iter()
        .filter(|(action, _, _)| *action != Action::Limit)
        .map(|(action, matcher, _)| (action, matcher, None))
        .collect();
    (options, rules)
}

fn run(policy: &Policy, steps: &[Step]) -> Result<usize, TestCaseError> {
    let program = ir::lower(policy);
    let (_object, loaded) = xdp_common::compile_and_load(&program);
    let mut interp = Interpreter::new(policy);
    let mut compared = 0;
    for (i, step) in steps.iter().filter(|s| !s.outbound).enumerate() {
        let frame = apply(&step.packet, &step.mutation);
        if frame.len() < 14 {
            // BPF_PROG_TEST_RUN refuses frames without an Ethernet header
            // (a NIC never delivers one): nothing to compare.
            continue;
        }
        let want = interp.inbound(&frame, 0);
        let before = xdp_common::packet_counts(&loaded);
        let run = loaded
            .run_xdp(&frame)
            .map_err(|e| TestCaseError::fail(format!("test run: {e}")))?;
        let after = xdp_common::packet_counts(&loaded);
        let got = if run.retval == 2 {
            Verdict::Pass
        } else {
            Verdict::Drop
        };
        let mut want_counters = want.counters.clone();
        want_counters.sort();
        let got_counters = xdp_common::grown(&program, &before, &after);
        prop_assert_eq!(
            (got, &got_counters),
            (want.verdict, &want_counters),
            "step {} packet {:?} mutation {:?}\nframe {:02x?}\nIR:\n{}",
            i,
            step.packet,
            step.mutation,
            frame,
            ir::text::ir(&program)
        );
        compared += 1;
    }
    Ok(compared)
}

fn cases(test: &str, cases: u32, rules: std::ops::Range<usize>, tables: bool) {
    if !xdp_common::kernel(test) {
        return;
    }
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let table_sets = if tables { 0..3usize } else { 0..1 };
    let strategy = (options(), table_sets)
        .prop_flat_map(move |(options, n)| {
            let sets = prop::collection::vec(
                prop::collection::btree_set(0..xdp_common::generate::PREFIXES.len(), 1..5),
                n..=n,
            );
            (
                Just(options),
                sets,
                prop::collection::vec(rule(n), rules.clone()),
            )
        })
        .prop_flat_map(|(options, sets, rules)| (Just((options, sets, rules)), steps()));
    let total = std::cell::Cell::new(0usize);
    runner
        .run(&strategy, |((options, sets, rules), steps)| {
            let (options, rules) = stateless(options, rules);
            let policy = build_policy(options, sets, rules);
            total.set(total.get() + run(&policy, &steps)?);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("kernel and interpreter disagree: {e}"));
    assert!(total.get() > 0, "no packet compared");
    eprintln!("{test}: {} packets compared", total.get());
}

#[test]
fn generated_policies_agree_with_the_interpreter() {
    cases(
        "generated_policies_agree_with_the_interpreter",
        96,
        0..10,
        true,
    );
}

/// More than 64 rules in a phase: multi-word bitmaps and the consts maps.
#[test]
fn multi_word_policies_agree_with_the_interpreter() {
    cases(
        "multi_word_policies_agree_with_the_interpreter",
        16,
        65..150,
        false,
    );
}
