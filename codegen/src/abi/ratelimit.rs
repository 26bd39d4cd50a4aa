//! Byte layout of the token-bucket maps of the rate-limit phase.
//!
//! Maps (named by `ir::plan`, role `Contents::RateLimit`): `rl_src_v4`, `rl_src_v6`, `rl_dst_v4`,
//! `rl_dst_v6`, `rl_flow_v4`, `rl_flow_v6` (`LRU_HASH`; the rules of one key
//! kind share the map, the key starts with the rule id) and `rl_global`
//! (`ARRAY` indexed by rule id).
//!
//! Keys (little-endian rule id, then packet fields in network order):
//!
//! | map | key |
//! |---|---|
//! | `rl_src_*` / `rl_dst_*` | `rule: u32`, address (4 / 16 bytes) |
//! | `rl_flow_*` | `rule: u32`, source, destination, source port, destination port (2 + 2, network order, 0 without ports), protocol `u8`, 3 zero bytes: the packet's own (directional) tuple |
//! | `rl_global` | `u32` index = rule id |
//!
//! Value (16 bytes): `last_ns: u64` (the clock of the last update), then
//! `credit_ns: u64`: the bucket's content in nanoseconds, one token costing
//! the rule's `interval_ns`, at most `burst × interval_ns`. A refill adds the
//! elapsed time and clamps: no division in the data path. A bucket that does
//! not exist yet (or a `rl_global` slot whose `last_ns` is still 0) is full.

use patronus_compiler::ir::plan::MapPlan;
use patronus_compiler::typed::{Family, Rate, RateKey};

use crate::elf::{DataType, Field, MapDef};
use crate::error::CodegenError;
use crate::insn::kernel::map_type;

pub const VALUE_LAST_NS: i16 = 0;
pub const VALUE_CREDIT_NS: i16 = 8;
pub const VALUE_SIZE: usize = 16;
/// The rule id at the start of every hash key.
pub const KEY_RULE: i16 = 0;
/// Where the packet fields start in a hash key.
pub const KEY_FIELDS: i16 = 4;
/// The largest key (`rl_flow_v6`): stack slots are sized for it.
pub const KEY_MAX_SIZE: usize = 44;

/// Offsets of the flow-key fields, relative to the key start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLayout {
    pub src: i16,
    pub dst: i16,
    pub sport: i16,
    pub dport: i16,
    pub proto: i16,
    pub size: usize,
}

pub const fn addr_len(family: Family) -> i16 {
    match family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 16,
    }
}

pub const fn flow_layout(family: Family) -> FlowLayout {
    let a = addr_len(family);
    FlowLayout {
        src: KEY_FIELDS,
        dst: KEY_FIELDS + a,
        sport: KEY_FIELDS + 2 * a,
        dport: KEY_FIELDS + 2 * a + 2,
        proto: KEY_FIELDS + 2 * a + 4,
        size: (KEY_FIELDS + 2 * a + 8) as usize,
    }
}

/// Key size of the hash map for `key` kind and `family` (`None` for global).
pub const fn key_size(key: RateKey, family: Family) -> Option<usize> {
    match key {
        RateKey::Src | RateKey::Dst => Some((KEY_FIELDS + addr_len(family)) as usize),
        RateKey::Flow => Some(flow_layout(family).size),
        RateKey::Global => None,
    }
}

/// The bucket bounds of a rate: (cost of a token, full bucket), in ns.
/// `full` saturates at `u64::MAX` (a bucket of more than 584 years).
pub fn bucket_bounds(rate: &Rate) -> (u64, u64) {
    let cost = rate.interval_ns.max(1);
    (cost, rate.burst.saturating_mul(cost))
}

fn field(name: &str, ty: DataType, offset: i16) -> Field {
    Field {
        name: name.into(),
        ty,
        offset: offset as u32,
    }
}

pub fn value_type() -> DataType {
    DataType::Struct {
        name: "bucket".into(),
        size: VALUE_SIZE as u32,
        fields: vec![
            field("last_ns", DataType::U64, VALUE_LAST_NS),
            field("credit_ns", DataType::U64, VALUE_CREDIT_NS),
        ],
    }
}

fn key_type(key: RateKey, family: Family) -> DataType {
    let a = addr_len(family) as u32;
    let v = if a == 4 { 4 } else { 6 };
    let rule = field("rule", DataType::U32, KEY_RULE);
    match key {
        RateKey::Src | RateKey::Dst => {
            let name = if key == RateKey::Src { "src" } else { "dst" };
            DataType::Struct {
                name: format!("rl_{name}{v}_key"),
                size: KEY_FIELDS as u32 + a,
                fields: vec![rule, field(name, DataType::Bytes(a), KEY_FIELDS)],
            }
        }
        _ => {
            let f = flow_layout(family);
            DataType::Struct {
                name: format!("rl_flow{v}_key"),
                size: f.size as u32,
                fields: vec![
                    rule,
                    field("src", DataType::Bytes(a), f.src),
                    field("dst", DataType::Bytes(a), f.dst),
                    field("sport", DataType::U16, f.sport),
                    field("dport", DataType::U16, f.dport),
                    field("proto", DataType::U8, f.proto),
                    field("pad", DataType::Bytes(3), f.proto + 1),
                ],
            }
        }
    }
}

/// The ELF definition of a planned rate-limit map
/// (`Contents::RateLimit { key, family }`): an LRU hash per family, an
/// array by rule id for `per global` (`family: None`).
pub fn map_def(
    plan: &MapPlan,
    key: RateKey,
    family: Option<Family>,
) -> Result<MapDef, CodegenError> {
    let max_entries = u32::try_from(plan.max_entries.max(1)).map_err(|_| CodegenError::Limit {
        what: format!(
            "rate-limit map `{}` needs {} entries (ratelimit-size × rules), more than a map holds",
            plan.name, plan.max_entries
        ),
        rule: None,
    })?;
    let (map_type, key_type) = match family {
        Some(family) => (map_type::LRU_HASH, key_type(key, family)),
        None => (map_type::ARRAY, DataType::U32),
    };
    Ok(MapDef::empty(
        plan.name.clone(),
        map_type,
        max_entries,
        Some(key_type),
        Some(value_type()),
    ))
}

/// One decoded bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub last_ns: u64,
    pub credit_ns: u64,
}

pub fn decode_bucket(value: &[u8]) -> Option<Bucket> {
    let word = |at: i16| -> Option<u64> {
        let at = at as usize;
        Some(u64::from_le_bytes(value.get(at..at + 8)?.try_into().ok()?))
    };
    Some(Bucket {
        last_ns: word(VALUE_LAST_NS)?,
        credit_ns: word(VALUE_CREDIT_NS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sizes_match_the_key_types() {
        for key in [RateKey::Src, RateKey::Dst, RateKey::Flow] {
            for family in [Family::Ipv4, Family::Ipv6] {
                let size = key_size(key, family).unwrap();
                assert_eq!(key_type(key, family).size() as usize, size);
                assert!(size <= KEY_MAX_SIZE);
            }
        }
        assert_eq!(key_size(RateKey::Flow, Family::Ipv6), Some(KEY_MAX_SIZE));
        assert_eq!(key_size(RateKey::Global, Family::Ipv4), None);
    }
}
