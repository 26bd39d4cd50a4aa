//! How reports name what the compiler decided: rules (`rule 3 "ssh"`),
//! phases, verdicts and counters, and the virtual clock of a packet
//! sequence. `test`, `explain`, `diff`, the LSP and the apply pipeline all
//! print these names; they are defined here once.

use patronus_compiler::semantics::{Counter, Phase};
use patronus_compiler::typed::{Policy, RuleId};
use patronus_grammar::ast::{Span, Verdict};

/// The virtual time between two packets of a test.
pub const PACKET_INTERVAL_NS: u64 = 1_000_000;

/// Where rule `rule` is written (an empty span for an id the policy lacks).
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
