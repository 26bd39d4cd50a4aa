//! P0103 shadowed-rule: an `allow` (with or without `rate`) or a `limit`
//! whose every packet a `deny` drops, so it never passes (or limits)
//! anything.
//!
//! Denies win over allows whatever the file order (LANGUAGE.md §3), so an
//! allow under a broader deny is dead code that looks alive: the author
//! believes the traffic is open. Coverage is computed on packet sets —
//! addresses with table contents and negation, ports, protocols, ICMP
//! types, flags, VLAN and family — and may take several denies together
//! (`deny from 10.0.0.0/9` and `deny from 10.128.0.0/9` shadow
//! `allow from 10.0.0.0/8`).

use patronus_grammar::ast::Action;

use super::LintContext;
use super::analysis::{Analysis, describe};
use crate::codes::Code;
use crate::diag::{Diagnostic, Label};

/// At most this many shadowing denies are pointed at.
const MAX_LABELS: usize = 4;

pub fn check(ctx: &LintContext) -> Vec<Diagnostic> {
    let policy = ctx.policy;
    Analysis::of(policy)
        .shadowed
        .iter()
        .map(|s| {
            let rule = &policy.rules[s.rule];
            let single = s.by.len() == 1;
            let who = if single {
                "a deny drops"
            } else {
                "denies drop"
            };
            let (message, label) = match rule.action {
                Action::Limit => (
                    format!("this limit never sees a packet: {who} everything it matches"),
                    "never reached",
                ),
                _ => (
                    format!(
                        "this `{}` rule never passes a packet: {who} everything it matches",
                        describe(rule)
                    ),
                    "never passes anything",
                ),
            };
            let mut d = Diagnostic::new(
                Code::ShadowedRule,
                message,
                Label::new(ctx.file, rule.span, label),
            );
            let text = if single {
                "this deny matches all of its packets"
            } else {
                "drops some of its packets"
            };
            for &deny in s.by.iter().take(MAX_LABELS) {
                d = d.with_secondary(Label::new(ctx.file, policy.rules[deny].span, text));
            }
            if !single {
                let shown = if s.by.len() > MAX_LABELS {
                    format!(" (the first {MAX_LABELS} are shown)")
                } else {
                    String::new()
                };
                d = d.with_note(format!(
                    "together, these {} denies match all of its packets{shown}",
                    s.by.len()
                ));
            }
            d.with_note("deny rules are checked first, whatever the order of the rules")
                .with_help(match rule.action {
                    Action::Limit => "remove the limit, or narrow the deny",
                    _ => "remove the rule, or narrow the deny if these packets should pass",
                })
        })
        .collect()
}
