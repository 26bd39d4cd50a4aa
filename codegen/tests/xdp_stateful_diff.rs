//! Differential test with state: generated policies with conntrack on and
//! rate-limited rules, and generated sequences of inbound (valid and
//! malformed) and outbound frames, through the compiled object in the
//! kernel (`BPF_PROG_TEST_RUN`: XDP for inbound, the tc egress program for
//! outbound) and through the reference interpreter, state carried across
//! the sequence. Every inbound frame's verdict and the counters it
//! incremented must be identical.
//!
//! The kernel runs on its own clock, the interpreter on a virtual one
//! (1 µs per frame), so the policies are `testgen::kernel_safe`: a token
//! takes 30 s or more to come back and no timeout is shorter than two
//! minutes, so nothing refills or expires during a sequence on either
//! clock; the sequences have no time jumps. Each case loads its own
//! object: state starts empty.
//!
//! Sequences are `testgen::steps` (random packets, 30% replies to the
//! previous one) and `testgen::flow_steps` (a few flows back and forth,
//! TCP flags anew each time: opens, closes, resets, buckets running dry).

mod xdp_common;

use patronus_compiler::frame::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame};
use patronus_compiler::interp::Interpreter;
use patronus_compiler::ir;
use patronus_compiler::semantics::Phase;
use patronus_compiler::testgen::{
    Step, apply, flow_steps, policy_kernel_safe, reversed, steps_without_time,
};
use patronus_compiler::typed::{Packet, Policy};
use patronus_runtime::{Loaded, ProgramKind};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

/// The interpreter's clock advance per frame.
const TICK_NS: u64 = 1_000;

/// What the sequences compared: inbound frames, outbound frames fed to
/// both engines, and how many inbound frames the state decided (so that
/// agreement is not agreement on stateless outcomes only).
#[derive(Clone, Copy, Default)]
struct Compared {
    inbound: usize,
    outbound: usize,
    established: usize,
    rate_limited: usize,
    /// The most instructions the verifier processed for one program.
    max_verified: u32,
}

impl Compared {
    fn add(self, other: Compared) -> Compared {
        Compared {
            inbound: self.inbound + other.inbound,
            outbound: self.outbound + other.outbound,
            established: self.established + other.established,
            rate_limited: self.rate_limited + other.rate_limited,
            max_verified: self.max_verified.max(other.max_verified),
        }
    }
}

/// The skb test run refuses an IPv4 or IPv6 frame (by ethertype) too
/// short for the fixed IP header, which no stack would send.
fn tc_refuses(frame: &[u8]) -> bool {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_IPV4 => frame.len() < 14 + 20,
        ETHERTYPE_IPV6 => frame.len() < 14 + 40,
        _ => false,
    }
}

fn run(policy: &Policy, steps: &[Step]) -> Result<Compared, TestCaseError> {
    let program = ir::lower(policy);
    let object =
        patronus_codegen::compile(&program).unwrap_or_else(|e| panic!("compile failed: {e}"));
    let loaded = Loaded::load_object(&object).unwrap_or_else(|e| panic!("load failed: {e}"));
    let mut interp = Interpreter::new(policy);
    let mut now = 0u64;
    let mut previous: Option<Packet> = None;
    let mut compared = Compared {
        max_verified: loaded
            .stats(ProgramKind::Xdp)
            .and_then(|s| s.verified_insns)
            .unwrap_or(0),
        ..Compared::default()
    };
    for (i, step) in steps.iter().enumerate() {
        now += TICK_NS;
        let packet = match (&previous, step.reply) {
            (Some(prev), true) => reversed(prev),
            _ => step.packet.clone(),
        };
        let frame = apply(&packet, &step.mutation);
        previous = Some(packet.clone());
        if frame.len() < 14 {
            // BPF_PROG_TEST_RUN refuses frames without an Ethernet header
            // (no NIC or stack produces one); neither engine sees it.
            continue;
        }
        if step.outbound {
            if tc_refuses(&frame) {
                // No flow for either engine to track: the interpreter
                // finds the frame malformed too.
                assert!(
                    !matches!(frame::parse(&frame, &policy.options), Ok(Frame::Ip(_))),
                    "a frame the tc test run refuses parses as IP: {frame:02x?}"
                );
                continue;
            }
            interp.outbound(&frame, now);
            loaded
                .run_tc(&frame)
                .map_err(|e| TestCaseError::fail(format!("tc test run: {e}")))?;
            compared.outbound += 1;
            continue;
        }
        let outcome = interp.inbound(&frame, now);
        match outcome.phase {
            Phase::Established => compared.established += 1,
            Phase::RateLimit => compared.rate_limited += 1,
            _ => {}
        }
        let want = xdp_common::expected(&outcome);
        let got = xdp_common::run_and_count(&loaded, &program, &frame)
            .map_err(|e| TestCaseError::fail(format!("xdp test run: {e}")))?;
        prop_assert_eq!(
            &got,
            &want,
            "step {} ({} reply {}) packet {:?} mutation {:?}\nframe {:02x?}\nsteps {:#?}\nIR:\n{}",
            i,
            if step.outbound { "out" } else { "in" },
            step.reply,
            packet,
            step.mutation,
            frame,
            steps,
            ir::text::ir(&program)
        );
        compared.inbound += 1;
    }
    Ok(compared)
}

/// Runs `cases` generated policies with sequences. `state_decides`:
/// require that some inbound frames were established and some rate
/// limited (only where the cases are many enough for that to be certain,
/// as generation is random).
fn cases(test: &str, cases: u32, rules: std::ops::Range<usize>, state_decides: bool) {
    if !xdp_common::kernel(test) {
        return;
    }
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        // A failing case is shrunk by loading programs (up to seconds
        // each in the verifier): bound the time so a failure reports soon.
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    });
    let sequences = prop_oneof![steps_without_time(), flow_steps()];
    let policies = policy_kernel_safe(0..3, rules);
    let strategy = (policies, sequences);
    let total = std::cell::Cell::new(Compared::default());
    runner
        .run(&strategy, |(policy, steps)| {
            total.set(total.get().add(run(&policy, &steps)?));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("kernel and interpreter disagree: {e}"));
    let total = total.get();
    eprintln!(
        "{test}: {cases} policies, {} inbound packets compared with 0 mismatches \
         ({} established, {} dropped by a rate limit), {} outbound packets fed to both; \
         at most {} instructions verified",
        total.inbound, total.established, total.rate_limited, total.outbound, total.max_verified
    );
    if state_decides {
        // About 5% and 2% of inbound frames: zero in hundreds of
        // sequences means the state code is not being compared.
        assert!(total.established > 0, "no packet was established");
        assert!(total.rate_limited > 0, "no packet was rate limited");
    }
}

#[test]
fn stateful_policies_agree_with_the_interpreter() {
    cases(
        "stateful_policies_agree_with_the_interpreter",
        256,
        1..10,
        true,
    );
}

/// More than 64 rules: multi-word bitmaps around the state hooks.
#[test]
fn multi_word_stateful_policies_agree_with_the_interpreter() {
    cases(
        "multi_word_stateful_policies_agree_with_the_interpreter",
        16,
        65..120,
        false,
    );
}
