//! Address prefixes and port ranges as values: containment, coverage and
//! normalisation. Shared by type checking, lints, the interpreter and lowering.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP prefix with its host bits cleared. IPv4 and IPv6 never contain
/// each other (an IPv4-mapped IPv6 address is an IPv6 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The prefix `addr/len` with host bits cleared; `None` if `len` is too
    /// long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        if u32::from(len) > max_len(addr) {
            return None;
        }
        Some(Prefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// A single host.
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: max_len(addr) as u8,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }

    /// Whether every address of `other` is in `self`.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// 32 for IPv4, 128 for IPv6.
pub fn max_len(addr: IpAddr) -> u32 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `addr` with all but the first `len` bits cleared.
pub fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Sorts and merges overlapping or adjacent ranges.
pub fn normalize_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => {
                last.hi = last.hi.max(r.hi);
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks_host_bits_and_covers() {
        let p = Prefix::new("10.1.2.3".parse().unwrap(), 8).unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
        assert!(p.covers(&Prefix::new("10.9.0.0".parse().unwrap(), 16).unwrap()));
        assert!(!p.covers(&Prefix::new("11.0.0.0".parse().unwrap(), 16).unwrap()));
        assert!(!p.contains("::a01:203".parse().unwrap()));
        assert!(Prefix::new("::".parse().unwrap(), 129).is_none());
    }

    #[test]
    fn ranges_merge() {
        let r = normalize_ranges(vec![
            PortRange { lo: 80, hi: 80 },
            PortRange { lo: 81, hi: 90 },
            PortRange { lo: 22, hi: 22 },
        ]);
        assert_eq!(
            r,
            vec![PortRange { lo: 22, hi: 22 }, PortRange { lo: 80, hi: 90 }]
        );
    }
}
