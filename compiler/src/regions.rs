//! Regions of the packet space with a constant decision, computed exactly
//! on lowered programs (`ir::Program`): the engine behind `patronusc diff`,
//! `snapshot` and `test --coverage`.
//!
//! The packet space is that of test packets (LANGUAGE.md §9) of a new flow
//! with full rate-limit buckets: family, protocol, addresses, ports, ICMP
//! type/code, TCP flags and VLAN id. Such a packet is decided by the deny
//! phase, then the allow phase, then the default (rate limits cannot drop
//! the first packet of a bucket, and no flow is established yet); ICMPv6
//! neighbor discovery by the `ndp` option. Invalid packets (port 0, invalid
//! TCP flag combinations, IPv6 extension-header numbers as the protocol)
//! are outside the space; land packets are avoided in examples.
//!
//! Every field is a key space (`u128`: IPv6 addresses need all of it) in
//! which each classifier of the programs is piecewise constant. Per field,
//! the classifiers of every side and phase are merged into cells (sets of
//! ranges on which every classifier's lookup is the same). The space is
//! then split field by field, family and protocol first, starting from the
//! phases' start bitmaps and ANDing each cell's lookups, exactly as the IR
//! evaluator does per packet; a branch stops as soon as every side's
//! deciding rule (or, when only verdicts matter, verdict) is fixed whatever
//! the remaining fields hold. A split only looks at the cells where a live
//! rule bit differs from the classifier's miss bitmap (an inverted index),
//! so a branch where one rule is left costs that rule's entries, not the
//! field's: two 10,000-rule policies diff in milliseconds.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use patronus_grammar::ast::Verdict;

use crate::frame::tcp_flags_invalid;
use crate::ir::{Bits, Classifier, Field, Key, PhaseKind, Program};
use crate::semantics::Phase;
use crate::typed::{
    Family, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, Policy, RuleId, tcp_flags,
};

/// A fast non-cryptographic hasher (the Fx mix of rustc) for the engine's
/// maps keyed by bitmaps: SipHash over thousands of words per key was a
/// tenth of a 10,000-rule diff. Keys are the engine's own, never input.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A sorted list of disjoint, non-adjacent inclusive ranges of keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ranges(pub Vec<(u128, u128)>);

impl Ranges {
    pub fn single(lo: u128, hi: u128) -> Ranges {
        Ranges(vec![(lo, hi)])
    }

    /// Sorts and merges overlapping or adjacent ranges.
    pub fn from_unsorted(mut v: Vec<(u128, u128)>) -> Ranges {
        v.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if last.1 == u128::MAX || lo <= last.1 + 1 => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Ranges(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, v: u128) -> bool {
        let at = self.0.partition_point(|&(lo, _)| lo <= v);
        at > 0 && v <= self.0[at - 1].1
    }

    /// `self` minus `other`.
    pub fn subtract(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        let mut j = 0;
        for &(lo, hi) in &self.0 {
            while j < other.0.len() && other.0[j].1 < lo {
                j += 1;
            }
            let mut pos = lo;
            let mut done = false;
            let mut k = j;
            while !done && k < other.0.len() && other.0[k].0 <= hi {
                let (olo, ohi) = other.0[k];
                if olo > pos {
                    out.push((pos, olo - 1));
                }
                if ohi >= hi {
                    done = true;
                } else {
                    // ohi < hi: no overflow.
                    pos = pos.max(ohi + 1);
                }
                k += 1;
            }
            if !done {
                out.push((pos, hi));
            }
        }
        Ranges(out)
    }

    pub fn intersect(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            let lo = a.0.max(b.0);
            let hi = a.1.min(b.1);
            if lo <= hi {
                out.push((lo, hi));
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Ranges(out)
    }

    /// How many keys the set holds (saturating).
    pub fn count(&self) -> u128 {
        self.0.iter().fold(0u128, |n, &(lo, hi)| {
            n.saturating_add(hi - lo).saturating_add(1)
        })
    }
}

/// A packet field the engine splits on (the family is split first, apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Proto,
    Src,
    Dst,
    SrcPort,
    DstPort,
    Icmp,
    Flags,
    Vlan,
}

impl Dim {
    pub const ALL: [Dim; 8] = [
        Dim::Proto,
        Dim::Src,
        Dim::Dst,
        Dim::SrcPort,
        Dim::DstPort,
        Dim::Icmp,
        Dim::Flags,
        Dim::Vlan,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Dim::Proto => "proto",
            Dim::Src => "src",
            Dim::Dst => "dst",
            Dim::SrcPort => "sport",
            Dim::DstPort => "dport",
            Dim::Icmp => "icmp",
            Dim::Flags => "flags",
            Dim::Vlan => "vlan",
        }
    }

    fn field(self, family: Family) -> Field {
        match self {
            Dim::Proto => Field::Proto,
            Dim::Src => Field::SrcAddr(family),
            Dim::Dst => Field::DstAddr(family),
            Dim::SrcPort => Field::SrcPort,
            Dim::DstPort => Field::DstPort,
            Dim::Icmp => Field::Icmp,
            Dim::Flags => Field::TcpFlags,
            Dim::Vlan => Field::Vlan,
        }
    }

    /// The whole key space of the field (every key a lookup can see).
    fn space(self, family: Family) -> (u128, u128) {
        match self {
            Dim::Proto | Dim::Flags => (0, 255),
            Dim::Src | Dim::Dst => match family {
                Family::Ipv4 => (0, u128::from(u32::MAX)),
                Family::Ipv6 => (0, u128::MAX),
            },
            Dim::SrcPort | Dim::DstPort | Dim::Icmp => (0, 65535),
            Dim::Vlan => (0, VLAN_UNTAGGED),
        }
    }

    /// The keys of valid test packets.
    pub fn domain(self, family: Family) -> Ranges {
        match self {
            Dim::Proto => match family {
                Family::Ipv4 => Ranges::single(0, 255),
                // Extension-header numbers are skipped as headers, never a protocol.
                Family::Ipv6 => Ranges::single(0, 255).subtract(&Ranges::from_unsorted(
                    [0u128, 43, 44, 51, 60].iter().map(|&p| (p, p)).collect(),
                )),
            },
            Dim::SrcPort | Dim::DstPort => Ranges::single(1, 65535),
            Dim::Flags => Ranges::from_unsorted(
                (0..=255u8)
                    .filter(|f| !tcp_flags_invalid(*f))
                    .map(|f| (u128::from(f), u128::from(f)))
                    .collect(),
            ),
            _ => {
                let (lo, hi) = self.space(family);
                Ranges::single(lo, hi)
            }
        }
    }
}

/// The key standing for "no VLAN tag" in the VLAN field's space.
pub const VLAN_UNTAGGED: u128 = 4096;

/// Cell classes: what a value of the field implies beyond the lookups.
mod class {
    /// Protocol cells: which optional fields the packet carries.
    pub const OTHER: u8 = 0;
    pub const TCP: u8 = 1;
    pub const UDP: u8 = 2;
    pub const ICMP: u8 = 3;
    /// ICMPv6 type cells: neighbor discovery (decided by `ndp`).
    pub const NDP: u8 = 1;
    /// VLAN cells: no tag.
    pub const UNTAGGED: u8 = 1;
}

pub fn icmp_proto(family: Family) -> u8 {
    match family {
        Family::Ipv4 => PROTO_ICMP,
        Family::Ipv6 => PROTO_ICMPV6,
    }
}

fn class_of(dim: Dim, family: Family, key: u128) -> u8 {
    match dim {
        Dim::Proto if key == u128::from(PROTO_TCP) => class::TCP,
        Dim::Proto if key == u128::from(PROTO_UDP) => class::UDP,
        Dim::Proto if key == u128::from(icmp_proto(family)) => class::ICMP,
        Dim::Icmp if family == Family::Ipv6 && (133 << 8..138 << 8).contains(&key) => class::NDP,
        Dim::Vlan if key == VLAN_UNTAGGED => class::UNTAGGED,
        _ => class::OTHER,
    }
}

/// Boundaries where the class may change (a new segment starts there).
fn class_breaks(dim: Dim, family: Family) -> Vec<u128> {
    match dim {
        Dim::Proto => {
            let mut v = Vec::new();
            for p in [PROTO_TCP, PROTO_UDP, icmp_proto(family)] {
                v.push(u128::from(p));
                v.push(u128::from(p) + 1);
            }
            v
        }
        Dim::Icmp if family == Family::Ipv6 => vec![133 << 8, 138 << 8],
        Dim::Vlan => vec![VLAN_UNTAGGED],
        _ => Vec::new(),
    }
}

/// A classifier key as a range of the field's key space.
fn key_range(key: &Key) -> (u128, u128) {
    match *key {
        Key::Prefix(p) => {
            let (bits, width) = match p.addr {
                IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
                IpAddr::V6(a) => (u128::from(a), 128u32),
            };
            let host = width - u32::from(p.len);
            let span = if host >= 128 {
                u128::MAX
            } else {
                (1u128 << host) - 1
            };
            (bits, bits | span)
        }
        Key::Proto(p) => (u128::from(p), u128::from(p)),
        Key::Ports(r) => (u128::from(r.lo), u128::from(r.hi)),
        Key::Icmp { ty, code: None } => (u128::from(ty) << 8, u128::from(ty) << 8 | 255),
        Key::Icmp { ty, code: Some(c) } => {
            let k = u128::from(ty) << 8 | u128::from(c);
            (k, k)
        }
        Key::Flags(f) => (u128::from(f), u128::from(f)),
        Key::Vlan(v) => (u128::from(v), u128::from(v)),
    }
}

/// What a classifier answers for a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Look {
    Entry(u32),
    Miss,
    Absent,
}

/// A classifier's answer over a run of keys: `(lo, hi, look)`.
type Segment = (u128, u128, Look);

/// An inclusive run of keys.
type Range = (u128, u128);

fn look_bits(c: &Classifier, look: Look) -> &[u64] {
    match look {
        Look::Entry(i) => c.entry(i as usize),
        Look::Miss => &c.miss.0,
        Look::Absent => &c.absent.0,
    }
}

/// A classifier's answers over its whole key space, as consecutive
/// segments. Keys of one classifier are nested or disjoint (prefixes, ICMP
/// type and type/code, disjoint port runs, single values), and the most
/// specific key answers: a sweep with a stack of open keys.
fn segments(c: &Classifier, space: (u128, u128)) -> Vec<(u128, u128, Look)> {
    let mut keys: Vec<(u128, u128, u32)> = c
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (lo, hi) = key_range(k);
            (lo, hi, i as u32)
        })
        .collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = Vec::with_capacity(keys.len() * 2 + 1);
    // `pos`: the first key not yet covered; `None` once past the space.
    let mut pos = Some(space.0);
    let mut stack: Vec<(u128, u32)> = Vec::new();
    let emit = |out: &mut Vec<(u128, u128, Look)>, pos: &mut Option<u128>, hi: u128, look| {
        if let Some(p) = *pos
            && p <= hi
        {
            out.push((p, hi, look));
            *pos = hi.checked_add(1);
        }
    };
    for (lo, hi, i) in keys {
        while let Some(&(shi, si)) = stack.last() {
            if shi < lo {
                emit(&mut out, &mut pos, shi, Look::Entry(si));
                stack.pop();
            } else {
                break;
            }
        }
        if lo > 0 {
            let look = stack.last().map_or(Look::Miss, |&(_, si)| Look::Entry(si));
            emit(&mut out, &mut pos, lo - 1, look);
        }
        stack.push((hi, i));
    }
    while let Some((shi, si)) = stack.pop() {
        emit(&mut out, &mut pos, shi, Look::Entry(si));
    }
    emit(&mut out, &mut pos, space.1, Look::Miss);
    out
}

/// One side (policy) of a comparison.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub policy: &'a Policy,
    pub program: &'a Program,
}

/// A deciding phase of one side: (side, phase index in `program.phases`).
#[derive(Clone, Copy, Debug)]
struct Column {
    side: usize,
    phase: usize,
}

/// Per (field, family): cells and, per column, the inverted index.
struct Partition {
    cells: Vec<Cell>,
    /// Per column: the classifier of this field, if the phase has one.
    classifier: Vec<Option<usize>>,
    /// Per column, per rule bit: the cells where the bit differs from the
    /// classifier's miss bitmap.
    index: Vec<Vec<Vec<u32>>>,
    /// Per class: every key of the class in the domain.
    class_domain: Vec<Ranges>,
}

struct Cell {
    ranges: Ranges,
    class: u8,
    /// Per column (meaningful where `classifier` is `Some`).
    looks: Vec<Look>,
}

/// How one side decides a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    Rule { phase: Phase, rule: RuleId },
    Default(Verdict),
    Ndp(Verdict),
}

impl Decision {
    pub fn verdict(self) -> Verdict {
        match self {
            Decision::Rule {
                phase: Phase::Deny, ..
            } => Verdict::Drop,
            Decision::Rule { .. } => Verdict::Pass,
            Decision::Default(v) | Decision::Ndp(v) => v,
        }
    }

    pub fn phase(self) -> Phase {
        match self {
            Decision::Rule { phase, .. } => phase,
            Decision::Default(_) => Phase::Default,
            Decision::Ndp(_) => Phase::Ndp,
        }
    }

    pub fn rule(self) -> Option<RuleId> {
        match self {
            Decision::Rule { rule, .. } => Some(rule),
            _ => None,
        }
    }
}

/// A field's values in a region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldSet {
    /// Every valid value (the field was never split).
    Any,
    /// The packets of the region do not carry the field (ports on ICMP...).
    Absent,
    Set(Ranges),
}

/// A box of the packet space with one decision per side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub family: Family,
    /// Indexed by [`Dim`] order.
    pub fields: [FieldSet; 8],
    pub decisions: Vec<Decision>,
}

impl Region {
    pub fn field(&self, dim: Dim) -> &FieldSet {
        &self.fields[dim.index()]
    }

    /// Whether a packet (a valid test packet) lies in the region.
    pub fn contains(&self, p: &Packet) -> bool {
        if Family::of(p.src) != self.family {
            return false;
        }
        Dim::ALL
            .iter()
            .all(|&dim| match (self.field(dim), packet_key(p, dim)) {
                (FieldSet::Any, _) => true,
                (FieldSet::Absent, key) => key.is_none(),
                (FieldSet::Set(r), Some(key)) => r.contains(key),
                (FieldSet::Set(_), None) => false,
            })
    }
}

/// The key of a packet's field, `None` when the packet does not carry it.
pub fn packet_key(p: &Packet, dim: Dim) -> Option<u128> {
    let family = Family::of(p.src);
    let has_ports = p.proto == PROTO_TCP || p.proto == PROTO_UDP;
    match dim {
        Dim::Proto => Some(u128::from(p.proto)),
        Dim::Src => Some(addr_key(p.src)),
        Dim::Dst => Some(addr_key(p.dst)),
        Dim::SrcPort => has_ports.then_some(u128::from(p.src_port)),
        Dim::DstPort => has_ports.then_some(u128::from(p.dst_port)),
        Dim::Icmp => (p.proto == icmp_proto(family))
            .then_some(u128::from(p.icmp_type) << 8 | u128::from(p.icmp_code)),
        Dim::Flags => (p.proto == PROTO_TCP).then_some(u128::from(p.tcp_flags)),
        Dim::Vlan => Some(p.vlan.map_or(VLAN_UNTAGGED, |v| u128::from(v & 0x0FFF))),
    }
}

pub fn addr_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn key_addr(family: Family, key: u128) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(key as u32)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(key)),
    }
}

/// What the walk reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every region, each with a constant deciding rule per side (snapshots).
    All,
    /// Regions whose deciding phase or rule (by identity) differs between
    /// the two sides.
    Decisions,
    /// Regions whose verdict differs between the two sides.
    Verdicts,
}

/// The regions of `sides` (one side: every region; two: see `mode`).
pub fn regions(sides: &[Side], mode: Mode) -> Vec<Region> {
    let engine = Engine::new(sides, mode, false);
    let mut out = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        engine.walk_family(family, &mut out);
    }
    merge(out)
}

/// Merges regions with the same family and decisions that differ in one
/// field only (the union of that field's sets is then exactly their
/// union), until none do: the walk splits per cell, a reader wants
/// `proto !tcp` rather than one line per protocol. Keeps the walk's order
/// (by each merged group's first region).
pub fn merge(regions: Vec<Region>) -> Vec<Region> {
    let mut regions: Vec<Region> = regions
        .into_iter()
        .map(|mut r| {
            for dim in Dim::ALL {
                if let FieldSet::Set(set) = &r.fields[dim.index()]
                    && *set == dim.domain(r.family)
                {
                    r.fields[dim.index()] = FieldSet::Any;
                }
            }
            r
        })
        .collect();
    loop {
        let mut changed = false;
        for dim in Dim::ALL {
            let i = dim.index();
            let mut groups: FxMap<(Family, Vec<Decision>, Vec<FieldSet>), usize> = FxMap::default();
            let mut out: Vec<Region> = Vec::with_capacity(regions.len());
            for r in regions {
                let FieldSet::Set(set) = &r.fields[i] else {
                    out.push(r);
                    continue;
                };
                let mut rest: Vec<FieldSet> = r.fields.to_vec();
                rest[i] = FieldSet::Any;
                match groups.entry((r.family, r.decisions.clone(), rest)) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        let target = &mut out[*e.get()];
                        if let FieldSet::Set(t) = &mut target.fields[i] {
                            let mut all = std::mem::take(&mut t.0);
                            all.extend(set.0.iter().copied());
                            *t = Ranges::from_unsorted(all);
                            if *t == dim.domain(r.family) {
                                target.fields[i] = FieldSet::Any;
                            }
                        }
                        changed = true;
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(out.len());
                        out.push(r);
                    }
                }
            }
            regions = out;
        }
        if !changed {
            return regions;
        }
    }
}

/// Every region of one policy, split in the fixed field order (protocol,
/// addresses, ports, ICMP, flags, VLAN) rather than the fastest one, so the
/// decomposition follows the policy's meaning and not which field happens
/// to have the most keys: what snapshots record.
pub fn regions_canonical(side: Side) -> Vec<Region> {
    let sides = [side];
    let engine = Engine::new(&sides, Mode::All, true);
    let mut out = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        engine.walk_family(family, &mut out);
    }
    merge(out)
}

/// Whether two sides' decisions count as the same (rules by identity).
pub fn same_decision(a: (Decision, &Policy), b: (Decision, &Policy)) -> bool {
    match (a.0, b.0) {
        (
            Decision::Rule {
                phase: pa,
                rule: ra,
            },
            Decision::Rule {
                phase: pb,
                rule: rb,
            },
        ) => {
            pa == pb
                && a.1.rules.get(ra.0 as usize).map(|r| &r.identity)
                    == b.1.rules.get(rb.0 as usize).map(|r| &r.identity)
        }
        (x, y) => x == y,
    }
}

struct Engine<'a> {
    sides: &'a [Side<'a>],
    mode: Mode,
    columns: Vec<Column>,
    /// Per side: (deny column, allow column).
    side_columns: Vec<(Option<usize>, Option<usize>)>,
    /// The split order after family and protocol.
    order: Vec<Dim>,
}

/// The split order for one family: IPv6 splits the ICMPv6 type right after
/// the protocol, so neighbor discovery (decided before any rule) is apart
/// before a branch can stop.
fn family_order(order: &[Dim], family: Family) -> Vec<Dim> {
    let mut o = order.to_vec();
    if family == Family::Ipv6 {
        o.retain(|d| *d != Dim::Icmp);
        o.insert(1, Dim::Icmp);
    }
    o
}

/// Per-family state of a walk.
struct FamilyState {
    family: Family,
    order: Vec<Dim>,
    /// Indexed by [`Dim`] order (every dim but the family has one).
    partitions: Vec<Option<Partition>>,
    /// Per column, per order position `k`: the rules that stay set whatever
    /// the fields at positions `>= k` hold.
    free: Vec<Vec<Bits>>,
}

enum Known {
    Decision(Decision),
    Verdict(Verdict),
    Unknown,
}

impl<'a> Engine<'a> {
    fn new(sides: &'a [Side<'a>], mode: Mode, fixed_order: bool) -> Self {
        let mut columns = Vec::new();
        let mut side_columns = Vec::new();
        for (s, side) in sides.iter().enumerate() {
            let mut deny = None;
            let mut allow = None;
            for (pi, phase) in side.program.phases.iter().enumerate() {
                let slot = match phase.kind {
                    PhaseKind::Deny => &mut deny,
                    PhaseKind::Allow => &mut allow,
                    PhaseKind::Limit => continue,
                };
                *slot = Some(columns.len());
                columns.push(Column { side: s, phase: pi });
            }
            side_columns.push((deny, allow));
        }
        // Fields with many keys first: few branches exist yet to split them.
        let mut weight: HashMap<Dim, usize> = HashMap::new();
        for col in &columns {
            let phase = &sides[col.side].program.phases[col.phase];
            for c in &phase.classifiers {
                if let Some(dim) = dim_of(c.field) {
                    *weight.entry(dim).or_default() += c.keys.len();
                }
            }
        }
        let mut order: Vec<Dim> = Dim::ALL[1..].to_vec();
        if !fixed_order {
            order.sort_by_key(|d| std::cmp::Reverse(weight.get(d).copied().unwrap_or(0)));
        }
        order.insert(0, Dim::Proto);
        Engine {
            sides,
            mode,
            columns,
            side_columns,
            order,
        }
    }

    fn classifier(&self, col: usize, dim: Dim, family: Family) -> Option<(usize, &Classifier)> {
        let c = self.columns[col];
        let field = dim.field(family);
        self.sides[c.side].program.phases[c.phase]
            .classifiers
            .iter()
            .enumerate()
            .find(|(_, cl)| cl.field == field)
    }

    fn classifier_at(&self, col: usize, index: usize) -> &Classifier {
        let c = self.columns[col];
        &self.sides[c.side].program.phases[c.phase].classifiers[index]
    }

    fn walk_family(&self, family: Family, out: &mut Vec<Region>) {
        let order = family_order(&self.order, family);
        let mut partitions: Vec<Option<Partition>> = (0..Dim::ALL.len()).map(|_| None).collect();
        for &dim in &order {
            partitions[dim.index()] = Some(self.partition(dim, family));
        }
        let free = (0..self.columns.len())
            .map(|col| self.free_bits(col, family, &order))
            .collect();
        let state = FamilyState {
            family,
            order,
            partitions,
            free,
        };
        let accs: Vec<Bits> = self
            .columns
            .iter()
            .map(|c| {
                self.sides[c.side].program.phases[c.phase]
                    .start_for(family)
                    .clone()
            })
            .collect();
        let mut fields: [FieldSet; 8] = std::array::from_fn(|_| FieldSet::Any);
        self.walk(&state, 0, None, accs, &mut fields, out);
    }

    /// `free[k]`: AND over the classifiers of fields at positions `>= k` of
    /// every bitmap they can answer.
    fn free_bits(&self, col: usize, family: Family, order: &[Dim]) -> Vec<Bits> {
        let c = self.columns[col];
        let phase = &self.sides[c.side].program.phases[c.phase];
        let mut free = vec![Bits::ones(phase.words, phase.rules.len()); order.len() + 1];
        for k in (0..order.len()).rev() {
            let mut f = free[k + 1].clone();
            if let Some((_, cl)) = self.classifier(col, order[k], family) {
                for i in 0..cl.len() {
                    f.and_with(cl.entry(i));
                }
                f.and_with(&cl.miss.0);
                f.and_with(&cl.absent.0);
            }
            free[k] = f;
        }
        free
    }

    fn partition(&self, dim: Dim, family: Family) -> Partition {
        let space = dim.space(family);
        let classifier: Vec<Option<usize>> = (0..self.columns.len())
            .map(|col| self.classifier(col, dim, family).map(|(i, _)| i))
            .collect();
        let maps: Vec<(usize, Vec<Segment>)> = classifier
            .iter()
            .enumerate()
            .filter_map(|(col, ci)| {
                ci.map(|ci| (col, segments(self.classifier_at(col, ci), space)))
            })
            .collect();
        // Merge every map's boundaries with the class boundaries.
        let mut breaks: Vec<u128> = class_breaks(dim, family);
        for (_, m) in &maps {
            breaks.extend(m.iter().map(|s| s.0));
        }
        breaks.push(space.0);
        breaks.sort_unstable();
        breaks.dedup();
        let domain = dim.domain(family);
        let mut ptr = vec![0usize; maps.len()];
        let mut groups: FxMap<(u8, Vec<Look>), usize> = FxMap::default();
        let mut cells: Vec<Cell> = Vec::new();
        let mut cell_ranges: Vec<Vec<(u128, u128)>> = Vec::new();
        for (bi, &lo) in breaks.iter().enumerate() {
            let hi = breaks.get(bi + 1).map_or(space.1, |n| n - 1);
            let mut looks = vec![Look::Miss; self.columns.len()];
            for (mi, (col, m)) in maps.iter().enumerate() {
                while m[ptr[mi]].1 < lo {
                    ptr[mi] += 1;
                }
                looks[*col] = m[ptr[mi]].2;
            }
            let class = class_of(dim, family, lo);
            if dim == Dim::Vlan && class == class::UNTAGGED {
                looks.fill(Look::Absent);
            }
            // Most domains are one range: clamp without allocating.
            let piece = match domain.0.as_slice() {
                [(dlo, dhi)] if lo.max(*dlo) <= hi.min(*dhi) => {
                    Ranges(vec![(lo.max(*dlo), hi.min(*dhi))])
                }
                [_] => continue,
                _ => Ranges::single(lo, hi).intersect(&domain),
            };
            if piece.is_empty() {
                continue;
            }
            let id = *groups.entry((class, looks.clone())).or_insert_with(|| {
                cells.push(Cell {
                    ranges: Ranges::default(),
                    class,
                    looks,
                });
                cell_ranges.push(Vec::new());
                cells.len() - 1
            });
            cell_ranges[id].extend(piece.0);
        }
        let mut class_domain = vec![Vec::new(); 4];
        for (cell, r) in cells.iter_mut().zip(cell_ranges) {
            cell.ranges = Ranges::from_unsorted(r);
            class_domain[usize::from(cell.class)].extend(cell.ranges.0.iter().copied());
        }
        let class_domain = class_domain
            .into_iter()
            .map(Ranges::from_unsorted)
            .collect();
        let mut index = Vec::with_capacity(self.columns.len());
        for (col, ci) in classifier.iter().enumerate() {
            let Some(ci) = ci else {
                index.push(Vec::new());
                continue;
            };
            let cl = self.classifier_at(col, *ci);
            let c = self.columns[col];
            let nbits = self.sides[c.side].program.phases[c.phase].rules.len();
            let mut idx: Vec<Vec<u32>> = vec![Vec::new(); nbits];
            for (cid, cell) in cells.iter().enumerate() {
                let bits = look_bits(cl, cell.looks[col]);
                for (w, (&a, &m)) in bits.iter().zip(&cl.miss.0).enumerate() {
                    let mut diff = a ^ m;
                    while diff != 0 {
                        let b = w * 64 + diff.trailing_zeros() as usize;
                        diff &= diff - 1;
                        if let Some(list) = idx.get_mut(b) {
                            list.push(cid as u32);
                        }
                    }
                }
            }
            index.push(idx);
        }
        Partition {
            cells,
            classifier,
            index,
            class_domain,
        }
    }

    /// What side `s` decides whatever the fields at positions `>= k` hold.
    fn known(&self, st: &FamilyState, s: usize, k: usize, accs: &[Bits]) -> Known {
        let (deny, allow) = self.side_columns[s];
        let program = self.sides[s].program;
        for (col, phase) in [(deny, Phase::Deny), (allow, Phase::Allow)] {
            let Some(col) = col else { continue };
            let acc = &accs[col];
            let Some(bit) = acc.iter().next() else {
                continue;
            };
            let free = &st.free[col][k];
            let pp = &program.phases[self.columns[col].phase];
            if free.get(bit) {
                return Known::Decision(Decision::Rule {
                    phase,
                    rule: pp.rules[bit],
                });
            }
            let verdict = if phase == Phase::Deny {
                Verdict::Drop
            } else {
                Verdict::Pass
            };
            return if acc.0.iter().zip(&free.0).any(|(a, f)| a & f != 0) {
                Known::Verdict(verdict)
            } else {
                Known::Unknown
            };
        }
        Known::Decision(Decision::Default(program.options.default))
    }

    fn walk(
        &self,
        st: &FamilyState,
        k: usize,
        proto_class: Option<u8>,
        accs: Vec<Bits>,
        fields: &mut [FieldSet; 8],
        out: &mut Vec<Region>,
    ) {
        // NDP is decided before the rules: an IPv6 branch may only stop
        // once it is known not to hold neighbor discovery.
        let ndp_open =
            st.family == Family::Ipv6 && (k == 0 || (k == 1 && proto_class == Some(class::ICMP)));
        let known: Vec<Known> = (0..self.sides.len())
            .map(|s| {
                if ndp_open {
                    Known::Unknown
                } else {
                    self.known(st, s, k, &accs)
                }
            })
            .collect();
        let verdicts: Vec<Option<Verdict>> = known
            .iter()
            .map(|k| match k {
                Known::Decision(d) => Some(d.verdict()),
                Known::Verdict(v) => Some(*v),
                Known::Unknown => None,
            })
            .collect();
        if self.mode == Mode::Verdicts
            && verdicts.len() == 2
            && verdicts[0].is_some()
            && verdicts[0] == verdicts[1]
        {
            return;
        }
        let decisions: Option<Vec<Decision>> = known
            .iter()
            .map(|k| match k {
                Known::Decision(d) => Some(*d),
                _ => None,
            })
            .collect();
        if let Some(decisions) = decisions {
            self.leaf(st.family, fields, decisions, out);
            return;
        }
        let Some(&dim) = st.order.get(k) else {
            // Every field split: every bitmap is final, so `known` decided.
            return;
        };
        let carried = match dim {
            Dim::SrcPort | Dim::DstPort => {
                matches!(proto_class, Some(class::TCP) | Some(class::UDP))
            }
            Dim::Icmp => proto_class == Some(class::ICMP),
            Dim::Flags => proto_class == Some(class::TCP),
            _ => true,
        };
        let Some(part) = &st.partitions[dim.index()] else {
            return;
        };
        if !carried {
            let mut accs = accs;
            for (col, ci) in part.classifier.iter().enumerate() {
                if let Some(ci) = ci {
                    accs[col].and_with(&self.classifier_at(col, *ci).absent.0);
                }
            }
            // The sets chosen so far are set and restored in place: the
            // rest of a big field (thousands of ranges) is never copied
            // per branch, only into the regions reported.
            let saved = std::mem::replace(&mut fields[dim.index()], FieldSet::Absent);
            self.walk(st, k + 1, proto_class, accs, fields, out);
            fields[dim.index()] = saved;
            return;
        }
        for (ranges, class, child) in self.split(part, &accs) {
            let saved = std::mem::replace(&mut fields[dim.index()], FieldSet::Set(ranges));
            if dim == Dim::Icmp && class == class::NDP {
                let decisions = self
                    .sides
                    .iter()
                    .map(|s| {
                        Decision::Ndp(if s.program.parse.ndp_pass {
                            Verdict::Pass
                        } else {
                            Verdict::Drop
                        })
                    })
                    .collect();
                self.leaf(st.family, fields, decisions, out);
                fields[dim.index()] = saved;
                continue;
            }
            let pc = if dim == Dim::Proto {
                Some(class)
            } else {
                proto_class
            };
            self.walk(st, k + 1, pc, child, fields, out);
            fields[dim.index()] = saved;
        }
    }

    fn leaf(
        &self,
        family: Family,
        fields: &[FieldSet; 8],
        decisions: Vec<Decision>,
        out: &mut Vec<Region>,
    ) {
        let report = match (self.mode, decisions.as_slice()) {
            (Mode::All, _) => true,
            (Mode::Verdicts, [a, b]) => a.verdict() != b.verdict(),
            (Mode::Decisions, [a, b]) => {
                !same_decision((*a, self.sides[0].policy), (*b, self.sides[1].policy))
            }
            _ => true,
        };
        if report {
            out.push(Region {
                family,
                fields: fields.clone(),
                decisions,
            });
        }
    }

    /// The children of a branch split on one field: the cells grouped by
    /// what they leave of the live bitmaps, in key order.
    fn split(&self, part: &Partition, accs: &[Bits]) -> Vec<(Ranges, u8, Vec<Bits>)> {
        let mut special: Vec<u32> = Vec::new();
        let mut seen = vec![false; part.cells.len()];
        for (col, ci) in part.classifier.iter().enumerate() {
            if ci.is_none() {
                continue;
            }
            for bit in accs[col].iter() {
                for &cid in part.index[col].get(bit).map_or(&[][..], |v| v.as_slice()) {
                    if !seen[cid as usize] {
                        seen[cid as usize] = true;
                        special.push(cid);
                    }
                }
            }
        }
        let child_accs = |looks: Option<&[Look]>| -> Vec<Bits> {
            accs.iter()
                .enumerate()
                .map(|(col, acc)| {
                    let mut a = acc.clone();
                    if let Some(ci) = part.classifier[col] {
                        let cl = self.classifier_at(col, ci);
                        let look = looks.map_or(Look::Miss, |l| l[col]);
                        a.and_with(look_bits(cl, look));
                    }
                    a
                })
                .collect()
        };
        let mut groups: FxMap<(u8, Vec<Bits>), Vec<Range>> = FxMap::default();
        let mut special_by_class: Vec<Vec<(u128, u128)>> = vec![Vec::new(); 4];
        for &cid in &special {
            let cell = &part.cells[cid as usize];
            let key = (cell.class, child_accs(Some(&cell.looks)));
            groups
                .entry(key)
                .or_default()
                .extend(cell.ranges.0.iter().copied());
            special_by_class[usize::from(cell.class)].extend(cell.ranges.0.iter().copied());
        }
        let rest_accs = child_accs(None);
        for (class, dom) in part.class_domain.iter().enumerate() {
            let rest = dom.subtract(&Ranges::from_unsorted(std::mem::take(
                &mut special_by_class[class],
            )));
            if rest.is_empty() {
                continue;
            }
            groups
                .entry((class as u8, rest_accs.clone()))
                .or_default()
                .extend(rest.0);
        }
        let mut children: Vec<(Ranges, u8, Vec<Bits>)> = groups
            .into_iter()
            .map(|((class, accs), r)| (Ranges::from_unsorted(r), class, accs))
            .collect();
        children.sort_by(|a, b| a.0.0.first().cmp(&b.0.0.first()));
        children
    }
}

fn dim_of(field: Field) -> Option<Dim> {
    Some(match field {
        Field::Proto => Dim::Proto,
        Field::SrcAddr(_) => Dim::Src,
        Field::DstAddr(_) => Dim::Dst,
        Field::SrcPort => Dim::SrcPort,
        Field::DstPort => Dim::DstPort,
        Field::Icmp => Dim::Icmp,
        Field::TcpFlags => Dim::Flags,
        Field::Vlan => Dim::Vlan,
    })
}

// ---- examples ----

/// One valid test packet of the region (prefers familiar values: TCP, a
/// SYN, echo request, ephemeral source port 40000; never a land packet).
/// `None` when every packet of the region is invalid (land only).
pub fn example(region: &Region) -> Option<Packet> {
    let family = region.family;
    let pick = |dim: Dim, prefer: &[u128]| -> Option<u128> {
        match region.field(dim) {
            FieldSet::Absent => None,
            FieldSet::Any => {
                let dom = dim.domain(family);
                prefer
                    .iter()
                    .copied()
                    .find(|p| dom.contains(*p))
                    .or_else(|| dom.0.first().map(|r| r.0))
            }
            FieldSet::Set(r) => prefer
                .iter()
                .copied()
                .find(|p| r.contains(*p))
                .or_else(|| r.0.first().map(|x| x.0)),
        }
    };
    // Test syntax refuses the other family's ICMP protocol (`proto 58`
    // from IPv4 addresses), though the frame parser takes it as any other
    // protocol: pick it only when the region holds nothing else.
    let other_icmp = match family {
        Family::Ipv4 => u128::from(PROTO_ICMPV6),
        Family::Ipv6 => u128::from(PROTO_ICMP),
    };
    let protos = match region.field(Dim::Proto) {
        FieldSet::Set(r) => r.clone(),
        _ => Dim::Proto.domain(family),
    };
    let proto = [
        u128::from(PROTO_TCP),
        u128::from(PROTO_UDP),
        u128::from(icmp_proto(family)),
        47,
    ]
    .into_iter()
    .chain(protos.0.iter().flat_map(|&(lo, hi)| [lo, lo + 1, hi]))
    .find(|p| *p != other_icmp && protos.contains(*p))
    .or_else(|| protos.0.first().map(|r| r.0))? as u8;
    let addrs = |dim: Dim| -> Vec<u128> {
        // A few candidates: documentation addresses (RFC 5737, RFC 3849)
        // when the set holds them, the first range's second and first key,
        // then the next ranges' first keys.
        let ranges = match region.field(dim) {
            FieldSet::Set(r) => r.clone(),
            _ => dim.domain(family),
        };
        let preferred: [&str; 2] = match (family, dim) {
            (Family::Ipv4, Dim::Src) => ["198.51.100.10", "203.0.113.10"],
            (Family::Ipv4, _) => ["192.0.2.1", "192.0.2.2"],
            (Family::Ipv6, Dim::Src) => ["2001:db8:5::10", "2001:db8:6::10"],
            (Family::Ipv6, _) => ["2001:db8::1", "2001:db8::2"],
        };
        let mut v: Vec<u128> = preferred
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .map(addr_key)
            .filter(|k| ranges.contains(*k))
            .collect();
        for (i, &(lo, hi)) in ranges.0.iter().take(3).enumerate() {
            if i == 0 && lo < hi {
                v.push(lo + 1);
            }
            v.push(lo);
            if lo + 1 < hi {
                v.push(lo + 2);
            }
        }
        v
    };
    let has_ports = proto == PROTO_TCP || proto == PROTO_UDP;
    let (sport, dport) = if has_ports {
        (
            pick(Dim::SrcPort, &[40000])? as u16,
            pick(Dim::DstPort, &[443, 80])? as u16,
        )
    } else {
        (0, 0)
    };
    let srcs = addrs(Dim::Src);
    let dsts = addrs(Dim::Dst);
    let (src, dst) = srcs
        .iter()
        .flat_map(|s| dsts.iter().map(move |d| (*s, *d)))
        .find(|(s, d)| s != d || (has_ports && sport != dport))?;
    let (icmp_type, icmp_code) = if proto == icmp_proto(family) {
        let echo = match family {
            Family::Ipv4 => 8u128 << 8,
            Family::Ipv6 => 128u128 << 8,
        };
        let k = pick(Dim::Icmp, &[echo])?;
        ((k >> 8) as u8, (k & 255) as u8)
    } else {
        // What the checker gives a test packet without ICMP (and flags).
        (0, 0)
    };
    let flags = if proto == PROTO_TCP {
        let syn = u128::from(tcp_flags::SYN);
        let synack = u128::from(tcp_flags::SYN | tcp_flags::ACK);
        let ack = u128::from(tcp_flags::ACK);
        pick(Dim::Flags, &[syn, synack, ack])? as u8
    } else {
        0
    };
    let vlan = match pick(Dim::Vlan, &[VLAN_UNTAGGED])? {
        VLAN_UNTAGGED => None,
        v => Some(v as u16),
    };
    Some(Packet {
        proto,
        src: key_addr(family, src),
        dst: key_addr(family, dst),
        src_port: sport,
        dst_port: dport,
        tcp_flags: flags,
        icmp_type,
        icmp_code,
        vlan,
        repeat: 1,
    })
}

/// A packet in test syntax (LANGUAGE.md §9).
pub fn packet_text(p: &Packet) -> String {
    let family = Family::of(p.src);
    let proto = match p.proto {
        PROTO_TCP => "tcp".to_string(),
        PROTO_UDP => "udp".to_string(),
        PROTO_ICMP if family == Family::Ipv4 => "icmp".to_string(),
        PROTO_ICMPV6 if family == Family::Ipv6 => "icmpv6".to_string(),
        n => format!("proto {n}"),
    };
    let has_ports = p.proto == PROTO_TCP || p.proto == PROTO_UDP;
    let endpoint = |a: IpAddr, port: u16| match (a, has_ports) {
        (IpAddr::V6(a), true) => format!("[{a}]:{port}"),
        (a, true) => format!("{a}:{port}"),
        (a, false) => a.to_string(),
    };
    let mut s = format!(
        "{proto} {} -> {}",
        endpoint(p.src, p.src_port),
        endpoint(p.dst, p.dst_port)
    );
    if p.proto == PROTO_TCP {
        s.push_str(" flags ");
        s.push_str(&flag_letters(p.tcp_flags));
    }
    if p.proto == icmp_proto(family) {
        s.push_str(&format!(" type {}", p.icmp_type));
        if p.icmp_code != 0 {
            s.push_str(&format!(" code {}", p.icmp_code));
        }
    }
    if let Some(v) = p.vlan {
        s.push_str(&format!(" vlan {v}"));
    }
    s
}

/// pf's flag letters, FIN first.
pub fn flag_letters(flags: u8) -> String {
    const LETTERS: [(u8, char); 8] = [
        (tcp_flags::FIN, 'F'),
        (tcp_flags::SYN, 'S'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
        (tcp_flags::ACK, 'A'),
        (tcp_flags::URG, 'U'),
        (tcp_flags::ECE, 'E'),
        (tcp_flags::CWR, 'W'),
    ];
    LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_subtract_and_intersect() {
        let a = Ranges::from_unsorted(vec![(0, 10), (20, 30)]);
        let b = Ranges::from_unsorted(vec![(5, 6), (10, 22), (30, 40)]);
        assert_eq!(a.subtract(&b).0, vec![(0, 4), (7, 9), (23, 29)]);
        assert_eq!(
            a.intersect(&b).0,
            vec![(5, 6), (10, 10), (20, 22), (30, 30)]
        );
        let full = Ranges::single(0, u128::MAX);
        assert_eq!(
            full.subtract(&Ranges::single(u128::MAX - 1, u128::MAX)).0,
            vec![(0, u128::MAX - 2)]
        );
        assert_eq!(full.subtract(&full).0, vec![]);
        assert!(a.contains(25) && !a.contains(15));
    }
}
