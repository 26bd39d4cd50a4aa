//! Wire numbers: ethertypes, header lengths, IP protocol numbers, IPv6
//! extension-header numbers, ICMP types. Defined once, here, for every
//! stage that reads or writes frames: the frame parser of the reference
//! interpreter (`frame`), the packet builders (`packet`, `corpus`), and
//! the code generator's parsers (`patronus_codegen::parser`).

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88A8;
pub const ETHERTYPE_LLDP: u16 = 0x88CC;

pub const ETH_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;
pub const PROTO_ICMPV6: u8 = 58;

/// IPv6 extension headers (next-header values) the parsers skip.
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AH: u8 = 51;
pub const IPV6_DEST_OPTS: u8 = 60;
/// The extension headers other than the fragment header, whose handling
/// depends on the `fragments` option: the headers always skipped.
pub const IPV6_SKIPPED_EXT_HEADERS: [u8; 4] =
    [IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_DEST_OPTS, IPV6_AH];

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// ICMPv6 router solicitation .. redirect: neighbor discovery (RFC 4861).
pub const NDP_TYPES: std::ops::RangeInclusive<u8> = 133..=137;
/// NDP messages are only valid with this hop limit (RFC 4861 §7.1).
pub const NDP_HOP_LIMIT: u8 = 255;
