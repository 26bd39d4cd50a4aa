//! Parsing a raw Ethernet frame into the header fields the policy language
//! looks at, or into the [`InvalidClass`] that makes it malformed
//! (LANGUAGE.md §4). Shared by the reference interpreter and the IR
//! evaluator, so both agree byte for byte on what a frame is.
//!
//! The checks run in header order (Ethernet, VLAN tags, IP, extension
//! headers, fragments, transport, land) and the first failing check names the
//! class. Land is checked last and is skipped for neighbor discovery, which
//! is decided before phase 1 (as ref_xdp does: an NDP packet passes before
//! its addresses are looked at).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::semantics::InvalidClass;
use crate::typed::{self, Family, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, tcp_flags};

/// Wire numbers this parser reads, defined in [`crate::proto`]; re-exported
/// for the callers that build or take apart frames beside it.
pub use crate::proto::{
    ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN,
    ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, NDP_HOP_LIMIT,
    NDP_TYPES, VLAN_TAG_LEN,
};
use crate::proto::{IPV6_AH, IPV6_FRAGMENT, IPV6_SKIPPED_EXT_HEADERS};

/// VLAN tags skipped before a frame is invalid (LANGUAGE.md §4).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers skipped before a chain is invalid.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

/// A well-formed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Ethertype 0x0806.
    Arp {
        vlan: Option<u16>,
    },
    /// Any other ethertype that is not IP (LLDP, ...).
    NonIp {
        ethertype: u16,
        vlan: Option<u16>,
    },
    Ip(IpPacket),
}

/// The fields of a valid IPv4 or IPv6 packet that rules and conntrack use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpPacket {
    /// VLAN id (low 12 bits of the TCI) of the outer tag, if tagged.
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IPv4 protocol, or for IPv6 the upper-layer protocol after the
    /// extension headers.
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    pub transport: Transport,
}

/// The transport header, as far as the policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// ICMP under IPv4 (protocol 1) or ICMPv6 under IPv6 (protocol 58).
    Icmp {
        ty: u8,
        code: u8,
        echo_id: Option<u16>,
    },
    /// A non-first fragment kept because `fragments` is not `drop`: its
    /// transport header is in another packet.
    Fragment,
    /// Any other protocol (GRE, ESP, ICMP under IPv6, ...): no header parsed.
    Other,
}

impl IpPacket {
    pub fn family(&self) -> Family {
        Family::of(self.src)
    }

    /// TCP/UDP ports, `None` for other transports.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }

    /// TCP flags, `None` for other transports.
    pub fn tcp_flags(&self) -> Option<u8> {
        match self.transport {
            Transport::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }

    /// ICMP/ICMPv6 type and code, `None` for other transports.
    pub fn icmp(&self) -> Option<(u8, u8)> {
        match self.transport {
            Transport::Icmp { ty, code, .. } => Some((ty, code)),
            _ => None,
        }
    }

    /// A TCP packet with SYN set and ACK clear: a connection attempt, never
    /// established (LANGUAGE.md §3).
    pub fn is_lone_syn(&self) -> bool {
        self.tcp_flags()
            .is_some_and(|f| f & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN)
    }

    /// ICMPv6 neighbor/router discovery (types 133–137) with hop limit 255.
    pub fn is_ndp(&self) -> bool {
        self.family() == Family::Ipv6
            && self.proto == PROTO_ICMPV6
            && self.hop_limit == NDP_HOP_LIMIT
            && self.icmp().is_some_and(|(ty, _)| NDP_TYPES.contains(&ty))
    }
}

/// Parses `frame` as it arrives at the interface. `options` decides what a
/// fragment is (only `fragments_drop` is read).
pub fn parse(frame: &[u8], options: &typed::Options) -> Result<Frame, InvalidClass> {
    let ethertype = be16(frame, 12).ok_or(InvalidClass::EthTruncated)?;
    let (ethertype, vlan, l3) = skip_vlan_tags(frame, ethertype)?;
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(l3, vlan, options).map(Frame::Ip),
        ETHERTYPE_IPV6 => parse_ipv6(l3, vlan, options).map(Frame::Ip),
        ETHERTYPE_ARP => Ok(Frame::Arp { vlan }),
        other => Ok(Frame::NonIp {
            ethertype: other,
            vlan,
        }),
    }
}

/// Skips up to two VLAN tags; returns the inner ethertype, the outer VLAN
/// id and the bytes after the tags.
fn skip_vlan_tags(
    frame: &[u8],
    mut ethertype: u16,
) -> Result<(u16, Option<u16>, &[u8]), InvalidClass> {
    let mut offset = ETH_HEADER_LEN;
    let mut outer_vlan = None;
    let mut tags = 0;
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if tags == MAX_VLAN_TAGS {
            return Err(InvalidClass::TooManyVlans);
        }
        let tci = be16(frame, offset).ok_or(InvalidClass::EthTruncated)?;
        ethertype = be16(frame, offset + 2).ok_or(InvalidClass::EthTruncated)?;
        outer_vlan.get_or_insert(tci & 0x0FFF);
        offset += VLAN_TAG_LEN;
        tags += 1;
    }
    Ok((ethertype, outer_vlan, &frame[offset..]))
}

fn parse_ipv4(
    l3: &[u8],
    vlan: Option<u16>,
    options: &typed::Options,
) -> Result<IpPacket, InvalidClass> {
    const MIN_HEADER: usize = 20;
    if l3.len() < MIN_HEADER {
        return Err(InvalidClass::Ipv4Truncated);
    }
    if l3[0] >> 4 != 4 {
        return Err(InvalidClass::Ipv4Version);
    }
    let header_len = usize::from(l3[0] & 0x0F) * 4;
    if header_len < MIN_HEADER {
        return Err(InvalidClass::Ipv4Ihl);
    }
    if header_len > l3.len() {
        return Err(InvalidClass::Ipv4Options);
    }
    let total_len = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
    // Bytes after the total length are Ethernet padding, allowed.
    if total_len < header_len || total_len > l3.len() {
        return Err(InvalidClass::Ipv4TotalLength);
    }
    let frag = u16::from_be_bytes([l3[6], l3[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let fragment_offset = frag & 0x1FFF;
    let is_fragment = more_fragments || fragment_offset != 0;
    if is_fragment && options.fragments_drop {
        return Err(InvalidClass::Fragment);
    }
    let proto = l3[9];
    let src = IpAddr::V4(Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]));
    let payload = &l3[header_len..total_len];
    let transport = if fragment_offset != 0 {
        Transport::Fragment
    } else {
        parse_transport(Family::Ipv4, proto, payload)?
    };
    finish(IpPacket {
        vlan,
        src,
        dst,
        proto,
        hop_limit: l3[8],
        transport,
    })
}

fn parse_ipv6(
    l3: &[u8],
    vlan: Option<u16>,
    options: &typed::Options,
) -> Result<IpPacket, InvalidClass> {
    const HEADER: usize = 40;
    if l3.len() < HEADER {
        return Err(InvalidClass::Ipv6Truncated);
    }
    if l3[0] >> 4 != 6 {
        return Err(InvalidClass::Ipv6Version);
    }
    let payload_len = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
    let end = HEADER + payload_len;
    if end > l3.len() {
        return Err(InvalidClass::Ipv6PayloadLength);
    }
    let addr = |at: usize| {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&l3[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(bytes))
    };
    let (src, dst) = (addr(8), addr(24));

    // The extension-header chain, bounded by the payload length.
    let mut next = l3[6];
    let mut offset = HEADER;
    let mut skipped = 0;
    let mut non_first_fragment = false;
    loop {
        let is_fragment_header = next == IPV6_FRAGMENT;
        if is_fragment_header && options.fragments_drop {
            return Err(InvalidClass::Fragment);
        }
        let is_ext = IPV6_SKIPPED_EXT_HEADERS.contains(&next) || is_fragment_header;
        if !is_ext {
            break;
        }
        if skipped == MAX_IPV6_EXT_HEADERS {
            return Err(InvalidClass::Ipv6ExtHeaders);
        }
        if offset + 2 > end {
            return Err(InvalidClass::Ipv6ExtHeaders);
        }
        let len_field = usize::from(l3[offset + 1]);
        let len = match next {
            IPV6_AH => (len_field + 2) * 4,
            IPV6_FRAGMENT => 8,
            _ => (len_field + 1) * 8,
        };
        if offset + len > end {
            return Err(InvalidClass::Ipv6ExtHeaders);
        }
        if is_fragment_header {
            let frag = u16::from_be_bytes([l3[offset + 2], l3[offset + 3]]);
            non_first_fragment |= frag >> 3 != 0;
        }
        next = l3[offset];
        offset += len;
        skipped += 1;
    }
    let transport = if non_first_fragment {
        Transport::Fragment
    } else {
        parse_transport(Family::Ipv6, next, &l3[offset..end])?
    };
    finish(IpPacket {
        vlan,
        src,
        dst,
        proto: next,
        hop_limit: l3[7],
        transport,
    })
}

/// Parses the transport header in `segment` (the IP payload, padding excluded).
fn parse_transport(family: Family, proto: u8, segment: &[u8]) -> Result<Transport, InvalidClass> {
    let icmp_proto = match family {
        Family::Ipv4 => PROTO_ICMP,
        Family::Ipv6 => PROTO_ICMPV6,
    };
    match proto {
        PROTO_TCP => {
            if segment.len() < 20 {
                return Err(InvalidClass::TcpTruncated);
            }
            let data_offset = usize::from(segment[12] >> 4) * 4;
            if data_offset < 20 || data_offset > segment.len() {
                return Err(InvalidClass::TcpDataOffset);
            }
            let flags = segment[13];
            if tcp_flags_invalid(flags) {
                return Err(InvalidClass::TcpFlags);
            }
            let (src_port, dst_port) = ports(segment);
            if src_port == 0 || dst_port == 0 {
                return Err(InvalidClass::TcpPortZero);
            }
            Ok(Transport::Tcp {
                src_port,
                dst_port,
                flags,
            })
        }
        PROTO_UDP => {
            if segment.len() < 8 {
                return Err(InvalidClass::UdpTruncated);
            }
            if u16::from_be_bytes([segment[4], segment[5]]) < 8 {
                return Err(InvalidClass::UdpLength);
            }
            let (src_port, dst_port) = ports(segment);
            if src_port == 0 || dst_port == 0 {
                return Err(InvalidClass::UdpPortZero);
            }
            Ok(Transport::Udp { src_port, dst_port })
        }
        p if p == icmp_proto => {
            if segment.len() < 8 {
                return Err(InvalidClass::IcmpTruncated);
            }
            let (ty, code) = (segment[0], segment[1]);
            let is_echo = match family {
                Family::Ipv4 => ty == ICMP_ECHO_REQUEST || ty == ICMP_ECHO_REPLY,
                Family::Ipv6 => ty == ICMPV6_ECHO_REQUEST || ty == ICMPV6_ECHO_REPLY,
            };
            let echo_id = is_echo.then(|| u16::from_be_bytes([segment[4], segment[5]]));
            Ok(Transport::Icmp { ty, code, echo_id })
        }
        _ => Ok(Transport::Other),
    }
}

/// SYN+FIN, SYN+RST, FIN+RST, or none of SYN/ACK/RST (NULL, FIN and Xmas scans).
pub fn tcp_flags_invalid(flags: u8) -> bool {
    use tcp_flags::{ACK, FIN, RST, SYN};
    let has = |bits: u8| flags & bits == bits;
    has(SYN | FIN) || has(SYN | RST) || has(FIN | RST) || flags & (SYN | ACK | RST) == 0
}

/// The last check: a land attack (source = destination; for TCP/UDP also
/// the same ports). NDP is exempt: it is decided before phase 1.
fn finish(packet: IpPacket) -> Result<IpPacket, InvalidClass> {
    let land = packet.src == packet.dst
        && match packet.ports() {
            Some((src_port, dst_port)) => src_port == dst_port,
            None => true,
        };
    if land && !packet.is_ndp() {
        return Err(InvalidClass::Land);
    }
    Ok(packet)
}

fn ports(segment: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([segment[0], segment[1]]),
        u16::from_be_bytes([segment[2], segment[3]]),
    )
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}
