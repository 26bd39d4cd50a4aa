//! The eBPF instruction set as data.
//!
//! This module owns the mapping between [`Insn`] values and the 8-byte
//! `struct bpf_insn` slots the kernel loads (little-endian, `bpfel`; the
//! only byte order we emit). Every constant below was checked against the
//! kernel uapi headers (`linux/bpf_common.h`, `linux/bpf.h`).
//!
//! Layout of one slot: `code:u8, dst_reg:4 (low nibble), src_reg:4 (high
//! nibble), off:i16, imm:i32`. `LD_IMM64` takes two slots; every other
//! instruction takes one. Jump offsets and instruction indices count
//! slots, as the kernel does.
//!
//! Decoding is *canonical*: a field an instruction does not use must be
//! zero, so that `decode` accepts exactly the images `encode` produces and
//! `encode(decode(bytes)) == bytes` whenever decoding succeeds. Decoding
//! returns errors, never panics, on arbitrary bytes.
//!
//! Submodules: [`asm`] (labels and fix-ups), [`disasm`] (bpftool-style
//! text), [`regs`] (register plan and stack frame), [`kernel`] (helper
//! numbers, context offsets, return codes).

pub mod asm;
pub mod disasm;
pub mod kernel;
pub mod regs;

pub use asm::{Asm, AsmError, Label, MapReloc, Program};
pub use disasm::MapNames;
pub use kernel::Helper;

use std::fmt;

/// Size of one instruction slot in bytes.
pub const SLOT_BYTES: usize = 8;

// Instruction classes (`BPF_CLASS(code) = code & 0x07`).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;

// Source operand bit (`BPF_SRC(code) = code & 0x08`).
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;

// Load/store modes (`BPF_MODE(code) = code & 0xe0`).
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;

// ALU operations that are not in [`AluOp`] (`BPF_OP(code) = code & 0xf0`).
const OP_NEG: u8 = 0x80;
const OP_END: u8 = 0xd0;

// Jump-class operations that are not in [`JmpOp`].
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;

/// `BPF_FETCH`: an atomic operation returns the old value in `src`.
const ATOMIC_FETCH: i32 = 0x01;

/// `src_reg` of `LD_IMM64` whose `imm` names a map (`BPF_PSEUDO_MAP_FD`).
pub const PSEUDO_MAP_FD: u8 = 1;
/// `src_reg` of `CALL` whose `imm` is a pc-relative callee (`BPF_PSEUDO_CALL`).
pub const PSEUDO_CALL: u8 = 1;

/// One of the eleven eBPF registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1 = 1,
    R2 = 2,
    R3 = 3,
    R4 = 4,
    R5 = 5,
    R6 = 6,
    R7 = 7,
    R8 = 8,
    R9 = 9,
    /// The read-only frame pointer.
    R10 = 10,
}

impl Reg {
    /// All registers in number order.
    pub const ALL: [Reg; 11] = [
        Reg::R0,
        Reg::R1,
        Reg::R2,
        Reg::R3,
        Reg::R4,
        Reg::R5,
        Reg::R6,
        Reg::R7,
        Reg::R8,
        Reg::R9,
        Reg::R10,
    ];

    /// The register's number as encoded in `dst_reg`/`src_reg`.
    pub const fn num(self) -> u8 {
        self as u8
    }

    /// The register numbered `n`, if `n <= 10`.
    pub fn from_num(n: u8) -> Option<Reg> {
        Reg::ALL.get(usize::from(n)).copied()
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.num())
    }
}

/// Operand width of ALU and jump instructions: `BPF_ALU`/`BPF_JMP32`
/// operate on the low 32 bits (`w` registers), `BPF_ALU64`/`BPF_JMP` on 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    W32,
    W64,
}

/// Memory access size (`BPF_SIZE(code) = code & 0x18`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    /// `BPF_B`, 1 byte.
    B,
    /// `BPF_H`, 2 bytes.
    H,
    /// `BPF_W`, 4 bytes.
    W,
    /// `BPF_DW`, 8 bytes.
    DW,
}

impl Size {
    const fn code(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }

    const fn from_code(code: u8) -> Size {
        match code & 0x18 {
            0x00 => Size::W,
            0x08 => Size::H,
            0x10 => Size::B,
            _ => Size::DW,
        }
    }

    /// Number of bytes accessed.
    pub const fn bytes(self) -> usize {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }

    /// The C type bpftool prints for this size (`u8` .. `u64`).
    pub const fn c_type(self) -> &'static str {
        match self {
            Size::B => "u8",
            Size::H => "u16",
            Size::W => "u32",
            Size::DW => "u64",
        }
    }
}

/// Second operand of ALU and conditional jump instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Src {
    /// `BPF_X`: a register.
    Reg(Reg),
    /// `BPF_K`: the 32-bit immediate (sign-extended in 64-bit operations).
    Imm(i32),
}

impl From<Reg> for Src {
    fn from(reg: Reg) -> Src {
        Src::Reg(reg)
    }
}

impl From<i32> for Src {
    fn from(imm: i32) -> Src {
        Src::Imm(imm)
    }
}

/// Two-operand ALU operations (`dst op= src`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
    Mov,
    /// Arithmetic (sign-extending) shift right.
    Arsh,
}

impl AluOp {
    pub const ALL: [AluOp; 12] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Arsh,
    ];

    const fn code(self) -> u8 {
        match self {
            AluOp::Add => 0x00,
            AluOp::Sub => 0x10,
            AluOp::Mul => 0x20,
            AluOp::Div => 0x30,
            AluOp::Or => 0x40,
            AluOp::And => 0x50,
            AluOp::Lsh => 0x60,
            AluOp::Rsh => 0x70,
            AluOp::Mod => 0x90,
            AluOp::Xor => 0xa0,
            AluOp::Mov => 0xb0,
            AluOp::Arsh => 0xc0,
        }
    }

    fn from_code(op: u8) -> Option<AluOp> {
        AluOp::ALL
            .into_iter()
            .find(|candidate| candidate.code() == op)
    }

    /// The operator bpftool prints (`+=`, `=`, `s>>=`, ...).
    pub const fn symbol(self) -> &'static str {
        match self {
            AluOp::Add => "+=",
            AluOp::Sub => "-=",
            AluOp::Mul => "*=",
            AluOp::Div => "/=",
            AluOp::Or => "|=",
            AluOp::And => "&=",
            AluOp::Lsh => "<<=",
            AluOp::Rsh => ">>=",
            AluOp::Mod => "%=",
            AluOp::Xor => "^=",
            AluOp::Mov => "=",
            AluOp::Arsh => "s>>=",
        }
    }
}

/// Conditions of conditional jumps (`if dst op src goto pc+off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpOp {
    Eq,
    /// Unsigned `>`.
    Gt,
    /// Unsigned `>=`.
    Ge,
    /// `dst & src != 0`.
    Set,
    Ne,
    /// Signed `>`.
    Sgt,
    /// Signed `>=`.
    Sge,
    /// Unsigned `<`.
    Lt,
    /// Unsigned `<=`.
    Le,
    /// Signed `<`.
    Slt,
    /// Signed `<=`.
    Sle,
}

impl JmpOp {
    pub const ALL: [JmpOp; 11] = [
        JmpOp::Eq,
        JmpOp::Gt,
        JmpOp::Ge,
        JmpOp::Set,
        JmpOp::Ne,
        JmpOp::Sgt,
        JmpOp::Sge,
        JmpOp::Lt,
        JmpOp::Le,
        JmpOp::Slt,
        JmpOp::Sle,
    ];

    const fn code(self) -> u8 {
        match self {
            JmpOp::Eq => 0x10,
            JmpOp::Gt => 0x20,
            JmpOp::Ge => 0x30,
            JmpOp::Set => 0x40,
            JmpOp::Ne => 0x50,
            JmpOp::Sgt => 0x60,
            JmpOp::Sge => 0x70,
            JmpOp::Lt => 0xa0,
            JmpOp::Le => 0xb0,
            JmpOp::Slt => 0xc0,
            JmpOp::Sle => 0xd0,
        }
    }

    fn from_code(op: u8) -> Option<JmpOp> {
        JmpOp::ALL
            .into_iter()
            .find(|candidate| candidate.code() == op)
    }

    /// The comparison bpftool prints (`==`, `s<=`, `&`, ...).
    pub const fn symbol(self) -> &'static str {
        match self {
            JmpOp::Eq => "==",
            JmpOp::Gt => ">",
            JmpOp::Ge => ">=",
            JmpOp::Set => "&",
            JmpOp::Ne => "!=",
            JmpOp::Sgt => "s>",
            JmpOp::Sge => "s>=",
            JmpOp::Lt => "<",
            JmpOp::Le => "<=",
            JmpOp::Slt => "s<",
            JmpOp::Sle => "s<=",
        }
    }

    /// The condition that holds exactly when `self` does not.
    pub const fn negate(self) -> Option<JmpOp> {
        Some(match self {
            JmpOp::Eq => JmpOp::Ne,
            JmpOp::Ne => JmpOp::Eq,
            JmpOp::Gt => JmpOp::Le,
            JmpOp::Le => JmpOp::Gt,
            JmpOp::Ge => JmpOp::Lt,
            JmpOp::Lt => JmpOp::Ge,
            JmpOp::Sgt => JmpOp::Sle,
            JmpOp::Sle => JmpOp::Sgt,
            JmpOp::Sge => JmpOp::Slt,
            JmpOp::Slt => JmpOp::Sge,
            // "no bit in common" has no jump opcode of its own.
            JmpOp::Set => return None,
        })
    }
}

/// Operations of `BPF_STX | BPF_ATOMIC` (carried in `imm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    /// `lock *(ptr) += src`.
    Add,
    Or,
    And,
    Xor,
    /// `src = atomic_fetch_add(ptr, src)`: returns the old value.
    FetchAdd,
    FetchOr,
    FetchAnd,
    FetchXor,
    /// `src = atomic_xchg(ptr, src)`.
    Xchg,
    /// `r0 = atomic_cmpxchg(ptr, r0, src)`.
    Cmpxchg,
}

impl AtomicOp {
    pub const ALL: [AtomicOp; 10] = [
        AtomicOp::Add,
        AtomicOp::Or,
        AtomicOp::And,
        AtomicOp::Xor,
        AtomicOp::FetchAdd,
        AtomicOp::FetchOr,
        AtomicOp::FetchAnd,
        AtomicOp::FetchXor,
        AtomicOp::Xchg,
        AtomicOp::Cmpxchg,
    ];

    const fn imm(self) -> i32 {
        // The operation codes are the ALU ones (BPF_ADD = 0x00, BPF_OR,
        // BPF_AND, BPF_XOR), plus BPF_XCHG = 0xe0 and BPF_CMPXCHG = 0xf0.
        let (op, fetch) = match self {
            AtomicOp::Add => (AluOp::Add.code(), false),
            AtomicOp::Or => (AluOp::Or.code(), false),
            AtomicOp::And => (AluOp::And.code(), false),
            AtomicOp::Xor => (AluOp::Xor.code(), false),
            AtomicOp::FetchAdd => (AluOp::Add.code(), true),
            AtomicOp::FetchOr => (AluOp::Or.code(), true),
            AtomicOp::FetchAnd => (AluOp::And.code(), true),
            AtomicOp::FetchXor => (AluOp::Xor.code(), true),
            AtomicOp::Xchg => (0xe0, true),
            AtomicOp::Cmpxchg => (0xf0, true),
        };
        if fetch {
            op as i32 | ATOMIC_FETCH
        } else {
            op as i32
        }
    }

    fn from_imm(imm: i32) -> Option<AtomicOp> {
        AtomicOp::ALL
            .into_iter()
            .find(|candidate| candidate.imm() == imm)
    }
}

/// Byte order conversion of `BPF_END` (and the v4 `BSWAP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// `BPF_ALU | BPF_END | BPF_TO_LE`: a no-op truncation on little-endian hosts.
    ToLe,
    /// `BPF_ALU | BPF_END | BPF_TO_BE`: host to network order on little-endian hosts.
    ToBe,
    /// `BPF_ALU64 | BPF_END | BPF_TO_LE`: unconditional swap (ISA v4, kernel >= 6.6).
    Swap,
}

/// Width of a byte order conversion; upper bits of `dst` are zeroed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwapBits {
    B16,
    B32,
    B64,
}

impl SwapBits {
    pub const fn bits(self) -> i32 {
        match self {
            SwapBits::B16 => 16,
            SwapBits::B32 => 32,
            SwapBits::B64 => 64,
        }
    }

    fn from_bits(bits: i32) -> Option<SwapBits> {
        match bits {
            16 => Some(SwapBits::B16),
            32 => Some(SwapBits::B32),
            64 => Some(SwapBits::B64),
            _ => None,
        }
    }
}

/// A map referenced by a program: an index into the object's map table
/// (the list the ELF writer emits and the runtime creates). In the
/// encoded instruction it sits in `imm` with `src_reg = BPF_PSEUDO_MAP_FD`;
/// the loader rewrites `imm` to the map's file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapRef(pub u32);

/// One eBPF instruction. Jump offsets count slots from the *next* slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Insn {
    /// `dst op= src` on 32 or 64 bits (`MOV` included).
    Alu {
        width: Width,
        op: AluOp,
        dst: Reg,
        src: Src,
    },
    /// `dst = -dst`.
    Neg { width: Width, dst: Reg },
    /// `dst = be16 dst` and friends.
    Endian {
        order: ByteOrder,
        bits: SwapBits,
        dst: Reg,
    },
    /// `if dst op src goto pc+off`.
    JumpIf {
        width: Width,
        op: JmpOp,
        dst: Reg,
        src: Src,
        off: i16,
    },
    /// `goto pc+off`.
    Ja { off: i16 },
    /// Call of a kernel helper by number (see [`Helper`]).
    Call { helper: u32 },
    /// BPF-to-BPF call (`BPF_PSEUDO_CALL`): callee at `pc + 1 + off`.
    CallLocal { off: i32 },
    /// Return `r0`.
    Exit,
    /// `BPF_LDX | BPF_MEM`: `dst = *(size *)(base + off)`.
    Load {
        size: Size,
        dst: Reg,
        base: Reg,
        off: i16,
    },
    /// `BPF_STX | BPF_MEM`: `*(size *)(base + off) = src`.
    Store {
        size: Size,
        base: Reg,
        off: i16,
        src: Reg,
    },
    /// `BPF_ST | BPF_MEM`: `*(size *)(base + off) = imm`.
    StoreImm {
        size: Size,
        base: Reg,
        off: i16,
        imm: i32,
    },
    /// `BPF_STX | BPF_ATOMIC` on a 32- or 64-bit word at `base + off`.
    Atomic {
        width: Width,
        op: AtomicOp,
        base: Reg,
        off: i16,
        src: Reg,
    },
    /// `dst = imm` with a full 64-bit immediate (two slots).
    LdImm64 { dst: Reg, imm: u64 },
    /// `dst = &map` (two slots, `src_reg = BPF_PSEUDO_MAP_FD`).
    LdMap { dst: Reg, map: MapRef },
}

/// The bytes of one encoded instruction: 8, or 16 for the two-slot loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    bytes: [u8; 16],
    len: usize,
}

impl Encoded {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::ops::Deref for Encoded {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// The fields of one raw `struct bpf_insn` slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Raw {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Raw {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Raw {
        Raw {
            code,
            dst: dst.num(),
            src: src.num(),
            off,
            imm,
        }
    }

    fn to_bytes(self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    fn from_bytes(b: [u8; 8]) -> Raw {
        Raw {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

const fn alu_class(width: Width) -> u8 {
    match width {
        Width::W32 => CLASS_ALU,
        Width::W64 => CLASS_ALU64,
    }
}

const fn jmp_class(width: Width) -> u8 {
    match width {
        Width::W32 => CLASS_JMP32,
        Width::W64 => CLASS_JMP,
    }
}

/// Splits a source operand into (`BPF_K`/`BPF_X` bit, `src_reg`, `imm`).
fn src_fields(src: Src) -> (u8, Reg, i32) {
    match src {
        Src::Reg(reg) => (SRC_X, reg, 0),
        Src::Imm(imm) => (SRC_K, Reg::R0, imm),
    }
}

impl Insn {
    /// Number of 8-byte slots the instruction occupies.
    pub const fn slots(&self) -> usize {
        match self {
            Insn::LdImm64 { .. } | Insn::LdMap { .. } => 2,
            _ => 1,
        }
    }

    /// The opcode byte of the (first) slot.
    pub fn opcode(&self) -> u8 {
        self.raw().0.code
    }

    /// The raw slot(s): the second one only for two-slot loads.
    fn raw(&self) -> (Raw, Option<Raw>) {
        use Reg::R0;
        let one = |raw| (raw, None);
        match *self {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                let (src_bit, src_reg, imm) = src_fields(src);
                one(Raw::new(
                    alu_class(width) | op.code() | src_bit,
                    dst,
                    src_reg,
                    0,
                    imm,
                ))
            }
            Insn::Neg { width, dst } => one(Raw::new(alu_class(width) | OP_NEG, dst, R0, 0, 0)),
            Insn::Endian { order, bits, dst } => {
                let code = match order {
                    ByteOrder::ToLe => CLASS_ALU | OP_END,
                    ByteOrder::ToBe => CLASS_ALU | OP_END | SRC_X,
                    ByteOrder::Swap => CLASS_ALU64 | OP_END,
                };
                one(Raw::new(code, dst, R0, 0, bits.bits()))
            }
            Insn::JumpIf {
                width,
                op,
                dst,
                src,
                off,
            } => {
                let (src_bit, src_reg, imm) = src_fields(src);
                one(Raw::new(
                    jmp_class(width) | op.code() | src_bit,
                    dst,
                    src_reg,
                    off,
                    imm,
                ))
            }
            Insn::Ja { off } => one(Raw::new(CLASS_JMP | OP_JA, R0, R0, off, 0)),
            // Helper numbers are non-negative in the kernel; the cast keeps
            // every `u32` representable so decoding stays total.
            Insn::Call { helper } => one(Raw::new(CLASS_JMP | OP_CALL, R0, R0, 0, helper as i32)),
            Insn::CallLocal { off } => one(Raw {
                code: CLASS_JMP | OP_CALL,
                dst: 0,
                src: PSEUDO_CALL,
                off: 0,
                imm: off,
            }),
            Insn::Exit => one(Raw::new(CLASS_JMP | OP_EXIT, R0, R0, 0, 0)),
            Insn::Load {
                size,
                dst,
                base,
                off,
            } => one(Raw::new(
                CLASS_LDX | MODE_MEM | size.code(),
                dst,
                base,
                off,
                0,
            )),
            Insn::Store {
                size,
                base,
                off,
                src,
            } => one(Raw::new(
                CLASS_STX | MODE_MEM | size.code(),
                base,
                src,
                off,
                0,
            )),
            Insn::StoreImm {
                size,
                base,
                off,
                imm,
            } => one(Raw::new(
                CLASS_ST | MODE_MEM | size.code(),
                base,
                R0,
                off,
                imm,
            )),
            Insn::Atomic {
                width,
                op,
                base,
                off,
                src,
            } => {
                let size = match width {
                    Width::W32 => Size::W,
                    Width::W64 => Size::DW,
                };
                one(Raw::new(
                    CLASS_STX | MODE_ATOMIC | size.code(),
                    base,
                    src,
                    off,
                    op.imm(),
                ))
            }
            Insn::LdImm64 { dst, imm } => (
                Raw::new(
                    CLASS_LD | MODE_IMM | Size::DW.code(),
                    dst,
                    R0,
                    0,
                    imm as u32 as i32,
                ),
                Some(Raw::new(0, R0, R0, 0, (imm >> 32) as u32 as i32)),
            ),
            Insn::LdMap { dst, map } => (
                Raw {
                    code: CLASS_LD | MODE_IMM | Size::DW.code(),
                    dst: dst.num(),
                    src: PSEUDO_MAP_FD,
                    off: 0,
                    imm: map.0 as i32,
                },
                Some(Raw::new(0, R0, R0, 0, 0)),
            ),
        }
    }

    /// The instruction's bytes (little-endian).
    pub fn encode(&self) -> Encoded {
        let (first, second) = self.raw();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&first.to_bytes());
        let len = match second {
            Some(second) => {
                bytes[8..].copy_from_slice(&second.to_bytes());
                16
            }
            None => 8,
        };
        Encoded { bytes, len }
    }

    /// Decodes the instruction at the start of `bytes` (it may be followed
    /// by more). Use [`Insn::slots`] on the result to advance.
    pub fn decode(bytes: &[u8]) -> Result<Insn, DecodeError> {
        let first = read_slot(bytes, 0)?;
        let raw = Raw::from_bytes(first);
        let code = raw.code;
        let class = code & 0x07;
        let check = Checker { raw };
        match class {
            CLASS_ALU | CLASS_ALU64 => {
                let width = if class == CLASS_ALU {
                    Width::W32
                } else {
                    Width::W64
                };
                let op = code & 0xf0;
                let src_bit = code & 0x08;
                check.zero_off()?;
                match op {
                    OP_END => {
                        let order = match (class, src_bit) {
                            (CLASS_ALU, SRC_K) => ByteOrder::ToLe,
                            (CLASS_ALU, _) => ByteOrder::ToBe,
                            (_, SRC_K) => ByteOrder::Swap,
                            _ => return Err(DecodeError::UnknownOpcode { code }),
                        };
                        check.zero_src()?;
                        let bits = SwapBits::from_bits(raw.imm)
                            .ok_or(DecodeError::BadImm { code, imm: raw.imm })?;
                        Ok(Insn::Endian {
                            order,
                            bits,
                            dst: check.dst()?,
                        })
                    }
                    OP_NEG => {
                        if src_bit != SRC_K {
                            return Err(DecodeError::UnknownOpcode { code });
                        }
                        check.zero_src()?;
                        check.zero_imm()?;
                        Ok(Insn::Neg {
                            width,
                            dst: check.dst()?,
                        })
                    }
                    _ => {
                        let op = AluOp::from_code(op).ok_or(DecodeError::UnknownOpcode { code })?;
                        let src = check.src_operand(src_bit)?;
                        Ok(Insn::Alu {
                            width,
                            op,
                            dst: check.dst()?,
                            src,
                        })
                    }
                }
            }
            CLASS_JMP | CLASS_JMP32 => {
                let width = if class == CLASS_JMP {
                    Width::W64
                } else {
                    Width::W32
                };
                let op = code & 0xf0;
                let src_bit = code & 0x08;
                match (op, class, src_bit) {
                    (OP_JA, CLASS_JMP, SRC_K) => {
                        check.zero_dst()?;
                        check.zero_src()?;
                        check.zero_imm()?;
                        Ok(Insn::Ja { off: raw.off })
                    }
                    (OP_CALL, CLASS_JMP, SRC_K) => {
                        check.zero_dst()?;
                        check.zero_off()?;
                        match raw.src {
                            0 => Ok(Insn::Call {
                                helper: raw.imm as u32,
                            }),
                            PSEUDO_CALL => Ok(Insn::CallLocal { off: raw.imm }),
                            other => Err(DecodeError::UnsupportedPseudo { code, src: other }),
                        }
                    }
                    (OP_EXIT, CLASS_JMP, SRC_K) => {
                        check.zero_dst()?;
                        check.zero_src()?;
                        check.zero_off()?;
                        check.zero_imm()?;
                        Ok(Insn::Exit)
                    }
                    (OP_JA | OP_CALL | OP_EXIT, _, _) => Err(DecodeError::UnknownOpcode { code }),
                    _ => {
                        let op = JmpOp::from_code(op).ok_or(DecodeError::UnknownOpcode { code })?;
                        let src = check.src_operand(src_bit)?;
                        Ok(Insn::JumpIf {
                            width,
                            op,
                            dst: check.dst()?,
                            src,
                            off: raw.off,
                        })
                    }
                }
            }
            CLASS_LDX => {
                if code & 0xe0 != MODE_MEM {
                    return Err(DecodeError::UnknownOpcode { code });
                }
                check.zero_imm()?;
                Ok(Insn::Load {
                    size: Size::from_code(code),
                    dst: check.dst()?,
                    base: check.src()?,
                    off: raw.off,
                })
            }
            CLASS_ST => {
                if code & 0xe0 != MODE_MEM {
                    return Err(DecodeError::UnknownOpcode { code });
                }
                check.zero_src()?;
                Ok(Insn::StoreImm {
                    size: Size::from_code(code),
                    base: check.dst()?,
                    off: raw.off,
                    imm: raw.imm,
                })
            }
            CLASS_STX => match code & 0xe0 {
                MODE_MEM => {
                    check.zero_imm()?;
                    Ok(Insn::Store {
                        size: Size::from_code(code),
                        base: check.dst()?,
                        off: raw.off,
                        src: check.src()?,
                    })
                }
                MODE_ATOMIC => {
                    let width = match Size::from_code(code) {
                        Size::W => Width::W32,
                        Size::DW => Width::W64,
                        Size::B | Size::H => return Err(DecodeError::UnknownOpcode { code }),
                    };
                    let op = AtomicOp::from_imm(raw.imm)
                        .ok_or(DecodeError::BadImm { code, imm: raw.imm })?;
                    Ok(Insn::Atomic {
                        width,
                        op,
                        base: check.dst()?,
                        off: raw.off,
                        src: check.src()?,
                    })
                }
                _ => Err(DecodeError::UnknownOpcode { code }),
            },
            // Only LD_IMM64 remains of BPF_LD; the legacy packet loads
            // (BPF_ABS/BPF_IND) are not part of what we emit or accept.
            _ => {
                if code != CLASS_LD | MODE_IMM | Size::DW.code() {
                    return Err(DecodeError::UnknownOpcode { code });
                }
                check.zero_off()?;
                let second = Raw::from_bytes(read_slot(bytes, 1)?);
                if second.code != 0 || second.dst != 0 || second.src != 0 || second.off != 0 {
                    return Err(DecodeError::BadSecondSlot { code });
                }
                let dst = check.dst()?;
                match raw.src {
                    0 => {
                        let imm = u64::from(raw.imm as u32) | (u64::from(second.imm as u32) << 32);
                        Ok(Insn::LdImm64 { dst, imm })
                    }
                    PSEUDO_MAP_FD => {
                        if second.imm != 0 {
                            return Err(DecodeError::BadSecondSlot { code });
                        }
                        Ok(Insn::LdMap {
                            dst,
                            map: MapRef(raw.imm as u32),
                        })
                    }
                    other => Err(DecodeError::UnsupportedPseudo { code, src: other }),
                }
            }
        }
    }
}

/// Reads slot number `index` of `bytes`, or reports how many bytes were missing.
fn read_slot(bytes: &[u8], index: usize) -> Result<[u8; 8], DecodeError> {
    let start = index * SLOT_BYTES;
    bytes
        .get(start..start + SLOT_BYTES)
        .and_then(|slice| <[u8; 8]>::try_from(slice).ok())
        .ok_or(DecodeError::Truncated {
            needed: start + SLOT_BYTES,
            got: bytes.len(),
        })
}

/// Field checks shared by the decoder arms.
struct Checker {
    raw: Raw,
}

impl Checker {
    fn reg(&self, n: u8) -> Result<Reg, DecodeError> {
        Reg::from_num(n).ok_or(DecodeError::BadRegister {
            code: self.raw.code,
            reg: n,
        })
    }
    fn dst(&self) -> Result<Reg, DecodeError> {
        self.reg(self.raw.dst)
    }
    fn src(&self) -> Result<Reg, DecodeError> {
        self.reg(self.raw.src)
    }
    fn reserved(&self, field: &'static str, is_zero: bool) -> Result<(), DecodeError> {
        if is_zero {
            Ok(())
        } else {
            Err(DecodeError::ReservedField {
                code: self.raw.code,
                field,
            })
        }
    }
    fn zero_dst(&self) -> Result<(), DecodeError> {
        self.reserved("dst_reg", self.raw.dst == 0)
    }
    fn zero_src(&self) -> Result<(), DecodeError> {
        self.reserved("src_reg", self.raw.src == 0)
    }
    fn zero_off(&self) -> Result<(), DecodeError> {
        self.reserved("off", self.raw.off == 0)
    }
    fn zero_imm(&self) -> Result<(), DecodeError> {
        self.reserved("imm", self.raw.imm == 0)
    }
    /// The `BPF_K`/`BPF_X` operand; the unused one of `imm`/`src_reg` must be zero.
    fn src_operand(&self, src_bit: u8) -> Result<Src, DecodeError> {
        if src_bit == SRC_X {
            self.zero_imm()?;
            Ok(Src::Reg(self.src()?))
        } else {
            self.zero_src()?;
            Ok(Src::Imm(self.raw.imm))
        }
    }
}

/// Why bytes are not an instruction we understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the instruction needs.
    Truncated { needed: usize, got: usize },
    /// An opcode outside the subset this module models.
    UnknownOpcode { code: u8 },
    /// A register number above 10.
    BadRegister { code: u8, reg: u8 },
    /// A field the instruction does not use is not zero.
    ReservedField { code: u8, field: &'static str },
    /// `imm` is not a valid operation or width for this opcode.
    BadImm { code: u8, imm: i32 },
    /// The second slot of `LD_IMM64` has non-zero fields other than `imm`.
    BadSecondSlot { code: u8 },
    /// A `src_reg` pseudo value we do not model (e.g. `BPF_PSEUDO_MAP_VALUE`).
    UnsupportedPseudo { code: u8, src: u8 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated { needed, got } => {
                write!(f, "truncated instruction: need {needed} bytes, have {got}")
            }
            DecodeError::UnknownOpcode { code } => write!(f, "unknown opcode 0x{code:02x}"),
            DecodeError::BadRegister { code, reg } => {
                write!(f, "opcode 0x{code:02x}: register r{reg} does not exist")
            }
            DecodeError::ReservedField { code, field } => {
                write!(f, "opcode 0x{code:02x}: unused field `{field}` is not zero")
            }
            DecodeError::BadImm { code, imm } => {
                write!(f, "opcode 0x{code:02x}: invalid immediate {imm}")
            }
            DecodeError::BadSecondSlot { code } => {
                write!(
                    f,
                    "opcode 0x{code:02x}: malformed second slot of a 64-bit load"
                )
            }
            DecodeError::UnsupportedPseudo { code, src } => {
                write!(f, "opcode 0x{code:02x}: unsupported pseudo source {src}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A decode failure inside an instruction stream, with its slot index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamDecodeError {
    pub slot: usize,
    pub error: DecodeError,
}

impl fmt::Display for StreamDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instruction {}: {}", self.slot, self.error)
    }
}

impl std::error::Error for StreamDecodeError {}

/// Encodes a sequence of instructions into one byte image.
pub fn encode_all(insns: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(insns.len() * SLOT_BYTES);
    for insn in insns {
        out.extend_from_slice(insn.encode().as_bytes());
    }
    out
}

/// Decodes a whole byte image (length must be a multiple of 8).
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Insn>, StreamDecodeError> {
    let mut insns = Vec::with_capacity(bytes.len() / SLOT_BYTES);
    let mut slot = 0;
    while slot * SLOT_BYTES < bytes.len() {
        let rest = &bytes[slot * SLOT_BYTES..];
        let insn = Insn::decode(rest).map_err(|error| StreamDecodeError { slot, error })?;
        slot += insn.slots();
        insns.push(insn);
    }
    Ok(insns)
}
