//! Typing rules: each `allow`/`deny`/`limit` becomes a [`typed::Rule`]
//! whose [`Match`] holds normalised sets. Checks that every field is given
//! at most once, that values fit where they are used (ports only with TCP
//! or UDP, `type` only with ICMP, `flags` only with TCP), that the address
//! families of a rule agree, and the rate.
//!
//! Choices where the contract is silent (documented in the explanation
//! pages): `flags S` without a mask means the exact flags byte (mask
//! `FSRPAUEW`, as pf does); a negated address list still implies its
//! family (`from !10.0.0.0/8` matches IPv4 sources outside 10/8 only, as
//! in pf); a set mixing IPv4 and IPv6, or holding a table, implies no
//! family.

use std::collections::{BTreeSet, HashMap};

use patronus_grammar::ast::{self, Action, ExprKind, MatchFieldKind, ProtoKeyword, RateUnit, Span};

use super::Checker;
use super::names;
use super::resolve::Leaf;
use crate::codes::Code;
use crate::net::{PortRange, Prefix, normalize_ranges};
use crate::typed::{
    self, AddrMatch, AddrSet, Family, IcmpMatch, Match, NS_PER_SEC, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP, PortMatch, Rate, RateKey, RuleId, TcpFlagsMatch,
};

/// Why a rule is restricted to one address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FamilyReason {
    /// `ip4` / `ip6`.
    Explicit,
    /// `icmp` / `icmpv6`, or a protocol set of just one of them.
    Icmp,
    /// Every address of a `from` or `to` is of that family.
    Addresses,
}

#[derive(Clone, Copy, Debug)]
struct FamilySource {
    family: Family,
    span: Span,
    reason: FamilyReason,
}

impl FamilySource {
    fn describe(&self) -> String {
        let name = family_name(self.family);
        match (self.reason, self.family) {
            (FamilyReason::Explicit, Family::Ipv4) => {
                "`ip4` restricts the rule to IPv4".to_string()
            }
            (FamilyReason::Explicit, Family::Ipv6) => {
                "`ip6` restricts the rule to IPv6".to_string()
            }
            (FamilyReason::Icmp, Family::Ipv4) => "`icmp` is ICMP for IPv4".to_string(),
            (FamilyReason::Icmp, Family::Ipv6) => "`icmpv6` is ICMP for IPv6".to_string(),
            (FamilyReason::Addresses, _) => format!("these addresses are all {name}"),
        }
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}

/// An address list, typed.
struct Addresses {
    /// `None` for `any`.
    matcher: Option<AddrMatch>,
    /// The one family every listed address has, when there is one.
    family: Option<Family>,
}

fn field_name(kind: &MatchFieldKind) -> &'static str {
    match kind {
        MatchFieldKind::Proto(_) | MatchFieldKind::ProtoExpr(_) => "protocol",
        MatchFieldKind::Family(_) => "address family",
        MatchFieldKind::From { .. } => "`from`",
        MatchFieldKind::To { .. } => "`to`",
        MatchFieldKind::IcmpType { .. } => "`type`",
        MatchFieldKind::Flags { .. } => "`flags`",
        MatchFieldKind::Vlan(_) => "`vlan`",
    }
}

/// How a protocol set reads in a label: "`tcp`", "`tcp`, `udp` and protocol 47".
fn describe_protocols(protos: &BTreeSet<u8>) -> String {
    let parts: Vec<String> = protos
        .iter()
        .map(|p| match names::PROTOCOLS.iter().find(|(_, n)| n == p) {
            Some((name, _)) => format!("`{name}`"),
            None => format!("protocol {p}"),
        })
        .collect();
    if parts.len() > 4 {
        return format!("{} protocols", parts.len());
    }
    parts.join(", ")
}

/// Which ICMP a protocol set is, if it is exactly one of them.
fn icmp_family(protos: Option<&BTreeSet<u8>>) -> Option<Family> {
    let protos = protos?;
    if protos.len() != 1 {
        return None;
    }
    match protos.first() {
        Some(&PROTO_ICMP) => Some(Family::Ipv4),
        Some(&PROTO_ICMPV6) => Some(Family::Ipv6),
        _ => None,
    }
}

fn unit_ns(unit: RateUnit) -> u64 {
    match unit {
        RateUnit::Second => NS_PER_SEC,
        RateUnit::Minute => 60 * NS_PER_SEC,
        RateUnit::Hour => 3600 * NS_PER_SEC,
    }
}

/// The default burst: the per-second rate rounded up, at least 1.
pub fn default_burst(count: u64, unit: RateUnit) -> u64 {
    let per_unit = u128::from(unit_ns(unit));
    let burst = (u128::from(count) * u128::from(NS_PER_SEC)).div_ceil(per_unit);
    u64::try_from(burst).unwrap_or(u64::MAX).max(1)
}

impl<'a> Checker<'a> {
    pub fn check_interface(&mut self, policy: &'a ast::Policy) -> Option<(String, Span)> {
        let mut first: Option<&ast::InterfaceDecl> = None;
        for item in &policy.items {
            let ast::Item::Interface(decl) = item else {
                continue;
            };
            match first {
                None => first = Some(decl),
                Some(f) => {
                    let d = self
                        .error(
                            Code::DuplicateField,
                            "the interface is given twice",
                            decl.span,
                            "second `interface`",
                        )
                        .with_secondary(self.label(f.span, "first given here"))
                        .with_help(
                            "a policy attaches to one interface; keep one `interface` statement",
                        );
                    self.emit(d);
                }
            }
        }
        first.map(|d| (d.name.name.clone(), d.name.span))
    }

    pub fn check_rules(&mut self, policy: &'a ast::Policy) -> Vec<typed::Rule> {
        let mut rules = Vec::new();
        for item in &policy.items {
            if let ast::Item::Rule(rule) = item {
                let id = RuleId(rules.len() as u32);
                rules.push(self.check_rule(rule, id));
            }
        }
        rules
    }

    fn check_rule(&mut self, rule: &'a ast::Rule, id: RuleId) -> typed::Rule {
        // Each field at most once; later repeats are reported and ignored.
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        let mut fields: Vec<&'a ast::MatchField> = Vec::new();
        for field in &rule.fields {
            let name = field_name(&field.kind);
            match seen.get(name) {
                Some(&first) => self.duplicate_field(name, field.span, first),
                None => {
                    seen.insert(name, field.span);
                    fields.push(field);
                }
            }
        }

        let mut matcher = Match::default();
        let mut families: Vec<FamilySource> = Vec::new();

        // The protocol comes first: ports, types and flags depend on it.
        let mut proto_span: Option<Span> = None;
        for field in &fields {
            match &field.kind {
                MatchFieldKind::Proto(keyword) => {
                    let (proto, family) = match keyword {
                        ProtoKeyword::Tcp => (PROTO_TCP, None),
                        ProtoKeyword::Udp => (PROTO_UDP, None),
                        ProtoKeyword::Icmp => (PROTO_ICMP, Some(Family::Ipv4)),
                        ProtoKeyword::Icmpv6 => (PROTO_ICMPV6, Some(Family::Ipv6)),
                    };
                    matcher.protos = Some(BTreeSet::from([proto]));
                    proto_span = Some(field.span);
                    if let Some(family) = family {
                        families.push(FamilySource {
                            family,
                            span: field.span,
                            reason: FamilyReason::Icmp,
                        });
                    }
                }
                MatchFieldKind::ProtoExpr(expr) => {
                    matcher.protos = self.protocols(expr);
                    proto_span = Some(field.span);
                    if let Some(family) = icmp_family(matcher.protos.as_ref()) {
                        families.push(FamilySource {
                            family,
                            span: field.span,
                            reason: FamilyReason::Icmp,
                        });
                    }
                }
                _ => {}
            }
        }

        for field in &fields {
            match &field.kind {
                MatchFieldKind::Proto(_) | MatchFieldKind::ProtoExpr(_) => {}
                MatchFieldKind::Family(family) => {
                    let family = match family {
                        ast::Family::Ip4 => Family::Ipv4,
                        ast::Family::Ip6 => Family::Ipv6,
                    };
                    families.push(FamilySource {
                        family,
                        span: field.span,
                        reason: FamilyReason::Explicit,
                    });
                }
                MatchFieldKind::From { addrs, port } | MatchFieldKind::To { addrs, port } => {
                    let is_from = matches!(field.kind, MatchFieldKind::From { .. });
                    // `to port 80`: any address.
                    let addresses = match addrs {
                        Some(addrs) => {
                            let addresses = self.addresses(addrs);
                            if let Some(family) = addresses.family {
                                families.push(FamilySource {
                                    family,
                                    span: addrs.span,
                                    reason: FamilyReason::Addresses,
                                });
                            }
                            addresses
                        }
                        None => Addresses {
                            matcher: None,
                            family: None,
                        },
                    };
                    let ports = port.as_ref().and_then(|p| {
                        self.require_ports_protocol(p.span, matcher.protos.as_ref(), proto_span);
                        self.ports(p)
                    });
                    if is_from {
                        matcher.src = addresses.matcher;
                        matcher.src_ports = ports;
                    } else {
                        matcher.dst = addresses.matcher;
                        matcher.dst_ports = ports;
                    }
                }
                MatchFieldKind::IcmpType { ty, code } => {
                    match icmp_family(matcher.protos.as_ref()) {
                        Some(family) => matcher.icmp = self.icmp_types(ty, code.as_ref(), family),
                        None => self.needs_protocol(
                            "`type`",
                            "`icmp` or `icmpv6`",
                            field.span,
                            matcher.protos.as_ref(),
                            proto_span,
                            "add `icmp` (IPv4) or `icmpv6` (IPv6) to the rule",
                        ),
                    }
                }
                MatchFieldKind::Flags { set, mask } => {
                    let is_tcp = matcher
                        .protos
                        .as_ref()
                        .is_some_and(|p| p.len() == 1 && p.contains(&PROTO_TCP));
                    if is_tcp {
                        matcher.tcp_flags = self.tcp_flags(set, mask.as_ref());
                    } else {
                        self.needs_protocol(
                            "`flags`",
                            "`tcp`",
                            field.span,
                            matcher.protos.as_ref(),
                            proto_span,
                            "TCP flags exist only in TCP packets: add `tcp` to the rule",
                        );
                    }
                }
                MatchFieldKind::Vlan(expr) => {
                    matcher.vlan = self
                        .single_number(expr, "a VLAN id", "VLAN id", 4095)
                        .map(|v| v as u16);
                }
            }
        }

        matcher.family = self.rule_family(&families);
        let rate = self.rate(rule);
        let (label, log) = self.modifiers(rule);
        let identity = label.clone().unwrap_or_else(|| self.rule_text(rule.span));
        typed::Rule {
            id,
            action: rule.action,
            matcher,
            rate,
            label,
            log,
            span: rule.span,
            identity,
        }
    }

    fn duplicate_field(&mut self, name: &str, span: Span, first: Span) {
        let help = match name {
            "protocol" => "to match several protocols, list them once: `proto { tcp, udp }`",
            "address family" => "without `ip4` or `ip6` a rule matches both families",
            _ => {
                "a rule matches each field at most once: use a set (`{ a, b }`) or write two rules"
            }
        };
        let d = self
            .error(
                Code::DuplicateField,
                format!("the {name} field is given twice in one rule"),
                span,
                format!("second {name}"),
            )
            .with_secondary(self.label(first, "first given here"))
            .with_help(help);
        self.emit(d);
    }

    /// Reports a field that needs a protocol the rule does not have.
    fn needs_protocol(
        &mut self,
        what: &str,
        needs: &str,
        span: Span,
        protos: Option<&BTreeSet<u8>>,
        proto_span: Option<Span>,
        help: &str,
    ) {
        let mut d = self.error(
            Code::WrongKind,
            format!("{what} can only be used with {needs}"),
            span,
            format!("only matched with {needs}"),
        );
        d = match (protos, proto_span) {
            (Some(protos), Some(at)) => {
                let label = format!("this rule matches {}", describe_protocols(protos));
                d.with_secondary(self.label(at, label))
            }
            _ => d.with_note("this rule matches every protocol"),
        };
        self.emit(d.with_help(help));
    }

    fn require_ports_protocol(
        &mut self,
        span: Span,
        protos: Option<&BTreeSet<u8>>,
        proto_span: Option<Span>,
    ) {
        let ok = protos
            .is_some_and(|p| !p.is_empty() && p.iter().all(|&n| n == PROTO_TCP || n == PROTO_UDP));
        if !ok {
            self.needs_protocol(
                "ports",
                "`tcp` or `udp`",
                span,
                protos,
                proto_span,
                "add `tcp` or `udp` to the rule (or `proto { tcp, udp }` for both)",
            );
        }
    }

    /// The rule's family, or `None` (any). Reports sources that disagree.
    fn rule_family(&mut self, sources: &[FamilySource]) -> Option<Family> {
        let first = *sources.first()?;
        let Some(other) = sources.iter().find(|s| s.family != first.family) else {
            return Some(first.family);
        };
        let reasons = [first.reason, other.reason];
        let explicit = [first, *other]
            .into_iter()
            .find(|s| s.reason == FamilyReason::Explicit);
        let help = if reasons.contains(&FamilyReason::Icmp) {
            "`icmp` matches IPv4 packets and `icmpv6` IPv6 packets: use the one of the addresses' family".to_string()
        } else if let Some(explicit) = explicit {
            let (keyword, name) = match explicit.family {
                Family::Ipv4 => ("ip4", "IPv4"),
                Family::Ipv6 => ("ip6", "IPv6"),
            };
            format!(
                "remove `{keyword}` (the addresses already decide the family), or use {name} addresses"
            )
        } else {
            "a packet's source and destination are of one family: write one rule for IPv4 and one for IPv6".to_string()
        };
        let d = self
            .error(
                Code::FamilyMix,
                "this rule can never match: it needs a packet to be both IPv4 and IPv6",
                other.span,
                other.describe(),
            )
            .with_secondary(self.label(first.span, first.describe()))
            .with_help(help);
        self.emit(d);
        None
    }

    /// `proto N`, `proto { tcp, udp }`, `proto $x`. `None` for `any`.
    fn protocols(&mut self, expr: &'a ast::Expr) -> Option<BTreeSet<u8>> {
        let flat = self.flatten(expr);
        let mut protos = BTreeSet::new();
        for leaf in &flat.leaves {
            match &leaf.expr.kind {
                ExprKind::Any => return None,
                ExprKind::Number(n) => match u8::try_from(*n) {
                    Ok(p) => {
                        protos.insert(p);
                    }
                    Err(_) => self.out_of_range(leaf, Code::WrongKind, "protocol number", *n, 255),
                },
                ExprKind::Name(name) if names::protocol(name).is_some() => {
                    protos.extend(names::protocol(name));
                }
                ExprKind::Name(name) => {
                    let help = match names::suggest(name, names::PROTOCOLS.iter().map(|p| p.0)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "a protocol is `tcp`, `udp`, `icmp`, `icmpv6` or a number 0-255 (`proto 47` for GRE)".to_string(),
                    };
                    self.wrong_kind(leaf, "a protocol", Some(help));
                }
                _ => self.wrong_kind(
                    leaf,
                    "a protocol",
                    Some("a protocol is `tcp`, `udp`, `icmp`, `icmpv6` or a number 0-255".into()),
                ),
            }
        }
        if flat.leaves.is_empty() && flat.complete {
            self.empty_set(expr.span, "protocols");
        }
        if flat.negated.is_some() {
            protos = (0..=255u8).filter(|p| !protos.contains(p)).collect();
        }
        Some(protos)
    }

    fn empty_set(&mut self, span: Span, what: &str) {
        let d = self
            .error(
                Code::WrongKind,
                format!("an empty set of {what} matches nothing"),
                span,
                "empty set",
            )
            .with_help("list at least one value, or remove the field to match any");
        self.emit(d);
    }

    /// An address list. Implies a family when every element is a literal
    /// address of one family.
    fn addresses(&mut self, expr: &'a ast::Expr) -> Addresses {
        let flat = self.flatten(expr);
        let mut set = AddrSet::default();
        let mut any = false;
        for leaf in &flat.leaves {
            match &leaf.expr.kind {
                ExprKind::Any => any = true,
                ExprKind::Addr { ip, prefix } => {
                    if !self.leaf_ok(leaf) {
                        continue;
                    }
                    let len = prefix.unwrap_or_else(|| crate::net::max_len(*ip));
                    set.prefixes.extend(u8::try_from(len).ok().and_then(|len| Prefix::new(*ip, len)));
                }
                ExprKind::TableRef(name) => {
                    if self.leaf_ok(leaf)
                        && let Some(&id) = self.tables.get(name.as_str())
                    {
                        set.tables.push(id);
                    }
                }
                ExprKind::Number(_) | ExprKind::Range(..) => self.wrong_kind(
                    leaf,
                    "an address",
                    Some("ports go after the addresses: `to 192.0.2.1 port 80`, or `to any port 80`".into()),
                ),
                _ => self.wrong_kind(
                    leaf,
                    "an address",
                    Some("addresses are written `192.0.2.1`, `10.0.0.0/8`, `2001:db8::/32`, `@table`, `$const` or `any`".into()),
                ),
            }
        }
        if flat.leaves.is_empty() && flat.complete {
            self.empty_set(expr.span, "addresses");
        }
        if any {
            if let Some(not) = flat.negated {
                let d = self
                    .error(
                        Code::WrongKind,
                        "`!any` matches no address",
                        not,
                        "this rule can never match",
                    )
                    .with_help("remove the negation to match every address, or remove the rule");
                self.emit(d);
            }
            return Addresses {
                matcher: None,
                family: None,
            };
        }
        set.prefixes.sort_unstable();
        set.prefixes.dedup();
        set.tables.sort_unstable();
        set.tables.dedup();
        let v4 = set.prefixes.iter().any(Prefix::is_ipv4);
        let v6 = set.prefixes.iter().any(|p| !p.is_ipv4());
        let family = match (set.tables.is_empty(), v4, v6) {
            (true, true, false) => Some(Family::Ipv4),
            (true, false, true) => Some(Family::Ipv6),
            _ => None,
        };
        Addresses {
            matcher: Some(AddrMatch {
                negated: flat.negated.is_some(),
                set,
            }),
            family,
        }
    }

    /// A port list. `None` for `any`.
    fn ports(&mut self, expr: &'a ast::Expr) -> Option<PortMatch> {
        let flat = self.flatten(expr);
        let mut ranges = Vec::new();
        for leaf in &flat.leaves {
            match &leaf.expr.kind {
                ExprKind::Any => return None,
                ExprKind::Number(n) => match u16::try_from(*n) {
                    Ok(p) => ranges.push(PortRange { lo: p, hi: p }),
                    Err(_) => self.out_of_range(leaf, Code::PortRange, "port", *n, 65535),
                },
                ExprKind::Range(lo, hi) => {
                    if self.leaf_ok(leaf)
                        && let (Ok(lo), Ok(hi)) = (u16::try_from(*lo), u16::try_from(*hi))
                    {
                        ranges.push(PortRange { lo, hi });
                    }
                }
                _ => self.wrong_kind(
                    leaf,
                    "a port",
                    Some("ports are written `80`, `1024-65535`, `{ 80, 443 }` or `$const`".into()),
                ),
            }
        }
        if flat.leaves.is_empty() && flat.complete {
            self.empty_set(expr.span, "ports");
        }
        Some(PortMatch {
            negated: flat.negated.is_some(),
            ranges: normalize_ranges(ranges),
        })
    }

    /// `type T [code C]` for the ICMP of `family`. `None` for `type any`.
    fn icmp_types(
        &mut self,
        ty: &'a ast::Expr,
        code: Option<&'a ast::Expr>,
        family: Family,
    ) -> Option<Vec<IcmpMatch>> {
        let keyword = names::icmp_keyword(family);
        let flat = self.flatten(ty);
        self.reject_negation(flat.negated, "ICMP types");
        let mut types = BTreeSet::new();
        for leaf in &flat.leaves {
            match &leaf.expr.kind {
                ExprKind::Any => return None,
                ExprKind::Number(n) => match u8::try_from(*n) {
                    Ok(t) => {
                        types.insert(t);
                    }
                    Err(_) => self.out_of_range(leaf, Code::WrongKind, "ICMP type", *n, 255),
                },
                ExprKind::Name(name) => match names::icmp_type(family, name) {
                    Some(t) => {
                        types.insert(t);
                    }
                    None => self.unknown_icmp_type(leaf, name, family),
                },
                _ => self.wrong_kind(
                    leaf,
                    &format!("an `{keyword}` type"),
                    Some("an ICMP type is a name like `echo-request` or a number 0-255".into()),
                ),
            }
        }
        if flat.leaves.is_empty() && flat.complete {
            self.empty_set(ty.span, "ICMP types");
        }
        let codes: Vec<Option<u8>> = match code {
            None => vec![None],
            Some(code) => {
                let flat = self.flatten(code);
                self.reject_negation(flat.negated, "ICMP codes");
                let mut codes = Vec::new();
                for leaf in &flat.leaves {
                    match &leaf.expr.kind {
                        ExprKind::Number(n) => match u8::try_from(*n) {
                            Ok(c) => codes.push(Some(c)),
                            Err(_) => {
                                self.out_of_range(leaf, Code::WrongKind, "ICMP code", *n, 255)
                            }
                        },
                        _ => self.wrong_kind(
                            leaf,
                            "an ICMP code",
                            Some("an ICMP code is a number 0-255".into()),
                        ),
                    }
                }
                codes
            }
        };
        let mut matches: Vec<IcmpMatch> = types
            .iter()
            .flat_map(|&ty| codes.iter().map(move |&code| IcmpMatch { ty, code }))
            .collect();
        matches.sort_unstable();
        matches.dedup();
        Some(matches)
    }

    fn unknown_icmp_type(&mut self, leaf: &Leaf<'a>, name: &str, family: Family) {
        let keyword = names::icmp_keyword(family);
        let other = match family {
            Family::Ipv4 => Family::Ipv6,
            Family::Ipv6 => Family::Ipv4,
        };
        if names::icmp_type(other, name).is_some() {
            let other_keyword = names::icmp_keyword(other);
            let mut d = self.error(
                Code::WrongKind,
                format!("`{name}` is an `{other_keyword}` type, but this rule matches `{keyword}`"),
                leaf.use_span(),
                format!("not an `{keyword}` type"),
            );
            if leaf.via.is_some() {
                d = d.with_secondary(self.label(leaf.expr.span, "defined here"));
            }
            self.emit(d.with_help(format!(
                "use `{other_keyword}` for {} packets",
                family_name(other)
            )));
            return;
        }
        let candidates = names::icmp_types(family).iter().map(|t| t.0);
        let help = match names::suggest(name, candidates) {
            Some(s) => format!("did you mean `{s}`?"),
            None => {
                let all: Vec<&str> = names::icmp_types(family).iter().map(|t| t.0).collect();
                format!(
                    "`{keyword}` types are {}, or a number 0-255",
                    names::one_of(&all)
                )
            }
        };
        self.wrong_kind(leaf, &format!("an `{keyword}` type"), Some(help));
    }

    fn reject_negation(&mut self, negated: Option<Span>, what: &str) {
        if let Some(not) = negated {
            let d = self
                .error(
                    Code::WrongKind,
                    format!("{what} cannot be negated"),
                    not,
                    "negation here",
                )
                .with_help(format!(
                    "list the {what} to match; to exclude some, match them in a `deny` rule"
                ));
            self.emit(d);
        }
    }

    /// A single number at most `max` (`vlan N`).
    fn single_number(
        &mut self,
        expr: &'a ast::Expr,
        expected: &str,
        what: &str,
        max: u64,
    ) -> Option<u64> {
        let flat = self.flatten(expr);
        self.reject_negation(flat.negated, &format!("{what}s"));
        match flat.leaves.as_slice() {
            [leaf] => match leaf.expr.kind {
                ExprKind::Number(n) if n <= max => Some(n),
                ExprKind::Number(n) => {
                    self.out_of_range(leaf, Code::WrongKind, what, n, max);
                    None
                }
                _ => {
                    self.wrong_kind(
                        leaf,
                        expected,
                        Some(format!("a {what} is a number 0-{max}")),
                    );
                    None
                }
            },
            [] => None,
            [_, second, ..] => {
                let d = self
                    .error(
                        Code::WrongKind,
                        format!("expected a single {what}, found a set"),
                        second.use_span(),
                        format!("a rule matches one {what}"),
                    )
                    .with_help(format!("write one rule per {what}"));
                self.emit(d);
                None
            }
        }
    }

    /// `flags F[/MASK]`, pf style: `(flags & MASK) == F`; no mask means
    /// every flag is compared (an exact match).
    fn tcp_flags(&mut self, set: &ast::Ident, mask: Option<&ast::Ident>) -> Option<TcpFlagsMatch> {
        let set_bits = self.flag_letters(set)?;
        let mask_bits = match mask {
            Some(mask) => self.flag_letters(mask)?,
            None => names::ALL_FLAGS,
        };
        if let Some(mask_ident) = mask
            && set_bits & !mask_bits != 0
        {
            let missing = names::flag_letters(set_bits & !mask_bits);
            let d = self
                .error(
                    Code::WrongKind,
                    format!("`flags {}/{}` can never match", set.name, mask_ident.name),
                    set.span.to(mask_ident.span),
                    format!("`{missing}` must be set but is not in the mask"),
                )
                .with_help(format!(
                    "flags before `/` must also be in the mask: `flags {}/{}`",
                    set.name,
                    names::flag_letters(mask_bits | set_bits)
                ));
            self.emit(d);
            return None;
        }
        Some(TcpFlagsMatch {
            set: set_bits,
            mask: mask_bits,
        })
    }

    fn flag_letters(&mut self, ident: &ast::Ident) -> Option<u8> {
        match names::parse_flags(&ident.name) {
            Ok(bits) => Some(bits),
            Err((offset, letter)) => {
                let start = ident.span.start + offset;
                let span = Span::new(start, start + letter.len_utf8());
                let upper = letter.to_ascii_uppercase();
                let help = if upper != letter
                    && names::FLAG_LETTERS.iter().any(|(l, _)| *l == upper)
                {
                    format!("flag letters are upper case: `{upper}`")
                } else {
                    "TCP flags are F (FIN), S (SYN), R (RST), P (PSH), A (ACK), U (URG), E (ECE) and W (CWR)".to_string()
                };
                let d = self
                    .error(
                        Code::WrongKind,
                        format!("`{letter}` is not a TCP flag"),
                        span,
                        "unknown flag",
                    )
                    .with_help(help);
                self.emit(d);
                None
            }
        }
    }

    fn rate(&mut self, rule: &'a ast::Rule) -> Option<Rate> {
        let Some(spec) = &rule.rate else {
            if rule.action == Action::Limit {
                let d = self
                    .error(
                        Code::WrongKind,
                        "a `limit` rule needs a rate",
                        rule.action_span,
                        "no `rate` given",
                    )
                    .with_help("add one, for example `limit tcp to port 22 rate 10/s per src`");
                self.emit(d);
            }
            return None;
        };
        if rule.action == Action::Deny {
            let d = self
                .error(
                    Code::WrongKind,
                    "a `deny` rule cannot have a rate",
                    spec.span,
                    "rate on a deny",
                )
                .with_secondary(
                    self.label(rule.action_span, "this rule drops every matching packet"),
                )
                .with_help("to drop only what exceeds a rate, use `limit ... rate N/s`");
            self.emit(d);
            return None;
        }
        let mut ok = true;
        if spec.count == 0 {
            let d = self
                .error(
                    Code::RateZero,
                    "a rate of 0 lets nothing through",
                    spec.count_span,
                    "rate is 0",
                )
                .with_help("use `deny` to drop every matching packet, or a rate of at least 1");
            self.emit(d);
            ok = false;
        }
        if let Some((0, span)) = spec.burst {
            let d = self
                .error(Code::RateZero, "a burst of 0 lets nothing through", span, "burst is 0")
                .with_help("a burst is at least 1; leave it out for the default (the per-second rate, rounded up)");
            self.emit(d);
            ok = false;
        }
        let key = match &spec.per {
            None => RateKey::Src,
            Some(per) => match per.name.as_str() {
                "src" => RateKey::Src,
                "dst" => RateKey::Dst,
                "flow" => RateKey::Flow,
                "global" => RateKey::Global,
                other => {
                    let keys = ["src", "dst", "flow", "global"];
                    let help = match names::suggest(other, keys) {
                        Some(s) => format!("did you mean `per {s}`?"),
                        None => format!("`per` takes {}", names::one_of(&keys)),
                    };
                    let d = self
                        .error(
                            Code::WrongKind,
                            format!("`{other}` is not a rate key"),
                            per.span,
                            "unknown rate key",
                        )
                        .with_help(help);
                    self.emit(d);
                    return None;
                }
            },
        };
        if !ok {
            return None;
        }
        let unit_ns = unit_ns(spec.unit);
        Some(Rate {
            count: spec.count,
            unit_ns,
            interval_ns: (unit_ns / spec.count).max(1),
            burst: spec
                .burst
                .map_or_else(|| default_burst(spec.count, spec.unit), |(b, _)| b),
            key,
        })
    }

    fn modifiers(&mut self, rule: &'a ast::Rule) -> (Option<String>, bool) {
        let mut label: Option<&ast::StrLit> = None;
        let mut log: Option<Span> = None;
        for m in &rule.mods {
            let (first, span, name) = match m {
                ast::Modifier::Label(text) => {
                    let first = label.map(|l| l.span);
                    label.get_or_insert(text);
                    (first, text.span, "label")
                }
                ast::Modifier::Log(span) => {
                    let first = log;
                    log.get_or_insert(*span);
                    (first, *span, "log")
                }
            };
            if let Some(first) = first {
                let d = self
                    .error(
                        Code::DuplicateField,
                        format!("`{name}` is given twice in one rule"),
                        span,
                        format!("second `{name}`"),
                    )
                    .with_secondary(self.label(first, "first given here"))
                    .with_help(format!("keep one `{name}`"));
                self.emit(d);
            }
        }
        (label.map(|l| l.value.clone()), log.is_some())
    }

    /// The rule's source text with comments dropped and whitespace
    /// collapsed: stable across re-indentation and moves.
    fn rule_text(&self, span: Span) -> String {
        let text = self.source.get(span.range()).unwrap_or("");
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let code = line.split('#').next().unwrap_or("");
            for word in code.split_whitespace() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_burst_is_the_per_second_rate_rounded_up() {
        assert_eq!(default_burst(10, RateUnit::Second), 10);
        assert_eq!(default_burst(10, RateUnit::Minute), 1);
        assert_eq!(default_burst(90, RateUnit::Minute), 2);
        assert_eq!(default_burst(7200, RateUnit::Hour), 2);
        assert_eq!(default_burst(u64::MAX, RateUnit::Second), u64::MAX);
    }

    #[test]
    fn icmp_family_needs_exactly_one_icmp() {
        assert_eq!(
            icmp_family(Some(&BTreeSet::from([PROTO_ICMP]))),
            Some(Family::Ipv4)
        );
        assert_eq!(
            icmp_family(Some(&BTreeSet::from([PROTO_ICMPV6]))),
            Some(Family::Ipv6)
        );
        assert_eq!(
            icmp_family(Some(&BTreeSet::from([PROTO_ICMP, PROTO_ICMPV6]))),
            None
        );
        assert_eq!(icmp_family(None), None);
    }
}
