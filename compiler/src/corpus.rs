//! The benchmark corpus: the frames the benchmark measures and the tests
//! check, each with the verdict the reference policy
//! (`benches/reference.pf`) must give it, plus the inputs that go with them
//! (pre-established flows, random blocklists, the naive program's rules).
//!
//! Owns the bytes, not the files: everything here is pure data, built the
//! same on every call. the `corpus` driver (benches/src/bin/corpus.rs) writes it out for
//! `benches/run`; the compiler, CLI and kernel tests read it in memory. Only
//! compiled with the `corpus` feature.
//!
//! Unlike [`crate::packet::build`], which only builds well-formed frames,
//! this module also builds malformed ones on purpose (lying lengths, bad
//! header fields, truncations), since the invalid-packet phase is half of
//! what the corpus checks.
//!
//! Addresses: frames go to the device under test, MAC
//! [`packet::DST_MAC`](crate::packet::DST_MAC), IPv4 [`DUT_V4`], IPv6
//! [`DUT_V6`] (the addresses `benches/veth.sh` gives it inside its own
//! namespace). Sources come from the documentation ranges and 10.1.2.x.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use patronus_grammar::ast::Verdict;

use crate::packet::{self, DST_MAC, SRC_MAC, internet_checksum};
use crate::typed::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, tcp_flags};

/// The device under test's IPv4 address: every frame's destination.
pub const DUT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The device under test's IPv6 address.
pub const DUT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
/// The generator's IPv4 address (the sender of the ARP request).
pub const GEN_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The prefix every blocklist ends with: it holds [`BLOCKED_SRC`].
pub const BLOCKED_PREFIX: &str = "198.51.100.0/24";
/// The source of the `blocklisted` packet.
pub const BLOCKED_SRC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The one IPv6 prefix of every blocklist.
pub const BLOCKED_V6_PREFIX: &str = "2001:db8:bad::/48";
/// The blocklist sizes the benchmark ships a file for.
pub const BLOCKLIST_SIZES: [usize; 4] = [10, 100, 1_000, 100_000];

use crate::proto::{
    ETHERTYPE_ARP as ETH_ARP, ETHERTYPE_IPV4 as ETH_IPV4, ETHERTYPE_IPV6 as ETH_IPV6,
    ETHERTYPE_LLDP as ETH_LLDP, ETHERTYPE_QINQ as ETH_QINQ, ETHERTYPE_VLAN as ETH_VLAN,
    IPV6_AH as NH_AH, IPV6_DEST_OPTS as NH_DEST_OPTS, IPV6_FRAGMENT as NH_FRAGMENT,
    IPV6_HOP_BY_HOP as NH_HOP_BY_HOP, IPV6_ROUTING as NH_ROUTING, PROTO_GRE,
};
/// IPv4 flags word with Don't Fragment set, offset 0.
const IPV4_DF: u16 = 0x4000;

use tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};

/// One benchmark packet: what the timed runs repeat.
pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    /// The verdict of the first copy, on fresh state (flows set up).
    pub first: Verdict,
    /// The verdict after many quick repeats of the same frame.
    pub steady: Verdict,
    /// The policy path the packet takes.
    pub path: &'static str,
    pub what: &'static str,
}

/// One malformed or corner-case frame, judged once on fresh state.
pub struct EdgeCase {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub expect: Verdict,
    pub what: &'static str,
}

/// A flow the benchmark sets up as established before measuring: the
/// remote end is the source of the inbound packets.
pub struct Flow {
    pub proto: u8,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub host: IpAddr,
    pub host_port: u16,
}

impl Flow {
    /// The packet the host sends on this flow (an ACK, as mid-connection):
    /// passing it through the egress side makes the flow established.
    pub fn host_packet(&self) -> Packet {
        Packet {
            proto: self.proto,
            src: self.host,
            dst: self.remote,
            src_port: self.host_port,
            dst_port: self.remote_port,
            tcp_flags: ACK,
            icmp_type: 0,
            icmp_code: 0,
            vlan: None,
            repeat: 1,
        }
    }

    /// [`Flow::host_packet`] as a frame.
    pub fn host_frame(&self) -> Vec<u8> {
        packet::build(&self.host_packet())
    }
}

/// The established flows: one the `tcp443_ack_est` packet belongs to, one
/// that only conntrack lets in (`tcp_est_reply`, to a port no rule allows).
pub fn flows() -> Vec<Flow> {
    let flow = |remote: [u8; 4], remote_port, host_port| Flow {
        proto: PROTO_TCP,
        remote: IpAddr::V4(remote.into()),
        remote_port,
        host: IpAddr::V4(DUT_V4),
        host_port,
    };
    vec![
        flow([192, 0, 2, 20], 40001, 443),
        flow([203, 0, 113, 9], 443, 50000),
    ]
}

/// The 15 benchmark packets, in measuring order.
pub fn packets() -> Vec<Case> {
    use Verdict::{Drop, Pass};
    let case = |name, frame, first, steady, path, what| Case {
        name,
        frame,
        first,
        steady,
        path,
        what,
    };
    let ext2 = [NH_HOP_BY_HOP, NH_DEST_OPTS];
    let ext5 = [
        NH_HOP_BY_HOP,
        NH_DEST_OPTS,
        NH_ROUTING,
        NH_DEST_OPTS,
        NH_DEST_OPTS,
    ];
    vec![
        case(
            "tcp80_syn",
            syn4([192, 0, 2, 10], 40000, 80),
            Pass,
            Pass,
            "allow (new flow, conntrack insert)",
            "TCP SYN 192.0.2.10:40000 -> :80",
        ),
        case(
            "tcp443_ack_est",
            tcp4([192, 0, 2, 20], 40001, 443, ACK, &[]),
            Pass,
            Pass,
            "established (set up beforehand)",
            "TCP ACK 192.0.2.20:40001 -> :443, tracked",
        ),
        case(
            "tcp22_syn",
            syn4([192, 0, 2, 30], 40002, 22),
            Pass,
            Drop,
            "rate limit (bucket empty after 10)",
            "TCP SYN 192.0.2.30:40002 -> :22",
        ),
        case(
            "udp53_internal",
            udp4([10, 1, 2, 3], 5353, 53, &dns_query()),
            Pass,
            Pass,
            "allow once, then established",
            "UDP 10.1.2.3:5353 -> :53 (DNS query)",
        ),
        case(
            "udp_denied",
            udp4([192, 0, 2, 40], 5000, 5353, &[b'x'; 18]),
            Drop,
            Drop,
            "default deny (every phase)",
            "UDP 192.0.2.40:5000 -> :5353",
        ),
        case(
            "blocklisted",
            syn4(BLOCKED_SRC.octets(), 40003, 80),
            Drop,
            Drop,
            "blocklist (LPM hit)",
            "TCP SYN 198.51.100.7 -> :80, in 198.51.100.0/24",
        ),
        case(
            "icmp_echo",
            icmp4([192, 0, 2, 50], &echo(8, 0x4242, 1, &ramp(56))),
            Pass,
            Pass,
            "allow once, then established",
            "ICMP echo request 192.0.2.50, id 0x4242",
        ),
        case(
            "tcp_truncated",
            truncated_tcp(),
            Drop,
            Drop,
            "invalid (TCP header truncated)",
            "IPv4 total length 30: 10 bytes of TCP header",
        ),
        case(
            "ipv6_tcp80_syn",
            syn6(v6(0x10), 40000, 80, &[]),
            Pass,
            Pass,
            "allow (IPv6)",
            "TCP SYN [2001:db8:1::10]:40000 -> :80",
        ),
        case(
            "ipv6_ext2_tcp80",
            syn6(v6(0x11), 40001, 80, &ext2),
            Pass,
            Pass,
            "allow after 2 extension headers",
            "Hop-by-Hop + Destination Options + TCP SYN -> :80",
        ),
        case(
            "tcp_xmas",
            tcp4([192, 0, 2, 60], 40006, 80, FIN | PSH | URG, &[]),
            Drop,
            Drop,
            "invalid (Xmas flags)",
            "TCP FIN+PSH+URG -> :80",
        ),
        case(
            "tcp_est_reply",
            tcp4([203, 0, 113, 9], 443, 50000, ACK, &[]),
            Pass,
            Pass,
            "established (only conntrack lets it in)",
            "TCP ACK 203.0.113.9:443 -> :50000, tracked",
        ),
        case(
            "arp_request",
            arp_request(),
            Pass,
            Pass,
            "ARP passes",
            "who-has 10.77.0.2",
        ),
        case(
            "ipv6_ext5",
            syn6(v6(0x12), 40002, 80, &ext5),
            Drop,
            Drop,
            "invalid (5 extension headers > 4)",
            "HBH+DST+RT+DST+DST + TCP SYN -> :80",
        ),
        case(
            "ipv4_ihl4",
            with_byte(syn4([192, 0, 2, 80], 40005, 80), 14, 0x44),
            Drop,
            Drop,
            "invalid (IHL 4)",
            "IPv4 IHL=4, else a TCP SYN -> :80",
        ),
    ]
}

/// The malformed and corner-case frames: every phase-1 rule of
/// `docs/language.md` §6 on both sides of its line, and the policy's edges.
pub fn edge_cases() -> Vec<EdgeCase> {
    use Verdict::{Drop, Pass};
    let edge = |name, frame, expect, what| EdgeCase {
        name,
        frame,
        expect,
        what,
    };
    let syn80 = syn4([192, 0, 2, 90], 41000, 80);
    let flags = |f| tcp4([192, 0, 2, 94], 41000, 80, f, &[]);
    let doff = |d: u8| with_byte(flags(SYN), 14 + 20 + 12, d << 4);
    let ext4 = [NH_HOP_BY_HOP, NH_DEST_OPTS, NH_ROUTING, NH_DEST_OPTS];
    // A Fragment header at offset 0 with M clear is still a fragment.
    let mut frag = vec![PROTO_TCP, 0, 0, 0, 0, 0, 0x12, 0x34];
    frag.extend(tcp_segment(
        &v6(0x24).into(),
        &DUT_V6.into(),
        41006,
        80,
        SYN,
        &[],
    ));
    // AH: payload length 4 means (4 + 2) * 4 = 24 bytes.
    let mut ah = vec![PROTO_TCP, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
    ah.extend([0; 12]);
    ah.extend(tcp_segment(
        &v6(0x25).into(),
        &DUT_V6.into(),
        41007,
        80,
        SYN,
        &[],
    ));
    let udp_len4 = {
        let mut f = udp4([192, 0, 2, 92], 5353, 53, &[b'q'; 8]);
        f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&4u16.to_be_bytes());
        f
    };
    let big6 = syn6(v6(0x21), 41002, 80, &[]);
    vec![
        edge(
            "vlan1_tcp80_syn",
            vlan(&syn80, &[ETH_VLAN]),
            Pass,
            "one 802.1Q tag",
        ),
        edge(
            "vlan2_tcp80_syn",
            vlan(&syn80, &[ETH_QINQ, ETH_VLAN]),
            Pass,
            "802.1ad + 802.1Q (QinQ)",
        ),
        edge(
            "vlan3_tcp80_syn",
            vlan(&syn80, &[ETH_QINQ, ETH_VLAN, ETH_VLAN]),
            Drop,
            "three VLAN tags",
        ),
        edge(
            "ipv4_options_tcp80",
            ipv4_with_options(),
            Pass,
            "IHL 6 (4 bytes of options)",
        ),
        edge(
            "ipv4_frag_mf",
            ip4_field(&syn80, 6, &0x2000u16.to_be_bytes()),
            Drop,
            "IPv4 MF set",
        ),
        edge(
            "ipv4_frag_offset",
            ip4_field(&syn80, 6, &1u16.to_be_bytes()),
            Drop,
            "IPv4 fragment offset 8",
        ),
        edge(
            "ipv4_totlen_gt_frame",
            ip4_field(&syn80, 2, &200u16.to_be_bytes()),
            Drop,
            "total length 200 > frame",
        ),
        edge(
            "ipv4_version6",
            ip4_field(&syn80, 0, &[0x65]),
            Drop,
            "version 6 under ethertype IPv4",
        ),
        edge(
            "ipv4_trailer_padding",
            [syn80.as_slice(), &[0; 10]].concat(),
            Pass,
            "10 bytes of Ethernet padding after the IP packet",
        ),
        edge("udp_len_lt8", udp_len4, Drop, "UDP length field 4"),
        edge(
            "udp_sport0",
            udp4([10, 1, 2, 4], 0, 53, &[b'q'; 8]),
            Drop,
            "UDP source port 0 (else an allowed DNS query)",
        ),
        edge(
            "tcp_dport0",
            tcp4([192, 0, 2, 93], 41003, 0, SYN, &[]),
            Drop,
            "TCP destination port 0",
        ),
        edge("tcp_null", flags(0), Drop, "no TCP flags"),
        edge("tcp_synfin", flags(SYN | FIN), Drop, "SYN+FIN"),
        edge("tcp_synrst", flags(SYN | RST), Drop, "SYN+RST"),
        edge(
            "tcp_finrst_ack",
            flags(FIN | RST | ACK),
            Drop,
            "FIN+RST+ACK",
        ),
        edge("tcp_fin_only", flags(FIN), Drop, "FIN scan"),
        edge("tcp_doff4", doff(4), Drop, "data offset 4"),
        edge(
            "tcp_doff_past_end",
            doff(15),
            Drop,
            "data offset 15 > segment",
        ),
        edge(
            "tcp_ack_port80_untracked",
            tcp4([192, 0, 2, 95], 41000, 80, ACK, &[]),
            Pass,
            "ACK to port 80, no flow: the port rule allows any TCP",
        ),
        edge(
            "tcp_ack_port22_untracked",
            tcp4([192, 0, 2, 96], 41000, 22, ACK, &[]),
            Pass,
            "ACK to port 22, no flow: takes a token, allowed",
        ),
        edge(
            "tcp_syn_port8080",
            syn4([192, 0, 2, 97], 41004, 8080),
            Drop,
            "no rule for 8080",
        ),
        edge(
            "land_same_ports",
            tcp_v4(DUT_V4, 80, DUT_V4, 80, SYN, &syn_options()),
            Drop,
            "source = destination, ports equal",
        ),
        edge(
            "land_other_ports",
            tcp_v4(DUT_V4, 41005, DUT_V4, 80, SYN, &syn_options()),
            Pass,
            "source = destination address, ports differ: not land for TCP",
        ),
        edge(
            "icmp_truncated",
            icmp4([192, 0, 2, 98], &[8, 0, 0, 0]),
            Drop,
            "4 bytes of ICMP",
        ),
        edge(
            "icmp_echo_reply",
            icmp4([192, 0, 2, 98], &echo(0, 7, 1, &[b'x'; 8])),
            Drop,
            "echo reply, no flow",
        ),
        edge(
            "ipv4_gre",
            eth(
                ETH_IPV4,
                &ipv4([192, 0, 2, 99].into(), DUT_V4, PROTO_GRE, &[0; 8]),
            ),
            Drop,
            "protocol 47, no rule",
        ),
        edge("lldp", eth(ETH_LLDP, &[0; 46]), Drop, "ethertype 0x88cc"),
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header,
        // so a bare header is the shortest frame both engines can judge.
        edge(
            "ipv4_header_missing",
            eth(ETH_IPV4, &[]),
            Drop,
            "ethertype IPv4, frame ends after 14 bytes",
        ),
        edge(
            "ipv6_header_truncated",
            eth(ETH_IPV6, &[[0x60].as_slice(), &[0; 19]].concat()),
            Drop,
            "20 of 40 bytes of IPv6 header",
        ),
        edge(
            "ipv6_ndp_ns",
            icmp6(
                Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                135,
                255,
                &[0; 20],
            ),
            Pass,
            "neighbor solicitation, hop limit 255",
        ),
        edge(
            "ipv6_ndp_ns_hop64",
            icmp6(v6(0x22), 135, 64, &[0; 20]),
            Drop,
            "neighbor solicitation, hop limit 64",
        ),
        edge(
            "ipv6_icmp_echo",
            icmp6(
                v6(0x23),
                128,
                64,
                &[[0, 9, 0, 1].as_slice(), &[b'x'; 16]].concat(),
            ),
            Pass,
            "ICMPv6 echo request",
        ),
        edge(
            "ipv6_udp53",
            udp6(v6(0x20), 5353, 53, &dns_query()),
            Drop,
            "UDP 53 over IPv6: the DNS rule is IPv4-only",
        ),
        edge(
            "ipv6_frag_hdr",
            eth(ETH_IPV6, &ipv6(v6(0x24), NH_FRAGMENT, 64, &frag)),
            Drop,
            "Fragment header",
        ),
        edge(
            "ipv6_ah_tcp80",
            eth(ETH_IPV6, &ipv6(v6(0x25), NH_AH, 64, &ah)),
            Pass,
            "AH header (24 bytes) + TCP SYN to 80",
        ),
        edge(
            "ipv6_ext4_tcp80",
            syn6(v6(0x26), 41008, 80, &ext4),
            Pass,
            "4 extension headers: the most allowed",
        ),
        edge(
            "ipv6_plen_gt_frame",
            with_bytes(big6, 14 + 4, &400u16.to_be_bytes()),
            Drop,
            "payload length 400 > frame",
        ),
        edge(
            "ipv6_blocklisted",
            syn6(
                Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 1),
                41009,
                80,
                &[],
            ),
            Drop,
            "source in 2001:db8:bad::/48",
        ),
    ]
}

// ---- blocklists and naive rules ---------------------------------------------

/// Ranges a random blocklist must not touch: the corpus's sources, the
/// DUT's subnet, and what is not ordinary unicast.
const RESERVED: [(u32, u8); 8] = [
    (0x0000_0000, 8),  // 0.0.0.0/8
    (0x0A00_0000, 8),  // 10.0.0.0/8
    (0x7F00_0000, 8),  // 127.0.0.0/8
    (0xA9FE_0000, 16), // 169.254.0.0/16
    (0xC000_0200, 24), // 192.0.2.0/24
    (0xC633_6400, 24), // 198.51.100.0/24
    (0xCB00_7100, 24), // 203.0.113.0/24
    (0xE000_0000, 3),  // 224.0.0.0/3
];

/// splitmix64: a small, well-mixed, seedable generator, so blocklists are
/// the same on every machine without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let shorter = a.1.min(b.1);
    a.0 & mask(shorter) == b.0 & mask(shorter)
}

/// Prefix length of a random blocklist entry, out of 100: mostly /24s and
/// single hosts, some larger networks, a tail of everything in between
/// (the shape of published IP blocklists).
fn random_length(rng: &mut SplitMix) -> u8 {
    match rng.next() % 100 {
        0..55 => 24,
        55..75 => 32,
        n @ 75..85 => [16, 18, 20, 21, 22][(n % 5) as usize],
        n @ 85..99 => [23, 25, 26, 27, 28, 29, 30][(n % 7) as usize],
        _ => 19,
    }
}

/// `n` distinct random IPv4 prefixes (seeded by `n`) outside the reserved
/// ranges; the last is [`BLOCKED_PREFIX`]. `n` of 0 gives an empty list.
pub fn blocklist(n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let mut rng = SplitMix(n as u64);
    let blocked = (0xC633_6400, 24);
    let mut seen = HashSet::from([blocked]);
    let mut out = Vec::with_capacity(n);
    while out.len() < n - 1 {
        let len = random_length(&mut rng);
        let prefix = ((rng.next() >> 32) as u32 & mask(len), len);
        if RESERVED.iter().any(|r| overlaps(*r, prefix)) || !seen.insert(prefix) {
            continue;
        }
        out.push(format!("{}/{}", Ipv4Addr::from(prefix.0), prefix.1));
    }
    out.push(BLOCKED_PREFIX.to_owned());
    out
}

/// The text of `blocklist-N.txt`: [`blocklist`]`(n)` and the IPv6 prefix,
/// one CIDR per line with `#` comments (a Patronus table file).
pub fn blocklist_text(n: usize) -> String {
    let mut text = format!("# {n} random IPv4 prefixes (seed {n}); the last holds {BLOCKED_SRC}\n");
    for prefix in blocklist(n) {
        text.push_str(&prefix);
        text.push('\n');
    }
    text.push_str("# one IPv6 prefix\n");
    text.push_str(BLOCKED_V6_PREFIX);
    text.push('\n');
    text
}

/// The rule array of the naive linear program for blocklist `n`: every
/// blocklist prefix as a deny rule, then the reference policy's allow
/// rules. One rule a line: `action family proto icmp_type dport_lo
/// dport_hi source` (`any` where the rule does not care).
pub fn naive_rules(n: usize) -> String {
    let mut text = String::from("# action family proto icmp_type dport_lo dport_hi source\n");
    for prefix in blocklist(n) {
        text.push_str(&format!("deny 4 any any 0 65535 {prefix}\n"));
    }
    text.push_str(&format!("deny 6 any any 0 65535 {BLOCKED_V6_PREFIX}\n"));
    for rule in [
        "allow 4 tcp any 80 80 0.0.0.0/0",
        "allow 4 tcp any 443 443 0.0.0.0/0",
        "limit 4 tcp any 22 22 0.0.0.0/0",
        "allow 4 udp any 53 53 10.0.0.0/8",
        "allow 4 icmp 8 0 65535 0.0.0.0/0",
        "allow 6 tcp any 80 80 ::/0",
        "allow 6 tcp any 443 443 ::/0",
        "limit 6 tcp any 22 22 ::/0",
        "allow 6 icmpv6 128 0 65535 ::/0",
    ] {
        text.push_str(rule);
        text.push('\n');
    }
    text
}

// ---- frame builders -------------------------------------------------------------

fn v6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, host)
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend(DST_MAC);
    f.extend(SRC_MAC);
    f.extend(ethertype.to_be_bytes());
    f.extend(payload);
    f
}

/// An IPv4 header (DF set, TTL 64, checksum filled in) and `payload`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_raw(src, dst, proto, &[], payload)
}

fn ipv4_raw(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let header_len = 20 + options.len();
    let total = (header_len + payload.len()) as u16;
    let mut h = vec![0x40 | (header_len / 4) as u8, 0];
    h.extend(total.to_be_bytes());
    h.extend([0x12, 0x34]);
    h.extend(IPV4_DF.to_be_bytes());
    h.extend([64, proto, 0, 0]);
    h.extend(src.octets());
    h.extend(dst.octets());
    h.extend(options);
    let sum = internet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend(payload);
    h
}

fn ipv6(src: Ipv6Addr, next: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((payload.len() as u16).to_be_bytes());
    h.extend([next, hop_limit]);
    h.extend(src.octets());
    h.extend(DUT_V6.octets());
    h.extend(payload);
    h
}

/// The transport checksum over the pseudo header of `src`/`dst`.
fn l4_checksum(src: &IpAddr, dst: &IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + segment.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend(s.octets());
            pseudo.extend(d.octets());
            pseudo.extend([0, proto]);
            pseudo.extend((segment.len() as u16).to_be_bytes());
        }
        _ => {
            let octets = |a: &IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            pseudo.extend(octets(src));
            pseudo.extend(octets(dst));
            pseudo.extend((segment.len() as u32).to_be_bytes());
            pseudo.extend([0, 0, 0, proto]);
        }
    }
    pseudo.extend(segment);
    internet_checksum(&pseudo)
}

/// A Linux-like SYN option block: MSS 1460, SACK permitted, timestamps,
/// NOP, window scale 7 (20 bytes).
fn syn_options() -> [u8; 20] {
    [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ]
}

fn tcp_segment(
    src: &IpAddr,
    dst: &IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    options: &[u8],
) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + options.len());
    s.extend(sport.to_be_bytes());
    s.extend(dport.to_be_bytes());
    s.extend(1000u32.to_be_bytes());
    s.extend(u32::from(flags & ACK != 0).to_be_bytes());
    s.extend([(((20 + options.len()) / 4) << 4) as u8, flags]);
    s.extend(64240u16.to_be_bytes());
    s.extend([0, 0, 0, 0]);
    s.extend(options);
    let sum = l4_checksum(src, dst, PROTO_TCP, &s);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

fn tcp_v4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    options: &[u8],
) -> Vec<u8> {
    let seg = tcp_segment(&src.into(), &dst.into(), sport, dport, flags, options);
    eth(ETH_IPV4, &ipv4(src, dst, PROTO_TCP, &seg))
}

fn tcp4(src: [u8; 4], sport: u16, dport: u16, flags: u8, options: &[u8]) -> Vec<u8> {
    tcp_v4(src.into(), sport, DUT_V4, dport, flags, options)
}

fn syn4(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    tcp4(src, sport, dport, SYN, &syn_options())
}

/// A TCP SYN over IPv6 behind the extension headers `exts` (outermost
/// first), each 8 bytes long.
fn syn6(src: Ipv6Addr, sport: u16, dport: u16, exts: &[u8]) -> Vec<u8> {
    let mut payload = tcp_segment(
        &src.into(),
        &DUT_V6.into(),
        sport,
        dport,
        SYN,
        &syn_options(),
    );
    let mut next = PROTO_TCP;
    for &kind in exts.iter().rev() {
        // Hop-by-Hop and Destination Options: one PadN option; routing:
        // type 0 with no segments left. Both 8 bytes (length field 0).
        let body: [u8; 6] = if kind == NH_ROUTING {
            [0; 6]
        } else {
            [1, 4, 0, 0, 0, 0]
        };
        let mut header = vec![next, 0];
        header.extend(body);
        header.extend(payload);
        payload = header;
        next = kind;
    }
    eth(ETH_IPV6, &ipv6(src, next, 64, &payload))
}

fn udp_datagram(src: &IpAddr, dst: &IpAddr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = (8 + data.len()) as u16;
    let mut d = Vec::with_capacity(len as usize);
    d.extend(sport.to_be_bytes());
    d.extend(dport.to_be_bytes());
    d.extend(len.to_be_bytes());
    d.extend([0, 0]);
    d.extend(data);
    // A computed 0 is sent as all ones (0 means "no checksum" in IPv4).
    let sum = match l4_checksum(src, dst, PROTO_UDP, &d) {
        0 => 0xFFFF,
        s => s,
    };
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    d
}

fn udp4(src: [u8; 4], sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let src = Ipv4Addr::from(src);
    let d = udp_datagram(&src.into(), &DUT_V4.into(), sport, dport, data);
    eth(ETH_IPV4, &ipv4(src, DUT_V4, PROTO_UDP, &d))
}

fn udp6(src: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let d = udp_datagram(&src.into(), &DUT_V6.into(), sport, dport, data);
    eth(ETH_IPV6, &ipv6(src, PROTO_UDP, 64, &d))
}

/// An ICMP echo message (type 8 request, 0 reply) with its checksum.
fn echo(kind: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend(id.to_be_bytes());
    m.extend(seq.to_be_bytes());
    m.extend(data);
    let sum = internet_checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

fn icmp4(src: [u8; 4], message: &[u8]) -> Vec<u8> {
    eth(ETH_IPV4, &ipv4(src.into(), DUT_V4, PROTO_ICMP, message))
}

/// An ICMPv6 message of `kind` with `body` after the checksum.
fn icmp6(src: Ipv6Addr, kind: u8, hop_limit: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend(body);
    let sum = l4_checksum(&src.into(), &DUT_V6.into(), PROTO_ICMPV6, &m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    eth(ETH_IPV6, &ipv6(src, PROTO_ICMPV6, hop_limit, &m))
}

fn ramp(len: u8) -> Vec<u8> {
    (0..len).collect()
}

/// A DNS query for example.com, type A.
fn dns_query() -> Vec<u8> {
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["example", "com"] {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

fn arp_request() -> Vec<u8> {
    let mut body = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    body.extend(SRC_MAC);
    body.extend(GEN_V4.octets());
    body.extend([0; 6]);
    body.extend(DUT_V4.octets());
    let mut f = eth(ETH_ARP, &body);
    f[..6].copy_from_slice(&[0xff; 6]);
    f
}

/// IPv4 says 30 bytes and the frame holds them: 10 bytes of TCP header.
fn truncated_tcp() -> Vec<u8> {
    let src = Ipv4Addr::new(192, 0, 2, 70);
    let seg = tcp_segment(&src.into(), &DUT_V4.into(), 40004, 80, SYN, &[]);
    eth(ETH_IPV4, &ipv4(src, DUT_V4, PROTO_TCP, &seg[..10]))
}

fn ipv4_with_options() -> Vec<u8> {
    let src = Ipv4Addr::new(192, 0, 2, 91);
    let seg = tcp_segment(&src.into(), &DUT_V4.into(), 41001, 80, SYN, &[]);
    // Four bytes of End-of-Options padding: IHL 6.
    eth(ETH_IPV4, &ipv4_raw(src, DUT_V4, PROTO_TCP, &[0; 4], &seg))
}

/// `frame` with VLAN tags of the given TPIDs, outermost first, VLAN ids
/// 100, 101, ...
fn vlan(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for (i, tpid) in tpids.iter().enumerate() {
        f.extend(tpid.to_be_bytes());
        f.extend((100 + i as u16).to_be_bytes());
    }
    f.extend(&frame[12..]);
    f
}

fn with_byte(frame: Vec<u8>, at: usize, byte: u8) -> Vec<u8> {
    with_bytes(frame, at, &[byte])
}

fn with_bytes(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// An IPv4 frame with `bytes` written at `offset` of its 20-byte header and
/// the header checksum made right again, so only the field is wrong.
fn ip4_field(frame: &[u8], offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = with_bytes(frame.to_vec(), 14 + offset, bytes);
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&f[14..14 + 20]);
    f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_counts_are_the_documented_ones() {
        let mut names = HashSet::new();
        assert_eq!(packets().len(), 15);
        assert_eq!(edge_cases().len(), 39);
        for name in packets()
            .iter()
            .map(|c| c.name)
            .chain(edge_cases().iter().map(|c| c.name))
        {
            assert!(names.insert(name), "duplicate name {name}");
        }
    }

    #[test]
    fn blocklists_are_deterministic_distinct_and_avoid_the_reserved_ranges() {
        let list = blocklist(1000);
        assert_eq!(list, blocklist(1000));
        assert_ne!(list[..10], blocklist(999)[..10]);
        assert_eq!(list.len(), 1000);
        assert_eq!(list.last().map(String::as_str), Some(BLOCKED_PREFIX));
        assert_eq!(list.iter().collect::<HashSet<_>>().len(), 1000);
        for entry in &list[..999] {
            let (addr, len) = entry.split_once('/').expect("CIDR");
            let addr = u32::from(addr.parse::<Ipv4Addr>().expect("address"));
            let len: u8 = len.parse().expect("length");
            assert_eq!(addr & !mask(len), 0, "{entry} has host bits");
            assert!(
                !RESERVED.iter().any(|r| overlaps(*r, (addr, len))),
                "{entry} is reserved"
            );
        }
        assert!(blocklist(0).is_empty());
        assert_eq!(blocklist(1), vec![BLOCKED_PREFIX.to_owned()]);
    }

    #[test]
    fn checksums_verify() {
        // A correct Internet checksum sums (with itself) to zero.
        let syn = syn4([192, 0, 2, 10], 40000, 80);
        assert_eq!(internet_checksum(&syn[14..34]), 0);
        let src: IpAddr = Ipv4Addr::new(192, 0, 2, 10).into();
        let mut pseudo = src_dst_pseudo(&src, &DUT_V4.into(), PROTO_TCP, syn.len() - 34);
        pseudo.extend(&syn[34..]);
        assert_eq!(internet_checksum(&pseudo), 0);
    }

    fn src_dst_pseudo(src: &IpAddr, dst: &IpAddr, proto: u8, len: usize) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
            unreachable!("IPv4 only here")
        };
        let mut p = s.octets().to_vec();
        p.extend(d.octets());
        p.extend([0, proto]);
        p.extend((len as u16).to_be_bytes());
        p
    }
}
