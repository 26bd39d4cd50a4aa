//! Lowering on hand-built typed policies: bitmaps of nested prefixes,
//! negation, map-kind choice, specialisation, multi-word bitmaps, bounded
//! per-packet work, and small text diffs for small policy changes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use patronus_compiler::diag::FileId;
use patronus_compiler::ir::plan::MapKind;
use patronus_compiler::ir::{self, Field, IrEvaluator, Key, PhaseKind, Program, Storage};
use patronus_compiler::net::{PortRange, Prefix};
use patronus_compiler::packet;
use patronus_compiler::semantics::Phase;
use patronus_compiler::typed::{
    AddrMatch, AddrSet, Family, Match, NS_PER_SEC, Options, PROTO_TCP, PROTO_UDP, Packet, Policy,
    PortMatch, Rate, RateKey, Rule, RuleId, Table, TableId, tcp_flags,
};
use patronus_grammar::ast::{Action, Span, Verdict};

fn prefix(s: &str) -> Prefix {
    let (a, l) = s.split_once('/').expect("prefix");
    Prefix::new(a.parse().expect("addr"), l.parse().expect("len")).expect("valid prefix")
}

fn policy(options: Options, tables: Vec<Vec<Prefix>>, rules: Vec<(Action, Match)>) -> Policy {
    Policy {
        file: FileId(0),
        interface: None,
        options,
        rules: rules
            .into_iter()
            .enumerate()
            .map(|(i, (action, matcher))| Rule {
                id: RuleId(i as u32),
                action,
                matcher,
                rate: None,
                label: None,
                log: false,
                span: Span::new(0, 0),
                identity: format!("rule {i}"),
            })
            .collect(),
        tables: tables
            .into_iter()
            .enumerate()
            .map(|(i, prefixes)| Table {
                name: format!("t{i}"),
                span: Span::new(0, 0),
                prefixes,
                source_file: None,
            })
            .collect(),
        tests: Vec::new(),
    }
}

fn from(prefixes: &[&str], tables: &[u32], negated: bool) -> Match {
    Match {
        src: Some(AddrMatch {
            negated,
            set: AddrSet {
                prefixes: prefixes.iter().map(|p| prefix(p)).collect(),
                tables: tables.iter().map(|t| TableId(*t)).collect(),
            },
        }),
        ..Match::default()
    }
}

fn tcp_port(port: u16) -> Match {
    Match {
        protos: Some(BTreeSet::from([PROTO_TCP])),
        dst_ports: Some(PortMatch {
            negated: false,
            ranges: vec![PortRange { lo: port, hi: port }],
        }),
        ..Match::default()
    }
}

fn syn(src: &str, dport: u16) -> Vec<u8> {
    packet::build(&Packet {
        proto: PROTO_TCP,
        src: src.parse().expect("src"),
        dst: "192.0.2.1".parse().expect("dst"),
        src_port: 40000,
        dst_port: dport,
        tcp_flags: tcp_flags::SYN,
        icmp_type: 0,
        icmp_code: 0,
        vlan: None,
        repeat: 1,
    })
}

fn phase(program: &Program, kind: PhaseKind) -> &ir::PhasePlan {
    program
        .phases
        .iter()
        .find(|p| p.kind == kind)
        .expect("phase present")
}

fn classifier(phase: &ir::PhasePlan, field: Field) -> &ir::Classifier {
    phase
        .classifiers
        .iter()
        .find(|c| c.field == field)
        .expect("classifier present")
}

/// Rule ids in an entry's bitmap.
fn entry_rules(phase: &ir::PhasePlan, c: &ir::Classifier, key: Key) -> Vec<u32> {
    let i = c.keys.iter().position(|k| *k == key).expect("key present");
    ir::iter_bits(c.entry(i))
        .map(|b| phase.rules[b].0)
        .collect()
}

#[test]
fn nested_prefixes_inherit_covering_bits_and_negation_inverts() {
    // r0: deny from table {10/8}; r1: deny from 10.1/16; r2: deny from !10.1.2/24.
    let p = policy(
        Options::default(),
        vec![vec![prefix("10.0.0.0/8")]],
        vec![
            (Action::Deny, from(&[], &[0], false)),
            (Action::Deny, from(&["10.1.0.0/16"], &[], false)),
            (Action::Deny, from(&["10.1.2.0/24"], &[], true)),
        ],
    );
    let program = ir::lower(&p);
    let deny = phase(&program, PhaseKind::Deny);
    let src4 = classifier(deny, Field::SrcAddr(Family::Ipv4));
    assert_eq!(
        entry_rules(deny, src4, Key::Prefix(prefix("10.0.0.0/8"))),
        [0, 2]
    );
    assert_eq!(
        entry_rules(deny, src4, Key::Prefix(prefix("10.1.0.0/16"))),
        [0, 1, 2]
    );
    // Inside the negated /24: r2 does not hold, the covering r0 and r1 do.
    assert_eq!(
        entry_rules(deny, src4, Key::Prefix(prefix("10.1.2.0/24"))),
        [0, 1]
    );
    // A miss is in no set: only the negated rule holds.
    assert_eq!(ir::iter_bits(&src4.miss.0).collect::<Vec<_>>(), [2]);

    let mut eval = IrEvaluator::new(&program);
    let decide = |eval: &mut IrEvaluator, src: &str| eval.inbound(&syn(src, 80), 0).rule;
    assert_eq!(decide(&mut eval, "10.1.2.3"), Some(RuleId(0)));
    assert_eq!(decide(&mut eval, "11.0.0.1"), Some(RuleId(2)));
    let only_negated = policy(
        Options::default(),
        Vec::new(),
        vec![(Action::Deny, from(&["10.1.2.0/24"], &[], true))],
    );
    let program = ir::lower(&only_negated);
    let mut eval = IrEvaluator::new(&program);
    assert_eq!(eval.inbound(&syn("10.1.2.3", 80), 0).phase, Phase::Default);
    assert_eq!(eval.inbound(&syn("10.1.3.3", 80), 0).phase, Phase::Deny);
}

#[test]
fn map_kind_follows_the_contents() {
    // More than INLINE_MAX_IPV4_PREFIXES, so they need a map.
    let hosts: Vec<String> = (1..=20).map(|i| format!("192.0.2.{i}/32")).collect();
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let mut nets = host_refs.clone();
    nets.push("198.51.100.0/24");
    let big: Vec<Prefix> = (0..70_000u32)
        .map(|i| Prefix::host(IpAddr::V4((0x0a00_0000 + i).into())))
        .collect();
    let few_ports = tcp_port(22);
    let mut port_ranges = tcp_port(0);
    port_ranges.dst_ports = Some(PortMatch {
        negated: false,
        ranges: (0..5)
            .map(|i| PortRange {
                lo: 1000 * (i + 1),
                hi: 1000 * (i + 1) + 10,
            })
            .collect(),
    });
    let p = policy(
        Options::default(),
        vec![big],
        vec![
            (Action::Deny, from(&host_refs, &[], false)),
            (Action::Deny, from(&nets[..2], &[], false)),
            (Action::Allow, from(&nets, &[], false)),
            (Action::Allow, few_ports),
            (Action::Allow, port_ranges),
            (Action::Limit, from(&[], &[0], false)),
        ],
    );
    let mut p = p;
    p.rules[5].rate = Some(Rate {
        count: 1,
        unit_ns: NS_PER_SEC,
        interval_ns: NS_PER_SEC,
        burst: 1,
        key: RateKey::Global,
    });
    let program = ir::lower(&p);
    let kind =
        |kind: PhaseKind, field: Field| match classifier(phase(&program, kind), field).storage {
            Storage::Inline => None,
            Storage::Map(i) => Some((program.maps[i].kind, program.maps[i].bloom_candidate)),
        };
    let src4 = Field::SrcAddr(Family::Ipv4);
    // 20 hosts: exact-match hash; with a /24 among them: LPM trie.
    assert_eq!(kind(PhaseKind::Deny, src4), Some((MapKind::Hash, false)));
    assert_eq!(
        kind(PhaseKind::Allow, src4),
        Some((MapKind::LpmTrie, false))
    );
    // 70,000 hosts: hash, marked as a bloom-filter candidate.
    assert_eq!(kind(PhaseKind::Limit, src4), Some((MapKind::Hash, true)));
    // Port 22 plus five ranges: an array indexed by port.
    assert_eq!(
        kind(PhaseKind::Allow, Field::DstPort),
        Some((MapKind::Array, false))
    );
    // One protocol: inline compare.
    assert_eq!(kind(PhaseKind::Allow, Field::Proto), None);
    let names: Vec<&str> = program.maps.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"rl_global") && names.contains(&"ct_v4"));
}

#[test]
fn specialisation_drops_what_the_policy_does_not_use() {
    let options = Options {
        conntrack: false,
        ..Options::default()
    };
    let mut m = from(&["10.0.0.0/8"], &[], false);
    m.family = Some(Family::Ipv4);
    let p = policy(options, Vec::new(), vec![(Action::Allow, m)]);
    let program = ir::lower(&p);
    assert_eq!(program.usage.rule_families, [Family::Ipv4]);
    assert!(phase(&program, PhaseKind::Allow).start[1].is_zero());
    assert!(!program.usage.conntrack);
    // No ports, flags or protocol read: only the source address.
    assert_eq!(
        program.parse.extract,
        [Field::SrcAddr(Family::Ipv4)],
        "extract only what rules use"
    );
    let names: Vec<&str> = program.maps.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["stats"], "no conntrack, no buckets, inline prefix");
    assert!(program.phases.iter().all(|p| p.kind == PhaseKind::Allow));
}

#[test]
fn many_rules_use_several_words_and_the_first_rule_in_the_file_decides() {
    // 130 allow rules for ports 1000..1130, then one for 1000-1200: port
    // 1100 matches r100 and r130; r100 comes first.
    let mut rules: Vec<(Action, Match)> = (0..130u16)
        .map(|i| (Action::Allow, tcp_port(1000 + i)))
        .collect();
    let mut wide = tcp_port(0);
    wide.dst_ports = Some(PortMatch {
        negated: false,
        ranges: vec![PortRange { lo: 1000, hi: 1200 }],
    });
    rules.push((Action::Allow, wide));
    let program = ir::lower(&policy(Options::default(), Vec::new(), rules));
    let allow = phase(&program, PhaseKind::Allow);
    assert_eq!(allow.words, 3);
    let mut eval = IrEvaluator::new(&program);
    let out = eval.inbound(&syn("192.0.2.9", 1100), 0);
    assert_eq!((out.phase, out.rule), (Phase::Allow, Some(RuleId(100))));
    let out = eval.inbound(&syn("192.0.2.9", 1150), 0);
    assert_eq!(out.rule, Some(RuleId(130)));
    let out = eval.inbound(&syn("192.0.2.9", 2000), 0);
    assert_eq!((out.verdict, out.phase), (Verdict::Drop, Phase::Default));
}

#[test]
fn per_packet_lookups_do_not_grow_with_rules_or_entries() {
    // 10,000 rules over every field kind: still one classifier per field.
    let rules: Vec<(Action, Match)> = (0..10_000u32)
        .map(|i| {
            let mut m = tcp_port((i % 60_000) as u16 + 1);
            m.src = from(&[&format!("10.{}.{}.0/24", i / 256, i % 256)], &[], false).src;
            m.protos = Some(BTreeSet::from([if i % 2 == 0 {
                PROTO_TCP
            } else {
                PROTO_UDP
            }]));
            (
                if i % 3 == 0 {
                    Action::Deny
                } else {
                    Action::Allow
                },
                m,
            )
        })
        .collect();
    let program = ir::lower(&policy(Options::default(), Vec::new(), rules));
    for phase in &program.phases {
        let fields: BTreeSet<Field> = phase.classifiers.iter().map(|c| c.field).collect();
        assert_eq!(
            fields.len(),
            phase.classifiers.len(),
            "one lookup per field"
        );
        assert!(phase.classifiers.len() <= 10);
    }
}

#[test]
fn changing_one_rule_changes_few_lines() {
    let rules = |port: u16| {
        (0..20u16)
            .map(|i| (Action::Allow, tcp_port(if i == 7 { port } else { 100 + i })))
            .collect::<Vec<_>>()
    };
    let a = ir::lower(&policy(Options::default(), Vec::new(), rules(107)));
    let b = ir::lower(&policy(Options::default(), Vec::new(), rules(9999)));
    let changed = |x: &str, y: &str| {
        let xs: BTreeSet<&str> = x.lines().collect();
        let ys: BTreeSet<&str> = y.lines().collect();
        xs.symmetric_difference(&ys).count()
    };
    // The port lives in the map's entries: the IR summary does not move,
    // the maps text changes in the two entry lines (old port out, new in).
    assert_eq!(changed(&ir::text::ir(&a), &ir::text::ir(&b)), 0);
    let (ma, mb) = (ir::text::maps(&a), ir::text::maps(&b));
    assert_eq!(changed(&ma, &mb), 2, "{ma}\n---\n{mb}");
}
