//! The state code in the real kernel (root, `BPF_PROG_TEST_RUN`): conntrack
//! lookup/tracking, token buckets and the tc egress program, against maps
//! created here. Inbound packets run through a harness XDP program that
//! stores the parsed fields (`frame::parse` of the built frame) into the
//! `xdp::ctx` packet slots and then runs the hooks as the XDP generator
//! does: established → rate limits in file order → track. Outbound packets
//! run through the real egress program (its own parser).
//!
//! Time is real here: rates are per minute and timeouts are the defaults,
//! so nothing refills or expires during a test.

mod state_common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use patronus_codegen::abi::{conntrack as ct_abi, ratelimit as rl_abi};
use patronus_codegen::elf::DataType;
use patronus_codegen::insn::regs::{FP, Frame};
use patronus_codegen::insn::{Asm, Program, Reg};
use patronus_codegen::layout::{self, Layout};
use patronus_codegen::state;
use patronus_codegen::tc::egress_program;
use patronus_codegen::xdp::ctx::{
    L4_ICMP, L4_OTHER, L4_TCP, L4_UDP, PKT_DPORT, PKT_DST, PKT_ECHO_ID, PKT_ICMP_TYPE, PKT_IS_ECHO,
    PKT_L4, PKT_PROTO, PKT_SIZE, PKT_SPORT, PKT_SRC, PKT_TCP_FLAGS, PacketSlots, XdpCtx,
};
use patronus_compiler::diag::FileId;
use patronus_compiler::frame::{self, Frame as Parsed, Transport};
use patronus_compiler::interp::conntrack::FlowState;
use patronus_compiler::ir::{self, FlowKey};
use patronus_compiler::packet;
use patronus_compiler::typed::{
    Family, Match, NS_PER_SEC, Options, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet, Policy, Rate,
    RateKey, Rule, RuleId, tcp_flags,
};
use patronus_grammar::ast::{Action, Span};
use state_common::{Map, PROG_TYPE_SCHED_CLS, PROG_TYPE_XDP, Prog, kernel_available, load, run};

const HOST: &str = "10.77.0.2";
const REMOTE: &str = "192.0.2.10";
const OTHER: &str = "192.0.2.11";
const HOST6: &str = "2001:db8::2";
const REMOTE6: &str = "2001:db8:1::10";

/// Harness return codes.
const DEFAULT: u32 = 0;
const RATE_DROP: u32 = 1;
const ESTABLISHED: u32 = 2;
const ALLOWED: u32 = 3;

fn policy(rules: Vec<(Action, Option<Rate>)>) -> Policy {
    Policy {
        file: FileId(0),
        interface: None,
        options: Options::default(),
        rules: rules
            .into_iter()
            .enumerate()
            .map(|(i, (action, rate))| Rule {
                id: RuleId(i as u32),
                action,
                matcher: Match {
                    protos: Some(BTreeSet::from([PROTO_TCP])),
                    ..Match::default()
                },
                rate,
                label: None,
                log: false,
                span: Span::new(0, 0),
                identity: format!("rule {i}"),
            })
            .collect(),
        tables: Vec::new(),
        tests: Vec::new(),
    }
}

fn per_minute(count: u64, burst: u64, key: RateKey) -> Rate {
    Rate {
        count,
        unit_ns: 60 * NS_PER_SEC,
        interval_ns: 60 * NS_PER_SEC / count,
        burst,
        key,
    }
}

/// The program plan, its map layout and the state maps (by object
/// position; only the state maps are created).
struct Env {
    program: ir::Program,
    layout: Layout,
    maps: Vec<Option<Map>>,
    progs: Vec<u64>,
}

impl Env {
    fn new(policy: &Policy) -> Env {
        let program = ir::lower(policy);
        let (layout, defs) = layout::plan(&program).unwrap();
        let maps = defs
            .iter()
            .zip(layout.roles())
            .map(|(def, role)| {
                if !role.is_state() {
                    return None;
                }
                let size = |t: &Option<DataType>| t.as_ref().map_or(0, DataType::size);
                // Small tables: the test needs a handful of entries.
                let max = def.max_entries.min(4096);
                Some(Map::create(def.map_type, size(&def.key), size(&def.value), max).unwrap())
            })
            .collect();
        Env {
            program,
            layout,
            maps,
            progs: Vec::new(),
        }
    }

    fn map(&self, name: &str) -> &Map {
        let i = self
            .program
            .maps
            .iter()
            .position(|m| m.name == name)
            .unwrap();
        self.maps[i].as_ref().unwrap()
    }

    fn load(&mut self, program: &Program, prog_type: u32) -> Prog {
        let refs: Vec<Option<&Map>> = self.maps.iter().map(Option::as_ref).collect();
        let prog = load(program, prog_type, &refs);
        self.progs.push(prog.verified_insns);
        prog
    }

    /// Inbound: the harness for this frame's parsed fields, run once.
    fn inbound(&mut self, frame: &[u8], charge: &[RuleId], allow: bool) -> u32 {
        let harness = harness(&self.program, &self.layout, frame, charge, allow);
        let prog = self.load(&harness, PROG_TYPE_XDP);
        run(&prog, frame)
    }

    /// Outbound: the egress program.
    fn outbound(&mut self, frame: &[u8]) -> u32 {
        let egress = egress_program(&self.program, &self.layout).unwrap();
        let prog = self.load(&egress, PROG_TYPE_SCHED_CLS);
        run(&prog, frame)
    }

    fn entries(&self, family: Family) -> Vec<ct_abi::CtEntry> {
        let ct = self.layout.conntrack(family).unwrap();
        let map = self.maps[ct.0 as usize].as_ref().unwrap();
        map.keys()
            .iter()
            .map(|k| ct_abi::decode_entry(family, k, &map.lookup(k).unwrap()).unwrap())
            .collect()
    }
}

/// An XDP program that stores the frame's parsed fields in the packet
/// slots, then: established → pass 2; charge `charge` in order (empty → 1);
/// `allow` → track, 3; else 0.
fn harness(
    program: &ir::Program,
    layout: &Layout,
    bytes: &[u8],
    charge: &[RuleId],
    allow: bool,
) -> Program {
    let Ok(Parsed::Ip(ip)) = frame::parse(bytes, &program.options) else {
        panic!("test frame does not parse as IP");
    };
    let mut asm = Asm::new();
    let mut frame = Frame::new();
    let pkt = PacketSlots::from_slot(frame.alloc("packet", PKT_SIZE).unwrap());
    for at in (0..PKT_SIZE as i16).step_by(8) {
        asm.st_dw(FP, pkt.at(at), 0);
    }
    let bytes_of = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let store = |asm: &mut Asm, at: i16, data: &[u8]| {
        for (i, b) in data.iter().enumerate() {
            asm.st_b(FP, pkt.at(at + i as i16), i32::from(*b));
        }
    };
    store(&mut asm, PKT_SRC, &bytes_of(ip.src));
    store(&mut asm, PKT_DST, &bytes_of(ip.dst));
    store(&mut asm, PKT_PROTO, &[ip.proto]);
    let l4 = match ip.transport {
        Transport::Tcp {
            src_port,
            dst_port,
            flags,
        } => {
            store(&mut asm, PKT_SPORT, &src_port.to_be_bytes());
            store(&mut asm, PKT_DPORT, &dst_port.to_be_bytes());
            store(&mut asm, PKT_TCP_FLAGS, &[flags]);
            L4_TCP
        }
        Transport::Udp { src_port, dst_port } => {
            store(&mut asm, PKT_SPORT, &src_port.to_be_bytes());
            store(&mut asm, PKT_DPORT, &dst_port.to_be_bytes());
            L4_UDP
        }
        Transport::Icmp { ty, echo_id, .. } => {
            store(&mut asm, PKT_ICMP_TYPE, &[ty]);
            if let Some(id) = echo_id {
                store(&mut asm, PKT_IS_ECHO, &[1]);
                store(&mut asm, PKT_ECHO_ID, &id.to_be_bytes());
            }
            L4_ICMP
        }
        _ => L4_OTHER,
    };
    store(&mut asm, PKT_L4, &[l4]);
    let pass = asm.new_label();
    let drop = asm.new_label();
    let mut ctx = XdpCtx {
        program,
        family: ip.family(),
        pkt,
        frame: &mut frame,
        layout,
    };
    state::emit_established(&mut asm, &mut ctx, program, pass).unwrap();
    for &rule in charge {
        state::emit_rate_limit(&mut asm, &mut ctx, program, rule, drop).unwrap();
    }
    if allow {
        state::emit_track(&mut asm, &mut ctx, program).unwrap();
        asm.mov64_imm(Reg::R0, ALLOWED as i32);
    } else {
        asm.mov64_imm(Reg::R0, DEFAULT as i32);
    }
    asm.exit();
    asm.bind(pass);
    asm.mov64_imm(Reg::R0, ESTABLISHED as i32);
    asm.exit();
    if !charge.is_empty() {
        asm.bind(drop);
        asm.mov64_imm(Reg::R0, RATE_DROP as i32);
        asm.exit();
    }
    asm.finish().unwrap()
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    packet::build(&Packet {
        proto: PROTO_TCP,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sport,
        dst_port: dport,
        tcp_flags: flags,
        icmp_type: 0,
        icmp_code: 0,
        vlan: None,
        repeat: 1,
    })
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    packet::build(&Packet {
        proto: PROTO_UDP,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sport,
        dst_port: dport,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        vlan: None,
        repeat: 1,
    })
}

fn echo(src: &str, dst: &str, ty: u8) -> Vec<u8> {
    packet::build(&Packet {
        proto: PROTO_ICMP,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        icmp_type: ty,
        icmp_code: 0,
        vlan: None,
        repeat: 1,
    })
}

const SYN: u8 = tcp_flags::SYN;
const ACK: u8 = tcp_flags::ACK;
const FIN: u8 = tcp_flags::FIN;

#[test]
fn inbound_syn_tracks_then_ack_is_established_and_lone_syn_never_is() {
    if !kernel_available("inbound_syn_tracks_then_ack_is_established_and_lone_syn_never_is") {
        return;
    }
    let mut env = Env::new(&policy(vec![(Action::Allow, None)]));
    let syn = tcp(REMOTE, 40000, HOST, 22, SYN);
    // Not allowed: not tracked, and a repeat is not established either.
    assert_eq!(env.inbound(&syn, &[], false), DEFAULT);
    assert_eq!(env.inbound(&syn, &[], false), DEFAULT);
    assert!(env.entries(Family::Ipv4).is_empty());
    // Allowed: tracked in the SYN state.
    assert_eq!(env.inbound(&syn, &[], true), ALLOWED);
    let entries = env.entries(Family::Ipv4);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, FlowState::TcpSyn);
    assert_eq!(entries[0].timeout_ns, 120 * NS_PER_SEC);
    assert_eq!(
        entries[0].original,
        FlowKey {
            proto: PROTO_TCP,
            src: REMOTE.parse().unwrap(),
            dst: HOST.parse().unwrap(),
            src_port: 40000,
            dst_port: 22,
        }
    );
    // A retransmitted lone SYN is still not established.
    assert_eq!(env.inbound(&syn, &[], false), DEFAULT);
    // The handshake's ACK is, and moves the flow to established.
    let ack = tcp(REMOTE, 40000, HOST, 22, ACK);
    assert_eq!(env.inbound(&ack, &[], false), ESTABLISHED);
    let entries = env.entries(Family::Ipv4);
    assert_eq!(entries[0].state, FlowState::TcpEstablished);
    assert_eq!(entries[0].timeout_ns, 5 * 24 * 3600 * NS_PER_SEC);
    assert!(entries[0].last_ns > 0);
    // A FIN closes it (shorter timeout), still established.
    let fin = tcp(REMOTE, 40000, HOST, 22, FIN | ACK);
    assert_eq!(env.inbound(&fin, &[], false), ESTABLISHED);
    assert_eq!(env.entries(Family::Ipv4)[0].state, FlowState::TcpClosing);
    // Another flow (other source port) is unknown.
    let other = tcp(REMOTE, 40001, HOST, 22, ACK);
    assert_eq!(env.inbound(&other, &[], false), DEFAULT);
    eprintln!("verified insns per load: {:?}", env.progs);
}

#[test]
fn host_sent_syn_makes_the_syn_ack_reply_established() {
    if !kernel_available("host_sent_syn_makes_the_syn_ack_reply_established") {
        return;
    }
    let mut env = Env::new(&policy(vec![(Action::Allow, None)]));
    let reply = tcp(REMOTE, 443, HOST, 50000, SYN | ACK);
    assert_eq!(env.inbound(&reply, &[], false), DEFAULT);
    // The egress program never drops and records the flow.
    assert_eq!(env.outbound(&tcp(HOST, 50000, REMOTE, 443, SYN)), 0);
    let entries = env.entries(Family::Ipv4);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].original.src, HOST.parse::<IpAddr>().unwrap());
    assert_eq!(entries[0].state, FlowState::TcpSyn);
    assert_eq!(env.inbound(&reply, &[], false), ESTABLISHED);
    // SYN-ACK keeps the SYN state (SYN set); the host's ACK establishes.
    assert_eq!(env.entries(Family::Ipv4)[0].state, FlowState::TcpSyn);
    assert_eq!(env.outbound(&tcp(HOST, 50000, REMOTE, 443, ACK)), 0);
    assert_eq!(
        env.entries(Family::Ipv4)[0].state,
        FlowState::TcpEstablished
    );
    // Invalid outbound frames are not tracked (SYN+FIN) and still pass.
    assert_eq!(env.outbound(&tcp(HOST, 50001, REMOTE, 443, SYN | FIN)), 0);
    assert_eq!(env.entries(Family::Ipv4).len(), 1);
    // A frame cut inside the TCP header passes untouched (the kernel
    // refuses test runs of skbs shorter than an IPv4 header).
    assert_eq!(env.outbound(&tcp(HOST, 50002, REMOTE, 443, SYN)[..44]), 0);
    assert_eq!(env.entries(Family::Ipv4).len(), 1);
    eprintln!("verified insns per load: {:?}", env.progs);
}

#[test]
fn udp_and_echo_replies_of_host_flows_are_established() {
    if !kernel_available("udp_and_echo_replies_of_host_flows_are_established") {
        return;
    }
    let mut env = Env::new(&policy(vec![(Action::Allow, None)]));
    assert_eq!(env.outbound(&udp(HOST, 5353, REMOTE, 53)), 0);
    assert_eq!(env.entries(Family::Ipv4)[0].state, FlowState::Udp);
    assert_eq!(
        env.inbound(&udp(REMOTE, 53, HOST, 5353), &[], false),
        ESTABLISHED
    );
    assert_eq!(env.entries(Family::Ipv4)[0].state, FlowState::UdpStream);
    assert_eq!(
        env.inbound(&udp(REMOTE, 53, HOST, 5354), &[], false),
        DEFAULT
    );

    // Echo: the reply matches the host's request; an inbound request does not.
    assert_eq!(env.outbound(&echo(HOST, OTHER, 8)), 0);
    assert_eq!(env.inbound(&echo(OTHER, HOST, 0), &[], false), ESTABLISHED);
    assert_eq!(env.inbound(&echo(OTHER, HOST, 8), &[], false), DEFAULT);
    let icmp: Vec<_> = env
        .entries(Family::Ipv4)
        .into_iter()
        .filter(|e| e.original.proto == PROTO_ICMP)
        .collect();
    assert_eq!(icmp.len(), 1);
    assert_eq!(icmp[0].state, FlowState::Icmp);
    assert_eq!(icmp[0].original.dst_port, 0);

    // IPv6 through the same code.
    assert_eq!(env.outbound(&tcp(HOST6, 50000, REMOTE6, 443, SYN)), 0);
    assert_eq!(
        env.inbound(&tcp(REMOTE6, 443, HOST6, 50000, SYN | ACK), &[], false),
        ESTABLISHED
    );
    assert_eq!(env.entries(Family::Ipv6).len(), 1);
    eprintln!("verified insns per load: {:?}", env.progs);
}

#[test]
fn rate_limit_cuts_after_burst_per_source_and_skips_established() {
    if !kernel_available("rate_limit_cuts_after_burst_per_source_and_skips_established") {
        return;
    }
    let mut env = Env::new(&policy(vec![(
        Action::Allow,
        Some(per_minute(1, 3, RateKey::Src)),
    )]));
    let rule = [RuleId(0)];
    for port in 0..3 {
        let syn = tcp(REMOTE, 40000 + port, HOST, 22, SYN);
        assert_eq!(env.inbound(&syn, &rule, true), ALLOWED, "token {port}");
    }
    let syn = tcp(REMOTE, 40010, HOST, 22, SYN);
    assert_eq!(env.inbound(&syn, &rule, true), RATE_DROP);
    // Another source has its own, full bucket.
    assert_eq!(
        env.inbound(&tcp(OTHER, 40000, HOST, 22, SYN), &rule, true),
        ALLOWED
    );
    // The bucket of REMOTE is empty; its established flows pass uncharged.
    let mut key = 0u32.to_le_bytes().to_vec();
    key.extend(REMOTE.parse::<std::net::Ipv4Addr>().unwrap().octets());
    let map = env.map("rl_src_v4");
    let before = rl_abi::decode_bucket(&map.lookup(&key).unwrap()).unwrap();
    assert!(before.credit_ns < 60 * NS_PER_SEC);
    let ack = tcp(REMOTE, 40000, HOST, 22, ACK);
    assert_eq!(env.inbound(&ack, &rule, true), ESTABLISHED);
    let after = rl_abi::decode_bucket(&env.map("rl_src_v4").lookup(&key).unwrap()).unwrap();
    assert_eq!(before, after);
    eprintln!("verified insns per load: {:?}", env.progs);
}

#[test]
fn charges_in_file_order_and_first_empty_bucket_drops() {
    if !kernel_available("charges_in_file_order_and_first_empty_bucket_drops") {
        return;
    }
    // Rule 0: global, burst 1. Rule 1: per flow, burst 5.
    let mut env = Env::new(&policy(vec![
        (Action::Limit, Some(per_minute(1, 1, RateKey::Global))),
        (Action::Limit, Some(per_minute(1, 5, RateKey::Flow))),
    ]));
    let rules = [RuleId(0), RuleId(1)];
    let syn = tcp(REMOTE, 40000, HOST, 80, SYN);
    assert_eq!(env.inbound(&syn, &rules, false), DEFAULT);
    assert_eq!(env.inbound(&syn, &rules, false), RATE_DROP);
    // The global bucket (array slot 0) is empty; rule 1 was charged once.
    let global = env.map("rl_global");
    let g = rl_abi::decode_bucket(&global.lookup(&0u32.to_le_bytes()).unwrap()).unwrap();
    // Less than one token (60 s of credit) left. Not exactly 0: the bucket
    // is written back even when empty, so a coarse-clock tick (4 ms)
    // between the two packets refills that much.
    assert!(g.credit_ns < 60 * NS_PER_SEC, "credit {}", g.credit_ns);
    let flow = env.map("rl_flow_v4");
    let keys = flow.keys();
    assert_eq!(keys.len(), 1);
    let b = rl_abi::decode_bucket(&flow.lookup(&keys[0]).unwrap()).unwrap();
    // Full (5 tokens) minus the one charge, plus at most a second of clock
    // ticks between the packets.
    assert!(
        (4 * 60 * NS_PER_SEC..4 * 60 * NS_PER_SEC + NS_PER_SEC).contains(&b.credit_ns),
        "credit {}",
        b.credit_ns
    );
    // Layout: rule 1, src, dst, ports, proto.
    assert_eq!(&keys[0][..4], &1u32.to_le_bytes());
    assert_eq!(&keys[0][4..8], &[192, 0, 2, 10]);
    assert_eq!(&keys[0][12..14], &40000u16.to_be_bytes());
    assert_eq!(keys[0][16], PROTO_TCP);
    eprintln!("verified insns per load: {:?}", env.progs);
}

#[test]
fn conntrack_off_egress_is_a_bare_pass() {
    let mut p = policy(vec![(Action::Allow, None)]);
    p.options.conntrack = false;
    let program = ir::lower(&p);
    let (layout, _) = layout::plan(&program).unwrap();
    let egress = egress_program(&program, &layout).unwrap();
    assert_eq!(egress.slot_count(), 2);
    assert!(layout.conntrack(Family::Ipv4).is_err());
    assert!(program.maps.iter().all(|m| m.name != "ct_v4"));
}
