//! Whether a rule's match (a conjunction, `None` = any) holds for a packet
//! (LANGUAGE.md §2): the one definition of every match field.

use crate::frame::IpPacket;
use crate::net::PortRange;
use crate::typed::{AddrMatch, Match, PortMatch, Table};

/// Every field of `matcher` holds for `packet`. `tables` are the policy's
/// tables, indexed by [`crate::typed::TableId`].
pub fn matches(matcher: &Match, packet: &IpPacket, tables: &[Table]) -> bool {
    let family = matcher.family.is_none_or(|f| f == packet.family());
    let proto = matcher
        .protos
        .as_ref()
        .is_none_or(|set| set.contains(&packet.proto));
    let src = matcher
        .src
        .as_ref()
        .is_none_or(|m| addr_matches(m, packet.src, tables));
    let dst = matcher
        .dst
        .as_ref()
        .is_none_or(|m| addr_matches(m, packet.dst, tables));
    // A rule with ports matches only packets that have ports (TCP, UDP),
    // whether or not the port set is negated.
    let ports = packet.ports();
    let src_port = matcher
        .src_ports
        .as_ref()
        .is_none_or(|m| ports.is_some_and(|(sport, _)| port_matches(m, sport)));
    let dst_port = matcher
        .dst_ports
        .as_ref()
        .is_none_or(|m| ports.is_some_and(|(_, dport)| port_matches(m, dport)));
    // Likewise `type` needs an ICMP/ICMPv6 header and `flags` a TCP header.
    let icmp = matcher.icmp.as_ref().is_none_or(|wanted| {
        packet.icmp().is_some_and(|(ty, code)| {
            wanted
                .iter()
                .any(|w| w.ty == ty && w.code.is_none_or(|c| c == code))
        })
    });
    let flags = matcher.tcp_flags.is_none_or(|f| {
        packet
            .tcp_flags()
            .is_some_and(|flags| flags & f.mask == f.set)
    });
    let vlan = matcher.vlan.is_none_or(|id| packet.vlan == Some(id));
    family && proto && src && dst && src_port && dst_port && icmp && flags && vlan
}

/// Membership in the literal prefixes or any referenced table, negated for `!`.
pub fn addr_matches(m: &AddrMatch, addr: std::net::IpAddr, tables: &[Table]) -> bool {
    let in_prefixes = m.set.prefixes.iter().any(|p| p.contains(addr));
    let in_tables = m.set.tables.iter().any(|id| {
        tables
            .get(id.0 as usize)
            .is_some_and(|t| t.prefixes.iter().any(|p| p.contains(addr)))
    });
    (in_prefixes || in_tables) != m.negated
}

pub fn port_matches(m: &PortMatch, port: u16) -> bool {
    m.ranges.iter().any(|r: &PortRange| r.contains(port)) != m.negated
}
