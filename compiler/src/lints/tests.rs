//! Lint tests on hand-built typed policies: the set algebra, then each
//! rule lint on small policies where the right answer is clear.

use std::collections::BTreeSet;

use patronus_grammar::ast::{self, Action, Span, Verdict};

use super::cover::{ValueSet, prefix_interval, union_covers};
use super::*;
use crate::codes::Code;
use crate::net::{PortRange, Prefix};
use crate::typed::{
    AddrMatch, AddrSet, Family, IcmpMatch, Match, Options, PortMatch, Rate, RateKey, RuleId, Table,
    TableId, TcpFlagsMatch, tcp_flags,
};

fn pfx(text: &str) -> Prefix {
    let (addr, len) = text
        .split_once('/')
        .unwrap_or((text, if text.contains(':') { "128" } else { "32" }));
    Prefix::new(addr.parse().unwrap(), len.parse().unwrap()).unwrap()
}

fn addrs(list: &[&str]) -> Option<AddrMatch> {
    Some(AddrMatch {
        negated: false,
        set: AddrSet {
            prefixes: list.iter().map(|p| pfx(p)).collect(),
            tables: Vec::new(),
        },
    })
}

fn not_addrs(list: &[&str]) -> Option<AddrMatch> {
    addrs(list).map(|m| AddrMatch { negated: true, ..m })
}

fn table_ref(id: u32) -> Option<AddrMatch> {
    Some(AddrMatch {
        negated: false,
        set: AddrSet {
            prefixes: Vec::new(),
            tables: vec![TableId(id)],
        },
    })
}

fn ports(list: &[(u16, u16)]) -> Option<PortMatch> {
    Some(PortMatch {
        negated: false,
        ranges: crate::net::normalize_ranges(
            list.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
        ),
    })
}

fn protos(list: &[u8]) -> Option<BTreeSet<u8>> {
    Some(list.iter().copied().collect())
}

fn tcp() -> Match {
    Match {
        protos: protos(&[6]),
        ..Match::default()
    }
}

fn udp() -> Match {
    Match {
        protos: protos(&[17]),
        ..Match::default()
    }
}

const RATE: Rate = Rate {
    count: 10,
    unit_ns: 1_000_000_000,
    interval_ns: 100_000_000,
    burst: 10,
    key: RateKey::Src,
};

/// A rule; each gets its own one-line span (line = index) so labels differ.
fn rule(action: Action, matcher: Match) -> typed::Rule {
    typed::Rule {
        id: RuleId(0),
        action,
        matcher,
        rate: (action == Action::Limit).then_some(RATE),
        label: None,
        log: false,
        span: Span::default(),
        identity: String::new(),
    }
}

fn allow(m: Match) -> typed::Rule {
    rule(Action::Allow, m)
}

fn deny(m: Match) -> typed::Rule {
    rule(Action::Deny, m)
}

fn limit(m: Match) -> typed::Rule {
    rule(Action::Limit, m)
}

fn policy_with(rules: Vec<typed::Rule>, tables: Vec<Table>, options: Options) -> typed::Policy {
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = RuleId(i as u32);
            r.span = Span::new(i * 10, i * 10 + 5);
            r
        })
        .collect();
    typed::Policy {
        file: FileId(0),
        interface: None,
        options,
        rules,
        tables,
        tests: Vec::new(),
    }
}

fn policy(rules: Vec<typed::Rule>) -> typed::Policy {
    policy_with(rules, Vec::new(), Options::default())
}

fn lint_with(
    check: fn(&LintContext) -> Vec<Diagnostic>,
    policy: &typed::Policy,
    ast: &ast::Policy,
) -> Vec<Diagnostic> {
    let mut files = Files::new();
    files.add("test.pf", "");
    let ctx = LintContext {
        files: &files,
        file: FileId(0),
        ast,
        policy,
    };
    check(&ctx)
}

/// `(code, primary rule index, secondary rule indexes)` per diagnostic.
fn lint(
    check: fn(&LintContext) -> Vec<Diagnostic>,
    policy: &typed::Policy,
) -> Vec<(Code, usize, Vec<usize>)> {
    lint_with(check, policy, &ast::Policy::default())
        .into_iter()
        .map(|d| {
            (
                d.code,
                d.primary.span.start / 10,
                d.secondary.iter().map(|l| l.span.start / 10).collect(),
            )
        })
        .collect()
}

fn shadowed(rules: Vec<typed::Rule>) -> Vec<(Code, usize, Vec<usize>)> {
    lint(shadowed_rule::check, &policy(rules))
}

#[test]
fn value_sets() {
    let s = ValueSet::from_intervals(vec![(5, 9), (0, 2), (3, 4), (20, 30)]);
    assert_eq!(s.intervals(), &[(0, 9), (20, 30)]);
    assert_eq!(s.complement(40).intervals(), &[(10, 19), (31, 40)]);
    assert_eq!(s.complement(25).intervals(), &[(10, 19)]);
    assert!(s.is_superset(&ValueSet::from_intervals(vec![(1, 2), (21, 30)])));
    assert!(!s.is_superset(&ValueSet::from_intervals(vec![(8, 10)])));
    assert!(s.intersects(&ValueSet::from_intervals(vec![(9, 19)])));
    assert!(!s.intersects(&ValueSet::from_intervals(vec![(10, 19), (31, 99)])));
    assert_eq!(
        s.subtract(&ValueSet::single(5)).intervals(),
        &[(0, 4), (6, 9), (20, 30)]
    );
    assert_eq!(
        s.subtract(&ValueSet::from_intervals(vec![(0, 0), (9, 22), (30, 99)]))
            .intervals(),
        &[(1, 8), (23, 29)]
    );
    assert!(s.subtract(&ValueSet::full(99)).is_empty());
    assert_eq!(s.intersect(&ValueSet::full(99)), s);
    assert_eq!(
        s.union(&ValueSet::from_intervals(vec![(10, 19)]))
            .intervals(),
        &[(0, 30)]
    );
    assert_eq!(
        s.intersect(&ValueSet::from_intervals(vec![(8, 22)]))
            .intervals(),
        &[(8, 9), (20, 22)]
    );
    // The top of the IPv6 space does not overflow.
    let top = ValueSet::from_intervals(vec![(u128::MAX - 1, u128::MAX), (0, 0)]);
    assert_eq!(top.complement(u128::MAX).intervals(), &[(1, u128::MAX - 2)]);
    assert!(ValueSet::full(u128::MAX).complement(u128::MAX).is_empty());
}

#[test]
fn prefixes_as_intervals() {
    assert_eq!(
        prefix_interval(&pfx("10.0.0.0/8")),
        (0x0a00_0000, 0x0aff_ffff)
    );
    assert_eq!(prefix_interval(&pfx("0.0.0.0/0")), (0, 0xffff_ffff));
    assert_eq!(prefix_interval(&pfx("::/0")), (0, u128::MAX));
    assert_eq!(
        prefix_interval(&pfx("2001:db8::1")).0,
        prefix_interval(&pfx("2001:db8::1")).1
    );
}

#[test]
fn one_deny_shadows_an_allow_whatever_the_order() {
    let a = allow(Match {
        src: addrs(&["10.1.0.0/16"]),
        dst_ports: ports(&[(22, 22)]),
        ..tcp()
    });
    let d = deny(Match {
        src: addrs(&["10.0.0.0/8"]),
        ..Match::default()
    });
    assert_eq!(
        shadowed(vec![a.clone(), d.clone()]),
        vec![(Code::ShadowedRule, 0, vec![1])]
    );
    assert_eq!(shadowed(vec![d, a]), vec![(Code::ShadowedRule, 1, vec![0])]);
}

#[test]
fn partial_cover_is_not_shadowing() {
    let a = allow(Match {
        src: addrs(&["10.0.0.0/8"]),
        ..tcp()
    });
    let d = deny(Match {
        src: addrs(&["10.0.0.0/9"]),
        ..tcp()
    });
    // Same addresses, but the deny is only for UDP.
    let d2 = deny(Match {
        src: addrs(&["10.0.0.0/8"]),
        ..udp()
    });
    assert!(shadowed(vec![a, d, d2]).is_empty());
}

#[test]
fn two_denies_together_shadow_an_allow() {
    let a = allow(Match {
        src: addrs(&["10.0.0.0/8"]),
        dst_ports: ports(&[(80, 80)]),
        ..tcp()
    });
    let low = deny(Match {
        src: addrs(&["10.0.0.0/9"]),
        ..Match::default()
    });
    let high = deny(Match {
        src: addrs(&["10.128.0.0/9"]),
        ..Match::default()
    });
    assert_eq!(
        shadowed(vec![a.clone(), low.clone(), high]),
        vec![(Code::ShadowedRule, 0, vec![1, 2])]
    );
    // One /9 short: 10.192.0.0/10 gets through.
    let part = deny(Match {
        src: addrs(&["10.128.0.0/10"]),
        ..Match::default()
    });
    assert!(shadowed(vec![a, low, part]).is_empty());
}

#[test]
fn port_ranges_union() {
    let a = allow(Match {
        dst_ports: ports(&[(80, 2000)]),
        ..tcp()
    });
    let d1 = deny(Match {
        dst_ports: ports(&[(1, 1000)]),
        ..tcp()
    });
    let d2 = deny(Match {
        dst_ports: ports(&[(1001, 65535)]),
        ..Match::default()
    });
    assert_eq!(shadowed(vec![a.clone(), d1.clone(), d2]).len(), 1);
    let d3 = deny(Match {
        dst_ports: ports(&[(1002, 65535)]),
        ..tcp()
    });
    assert!(shadowed(vec![a, d1, d3]).is_empty());
}

#[test]
fn two_dimensional_union_needs_splitting() {
    let a = allow(Match {
        src: addrs(&["10.0.0.0/7"]),
        dst_ports: ports(&[(22, 22), (80, 80)]),
        ..tcp()
    });
    let d1 = deny(Match {
        src: addrs(&["10.0.0.0/8"]),
        ..Match::default()
    });
    let d2 = deny(Match {
        src: addrs(&["11.0.0.0/8"]),
        dst_ports: ports(&[(22, 22)]),
        ..tcp()
    });
    let d3 = deny(Match {
        src: addrs(&["11.0.0.0/8"]),
        dst_ports: ports(&[(80, 80)]),
        ..tcp()
    });
    assert_eq!(
        shadowed(vec![a.clone(), d1.clone(), d2.clone(), d3]),
        vec![(Code::ShadowedRule, 0, vec![1, 2, 3])]
    );
    assert!(shadowed(vec![a, d1, d2]).is_empty());
}

#[test]
fn negated_addresses() {
    // Everything outside 10/8 (both families) is denied.
    let d = deny(Match {
        src: not_addrs(&["10.0.0.0/8"]),
        ..Match::default()
    });
    let outside = allow(Match {
        src: addrs(&["192.168.0.0/16", "2001:db8::/32"]),
        ..tcp()
    });
    let inside = allow(Match {
        src: addrs(&["10.1.0.0/16"]),
        ..tcp()
    });
    let any6 = allow(Match {
        family: Some(Family::Ipv6),
        ..udp()
    });
    assert_eq!(
        shadowed(vec![d, outside, inside, any6]),
        vec![
            (Code::ShadowedRule, 1, vec![0]),
            (Code::ShadowedRule, 3, vec![0])
        ]
    );
    // An allow of everything but 10/8 is covered by a deny of 0/0 minus 10/8 plus ip6.
    let a = allow(Match {
        src: not_addrs(&["10.0.0.0/8"]),
        ..tcp()
    });
    let d4 = deny(Match {
        src: addrs(&[
            "0.0.0.0/5",
            "8.0.0.0/7",
            "11.0.0.0/8",
            "12.0.0.0/6",
            "16.0.0.0/4",
            "32.0.0.0/3",
            "64.0.0.0/2",
            "128.0.0.0/1",
        ]),
        ..Match::default()
    });
    let d6 = deny(Match {
        family: Some(Family::Ipv6),
        ..Match::default()
    });
    assert_eq!(shadowed(vec![a.clone(), d4.clone(), d6.clone()]).len(), 1);
    assert!(shadowed(vec![a.clone(), d4]).is_empty());
    // A hole (9.0.0.0/8) is enough to let packets through.
    let holed = deny(Match {
        src: addrs(&[
            "0.0.0.0/5",
            "8.0.0.0/8",
            "11.0.0.0/8",
            "12.0.0.0/6",
            "16.0.0.0/4",
            "32.0.0.0/3",
            "64.0.0.0/2",
            "128.0.0.0/1",
        ]),
        ..Match::default()
    });
    assert!(shadowed(vec![a, holed, d6]).is_empty());
}

#[test]
fn tables_are_sets() {
    let table = Table {
        name: "bl".into(),
        span: Span::default(),
        prefixes: vec![pfx("192.0.2.0/24"), pfx("198.51.100.0/24")],
        source_file: None,
    };
    let d = deny(Match {
        src: table_ref(0),
        ..Match::default()
    });
    let inside = allow(Match {
        src: addrs(&["192.0.2.0/25", "198.51.100.7"]),
        ..Match::default()
    });
    let wider = allow(Match {
        src: addrs(&["192.0.2.0/23"]),
        ..Match::default()
    });
    let p = policy_with(vec![d, inside, wider], vec![table], Options::default());
    assert_eq!(
        lint(shadowed_rule::check, &p),
        vec![(Code::ShadowedRule, 1, vec![0])]
    );
}

#[test]
fn protocol_fields() {
    let icmp = |types: &[u8]| Match {
        family: Some(Family::Ipv4),
        protos: protos(&[1]),
        icmp: Some(
            types
                .iter()
                .map(|&ty| IcmpMatch { ty, code: None })
                .collect(),
        ),
        ..Match::default()
    };
    let deny_icmp = deny(Match {
        protos: protos(&[1]),
        ..Match::default()
    });
    assert_eq!(shadowed(vec![allow(icmp(&[8])), deny_icmp]).len(), 1);
    assert_eq!(
        shadowed(vec![allow(icmp(&[8])), deny(icmp(&[8, 0]))]).len(),
        1
    );
    assert!(shadowed(vec![allow(icmp(&[8, 3])), deny(icmp(&[8]))]).is_empty());

    let syn = Some(TcpFlagsMatch {
        set: tcp_flags::SYN,
        mask: tcp_flags::SYN | tcp_flags::ACK,
    });
    let deny_syn = deny(Match {
        tcp_flags: syn,
        ..tcp()
    });
    let allow_syn22 = allow(Match {
        tcp_flags: syn,
        dst_ports: ports(&[(22, 22)]),
        ..tcp()
    });
    let allow22 = allow(Match {
        dst_ports: ports(&[(22, 22)]),
        ..tcp()
    });
    assert_eq!(
        shadowed(vec![deny_syn.clone(), allow_syn22, allow22]),
        vec![(Code::ShadowedRule, 1, vec![0])]
    );

    let deny_vlan = deny(Match {
        vlan: Some(10),
        ..Match::default()
    });
    let vlan10 = allow(Match {
        vlan: Some(10),
        ..tcp()
    });
    let untagged = allow(tcp());
    assert_eq!(
        shadowed(vec![deny_vlan, vlan10, untagged]),
        vec![(Code::ShadowedRule, 1, vec![0])]
    );

    // Ports exist only for TCP and UDP: a port deny cannot cover GRE.
    let deny22 = deny(Match {
        dst_ports: ports(&[(22, 22)]),
        ..Match::default()
    });
    let gre = allow(Match {
        protos: protos(&[47]),
        ..Match::default()
    });
    let any22 = allow(Match {
        dst_ports: ports(&[(22, 22)]),
        ..Match::default()
    });
    assert_eq!(
        shadowed(vec![deny22, gre, any22]),
        vec![(Code::ShadowedRule, 2, vec![0])]
    );
}

#[test]
fn limits_can_be_shadowed() {
    let l = limit(Match {
        dst_ports: ports(&[(53, 53)]),
        ..udp()
    });
    let d = deny(udp());
    let r = shadowed(vec![l, d]);
    assert_eq!(r, vec![(Code::ShadowedRule, 0, vec![1])]);
}

fn duplicates(rules: Vec<typed::Rule>) -> Vec<(Code, usize, Vec<usize>)> {
    lint(duplicate_rule::check, &policy(rules))
}

#[test]
fn duplicate_and_redundant_rules() {
    let web = Match {
        dst_ports: ports(&[(80, 80), (443, 443)]),
        ..tcp()
    };
    let http = Match {
        dst_ports: ports(&[(80, 80)]),
        ..tcp()
    };
    // Identical: the later one is reported.
    assert_eq!(
        duplicates(vec![allow(web.clone()), allow(web.clone())]),
        vec![(Code::DuplicateRule, 1, vec![0])]
    );
    // Strictly covered, whatever the order.
    assert_eq!(
        duplicates(vec![allow(http.clone()), allow(web.clone())]),
        vec![(Code::DuplicateRule, 0, vec![1])]
    );
    // Different actions never make each other redundant.
    assert!(duplicates(vec![allow(http.clone()), limit(web.clone())]).is_empty());
    // A rule that logs is not redundant, unless its twin logs too.
    let mut logged = allow(http.clone());
    logged.log = true;
    assert!(duplicates(vec![logged.clone(), allow(web.clone())]).is_empty());
    assert_eq!(
        duplicates(vec![logged.clone(), logged.clone()]),
        vec![(Code::DuplicateRule, 1, vec![0])]
    );
    // ... and the plain twin of a logging rule is.
    assert_eq!(
        duplicates(vec![logged, allow(http.clone())]),
        vec![(Code::DuplicateRule, 1, vec![0])]
    );
}

#[test]
fn rates_and_redundancy() {
    let ssh = Match {
        dst_ports: ports(&[(22, 22)]),
        ..tcp()
    };
    let mut limited = allow(ssh.clone());
    limited.rate = Some(RATE);
    // The plain allow adds nothing: the packets already pass the rate.
    assert_eq!(
        duplicates(vec![limited.clone(), allow(ssh.clone())]),
        vec![(Code::DuplicateRule, 1, vec![0])]
    );
    // A rated allow under a plain one still limits.
    let mut narrower = limited.clone();
    narrower.matcher.src = addrs(&["10.0.0.0/8"]);
    assert!(duplicates(vec![allow(ssh.clone()), narrower.clone()]).is_empty());
    // Same rate, strictly smaller match: its own bucket may still drop.
    assert!(duplicates(vec![limited.clone(), narrower]).is_empty());
    // Identical rated rules and limits are duplicates; other rates are not.
    assert_eq!(duplicates(vec![limited.clone(), limited.clone()]).len(), 1);
    assert_eq!(
        duplicates(vec![limit(ssh.clone()), limit(ssh.clone())]).len(),
        1
    );
    let mut other_rate = limit(ssh.clone());
    other_rate.rate = Some(Rate { burst: 20, ..RATE });
    assert!(duplicates(vec![limit(ssh.clone()), other_rate]).is_empty());
    // Denies.
    let d8 = deny(Match {
        src: addrs(&["10.0.0.0/8"]),
        ..Match::default()
    });
    let d16 = deny(Match {
        src: addrs(&["10.1.0.0/16"]),
        ..tcp()
    });
    assert_eq!(
        duplicates(vec![d16, d8]),
        vec![(Code::DuplicateRule, 0, vec![1])]
    );
}

#[test]
fn shadowed_rules_are_not_also_duplicates() {
    let d = deny(tcp());
    let a = allow(Match {
        dst_ports: ports(&[(80, 80)]),
        ..tcp()
    });
    assert!(duplicates(vec![d, a.clone(), a]).is_empty());
}

#[test]
fn unreachable_limits() {
    let dns = Match {
        dst_ports: ports(&[(53, 53)]),
        ..udp()
    };
    let web = allow(Match {
        dst_ports: ports(&[(80, 80)]),
        ..tcp()
    });
    let p = policy(vec![limit(dns.clone()), web.clone()]);
    assert_eq!(
        lint(unreachable_limit::check, &p),
        vec![(Code::UnreachableLimit, 0, vec![])]
    );
    // An allow sharing some packets makes it reachable.
    let some_dns = allow(Match {
        src: addrs(&["10.0.0.0/8"]),
        ..udp()
    });
    let p = policy(vec![limit(dns.clone()), web.clone(), some_dns]);
    assert!(lint(unreachable_limit::check, &p).is_empty());
    // With default allow every limit can matter.
    let options = Options {
        default: Verdict::Pass,
        ..Options::default()
    };
    let p = policy_with(vec![limit(dns.clone()), web.clone()], Vec::new(), options);
    assert!(lint(unreachable_limit::check, &p).is_empty());
    // A later limit sharing packets is charged only while this one has
    // tokens: this limit matters to it.
    let all_udp = limit(udp());
    let p = policy(vec![limit(dns.clone()), all_udp.clone(), web.clone()]);
    assert_eq!(
        lint(unreachable_limit::check, &p),
        vec![(Code::UnreachableLimit, 1, vec![])]
    );
    let p = policy(vec![all_udp, limit(dns), web]);
    assert_eq!(
        lint(unreachable_limit::check, &p),
        vec![(Code::UnreachableLimit, 1, vec![])]
    );
}

fn options_ast(entries: &[(&str, &str)]) -> ast::Policy {
    let entries = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let span = Span::new(1000 + i * 10, 1005 + i * 10);
            ast::OptionEntry {
                key: ast::Ident {
                    name: key.to_string(),
                    span,
                },
                sub: None,
                value: ast::OptionValue {
                    kind: ast::OptionValueKind::Word(value.to_string()),
                    span,
                },
                span,
            }
        })
        .collect();
    ast::Policy {
        items: vec![ast::Item::Options(ast::OptionsBlock {
            entries,
            span: Span::new(990, 2000),
        })],
        comments: Vec::new(),
    }
}

#[test]
fn ndp_dropped_while_ipv6_passes() {
    let options = Options {
        ndp_pass: false,
        ..Options::default()
    };
    let ast = options_ast(&[("ndp", "drop")]);
    let web = allow(Match {
        dst_ports: ports(&[(443, 443)]),
        ..tcp()
    });
    let p = policy_with(vec![web.clone()], Vec::new(), options.clone());
    let d = lint_with(ndp_dropped::check, &p, &ast);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].primary.span, Span::new(1000, 1005));
    assert_eq!(d[0].secondary[0].span, p.rules[0].span);
    // IPv4 only: nothing to warn about.
    let web4 = allow(Match {
        family: Some(Family::Ipv4),
        ..web.matcher.clone()
    });
    let p = policy_with(vec![web4], Vec::new(), options.clone());
    assert!(lint_with(ndp_dropped::check, &p, &ast).is_empty());
    // IPv6 that a deny drops entirely is not passed.
    let no6 = deny(Match {
        family: Some(Family::Ipv6),
        ..Match::default()
    });
    let p = policy_with(vec![web.clone(), no6.clone()], Vec::new(), options.clone());
    assert!(lint_with(ndp_dropped::check, &p, &ast).is_empty());
    // The default passes IPv6, unless it is all denied.
    let open = Options {
        default: Verdict::Pass,
        ..options
    };
    let ast = options_ast(&[("ndp", "drop"), ("default", "allow")]);
    let p = policy_with(Vec::new(), Vec::new(), open.clone());
    let d = lint_with(ndp_dropped::check, &p, &ast);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].secondary[0].span, Span::new(1010, 1015));
    let p = policy_with(vec![no6], Vec::new(), open);
    assert!(lint_with(ndp_dropped::check, &p, &ast).is_empty());
}

#[test]
fn union_cover_reports_which_boxes() {
    let p = policy(vec![]);
    let space = cover::Space::new(&p.tables, false);
    let target = &space.boxes(&Match {
        src: addrs(&["10.0.0.0/8"]),
        ..tcp()
    })[0];
    let half = |p: &str| {
        space.boxes(&Match {
            src: addrs(&[p]),
            ..tcp()
        })[0]
            .clone()
    };
    let (a, b, c) = (half("10.0.0.0/9"), half("10.128.0.0/9"), half("11.0.0.0/8"));
    assert_eq!(union_covers(target, &[&c, &a, &b]), Some(vec![1, 2]));
    assert_eq!(union_covers(target, &[&c, &a]), None);
}

/// Large inputs stay fast: many rules and a table of many entries.
#[test]
fn scales_to_many_rules_and_a_large_table() {
    let big = Table {
        name: "big".into(),
        span: Span::default(),
        prefixes: (0..200_000u32)
            .map(|i| Prefix::host(std::net::IpAddr::V4((0x6440_0000 + i * 2).into())))
            .collect(),
        source_file: None,
    };
    let mut rules = vec![deny(Match {
        src: table_ref(0),
        ..Match::default()
    })];
    for i in 0..2_000u32 {
        let host = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        rules.push(allow(Match {
            src: addrs(&[&host]),
            dst_ports: ports(&[(1000 + i as u16, 1000 + i as u16)]),
            ..tcp()
        }));
        let other = std::net::Ipv4Addr::from(0xac10_0000 + i).to_string();
        rules.push(deny(Match {
            src: addrs(&[&other]),
            ..Match::default()
        }));
    }
    // One allow the table shadows, one redundant allow.
    rules.push(allow(Match {
        src: addrs(&["100.64.0.2"]),
        ..tcp()
    }));
    rules.push(allow(Match {
        src: addrs(&["10.0.0.5"]),
        dst_ports: ports(&[(1005, 1005)]),
        ..tcp()
    }));
    let p = policy_with(rules, vec![big], Options::default());
    let start = std::time::Instant::now();
    let all = lint(run, &p);
    let elapsed = start.elapsed();
    let n = p.rules.len();
    assert_eq!(
        all,
        vec![
            (Code::ShadowedRule, n - 2, vec![0]),
            (Code::DuplicateRule, n - 1, vec![11])
        ],
        "{all:?}"
    );
    assert!(elapsed.as_secs() < 20, "lints took {elapsed:?}");
}

#[test]
fn scales_when_addresses_do_not_discriminate() {
    let mut rules = Vec::new();
    for i in 0..5_000u16 {
        rules.push(allow(Match {
            dst_ports: ports(&[(i + 1, i + 1)]),
            ..tcp()
        }));
        rules.push(deny(Match {
            dst_ports: ports(&[(i + 10_001, i + 10_001)]),
            ..tcp()
        }));
    }
    let p = policy(rules);
    let start = std::time::Instant::now();
    let all = lint(run, &p);
    assert!(all.is_empty(), "{all:?}");
    assert!(
        start.elapsed().as_secs() < 20,
        "lints took {:?}",
        start.elapsed()
    );
}

#[test]
fn host_bits_in_table_files_point_into_the_file() {
    let mut files = Files::new();
    files.add("p.pf", "");
    let text = "192.0.2.0/24\n  10.1.2.3/8   # typo\n2001:db8::1/64\n";
    let table_file = files.add("t.txt", text);
    let again = files.add("t.txt", text);
    let table = |file| Table {
        name: "t".into(),
        span: Span::default(),
        prefixes: Vec::new(),
        source_file: Some(file),
    };
    let p = policy_with(
        Vec::new(),
        vec![table(table_file), table(again)],
        Options::default(),
    );
    let ast = ast::Policy::default();
    let ctx = LintContext {
        files: &files,
        file: FileId(0),
        ast: &ast,
        policy: &p,
    };
    let found: Vec<(FileId, &str)> = host_bits::check(&ctx)
        .iter()
        .map(|d| (d.primary.file, &text[d.primary.span.range()]))
        .collect();
    assert_eq!(
        found,
        vec![(table_file, "10.1.2.3/8"), (table_file, "2001:db8::1/64")]
    );
}

#[test]
fn usage_follows_references() {
    let (ast, errors) = patronus_grammar::parse(
        "const a = 22\nconst b = { $a, 80 }\nconst c = 443\nconst d = { 10.0.0.0/8 }\n\
         table t { $d }\ntable u { 192.0.2.0/24 }\nallow tcp from @t to port $c\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let usage = usage::analyse(&ast);
    let consts: Vec<(&str, Vec<&str>)> = usage
        .consts
        .iter()
        .map(|u| (u.ident.name.as_str(), u.referenced_by.clone()))
        .collect();
    assert_eq!(consts, vec![("a", vec!["b"]), ("b", vec![])]);
    let tables: Vec<&str> = usage.tables.iter().map(|u| u.ident.name.as_str()).collect();
    assert_eq!(tables, vec!["u"]);
}

#[test]
fn union_of_sets_without_building_it() {
    let a = ValueSet::from_intervals(vec![(0, 10), (20, 30)]);
    let b = ValueSet::from_intervals(vec![(11, 19), (31, 31)]);
    let c = ValueSet::from_intervals(vec![(5, 25)]);
    assert!(cover::union_is_superset(&[&a, &b], &ValueSet::full(31)));
    assert!(!cover::union_is_superset(&[&a, &b], &ValueSet::full(32)));
    assert!(cover::union_is_superset(
        &[&a, &c],
        &ValueSet::from_intervals(vec![(0, 30)])
    ));
    assert!(!cover::union_is_superset(
        &[&a, &c],
        &ValueSet::from_intervals(vec![(0, 31)])
    ));
    assert!(cover::union_is_superset(&[], &ValueSet::empty()));
    assert!(!cover::union_is_superset(&[], &ValueSet::single(1)));
}

/// Many allows that each meet a large table deny without being covered.
#[test]
fn scales_when_a_large_table_meets_every_rule() {
    let big = Table {
        name: "big".into(),
        span: Span::default(),
        prefixes: (0..300_000u32)
            .map(|i| Prefix::host(std::net::IpAddr::V4((0x6440_0000 + i * 2).into())))
            .collect(),
        source_file: None,
    };
    let mut rules = vec![deny(Match {
        src: table_ref(0),
        ..Match::default()
    })];
    for i in 0..3_000u16 {
        rules.push(allow(Match {
            dst_ports: ports(&[(i + 1, i + 1)]),
            ..tcp()
        }));
    }
    let p = policy_with(rules, vec![big], Options::default());
    let start = std::time::Instant::now();
    let all = lint(run, &p);
    assert!(all.is_empty(), "{all:?}");
    assert!(
        start.elapsed().as_secs() < 20,
        "lints took {:?}",
        start.elapsed()
    );
}

/// The set algebra against the interpreter's own matcher, exhaustively
/// over a universe with one packet per equivalence class of the values the
/// generated rules use: a lint's "covered" must be exactly the truth.
mod against_the_interpreter {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::frame::{IpPacket, Transport};
    use crate::interp::matching::matches;

    fn universe() -> Vec<IpPacket> {
        let pool = |list: Vec<String>| -> Vec<IpAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        let v4 = pool(
            (0..4)
                .map(|i| format!("10.0.0.{i}"))
                .chain(["192.0.2.1".to_string()])
                .collect(),
        );
        let v6 = pool(
            (0..4)
                .map(|i| format!("2001:db8::{i}"))
                .chain(["2001:db8:1::1".to_string()])
                .collect(),
        );
        let mut out = Vec::new();
        for (addrs, icmp) in [(&v4, 1u8), (&v6, 58u8)] {
            let mut transports = Vec::new();
            for sport in [1, 2, 5] {
                for dport in [1, 2, 5] {
                    for flags in [0x02, 0x12, 0x10, 0x01] {
                        transports.push((
                            6,
                            Transport::Tcp {
                                src_port: sport,
                                dst_port: dport,
                                flags,
                            },
                        ));
                    }
                    transports.push((
                        17,
                        Transport::Udp {
                            src_port: sport,
                            dst_port: dport,
                        },
                    ));
                }
            }
            for ty in [0, 3, 8, 128] {
                transports.push((
                    icmp,
                    Transport::Icmp {
                        ty,
                        code: 0,
                        echo_id: None,
                    },
                ));
            }
            // GRE, ESP, and the other family's ICMP number: no header.
            for proto in [47, 50, 1 + 58 - icmp] {
                transports.push((proto, Transport::Other));
            }
            for &src in addrs.iter() {
                for &dst in addrs.iter() {
                    for &(proto, transport) in &transports {
                        for vlan in [None, Some(5)] {
                            out.push(IpPacket {
                                vlan,
                                src,
                                dst,
                                proto,
                                hop_limit: 64,
                                transport,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    fn addr_match() -> impl Strategy<Value = Option<AddrMatch>> {
        let prefix = prop_oneof![
            (0u32..4, 30u8..=32).prop_map(|(i, len)| Prefix::new(
                format!("10.0.0.{i}").parse().unwrap(),
                len
            )
            .unwrap()),
            (0u32..4, 126u8..=128).prop_map(|(i, len)| Prefix::new(
                format!("2001:db8::{i}").parse().unwrap(),
                len
            )
            .unwrap()),
        ];
        prop_oneof![
            2 => Just(None),
            3 => (proptest::collection::vec(prefix, 1..3), proptest::bool::weighted(0.25)).prop_map(|(prefixes, negated)| {
                Some(AddrMatch {
                    negated,
                    set: AddrSet {
                        prefixes,
                        tables: Vec::new(),
                    },
                })
            }),
        ]
    }

    fn port_match(values: &'static [(u16, u16)]) -> impl Strategy<Value = Option<PortMatch>> {
        prop_oneof![
            2 => Just(None),
            2 => (proptest::sample::subsequence(values, 1..=2), any::<bool>()).prop_map(|(ranges, negated)| {
                Some(PortMatch {
                    negated,
                    ranges: crate::net::normalize_ranges(ranges.into_iter().map(|(lo, hi)| PortRange { lo, hi }).collect()),
                })
            }),
        ]
    }

    fn matcher() -> impl Strategy<Value = Match> {
        let protos = prop_oneof![
            Just(None),
            Just(protos(&[6])),
            Just(protos(&[17])),
            Just(protos(&[6, 17])),
            Just(protos(&[1])),
            Just(protos(&[58])),
            Just(protos(&[47])),
        ];
        let family = prop_oneof![4 => Just(None), 1 => Just(Some(Family::Ipv4)), 1 => Just(Some(Family::Ipv6))];
        let flags = prop_oneof![
            Just(None),
            Just(Some(TcpFlagsMatch {
                set: tcp_flags::SYN,
                mask: tcp_flags::SYN | tcp_flags::ACK
            })),
            Just(Some(TcpFlagsMatch {
                set: tcp_flags::ACK,
                mask: tcp_flags::ACK
            })),
        ];
        let icmp = prop_oneof![
            Just(None),
            Just(Some(vec![IcmpMatch { ty: 8, code: None }])),
            Just(Some(vec![
                IcmpMatch { ty: 0, code: None },
                IcmpMatch { ty: 8, code: None }
            ])),
        ];
        let vlan = prop_oneof![3 => Just(None), 1 => Just(Some(5u16))];
        (
            (family, protos, addr_match(), addr_match()),
            (
                port_match(&[(1, 1), (1, 2)]),
                port_match(&[(1, 1), (2, 3), (1, 3)]),
            ),
            (flags, icmp, vlan),
        )
            .prop_map(
                |((family, protos, src, dst), (src_ports, dst_ports), (tcp_flags, icmp, vlan))| {
                    // Keep only the fields the type checker would accept.
                    let set = protos.clone().unwrap_or_default();
                    let ports_ok = !set.is_empty() && set.iter().all(|p| *p == 6 || *p == 17);
                    let only = |p: u8| set.len() == 1 && set.contains(&p);
                    Match {
                        family,
                        src,
                        dst,
                        src_ports: src_ports.filter(|_| ports_ok),
                        dst_ports: dst_ports.filter(|_| ports_ok),
                        tcp_flags: tcp_flags.filter(|_| only(6)),
                        icmp: icmp.filter(|_| only(1) || only(58)),
                        vlan,
                        protos,
                    }
                },
            )
    }

    /// A target and denies, some of them the target with one field
    /// changed: the near misses and unions the lint must get right.
    fn target_and_denies() -> impl Strategy<Value = (Match, Vec<Match>)> {
        matcher().prop_flat_map(|t| {
            let (a, b, c, d) = (t.clone(), t.clone(), t.clone(), t.clone());
            let deny = prop_oneof![
                matcher(),
                addr_match().prop_map(move |src| Match { src, ..a.clone() }),
                addr_match().prop_map(move |dst| Match { dst, ..b.clone() }),
                port_match(&[(1, 1), (2, 3), (1, 3)]).prop_map(move |p| Match {
                    dst_ports: p.filter(|_| c.dst_ports.is_some()),
                    ..c.clone()
                }),
                prop_oneof![
                    Just(None),
                    Just(Some(Family::Ipv4)),
                    Just(Some(Family::Ipv6))
                ]
                .prop_map(move |family| Match {
                    family,
                    ..d.clone()
                }),
            ];
            (Just(t), proptest::collection::vec(deny, 1..4))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn shadowing_is_exact((target, denies) in target_and_denies()) {
            let packets = universe();
            let matching: Vec<&IpPacket> = packets.iter().filter(|p| matches(&target, p, &[])).collect();
            let covered = matching.iter().all(|p| denies.iter().any(|d| matches(d, p, &[])));
            let truth = !matching.is_empty() && covered;

            let mut rules = vec![allow(target.clone())];
            rules.extend(denies.iter().cloned().map(deny));
            let found = lint(shadowed_rule::check, &policy(rules));
            prop_assert_eq!(!found.is_empty(), truth, "target {:?} denies {:?}", target, denies);
            // The model's idea of "matches nothing" agrees too.
            let space = cover::Space::new(&[], false);
            prop_assert_eq!(space.boxes(&target).is_empty(), matching.is_empty());
        }

        #[test]
        fn redundancy_and_reachability_are_exact((first, others) in target_and_denies()) {
            let packets = universe();
            let set = |m: &Match| -> Vec<bool> { packets.iter().map(|p| matches(m, p, &[])).collect() };
            let second = &others[0];
            let (a, b) = (set(&first), set(second));
            let nonempty = a.iter().any(|x| *x) && b.iter().any(|x| *x);
            let a_in_b = a.iter().zip(&b).all(|(x, y)| !x || *y);
            let b_in_a = a.iter().zip(&b).all(|(x, y)| !y || *x);

            // Two plain allows: one is reported iff one holds the other.
            let found = lint(duplicate_rule::check, &policy(vec![allow(first.clone()), allow(second.clone())]));
            prop_assert_eq!(!found.is_empty(), nonempty && (a_in_b || b_in_a));
            if let Some((_, reported, _)) = found.first() {
                let holds = if *reported == 0 { a_in_b } else { b_in_a };
                prop_assert!(holds);
            }

            // A limit no allow meets, under default deny.
            let meets = a.iter().zip(&b).any(|(x, y)| *x && *y);
            let found = lint(unreachable_limit::check, &policy(vec![limit(first.clone()), allow(second.clone())]));
            prop_assert_eq!(!found.is_empty(), a.iter().any(|x| *x) && !meets);
        }
    }
}
