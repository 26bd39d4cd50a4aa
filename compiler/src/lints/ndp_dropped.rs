//! P0106 ndp-dropped: `options { ndp = drop }` in a policy that passes
//! IPv6 (`default = allow`, or an allow that can match IPv6).
//!
//! IPv6 cannot work without neighbor discovery: peers resolve the host's
//! link-layer address with neighbor solicitations and advertisements
//! (ICMPv6 135/136). Drop them and the IPv6 traffic the policy allows never
//! arrives. NDP is decided before any rule, so no allow can let it through.
//! IPv6 that the denies drop entirely does not count as passed.

use patronus_grammar::ast::{self, Verdict};

use super::LintContext;
use super::analysis::Analysis;
use super::cover::{PacketBox, Space};
use crate::codes::Code;
use crate::diag::{Diagnostic, Label};
use crate::typed::{Family, Match};

pub fn check(ctx: &LintContext) -> Vec<Diagnostic> {
    let policy = ctx.policy;
    if policy.options.ndp_pass {
        return Vec::new();
    }
    let Some(ndp) = option_entry(ctx.ast, "ndp") else {
        return Vec::new();
    };
    let analysis = Analysis::of(policy);
    // IPv6 packets some allow (or the default) passes: the part of its
    // packets that are IPv6 and that the denies do not all drop.
    let passes_ipv6 = |boxes: &[PacketBox]| {
        let v6: Vec<PacketBox> = boxes
            .iter()
            .filter(|b| b.family == Family::Ipv6)
            .cloned()
            .collect();
        !v6.is_empty() && analysis.denied(&v6).is_none()
    };
    let passes = if policy.options.default == Verdict::Pass {
        let everything =
            Space::new(&policy.tables, !policy.options.fragments_drop).boxes(&Match::default());
        option_entry(ctx.ast, "default")
            .filter(|_| passes_ipv6(&everything))
            .map(|e| (e.span, "the default passes IPv6"))
    } else {
        policy
            .rules
            .iter()
            .enumerate()
            .find(|(i, r)| r.action == ast::Action::Allow && passes_ipv6(&analysis.boxes[*i]))
            .map(|(_, r)| (r.span, "this rule passes IPv6"))
    };
    let Some((span, text)) = passes else {
        return Vec::new();
    };
    vec![
        Diagnostic::new(
            Code::NdpDropped,
            "neighbor discovery is dropped, but the policy passes IPv6",
            Label::new(
                ctx.file,
                ndp.span,
                "drops ICMPv6 neighbor and router discovery",
            ),
        )
        .with_secondary(Label::new(ctx.file, span, text))
        .with_note("without neighbor discovery, IPv6 peers cannot reach this host")
        .with_help("remove `ndp = drop` (the default is `ndp = pass`)"),
    ]
}

/// The last `options` entry with this key (a repeat is an error anyway).
fn option_entry<'a>(policy: &'a ast::Policy, key: &str) -> Option<&'a ast::OptionEntry> {
    policy
        .items
        .iter()
        .filter_map(|item| match item {
            ast::Item::Options(o) => Some(o),
            _ => None,
        })
        .flat_map(|o| &o.entries)
        .rfind(|e| e.key.name == key && e.sub.is_none())
}
