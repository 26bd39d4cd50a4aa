//! The top-level entry point: `ir::Program` → a loadable object (ELF with
//! the XDP program and BTF-defined maps), the maps' initial contents and an
//! annotated listing.

use std::fmt;

use patronus_compiler::ir;
use patronus_compiler::typed::RuleId;

use crate::elf::{self, MapDef, ObjectSpec, ProgramDef, ProgramKind};
use crate::insn::AsmError;
use crate::insn::regs::FrameError;
use crate::{abi, tc, xdp};

/// Symbol name of the XDP program in the object.
pub const XDP_PROGRAM_NAME: &str = "patronus_xdp";

/// The kernel's limit on instructions the verifier processes, and the
/// program length we refuse to exceed.
pub const MAX_INSNS: usize = 1_000_000;

/// The limits a generated program must stay within. [`Default`] is the
/// kernel's, for any verifier; [`compile_with_limits`] takes others so that
/// tests reach the limit errors with small policies, and so that the
/// runtime can ask for the code of the verifier it probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most instruction slots the XDP program may have.
    pub max_insns: usize,
    /// The verifier the code must satisfy.
    pub verifier: Verifier,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_insns: MAX_INSNS,
            verifier: Verifier::default(),
        }
    }
}

/// Which verifier generation the generated code must pass. The
/// difference is one instruction per header length: an older verifier
/// (Linux 6.1's, for one) forgets the bounds of a byte-swapped value
/// (`r3 = be16 r3` leaves r3 unknown), so a length read from the packet
/// is masked to 16 bits before it is added to a packet pointer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verifier {
    /// Any verifier Patronus supports. The default: an object written to
    /// a file may be loaded on another kernel.
    #[default]
    Portable,
    /// A verifier that keeps the bounds of a byte swap (the runtime
    /// probes for it): the masks are left out.
    BoundsThroughSwaps,
}

/// A map of the object and its initial entries (key bytes, value bytes),
/// laid out by [`abi`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapImage {
    pub name: String,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A compiled policy.
#[derive(Clone, Debug)]
pub struct Object {
    /// The ELF relocatable object (`xdp` section, `.maps`, `.BTF`).
    pub elf: Vec<u8>,
    /// Every map of the object, in ELF order, with its initial entries.
    pub maps: Vec<MapImage>,
    /// The annotated disassembly (`--emit asm`): the XDP program, then the
    /// tc egress program when conntrack is on.
    pub listing: String,
    /// The XDP program's length in instruction slots.
    pub insn_count: usize,
    /// Bytes of stack the program uses.
    pub stack_bytes: usize,
}

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

/// Compiles a lowered policy into an object, within the kernel's limits.
pub fn compile(program: &ir::Program) -> Result<Object, CodegenError> {
    compile_with_limits(program, &Limits::default())
}

/// [`compile`] within `limits`.
pub fn compile_with_limits(program: &ir::Program, limits: &Limits) -> Result<Object, CodegenError> {
    let generated = xdp::generate_within(program, limits)?;
    let mut defs: Vec<MapDef> = Vec::new();
    let mut images = Vec::new();
    for (m, plan) in program.maps.iter().enumerate() {
        let mut def = abi::map_def(program, plan)?;
        let mut image = abi::image(program, plan, &def);
        if let Some((_, trie)) = generated.dir24_tries.iter().find(|(tm, _)| *tm == m) {
            // Behind DIR-24 arrays only fallback /24s reach the trie.
            image.entries = trie
                .iter()
                .map(|(addr, len, bits)| {
                    let prefix = patronus_compiler::net::Prefix {
                        addr: std::net::IpAddr::V4((*addr).into()),
                        len: *len,
                    };
                    let key = abi::entry_key(
                        &patronus_compiler::ir::Key::Prefix(prefix),
                        patronus_compiler::ir::plan::MapKind::LpmTrie,
                    );
                    (key, abi::bitmap_bytes(bits))
                })
                .collect();
        }
        if let Some((_, cand)) = generated.candidate_maps.iter().find(|(cm, _)| *cm == m) {
            // The phase's primary classifier: each bitmap carries its list.
            let size = cand.value_size() as u32;
            def.value = Some(crate::elf::DataType::Bytes(size));
            image.value_size = size;
            for (_, value) in &mut image.entries {
                *value = cand.extend(value);
            }
        }
        images.push(image);
        defs.push(def);
    }
    for extra in &generated.extra {
        defs.push(extra.def.clone());
        images.push(extra.image.clone());
    }
    let insn_count = generated.program.slot_count();
    if insn_count > limits.max_insns {
        return Err(CodegenError::Limit {
            what: format!(
                "the program has {insn_count} instructions, more than {}",
                limits.max_insns
            ),
            rule: None,
        });
    }
    let names: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
    let mut listing = generated.program.listing(names.as_slice());
    // With conntrack on, the tc egress program records host-originated
    // flows so their replies are established (LANGUAGE.md §3).
    let egress = if program.usage.conntrack {
        Some(tc::egress_program(program)?)
    } else {
        None
    };
    let mut programs = vec![ProgramDef {
        kind: ProgramKind::Xdp,
        name: XDP_PROGRAM_NAME.into(),
        program: &generated.program,
    }];
    if let Some(egress) = &egress {
        listing.push_str(&format!(
            "\n; ==== {} (tc egress) ====\n",
            tc::TC_PROGRAM_NAME
        ));
        listing.push_str(&egress.listing(names.as_slice()));
        programs.push(ProgramDef {
            kind: ProgramKind::Tc,
            name: tc::TC_PROGRAM_NAME.into(),
            program: egress,
        });
    }
    let elf = elf::write_object(&ObjectSpec {
        license: "GPL".into(),
        maps: defs,
        programs,
    })
    .map_err(CodegenError::Elf)?;
    Ok(Object {
        elf,
        maps: images,
        listing,
        insn_count,
        stack_bytes: generated.stack_bytes,
    })
}
