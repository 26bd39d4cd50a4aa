//! A minimal BTF (BPF Type Format) encoder: the kinds needed to describe
//! BTF-defined maps (`.maps`) and program functions, nothing more.
//!
//! Format (`linux/btf.h`): a 24-byte header, then the type section (each
//! type a `struct btf_type { name_off, info, size_or_type }` followed by
//! kind-specific data), then the string section (NUL-terminated names,
//! offset 0 is the empty string). Type ids start at 1 (0 is `void`) and
//! are assigned in order of appearance.

use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_VERSION: u8 = 1;
const HEADER_LEN: u32 = 24;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_FWD: u32 = 7;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;

/// `BTF_INT_SIGNED` in the INT encoding bits.
const INT_SIGNED: u32 = 1;
/// `BTF_VAR_GLOBAL_ALLOCATED`.
pub const VAR_GLOBAL_ALLOCATED: u32 = 1;
/// `BTF_FUNC_GLOBAL`.
pub const FUNC_GLOBAL: u32 = 1;

/// A type id in the BTF being built (0 is `void`).
pub type TypeId = u32;

/// Member of a [`BtfBuilder::add_struct`]: name, type, offset in bytes.
pub struct Member<'a> {
    pub name: &'a str,
    pub ty: TypeId,
    pub byte_offset: u32,
}

/// Accumulates types and strings; [`BtfBuilder::finish`] yields the `.BTF` bytes.
#[derive(Default)]
pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    string_offsets: HashMap<String, u32>,
    type_count: u32,
}

fn info(kind: u32, vlen: usize, kind_flag: bool) -> u32 {
    (kind << 24) | (vlen as u32 & 0xffff) | (u32::from(kind_flag) << 31)
}

impl BtfBuilder {
    pub fn new() -> BtfBuilder {
        let mut builder = BtfBuilder::default();
        builder.strings.push(0);
        builder.string_offsets.insert(String::new(), 0);
        builder
    }

    /// Offset of `s` in the string section, adding it once.
    pub fn string(&mut self, s: &str) -> u32 {
        if let Some(&offset) = self.string_offsets.get(s) {
            return offset;
        }
        let offset = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(s.to_owned(), offset);
        offset
    }

    fn push_u32(&mut self, value: u32) {
        self.types.extend_from_slice(&value.to_le_bytes());
    }

    fn header(&mut self, name: &str, info: u32, size_or_type: u32) -> TypeId {
        let name_off = self.string(name);
        self.push_u32(name_off);
        self.push_u32(info);
        self.push_u32(size_or_type);
        self.type_count += 1;
        self.type_count
    }

    /// An integer of `bytes` bytes.
    pub fn add_int(&mut self, name: &str, bytes: u32, signed: bool) -> TypeId {
        let id = self.header(name, info(KIND_INT, 0, false), bytes);
        let encoding = if signed { INT_SIGNED } else { 0 };
        self.push_u32((encoding << 24) | (bytes * 8));
        id
    }

    pub fn add_ptr(&mut self, target: TypeId) -> TypeId {
        self.header("", info(KIND_PTR, 0, false), target)
    }

    pub fn add_array(&mut self, elem: TypeId, index: TypeId, len: u32) -> TypeId {
        let id = self.header("", info(KIND_ARRAY, 0, false), 0);
        self.push_u32(elem);
        self.push_u32(index);
        self.push_u32(len);
        id
    }

    /// A struct (`name` may be empty for an anonymous one) of `size` bytes.
    pub fn add_struct(&mut self, name: &str, size: u32, members: &[Member<'_>]) -> TypeId {
        let id = self.header(name, info(KIND_STRUCT, members.len(), false), size);
        for member in members {
            let name_off = self.string(member.name);
            self.push_u32(name_off);
            self.push_u32(member.ty);
            // Without kind_flag the offset is in bits.
            self.push_u32(member.byte_offset * 8);
        }
        id
    }

    /// A forward declaration of `struct name`.
    pub fn add_fwd_struct(&mut self, name: &str) -> TypeId {
        self.header(name, info(KIND_FWD, 0, false), 0)
    }

    pub fn add_func_proto(&mut self, ret: TypeId, params: &[(&str, TypeId)]) -> TypeId {
        let id = self.header("", info(KIND_FUNC_PROTO, params.len(), false), ret);
        for (name, ty) in params {
            let name_off = self.string(name);
            self.push_u32(name_off);
            self.push_u32(*ty);
        }
        id
    }

    /// A function; `linkage` is `vlen` for FUNC (static 0, global 1).
    pub fn add_func(&mut self, name: &str, proto: TypeId, linkage: u32) -> TypeId {
        self.header(name, info(KIND_FUNC, linkage as usize, false), proto)
    }

    pub fn add_var(&mut self, name: &str, ty: TypeId, linkage: u32) -> TypeId {
        let id = self.header(name, info(KIND_VAR, 0, false), ty);
        self.push_u32(linkage);
        id
    }

    /// A data section: `entries` are (variable type id, offset, size).
    pub fn add_datasec(&mut self, name: &str, size: u32, entries: &[(TypeId, u32, u32)]) -> TypeId {
        let id = self.header(name, info(KIND_DATASEC, entries.len(), false), size);
        for &(ty, offset, size) in entries {
            self.push_u32(ty);
            self.push_u32(offset);
            self.push_u32(size);
        }
        id
    }

    /// The encoded `.BTF` section.
    pub fn finish(self) -> Vec<u8> {
        let type_len = self.types.len() as u32;
        let str_len = self.strings.len() as u32;
        let mut out = Vec::with_capacity((HEADER_LEN + type_len + str_len) as usize);
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(BTF_VERSION);
        out.push(0); // flags
        out.extend_from_slice(&HEADER_LEN.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // type_off, relative to the header end
        out.extend_from_slice(&type_len.to_le_bytes());
        out.extend_from_slice(&type_len.to_le_bytes()); // str_off
        out.extend_from_slice(&str_len.to_le_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}
