//! Phase 1 and the pre-phase of the XDP program: the frame parser of
//! [`crate::parser`], with XDP's answers to what it asks. An invalid frame
//! is counted in its class and dropped; ARP, NDP and other ethertypes are
//! decided before the rule phases; the frame ends at `data_end`; a valid
//! IP packet continues into its family's rule phases.

use patronus_compiler::ir;
use patronus_compiler::semantics::{InvalidClass, Phase};
use patronus_compiler::typed::Family;

use super::Gen;
use super::ctx::PacketSlots;
use crate::error::CodegenError;
use crate::insn::regs::{DATA_END, SCRATCH, StackSlot};
use crate::insn::{Asm, Label, Reg};
use crate::limits::Verifier;
use crate::parser::{self, Hook};

impl Gen<'_> {
    /// Emits the whole parser; each valid IP packet continues into its
    /// family's rule phases.
    pub(super) fn parse(&mut self) -> Result<(), CodegenError> {
        parser::emit(self)
    }

    pub(super) fn default_pass(&self) -> bool {
        self.program.options.default == patronus_grammar::ast::Verdict::Pass
    }
}

impl Hook for Gen<'_> {
    fn asm(&mut self) -> &mut Asm {
        &mut self.asm
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

    fn invalid(&mut self, class: InvalidClass) -> Label {
        self.invalid_label(class)
    }

    /// Counts the phase and returns the verdict in place.
    fn decide(&mut self, phase: Phase, pass: bool) -> Result<(), CodegenError> {
        self.asm.comment(match phase {
            Phase::Arp => "ARP: before phase 1",
            Phase::Ndp => "NDP (types 133-137, hop limit 255): before phase 1",
            _ => "other ethertypes: phase 6",
        });
        self.leave(phase, pass)
    }

    fn mask_lengths(&self) -> bool {
        self.verifier == Verifier::Portable
    }

    fn check_end(&mut self, len: Reg, scratch: Reg, invalid: Label) {
        let a = &mut self.asm;
        a.mov64_reg(scratch, SCRATCH);
        a.add64_reg(scratch, len);
        a.jgt_reg(scratch, DATA_END, invalid);
    }

    fn far_label(&mut self, target: Label) -> Label {
        Gen::far_label(self, target)
    }

    fn bind_far(&mut self, target: Label) {
        Gen::bind_far(self, target)
    }

    fn end_region(&mut self) -> Result<(), CodegenError> {
        self.flush_region()
    }

    /// Closes the parser's region (its invalid and exit blocks) and emits
    /// the family's rule phases after it.
    fn valid(&mut self, family: Family) -> Result<(), CodegenError> {
        let phases = self.asm.new_label();
        self.asm.ja(phases);
        self.flush_region()?;
        self.asm.bind(phases);
        self.rule_phases(family)
    }
}
