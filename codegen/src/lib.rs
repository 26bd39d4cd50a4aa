//! Patronus code generation: from the compiler's program plan to eBPF
//! bytecode and loadable objects.
//!
//! - [`insn`]: the eBPF instruction set as data (encode/decode), the
//!   assembler with labels and fix-ups, the bpftool-style disassembler,
//!   the register plan and the kernel ABI numbers generated code uses.
//! - [`elf`]: the ELF64 relocatable object (programs, relocations,
//!   license, BTF-defined maps) that libbpf and aya load.
//! - [`abi`]: the byte layout of every map key and value, and the map
//!   images file.
//! - [`layout`]: every map of a policy with its typed role, definition and
//!   entries, decided before emission; DIR-24 and candidate-list formats.
//! - [`xdp`]: the XDP program of a policy (parser, phases); `xdp::ctx` is
//!   the contract with the state generators ([`state`], [`tc`]).
//! - [`parser`]: the frame parser both programs share, and the layout
//!   of the parsed packet on the stack.
//! - [`object`]: [`compile`], `ir::Program` → [`Object`], and the
//!   questions asked about an object's maps.
//! - [`error`], [`limits`]: leaves every generator shares.
//!
//! No I/O and no kernel access: everything here is deterministic and runs
//! in unit tests, property tests and fuzzers without root.

pub mod abi;
pub mod elf;
pub mod error;
pub mod insn;
pub mod layout;
pub mod limits;
pub mod object;
pub mod parser;
pub mod state;
pub mod tc;
pub mod xdp;

pub use elf::MapDef;
pub use error::CodegenError;
pub use layout::{ClassifierStorage, Layout, MapRole};
pub use limits::{Limits, Verifier};
pub use object::{Object, TableFeed, compile, compile_with_limits};
