//! DIR-24 acceleration of big IPv4 prefix classifiers: one array lookup
//! instead of a walk down the kernel's LPM trie.
//!
//! An LPM trie lookup costs a pointer chase per level, about 65 ns at
//! 100,000 prefixes on the benchmark machine and more with every doubling.
//! For an IPv4 classifier of at least [`MIN_ENTRIES`] prefixes, code
//! generation adds two array maps in front of the trie (as DPDK's
//! rte_lpm does with its "tbl24"):
//!
//! - `<map>_d24`: one u32 slot per /24 of the address space (2^24 slots,
//!   two per 8-byte array element, 64 MiB), memory-mapped
//!   (`BPF_F_MMAPABLE`) so the runtime fills it at memory speed. A slot
//!   holds 0 when no prefix covers or lies inside that /24 (the miss
//!   bitmap), [`FALLBACK`] when a prefix longer than /24 lies inside it
//!   (the packet then takes the trie, which keeps every entry), else the
//!   index of the bitmap of the longest prefix of at most /24 covering it.
//! - `<map>_d24b`: those distinct bitmaps, by index (from 1).
//!
//! The array's image is not 2^23 entries but runs: key = first element
//! (u32), value = {count: u32, low slot: u32, high slot: u32} — the
//! runtime expands them into the mapping ([`expand_runs`] is the
//! reference). Only packets in a /24 holding a longer prefix pay for the
//! trie; everything else costs two inlined array lookups whatever the
//! table's size.
//!
//! This module is the one owner of the format, for codegen and runtime
//! alike:
//!
//! - which classifiers get the arrays: [`wanted`];
//! - their contents: [`build`] → [`Tables`] (runs, distinct bitmaps, the
//!   reduced trie), and their map definitions: [`slots_map`],
//!   [`bitmaps_map`], [`trie_entries`];
//! - their names ([`slots_name`], [`bitmaps_name`]; which map is which is
//!   a typed role in the layout: `layout::MapRole::Dir24Slots` /
//!   `Dir24Bitmaps`, see `Object::dir24_of`);
//! - the run encoding: [`run_entry`], [`decode_run`], [`expand_runs`];
//!   a slot's value: 0, [`FALLBACK`] or a bitmap index from 1.

use std::net::IpAddr;

use patronus_compiler::ir::plan::MapKind;
use patronus_compiler::ir::{Classifier, Field, Key};
use patronus_compiler::net::Prefix;
use patronus_compiler::typed::Family;

use crate::abi::classifier::{bitmap_bytes, entry_key};
use crate::elf::{DataType, MapDef};
use crate::insn::kernel::map_type;

/// Smaller classifiers keep the plain trie. Over a veth pair (cold caches,
/// unlike a repeated test run) a 1,000-prefix trie cost the reference
/// policy 381 ns per packet against 269 ns with the arrays (xdp_drop: 108):
/// worth 64 MiB from a few hundred prefixes on.
pub const MIN_ENTRIES: usize = 512;

/// Slot value: look the address up in the trie.
pub const FALLBACK: u32 = u32::MAX;

/// Slots per array element (u32 slots in 8-byte elements).
pub const SLOTS_PER_ELEMENT: u32 = 2;

/// Array elements of a `_d24` map.
pub const ELEMENTS: u32 = (1 << 24) / SLOTS_PER_ELEMENT;

/// Bytes of a run's image value: {count, low slot, high slot}.
pub const RUN_BYTES: usize = 12;

/// `BPF_F_MMAPABLE` (defined with the other map flags).
pub use crate::insn::kernel::map_flags::MMAPABLE;

/// The slot array in front of classifier map `trie`.
pub fn slots_name(trie: &str) -> String {
    format!("{trie}_d24")
}

/// The bitmap array in front of classifier map `trie`.
pub fn bitmaps_name(trie: &str) -> String {
    format!("{trie}_d24b")
}

/// Whether a classifier gets the DIR-24 arrays.
pub fn wanted(c: &Classifier) -> bool {
    matches!(
        c.field,
        Field::SrcAddr(Family::Ipv4) | Field::DstAddr(Family::Ipv4)
    ) && c.len() >= MIN_ENTRIES
}

/// A trie entry: (IPv4 address in host order, prefix length, bitmap).
pub type TrieEntry = (u32, u8, Vec<u64>);

/// The two images' contents: the `_d24` runs and the distinct bitmaps
/// (index `i + 1` is `bitmaps[i]`); and what the trie still needs.
pub struct Tables {
    pub runs: Vec<(u32, u32, u32, u32)>,
    pub bitmaps: Vec<Vec<u64>>,
    /// The trie's entries: only packets in [`FALLBACK`] slots reach it, so
    /// it holds the prefixes longer than /24 and, for a fallback /24 that a
    /// shorter prefix covers, that /24 with the covering bitmap (the answer
    /// for its addresses outside the longer prefixes). A fraction of the
    /// classifier's entries: the trie is the slow part to fill.
    pub trie: Vec<TrieEntry>,
}

/// Builds the slot table of `c` (an IPv4 prefix classifier) as runs.
pub fn build(c: &Classifier) -> Tables {
    // Slots as (first /24, last /24, value), shorter prefixes first so
    // longer ones overwrite: a painter's pass over sorted intervals.
    let mut bitmaps: Vec<Vec<u64>> = Vec::new();
    let mut index = std::collections::HashMap::<Vec<u64>, u32>::new();
    let mut short: Vec<(u8, u32, u32, u32)> = Vec::new();
    let mut fallback: Vec<u32> = Vec::new();
    let mut trie: Vec<TrieEntry> = Vec::new();
    for (i, key) in c.keys.iter().enumerate() {
        let Key::Prefix(p) = key else { continue };
        let IpAddr::V4(a) = p.addr else { continue };
        let addr = u32::from(a);
        if p.len > 24 {
            fallback.push(addr >> 8);
            trie.push((addr, p.len, c.entry(i).to_vec()));
            continue;
        }
        let first = addr >> 8;
        let last = first + (1u32 << (24 - u32::from(p.len))) - 1;
        // Few distinct bitmaps: allocate only for a new one.
        let bits = c.entry(i);
        let id = match index.get(bits) {
            Some(&id) => id,
            None => {
                bitmaps.push(bits.to_vec());
                let id = bitmaps.len() as u32;
                index.insert(bits.to_vec(), id);
                id
            }
        };
        short.push((p.len, first, last, id));
    }
    // Paint into a sparse list of intervals: nested prefixes are strictly
    // inside shorter ones, so a stack sweep in address order suffices.
    let mut by_start = short;
    by_start.sort_unstable_by_key(|&(len, first, _, _)| (first, len));
    let mut painted: Vec<(u32, u32, u32)> = Vec::new(); // (first, last, id), disjoint, sorted
    let mut stack: Vec<(u32, u32, u32)> = Vec::new(); // open (first, last, id)
    let mut cursor: u64 = 0; // next /24 not yet painted
    let flush_to = |limit: u64,
                    stack: &mut Vec<(u32, u32, u32)>,
                    painted: &mut Vec<(u32, u32, u32)>,
                    cursor: &mut u64| {
        // Paint from `cursor` up to `limit` (exclusive) with the open
        // prefixes, innermost first, closing those that end.
        while *cursor < limit {
            let Some(&(_, last, id)) = stack.last() else {
                *cursor = limit;
                break;
            };
            let end = (u64::from(last) + 1).min(limit);
            if end > *cursor {
                painted.push((*cursor as u32, (end - 1) as u32, id));
                *cursor = end;
            }
            if u64::from(last) < *cursor {
                stack.pop();
            }
        }
        while stack
            .last()
            .is_some_and(|&(_, last, _)| u64::from(last) < *cursor)
        {
            stack.pop();
        }
    };
    for (_, first, last, id) in by_start {
        flush_to(u64::from(first), &mut stack, &mut painted, &mut cursor);
        stack.push((first, last, id));
    }
    flush_to(1 << 24, &mut stack, &mut painted, &mut cursor);

    // Fallback slots override whatever was painted there; a painted
    // bitmap moves into the trie as that /24.
    fallback.sort_unstable();
    fallback.dedup();
    for &fb in &fallback {
        let at = painted.partition_point(|&(_, last, _)| last < fb);
        if let Some(&(first, _, id)) = painted.get(at)
            && first <= fb
        {
            trie.push((fb << 8, 24, bitmaps[id as usize - 1].clone()));
        }
    }
    trie.sort_unstable_by_key(|&(addr, len, _)| (addr, len));
    let mut slots: Vec<(u32, u32, u32)> = Vec::with_capacity(painted.len() + fallback.len());
    let mut f = fallback.iter().peekable();
    for (first, last, id) in painted {
        let mut at = first;
        while let Some(&&fb) = f.peek() {
            if fb > last {
                break;
            }
            f.next();
            if fb < at {
                // In the gap before this interval: nothing painted there.
                slots.push((fb, fb, FALLBACK));
                continue;
            }
            if fb > at {
                slots.push((at, fb - 1, id));
            }
            slots.push((fb, fb, FALLBACK));
            at = fb + 1;
        }
        if at <= last {
            slots.push((at, last, id));
        }
    }
    for &fb in f {
        slots.push((fb, fb, FALLBACK));
    }
    slots.sort_unstable();
    Tables {
        runs: to_runs(&slots),
        bitmaps,
        trie,
    }
}

/// Disjoint sorted slot intervals (0 elsewhere) → element runs.
fn to_runs(slots: &[(u32, u32, u32)]) -> Vec<(u32, u32, u32, u32)> {
    let mut runs: Vec<(u32, u32, u32, u32)> = Vec::new();
    let mut element_values: Vec<(u32, u32, u32)> = Vec::new(); // (element, lo, hi) for partial elements
    let slot_value = |slot: u32, slots: &[(u32, u32, u32)]| -> u32 {
        match slots.binary_search_by(|&(first, last, _)| {
            if last < slot {
                std::cmp::Ordering::Less
            } else if first > slot {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => slots[i].2,
            Err(_) => 0,
        }
    };
    for &(first, last, value) in slots {
        // Element-aligned middle part as one run; the odd ends per element.
        let first_full = first.div_ceil(SLOTS_PER_ELEMENT);
        let end_full = (last + 1) / SLOTS_PER_ELEMENT; // exclusive
        if first_full < end_full {
            runs.push((first_full, end_full - first_full, value, value));
        }
        for slot in [first, last] {
            let element = slot / SLOTS_PER_ELEMENT;
            if element < first_full || element >= end_full {
                element_values.push((element, 0, 0));
            }
        }
    }
    element_values.sort_unstable();
    element_values.dedup();
    for (element, _, _) in element_values {
        let lo = slot_value(element * SLOTS_PER_ELEMENT, slots);
        let hi = slot_value(element * SLOTS_PER_ELEMENT + 1, slots);
        runs.push((element, 1, lo, hi));
    }
    runs.sort_unstable();
    // Merge adjacent runs of equal content.
    let mut merged: Vec<(u32, u32, u32, u32)> = Vec::with_capacity(runs.len());
    for run in runs {
        if let Some(last) = merged.last_mut()
            && last.0 + last.1 == run.0
            && last.2 == run.2
            && last.3 == run.3
        {
            last.1 += run.1;
            continue;
        }
        merged.push(run);
    }
    merged
}

/// The `_d24` slot array in front of the trie map `trie`: memory-mapped,
/// its entries are [`Tables::runs`] as [`run_entry`]s (12-byte values in
/// an array of 8-byte elements: the runtime expands them).
pub fn slots_map(trie: &str, tables: &Tables) -> MapDef {
    MapDef {
        flags: MMAPABLE,
        entries: tables.runs.iter().map(run_entry).collect(),
        ..MapDef::empty(
            slots_name(trie),
            map_type::ARRAY,
            ELEMENTS,
            Some(DataType::U32),
            Some(DataType::U64),
        )
    }
}

/// The `_d24b` bitmap array in front of the trie map `trie`: index `i + 1`
/// holds `tables.bitmaps[i]` as `value_size` bytes, `extend` appending
/// what else the value carries (a candidate list, `layout::candidates`).
pub fn bitmaps_map(
    trie: &str,
    tables: &Tables,
    value_size: u32,
    extend: impl Fn(Vec<u8>) -> Vec<u8>,
) -> MapDef {
    MapDef {
        entries: tables
            .bitmaps
            .iter()
            .enumerate()
            .map(|(i, bits)| {
                let value = extend(bitmap_bytes(bits));
                (((i + 1) as u32).to_le_bytes().to_vec(), value)
            })
            .collect(),
        ..MapDef::empty(
            bitmaps_name(trie),
            map_type::ARRAY,
            tables.bitmaps.len() as u32 + 1,
            Some(DataType::U32),
            Some(DataType::Bytes(value_size)),
        )
    }
}

/// The trie's entries behind the arrays ([`Tables::trie`]), as LPM trie
/// image entries.
pub fn trie_entries(tables: &Tables) -> Vec<(Vec<u8>, Vec<u8>)> {
    tables
        .trie
        .iter()
        .map(|(addr, len, bits)| {
            let prefix = Prefix {
                addr: IpAddr::V4((*addr).into()),
                len: *len,
            };
            let key = entry_key(&Key::Prefix(prefix), MapKind::LpmTrie);
            (key, bitmap_bytes(bits))
        })
        .collect()
}

/// A run as image key and value bytes.
pub fn run_entry(run: &(u32, u32, u32, u32)) -> (Vec<u8>, Vec<u8>) {
    let (element, count, lo, hi) = *run;
    let mut value = count.to_le_bytes().to_vec();
    value.extend(lo.to_le_bytes());
    value.extend(hi.to_le_bytes());
    (element.to_le_bytes().to_vec(), value)
}

/// Decodes an image entry of a `_d24` map; `None` if malformed.
pub fn decode_run(key: &[u8], value: &[u8]) -> Option<(u32, u32, u32, u32)> {
    let word = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            b.get(4 * i..4 * i + 4)?.try_into().ok()?,
        ))
    };
    Some((
        word(key, 0)?,
        word(value, 0)?,
        word(value, 1)?,
        word(value, 2)?,
    ))
}

/// Expands runs into the array's memory (`ELEMENTS * 8` bytes, zeroed);
/// the reference for the runtime's fill. Runs past the end are an error.
pub fn expand_runs(runs: &[(u32, u32, u32, u32)], memory: &mut [u8]) -> Result<(), String> {
    for &(element, count, lo, hi) in runs {
        let start = element as usize * 8;
        let end = start + count as usize * 8;
        let Some(region) = memory.get_mut(start..end) else {
            return Err(format!("run {element}+{count} is past the array"));
        };
        let mut pair = [0u8; 8];
        pair[..4].copy_from_slice(&lo.to_le_bytes());
        pair[4..].copy_from_slice(&hi.to_le_bytes());
        for chunk in region.chunks_exact_mut(8) {
            chunk.copy_from_slice(&pair);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use patronus_compiler::ir::{Bits, Storage};

    fn classifier(prefixes: &[(&str, u8, u64)]) -> Classifier {
        let mut keys = Vec::new();
        let mut bits = Vec::new();
        for &(a, len, b) in prefixes {
            keys.push(Key::Prefix(Prefix {
                addr: a.parse().expect("test address"),
                len,
            }));
            bits.push(b);
        }
        Classifier {
            field: Field::SrcAddr(Family::Ipv4),
            words: 1,
            keys,
            bits,
            miss: Bits(vec![0]),
            absent: Bits(vec![0]),
            inline_cost: prefixes.len(),
            storage: Storage::Inline,
        }
    }

    /// The slot of `/24` number `n` after expansion.
    fn slot(memory: &[u8], n: u32) -> u32 {
        let at = n as usize * 4;
        u32::from_le_bytes(memory[at..at + 4].try_into().expect("4 bytes"))
    }

    #[test]
    fn nested_prefixes_paint_innermost_and_long_ones_fall_back() {
        let c = classifier(&[
            ("10.0.0.0", 8, 1),
            ("10.1.0.0", 16, 3),
            ("10.1.2.0", 24, 7),
            ("10.1.3.128", 25, 15),
            ("192.0.2.0", 24, 16),
        ]);
        let tables = build(&c);
        let mut memory = vec![0u8; ELEMENTS as usize * 8];
        expand_runs(&tables.runs, &mut memory).expect("runs fit");
        let id = |bits: u64| -> u32 {
            tables
                .bitmaps
                .iter()
                .position(|b| b[0] == bits)
                .expect("bitmap listed") as u32
                + 1
        };
        let n = |a: u32, b: u32, c: u32| (a << 16) | (b << 8) | c;
        assert_eq!(slot(&memory, n(9, 255, 255)), 0);
        assert_eq!(slot(&memory, n(10, 0, 0)), id(1));
        assert_eq!(slot(&memory, n(10, 1, 0)), id(3));
        assert_eq!(slot(&memory, n(10, 1, 2)), id(7));
        assert_eq!(slot(&memory, n(10, 1, 3)), FALLBACK);
        assert_eq!(slot(&memory, n(10, 1, 4)), id(3));
        assert_eq!(slot(&memory, n(10, 2, 0)), id(1));
        assert_eq!(slot(&memory, n(10, 255, 255)), id(1));
        assert_eq!(slot(&memory, n(11, 0, 0)), 0);
        assert_eq!(slot(&memory, n(192, 0, 1)), 0);
        assert_eq!(slot(&memory, n(192, 0, 2)), id(16));
        assert_eq!(slot(&memory, n(192, 0, 3)), 0);
    }

    #[test]
    fn long_prefixes_between_painted_intervals_fall_back() {
        let c = classifier(&[
            ("10.0.0.0", 24, 1),
            ("10.100.1.16", 28, 1),
            ("192.0.2.0", 24, 1),
        ]);
        let tables = build(&c);
        let mut memory = vec![0u8; ELEMENTS as usize * 8];
        expand_runs(&tables.runs, &mut memory).expect("runs fit");
        let n = |a: u32, b: u32, c: u32| (a << 16) | (b << 8) | c;
        assert_eq!(slot(&memory, n(10, 100, 1)), FALLBACK);
        assert_eq!(slot(&memory, n(10, 0, 0)), 1);
        assert_eq!(slot(&memory, n(192, 0, 2)), 1);
        assert_eq!(tables.trie.len(), 1, "only the /28: its /24 has no cover");
    }

    #[test]
    fn every_slot_matches_a_longest_prefix_search() {
        // Pseudo-random prefixes /8../32 over a small region, checked
        // slot by slot against a direct longest-prefix search.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut prefixes: Vec<(String, u8, u64)> = Vec::new();
        for i in 0..300u64 {
            let len = 12 + (next() % 21) as u8;
            let addr = (10u32 << 24) | ((next() as u32) & 0x00FF_FFFF);
            let addr = if len == 0 {
                0
            } else {
                addr & (u32::MAX << (32 - u32::from(len)))
            };
            prefixes.push((std::net::Ipv4Addr::from(addr).to_string(), len, i + 1));
        }
        prefixes.sort();
        prefixes.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let refs: Vec<(&str, u8, u64)> = prefixes
            .iter()
            .map(|(a, l, b)| (a.as_str(), *l, *b))
            .collect();
        let c = classifier(&refs);
        let tables = build(&c);
        let mut memory = vec![0u8; ELEMENTS as usize * 8];
        expand_runs(&tables.runs, &mut memory).expect("runs fit");
        for s in (10u32 << 16)..(11u32 << 16) {
            let inside_longer = refs.iter().any(|&(a, len, _)| {
                let a = u32::from(a.parse::<std::net::Ipv4Addr>().expect("addr"));
                len > 24 && a >> 8 == s
            });
            let want = if inside_longer {
                FALLBACK
            } else {
                let best = refs
                    .iter()
                    .filter(|&&(a, len, _)| {
                        let a = u32::from(a.parse::<std::net::Ipv4Addr>().expect("addr"));
                        len <= 24 && (s << 8) & (u32::MAX << (32 - u32::from(len))) == a
                    })
                    .max_by_key(|&&(_, len, _)| len);
                match best {
                    None => 0,
                    Some(&(_, _, bits)) => {
                        tables
                            .bitmaps
                            .iter()
                            .position(|b| b[0] == bits)
                            .expect("listed") as u32
                            + 1
                    }
                }
            };
            assert_eq!(slot(&memory, s), want, "slot {s:#x}");
        }
    }
}
