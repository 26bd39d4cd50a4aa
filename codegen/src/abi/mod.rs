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
//! Classifier keys and values are in `abi::classifier`; conntrack,
//! rate-limit and log-event layouts live in `abi::conntrack`,
//! `abi::ratelimit` and `abi::log` (written with the state generators).

pub mod classifier;
pub mod conntrack;
pub mod log;
pub mod ratelimit;

use patronus_compiler::ir::plan::{Contents, MapKind, MapPlan};
use patronus_compiler::ir::{Classifier, Field, Program};

pub use classifier::{address_capacity, bitmap_bytes, entry_key};
use classifier::{bitmap_type, classifier_key};

use crate::elf::{DataType, Field as BtfField, MapDef};
use crate::error::CodegenError;
use crate::insn::kernel::{map_flags, map_type};
use crate::layout::dir24;

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

/// The ELF definition of a planned map (no entries yet: the layout adds
/// them), decided by its typed role.
pub fn map_def(program: &Program, plan: &MapPlan) -> Result<MapDef, CodegenError> {
    let max_entries = u32::try_from(plan.max_entries.max(1)).map_err(|_| CodegenError::Limit {
        what: format!("map `{}` has {} entries", plan.name, plan.max_entries),
        rule: None,
    })?;
    let mut max_entries = max_entries;
    let (key, value) = match plan.contents {
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
        Contents::Conntrack(family) => return conntrack::map_def(plan, family),
        Contents::RateLimit { key, family } => return ratelimit::map_def(plan, key, family),
    };
    Ok(MapDef {
        flags: if plan.kind == MapKind::LpmTrie {
            map_flags::NO_PREALLOC
        } else {
            0
        },
        ..MapDef::empty(
            plan.name.clone(),
            map_type_of(plan.kind),
            max_entries,
            Some(key),
            Some(value),
        )
    })
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
pub fn encode_images(images: &[MapDef]) -> String {
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
            m.key_size(),
            m.value_size(),
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

/// Parses [`encode_images`]' format; the error names the line. The file
/// has sizes, not BTF types: a key or value comes back as
/// `DataType::Bytes` of its size (`None` for size 0, a ring buffer's).
pub fn decode_images(text: &str) -> Result<Vec<MapDef>, String> {
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
        let sized = |size: u32| (size > 0).then_some(DataType::Bytes(size));
        let mut image = MapDef {
            flags: num(flags)?,
            entries: Vec::with_capacity(count as usize),
            ..MapDef::empty(
                *name,
                num(ty)?,
                num(max)?,
                sized(num(key)?),
                sized(num(value)?),
            )
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
            let value_size = if image.flags & dir24::MMAPABLE != 0 {
                dir24::RUN_BYTES
            } else {
                image.value_size() as usize
            };
            if k.len() != image.key_size() as usize || v.len() != value_size {
                return Err(format!("line {}: key or value of the wrong size", j + 1));
            }
            image.entries.push((k, v));
        }
        images.push(image);
    }
    Ok(images)
}
