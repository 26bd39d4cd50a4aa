//! The calls into the state generators (conntrack, rate limits, log
//! events), per the contract in `ctx`: one place that names them, so the
//! phase code reads as the phases.

use patronus_compiler::ir;
use patronus_compiler::typed::RuleId;

use super::ctx::XdpCtx;
use crate::insn::{Asm, Label};
use crate::object::CodegenError;
use crate::state;

pub(super) fn established(
    asm: &mut Asm,
    ctx: &mut XdpCtx<'_>,
    program: &ir::Program,
    pass: Label,
) -> Result<(), CodegenError> {
    state::conntrack::emit_established(asm, ctx, program, pass)
}

pub(super) fn rate_limit(
    asm: &mut Asm,
    ctx: &mut XdpCtx<'_>,
    program: &ir::Program,
    rule: RuleId,
    drop: Label,
) -> Result<(), CodegenError> {
    state::ratelimit::emit_rate_limit(asm, ctx, program, rule, drop)
}

pub(super) fn track(
    asm: &mut Asm,
    ctx: &mut XdpCtx<'_>,
    program: &ir::Program,
) -> Result<(), CodegenError> {
    state::conntrack::emit_track(asm, ctx, program)
}

pub(super) fn log(
    asm: &mut Asm,
    ctx: &mut XdpCtx<'_>,
    program: &ir::Program,
    rule: RuleId,
    pass: bool,
) -> Result<(), CodegenError> {
    state::log::emit_log(asm, ctx, program, rule, pass)
}
