//! Phase 1 and the pre-phase: the frame parser, check for check the same as
//! `patronus_compiler::frame::parse` (same order, same [`InvalidClass`]),
//! with the bounds checks the verifier needs before every packet access.
//!
//! Register use while parsing: r9 = L3 header pointer; for the transport
//! header r1 = protocol, r4 = L4 pointer, r3 = bytes of IP payload from the
//! L4 header to the end of the IP packet (total length / payload length,
//! Ethernet padding excluded).

use patronus_compiler::frame::{
    self, ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ,
    ETHERTYPE_VLAN, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
    NDP_HOP_LIMIT, NDP_TYPES, VLAN_TAG_LEN,
};
use patronus_compiler::semantics::{InvalidClass as C, Phase};
use patronus_compiler::typed::{Family, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, tcp_flags};

use super::Gen;
use super::ctx::*;
use crate::error::CodegenError;
use crate::insn::regs::{DATA, DATA_END, FP, SCRATCH};
use crate::insn::{Asm, Label, Reg, Size, SwapBits};
use crate::limits::Verifier;

const L3: Reg = SCRATCH;
const PROTO: Reg = Reg::R1;
const L4: Reg = Reg::R4;
const SEGLEN: Reg = Reg::R3;

/// A 16-bit constant as a little-endian load of its network-order bytes
/// reads it: compares against the wire without a byte swap.
fn wire16(v: u16) -> i32 {
    i32::from(v.swap_bytes())
}

/// `tcp_flags_invalid` as a 16-bit table indexed by FIN | SYN<<1 | RST<<2 |
/// ACK<<3 (the only flags it looks at), computed from the interpreter's
/// own function so the two cannot disagree.
fn tcp_invalid_table() -> i32 {
    use tcp_flags::{ACK, FIN, RST, SYN};
    let mut table = 0i32;
    for idx in 0..16u8 {
        let mut flags = 0;
        for (bit, flag) in [FIN, SYN, RST, ACK].into_iter().enumerate() {
            if idx >> bit & 1 == 1 {
                flags |= flag;
            }
        }
        if frame::tcp_flags_invalid(flags) {
            table |= 1 << idx;
        }
    }
    table
}

/// Byte-swaps the 16-bit length in `reg` that is about to be added to a
/// packet pointer. For [`Verifier::Portable`] it is then masked to 16 bits:
/// older verifiers mark a `be16` result unknown, and reject the pointer
/// arithmetic ("math between pkt pointer and register with unbounded min
/// value"); the mask gives the bound back.
fn swap_length(a: &mut Asm, reg: Reg, verifier: Verifier) {
    a.to_be(reg, SwapBits::B16);
    if verifier == Verifier::Portable {
        a.and64_imm(reg, 0xFFFF);
    }
}

/// IPv6 extension headers (44, the fragment header, is handled apart).
const EXT_HOP_BY_HOP: i32 = 0;
const EXT_ROUTING: i32 = 43;
const EXT_FRAGMENT: i32 = 44;
const EXT_AH: i32 = 51;
const EXT_DEST_OPTS: i32 = 60;

impl Gen<'_> {
    /// Emits the whole parser; each valid IP packet continues into its
    /// family's rule phases.
    pub(super) fn parse(&mut self) -> Result<(), CodegenError> {
        let eth_truncated = self.invalid_label(C::EthTruncated);
        let too_many = self.invalid_label(C::TooManyVlans);
        let a = &mut self.asm;
        let tag1 = a.named_label("vlan_tag1");
        let tag2 = a.named_label("vlan_tag2");
        let dispatch = a.named_label("l3_dispatch");
        let eth = ETH_HEADER_LEN as i32;
        let tag = VLAN_TAG_LEN as i32;

        a.comment("Ethernet header");
        a.mov64_reg(Reg::R1, DATA);
        a.add64_imm(Reg::R1, eth);
        a.jgt_reg(Reg::R1, DATA_END, eth_truncated);
        a.ldx_h(Reg::R2, DATA, 12);
        // Tagged frames fall through: the verifier explores the fall-through
        // first, so the tagged state (VLAN fields written) is the one the
        // untagged path is pruned against at the phases, not the reverse.
        let untagged = a.new_label();
        a.jeq_imm(Reg::R2, wire16(ETHERTYPE_VLAN), tag1);
        a.jne_imm(Reg::R2, wire16(ETHERTYPE_QINQ), untagged);

        a.bind(tag1);
        a.comment("first VLAN tag: its id is the packet's VLAN");
        a.mov64_reg(Reg::R1, DATA);
        a.add64_imm(Reg::R1, eth + tag);
        a.jgt_reg(Reg::R1, DATA_END, eth_truncated);
        a.ldx_h(Reg::R1, DATA, eth as i16);
        a.to_be(Reg::R1, SwapBits::B16);
        a.and64_imm(Reg::R1, 0x0FFF);
        a.stx_h(FP, self.pkt.at(PKT_VLAN), Reg::R1);
        a.st_b(FP, self.pkt.at(PKT_HAS_VLAN), 1);
        a.ldx_h(Reg::R2, DATA, (eth + 2) as i16);
        let one_tag = a.new_label();
        a.jeq_imm(Reg::R2, wire16(ETHERTYPE_VLAN), tag2);
        a.jne_imm(Reg::R2, wire16(ETHERTYPE_QINQ), one_tag);

        a.bind(tag2);
        a.comment("second VLAN tag; a third is invalid");
        a.mov64_reg(Reg::R1, DATA);
        a.add64_imm(Reg::R1, eth + 2 * tag);
        a.jgt_reg(Reg::R1, DATA_END, eth_truncated);
        a.ldx_h(Reg::R2, DATA, (eth + tag + 2) as i16);
        a.jeq_imm(Reg::R2, wire16(ETHERTYPE_VLAN), too_many);
        a.jeq_imm(Reg::R2, wire16(ETHERTYPE_QINQ), too_many);
        a.mov64_reg(L3, DATA);
        a.add64_imm(L3, eth + 2 * tag);
        a.ja(dispatch);

        a.bind(one_tag);
        a.mov64_reg(L3, DATA);
        a.add64_imm(L3, eth + tag);
        a.ja(dispatch);

        a.bind(untagged);
        a.mov64_reg(L3, DATA);
        a.add64_imm(L3, eth);

        a.bind(dispatch);
        let ipv4 = a.named_label("ipv4");
        let ipv6 = a.named_label("ipv6");
        let arp = a.named_label("arp");
        a.comment("dispatch on the ethertype");
        a.jeq_imm(Reg::R2, wire16(ETHERTYPE_IPV4), ipv4);
        // The IPv4 path lies in between: possibly beyond a jump's range.
        let ipv6_far = self.far_label(ipv6);
        let a = &mut self.asm;
        a.jeq_imm(Reg::R2, wire16(ETHERTYPE_IPV6), ipv6_far);
        a.jeq_imm(Reg::R2, wire16(ETHERTYPE_ARP), arp);
        a.comment("other ethertypes: phase 6");
        let default_pass = self.default_pass();
        self.leave(Phase::Default, default_pass)?;
        self.asm.bind(arp);
        self.asm.comment("ARP: before phase 1");
        self.leave(Phase::Arp, self.program.parse.arp_pass)?;

        self.flush_region()?;
        self.asm.bind(ipv4);
        self.parse_ipv4()?;
        self.bind_far(ipv6);
        self.parse_ipv6()?;
        Ok(())
    }

    /// Closes the parser's region (its invalid and exit blocks) and emits
    /// the family's rule phases after it.
    fn phases_after_region(&mut self, family: Family) -> Result<(), CodegenError> {
        let phases = self.asm.new_label();
        self.asm.ja(phases);
        self.flush_region()?;
        self.asm.bind(phases);
        self.rule_phases(family)
    }

    pub(super) fn default_pass(&self) -> bool {
        self.program.options.default == patronus_grammar::ast::Verdict::Pass
    }

    fn parse_ipv4(&mut self) -> Result<(), CodegenError> {
        let truncated = self.invalid_label(C::Ipv4Truncated);
        let version = self.invalid_label(C::Ipv4Version);
        let ihl = self.invalid_label(C::Ipv4Ihl);
        let options = self.invalid_label(C::Ipv4Options);
        let total = self.invalid_label(C::Ipv4TotalLength);
        let fragment = self.invalid_label(C::Fragment);
        let fragments_drop = self.program.parse.fragments_drop;
        let a = &mut self.asm;
        let have_hlen = a.new_label();
        a.comment("IPv4 header");
        a.mov64_reg(Reg::R1, L3);
        a.add64_imm(Reg::R1, 20);
        a.jgt_reg(Reg::R1, DATA_END, truncated);
        a.ldx_b(Reg::R1, L3, 0);
        a.mov64_imm(Reg::R2, 20);
        // Version 4 without options is nearly every packet: one compare.
        a.jeq_imm(Reg::R1, 0x45, have_hlen);
        a.mov64_reg(Reg::R3, Reg::R1);
        a.rsh64_imm(Reg::R3, 4);
        a.jne_imm(Reg::R3, 4, version);
        a.mov64_reg(Reg::R2, Reg::R1);
        a.and64_imm(Reg::R2, 0x0F);
        a.lsh64_imm(Reg::R2, 2);
        a.jlt_imm(Reg::R2, 20, ihl);
        a.mov64_reg(Reg::R3, L3);
        a.add64_reg(Reg::R3, Reg::R2);
        a.jgt_reg(Reg::R3, DATA_END, options);
        a.bind(have_hlen);
        a.comment("total length: at least the header, at most the frame");
        a.ldx_h(Reg::R3, L3, 2);
        swap_length(a, Reg::R3, self.verifier);
        a.jlt_reg(Reg::R3, Reg::R2, total);
        a.mov64_reg(Reg::R4, L3);
        a.add64_reg(Reg::R4, Reg::R3);
        a.jgt_reg(Reg::R4, DATA_END, total);
        a.ldx_h(Reg::R4, L3, 6);
        a.to_be(Reg::R4, SwapBits::B16);
        let non_first = a.named_label("ipv4_non_first_fragment");
        if fragments_drop {
            a.comment("fragments = drop: MF set or offset != 0");
            a.jset_imm(Reg::R4, 0x3FFF, fragment);
        } else {
            a.and64_imm(Reg::R4, 0x1FFF);
            a.jne_imm(Reg::R4, 0, non_first);
        }
        a.comment("addresses, TTL, protocol");
        a.ldx_w(Reg::R1, L3, 12);
        a.stx_w(FP, self.pkt.at(PKT_SRC), Reg::R1);
        a.ldx_w(Reg::R1, L3, 16);
        a.stx_w(FP, self.pkt.at(PKT_DST), Reg::R1);
        a.ldx_b(Reg::R1, L3, 8);
        a.stx_b(FP, self.pkt.at(PKT_HOP_LIMIT), Reg::R1);
        a.ldx_b(PROTO, L3, 9);
        a.stx_b(FP, self.pkt.at(PKT_PROTO), PROTO);
        a.mov64_reg(L4, L3);
        a.add64_reg(L4, Reg::R2);
        a.sub64_reg(SEGLEN, Reg::R2);
        let land_ports = a.named_label("ipv4_land_ports");
        let land_addrs = a.named_label("ipv4_land_addrs");
        self.transport(Family::Ipv4, land_ports, land_addrs)?;

        if !fragments_drop {
            self.asm.bind(non_first);
            self.asm.comment("non-first fragment: no transport header");
            self.store_fields_ipv4_fragment();
            self.asm
                .st_b(FP, self.pkt.at(PKT_L4), i32::from(L4_FRAGMENT));
            self.asm.ja(land_addrs);
        }
        self.land(Family::Ipv4, land_ports, land_addrs)?;
        self.phases_after_region(Family::Ipv4)
    }

    fn store_fields_ipv4_fragment(&mut self) {
        let a = &mut self.asm;
        a.ldx_w(Reg::R1, L3, 12);
        a.stx_w(FP, self.pkt.at(PKT_SRC), Reg::R1);
        a.ldx_w(Reg::R1, L3, 16);
        a.stx_w(FP, self.pkt.at(PKT_DST), Reg::R1);
        a.ldx_b(Reg::R1, L3, 8);
        a.stx_b(FP, self.pkt.at(PKT_HOP_LIMIT), Reg::R1);
        a.ldx_b(Reg::R1, L3, 9);
        a.stx_b(FP, self.pkt.at(PKT_PROTO), Reg::R1);
    }

    fn parse_ipv6(&mut self) -> Result<(), CodegenError> {
        let truncated = self.invalid_label(C::Ipv6Truncated);
        let version = self.invalid_label(C::Ipv6Version);
        let payload = self.invalid_label(C::Ipv6PayloadLength);
        let ext = self.invalid_label(C::Ipv6ExtHeaders);
        let fragment = self.invalid_label(C::Fragment);
        let parse = &self.program.parse;
        let fragments_drop = parse.fragments_drop;
        let max_ext = usize::from(parse.max_ipv6_ext_headers);
        let pkt = self.pkt;
        let nonfirst_slot = if fragments_drop {
            None
        } else {
            Some(self.frame.alloc("ipv6_non_first", 1)?)
        };
        let a = &mut self.asm;
        a.comment("IPv6 header");
        a.mov64_reg(Reg::R1, L3);
        a.add64_imm(Reg::R1, 40);
        a.jgt_reg(Reg::R1, DATA_END, truncated);
        a.ldx_b(Reg::R1, L3, 0);
        a.rsh64_imm(Reg::R1, 4);
        a.jne_imm(Reg::R1, 6, version);
        a.comment("r3 = end of the packet (40 + payload length), within the frame");
        a.ldx_h(Reg::R3, L3, 4);
        swap_length(a, Reg::R3, self.verifier);
        a.add64_imm(Reg::R3, 40);
        a.mov64_reg(Reg::R1, L3);
        a.add64_reg(Reg::R1, Reg::R3);
        a.jgt_reg(Reg::R1, DATA_END, payload);
        for word in 0..4 {
            a.ldx_dw(Reg::R1, L3, 8 + 8 * word);
            a.stx_dw(FP, pkt.at(PKT_SRC) + 8 * word, Reg::R1);
        }
        a.ldx_b(Reg::R1, L3, 7);
        a.stx_b(FP, pkt.at(PKT_HOP_LIMIT), Reg::R1);
        if let Some(slot) = nonfirst_slot {
            a.st_b(FP, slot.off, 0);
        }
        a.comment("extension headers: r4 = next header, r2 = offset in the packet");
        a.ldx_b(Reg::R4, L3, 6);
        a.mov64_imm(Reg::R2, 40);
        let chain_done = a.named_label("ipv6_chain_done");
        for k in 0..=max_ext {
            let is_ext = a.new_label();
            let have_len = a.new_label();
            if fragments_drop {
                a.jeq_imm(Reg::R4, EXT_FRAGMENT, fragment);
            } else {
                a.jeq_imm(Reg::R4, EXT_FRAGMENT, is_ext);
            }
            for nh in [EXT_HOP_BY_HOP, EXT_ROUTING, EXT_DEST_OPTS, EXT_AH] {
                a.jeq_imm(Reg::R4, nh, is_ext);
            }
            a.ja(chain_done);
            a.bind(is_ext);
            if k == max_ext {
                a.comment("one extension header too many");
                a.ja(ext);
                break;
            }
            a.comment(format!("extension header {}", k + 1));
            a.mov64_reg(Reg::R1, Reg::R2);
            a.add64_imm(Reg::R1, 2);
            a.jgt_reg(Reg::R1, Reg::R3, ext);
            a.mov64_reg(Reg::R5, L3);
            a.add64_reg(Reg::R5, Reg::R2);
            a.mov64_reg(Reg::R0, Reg::R5);
            a.add64_imm(Reg::R0, 2);
            a.jgt_reg(Reg::R0, DATA_END, ext);
            a.ldx_b(Reg::R1, Reg::R5, 1);
            let ah = a.new_label();
            let frag = a.new_label();
            a.jeq_imm(Reg::R4, EXT_AH, ah);
            if !fragments_drop {
                a.jeq_imm(Reg::R4, EXT_FRAGMENT, frag);
            }
            a.add64_imm(Reg::R1, 1);
            a.lsh64_imm(Reg::R1, 3);
            a.ja(have_len);
            a.bind(ah);
            a.add64_imm(Reg::R1, 2);
            a.lsh64_imm(Reg::R1, 2);
            a.ja(have_len);
            if let Some(slot) = nonfirst_slot {
                a.bind(frag);
                let first = a.new_label();
                a.mov64_imm(Reg::R1, 8);
                a.mov64_reg(Reg::R0, Reg::R2);
                a.add64_imm(Reg::R0, 8);
                a.jgt_reg(Reg::R0, Reg::R3, ext);
                a.mov64_reg(Reg::R0, Reg::R5);
                a.add64_imm(Reg::R0, 8);
                a.jgt_reg(Reg::R0, DATA_END, ext);
                a.ldx_h(Reg::R0, Reg::R5, 2);
                a.to_be(Reg::R0, SwapBits::B16);
                a.rsh64_imm(Reg::R0, 3);
                a.jeq_imm(Reg::R0, 0, first);
                a.st_b(FP, slot.off, 1);
                a.bind(first);
            }
            a.bind(have_len);
            a.mov64_reg(Reg::R0, Reg::R2);
            a.add64_reg(Reg::R0, Reg::R1);
            a.jgt_reg(Reg::R0, Reg::R3, ext);
            a.ldx_b(Reg::R4, Reg::R5, 0);
            a.mov64_reg(Reg::R2, Reg::R0);
        }
        a.bind(chain_done);
        a.stx_b(FP, pkt.at(PKT_PROTO), Reg::R4);
        let land_ports = a.named_label("ipv6_land_ports");
        let land_addrs = a.named_label("ipv6_land_addrs");
        if let Some(slot) = nonfirst_slot {
            let first = a.new_label();
            a.ldx_b(Reg::R1, FP, slot.off);
            a.jeq_imm(Reg::R1, 0, first);
            a.st_b(FP, pkt.at(PKT_L4), i32::from(L4_FRAGMENT));
            a.ja(land_addrs);
            a.bind(first);
        }
        a.mov64_reg(PROTO, Reg::R4);
        a.mov64_reg(L4, L3);
        a.add64_reg(L4, Reg::R2);
        a.sub64_reg(SEGLEN, Reg::R2);
        self.transport(Family::Ipv6, land_ports, land_addrs)?;
        self.land(Family::Ipv6, land_ports, land_addrs)?;
        self.phases_after_region(Family::Ipv6)
    }

    /// TCP, UDP, ICMP/ICMPv6 checks; other protocols are valid as they are.
    /// Jumps to `land_ports` (TCP/UDP) or `land_addrs` (everything else).
    fn transport(
        &mut self,
        family: Family,
        land_ports: crate::insn::Label,
        land_addrs: crate::insn::Label,
    ) -> Result<(), CodegenError> {
        let tcp_truncated = self.invalid_label(C::TcpTruncated);
        let tcp_offset = self.invalid_label(C::TcpDataOffset);
        let tcp_bad_flags = self.invalid_label(C::TcpFlags);
        let tcp_port0 = self.invalid_label(C::TcpPortZero);
        let udp_truncated = self.invalid_label(C::UdpTruncated);
        let udp_length = self.invalid_label(C::UdpLength);
        let udp_port0 = self.invalid_label(C::UdpPortZero);
        let icmp_truncated = self.invalid_label(C::IcmpTruncated);
        let pkt = self.pkt;
        let icmp_proto = match family {
            Family::Ipv4 => PROTO_ICMP,
            Family::Ipv6 => PROTO_ICMPV6,
        };
        let a = &mut self.asm;
        let tcp = a.new_label();
        let udp = a.new_label();
        let icmp = a.new_label();
        a.comment("transport: r1 = protocol, r4 = header, r3 = bytes to the end of the IP packet");
        a.jeq_imm(PROTO, i32::from(PROTO_TCP), tcp);
        a.jeq_imm(PROTO, i32::from(PROTO_UDP), udp);
        a.jeq_imm(PROTO, i32::from(icmp_proto), icmp);
        a.comment("other protocols: no header to check");
        a.ja(land_addrs);

        a.bind(tcp);
        a.comment("TCP");
        l4_header_fits(a, 20, tcp_truncated);
        a.ldx_b(Reg::R5, L4, 12);
        a.rsh64_imm(Reg::R5, 4);
        a.lsh64_imm(Reg::R5, 2);
        a.jlt_imm(Reg::R5, 20, tcp_offset);
        a.jgt_reg(Reg::R5, SEGLEN, tcp_offset);
        a.ldx_b(Reg::R5, L4, 13);
        a.stx_b(FP, pkt.at(PKT_TCP_FLAGS), Reg::R5);
        a.comment("flags: table of the 16 FIN/SYN/RST/ACK combinations");
        a.mov64_reg(Reg::R0, Reg::R5);
        a.and64_imm(Reg::R0, 0x07);
        a.and64_imm(Reg::R5, i32::from(tcp_flags::ACK));
        a.rsh64_imm(Reg::R5, 1);
        a.or64_reg(Reg::R0, Reg::R5);
        a.mov64_imm(Reg::R5, tcp_invalid_table());
        a.alu64(crate::insn::AluOp::Rsh, Reg::R5, Reg::R0);
        a.and64_imm(Reg::R5, 1);
        a.jne_imm(Reg::R5, 0, tcp_bad_flags);
        store_ports(a, pkt, tcp_port0, L4_TCP);
        a.ja(land_ports);

        a.bind(udp);
        a.comment("UDP");
        l4_header_fits(a, 8, udp_truncated);
        a.ldx_h(Reg::R5, L4, 4);
        a.to_be(Reg::R5, SwapBits::B16);
        a.jlt_imm(Reg::R5, 8, udp_length);
        store_ports(a, pkt, udp_port0, L4_UDP);
        a.ja(land_ports);

        a.bind(icmp);
        a.comment(match family {
            Family::Ipv4 => "ICMP",
            Family::Ipv6 => "ICMPv6",
        });
        l4_header_fits(a, 8, icmp_truncated);
        a.ldx_b(Reg::R1, L4, 0);
        a.stx_b(FP, pkt.at(PKT_ICMP_TYPE), Reg::R1);
        a.ldx_b(Reg::R2, L4, 1);
        a.stx_b(FP, pkt.at(PKT_ICMP_CODE), Reg::R2);
        a.st_b(FP, pkt.at(PKT_L4), i32::from(L4_ICMP));
        let (request, reply) = match family {
            Family::Ipv4 => (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
            Family::Ipv6 => (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY),
        };
        let echo = a.new_label();
        let not_echo = a.new_label();
        a.jeq_imm(Reg::R1, i32::from(request), echo);
        a.jne_imm(Reg::R1, i32::from(reply), not_echo);
        a.bind(echo);
        a.ldx_h(Reg::R2, L4, 4);
        a.stx_h(FP, pkt.at(PKT_ECHO_ID), Reg::R2);
        a.st_b(FP, pkt.at(PKT_IS_ECHO), 1);
        a.bind(not_echo);
        if family == Family::Ipv6 {
            // Neighbor discovery is decided before phase 1 and exempt
            // from the land check.
            let not_ndp = a.new_label();
            a.jlt_imm(Reg::R1, i32::from(*NDP_TYPES.start()), not_ndp);
            a.jgt_imm(Reg::R1, i32::from(*NDP_TYPES.end()), not_ndp);
            a.ldx_b(Reg::R2, FP, pkt.at(PKT_HOP_LIMIT));
            a.jne_imm(Reg::R2, i32::from(NDP_HOP_LIMIT), not_ndp);
            a.comment("NDP (types 133-137, hop limit 255): before phase 1");
            self.leave(Phase::Ndp, self.program.parse.ndp_pass)?;
            self.asm.bind(not_ndp);
        }
        self.asm.ja(land_addrs);
        Ok(())
    }

    /// Land: same source and destination address, and for TCP/UDP the same
    /// ports too. Falls through for a valid packet.
    fn land(
        &mut self,
        family: Family,
        land_ports: crate::insn::Label,
        land_addrs: crate::insn::Label,
    ) -> Result<(), CodegenError> {
        let land = self.invalid_label(C::Land);
        let pkt = self.pkt;
        let a = &mut self.asm;
        let valid = a.new_label();
        a.bind(land_ports);
        a.comment("land: same ports?");
        a.ldx_h(Reg::R1, FP, pkt.at(PKT_SPORT));
        a.ldx_h(Reg::R2, FP, pkt.at(PKT_DPORT));
        a.jne_reg(Reg::R1, Reg::R2, valid);
        a.bind(land_addrs);
        a.comment("land: same addresses?");
        match family {
            Family::Ipv4 => {
                a.ldx_w(Reg::R1, FP, pkt.at(PKT_SRC));
                a.ldx_w(Reg::R2, FP, pkt.at(PKT_DST));
                a.jne_reg(Reg::R1, Reg::R2, valid);
            }
            Family::Ipv6 => {
                for word in 0..2 {
                    a.ldx(Size::DW, Reg::R1, FP, pkt.at(PKT_SRC) + 8 * word);
                    a.ldx(Size::DW, Reg::R2, FP, pkt.at(PKT_DST) + 8 * word);
                    a.jne_reg(Reg::R1, Reg::R2, valid);
                }
            }
        }
        a.ja(land);
        a.bind(valid);
        Ok(())
    }
}

/// `goto truncated` unless the IP payload (SEGLEN) and the frame (from L4
/// to DATA_END) both hold an L4 header of `len` bytes. Clobbers r5.
fn l4_header_fits(a: &mut Asm, len: i32, truncated: Label) {
    a.jlt_imm(SEGLEN, len, truncated);
    a.mov64_reg(Reg::R5, L4);
    a.add64_imm(Reg::R5, len);
    a.jgt_reg(Reg::R5, DATA_END, truncated);
}

/// Loads the TCP/UDP source and destination ports (network order, at the
/// start of the L4 header), jumps to `port0` if either is 0, else stores
/// them and the L4 kind in the packet slots.
fn store_ports(a: &mut Asm, pkt: PacketSlots, port0: Label, l4_kind: u8) {
    a.ldx_h(Reg::R1, L4, 0);
    a.jeq_imm(Reg::R1, 0, port0);
    a.ldx_h(Reg::R2, L4, 2);
    a.jeq_imm(Reg::R2, 0, port0);
    a.stx_h(FP, pkt.at(PKT_SPORT), Reg::R1);
    a.stx_h(FP, pkt.at(PKT_DPORT), Reg::R2);
    a.st_b(FP, pkt.at(PKT_L4), i32::from(l4_kind));
}
