//! The example policies in policies/: each one checks with no diagnostic at
//! all (no error, no warning), every one of its `test` blocks passes (as
//! `patronusc test` runs them), and its resolved form is pinned by a
//! snapshot, so a change in how the compiler reads a policy shows up in
//! review. The snapshot is a compact summary of the typed policy (options
//! that differ from the defaults, tables by count and first entries), not
//! its full Debug form.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use patronus_cli::cmd_test::run_test;
use patronus_compiler::diag::Files;
use patronus_compiler::net::{PortRange, Prefix};
use patronus_compiler::typed::{
    AddrMatch, Match, Options, Packet, Policy, PortMatch, Rate, RateKey, Rule, Table,
};
use patronus_compiler::{LoadedFile, TableLoader, check, render};

/// The repository root (this crate lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Reads table files relative to the policy file, as `patronusc` does.
/// Names are kept relative to the repository root so snapshots and
/// diagnostics do not depend on where the checkout is.
struct FsTables;

impl TableLoader for FsTables {
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let policy_dir = Path::new(policy_name).parent().unwrap_or(Path::new(""));
        let name = policy_dir.join(path);
        let text = std::fs::read_to_string(root().join(&name))
            .map_err(|e| format!("{}: {e}", name.display()))?;
        Ok(LoadedFile {
            name: name.display().to_string(),
            text,
        })
    }
}

/// Checks `policies/NAME.pf`, fails on any diagnostic or failing test
/// block, and returns the summary.
fn check_clean(name: &str) -> String {
    let rel = format!("policies/{name}.pf");
    let text = std::fs::read_to_string(root().join(&rel)).expect("policy file is readable");
    let mut files = Files::new();
    let file = files.add(rel.clone(), text);
    let checked = check(&mut files, file, &FsTables);
    assert!(
        checked.diagnostics.is_empty(),
        "{rel} must check clean, got:\n{}",
        render::human(&files, &checked.diagnostics, false)
    );
    let policy = checked
        .policy
        .expect("a policy without diagnostics is returned");
    assert!(!policy.tests.is_empty(), "{rel} has no test block");
    let failures: Vec<String> = policy
        .tests
        .iter()
        .filter_map(|test| {
            let failure = run_test(&policy, test)?;
            let step = failure.step;
            let (line, _) = files.line_col(policy.file, step.span.start);
            Some(format!(
                "{rel}:{line}: test {:?}, repetition {}: expected {:?}, got {:?}",
                test.name, failure.repetition, failure.expected, failure.outcome
            ))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "failing tests:\n{}",
        failures.join("\n")
    );
    summarize(&policy, &files)
}

macro_rules! policy_tests {
    ($($name:ident),* $(,)?) => {
        /// Every policy in policies/ has a test here.
        const COVERED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                insta::assert_snapshot!(stringify!($name), check_clean(stringify!($name)));
            }
        )*
    };
}

policy_tests!(web, bastion, dns, dualstack, router, reference);

#[test]
fn every_example_policy_is_covered() {
    let mut found: Vec<String> = std::fs::read_dir(root().join("policies"))
        .expect("policies/ exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "pf").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    found.sort();
    let mut covered: Vec<String> = COVERED.iter().map(|s| s.to_string()).collect();
    covered.sort();
    assert_eq!(found, covered, "add new policies to policy_tests!");
}

// ---- the summary -----------------------------------------------------------

/// How many entries of a table the summary shows.
const TABLE_HEAD: usize = 4;

fn summarize(policy: &Policy, files: &Files) -> String {
    let mut s = String::new();
    let iface = policy.interface.as_ref().map_or("-", |(name, _)| name);
    writeln!(s, "interface: {iface}").unwrap();
    writeln!(s, "options: {}", options_text(&policy.options)).unwrap();
    writeln!(s, "tables:").unwrap();
    for table in &policy.tables {
        writeln!(s, "  {}", table_line(table, files)).unwrap();
    }
    writeln!(s, "rules:").unwrap();
    for rule in &policy.rules {
        writeln!(s, "  {}", rule_line(rule, policy)).unwrap();
    }
    writeln!(s, "tests:").unwrap();
    for test in &policy.tests {
        writeln!(s, "  {:?}", test.name).unwrap();
        for step in &test.steps {
            let what = match step.expect {
                Some(v) => format!("expect {v:?}"),
                None => "out".to_string(),
            };
            writeln!(s, "    {what} {}", packet_line(&step.packet)).unwrap();
        }
    }
    s
}

/// The options that differ from the defaults (`default` when none do).
fn options_text(options: &Options) -> String {
    let defaults = Options::default();
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident).+) => {
            if options.$($field).+ != defaults.$($field).+ {
                changed.push(format!("{}={:?}", stringify!($($field).+), options.$($field).+));
            }
        };
    }
    compare!(default);
    compare!(conntrack);
    compare!(conntrack_size);
    compare!(ratelimit_size);
    compare!(fragments_drop);
    compare!(arp_pass);
    compare!(ndp_pass);
    compare!(log_rate);
    compare!(timeouts.tcp_syn);
    compare!(timeouts.tcp_established);
    compare!(timeouts.tcp_closing);
    compare!(timeouts.tcp_rst);
    compare!(timeouts.udp);
    compare!(timeouts.udp_stream);
    compare!(timeouts.icmp);
    if changed.is_empty() {
        "default".to_string()
    } else {
        changed.join(" ")
    }
}

fn table_line(table: &Table, files: &Files) -> String {
    let source = table
        .source_file
        .map_or_else(|| "inline".to_string(), |f| files.get(f).name.clone());
    let v4 = table.prefixes.iter().filter(|p| p.is_ipv4()).count();
    let head = list(table.prefixes.iter().take(TABLE_HEAD));
    let more = if table.prefixes.len() > TABLE_HEAD {
        ", ..."
    } else {
        ""
    };
    format!(
        "@{} ({source}): {} prefixes ({v4} IPv4, {} IPv6) {{{head}{more}}}",
        table.name,
        table.prefixes.len(),
        table.prefixes.len() - v4,
    )
}

fn rule_line(rule: &Rule, policy: &Policy) -> String {
    let mut s = format!(
        "#{} {:?} {}",
        rule.id.0,
        rule.action,
        match_text(&rule.matcher, policy)
    );
    if let Some(rate) = &rule.rate {
        write!(s, " {}", rate_text(rate)).unwrap();
    }
    if let Some(label) = &rule.label {
        write!(s, " label={label:?}").unwrap();
    }
    if rule.log {
        s.push_str(" log");
    }
    s
}

fn match_text(m: &Match, policy: &Policy) -> String {
    let mut parts = Vec::new();
    if let Some(family) = m.family {
        parts.push(format!("family={family:?}"));
    }
    if let Some(protos) = &m.protos {
        parts.push(format!("proto={{{}}}", list(protos.iter())));
    }
    if let Some(src) = &m.src {
        parts.push(format!("src={}", addr_text(src, policy)));
    }
    if let Some(ports) = &m.src_ports {
        parts.push(format!("sport={}", ports_text(ports)));
    }
    if let Some(dst) = &m.dst {
        parts.push(format!("dst={}", addr_text(dst, policy)));
    }
    if let Some(ports) = &m.dst_ports {
        parts.push(format!("dport={}", ports_text(ports)));
    }
    if let Some(icmp) = &m.icmp {
        let types = icmp.iter().map(|t| match t.code {
            Some(code) => format!("{}/{code}", t.ty),
            None => t.ty.to_string(),
        });
        parts.push(format!("icmp={{{}}}", list(types)));
    }
    if let Some(flags) = &m.tcp_flags {
        parts.push(format!("flags={:#04x}/{:#04x}", flags.set, flags.mask));
    }
    if let Some(vlan) = m.vlan {
        parts.push(format!("vlan={vlan}"));
    }
    if parts.is_empty() {
        "any".to_string()
    } else {
        parts.join(" ")
    }
}

fn addr_text(a: &AddrMatch, policy: &Policy) -> String {
    let tables = a.set.tables.iter().map(|id| {
        policy.tables.get(id.0 as usize).map_or_else(
            || format!("@<bad table id {}>", id.0),
            |t| format!("@{}", t.name),
        )
    });
    let items: Vec<String> = a
        .set
        .prefixes
        .iter()
        .map(Prefix::to_string)
        .chain(tables)
        .collect();
    format!(
        "{}{{{}}}",
        if a.negated { "!" } else { "" },
        items.join(", ")
    )
}

fn ports_text(p: &PortMatch) -> String {
    let neg = if p.negated { "!" } else { "" };
    format!(
        "{neg}{{{}}}",
        list(p.ranges.iter().map(PortRange::to_string))
    )
}

fn rate_text(r: &Rate) -> String {
    let key = match r.key {
        RateKey::Src => "src",
        RateKey::Dst => "dst",
        RateKey::Flow => "flow",
        RateKey::Global => "global",
    };
    format!(
        "rate {}/{}ns burst {} per {key} (one token every {} ns)",
        r.count, r.unit_ns, r.burst, r.interval_ns
    )
}

fn packet_line(p: &Packet) -> String {
    let mut s = format!(
        "proto {} {} -> {}",
        p.proto,
        endpoint(p.src, p.src_port),
        endpoint(p.dst, p.dst_port)
    );
    match p.proto {
        6 => write!(s, " flags={:#04x}", p.tcp_flags).unwrap(),
        1 | 58 => write!(s, " type={} code={}", p.icmp_type, p.icmp_code).unwrap(),
        _ => {}
    }
    if let Some(vlan) = p.vlan {
        write!(s, " vlan={vlan}").unwrap();
    }
    if p.repeat != 1 {
        write!(s, " repeat={}", p.repeat).unwrap();
    }
    s
}

fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    match (addr, port) {
        (_, 0) => addr.to_string(),
        (std::net::IpAddr::V6(a), port) => format!("[{a}]:{port}"),
        (a, port) => format!("{a}:{port}"),
    }
}

fn list<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}
