//! The XDP program of a policy, generated from `ir::Program`.
//!
//! Shape (first decision wins, every decision returns at once):
//!
//! ```text
//! prologue    r6 = ctx, r7 = data, r8 = data_end, frame length, zero packet fields
//! L2          Ethernet, up to two VLAN tags (0x8100 / 0x88a8), dispatch on ethertype
//! ARP         pass or drop (options arp); other non-IP: default
//! IPv4 / IPv6 header checks, extension headers, fragments, TCP/UDP/ICMP, NDP, land
//!             (parse.rs: the same checks, in the same order, as compiler::frame)
//! per family  deny → established → limit → allow → default   (phases.rs)
//! exits       count the deciding rule and phase in `stats`, return the verdict
//! ```
//!
//! Specialisation: a rule phase whose start bitmap is empty for a family
//! emits no code on that family's path; classifiers are inline compares or
//! one map lookup each; established, limit and log code exists only when
//! the policy uses them. There is no division and no loop: VLAN tags and
//! IPv6 extension headers are unrolled.
//!
//! Jump ranges: jump offsets are 16 bits, so exit blocks (count the rule
//! and the phase, return) are emitted per *region* — each family's parser
//! and each word of a rule phase — and `leave` decisions count and return
//! in place; the one jump that crosses a whole family path (dispatch to
//! IPv6) hops through `goto`s placed between regions when needed. Blocks
//! nobody jumps to are removed by `prune` (the verifier rejects
//! unreachable instructions).
//!
//! Registers and stack: see `ctx` (the contract with the state generators).
//! Maps: every map is laid out before emission (`crate::layout`); the code
//! here only asks the layout for a map by role.

pub mod ctx;
mod cubes;
mod lookup;
mod parse;
mod phases;
mod prune;

use std::collections::BTreeMap;

use patronus_compiler::ir;
use patronus_compiler::semantics::{Counter, InvalidClass, Phase};

use crate::error::CodegenError;
use crate::insn::kernel::xdp_action;
use crate::insn::regs::{DATA, DATA_END, FP, Frame, StackSlot};
use crate::insn::{Asm, Label, MapRef, Program, Reg};
use crate::layout::Layout;
use crate::limits::{Limits, Verifier};
use ctx::{PKT_LEN, PKT_SIZE, PacketSlots};

/// A far jump takes another hop once this many instructions (up to twice
/// as many slots) lie behind its last one: well inside the ±32,767 slots
/// of a jump offset.
const FAR_HOP_INSNS: usize = 12_000;

/// What [`generate`] hands to the object writer.
pub struct Generated {
    pub program: Program,
    pub stack_bytes: usize,
}

/// Generates the XDP program on the maps of `layout` (from
/// `layout::plan(program)`), within the kernel's limits.
pub fn generate(program: &ir::Program, layout: &Layout) -> Result<Generated, CodegenError> {
    generate_within(program, layout, &Limits::default())
}

/// The instruction budget's error: the one place it is worded.
fn over_budget(limits: &Limits, rule: Option<patronus_compiler::typed::RuleId>) -> CodegenError {
    CodegenError::Limit {
        what: format!(
            "the program needs more than {} instructions",
            limits.max_insns
        ),
        rule,
    }
}

/// Generates the XDP program on the maps of `layout`, within `limits`.
pub fn generate_within(
    program: &ir::Program,
    layout: &Layout,
    limits: &Limits,
) -> Result<Generated, CodegenError> {
    let mut g = Gen::new(program, layout, limits.verifier)?;
    g.prologue();
    g.parse()?;
    let stack_bytes = g.frame.used();
    let marks = std::mem::take(&mut g.rule_marks);
    let blame = |limit: usize| {
        marks
            .iter()
            .find(|(at, _)| *at > limit)
            .or(marks.last())
            .map(|&(_, rule)| rule)
    };
    // Over budget before assembly: stop here (a far larger program would
    // only fail later on a jump range), blaming the rule at the limit.
    if g.asm.len() > limits.max_insns {
        return Err(over_budget(limits, blame(limits.max_insns)));
    }
    let insns = g.asm.finish().map_err(|e| match e {
        crate::insn::AsmError::JumpOutOfRange { label, from, .. } => CodegenError::Limit {
            what: format!("a jump to `{label}` exceeds the 16-bit jump range"),
            rule: blame(from),
        },
        other => CodegenError::Asm(other),
    })?;
    let insns = prune::prune_unreachable(insns).map_err(CodegenError::Asm)?;
    // The budget counts slots (a 64-bit immediate takes two), after pruning.
    if insns.slot_count() > limits.max_insns {
        return Err(over_budget(limits, blame(limits.max_insns)));
    }
    Ok(Generated {
        program: insns,
        stack_bytes,
    })
}

/// Emission state shared by the parser and the phase code.
struct Gen<'p> {
    asm: Asm,
    program: &'p ir::Program,
    /// Every map, by role (decided before emission).
    layout: &'p Layout,
    frame: Frame,
    pkt: PacketSlots,
    /// Classifier lookup keys (largest: the IPv6 LPM key, 20 bytes).
    key: StackSlot,
    /// Counter index of the deciding phase, read by the exit blocks.
    phase_key: StackSlot,
    /// Counter index of the deciding (or charged) rule.
    rule_key: StackSlot,
    /// The rule accumulator saved across state hooks.
    acc_save: StackSlot,
    stats: MapRef,
    exit_drop: Label,
    exit_pass: Label,
    exit_rule_drop: Label,
    exit_rule_pass: Label,
    /// One drop block per invalid class used.
    invalid: BTreeMap<InvalidClass, Label>,
    /// (instruction count, rule) at each rule's leaf: blames the rule
    /// that pushed the program over a size limit.
    rule_marks: Vec<(usize, patronus_compiler::typed::RuleId)>,
    /// Jumps that may cross more than the 16-bit range: (next hop label,
    /// final target, instruction count at the last hop).
    far: Vec<(Label, Label, usize)>,
    /// The verifier the code must pass (see [`Verifier`]).
    verifier: Verifier,
}

impl<'p> Gen<'p> {
    fn new(
        program: &'p ir::Program,
        layout: &'p Layout,
        verifier: Verifier,
    ) -> Result<Gen<'p>, CodegenError> {
        let mut frame = Frame::new();
        let pkt = PacketSlots::from_slot(frame.alloc("pkt", PKT_SIZE)?);
        let key = frame.alloc("key", 20)?;
        let phase_key = frame.alloc("phase_key", 4)?;
        let rule_key = frame.alloc("rule_key", 4)?;
        let acc_save = frame.alloc("acc_save", 8)?;
        let stats = layout.stats()?;
        let mut asm = Asm::new();
        let exit_drop = asm.named_label("exit_drop");
        let exit_pass = asm.named_label("exit_pass");
        let exit_rule_drop = asm.named_label("exit_rule_drop");
        let exit_rule_pass = asm.named_label("exit_rule_pass");
        Ok(Gen {
            asm,
            program,
            layout,
            verifier,
            frame,
            pkt,
            key,
            phase_key,
            rule_key,
            acc_save,
            stats,
            exit_drop,
            exit_pass,
            exit_rule_drop,
            exit_rule_pass,
            invalid: BTreeMap::new(),
            far: Vec::new(),
            rule_marks: Vec::new(),
        })
    }

    /// The stats index of a counter.
    fn counter_index(&self, counter: Counter) -> Result<i32, CodegenError> {
        self.program
            .counters
            .iter()
            .position(|c| *c == counter)
            .map(|i| i as i32)
            .ok_or_else(|| CodegenError::Internal {
                what: format!("counter {counter:?} is not in the stats layout"),
            })
    }

    fn prologue(&mut self) {
        let a = &mut self.asm;
        a.comment("prologue: r6 = ctx, r7 = data, r8 = data_end, frame length");
        a.mov64_reg(Reg::R6, Reg::R1);
        a.ldx_w(DATA, Reg::R6, crate::insn::kernel::xdp_md::DATA);
        a.ldx_w(DATA_END, Reg::R6, crate::insn::kernel::xdp_md::DATA_END);
        a.mov64_reg(Reg::R1, DATA_END);
        a.sub64_reg(Reg::R1, DATA);
        a.stx_w(FP, self.pkt.at(PKT_LEN), Reg::R1);
        // Ports, protocol, flags, ICMP, echo id, transport kind, VLAN: zero
        // until the parser finds them.
        a.st_dw(FP, self.pkt.at(ctx::PKT_SPORT), 0);
        a.st_dw(FP, self.pkt.at(ctx::PKT_ECHO_ID), 0);
    }

    /// `goto` the drop block of an invalid class.
    fn invalid_label(&mut self, class: InvalidClass) -> Label {
        if let Some(l) = self.invalid.get(&class) {
            return *l;
        }
        let l = self.asm.named_label(format!("invalid_{}", class.name()));
        self.invalid.insert(class, l);
        l
    }

    /// Decides the packet in `phase` without a rule: counts and returns
    /// right here (these decisions sit far apart; a shared exit block
    /// could be out of jump range).
    fn leave(&mut self, phase: Phase, pass: bool) -> Result<(), CodegenError> {
        let index = self.counter_index(Counter::Phase(phase))?;
        self.asm.st_w(FP, self.phase_key.off, index);
        self.count(self.phase_key);
        let action = if pass {
            xdp_action::PASS
        } else {
            xdp_action::DROP
        };
        self.asm.mov64_imm(Reg::R0, action);
        self.asm.exit();
        Ok(())
    }

    /// A label to jump to for reaching `target` from here when the code in
    /// between may be longer than a jump's range; [`Gen::bind_far`] binds
    /// `target`.
    fn far_label(&mut self, target: Label) -> Label {
        let first = self.asm.named_label("far_jump");
        self.far.push((first, target, self.asm.len()));
        first
    }

    /// Binds `target` and the last hop of far jumps to it.
    fn bind_far(&mut self, target: Label) {
        if let Some(i) = self.far.iter().position(|(_, t, _)| *t == target) {
            let (next, _, _) = self.far.remove(i);
            self.asm.bind(next);
        }
        self.asm.bind(target);
    }

    /// Jumps to an exit block: `rule` also counts the rule in `rule_key`.
    fn goto_exit(&mut self, pass: bool, rule: bool) {
        let i = usize::from(pass) + 2 * usize::from(rule);
        let label = [
            self.exit_drop,
            self.exit_pass,
            self.exit_rule_drop,
            self.exit_rule_pass,
        ][i];
        self.asm.ja(label);
    }

    /// Adds one packet and its bytes to the stats slot whose index is in
    /// `slot`. Clobbers r0-r5.
    fn count(&mut self, slot: StackSlot) {
        let a = &mut self.asm;
        let done = a.new_label();
        crate::state::emit_lookup_at(a, self.stats, slot.off);
        a.jeq_imm(Reg::R0, 0, done);
        // Per-CPU value: plain loads and stores, no atomics needed.
        a.ldx_dw(Reg::R1, Reg::R0, 0);
        a.add64_imm(Reg::R1, 1);
        a.stx_dw(Reg::R0, 0, Reg::R1);
        a.ldx_w(Reg::R2, FP, self.pkt.at(PKT_LEN));
        a.ldx_dw(Reg::R1, Reg::R0, 8);
        a.add64_reg(Reg::R1, Reg::R2);
        a.stx_dw(Reg::R0, 8, Reg::R1);
        a.bind(done);
    }

    /// Emits the pending invalid-class blocks and the four exit blocks of
    /// the current region, then starts a new region with fresh labels.
    /// Regions keep every jump to an exit short (16-bit offsets): each
    /// family's parser and each rule-phase word has its own. Must follow an
    /// instruction that does not fall through; unused blocks are pruned.
    fn flush_region(&mut self) -> Result<(), CodegenError> {
        let invalid: Vec<(InvalidClass, Label)> =
            std::mem::take(&mut self.invalid).into_iter().collect();
        for (class, label) in invalid {
            self.asm.bind(label);
            self.asm.comment(format!("invalid: {}", class.name()));
            let index = self.counter_index(Counter::Phase(Phase::Invalid(class)))?;
            self.asm.st_w(FP, self.phase_key.off, index);
            self.goto_exit(false, false);
        }
        let (rule_key, phase_key) = (self.rule_key, self.phase_key);
        for (rule_label, exit, action) in [
            (self.exit_rule_drop, self.exit_drop, xdp_action::DROP),
            (self.exit_rule_pass, self.exit_pass, xdp_action::PASS),
        ] {
            self.asm.bind(rule_label);
            self.asm.comment("count the deciding rule");
            self.count(rule_key);
            self.asm.bind(exit);
            self.asm.comment(if action == xdp_action::DROP {
                "count the phase, XDP_DROP"
            } else {
                "count the phase, XDP_PASS"
            });
            self.count(phase_key);
            self.asm.mov64_imm(Reg::R0, action);
            self.asm.exit();
        }
        // Far jumps hop through here when their last hop is getting out of
        // range (one `goto` each; only huge programs need any).
        let here = self.asm.len();
        for (next, _, since) in &mut self.far {
            if here - *since > FAR_HOP_INSNS {
                self.asm.bind(*next);
                *next = self.asm.named_label("far_jump_hop");
                self.asm.ja(*next);
                *since = self.asm.len();
            }
        }
        self.exit_drop = self.asm.named_label("exit_drop");
        self.exit_pass = self.asm.named_label("exit_pass");
        self.exit_rule_drop = self.asm.named_label("exit_rule_drop");
        self.exit_rule_pass = self.asm.named_label("exit_rule_pass");
        Ok(())
    }
}
