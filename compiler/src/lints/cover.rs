//! The set algebra the rule lints compute with: what packets a rule's match
//! can see, as a union of boxes (products of per-field value sets), and
//! whether one rule's boxes are covered by, or intersect, other rules'.
//!
//! The packet space follows the reference interpreter
//! (`interp::matching`): a packet has a family, source and destination
//! address, protocol, and — depending on its protocol — ports (TCP, UDP),
//! an ICMP type/code (ICMP in IPv4, ICMPv6 in IPv6) and TCP flags, plus an
//! optional VLAN id. A match is split by family and by protocol group so
//! that inside one box every field either exists for all its packets or
//! for none; fields a group lacks are "full" in its boxes. Each field is a
//! [`ValueSet`] of inclusive `u128` intervals, so prefixes, negations
//! (complements), port ranges and unions are all exact.
//!
//! Answers are exact, except that a union question that would need too
//! much splitting answers "not covered": a lint that is unsure stays quiet.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use crate::net::Prefix;
use crate::typed::{self, AddrMatch, Family, Match, PortMatch, TableId};

/// A set of values as sorted, disjoint, non-adjacent inclusive intervals.
/// Shared (`Rc`) because a table of a million prefixes may appear in many
/// boxes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueSet(Rc<[(u128, u128)]>);

impl ValueSet {
    pub fn empty() -> ValueSet {
        ValueSet(Rc::from(Vec::new()))
    }

    /// Every value `0..=max`.
    pub fn full(max: u128) -> ValueSet {
        ValueSet(Rc::from(vec![(0, max)]))
    }

    pub fn single(value: u128) -> ValueSet {
        ValueSet(Rc::from(vec![(value, value)]))
    }

    /// From intervals in any order, overlapping or not.
    pub fn from_intervals(mut intervals: Vec<(u128, u128)>) -> ValueSet {
        // Table prefixes come sorted (by address, then length): merging
        // needs the starts in order only, and sorting a million-prefix
        // table again took a tenth of its compile time.
        if !intervals.is_sorted_by_key(|i| i.0) {
            intervals.sort_unstable();
        }
        ValueSet(Rc::from(merge_sorted(intervals)))
    }

    pub fn intervals(&self) -> &[(u128, u128)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn min(&self) -> Option<u128> {
        self.0.first().map(|i| i.0)
    }

    pub fn max(&self) -> Option<u128> {
        self.0.last().map(|i| i.1)
    }

    /// The interval of `self` that could hold `value`: the last one starting
    /// at or before it.
    fn around(&self, value: u128) -> Option<(u128, u128)> {
        let i = self.0.partition_point(|iv| iv.0 <= value);
        i.checked_sub(1).map(|i| self.0[i])
    }

    /// Every value of `other` is in `self`. Binary search per interval of
    /// `other`: cheap when `other` is small and `self` is a large table.
    pub fn is_superset(&self, other: &ValueSet) -> bool {
        if Rc::ptr_eq(&self.0, &other.0) {
            return true;
        }
        other
            .0
            .iter()
            .all(|&(lo, hi)| self.around(lo).is_some_and(|(_, h)| h >= hi))
    }

    pub fn intersects(&self, other: &ValueSet) -> bool {
        let (small, large) = if self.0.len() <= other.0.len() {
            (self, other)
        } else {
            (other, self)
        };
        small.0.iter().any(|&(lo, hi)| {
            // The first interval of `large` ending at or after `lo`.
            let i = large.0.partition_point(|iv| iv.1 < lo);
            large.0.get(i).is_some_and(|iv| iv.0 <= hi)
        })
    }

    pub fn union(&self, other: &ValueSet) -> ValueSet {
        let mut all: Vec<(u128, u128)> = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        // A merge of two sorted lists keeps the result sorted for `merge_sorted`.
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => {
                    if x <= y {
                        a.next()
                    } else {
                        b.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            if let Some(&iv) = next {
                all.push(iv);
            }
        }
        ValueSet(Rc::from(merge_sorted(all)))
    }

    pub fn intersect(&self, other: &ValueSet) -> ValueSet {
        let (small, large) = if self.0.len() <= other.0.len() {
            (self, other)
        } else {
            (other, self)
        };
        let mut out = Vec::new();
        // Per interval of the smaller set, the overlapping run of the larger
        // one: linear in the small set (a rule) even against a huge table.
        for &(lo, hi) in small.0.iter() {
            let start = large.0.partition_point(|iv| iv.1 < lo);
            for &(l, h) in large.0[start..].iter().take_while(|iv| iv.0 <= hi) {
                out.push((l.max(lo), h.min(hi)));
            }
        }
        ValueSet(Rc::from(out))
    }

    /// The values of `0..=max` not in `self`.
    pub fn complement(&self, max: u128) -> ValueSet {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut next = Some(0u128);
        for &(lo, hi) in self.0.iter() {
            let Some(start) = next else { break };
            if lo > max {
                break;
            }
            if lo > start {
                out.push((start, lo - 1));
            }
            next = hi.checked_add(1);
        }
        if let Some(start) = next
            && start <= max
        {
            out.push((start, max));
        }
        ValueSet(Rc::from(out))
    }

    /// The values of `self` not in `other`, cutting holes per interval of
    /// `self` (cheap when `self` is small and `other` a large table).
    pub fn subtract(&self, other: &ValueSet) -> ValueSet {
        let mut out = Vec::new();
        for &(lo, hi) in self.0.iter() {
            let mut next = Some(lo);
            let start = other.0.partition_point(|iv| iv.1 < lo);
            for &(l, h) in other.0[start..].iter().take_while(|iv| iv.0 <= hi) {
                let Some(from) = next else { break };
                if l > from {
                    out.push((from, l - 1));
                }
                next = h.checked_add(1);
            }
            if let Some(from) = next
                && from <= hi
            {
                out.push((from, hi));
            }
        }
        ValueSet(Rc::from(out))
    }
}

/// Merges sorted intervals that overlap or touch.
fn merge_sorted(sorted: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(sorted.len());
    for (lo, hi) in sorted {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1).is_none_or(|after| lo <= after) => {
                last.1 = last.1.max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The largest address value of a family.
pub fn addr_max(family: Family) -> u128 {
    match family {
        Family::Ipv4 => u128::from(u32::MAX),
        Family::Ipv6 => u128::MAX,
    }
}

/// A prefix as the interval of address values it holds.
pub fn prefix_interval(p: &Prefix) -> (u128, u128) {
    let (value, bits) = match p.addr {
        std::net::IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        std::net::IpAddr::V6(a) => (u128::from(a), 128),
    };
    let host_bits = bits - u32::from(p.len).min(bits);
    let host_mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (value & !host_mask, value | host_mask)
}

/// The packet fields a box constrains, in a fixed order.
pub const SRC: usize = 0;
pub const DST: usize = 1;
pub const PROTO: usize = 2;
pub const SPORT: usize = 3;
pub const DPORT: usize = 4;
/// `type << 8 | code`.
pub const ICMP: usize = 5;
pub const FLAGS: usize = 6;
/// 0..=4095 a tag's id, [`UNTAGGED`] no tag.
pub const VLAN: usize = 7;
pub const DIMS: usize = 8;
pub const UNTAGGED: u128 = 4096;

/// Protocol groups: inside one, every packet has the same header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Tcp,
    Udp,
    /// ICMP in IPv4, ICMPv6 in IPv6 (what the interpreter parses a type of).
    Icmp,
    Other,
    /// Non-first fragments (only when the policy keeps fragments): any
    /// protocol, but no transport header to match ports, flags or types on.
    Fragment,
}

impl Group {
    fn protos(self, family: Family) -> ValueSet {
        let icmp = match family {
            Family::Ipv4 => typed::PROTO_ICMP,
            Family::Ipv6 => typed::PROTO_ICMPV6,
        };
        match self {
            Group::Tcp => ValueSet::single(typed::PROTO_TCP.into()),
            Group::Udp => ValueSet::single(typed::PROTO_UDP.into()),
            Group::Icmp => ValueSet::single(icmp.into()),
            Group::Other => ValueSet::from_intervals(vec![
                (u128::from(typed::PROTO_TCP), u128::from(typed::PROTO_TCP)),
                (u128::from(typed::PROTO_UDP), u128::from(typed::PROTO_UDP)),
                (u128::from(icmp), u128::from(icmp)),
            ])
            .complement(255),
            Group::Fragment => ValueSet::full(255),
        }
    }
}

/// The largest value of each field in a family.
pub fn dim_max(family: Family, dim: usize) -> u128 {
    match dim {
        SRC | DST => addr_max(family),
        PROTO | FLAGS => 255,
        SPORT | DPORT | ICMP => 65535,
        _ => UNTAGGED,
    }
}

/// The packets of one family and protocol group whose fields are each in
/// a set: a product. Never empty in any field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketBox {
    pub family: Family,
    pub group: Group,
    pub dims: [ValueSet; DIMS],
}

impl PacketBox {
    pub fn covers(&self, other: &PacketBox) -> bool {
        self.family == other.family
            && self.group == other.group
            && self
                .dims
                .iter()
                .zip(&other.dims)
                .all(|(a, b)| a.is_superset(b))
    }

    pub fn intersects(&self, other: &PacketBox) -> bool {
        self.family == other.family
            && self.group == other.group
            && self
                .dims
                .iter()
                .zip(&other.dims)
                .all(|(a, b)| a.intersects(b))
    }

    /// The smallest aligned block holding every value of a field: the
    /// keys of the [`Index`].
    fn hull(&self, dim: usize) -> Hull {
        let set = &self.dims[dim];
        let (lo, hi) = (set.min().unwrap_or(0), set.max().unwrap_or(0));
        let bits = dim_bits(self.family, dim);
        let differing = 128 - (lo ^ hi).leading_zeros();
        let len = bits.saturating_sub(differing) as u8;
        Hull::new(lo, len, bits)
    }
}

/// How many bits a field's values have (VLAN ids with the untagged value
/// take 13).
fn dim_bits(family: Family, dim: usize) -> u32 {
    128 - dim_max(family, dim).leading_zeros()
}

/// An aligned block of values (for addresses: a prefix as numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Hull {
    lo: u128,
    hi: u128,
    len: u8,
}

impl Hull {
    fn new(value: u128, len: u8, bits: u32) -> Hull {
        let host_bits = bits - u32::from(len);
        let host_mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        Hull {
            lo: value & !host_mask,
            hi: value | host_mask,
            len,
        }
    }

    fn contains(&self, other: &Hull) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    /// Aligned blocks are nested or disjoint; overlapping means nested.
    fn comparable(&self, other: &Hull) -> bool {
        self.contains(other) || other.contains(self)
    }
}

/// Turns typed matches into boxes, caching each table's address set per
/// family (a table is converted once however many rules use it).
pub struct Space<'a> {
    tables: &'a [typed::Table],
    /// The protocol groups packets can fall in.
    groups: &'static [Group],
    cache: RefCell<HashMap<(TableId, Family), ValueSet>>,
}

impl<'a> Space<'a> {
    /// `keeps_fragments`: whether non-first fragments reach the rules
    /// (`fragments` other than `drop`).
    pub fn new(tables: &'a [typed::Table], keeps_fragments: bool) -> Self {
        const USUAL: &[Group] = &[Group::Tcp, Group::Udp, Group::Icmp, Group::Other];
        const WITH_FRAGMENTS: &[Group] = &[
            Group::Tcp,
            Group::Udp,
            Group::Icmp,
            Group::Other,
            Group::Fragment,
        ];
        Space {
            tables,
            groups: if keeps_fragments {
                WITH_FRAGMENTS
            } else {
                USUAL
            },
            cache: RefCell::new(HashMap::new()),
        }
    }

    fn table_set(&self, id: TableId, family: Family) -> ValueSet {
        if let Some(set) = self.cache.borrow().get(&(id, family)) {
            return set.clone();
        }
        let set = match self.tables.get(id.0 as usize) {
            Some(table) => ValueSet::from_intervals(
                table
                    .prefixes
                    .iter()
                    .filter(|p| Family::of(p.addr) == family)
                    .map(prefix_interval)
                    .collect(),
            ),
            None => ValueSet::empty(),
        };
        self.cache.borrow_mut().insert((id, family), set.clone());
        set
    }

    /// The addresses of `family` an address match accepts.
    fn addr_set(&self, m: Option<&AddrMatch>, family: Family) -> ValueSet {
        let max = addr_max(family);
        let Some(m) = m else {
            return ValueSet::full(max);
        };
        let literal: Vec<(u128, u128)> = m
            .set
            .prefixes
            .iter()
            .filter(|p| Family::of(p.addr) == family)
            .map(prefix_interval)
            .collect();
        let mut set = ValueSet::from_intervals(literal);
        for id in &m.set.tables {
            let table = self.table_set(*id, family);
            // A lone `@table` shares the cached set instead of copying it.
            set = if set.is_empty() {
                table
            } else {
                set.union(&table)
            };
        }
        if m.negated { set.complement(max) } else { set }
    }

    /// Every packet `m` matches, as disjoint boxes (none if it matches
    /// nothing).
    pub fn boxes(&self, m: &Match) -> Vec<PacketBox> {
        let mut out = Vec::new();
        for family in [Family::Ipv4, Family::Ipv6] {
            if m.family.is_some_and(|f| f != family) {
                continue;
            }
            let src = self.addr_set(m.src.as_ref(), family);
            let dst = self.addr_set(m.dst.as_ref(), family);
            if src.is_empty() || dst.is_empty() {
                continue;
            }
            let protos = match &m.protos {
                Some(set) => {
                    ValueSet::from_intervals(set.iter().map(|&p| (p.into(), p.into())).collect())
                }
                None => ValueSet::full(255),
            };
            let vlan = match m.vlan {
                Some(id) => ValueSet::single(id.into()),
                None => ValueSet::full(UNTAGGED),
            };
            let has_ports = m.src_ports.is_some() || m.dst_ports.is_some();
            for &group in self.groups {
                // A field the group's packets lack never matches (as in the
                // interpreter), so the group drops out of the match.
                let flags_ok = m.tcp_flags.is_none() || group == Group::Tcp;
                let ports_ok = !has_ports || matches!(group, Group::Tcp | Group::Udp);
                let icmp_ok = m.icmp.is_none() || group == Group::Icmp;
                if !(flags_ok && ports_ok && icmp_ok) {
                    continue;
                }
                let proto = protos.intersect(&group.protos(family));
                let ports = |p: &Option<PortMatch>| match p {
                    Some(p) => port_set(p),
                    None => ValueSet::full(65535),
                };
                let icmp = match &m.icmp {
                    Some(list) => icmp_set(list),
                    None => ValueSet::full(65535),
                };
                let flags = match m.tcp_flags {
                    Some(f) => ValueSet::from_intervals(
                        (0u16..=255)
                            .filter(|b| (*b as u8) & f.mask == f.set)
                            .map(|b| (b.into(), b.into()))
                            .collect(),
                    ),
                    None => ValueSet::full(255),
                };
                let b = PacketBox {
                    family,
                    group,
                    dims: [
                        src.clone(),
                        dst.clone(),
                        proto,
                        ports(&m.src_ports),
                        ports(&m.dst_ports),
                        icmp,
                        flags,
                        vlan.clone(),
                    ],
                };
                if b.dims.iter().all(|d| !d.is_empty()) {
                    out.push(b);
                }
            }
        }
        out
    }
}

fn port_set(p: &PortMatch) -> ValueSet {
    let set = ValueSet::from_intervals(
        p.ranges
            .iter()
            .map(|r| (r.lo.into(), r.hi.into()))
            .collect(),
    );
    if p.negated {
        set.complement(65535)
    } else {
        set
    }
}

fn icmp_set(list: &[typed::IcmpMatch]) -> ValueSet {
    ValueSet::from_intervals(
        list.iter()
            .map(|m| {
                let base = u128::from(m.ty) << 8;
                match m.code {
                    Some(code) => (base | u128::from(code), base | u128::from(code)),
                    None => (base, base | 0xff),
                }
            })
            .collect(),
    )
}

/// Whether every box of `inner` lies in some box of `outer`'s union, box
/// by box: `outer` boxes are disjoint by family and group, so each inner
/// box needs exactly one outer box of its own family and group.
pub fn boxes_covered(inner: &[PacketBox], outer: &[PacketBox]) -> bool {
    inner.iter().all(|a| outer.iter().any(|b| b.covers(a)))
}

pub fn boxes_intersect(a: &[PacketBox], b: &[PacketBox]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.intersects(y)))
}

/// How many box subtractions a union question may take before it gives up.
const SPLIT_BUDGET: usize = 4096;
/// Above this many candidate boxes only the cheap union forms are tried.
const SPLIT_MAX_CANDIDATES: usize = 24;

/// Whether `target` lies in the union of `candidates`; if so, which
/// candidates (indexes into `candidates`) the proof used. `None` also when
/// the answer would cost too much to find. Candidates should be those that
/// meet the target ([`Index::intersecting`]); others only cost time.
pub fn union_covers(target: &PacketBox, candidates: &[&PacketBox]) -> Option<Vec<usize>> {
    let touching: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].family == target.family && candidates[i].group == target.group)
        .collect();
    // Candidates that agree with the target (cover it) in every field but
    // one: their union in that field decides exactly. This is the common
    // case (`deny from 10.0.0.0/9` + `deny from 10.128.0.0/9`) and linear.
    let mut by_dim: [Vec<usize>; DIMS] = Default::default();
    for &i in &touching {
        let c = candidates[i];
        let mut short = (0..DIMS).filter(|&d| !c.dims[d].is_superset(&target.dims[d]));
        match (short.next(), short.next()) {
            (None, _) => return Some(vec![i]),
            // It covers the other fields, so it meets the target iff it
            // meets it here; one that does not adds nothing.
            (Some(dim), None) if c.dims[dim].intersects(&target.dims[dim]) => by_dim[dim].push(i),
            _ => {}
        }
    }
    for (dim, used) in by_dim.into_iter().enumerate() {
        let sets: Vec<&ValueSet> = used.iter().map(|&i| &candidates[i].dims[dim]).collect();
        if !used.is_empty() && union_is_superset(&sets, &target.dims[dim]) {
            return Some(used);
        }
    }
    if touching.len() > SPLIT_MAX_CANDIDATES {
        return None;
    }
    // Necessary for any cover: in each field, the candidates' values
    // together hold the target's. Cheap, and it spares the splitting below
    // (which copies sets) when a large table meets the target without
    // covering it.
    let projections_covered = (0..DIMS).all(|dim| {
        let sets: Vec<&ValueSet> = touching.iter().map(|&i| &candidates[i].dims[dim]).collect();
        union_is_superset(&sets, &target.dims[dim])
    });
    if !projections_covered {
        return None;
    }
    let mut budget = SPLIT_BUDGET;
    let mut used = BTreeSet::new();
    let pieces: Vec<&PacketBox> = touching.iter().map(|&i| candidates[i]).collect();
    if split_covers(target.clone(), &pieces, &mut budget, &mut used) == Some(true) {
        Some(used.into_iter().map(|k| touching[k]).collect())
    } else {
        None
    }
}

/// Whether the union of `sets` holds every value of `target`, without
/// building the union: walk each target interval, jumping to the furthest
/// end any set reaches from the current point; a gap ends the walk early.
pub fn union_is_superset(sets: &[&ValueSet], target: &ValueSet) -> bool {
    target.intervals().iter().all(|&(lo, hi)| {
        let mut at = lo;
        loop {
            let reach = sets
                .iter()
                .filter_map(|s| s.around(at))
                .map(|(_, end)| end)
                .filter(|&end| end >= at)
                .max();
            match reach {
                None => return false,
                Some(end) if end >= hi => return true,
                Some(end) => at = end + 1,
            }
        }
    })
}

/// Subtracts candidates from the target one after another; the target is
/// covered when nothing is left. `None` when the budget runs out.
fn split_covers(
    target: PacketBox,
    candidates: &[&PacketBox],
    budget: &mut usize,
    used: &mut BTreeSet<usize>,
) -> Option<bool> {
    split_from(target, candidates, 0, budget, used)
}

fn split_from(
    target: PacketBox,
    candidates: &[&PacketBox],
    start: usize,
    budget: &mut usize,
    used: &mut BTreeSet<usize>,
) -> Option<bool> {
    *budget = budget.checked_sub(1)?;
    let Some(k) = (start..candidates.len()).find(|&k| candidates[k].intersects(&target)) else {
        return Some(false);
    };
    let c = candidates[k];
    used.insert(k);
    if c.covers(&target) {
        return Some(true);
    }
    // target \ c as disjoint pieces: for each field where c does not hold
    // the target, the part outside c there, inside c in earlier fields.
    let mut inside = target.clone();
    for dim in 0..DIMS {
        if c.dims[dim].is_superset(&target.dims[dim]) {
            continue;
        }
        let mut piece = inside.clone();
        piece.dims[dim] = target.dims[dim].subtract(&c.dims[dim]);
        if !split_from(piece, candidates, k + 1, budget, used)? {
            return Some(false);
        }
        inside.dims[dim] = target.dims[dim].intersect(&c.dims[dim]);
    }
    Some(true)
}

/// The fields the [`Index`] keys boxes by: those that tell rules apart in
/// practice (addresses, then ports).
const INDEXED: [usize; 4] = [SRC, DST, DPORT, SPORT];

/// The boxes of many rules, indexed by the hulls of their addresses and
/// ports, so that "which boxes could cover / meet this one" does not scan
/// every rule: a box covering another has hulls containing the other's in
/// every field, and boxes that meet have nested hulls in every field
/// (aligned blocks are nested or disjoint). A query walks the candidates
/// of its most selective field and checks the others' hulls on the way.
pub struct Index {
    /// `(rule, box)`.
    entries: Vec<(usize, PacketBox)>,
    hulls: Vec<[Hull; INDEXED.len()]>,
    /// Per indexed field: entries by (family, group, hull length, start).
    by_hull: Vec<HullMap>,
    /// Per indexed field and family: the hull lengths in use.
    lens: Vec<HashMap<Family, BTreeSet<u8>>>,
    /// Per indexed field: entries sorted by (family, group, hull start).
    sorted: Vec<Vec<u32>>,
    /// Per family and group: the union of every entry's values, field by
    /// field. A box these do not hold is covered by no union of entries.
    projections: HashMap<(Family, Group), [Vec<ValueSet>; DIMS]>,
}

/// Collects the union of many sets: small ones merged into one, large
/// ones (tables, shared by many boxes) kept apart and unique, since
/// merging a million intervals again for each group would cost more than
/// the filter saves.
#[derive(Default)]
struct Projection {
    small: Vec<(u128, u128)>,
    large: Vec<ValueSet>,
}

impl Projection {
    const LARGE: usize = 256;

    fn add(&mut self, set: &ValueSet) {
        if set.intervals().len() < Self::LARGE {
            self.small.extend_from_slice(set.intervals());
        } else if !self.large.iter().any(|l| Rc::ptr_eq(&l.0, &set.0)) {
            self.large.push(set.clone());
        }
    }

    fn finish(self) -> Vec<ValueSet> {
        let mut sets = self.large;
        sets.push(ValueSet::from_intervals(self.small));
        sets
    }
}

/// Entries by (family, group, hull length, hull start).
type HullMap = HashMap<(Family, Group, u8, u128), Vec<u32>>;

/// A box being looked up, with its hulls.
struct Query<'b> {
    b: &'b PacketBox,
    hulls: [Hull; INDEXED.len()],
}

impl Index {
    /// Candidates [`Index::covering_at_most`] looks at.
    pub const MAX_EXAMINED: usize = 2048;

    pub fn new(entries: Vec<(usize, PacketBox)>) -> Index {
        let hulls: Vec<[Hull; INDEXED.len()]> = entries
            .iter()
            .map(|(_, b)| INDEXED.map(|d| b.hull(d)))
            .collect();
        let mut by_hull: Vec<HullMap> = vec![HashMap::new(); INDEXED.len()];
        let mut lens: Vec<HashMap<Family, BTreeSet<u8>>> = vec![HashMap::new(); INDEXED.len()];
        for (i, ((_, b), h)) in entries.iter().zip(&hulls).enumerate() {
            for k in 0..INDEXED.len() {
                by_hull[k]
                    .entry((b.family, b.group, h[k].len, h[k].lo))
                    .or_default()
                    .push(i as u32);
                lens[k].entry(b.family).or_default().insert(h[k].len);
            }
        }
        let sorted = (0..INDEXED.len())
            .map(|k| {
                let mut list: Vec<u32> = (0..entries.len() as u32).collect();
                list.sort_by_key(|&i| {
                    let (_, b) = &entries[i as usize];
                    (b.family, b.group, hulls[i as usize][k].lo)
                });
                list
            })
            .collect();
        let mut parts: HashMap<(Family, Group), [Projection; DIMS]> = HashMap::new();
        for (_, b) in &entries {
            let slot = parts.entry((b.family, b.group)).or_default();
            for (dim, set) in b.dims.iter().enumerate() {
                slot[dim].add(set);
            }
        }
        let projections = parts
            .into_iter()
            .map(|(key, dims)| (key, dims.map(Projection::finish)))
            .collect();
        Index {
            projections,
            entries,
            hulls,
            by_hull,
            lens,
            sorted,
        }
    }

    pub fn entry(&self, i: usize) -> &(usize, PacketBox) {
        &self.entries[i]
    }

    /// The lists of entries whose hull in field `k` contains the query's
    /// (ancestors or equal).
    fn ancestors<'s>(&'s self, k: usize, q: &Query) -> impl Iterator<Item = &'s [u32]> {
        let (family, group, hull) = (q.b.family, q.b.group, q.hulls[k]);
        let bits = dim_bits(family, INDEXED[k]);
        self.lens[k]
            .get(&family)
            .into_iter()
            .flat_map(move |lens| lens.range(..=hull.len))
            .filter_map(move |&len| {
                let h = Hull::new(hull.lo, len, bits);
                self.by_hull[k]
                    .get(&(family, group, len, h.lo))
                    .map(Vec::as_slice)
            })
    }

    /// Entries whose hull in field `k` starts inside the query's: its
    /// descendants (and ancestors sharing its start, filtered by callers).
    fn descendants(&self, k: usize, q: &Query) -> &[u32] {
        let list = &self.sorted[k];
        let (family, group, hull) = (q.b.family, q.b.group, q.hulls[k]);
        let key = |i: &u32| {
            let (_, e) = &self.entries[*i as usize];
            (e.family, e.group, self.hulls[*i as usize][k].lo)
        };
        let start = list.partition_point(|i| key(i) < (family, group, hull.lo));
        let end = list.partition_point(|i| key(i) <= (family, group, hull.hi));
        &list[start..end]
    }

    fn query<'b>(b: &'b PacketBox) -> Query<'b> {
        Query {
            b,
            hulls: INDEXED.map(|d| b.hull(d)),
        }
    }

    /// Entries whose box covers `b`, in index order.
    pub fn covering(&self, b: &PacketBox) -> Vec<usize> {
        self.covering_at_most(b, usize::MAX)
    }

    /// At most `limit` entries whose box covers `b`, found among at most
    /// [`Index::MAX_EXAMINED`] candidates (all of them, in index order, when
    /// there are no more). Rules nested in each other (`port 1-1`, `port
    /// 1-2`, ...) are each covered by all later ones, and broad rules are
    /// candidates for every narrower one: looking at all of them for every
    /// rule was quadratic (30,000 rules: minutes). A lint may then miss a
    /// rule that only the 2,049th candidate covers, never report a wrong one.
    pub fn covering_at_most(&self, b: &PacketBox, limit: usize) -> Vec<usize> {
        let q = Self::query(b);
        let count = |k: usize| self.ancestors(k, &q).map(<[u32]>::len).sum::<usize>();
        let Some(k) = (0..INDEXED.len()).min_by_key(|&k| count(k)) else {
            return Vec::new();
        };
        let mut out: Vec<usize> = self
            .ancestors(k, &q)
            .flatten()
            .take(if limit == usize::MAX {
                usize::MAX
            } else {
                Self::MAX_EXAMINED
            })
            .map(|&i| i as usize)
            .filter(|&i| {
                self.hulls[i]
                    .iter()
                    .zip(&q.hulls)
                    .all(|(h, qh)| h.contains(qh))
                    && self.entries[i].1.covers(b)
            })
            .take(limit)
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether the union of all entries could cover `b`: false means no
    /// set of entries does (a quick filter before [`Index::intersecting`]).
    pub fn may_cover(&self, b: &PacketBox) -> bool {
        self.projections
            .get(&(b.family, b.group))
            .is_some_and(|dims| {
                dims.iter().zip(&b.dims).all(|(sets, mine)| {
                    let sets: Vec<&ValueSet> = sets.iter().collect();
                    union_is_superset(&sets, mine)
                })
            })
    }

    /// Entries whose box shares a packet with `b`, in index order.
    pub fn intersecting(&self, b: &PacketBox) -> Vec<usize> {
        let q = Self::query(b);
        let count = |k: usize| {
            self.ancestors(k, &q).map(<[u32]>::len).sum::<usize>() + self.descendants(k, &q).len()
        };
        let Some(k) = (0..INDEXED.len()).min_by_key(|&k| count(k)) else {
            return Vec::new();
        };
        let strictly_inside = self
            .descendants(k, &q)
            .iter()
            .filter(|&&i| self.hulls[i as usize][k].len > q.hulls[k].len);
        let mut out: Vec<usize> = self
            .ancestors(k, &q)
            .flatten()
            .chain(strictly_inside)
            .map(|&i| i as usize)
            .filter(|&i| {
                self.hulls[i]
                    .iter()
                    .zip(&q.hulls)
                    .all(|(h, qh)| h.comparable(qh))
                    && self.entries[i].1.intersects(b)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}
