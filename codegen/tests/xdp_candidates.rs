//! Candidate lists (`codegen::layout::candidates`) in the kernel: a policy of
//! hundreds of selective rules (ports, prefixes, both families, port
//! ranges, port-less ICMP rules) compiles its deny and allow phases to
//! candidate searches, and every rule's own packet, its near misses and
//! unmatched packets get the interpreter's verdict and counters.

mod xdp_common;

use std::net::IpAddr;

use patronus_codegen::layout;
use patronus_compiler::interp::Interpreter;
use patronus_compiler::typed::{Packet, Policy};
use patronus_compiler::{LoadedFile, TableLoader, ir, packet};

struct NoTables;

impl TableLoader for NoTables {
    fn load(&self, _policy: &str, path: &str) -> Result<LoadedFile, String> {
        Err(format!("no table file {path} in this test"))
    }
}

fn check(source: String) -> Policy {
    xdp_common::check_policy(&source, &NoTables)
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn pkt(proto: u8, src: &str, dst: &str, dst_port: u16) -> Packet {
    xdp_common::test_packet(proto, addr(src), addr(dst), dst_port)
}

#[test]
fn selective_rules_use_candidate_lists_and_agree_with_the_interpreter() {
    const TEST: &str = "selective_rules_use_candidate_lists_and_agree_with_the_interpreter";
    if !xdp_common::kernel(TEST) {
        return;
    }
    const RULES: u32 = 400;
    let mut source = String::from("options { conntrack = off }\n");
    let mut packets = Vec::new();
    for i in 0..RULES {
        let (a, b) = (i / 200, i % 200);
        match i % 5 {
            0 => {
                let port = 1000 + i as u16;
                source.push_str(&format!(
                    "deny tcp from {{ 10.{a}.{b}.0/24, 172.16.{b}.0/24 }} to port {port}\n"
                ));
                packets.push(pkt(6, &format!("10.{a}.{b}.9"), "203.0.113.1", port));
                packets.push(pkt(6, &format!("172.16.{b}.9"), "203.0.113.1", port));
                packets.push(pkt(6, &format!("10.{a}.{b}.9"), "203.0.113.1", port + 1));
            }
            1 => {
                let port = 20_000 + i as u16;
                source.push_str(&format!("allow udp from 10.{a}.{b}.0/24 to port {port}\n"));
                packets.push(pkt(17, &format!("10.{a}.{b}.9"), "203.0.113.1", port));
                packets.push(pkt(17, "192.0.2.1", "203.0.113.1", port));
            }
            2 => {
                let lo = 30_000 + 4 * i as u16;
                source.push_str(&format!("allow tcp to port {lo}-{}\n", lo + 3));
                packets.push(pkt(6, "192.0.2.1", "203.0.113.1", lo + 2));
                packets.push(pkt(17, "192.0.2.1", "203.0.113.1", lo + 2));
            }
            3 => {
                let port = 50_000 + i as u16;
                source.push_str(&format!(
                    "allow tcp from 2001:db8:{i:x}::/48 to port {port}\n"
                ));
                packets.push(pkt(
                    6,
                    &format!("2001:db8:{i:x}::5"),
                    "2001:db8:ffff::1",
                    port,
                ));
                packets.push(pkt(6, "2001:db8:ffff::9", "2001:db8:ffff::1", port));
            }
            _ => {
                source.push_str(&format!("allow icmp from 10.{a}.{b}.0/24\n"));
                packets.push(pkt(1, &format!("10.{a}.{b}.9"), "203.0.113.1", 0));
                packets.push(pkt(1, "192.0.2.77", "203.0.113.1", 0));
            }
        }
    }
    let policy = check(source);
    let program = ir::lower(&policy);
    let (layout, _) = layout::plan(&program).expect("lays out");
    let candidate_maps = layout.primaries(&program);
    let primaries: Vec<String> = candidate_maps
        .iter()
        .map(|(m, c)| format!("{} ({} slots)", program.maps[*m].name, c.slots))
        .collect();
    eprintln!("candidate maps: {primaries:?}");
    assert!(
        candidate_maps.len() >= 2,
        "deny and allow should both search candidates: {primaries:?}"
    );
    let (_object, loaded) = xdp_common::compile_and_load(&program);
    let mut interp = Interpreter::new(&policy);
    let mut decided_by_rule = 0;
    for p in &packets {
        let frame = packet::build(p);
        let outcome = interp.inbound(&frame, 0);
        let want = xdp_common::expected(&outcome);
        let got = xdp_common::run_and_count(&loaded, &program, &frame).expect("xdp test run");
        assert_eq!(got, want, "packet {p:?}");
        if outcome.rule.is_some() {
            decided_by_rule += 1;
        }
    }
    eprintln!(
        "{} packets compared, {decided_by_rule} decided by a rule",
        packets.len()
    );
    assert!(
        decided_by_rule > packets.len() / 3,
        "too few packets hit rules"
    );
}
