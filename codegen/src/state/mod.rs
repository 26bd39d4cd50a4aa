//! The stateful parts of the data path, as instruction emitters the XDP
//! generator calls at its hooks (contract: `xdp::ctx`): conntrack (phase 3
//! lookup, phase 5 tracking, also used by the tc egress program in
//! [`crate::tc`]), token buckets (phase 4) and `log` events.
//!
//! Semantics are the reference interpreter's (`interp::conntrack`,
//! `interp::ratelimit`), with two documented differences that come from
//! running on a real clock:
//!
//! - Time is `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, one tick
//!   per jiffy): cheaper than `bpf_ktime_get_ns`, and token buckets and
//!   timeouts of a jiffy's precision are all the language promises.
//! - A live flow whose state does not change is written back only when its
//!   timestamp is more than [`refresh_ns`] old (1 s, or 1/8 of the shortest
//!   timeout if that is smaller), so an established flow does not store to
//!   its entry (and bounce its cache line between CPUs) on every packet. A
//!   flow therefore expires up to `refresh_ns` earlier than in the
//!   interpreter; state changes are always written at once.
//!
//! Concurrency: entries are updated with plain loads and stores, as the
//! hand-written reference does; two CPUs racing on one bucket can at worst
//! lose or grant one token.

pub mod conntrack;
pub mod log;
pub mod ratelimit;

pub use conntrack::{emit_established, emit_track};
pub use log::emit_log;
pub use ratelimit::emit_rate_limit;

use patronus_compiler::typed::{NS_PER_SEC, Timeouts};

use crate::abi::ratelimit::{VALUE_CREDIT_NS, VALUE_LAST_NS};
use crate::insn::regs::{FP, SCRATCH, StackSlot};
use crate::insn::{Asm, Helper, Label, MapRef, Reg};

/// How stale a live flow's timestamp may get before it is written back.
pub fn refresh_ns(timeouts: &Timeouts) -> u64 {
    let shortest = [
        timeouts.tcp_syn,
        timeouts.tcp_established,
        timeouts.tcp_closing,
        timeouts.tcp_rst,
        timeouts.udp,
        timeouts.udp_stream,
        timeouts.icmp,
    ]
    .into_iter()
    .min()
    .unwrap_or(NS_PER_SEC);
    NS_PER_SEC.min(shortest / 8)
}

/// `r0 = now` (the coarse monotonic clock). Clobbers r1-r5.
pub(crate) fn emit_now(asm: &mut Asm) {
    asm.call(Helper::KtimeGetCoarseNs);
}

/// `reg = value` for any u64, in one slot when it fits an i32.
pub(crate) fn load_u64(asm: &mut Asm, reg: Reg, value: u64) {
    match i32::try_from(value) {
        Ok(imm) => asm.mov64_imm(reg, imm),
        Err(_) => asm.ld_imm64(reg, value),
    }
}

/// `r0 = bpf_map_lookup_elem(map, r10 + key.off)`.
pub(crate) fn emit_lookup(asm: &mut Asm, map: MapRef, key: StackSlot) {
    emit_lookup_at(asm, map, key.off);
}

/// `r0 = bpf_map_lookup_elem(map, r10 + key_off)`: the key is on the stack.
pub(crate) fn emit_lookup_at(asm: &mut Asm, map: MapRef, key_off: i16) {
    asm.ld_map(Reg::R1, map);
    asm.mov64_reg(Reg::R2, FP);
    asm.add64_imm(Reg::R2, i32::from(key_off));
    asm.call(Helper::MapLookupElem);
}

/// `bpf_map_update_elem(map, r10 + key.off, r10 + value.off, flags)`.
pub(crate) fn emit_update(
    asm: &mut Asm,
    map: MapRef,
    key: StackSlot,
    value: StackSlot,
    flags: i32,
) {
    asm.ld_map(Reg::R1, map);
    asm.mov64_reg(Reg::R2, FP);
    asm.add64_imm(Reg::R2, i32::from(key.off));
    asm.mov64_reg(Reg::R3, FP);
    asm.add64_imm(Reg::R3, i32::from(value.off));
    asm.mov64_imm(Reg::R4, flags);
    asm.call(Helper::MapUpdateElem);
}

/// Takes one token from the bucket at `r9` (a `abi::ratelimit` value) at
/// time `r0`: falls through when taken, jumps to `empty` when the bucket
/// holds less than `cost`. A bucket whose `last_ns` is 0 was never used
/// (array slots start zeroed) and counts as full. Clobbers r1-r3.
///
/// As `interp::ratelimit::Buckets::take`: credit += elapsed (a clock that
/// went backwards adds nothing and leaves `last_ns`), clamp at `full`, then
/// take `cost` if there is that much; the bucket is written either way.
pub(crate) fn emit_take_token(asm: &mut Asm, cost: u64, full: u64, empty: Label) {
    let known = asm.new_label();
    let clamp = asm.new_label();
    let no_wrap = asm.new_label();
    let clamped = asm.new_label();
    let is_empty = asm.new_label();
    let taken = asm.new_label();
    asm.ldx_dw(Reg::R1, SCRATCH, VALUE_LAST_NS);
    asm.ldx_dw(Reg::R2, SCRATCH, VALUE_CREDIT_NS);
    asm.jne_imm(Reg::R1, 0, known);
    load_u64(asm, Reg::R2, full);
    asm.stx_dw(SCRATCH, VALUE_LAST_NS, Reg::R0);
    asm.ja(clamp);
    asm.bind(known);
    asm.jle_reg(Reg::R0, Reg::R1, clamp);
    asm.mov64_reg(Reg::R3, Reg::R0);
    asm.sub64_reg(Reg::R3, Reg::R1);
    asm.add64_reg(Reg::R2, Reg::R3);
    // credit + elapsed wrapped past 2^64: more than any bucket holds.
    asm.jge_reg(Reg::R2, Reg::R3, no_wrap);
    asm.mov64_imm(Reg::R2, -1);
    asm.bind(no_wrap);
    asm.stx_dw(SCRATCH, VALUE_LAST_NS, Reg::R0);
    asm.bind(clamp);
    load_u64(asm, Reg::R3, full);
    asm.jle_reg(Reg::R2, Reg::R3, clamped);
    asm.mov64_reg(Reg::R2, Reg::R3);
    asm.bind(clamped);
    load_u64(asm, Reg::R3, cost);
    asm.jlt_reg(Reg::R2, Reg::R3, is_empty);
    asm.sub64_reg(Reg::R2, Reg::R3);
    asm.stx_dw(SCRATCH, VALUE_CREDIT_NS, Reg::R2);
    asm.ja(taken);
    asm.bind(is_empty);
    asm.stx_dw(SCRATCH, VALUE_CREDIT_NS, Reg::R2);
    asm.ja(empty);
    asm.bind(taken);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_one_second_unless_a_timeout_is_short() {
        assert_eq!(refresh_ns(&Timeouts::default()), NS_PER_SEC);
        let short = Timeouts {
            tcp_rst: 4 * NS_PER_SEC,
            ..Timeouts::default()
        };
        assert_eq!(refresh_ns(&short), NS_PER_SEC / 2);
    }
}
