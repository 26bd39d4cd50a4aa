//! Lowering speed (and, for contrast, IR evaluation cost per packet) on
//! synthetic policies: 10,000 rules (target ≤ 50 ms) and one deny rule over
//! a 1,000,000-entry table (target ≤ 1 s). Plain `std::time`; run with
//! `cargo bench -p patronus-compiler --bench lower` (release profile).
//! Each figure is the best of several runs, to keep scheduler noise out.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use patronus_compiler::diag::FileId;
use patronus_compiler::ir::{self, IrEvaluator};
use patronus_compiler::net::{PortRange, Prefix};
use patronus_compiler::packet;
use patronus_compiler::typed::{
    AddrMatch, AddrSet, Match, Options, PROTO_TCP, PROTO_UDP, Packet, Policy, PortMatch, Rule,
    RuleId, Table, TableId, tcp_flags,
};
use patronus_grammar::ast::{Action, Span};

/// A deterministic pseudo-random sequence (xorshift64*), no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn v4(bits: u32, len: u8) -> Prefix {
    Prefix::new(IpAddr::V4(Ipv4Addr::from(bits)), len).expect("valid length")
}

fn rule(i: usize, action: Action, matcher: Match) -> Rule {
    Rule {
        id: RuleId(i as u32),
        action,
        matcher,
        rate: None,
        label: None,
        log: false,
        span: Span::new(0, 0),
        identity: format!("rule {i}"),
    }
}

fn policy(rules: Vec<Rule>, tables: Vec<Table>) -> Policy {
    Policy {
        file: FileId(0),
        interface: None,
        options: Options::default(),
        rules,
        tables,
        tests: Vec::new(),
    }
}

/// `n` rules: a third deny, the rest allow; each with a source prefix
/// (/16 to /32), a protocol, and a destination port or port range.
fn many_rules(n: usize) -> Policy {
    let mut rng = Rng(0x5eed);
    let rules = (0..n)
        .map(|i| {
            let len = 16 + (rng.next() % 17) as u8;
            let src = v4(0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff), len);
            let lo = 1 + (rng.next() % 60_000) as u16;
            let hi = lo + if i % 4 == 0 { 100 } else { 0 };
            let matcher = Match {
                protos: Some(BTreeSet::from([if i % 2 == 0 {
                    PROTO_TCP
                } else {
                    PROTO_UDP
                }])),
                src: Some(AddrMatch {
                    negated: false,
                    set: AddrSet {
                        prefixes: vec![src],
                        tables: Vec::new(),
                    },
                }),
                dst_ports: Some(PortMatch {
                    negated: false,
                    ranges: vec![PortRange { lo, hi }],
                }),
                ..Match::default()
            };
            let action = if i % 3 == 0 {
                Action::Deny
            } else {
                Action::Allow
            };
            rule(i, action, matcher)
        })
        .collect();
    policy(rules, Vec::new())
}

/// One deny rule over a table of `n` entries (a mix of /24s and hosts,
/// some nested), plus a few allow rules.
fn big_table(n: usize) -> Policy {
    let mut rng = Rng(0xb10c);
    // Exactly `n` distinct prefixes: draw until deduplication leaves n.
    let mut prefixes: Vec<Prefix> = Vec::with_capacity(n + n / 8);
    while prefixes.len() < n {
        while prefixes.len() < n + n / 64 {
            let len = if prefixes.len().is_multiple_of(4) {
                24
            } else {
                32
            };
            prefixes.push(v4(rng.next() as u32, len));
        }
        prefixes.sort();
        prefixes.dedup();
    }
    prefixes.truncate(n);
    let table = Table {
        name: "blocklist".into(),
        span: Span::new(0, 0),
        prefixes,
        source_file: None,
    };
    let deny = Match {
        src: Some(AddrMatch {
            negated: false,
            set: AddrSet {
                prefixes: Vec::new(),
                tables: vec![TableId(0)],
            },
        }),
        ..Match::default()
    };
    let web = Match {
        protos: Some(BTreeSet::from([PROTO_TCP])),
        dst_ports: Some(PortMatch {
            negated: false,
            ranges: vec![PortRange { lo: 80, hi: 80 }, PortRange { lo: 443, hi: 443 }],
        }),
        ..Match::default()
    };
    policy(
        vec![rule(0, Action::Deny, deny), rule(1, Action::Allow, web)],
        vec![table],
    )
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Average IR-evaluation time of one inbound packet.
fn per_packet(program: &ir::Program) -> Duration {
    let frames: Vec<Vec<u8>> = (0..256u32)
        .map(|i| {
            packet::build(&Packet {
                proto: PROTO_TCP,
                src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i * 7919))),
                dst: "192.0.2.1".parse().expect("address"),
                src_port: 40_000,
                dst_port: 1 + (i as u16 * 233) % 60_000,
                tcp_flags: tcp_flags::SYN,
                icmp_type: 0,
                icmp_code: 0,
                vlan: None,
                repeat: 1,
            })
        })
        .collect();
    let mut eval = IrEvaluator::new(program);
    let rounds = 40;
    let total = best_of(3, || {
        for _ in 0..rounds {
            for f in &frames {
                black_box(eval.inbound(f, 0));
            }
        }
    });
    total / (rounds * frames.len() as u32)
}

fn main() {
    let rules = many_rules(10_000);
    let t = best_of(5, || {
        black_box(ir::lower(&rules));
    });
    println!(
        "lower 10,000 rules:            {:>9.2} ms (target <= 50 ms)",
        ms(t)
    );

    let table = big_table(1_000_000);
    let entries = table.tables[0].prefixes.len();
    let t = best_of(3, || {
        black_box(ir::lower(&table));
    });
    println!(
        "lower {entries}-entry table:     {:>9.2} ms (target <= 1000 ms)",
        ms(t)
    );

    let small = ir::lower(&many_rules(10));
    let large = ir::lower(&rules);
    println!(
        "IR eval per packet, 10 rules:     {:>6} ns",
        per_packet(&small).as_nanos()
    );
    println!(
        "IR eval per packet, 10,000 rules: {:>6} ns (bitmaps of 157 words)",
        per_packet(&large).as_nanos()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
