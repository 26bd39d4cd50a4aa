//! Lowering: typed policy → [`Program`]. Phase ordering (deny, limit,
//! allow), then per phase and used field one classifier whose entries hold
//! precomputed rule bitmaps, then constant folding and map planning.
//!
//! Every builder here is near-linear in its input (sorting plus one sweep),
//! so a 10,000-rule policy or a million-entry table lowers in milliseconds.

use std::collections::BTreeSet;

use patronus_grammar::ast::Action;

use super::{
    Bits, Classifier, Field, Key, ParseStep, PhaseKind, PhasePlan, Program, RuleInfo, Storage,
    Usage, family_index, plan,
};
use crate::net::{PortRange, Prefix};
use crate::semantics::{Counter, InvalidClass, Phase};
use crate::typed::{
    self, AddrMatch, Family, IcmpMatch, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, PortMatch,
    TcpFlagsMatch,
};

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

/// Lowers a checked policy. Infallible: the checker has already rejected
/// everything that cannot be compiled.
pub fn lower(policy: &typed::Policy) -> Program {
    let rules: Vec<RuleInfo> = policy
        .rules
        .iter()
        .map(|r| RuleInfo {
            id: r.id,
            action: r.action,
            rate: r.rate,
            name: r.label.clone().unwrap_or_else(|| r.identity.clone()),
            log: r.log,
        })
        .collect();

    let mut phases = Vec::new();
    for kind in [PhaseKind::Deny, PhaseKind::Limit, PhaseKind::Allow] {
        let members: Vec<&typed::Rule> =
            policy.rules.iter().filter(|r| in_phase(kind, r)).collect();
        if !members.is_empty() {
            phases.push(lower_phase(kind, &members, policy));
        }
    }

    let usage = usage(policy, &phases);
    let parse = parse_step(&policy.options, &usage);
    let counters = counters(&policy.rules);
    let mut program = Program {
        options: policy.options.clone(),
        parse,
        usage,
        rules,
        phases,
        maps: Vec::new(),
        counters,
    };
    plan::plan_maps(&mut program);
    program
}

fn in_phase(kind: PhaseKind, rule: &typed::Rule) -> bool {
    match kind {
        PhaseKind::Deny => rule.action == Action::Deny,
        // `allow ... rate` is limit + allow (LANGUAGE.md §2).
        PhaseKind::Limit => rule.action == Action::Limit || rule.rate.is_some(),
        PhaseKind::Allow => rule.action == Action::Allow,
    }
}

fn lower_phase(kind: PhaseKind, members: &[&typed::Rule], policy: &typed::Policy) -> PhasePlan {
    let n = members.len();
    let words = n.div_ceil(64);
    let all = Bits::ones(words, n);
    let mut start = [Bits::zeros(words), Bits::zeros(words)];
    for (bit, rule) in members.iter().enumerate() {
        for family in FAMILIES {
            if rule.matcher.family.is_none_or(|f| f == family) {
                start[family_index(family)].set(bit);
            }
        }
    }

    let mut classifiers = Vec::new();
    let matchers: Vec<&typed::Match> = members.iter().map(|r| &r.matcher).collect();

    if matchers.iter().any(|m| m.protos.is_some()) {
        classifiers.push(proto_classifier(&matchers, words));
    }
    for family in FAMILIES {
        if matchers.iter().any(|m| m.src.is_some()) {
            let sets: Vec<Option<&AddrMatch>> = matchers.iter().map(|m| m.src.as_ref()).collect();
            classifiers.push(addr_classifier(
                Field::SrcAddr(family),
                family,
                &sets,
                policy,
                words,
            ));
        }
        if matchers.iter().any(|m| m.dst.is_some()) {
            let sets: Vec<Option<&AddrMatch>> = matchers.iter().map(|m| m.dst.as_ref()).collect();
            classifiers.push(addr_classifier(
                Field::DstAddr(family),
                family,
                &sets,
                policy,
                words,
            ));
        }
    }
    if matchers.iter().any(|m| m.src_ports.is_some()) {
        let ports: Vec<Option<&PortMatch>> =
            matchers.iter().map(|m| m.src_ports.as_ref()).collect();
        classifiers.push(port_classifier(Field::SrcPort, &ports, words));
    }
    if matchers.iter().any(|m| m.dst_ports.is_some()) {
        let ports: Vec<Option<&PortMatch>> =
            matchers.iter().map(|m| m.dst_ports.as_ref()).collect();
        classifiers.push(port_classifier(Field::DstPort, &ports, words));
    }
    if matchers.iter().any(|m| m.icmp.is_some()) {
        classifiers.push(icmp_classifier(&matchers, words));
    }
    if matchers.iter().any(|m| m.tcp_flags.is_some()) {
        classifiers.push(flags_classifier(&matchers, words));
    }
    if matchers.iter().any(|m| m.vlan.is_some()) {
        classifiers.push(vlan_classifier(&matchers, words));
    }

    for c in &mut classifiers {
        narrow_to_carriers(c, &matchers, words);
    }

    // Constant folding: a classifier without entries that gives the same
    // bitmap whether or not the field is present costs no lookup; an
    // address classifier without entries is constant for its family.
    let mut kept = Vec::new();
    for c in classifiers {
        if !c.keys.is_empty() {
            kept.push(c);
            continue;
        }
        match c.field {
            Field::SrcAddr(f) | Field::DstAddr(f) => {
                start[family_index(f)].and_with(&c.miss.0);
            }
            _ if c.miss == c.absent => {
                for s in &mut start {
                    s.and_with(&c.miss.0);
                }
            }
            _ => kept.push(c),
        }
    }
    kept.retain(|c| !(c.keys.is_empty() && c.miss == all && c.absent == all));

    PhasePlan {
        kind,
        rules: members.iter().map(|r| r.id).collect(),
        words,
        start,
        classifiers: kept,
    }
}

/// Only TCP and UDP packets carry ports, only ICMP/ICMPv6 packets an ICMP
/// type, only TCP packets flags: a rule restricted to other protocols can
/// never match a packet that reaches such a classifier's entries or miss
/// (the protocol classifier, or the start bitmap it folded into, clears
/// its bit), so those bitmaps leave it out. The AND is unchanged; the
/// bitmaps get sparser, which keeps code generation's candidate lists
/// short (a port's entry lists the rules for that port, not every ICMP
/// rule of the phase). The absent bitmap keeps every rule.
fn narrow_to_carriers(c: &mut Classifier, matchers: &[&typed::Match], words: usize) {
    let carriers: &[u8] = match c.field {
        Field::SrcPort | Field::DstPort => &[6, 17],
        Field::Icmp => &[1, 58],
        Field::TcpFlags => &[6],
        _ => return,
    };
    let mut mask = Bits::zeros(words);
    for (bit, m) in matchers.iter().enumerate() {
        let can_carry = m
            .protos
            .as_ref()
            .is_none_or(|set| carriers.iter().any(|p| set.contains(p)));
        if can_carry {
            mask.set(bit);
        }
    }
    for entry in c.bits.chunks_mut(words) {
        for (b, m) in entry.iter_mut().zip(&mask.0) {
            *b &= m;
        }
    }
    c.miss.and_with(&mask.0);
}

/// Entries with their bitmaps, before they become a [`Classifier`].
struct Builder {
    words: usize,
    keys: Vec<Key>,
    bits: Vec<u64>,
}

impl Builder {
    fn new(words: usize) -> Self {
        Builder {
            words,
            keys: Vec::new(),
            bits: Vec::new(),
        }
    }

    fn push(&mut self, key: Key, bits: &[u64]) {
        self.keys.push(key);
        self.bits.extend_from_slice(bits);
    }

    fn finish(self, field: Field, miss: Bits, absent: Bits) -> Classifier {
        Classifier {
            inline_cost: self.keys.len(),
            field,
            words: self.words,
            keys: self.keys,
            bits: self.bits,
            miss,
            absent,
            // Decided by the map planner.
            storage: Storage::Inline,
        }
    }
}

/// Rules without a constraint on the field.
fn wildcard_bits<T>(constraints: &[Option<T>], words: usize) -> Bits {
    let mut b = Bits::zeros(words);
    for (i, c) in constraints.iter().enumerate() {
        if c.is_none() {
            b.set(i);
        }
    }
    b
}

fn proto_classifier(matchers: &[&typed::Match], words: usize) -> Classifier {
    let protos: Vec<Option<&BTreeSet<u8>>> = matchers.iter().map(|m| m.protos.as_ref()).collect();
    let wild = wildcard_bits(&protos, words);
    let mut per_proto: Vec<Bits> = vec![wild.clone(); 256];
    let mut named = BTreeSet::new();
    for (bit, set) in protos.iter().enumerate() {
        for &p in set.iter().copied().flatten() {
            per_proto[usize::from(p)].set(bit);
            named.insert(p);
        }
    }
    let mut b = Builder::new(words);
    for p in named {
        b.push(Key::Proto(p), &per_proto[usize::from(p)].0);
    }
    // Every IP packet has a protocol: absent is never used; keep it equal.
    b.finish(Field::Proto, wild.clone(), wild)
}

/// An address classifier for one family. Entry bitmaps follow from
/// longest-prefix matching: for an address whose longest matching entry is
/// `p`, a set contains the address iff one of its prefixes covers `p`, so
/// each entry gets the bits of every covering entry (a DFS over the sorted
/// prefixes with an ancestor stack). Negated rules hold where no covering
/// prefix of theirs exists; a miss is in no set.
fn addr_classifier(
    field: Field,
    family: Family,
    sets: &[Option<&AddrMatch>],
    policy: &typed::Policy,
    words: usize,
) -> Classifier {
    let wild = wildcard_bits(sets, words);
    let mut negated = Bits::zeros(words);
    // (prefix, rule bit, negated): one item per prefix a rule's set holds.
    let mut items: Vec<(Prefix, u32, bool)> = Vec::new();
    let wanted_v4 = family == Family::Ipv4;
    for (bit, m) in sets.iter().enumerate() {
        let Some(m) = m else { continue };
        if m.negated {
            negated.set(bit);
        }
        let bit32 = u32::try_from(bit).unwrap_or(u32::MAX);
        let lits = m.set.prefixes.iter();
        let tables = m
            .set
            .tables
            .iter()
            .filter_map(|t| policy.tables.get(t.0 as usize))
            .flat_map(|t| t.prefixes.iter());
        for p in lits.chain(tables) {
            if p.is_ipv4() == wanted_v4 {
                items.push((*p, bit32, m.negated));
            }
        }
    }
    items.sort_unstable();

    let mut miss = wild.clone();
    for (a, b) in miss.0.iter_mut().zip(&negated.0) {
        *a |= b;
    }

    // Ancestor stack: the prefix and the OR of positive / negated direct
    // bits of it and all its ancestors (flat, `words` per slot).
    let mut stack: Vec<Prefix> = Vec::new();
    let mut stack_pos: Vec<u64> = Vec::new();
    let mut stack_neg: Vec<u64> = Vec::new();
    let mut out = Builder::new(words);
    out.keys.reserve(items.len());
    out.bits.reserve(items.len() * words);
    let mut entry = vec![0u64; words];
    let mut i = 0;
    while i < items.len() {
        let prefix = items[i].0;
        while let Some(top) = stack.last() {
            if top.covers(&prefix) {
                break;
            }
            stack.pop();
            stack_pos.truncate(stack.len() * words);
            stack_neg.truncate(stack.len() * words);
        }
        let base = stack.len().saturating_sub(1) * words;
        let (mut pos, mut neg): (Vec<u64>, Vec<u64>) = if stack.is_empty() {
            (vec![0; words], vec![0; words])
        } else {
            (
                stack_pos[base..base + words].to_vec(),
                stack_neg[base..base + words].to_vec(),
            )
        };
        while i < items.len() && items[i].0 == prefix {
            let (_, bit, neg_rule) = items[i];
            let (w, b) = (bit as usize / 64, bit % 64);
            if neg_rule {
                neg[w] |= 1 << b;
            } else {
                pos[w] |= 1 << b;
            }
            i += 1;
        }
        for w in 0..words {
            entry[w] = wild.0[w] | pos[w] | (negated.0[w] & !neg[w]);
        }
        out.push(Key::Prefix(prefix), &entry);
        stack.push(prefix);
        stack_pos.extend_from_slice(&pos);
        stack_neg.extend_from_slice(&neg);
    }
    // Every IP packet has addresses; absent is never consulted.
    out.finish(field, miss.clone(), miss)
}

/// A port classifier: a sweep over range boundaries gives the elementary
/// segments; adjacent segments with equal bitmaps merge, segments equal to
/// the miss bitmap are left out.
fn port_classifier(field: Field, ports: &[Option<&PortMatch>], words: usize) -> Classifier {
    let wild = wildcard_bits(ports, words);
    let mut negated = Bits::zeros(words);
    // (position, rule bit): membership of the rule toggles at position
    // (ranges of one rule are disjoint and merged).
    let mut events: Vec<(u32, u32)> = Vec::new();
    for (bit, m) in ports.iter().enumerate() {
        let Some(m) = m else { continue };
        if m.negated {
            negated.set(bit);
        }
        let bit32 = u32::try_from(bit).unwrap_or(u32::MAX);
        for r in &m.ranges {
            events.push((u32::from(r.lo), bit32));
            events.push((u32::from(r.hi) + 1, bit32));
        }
    }
    events.sort_unstable();
    let mut miss = wild.clone();
    for (a, b) in miss.0.iter_mut().zip(&negated.0) {
        *a |= b;
    }

    let mut inside = vec![0u64; words];
    let mut segments: Vec<(PortRange, Vec<u64>)> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        while i < events.len() && events[i].0 == at {
            let bit = events[i].1 as usize;
            inside[bit / 64] ^= 1 << (bit % 64);
            i += 1;
        }
        if at > 65535 {
            break;
        }
        let next = events.get(i).map_or(65536, |e| e.0).min(65536);
        let seg: Vec<u64> = (0..words)
            .map(|w| {
                let pos = inside[w] & !negated.0[w];
                let neg_out = negated.0[w] & !inside[w];
                wild.0[w] | pos | neg_out
            })
            .collect();
        // Ports are u16: at < next <= 65536.
        let range = PortRange {
            lo: at as u16,
            hi: (next - 1) as u16,
        };
        match segments.last_mut() {
            Some((last, bits)) if *bits == seg && u32::from(last.hi) + 1 == at => {
                last.hi = range.hi;
            }
            _ => segments.push((range, seg)),
        }
    }
    let mut out = Builder::new(words);
    for (range, bits) in segments {
        if bits != miss.0 {
            out.push(Key::Ports(range), &bits);
        }
    }
    out.finish(field, miss, wild)
}

fn icmp_classifier(matchers: &[&typed::Match], words: usize) -> Classifier {
    let icmp: Vec<Option<&Vec<IcmpMatch>>> = matchers.iter().map(|m| m.icmp.as_ref()).collect();
    let wild = wildcard_bits(&icmp, words);
    let mut any_code: std::collections::BTreeMap<u8, Bits> = Default::default();
    let mut exact: std::collections::BTreeMap<(u8, u8), Bits> = Default::default();
    for (bit, list) in icmp.iter().enumerate() {
        for m in list.iter().copied().flatten() {
            match m.code {
                None => any_code
                    .entry(m.ty)
                    .or_insert_with(|| wild.clone())
                    .set(bit),
                Some(code) => exact
                    .entry((m.ty, code))
                    .or_insert_with(|| wild.clone())
                    .set(bit),
            }
        }
    }
    let mut out = Builder::new(words);
    let types: BTreeSet<u8> = any_code
        .keys()
        .copied()
        .chain(exact.keys().map(|k| k.0))
        .collect();
    for ty in types {
        let type_bits = any_code.get(&ty).cloned().unwrap_or_else(|| wild.clone());
        if any_code.contains_key(&ty) {
            out.push(Key::Icmp { ty, code: None }, &type_bits.0);
        }
        for ((_, code), bits) in exact.range((ty, 0)..=(ty, 255)) {
            let mut b = bits.clone();
            for (a, t) in b.0.iter_mut().zip(&type_bits.0) {
                *a |= t;
            }
            out.push(
                Key::Icmp {
                    ty,
                    code: Some(*code),
                },
                &b.0,
            );
        }
    }
    out.finish(Field::Icmp, wild.clone(), wild)
}

fn flags_classifier(matchers: &[&typed::Match], words: usize) -> Classifier {
    let flags: Vec<Option<TcpFlagsMatch>> = matchers.iter().map(|m| m.tcp_flags).collect();
    let wild = wildcard_bits(&flags, words);
    let mut out = Builder::new(words);
    for value in 0..=255u8 {
        let mut b = wild.clone();
        for (bit, f) in flags.iter().enumerate() {
            if let Some(f) = f
                && value & f.mask == f.set
            {
                b.set(bit);
            }
        }
        if b != wild {
            out.push(Key::Flags(value), &b.0);
        }
    }
    let pairs: BTreeSet<(u8, u8)> = flags.iter().flatten().map(|f| (f.set, f.mask)).collect();
    let mut c = out.finish(Field::TcpFlags, wild.clone(), wild);
    c.inline_cost = pairs.len();
    c
}

fn vlan_classifier(matchers: &[&typed::Match], words: usize) -> Classifier {
    let vlans: Vec<Option<u16>> = matchers.iter().map(|m| m.vlan).collect();
    let wild = wildcard_bits(&vlans, words);
    let mut per: std::collections::BTreeMap<u16, Bits> = Default::default();
    for (bit, v) in vlans.iter().enumerate() {
        if let Some(v) = v {
            per.entry(*v).or_insert_with(|| wild.clone()).set(bit);
        }
    }
    let mut out = Builder::new(words);
    for (v, b) in per {
        out.push(Key::Vlan(v), &b.0);
    }
    out.finish(Field::Vlan, wild.clone(), wild)
}

fn usage(policy: &typed::Policy, phases: &[PhasePlan]) -> Usage {
    let rule_families = FAMILIES
        .into_iter()
        .filter(|f| phases.iter().any(|p| !p.start_for(*f).is_zero()))
        .collect();
    let mut fields = BTreeSet::new();
    for p in phases {
        for c in &p.classifiers {
            fields.insert(c.field);
        }
    }
    let protos: BTreeSet<u8> = policy
        .rules
        .iter()
        .filter_map(|r| r.matcher.protos.as_ref())
        .flatten()
        .copied()
        .collect();
    let rate_keys: std::collections::BTreeMap<u8, typed::RateKey> = policy
        .rules
        .iter()
        .filter_map(|r| r.rate.map(|rate| rate_key_order(rate.key)))
        .collect();
    Usage {
        rule_families,
        rule_fields: fields.into_iter().collect(),
        protos: protos.into_iter().collect(),
        conntrack: policy.options.conntrack,
        rate_keys: rate_keys.into_values().collect(),
    }
}

/// `RateKey` has no `Ord`; order by a stable index.
fn rate_key_order(key: typed::RateKey) -> (u8, typed::RateKey) {
    let i = match key {
        typed::RateKey::Src => 0,
        typed::RateKey::Dst => 1,
        typed::RateKey::Flow => 2,
        typed::RateKey::Global => 3,
    };
    (i, key)
}

fn parse_step(options: &typed::Options, usage: &Usage) -> ParseStep {
    let mut extract: BTreeSet<Field> = usage.rule_fields.iter().copied().collect();
    // Rate-limit and conntrack keys read addresses and ports too.
    let needs_addrs =
        usage.conntrack || usage.rate_keys.iter().any(|k| *k != typed::RateKey::Global);
    if needs_addrs {
        for f in FAMILIES {
            extract.insert(Field::SrcAddr(f));
            extract.insert(Field::DstAddr(f));
        }
    }
    if usage.conntrack || usage.rate_keys.contains(&typed::RateKey::Flow) {
        extract.insert(Field::Proto);
        extract.insert(Field::SrcPort);
        extract.insert(Field::DstPort);
    }
    if usage.conntrack {
        // Conntrack state follows the TCP flags.
        extract.insert(Field::TcpFlags);
    }
    let checks = InvalidClass::ALL
        .iter()
        .copied()
        .filter(|c| *c != InvalidClass::Fragment || options.fragments_drop)
        .collect();
    ParseStep {
        max_vlan_tags: 2,
        max_ipv6_ext_headers: 4,
        fragments_drop: options.fragments_drop,
        arp_pass: options.arp_pass,
        ndp_pass: options.ndp_pass,
        checks,
        validated_protos: vec![PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6],
        extract: extract.into_iter().collect(),
    }
}

/// The stats layout: per phase (invalid per class), then per rule.
fn counters(rules: &[typed::Rule]) -> Vec<Counter> {
    let mut out = vec![Counter::Phase(Phase::Arp), Counter::Phase(Phase::Ndp)];
    out.extend(
        InvalidClass::ALL
            .iter()
            .map(|c| Counter::Phase(Phase::Invalid(*c))),
    );
    for p in [
        Phase::Deny,
        Phase::Established,
        Phase::RateLimit,
        Phase::Allow,
        Phase::Default,
    ] {
        out.push(Counter::Phase(p));
    }
    out.extend(rules.iter().map(|r| Counter::Rule(r.id)));
    out
}
