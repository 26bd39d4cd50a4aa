//! P0106 ndp-dropped: `options { ndp = drop }` in a policy that passes
//! IPv6 (`default = allow`, or an allow that can match IPv6).
//!
//! IPv6 cannot work without neighbor discovery: peers resolve the host's
//! link-layer address with neighbor solicitations (ICMPv6 135/136). Drop
//! them and the IPv6 traffic the policy allows never arrives. Quiet when an
//! allow rule matches neighbor solicitations or advertisements itself: the
//! author handles them by hand.

use patronus_grammar::ast::{self, Verdict};

use super::LintContext;
use super::cover::{Group, ICMP, PacketBox, ValueSet, dim_max};
use crate::codes::Code;
use crate::diag::{Diagnostic, Label};
use crate::typed::Family;

const NEIGHBOR_SOLICITATION: u128 = 135;
const NEIGHBOR_ADVERTISEMENT: u128 = 136;

pub fn check(ctx: &LintContext) -> Vec<Diagnostic> {
    let policy = ctx.policy;
    if policy.options.ndp_pass {
        return Vec::new();
    }
    let Some(ndp) = option_entry(ctx.ast, "ndp") else {
        return Vec::new();
    };
    let analysis = super::analysis::Analysis::of(policy);
    let boxes = &analysis.boxes;
    let allows = || {
        policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.action == ast::Action::Allow)
    };
    let nd = neighbor_discovery();
    if allows().any(|(i, _)| boxes[i].iter().any(|b| b.intersects(&nd))) {
        return Vec::new();
    }
    let passes = if policy.options.default == Verdict::Pass {
        option_entry(ctx.ast, "default").map(|e| (e.span, "the default passes IPv6"))
    } else {
        allows()
            .find(|(i, _)| boxes[*i].iter().any(|b| b.family == Family::Ipv6))
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

/// Neighbor solicitations and advertisements, from anywhere to anywhere.
fn neighbor_discovery() -> PacketBox {
    let family = Family::Ipv6;
    let mut dims = std::array::from_fn(|dim| ValueSet::full(dim_max(family, dim)));
    dims[super::cover::PROTO] = ValueSet::single(crate::typed::PROTO_ICMPV6.into());
    dims[ICMP] = ValueSet::from_intervals(vec![(
        NEIGHBOR_SOLICITATION << 8,
        (NEIGHBOR_ADVERTISEMENT << 8) | 0xff,
    )]);
    PacketBox {
        family,
        group: Group::Icmp,
        dims,
    }
}
