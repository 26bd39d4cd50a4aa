//! The policy IR: what the code generator compiles, after phase ordering
//! and lowering (see docs/design.md, "Lowering").
//!
//! A [`Program`] is the fixed parse/validate step, then per rule phase
//! (deny, limit, allow) a set of field classifiers. Each classifier maps one
//! packet field to a bitmap of the phase's rules (bit `i` = `PhasePlan::rules[i]`,
//! file order); a packet's matching rules are the AND of one lookup per
//! classifier, so the per-packet cost does not grow with the number of rules
//! or table entries (only the bitmap width does, by one word per 64 rules of
//! a phase). The lowest set bit decides (deny, allow); the limit phase
//! charges every set bit in order.
//!
//! This module owns the data types; [`lower`] builds them from a
//! [`typed::Policy`], [`plan`] picks map kinds and layouts, [`eval`] runs
//! them on frames, [`text`] prints them deterministically.

pub mod eval;
pub mod lower;
pub mod plan;
pub mod text;

use std::net::IpAddr;

use patronus_grammar::ast::Action;

use crate::net::{PortRange, Prefix};
use crate::semantics::{Counter, InvalidClass, Phase};
use crate::typed::{Family, Options, Rate, RuleId};

pub use eval::IrEvaluator;
pub use lower::lower;

/// A lowered policy, ready for code generation or evaluation.
#[derive(Clone, Debug)]
pub struct Program {
    pub options: Options,
    /// The fixed parse and validation step (LANGUAGE.md §4).
    pub parse: ParseStep,
    /// What the policy uses at all: drives specialisation.
    pub usage: Usage,
    /// Every rule in file order (`rules[i].id == RuleId(i)`).
    pub rules: Vec<RuleInfo>,
    /// The rule phases in evaluation order; a phase without rules is absent.
    pub phases: Vec<PhasePlan>,
    /// Every BPF map the program needs, in a stable order.
    pub maps: Vec<plan::MapPlan>,
    /// The stats map layout: counter `i` is at index `i`.
    pub counters: Vec<Counter>,
}

/// The fixed code before the rule phases: L2/L3/L4 parsing and the invalid
/// checks of LANGUAGE.md §4, plus the ARP/NDP pre-phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseStep {
    /// One or two VLAN tags are skipped; one more is invalid.
    pub max_vlan_tags: u8,
    /// IPv6 extension headers (0, 43, 60, 51) skipped at most.
    pub max_ipv6_ext_headers: u8,
    pub fragments_drop: bool,
    pub arp_pass: bool,
    pub ndp_pass: bool,
    /// Every invalid class the step can report, in stats order.
    pub checks: Vec<InvalidClass>,
    /// L4 protocols whose headers are validated (always TCP, UDP, ICMP,
    /// ICMPv6: validity does not depend on the rules).
    pub validated_protos: Vec<u8>,
    /// Packet fields extracted after validation, for rules, conntrack and
    /// rate-limit keys. A field not listed is never read.
    pub extract: Vec<Field>,
}

/// Which parts of the language the policy uses (specialisation input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Families some rule can match; a family not listed skips the rule
    /// phases entirely (established, then default).
    pub rule_families: Vec<Family>,
    /// Fields some rule looks at.
    pub rule_fields: Vec<Field>,
    /// Protocol numbers rules name (for `proto` classifiers and inline
    /// compares); empty when no rule restricts the protocol.
    pub protos: Vec<u8>,
    pub conntrack: bool,
    /// Rate-limit bucket keys used by limit rules.
    pub rate_keys: Vec<crate::typed::RateKey>,
}

/// A packet field a classifier looks up. Address fields are per family
/// because IPv4 and IPv6 live in separate maps (fixed-width keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Proto,
    SrcAddr(Family),
    DstAddr(Family),
    SrcPort,
    DstPort,
    /// ICMP/ICMPv6 type and code.
    Icmp,
    TcpFlags,
    /// The outer VLAN tag's id.
    Vlan,
}

impl Field {
    /// The stable short name used in map names and the text form.
    pub fn name(self) -> &'static str {
        match self {
            Field::Proto => "proto",
            Field::SrcAddr(Family::Ipv4) => "src4",
            Field::SrcAddr(Family::Ipv6) => "src6",
            Field::DstAddr(Family::Ipv4) => "dst4",
            Field::DstAddr(Family::Ipv6) => "dst6",
            Field::SrcPort => "sport",
            Field::DstPort => "dport",
            Field::Icmp => "icmp",
            Field::TcpFlags => "flags",
            Field::Vlan => "vlan",
        }
    }
}

/// A rule as the later stages need it (no spans, no match: the match now
/// lives in the classifiers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: RuleId,
    pub action: Action,
    pub rate: Option<Rate>,
    /// The label, else the rule's identity (normalised source text).
    pub name: String,
    pub log: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PhaseKind {
    /// Phase 2: deny rules.
    Deny,
    /// Phase 4: limit rules and `allow ... rate` rules.
    Limit,
    /// Phase 5: allow rules (with or without rate).
    Allow,
}

impl PhaseKind {
    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::Deny => "deny",
            PhaseKind::Limit => "limit",
            PhaseKind::Allow => "allow",
        }
    }

    pub fn phase(self) -> Phase {
        match self {
            PhaseKind::Deny => Phase::Deny,
            PhaseKind::Limit => Phase::RateLimit,
            PhaseKind::Allow => Phase::Allow,
        }
    }
}

/// One rule phase: the rules it holds and the classifiers whose bitmaps
/// are ANDed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhasePlan {
    pub kind: PhaseKind,
    /// Bit `i` of every bitmap of this phase stands for `rules[i]`; sorted
    /// by id, so the lowest set bit is the first rule in the file.
    pub rules: Vec<RuleId>,
    /// u64 words per bitmap: `ceil(rules.len() / 64)`.
    pub words: usize,
    /// The accumulator a packet of each family starts from (IPv4, IPv6):
    /// the rules that can match that family, ANDed with every classifier
    /// that turned out constant for it.
    pub start: [Bits; 2],
    pub classifiers: Vec<Classifier>,
}

impl PhasePlan {
    pub fn start_for(&self, family: Family) -> &Bits {
        &self.start[family_index(family)]
    }
}

pub fn family_index(family: Family) -> usize {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

/// A rule bitmap (`words` u64s, bit `i` of word `i / 64`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bits(pub Vec<u64>);

impl Bits {
    pub fn zeros(words: usize) -> Bits {
        Bits(vec![0; words])
    }

    /// Bits `0..n` set.
    pub fn ones(words: usize, n: usize) -> Bits {
        let mut b = Bits::zeros(words);
        for i in 0..n {
            b.set(i);
        }
        b
    }

    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }

    pub fn and_with(&mut self, other: &[u64]) {
        for (a, b) in self.0.iter_mut().zip(other) {
            *a &= b;
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The set bits, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        iter_bits(&self.0)
    }
}

/// The set bits of a word slice, lowest first.
pub fn iter_bits(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(wi, &w)| {
        let mut rest = w;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(wi * 64 + bit)
        })
    })
}

/// A key of a classifier entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// Longest-prefix match on an address field.
    Prefix(Prefix),
    /// An IP protocol number.
    Proto(u8),
    /// A run of ports with the same bitmap (a single port when `lo == hi`).
    Ports(PortRange),
    /// ICMP type with one code, or any code (`None`: the entry used when
    /// the exact code has none).
    Icmp {
        ty: u8,
        code: Option<u8>,
    },
    /// One value of the TCP flags byte.
    Flags(u8),
    Vlan(u16),
}

/// One field's lookup: key → rule bitmap, plus the bitmaps for a miss and
/// for a packet that does not carry the field at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classifier {
    pub field: Field,
    pub words: usize,
    /// Sorted; for prefixes, nested entries already include the bits of
    /// every covering entry, so one longest-prefix lookup suffices.
    pub keys: Vec<Key>,
    /// `keys.len() * words` words: entry `i` is `bits[i*words..(i+1)*words]`.
    pub bits: Vec<u64>,
    /// The packet has the field but no entry matches.
    pub miss: Bits,
    /// The packet lacks the field (ports on non-TCP/UDP, ICMP type on other
    /// protocols, flags on non-TCP, no VLAN tag). Rules constraining the
    /// field never match then.
    pub absent: Bits,
    /// Compares the generated code needs if the classifier is inlined:
    /// one per entry, except flags (one per distinct `set/mask` pair).
    pub inline_cost: usize,
    /// Where the entries live in the generated program.
    pub storage: Storage,
}

impl Classifier {
    pub fn entry(&self, i: usize) -> &[u64] {
        &self.bits[i * self.words..(i + 1) * self.words]
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Where a classifier's entries go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A handful of entries: compares against constants in the code.
    Inline,
    /// A BPF map: index into [`Program::maps`].
    Map(usize),
}

/// A packet's addresses for rate-limit and conntrack keys, independent of
/// the frame parser's types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}
