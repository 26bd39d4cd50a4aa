//! ELF64 relocatable object writer for eBPF (`EM_BPF`, little-endian),
//! in the shape clang produces and libbpf/aya load.
//!
//! Sections, in order:
//!
//! | section | contents |
//! |---|---|
//! | `.strtab` | section and symbol names |
//! | `xdp`, `classifier` | one program each (`SHF_ALLOC | SHF_EXECINSTR`); aya and libbpf pick the program type from this name (aya does not accept `tc`) |
//! | `.rel<prog>` | one `R_BPF_64_64` per `LD_IMM64` map reference, against the map's symbol |
//! | `license` | NUL-terminated license string (`GPL` is needed for GPL-only helpers) |
//! | `.maps` | zeroed storage for the BTF-defined map structs, one symbol per map |
//! | `.BTF` | the map definitions (`struct { int (*type)[T]; int (*max_entries)[N]; K *key; V *value; ... }`), a `.maps` DATASEC, and one FUNC per program |
//! | `.symtab` | programs (`STT_FUNC`), maps and `_license` (`STT_OBJECT`), all global |
//!
//! Map references are written as clang writes them, `r1 = 0 ll`
//! (`src_reg = 0`, `imm = 0`) plus a relocation; the loader fills in
//! `BPF_PSEUDO_MAP_FD` and the file descriptor. No `.BTF.ext`: without
//! it loaders pass no func/line info, which the kernel does not require.

pub mod btf;

use crate::insn::kernel::{map_flags, map_type};
use crate::insn::{Insn, Program};
use btf::{BtfBuilder, FUNC_GLOBAL, Member, TypeId, VAR_GLOBAL_ALLOCATED};
use std::collections::{HashMap, HashSet};
use std::fmt;

const EM_BPF: u16 = 247;
const ET_REL: u16 = 1;
const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_REL: u32 = 9;
const SHF_WRITE: u64 = 0x1;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;
const SHF_INFO_LINK: u64 = 0x40;
const STB_GLOBAL: u8 = 1;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;
const R_BPF_64_64: u64 = 1;
const EHDR_LEN: usize = 64;
const SHDR_LEN: usize = 64;
const SYM_LEN: usize = 24;
const REL_LEN: usize = 16;
/// Every `__uint`/`__type` member of a map struct is a pointer.
const MAP_FIELD_BYTES: u32 = 8;
/// libbpf's `LIBBPF_PIN_BY_NAME`.
const PIN_BY_NAME: u32 = 1;

/// Byte layout of a map key or value, described to BTF so that
/// `bpftool map dump` prints fields. Unsigned integers are little-endian
/// host order; packet-order fields should be `Bytes`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    U8,
    U16,
    U32,
    U64,
    /// `u8[len]`.
    Bytes(u32),
    /// A named struct of `size` bytes with fields at explicit offsets.
    Struct {
        name: String,
        size: u32,
        fields: Vec<Field>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub ty: DataType,
    pub offset: u32,
}

impl DataType {
    pub fn size(&self) -> u32 {
        match self {
            DataType::U8 => 1,
            DataType::U16 => 2,
            DataType::U32 => 4,
            DataType::U64 => 8,
            DataType::Bytes(len) => *len,
            DataType::Struct { size, .. } => *size,
        }
    }
}

/// One map of an object: its BTF definition and its initial entries (the
/// one type for both; the ELF writer reads the definition, the runtime
/// fills the entries). Its position in [`ObjectSpec::maps`] is the
/// [`MapRef`](crate::insn::MapRef) index programs use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    /// `BPF_MAP_TYPE_*` (see [`map_type`]).
    pub map_type: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// `None` only for ring buffers.
    pub key: Option<DataType>,
    pub value: Option<DataType>,
    /// Pin under the loader's pin path by name (`LIBBPF_PIN_BY_NAME`).
    pub pin_by_name: bool,
    /// Initial entries (key bytes, value bytes), laid out by `abi`; a
    /// memory-mapped DIR-24 array's are runs (`layout::dir24`).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl MapDef {
    /// A definition without entries.
    pub fn empty(
        name: impl Into<String>,
        map_type: u32,
        max_entries: u32,
        key: Option<DataType>,
        value: Option<DataType>,
    ) -> MapDef {
        MapDef {
            name: name.into(),
            map_type,
            max_entries,
            flags: 0,
            key,
            value,
            pin_by_name: false,
            entries: Vec::new(),
        }
    }

    /// Key size in bytes (0 for a ring buffer).
    pub fn key_size(&self) -> u32 {
        self.key.as_ref().map_or(0, DataType::size)
    }

    /// Value size in bytes (0 for a ring buffer).
    pub fn value_size(&self) -> u32 {
        self.value.as_ref().map_or(0, DataType::size)
    }
}

/// Where a program attaches; decides its section name and context type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgramKind {
    Xdp,
    /// tc classifier (`BPF_PROG_TYPE_SCHED_CLS`).
    Tc,
}

impl ProgramKind {
    pub const fn section(self) -> &'static str {
        match self {
            ProgramKind::Xdp => "xdp",
            ProgramKind::Tc => "classifier",
        }
    }

    const fn ctx_struct(self) -> &'static str {
        match self {
            ProgramKind::Xdp => "xdp_md",
            ProgramKind::Tc => "__sk_buff",
        }
    }
}

pub struct ProgramDef<'a> {
    pub kind: ProgramKind,
    /// Symbol name: what loaders call the program.
    pub name: String,
    pub program: &'a Program,
}

pub struct ObjectSpec<'a> {
    pub license: String,
    pub maps: &'a [MapDef],
    pub programs: Vec<ProgramDef<'a>>,
}

/// Why an object could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// A map, program or field name that is not a C identifier.
    BadName { name: String },
    /// Two maps or programs with the same symbol name.
    DuplicateName { name: String },
    /// Two programs of the same kind (one section each).
    DuplicateSection { section: &'static str },
    /// A program refers to a map index outside the map table.
    UnknownMap { program: String, index: u32 },
    /// A map definition the kernel would reject.
    BadMap { map: String, reason: &'static str },
    /// A struct field past the end of its struct.
    FieldOutOfBounds { field: String },
    /// The license contains a NUL byte.
    BadLicense,
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::BadName { name } => write!(f, "`{name}` is not a valid symbol name"),
            ElfError::DuplicateName { name } => write!(f, "symbol `{name}` is defined twice"),
            ElfError::DuplicateSection { section } => {
                write!(f, "more than one program for section `{section}`")
            }
            ElfError::UnknownMap { program, index } => {
                write!(
                    f,
                    "program `{program}` refers to map #{index}, which is not defined"
                )
            }
            ElfError::BadMap { map, reason } => write!(f, "map `{map}`: {reason}"),
            ElfError::FieldOutOfBounds { field } => {
                write!(f, "field `{field}` extends past the end of its struct")
            }
            ElfError::BadLicense => f.write_str("license contains a NUL byte"),
        }
    }
}

impl std::error::Error for ElfError {}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_name(name: &str, seen: &mut HashSet<String>) -> Result<(), ElfError> {
    if !is_identifier(name) {
        return Err(ElfError::BadName {
            name: name.to_owned(),
        });
    }
    if !seen.insert(name.to_owned()) {
        return Err(ElfError::DuplicateName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn check_data_type(ty: &DataType) -> Result<(), ElfError> {
    if let DataType::Struct { name, size, fields } = ty {
        if !is_identifier(name) {
            return Err(ElfError::BadName { name: name.clone() });
        }
        for field in fields {
            if !is_identifier(&field.name) {
                return Err(ElfError::BadName {
                    name: field.name.clone(),
                });
            }
            check_data_type(&field.ty)?;
            if u64::from(field.offset) + u64::from(field.ty.size()) > u64::from(*size) {
                return Err(ElfError::FieldOutOfBounds {
                    field: format!("{name}.{}", field.name),
                });
            }
        }
    }
    Ok(())
}

/// The kernel's shape rules for the map types we use, checked here so a
/// bad plan fails at compile time with the map's name.
fn check_map(map: &MapDef) -> Result<(), ElfError> {
    let bad = |reason| {
        Err(ElfError::BadMap {
            map: map.name.clone(),
            reason,
        })
    };
    if map.max_entries == 0 {
        return bad("max_entries must be positive");
    }
    match (map.map_type, &map.key, &map.value) {
        (map_type::RINGBUF, None, None) => {
            if !map.max_entries.is_power_of_two() || !map.max_entries.is_multiple_of(4096) {
                return bad(
                    "ring buffer size must be a power of two and a multiple of the page size",
                );
            }
        }
        (map_type::RINGBUF, _, _) => return bad("ring buffers have no key or value"),
        (_, Some(key), Some(value)) => {
            check_data_type(key)?;
            check_data_type(value)?;
            if key.size() == 0 || value.size() == 0 {
                return bad("key and value must not be empty");
            }
            let is_array = matches!(map.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY);
            if is_array && key.size() != 4 {
                return bad("array maps need a 4-byte key");
            }
            if map.map_type == map_type::LPM_TRIE {
                // trie_check_btf(): the key must be a struct starting with
                // the u32 prefix length.
                if !matches!(key, DataType::Struct { .. }) {
                    return bad("LPM trie keys must be a struct");
                }
                if map.flags & map_flags::NO_PREALLOC == 0 {
                    return bad("LPM tries require BPF_F_NO_PREALLOC");
                }
            }
        }
        _ => return bad("key and value types are required"),
    }
    Ok(())
}

/// BTF ids of the shared scalar types, created on first use.
struct TypeCache {
    data: HashMap<DataType, TypeId>,
    int: Option<TypeId>,
    array_index: Option<TypeId>,
    uint_fields: HashMap<u32, TypeId>,
    ptrs: HashMap<TypeId, TypeId>,
}

impl TypeCache {
    fn int(&mut self, btf: &mut BtfBuilder) -> TypeId {
        *self.int.get_or_insert_with(|| btf.add_int("int", 4, true))
    }

    fn array_index(&mut self, btf: &mut BtfBuilder) -> TypeId {
        // clang's name for the index type of arrays.
        *self
            .array_index
            .get_or_insert_with(|| btf.add_int("__ARRAY_SIZE_TYPE__", 4, false))
    }

    fn ptr(&mut self, btf: &mut BtfBuilder, target: TypeId) -> TypeId {
        *self
            .ptrs
            .entry(target)
            .or_insert_with(|| btf.add_ptr(target))
    }

    /// `int (*)[value]`: how `__uint(field, value)` encodes a number.
    fn uint_field(&mut self, btf: &mut BtfBuilder, value: u32) -> TypeId {
        if let Some(&id) = self.uint_fields.get(&value) {
            return id;
        }
        let int = self.int(btf);
        let index = self.array_index(btf);
        let array = btf.add_array(int, index, value);
        let ptr = self.ptr(btf, array);
        self.uint_fields.insert(value, ptr);
        ptr
    }

    fn data(&mut self, btf: &mut BtfBuilder, ty: &DataType) -> TypeId {
        if let Some(&id) = self.data.get(ty) {
            return id;
        }
        let id = match ty {
            DataType::U8 => btf.add_int("__u8", 1, false),
            DataType::U16 => btf.add_int("__u16", 2, false),
            DataType::U32 => btf.add_int("__u32", 4, false),
            DataType::U64 => btf.add_int("__u64", 8, false),
            DataType::Bytes(len) => {
                let elem = self.data(btf, &DataType::U8);
                let index = self.array_index(btf);
                btf.add_array(elem, index, *len)
            }
            DataType::Struct { name, size, fields } => {
                let field_types: Vec<TypeId> = fields
                    .iter()
                    .map(|field| self.data(btf, &field.ty))
                    .collect();
                let members: Vec<Member<'_>> = fields
                    .iter()
                    .zip(field_types)
                    .map(|(field, ty)| Member {
                        name: &field.name,
                        ty,
                        byte_offset: field.offset,
                    })
                    .collect();
                btf.add_struct(name, *size, &members)
            }
        };
        self.data.insert(ty.clone(), id);
        id
    }
}

/// The `.BTF` section and the byte size of each map struct.
fn build_btf(spec: &ObjectSpec<'_>) -> (Vec<u8>, Vec<u32>) {
    let mut btf = BtfBuilder::new();
    let mut cache = TypeCache {
        data: HashMap::new(),
        int: None,
        array_index: None,
        uint_fields: HashMap::new(),
        ptrs: HashMap::new(),
    };
    let mut datasec = Vec::new();
    let mut sizes = Vec::new();
    let mut offset = 0;
    for map in spec.maps {
        let mut fields: Vec<(&str, TypeId)> = vec![
            ("type", cache.uint_field(&mut btf, map.map_type)),
            ("max_entries", cache.uint_field(&mut btf, map.max_entries)),
        ];
        if map.flags != 0 {
            fields.push(("map_flags", cache.uint_field(&mut btf, map.flags)));
        }
        if let Some(key) = &map.key {
            let key = cache.data(&mut btf, key);
            fields.push(("key", cache.ptr(&mut btf, key)));
        }
        if let Some(value) = &map.value {
            let value = cache.data(&mut btf, value);
            fields.push(("value", cache.ptr(&mut btf, value)));
        }
        if map.pin_by_name {
            fields.push(("pinning", cache.uint_field(&mut btf, PIN_BY_NAME)));
        }
        let members: Vec<Member<'_>> = fields
            .iter()
            .enumerate()
            .map(|(i, &(name, ty))| Member {
                name,
                ty,
                byte_offset: i as u32 * MAP_FIELD_BYTES,
            })
            .collect();
        let size = members.len() as u32 * MAP_FIELD_BYTES;
        let def = btf.add_struct("", size, &members);
        let var = btf.add_var(&map.name, def, VAR_GLOBAL_ALLOCATED);
        datasec.push((var, offset, size));
        sizes.push(size);
        offset += size;
    }
    if !datasec.is_empty() {
        btf.add_datasec(".maps", offset, &datasec);
    }
    for program in &spec.programs {
        let ctx = btf.add_fwd_struct(program.kind.ctx_struct());
        let ctx_ptr = cache.ptr(&mut btf, ctx);
        let ret = cache.int(&mut btf);
        let proto = btf.add_func_proto(ret, &[("ctx", ctx_ptr)]);
        btf.add_func(&program.name, proto, FUNC_GLOBAL);
    }
    (btf.finish(), sizes)
}

struct Section {
    name: String,
    sh_type: u32,
    flags: u64,
    data: Vec<u8>,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

/// A string table that remembers offsets.
struct StrTab {
    bytes: Vec<u8>,
}

impl StrTab {
    fn add(&mut self, s: &str) -> u32 {
        let offset = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        offset
    }
}

fn symbol(name: u32, kind: u8, shndx: usize, value: u64, size: u64) -> [u8; SYM_LEN] {
    let mut sym = [0u8; SYM_LEN];
    sym[0..4].copy_from_slice(&name.to_le_bytes());
    sym[4] = (STB_GLOBAL << 4) | kind;
    sym[5] = 0; // STV_DEFAULT
    sym[6..8].copy_from_slice(&(shndx as u16).to_le_bytes());
    sym[8..16].copy_from_slice(&value.to_le_bytes());
    sym[16..24].copy_from_slice(&size.to_le_bytes());
    sym
}

/// The program's bytes as they go into the object: map loads become
/// `r = 0 ll`, to be patched by the loader through the relocation.
fn program_image(program: &Program) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.slot_count() * 8);
    for insn in program.insns() {
        let insn = match *insn {
            Insn::LdMap { dst, .. } => Insn::LdImm64 { dst, imm: 0 },
            other => other,
        };
        out.extend_from_slice(insn.encode().as_bytes());
    }
    out
}

fn pad_to(out: &mut Vec<u8>, align: usize) {
    out.resize(out.len().next_multiple_of(align), 0);
}

/// Writes the relocatable object for `spec`.
pub fn write_object(spec: &ObjectSpec<'_>) -> Result<Vec<u8>, ElfError> {
    let mut names = HashSet::new();
    names.insert("_license".to_owned());
    for map in spec.maps {
        check_name(&map.name, &mut names)?;
        check_map(map)?;
    }
    let mut sections_seen = HashSet::new();
    for program in &spec.programs {
        check_name(&program.name, &mut names)?;
        if !sections_seen.insert(program.kind) {
            return Err(ElfError::DuplicateSection {
                section: program.kind.section(),
            });
        }
        for reloc in program.program.map_relocs() {
            if reloc.map.0 as usize >= spec.maps.len() {
                return Err(ElfError::UnknownMap {
                    program: program.name.clone(),
                    index: reloc.map.0,
                });
            }
        }
    }
    if spec.license.as_bytes().contains(&0) {
        return Err(ElfError::BadLicense);
    }

    // Section indices: 0 null, 1 .strtab, then per program its section
    // and (if it references maps) its .rel section, then license, .maps,
    // .BTF, .symtab.
    let mut next_index = 2;
    let mut program_index = Vec::new();
    for program in &spec.programs {
        let has_relocs = !program.program.map_relocs().is_empty();
        program_index.push((next_index, has_relocs));
        next_index += if has_relocs { 2 } else { 1 };
    }
    let license_index = next_index;
    let maps_index = license_index + 1;
    let has_maps = !spec.maps.is_empty();
    let btf_index = maps_index + usize::from(has_maps);
    let symtab_index = btf_index + 1;

    let (btf_bytes, map_sizes) = build_btf(spec);
    let mut strtab = StrTab { bytes: vec![0] };

    // Symbols: null, programs, _license, maps (all global).
    let mut symtab = vec![0u8; SYM_LEN];
    for (program, &(shndx, _)) in spec.programs.iter().zip(&program_index) {
        let name = strtab.add(&program.name);
        let size = (program.program.slot_count() * 8) as u64;
        symtab.extend_from_slice(&symbol(name, STT_FUNC, shndx, 0, size));
    }
    let mut license = spec.license.as_bytes().to_vec();
    license.push(0);
    let name = strtab.add("_license");
    symtab.extend_from_slice(&symbol(
        name,
        STT_OBJECT,
        license_index,
        0,
        license.len() as u64,
    ));
    let first_map_sym = symtab.len() / SYM_LEN;
    let mut map_offset = 0u64;
    for (map, &size) in spec.maps.iter().zip(&map_sizes) {
        let name = strtab.add(&map.name);
        symtab.extend_from_slice(&symbol(
            name,
            STT_OBJECT,
            maps_index,
            map_offset,
            u64::from(size),
        ));
        map_offset += u64::from(size);
    }

    let mut sections = Vec::new();
    for (program, &(shndx, has_relocs)) in spec.programs.iter().zip(&program_index) {
        let section = program.kind.section();
        sections.push(Section {
            name: section.to_owned(),
            sh_type: SHT_PROGBITS,
            flags: SHF_ALLOC | SHF_EXECINSTR,
            data: program_image(program.program),
            link: 0,
            info: 0,
            align: 8,
            entsize: 0,
        });
        if has_relocs {
            let mut rel = Vec::new();
            for reloc in program.program.map_relocs() {
                let sym = (first_map_sym + reloc.map.0 as usize) as u64;
                rel.extend_from_slice(&(reloc.byte_offset() as u64).to_le_bytes());
                rel.extend_from_slice(&((sym << 32) | R_BPF_64_64).to_le_bytes());
            }
            sections.push(Section {
                name: format!(".rel{section}"),
                sh_type: SHT_REL,
                flags: SHF_INFO_LINK,
                data: rel,
                link: symtab_index as u32,
                info: shndx as u32,
                align: 8,
                entsize: REL_LEN as u64,
            });
        }
    }
    sections.push(Section {
        name: "license".to_owned(),
        sh_type: SHT_PROGBITS,
        flags: SHF_ALLOC | SHF_WRITE,
        data: license,
        link: 0,
        info: 0,
        align: 1,
        entsize: 0,
    });
    if has_maps {
        sections.push(Section {
            name: ".maps".to_owned(),
            sh_type: SHT_PROGBITS,
            flags: SHF_ALLOC | SHF_WRITE,
            data: vec![0; map_offset as usize],
            link: 0,
            info: 0,
            align: 8,
            entsize: 0,
        });
    }
    sections.push(Section {
        name: ".BTF".to_owned(),
        sh_type: SHT_PROGBITS,
        flags: 0,
        data: btf_bytes,
        link: 0,
        info: 0,
        align: 4,
        entsize: 0,
    });
    sections.push(Section {
        name: ".symtab".to_owned(),
        sh_type: SHT_SYMTAB,
        flags: 0,
        data: symtab,
        link: 1,
        info: 1, // index of the first global symbol: all but the null one are global
        align: 8,
        entsize: SYM_LEN as u64,
    });
    debug_assert_eq!(sections.len() + 1, symtab_index);

    // .strtab holds the section names too; it must be complete before layout.
    let section_names: Vec<u32> = sections.iter().map(|s| strtab.add(&s.name)).collect();
    let strtab_name = strtab.add(".strtab");
    let strtab_section = Section {
        name: ".strtab".to_owned(),
        sh_type: SHT_STRTAB,
        flags: 0,
        data: strtab.bytes,
        link: 0,
        info: 0,
        align: 1,
        entsize: 0,
    };
    let mut all: Vec<(u32, Section)> = vec![(strtab_name, strtab_section)];
    all.extend(section_names.into_iter().zip(sections));

    // Layout: header, section contents (aligned), section headers.
    let mut out = vec![0u8; EHDR_LEN];
    let mut offsets = Vec::with_capacity(all.len());
    for (_, section) in &all {
        pad_to(&mut out, section.align as usize);
        offsets.push(out.len() as u64);
        out.extend_from_slice(&section.data);
    }
    pad_to(&mut out, 8);
    let shoff = out.len() as u64;
    out.extend_from_slice(&[0u8; SHDR_LEN]); // null section
    for ((name, section), offset) in all.iter().zip(offsets) {
        let mut shdr = [0u8; SHDR_LEN];
        shdr[0..4].copy_from_slice(&name.to_le_bytes());
        shdr[4..8].copy_from_slice(&section.sh_type.to_le_bytes());
        shdr[8..16].copy_from_slice(&section.flags.to_le_bytes());
        // sh_addr stays 0 in relocatable objects.
        shdr[24..32].copy_from_slice(&offset.to_le_bytes());
        shdr[32..40].copy_from_slice(&(section.data.len() as u64).to_le_bytes());
        shdr[40..44].copy_from_slice(&section.link.to_le_bytes());
        shdr[44..48].copy_from_slice(&section.info.to_le_bytes());
        shdr[48..56].copy_from_slice(&section.align.to_le_bytes());
        shdr[56..64].copy_from_slice(&section.entsize.to_le_bytes());
        out.extend_from_slice(&shdr);
    }
    let shnum = (all.len() + 1) as u16;

    let header = &mut out[..EHDR_LEN];
    header[0..4].copy_from_slice(b"\x7fELF");
    header[4] = 2; // ELFCLASS64
    header[5] = 1; // ELFDATA2LSB
    header[6] = 1; // EV_CURRENT
    header[16..18].copy_from_slice(&ET_REL.to_le_bytes());
    header[18..20].copy_from_slice(&EM_BPF.to_le_bytes());
    header[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
    header[40..48].copy_from_slice(&shoff.to_le_bytes());
    header[52..54].copy_from_slice(&(EHDR_LEN as u16).to_le_bytes());
    header[58..60].copy_from_slice(&(SHDR_LEN as u16).to_le_bytes());
    header[60..62].copy_from_slice(&shnum.to_le_bytes());
    header[62..64].copy_from_slice(&1u16.to_le_bytes()); // e_shstrndx: .strtab
    Ok(out)
}
