//! DIR-24 arrays (`codegen::layout::dir24`) in the kernel: two big tables of
//! nested IPv4 prefixes from /8 to /32, one denying and one allowing, get
//! the array in front of their tries; addresses inside every kind of slot
//! (a prefix of at most /24, a /24 with longer prefixes inside, nothing)
//! get the interpreter's verdict and counters.

mod xdp_common;

use std::net::{IpAddr, Ipv4Addr};

use patronus_codegen::layout::{self, MapRole};
use patronus_compiler::interp::Interpreter;
use patronus_compiler::typed::{Packet, Policy};
use patronus_compiler::{LoadedFile, TableLoader, ir, packet};

/// Serves the two generated tables.
struct Tables(String, String);

impl TableLoader for Tables {
    fn load(&self, _policy: &str, path: &str) -> Result<LoadedFile, String> {
        let text = match path {
            "a.txt" => self.0.clone(),
            "b.txt" => self.1.clone(),
            other => return Err(format!("no table {other}")),
        };
        Ok(LoadedFile {
            name: path.to_string(),
            text,
        })
    }
}

fn check(source: &str, tables: Tables) -> Policy {
    xdp_common::check_policy(source, &tables)
}

/// xorshift64: deterministic addresses without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `count` distinct prefixes inside 10.0.0.0/8, lengths 9..=32.
fn prefixes(rng: &mut Rng, count: usize) -> Vec<(u32, u8)> {
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < count {
        let len = 9 + (rng.next() % 24) as u8;
        let addr = (10u32 << 24) | (rng.next() as u32 & 0x00FF_FFFF);
        seen.insert((addr & (u32::MAX << (32 - u32::from(len))), len));
    }
    seen.into_iter().collect()
}

fn table_text(prefixes: &[(u32, u8)]) -> String {
    prefixes
        .iter()
        .map(|&(a, l)| format!("{}/{l}\n", Ipv4Addr::from(a)))
        .collect()
}

fn tcp(src: u32, dst_port: u16) -> Packet {
    let dst = "192.0.2.1".parse().expect("address");
    xdp_common::test_packet(6, IpAddr::V4(Ipv4Addr::from(src)), dst, dst_port)
}

#[test]
fn big_tables_use_dir24_and_agree_with_the_interpreter() {
    const TEST: &str = "big_tables_use_dir24_and_agree_with_the_interpreter";
    if !xdp_common::kernel(TEST) {
        return;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let a = prefixes(&mut rng, 20_000);
    let b = prefixes(&mut rng, 20_000);
    let source = "options { conntrack = off }\n\
                  table a file \"a.txt\"\n\
                  table b file \"b.txt\"\n\
                  deny tcp from @a to port 80\n\
                  allow tcp from @b\n";
    let policy = check(source, Tables(table_text(&a), table_text(&b)));
    let program = ir::lower(&policy);
    let (layout, maps) = layout::plan(&program).expect("lays out");
    let arrays: Vec<&str> = layout
        .maps_where(|role| matches!(role, MapRole::Dir24Slots { .. }))
        .into_iter()
        .map(|m| maps[m].name.as_str())
        .collect();
    assert_eq!(arrays.len(), 2, "both tables get an array: {arrays:?}");

    // Addresses: the first, last and a middle one of sampled prefixes of
    // both tables, their neighbours, and random ones of 10.0.0.0/8.
    let mut sources = Vec::new();
    for &(addr, len) in a.iter().step_by(97).chain(b.iter().step_by(89)) {
        let size = 1u64 << (32 - u32::from(len));
        let last = (u64::from(addr) + size - 1) as u32;
        sources.extend([
            addr,
            last,
            addr + (size / 2) as u32,
            addr.wrapping_sub(1),
            last.wrapping_add(1),
        ]);
    }
    for _ in 0..500 {
        sources.push((10u32 << 24) | (rng.next() as u32 & 0x00FF_FFFF));
    }
    let (_object, loaded) = xdp_common::compile_and_load(&program);
    let mut interp = Interpreter::new(&policy);
    let mut by_rule = [0usize; 2];
    for (i, &src) in sources.iter().enumerate() {
        let p = tcp(src, if i % 2 == 0 { 80 } else { 443 });
        let frame = packet::build(&p);
        let outcome = interp.inbound(&frame, 0);
        let want = xdp_common::expected(&outcome);
        let got = xdp_common::run_and_count(&loaded, &program, &frame).expect("xdp test run");
        assert_eq!(got, want, "source {}", Ipv4Addr::from(src));
        if let Some(rule) = outcome.rule {
            by_rule[(rule.0 as usize).min(1)] += 1;
        }
    }
    eprintln!(
        "{} packets compared; decided by deny/allow: {by_rule:?}",
        sources.len()
    );
    assert!(
        by_rule[0] > 50 && by_rule[1] > 50,
        "both rules decide some packets: {by_rule:?}"
    );
}
