//! proptest generators of ASTs, shared by the round-trip and formatter tests.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use patronus_grammar::ast::*;
use proptest::prelude::*;

pub fn sp() -> Span {
    Span::default()
}

pub fn ident_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("web".to_string()),
        Just("admins".to_string()),
        Just("x_1".to_string()),
        Just("eth0".to_string()),
        "[a-z_][a-z0-9_-]{0,8}".prop_filter("not a keyword", |s| {
            let toks = patronus_grammar::lexer::lex(s).tokens;
            toks.len() == 1 && matches!(toks[0].1, patronus_grammar::lexer::Tok::Ident(_))
        }),
    ]
}

pub fn ident() -> impl Strategy<Value = Ident> {
    ident_name().prop_map(|name| Ident { name, span: sp() })
}

pub fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        (any::<u16>(), any::<u16>())
            .prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, a, 0, 0, 0, 0, b))),
        Just("::".parse().unwrap()),
        Just("::ffff:192.0.2.1".parse().unwrap()),
    ]
}

pub fn leaf_expr() -> impl Strategy<Value = ExprKind> {
    prop_oneof![
        Just(ExprKind::Any),
        any::<u64>().prop_map(ExprKind::Number),
        (0u64..70000, 0u64..70000).prop_map(|(a, b)| ExprKind::Range(a, b)),
        (ip(), proptest::option::of(0u32..200))
            .prop_map(|(ip, prefix)| ExprKind::Addr { ip, prefix }),
        prop_oneof![
            Just("tcp"),
            Just("udp"),
            Just("icmp"),
            Just("icmpv6"),
            Just("echo-request")
        ]
        .prop_map(|s| ExprKind::Name(s.to_string())),
        ident_name().prop_map(ExprKind::Name),
        ident_name().prop_map(ExprKind::ConstRef),
        ident_name().prop_map(ExprKind::TableRef),
    ]
}

pub fn expr() -> impl Strategy<Value = Expr> {
    leaf_expr()
        .prop_map(|kind| Expr { kind, span: sp() })
        .prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| Expr {
                    kind: ExprKind::Set(v),
                    span: sp()
                }),
                inner.prop_map(|e| Expr {
                    kind: ExprKind::Not(Box::new(e)),
                    span: sp()
                }),
            ]
        })
}

/// Packet `type` takes an atom (no `!`).
pub fn atom() -> impl Strategy<Value = Expr> {
    expr().prop_filter("atom", |e| !matches!(e.kind, ExprKind::Not(_)))
}

pub fn flags_ident() -> impl Strategy<Value = Ident> {
    "[FSRPAUEW]{1,4}".prop_map(|name| Ident { name, span: sp() })
}

pub fn match_field() -> impl Strategy<Value = MatchField> {
    let kind = prop_oneof![
        prop_oneof![
            Just(ProtoKeyword::Tcp),
            Just(ProtoKeyword::Udp),
            Just(ProtoKeyword::Icmp),
            Just(ProtoKeyword::Icmpv6)
        ]
        .prop_map(MatchFieldKind::Proto),
        expr().prop_map(MatchFieldKind::ProtoExpr),
        prop_oneof![Just(Family::Ip4), Just(Family::Ip6)].prop_map(MatchFieldKind::Family),
        (proptest::option::of(expr()), proptest::option::of(expr()))
            .prop_filter("one of the two", |(a, p)| a.is_some() || p.is_some())
            .prop_map(|(addrs, port)| MatchFieldKind::From { addrs, port }),
        (proptest::option::of(expr()), proptest::option::of(expr()))
            .prop_filter("one of the two", |(a, p)| a.is_some() || p.is_some())
            .prop_map(|(addrs, port)| MatchFieldKind::To { addrs, port }),
        (expr(), proptest::option::of(expr()))
            .prop_map(|(ty, code)| MatchFieldKind::IcmpType { ty, code }),
        (flags_ident(), proptest::option::of(flags_ident()))
            .prop_map(|(set, mask)| MatchFieldKind::Flags { set, mask }),
        expr().prop_map(MatchFieldKind::Vlan),
    ];
    kind.prop_map(|kind| MatchField { kind, span: sp() })
}

pub fn label_text() -> impl Strategy<Value = String> {
    "[^\\x00-\\x08\\x0b-\\x1f\\x7f]{0,12}"
}

pub fn rule() -> impl Strategy<Value = Rule> {
    let action = prop_oneof![Just(Action::Allow), Just(Action::Deny), Just(Action::Limit)];
    let rate = (
        any::<u64>(),
        prop_oneof![
            Just(RateUnit::Second),
            Just(RateUnit::Minute),
            Just(RateUnit::Hour)
        ],
        proptest::option::of(any::<u64>()),
        proptest::option::of(ident()),
    )
        .prop_map(|(count, unit, burst, per)| RateSpec {
            count,
            count_span: sp(),
            unit,
            burst: burst.map(|b| (b, sp())),
            per,
            span: sp(),
        });
    let modifier = prop_oneof![
        label_text().prop_map(|value| Modifier::Label(StrLit { value, span: sp() })),
        Just(Modifier::Log(sp())),
    ];
    (
        action,
        proptest::collection::vec(match_field(), 0..5),
        proptest::option::of(rate),
        proptest::collection::vec(modifier, 0..3),
    )
        .prop_map(|(action, fields, rate, mods)| Rule {
            action,
            action_span: sp(),
            fields,
            rate,
            mods,
            span: sp(),
        })
}

pub fn endpoint() -> impl Strategy<Value = Endpoint> {
    (ip(), proptest::option::of(any::<u64>())).prop_map(|(addr, port)| Endpoint {
        addr,
        port: port.map(|p| (p, sp())),
        span: sp(),
    })
}

pub fn packet() -> impl Strategy<Value = PacketSpec> {
    let proto = prop_oneof![
        prop_oneof![
            Just(ProtoKeyword::Tcp),
            Just(ProtoKeyword::Udp),
            Just(ProtoKeyword::Icmp),
            Just(ProtoKeyword::Icmpv6)
        ]
        .prop_map(PacketProto::Keyword),
        any::<u64>().prop_map(PacketProto::Number),
    ];
    (
        proto,
        endpoint(),
        endpoint(),
        proptest::option::of(flags_ident()),
        proptest::option::of((atom(), proptest::option::of(atom()))),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(proto, src, dst, flags, ty, vlan, repeat)| PacketSpec {
            proto,
            src,
            dst,
            flags,
            icmp_code: ty.as_ref().and_then(|t| t.1.clone()),
            icmp_type: ty.map(|t| t.0),
            vlan: vlan.map(|v| (v, sp())),
            repeat: repeat.map(|v| (v, sp())),
            span: sp(),
        })
}

pub fn item() -> impl Strategy<Value = Item> {
    let option_value = prop_oneof![
        prop_oneof![
            Just("allow"),
            Just("deny"),
            Just("pass"),
            Just("drop"),
            Just("on")
        ]
        .prop_map(|w| OptionValueKind::Word(w.to_string())),
        ident_name().prop_map(OptionValueKind::Word),
        any::<u64>().prop_map(OptionValueKind::Number),
        any::<u64>().prop_map(OptionValueKind::Duration),
    ];
    let option_entry =
        (ident(), proptest::option::of(ident()), option_value).prop_map(|(key, sub, kind)| {
            OptionEntry {
                key,
                sub,
                value: OptionValue { kind, span: sp() },
                span: sp(),
            }
        });
    let step = (
        prop_oneof![
            Just(StepKind::Expect(Verdict::Pass)),
            Just(StepKind::Expect(Verdict::Drop)),
            Just(StepKind::Out)
        ],
        packet(),
    )
        .prop_map(|(kind, packet)| TestStep {
            kind,
            packet,
            span: sp(),
        });
    prop_oneof![
        prop_oneof![ident_name(), label_text()].prop_map(|name| Item::Interface(InterfaceDecl {
            name: Ident { name, span: sp() },
            span: sp()
        })),
        (ident(), expr()).prop_map(|(name, value)| Item::Const(ConstDef {
            name,
            value,
            span: sp()
        })),
        (ident(), proptest::collection::vec(expr(), 0..4)).prop_map(|(name, items)| Item::Table(
            TableDef {
                name,
                source: TableSource::Inline(Expr {
                    kind: ExprKind::Set(items),
                    span: sp()
                }),
                span: sp(),
            }
        )),
        (ident(), label_text()).prop_map(|(name, path)| Item::Table(TableDef {
            name,
            source: TableSource::File(StrLit {
                value: path,
                span: sp()
            }),
            span: sp(),
        })),
        proptest::collection::vec(option_entry, 0..4).prop_map(|entries| Item::Options(
            OptionsBlock {
                entries,
                span: sp()
            }
        )),
        rule().prop_map(Item::Rule),
        (label_text(), proptest::collection::vec(step, 0..4)).prop_map(|(name, steps)| Item::Test(
            TestBlock {
                name: StrLit {
                    value: name,
                    span: sp()
                },
                steps,
                span: sp(),
            }
        )),
    ]
}

pub fn policy() -> impl Strategy<Value = Policy> {
    proptest::collection::vec(item(), 0..8).prop_map(|items| Policy {
        items,
        comments: Vec::new(),
    })
}
