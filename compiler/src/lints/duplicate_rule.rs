//! P0102 duplicate-rule: a rule another rule of the same action already
//! makes redundant: removing it changes no verdict, limit or log.
//!
//! - Same packets as another rule ("duplicate"), or a strict subset of
//!   them ("redundant"), compared as packet sets, not as text.
//! - A `deny` is redundant under a deny; a plain `allow` under any allow
//!   (one with `rate` too: the packets already pass that rule's limit in
//!   phase 4, and this rule lifts no limit).
//! - A rule with `rate` (allow ... rate, limit) has its own token bucket:
//!   only an identical rule (same packets, same rate, burst and key) makes
//!   it redundant. A smaller bucket fed by fewer packets can still drop.
//! - A rule with `log` emits events: only an identical rule that also logs
//!   makes it redundant.
//! - Of two rules that make each other redundant, the later is reported.
//!
//! Only single rules are compared (a union of rules could make each of
//! its members look redundant at once). Shadowed allows are left to
//! shadowed-rule.

use std::collections::BTreeSet;

use patronus_grammar::ast::Action;

use super::LintContext;
use super::analysis::{self, Analysis, describe};
use super::cover::{Index, PacketBox, boxes_covered};
use crate::codes::Code;
use crate::diag::{Diagnostic, Label};
use crate::typed;

pub fn check(ctx: &LintContext) -> Vec<Diagnostic> {
    let policy = ctx.policy;
    let analysis = Analysis::of(policy);
    let boxes = &analysis.boxes;
    let shadowed: BTreeSet<usize> = analysis.shadowed.iter().map(|s| s.rule).collect();
    // The analysis already indexes the denies.
    let allows = analysis::index_of(policy, boxes, Action::Allow);
    let limits = analysis::index_of(policy, boxes, Action::Limit);
    let mut out = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        if shadowed.contains(&i) || boxes[i].is_empty() {
            continue;
        }
        let index = match rule.action {
            Action::Allow => &allows,
            Action::Deny => &analysis.denies,
            Action::Limit => &limits,
        };
        if let Some(found) = redundant_under(policy, boxes, index, i) {
            out.push(diagnose(ctx, i, found));
        }
    }
    out
}

/// Another rule that makes rule `i` redundant, preferring an identical one.
struct Found {
    other: usize,
    identical: bool,
}

/// How many rules covering a rule's first box are compared with it: the
/// lint stays linear when thousands of rules cover each other.
const MAX_CANDIDATES: usize = 64;

fn redundant_under(
    policy: &typed::Policy,
    boxes: &[Vec<PacketBox>],
    index: &Index,
    i: usize,
) -> Option<Found> {
    let first = boxes[i].first()?;
    let mut others: Vec<usize> = index
        .covering_at_most(first, MAX_CANDIDATES)
        .into_iter()
        .map(|e| index.entry(e).0)
        .collect();
    others.dedup();
    let mut best: Option<Found> = None;
    for j in others {
        if j == i || !boxes_covered(&boxes[i], &boxes[j]) {
            continue;
        }
        let same_packets = boxes_covered(&boxes[j], &boxes[i]);
        let (x, y) = (&policy.rules[i], &policy.rules[j]);
        if !makes_redundant(x, y, same_packets) {
            continue;
        }
        // Mutual redundancy: keep the earlier rule, report the later.
        if same_packets && makes_redundant(y, x, true) && j > i {
            continue;
        }
        let identical = same_packets && x.rate == y.rate && x.log == y.log;
        if best.as_ref().is_none_or(|b| identical && !b.identical) {
            best = Some(Found {
                other: j,
                identical,
            });
        }
        if identical {
            // Nothing better to find.
            break;
        }
    }
    best
}

/// Whether `y` (which matches every packet `x` does; all of them and
/// nothing else when `same_packets`) makes `x` redundant.
fn makes_redundant(x: &typed::Rule, y: &typed::Rule, same_packets: bool) -> bool {
    if x.action != y.action {
        return false;
    }
    if x.log && !(y.log && same_packets) {
        return false;
    }
    match x.rate {
        None => true,
        Some(rate) => same_packets && y.rate == Some(rate),
    }
}

fn diagnose(ctx: &LintContext, i: usize, found: Found) -> Diagnostic {
    let rules = &ctx.policy.rules;
    let (rule, other) = (&rules[i], &rules[found.other]);
    let what = describe(rule);
    let (message, label, other_label) = if found.identical {
        (
            format!("this `{what}` rule duplicates another"),
            "duplicate",
            "the same rule",
        )
    } else {
        (
            format!(
                "this `{what}` rule is redundant: another rule already matches every packet it does"
            ),
            "redundant",
            "this rule matches all of its packets",
        )
    };
    let mut d = Diagnostic::new(
        Code::DuplicateRule,
        message,
        Label::new(ctx.file, rule.span, label),
    )
    .with_secondary(Label::new(ctx.file, other.span, other_label))
    .with_help("remove it");
    if rule.rate.is_none() && other.rate.is_some() {
        d = d.with_note(
            "the other rule rate-limits these packets first; this rule does not lift that limit",
        );
    }
    d
}
