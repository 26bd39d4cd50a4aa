//! The benchmark corpus through the compiled reference policy in the
//! kernel: `patronus_compiler::corpus` holds the 15 benchmark packets (with
//! their first-run verdicts) and the edge cases, `benches/reference.pf` the
//! policy (its blocklist the corpus's 1,000-prefix one, written to a
//! temporary directory). Like the benchmark, the corpus's established
//! flows are set up first, here by sending the host's side of each through
//! the egress program. Every kernel verdict must be the expected one, and
//! the reference interpreter, fed the same sequence, must agree.

mod kernel_support;

use kernel_support::{TempDir, check_policy, kernel_or_skip, load};
use patronus_codegen::insn::kernel::xdp_action;
use patronus_compiler::corpus;
use patronus_compiler::interp::Interpreter;
use patronus_compiler::typed::Policy;
use patronus_grammar::ast::Verdict;

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
    let work = TempDir::new("bench");
    // reference.pf names its table relative to itself: build/pkts/.
    let pkts = work.0.join("build/pkts");
    std::fs::create_dir_all(&pkts).expect("creating build/pkts");
    std::fs::write(
        pkts.join("blocklist-1000.txt"),
        corpus::blocklist_text(1000),
    )
    .expect("writing the blocklist");
    let policy_path = work.0.join("reference.pf");
    std::fs::copy(
        kernel_support::root().join("benches/reference.pf"),
        &policy_path,
    )
    .expect("copying benches/reference.pf");

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
    let flows: Vec<Vec<u8>> = corpus::flows().iter().map(|f| f.host_frame()).collect();
    let packets: Vec<_> = corpus::packets()
        .into_iter()
        .map(|c| (c.name.to_owned(), c.first, c.frame))
        .collect();
    let edges: Vec<_> = corpus::edge_cases()
        .into_iter()
        .map(|c| (c.name.to_owned(), c.expect, c.frame))
        .collect();
    assert_eq!((packets.len(), edges.len()), (15, 39), "corpus size");
    let mut problems = check_sequence("packet", &policy, &mut kernel, &flows, &packets);
    problems.extend(check_sequence("edge", &policy, &mut kernel, &flows, &edges));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
