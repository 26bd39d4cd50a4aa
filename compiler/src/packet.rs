//! Building the raw Ethernet frame of a test packet ([`typed::Packet`],
//! LANGUAGE.md §7), so policy tests exercise the same frame parser as real
//! traffic. Frames are well formed: correct lengths, IHL, data offset and
//! checksums, for IPv4 and IPv6, with an optional 802.1Q tag.
//!
//! Fixed choices (documented so test expectations can rely on them):
//! - MACs: destination [`DST_MAC`], source [`SRC_MAC`]; IPv4 TTL and IPv6
//!   hop limit 64, except ICMPv6 neighbor discovery (types 133–137), which is
//!   sent with hop limit 255 as real NDP always is.
//! - TCP: a 20-byte header, sequence 1000, acknowledgment 1 when ACK is set,
//!   window 64240, no payload. UDP: 4 bytes of payload.
//! - ICMP/ICMPv6 echo: identifier [`ECHO_ID`] and sequence 1 for requests
//!   and replies alike, so a reply matches the request's conntrack entry;
//!   other ICMP types carry 4 zero bytes after the checksum.
//! - Other protocols: 8 zero bytes of payload.

use std::net::IpAddr;

use crate::frame::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, NDP_HOP_LIMIT, NDP_TYPES,
};
use crate::typed::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, tcp_flags};

pub const DST_MAC: [u8; 6] = [0x02, 0x50, 0x54, 0x00, 0x00, 0x02];
pub const SRC_MAC: [u8; 6] = [0x02, 0x50, 0x54, 0x00, 0x00, 0x01];
/// The ICMP/ICMPv6 echo identifier of every built echo request and reply.
pub const ECHO_ID: u16 = 0x5054;
const DEFAULT_HOP_LIMIT: u8 = 64;

/// The Ethernet frame of `packet` (one copy; `repeat` is the caller's business).
///
/// Addresses of different families are a caller error the type checker
/// rules out; here the destination is then taken as the unspecified address
/// of the source's family so the frame is still well formed.
pub fn build(packet: &Packet) -> Vec<u8> {
    let (ethertype, l3) = match packet.src {
        IpAddr::V4(src) => {
            let dst = match packet.dst {
                IpAddr::V4(dst) => dst,
                IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
            };
            let transport = transport(packet, &pseudo_header_v4(src.octets(), dst.octets()));
            (
                ETHERTYPE_IPV4,
                ipv4(src.octets(), dst.octets(), packet.proto, &transport),
            )
        }
        IpAddr::V6(src) => {
            let dst = match packet.dst {
                IpAddr::V6(dst) => dst,
                IpAddr::V4(_) => std::net::Ipv6Addr::UNSPECIFIED,
            };
            let transport = transport(packet, &pseudo_header_v6(src.octets(), dst.octets()));
            let is_ndp = packet.proto == PROTO_ICMPV6 && NDP_TYPES.contains(&packet.icmp_type);
            let hop_limit = if is_ndp {
                NDP_HOP_LIMIT
            } else {
                DEFAULT_HOP_LIMIT
            };
            (
                ETHERTYPE_IPV6,
                ipv6(
                    src.octets(),
                    dst.octets(),
                    packet.proto,
                    hop_limit,
                    &transport,
                ),
            )
        }
    };
    let mut frame = Vec::with_capacity(18 + l3.len());
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    if let Some(vlan) = packet.vlan {
        frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        frame.extend_from_slice(&(vlan & 0x0FFF).to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(&l3);
    frame
}

/// The pseudo-header checksum input, minus the upper-layer length and
/// protocol (added per segment).
enum PseudoHeader {
    V4([u8; 8]),
    V6([u8; 32]),
}

fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4]) -> PseudoHeader {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&src);
    b[4..].copy_from_slice(&dst);
    PseudoHeader::V4(b)
}

fn pseudo_header_v6(src: [u8; 16], dst: [u8; 16]) -> PseudoHeader {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&src);
    b[16..].copy_from_slice(&dst);
    PseudoHeader::V6(b)
}

/// The checksum over the pseudo-header and `segment` (RFC 768/793/8200).
fn transport_checksum(pseudo: &PseudoHeader, proto: u8, segment: &[u8]) -> u16 {
    let mut bytes = Vec::with_capacity(40 + segment.len());
    let len = segment.len() as u32;
    match pseudo {
        PseudoHeader::V4(addrs) => {
            bytes.extend_from_slice(addrs);
            bytes.extend_from_slice(&[0, proto]);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        PseudoHeader::V6(addrs) => {
            bytes.extend_from_slice(addrs);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, proto]);
        }
    }
    bytes.extend_from_slice(segment);
    internet_checksum(&bytes)
}

fn transport(packet: &Packet, pseudo: &PseudoHeader) -> Vec<u8> {
    let is_v6 = matches!(pseudo, PseudoHeader::V6(_));
    match packet.proto {
        PROTO_TCP => {
            let ack = if packet.tcp_flags & tcp_flags::ACK != 0 {
                1u32
            } else {
                0
            };
            let mut seg = Vec::with_capacity(20);
            seg.extend_from_slice(&packet.src_port.to_be_bytes());
            seg.extend_from_slice(&packet.dst_port.to_be_bytes());
            seg.extend_from_slice(&1000u32.to_be_bytes());
            seg.extend_from_slice(&ack.to_be_bytes());
            seg.push(5 << 4); // data offset: 5 words, no options
            seg.push(packet.tcp_flags);
            seg.extend_from_slice(&64240u16.to_be_bytes());
            seg.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            let sum = transport_checksum(pseudo, PROTO_TCP, &seg);
            seg[16..18].copy_from_slice(&sum.to_be_bytes());
            seg
        }
        PROTO_UDP => {
            let payload = b"test";
            let len = (8 + payload.len()) as u16;
            let mut seg = Vec::with_capacity(usize::from(len));
            seg.extend_from_slice(&packet.src_port.to_be_bytes());
            seg.extend_from_slice(&packet.dst_port.to_be_bytes());
            seg.extend_from_slice(&len.to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
            seg.extend_from_slice(payload);
            // A computed 0 is sent as 0xFFFF: 0 means "no checksum".
            let sum = match transport_checksum(pseudo, PROTO_UDP, &seg) {
                0 => 0xFFFF,
                s => s,
            };
            seg[6..8].copy_from_slice(&sum.to_be_bytes());
            seg
        }
        PROTO_ICMP if !is_v6 => icmp_message(packet, None),
        PROTO_ICMPV6 if is_v6 => icmp_message(packet, Some(pseudo)),
        _ => vec![0; 8],
    }
}

/// An 8-byte ICMP (no pseudo-header) or ICMPv6 (with one) message.
fn icmp_message(packet: &Packet, pseudo: Option<&PseudoHeader>) -> Vec<u8> {
    let is_echo = match pseudo {
        None => matches!(packet.icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY),
        Some(_) => matches!(packet.icmp_type, ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY),
    };
    let mut msg = vec![packet.icmp_type, packet.icmp_code, 0, 0];
    if is_echo {
        msg.extend_from_slice(&ECHO_ID.to_be_bytes());
        msg.extend_from_slice(&1u16.to_be_bytes());
    } else {
        msg.extend_from_slice(&[0, 0, 0, 0]);
    }
    let sum = match pseudo {
        None => internet_checksum(&msg),
        Some(pseudo) => transport_checksum(pseudo, PROTO_ICMPV6, &msg),
    };
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let total_len = (20 + payload.len()) as u16;
    let mut header = Vec::with_capacity(usize::from(total_len));
    header.push(0x45); // version 4, IHL 5
    header.push(0);
    header.extend_from_slice(&total_len.to_be_bytes());
    header.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
    header.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
    header.push(DEFAULT_HOP_LIMIT);
    header.push(proto);
    header.extend_from_slice(&[0, 0]);
    header.extend_from_slice(&src);
    header.extend_from_slice(&dst);
    let sum = internet_checksum(&header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    header.extend_from_slice(payload);
    header
}

fn ipv6(src: [u8; 16], dst: [u8; 16], next_header: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(40 + payload.len());
    packet.extend_from_slice(&(6u32 << 28).to_be_bytes());
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.push(next_header);
    packet.push(hop_limit);
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&dst);
    packet.extend_from_slice(payload);
    packet
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{self, Frame, Transport};
    use crate::typed::Options;

    fn packet(proto: u8, src: &str, dst: &str) -> Packet {
        Packet {
            proto,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 40000,
            dst_port: 443,
            tcp_flags: tcp_flags::SYN,
            icmp_type: ICMP_ECHO_REQUEST,
            icmp_code: 0,
            vlan: None,
            repeat: 1,
        }
    }

    #[test]
    fn checksums_verify_to_zero() {
        let frame = build(&packet(PROTO_TCP, "192.0.2.1", "10.0.0.2"));
        // The IPv4 header sums to 0 with its checksum in place.
        assert_eq!(internet_checksum(&frame[14..34]), 0);
        let mut pseudo = frame[26..34].to_vec();
        pseudo.extend_from_slice(&[0, PROTO_TCP, 0, 20]);
        pseudo.extend_from_slice(&frame[34..]);
        assert_eq!(internet_checksum(&pseudo), 0);
    }

    #[test]
    fn built_frames_parse_back() {
        let opts = Options::default();
        let mut p = packet(PROTO_UDP, "2001:db8::1", "2001:db8::2");
        p.vlan = Some(100);
        let Ok(Frame::Ip(ip)) = frame::parse(&build(&p), &opts) else {
            panic!("not IP")
        };
        assert_eq!(ip.vlan, Some(100));
        assert_eq!(
            ip.transport,
            Transport::Udp {
                src_port: 40000,
                dst_port: 443
            }
        );

        let mut ns = packet(PROTO_ICMPV6, "fe80::1", "ff02::1");
        ns.icmp_type = 135;
        let Ok(Frame::Ip(ip)) = frame::parse(&build(&ns), &opts) else {
            panic!("not IP")
        };
        assert!(ip.is_ndp());

        let echo = packet(PROTO_ICMP, "192.0.2.1", "10.0.0.2");
        let Ok(Frame::Ip(ip)) = frame::parse(&build(&echo), &opts) else {
            panic!("not IP")
        };
        assert_eq!(
            ip.transport,
            Transport::Icmp {
                ty: 8,
                code: 0,
                echo_id: Some(ECHO_ID)
            }
        );
    }
}
