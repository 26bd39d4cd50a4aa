//! Map plans: which BPF map kind holds each classifier (or none: inline
//! compares), plus the runtime maps (conntrack, rate-limit buckets, stats),
//! each with its abstract key/value layout and size. Byte layouts (endianness,
//! padding, BTF) belong to codegen's `abi` module; here only fields and widths.

use super::{Classifier, Field, Key, PhaseKind, Program, Storage};
use crate::typed::{Family, RateKey};

/// At most this many entries compile to compares against constants.
pub const INLINE_MAX: usize = 4;

/// IPv4 prefixes compile to compares up to this many: one masked 32-bit
/// compare each, cheaper than walking a trie (test-run, the reference
/// policy's 10-entry blocklist: see docs/benchmarks.md).
pub const INLINE_MAX_IPV4_PREFIXES: usize = 16;

/// An exact-address hash at least this large is a candidate for a bloom
/// filter in front of it (mostly-miss traffic skips the hash); a benchmark
/// decides whether codegen uses it.
pub const BLOOM_CANDIDATE_MIN: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapKind {
    Hash,
    LpmTrie,
    Array,
    LruHash,
    PercpuArray,
}

impl MapKind {
    pub fn name(self) -> &'static str {
        match self {
            MapKind::Hash => "hash",
            MapKind::LpmTrie => "lpm_trie",
            MapKind::Array => "array",
            MapKind::LruHash => "lru_hash",
            MapKind::PercpuArray => "percpu_array",
        }
    }
}

/// One field of a key or value: its name and width in bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: &'static str,
    pub bits: u32,
}

fn slot(name: &'static str, bits: u32) -> Slot {
    Slot { name, bits }
}

/// What fills a map: its role, decided here once. Names are what users
/// see (pins, listings); code downstream decides by this, never by a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// The entries of `program.phases[phase].classifiers[classifier]`.
    Classifier { phase: usize, classifier: usize },
    /// One family's conntrack table: written by the data path only
    /// (XDP and tc egress); starts empty.
    Conntrack(Family),
    /// The token buckets of the rules with rate key `key`: one map per
    /// family, or `family: None` for `per global` (an array by rule id).
    /// Written by the data path only; starts empty.
    RateLimit {
        key: RateKey,
        family: Option<Family>,
    },
    /// Counters, laid out as `Program::counters`.
    Stats,
}

impl Contents {
    /// Written by the data path only (conntrack, buckets): state, which
    /// starts empty and is never part of a policy's contents.
    pub fn is_runtime(self) -> bool {
        matches!(self, Contents::Conntrack(_) | Contents::RateLimit { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapPlan {
    /// Stable, unique: `<phase>_<field>`, `ct_v4`, `rl_src_v6`, `stats`.
    pub name: String,
    pub kind: MapKind,
    pub key: Vec<Slot>,
    pub value: Vec<Slot>,
    pub max_entries: u64,
    pub contents: Contents,
    /// Exact-match hash big enough that a bloom filter in front may pay.
    pub bloom_candidate: bool,
}

/// Decides each classifier's storage and appends every map the program
/// needs to `program.maps`, in a stable order: classifiers in phase order,
/// then conntrack, rate limits, stats.
pub fn plan_maps(program: &mut Program) {
    let mut maps = Vec::new();
    for (pi, phase) in program.phases.iter_mut().enumerate() {
        let kind = phase.kind;
        for (ci, c) in phase.classifiers.iter_mut().enumerate() {
            let contents = Contents::Classifier {
                phase: pi,
                classifier: ci,
            };
            match classifier_map(kind, c, contents) {
                Some(plan) => {
                    c.storage = Storage::Map(maps.len());
                    maps.push(plan);
                }
                None => c.storage = Storage::Inline,
            }
        }
    }

    let options = &program.options;
    if options.conntrack {
        for family in [Family::Ipv4, Family::Ipv6] {
            let w = addr_bits(family);
            maps.push(MapPlan {
                name: conntrack_map_name(family).into(),
                kind: MapKind::LruHash,
                key: vec![
                    slot("src", w),
                    slot("dst", w),
                    slot("sport", 16),
                    slot("dport", 16),
                    slot("proto", 8),
                    slot("pad", 24),
                ],
                value: vec![
                    slot("last_ns", 64),
                    slot("timeout_ns", 64),
                    slot("state", 8),
                    slot("pad", 56),
                ],
                max_entries: u64::from(options.conntrack_size),
                contents: Contents::Conntrack(family),
                bloom_candidate: false,
            });
        }
    }

    let limit_rules: Vec<_> = program.rules.iter().filter_map(|r| r.rate).collect();
    for key in [RateKey::Src, RateKey::Dst, RateKey::Flow] {
        let sharing = limit_rules.iter().filter(|r| r.key == key).count() as u64;
        if sharing == 0 {
            continue;
        }
        for family in [Family::Ipv4, Family::Ipv6] {
            let w = addr_bits(family);
            let (name, mut layout) = match key {
                RateKey::Src => ("src", vec![slot("src", w)]),
                RateKey::Dst => ("dst", vec![slot("dst", w)]),
                _ => (
                    "flow",
                    vec![
                        slot("src", w),
                        slot("dst", w),
                        slot("sport", 16),
                        slot("dport", 16),
                        slot("proto", 8),
                        slot("pad", 24),
                    ],
                ),
            };
            layout.insert(0, slot("rule", 32));
            maps.push(MapPlan {
                name: format!("rl_{name}_{}", family_suffix(family)),
                kind: MapKind::LruHash,
                key: layout,
                value: bucket_value(),
                // `ratelimit-size` keys per rule, as the language promises;
                // the rules of one key kind share the map (key has the rule).
                max_entries: u64::from(options.ratelimit_size) * sharing,
                contents: Contents::RateLimit {
                    key,
                    family: Some(family),
                },
                bloom_candidate: false,
            });
        }
    }
    let globals = limit_rules
        .iter()
        .filter(|r| r.key == RateKey::Global)
        .count();
    if globals > 0 {
        maps.push(MapPlan {
            name: "rl_global".into(),
            kind: MapKind::Array,
            key: vec![slot("rule", 32)],
            value: bucket_value(),
            max_entries: program.rules.len() as u64,
            contents: Contents::RateLimit {
                key: RateKey::Global,
                family: None,
            },
            bloom_candidate: false,
        });
    }

    maps.push(MapPlan {
        name: STATS_MAP_NAME.into(),
        kind: MapKind::PercpuArray,
        key: vec![slot("counter", 32)],
        value: vec![slot("packets", 64), slot("bytes", 64)],
        max_entries: program.counters.len() as u64,
        contents: Contents::Stats,
        bloom_candidate: false,
    });
    program.maps = maps;
}

/// The name (and pin name) of the counters' map, [`Contents::Stats`]:
/// `status` and `stats` open it by this name from the pins alone.
pub const STATS_MAP_NAME: &str = "stats";

/// The name (and pin name) of one family's conntrack map,
/// [`Contents::Conntrack`].
pub const fn conntrack_map_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ct_v4",
        Family::Ipv6 => "ct_v6",
    }
}

fn bucket_value() -> Vec<Slot> {
    vec![slot("last_ns", 64), slot("credit_ns", 64)]
}

fn addr_bits(family: Family) -> u32 {
    match family {
        Family::Ipv4 => 32,
        Family::Ipv6 => 128,
    }
}

pub fn family_suffix(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "v4",
        Family::Ipv6 => "v6",
    }
}

/// The map for one classifier, or `None` for inline compares. The kind
/// follows from the entries: exact keys hash, prefixes need an LPM trie,
/// small dense domains (protocol, flags, port ranges) are arrays indexed by
/// the value.
fn classifier_map(phase: PhaseKind, c: &Classifier, contents: Contents) -> Option<MapPlan> {
    let inline_max = match c.field {
        Field::SrcAddr(Family::Ipv4) | Field::DstAddr(Family::Ipv4) => INLINE_MAX_IPV4_PREFIXES,
        _ => INLINE_MAX,
    };
    if c.inline_cost <= inline_max {
        return None;
    }
    let rules = slot("rules", 64 * c.words as u32);
    let (kind, key, max_entries, bloom) = match c.field {
        Field::SrcAddr(f) | Field::DstAddr(f) => {
            let w = addr_bits(f);
            let hosts = c
                .keys
                .iter()
                .all(|k| matches!(k, Key::Prefix(p) if u32::from(p.len) == w));
            if hosts {
                let bloom = c.keys.len() >= BLOOM_CANDIDATE_MIN;
                (MapKind::Hash, vec![slot("addr", w)], c.keys.len(), bloom)
            } else {
                (
                    MapKind::LpmTrie,
                    vec![slot("prefixlen", 32), slot("addr", w)],
                    c.keys.len(),
                    false,
                )
            }
        }
        Field::Proto => (MapKind::Array, vec![slot("proto", 32)], 256, false),
        Field::TcpFlags => (MapKind::Array, vec![slot("flags", 32)], 256, false),
        Field::SrcPort | Field::DstPort => {
            let single = c
                .keys
                .iter()
                .all(|k| matches!(k, Key::Ports(r) if r.lo == r.hi));
            if single {
                (MapKind::Hash, vec![slot("port", 16)], c.keys.len(), false)
            } else {
                (MapKind::Array, vec![slot("port", 32)], 65_536, false)
            }
        }
        Field::Icmp => (
            MapKind::Hash,
            vec![
                slot("type", 8),
                slot("code", 8),
                slot("any_code", 8),
                slot("pad", 8),
            ],
            c.keys.len(),
            false,
        ),
        Field::Vlan => (MapKind::Hash, vec![slot("vlan", 16)], c.keys.len(), false),
    };
    Some(MapPlan {
        name: format!("{}_{}", phase.name(), c.field.name()),
        kind,
        key,
        value: vec![rules],
        max_entries: max_entries as u64,
        contents,
        bloom_candidate: bloom,
    })
}
