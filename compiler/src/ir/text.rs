//! The deterministic text forms behind `patronusc build --emit ir` and
//! `--emit maps`: stable order (file order for rules, sorted keys for
//! entries), no addresses or hash-seed dependence, one line per rule or
//! entry so that editing one rule shows up as a small diff. Bitmaps print
//! as lists of rule ids (`[r0 r3]`), not as words.

use std::fmt::Write;

use patronus_grammar::ast::{Action, Verdict};

use super::plan::{Contents, MapPlan};
use super::{Bits, Classifier, Key, PhasePlan, Program, Storage, iter_bits};
use crate::semantics::{Counter, Phase};
use crate::typed::{Family, RateKey, Timeouts};

/// `--emit ir`: options, parse step, usage, rules, phases with their
/// classifiers. Entries of map-backed classifiers are summarised (count and
/// map); `--emit maps` lists them.
pub fn ir(program: &Program) -> String {
    let mut out = String::new();
    let o = &program.options;
    let _ = writeln!(out, "program");
    let _ = writeln!(
        out,
        "  options default {} conntrack {} conntrack-size {} ratelimit-size {} fragments {} arp {} ndp {} log-rate {}",
        verdict(o.default),
        on_off(o.conntrack),
        o.conntrack_size,
        o.ratelimit_size,
        if o.fragments_drop { "drop" } else { "pass" },
        if o.arp_pass { "pass" } else { "drop" },
        if o.ndp_pass { "pass" } else { "drop" },
        o.log_rate,
    );
    let _ = writeln!(out, "  timeouts {}", timeouts(&o.timeouts));

    let p = &program.parse;
    let _ = writeln!(out, "parse");
    let _ = writeln!(
        out,
        "  vlan-tags <= {} ipv6-ext-headers <= {} fragments {}",
        p.max_vlan_tags,
        p.max_ipv6_ext_headers,
        if p.fragments_drop { "drop" } else { "pass" },
    );
    let _ = writeln!(
        out,
        "  pre-phase arp {} ndp {}",
        if p.arp_pass { "pass" } else { "drop" },
        if p.ndp_pass { "pass" } else { "drop" },
    );
    let _ = writeln!(out, "  validate protos {}", join(p.validated_protos.iter()));
    let checks: Vec<&str> = p.checks.iter().map(|c| c.name()).collect();
    let _ = writeln!(out, "  checks {}", checks.join(" "));
    let extract: Vec<&str> = p.extract.iter().map(|f| f.name()).collect();
    let _ = writeln!(out, "  extract {}", list_or_none(&extract));

    let u = &program.usage;
    let _ = writeln!(out, "usage");
    let fams: Vec<&str> = u.rule_families.iter().map(|f| family(*f)).collect();
    let _ = writeln!(out, "  rule-families {}", list_or_none(&fams));
    let fields: Vec<&str> = u.rule_fields.iter().map(|f| f.name()).collect();
    let _ = writeln!(out, "  rule-fields {}", list_or_none(&fields));
    let protos: Vec<String> = u.protos.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(out, "  protos {}", list_or_none(&protos));
    let _ = writeln!(out, "  conntrack {}", on_off(u.conntrack));
    let keys: Vec<&str> = u.rate_keys.iter().map(|k| rate_key(*k)).collect();
    let _ = writeln!(out, "  rate-keys {}", list_or_none(&keys));

    let _ = writeln!(out, "rules");
    for r in &program.rules {
        let action = match r.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Limit => "limit",
        };
        let rate = r.rate.map_or(String::new(), |rate| {
            format!(
                " rate {}/{} burst {} per {} interval {}",
                rate.count,
                duration(rate.unit_ns),
                rate.burst,
                rate_key(rate.key),
                duration(rate.interval_ns)
            )
        });
        let log = if r.log { " log" } else { "" };
        let _ = writeln!(out, "  r{} {action}{rate}{log} {:?}", r.id.0, r.name);
    }

    for phase in &program.phases {
        write_phase(&mut out, program, phase);
    }

    let _ = writeln!(out, "maps");
    for m in &program.maps {
        let _ = writeln!(out, "  {}", map_header(m));
    }
    let _ = writeln!(out, "counters");
    for (i, c) in program.counters.iter().enumerate() {
        let _ = writeln!(out, "  {i} {}", counter(program, *c));
    }
    out
}

/// `--emit maps`: every map with its layout and, for classifier maps, every
/// entry in key order.
pub fn maps(program: &Program) -> String {
    let mut out = String::new();
    for m in &program.maps {
        let _ = writeln!(out, "map {}", map_header(m));
        let key: Vec<String> = m
            .key
            .iter()
            .map(|s| format!("{}:{}", s.name, s.bits))
            .collect();
        let value: Vec<String> = m
            .value
            .iter()
            .map(|s| format!("{}:{}", s.name, s.bits))
            .collect();
        let _ = writeln!(out, "  key {{{}}}", key.join(" "));
        let _ = writeln!(out, "  value {{{}}}", value.join(" "));
        match &m.contents {
            Contents::Classifier { phase, classifier } => {
                let phase = &program.phases[*phase];
                let c = &phase.classifiers[*classifier];
                let _ = writeln!(out, "  entries {}", c.len());
                for (i, k) in c.keys.iter().enumerate() {
                    let _ = writeln!(out, "    {} -> {}", key_text(k), rules(phase, c.entry(i)));
                }
            }
            Contents::Conntrack(_) | Contents::RateLimit { .. } => {
                let _ = writeln!(out, "  entries runtime");
            }
            Contents::Stats => {
                let _ = writeln!(out, "  entries {}", program.counters.len());
                for (i, c) in program.counters.iter().enumerate() {
                    let _ = writeln!(out, "    {i} -> {}", counter(program, *c));
                }
            }
        }
    }
    out
}

fn write_phase(out: &mut String, program: &Program, phase: &PhasePlan) {
    let ids: Vec<String> = phase.rules.iter().map(|r| format!("r{}", r.0)).collect();
    let _ = writeln!(
        out,
        "phase {} rules [{}] words {}",
        phase.kind.name(),
        ids.join(" "),
        phase.words
    );
    for f in [Family::Ipv4, Family::Ipv6] {
        let _ = writeln!(
            out,
            "  start {} {}",
            family(f),
            bits(phase, phase.start_for(f))
        );
    }
    for c in &phase.classifiers {
        write_classifier(out, program, phase, c);
    }
}

fn write_classifier(out: &mut String, program: &Program, phase: &PhasePlan, c: &Classifier) {
    let storage = match c.storage {
        Storage::Inline => "inline".to_string(),
        Storage::Map(i) => {
            let m = &program.maps[i];
            format!("map {} {}", m.name, m.kind.name())
        }
    };
    let _ = writeln!(
        out,
        "  lookup {} {storage} entries {} miss {} absent {}",
        c.field.name(),
        c.len(),
        bits(phase, &c.miss),
        bits(phase, &c.absent)
    );
    if c.storage == Storage::Inline {
        for (i, k) in c.keys.iter().enumerate() {
            let _ = writeln!(out, "    {} -> {}", key_text(k), rules(phase, c.entry(i)));
        }
    }
}

fn map_header(m: &MapPlan) -> String {
    let bloom = if m.bloom_candidate {
        " bloom-candidate"
    } else {
        ""
    };
    format!(
        "{} {} max-entries {}{bloom}",
        m.name,
        m.kind.name(),
        m.max_entries
    )
}

fn key_text(k: &Key) -> String {
    match k {
        Key::Prefix(p) => p.to_string(),
        Key::Proto(p) => format!("proto {p}"),
        Key::Ports(r) => format!("port {r}"),
        Key::Icmp { ty, code: None } => format!("type {ty} code *"),
        Key::Icmp { ty, code: Some(c) } => format!("type {ty} code {c}"),
        Key::Flags(f) => format!("flags 0x{f:02x}"),
        Key::Vlan(v) => format!("vlan {v}"),
    }
}

fn bits(phase: &PhasePlan, b: &Bits) -> String {
    rules(phase, &b.0)
}

/// A bitmap as the list of rule ids it holds.
fn rules(phase: &PhasePlan, words: &[u64]) -> String {
    let ids: Vec<String> = iter_bits(words)
        .filter_map(|i| phase.rules.get(i))
        .map(|r| format!("r{}", r.0))
        .collect();
    format!("[{}]", ids.join(" "))
}

fn counter(program: &Program, c: Counter) -> String {
    match c {
        Counter::Phase(Phase::Invalid(class)) => format!("invalid {}", class.name()),
        Counter::Phase(p) => format!("phase {}", phase_name(p)),
        Counter::Rule(r) => {
            let name = program
                .rules
                .get(r.0 as usize)
                .map_or("", |info| info.name.as_str());
            format!("rule r{} {name:?}", r.0)
        }
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Arp => "arp",
        Phase::Ndp => "ndp",
        Phase::Invalid(_) => "invalid",
        Phase::Deny => "deny",
        Phase::Established => "established",
        Phase::RateLimit => "rate-limit",
        Phase::Allow => "allow",
        Phase::Default => "default",
    }
}

fn timeouts(t: &Timeouts) -> String {
    format!(
        "tcp-syn {} tcp-established {} tcp-closing {} tcp-rst {} udp {} udp-stream {} icmp {}",
        duration(t.tcp_syn),
        duration(t.tcp_established),
        duration(t.tcp_closing),
        duration(t.tcp_rst),
        duration(t.udp),
        duration(t.udp_stream),
        duration(t.icmp)
    )
}

/// Nanoseconds in the largest unit that divides them exactly.
fn duration(ns: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    for (per, unit) in UNITS {
        if ns > 0 && ns.is_multiple_of(per) {
            return format!("{}{unit}", ns / per);
        }
    }
    "0s".to_string()
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn family(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

fn rate_key(k: RateKey) -> &'static str {
    match k {
        RateKey::Src => "src",
        RateKey::Dst => "dst",
        RateKey::Flow => "flow",
        RateKey::Global => "global",
    }
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
}

fn list_or_none<T: AsRef<str>>(items: &[T]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
