//! Shared by codegen's XDP kernel tests: loading an [`Object`] with the
//! runtime crate, running a frame through it and reading the stats map back
//! as the counters the frame touched. The policy and frame generators are
//! `patronus_compiler::testgen`.

#![allow(dead_code)]

use patronus_codegen::{Object, compile};
use patronus_compiler::ir;
use patronus_compiler::semantics::{Counter, Outcome};
use patronus_grammar::ast::Verdict;
use patronus_runtime::{Image, Loaded, MapFill, ProgramKind, RuntimeError};

// Not every test that includes this module reads the policies.
#[allow(unused_imports)]
pub use patronus_compiler::testgen::repository_policies;

/// `true` when kernel tests can run (see `patronus_runtime::testing`).
pub fn kernel(test: &str) -> bool {
    patronus_runtime::testing::kernel_or_skip(test)
}

/// Loads a compiled object with its map images.
pub fn load(object: &Object) -> Loaded {
    let maps = object
        .maps
        .iter()
        .filter(|m| !m.entries.is_empty())
        .map(|m| MapFill {
            name: &m.name,
            entries: m
                .entries
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect(),
        })
        .collect();
    let image = Image {
        elf: &object.elf,
        maps,
        listings: vec![(ProgramKind::Xdp, object.listing.as_str())],
    };
    Loaded::load(&image).unwrap_or_else(|e| panic!("load failed: {e}"))
}

/// Compiles and loads a lowered program.
pub fn compile_and_load(program: &ir::Program) -> (Object, Loaded) {
    let object = compile(program).unwrap_or_else(|e| panic!("compile failed: {e}"));
    let loaded = load(&object);
    (object, loaded)
}

/// The stats map as packet counts per counter.
pub fn packet_counts(loaded: &Loaded) -> Vec<u64> {
    loaded
        .read_counters("stats")
        .expect("stats readable")
        .into_iter()
        .map(|words| words.first().copied().unwrap_or(0))
        .collect()
}

/// The counters that grew between two reads.
pub fn grown(program: &ir::Program, before: &[u64], after: &[u64]) -> Vec<Counter> {
    let mut out: Vec<Counter> = program
        .counters
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a > b)
        .map(|(c, _)| *c)
        .collect();
    out.sort();
    out
}

/// One frame through the loaded XDP program: the verdict and the counters
/// it incremented, sorted, as [`expected`] puts the interpreter's.
pub fn run_and_count(
    loaded: &Loaded,
    program: &ir::Program,
    frame: &[u8],
) -> Result<(Verdict, Vec<Counter>), RuntimeError> {
    let before = packet_counts(loaded);
    let run = loaded.run_xdp(frame)?;
    let after = packet_counts(loaded);
    let verdict = if run.retval == 2 {
        Verdict::Pass
    } else {
        Verdict::Drop
    };
    Ok((verdict, grown(program, &before, &after)))
}

/// The interpreter's outcome as verdict and sorted counters.
pub fn expected(outcome: &Outcome) -> (Verdict, Vec<Counter>) {
    let mut counters = outcome.counters.clone();
    counters.sort();
    (outcome.verdict, counters)
}

/// Checks a policy written by a test; panics with the rendered diagnostics
/// if it has errors.
pub fn check_policy(
    source: &str,
    loader: &dyn patronus_compiler::TableLoader,
) -> patronus_compiler::typed::Policy {
    let mut files = patronus_compiler::diag::Files::new();
    let file = files.add("test.pf".to_string(), source.to_string());
    let checked = patronus_compiler::check(&mut files, file, loader);
    let failed = checked.has_errors();
    checked.policy.filter(|_| !failed).unwrap_or_else(|| {
        panic!(
            "policy checks: {}",
            patronus_compiler::render::human(&files, &checked.diagnostics, false)
        )
    })
}

/// A TCP SYN (or, with `proto`, UDP/ICMP echo request) from `src` to
/// `dst:dst_port`, source port 40000.
pub fn test_packet(
    proto: u8,
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    dst_port: u16,
) -> patronus_compiler::typed::Packet {
    patronus_compiler::typed::Packet {
        proto,
        src,
        dst,
        src_port: 40_000,
        dst_port,
        tcp_flags: 0x02,
        icmp_type: 8,
        icmp_code: 0,
        vlan: None,
        repeat: 1,
    }
}
