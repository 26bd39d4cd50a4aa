//! Unit tests of the reference interpreter on hand-built typed policies:
//! every invalid class, every conntrack timeout, token buckets, phase order
//! and counters.

use std::collections::BTreeSet;
use std::net::IpAddr;

use patronus_compiler::frame::{self, Frame};
use patronus_compiler::interp::Interpreter;
use patronus_compiler::net::{PortRange, Prefix};
use patronus_compiler::packet;
use patronus_compiler::semantics::{Counter, InvalidClass, Outcome, Phase};
use patronus_compiler::testgen::{RuleSpec, build_policy};
use patronus_compiler::typed::{
    AddrMatch, AddrSet, Match, NS_PER_SEC, Options, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
    Packet, Policy, PortMatch, Rate, RateKey, RuleId, tcp_flags,
};
use patronus_grammar::ast::{Action, Verdict};

const MS: u64 = 1_000_000;
const HOST4: &str = "10.77.0.2";
const REMOTE4: &str = "192.0.2.10";

// ---- building policies and packets ----

fn policy(rules: Vec<RuleSpec>) -> Policy {
    policy_with(Options::default(), rules)
}

fn policy_with(options: Options, rules: Vec<RuleSpec>) -> Policy {
    build_policy(options, Vec::new(), rules)
}

fn proto(p: u8) -> Match {
    Match {
        protos: Some(BTreeSet::from([p])),
        ..Match::default()
    }
}

fn tcp_to_port(port: u16) -> Match {
    Match {
        dst_ports: Some(PortMatch {
            negated: false,
            ranges: vec![PortRange { lo: port, hi: port }],
        }),
        ..proto(PROTO_TCP)
    }
}

fn udp_any() -> Match {
    proto(PROTO_UDP)
}

fn from(prefix: &str) -> Match {
    let (addr, len) = prefix.split_once('/').unwrap();
    let prefix = Prefix::new(addr.parse().unwrap(), len.parse().unwrap()).unwrap();
    Match {
        src: Some(AddrMatch {
            negated: false,
            set: AddrSet {
                prefixes: vec![prefix],
                tables: vec![],
            },
        }),
        ..Match::default()
    }
}

fn per_second(count: u64, burst: u64, key: RateKey) -> Rate {
    Rate {
        count,
        unit_ns: NS_PER_SEC,
        interval_ns: NS_PER_SEC / count,
        burst,
        key,
    }
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Packet {
    Packet {
        proto: PROTO_TCP,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sport,
        dst_port: dport,
        tcp_flags: flags,
        icmp_type: 8,
        icmp_code: 0,
        vlan: None,
        repeat: 1,
    }
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
    Packet {
        proto: PROTO_UDP,
        ..tcp(src, sport, dst, dport, 0)
    }
}

fn icmp(src: &str, dst: &str, ty: u8) -> Packet {
    let proto = if src.contains(':') {
        PROTO_ICMPV6
    } else {
        PROTO_ICMP
    };
    Packet {
        proto,
        icmp_type: ty,
        src_port: 0,
        dst_port: 0,
        ..tcp(src, 0, dst, 0, 0)
    }
}

fn syn(src: &str, sport: u16, dport: u16) -> Packet {
    tcp(src, sport, HOST4, dport, tcp_flags::SYN)
}

fn ack(src: &str, sport: u16, dport: u16) -> Packet {
    tcp(src, sport, HOST4, dport, tcp_flags::ACK)
}

fn reverse(p: &Packet) -> Packet {
    Packet {
        src: p.dst,
        dst: p.src,
        src_port: p.dst_port,
        dst_port: p.src_port,
        ..p.clone()
    }
}

fn send(interp: &mut Interpreter, p: &Packet, now: u64) -> Outcome {
    interp.inbound(&packet::build(p), now)
}

fn verdict(interp: &mut Interpreter, p: &Packet, now: u64) -> (Verdict, Phase) {
    let o = send(interp, p, now);
    (o.verdict, o.phase)
}

const PASS_EST: (Verdict, Phase) = (Verdict::Pass, Phase::Established);
const PASS_ALLOW: (Verdict, Phase) = (Verdict::Pass, Phase::Allow);
const DROP_DEFAULT: (Verdict, Phase) = (Verdict::Drop, Phase::Default);

// ---- phase 1: every invalid class ----

fn parse(frame: &[u8]) -> Result<Frame, InvalidClass> {
    frame::parse(frame, &Options::default())
}

fn patched(p: &Packet, at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = packet::build(p);
    f[at..at + bytes.len()].copy_from_slice(bytes);
    f
}

/// Offsets in an untagged IPv4 frame.
const IP: usize = 14;
const L4: usize = 34;
/// The transport header of an untagged IPv6 frame.
const L4_6: usize = 54;

fn v6_with_exts(exts: &[u8], next_after: u8, tcp_flags_byte: u8) -> Vec<u8> {
    // An IPv6 TCP SYN whose extension headers (8-byte HBH/DestOpts/Routing
    // or a Fragment header) are `exts`, each pointing at the next.
    let base = packet::build(&tcp(
        "2001:db8::1",
        40000,
        "2001:db8::2",
        80,
        tcp_flags_byte,
    ));
    let mut chain = Vec::new();
    for i in 0..exts.len() {
        let next = exts.get(i + 1).copied().unwrap_or(next_after);
        chain.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    let mut f = base[..IP + 40].to_vec();
    f[IP + 6] = exts.first().copied().unwrap_or(next_after);
    let plen = (chain.len() + base.len() - L4_6) as u16;
    f[IP + 4..IP + 6].copy_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(&chain);
    f.extend_from_slice(&base[L4_6..]);
    f
}

#[test]
fn every_invalid_class_is_recognised() {
    use InvalidClass::*;
    let syn4 = syn(REMOTE4, 40000, 80);
    let good = packet::build(&syn4);
    let mut vlan3 = good[..12].to_vec();
    for _ in 0..3 {
        vlan3.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    }
    vlan3.extend_from_slice(&good[12..]);
    let mut cut_vlan = good[..12].to_vec();
    cut_vlan.extend_from_slice(&[0x81, 0x00, 0x00]);
    let v6 = packet::build(&tcp(
        "2001:db8::1",
        40000,
        "2001:db8::2",
        80,
        tcp_flags::SYN,
    ));
    let mut short_icmp = packet::build(&icmp(REMOTE4, HOST4, 8));
    short_icmp.truncate(L4 + 4);
    short_icmp[IP + 2..IP + 4].copy_from_slice(&24u16.to_be_bytes());

    let cases: Vec<(InvalidClass, Vec<u8>)> = vec![
        (EthTruncated, good[..13].to_vec()),
        (EthTruncated, cut_vlan),
        (TooManyVlans, vlan3),
        (Ipv4Truncated, good[..IP + 19].to_vec()),
        (Ipv4Version, patched(&syn4, IP, &[0x65])),
        (Ipv4Ihl, patched(&syn4, IP, &[0x44])),
        (Ipv4Options, {
            // IHL 15 (60 bytes) in a frame of 20 + 20 bytes of IP.
            patched(&syn4, IP, &[0x4F])
        }),
        (
            Ipv4TotalLength,
            patched(&syn4, IP + 2, &200u16.to_be_bytes()),
        ),
        (
            Ipv4TotalLength,
            patched(&syn4, IP + 2, &19u16.to_be_bytes()),
        ),
        (Ipv6Truncated, v6[..IP + 39].to_vec()),
        (Ipv6Version, {
            let mut f = v6.clone();
            f[IP] = 0x40;
            f
        }),
        (Ipv6PayloadLength, {
            let mut f = v6.clone();
            f[IP + 4..IP + 6].copy_from_slice(&400u16.to_be_bytes());
            f
        }),
        (
            Ipv6ExtHeaders,
            v6_with_exts(&[0, 60, 43, 60, 60], PROTO_TCP, tcp_flags::SYN),
        ),
        (Ipv6ExtHeaders, {
            // A Hop-by-Hop header claiming 16 bytes where only 8 + 20 remain... cut short.
            let mut f = v6_with_exts(&[0], PROTO_TCP, tcp_flags::SYN);
            f[L4_6 + 1] = 200;
            f
        }),
        (Fragment, patched(&syn4, IP + 6, &[0x20, 0x00])),
        (Fragment, patched(&syn4, IP + 6, &[0x00, 0x01])),
        (Fragment, v6_with_exts(&[44], PROTO_TCP, tcp_flags::SYN)),
        (TcpTruncated, {
            let mut f = good[..L4 + 10].to_vec();
            f[IP + 2..IP + 4].copy_from_slice(&30u16.to_be_bytes());
            f
        }),
        (TcpDataOffset, patched(&syn4, L4 + 12, &[0x40])),
        (TcpDataOffset, patched(&syn4, L4 + 12, &[0xF0])),
        (
            TcpFlags,
            packet::build(&tcp(REMOTE4, 1, HOST4, 80, tcp_flags::SYN | tcp_flags::FIN)),
        ),
        (
            TcpFlags,
            packet::build(&tcp(REMOTE4, 1, HOST4, 80, tcp_flags::SYN | tcp_flags::RST)),
        ),
        (
            TcpFlags,
            packet::build(&tcp(
                REMOTE4,
                1,
                HOST4,
                80,
                tcp_flags::FIN | tcp_flags::RST | tcp_flags::ACK,
            )),
        ),
        (TcpFlags, packet::build(&tcp(REMOTE4, 1, HOST4, 80, 0))),
        (
            TcpFlags,
            packet::build(&tcp(
                REMOTE4,
                1,
                HOST4,
                80,
                tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG,
            )),
        ),
        (
            TcpPortZero,
            packet::build(&tcp(REMOTE4, 40000, HOST4, 0, tcp_flags::SYN)),
        ),
        (
            TcpPortZero,
            packet::build(&tcp(REMOTE4, 0, HOST4, 80, tcp_flags::SYN)),
        ),
        (UdpTruncated, {
            let mut f = packet::build(&udp(REMOTE4, 5353, HOST4, 53))[..L4 + 6].to_vec();
            f[IP + 2..IP + 4].copy_from_slice(&26u16.to_be_bytes());
            f
        }),
        (
            UdpLength,
            patched(&udp(REMOTE4, 5353, HOST4, 53), L4 + 4, &4u16.to_be_bytes()),
        ),
        (UdpPortZero, packet::build(&udp(REMOTE4, 0, HOST4, 53))),
        (UdpPortZero, packet::build(&udp(REMOTE4, 5353, HOST4, 0))),
        (IcmpTruncated, short_icmp),
        (
            Land,
            packet::build(&tcp(HOST4, 80, HOST4, 80, tcp_flags::SYN)),
        ),
        (Land, packet::build(&icmp(HOST4, HOST4, 8))),
        (
            Land,
            packet::build(&Packet {
                proto: 47,
                ..icmp("2001:db8::1", "2001:db8::1", 0)
            }),
        ),
    ];
    let mut seen = BTreeSet::new();
    for (class, frame) in &cases {
        assert_eq!(parse(frame), Err(*class), "expected {}", class.name());
        seen.insert(*class);
    }
    let all: BTreeSet<_> = InvalidClass::ALL.iter().copied().collect();
    assert_eq!(seen, all, "every class has a case");

    // And an invalid frame is decided in phase 1 with its class counted.
    let p = policy(vec![(Action::Allow, Match::default(), None)]);
    let mut interp = Interpreter::new(&p);
    let out = interp.inbound(&cases[5].1, 0);
    assert_eq!(out.verdict, Verdict::Drop);
    assert_eq!(
        out.counters,
        vec![Counter::Phase(Phase::Invalid(InvalidClass::Ipv4Ihl))]
    );
}

#[test]
fn corner_cases_that_are_valid() {
    let syn4 = syn(REMOTE4, 40000, 80);
    // Ethernet padding after the IP packet.
    let mut padded = packet::build(&syn4);
    padded.extend_from_slice(&[0; 10]);
    assert!(matches!(parse(&padded), Ok(Frame::Ip(_))));
    // Land needs equal ports for TCP.
    assert!(
        parse(&packet::build(&tcp(
            HOST4,
            41005,
            HOST4,
            80,
            tcp_flags::SYN
        )))
        .is_ok()
    );
    // Exactly four extension headers; the TCP header after them is read.
    let Ok(Frame::Ip(ip)) = parse(&v6_with_exts(&[0, 60, 43, 60], PROTO_TCP, tcp_flags::SYN))
    else {
        panic!("4 extension headers are allowed")
    };
    assert_eq!(ip.proto, PROTO_TCP);
    assert_eq!(ip.ports(), Some((40000, 80)));
    // A fragment is kept when fragments are not dropped; a non-first one has no ports.
    let keep = Options {
        fragments_drop: false,
        ..Options::default()
    };
    let Ok(Frame::Ip(ip)) = frame::parse(&patched(&syn4, IP + 6, &[0x00, 0x01]), &keep) else {
        panic!("fragment kept")
    };
    assert_eq!(ip.ports(), None);
    // Two VLAN tags: the outer id is the packet's VLAN.
    let good = packet::build(&syn4);
    let mut qinq = good[..12].to_vec();
    qinq.extend_from_slice(&[0x88, 0xA8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x65]);
    qinq.extend_from_slice(&good[12..]);
    let Ok(Frame::Ip(ip)) = parse(&qinq) else {
        panic!("QinQ is valid")
    };
    assert_eq!(ip.vlan, Some(100));
}

// ---- pre-phase ----

#[test]
fn arp_ndp_and_other_ethertypes() {
    let mut arp = packet::build(&syn(REMOTE4, 1, 80))[..14].to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let mut lldp = arp.clone();
    lldp[12..14].copy_from_slice(&[0x88, 0xCC]);
    let ns = icmp("fe80::1", "ff02::1:ff00:2", 135);
    let mut ns_hop64 = packet::build(&ns);
    ns_hop64[IP + 7] = 64;

    let p = policy(vec![]);
    let mut interp = Interpreter::new(&p);
    assert_eq!(interp.inbound(&arp, 0).phase, Phase::Arp);
    assert_eq!(interp.inbound(&arp, 0).verdict, Verdict::Pass);
    assert_eq!(verdict(&mut interp, &ns, 0), (Verdict::Pass, Phase::Ndp));
    assert_eq!(interp.inbound(&ns_hop64, 0).phase, Phase::Default);
    assert_eq!(interp.inbound(&lldp, 0).phase, Phase::Default);
    // A malformed NDP frame is invalid, not NDP.
    let mut short_ns = packet::build(&ns);
    short_ns.truncate(L4_6 + 4);
    short_ns[IP + 4..IP + 6].copy_from_slice(&4u16.to_be_bytes());
    assert_eq!(
        interp.inbound(&short_ns, 0).phase,
        Phase::Invalid(InvalidClass::IcmpTruncated)
    );

    let strict = Options {
        arp_pass: false,
        ndp_pass: false,
        default: Verdict::Pass,
        ..Options::default()
    };
    let p = policy_with(strict, vec![]);
    let mut interp = Interpreter::new(&p);
    assert_eq!(interp.inbound(&arp, 0).verdict, Verdict::Drop);
    assert_eq!(verdict(&mut interp, &ns, 0), (Verdict::Drop, Phase::Ndp));
    // Non-IP goes to the default, here allow.
    assert_eq!(interp.inbound(&lldp, 0).verdict, Verdict::Pass);
}

// ---- phases 2, 5, 6 ----

#[test]
fn deny_beats_allow_regardless_of_file_order() {
    let deny = (Action::Deny, from("192.0.2.0/24"), None);
    let allow = (Action::Allow, tcp_to_port(80), None);
    for rules in [vec![deny.clone(), allow.clone()], vec![allow, deny]] {
        let deny_id = RuleId(rules.iter().position(|r| r.0 == Action::Deny).unwrap() as u32);
        let p = policy(rules);
        let mut interp = Interpreter::new(&p);
        let out = send(&mut interp, &syn(REMOTE4, 40000, 80), 0);
        assert_eq!(
            (out.verdict, out.phase, out.rule),
            (Verdict::Drop, Phase::Deny, Some(deny_id))
        );
        assert_eq!(
            out.counters,
            vec![Counter::Rule(deny_id), Counter::Phase(Phase::Deny)]
        );
        assert_eq!(
            verdict(&mut interp, &syn("198.51.100.1", 40000, 80), 0),
            PASS_ALLOW
        );
    }
}

#[test]
fn deny_wins_over_an_established_flow() {
    let p = policy(vec![
        (Action::Allow, tcp_to_port(80), None),
        (Action::Deny, from("192.0.2.0/24"), None),
    ]);
    let mut interp = Interpreter::new(&p);
    let out = tcp(HOST4, 50000, REMOTE4, 443, tcp_flags::SYN);
    interp.outbound(&packet::build(&out), 0);
    let reply = reverse(&Packet {
        tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
        ..out
    });
    assert_eq!(
        verdict(&mut interp, &reply, MS),
        (Verdict::Drop, Phase::Deny)
    );
}

#[test]
fn first_matching_allow_decides_and_default_applies() {
    let p = policy(vec![
        (Action::Allow, tcp_to_port(22), None),
        (Action::Allow, proto(PROTO_TCP), None),
    ]);
    let mut interp = Interpreter::new(&p);
    let out = send(&mut interp, &syn(REMOTE4, 40000, 22), 0);
    assert_eq!((out.phase, out.rule), (Phase::Allow, Some(RuleId(0))));
    let out = send(&mut interp, &syn(REMOTE4, 40000, 23), 0);
    assert_eq!(out.rule, Some(RuleId(1)));
    assert_eq!(
        verdict(&mut interp, &udp(REMOTE4, 5000, HOST4, 53), 0),
        DROP_DEFAULT
    );
}

#[test]
fn ports_only_match_tcp_and_udp_and_vlan_matches_the_outer_tag() {
    let any_port_but_80 = Match {
        dst_ports: Some(PortMatch {
            negated: true,
            ranges: vec![PortRange { lo: 80, hi: 80 }],
        }),
        ..Match::default()
    };
    let vlan7 = Match {
        vlan: Some(7),
        ..proto(PROTO_UDP)
    };
    let p = policy(vec![
        (Action::Allow, any_port_but_80, None),
        (Action::Allow, vlan7, None),
    ]);
    let mut interp = Interpreter::new(&p);
    assert_eq!(
        verdict(&mut interp, &icmp(REMOTE4, HOST4, 8), 0),
        DROP_DEFAULT
    );
    assert_eq!(verdict(&mut interp, &syn(REMOTE4, 1, 80), 0), DROP_DEFAULT);
    assert_eq!(verdict(&mut interp, &syn(REMOTE4, 1, 81), 0), PASS_ALLOW);
    let tagged = Packet {
        vlan: Some(7),
        ..udp(REMOTE4, 1, HOST4, 80)
    };
    let out = send(&mut interp, &tagged, 0);
    assert_eq!((out.phase, out.rule), (Phase::Allow, Some(RuleId(1))));
    let other_tag = Packet {
        vlan: Some(8),
        src_port: 2,
        ..tagged
    };
    assert_eq!(verdict(&mut interp, &other_tag, 0), DROP_DEFAULT);
}

// ---- phase 3: conntrack ----

#[test]
fn lone_syn_is_never_established() {
    let p = policy(vec![(Action::Allow, tcp_to_port(80), None)]);
    let mut interp = Interpreter::new(&p);
    let s = syn(REMOTE4, 40000, 80);
    assert_eq!(verdict(&mut interp, &s, 0), PASS_ALLOW);
    assert_eq!(
        verdict(&mut interp, &s, MS),
        PASS_ALLOW,
        "a repeated SYN is still new"
    );
    assert_eq!(
        verdict(&mut interp, &ack(REMOTE4, 40000, 80), 2 * MS),
        PASS_EST
    );
}

#[test]
fn host_originated_flow_lets_replies_in() {
    let p = policy(vec![]);
    let mut interp = Interpreter::new(&p);
    let out = tcp(HOST4, 50000, "203.0.113.9", 443, tcp_flags::SYN);
    let reply = reverse(&Packet {
        tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
        ..out.clone()
    });
    assert_eq!(verdict(&mut interp, &reply, 0), DROP_DEFAULT, "no flow yet");
    interp.outbound(&packet::build(&out), MS);
    assert_eq!(verdict(&mut interp, &reply, 2 * MS), PASS_EST);
    // Not the same flow: another port, or the host's own tuple sent inbound.
    let other = Packet {
        src_port: 444,
        ..reply.clone()
    };
    assert_eq!(verdict(&mut interp, &other, 3 * MS), DROP_DEFAULT);

    // UDP and ICMP echo replies likewise.
    let dns = udp(HOST4, 33000, "192.0.2.53", 53);
    interp.outbound(&packet::build(&dns), 0);
    assert_eq!(verdict(&mut interp, &reverse(&dns), MS), PASS_EST);
    let ping = icmp(HOST4, "192.0.2.1", 8);
    interp.outbound(&packet::build(&ping), 0);
    assert_eq!(
        verdict(&mut interp, &reverse(&icmp(HOST4, "192.0.2.1", 0)), MS),
        PASS_EST
    );
    // An inbound echo *request* does not match the host's request.
    assert_eq!(
        verdict(&mut interp, &icmp("192.0.2.1", HOST4, 8), MS),
        DROP_DEFAULT
    );
}

#[test]
fn conntrack_off_tracks_nothing() {
    let options = Options {
        conntrack: false,
        ..Options::default()
    };
    let p = policy_with(options, vec![(Action::Allow, tcp_to_port(80), None)]);
    let mut interp = Interpreter::new(&p);
    let out = tcp(HOST4, 50000, REMOTE4, 443, tcp_flags::SYN);
    interp.outbound(&packet::build(&out), 0);
    assert_eq!(
        verdict(
            &mut interp,
            &reverse(&Packet {
                tcp_flags: tcp_flags::ACK,
                ..out
            }),
            MS
        ),
        DROP_DEFAULT
    );
    assert_eq!(verdict(&mut interp, &ack(REMOTE4, 1, 80), 0), PASS_ALLOW);
    assert_eq!(verdict(&mut interp, &ack(REMOTE4, 1, 80), MS), PASS_ALLOW);
    assert_eq!(interp.tracked_flows(), 0);
}

/// After `setup` (outbound packets at time 0, `to` the inbound reply), the
/// reply is established just before `timeout` of idleness and not at it.
fn assert_expires_after(setup: &[Packet], probe: &Packet, timeout: u64) {
    let p = policy(vec![]);
    for (at, expect) in [(timeout - 1, PASS_EST), (timeout, DROP_DEFAULT)] {
        let mut interp = Interpreter::new(&p);
        for (i, s) in setup.iter().enumerate() {
            if s.src == HOST4.parse::<IpAddr>().unwrap() {
                interp.outbound(&packet::build(s), i as u64);
            } else {
                assert_eq!(
                    verdict(&mut interp, s, i as u64),
                    PASS_EST,
                    "setup step {i}"
                );
            }
        }
        let last = setup.len() as u64 - 1;
        assert_eq!(
            verdict(&mut interp, probe, last + at),
            expect,
            "{probe:?} after {at} ns"
        );
    }
}

#[test]
fn every_timeout() {
    let t = Options::default().timeouts;
    let out_syn = tcp(HOST4, 50000, REMOTE4, 443, tcp_flags::SYN);
    let in_synack = reverse(&Packet {
        tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
        ..out_syn.clone()
    });
    let out_ack = Packet {
        tcp_flags: tcp_flags::ACK,
        ..out_syn.clone()
    };
    let in_ack = reverse(&out_ack);
    let out_fin = Packet {
        tcp_flags: tcp_flags::FIN | tcp_flags::ACK,
        ..out_syn.clone()
    };
    let out_rst = Packet {
        tcp_flags: tcp_flags::RST | tcp_flags::ACK,
        ..out_syn.clone()
    };

    // tcp-syn: only a SYN was seen.
    assert_expires_after(std::slice::from_ref(&out_syn), &in_synack, t.tcp_syn);
    // tcp-established: a packet without SYN was seen.
    assert_expires_after(
        &[out_syn.clone(), in_synack.clone(), out_ack],
        &in_ack,
        t.tcp_established,
    );
    // tcp-closing: after a FIN.
    assert_expires_after(
        &[out_syn.clone(), in_synack.clone(), out_fin],
        &in_ack,
        t.tcp_closing,
    );
    // tcp-rst: after a RST.
    assert_expires_after(&[out_syn, in_synack, out_rst], &in_ack, t.tcp_rst);

    // udp: one direction; udp-stream: both.
    let dns = udp(HOST4, 33000, "192.0.2.53", 53);
    assert_expires_after(std::slice::from_ref(&dns), &reverse(&dns), t.udp);
    assert_expires_after(&[dns.clone(), reverse(&dns)], &reverse(&dns), t.udp_stream);

    // icmp: echo request out, reply in.
    let ping = icmp(HOST4, "192.0.2.1", 8);
    assert_expires_after(
        std::slice::from_ref(&ping),
        &reverse(&icmp(HOST4, "192.0.2.1", 0)),
        t.icmp,
    );
}

#[test]
fn timeouts_come_from_options_and_count_from_the_last_packet() {
    let mut options = Options::default();
    options.timeouts.udp = 5 * MS;
    let p = policy_with(options, vec![]);
    let mut interp = Interpreter::new(&p);
    let dns = udp(HOST4, 33000, "192.0.2.53", 53);
    interp.outbound(&packet::build(&dns), 0);
    interp.outbound(&packet::build(&dns), 4 * MS);
    assert_eq!(verdict(&mut interp, &reverse(&dns), 8 * MS), PASS_EST);
}

#[test]
fn conntrack_is_an_lru_of_conntrack_size() {
    let options = Options {
        conntrack_size: 2,
        ..Options::default()
    };
    let p = policy_with(options, vec![]);
    let mut interp = Interpreter::new(&p);
    let flows: Vec<Packet> = (0..3)
        .map(|i| udp(HOST4, 33000 + i, "192.0.2.53", 53))
        .collect();
    interp.outbound(&packet::build(&flows[0]), 0);
    interp.outbound(&packet::build(&flows[1]), 1);
    // Using flow 0 makes flow 1 the least recently used.
    assert_eq!(verdict(&mut interp, &reverse(&flows[0]), 2), PASS_EST);
    interp.outbound(&packet::build(&flows[2]), 3);
    assert_eq!(interp.tracked_flows(), 2);
    assert_eq!(verdict(&mut interp, &reverse(&flows[1]), 4), DROP_DEFAULT);
    assert_eq!(verdict(&mut interp, &reverse(&flows[0]), 5), PASS_EST);
    assert_eq!(verdict(&mut interp, &reverse(&flows[2]), 6), PASS_EST);
}

#[test]
fn lone_syn_reopens_a_closed_flow() {
    let p = policy(vec![(Action::Allow, tcp_to_port(80), None)]);
    let mut interp = Interpreter::new(&p);
    let rst = tcp(REMOTE4, 40000, HOST4, 80, tcp_flags::RST | tcp_flags::ACK);
    assert_eq!(
        verdict(&mut interp, &syn(REMOTE4, 40000, 80), 0),
        PASS_ALLOW
    );
    assert_eq!(verdict(&mut interp, &rst, MS), PASS_EST);
    // A new SYN on the same ports starts over with the tcp-syn timeout (120 s), not 10 s.
    assert_eq!(
        verdict(&mut interp, &syn(REMOTE4, 40000, 80), 2 * MS),
        PASS_ALLOW
    );
    assert_eq!(
        verdict(
            &mut interp,
            &ack(REMOTE4, 40000, 80),
            2 * MS + 20 * NS_PER_SEC
        ),
        PASS_EST
    );
}

// ---- phase 4: rate limits ----

#[test]
fn token_bucket_burst_and_refill() {
    let ssh = (
        Action::Allow,
        tcp_to_port(22),
        Some(per_second(10, 3, RateKey::Src)),
    );
    let p = policy(vec![ssh]);
    let mut interp = Interpreter::new(&p);
    for i in 0..3 {
        assert_eq!(
            verdict(&mut interp, &syn(REMOTE4, 40000 + i, 22), 0),
            PASS_ALLOW,
            "burst {i}"
        );
    }
    let out = send(&mut interp, &syn(REMOTE4, 40010, 22), 0);
    assert_eq!(
        (out.verdict, out.phase, out.rule),
        (Verdict::Drop, Phase::RateLimit, Some(RuleId(0)))
    );
    assert_eq!(
        out.counters,
        vec![Counter::Rule(RuleId(0)), Counter::Phase(Phase::RateLimit)]
    );
    // Another source has its own bucket.
    assert_eq!(
        verdict(&mut interp, &syn("192.0.2.11", 40000, 22), 0),
        PASS_ALLOW
    );
    // One token per 100 ms.
    assert_eq!(
        verdict(&mut interp, &syn(REMOTE4, 40011, 22), 99 * MS),
        (Verdict::Drop, Phase::RateLimit)
    );
    assert_eq!(
        verdict(&mut interp, &syn(REMOTE4, 40012, 22), 100 * MS),
        PASS_ALLOW
    );
    assert_eq!(
        verdict(&mut interp, &syn(REMOTE4, 40013, 22), 100 * MS),
        (Verdict::Drop, Phase::RateLimit)
    );
    // Refill stops at the burst.
    for i in 0..3 {
        assert_eq!(
            verdict(&mut interp, &syn(REMOTE4, 40020 + i, 22), 60 * NS_PER_SEC),
            PASS_ALLOW
        );
    }
    assert_eq!(
        verdict(&mut interp, &syn(REMOTE4, 40030, 22), 60 * NS_PER_SEC),
        (Verdict::Drop, Phase::RateLimit)
    );
}

#[test]
fn established_packets_are_never_charged() {
    let web = (
        Action::Allow,
        tcp_to_port(80),
        Some(per_second(1, 1, RateKey::Global)),
    );
    let p = policy(vec![web]);
    let mut interp = Interpreter::new(&p);
    let out = send(&mut interp, &syn(REMOTE4, 40000, 80), 0);
    assert_eq!(
        out.counters,
        vec![Counter::Rule(RuleId(0)), Counter::Phase(Phase::Allow)]
    );
    for i in 1..50 {
        assert_eq!(verdict(&mut interp, &ack(REMOTE4, 40000, 80), i), PASS_EST);
    }
    // The bucket still had its one token taken by the SYN, and no more.
    assert_eq!(
        verdict(&mut interp, &syn("192.0.2.99", 40000, 80), 50),
        (Verdict::Drop, Phase::RateLimit)
    );
    assert_eq!(
        verdict(&mut interp, &syn("192.0.2.99", 40000, 80), NS_PER_SEC),
        PASS_ALLOW
    );
}

#[test]
fn limits_charge_in_file_order_and_earlier_tokens_stay_taken() {
    let generous = (
        Action::Limit,
        proto(PROTO_UDP),
        Some(per_second(1, 5, RateKey::Global)),
    );
    let strict = (
        Action::Limit,
        udp_any(),
        Some(per_second(1, 1, RateKey::Dst)),
    );
    let allow = (Action::Allow, udp_any(), None);
    let options = Options {
        conntrack: false,
        ..Options::default()
    };
    let p = policy_with(options, vec![generous, strict, allow]);
    let mut interp = Interpreter::new(&p);
    let a = udp(REMOTE4, 1000, HOST4, 53);
    let out = send(&mut interp, &a, 0);
    assert_eq!(
        out.counters,
        vec![
            Counter::Rule(RuleId(0)),
            Counter::Rule(RuleId(1)),
            Counter::Rule(RuleId(2)),
            Counter::Phase(Phase::Allow)
        ]
    );
    // The strict per-dst bucket is empty now; each drop still costs the generous one a token.
    for i in 0..4 {
        let out = send(&mut interp, &a, i + 1);
        assert_eq!(
            (out.phase, out.rule),
            (Phase::RateLimit, Some(RuleId(1))),
            "drop {i}"
        );
    }
    // 1 + 4 tokens of 5 are gone: the global bucket alone now drops, for any destination.
    let other_dst = udp(REMOTE4, 1000, "10.77.0.3", 53);
    let out = send(&mut interp, &other_dst, 10);
    assert_eq!((out.phase, out.rule), (Phase::RateLimit, Some(RuleId(0))));
    assert_eq!(
        out.counters,
        vec![Counter::Rule(RuleId(0)), Counter::Phase(Phase::RateLimit)]
    );
}

#[test]
fn per_flow_and_per_dst_keys() {
    let per_flow = (
        Action::Allow,
        udp_any(),
        Some(per_second(1, 1, RateKey::Flow)),
    );
    let options = Options {
        conntrack: false,
        ..Options::default()
    };
    let p = policy_with(options, vec![per_flow]);
    let mut interp = Interpreter::new(&p);
    assert_eq!(
        verdict(&mut interp, &udp(REMOTE4, 1, HOST4, 53), 0),
        PASS_ALLOW
    );
    assert_eq!(
        verdict(&mut interp, &udp(REMOTE4, 1, HOST4, 53), 0),
        (Verdict::Drop, Phase::RateLimit)
    );
    assert_eq!(
        verdict(&mut interp, &udp(REMOTE4, 2, HOST4, 53), 0),
        PASS_ALLOW
    );
}
