//! Instruction text in the format of `bpftool prog dump xlated` (the
//! kernel's `kernel/bpf/disasm.c`), so our listings read like the ones a
//! user gets from the loaded program: `r1 = *(u32 *)(r1 +0)`,
//! `if r2 > r3 goto pc+5`, `call bpf_map_lookup_elem#1`, `exit`.
//!
//! Where bpftool prints `map[id:N]` (a kernel id, unknown before
//! loading), we print the map's name from the object's map table,
//! `map[rules_v4]`, or `map[#N]` for a table index without a name.

use super::kernel::Helper;
use super::{AtomicOp, ByteOrder, Insn, MapRef, Size, Src, Width};
use std::fmt::{self, Write};

/// Names of the maps a program refers to by [`MapRef`].
pub trait MapNames {
    fn map_name(&self, map: MapRef) -> Option<&str>;
}

/// No names: maps print as `map[#index]`.
impl MapNames for () {
    fn map_name(&self, _map: MapRef) -> Option<&str> {
        None
    }
}

/// Names indexed by [`MapRef`].
impl<S: AsRef<str>> MapNames for [S] {
    fn map_name(&self, map: MapRef) -> Option<&str> {
        self.get(map.0 as usize).map(AsRef::as_ref)
    }
}

impl<S: AsRef<str>> MapNames for Vec<S> {
    fn map_name(&self, map: MapRef) -> Option<&str> {
        self.as_slice().map_name(map)
    }
}

/// `r` for 64-bit operations, `w` for 32-bit ones.
fn reg_prefix(width: Width) -> char {
    match width {
        Width::W32 => 'w',
        Width::W64 => 'r',
    }
}

/// `(r1 +4)`, `(r10 -8)`: bpftool's `(r%d %+d)`.
struct Addr(super::Reg, i16);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({} {:+})", self.0, self.1)
    }
}

/// Writes the text of `insn` without the index and opcode prefix.
pub fn write_insn(
    out: &mut impl Write,
    insn: &Insn,
    maps: &(impl MapNames + ?Sized),
) -> fmt::Result {
    match *insn {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let p = reg_prefix(width);
            match src {
                Src::Reg(src) => write!(out, "{p}{} {} {p}{}", dst.num(), op.symbol(), src.num()),
                Src::Imm(imm) => write!(out, "{p}{} {} {imm}", dst.num(), op.symbol()),
            }
        }
        Insn::Neg { width, dst } => {
            let p = reg_prefix(width);
            write!(out, "{p}{0} = -{p}{0}", dst.num())
        }
        Insn::Endian { order, bits, dst } => {
            let name = match order {
                ByteOrder::ToLe => "le",
                ByteOrder::ToBe => "be",
                ByteOrder::Swap => "bswap",
            };
            write!(out, "{dst} = {name}{} {dst}", bits.bits())
        }
        Insn::JumpIf {
            width,
            op,
            dst,
            src,
            off,
        } => {
            let p = reg_prefix(width);
            match src {
                Src::Reg(src) => write!(
                    out,
                    "if {p}{} {} {p}{} goto pc{off:+}",
                    dst.num(),
                    op.symbol(),
                    src.num()
                ),
                // bpftool prints jump immediates as unsigned hex (`0x%x`).
                Src::Imm(imm) => write!(
                    out,
                    "if {p}{} {} {:#x} goto pc{off:+}",
                    dst.num(),
                    op.symbol(),
                    imm as u32
                ),
            }
        }
        Insn::Ja { off } => write!(out, "goto pc{off:+}"),
        Insn::Call { helper } => match Helper::from_id(helper) {
            Some(known) => write!(out, "call {}#{helper}", known.name()),
            None => write!(out, "call unknown#{helper}"),
        },
        Insn::CallLocal { off } => write!(out, "call pc{off:+}"),
        Insn::Exit => out.write_str("exit"),
        Insn::Load {
            size,
            dst,
            base,
            off,
        } => {
            write!(out, "{dst} = *({} *){}", size.c_type(), Addr(base, off))
        }
        Insn::Store {
            size,
            base,
            off,
            src,
        } => {
            write!(out, "*({} *){} = {src}", size.c_type(), Addr(base, off))
        }
        Insn::StoreImm {
            size,
            base,
            off,
            imm,
        } => {
            write!(out, "*({} *){} = {imm}", size.c_type(), Addr(base, off))
        }
        Insn::Atomic {
            width,
            op,
            base,
            off,
            src,
        } => {
            let (size, suffix) = match width {
                Width::W32 => (Size::W, ""),
                Width::W64 => (Size::DW, "64"),
            };
            let ty = size.c_type();
            let addr = Addr(base, off);
            let fetch =
                |name: &str| format!("{src} = atomic{suffix}_{name}(({ty} *){addr}, {src})");
            match op {
                AtomicOp::Add => write!(out, "lock *({ty} *){addr} += {src}"),
                AtomicOp::Or => write!(out, "lock *({ty} *){addr} |= {src}"),
                AtomicOp::And => write!(out, "lock *({ty} *){addr} &= {src}"),
                AtomicOp::Xor => write!(out, "lock *({ty} *){addr} ^= {src}"),
                AtomicOp::FetchAdd => out.write_str(&fetch("fetch_add")),
                AtomicOp::FetchOr => out.write_str(&fetch("fetch_or")),
                AtomicOp::FetchAnd => out.write_str(&fetch("fetch_and")),
                AtomicOp::FetchXor => out.write_str(&fetch("fetch_xor")),
                AtomicOp::Xchg => out.write_str(&fetch("xchg")),
                AtomicOp::Cmpxchg => {
                    write!(
                        out,
                        "r0 = atomic{suffix}_cmpxchg(({ty} *){addr}, r0, {src})"
                    )
                }
            }
        }
        Insn::LdImm64 { dst, imm } => write!(out, "{dst} = {imm:#x}"),
        Insn::LdMap { dst, map } => match maps.map_name(map) {
            Some(name) => write!(out, "{dst} = map[{name}]"),
            None => write!(out, "{dst} = map[#{}]", map.0),
        },
    }
}

/// One line as bpftool prints it: `   4: (61) r2 = *(u32 *)(r1 +0)`.
pub fn write_line(
    out: &mut impl Write,
    slot: usize,
    insn: &Insn,
    maps: &(impl MapNames + ?Sized),
) -> fmt::Result {
    write!(out, "{slot:4}: ({:02x}) ", insn.opcode())?;
    write_insn(out, insn, maps)?;
    out.write_char('\n')
}

/// Lists `insns` with slot indices; `comments(i)` gives the block-header
/// comments printed as `; text` lines before instruction number `i`.
pub fn listing<'a>(
    insns: &[Insn],
    maps: &(impl MapNames + ?Sized),
    comments: impl Fn(usize) -> &'a [String],
) -> String {
    let mut out = String::new();
    let mut slot = 0;
    for (index, insn) in insns.iter().enumerate() {
        for comment in comments(index) {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "; {comment}");
        }
        let _ = write_line(&mut out, slot, insn, maps);
        slot += insn.slots();
    }
    out
}

impl fmt::Display for Insn {
    /// The bpftool text without the index/opcode prefix; maps by index.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_insn(f, self, &())
    }
}
