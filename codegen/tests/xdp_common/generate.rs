//! Policy and frame generators for the differential tests, copied from
//! `compiler/tests/ir_vs_interp.rs` (small address and port universes,
//! nesting, negation, tables, every rate key, malformed frames: truncations,
//! byte flips, VLAN tags, IPv6 extension headers, non-IP ethertypes).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use patronus_compiler::diag::FileId;
use patronus_compiler::net::{PortRange, Prefix, normalize_ranges};
use patronus_compiler::packet;
use patronus_compiler::typed::{
    AddrMatch, AddrSet, Family, IcmpMatch, Match, NS_PER_SEC, Options, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP, Packet, Policy, PortMatch, Rate, RateKey, Rule, RuleId, Table, TableId,
    TcpFlagsMatch, tcp_flags,
};
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

pub fn rule(tables: usize) -> impl Strategy<Value = (Action, Match, Option<Rate>)> {
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

pub fn policy() -> impl Strategy<Value = Policy> {
    let tables = prop::collection::vec(prop::collection::btree_set(0..PREFIXES.len(), 1..5), 0..3);
    (options(), tables).prop_flat_map(|(options, tables)| {
        let n = tables.len();
        (
            Just(options),
            Just(tables),
            prop::collection::vec(rule(n), 0..10),
        )
            .prop_map(|(options, tables, rules)| build_policy(options, tables, rules))
    })
}

pub fn build_policy(
    options: Options,
    tables: Vec<BTreeSet<usize>>,
    rules: Vec<(Action, Match, Option<Rate>)>,
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
    let rules = rules
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
        .collect();
    Policy {
        file: FileId(0),
        interface: None,
        options,
        rules,
        tables,
        tests: Vec::new(),
    }
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
