//! Assembler: emit instructions with symbolic jump targets, resolve them
//! at [`Asm::finish`].
//!
//! Jumps name a [`Label`]; the label is bound to a position later (or
//! earlier) with [`Asm::bind`]. Each jump records a fix-up and
//! `finish` patches the offsets once every position is known, in the
//! manner of Cranelift's `MachBuffer` and bpfilter's `cgen/fixup.c`.
//! Limits are errors naming the label, never silent truncation: a jump
//! offset must fit the 16-bit `off` field, every used label must be bound
//! exactly once, and the program must end in `exit` or `goto`.
//!
//! Comments attached with [`Asm::comment`] become `; text` block headers
//! in [`Program::listing`] (what `--emit asm` prints).

use super::disasm::{self, MapNames};
use super::kernel::Helper;
use super::{
    AluOp, AtomicOp, ByteOrder, Insn, JmpOp, MapRef, Reg, SLOT_BYTES, Size, Src, SwapBits, Width,
};
use std::fmt;

/// A jump target, created by [`Asm::new_label`] and placed by [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Label(u32);

#[derive(Clone, Debug)]
struct LabelInfo {
    name: String,
    /// Instruction index the label was bound before.
    bound: Option<usize>,
}

/// What to patch once a label's position is known.
#[derive(Clone, Copy, Debug)]
enum FixupKind {
    /// The 16-bit `off` of a jump.
    JumpOff,
    /// The 32-bit `imm` of a BPF-to-BPF call.
    CallImm,
}

#[derive(Clone, Copy, Debug)]
struct Fixup {
    insn: usize,
    label: Label,
    kind: FixupKind,
}

/// Instruction builder with labels and deferred fix-ups.
#[derive(Clone, Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// `comments[i]`: block-header comments printed before instruction `i`.
    comments: Vec<Vec<String>>,
    pending_comments: Vec<String>,
    labels: Vec<LabelInfo>,
    fixups: Vec<Fixup>,
    /// The first misuse seen (e.g. a label bound twice), reported by `finish`.
    error: Option<AsmError>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    /// A fresh unbound label named `L<n>`.
    pub fn new_label(&mut self) -> Label {
        let name = format!("L{}", self.labels.len());
        self.named_label(name)
    }

    /// A fresh unbound label whose name appears in errors (e.g. `rule 12: next`).
    pub fn named_label(&mut self, name: impl Into<String>) -> Label {
        let label = Label(self.labels.len() as u32);
        self.labels.push(LabelInfo {
            name: name.into(),
            bound: None,
        });
        label
    }

    /// Places `label` at the next instruction to be emitted.
    pub fn bind(&mut self, label: Label) {
        let here = self.insns.len();
        match self.labels.get_mut(label.0 as usize) {
            Some(info) if info.bound.is_none() => info.bound = Some(here),
            Some(info) => {
                let name = info.name.clone();
                self.record_error(AsmError::LabelBoundTwice { label: name });
            }
            None => self.record_error(AsmError::ForeignLabel { label: label.0 }),
        }
    }

    /// Attaches a block-header comment to the next instruction emitted.
    pub fn comment(&mut self, text: impl Into<String>) {
        self.pending_comments.push(text.into());
    }

    /// Number of instructions emitted so far (not slots).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    fn record_error(&mut self, error: AsmError) {
        self.error.get_or_insert(error);
    }

    /// Appends an instruction as is. Jumps emitted this way keep their
    /// literal offsets; use the label-taking methods for symbolic targets.
    pub fn emit(&mut self, insn: Insn) {
        self.comments
            .push(std::mem::take(&mut self.pending_comments));
        self.insns.push(insn);
    }

    fn emit_with_fixup(&mut self, insn: Insn, label: Label, kind: FixupKind) {
        self.fixups.push(Fixup {
            insn: self.insns.len(),
            label,
            kind,
        });
        self.emit(insn);
    }

    // ---- ALU ---------------------------------------------------------

    pub fn alu64(&mut self, op: AluOp, dst: Reg, src: impl Into<Src>) {
        self.emit(Insn::Alu {
            width: Width::W64,
            op,
            dst,
            src: src.into(),
        });
    }

    pub fn alu32(&mut self, op: AluOp, dst: Reg, src: impl Into<Src>) {
        self.emit(Insn::Alu {
            width: Width::W32,
            op,
            dst,
            src: src.into(),
        });
    }

    /// `dst = imm` (sign-extended to 64 bits).
    pub fn mov64_imm(&mut self, dst: Reg, imm: i32) {
        self.alu64(AluOp::Mov, dst, imm);
    }

    pub fn mov64_reg(&mut self, dst: Reg, src: Reg) {
        self.alu64(AluOp::Mov, dst, src);
    }

    /// `wdst = imm` (upper 32 bits zeroed).
    pub fn mov32_imm(&mut self, dst: Reg, imm: i32) {
        self.alu32(AluOp::Mov, dst, imm);
    }

    pub fn mov32_reg(&mut self, dst: Reg, src: Reg) {
        self.alu32(AluOp::Mov, dst, src);
    }

    pub fn add64_imm(&mut self, dst: Reg, imm: i32) {
        self.alu64(AluOp::Add, dst, imm);
    }

    pub fn add64_reg(&mut self, dst: Reg, src: Reg) {
        self.alu64(AluOp::Add, dst, src);
    }

    pub fn sub64_reg(&mut self, dst: Reg, src: Reg) {
        self.alu64(AluOp::Sub, dst, src);
    }

    pub fn and64_imm(&mut self, dst: Reg, imm: i32) {
        self.alu64(AluOp::And, dst, imm);
    }

    pub fn and32_imm(&mut self, dst: Reg, imm: i32) {
        self.alu32(AluOp::And, dst, imm);
    }

    pub fn or64_reg(&mut self, dst: Reg, src: Reg) {
        self.alu64(AluOp::Or, dst, src);
    }

    pub fn lsh64_imm(&mut self, dst: Reg, imm: i32) {
        self.alu64(AluOp::Lsh, dst, imm);
    }

    pub fn rsh64_imm(&mut self, dst: Reg, imm: i32) {
        self.alu64(AluOp::Rsh, dst, imm);
    }

    pub fn neg64(&mut self, dst: Reg) {
        self.emit(Insn::Neg {
            width: Width::W64,
            dst,
        });
    }

    /// `dst = be16/32/64 dst`: network to host order on little-endian hosts.
    pub fn to_be(&mut self, dst: Reg, bits: SwapBits) {
        self.emit(Insn::Endian {
            order: ByteOrder::ToBe,
            bits,
            dst,
        });
    }

    pub fn to_le(&mut self, dst: Reg, bits: SwapBits) {
        self.emit(Insn::Endian {
            order: ByteOrder::ToLe,
            bits,
            dst,
        });
    }

    /// Unconditional byte swap (ISA v4, kernel >= 6.6).
    pub fn bswap(&mut self, dst: Reg, bits: SwapBits) {
        self.emit(Insn::Endian {
            order: ByteOrder::Swap,
            bits,
            dst,
        });
    }

    // ---- memory ------------------------------------------------------

    /// `dst = *(size *)(base + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, base: Reg, off: i16) {
        self.emit(Insn::Load {
            size,
            dst,
            base,
            off,
        });
    }

    pub fn ldx_b(&mut self, dst: Reg, base: Reg, off: i16) {
        self.ldx(Size::B, dst, base, off);
    }

    pub fn ldx_h(&mut self, dst: Reg, base: Reg, off: i16) {
        self.ldx(Size::H, dst, base, off);
    }

    pub fn ldx_w(&mut self, dst: Reg, base: Reg, off: i16) {
        self.ldx(Size::W, dst, base, off);
    }

    pub fn ldx_dw(&mut self, dst: Reg, base: Reg, off: i16) {
        self.ldx(Size::DW, dst, base, off);
    }

    /// `*(size *)(base + off) = src`.
    pub fn stx(&mut self, size: Size, base: Reg, off: i16, src: Reg) {
        self.emit(Insn::Store {
            size,
            base,
            off,
            src,
        });
    }

    pub fn stx_b(&mut self, base: Reg, off: i16, src: Reg) {
        self.stx(Size::B, base, off, src);
    }

    pub fn stx_h(&mut self, base: Reg, off: i16, src: Reg) {
        self.stx(Size::H, base, off, src);
    }

    pub fn stx_w(&mut self, base: Reg, off: i16, src: Reg) {
        self.stx(Size::W, base, off, src);
    }

    pub fn stx_dw(&mut self, base: Reg, off: i16, src: Reg) {
        self.stx(Size::DW, base, off, src);
    }

    /// `*(size *)(base + off) = imm`.
    pub fn st(&mut self, size: Size, base: Reg, off: i16, imm: i32) {
        self.emit(Insn::StoreImm {
            size,
            base,
            off,
            imm,
        });
    }

    pub fn st_b(&mut self, base: Reg, off: i16, imm: i32) {
        self.st(Size::B, base, off, imm);
    }

    pub fn st_h(&mut self, base: Reg, off: i16, imm: i32) {
        self.st(Size::H, base, off, imm);
    }

    pub fn st_w(&mut self, base: Reg, off: i16, imm: i32) {
        self.st(Size::W, base, off, imm);
    }

    pub fn st_dw(&mut self, base: Reg, off: i16, imm: i32) {
        self.st(Size::DW, base, off, imm);
    }

    /// `lock *(u32/u64 *)(base + off) += src` (counters in map values).
    pub fn atomic_add(&mut self, width: Width, base: Reg, off: i16, src: Reg) {
        self.atomic(width, AtomicOp::Add, base, off, src);
    }

    pub fn atomic(&mut self, width: Width, op: AtomicOp, base: Reg, off: i16, src: Reg) {
        self.emit(Insn::Atomic {
            width,
            op,
            base,
            off,
            src,
        });
    }

    /// `dst = imm` with a full 64-bit immediate (two slots).
    pub fn ld_imm64(&mut self, dst: Reg, imm: u64) {
        self.emit(Insn::LdImm64 { dst, imm });
    }

    /// `dst = &map`; the ELF writer turns it into a relocation.
    pub fn ld_map(&mut self, dst: Reg, map: MapRef) {
        self.emit(Insn::LdMap { dst, map });
    }

    // ---- control flow ------------------------------------------------

    /// `if dst op src goto label` with the given operand width.
    pub fn jump_if(
        &mut self,
        width: Width,
        op: JmpOp,
        dst: Reg,
        src: impl Into<Src>,
        label: Label,
    ) {
        let insn = Insn::JumpIf {
            width,
            op,
            dst,
            src: src.into(),
            off: 0,
        };
        self.emit_with_fixup(insn, label, FixupKind::JumpOff);
    }

    /// 64-bit `if dst op imm goto label`.
    pub fn jmp_imm(&mut self, op: JmpOp, dst: Reg, imm: i32, label: Label) {
        self.jump_if(Width::W64, op, dst, imm, label);
    }

    /// 64-bit `if dst op src goto label`.
    pub fn jmp_reg(&mut self, op: JmpOp, dst: Reg, src: Reg, label: Label) {
        self.jump_if(Width::W64, op, dst, src, label);
    }

    /// 32-bit `if wdst op imm goto label`.
    pub fn jmp32_imm(&mut self, op: JmpOp, dst: Reg, imm: i32, label: Label) {
        self.jump_if(Width::W32, op, dst, imm, label);
    }

    /// 32-bit `if wdst op wsrc goto label`.
    pub fn jmp32_reg(&mut self, op: JmpOp, dst: Reg, src: Reg, label: Label) {
        self.jump_if(Width::W32, op, dst, src, label);
    }

    pub fn jeq_imm(&mut self, dst: Reg, imm: i32, label: Label) {
        self.jmp_imm(JmpOp::Eq, dst, imm, label);
    }

    pub fn jne_imm(&mut self, dst: Reg, imm: i32, label: Label) {
        self.jmp_imm(JmpOp::Ne, dst, imm, label);
    }

    pub fn jgt_imm(&mut self, dst: Reg, imm: i32, label: Label) {
        self.jmp_imm(JmpOp::Gt, dst, imm, label);
    }

    pub fn jge_imm(&mut self, dst: Reg, imm: i32, label: Label) {
        self.jmp_imm(JmpOp::Ge, dst, imm, label);
    }

    pub fn jlt_imm(&mut self, dst: Reg, imm: i32, label: Label) {
        self.jmp_imm(JmpOp::Lt, dst, imm, label);
    }

    pub fn jle_imm(&mut self, dst: Reg, imm: i32, label: Label) {
        self.jmp_imm(JmpOp::Le, dst, imm, label);
    }

    pub fn jset_imm(&mut self, dst: Reg, imm: i32, label: Label) {
        self.jmp_imm(JmpOp::Set, dst, imm, label);
    }

    pub fn jeq_reg(&mut self, dst: Reg, src: Reg, label: Label) {
        self.jmp_reg(JmpOp::Eq, dst, src, label);
    }

    pub fn jne_reg(&mut self, dst: Reg, src: Reg, label: Label) {
        self.jmp_reg(JmpOp::Ne, dst, src, label);
    }

    pub fn jgt_reg(&mut self, dst: Reg, src: Reg, label: Label) {
        self.jmp_reg(JmpOp::Gt, dst, src, label);
    }

    pub fn jge_reg(&mut self, dst: Reg, src: Reg, label: Label) {
        self.jmp_reg(JmpOp::Ge, dst, src, label);
    }

    pub fn jlt_reg(&mut self, dst: Reg, src: Reg, label: Label) {
        self.jmp_reg(JmpOp::Lt, dst, src, label);
    }

    pub fn jle_reg(&mut self, dst: Reg, src: Reg, label: Label) {
        self.jmp_reg(JmpOp::Le, dst, src, label);
    }

    /// `goto label`.
    pub fn ja(&mut self, label: Label) {
        self.emit_with_fixup(Insn::Ja { off: 0 }, label, FixupKind::JumpOff);
    }

    /// Calls a kernel helper; clobbers r1-r5, result in r0.
    pub fn call(&mut self, helper: Helper) {
        self.emit(Insn::Call {
            helper: helper.id(),
        });
    }

    /// BPF-to-BPF call of the subprogram starting at `label`.
    pub fn call_local(&mut self, label: Label) {
        self.emit_with_fixup(Insn::CallLocal { off: 0 }, label, FixupKind::CallImm);
    }

    pub fn exit(&mut self) {
        self.emit(Insn::Exit);
    }

    /// Resolves every label and returns the finished program.
    pub fn finish(mut self) -> Result<Program, AsmError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if !self.pending_comments.is_empty() {
            return Err(AsmError::DanglingComment {
                comment: self.pending_comments.remove(0),
            });
        }
        match self.insns.last() {
            None => return Err(AsmError::Empty),
            Some(Insn::Exit | Insn::Ja { .. }) => {}
            Some(_) => return Err(AsmError::FallsOffEnd),
        }
        // Slot index of every instruction, plus one past the end.
        let mut slot_of = Vec::with_capacity(self.insns.len() + 1);
        let mut slot = 0usize;
        for insn in &self.insns {
            slot_of.push(slot);
            slot += insn.slots();
        }
        slot_of.push(slot);

        for fixup in &self.fixups {
            let info = self
                .labels
                .get(fixup.label.0 as usize)
                .ok_or(AsmError::ForeignLabel {
                    label: fixup.label.0,
                })?;
            let target = info.bound.ok_or_else(|| AsmError::UnboundLabel {
                label: info.name.clone(),
            })?;
            if target >= self.insns.len() {
                return Err(AsmError::LabelPastEnd {
                    label: info.name.clone(),
                });
            }
            let from = slot_of[fixup.insn];
            let distance = slot_of[target] as i64 - (from as i64 + 1);
            match (fixup.kind, &mut self.insns[fixup.insn]) {
                (FixupKind::JumpOff, Insn::JumpIf { off, .. } | Insn::Ja { off }) => {
                    *off = i16::try_from(distance).map_err(|_| AsmError::JumpOutOfRange {
                        label: info.name.clone(),
                        from,
                        to: slot_of[target],
                    })?;
                }
                (FixupKind::CallImm, Insn::CallLocal { off }) => {
                    // Programs are limited to 1M slots, far inside i32.
                    *off = i32::try_from(distance).map_err(|_| AsmError::JumpOutOfRange {
                        label: info.name.clone(),
                        from,
                        to: slot_of[target],
                    })?;
                }
                // Fix-ups are only recorded together with the matching
                // instruction kind, by the methods above.
                _ => unreachable!("fix-up kind does not match its instruction"),
            }
        }
        let labels = self
            .labels
            .into_iter()
            .filter_map(|info| info.bound.map(|index| (index, info.name)))
            .collect();
        Ok(Program {
            insns: self.insns,
            comments: self.comments,
            labels,
        })
    }
}

/// Why an [`Asm`] could not produce a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsmError {
    /// A jump whose distance does not fit the 16-bit offset field.
    JumpOutOfRange {
        label: String,
        from: usize,
        to: usize,
    },
    /// A label used by a jump but never bound.
    UnboundLabel { label: String },
    /// A label bound more than once.
    LabelBoundTwice { label: String },
    /// A jump to a label bound after the last instruction.
    LabelPastEnd { label: String },
    /// A label that was not created by this assembler.
    ForeignLabel { label: u32 },
    /// A comment with no instruction after it.
    DanglingComment { comment: String },
    /// No instructions.
    Empty,
    /// The last instruction is neither `exit` nor `goto`: the verifier
    /// rejects programs whose execution can run past the end.
    FallsOffEnd,
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsmError::JumpOutOfRange { label, from, to } => write!(
                f,
                "jump from instruction {from} to label `{label}` at {to} exceeds the 16-bit offset range"
            ),
            AsmError::UnboundLabel { label } => {
                write!(f, "label `{label}` is used but never bound")
            }
            AsmError::LabelBoundTwice { label } => write!(f, "label `{label}` is bound twice"),
            AsmError::LabelPastEnd { label } => {
                write!(f, "label `{label}` is bound after the last instruction")
            }
            AsmError::ForeignLabel { label } => {
                write!(f, "label #{label} does not belong to this assembler")
            }
            AsmError::DanglingComment { comment } => {
                write!(f, "comment `{comment}` is not followed by an instruction")
            }
            AsmError::Empty => f.write_str("program has no instructions"),
            AsmError::FallsOffEnd => f.write_str("program does not end with `exit` or `goto`"),
        }
    }
}

impl std::error::Error for AsmError {}

/// A map reference inside a program: the ELF writer emits one relocation
/// (`R_BPF_64_64` against the map's symbol) at byte offset `slot * 8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapReloc {
    pub slot: usize,
    pub map: MapRef,
}

impl MapReloc {
    pub fn byte_offset(&self) -> usize {
        self.slot * SLOT_BYTES
    }
}

/// A finished program: instructions with resolved offsets and comments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
    comments: Vec<Vec<String>>,
    /// (instruction index, label name) of bound labels, in creation order.
    labels: Vec<(usize, String)>,
}

impl Program {
    /// A program from already-resolved instructions (e.g. decoded bytes).
    pub fn from_insns(insns: Vec<Insn>) -> Program {
        let comments = vec![Vec::new(); insns.len()];
        Program {
            insns,
            comments,
            labels: Vec::new(),
        }
    }

    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Comments printed before instruction `index`.
    pub fn comments(&self, index: usize) -> &[String] {
        self.comments.get(index).map_or(&[], Vec::as_slice)
    }

    /// Bound labels as (instruction index, name).
    pub fn labels(&self) -> &[(usize, String)] {
        &self.labels
    }

    /// Length in 8-byte slots (what the kernel counts).
    pub fn slot_count(&self) -> usize {
        self.insns.iter().map(Insn::slots).sum()
    }

    /// The program's bytes, ready for an ELF section or `BPF_PROG_LOAD`.
    pub fn encode(&self) -> Vec<u8> {
        super::encode_all(&self.insns)
    }

    /// Every map reference, in program order.
    pub fn map_relocs(&self) -> Vec<MapReloc> {
        let mut slot = 0;
        let mut relocs = Vec::new();
        for insn in &self.insns {
            if let Insn::LdMap { map, .. } = *insn {
                relocs.push(MapReloc { slot, map });
            }
            slot += insn.slots();
        }
        relocs
    }

    /// bpftool-style listing with `; comment` block headers.
    pub fn listing(&self, maps: &(impl MapNames + ?Sized)) -> String {
        disasm::listing(&self.insns, maps, |index| self.comments(index))
    }
}
