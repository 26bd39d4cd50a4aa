//! The benchmark's frames through the compiled reference policy in the
//! kernel: `bench/pkts/gen.py` writes the 15 benchmark packets (their
//! first-run verdicts in `packets.tsv`) and the edge cases (`edge.tsv`);
//! like the benchmark harness, the established flows of `flows.txt` are set
//! up first, here by sending the host's side of each through the egress
//! program. Every kernel verdict must be the expected one, and the
//! reference interpreter, fed the same sequence, must agree.

mod kernel_support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use kernel_support::{TempDir, check_policy, kernel_or_skip, load};
use patronus_codegen::insn::kernel::xdp_action;
use patronus_compiler::interp::Interpreter;
use patronus_compiler::packet;
use patronus_compiler::typed::{Packet, Policy};
use patronus_grammar::ast::Verdict;

fn bench_dir() -> PathBuf {
    // shared/ sits beside the repository.
    let candidates = [
        kernel_support::root().join("../shared/bench"),
        PathBuf::from("/work/shared/bench"),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("pkts/gen.py").is_file())
        .expect("shared/bench/pkts/gen.py beside the repository")
}

/// The TCP flags of the host's packet that sets up a pre-established flow:
/// an ACK, as on a connection already under way.
const FLOW_FLAGS: u8 = 0x10;

/// `flows.txt`: `proto saddr sport daddr dport`, inbound direction. The
/// host's side is the reverse.
fn flow_frames(dir: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(dir.join("flows.txt")).expect("flows.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 5, "flows.txt line {line:?}");
            let proto = match f[0] {
                "tcp" => 6,
                "udp" => 17,
                other => panic!("flows.txt: protocol {other}"),
            };
            let parse_addr = |s: &str| s.parse::<IpAddr>().expect("flow address");
            let parse_port = |s: &str| s.parse::<u16>().expect("flow port");
            packet::build(&Packet {
                proto,
                src: parse_addr(f[3]),
                dst: parse_addr(f[1]),
                src_port: parse_port(f[4]),
                dst_port: parse_port(f[2]),
                tcp_flags: FLOW_FLAGS,
                icmp_type: 0,
                icmp_code: 0,
                vlan: None,
                repeat: 1,
            })
        })
        .collect()
}

/// (name, expected verdict, frame) from a TSV whose first columns are
/// name and verdict, frames in `dir/NAME.bin`.
fn frames(dir: &Path, tsv: &str) -> Vec<(String, Verdict, Vec<u8>)> {
    let text = std::fs::read_to_string(dir.join(tsv)).expect("tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let verdict = match cols.get(1).copied() {
                Some("PASS") => Verdict::Pass,
                Some("DROP") => Verdict::Drop,
                other => panic!("{tsv}: verdict {other:?}"),
            };
            let frame = std::fs::read(dir.join(format!("{}.bin", cols[0]))).expect("frame");
            (cols[0].to_owned(), verdict, frame)
        })
        .collect()
}

fn verdict_of(retval: u32) -> Option<Verdict> {
    match retval as i32 {
        xdp_action::PASS => Some(Verdict::Pass),
        xdp_action::DROP => Some(Verdict::Drop),
        _ => None,
    }
}

/// Runs `frames` in order on both engines after setting up the flows;
/// returns the disagreements.
fn check_sequence(
    label: &str,
    policy: &Policy,
    kernel: &mut patronus_cli::cmd_test::KernelPolicy,
    flows: &[Vec<u8>],
    frames: &[(String, Verdict, Vec<u8>)],
) -> Vec<String> {
    let mut problems = Vec::new();
    kernel.loaded.reset_state().expect("reset");
    let mut interp = Interpreter::new(policy);
    let mut now = 0u64;
    for flow in flows {
        now += 1_000_000;
        interp.outbound(flow, now);
        if let Err(e) = kernel.loaded.run_tc(flow) {
            problems.push(format!("{label}: egress program on a flow frame: {e}"));
        }
    }
    for (name, expected, frame) in frames {
        now += 1_000_000;
        let oracle = interp.inbound(frame, now).verdict;
        if oracle != *expected {
            problems.push(format!(
                "{label} {name}: interpreter says {oracle:?}, expected {expected:?}"
            ));
        }
        match kernel.loaded.run_xdp(frame) {
            Ok(run) => match verdict_of(run.retval) {
                Some(v) if v == *expected => {}
                v => problems.push(format!(
                    "{label} {name}: kernel returned {} ({v:?}), expected {expected:?}",
                    run.retval
                )),
            },
            Err(e) => problems.push(format!("{label} {name}: {e}")),
        }
    }
    problems
}

#[test]
fn bench_frames_get_their_verdicts_in_the_kernel() {
    if !kernel_or_skip("bench_frames_get_their_verdicts_in_the_kernel") {
        return;
    }
    let bench = bench_dir();
    let work = TempDir::new("bench");
    let pkts = work.0.join("build/pkts");
    let pkts_arg = pkts.display().to_string();
    let gen_py = bench.join("pkts/gen.py").display().to_string();
    kernel_support::run("python3", &[&gen_py, &pkts_arg]);
    // reference.pf names its table relative to the bench directory.
    let policy_path = work.0.join("reference.pf");
    std::fs::copy(bench.join("reference.pf"), &policy_path).expect("copying reference.pf");

    let (_, policy) = check_policy(&policy_path);
    let mut kernel = load(&policy_path, &policy);
    eprintln!(
        "reference.pf: {} instructions, verified_insns {:?}",
        kernel.object.insn_count,
        kernel
            .loaded
            .stats(patronus_runtime::ProgramKind::Xdp)
            .and_then(|s| s.verified_insns)
    );
    let flows = flow_frames(&pkts);
    let mut problems = check_sequence(
        "packets.tsv",
        &policy,
        &mut kernel,
        &flows,
        &frames(&pkts, "packets.tsv"),
    );
    problems.extend(check_sequence(
        "edge.tsv",
        &policy,
        &mut kernel,
        &flows,
        &frames(&pkts.join("edge"), "edge.tsv"),
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
