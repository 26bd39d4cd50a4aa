//! Unit tests of the typing rules that are easy to get subtly wrong:
//! family inference, set normalisation, flags, rates, consts, identities,
//! test packet defaults, table files and diagnostic order.

use std::collections::{BTreeSet, HashMap};

use patronus_grammar::ast::Verdict;

use crate::codes::Code;
use crate::diag::{Diagnostic, FileId, Files};
use crate::net::{PortRange, Prefix};
use crate::typed::{self, Family, NS_PER_SEC, RateKey, TableId, tcp_flags};
use crate::{LoadedFile, TableLoader};

/// Table files from a map.
struct MapLoader(HashMap<&'static str, &'static str>);

impl TableLoader for MapLoader {
    fn load(&self, _policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        self.0
            .get(path)
            .map(|text| LoadedFile {
                name: path.to_string(),
                text: text.to_string(),
            })
            .ok_or_else(|| "no such file".to_string())
    }
}

fn run_with(
    source: &str,
    tables: &[(&'static str, &'static str)],
) -> (Files, Option<typed::Policy>, Vec<Diagnostic>) {
    let mut files = Files::new();
    let file = files.add("test.pf", source);
    let loader = MapLoader(tables.iter().copied().collect());
    let checked = crate::check(&mut files, file, &loader);
    (files, checked.policy, checked.diagnostics)
}

/// The typed policy of a source that must check without errors.
fn ok(source: &str) -> typed::Policy {
    let (files, policy, diagnostics) = run_with(source, &[]);
    policy.unwrap_or_else(|| panic!("{}", crate::render::human(&files, &diagnostics, false)))
}

fn errors(source: &str) -> Vec<Diagnostic> {
    let (_, policy, diagnostics) = run_with(source, &[]);
    assert!(policy.is_none(), "expected errors in {source}");
    diagnostics
        .into_iter()
        .filter(|d| d.severity == crate::diag::Severity::Error)
        .collect()
}

fn codes(source: &str) -> Vec<Code> {
    errors(source).iter().map(|d| d.code).collect()
}

fn text_at(source: &str, d: &Diagnostic) -> String {
    source[d.primary.span.range()].to_string()
}

fn rule(source: &str) -> typed::Rule {
    ok(source).rules.remove(0)
}

fn prefix(text: &str) -> Prefix {
    let (addr, len) = text.split_once('/').unwrap();
    Prefix::new(addr.parse().unwrap(), len.parse().unwrap()).unwrap()
}

#[test]
fn family_is_implied_by_addresses_and_icmp() {
    assert_eq!(
        rule("allow from 10.0.0.0/8").matcher.family,
        Some(Family::Ipv4)
    );
    assert_eq!(
        rule("allow to 2001:db8::1").matcher.family,
        Some(Family::Ipv6)
    );
    assert_eq!(
        rule("allow from { 10.0.0.0/8, 2001:db8::/32 }")
            .matcher
            .family,
        None
    );
    assert_eq!(
        rule("table t { 10.0.0.1 }\nallow from @t").matcher.family,
        None
    );
    assert_eq!(rule("allow icmpv6").matcher.family, Some(Family::Ipv6));
    assert_eq!(rule("allow proto 1").matcher.family, Some(Family::Ipv4));
    assert_eq!(rule("allow proto { icmp, icmpv6 }").matcher.family, None);
    assert_eq!(rule("allow ip6 tcp").matcher.family, Some(Family::Ipv6));
    // A mixed set with one-family addresses on the other side is fine.
    let r =
        rule("const admins = { 192.0.2.0/24, 2001:db8::/48 }\nallow from $admins to 192.0.2.10");
    assert_eq!(r.matcher.family, Some(Family::Ipv4));
    // A negated list implies its family too (as in pf).
    let r = rule("allow from !10.0.0.0/8");
    assert_eq!(r.matcher.family, Some(Family::Ipv4));
    assert!(r.matcher.src.as_ref().is_some_and(|m| m.negated));
}

#[test]
fn families_that_disagree_are_reported() {
    assert_eq!(codes("allow ip4 from 2001:db8::/32"), [Code::FamilyMix]);
    assert_eq!(
        codes("allow from 10.0.0.1 to 2001:db8::1"),
        [Code::FamilyMix]
    );
    assert_eq!(codes("allow icmp from 2001:db8::1"), [Code::FamilyMix]);
    assert_eq!(codes("allow icmpv6 ip4"), [Code::FamilyMix]);
    let d = &errors("allow ip6 from 10.0.0.1")[0];
    assert_eq!(d.secondary.len(), 1);
}

#[test]
fn ports_are_merged_and_need_tcp_or_udp() {
    let r = rule("allow tcp to port { 443, 80, 81-90, 85 }");
    let ports = r.matcher.dst_ports.unwrap();
    assert_eq!(
        ports.ranges,
        [PortRange { lo: 80, hi: 90 }, PortRange { lo: 443, hi: 443 }]
    );
    assert!(!ports.negated);
    assert!(
        rule("allow proto { tcp, udp } to port 53")
            .matcher
            .dst_ports
            .is_some()
    );
    assert!(
        rule("allow tcp from any port !{ 0-1023 }")
            .matcher
            .src_ports
            .unwrap()
            .negated
    );
    assert_eq!(
        codes("allow proto { tcp, icmp } to port 53"),
        [Code::WrongKind]
    );
    assert_eq!(codes("allow to port 53"), [Code::WrongKind]);
    assert_eq!(codes("allow tcp to port 65536"), [Code::PortRange]);
    assert_eq!(codes("allow tcp to port 10-5"), [Code::PortRange]);
    // `to port 80` with no address means any address.
    assert!(rule("allow tcp to port 80").matcher.dst.is_none());
}

#[test]
fn addresses_are_normalised() {
    let r = rule("allow from { 10.1.2.3/8, 10.0.0.0/8, 192.0.2.1 }");
    let src = r.matcher.src.unwrap();
    assert_eq!(
        src.set.prefixes,
        [prefix("10.0.0.0/8"), prefix("192.0.2.1/32")]
    );
    assert!(rule("allow from { any, 10.0.0.1 }").matcher.src.is_none());
    assert_eq!(codes("allow from !any"), [Code::WrongKind]);
    assert_eq!(codes("allow from 10.0.0.0/33"), [Code::CidrLength]);
    let r = rule("table a { 10.0.0.1 }\ntable b { 10.0.0.2 }\nallow from { @b, @a, @b }");
    assert_eq!(r.matcher.src.unwrap().set.tables, [TableId(0), TableId(1)]);
}

#[test]
fn protocols_by_name_number_and_const() {
    let r = rule("const p = { tcp, 47 }\nallow proto $p");
    assert_eq!(r.matcher.protos, Some(BTreeSet::from([6, 47])));
    assert_eq!(rule("allow proto !tcp").matcher.protos.unwrap().len(), 255);
    assert_eq!(codes("allow proto 256"), [Code::WrongKind]);
    let d = &errors("allow proto tpc")[0];
    assert_eq!(d.help.as_deref(), Some("did you mean `tcp`?"));
}

#[test]
fn flags_follow_pf() {
    let f = rule("allow tcp flags S/SA").matcher.tcp_flags.unwrap();
    assert_eq!(
        (f.set, f.mask),
        (tcp_flags::SYN, tcp_flags::SYN | tcp_flags::ACK)
    );
    // No mask: the whole flags byte must be equal.
    let f = rule("allow tcp flags S").matcher.tcp_flags.unwrap();
    assert_eq!((f.set, f.mask), (tcp_flags::SYN, 0xff));
    let source = "allow tcp flags S/A";
    assert_eq!(codes(source), [Code::WrongKind]);
    let source = "allow tcp flags SQ";
    assert_eq!(text_at(source, &errors(source)[0]), "Q");
    assert_eq!(codes("allow udp flags S"), [Code::WrongKind]);
    assert_eq!(codes("allow flags S"), [Code::WrongKind]);
}

#[test]
fn icmp_types_by_family() {
    let r = rule("allow icmp type { echo-request, 0 } code 0");
    let types: Vec<(u8, Option<u8>)> = r
        .matcher
        .icmp
        .unwrap()
        .iter()
        .map(|m| (m.ty, m.code))
        .collect();
    assert_eq!(types, [(0, Some(0)), (8, Some(0))]);
    let r = rule("allow icmpv6 type { echo-request, packet-too-big }");
    let types: Vec<u8> = r.matcher.icmp.unwrap().iter().map(|m| m.ty).collect();
    assert_eq!(types, [2, 128]);
    assert_eq!(codes("allow icmp type packet-too-big"), [Code::WrongKind]);
    assert_eq!(codes("allow tcp type 8"), [Code::WrongKind]);
    assert_eq!(
        codes("allow proto { icmp, icmpv6 } type 8"),
        [Code::WrongKind]
    );
}

#[test]
fn rates_and_bursts() {
    let r = rule("limit udp rate 10/m");
    let rate = r.rate.unwrap();
    assert_eq!(rate.burst, 1);
    assert_eq!(rate.interval_ns, 6 * NS_PER_SEC);
    assert_eq!(rate.key, RateKey::Src);
    let rate = rule("allow tcp to port 22 rate 10/s burst 20 per flow")
        .rate
        .unwrap();
    assert_eq!(
        (rate.burst, rate.key, rate.interval_ns),
        (20, RateKey::Flow, NS_PER_SEC / 10)
    );
    assert_eq!(
        rule("limit udp rate 3/s").rate.unwrap().interval_ns,
        333_333_333
    );
    assert_eq!(codes("limit udp rate 0/s"), [Code::RateZero]);
    assert_eq!(codes("limit udp rate 5/s burst 0"), [Code::RateZero]);
    assert_eq!(codes("limit udp"), [Code::WrongKind]);
    assert_eq!(codes("deny udp rate 5/s"), [Code::WrongKind]);
    assert_eq!(codes("limit udp rate 5/s per host"), [Code::WrongKind]);
}

#[test]
fn consts_used_as_the_wrong_kind_point_at_both_places() {
    let source = "const web = { 80, 443 }\nallow tcp from $web";
    let found = errors(source);
    assert_eq!(found.len(), 1, "one report per use: {found:?}");
    let d = &found[0];
    assert_eq!(
        (d.code, text_at(source, d).as_str()),
        (Code::WrongKind, "$web")
    );
    let secondary: Vec<&str> = d
        .secondary
        .iter()
        .map(|l| &source[l.span.range()])
        .collect();
    assert_eq!(secondary, ["80", "web"]);
}

#[test]
fn const_problems_are_reported_once_at_the_definition() {
    let source = "const net = 10.0.0.0/40\nallow from $net\nallow to $net";
    let found = errors(source);
    assert_eq!(found.len(), 1);
    assert_eq!(text_at(source, &found[0]), "10.0.0.0/40");
    // A const mixing kinds.
    assert_eq!(codes("const x = { 10.0.0.1, 1-5 }"), [Code::WrongKind]);
    let source = "const x = { 80, 10.0.0.1 }";
    assert_eq!(text_at(source, &errors(source)[0]), "80");
    assert!(
        ok("const x = { 80, 1000-2000 }\nallow tcp to port $x").rules[0]
            .matcher
            .dst_ports
            .is_some()
    );
    // Cycles.
    assert!(
        codes("const a = { $b }\nconst b = { $a }\nallow from $a")
            .iter()
            .all(|c| *c == Code::UnknownConst)
    );
    // Consts of consts, used before their definition.
    let r = rule(
        "allow tcp from $all port 22\nconst all = { $lan, 192.0.2.1 }\nconst lan = 10.0.0.0/8",
    );
    assert_eq!(r.matcher.src.unwrap().set.prefixes.len(), 2);
}

#[test]
fn negation_only_of_a_whole_value() {
    let source = "allow from { 10.0.0.1, !10.0.0.2 }";
    let d = &errors(source)[0];
    assert_eq!(
        (d.code, text_at(source, d).as_str()),
        (Code::WrongKind, "!10.0.0.2")
    );
    let source = "const notlan = !10.0.0.0/8\nallow from { $notlan, 192.0.2.1 }";
    let d = &errors(source)[0];
    assert_eq!(text_at(source, d), "$notlan");
    assert!(
        rule("const notlan = !10.0.0.0/8\nallow from $notlan")
            .matcher
            .src
            .unwrap()
            .negated
    );
}

#[test]
fn unknown_names_suggest_close_ones() {
    let d = &errors("const admins = 10.0.0.1\nallow from $admin")[0];
    assert_eq!(d.code, Code::UnknownConst);
    assert_eq!(d.help.as_deref(), Some("did you mean `$admins`?"));
    let d = &errors("table block { 10.0.0.1 }\ndeny from @blok")[0];
    assert_eq!(d.code, Code::UnknownTable);
    assert_eq!(d.help.as_deref(), Some("did you mean `@block`?"));
}

#[test]
fn identity_is_the_label_or_the_collapsed_text() {
    let p = ok(
        "allow tcp   to port 22   # ssh\n   label \"ssh\"\nallow udp\n    to port 53 # dns\n  log",
    );
    assert_eq!(p.rules[0].identity, "ssh");
    assert_eq!(p.rules[1].identity, "allow udp to port 53 log");
    assert!(p.rules[1].log);
}

#[test]
fn test_packets_get_defaults() {
    let p = ok(
        "allow tcp\ntest \"t\" {\n expect pass tcp 10.0.0.1:1000 -> 10.0.0.2:22\n out icmpv6 2001:db8::1 -> 2001:db8::2\n expect drop udp [2001:db8::1]:53 -> [2001:db8::2]:53 vlan 7 repeat 3\n}",
    );
    let steps = &p.tests[0].steps;
    assert_eq!(steps[0].expect, Some(Verdict::Pass));
    assert_eq!(steps[0].packet.tcp_flags, tcp_flags::SYN);
    assert_eq!(
        (steps[0].packet.src_port, steps[0].packet.dst_port),
        (1000, 22)
    );
    assert_eq!(steps[1].expect, None);
    assert_eq!(
        (steps[1].packet.icmp_type, steps[1].packet.icmp_code),
        (128, 0)
    );
    assert_eq!((steps[2].packet.vlan, steps[2].packet.repeat), (Some(7), 3));
    assert_eq!(
        codes("test \"t\" { expect pass icmp 10.0.0.1 -> 10.0.0.2 type packet-too-big }"),
        [Code::BadPacket]
    );
    assert_eq!(
        codes("test \"t\" { expect pass icmp 2001:db8::1 -> 2001:db8::2 }"),
        [Code::BadPacket]
    );
}

#[test]
fn options_are_folded() {
    let p = ok(
        "options {\n default = allow\n conntrack = off\n conntrack-size = 5\n log-rate = 0\n arp = drop\n timeout tcp-syn = 30s\n}",
    );
    assert_eq!(p.options.default, Verdict::Pass);
    assert!(!p.options.conntrack && !p.options.arp_pass);
    assert_eq!((p.options.conntrack_size, p.options.log_rate), (5, 0));
    assert_eq!(p.options.timeouts.tcp_syn, 30 * NS_PER_SEC);
    assert_eq!(codes("options { ndp = maybe }"), [Code::BadOption]);
    assert_eq!(
        codes("options { arp = drop }\noptions { arp = pass }"),
        [Code::DuplicateField]
    );
}

#[test]
fn table_files_are_loaded_and_point_into_themselves() {
    let tables = [("block.txt", "10.0.0.1\n# x\n2001:db8::/32 # y\n10.0.0.1\n")];
    let (files, policy, diagnostics) =
        run_with("table block file \"block.txt\"\ndeny from @block", &tables);
    let policy = policy.unwrap_or_else(|| panic!("{diagnostics:?}"));
    assert_eq!(policy.tables[0].prefixes.len(), 2);
    let source_file = policy.tables[0].source_file.unwrap();
    assert_eq!(files.get(source_file).name, "block.txt");

    let tables = [("block.txt", "10.0.0.1\nbogus\n")];
    let (_, policy, diagnostics) =
        run_with("table block file \"block.txt\"\ndeny from @block", &tables);
    assert!(policy.is_none());
    assert_eq!(diagnostics[0].code, Code::TableLine);
    assert_eq!(diagnostics[0].primary.file, FileId(1));

    let (_, _, diagnostics) = run_with("table block file \"nope.txt\"\ndeny from @block", &[]);
    assert_eq!(diagnostics[0].code, Code::TableFile);
}

#[test]
fn diagnostics_come_in_source_order() {
    let source = "allow tcp to port 70000\nconst a = 1\nconst a = 2\nallow from $nope";
    let found = errors(source);
    let starts: Vec<usize> = found.iter().map(|d| d.primary.span.start).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
    assert_eq!(found.len(), 3);
}

#[test]
fn syntax_errors_are_p0001_and_checking_goes_on() {
    let found = codes("allow tcp to port\nallow from $nope");
    assert_eq!(found, [Code::Syntax, Code::UnknownConst]);
    // A const whose definition did not parse is not also unknown.
    let found = codes("const lan = { 10.0.0.0/8,\nallow from $lan\nallow from $lan2");
    assert_eq!(found, [Code::Syntax, Code::UnknownConst]);
}

/// The example of LANGUAGE.md §1 checks cleanly and means what it says.
#[test]
fn language_example_checks() {
    let source = r#"
interface eth0

const web    = { 80, 443 }
const admins = { 192.0.2.0/24, 2001:db8:1::/48 }

table blocklist file "blocklist.txt"        # one address or CIDR per line, '#' comments
table partners  { 198.51.100.0/24, 203.0.113.7 }

options {
  default   = deny          # deny | allow
  conntrack = on            # on | off
  fragments = drop          # drop (later: track)
}

deny  from @blocklist                                   label "blocklist" log
allow tcp to port $web
allow tcp from $admins to port 22 rate 10/s burst 20 per src
limit udp to port 53 rate 1000/s per src
allow udp from 10.0.0.0/8 to port 53
allow icmp type echo-request
allow icmpv6 type { echo-request, packet-too-big }
allow proto 47 from @partners                           # GRE

test "web is open, blocklist wins" {
  expect pass tcp 203.0.113.9:40000 -> 192.0.2.10:443 flags S
  expect drop tcp 198.51.100.4:40000 -> 192.0.2.10:443 flags S   # if listed in blocklist.txt
  expect drop udp 198.51.100.1:5000 -> 192.0.2.10:5353
  out  tcp 192.0.2.10:50000 -> 198.51.100.7:443 flags S          # host-originated
  expect pass tcp 198.51.100.7:443 -> 192.0.2.10:50000 flags SA  # reply is established
}
"#;
    let tables = [("blocklist.txt", "198.51.100.4\n# more\n2001:db8:bad::/48\n")];
    let (files, policy, diagnostics) = run_with(source, &tables);
    let policy =
        policy.unwrap_or_else(|| panic!("{}", crate::render::human(&files, &diagnostics, false)));
    assert_eq!(
        policy.interface.as_ref().map(|i| i.0.as_str()),
        Some("eth0")
    );
    assert_eq!(policy.rules.len(), 8);
    assert_eq!(policy.tables.len(), 2);
    assert_eq!(policy.tests[0].steps.len(), 5);
    let admins = &policy.rules[2];
    assert_eq!(admins.matcher.family, None);
    assert_eq!(
        admins.rate.map(|r| (r.burst, r.key)),
        Some((20, RateKey::Src))
    );
    assert_eq!(policy.rules[5].matcher.family, Some(Family::Ipv4));
    assert_eq!(policy.rules[0].identity, "blocklist");
    assert_eq!(policy.rules[1].identity, "allow tcp to port $web");
}

#[test]
fn protocol_named_timeouts() {
    let p = ok("options {\n timeout udp = 60s\n timeout icmp = 10s\n timeout udp-stream = 2m\n}");
    assert_eq!(p.options.timeouts.udp, 60 * NS_PER_SEC);
    assert_eq!(p.options.timeouts.icmp, 10 * NS_PER_SEC);
    assert_eq!(p.options.timeouts.udp_stream, 120 * NS_PER_SEC);
}

/// `const c0 = $c1`, ..., `const cN = 192.0.2.1`, used by one rule.
fn const_chain(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("const c{i} = $c{}\n", i + 1));
    }
    s.push_str(&format!("const c{n} = 192.0.2.1\nallow from $c0\n"));
    s
}

/// `const c{i} = { $c{i+1}, $c{i+1} }`: `c0` holds 2^n elements.
fn doubling_consts(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("const c{i} = {{ $c{}, $c{} }}\n", i + 1, i + 1));
    }
    s.push_str(&format!("const c{n} = 192.0.2.1\nallow from $c0\n"));
    s
}

#[test]
fn const_chains_up_to_the_depth_limit_resolve() {
    use crate::limits::MAX_CONST_DEPTH;
    // A chain of MAX_CONST_DEPTH consts (the last one holds the address).
    let r = rule(&const_chain(MAX_CONST_DEPTH - 1));
    assert_eq!(r.matcher.src.unwrap().set.prefixes.len(), 1);
    let source = const_chain(MAX_CONST_DEPTH);
    let found = errors(&source);
    assert_eq!(
        found.len(),
        1,
        "one report, where the limit is crossed: {found:?}"
    );
    assert_eq!(found[0].code, Code::ExpansionLimit);
    assert_eq!(text_at(&source, &found[0]), "c0");
}

#[test]
fn a_long_const_chain_is_one_error_in_linear_time() {
    // 100,000 links overflowed the stack (10,000 did) and 3,000 took 12 s.
    let n = 100_000;
    let source = const_chain(n);
    let started = std::time::Instant::now();
    let found = errors(&source);
    let elapsed = started.elapsed();
    assert_eq!(found.len(), 1, "{:?}", &found[..found.len().min(3)]);
    assert_eq!(found[0].code, Code::ExpansionLimit);
    let crossing = n - crate::limits::MAX_CONST_DEPTH;
    assert_eq!(text_at(&source, &found[0]), format!("c{crossing}"));
    assert!(found[0].message.contains("more than the limit of 64"));
    // Debug build on a busy 2-core machine; release takes ~0.1 s.
    assert!(elapsed.as_secs() < 30, "took {elapsed:?}");
}

#[test]
fn doubling_consts_stop_at_the_const_past_the_size_limit() {
    // 30 levels asked for 2^30 elements (6 GiB): the const that holds more
    // than 2^20 is c9 (2^21), its parts are within the limit.
    let source = doubling_consts(30);
    let started = std::time::Instant::now();
    let found = errors(&source);
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].code, Code::ExpansionLimit);
    assert_eq!(text_at(&source, &found[0]), "c9");
    assert!(found[0].message.contains("more than 1048576 elements"));
    // Within the limit it works (duplicates collapse in the typed set).
    let r = rule(&doubling_consts(12));
    assert_eq!(r.matcher.src.unwrap().set.prefixes.len(), 1);
}

#[test]
fn a_value_using_a_large_const_twice_is_over_the_limit() {
    // c0 holds 2^19 elements: fine alone, not three times in one value.
    let mut source = doubling_consts(19).replace("allow from $c0\n", "");
    source.push_str("allow from { $c0, $c0, $c0 }\n");
    let found = errors(&source);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].code, Code::ExpansionLimit);
    assert!(
        found[0]
            .message
            .starts_with("this value expands to more than")
    );
    let third = source.rfind("$c0").unwrap();
    assert_eq!(found[0].primary.span.start, third);
}

#[test]
fn consts_in_cycles_are_reported_without_expanding_them() {
    let source = "const a = { $b, 192.0.2.1 }\nconst b = { $c }\nconst c = $a\nconst d = $d\nallow from $a\nallow from $d";
    let found = errors(source);
    assert!(
        found.iter().all(|d| d.code == Code::UnknownConst),
        "{found:?}"
    );
    let at: Vec<String> = found.iter().map(|d| text_at(source, d)).collect();
    assert_eq!(at, ["$a", "$d"]);
    // A const negated as a whole, used in another const's set.
    let source = "const notlan = !10.0.0.0/8\nconst x = { $notlan, 192.0.2.1 }";
    let d = &errors(source)[0];
    assert_eq!(
        (d.code, text_at(source, d).as_str()),
        (Code::WrongKind, "$notlan")
    );
}

#[test]
fn a_huge_identifier_is_quoted_bounded_in_every_format() {
    // A 10 MB name was echoed three times (message, source line, help).
    let name = "a".repeat(10_000_000);
    let source = format!("allow from ${name}\ndeny from @{name}\n");
    let (files, _, diagnostics) = run_with(&source, &[]);
    assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
    let tool = crate::render::ToolInfo {
        name: "patronusc".into(),
        version: "0".into(),
    };
    let outputs = [
        ("human", crate::render::human(&files, &diagnostics, false)),
        ("json", crate::render::json_lines(&files, &diagnostics)),
        ("github", crate::render::github(&files, &diagnostics)),
        (
            "sarif",
            crate::render::sarif(&[(&files, diagnostics.as_slice())], &tool),
        ),
    ];
    for (format, text) in outputs {
        let longest_run = text
            .split(|c: char| c != 'a')
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest_run <= 200, "{format}: a run of {longest_run} `a`s");
        // SARIF also carries every code's explanation page.
        let budget = if format == "sarif" { 200_000 } else { 4_000 };
        assert!(text.len() < budget, "{format}: {} bytes", text.len());
        assert!(text.contains('…'), "{format}: not marked as cut");
    }
}

#[test]
fn a_policy_past_the_verifier_budget_is_refused_naming_the_rule() {
    use super::budget::{MAX_VERIFIED_INSNS, VERIFIED_PER_RULE};
    let fits = (MAX_VERIFIED_INSNS / VERIFIED_PER_RULE) as usize;
    // Rules sharing their values (few bitmaps): only the verifier
    // estimate is over; no two rules are alike (no lint floods).
    let rule_text = |i: usize| {
        format!(
            "allow tcp from 10.0.0.{} to port {}\n",
            i / 1024,
            1 + i % 1024
        )
    };
    let source: String = (0..=fits).map(rule_text).collect();
    let (_, policy, diagnostics) = run_with(&source, &[]);
    assert!(policy.is_none());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!(d.code, Code::KernelLimit);
    assert!(
        d.message.contains("over the kernel's limit of 1000000"),
        "{}",
        d.message
    );
    // The first rule past the limit is the one underlined.
    let line = source[..d.primary.span.start].matches('\n').count() + 1;
    assert_eq!(line, fits + 1);
    // One rule fewer fits.
    let source: String = (0..fits).map(rule_text).collect();
    let (_, policy, diagnostics) = run_with(&source, &[]);
    assert!(policy.is_some(), "{diagnostics:?}");
}

#[test]
fn a_policy_whose_bitmaps_would_not_fit_is_refused_before_lowering() {
    // 40,000 rules of distinct addresses and ports: about 2 × 40,000 × 625
    // words of bitmaps, past 512 MiB (100,000 such rules took 9.5 GB).
    let source: String = (0..40_000u32)
        .map(|i| {
            format!(
                "allow tcp from 10.{}.{}.{} to port {}\n",
                i / 65536,
                (i / 256) % 256,
                i % 256,
                1 + i % 60_000
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let (_, policy, diagnostics) = run_with(&source, &[]);
    assert!(policy.is_none());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].code, Code::KernelLimit);
    assert!(diagnostics[0].message.contains("512 MiB"));
    let line = source[..diagnostics[0].primary.span.start]
        .matches('\n')
        .count()
        + 1;
    assert!((30_000..40_000).contains(&line), "blamed line {line}");
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn fifty_thousand_unused_consts_are_linted_in_linear_time() {
    // Every unused const was compared with every definition: 47 s.
    let mut source = String::from("const base = 192.0.2.1\n");
    for i in 0..50_000 {
        source.push_str(&format!("const u{i} = {{ $base }}\n"));
    }
    source.push_str("allow tcp\n");
    let started = std::time::Instant::now();
    let (_, policy, diagnostics) = run_with(&source, &[]);
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    assert!(policy.is_some());
    let base = diagnostics
        .iter()
        .find(|d| d.code == Code::UnusedConst && text_at(&source, d) == "base")
        .expect("base is unused");
    assert_eq!(
        base.notes,
        ["only `u0`, `u1`, `u2`, `u3`, `u4`, 49995 more refer to it, and they are unused too"]
    );
}

#[test]
fn many_unknown_names_do_not_make_suggestions_quadratic() {
    // 20,000 consts and 20,000 misspelt uses: over two minutes before.
    let mut source = String::new();
    for i in 0..20_000 {
        source.push_str(&format!("const c{i} = 192.0.2.1\n"));
    }
    for i in 0..20_000 {
        source.push_str(&format!("allow from $d{i}\n"));
    }
    // And a syntax error, so every unknown name is also looked up among
    // the statements that did not parse.
    source.push_str("allow from (\n");
    let started = std::time::Instant::now();
    let found = errors(&source);
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    let unknown: Vec<&Diagnostic> = found
        .iter()
        .filter(|d| d.code == Code::UnknownConst)
        .collect();
    assert_eq!(unknown.len(), 20_000);
    // The first ones still get their suggestion.
    assert_eq!(unknown[0].help.as_deref(), Some("did you mean `$c0`?"));
    assert_eq!(
        unknown[19_999].help.as_deref(),
        Some("define it: `const d19999 = ...`")
    );
}

#[test]
fn many_diagnostics_on_one_long_line_render_in_linear_time() {
    // 50,000 unknown names on one 440 KB line: the human output printed
    // the whole line for each (over 2 minutes and 1.1 GB), JSON counted
    // each column from the start of the line.
    let n = 20_000;
    let names: Vec<String> = (0..n).map(|i| format!("$a{i}")).collect();
    let source = format!("allow from {{ {} }} # ü\n", names.join(", "));
    let (files, _, diagnostics) = run_with(&source, &[]);
    assert_eq!(diagnostics.len(), n);
    let started = std::time::Instant::now();
    let human = crate::render::human(&files, &diagnostics, false);
    let json = crate::render::json_lines(&files, &diagnostics);
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    assert!(human.len() < n * 800, "{} bytes", human.len());
    // Columns are the file's, counted in characters.
    let last = source.rfind("$a19999").expect("in the source");
    assert!(
        human.contains(&format!("test.pf:1:{}\n", last + 1)),
        "no true column"
    );
    assert!(json.contains(&format!("\"column\":{}", last + 1)));
    assert!(
        human.contains("$a19998, $a19999 } # ü\n"),
        "the excerpt shows the label"
    );
}

#[test]
fn rules_nested_in_each_other_are_linted_in_bounded_time() {
    // `port 1-1`, `port 1-2`, ...: each rule is covered by every later one,
    // and duplicate-rule compared it with all of them (4,000 rules: 87 s
    // in a debug build; 30,000 in release: minutes).
    let n = 4_000;
    let source: String = (1..=n)
        .map(|i| format!("allow tcp to port 1-{i}\n"))
        .collect();
    let started = std::time::Instant::now();
    let (_, policy, diagnostics) = run_with(&source, &[]);
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    assert!(policy.is_some());
    let redundant = diagnostics
        .iter()
        .filter(|d| d.code == Code::DuplicateRule)
        .count();
    // Every rule but the last is redundant under a later one.
    assert_eq!(redundant, n - 1);
}
