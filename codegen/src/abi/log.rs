//! `log` events: the ring buffer `log_events` (`RINGBUF`) and the global
//! token bucket `log_bucket` (`ARRAY` of one [`abi::ratelimit`] bucket) that
//! caps them at `options log-rate` events per second (burst: one second's
//! worth). Neither is in `ir::Program::maps`: the layout pass
//! (`layout`, roles `LogEvents` / `LogBucket`) adds them when some rule
//! with `log` can decide and `log-rate` is not 0.
//!
//! Event (56 bytes, little-endian unless said otherwise):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `time_ns`: `bpf_ktime_get_coarse_ns()` |
//! | 8 | 4 | `rule`: the rule id (index in the policy, file order) |
//! | 12 | 1 | `verdict`: 1 pass, 0 drop |
//! | 13 | 1 | `proto`: IP protocol |
//! | 14 | 1 | `family`: 4 or 6 |
//! | 15 | 1 | zero |
//! | 16 | 2 | source port, network order (0 without ports) |
//! | 18 | 2 | destination port, network order |
//! | 20 | 4 | zero |
//! | 24 | 16 | source address, network order (IPv4 in bytes 0..4) |
//! | 40 | 16 | destination address |
//!
//! [`abi::ratelimit`]: crate::abi::ratelimit

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use patronus_compiler::typed::NS_PER_SEC;

use crate::abi::ratelimit;
use crate::elf::{DataType, MapDef};
use crate::insn::kernel::map_type;

pub const RINGBUF_NAME: &str = "log_events";
pub const BUCKET_NAME: &str = "log_bucket";
/// Ring buffer bytes: a power of two and a multiple of the page size.
pub const RINGBUF_BYTES: u32 = 256 * 1024;

pub const EVENT_TIME_NS: i16 = 0;
pub const EVENT_RULE: i16 = 8;
pub const EVENT_VERDICT: i16 = 12;
pub const EVENT_PROTO: i16 = 13;
pub const EVENT_FAMILY: i16 = 14;
pub const EVENT_SPORT: i16 = 16;
pub const EVENT_DPORT: i16 = 18;
pub const EVENT_SRC: i16 = 24;
pub const EVENT_DST: i16 = 40;
pub const EVENT_SIZE: usize = 56;

/// The log bucket for `log_rate` events per second: (cost, full) in ns,
/// `None` when logging is off (`log-rate 0`).
pub fn bucket_bounds(log_rate: u32) -> Option<(u64, u64)> {
    if log_rate == 0 {
        return None;
    }
    let cost = (NS_PER_SEC / u64::from(log_rate)).max(1);
    Some((cost, cost * u64::from(log_rate)))
}

/// The ring buffer map.
pub fn ringbuf_map() -> MapDef {
    MapDef::empty(RINGBUF_NAME, map_type::RINGBUF, RINGBUF_BYTES, None, None)
}

/// The one-slot array holding the log bucket (starts zero = full).
pub fn bucket_map() -> MapDef {
    MapDef::empty(
        BUCKET_NAME,
        map_type::ARRAY,
        1,
        Some(DataType::U32),
        Some(ratelimit::value_type()),
    )
}

/// One decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEvent {
    pub time_ns: u64,
    pub rule: u32,
    pub pass: bool,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

pub fn decode_event(bytes: &[u8]) -> Option<LogEvent> {
    if bytes.len() < EVENT_SIZE {
        return None;
    }
    let at = |off: i16, len: usize| &bytes[off as usize..off as usize + len];
    let addr = |off: i16, family: u8| -> Option<IpAddr> {
        match family {
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(at(off, 4)).ok()?,
            ))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(at(off, 16)).ok()?,
            ))),
            _ => None,
        }
    };
    let family = bytes[EVENT_FAMILY as usize];
    Some(LogEvent {
        time_ns: u64::from_le_bytes(at(EVENT_TIME_NS, 8).try_into().ok()?),
        rule: u32::from_le_bytes(at(EVENT_RULE, 4).try_into().ok()?),
        pass: bytes[EVENT_VERDICT as usize] == 1,
        proto: bytes[EVENT_PROTO as usize],
        src: addr(EVENT_SRC, family)?,
        dst: addr(EVENT_DST, family)?,
        src_port: u16::from_be_bytes(at(EVENT_SPORT, 2).try_into().ok()?),
        dst_port: u16::from_be_bytes(at(EVENT_DPORT, 2).try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_of_log_rate() {
        assert_eq!(bucket_bounds(0), None);
        assert_eq!(bucket_bounds(100), Some((10_000_000, NS_PER_SEC)));
        assert!(RINGBUF_BYTES.is_power_of_two());
    }

    #[test]
    fn decodes_an_event() {
        let mut e = vec![0u8; EVENT_SIZE];
        e[0..8].copy_from_slice(&5u64.to_le_bytes());
        e[8..12].copy_from_slice(&3u32.to_le_bytes());
        e[12] = 1;
        e[13] = 6;
        e[14] = 4;
        e[16..18].copy_from_slice(&1234u16.to_be_bytes());
        e[18..20].copy_from_slice(&22u16.to_be_bytes());
        e[24..28].copy_from_slice(&[192, 0, 2, 1]);
        e[40..44].copy_from_slice(&[10, 0, 0, 1]);
        let ev = decode_event(&e).unwrap();
        assert_eq!(ev.rule, 3);
        assert!(ev.pass);
        assert_eq!(ev.src, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!((ev.src_port, ev.dst_port), (1234, 22));
    }
}
