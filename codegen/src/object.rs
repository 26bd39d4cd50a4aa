//! The top-level entry point: `ir::Program` → a loadable object (ELF with
//! the XDP program and BTF-defined maps), the maps with their initial
//! contents and roles ([`Layout`]), and an annotated listing. Also the
//! questions the runtime and the CLI ask about an object's maps
//! (`Object::state_maps`, `content_maps`, `stats_map`, ...): answered
//! from the layout's typed roles, never from names.

use patronus_compiler::ir::{self, Field};
use patronus_compiler::typed::Family;

use crate::elf::{self, MapDef, ObjectSpec, ProgramDef, ProgramKind};
pub use crate::error::CodegenError;
use crate::layout::{self, ClassifierStorage, Layout, MapRole};
pub use crate::limits::{Limits, MAX_INSNS, Verifier};
use crate::{tc, xdp};

/// Symbol name of the XDP program in the object.
pub const XDP_PROGRAM_NAME: &str = "patronus_xdp";

/// A compiled policy.
#[derive(Clone, Debug)]
pub struct Object {
    /// The ELF relocatable object (`xdp` section, `.maps`, `.BTF`).
    pub elf: Vec<u8>,
    /// Every map of the object, in ELF order, with its initial entries.
    pub maps: Vec<MapDef>,
    /// The role of each map (parallel to `maps`) and each classifier's
    /// storage: ask it through the methods below.
    pub layout: Layout,
    /// The annotated disassembly (`--emit asm`): the XDP program, then the
    /// tc egress program when conntrack is on.
    pub listing: String,
    /// The XDP program's length in instruction slots.
    pub insn_count: usize,
    /// Bytes of stack the program uses.
    pub stack_bytes: usize,
}

/// Compiles a lowered policy into an object, within the kernel's limits.
pub fn compile(program: &ir::Program) -> Result<Object, CodegenError> {
    compile_with_limits(program, &Limits::default())
}

/// [`compile`] within `limits`.
pub fn compile_with_limits(program: &ir::Program, limits: &Limits) -> Result<Object, CodegenError> {
    let (layout, maps) = layout::plan(program)?;
    let generated = xdp::generate_within(program, &layout, limits)?;
    // Within `limits.max_insns`: `generate_within` checked it.
    let insn_count = generated.program.slot_count();
    let names: Vec<String> = maps.iter().map(|d| d.name.clone()).collect();
    let mut listing = generated.program.listing(names.as_slice());
    // With conntrack on, the tc egress program records host-originated
    // flows so their replies are established (LANGUAGE.md §3).
    let egress = if program.usage.conntrack {
        Some(tc::egress_program(program, &layout)?)
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
        maps: &maps,
        programs,
    })
    .map_err(CodegenError::Elf)?;
    Ok(Object {
        elf,
        maps,
        layout,
        listing,
        insn_count,
        stack_bytes: generated.stack_bytes,
    })
}

/// How the maps of one classifier are filled from a table's prefixes:
/// what `Object::classifier_maps` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFeed<'o> {
    /// A hash of host addresses (the address alone is the key).
    Hash(&'o MapDef),
    /// An LPM trie (`{prefixlen: u32, addr}` keys).
    Lpm(&'o MapDef),
    /// An IPv4 LPM trie behind DIR-24 arrays (`layout::dir24`): a
    /// prefix's bitmap goes to `bitmaps`, its /24 slots to `slots`, and
    /// only fallback /24s to the trie.
    Dir24 {
        trie: &'o MapDef,
        slots: &'o MapDef,
        bitmaps: &'o MapDef,
    },
}

impl Object {
    fn where_role(&self, pred: impl Fn(MapRole) -> bool) -> impl Iterator<Item = &MapDef> {
        self.layout
            .maps_where(pred)
            .into_iter()
            .filter_map(|m| self.maps.get(m))
    }

    /// The role of the map named `name` (pins and the kernel know maps by
    /// name; this is the one way back from a name to what it is).
    pub fn role_of(&self, name: &str) -> Option<MapRole> {
        let m = self.maps.iter().position(|d| d.name == name)?;
        self.layout.role(m)
    }

    /// Maps of traffic state written by the data path (conntrack and
    /// rate-limit buckets): carried over when a policy is replaced, reset
    /// by a test run. (The counters and the log bucket are not state.)
    pub fn state_maps(&self) -> impl Iterator<Item = &MapDef> {
        self.where_role(MapRole::is_state)
    }

    /// The maps filled from the policy — classifier maps, phase constants,
    /// DIR-24 arrays — which an in-place update rewrites (never state,
    /// counters or log maps).
    pub fn content_maps(&self) -> impl Iterator<Item = &MapDef> {
        self.where_role(MapRole::is_content)
    }

    /// Whether map `name` is filled through its memory mapping (the runs
    /// of a DIR-24 slot array) rather than element by element.
    pub fn is_mapped(&self, name: &str) -> bool {
        self.role_of(name).is_some_and(MapRole::is_mapped)
    }

    /// The per-CPU counters map (`ir::Program::counters` is its layout).
    pub fn stats_map(&self) -> Option<&MapDef> {
        self.where_role(|r| r == MapRole::Stats).next()
    }

    /// The conntrack maps with their family (none with `conntrack = off`).
    pub fn conntrack_maps(&self) -> Vec<(Family, &MapDef)> {
        self.layout
            .roles()
            .iter()
            .zip(&self.maps)
            .filter_map(|(role, map)| match role {
                MapRole::Conntrack(family) => Some((*family, map)),
                _ => None,
            })
            .collect()
    }

    /// The log ring buffer (events), when some rule logs.
    pub fn log_events_map(&self) -> Option<&MapDef> {
        self.where_role(|r| r == MapRole::LogEvents).next()
    }

    /// How phase `phase`'s classifier of `field` stores its entries:
    /// `None` when the phase does not constrain the field or compares
    /// inline (no map to write). `program` is the one compiled. A table
    /// feeds every (phase, address field) its rules use it in: the CLI
    /// finds those in the typed policy and asks this per pair.
    pub fn classifier_maps(
        &self,
        program: &ir::Program,
        phase: usize,
        field: Field,
    ) -> Option<TableFeed<'_>> {
        let map = |m: usize| self.maps.get(m);
        match self.layout.classifier_of_field(program, phase, field)? {
            ClassifierStorage::Inline => None,
            ClassifierStorage::Map { map: m, kind } => match kind {
                ir::plan::MapKind::Hash => Some(TableFeed::Hash(map(m)?)),
                ir::plan::MapKind::LpmTrie => Some(TableFeed::Lpm(map(m)?)),
                _ => None,
            },
            ClassifierStorage::Dir24 {
                trie,
                slots,
                bitmaps,
            } => Some(TableFeed::Dir24 {
                trie: map(trie)?,
                slots: map(slots)?,
                bitmaps: map(bitmaps)?,
            }),
        }
    }

    /// The DIR-24 (slots, bitmaps) arrays in front of the trie map named
    /// `trie`, if it has them.
    pub fn dir24_of(&self, trie: &str) -> Option<(&MapDef, &MapDef)> {
        let m = self.maps.iter().position(|d| d.name == trie)?;
        let (slots, bitmaps) = self.layout.dir24_of(m)?;
        Some((
            self.maps.get(slots.0 as usize)?,
            self.maps.get(bitmaps.0 as usize)?,
        ))
    }
}
