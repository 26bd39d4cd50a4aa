//! The IR evaluator: runs a lowered [`Program`] on frames the way the
//! generated code will, through the classifiers' lookups (longest-prefix
//! match, exact keys, port segments) and bitmap ANDs, never through the
//! typed rules. Compared against the reference interpreter by the
//! `ir_vs_interp` property test, so both must agree on every outcome.
//!
//! Shared with the interpreter on purpose: the frame parser (the fixed
//! parse step is the same code for every policy) and the conntrack and
//! token-bucket state machines (the semantics of the LRU maps' values, not
//! of the rules). What differs, and is what the comparison checks, is
//! everything lowering produced: phase membership, classifier entries,
//! miss/absent bitmaps, constant folding, lowest-bit decisions.

use std::collections::HashMap;
use std::net::IpAddr;

use patronus_grammar::ast::Verdict;

use super::{Bits, Classifier, Field, Key, PhaseKind, Program, family_index};
use crate::frame::{self, Frame, IpPacket};
use crate::interp::conntrack::Conntrack;
use crate::interp::ratelimit::{BucketKey, Buckets, Take};
use crate::net::mask;
use crate::semantics::{Counter, Outcome, Phase};
use crate::typed::{Family, RuleId};

/// A classifier's entries, indexed for lookup.
enum Index {
    /// Longest-prefix match: entry index by (prefix length, masked address),
    /// lengths tried longest first.
    Prefix {
        lengths: Vec<u8>,
        entries: HashMap<(u8, IpAddr), usize>,
    },
    /// Sorted disjoint port runs: binary search.
    Ports(Vec<(u16, u16, usize)>),
    /// Exact keys (protocol, ICMP type/code, flags, VLAN).
    Exact(HashMap<Key, usize>),
}

impl Index {
    fn build(c: &Classifier) -> Index {
        match c.field {
            Field::SrcAddr(_) | Field::DstAddr(_) => {
                let mut entries = HashMap::with_capacity(c.keys.len());
                let mut lengths = Vec::new();
                for (i, k) in c.keys.iter().enumerate() {
                    if let Key::Prefix(p) = k {
                        entries.insert((p.len, p.addr), i);
                        lengths.push(p.len);
                    }
                }
                lengths.sort_unstable_by(|a, b| b.cmp(a));
                lengths.dedup();
                Index::Prefix { lengths, entries }
            }
            Field::SrcPort | Field::DstPort => {
                let mut runs: Vec<(u16, u16, usize)> = c
                    .keys
                    .iter()
                    .enumerate()
                    .filter_map(|(i, k)| match k {
                        Key::Ports(r) => Some((r.lo, r.hi, i)),
                        _ => None,
                    })
                    .collect();
                runs.sort_unstable();
                Index::Ports(runs)
            }
            _ => Index::Exact(c.keys.iter().enumerate().map(|(i, k)| (*k, i)).collect()),
        }
    }
}

pub struct IrEvaluator<'p> {
    program: &'p Program,
    /// Per phase, per classifier.
    indexes: Vec<Vec<Index>>,
    conntrack: Conntrack,
    /// Buckets per rule id; `None` for rules without a rate.
    buckets: Vec<Option<Buckets>>,
}

impl<'p> IrEvaluator<'p> {
    pub fn new(program: &'p Program) -> Self {
        let indexes = program
            .phases
            .iter()
            .map(|p| p.classifiers.iter().map(Index::build).collect())
            .collect();
        let options = &program.options;
        let buckets = program
            .rules
            .iter()
            .map(|r| {
                r.rate
                    .map(|rate| Buckets::new(rate, options.ratelimit_size))
            })
            .collect();
        IrEvaluator {
            program,
            indexes,
            conntrack: Conntrack::new(options.conntrack_size, options.timeouts),
            buckets,
        }
    }

    /// A frame the host sends: feeds conntrack, never filtered.
    pub fn outbound(&mut self, frame: &[u8], now_ns: u64) {
        if !self.program.usage.conntrack {
            return;
        }
        if let Ok(Frame::Ip(packet)) = frame::parse(frame, &self.program.options) {
            self.conntrack.track(&packet, now_ns);
        }
    }

    /// Evaluates one inbound frame at virtual time `now_ns`.
    pub fn inbound(&mut self, frame: &[u8], now_ns: u64) -> Outcome {
        let mut counters = Vec::new();
        let (verdict, phase, rule) = self.decide(frame, now_ns, &mut counters);
        if let Some(rule) = rule {
            count_rule(&mut counters, rule);
        }
        counters.push(Counter::Phase(phase));
        Outcome {
            verdict,
            phase,
            rule,
            counters,
        }
    }

    fn decide(
        &mut self,
        frame: &[u8],
        now_ns: u64,
        counters: &mut Vec<Counter>,
    ) -> (Verdict, Phase, Option<RuleId>) {
        let program = self.program;
        let parse = &program.parse;
        let default = (program.options.default, Phase::Default, None);
        let packet = match frame::parse(frame, &program.options) {
            Err(class) => return (Verdict::Drop, Phase::Invalid(class), None),
            Ok(Frame::Arp { .. }) => return (pass_if(parse.arp_pass), Phase::Arp, None),
            Ok(Frame::NonIp { .. }) => return default,
            Ok(Frame::Ip(packet)) => packet,
        };
        if packet.is_ndp() {
            return (pass_if(parse.ndp_pass), Phase::Ndp, None);
        }

        if let Some(rule) = self.first_match(PhaseKind::Deny, &packet) {
            return (Verdict::Drop, Phase::Deny, Some(rule));
        }
        if program.usage.conntrack
            && !packet.is_lone_syn()
            && self.conntrack.lookup(&packet, now_ns).is_some()
        {
            return (Verdict::Pass, Phase::Established, None);
        }
        if let Some(pi) = self.phase_of(PhaseKind::Limit) {
            let phase = &program.phases[pi];
            for bit in self.classify(pi, &packet).iter() {
                let rule = phase.rules[bit];
                let rate = program.rules[rule.0 as usize].rate;
                let (Some(rate), Some(Some(buckets))) =
                    (rate, self.buckets.get_mut(rule.0 as usize))
                else {
                    continue;
                };
                match buckets.take(BucketKey::of(rate.key, &packet), now_ns) {
                    Take::Taken { .. } => count_rule(counters, rule),
                    Take::Empty => return (Verdict::Drop, Phase::RateLimit, Some(rule)),
                }
            }
        }
        if let Some(rule) = self.first_match(PhaseKind::Allow, &packet) {
            if program.usage.conntrack {
                self.conntrack.track(&packet, now_ns);
            }
            return (Verdict::Pass, Phase::Allow, Some(rule));
        }
        default
    }

    fn phase_of(&self, kind: PhaseKind) -> Option<usize> {
        self.program.phases.iter().position(|p| p.kind == kind)
    }

    /// The deciding rule of a deny or allow phase: the lowest set bit.
    fn first_match(&self, kind: PhaseKind, packet: &IpPacket) -> Option<RuleId> {
        let pi = self.phase_of(kind)?;
        let bit = self.classify(pi, packet).iter().next()?;
        Some(self.program.phases[pi].rules[bit])
    }

    /// The phase's matching rules: the family's start bitmap ANDed with one
    /// lookup per classifier that applies to the packet.
    fn classify(&self, phase_index: usize, packet: &IpPacket) -> Bits {
        let phase = &self.program.phases[phase_index];
        let family = packet.family();
        let mut acc = phase.start[family_index(family)].clone();
        for (c, index) in phase.classifiers.iter().zip(&self.indexes[phase_index]) {
            if acc.is_zero() {
                break;
            }
            let words: &[u64] = match lookup(c, index, packet, family) {
                Lookup::NotForFamily => continue,
                Lookup::Hit(i) => c.entry(i),
                Lookup::Miss => &c.miss.0,
                Lookup::Absent => &c.absent.0,
            };
            acc.and_with(words);
        }
        acc
    }
}

enum Lookup {
    /// An address classifier of the other family: not consulted.
    NotForFamily,
    Hit(usize),
    Miss,
    Absent,
}

fn lookup(c: &Classifier, index: &Index, packet: &IpPacket, family: Family) -> Lookup {
    let found = |i: Option<usize>| i.map_or(Lookup::Miss, Lookup::Hit);
    match (c.field, index) {
        (Field::SrcAddr(f) | Field::DstAddr(f), _) if f != family => Lookup::NotForFamily,
        (Field::SrcAddr(_) | Field::DstAddr(_), Index::Prefix { lengths, entries }) => {
            let addr = if matches!(c.field, Field::SrcAddr(_)) {
                packet.src
            } else {
                packet.dst
            };
            found(
                lengths
                    .iter()
                    .find_map(|&len| entries.get(&(len, mask(addr, len))).copied()),
            )
        }
        (Field::SrcPort | Field::DstPort, Index::Ports(runs)) => {
            let Some((sport, dport)) = packet.ports() else {
                return Lookup::Absent;
            };
            let port = if c.field == Field::SrcPort {
                sport
            } else {
                dport
            };
            // The last run starting at or before the port.
            let at = runs.partition_point(|&(lo, _, _)| lo <= port);
            found(
                at.checked_sub(1)
                    .map(|i| runs[i])
                    .filter(|&(_, hi, _)| port <= hi)
                    .map(|(_, _, i)| i),
            )
        }
        (_, Index::Exact(entries)) => {
            let get = |k: Key| entries.get(&k).copied();
            match c.field {
                Field::Proto => found(get(Key::Proto(packet.proto))),
                Field::Icmp => match packet.icmp() {
                    None => Lookup::Absent,
                    Some((ty, code)) => found(
                        get(Key::Icmp {
                            ty,
                            code: Some(code),
                        })
                        .or_else(|| get(Key::Icmp { ty, code: None })),
                    ),
                },
                Field::TcpFlags => match packet.tcp_flags() {
                    None => Lookup::Absent,
                    Some(flags) => found(get(Key::Flags(flags))),
                },
                Field::Vlan => match packet.vlan {
                    None => Lookup::Absent,
                    Some(v) => found(get(Key::Vlan(v))),
                },
                // Address and port fields always build their own index.
                _ => Lookup::Miss,
            }
        }
        // An index always matches its classifier's field (built together).
        _ => Lookup::Miss,
    }
}

fn count_rule(counters: &mut Vec<Counter>, rule: RuleId) {
    if !counters.contains(&Counter::Rule(rule)) {
        counters.push(Counter::Rule(rule));
    }
}

fn pass_if(pass: bool) -> Verdict {
    if pass { Verdict::Pass } else { Verdict::Drop }
}
