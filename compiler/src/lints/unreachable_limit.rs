//! P0107 unreachable-limit: a `limit` rule (not `allow ... rate`) that no
//! allow rule shares a packet with, while `default = deny`.
//!
//! A limit drops the packets over its rate — but packets no allow matches
//! are dropped by the default anyway, and established ones are never
//! charged. Such a limit changes nothing; most often the author expected
//! the limit to also let the traffic through (write `allow ... rate`).
//! Limits a deny covers are left to shadowed-rule. A limit that shares
//! packets with a later limit is not reported either: when its bucket is
//! empty it stops the later one from being charged, which matters.

use std::collections::BTreeSet;

use patronus_grammar::ast::{Action, Verdict};

use super::LintContext;
use super::analysis::{self, Analysis};
use crate::codes::Code;
use crate::diag::{Diagnostic, Label};

pub fn check(ctx: &LintContext) -> Vec<Diagnostic> {
    let policy = ctx.policy;
    if policy.options.default != Verdict::Drop
        || !policy.rules.iter().any(|r| r.action == Action::Limit)
    {
        return Vec::new();
    }
    let analysis = Analysis::of(policy);
    let boxes = &analysis.boxes;
    let shadowed: BTreeSet<usize> = analysis.shadowed.iter().map(|s| s.rule).collect();
    let allows = analysis::index_of(policy, boxes, Action::Allow);
    let limits = analysis::index_of(policy, boxes, Action::Limit);
    // A limit whose bucket runs dry stops the charging of the rate rules
    // after it (LANGUAGE.md §3, file order), so one that shares packets
    // with a later limit can change that limit's verdicts: not reported.
    let feeds_later_limit = |i: usize| {
        boxes[i].iter().any(|b| {
            limits
                .intersecting(b)
                .into_iter()
                .any(|e| limits.entry(e).0 > i)
        })
    };
    policy
        .rules
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            r.action == Action::Limit && !shadowed.contains(i) && !boxes[*i].is_empty()
        })
        .filter(|(i, _)| boxes[*i].iter().all(|b| allows.intersecting(b).is_empty()))
        .filter(|(i, _)| !feeds_later_limit(*i))
        .map(|(_, r)| {
            Diagnostic::new(
                Code::UnreachableLimit,
                "this limit can never change a verdict: no allow rule matches its packets",
                Label::new(
                    ctx.file,
                    r.span,
                    "limits only packets the default drops anyway",
                ),
            )
            .with_note(
                "a limit only drops; packets no allow matches are dropped by `default = deny`",
            )
            .with_help("to let this traffic through at this rate, write `allow` instead of `limit`")
        })
        .collect()
}
