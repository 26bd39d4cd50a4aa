//! Phase 4: one token-bucket charge per rate-limited rule
//! ([`emit_rate_limit`]), on the maps laid out by `abi::ratelimit`.
//!
//! The xdp generator calls the hook for each matching limit-phase rule in
//! file order and jumps to its drop block on the first empty bucket, so
//! rules after it are not charged and earlier tokens stay taken, as in
//! `interp`. Established packets never get here (phase 3 returned).

use patronus_compiler::ir;
use patronus_compiler::typed::{Family, RateKey, RuleId};

use super::{emit_lookup, emit_now, emit_take_token, emit_update, load_u64};
use crate::abi::ratelimit::{
    KEY_FIELDS, KEY_MAX_SIZE, KEY_RULE, VALUE_CREDIT_NS, VALUE_LAST_NS, VALUE_SIZE, addr_len,
    bucket_bounds, flow_layout,
};
use crate::error::CodegenError;
use crate::insn::kernel::update_flags;
use crate::insn::regs::{FP, SCRATCH, StackSlot};
use crate::insn::{Asm, Label, Reg};
use crate::xdp::ctx::{PKT_DPORT, PKT_DST, PKT_PROTO, PKT_SPORT, PKT_SRC, PacketSlots, XdpCtx};

/// Takes a token from `rule`'s bucket for this packet: falls through when
/// taken, jumps to `drop` when the bucket is empty. A new bucket starts
/// full. Clobbers r0-r5 and r9.
pub fn emit_rate_limit(
    asm: &mut Asm,
    ctx: &mut XdpCtx<'_>,
    program: &ir::Program,
    rule: RuleId,
    drop: Label,
) -> Result<(), CodegenError> {
    let info = program
        .rules
        .get(rule.0 as usize)
        .ok_or_else(|| CodegenError::Internal {
            what: format!("rate limit for unknown rule {}", rule.0),
        })?;
    let rate = info.rate.ok_or_else(|| CodegenError::Internal {
        what: format!("rule `{}` is in the limit phase without a rate", info.name),
    })?;
    let map = ctx.layout.rate_limit(rate.key, ctx.family)?;
    let rule_id = i32::try_from(rule.0).map_err(|_| CodegenError::Limit {
        what: format!("rule id {} does not fit a map key", rule.0),
        rule: Some(rule),
    })?;
    let (cost, full) = bucket_bounds(&rate);
    let key = ctx.slot("rl_key", KEY_MAX_SIZE)?;
    let value = ctx.slot("rl_value", VALUE_SIZE)?;
    let pkt = ctx.pkt;
    asm.comment(format!(
        "phase 4: rate limit of `{}` (one token = {cost} ns, bucket {full} ns)",
        info.name
    ));
    let done = asm.new_label();

    if rate.key == RateKey::Global {
        // An array slot per rule: always there, zeroed (= full) at first.
        asm.st_w(FP, key.off, rule_id);
        emit_lookup(asm, map, key);
        asm.jeq_imm(Reg::R0, 0, done);
        asm.mov64_reg(SCRATCH, Reg::R0);
        emit_now(asm);
        emit_take_token(asm, cost, full, drop);
        asm.bind(done);
        return Ok(());
    }

    asm.st_w(FP, key.off + KEY_RULE, rule_id);
    emit_bucket_key(asm, pkt, ctx.family, rate.key, key);
    let fresh = asm.new_label();
    emit_lookup(asm, map, key);
    asm.jeq_imm(Reg::R0, 0, fresh);
    asm.mov64_reg(SCRATCH, Reg::R0);
    emit_now(asm);
    emit_take_token(asm, cost, full, drop);
    asm.ja(done);

    // A new bucket: full, minus this packet's token.
    asm.bind(fresh);
    emit_now(asm);
    asm.stx_dw(FP, value.off + VALUE_LAST_NS, Reg::R0);
    let empty = full < cost;
    load_u64(asm, Reg::R1, if empty { full } else { full - cost });
    asm.stx_dw(FP, value.off + VALUE_CREDIT_NS, Reg::R1);
    // NOEXIST: a bucket another CPU created meanwhile wins.
    emit_update(asm, map, key, value, update_flags::NOEXIST);
    if empty {
        // `burst 0`: nothing ever passes.
        asm.ja(drop);
    }
    asm.bind(done);
    Ok(())
}

/// Writes the packet fields of a `per src|dst|flow` key after the rule id.
fn emit_bucket_key(asm: &mut Asm, pkt: PacketSlots, family: Family, kind: RateKey, key: StackSlot) {
    let a = addr_len(family);
    // Key fields start at offset 4: copy in 4-byte words (aligned).
    let copy = |asm: &mut Asm, from: i16, to: i16| {
        for at in (0..a).step_by(4) {
            asm.ldx_w(Reg::R1, FP, pkt.at(from + at));
            asm.stx_w(FP, key.off + to + at, Reg::R1);
        }
    };
    match kind {
        RateKey::Src => copy(asm, PKT_SRC, KEY_FIELDS),
        RateKey::Dst => copy(asm, PKT_DST, KEY_FIELDS),
        RateKey::Flow => {
            let f = flow_layout(family);
            copy(asm, PKT_SRC, f.src);
            copy(asm, PKT_DST, f.dst);
            asm.ldx_h(Reg::R1, FP, pkt.at(PKT_SPORT));
            asm.stx_h(FP, key.off + f.sport, Reg::R1);
            asm.ldx_h(Reg::R1, FP, pkt.at(PKT_DPORT));
            asm.stx_h(FP, key.off + f.dport, Reg::R1);
            // Protocol plus three zero pad bytes.
            asm.ldx_b(Reg::R1, FP, pkt.at(PKT_PROTO));
            asm.stx_w(FP, key.off + f.proto, Reg::R1);
        }
        RateKey::Global => {}
    }
}
