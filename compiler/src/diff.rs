//! The semantic difference of two policies, as data: the regions of the
//! packet space whose verdict (or, asked for, deciding phase or rule)
//! changes, from [`crate::regions`]; the changes no region shows (options,
//! conntrack, timeouts, rates, logging, rules added or removed); and the
//! description of a region in policy terms (`ip4 tcp from 10.0.0.0/8 to
//! port 22`), shared with snapshots. Rendering is the CLI's business.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use patronus_grammar::ast::{Action, Span, Verdict};

use crate::codes::Code;
use crate::diag::{Diagnostic, Label};

use crate::frame::tcp_flags_invalid;
use crate::regions::{self, Decision, Dim, FieldSet, Mode, Ranges, Region, Side, VLAN_UNTAGGED};
use crate::semantics::Phase;
use crate::typed::{Family, Options, PROTO_TCP, PROTO_UDP, Policy, Rate, RateKey, Rule, RuleId};

/// What changed between two policies.
#[derive(Clone, Debug)]
pub struct PolicyDiff {
    /// Regions whose verdict changes (with `all`, also those whose deciding
    /// phase or rule changes), in a deterministic order.
    pub regions: Vec<Region>,
    /// Changes the packet regions cannot show: options, conntrack,
    /// timeouts, rates, logging, the interface.
    pub options: Vec<OptionChange>,
    /// Rules only in the old or only in the new policy (by identity: the
    /// label, else the normalised text), and rules that moved phase.
    pub rules: Vec<RuleChange>,
}

impl PolicyDiff {
    /// How many regions change verdict.
    pub fn verdict_changes(&self) -> usize {
        self.regions
            .iter()
            .filter(|r| r.decisions[0].verdict() != r.decisions[1].verdict())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty() && self.options.is_empty() && self.rules.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionChange {
    /// `conntrack`, `timeout udp`, `rate of "ssh"`, ...
    pub name: String,
    pub old: String,
    pub new: String,
    /// The rule (old side, new side) the change is about, if any.
    pub rule: (Option<RuleId>, Option<RuleId>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleChange {
    Removed(RuleId),
    Added(RuleId),
}

/// Diffs two checked and lowered policies. `all` reports deciding phase or
/// rule changes too, not only verdict changes.
pub fn diff(old: Side, new: Side, all: bool) -> PolicyDiff {
    let mode = if all { Mode::Decisions } else { Mode::Verdicts };
    let regions = regions::regions(&[old, new], mode);
    let mut options = option_changes(&old.policy.options, &new.policy.options);
    if old.policy.interface.as_ref().map(|i| &i.0) != new.policy.interface.as_ref().map(|i| &i.0) {
        options.insert(
            0,
            OptionChange {
                name: "interface".into(),
                old: interface_text(old.policy),
                new: interface_text(new.policy),
                rule: (None, None),
            },
        );
    }
    let by_identity = |p: &Policy| -> BTreeMap<String, RuleId> {
        let mut m = BTreeMap::new();
        for r in &p.rules {
            m.entry(r.identity.clone()).or_insert(r.id);
        }
        m
    };
    let (old_ids, new_ids) = (by_identity(old.policy), by_identity(new.policy));
    let mut rules = Vec::new();
    for (identity, &id) in &old_ids {
        let Some(&nid) = new_ids.get(identity) else {
            rules.push(RuleChange::Removed(id));
            continue;
        };
        let (o, n) = (
            &old.policy.rules[id.0 as usize],
            &new.policy.rules[nid.0 as usize],
        );
        let rule = (Some(id), Some(nid));
        let name = rule_title(o);
        if o.action != n.action {
            options.push(OptionChange {
                name: format!("action of {name}"),
                old: action_name(o.action).into(),
                new: action_name(n.action).into(),
                rule,
            });
        }
        if o.rate != n.rate {
            options.push(OptionChange {
                name: format!("rate of {name}"),
                old: o.rate.map_or("none".into(), |r| rate_text(&r)),
                new: n.rate.map_or("none".into(), |r| rate_text(&r)),
                rule,
            });
        }
        if o.log != n.log {
            options.push(OptionChange {
                name: format!("log of {name}"),
                old: on_off(o.log).into(),
                new: on_off(n.log).into(),
                rule,
            });
        }
    }
    for (identity, &id) in &new_ids {
        if !old_ids.contains_key(identity) {
            rules.push(RuleChange::Added(id));
        }
    }
    // Rate-limited rules added or removed change behaviour no region shows
    // (the first packet of a bucket always gets a token): always listed.
    // Other rules only with `all`; their effect is in the regions.
    rules.retain(|c| {
        all || match c {
            RuleChange::Removed(id) => old.policy.rules[id.0 as usize].rate.is_some(),
            RuleChange::Added(id) => new.policy.rules[id.0 as usize].rate.is_some(),
        }
    });
    PolicyDiff {
        regions,
        options,
        rules,
    }
}

fn interface_text(p: &Policy) -> String {
    p.interface
        .as_ref()
        .map_or("none".to_string(), |i| i.0.clone())
}

/// `"ssh"` for a labelled rule, else its text in backquotes.
pub fn rule_title(r: &Rule) -> String {
    match &r.label {
        Some(l) => format!("{l:?}"),
        None => format!("`{}`", r.identity),
    }
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Limit => "limit",
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "allow",
        Verdict::Drop => "deny",
    }
}

/// `10/s burst 10 per src`.
pub fn rate_text(r: &Rate) -> String {
    let unit = match r.unit_ns {
        1_000_000_000 => "s".to_string(),
        60_000_000_000 => "m".to_string(),
        3_600_000_000_000 => "h".to_string(),
        ns => format!("{ns}ns"),
    };
    let key = match r.key {
        RateKey::Src => "src",
        RateKey::Dst => "dst",
        RateKey::Flow => "flow",
        RateKey::Global => "global",
    };
    format!("{}/{unit} burst {} per {key}", r.count, r.burst)
}

fn duration_text(ns: u64) -> String {
    const S: u64 = 1_000_000_000;
    for (unit, size) in [("d", 86_400 * S), ("h", 3600 * S), ("m", 60 * S), ("s", S)] {
        if ns >= size && ns.is_multiple_of(size) {
            return format!("{}{unit}", ns / size);
        }
    }
    format!("{}ms", ns / 1_000_000)
}

fn option_changes(a: &Options, b: &Options) -> Vec<OptionChange> {
    let mut out = Vec::new();
    let mut push = |name: &str, old: String, new: String| {
        if old != new {
            out.push(OptionChange {
                name: name.to_string(),
                old,
                new,
                rule: (None, None),
            });
        }
    };
    push(
        "default",
        verdict_word(a.default).into(),
        verdict_word(b.default).into(),
    );
    push(
        "conntrack",
        on_off(a.conntrack).into(),
        on_off(b.conntrack).into(),
    );
    push(
        "conntrack-size",
        a.conntrack_size.to_string(),
        b.conntrack_size.to_string(),
    );
    push(
        "ratelimit-size",
        a.ratelimit_size.to_string(),
        b.ratelimit_size.to_string(),
    );
    let frag = |d: bool| if d { "drop" } else { "pass" };
    push(
        "fragments",
        frag(a.fragments_drop).into(),
        frag(b.fragments_drop).into(),
    );
    let pass = |p: bool| if p { "pass" } else { "drop" };
    push("arp", pass(a.arp_pass).into(), pass(b.arp_pass).into());
    push("ndp", pass(a.ndp_pass).into(), pass(b.ndp_pass).into());
    push("log-rate", a.log_rate.to_string(), b.log_rate.to_string());
    let (ta, tb) = (a.timeouts, b.timeouts);
    for (name, x, y) in [
        ("timeout tcp-syn", ta.tcp_syn, tb.tcp_syn),
        (
            "timeout tcp-established",
            ta.tcp_established,
            tb.tcp_established,
        ),
        ("timeout tcp-closing", ta.tcp_closing, tb.tcp_closing),
        ("timeout tcp-rst", ta.tcp_rst, tb.tcp_rst),
        ("timeout udp", ta.udp, tb.udp),
        ("timeout udp-stream", ta.udp_stream, tb.udp_stream),
        ("timeout icmp", ta.icmp, tb.icmp),
    ] {
        push(name, duration_text(x), duration_text(y));
    }
    out
}

// ---- diagnostics ----

/// One diagnostic per region: P0201 when the verdict changes, P0202 when
/// only the deciding phase or rule does; the primary label on the new
/// side's deciding rule (else the old side's), the other side's rule as a
/// secondary label, then an example packet and both decisions as notes.
/// Lists in the message are cut after `max_items` items (0: never).
pub fn diagnostics(
    d: &PolicyDiff,
    old: &Policy,
    new: &Policy,
    max_items: usize,
) -> Vec<Diagnostic> {
    let mut describer = Describer::new(max_items);
    let rule_label = |p: &Policy, dec: Decision, message: String| -> Option<Label> {
        let rule = p.rules.get(dec.rule()?.0 as usize)?;
        Some(Label::new(p.file, rule.span, message))
    };
    let mut out = Vec::new();
    for r in &d.regions {
        let (od, nd) = (r.decisions[0], r.decisions[1]);
        let matcher = describer.matcher(r);
        let (code, message) = if od.verdict() != nd.verdict() {
            (
                Code::VerdictChanged,
                format!(
                    "{} → {}: {matcher}",
                    verdict_name(od.verdict()),
                    verdict_name(nd.verdict())
                ),
            )
        } else {
            (
                Code::DecisionChanged,
                format!(
                    "{} (decided differently): {matcher}",
                    verdict_name(nd.verdict())
                ),
            )
        };
        let new_label = rule_label(
            new,
            nd,
            format!("new: {} by this rule", verdict_name(nd.verdict())),
        );
        let old_label = rule_label(
            old,
            od,
            format!("old: {} by this rule", verdict_name(od.verdict())),
        );
        let (primary, secondary) = match (new_label, old_label) {
            (Some(n), o) => (n, o),
            (None, Some(o)) => (o, None),
            (None, None) => (
                Label::new(
                    new.file,
                    Span::new(0, 0),
                    "decided without a rule on both sides",
                ),
                None,
            ),
        };
        let example = regions::example(r).map_or_else(
            || "none (only land packets)".to_string(),
            |p| regions::packet_text(&p),
        );
        let mut diag = Diagnostic::new(code, message, primary)
            .with_note(format!("example: {example}"))
            .with_note(format!("old: {}", decision_text(old, od)))
            .with_note(format!("new: {}", decision_text(new, nd)));
        if let Some(s) = secondary {
            diag = diag.with_secondary(s);
        }
        out.push(diag);
    }
    out
}

// ---- describing regions ----

/// How one side decides, in words: `deny "scanners"`, `allow
/// \`tcp to port 22\``, `default (drop)`, `ndp option (pass)`.
pub fn decision_text(policy: &Policy, d: Decision) -> String {
    match d {
        Decision::Rule { phase, rule } => {
            let what = if phase == Phase::Deny {
                "deny"
            } else {
                "allow"
            };
            match policy.rules.get(rule.0 as usize) {
                Some(r) => format!("{what} rule {}", rule_title(r)),
                None => format!("{what} rule {}", rule.0 + 1),
            }
        }
        Decision::Default(v) => format!("default ({})", verdict_name(v)),
        Decision::Ndp(v) => format!("ndp option ({})", verdict_name(v)),
    }
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
    }
}

/// Describes regions in policy terms; caches the TCP-flags search.
#[derive(Default)]
pub struct Describer {
    flags: HashMap<Ranges, String>,
    /// Long lists are cut to this many items (0: never).
    pub max_items: usize,
}

impl Describer {
    /// Lists cut after `max_items` items (`… and N more`); 0 keeps all.
    pub fn new(max_items: usize) -> Self {
        Describer {
            flags: HashMap::new(),
            max_items,
        }
    }

    /// The region as a match in policy syntax, family first:
    /// `ip4 tcp from !{ 10.0.0.0/8 } to port { 80, 443 } flags S/SA`.
    pub fn matcher(&mut self, region: &Region) -> String {
        let family = region.family;
        let mut s = String::from(match family {
            Family::Ipv4 => "ip4",
            Family::Ipv6 => "ip6",
        });
        if let FieldSet::Set(r) = region.field(Dim::Proto) {
            let _ = write!(s, " {}", self.protos(family, r));
        }
        for (dim, pdim, word) in [
            (Dim::Src, Dim::SrcPort, "from"),
            (Dim::Dst, Dim::DstPort, "to"),
        ] {
            let addr = match region.field(dim) {
                FieldSet::Set(r) if *r != dim_domain(dim, family) => Some(self.addrs(family, r)),
                _ => None,
            };
            let port = match region.field(pdim) {
                FieldSet::Set(r) if *r != dim_domain(pdim, family) => Some(self.ports(r)),
                _ => None,
            };
            match (addr, port) {
                (Some(a), Some(p)) => {
                    let _ = write!(s, " {word} {a} port {p}");
                }
                (Some(a), None) => {
                    let _ = write!(s, " {word} {a}");
                }
                (None, Some(p)) => {
                    let _ = write!(s, " {word} port {p}");
                }
                (None, None) => {}
            }
        }
        if let FieldSet::Set(r) = region.field(Dim::Icmp)
            && *r != dim_domain(Dim::Icmp, family)
        {
            let _ = write!(s, " type {}", self.icmp(family, r));
        }
        if let FieldSet::Set(r) = region.field(Dim::Flags)
            && *r != dim_domain(Dim::Flags, family)
        {
            let _ = write!(s, " flags {}", self.flags(r));
        }
        if let FieldSet::Set(r) = region.field(Dim::Vlan)
            && *r != dim_domain(Dim::Vlan, family)
        {
            let _ = write!(s, " {}", self.vlan(r));
        }
        s
    }

    fn list(&self, items: Vec<String>, negated: bool) -> String {
        let bang = if negated { "!" } else { "" };
        if items.len() == 1 {
            return format!("{bang}{}", items[0]);
        }
        let n = items.len();
        let shown: Vec<String> = if self.max_items > 0 && n > self.max_items {
            let mut v: Vec<String> = items.into_iter().take(self.max_items).collect();
            v.push(format!("… {} more", n - self.max_items));
            v
        } else {
            items
        };
        format!("{bang}{{ {} }}", shown.join(", "))
    }

    /// A set, or its complement in the domain when that is shorter.
    fn set_or_complement(
        &self,
        r: &Ranges,
        domain: &Ranges,
        items: impl Fn(&Ranges) -> Vec<String>,
    ) -> String {
        let direct = items(r);
        let rest = domain.subtract(r);
        let complement = items(&rest);
        if !complement.is_empty() && complement.len() < direct.len() {
            self.list(complement, true)
        } else {
            self.list(direct, false)
        }
    }

    pub fn addrs(&self, family: Family, r: &Ranges) -> String {
        let width = match family {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        };
        self.set_or_complement(r, &dim_domain(Dim::Src, family), |r| {
            r.0.iter()
                .flat_map(|&(lo, hi)| range_cidrs(lo, hi, width))
                .map(|(addr, len)| {
                    let a = regions::key_addr(family, addr);
                    if u32::from(len) == width {
                        a.to_string()
                    } else {
                        format!("{a}/{len}")
                    }
                })
                .collect()
        })
    }

    pub fn ports(&self, r: &Ranges) -> String {
        self.set_or_complement(r, &dim_domain(Dim::DstPort, Family::Ipv4), |r| {
            r.0.iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect()
        })
    }

    fn protos(&self, family: Family, r: &Ranges) -> String {
        let name = |p: u128| match p as u8 {
            PROTO_TCP => "tcp".to_string(),
            PROTO_UDP => "udp".to_string(),
            1 if family == Family::Ipv4 => "icmp".to_string(),
            58 if family == Family::Ipv6 => "icmpv6".to_string(),
            n => n.to_string(),
        };
        if r.0.len() == 1 && r.0[0].0 == r.0[0].1 {
            let n = name(r.0[0].0);
            return if n.parse::<u8>().is_ok() {
                format!("proto {n}")
            } else {
                n
            };
        }
        let text = self.set_or_complement(r, &dim_domain(Dim::Proto, family), |r| {
            r.0.iter()
                .flat_map(|&(lo, hi)| {
                    if hi - lo < 4 {
                        (lo..=hi).map(name).collect::<Vec<_>>()
                    } else {
                        vec![format!("{lo}-{hi}")]
                    }
                })
                .collect()
        });
        format!("proto {text}")
    }

    fn icmp(&self, family: Family, r: &Ranges) -> String {
        self.set_or_complement(r, &dim_domain(Dim::Icmp, family), |r| {
            // Per type: whole types by name, else `T code A-B`.
            let mut items = Vec::new();
            for &(lo, hi) in &r.0 {
                let mut k = lo;
                loop {
                    let ty = (k >> 8) as u8;
                    let type_end = k | 255;
                    let end = type_end.min(hi);
                    let (clo, chi) = ((k & 255) as u8, (end & 255) as u8);
                    let tname = icmp_type_name(family, ty);
                    if clo == 0 && chi == 255 {
                        items.push(tname);
                    } else if clo == chi {
                        items.push(format!("{tname} code {clo}"));
                    } else {
                        items.push(format!("{tname} code {clo}-{chi}"));
                    }
                    if end >= hi {
                        break;
                    }
                    k = end + 1;
                }
            }
            items
        })
    }

    fn flags(&mut self, r: &Ranges) -> String {
        if let Some(s) = self.flags.get(r) {
            return s.clone();
        }
        let valid: Vec<u8> = (0..=255u8).filter(|f| !tcp_flags_invalid(*f)).collect();
        let wanted: Vec<bool> = valid.iter().map(|f| r.contains(u128::from(*f))).collect();
        let mut best: Option<(u32, u8, u8)> = None;
        for mask in 0..=255u8 {
            // Every subset of the mask as the wanted value.
            let mut set = mask;
            loop {
                let fits = valid
                    .iter()
                    .zip(&wanted)
                    .all(|(f, w)| (f & mask == set) == *w);
                if fits && best.is_none_or(|b| mask.count_ones() < b.0) {
                    best = Some((mask.count_ones(), set, mask));
                }
                if set == 0 {
                    break;
                }
                set = (set - 1) & mask;
            }
        }
        let text = match best {
            Some((_, set, mask)) if set == mask => regions::flag_letters(set),
            Some((_, set, mask)) => {
                format!(
                    "{}/{}",
                    regions::flag_letters(set),
                    regions::flag_letters(mask)
                )
            }
            None => self.list(
                r.0.iter()
                    .flat_map(|&(lo, hi)| (lo..=hi).map(|f| regions::flag_letters(f as u8)))
                    .collect(),
                false,
            ),
        };
        self.flags.insert(r.clone(), text.clone());
        text
    }

    fn vlan(&self, r: &Ranges) -> String {
        let untagged = r.contains(VLAN_UNTAGGED);
        let tagged = r.subtract(&Ranges::single(VLAN_UNTAGGED, VLAN_UNTAGGED));
        let ids = || {
            self.set_or_complement(&tagged, &Ranges::single(0, 4095), |r| {
                r.0.iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}-{hi}")
                        }
                    })
                    .collect()
            })
        };
        match (untagged, tagged.is_empty()) {
            (true, true) => "untagged".into(),
            (false, _) => format!("vlan {}", ids()),
            (true, false) => format!("untagged or vlan {}", ids()),
        }
    }
}

fn dim_domain(dim: Dim, family: Family) -> Ranges {
    dim.domain(family)
}

/// ICMP type names of LANGUAGE.md §4 (the first name of each), else the number.
pub fn icmp_type_name(family: Family, ty: u8) -> String {
    let name = match (family, ty) {
        (Family::Ipv4, 0) => "echo-reply",
        (Family::Ipv4, 3) => "destination-unreachable",
        (Family::Ipv4, 4) => "source-quench",
        (Family::Ipv4, 5) => "redirect",
        (Family::Ipv4, 8) => "echo-request",
        (Family::Ipv4, 9) => "router-advertisement",
        (Family::Ipv4, 10) => "router-solicitation",
        (Family::Ipv4, 11) => "time-exceeded",
        (Family::Ipv4, 12) => "parameter-problem",
        (Family::Ipv4, 13) => "timestamp",
        (Family::Ipv4, 14) => "timestamp-reply",
        (Family::Ipv6, 1) => "destination-unreachable",
        (Family::Ipv6, 2) => "packet-too-big",
        (Family::Ipv6, 3) => "time-exceeded",
        (Family::Ipv6, 4) => "parameter-problem",
        (Family::Ipv6, 128) => "echo-request",
        (Family::Ipv6, 129) => "echo-reply",
        (Family::Ipv6, 133) => "router-solicitation",
        (Family::Ipv6, 134) => "router-advertisement",
        (Family::Ipv6, 135) => "neighbor-solicitation",
        (Family::Ipv6, 136) => "neighbor-advertisement",
        (Family::Ipv6, 137) => "redirect",
        _ => return ty.to_string(),
    };
    name.to_string()
}

/// The fewest CIDR blocks covering `lo..=hi` exactly, in a `width`-bit space.
pub fn range_cidrs(lo: u128, hi: u128, width: u32) -> Vec<(u128, u8)> {
    let mask = |bits: u32| -> u128 {
        if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        }
    };
    let mut out = Vec::new();
    let mut cur = lo;
    loop {
        let mut bits = if cur == 0 {
            width
        } else {
            cur.trailing_zeros().min(width)
        };
        while bits > 0 && (cur | mask(bits)) > hi {
            bits -= 1;
        }
        let last = cur | mask(bits);
        out.push((cur, (width - bits) as u8));
        if last >= hi {
            break;
        }
        cur = last + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_cover_ranges_exactly() {
        assert_eq!(range_cidrs(0, u128::from(u32::MAX), 32), vec![(0, 0)]);
        assert_eq!(range_cidrs(0, u128::MAX, 128), vec![(0, 0)]);
        // 10.0.0.0-10.0.0.2: a /31 and a /32.
        let base = 10u128 << 24;
        assert_eq!(
            range_cidrs(base, base + 2, 32),
            vec![(base, 31), (base + 2, 32)]
        );
    }
}
