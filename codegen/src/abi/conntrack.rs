//! Byte layout of the conntrack maps `ct_v4` / `ct_v6` (`LRU_HASH`, one
//! per address family, `conntrack-size` entries each; role
//! `Contents::Conntrack(family)`).
//!
//! Key: the flow's 5-tuple with its two endpoints in canonical order, so a
//! packet and its reply find the same entry (as the interpreter's
//! `Tuple::key`): the endpoint `(address, port)` that is smaller, comparing
//! the address as a big-endian number and then the port, comes first.
//!
//! | offset (v4 / v6) | size | field |
//! |---|---|---|
//! | 0 | 4 / 16 | first address, network order |
//! | 4 / 16 | 4 / 16 | second address, network order |
//! | 8 / 32 | 2 | first port, network order |
//! | 10 / 34 | 2 | second port, network order |
//! | 12 / 36 | 1 | IP protocol |
//! | 13 / 37 | 3 | zero |
//!
//! Ports are the TCP/UDP ports; for an ICMP/ICMPv6 echo the echo id stands
//! in for them as `(id, 0)` for a request and `(0, id)` for a reply (so a
//! reply is the reversed tuple of its request); other protocols use `(0, 0)`.
//!
//! Value (24 bytes, little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `last_ns`: `bpf_ktime_get_coarse_ns()` of the flow's last refresh |
//! | 8 | 8 | `timeout_ns`: the timeout of `state` (kept so the liveness test is one compare) |
//! | 16 | 1 | `state` ([`state_code`]) |
//! | 17 | 1 | `dir`: 1 if the flow's original tuple (the packet that started it) is in key order, 0 if reversed |
//! | 18 | 6 | zero |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use patronus_compiler::interp::conntrack::FlowState;
use patronus_compiler::ir::FlowKey;
use patronus_compiler::ir::plan::MapPlan;
use patronus_compiler::typed::Family;

use crate::elf::{DataType, Field, MapDef};
use crate::error::CodegenError;
use crate::insn::kernel::map_type;

pub const VALUE_LAST_NS: i16 = 0;
pub const VALUE_TIMEOUT_NS: i16 = 8;
pub const VALUE_STATE: i16 = 16;
pub const VALUE_DIR: i16 = 17;
pub const VALUE_SIZE: usize = 24;

/// The largest key (IPv6): stack slots are sized for it.
pub const KEY_MAX_SIZE: usize = 40;

/// Byte offsets of the key fields for one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    pub addr_len: i16,
    pub first_addr: i16,
    pub second_addr: i16,
    pub first_port: i16,
    pub second_port: i16,
    pub proto: i16,
    pub size: usize,
}

pub const fn key_layout(family: Family) -> KeyLayout {
    let addr_len: i16 = match family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 16,
    };
    KeyLayout {
        addr_len,
        first_addr: 0,
        second_addr: addr_len,
        first_port: 2 * addr_len,
        second_port: 2 * addr_len + 2,
        proto: 2 * addr_len + 4,
        size: (2 * addr_len + 8) as usize,
    }
}

/// The byte stored in the value's `state` field.
pub const fn state_code(state: FlowState) -> u8 {
    match state {
        FlowState::TcpSyn => 1,
        FlowState::TcpEstablished => 2,
        FlowState::TcpClosing => 3,
        FlowState::TcpRst => 4,
        FlowState::Udp => 5,
        FlowState::UdpStream => 6,
        FlowState::Icmp => 7,
    }
}

pub const ALL_STATES: [FlowState; 7] = [
    FlowState::TcpSyn,
    FlowState::TcpEstablished,
    FlowState::TcpClosing,
    FlowState::TcpRst,
    FlowState::Udp,
    FlowState::UdpStream,
    FlowState::Icmp,
];

pub fn state_of_code(code: u8) -> Option<FlowState> {
    ALL_STATES.into_iter().find(|s| state_code(*s) == code)
}

fn key_type(family: Family) -> DataType {
    let k = key_layout(family);
    let field = |name: &str, ty, offset: i16| Field {
        name: name.into(),
        ty,
        offset: offset as u32,
    };
    DataType::Struct {
        name: format!("ct{}_key", if k.addr_len == 4 { 4 } else { 6 }),
        size: k.size as u32,
        fields: vec![
            field("addr_a", DataType::Bytes(k.addr_len as u32), k.first_addr),
            field("addr_b", DataType::Bytes(k.addr_len as u32), k.second_addr),
            field("port_a", DataType::U16, k.first_port),
            field("port_b", DataType::U16, k.second_port),
            field("proto", DataType::U8, k.proto),
            field("pad", DataType::Bytes(3), k.proto + 1),
        ],
    }
}

fn value_type() -> DataType {
    let field = |name: &str, ty, offset: i16| Field {
        name: name.into(),
        ty,
        offset: offset as u32,
    };
    DataType::Struct {
        name: "ct_value".into(),
        size: VALUE_SIZE as u32,
        fields: vec![
            field("last_ns", DataType::U64, VALUE_LAST_NS),
            field("timeout_ns", DataType::U64, VALUE_TIMEOUT_NS),
            field("state", DataType::U8, VALUE_STATE),
            field("dir", DataType::U8, VALUE_DIR),
            field("pad", DataType::Bytes(6), VALUE_DIR + 1),
        ],
    }
}

/// The ELF definition of a planned conntrack map (`Contents::Conntrack`).
pub fn map_def(plan: &MapPlan, family: Family) -> Result<MapDef, CodegenError> {
    let max_entries = u32::try_from(plan.max_entries.max(1)).map_err(|_| CodegenError::Limit {
        what: format!("conntrack-size {} does not fit a map", plan.max_entries),
        rule: None,
    })?;
    // Keeping the table across reloads (§3) is the runtime's job (it
    // reuses the map); pinning policy is not decided here.
    Ok(MapDef::empty(
        plan.name.clone(),
        map_type::LRU_HASH,
        max_entries,
        Some(key_type(family)),
        Some(value_type()),
    ))
}

fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// True if `(src, src_port) <= (dst, dst_port)`: the tuple is in key order.
pub fn in_key_order(tuple: &FlowKey) -> bool {
    (tuple.src, tuple.src_port) <= (tuple.dst, tuple.dst_port)
}

/// The key bytes of the flow `tuple` belongs to (either direction gives
/// the same bytes). `None` when the two addresses are of different families.
pub fn encode_key(tuple: &FlowKey) -> Option<Vec<u8>> {
    if tuple.src.is_ipv4() != tuple.dst.is_ipv4() {
        return None;
    }
    let (a, a_port, b, b_port) = if in_key_order(tuple) {
        (tuple.src, tuple.src_port, tuple.dst, tuple.dst_port)
    } else {
        (tuple.dst, tuple.dst_port, tuple.src, tuple.src_port)
    };
    let mut key = addr_bytes(a);
    key.extend(addr_bytes(b));
    key.extend(a_port.to_be_bytes());
    key.extend(b_port.to_be_bytes());
    key.extend([tuple.proto, 0, 0, 0]);
    Some(key)
}

/// One decoded conntrack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    /// The tuple of the packet that started the flow.
    pub original: FlowKey,
    pub state: FlowState,
    pub last_ns: u64,
    pub timeout_ns: u64,
}

impl CtEntry {
    /// The flow is live at `now_ns` (same test as the data path).
    pub fn is_live(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_ns) < self.timeout_ns
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn addr_at(bytes: &[u8], at: usize, family: Family) -> Option<IpAddr> {
    match family {
        Family::Ipv4 => {
            let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        Family::Ipv6 => {
            let b: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
    }
}

/// Decodes a key/value pair read from `ct_v4` / `ct_v6`.
pub fn decode_entry(family: Family, key: &[u8], value: &[u8]) -> Option<CtEntry> {
    let k = key_layout(family);
    if key.len() != k.size || value.len() != VALUE_SIZE {
        return None;
    }
    let port = |at: i16| -> Option<u16> {
        let at = at as usize;
        Some(u16::from_be_bytes(key.get(at..at + 2)?.try_into().ok()?))
    };
    let a = addr_at(key, k.first_addr as usize, family)?;
    let b = addr_at(key, k.second_addr as usize, family)?;
    let (a_port, b_port) = (port(k.first_port)?, port(k.second_port)?);
    let proto = key[k.proto as usize];
    let forward = value[VALUE_DIR as usize] == 1;
    let original = if forward {
        FlowKey {
            proto,
            src: a,
            dst: b,
            src_port: a_port,
            dst_port: b_port,
        }
    } else {
        FlowKey {
            proto,
            src: b,
            dst: a,
            src_port: b_port,
            dst_port: a_port,
        }
    };
    Some(CtEntry {
        original,
        state: state_of_code(value[VALUE_STATE as usize])?,
        last_ns: u64_at(value, VALUE_LAST_NS as usize)?,
        timeout_ns: u64_at(value, VALUE_TIMEOUT_NS as usize)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: &str, sp: u16, dst: &str, dp: u16) -> FlowKey {
        FlowKey {
            proto: 6,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: sp,
            dst_port: dp,
        }
    }

    #[test]
    fn both_directions_share_one_key_and_decode_back() {
        let out = tuple("192.0.2.9", 40000, "10.0.0.1", 22);
        let back = tuple("10.0.0.1", 22, "192.0.2.9", 40000);
        let key = encode_key(&out).unwrap();
        assert_eq!(Some(key.clone()), encode_key(&back));
        assert_eq!(key.len(), key_layout(Family::Ipv4).size);
        // 10.0.0.1 < 192.0.2.9: the reply's source comes first.
        assert_eq!(&key[..4], &[10, 0, 0, 1]);
        assert_eq!(&key[8..10], &22u16.to_be_bytes());
        let mut value = vec![0u8; VALUE_SIZE];
        value[VALUE_STATE as usize] = state_code(FlowState::TcpSyn);
        value[VALUE_DIR as usize] = u8::from(in_key_order(&out));
        let entry = decode_entry(Family::Ipv4, &key, &value).unwrap();
        assert_eq!(entry.original, out);
        assert_eq!(entry.state, FlowState::TcpSyn);
    }

    #[test]
    fn state_codes_round_trip() {
        for s in ALL_STATES {
            assert_eq!(state_of_code(state_code(s)), Some(s));
        }
        assert_eq!(state_of_code(0), None);
    }
}
