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
use patronus_compiler::testgen::{PolicyShape, Step, apply, policy_shaped, steps};
use patronus_compiler::typed::Policy;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

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
        let want = xdp_common::expected(&interp.inbound(&frame, 0));
        let got = xdp_common::run_and_count(&loaded, &program, &frame)
            .map_err(|e| TestCaseError::fail(format!("test run: {e}")))?;
        prop_assert_eq!(
            &got,
            &want,
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
    let shape = PolicyShape {
        tables: if tables { 0..3 } else { 0..1 },
        rules,
        stateful: false,
    };
    let strategy = (policy_shaped(shape), steps());
    let total = std::cell::Cell::new(0usize);
    runner
        .run(&strategy, |(policy, steps)| {
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
