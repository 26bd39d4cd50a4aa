//! Conntrack code: the phase-3 lookup ([`emit_established`]) and the
//! tracking of an allowed or host-sent packet ([`emit_track`]), on the
//! `ct_v4` / `ct_v6` LRU hashes laid out by `abi::conntrack`.
//!
//! Both read the parsed packet (`xdp::ctx::PacketSlots`) and mirror
//! `interp::conntrack`: the flow key is the canonical 5-tuple (either
//! direction finds the entry), the echo id stands in for ports, ICMP
//! messages other than echo and non-first fragments are never flows, a
//! lone SYN is never established, and the TCP/UDP state machine
//! (`FlowState::after`) decides the state and with it the timeout. An
//! expired entry is not deleted: it simply does not count, and tracking
//! overwrites it (the interpreter deletes it; no verdict differs).

use patronus_compiler::frame::{ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST};
use patronus_compiler::interp::conntrack::FlowState;
use patronus_compiler::ir;
use patronus_compiler::typed::{Family, Timeouts, tcp_flags};

use super::{emit_lookup, emit_now, emit_update, load_u64, refresh_ns};
use crate::abi::conntrack::{
    KEY_MAX_SIZE, VALUE_DIR, VALUE_LAST_NS, VALUE_SIZE, VALUE_STATE, VALUE_TIMEOUT_NS, key_layout,
    state_code,
};
use crate::error::CodegenError;
use crate::insn::kernel::update_flags;
use crate::insn::regs::{FP, SCRATCH, StackSlot};
use crate::insn::{Asm, Label, MapRef, Reg, SwapBits};
use crate::xdp::ctx::{
    L4_FRAGMENT, L4_ICMP, L4_TCP, PKT_DPORT, PKT_DST, PKT_ECHO_ID, PKT_ICMP_TYPE, PKT_IS_ECHO,
    PKT_L4, PKT_PROTO, PKT_SPORT, PKT_SRC, PKT_TCP_FLAGS, PacketSlots, XdpCtx,
};

/// Byte of the key slot (past the largest key) holding the packet's
/// direction: 1 when the packet's tuple is in key order.
const DIR_AT: i16 = KEY_MAX_SIZE as i16;

/// The stack slots conntrack code uses (shared by both family paths).
struct Slots {
    key: StackSlot,
    value: StackSlot,
}

fn slots(ctx: &mut XdpCtx<'_>) -> Result<Slots, CodegenError> {
    Ok(Slots {
        key: ctx.slot("ct_key", KEY_MAX_SIZE + 8)?,
        value: ctx.slot("ct_value", VALUE_SIZE)?,
    })
}

fn ct_map(ctx: &XdpCtx<'_>) -> Result<MapRef, CodegenError> {
    ctx.layout.conntrack(ctx.family)
}

/// Phase 3: jumps to `pass` when the packet belongs to a live flow (after
/// updating the flow with it); falls through otherwise, and always for a
/// lone SYN. Clobbers r0-r5 and r9.
pub fn emit_established(
    asm: &mut Asm,
    ctx: &mut XdpCtx<'_>,
    program: &ir::Program,
    pass: Label,
) -> Result<(), CodegenError> {
    let map = ct_map(ctx)?;
    let slots = slots(ctx)?;
    let pkt = ctx.pkt;
    let not_established = asm.new_label();
    asm.comment("phase 3: established (conntrack lookup; a lone SYN never is)");
    emit_skip_lone_syn(asm, pkt, not_established);
    emit_flow_key(asm, pkt, ctx.family, slots.key, not_established);
    emit_lookup(asm, map, slots.key);
    asm.jeq_imm(Reg::R0, 0, not_established);
    asm.mov64_reg(SCRATCH, Reg::R0);
    emit_now(asm);
    asm.mov64_reg(Reg::R1, Reg::R0);
    emit_update_live(
        asm,
        pkt,
        slots.key,
        &program.options.timeouts,
        false,
        not_established,
        pass,
    );
    // The caller emits the next phase right after: the label binds to it.
    asm.bind(not_established);
    Ok(())
}

/// Phase 5 (and the egress program): starts tracking the packet's flow, or
/// updates the live flow it belongs to; a lone SYN on a closing or reset
/// flow starts a new one. Falls through. Clobbers r0-r5 and r9.
pub fn emit_track(
    asm: &mut Asm,
    ctx: &mut XdpCtx<'_>,
    program: &ir::Program,
) -> Result<(), CodegenError> {
    let map = ct_map(ctx)?;
    let slots = slots(ctx)?;
    let pkt = ctx.pkt;
    let timeouts = &program.options.timeouts;
    let end = asm.new_label();
    let new_flow = asm.new_label();
    asm.comment("conntrack: track the flow");
    emit_flow_key(asm, pkt, ctx.family, slots.key, end);
    emit_lookup(asm, map, slots.key);
    asm.jeq_imm(Reg::R0, 0, new_flow);
    asm.mov64_reg(SCRATCH, Reg::R0);
    emit_now(asm);
    asm.mov64_reg(Reg::R1, Reg::R0);
    emit_update_live(asm, pkt, slots.key, timeouts, true, new_flow, end);

    asm.bind(new_flow);
    asm.comment("conntrack: new flow");
    emit_now(asm);
    asm.stx_dw(FP, slots.value.off + VALUE_LAST_NS, Reg::R0);
    // r1 = initial state, r2 = its timeout (`FlowState::initial`).
    let have = asm.new_label();
    let tcp = asm.new_label();
    let icmp = asm.new_label();
    asm.ldx_b(Reg::R3, FP, pkt.at(PKT_L4));
    asm.jeq_imm(Reg::R3, i32::from(L4_TCP), tcp);
    asm.jeq_imm(Reg::R3, i32::from(L4_ICMP), icmp);
    emit_state_and_timeout(asm, FlowState::Udp, timeouts);
    asm.ja(have);
    asm.bind(icmp);
    emit_state_and_timeout(asm, FlowState::Icmp, timeouts);
    asm.ja(have);
    asm.bind(tcp);
    // TcpSyn.after(packet): RST, else FIN, else no SYN = established.
    let rst = asm.new_label();
    let fin = asm.new_label();
    let syn = asm.new_label();
    asm.ldx_b(Reg::R3, FP, pkt.at(PKT_TCP_FLAGS));
    asm.jset_imm(Reg::R3, i32::from(tcp_flags::RST), rst);
    asm.jset_imm(Reg::R3, i32::from(tcp_flags::FIN), fin);
    asm.jset_imm(Reg::R3, i32::from(tcp_flags::SYN), syn);
    emit_state_and_timeout(asm, FlowState::TcpEstablished, timeouts);
    asm.ja(have);
    asm.bind(rst);
    emit_state_and_timeout(asm, FlowState::TcpRst, timeouts);
    asm.ja(have);
    asm.bind(fin);
    emit_state_and_timeout(asm, FlowState::TcpClosing, timeouts);
    asm.ja(have);
    asm.bind(syn);
    emit_state_and_timeout(asm, FlowState::TcpSyn, timeouts);
    asm.bind(have);
    asm.stx_dw(FP, slots.value.off + VALUE_TIMEOUT_NS, Reg::R2);
    // state | dir << 8, the rest of the word zero.
    asm.ldx_b(Reg::R3, FP, slots.key.off + DIR_AT);
    asm.lsh64_imm(Reg::R3, 8);
    asm.or64_reg(Reg::R3, Reg::R1);
    asm.stx_dw(FP, slots.value.off + VALUE_STATE, Reg::R3);
    emit_update(asm, map, slots.key, slots.value, update_flags::ANY);
    asm.bind(end);
    Ok(())
}

/// `r1 = state_code(state); r2 = its timeout`.
fn emit_state_and_timeout(asm: &mut Asm, state: FlowState, timeouts: &Timeouts) {
    asm.mov64_imm(Reg::R1, i32::from(state_code(state)));
    load_u64(asm, Reg::R2, state.timeout_ns(timeouts));
}

/// Jumps to `skip` for a TCP packet with SYN set and ACK clear.
fn emit_skip_lone_syn(asm: &mut Asm, pkt: PacketSlots, skip: Label) {
    let not_lone = asm.new_label();
    asm.ldx_b(Reg::R1, FP, pkt.at(PKT_L4));
    asm.jne_imm(Reg::R1, i32::from(L4_TCP), not_lone);
    asm.ldx_b(Reg::R1, FP, pkt.at(PKT_TCP_FLAGS));
    asm.and64_imm(Reg::R1, i32::from(tcp_flags::SYN | tcp_flags::ACK));
    asm.jeq_imm(Reg::R1, i32::from(tcp_flags::SYN), skip);
    asm.bind(not_lone);
}

/// Writes the canonical flow key of the packet into `key` and its
/// direction into `key + DIR_AT`; jumps to `untracked` for packets that are
/// not flows (non-echo ICMP, non-first fragments). Clobbers r1-r5.
pub(crate) fn emit_flow_key(
    asm: &mut Asm,
    pkt: PacketSlots,
    family: Family,
    key: StackSlot,
    untracked: Label,
) {
    let k = key_layout(family);
    let echo_request = match family {
        Family::Ipv4 => ICMP_ECHO_REQUEST,
        Family::Ipv6 => ICMPV6_ECHO_REQUEST,
    };
    let icmp = asm.new_label();
    let request = asm.new_label();
    let have_ports = asm.new_label();
    let forward = asm.new_label();
    let reverse = asm.new_label();
    let done = asm.new_label();

    // r4, r5 = the tuple's ports, network order as loaded.
    asm.ldx_b(Reg::R1, FP, pkt.at(PKT_L4));
    asm.jeq_imm(Reg::R1, i32::from(L4_ICMP), icmp);
    asm.jeq_imm(Reg::R1, i32::from(L4_FRAGMENT), untracked);
    // TCP/UDP ports; 0 for other protocols.
    asm.ldx_h(Reg::R4, FP, pkt.at(PKT_SPORT));
    asm.ldx_h(Reg::R5, FP, pkt.at(PKT_DPORT));
    asm.ja(have_ports);
    asm.bind(icmp);
    asm.ldx_b(Reg::R1, FP, pkt.at(PKT_IS_ECHO));
    asm.jeq_imm(Reg::R1, 0, untracked);
    asm.ldx_h(Reg::R3, FP, pkt.at(PKT_ECHO_ID));
    asm.ldx_b(Reg::R1, FP, pkt.at(PKT_ICMP_TYPE));
    asm.jeq_imm(Reg::R1, i32::from(echo_request), request);
    // A reply: (0, id).
    asm.mov64_imm(Reg::R4, 0);
    asm.mov64_reg(Reg::R5, Reg::R3);
    asm.ja(have_ports);
    asm.bind(request);
    asm.mov64_reg(Reg::R4, Reg::R3);
    asm.mov64_imm(Reg::R5, 0);
    asm.bind(have_ports);

    // Order: addresses as big-endian numbers, then ports.
    match family {
        Family::Ipv4 => {
            asm.ldx_w(Reg::R1, FP, pkt.at(PKT_SRC));
            asm.to_be(Reg::R1, SwapBits::B32);
            asm.ldx_w(Reg::R2, FP, pkt.at(PKT_DST));
            asm.to_be(Reg::R2, SwapBits::B32);
            asm.jlt_reg(Reg::R1, Reg::R2, forward);
            asm.jgt_reg(Reg::R1, Reg::R2, reverse);
        }
        Family::Ipv6 => {
            for half in [0, 8] {
                asm.ldx_dw(Reg::R1, FP, pkt.at(PKT_SRC + half));
                asm.to_be(Reg::R1, SwapBits::B64);
                asm.ldx_dw(Reg::R2, FP, pkt.at(PKT_DST + half));
                asm.to_be(Reg::R2, SwapBits::B64);
                asm.jlt_reg(Reg::R1, Reg::R2, forward);
                asm.jgt_reg(Reg::R1, Reg::R2, reverse);
            }
        }
    }
    asm.mov64_reg(Reg::R1, Reg::R4);
    asm.to_be(Reg::R1, SwapBits::B16);
    asm.mov64_reg(Reg::R2, Reg::R5);
    asm.to_be(Reg::R2, SwapBits::B16);
    asm.jle_reg(Reg::R1, Reg::R2, forward);
    asm.ja(reverse);

    for (label, first, second, first_port, second_port, dir) in [
        (forward, PKT_SRC, PKT_DST, Reg::R4, Reg::R5, 1),
        (reverse, PKT_DST, PKT_SRC, Reg::R5, Reg::R4, 0),
    ] {
        asm.bind(label);
        copy_addr(asm, pkt.at(first), key.off + k.first_addr, family);
        copy_addr(asm, pkt.at(second), key.off + k.second_addr, family);
        asm.stx_h(FP, key.off + k.first_port, first_port);
        asm.stx_h(FP, key.off + k.second_port, second_port);
        asm.st_b(FP, key.off + DIR_AT, dir);
        asm.ja(done);
    }
    asm.bind(done);
    // The protocol and three zero pad bytes in one store.
    asm.ldx_b(Reg::R1, FP, pkt.at(PKT_PROTO));
    asm.stx_w(FP, key.off + k.proto, Reg::R1);
}

/// Copies an address between two 8-byte aligned stack places.
fn copy_addr(asm: &mut Asm, from: i16, to: i16, family: Family) {
    match family {
        Family::Ipv4 => {
            asm.ldx_w(Reg::R1, FP, from);
            asm.stx_w(FP, to, Reg::R1);
        }
        Family::Ipv6 => {
            for half in [0, 8] {
                asm.ldx_dw(Reg::R1, FP, from + half);
                asm.stx_dw(FP, to + half, Reg::R1);
            }
        }
    }
}

/// With `r9` = a found entry and `r1` = now: jumps to `not_live` if the
/// flow expired (or, with `reopen`, if a lone SYN restarts a closing or
/// reset flow); otherwise applies `FlowState::after` to the entry, writes
/// it when the state changed or its timestamp is older than the refresh
/// interval, and jumps to `done`. Clobbers r0-r4.
fn emit_update_live(
    asm: &mut Asm,
    pkt: PacketSlots,
    key: StackSlot,
    timeouts: &Timeouts,
    reopen: bool,
    not_live: Label,
    done: Label,
) {
    let code = |s: FlowState| i32::from(state_code(s));
    let age_known = asm.new_label();
    let unchanged = asm.new_label();
    let stamp = asm.new_label();
    let non_tcp = asm.new_label();

    // r3 = age (0 if another CPU stamped the entry a tick ahead of us).
    asm.ldx_dw(Reg::R2, SCRATCH, VALUE_LAST_NS);
    asm.mov64_reg(Reg::R3, Reg::R1);
    asm.sub64_reg(Reg::R3, Reg::R2);
    asm.jge_reg(Reg::R1, Reg::R2, age_known);
    asm.mov64_imm(Reg::R3, 0);
    asm.bind(age_known);
    asm.ldx_dw(Reg::R2, SCRATCH, VALUE_TIMEOUT_NS);
    asm.jge_reg(Reg::R3, Reg::R2, not_live);
    asm.ldx_b(Reg::R4, SCRATCH, VALUE_STATE);

    asm.ldx_b(Reg::R0, FP, pkt.at(PKT_L4));
    asm.jne_imm(Reg::R0, i32::from(L4_TCP), non_tcp);
    asm.ldx_b(Reg::R0, FP, pkt.at(PKT_TCP_FLAGS));
    if reopen {
        let no_reopen = asm.new_label();
        asm.mov64_reg(Reg::R2, Reg::R0);
        asm.and64_imm(Reg::R2, i32::from(tcp_flags::SYN | tcp_flags::ACK));
        asm.jne_imm(Reg::R2, i32::from(tcp_flags::SYN), no_reopen);
        asm.jeq_imm(Reg::R4, code(FlowState::TcpClosing), not_live);
        asm.jeq_imm(Reg::R4, code(FlowState::TcpRst), not_live);
        asm.bind(no_reopen);
    }
    let to_rst = asm.new_label();
    let to_closing = asm.new_label();
    let to_established = asm.new_label();
    let to_stream = asm.new_label();
    asm.jset_imm(Reg::R0, i32::from(tcp_flags::RST), to_rst);
    asm.jeq_imm(Reg::R4, code(FlowState::TcpRst), unchanged);
    asm.jset_imm(Reg::R0, i32::from(tcp_flags::FIN), to_closing);
    asm.jne_imm(Reg::R4, code(FlowState::TcpSyn), unchanged);
    asm.jset_imm(Reg::R0, i32::from(tcp_flags::SYN), unchanged);
    asm.ja(to_established);

    // A datagram flow becomes a stream once a reply is seen.
    asm.bind(non_tcp);
    asm.jne_imm(Reg::R4, code(FlowState::Udp), unchanged);
    asm.ldx_b(Reg::R0, FP, key.off + DIR_AT);
    asm.ldx_b(Reg::R2, SCRATCH, VALUE_DIR);
    asm.jeq_reg(Reg::R0, Reg::R2, unchanged);
    asm.ja(to_stream);

    for (label, state) in [
        (to_rst, FlowState::TcpRst),
        (to_closing, FlowState::TcpClosing),
        (to_established, FlowState::TcpEstablished),
        (to_stream, FlowState::UdpStream),
    ] {
        asm.bind(label);
        asm.jeq_imm(Reg::R4, code(state), unchanged);
        asm.st_b(SCRATCH, VALUE_STATE, code(state));
        load_u64(asm, Reg::R2, state.timeout_ns(timeouts));
        asm.stx_dw(SCRATCH, VALUE_TIMEOUT_NS, Reg::R2);
        asm.ja(stamp);
    }

    asm.bind(unchanged);
    load_u64(asm, Reg::R2, refresh_ns(timeouts));
    asm.jle_reg(Reg::R3, Reg::R2, done);
    asm.bind(stamp);
    asm.stx_dw(SCRATCH, VALUE_LAST_NS, Reg::R1);
    asm.ja(done);
}
