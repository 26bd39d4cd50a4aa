//! Names for the outcomes of evaluating a packet, shared by the reference
//! interpreter, the IR evaluator, the code generator's counters and the CLI:
//! which phase decided, which invalid class a malformed frame fell in.

use patronus_grammar::ast::Verdict;

use crate::typed::RuleId;

/// The phase that decided a packet (LANGUAGE.md §3), plus the pre-phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// ARP, passed (or dropped with `arp = drop`) before phase 1.
    Arp,
    /// ICMPv6 neighbor/router discovery with hop limit 255, before phase 1.
    Ndp,
    /// Phase 1: a malformed frame.
    Invalid(InvalidClass),
    /// Phase 2.
    Deny,
    /// Phase 3.
    Established,
    /// Phase 4: the bucket was empty.
    RateLimit,
    /// Phase 5.
    Allow,
    /// Phase 6 (also non-IP ethertypes other than ARP).
    Default,
}

/// The invalid-packet classes of LANGUAGE.md §4, each counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidClass {
    /// Shorter than an Ethernet header (or a VLAN tag cut short).
    EthTruncated,
    /// More than two VLAN tags.
    TooManyVlans,
    Ipv4Truncated,
    Ipv4Version,
    /// IHL < 5.
    Ipv4Ihl,
    /// IHL×4 runs past the frame.
    Ipv4Options,
    /// Total length < IHL×4 or larger than the frame.
    Ipv4TotalLength,
    Ipv6Truncated,
    Ipv6Version,
    /// Payload length larger than the frame.
    Ipv6PayloadLength,
    /// More than 4 extension headers, or a chain running past the frame.
    Ipv6ExtHeaders,
    /// IPv4 MF/offset, IPv6 Fragment header, while `fragments = drop`.
    Fragment,
    TcpTruncated,
    /// Data offset < 5 or past the frame.
    TcpDataOffset,
    /// SYN+FIN, SYN+RST, FIN+RST, or none of SYN/ACK/RST.
    TcpFlags,
    TcpPortZero,
    UdpTruncated,
    /// Length field < 8.
    UdpLength,
    UdpPortZero,
    /// ICMP or ICMPv6 header (8 bytes) truncated.
    IcmpTruncated,
    /// Same source and destination address (and ports for TCP/UDP).
    Land,
}

impl InvalidClass {
    pub const ALL: &'static [InvalidClass] = &[
        InvalidClass::EthTruncated,
        InvalidClass::TooManyVlans,
        InvalidClass::Ipv4Truncated,
        InvalidClass::Ipv4Version,
        InvalidClass::Ipv4Ihl,
        InvalidClass::Ipv4Options,
        InvalidClass::Ipv4TotalLength,
        InvalidClass::Ipv6Truncated,
        InvalidClass::Ipv6Version,
        InvalidClass::Ipv6PayloadLength,
        InvalidClass::Ipv6ExtHeaders,
        InvalidClass::Fragment,
        InvalidClass::TcpTruncated,
        InvalidClass::TcpDataOffset,
        InvalidClass::TcpFlags,
        InvalidClass::TcpPortZero,
        InvalidClass::UdpTruncated,
        InvalidClass::UdpLength,
        InvalidClass::UdpPortZero,
        InvalidClass::IcmpTruncated,
        InvalidClass::Land,
    ];

    /// The stable name used in stats, JSON and snapshots.
    pub fn name(self) -> &'static str {
        match self {
            InvalidClass::EthTruncated => "eth-truncated",
            InvalidClass::TooManyVlans => "too-many-vlans",
            InvalidClass::Ipv4Truncated => "ipv4-truncated",
            InvalidClass::Ipv4Version => "ipv4-version",
            InvalidClass::Ipv4Ihl => "ipv4-ihl",
            InvalidClass::Ipv4Options => "ipv4-options",
            InvalidClass::Ipv4TotalLength => "ipv4-total-length",
            InvalidClass::Ipv6Truncated => "ipv6-truncated",
            InvalidClass::Ipv6Version => "ipv6-version",
            InvalidClass::Ipv6PayloadLength => "ipv6-payload-length",
            InvalidClass::Ipv6ExtHeaders => "ipv6-ext-headers",
            InvalidClass::Fragment => "fragment",
            InvalidClass::TcpTruncated => "tcp-truncated",
            InvalidClass::TcpDataOffset => "tcp-data-offset",
            InvalidClass::TcpFlags => "tcp-flags",
            InvalidClass::TcpPortZero => "tcp-port-zero",
            InvalidClass::UdpTruncated => "udp-truncated",
            InvalidClass::UdpLength => "udp-length",
            InvalidClass::UdpPortZero => "udp-port-zero",
            InvalidClass::IcmpTruncated => "icmp-truncated",
            InvalidClass::Land => "land",
        }
    }
}

/// What evaluating one inbound packet decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub phase: Phase,
    /// The deciding rule (deny, the limit whose bucket was empty, allow).
    pub rule: Option<RuleId>,
    /// Every counter the packet touched, in the order it touched them.
    pub counters: Vec<Counter>,
}

/// A counter a packet increments (packets; byte counts follow the frame length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// Per deciding phase (for `Invalid`, per class).
    Phase(Phase),
    /// Per rule: the rule matched and took part (deny, limit charged, allow).
    Rule(RuleId),
}
