//! The register plan and the stack frame of generated programs.
//!
//! Calling convention (fixed by the kernel): `r1`-`r5` carry helper
//! arguments and are clobbered by every `call`; `r0` holds the helper's
//! result and the program's return value; `r6`-`r9` survive calls;
//! `r10` is the read-only frame pointer, the stack lives below it.
//!
//! Our plan, so that every code generator agrees without negotiating:
//!
//! | reg | role | lifetime |
//! |-----|------|----------|
//! | r0  | helper result, return code | until the next call |
//! | r1-r5 | helper arguments; short-lived temporaries between calls | clobbered by calls |
//! | r6  | [`CTX`]: the context pointer (`xdp_md` or `__sk_buff`), saved from r1 at entry | whole program |
//! | r7  | [`DATA`]: packet start (`ctx->data`) | whole program |
//! | r8  | [`DATA_END`]: packet end (`ctx->data_end`), for bounds checks | whole program |
//! | r9  | [`SCRATCH`]: a callee-saved scratch (e.g. the L3/L4 header pointer, a value pointer kept across a call) | per phase |
//! | r10 | [`FP`]: frame pointer | fixed |
//!
//! Map keys and other buffers whose address is passed to helpers live
//! on the stack: allocate them once per program with [`Frame`], which
//! hands out 8-byte aligned slots below `r10` and refuses to exceed the
//! kernel's 512-byte stack.

use super::Reg;
use std::fmt;

/// Helper result and program return value.
pub const RET: Reg = Reg::R0;
/// Helper argument registers, in order.
pub const ARGS: [Reg; 5] = [Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5];
/// The context pointer, saved from `r1` in the prologue.
pub const CTX: Reg = Reg::R6;
/// Packet start.
pub const DATA: Reg = Reg::R7;
/// Packet end (exclusive).
pub const DATA_END: Reg = Reg::R8;
/// Callee-saved scratch register.
pub const SCRATCH: Reg = Reg::R9;
/// Frame pointer (read-only).
pub const FP: Reg = Reg::R10;

/// Registers a `call` leaves intact.
pub const CALLEE_SAVED: [Reg; 4] = [Reg::R6, Reg::R7, Reg::R8, Reg::R9];
/// Registers a `call` clobbers (r0 receives the result).
pub const CALLER_SAVED: [Reg; 6] = [Reg::R0, Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5];

/// The kernel's per-program stack limit (`MAX_BPF_STACK`).
pub const MAX_STACK: usize = 512;
/// Alignment of every slot: keeps 64-bit loads and stores aligned.
pub const SLOT_ALIGN: usize = 8;

/// A region of the stack, `size` bytes at `r10 + off` (`off < 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackSlot {
    pub off: i16,
    pub size: usize,
}

impl StackSlot {
    /// Offset of byte `at` within the slot, relative to `r10`.
    /// Returns `None` past the slot's end.
    pub fn at(self, at: usize) -> Option<i16> {
        if at >= self.size {
            return None;
        }
        // `at < size <= 512`, so this stays within i16.
        Some(self.off + at as i16)
    }
}

/// Bump allocator for stack slots below `r10`.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    used: usize,
    names: Vec<(String, StackSlot)>,
}

impl Frame {
    pub fn new() -> Frame {
        Frame::default()
    }

    /// Reserves `size` bytes (rounded up to 8) named `name` for error
    /// messages and `--emit asm` listings.
    pub fn alloc(&mut self, name: &str, size: usize) -> Result<StackSlot, FrameError> {
        let rounded = size.max(1).div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
        let used = self.used + rounded;
        if used > MAX_STACK {
            return Err(FrameError {
                name: name.to_owned(),
                size,
                used: self.used,
            });
        }
        self.used = used;
        let slot = StackSlot {
            off: -(used as i16),
            size,
        };
        self.names.push((name.to_owned(), slot));
        Ok(slot)
    }

    /// Bytes of stack in use.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The slots allocated so far, in allocation order.
    pub fn slots(&self) -> &[(String, StackSlot)] {
        &self.names
    }
}

/// A stack allocation that would exceed [`MAX_STACK`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    pub name: String,
    pub size: usize,
    pub used: usize,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stack slot `{}` of {} bytes does not fit: {} of {MAX_STACK} bytes already used",
            self.name, self.size, self.used
        )
    }
}

impl std::error::Error for FrameError {}
