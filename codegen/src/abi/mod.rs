//! The byte layout of every map key and value the generated programs use,
//! and the encoding of map images (initial entries). The runtime writes the
//! bytes it is given and decodes counters with [`decode_counter`]; nothing
//! else may assume a layout.
//!
//! Conventions (all integers little-endian, the only byte order we emit):
//!
//! | map | key | value |
//! |-----|-----|-------|
//! | address hash (`*_src4`, `*_dst6`, all entries hosts) | the address, network order (4 / 16 bytes) | rule bitmap |
//! | address LPM trie | `{prefixlen: u32, addr: [u8; 4 or 16] network order}` | rule bitmap |
//! | protocol / TCP flags array | `u32` index = the byte | rule bitmap; every index whose bitmap is not zero is in the image (unlisted values hold the miss bitmap) |
//! | port array (any range) | `u32` index = port, host order | rule bitmap, likewise for all 65,536 ports |
//! | port hash (single ports) | `u16` port, host order | rule bitmap |
//! | ICMP hash | `{type: u8, code: u8, any_code: u8, pad: u8}`: `any_code = 1, code = 0` is the entry for every code | rule bitmap |
//! | VLAN hash | `u16` VLAN id, host order | rule bitmap |
//! | `stats` per-CPU array | `u32` counter index = position in `ir::Program::counters` | [`Counter`]: `{packets: u64, bytes: u64}` per CPU |
//!
//! A rule bitmap is `words` u64s (`PhasePlan::words`): bit `i % 64` of word
//! `i / 64` is the phase's `rules[i]`.
//!
//! Conntrack, rate-limit and log-event layouts live in `abi::conntrack`,
//! `abi::ratelimit` and `abi::log` (written with the state generators).

pub mod conntrack;
pub mod log;
pub mod ratelimit;

use patronus_compiler::ir::plan::{Contents, MapKind, MapPlan};
use patronus_compiler::ir::{Classifier, Field, Key, Program};
use patronus_compiler::typed::Family;
use std::net::IpAddr;

use crate::elf::{DataType, Field as BtfField, MapDef};
use crate::insn::kernel::{map_flags, map_type};
use crate::object::{CodegenError, MapImage};

/// Size of one stats value per CPU.
pub const COUNTER_SIZE: usize = 16;

/// One stats slot on one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Decodes one per-CPU stats value (16 bytes).
pub fn decode_counter(bytes: &[u8]) -> Option<Counter> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    Some(Counter {
        packets: word(0)?,
        bytes: word(8)?,
    })
}

/// The BPF map type of a planned map kind.
pub fn map_type_of(kind: MapKind) -> u32 {
    match kind {
        MapKind::Hash => map_type::HASH,
        MapKind::LpmTrie => map_type::LPM_TRIE,
        MapKind::Array => map_type::ARRAY,
        MapKind::LruHash => map_type::LRU_HASH,
        MapKind::PercpuArray => map_type::PERCPU_ARRAY,
    }
}

fn addr_len(family: Family) -> u32 {
    match family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 16,
    }
}

fn bitmap_type(words: usize) -> DataType {
    if words == 1 {
        DataType::U64
    } else {
        DataType::Bytes(8 * words as u32)
    }
}

fn lpm_key(family: Family) -> DataType {
    let len = addr_len(family);
    DataType::Struct {
        name: format!("lpm{}_key", if len == 4 { 4 } else { 6 }),
        size: 4 + len,
        fields: vec![
            BtfField {
                name: "prefixlen".into(),
                ty: DataType::U32,
                offset: 0,
            },
            BtfField {
                name: "addr".into(),
                ty: DataType::Bytes(len),
                offset: 4,
            },
        ],
    }
}

fn icmp_key() -> DataType {
    let byte = |name: &str, offset| BtfField {
        name: name.into(),
        ty: DataType::U8,
        offset,
    };
    DataType::Struct {
        name: "icmp_key".into(),
        size: 4,
        fields: vec![
            byte("type", 0),
            byte("code", 1),
            byte("any_code", 2),
            byte("pad", 3),
        ],
    }
}

/// The stats value type.
pub fn counter_type() -> DataType {
    DataType::Struct {
        name: "counter".into(),
        size: COUNTER_SIZE as u32,
        fields: vec![
            BtfField {
                name: "packets".into(),
                ty: DataType::U64,
                offset: 0,
            },
            BtfField {
                name: "bytes".into(),
                ty: DataType::U64,
                offset: 8,
            },
        ],
    }
}

/// The classifier behind a classifier map.
pub fn classifier_of<'p>(program: &'p Program, plan: &MapPlan) -> Option<&'p Classifier> {
    match plan.contents {
        Contents::Classifier { phase, classifier } => {
            program.phases.get(phase)?.classifiers.get(classifier)
        }
        _ => None,
    }
}

/// Key type of a classifier map (decided by its field and map kind).
fn classifier_key(field: Field, kind: MapKind) -> DataType {
    match (field, kind) {
        (Field::SrcAddr(f) | Field::DstAddr(f), MapKind::LpmTrie) => lpm_key(f),
        (Field::SrcAddr(f) | Field::DstAddr(f), _) => DataType::Bytes(addr_len(f)),
        (Field::SrcPort | Field::DstPort | Field::Vlan, MapKind::Hash) => DataType::U16,
        (Field::Icmp, _) => icmp_key(),
        // Arrays: proto, flags, ports.
        _ => DataType::U32,
    }
}

/// The `max_entries` of an address classifier map holding `n` entries:
/// room to grow at run time (`patronusc table add`) and a value that stays
/// the same while a table changes a little, so that a re-apply with a few
/// prefixes more or less keeps the map definitions (and the programs) and
/// can update the maps in place. The smallest of `2^k * {4,5,6,7} / 4`
/// (steps of at most 25%) that is at least `n + n/8 + 64`. LPM tries
/// allocate per entry (the headroom costs nothing); hash maps preallocate
/// it (12.5-40% more memory).
pub fn address_capacity(n: u32) -> u32 {
    let want = u64::from(n) + u64::from(n) / 8 + 64;
    let mut base: u64 = 64;
    loop {
        for quarter in [4u64, 5, 6, 7] {
            let step = base * quarter / 4;
            if step >= want {
                return u32::try_from(step).unwrap_or(u32::MAX);
            }
        }
        base *= 2;
    }
}

/// The ELF definition of a classifier or stats map. Conntrack and
/// rate-limit maps are defined by `abi::conntrack` / `abi::ratelimit`.
pub fn map_def(program: &Program, plan: &MapPlan) -> Result<MapDef, CodegenError> {
    let max_entries = u32::try_from(plan.max_entries.max(1)).map_err(|_| CodegenError::Limit {
        what: format!("map `{}` has {} entries", plan.name, plan.max_entries),
        rule: None,
    })?;
    let mut max_entries = max_entries;
    let (key, value) = match &plan.contents {
        Contents::Classifier { .. } => {
            let c = classifier_of(program, plan).ok_or_else(|| CodegenError::Internal {
                what: format!("map `{}` names a missing classifier", plan.name),
            })?;
            if matches!(c.field, Field::SrcAddr(_) | Field::DstAddr(_)) {
                max_entries = address_capacity(max_entries);
            }
            (classifier_key(c.field, plan.kind), bitmap_type(c.words))
        }
        Contents::Stats => (DataType::U32, counter_type()),
        Contents::Runtime if conntrack::family_of_map(&plan.name).is_some() => {
            return conntrack::map_def(plan);
        }
        Contents::Runtime if ratelimit::is_ratelimit_map(&plan.name) => {
            return ratelimit::map_def(plan);
        }
        Contents::Runtime => {
            return Err(CodegenError::Internal {
                what: format!("runtime map `{}` has no layout", plan.name),
            });
        }
    };
    Ok(MapDef {
        name: plan.name.clone(),
        map_type: map_type_of(plan.kind),
        max_entries,
        flags: if plan.kind == MapKind::LpmTrie {
            map_flags::NO_PREALLOC
        } else {
            0
        },
        key: Some(key),
        value: Some(value),
        pin_by_name: false,
    })
}

fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A rule bitmap as map value bytes.
pub fn bitmap_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The key bytes of one classifier entry in a map of `kind`.
pub(crate) fn entry_key(key: &Key, kind: MapKind) -> Vec<u8> {
    match *key {
        Key::Prefix(p) if kind == MapKind::LpmTrie => {
            let mut k = u32::from(p.len).to_le_bytes().to_vec();
            k.extend(addr_bytes(p.addr));
            k
        }
        Key::Prefix(p) => addr_bytes(p.addr),
        Key::Ports(r) if kind == MapKind::Hash => r.lo.to_le_bytes().to_vec(),
        Key::Ports(r) => u32::from(r.lo).to_le_bytes().to_vec(),
        Key::Proto(p) | Key::Flags(p) => u32::from(p).to_le_bytes().to_vec(),
        Key::Icmp { ty, code } => match code {
            Some(c) => vec![ty, c, 0, 0],
            None => vec![ty, 0, 1, 0],
        },
        Key::Vlan(v) => v.to_le_bytes().to_vec(),
    }
}

/// The initial entries of a planned map: classifier entries (arrays filled
/// with the miss bitmap where no entry applies), nothing for runtime maps.
pub fn image(program: &Program, plan: &MapPlan, def: &MapDef) -> MapImage {
    let mut entries = Vec::new();
    if let Some(c) = classifier_of(program, plan) {
        if plan.kind == MapKind::Array {
            // Every index gets its bitmap: the entry's, else the miss one.
            let size: u32 = match c.field {
                Field::SrcPort | Field::DstPort => 65_536,
                _ => 256,
            };
            let mut values: Vec<&[u64]> = vec![&c.miss.0; size as usize];
            for (i, k) in c.keys.iter().enumerate() {
                match *k {
                    Key::Ports(r) => {
                        for p in r.lo..=r.hi {
                            values[usize::from(p)] = c.entry(i);
                        }
                    }
                    Key::Proto(v) | Key::Flags(v) => values[usize::from(v)] = c.entry(i),
                    _ => {}
                }
            }
            for (index, words) in values.iter().enumerate() {
                if words.iter().any(|&w| w != 0) {
                    entries.push(((index as u32).to_le_bytes().to_vec(), bitmap_bytes(words)));
                }
            }
        } else {
            for (i, k) in c.keys.iter().enumerate() {
                entries.push((entry_key(k, plan.kind), bitmap_bytes(c.entry(i))));
            }
        }
    }
    MapImage {
        name: def.name.clone(),
        map_type: def.map_type,
        key_size: def.key.as_ref().map_or(0, DataType::size),
        value_size: def.value.as_ref().map_or(0, DataType::size),
        max_entries: def.max_entries,
        flags: def.flags,
        entries,
    }
}

/// The first line of a map-images file.
pub const MAPS_FILE_HEADER: &str = "patronus-maps 1";

/// The map images as the `.maps` file `patronusc build -o` writes beside
/// the object, for the runtime to fill the maps with:
///
/// ```text
/// patronus-maps 1
/// map NAME type T key K value V max M flags F entries N
/// KEYHEX VALUEHEX          (N lines, lowercase hex of the exact bytes)
/// ```
///
/// `T` is the `BPF_MAP_TYPE_*` number, `K`/`V` the key and value sizes in
/// bytes, `M` max_entries, `F` the map flags. Every map of the object is
/// listed, in ELF order, also those that start empty (`entries 0`).
pub fn encode_images(images: &[MapImage]) -> String {
    // Bytes by hand, not `write!` with `{:02x}` per byte: a 10,000-rule
    // policy has megabytes of bitmaps, and the formatter made this most of
    // `patronusc build`'s time.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let hex = |out: &mut Vec<u8>, bytes: &[u8]| {
        let start = out.len();
        out.resize(start + 2 * bytes.len(), 0);
        for (pair, &b) in out[start..].chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
    };
    let bytes: usize = images
        .iter()
        .flat_map(|m| &m.entries)
        .map(|(k, v)| 2 * (k.len() + v.len()) + 2)
        .sum();
    let mut out = Vec::with_capacity(bytes + 128 * images.len() + 32);
    out.extend_from_slice(MAPS_FILE_HEADER.as_bytes());
    out.push(b'\n');
    for m in images {
        let header = format!(
            "map {} type {} key {} value {} max {} flags {} entries {}\n",
            m.name,
            m.map_type,
            m.key_size,
            m.value_size,
            m.max_entries,
            m.flags,
            m.entries.len()
        );
        out.extend_from_slice(header.as_bytes());
        for (k, v) in &m.entries {
            hex(&mut out, k);
            out.push(b' ');
            hex(&mut out, v);
            out.push(b'\n');
        }
    }
    // Map names come from the policy (UTF-8), the rest is ASCII.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Parses [`encode_images`]' format; the error names the line.
pub fn decode_images(text: &str) -> Result<Vec<MapImage>, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, MAPS_FILE_HEADER)) => {}
        _ => return Err(format!("line 1: expected `{MAPS_FILE_HEADER}`")),
    }
    let unhex = |s: &str, line: usize| -> Result<Vec<u8>, String> {
        if !s.len().is_multiple_of(2) {
            return Err(format!("line {line}: odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
                    .ok_or_else(|| format!("line {line}: bad hex `{s}`"))
            })
            .collect()
    };
    let mut images = Vec::new();
    while let Some((i, line)) = lines.next() {
        let n = i + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let [
            "map",
            name,
            "type",
            ty,
            "key",
            key,
            "value",
            value,
            "max",
            max,
            "flags",
            flags,
            "entries",
            count,
        ] = words.as_slice()
        else {
            return Err(format!("line {n}: expected a `map` header"));
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("line {n}: bad number `{s}`"))
        };
        let count = num(count)?;
        let mut image = MapImage {
            name: (*name).to_string(),
            map_type: num(ty)?,
            key_size: num(key)?,
            value_size: num(value)?,
            max_entries: num(max)?,
            flags: num(flags)?,
            entries: Vec::with_capacity(count as usize),
        };
        for _ in 0..count {
            let (j, entry) = lines
                .next()
                .ok_or_else(|| format!("line {n}: missing entries"))?;
            let (k, v) = entry
                .split_once(' ')
                .ok_or_else(|| format!("line {}: expected `KEY VALUE`", j + 1))?;
            let (k, v) = (unhex(k, j + 1)?, unhex(v, j + 1)?);
            // A memory-mapped DIR-24 array's entries are 12-byte runs.
            let value_size = if image.flags & crate::xdp::dir24::MMAPABLE != 0 {
                crate::xdp::dir24::RUN_BYTES
            } else {
                image.value_size as usize
            };
            if k.len() != image.key_size as usize || v.len() != value_size {
                return Err(format!("line {}: key or value of the wrong size", j + 1));
            }
            image.entries.push((k, v));
        }
        images.push(image);
    }
    Ok(images)
}
