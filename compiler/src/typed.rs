//! The typed policy: names resolved, tables loaded, every value checked and
//! normalised into sets the later stages compute with. This is the single
//! input of the lints, the reference interpreter and lowering.
//!
//! Conventions: `None` in a match field means "any"; sets are normalised
//! (prefixes with host bits cleared, port ranges sorted and merged); rule ids
//! are indexes into [`Policy::rules`] in file order.

use std::collections::BTreeSet;
use std::net::IpAddr;

use patronus_grammar::ast::{Action, Span, Verdict};

use crate::diag::FileId;
use crate::net::{PortRange, Prefix};

/// The protocols the policy language names (`tcp`, `udp`, `icmp`,
/// `icmpv6`); the numbers are defined in [`crate::proto`].
pub use crate::proto::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// TCP flag bits as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

#[derive(Clone, Debug)]
pub struct Policy {
    /// The policy file itself.
    pub file: FileId,
    pub interface: Option<(String, Span)>,
    pub options: Options,
    /// Every allow/deny/limit rule, in file order; `RuleId(i)` is `rules[i]`.
    pub rules: Vec<Rule>,
    /// Every table, whether used or not, in file order.
    pub tables: Vec<Table>,
    pub tests: Vec<Test>,
}

impl Policy {
    /// Where rule `rule` is written; `None` for an id that is not one of
    /// its rules.
    pub fn rule_span(&self, rule: RuleId) -> Option<Span> {
        self.rules.get(rule.0 as usize).map(|r| r.span)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub u32);

#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    /// The name's span in the policy file.
    pub span: Span,
    /// Normalised, sorted and deduplicated.
    pub prefixes: Vec<Prefix>,
    /// The table file, if the table came from one.
    pub source_file: Option<FileId>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: RuleId,
    /// `Allow` with `rate` is an allow that is also rate limited (phase 4
    /// then phase 5); `Limit` always has a `rate`.
    pub action: Action,
    pub matcher: Match,
    pub rate: Option<Rate>,
    pub label: Option<String>,
    pub log: bool,
    /// The whole rule in the policy file.
    pub span: Span,
    /// A stable identity for the rule across edits that do not change it:
    /// the label if there is one, else the rule's normalised source text.
    pub identity: String,
}

/// A conjunction of conditions on one packet; `None` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    /// Restricts to one address family (from `ip4`/`ip6`, from the
    /// addresses used, or from `icmp`/`icmpv6`).
    pub family: Option<Family>,
    /// IP protocol numbers; for IPv6 the upper-layer protocol after
    /// extension headers.
    pub protos: Option<BTreeSet<u8>>,
    pub src: Option<AddrMatch>,
    pub dst: Option<AddrMatch>,
    /// Only for TCP/UDP packets; a packet of another protocol never matches
    /// a rule with ports.
    pub src_ports: Option<PortMatch>,
    pub dst_ports: Option<PortMatch>,
    /// ICMP or ICMPv6 (by `protos`) type/code pairs; `code: None` = any code.
    pub icmp: Option<Vec<IcmpMatch>>,
    /// TCP flags: `(flags & mask) == set`.
    pub tcp_flags: Option<TcpFlagsMatch>,
    /// 802.1Q VLAN id of the outer tag.
    pub vlan: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
}

/// Membership in an address set, or (negated) non-membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrMatch {
    pub negated: bool,
    pub set: AddrSet,
}

/// Literal prefixes plus whole tables (kept by reference: a table may hold
/// a million entries and be used by several rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrSet {
    pub prefixes: Vec<Prefix>,
    pub tables: Vec<TableId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMatch {
    pub negated: bool,
    /// Sorted, merged, non-empty.
    pub ranges: Vec<PortRange>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IcmpMatch {
    pub ty: u8,
    pub code: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpFlagsMatch {
    pub set: u8,
    pub mask: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    Src,
    Dst,
    Flow,
    Global,
}

/// A token bucket: `burst` tokens at most, one token every `interval_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// The rate as written, for display: `count` per `unit_ns`.
    pub count: u64,
    pub unit_ns: u64,
    /// Nanoseconds per token: `unit_ns / count`, at least 1.
    pub interval_ns: u64,
    pub burst: u64,
    pub key: RateKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The verdict of phase 6.
    pub default: Verdict,
    pub conntrack: bool,
    pub conntrack_size: u32,
    pub ratelimit_size: u32,
    /// Fragments are dropped (the only mode so far).
    pub fragments_drop: bool,
    pub arp_pass: bool,
    pub ndp_pass: bool,
    /// `log` events per second, at most.
    pub log_rate: u32,
    pub timeouts: Timeouts,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default: Verdict::Drop,
            conntrack: true,
            conntrack_size: 1_000_000,
            ratelimit_size: 65_536,
            fragments_drop: true,
            arp_pass: true,
            ndp_pass: true,
            log_rate: 100,
            timeouts: Timeouts::default(),
        }
    }
}

/// Conntrack timeouts in nanoseconds (nf_conntrack's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn: u64,
    pub tcp_established: u64,
    pub tcp_closing: u64,
    pub tcp_rst: u64,
    pub udp: u64,
    pub udp_stream: u64,
    pub icmp: u64,
}

pub const NS_PER_SEC: u64 = 1_000_000_000;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: 120 * NS_PER_SEC,
            tcp_established: 5 * 24 * 3600 * NS_PER_SEC,
            tcp_closing: 120 * NS_PER_SEC,
            tcp_rst: 10 * NS_PER_SEC,
            udp: 30 * NS_PER_SEC,
            udp_stream: 180 * NS_PER_SEC,
            icmp: 30 * NS_PER_SEC,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Test {
    pub name: String,
    pub span: Span,
    pub steps: Vec<TestStep>,
}

#[derive(Clone, Debug)]
pub struct TestStep {
    /// `Some(verdict)` for `expect`, `None` for `out`.
    pub expect: Option<Verdict>,
    pub packet: Packet,
    pub span: Span,
}

/// A concrete packet from test syntax (§7), ready to be built into a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP/UDP ports (0 when not given).
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags byte (default SYN).
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type and code (default echo request, code 0).
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub vlan: Option<u16>,
    /// How many times to send it (the verdict must hold for each).
    pub repeat: u64,
}
