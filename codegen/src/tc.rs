//! The tc egress program (section `classifier`, `BPF_PROG_TYPE_SCHED_CLS`,
//! attached with tcx on egress): it parses every frame the host sends and
//! records its flow in the same conntrack maps the XDP program reads, so
//! that replies to host-originated connections are established (§3). It
//! never drops: every path returns `TC_ACT_OK`.
//!
//! The parser accepts exactly the frames `compiler::frame::parse` accepts
//! (a frame it would call invalid is not tracked, as in
//! `Interpreter::outbound`) and fills the fields of the `xdp::ctx` packet
//! layout that conntrack reads (addresses, ports, protocol, TCP flags, ICMP
//! type, echo id, transport kind); then [`crate::state::emit_track`] runs.
//! Lengths are checked against `skb->len` (the whole packet, paged data
//! included); headers must be in the linear part (`data_end`), which they
//! are for frames the stack builds, else the frame is not tracked.

use patronus_compiler::frame::{
    ETH_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN,
    ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
    MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, VLAN_TAG_LEN,
};
use patronus_compiler::ir;
use patronus_compiler::typed::{Family, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::error::CodegenError;
use crate::insn::kernel::{sk_buff, tc_action};
use crate::insn::regs::{CTX, DATA, DATA_END, FP, Frame, SCRATCH};
use crate::insn::{AluOp, Asm, Label, Program, Reg, SwapBits};
use crate::layout::Layout;
use crate::state;
use crate::xdp::ctx::{
    L4_ICMP, L4_TCP, L4_UDP, PKT_DPORT, PKT_DST, PKT_ECHO_ID, PKT_ICMP_TYPE, PKT_IS_ECHO, PKT_L4,
    PKT_LEN, PKT_PROTO, PKT_SIZE, PKT_SPORT, PKT_SRC, PKT_TCP_FLAGS, PacketSlots, XdpCtx,
};

/// Symbol name of the egress program in the object.
pub const TC_PROGRAM_NAME: &str = "patronus_egress";

/// Bit `i` set: TCP flags with index `i = FIN | SYN<<1 | RST<<2 | ACK<<3`
/// are invalid (`frame::tcp_flags_invalid`, checked by a unit test).
const TCP_INVALID_MASK: i32 = 0xE8EB;

const IPV6_HOP_BY_HOP: i32 = 0;
const IPV6_ROUTING: i32 = 43;
const IPV6_FRAGMENT: i32 = 44;
const IPV6_AH: i32 = 51;
const IPV6_DEST_OPTS: i32 = 60;

/// The egress program of `program`, on the maps of `layout`. With
/// conntrack off it only returns `TC_ACT_OK` (the runtime need not attach
/// it).
pub fn egress_program(program: &ir::Program, layout: &Layout) -> Result<Program, CodegenError> {
    let mut asm = Asm::new();
    let mut frame = Frame::new();
    let out = asm.named_label("egress: not tracked");
    if program.usage.conntrack {
        let pkt = PacketSlots::from_slot(frame.alloc("packet", PKT_SIZE)?);
        asm.comment("egress: parse the frame the host sends, track its flow");
        asm.mov64_reg(CTX, Reg::R1);
        asm.ldx_w(DATA, CTX, sk_buff::DATA);
        asm.ldx_w(DATA_END, CTX, sk_buff::DATA_END);
        for at in (0..PKT_SIZE as i16).step_by(8) {
            asm.st_dw(FP, pkt.at(at), 0);
        }
        asm.ldx_w(Reg::R1, CTX, sk_buff::LEN);
        asm.stx_w(FP, pkt.at(PKT_LEN), Reg::R1);
        let v4 = asm.named_label("egress: ipv4");
        let v6 = asm.named_label("egress: ipv6");
        emit_l2(&mut asm, v4, v6, out);
        for (label, family) in [(v4, Family::Ipv4), (v6, Family::Ipv6)] {
            asm.bind(label);
            match family {
                Family::Ipv4 => emit_ipv4(&mut asm, pkt, program, out),
                Family::Ipv6 => emit_ipv6(&mut asm, pkt, program, out),
            }
            emit_transport(&mut asm, pkt, family, out);
            emit_land(&mut asm, pkt, family, out);
            let mut ctx = XdpCtx {
                program,
                family,
                pkt,
                frame: &mut frame,
                layout,
            };
            state::emit_track(&mut asm, &mut ctx, program)?;
            asm.ja(out);
        }
    }
    asm.bind(out);
    asm.mov64_imm(Reg::R0, tc_action::OK);
    asm.exit();
    asm.finish().map_err(CodegenError::Asm)
}

/// Ethernet and up to two VLAN tags; leaves `r9` at the L3 header.
fn emit_l2(asm: &mut Asm, v4: Label, v6: Label, out: Label) {
    asm.mov64_reg(SCRATCH, DATA);
    asm.add64_imm(SCRATCH, ETH_HEADER_LEN as i32);
    asm.jgt_reg(SCRATCH, DATA_END, out);
    asm.ldx_h(Reg::R1, DATA, 12);
    asm.to_be(Reg::R1, SwapBits::B16);
    let untagged = asm.new_label();
    for _ in 0..MAX_VLAN_TAGS {
        let tagged = asm.new_label();
        asm.jeq_imm(Reg::R1, i32::from(ETHERTYPE_VLAN), tagged);
        asm.jne_imm(Reg::R1, i32::from(ETHERTYPE_QINQ), untagged);
        asm.bind(tagged);
        asm.mov64_reg(Reg::R2, SCRATCH);
        asm.add64_imm(Reg::R2, VLAN_TAG_LEN as i32);
        asm.jgt_reg(Reg::R2, DATA_END, out);
        asm.ldx_h(Reg::R1, SCRATCH, 2);
        asm.to_be(Reg::R1, SwapBits::B16);
        asm.mov64_reg(SCRATCH, Reg::R2);
    }
    // A third tag is invalid: it falls to `out` below like any non-IP type.
    asm.bind(untagged);
    asm.jeq_imm(Reg::R1, i32::from(ETHERTYPE_IPV4), v4);
    asm.jeq_imm(Reg::R1, i32::from(ETHERTYPE_IPV6), v6);
    asm.ja(out);
}

/// `r4 = skb->len - (r9 - data)`: the bytes from the L3 header on.
fn emit_l3_len(asm: &mut Asm, pkt: PacketSlots) {
    asm.mov64_reg(Reg::R3, SCRATCH);
    asm.sub64_reg(Reg::R3, DATA);
    asm.ldx_w(Reg::R4, FP, pkt.at(PKT_LEN));
    asm.sub64_reg(Reg::R4, Reg::R3);
}

/// IPv4 header checks (`frame::parse_ipv4`); stores addresses and protocol,
/// leaves `r9` at the transport header and `r5` = its segment length.
fn emit_ipv4(asm: &mut Asm, pkt: PacketSlots, program: &ir::Program, out: Label) {
    asm.mov64_reg(Reg::R2, SCRATCH);
    asm.add64_imm(Reg::R2, 20);
    asm.jgt_reg(Reg::R2, DATA_END, out);
    asm.ldx_b(Reg::R1, SCRATCH, 0);
    asm.mov64_reg(Reg::R2, Reg::R1);
    asm.rsh64_imm(Reg::R2, 4);
    asm.jne_imm(Reg::R2, 4, out);
    asm.and64_imm(Reg::R1, 0x0f);
    asm.jlt_imm(Reg::R1, 5, out);
    asm.lsh64_imm(Reg::R1, 2);
    emit_l3_len(asm, pkt);
    // r1 = header length, r4 = bytes available, r2 = total length.
    asm.jgt_reg(Reg::R1, Reg::R4, out);
    asm.ldx_h(Reg::R2, SCRATCH, 2);
    asm.to_be(Reg::R2, SwapBits::B16);
    asm.jlt_reg(Reg::R2, Reg::R1, out);
    asm.jgt_reg(Reg::R2, Reg::R4, out);
    asm.ldx_h(Reg::R3, SCRATCH, 6);
    asm.to_be(Reg::R3, SwapBits::B16);
    // Dropped fragments are invalid; kept non-first ones have no ports:
    // neither is a flow.
    let untracked = if program.parse.fragments_drop {
        0x3fff
    } else {
        0x1fff
    };
    asm.jset_imm(Reg::R3, untracked, out);
    asm.ldx_b(Reg::R3, SCRATCH, 9);
    asm.stx_b(FP, pkt.at(PKT_PROTO), Reg::R3);
    asm.ldx_w(Reg::R3, SCRATCH, 12);
    asm.stx_w(FP, pkt.at(PKT_SRC), Reg::R3);
    asm.ldx_w(Reg::R3, SCRATCH, 16);
    asm.stx_w(FP, pkt.at(PKT_DST), Reg::R3);
    asm.mov64_reg(Reg::R5, Reg::R2);
    asm.sub64_reg(Reg::R5, Reg::R1);
    asm.add64_reg(SCRATCH, Reg::R1);
}

/// IPv6 header and extension-header chain (`frame::parse_ipv6`); stores
/// addresses and the upper-layer protocol, leaves `r9` at the transport
/// header and `r5` = its segment length.
fn emit_ipv6(asm: &mut Asm, pkt: PacketSlots, program: &ir::Program, out: Label) {
    asm.mov64_reg(Reg::R2, SCRATCH);
    asm.add64_imm(Reg::R2, 40);
    asm.jgt_reg(Reg::R2, DATA_END, out);
    asm.ldx_b(Reg::R1, SCRATCH, 0);
    asm.rsh64_imm(Reg::R1, 4);
    asm.jne_imm(Reg::R1, 6, out);
    emit_l3_len(asm, pkt);
    // r5 = end of the payload (from the L3 header).
    asm.ldx_h(Reg::R5, SCRATCH, 4);
    asm.to_be(Reg::R5, SwapBits::B16);
    asm.add64_imm(Reg::R5, 40);
    asm.jgt_reg(Reg::R5, Reg::R4, out);
    for (from, to) in [(8, PKT_SRC), (24, PKT_DST)] {
        for word in (0..16).step_by(4) {
            asm.ldx_w(Reg::R1, SCRATCH, from + word);
            asm.stx_w(FP, pkt.at(to + word), Reg::R1);
        }
    }
    // r0 = next header, r4 = its offset from the L3 header.
    asm.ldx_b(Reg::R0, SCRATCH, 6);
    asm.mov64_imm(Reg::R4, 40);
    let chain_done = asm.new_label();
    for i in 0..=MAX_IPV6_EXT_HEADERS {
        let is_ext = asm.new_label();
        let ah = asm.new_label();
        let fragment = asm.new_label();
        let have_len = asm.new_label();
        if program.parse.fragments_drop {
            asm.jeq_imm(Reg::R0, IPV6_FRAGMENT, out);
        } else {
            asm.jeq_imm(Reg::R0, IPV6_FRAGMENT, is_ext);
        }
        for ext in [IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_AH, IPV6_DEST_OPTS] {
            asm.jeq_imm(Reg::R0, ext, is_ext);
        }
        asm.ja(chain_done);
        asm.bind(is_ext);
        if i == MAX_IPV6_EXT_HEADERS {
            // One header too many: invalid.
            asm.ja(out);
            break;
        }
        // r3 = the header's address; it needs 8 bytes (every header is
        // at least that long, so the chain is invalid otherwise).
        asm.mov64_reg(Reg::R3, SCRATCH);
        asm.add64_reg(Reg::R3, Reg::R4);
        asm.mov64_reg(Reg::R2, Reg::R3);
        asm.add64_imm(Reg::R2, 8);
        asm.jgt_reg(Reg::R2, DATA_END, out);
        asm.ldx_b(Reg::R1, Reg::R3, 1);
        asm.jeq_imm(Reg::R0, IPV6_AH, ah);
        asm.jeq_imm(Reg::R0, IPV6_FRAGMENT, fragment);
        asm.add64_imm(Reg::R1, 1);
        asm.lsh64_imm(Reg::R1, 3);
        asm.ja(have_len);
        asm.bind(ah);
        asm.add64_imm(Reg::R1, 2);
        asm.lsh64_imm(Reg::R1, 2);
        asm.ja(have_len);
        asm.bind(fragment);
        // A non-first fragment has no transport header: not a flow.
        asm.ldx_h(Reg::R1, Reg::R3, 2);
        asm.to_be(Reg::R1, SwapBits::B16);
        asm.rsh64_imm(Reg::R1, 3);
        asm.jne_imm(Reg::R1, 0, out);
        asm.mov64_imm(Reg::R1, 8);
        asm.bind(have_len);
        asm.ldx_b(Reg::R0, Reg::R3, 0);
        asm.add64_reg(Reg::R4, Reg::R1);
        asm.jgt_reg(Reg::R4, Reg::R5, out);
    }
    asm.bind(chain_done);
    asm.stx_b(FP, pkt.at(PKT_PROTO), Reg::R0);
    asm.sub64_reg(Reg::R5, Reg::R4);
    asm.add64_reg(SCRATCH, Reg::R4);
}

/// TCP / UDP / ICMP checks (`frame::parse_transport`) on the segment at
/// `r9` of `r5` bytes; fills ports, flags, ICMP type, echo id, kind.
fn emit_transport(asm: &mut Asm, pkt: PacketSlots, family: Family, out: Label) {
    let (icmp_proto, request, reply) = match family {
        Family::Ipv4 => (PROTO_ICMP, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
        Family::Ipv6 => (PROTO_ICMPV6, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY),
    };
    let tcp = asm.new_label();
    let udp = asm.new_label();
    let icmp = asm.new_label();
    let ports = asm.new_label();
    let done = asm.new_label();
    asm.ldx_b(Reg::R0, FP, pkt.at(PKT_PROTO));
    asm.jeq_imm(Reg::R0, i32::from(PROTO_TCP), tcp);
    asm.jeq_imm(Reg::R0, i32::from(PROTO_UDP), udp);
    asm.jeq_imm(Reg::R0, i32::from(icmp_proto), icmp);
    // Other protocols: a flow without ports (fields stay zero).
    asm.ja(done);

    let need = |asm: &mut Asm, bytes: i32| {
        asm.jlt_imm(Reg::R5, bytes, out);
        asm.mov64_reg(Reg::R2, SCRATCH);
        asm.add64_imm(Reg::R2, bytes);
        asm.jgt_reg(Reg::R2, DATA_END, out);
    };

    asm.bind(tcp);
    need(asm, 20);
    asm.ldx_b(Reg::R1, SCRATCH, 12);
    asm.rsh64_imm(Reg::R1, 4);
    asm.lsh64_imm(Reg::R1, 2);
    asm.jlt_imm(Reg::R1, 20, out);
    asm.jgt_reg(Reg::R1, Reg::R5, out);
    asm.ldx_b(Reg::R1, SCRATCH, 13);
    asm.stx_b(FP, pkt.at(PKT_TCP_FLAGS), Reg::R1);
    // idx = FIN|SYN|RST (bits 0-2) | ACK (bit 4) >> 1.
    asm.mov64_reg(Reg::R2, Reg::R1);
    asm.and64_imm(Reg::R2, 0x07);
    asm.and64_imm(Reg::R1, 0x10);
    asm.rsh64_imm(Reg::R1, 1);
    asm.or64_reg(Reg::R1, Reg::R2);
    asm.mov64_imm(Reg::R2, TCP_INVALID_MASK);
    asm.alu64(AluOp::Rsh, Reg::R2, Reg::R1);
    asm.jset_imm(Reg::R2, 1, out);
    asm.st_b(FP, pkt.at(PKT_L4), i32::from(L4_TCP));
    asm.ja(ports);

    asm.bind(udp);
    need(asm, 8);
    asm.ldx_h(Reg::R1, SCRATCH, 4);
    asm.to_be(Reg::R1, SwapBits::B16);
    asm.jlt_imm(Reg::R1, 8, out);
    asm.st_b(FP, pkt.at(PKT_L4), i32::from(L4_UDP));

    asm.bind(ports);
    asm.ldx_h(Reg::R1, SCRATCH, 0);
    asm.jeq_imm(Reg::R1, 0, out);
    asm.stx_h(FP, pkt.at(PKT_SPORT), Reg::R1);
    asm.ldx_h(Reg::R1, SCRATCH, 2);
    asm.jeq_imm(Reg::R1, 0, out);
    asm.stx_h(FP, pkt.at(PKT_DPORT), Reg::R1);
    asm.ja(done);

    asm.bind(icmp);
    need(asm, 8);
    let echo = asm.new_label();
    asm.ldx_b(Reg::R1, SCRATCH, 0);
    asm.jeq_imm(Reg::R1, i32::from(request), echo);
    // Other ICMP messages are never flows.
    asm.jne_imm(Reg::R1, i32::from(reply), out);
    asm.bind(echo);
    asm.stx_b(FP, pkt.at(PKT_ICMP_TYPE), Reg::R1);
    asm.st_b(FP, pkt.at(PKT_L4), i32::from(L4_ICMP));
    asm.st_b(FP, pkt.at(PKT_IS_ECHO), 1);
    asm.ldx_h(Reg::R1, SCRATCH, 4);
    asm.stx_h(FP, pkt.at(PKT_ECHO_ID), Reg::R1);
    asm.bind(done);
}

/// Land (`frame::finish`): same addresses, and for TCP/UDP same ports.
fn emit_land(asm: &mut Asm, pkt: PacketSlots, family: Family, out: Label) {
    let differ = asm.new_label();
    let words: &[i16] = match family {
        Family::Ipv4 => &[0],
        Family::Ipv6 => &[0, 8],
    };
    for &at in words {
        if family == Family::Ipv4 {
            asm.ldx_w(Reg::R1, FP, pkt.at(PKT_SRC + at));
            asm.ldx_w(Reg::R2, FP, pkt.at(PKT_DST + at));
        } else {
            asm.ldx_dw(Reg::R1, FP, pkt.at(PKT_SRC + at));
            asm.ldx_dw(Reg::R2, FP, pkt.at(PKT_DST + at));
        }
        asm.jne_reg(Reg::R1, Reg::R2, differ);
    }
    // Same address: ports zero (no ports) compare equal too.
    asm.ldx_h(Reg::R1, FP, pkt.at(PKT_SPORT));
    asm.ldx_h(Reg::R2, FP, pkt.at(PKT_DPORT));
    asm.jeq_reg(Reg::R1, Reg::R2, out);
    asm.bind(differ);
}

#[cfg(test)]
mod tests {
    use super::TCP_INVALID_MASK;
    use patronus_compiler::frame::tcp_flags_invalid;

    #[test]
    fn invalid_flag_table_matches_the_parser() {
        for flags in 0..=255u8 {
            let idx = (flags & 0x07) | ((flags & 0x10) >> 1);
            let table = (TCP_INVALID_MASK >> idx) & 1 == 1;
            assert_eq!(table, tcp_flags_invalid(flags), "flags {flags:#04x}");
        }
    }
}
