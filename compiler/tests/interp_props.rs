//! Properties of the frame parser, the frame builder and the interpreter:
//! arbitrary bytes never panic, built frames parse back to what was built,
//! and verdicts do not depend on the file order of deny and allow rules.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use patronus_compiler::diag::FileId;
use patronus_compiler::frame::{self, Frame, Transport};
use patronus_compiler::interp::Interpreter;
use patronus_compiler::net::{PortRange, Prefix};
use patronus_compiler::packet;
use patronus_compiler::typed::{
    AddrMatch, AddrSet, Match, Options, PROTO_TCP, PROTO_UDP, Packet, Policy, PortMatch, Rule,
    RuleId, tcp_flags,
};
use patronus_grammar::ast::{Action, Span};

fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| { (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b))) }),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| { (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b))) }),
    ]
}

/// Valid TCP flag bytes: SYN, SYN+ACK, ACK, FIN+ACK, RST(+ACK), plus PSH/URG noise.
fn valid_flags() -> impl Strategy<Value = u8> {
    use tcp_flags::*;
    (
        prop::sample::select(vec![SYN, SYN | ACK, ACK, FIN | ACK, RST, RST | ACK]),
        any::<bool>(),
    )
        .prop_map(|(f, psh)| if psh { f | PSH } else { f })
}

fn transport_packet() -> impl Strategy<Value = Packet> {
    (
        addr_pair(),
        prop::bool::ANY,
        1u16..,
        1u16..,
        valid_flags(),
        prop::option::of(0u16..4096),
    )
        .prop_map(|((src, dst), is_tcp, sport, dport, flags, vlan)| Packet {
            proto: if is_tcp { PROTO_TCP } else { PROTO_UDP },
            src,
            dst,
            src_port: sport,
            dst_port: dport,
            tcp_flags: flags,
            icmp_type: 8,
            icmp_code: 0,
            vlan,
            repeat: 1,
        })
}

fn rule(id: u32, action: Action, matcher: Match) -> Rule {
    Rule {
        id: RuleId(id),
        action,
        matcher,
        rate: None,
        label: None,
        log: false,
        span: Span::default(),
        identity: String::new(),
    }
}

fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        file: FileId(0),
        interface: None,
        options: Options::default(),
        rules,
        tables: Vec::new(),
        tests: Vec::new(),
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        ethertype in prop::sample::select(vec![0x0800u16, 0x86DD, 0x8100, 0x88A8, 0x0806, 0x88CC]),
        version in prop::sample::select(vec![0x45u8, 0x46, 0x60, 0x4F]),
        body in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        // Mostly IP headers with arbitrary contents, so parsing gets deep.
        let mut bytes = vec![0u8; 12];
        bytes.extend_from_slice(&ethertype.to_be_bytes());
        bytes.push(version);
        bytes.extend_from_slice(&body);
        let p = policy(vec![rule(0, Action::Allow, Match::default())]);
        let mut interp = Interpreter::new(&p);
        for len in [bytes.len(), bytes.len() / 2, 13] {
            let frame = &bytes[..len.min(bytes.len())];
            let _ = frame::parse(frame, &Options::default());
            interp.outbound(frame, 0);
            let _ = interp.inbound(frame, 1);
        }
    }

    #[test]
    fn built_frames_parse_back(p in transport_packet()) {
        prop_assume!(p.src != p.dst);
        let parsed = frame::parse(&packet::build(&p), &Options::default());
        let Ok(Frame::Ip(ip)) = parsed else {
            return Err(TestCaseError::fail(format!("{parsed:?}")));
        };
        prop_assert_eq!((ip.src, ip.dst, ip.proto, ip.vlan), (p.src, p.dst, p.proto, p.vlan));
        let expected = if p.proto == PROTO_TCP {
            Transport::Tcp { src_port: p.src_port, dst_port: p.dst_port, flags: p.tcp_flags }
        } else {
            Transport::Udp { src_port: p.src_port, dst_port: p.dst_port }
        };
        prop_assert_eq!(ip.transport, expected);
    }

    #[test]
    fn deny_and_allow_order_never_changes_a_verdict(
        packets in prop::collection::vec(transport_packet(), 1..20),
        deny_port in 1u16..,
        allow_lo in 1u16..,
    ) {
        let ports = |lo: u16, hi: u16| Some(PortMatch { negated: false, ranges: vec![PortRange { lo, hi }] });
        let deny = Match { dst_ports: ports(deny_port, deny_port), ..Match::default() };
        let allow = Match {
            protos: Some(BTreeSet::from([PROTO_TCP, PROTO_UDP])),
            dst_ports: ports(allow_lo, allow_lo.saturating_add(30000)),
            src: Some(AddrMatch { negated: true, set: AddrSet {
                prefixes: vec![Prefix::new("10.0.0.0".parse().unwrap(), 8).unwrap()],
                tables: vec![],
            }}),
            ..Match::default()
        };
        let forward = policy(vec![rule(0, Action::Deny, deny.clone()), rule(1, Action::Allow, allow.clone())]);
        let backward = policy(vec![rule(0, Action::Allow, allow), rule(1, Action::Deny, deny)]);
        let (mut a, mut b) = (Interpreter::new(&forward), Interpreter::new(&backward));
        for (i, p) in packets.iter().enumerate() {
            let f = packet::build(p);
            let (x, y) = (a.inbound(&f, i as u64), b.inbound(&f, i as u64));
            prop_assert_eq!((x.verdict, x.phase), (y.verdict, y.phase));
        }
    }
}
