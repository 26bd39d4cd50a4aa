//! Policy tests: each step's packet becomes a concrete [`typed::Packet`].
//! Defaults: TCP flags `S`, ICMP type echo request (8, or 128 for ICMPv6)
//! code 0, ports 0 when not given, `repeat 1`.

use patronus_grammar::ast::{self, ExprKind, PacketProto, ProtoKeyword, Span, StepKind};

use super::Checker;
use super::names;
use crate::codes::Code;
use crate::typed::{self, Family, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, tcp_flags};

impl<'a> Checker<'a> {
    pub fn check_tests(&mut self, policy: &'a ast::Policy) -> Vec<typed::Test> {
        let mut tests = Vec::new();
        for item in &policy.items {
            let ast::Item::Test(block) = item else {
                continue;
            };
            let steps = block
                .steps
                .iter()
                .filter_map(|step| {
                    let packet = self.packet(&step.packet)?;
                    Some(typed::TestStep {
                        expect: match step.kind {
                            StepKind::Expect(v) => Some(v),
                            StepKind::Out => None,
                        },
                        packet,
                        span: step.span,
                    })
                })
                .collect();
            tests.push(typed::Test {
                name: block.name.value.clone(),
                span: block.span,
                steps,
            });
        }
        tests
    }

    fn bad_packet(
        &mut self,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        let d = self
            .error(Code::BadPacket, message, span, label)
            .with_help(help);
        self.emit(d);
    }

    /// Builds a test packet; `None` (and diagnostics) if it cannot be built.
    pub fn packet(&mut self, spec: &'a ast::PacketSpec) -> Option<typed::Packet> {
        let errors_before = self.error_count();
        let proto = match spec.proto {
            PacketProto::Keyword(ProtoKeyword::Tcp) => PROTO_TCP,
            PacketProto::Keyword(ProtoKeyword::Udp) => PROTO_UDP,
            PacketProto::Keyword(ProtoKeyword::Icmp) => PROTO_ICMP,
            PacketProto::Keyword(ProtoKeyword::Icmpv6) => PROTO_ICMPV6,
            PacketProto::Number(n) => match u8::try_from(n) {
                Ok(p) => p,
                Err(_) => {
                    self.bad_packet(
                        format!("protocol number `{n}` is out of range"),
                        spec.span,
                        "protocol numbers are 0-255",
                        "use a protocol number 0-255, or `tcp`, `udp`, `icmp`, `icmpv6`",
                    );
                    return None;
                }
            },
        };
        let family = Family::of(spec.src.addr);
        if Family::of(spec.dst.addr) != family {
            let d = self
                .error(
                    Code::BadPacket,
                    "a packet's source and destination must be of one address family",
                    spec.dst.span,
                    format!("this is {}", family_name(Family::of(spec.dst.addr))),
                )
                .with_secondary(
                    self.label(spec.src.span, format!("this is {}", family_name(family))),
                )
                .with_help("use two IPv4 or two IPv6 addresses");
            let unbracketed = [&spec.src, &spec.dst].into_iter().any(|e| {
                e.addr.is_ipv6()
                    && e.port.is_none()
                    && self
                        .source
                        .get(e.span.range())
                        .is_some_and(|t| !t.starts_with('['))
            });
            let d = if unbracketed && (proto == PROTO_TCP || proto == PROTO_UDP) {
                d.with_note(
                    "an IPv6 address with a port is written in brackets: `[2001:db8::1]:443`",
                )
            } else {
                d
            };
            self.emit(d);
        }
        let icmp_family = match proto {
            PROTO_ICMP => Some(Family::Ipv4),
            PROTO_ICMPV6 => Some(Family::Ipv6),
            _ => None,
        };
        if let Some(needed) = icmp_family
            && needed != family
        {
            let keyword = names::icmp_keyword(needed);
            let right = names::icmp_keyword(family);
            self.bad_packet(
                format!(
                    "`{keyword}` is ICMP for {}, but the addresses are {}",
                    family_name(needed),
                    family_name(family)
                ),
                spec.src.span.to(spec.dst.span),
                format!("{} addresses", family_name(family)),
                format!("use `{right}` for {} packets", family_name(family)),
            );
        }

        let has_ports = proto == PROTO_TCP || proto == PROTO_UDP;
        let src_port = self.packet_port(spec.src.port, has_ports, proto);
        let dst_port = self.packet_port(spec.dst.port, has_ports, proto);

        let tcp_flags = match &spec.flags {
            None if proto == PROTO_TCP => tcp_flags::SYN,
            None => 0,
            Some(flags) if proto != PROTO_TCP => {
                self.bad_packet(
                    "only TCP packets have flags",
                    flags.span,
                    "flags on a packet that is not TCP",
                    "remove `flags`, or make the packet `tcp`",
                );
                0
            }
            Some(flags) => match names::parse_flags(&flags.name) {
                Ok(bits) => bits,
                Err((offset, letter)) => {
                    let start = flags.span.start + offset;
                    self.bad_packet(
                        format!("`{letter}` is not a TCP flag"),
                        Span::new(start, start + letter.len_utf8()),
                        "unknown flag",
                        "TCP flags are F (FIN), S (SYN), R (RST), P (PSH), A (ACK), U (URG), E (ECE) and W (CWR)",
                    );
                    0
                }
            },
        };

        let (icmp_type, icmp_code) = match icmp_family {
            Some(icmp) => {
                let ty = spec
                    .icmp_type
                    .as_ref()
                    .map_or(Some(names::echo_request(icmp)), |t| {
                        self.packet_icmp_type(t, icmp)
                    });
                let code = spec
                    .icmp_code
                    .as_ref()
                    .map_or(Some(0), |c| self.packet_icmp_code(c));
                (ty.unwrap_or(0), code.unwrap_or(0))
            }
            None => {
                if let Some(t) = &spec.icmp_type {
                    let span = spec
                        .icmp_code
                        .as_ref()
                        .map_or(t.span, |c| t.span.to(c.span));
                    self.bad_packet(
                        "only ICMP packets have a type and code",
                        span,
                        "type on a packet that is not ICMP",
                        "remove `type`, or make the packet `icmp` or `icmpv6`",
                    );
                }
                (0, 0)
            }
        };

        let vlan = match spec.vlan {
            Some((v, span)) if v > 4095 => {
                self.bad_packet(
                    format!("VLAN id `{v}` is out of range"),
                    span,
                    "VLAN ids are 0-4095",
                    "use a VLAN id from 0 to 4095",
                );
                None
            }
            Some((v, _)) => Some(v as u16),
            None => None,
        };
        let repeat = match spec.repeat {
            Some((0, span)) => {
                self.bad_packet(
                    "`repeat 0` sends nothing",
                    span,
                    "repeat count is 0",
                    "repeat at least once, or remove the step",
                );
                1
            }
            Some((n, _)) => n,
            None => 1,
        };

        (self.error_count() == errors_before).then_some(typed::Packet {
            proto,
            src: spec.src.addr,
            dst: spec.dst.addr,
            src_port,
            dst_port,
            tcp_flags,
            icmp_type,
            icmp_code,
            vlan,
            repeat,
        })
    }

    fn packet_port(&mut self, port: Option<(u64, Span)>, has_ports: bool, proto: u8) -> u16 {
        let Some((n, span)) = port else { return 0 };
        if !has_ports {
            let what = match names::PROTOCOLS.iter().find(|(_, p)| *p == proto) {
                Some((name, _)) => format!("`{name}`"),
                None => format!("protocol {proto}"),
            };
            self.bad_packet(
                format!("{what} packets have no ports"),
                span,
                "port on a packet without ports",
                "only `tcp` and `udp` packets have ports: remove the `:PORT`",
            );
            return 0;
        }
        match u16::try_from(n) {
            Ok(p) => p,
            Err(_) => {
                self.bad_packet(
                    format!("port `{n}` is out of range"),
                    span,
                    "ports are 0-65535",
                    "use a port from 0 to 65535",
                );
                0
            }
        }
    }

    fn packet_icmp_type(&mut self, expr: &'a ast::Expr, family: Family) -> Option<u8> {
        let keyword = names::icmp_keyword(family);
        let flat = self.flatten(expr);
        match flat.leaves.as_slice() {
            [leaf] if flat.negated.is_none() => match &leaf.expr.kind {
                ExprKind::Number(n) => match u8::try_from(*n) {
                    Ok(t) => Some(t),
                    Err(_) => {
                        self.bad_packet(
                            format!("ICMP type `{n}` is out of range"),
                            leaf.use_span(),
                            "ICMP types are 0-255",
                            "use a type from 0 to 255, or a name like `echo-request`",
                        );
                        None
                    }
                },
                ExprKind::Name(name) => match names::icmp_type(family, name) {
                    Some(t) => Some(t),
                    None => {
                        let candidates = names::icmp_types(family).iter().map(|t| t.0);
                        let help = match names::suggest(name, candidates) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => {
                                let all: Vec<&str> =
                                    names::icmp_types(family).iter().map(|t| t.0).collect();
                                format!(
                                    "`{keyword}` types are {}, or a number 0-255",
                                    names::one_of(&all)
                                )
                            }
                        };
                        self.bad_packet(
                            format!("`{name}` is not an `{keyword}` type"),
                            leaf.use_span(),
                            "unknown ICMP type",
                            help,
                        );
                        None
                    }
                },
                _ => {
                    self.bad_packet(
                        "a test packet's ICMP type is one name or number",
                        leaf.use_span(),
                        "not an ICMP type",
                        "write `type echo-request` or `type 8`",
                    );
                    None
                }
            },
            _ => {
                if flat.complete {
                    self.bad_packet(
                        "a test packet has exactly one ICMP type",
                        expr.span,
                        "not a single ICMP type",
                        "write `type echo-request` or `type 8`",
                    );
                }
                None
            }
        }
    }

    fn packet_icmp_code(&mut self, expr: &'a ast::Expr) -> Option<u8> {
        let flat = self.flatten(expr);
        if let ([leaf], None) = (flat.leaves.as_slice(), flat.negated)
            && let ExprKind::Number(n) = leaf.expr.kind
            && let Ok(code) = u8::try_from(n)
        {
            return Some(code);
        }
        if flat.complete {
            self.bad_packet(
                "a test packet's ICMP code is one number 0-255",
                expr.span,
                "not an ICMP code",
                "write `code 0`",
            );
        }
        None
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}
