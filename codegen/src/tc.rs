//! The tc egress program (section `classifier`, `BPF_PROG_TYPE_SCHED_CLS`,
//! attached with tcx on egress): it parses every frame the host sends and
//! records its flow in the same conntrack maps the XDP program reads, so
//! that replies to host-originated connections are established (§3). It
//! never drops: every path returns `TC_ACT_OK`.
//!
//! The parser is [`crate::parser`], the XDP program's, with the answers of
//! [`Egress`]: a frame `compiler::frame::parse` calls invalid is not
//! tracked (as in `Interpreter::outbound`), nor are ARP, NDP and other
//! ethertypes; a valid IP packet, its fields in the `xdp::ctx` packet
//! layout, goes to [`crate::state::emit_track`], which leaves what is not
//! a flow (a non-first fragment, ICMP other than an echo) untracked. Lengths are
//! checked against `skb->len` (the whole packet, paged data included);
//! headers must be in the linear part (`data_end`), which they are for
//! frames the stack builds, else the frame is not tracked.

use patronus_compiler::ir;
use patronus_compiler::semantics::{InvalidClass, Phase};
use patronus_compiler::typed::Family;

use crate::error::CodegenError;
use crate::insn::kernel::{sk_buff, tc_action};
use crate::insn::regs::{CTX, DATA, DATA_END, FP, Frame, SCRATCH, StackSlot};
use crate::insn::{Asm, Label, Program, Reg};
use crate::layout::Layout;
use crate::parser::{self, Hook};
use crate::state;
use crate::xdp::ctx::{PKT_LEN, PKT_SIZE, PacketSlots, XdpCtx};

/// Symbol name of the egress program in the object.
pub const TC_PROGRAM_NAME: &str = "patronus_egress";

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
        parser::emit(&mut Egress {
            asm: &mut asm,
            program,
            frame: &mut frame,
            layout,
            pkt,
            out,
        })?;
    }
    asm.bind(out);
    asm.mov64_imm(Reg::R0, tc_action::OK);
    asm.exit();
    asm.finish().map_err(CodegenError::Asm)
}

/// The egress program's answers to the parser: everything that is not a
/// valid flow goes `out`, untracked.
struct Egress<'a, 'p> {
    asm: &'a mut Asm,
    program: &'p ir::Program,
    frame: &'a mut Frame,
    layout: &'a Layout,
    pkt: PacketSlots,
    /// Returns `TC_ACT_OK`.
    out: Label,
}

impl Hook for Egress<'_, '_> {
    fn asm(&mut self) -> &mut Asm {
        self.asm
    }

    fn program(&self) -> &ir::Program {
        self.program
    }

    fn pkt(&self) -> PacketSlots {
        self.pkt
    }

    fn alloc(&mut self, name: &str, size: usize) -> Result<StackSlot, CodegenError> {
        Ok(self.frame.alloc(name, size)?)
    }

    fn invalid(&mut self, _class: InvalidClass) -> Label {
        self.out
    }

    /// ARP, NDP and other ethertypes are not flows.
    fn decide(&mut self, _phase: Phase, _pass: bool) -> Result<(), CodegenError> {
        self.asm.comment("not a flow");
        self.asm.ja(self.out);
        Ok(())
    }

    /// The length checks below compare scalars; no length is added to a
    /// packet pointer.
    fn mask_lengths(&self) -> bool {
        false
    }

    /// `len` from the L3 header within `skb->len`: the IP packet may go on
    /// in paged data the program cannot read but the stack will send.
    fn check_end(&mut self, len: Reg, scratch: Reg, invalid: Label) {
        let a = &mut *self.asm;
        a.mov64_reg(scratch, SCRATCH);
        a.sub64_reg(scratch, DATA);
        a.add64_reg(scratch, len);
        a.ldx_w(Reg::R0, FP, self.pkt.at(PKT_LEN));
        a.jgt_reg(scratch, Reg::R0, invalid);
    }

    /// The program is a few hundred instructions: every jump is near.
    fn far_label(&mut self, target: Label) -> Label {
        target
    }

    fn bind_far(&mut self, target: Label) {
        self.asm.bind(target);
    }

    fn end_region(&mut self) -> Result<(), CodegenError> {
        Ok(())
    }

    /// A valid flow: track it.
    fn valid(&mut self, family: Family) -> Result<(), CodegenError> {
        let mut ctx = XdpCtx {
            program: self.program,
            family,
            pkt: self.pkt,
            frame: &mut *self.frame,
            layout: self.layout,
        };
        state::emit_track(self.asm, &mut ctx, self.program)?;
        self.asm.ja(self.out);
        Ok(())
    }
}
