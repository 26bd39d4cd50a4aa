//! [`CodegenError`]: why a program could not be generated. A leaf module
//! (every generator returns it), so that no generator imports another to
//! name its error.

use std::fmt;

use patronus_compiler::typed::RuleId;

use crate::elf;
use crate::insn::AsmError;
use crate::insn::regs::FrameError;

/// Why a program could not be generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodegenError {
    /// A kernel limit (program size, jump range, stack, map size) the
    /// policy would exceed; `rule` is the rule that pushed it over when
    /// one can be blamed (the CLI points at it in the source).
    Limit { what: String, rule: Option<RuleId> },
    /// The stack frame is full.
    Stack(FrameError),
    /// A feature this generator does not implement.
    Unsupported { what: String },
    /// The assembler refused the program.
    Asm(AsmError),
    /// The ELF writer refused the object.
    Elf(elf::ElfError),
    /// An inconsistent IR (a bug upstream).
    Internal { what: String },
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodegenError::Limit {
                what,
                rule: Some(rule),
            } => write!(f, "{what} (at rule {})", rule.0 + 1),
            CodegenError::Limit { what, rule: None } => f.write_str(what),
            CodegenError::Stack(e) => write!(f, "stack: {e}"),
            CodegenError::Unsupported { what } => write!(f, "not supported yet: {what}"),
            CodegenError::Asm(AsmError::JumpOutOfRange { label, .. }) => write!(
                f,
                "the program is too large: a jump to `{label}` exceeds the 16-bit jump range"
            ),
            CodegenError::Asm(e) => write!(f, "assembler: {e}"),
            CodegenError::Elf(e) => write!(f, "object: {e}"),
            CodegenError::Internal { what } => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for CodegenError {}

impl From<FrameError> for CodegenError {
    fn from(e: FrameError) -> Self {
        CodegenError::Stack(e)
    }
}
