//! Proptest generators of typed policies and frames for the differential
//! tests (IR evaluator, XDP programs, reference interpreter), shared by the
//! compiler's and codegen's test suites. Compiled only with the `testgen`
//! feature, so proptest never reaches a normal build.
//!
//! Policies draw from small address and port universes so that overlaps,
//! nesting, negation and shadowing are the common case, not the exception;
//! rules use every rate key. Frames are built from generated packets and
//! then possibly made malformed: truncations, byte flips, VLAN tags, IPv6
//! extension headers, non-IP ethertypes. [`repository_policies`] reads the
//! repository's `policies/` (the one place here that does I/O: test
//! support only).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::diag::{FileId, Files};
use crate::net::{PortRange, Prefix, normalize_ranges};
use crate::packet;
use crate::typed::{
    AddrMatch, AddrSet, Family, IcmpMatch, Match, NS_PER_SEC, Options, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP, Packet, Policy, PortMatch, Rate, RateKey, Rule, RuleId, Table, TableId,
    TcpFlagsMatch, Timeouts, tcp_flags,
};
use crate::{LoadedFile, TableLoader};
use patronus_grammar::ast::{Action, Span, Verdict};
use proptest::prelude::*;

pub const PREFIXES: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.1.0/24",
    "10.0.0.1/32",
    "10.0.0.2/32",
    "10.0.1.1/32",
    "192.0.2.0/25",
    "::/0",
    "2001:db8::/32",
    "2001:db8::/64",
    "2001:db8::1/128",
    "2001:db8:0:1::/64",
];

pub const HOSTS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.1.1",
    "10.0.2.1",
    "192.0.2.1",
    "192.0.2.200",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8:0:1::1",
    "2001:db9::1",
];

pub const PORTS: &[u16] = &[22, 53, 79, 80, 81, 443, 1000, 1500, 2000, 65535];

pub fn prefix(s: &str) -> Prefix {
    let (addr, len) = s.split_once('/').expect("prefix literal");
    Prefix::new(addr.parse().expect("address"), len.parse().expect("length")).expect("prefix")
}

pub fn host(i: usize) -> IpAddr {
    HOSTS[i % HOSTS.len()].parse().expect("host literal")
}

// ---- policies ----

pub fn addr_set(tables: usize) -> impl Strategy<Value = AddrSet> {
    (
        prop::collection::btree_set(0..PREFIXES.len(), 0..3),
        prop::collection::btree_set(0..tables.max(1), 0..=tables.min(2)),
    )
        .prop_filter("non-empty set", |(p, t)| !p.is_empty() || !t.is_empty())
        .prop_map(move |(p, t)| AddrSet {
            prefixes: p.into_iter().map(|i| prefix(PREFIXES[i])).collect(),
            tables: if tables == 0 {
                Vec::new()
            } else {
                t.into_iter().map(|i| TableId(i as u32)).collect()
            },
        })
}

pub fn addr_match(tables: usize) -> impl Strategy<Value = Option<AddrMatch>> {
    prop::option::weighted(
        0.5,
        (any::<bool>(), addr_set(tables)).prop_map(|(negated, set)| AddrMatch {
            negated: negated && set.prefixes.len() < 3,
            set,
        }),
    )
}

pub fn port_match() -> impl Strategy<Value = Option<PortMatch>> {
    let range = (0..PORTS.len(), 0..3usize).prop_map(|(i, extra)| {
        let lo = PORTS[i];
        let hi = PORTS[(i + extra).min(PORTS.len() - 1)];
        PortRange { lo, hi }
    });
    prop::option::weighted(
        0.5,
        (
            prop::collection::vec(range, 1..3),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(ranges, negated)| PortMatch {
                negated,
                ranges: normalize_ranges(ranges),
            }),
    )
}

/// The protocol part of a rule decides which other fields are allowed
/// (ports with TCP/UDP, `type` with ICMP, `flags` with TCP), like the checker.
#[derive(Clone, Copy, Debug)]
pub enum ProtoChoice {
    Any,
    Tcp,
    Udp,
    TcpUdp,
    Icmp,
    Icmp6,
    Gre,
}

pub fn matcher(tables: usize) -> impl Strategy<Value = Match> {
    let proto = prop_oneof![
        Just(ProtoChoice::Any),
        Just(ProtoChoice::Tcp),
        Just(ProtoChoice::Udp),
        Just(ProtoChoice::TcpUdp),
        Just(ProtoChoice::Icmp),
        Just(ProtoChoice::Icmp6),
        Just(ProtoChoice::Gre),
    ];
    let family = prop_oneof![
        3 => Just(None),
        1 => Just(Some(Family::Ipv4)),
        1 => Just(Some(Family::Ipv6)),
    ];
    let icmp = prop::collection::vec(
        (
            prop::sample::select(vec![0u8, 3, 8, 128, 129]),
            prop::option::of(0u8..2),
        )
            .prop_map(|(ty, code)| IcmpMatch { ty, code }),
        1..3,
    );
    let flags = prop::option::of(prop::sample::select(vec![
        TcpFlagsMatch {
            set: tcp_flags::SYN,
            mask: tcp_flags::SYN | tcp_flags::ACK,
        },
        TcpFlagsMatch {
            set: tcp_flags::ACK,
            mask: tcp_flags::ACK,
        },
        TcpFlagsMatch {
            set: tcp_flags::RST,
            mask: tcp_flags::RST,
        },
    ]));
    let vlan = prop::option::weighted(0.2, prop::sample::select(vec![5u16, 7]));
    (
        proto,
        family,
        addr_match(tables),
        addr_match(tables),
        port_match(),
        port_match(),
        prop::option::weighted(0.5, icmp),
        flags,
        vlan,
    )
        .prop_map(
            |(proto, family, src, dst, sports, dports, icmp, flags, vlan)| {
                let (protos, family, ports_ok, icmp_ok, flags_ok) = match proto {
                    ProtoChoice::Any => (None, family, false, false, false),
                    ProtoChoice::Tcp => (Some(vec![PROTO_TCP]), family, true, false, true),
                    ProtoChoice::Udp => (Some(vec![PROTO_UDP]), family, true, false, false),
                    ProtoChoice::TcpUdp => {
                        (Some(vec![PROTO_TCP, PROTO_UDP]), family, true, false, false)
                    }
                    ProtoChoice::Icmp => (
                        Some(vec![PROTO_ICMP]),
                        Some(Family::Ipv4),
                        false,
                        true,
                        false,
                    ),
                    ProtoChoice::Icmp6 => (
                        Some(vec![PROTO_ICMPV6]),
                        Some(Family::Ipv6),
                        false,
                        true,
                        false,
                    ),
                    ProtoChoice::Gre => (Some(vec![47]), family, false, false, false),
                };
                Match {
                    family,
                    protos: protos.map(|p| p.into_iter().collect::<BTreeSet<u8>>()),
                    src,
                    dst,
                    src_ports: sports.filter(|_| ports_ok),
                    dst_ports: dports.filter(|_| ports_ok),
                    icmp: icmp.filter(|_| icmp_ok),
                    tcp_flags: flags.filter(|_| flags_ok),
                    vlan,
                }
            },
        )
}

pub fn rate() -> impl Strategy<Value = Rate> {
    (
        prop::sample::select(vec![1u64, 2, 10]),
        1u64..4,
        prop::sample::select(vec![
            RateKey::Src,
            RateKey::Dst,
            RateKey::Flow,
            RateKey::Global,
        ]),
    )
        .prop_map(|(count, burst, key)| Rate {
            count,
            unit_ns: NS_PER_SEC,
            interval_ns: NS_PER_SEC / count,
            burst,
            key,
        })
}

/// A rule before it is numbered: action, match, rate.
pub type RuleSpec = (Action, Match, Option<Rate>);

pub fn rule(tables: usize) -> impl Strategy<Value = RuleSpec> {
    (
        prop_oneof![
            2 => Just(Action::Allow),
            2 => Just(Action::Deny),
            1 => Just(Action::Limit),
        ],
        matcher(tables),
        rate(),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(action, m, rate, allow_rate)| {
            let rate = match action {
                Action::Limit => Some(rate),
                Action::Allow if allow_rate => Some(rate),
                _ => None,
            };
            (action, m, rate)
        })
}

pub fn options() -> impl Strategy<Value = Options> {
    (
        any::<bool>(),
        prop::bool::weighted(0.7),
        prop::sample::select(vec![2u32, 1000]),
        prop::sample::select(vec![2u32, 1000]),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(default_allow, conntrack, ct_size, rl_size, fragments_drop, arp, ndp)| Options {
                default: if default_allow {
                    Verdict::Pass
                } else {
                    Verdict::Drop
                },
                conntrack,
                conntrack_size: ct_size,
                ratelimit_size: rl_size,
                fragments_drop,
                arp_pass: arp,
                ndp_pass: ndp,
                ..Options::default()
            },
        )
}

/// What [`policy_shaped`] generates: how many tables and rules, and
/// whether the policy may keep state.
#[derive(Clone, Debug)]
pub struct PolicyShape {
    /// How many tables (each of 1 to 4 prefixes).
    pub tables: Range<usize>,
    /// How many rules.
    pub rules: Range<usize>,
    /// `false` makes the policy stateless (see [`stateless`]): for engines
    /// whose clock cannot follow the generators' virtual time.
    pub stateful: bool,
}

impl Default for PolicyShape {
    fn default() -> Self {
        PolicyShape {
            tables: 0..3,
            rules: 0..10,
            stateful: true,
        }
    }
}

/// Policies of the default [`PolicyShape`].
pub fn policy() -> impl Strategy<Value = Policy> {
    policy_shaped(PolicyShape::default())
}

pub fn policy_shaped(shape: PolicyShape) -> impl Strategy<Value = Policy> {
    let PolicyShape {
        tables,
        rules,
        stateful,
    } = shape;
    let tables =
        prop::collection::vec(prop::collection::btree_set(0..PREFIXES.len(), 1..5), tables);
    (options(), tables).prop_flat_map(move |(options, tables)| {
        let n = tables.len();
        (
            Just(options),
            Just(tables),
            prop::collection::vec(rule(n), rules.clone()),
        )
            .prop_map(move |(options, tables, rules)| {
                let (options, rules) = if stateful {
                    (options, rules)
                } else {
                    stateless(options, rules)
                };
                build_policy(options, tables, rules)
            })
    })
}

/// The stateless version of generated options and rules: conntrack off,
/// `limit` rules dropped, rates removed from `allow` rules.
pub fn stateless(mut options: Options, rules: Vec<RuleSpec>) -> (Options, Vec<RuleSpec>) {
    options.conntrack = false;
    let rules = rules
        .into_iter()
        .filter(|(action, _, _)| *action != Action::Limit)
        .map(|(action, matcher, _)| (action, matcher, None))
        .collect();
    (options, rules)
}

/// Generated policies that keep state (conntrack on, rate-limited rules)
/// and whose behaviour does not depend on the clock over a sub-second packet
/// sequence: see [`kernel_safe`]. For engines on a real clock (the kernel)
/// compared with the interpreter's virtual one; pair with
/// [`steps_without_time`].
pub fn policy_kernel_safe(
    tables: Range<usize>,
    rules: Range<usize>,
) -> impl Strategy<Value = Policy> {
    let tables =
        prop::collection::vec(prop::collection::btree_set(0..PREFIXES.len(), 1..5), tables);
    (options(), tables).prop_flat_map(move |(options, tables)| {
        let n = tables.len();
        (
            Just(options),
            Just(tables),
            prop::collection::vec(rule(n), rules.clone()),
        )
            .prop_map(|(options, tables, rules)| {
                let (options, rules) = kernel_safe(options, rules);
                build_policy(options, tables, rules)
            })
    })
}

/// The clock-independent stateful version of generated options and rules:
///
/// - conntrack on, timeouts the defaults raised to two minutes at least
///   (the shortest defaults, 10 s for a reset TCP flow, are close enough
///   to a stalled test thread to make a comparison flaky);
/// - conntrack and rate-limit tables of 1000 entries, far more than a
///   sequence's flows and keys, so no engine evicts (the kernel's LRU maps
///   evict approximately, the interpreter exactly);
/// - rates per minute (count 1 or 2, odd burst) or per hour (otherwise):
///   a token takes at least 30 s to come back, so no bucket refills during
///   a sequence on any clock, even on a loaded machine. Bursts stay 1 to 3.
pub fn kernel_safe(mut options: Options, rules: Vec<RuleSpec>) -> (Options, Vec<RuleSpec>) {
    options.conntrack = true;
    options.conntrack_size = 1000;
    options.ratelimit_size = 1000;
    let defaults = Options::default().timeouts;
    let at_least = |ns: u64| ns.max(120 * NS_PER_SEC);
    options.timeouts = Timeouts {
        tcp_syn: at_least(defaults.tcp_syn),
        tcp_established: at_least(defaults.tcp_established),
        tcp_closing: at_least(defaults.tcp_closing),
        tcp_rst: at_least(defaults.tcp_rst),
        udp: at_least(defaults.udp),
        udp_stream: at_least(defaults.udp_stream),
        icmp: at_least(defaults.icmp),
    };
    let slow = |rate: Rate| {
        let unit_ns = if rate.count <= 2 && rate.burst % 2 == 1 {
            60 * NS_PER_SEC
        } else {
            3600 * NS_PER_SEC
        };
        Rate {
            unit_ns,
            interval_ns: unit_ns / rate.count,
            burst: rate.burst.max(1),
            ..rate
        }
    };
    let rules = rules
        .into_iter()
        .map(|(action, matcher, rate)| (action, matcher, rate.map(slow)))
        .collect();
    (options, rules)
}

/// A policy of these options, tables (indices into [`PREFIXES`], named
/// `t0`, `t1`...) and rules (see [`rules`]).
pub fn build_policy(
    options: Options,
    tables: Vec<BTreeSet<usize>>,
    rules: Vec<RuleSpec>,
) -> Policy {
    let tables = tables
        .into_iter()
        .enumerate()
        .map(|(i, set)| Table {
            name: format!("t{i}"),
            span: Span::new(0, 0),
            prefixes: set.into_iter().map(|p| prefix(PREFIXES[p])).collect(),
            source_file: None,
        })
        .collect();
    Policy {
        file: FileId(0),
        interface: None,
        options,
        rules: self::rules(rules),
        tables,
        tests: Vec::new(),
    }
}

/// Numbers rule specs in order (`RuleId(i)`, identity `rule i`), without
/// labels, logging or spans.
pub fn rules(specs: Vec<RuleSpec>) -> Vec<Rule> {
    specs
        .into_iter()
        .enumerate()
        .map(|(i, (action, matcher, rate))| Rule {
            id: RuleId(i as u32),
            action,
            matcher,
            rate,
            label: None,
            log: false,
            span: Span::new(0, 0),
            identity: format!("rule {i}"),
        })
        .collect()
}

// ---- frames ----

/// A change to a well-formed frame that may make it malformed.
#[derive(Clone, Debug)]
pub enum Mutation {
    None,
    /// Keep only this many bytes.
    Truncate(usize),
    /// Overwrite one byte (flags, IHL, version, fragment bits, lengths...).
    SetByte(usize, u8),
    /// Insert VLAN tags (802.1Q or 802.1ad) with this id after the MACs.
    Vlans(u8, u16, bool),
    /// Insert IPv6 extension headers (next-header values) before the
    /// transport header; a no-op on IPv4.
    ExtHeaders(Vec<u8>),
    /// An ARP or other non-IP ethertype.
    Ethertype(u16),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        8 => Just(Mutation::None),
        1 => (0usize..80).prop_map(Mutation::Truncate),
        2 => (12usize..70, any::<u8>()).prop_map(|(at, b)| Mutation::SetByte(at, b)),
        // The TCP flags byte of an untagged IPv4 TCP frame, specifically.
        1 => any::<u8>().prop_map(|b| Mutation::SetByte(14 + 20 + 13, b)),
        // IPv4 fragment bits.
        1 => prop::sample::select(vec![0x20u8, 0x01, 0x40]).prop_map(|b| Mutation::SetByte(14 + 6, b)),
        2 => (1u8..4, prop::sample::select(vec![5u16, 7, 9]), any::<bool>())
            .prop_map(|(n, id, qinq)| Mutation::Vlans(n, id, qinq)),
        2 => prop::collection::vec(prop::sample::select(vec![0u8, 43, 60, 51, 44]), 1..6)
            .prop_map(Mutation::ExtHeaders),
        1 => prop::sample::select(vec![0x0806u16, 0x88cc]).prop_map(Mutation::Ethertype),
    ]
}

/// One fixed mutation of each kind, for frames that are not generated
/// (the repository policies' test packets).
pub fn sample_mutations() -> Vec<Mutation> {
    vec![
        Mutation::None,
        Mutation::Truncate(40),
        Mutation::SetByte(14 + 20 + 13, 0x29),
        Mutation::SetByte(14 + 6, 0x20),
        Mutation::Vlans(2, 7, true),
        Mutation::Vlans(3, 5, false),
        Mutation::ExtHeaders(vec![0, 60]),
        Mutation::ExtHeaders(vec![0, 60, 43, 60, 60]),
        Mutation::Ethertype(0x0806),
    ]
}

pub fn base_packet() -> impl Strategy<Value = Packet> {
    (
        prop::sample::select(vec![
            PROTO_TCP,
            PROTO_TCP,
            PROTO_UDP,
            PROTO_ICMP,
            PROTO_ICMPV6,
            47,
        ]),
        0..HOSTS.len(),
        0..HOSTS.len(),
        prop::sample::select(PORTS.to_vec()),
        prop::sample::select(PORTS.to_vec()),
        prop::sample::select(vec![
            tcp_flags::SYN,
            tcp_flags::SYN | tcp_flags::ACK,
            tcp_flags::ACK,
            tcp_flags::ACK | tcp_flags::PSH,
            tcp_flags::FIN | tcp_flags::ACK,
            tcp_flags::RST,
        ]),
        prop::sample::select(vec![0u8, 3, 8, 128, 129, 135]),
        0u8..2,
        prop::option::weighted(0.15, prop::sample::select(vec![5u16, 7])),
    )
        .prop_map(
            |(proto, s, d, sport, dport, flags, icmp_type, icmp_code, vlan)| {
                let src = host(s);
                // Keep both ends in one family: pick the destination among
                // hosts of the source's family.
                let same_family: Vec<usize> = (0..HOSTS.len())
                    .filter(|&i| host(i).is_ipv4() == src.is_ipv4())
                    .collect();
                let dst = host(same_family[d % same_family.len()]);
                Packet {
                    proto,
                    src,
                    dst,
                    src_port: sport,
                    dst_port: dport,
                    tcp_flags: flags,
                    icmp_type,
                    icmp_code,
                    vlan,
                    repeat: 1,
                }
            },
        )
}

pub fn apply(packet: &Packet, mutation: &Mutation) -> Vec<u8> {
    let mut frame = packet::build(packet);
    match mutation {
        Mutation::None => {}
        Mutation::Truncate(n) => frame.truncate(*n),
        Mutation::SetByte(at, b) => {
            if let Some(slot) = frame.get_mut(*at) {
                *slot = *b;
            }
        }
        Mutation::Vlans(n, id, qinq) => {
            let tpid: u16 = if *qinq { 0x88a8 } else { 0x8100 };
            let inner = [frame[12], frame[13]];
            let mut tags = Vec::new();
            for i in 0..*n {
                // Each tag carries the ethertype of what follows it.
                let next = if i + 1 == *n {
                    u16::from_be_bytes(inner)
                } else {
                    0x8100
                };
                tags.extend_from_slice(&id.to_be_bytes());
                tags.extend_from_slice(&next.to_be_bytes());
            }
            frame[12..14].copy_from_slice(&tpid.to_be_bytes());
            frame.splice(14..14, tags);
        }
        Mutation::ExtHeaders(kinds) => {
            if frame.len() < 14 + 40 || frame[12..14] != [0x86, 0xdd] {
                return frame;
            }
            let l3 = 14;
            let mut next_after = frame[l3 + 6];
            let mut exts = Vec::new();
            // Build back to front: each header names the one after it.
            for &kind in kinds.iter().rev() {
                let mut h = vec![next_after, 0, 0, 0, 0, 0, 0, 0];
                if kind == 51 {
                    // AH: length in 4-byte units minus 2; 12 bytes here.
                    h[1] = 1;
                    h.extend_from_slice(&[0, 0, 0, 0]);
                }
                h.extend(exts);
                exts = h;
                next_after = kind;
            }
            frame[l3 + 6] = next_after;
            let payload = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize + exts.len();
            frame[l3 + 4..l3 + 6].copy_from_slice(&(payload as u16).to_be_bytes());
            frame.splice(l3 + 40..l3 + 40, exts);
        }
        Mutation::Ethertype(t) => frame[12..14].copy_from_slice(&t.to_be_bytes()),
    }
    frame
}

#[derive(Clone, Debug)]
pub struct Step {
    pub outbound: bool,
    /// Replay the previous step's packet reversed (a reply), so conntrack
    /// hits are common.
    pub reply: bool,
    pub packet: Packet,
    pub mutation: Mutation,
    /// Virtual time advance before this packet.
    pub advance_ns: u64,
}

pub fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        base_packet(),
        mutation(),
        prop_oneof![
            4 => Just(0u64),
            3 => 1u64..200_000_000,
            1 => prop::sample::select(vec![NS_PER_SEC, 11 * NS_PER_SEC, 31 * NS_PER_SEC, 200 * NS_PER_SEC]),
        ],
    )
        .prop_map(|(outbound, reply, packet, mutation, advance_ns)| Step {
            outbound,
            reply,
            packet,
            mutation,
            advance_ns,
        });
    prop::collection::vec(step, 1..40)
}

/// [`steps`] with no time advance: for sequences run on a real clock,
/// where the caller cannot jump time (the caller's virtual clock may still
/// tick a little per packet).
pub fn steps_without_time() -> impl Strategy<Value = Vec<Step>> {
    steps().prop_map(|steps| {
        steps
            .into_iter()
            .map(|step| Step {
                advance_ns: 0,
                ..step
            })
            .collect()
    })
}

/// Steps over a few flows: each step is one of 1 to 3 base packets, as
/// generated or reversed, inbound or outbound, with its TCP flags drawn
/// anew and mostly well-formed, so that flows open, get established, close
/// and reset and buckets run dry as a matter of course. No time advance.
pub fn flow_steps() -> impl Strategy<Value = Vec<Step>> {
    let flags = prop::sample::select(vec![
        tcp_flags::SYN,
        tcp_flags::SYN | tcp_flags::ACK,
        tcp_flags::ACK,
        tcp_flags::FIN | tcp_flags::ACK,
        tcp_flags::RST,
        tcp_flags::RST | tcp_flags::ACK,
    ]);
    prop::collection::vec(base_packet(), 1..4).prop_flat_map(move |pool| {
        let step = (
            0..pool.len(),
            any::<bool>(),
            prop::bool::weighted(0.3),
            flags.clone(),
            prop_oneof![6 => Just(Mutation::None), 1 => mutation()],
        );
        prop::collection::vec(step, 1..40).prop_map(move |steps| {
            steps
                .into_iter()
                .map(|(i, reverse, outbound, tcp_flags, mutation)| {
                    let base = Packet {
                        tcp_flags,
                        ..pool[i].clone()
                    };
                    Step {
                        outbound,
                        reply: false,
                        packet: if reverse { reversed(&base) } else { base },
                        mutation,
                        advance_ns: 0,
                    }
                })
                .collect()
        })
    })
}

pub fn reversed(p: &Packet) -> Packet {
    let icmp_type = match p.icmp_type {
        8 => 0,
        128 => 129,
        t => t,
    };
    Packet {
        src: p.dst,
        dst: p.src,
        src_port: p.dst_port,
        dst_port: p.src_port,
        icmp_type,
        tcp_flags: if p.tcp_flags == tcp_flags::SYN {
            tcp_flags::SYN | tcp_flags::ACK
        } else {
            p.tcp_flags
        },
        ..p.clone()
    }
}

// ---- the repository's policies ----

/// Every `*.pf` file directly in `dir` as (file stem, text), sorted by stem.
pub fn policy_files(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "pf"))
        .map(|path| {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 name")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("readable policy file");
            (stem, text)
        })
        .collect();
    out.sort();
    out
}

/// The repository's `policies/` directory.
pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("policies")
}

/// Reads table files relative to `policies/`.
pub struct PoliciesLoader;

impl TableLoader for PoliciesLoader {
    fn load(&self, _policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        std::fs::read_to_string(policies_dir().join(path))
            .map(|text| LoadedFile {
                name: format!("policies/{path}"),
                text,
            })
            .map_err(|e| e.to_string())
    }
}

/// Every `policies/*.pf` as (stem, checked policy), sorted by name. Panics
/// when one does not check: they are the repository's own.
pub fn repository_policies() -> Vec<(String, Policy)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(policies_dir())
        .expect("policies/ exists")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pf"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 name")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("readable policy");
            let mut files = Files::new();
            let file = files.add(format!("policies/{stem}.pf"), text);
            let checked = crate::check(&mut files, file, &PoliciesLoader);
            let failed = checked.has_errors();
            let policy = checked
                .policy
                .filter(|_| !failed)
                .unwrap_or_else(|| panic!("{stem} checks"));
            (stem, policy)
        })
        .collect()
}
