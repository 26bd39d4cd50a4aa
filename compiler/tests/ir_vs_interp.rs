//! Differential property test: the IR evaluator (lowered classifiers and
//! bitmaps) against the reference interpreter (typed rules, one by one), on
//! generated policies and generated packet sequences with state carried
//! across packets (conntrack, token buckets, virtual time). Every inbound
//! outcome (verdict, phase, rule, counters) must be equal.
//!
//! Policies draw from small address and port universes so that overlaps,
//! nesting, negation and shadowing are the common case, not the exception.

use std::collections::BTreeSet;

use patronus_compiler::interp::Interpreter;
use patronus_compiler::ir::{self, IrEvaluator};
use patronus_compiler::semantics::Phase;
use patronus_compiler::testgen::{
    Step, apply, build_policy, options, policy, repository_policies, reversed, rule,
    sample_mutations, steps,
};
use patronus_compiler::typed::{Packet, Policy};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Runs the steps on both engines; returns the inbound outcomes' phases.
fn run(policy: &Policy, steps: &[Step]) -> Result<Vec<Phase>, TestCaseError> {
    let program = ir::lower(policy);
    let mut interp = Interpreter::new(policy);
    let mut eval = IrEvaluator::new(&program);
    let mut now = 0u64;
    let mut previous: Option<Packet> = None;
    let mut phases = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        now += step.advance_ns;
        let packet = match (&previous, step.reply) {
            (Some(prev), true) => reversed(prev),
            _ => step.packet.clone(),
        };
        let frame = apply(&packet, &step.mutation);
        if step.outbound {
            interp.outbound(&frame, now);
            eval.outbound(&frame, now);
        } else {
            let want = interp.inbound(&frame, now);
            let got = eval.inbound(&frame, now);
            prop_assert_eq!(
                &got,
                &want,
                "step {} packet {:?} mutation {:?}\nIR:\n{}",
                i,
                packet,
                step.mutation,
                ir::text::ir(&program)
            );
            phases.push(want.phase);
        }
        previous = Some(packet);
    }
    Ok(phases)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn ir_evaluator_agrees_with_interpreter(policy in policy(), steps in steps()) {
        run(&policy, &steps)?;
    }
}

/// The generators reach every phase, so agreement above is not agreement
/// on trivia (everything invalid, or everything default).
#[test]
fn generated_cases_cover_every_phase() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..300 {
        let policy = policy().new_tree(&mut runner).expect("policy").current();
        let steps = steps().new_tree(&mut runner).expect("steps").current();
        let phases = run(&policy, &steps).expect("engines agree");
        seen.extend(phases.into_iter().map(|p| match p {
            Phase::Invalid(_) => "invalid",
            Phase::Arp => "arp",
            Phase::Ndp => "ndp",
            Phase::Deny => "deny",
            Phase::Established => "established",
            Phase::RateLimit => "rate-limit",
            Phase::Allow => "allow",
            Phase::Default => "default",
        }));
    }
    let all = [
        "allow",
        "arp",
        "default",
        "deny",
        "established",
        "invalid",
        "ndp",
        "rate-limit",
    ];
    assert_eq!(seen, all.into_iter().collect::<BTreeSet<_>>());
}

/// More than 64 rules in a phase: bitmaps span several words.
#[test]
fn multi_word_bitmaps_agree() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    });
    let many = (options(), prop::collection::vec(rule(0), 65..150), steps());
    runner
        .run(&many, |(options, rules, steps)| {
            let policy = build_policy(options, Vec::new(), rules);
            run(&policy, &steps).map(drop)
        })
        .expect("IR evaluator and interpreter agree");
}

// ---- the repository's policies ----

/// The policies' own `test` blocks, each step as written and with every
/// mutation kind applied, through both engines.
#[test]
fn repository_policies_agree_on_their_test_packets() {
    let mutations = sample_mutations();
    let mut compared = 0;
    for (name, policy) in repository_policies() {
        for mutation in &mutations {
            for test in &policy.tests {
                let steps: Vec<Step> = test
                    .steps
                    .iter()
                    .flat_map(|s| {
                        let step = Step {
                            outbound: s.expect.is_none(),
                            reply: false,
                            packet: s.packet.clone(),
                            mutation: mutation.clone(),
                            advance_ns: 1_000_000,
                        };
                        std::iter::repeat_n(step, s.packet.repeat.clamp(1, 50) as usize)
                    })
                    .collect();
                let phases = run(&policy, &steps)
                    .unwrap_or_else(|e| panic!("{name}, test {:?}: {e}", test.name));
                compared += phases.len();
            }
        }
    }
    assert!(compared > 100, "only {compared} packets compared");
}
