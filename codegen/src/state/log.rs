//! `log` events ([`emit_log`]): one ring-buffer record (`abi::log`) per
//! decided packet of a rule with `log`, at most `options log-rate` per
//! second (a global token bucket; events over the rate are not emitted).

use patronus_compiler::ir;
use patronus_compiler::typed::{Family, RuleId};

use super::{emit_lookup, emit_now, emit_take_token};
use crate::abi::log::{
    EVENT_DPORT, EVENT_DST, EVENT_RULE, EVENT_SIZE, EVENT_SPORT, EVENT_SRC, EVENT_TIME_NS,
    EVENT_VERDICT, bucket_bounds,
};
use crate::error::CodegenError;
use crate::insn::regs::{FP, SCRATCH};
use crate::insn::{Asm, Helper, Reg};
use crate::xdp::ctx::{PKT_DPORT, PKT_DST, PKT_PROTO, PKT_SPORT, PKT_SRC, XdpCtx};

/// Emits the event of `rule` deciding `verdict_pass` for this packet, if
/// the log bucket has a token and the ring buffer has room. Falls through.
/// Clobbers r0-r5 and r9.
pub fn emit_log(
    asm: &mut Asm,
    ctx: &mut XdpCtx<'_>,
    program: &ir::Program,
    rule: RuleId,
    verdict_pass: bool,
) -> Result<(), CodegenError> {
    let Some((cost, full)) = bucket_bounds(program.options.log_rate) else {
        return Ok(());
    };
    let rule_id = i32::try_from(rule.0).map_err(|_| CodegenError::Limit {
        what: format!("rule id {} does not fit a log event", rule.0),
        rule: Some(rule),
    })?;
    let (ring, bucket) = ctx
        .layout
        .log_maps()
        .ok_or_else(|| CodegenError::Internal {
            what: format!("rule {} logs but the layout has no log maps", rule.0),
        })?;
    let key = ctx.slot("log_key", 4)?;
    let now = ctx.slot("log_now", 8)?;
    let pkt = ctx.pkt;
    let family = match ctx.family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 6,
    };
    let skip = asm.new_label();
    asm.comment(format!("log event of rule {}", rule.0));
    asm.st_w(FP, key.off, 0);
    emit_lookup(asm, bucket, key);
    asm.jeq_imm(Reg::R0, 0, skip);
    asm.mov64_reg(SCRATCH, Reg::R0);
    emit_now(asm);
    asm.stx_dw(FP, now.off, Reg::R0);
    emit_take_token(asm, cost, full, skip);

    asm.ld_map(Reg::R1, ring);
    asm.mov64_imm(Reg::R2, EVENT_SIZE as i32);
    asm.mov64_imm(Reg::R3, 0);
    asm.call(Helper::RingbufReserve);
    asm.jeq_imm(Reg::R0, 0, skip);
    asm.mov64_reg(SCRATCH, Reg::R0);
    asm.ldx_dw(Reg::R1, FP, now.off);
    asm.stx_dw(SCRATCH, EVENT_TIME_NS, Reg::R1);
    asm.st_w(SCRATCH, EVENT_RULE, rule_id);
    // verdict, proto, family, pad as one little-endian word.
    asm.ldx_b(Reg::R1, FP, pkt.at(PKT_PROTO));
    asm.lsh64_imm(Reg::R1, 8);
    asm.alu64(
        crate::insn::AluOp::Or,
        Reg::R1,
        i32::from(verdict_pass) | family << 16,
    );
    asm.stx_w(SCRATCH, EVENT_VERDICT, Reg::R1);
    asm.ldx_h(Reg::R1, FP, pkt.at(PKT_SPORT));
    asm.stx_h(SCRATCH, EVENT_SPORT, Reg::R1);
    asm.ldx_h(Reg::R1, FP, pkt.at(PKT_DPORT));
    asm.stx_h(SCRATCH, EVENT_DPORT, Reg::R1);
    asm.st_w(SCRATCH, EVENT_DPORT + 2, 0);
    for (from, to) in [(PKT_SRC, EVENT_SRC), (PKT_DST, EVENT_DST)] {
        for half in [0, 8] {
            asm.ldx_dw(Reg::R1, FP, pkt.at(from + half));
            asm.stx_dw(SCRATCH, to + half, Reg::R1);
        }
    }
    asm.mov64_reg(Reg::R1, SCRATCH);
    asm.mov64_imm(Reg::R2, 0);
    asm.call(Helper::RingbufSubmit);
    asm.bind(skip);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::abi::log::{EVENT_FAMILY, EVENT_PROTO, EVENT_VERDICT};

    #[test]
    fn verdict_proto_family_share_one_word() {
        assert_eq!(EVENT_PROTO, EVENT_VERDICT + 1);
        assert_eq!(EVENT_FAMILY, EVENT_VERDICT + 2);
    }
}
