//! Test coverage (`patronusc test --coverage`): which rules, deciding
//! phases and regions of the packet space (see [`crate::regions`]) a
//! policy's `test` blocks exercise.
//!
//! The tests run on the reference interpreter, each block on a fresh state
//! with the virtual clock of `patronusc test`. A rule is covered when a
//! test packet counted it (it decided the packet, or charged its rate);
//! a phase when it decided a test packet; a region when a test packet lies
//! in it and is decided as the region states (same phase and rule), so a
//! packet that passes as established does not cover the allow region it
//! lies in.

use std::collections::BTreeSet;

use crate::interp::Interpreter;
use crate::ir::Program;
use crate::packet;
use crate::regions::{self, Region, Side};
use crate::semantics::{Counter, Phase};
use crate::typed::{Policy, RuleId};

#[derive(Clone, Debug)]
pub struct Coverage {
    /// Every rule, covered or not, in file order.
    pub rules: Vec<(RuleId, bool)>,
    /// The phases that could decide a packet of this policy, with whether
    /// a test packet was decided there.
    pub phases: Vec<(Phase, bool)>,
    /// Every region (canonical order), with whether a test exercised it.
    pub regions: Vec<(Region, bool)>,
    /// How many inbound test packets ran.
    pub packets: usize,
}

impl Coverage {
    pub fn rules_covered(&self) -> usize {
        self.rules.iter().filter(|r| r.1).count()
    }

    pub fn regions_covered(&self) -> usize {
        self.regions.iter().filter(|r| r.1).count()
    }
}

/// Percent of `n` in `total` (100 for an empty total: nothing to miss).
pub fn percent(n: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        n as f64 * 100.0 / total as f64
    }
}

/// Runs every test block of `policy` on the interpreter (`interval_ns`
/// of virtual time before each packet) and measures what they exercise.
pub fn measure(policy: &Policy, program: &Program, interval_ns: u64) -> Coverage {
    let regions = regions::regions_canonical(Side { policy, program });
    let mut region_hit = vec![false; regions.len()];
    let mut rule_hit = vec![false; policy.rules.len()];
    let mut phase_hit: BTreeSet<Phase> = BTreeSet::new();
    let mut packets = 0;
    for test in &policy.tests {
        let mut interp = Interpreter::new(policy);
        let mut now = 0u64;
        for step in &test.steps {
            let frame = packet::build(&step.packet);
            for _ in 0..step.packet.repeat.max(1) {
                now += interval_ns;
                if step.expect.is_none() {
                    interp.outbound(&frame, now);
                    continue;
                }
                packets += 1;
                let outcome = interp.inbound(&frame, now);
                for c in &outcome.counters {
                    if let Counter::Rule(r) = c
                        && let Some(hit) = rule_hit.get_mut(r.0 as usize)
                    {
                        *hit = true;
                    }
                }
                phase_hit.insert(outcome.phase);
                for (i, region) in regions.iter().enumerate() {
                    let d = region.decisions[0];
                    if !region_hit[i]
                        && d.phase() == outcome.phase
                        && d.rule() == outcome.rule
                        && region.contains(&step.packet)
                    {
                        region_hit[i] = true;
                    }
                }
            }
        }
    }
    let has = |pred: &dyn Fn(&crate::typed::Rule) -> bool| policy.rules.iter().any(pred);
    let mut possible = Vec::new();
    if has(&|r| r.action == patronus_grammar::ast::Action::Deny) {
        possible.push(Phase::Deny);
    }
    if policy.options.conntrack {
        possible.push(Phase::Established);
    }
    if has(&|r| r.rate.is_some()) {
        possible.push(Phase::RateLimit);
    }
    if has(&|r| r.action == patronus_grammar::ast::Action::Allow) {
        possible.push(Phase::Allow);
    }
    possible.push(Phase::Default);
    Coverage {
        rules: policy
            .rules
            .iter()
            .map(|r| (r.id, rule_hit[r.id.0 as usize]))
            .collect(),
        phases: possible
            .into_iter()
            .map(|p| (p, phase_hit.contains(&p)))
            .collect(),
        regions: regions.into_iter().zip(region_hit).collect(),
        packets,
    }
}
