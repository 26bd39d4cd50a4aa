//! Property tests of the region engine (`regions`, behind `patronusc diff`
//! and `snapshot`) against the reference interpreter, on generated policy
//! pairs: the second policy of a pair is the first with rules removed,
//! rules added and possibly other options, so pairs share most rules.
//!
//! - every reported region's example packet has, in the interpreter on a
//!   fresh state, the stated verdict, phase and deciding rule on both sides;
//! - sampled packets inside a reported region have the stated verdicts;
//!   sampled packets outside every reported region have equal verdicts;
//! - one policy's regions (snapshot mode) cover every sampled packet
//!   exactly once, with the interpreter's phase and rule; every region's
//!   example, printed in test syntax, types back to the same packet;
//! - a policy diffed with itself reports no decision change; with its rules
//!   reordered, no verdict change.

use std::collections::BTreeSet;

use patronus_compiler::interp::Interpreter;
use patronus_compiler::ir;
use patronus_compiler::packet;
use patronus_compiler::regions::{self, Decision, Mode, Region, Side};
use patronus_compiler::semantics::{Outcome, Phase};
use patronus_compiler::testgen::{PREFIXES, RuleSpec, base_packet, build_policy, options, rule};
use patronus_compiler::typed::{Packet, Policy, RuleId};
use proptest::prelude::*;

/// The outcome of one packet on a fresh interpreter (what a region states).
fn fresh(policy: &Policy, p: &Packet) -> Outcome {
    Interpreter::new(policy).inbound(&packet::build(p), 1_000_000)
}

fn valid(o: &Outcome) -> bool {
    !matches!(o.phase, Phase::Invalid(_))
}

fn check_decision(policy: &Policy, d: Decision, o: &Outcome) -> Result<(), TestCaseError> {
    prop_assert_eq!(o.verdict, d.verdict());
    prop_assert_eq!(o.phase, d.phase());
    prop_assert_eq!(o.rule, d.rule(), "{:?}", policy.rules.len());
    Ok(())
}

/// A pair of policies sharing tables and most rules.
fn pair() -> impl Strategy<Value = (Policy, Policy)> {
    let tables = prop::collection::vec(prop::collection::btree_set(0..PREFIXES.len(), 1..5), 0..3);
    (options(), options(), any::<bool>(), tables).prop_flat_map(|(o1, o2, same_opts, tables)| {
        let n = tables.len();
        (
            Just((o1, o2, same_opts, tables)),
            prop::collection::vec(rule(n), 0..10),
            prop::collection::vec(any::<bool>(), 10),
            prop::collection::vec(rule(n), 0..4),
        )
            .prop_map(|((o1, o2, same_opts, tables), rules, keep, extra)| {
                let kept: Vec<RuleSpec> = rules
                    .iter()
                    .zip(keep.iter().cycle())
                    .filter(|(_, k)| **k || rules.len() < 2)
                    .map(|(r, _)| r.clone())
                    .chain(extra)
                    .collect();
                let o2 = if same_opts { o1.clone() } else { o2 };
                (
                    build_policy(o1, tables.clone(), rules),
                    build_policy(o2, tables, kept),
                )
            })
    })
}

fn reordered(policy: &Policy, seed: usize) -> Policy {
    let mut p = policy.clone();
    let n = p.rules.len();
    if n > 1 {
        p.rules.rotate_left(seed % n);
        p.rules.swap(0, n - 1);
    }
    for (i, r) in p.rules.iter_mut().enumerate() {
        r.id = RuleId(i as u32);
    }
    p
}

fn find<'r>(regions: &'r [Region], p: &Packet) -> Vec<&'r Region> {
    regions.iter().filter(|r| r.contains(p)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn diff_regions_are_exact(
        (a, b) in pair(),
        packets in prop::collection::vec(base_packet(), 24),
    ) {
        let (pa, pb) = (ir::lower(&a), ir::lower(&b));
        let sides = [Side { policy: &a, program: &pa }, Side { policy: &b, program: &pb }];
        for mode in [Mode::Verdicts, Mode::Decisions] {
            let changed = regions::regions(&sides, mode);
            for region in &changed {
                prop_assert_eq!(region.decisions.len(), 2);
                if mode == Mode::Verdicts {
                    prop_assert_ne!(region.decisions[0].verdict(), region.decisions[1].verdict());
                }
                let Some(example) = regions::example(region) else { continue };
                prop_assert!(region.contains(&example), "example {:?} not in {:?}", example, region);
                let (oa, ob) = (fresh(&a, &example), fresh(&b, &example));
                check_decision(&a, region.decisions[0], &oa)?;
                check_decision(&b, region.decisions[1], &ob)?;
            }
            for p in &packets {
                let (oa, ob) = (fresh(&a, p), fresh(&b, p));
                if !valid(&oa) || !valid(&ob) {
                    continue;
                }
                let inside = find(&changed, p);
                prop_assert!(inside.len() <= 1, "{:?} in {} regions", p, inside.len());
                match inside.first() {
                    Some(region) => {
                        check_decision(&a, region.decisions[0], &oa)?;
                        check_decision(&b, region.decisions[1], &ob)?;
                    }
                    None if mode == Mode::Verdicts => prop_assert_eq!(oa.verdict, ob.verdict, "{:?}", p),
                    None => {
                        let name = |pol: &Policy, r: Option<RuleId>| {
                            r.map(|r| pol.rules[r.0 as usize].identity.clone())
                        };
                        prop_assert_eq!(oa.phase, ob.phase, "{:?}", p);
                        prop_assert_eq!(name(&a, oa.rule), name(&b, ob.rule), "{:?}", p);
                    }
                }
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 800, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_regions_partition_the_space(
        (a, _) in pair(),
        packets in prop::collection::vec(base_packet(), 24),
        seed in 0usize..10,
    ) {
        let pa = ir::lower(&a);
        let all = regions::regions(&[Side { policy: &a, program: &pa }], Mode::All);
        for p in &packets {
            let o = fresh(&a, p);
            if !valid(&o) {
                continue;
            }
            let inside = find(&all, p);
            prop_assert_eq!(inside.len(), 1, "{:?}", p);
            check_decision(&a, inside[0].decisions[0], &o)?;
        }
        // Every region's example is decided as stated, and its test-syntax
        // text (what `--emit-tests` prints) types back to the same packet.
        for region in &all {
            if let Some(example) = regions::example(region) {
                check_decision(&a, region.decisions[0], &fresh(&a, &example))?;
                let text = regions::packet_text(&example);
                let spec = patronus_grammar::parse_packet(&text)
                    .map_err(|e| TestCaseError::fail(format!("{text}: {e:?}")))?;
                let typed = patronus_compiler::packet_from_spec(
                    patronus_compiler::diag::FileId(0),
                    &text,
                    &spec,
                )
                .map_err(|e| TestCaseError::fail(format!("{text}: {e:?}")))?;
                prop_assert_eq!(typed, example, "{}", text);
            }
        }
        // Against itself: nothing; reordered: no verdict changes.
        let sides = [Side { policy: &a, program: &pa }, Side { policy: &a, program: &pa }];
        prop_assert!(regions::regions(&sides, Mode::Decisions).is_empty());
        let r = reordered(&a, seed);
        let pr = ir::lower(&r);
        let sides = [Side { policy: &a, program: &pa }, Side { policy: &r, program: &pr }];
        prop_assert!(regions::regions(&sides, Mode::Verdicts).is_empty());
    }
}

#[test]
fn distinct_protocols_never_share_a_region() {
    // A policy whose only rule is on TCP: UDP and other protocols fall to
    // the default, TCP port 22 passes.
    let spec: RuleSpec = (
        patronus_grammar::ast::Action::Allow,
        patronus_compiler::typed::Match {
            protos: Some(BTreeSet::from([6u8])),
            dst_ports: Some(patronus_compiler::typed::PortMatch {
                negated: false,
                ranges: vec![patronus_compiler::net::PortRange { lo: 22, hi: 22 }],
            }),
            ..Default::default()
        },
        None,
    );
    let policy = build_policy(Default::default(), Vec::new(), vec![spec]);
    let program = ir::lower(&policy);
    let all = regions::regions(
        &[Side {
            policy: &policy,
            program: &program,
        }],
        Mode::All,
    );
    let passing: Vec<&Region> = all
        .iter()
        .filter(|r| r.decisions[0].verdict() == patronus_grammar::ast::Verdict::Pass)
        .collect();
    // TCP to 22 on each family, plus NDP on IPv6.
    assert_eq!(passing.len(), 3, "{all:#?}");
}
