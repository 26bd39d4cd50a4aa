//! Byte layout of the classifier maps: their BTF key and value types and
//! the key/value bytes of their entries (the table in `abi`'s module doc).
//! A leaf: the DIR-24 format (`layout::dir24`) and the layout pass build
//! on it.

use std::net::IpAddr;

use patronus_compiler::ir::plan::MapKind;
use patronus_compiler::ir::{Classifier, Field, Key};
use patronus_compiler::typed::Family;

use crate::elf::{DataType, Field as BtfField};

fn addr_len(family: Family) -> u32 {
    match family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 16,
    }
}

pub(crate) fn bitmap_type(words: usize) -> DataType {
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

/// Key type of a classifier map (decided by its field and map kind).
pub(crate) fn classifier_key(field: Field, kind: MapKind) -> DataType {
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
pub fn entry_key(key: &Key, kind: MapKind) -> Vec<u8> {
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

/// The initial entries of the map of kind `kind` holding classifier `c`
/// (arrays filled with the miss bitmap where no entry applies).
pub fn entries(c: &Classifier, kind: MapKind) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries = Vec::new();
    {
        if kind == MapKind::Array {
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
                entries.push((entry_key(k, kind), bitmap_bytes(c.entry(i))));
            }
        }
    }
    entries
}
