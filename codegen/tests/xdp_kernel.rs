//! The generated XDP programs of every repository policy in the kernel:
//! they load (verifier), their size and verifier cost are reported, and
//! each policy's own test packets (plus malformed variants) get the same
//! verdict and the same counters as the reference interpreter.

mod xdp_common;

use patronus_codegen::compile;
use patronus_compiler::interp::Interpreter;
use patronus_compiler::ir;
use patronus_compiler::packet;
use patronus_compiler::testgen::{apply, sample_mutations};
use patronus_runtime::ProgramKind;

#[test]
fn repository_policies_load_and_agree_with_the_interpreter() {
    if !xdp_common::kernel("repository_policies_load_and_agree_with_the_interpreter") {
        return;
    }
    let mutations = sample_mutations();
    let mut compared = 0;
    for (name, policy) in xdp_common::repository_policies() {
        let program = ir::lower(&policy);
        let object = compile(&program).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut loaded = xdp_common::load(&object);
        let verified = loaded
            .stats(ProgramKind::Xdp)
            .and_then(|s| s.verified_insns);
        eprintln!(
            "{name}: {} insns, {} bytes of stack, verified_insns {verified:?}",
            object.insn_count, object.stack_bytes
        );
        let rate_limited = policy.rules.iter().any(|r| r.rate.is_some());
        for mutation in &mutations {
            for test in &policy.tests {
                // The kernel's buckets refill in real time, the
                // interpreter's on a virtual clock 1 µs per packet: on a
                // loaded machine a sequence can take long enough for a real
                // refill. Such a run is repeated (at most 6 tries); a
                // mismatch in a run that stayed fast is a failure.
                let mut tries = 0;
                loop {
                    tries += 1;
                    let started = std::time::Instant::now();
                    match run_test(&mut loaded, &program, &policy, test, mutation) {
                        Ok(n) => {
                            compared += n;
                            break;
                        }
                        Err(mismatch) => {
                            let slow = started.elapsed() > std::time::Duration::from_millis(20);
                            if rate_limited && slow && tries < 6 {
                                eprintln!(
                                    "{name}: retrying a slow run ({:?}): {mismatch}",
                                    started.elapsed()
                                );
                                continue;
                            }
                            panic!("{name}, {mismatch}");
                        }
                    }
                }
            }
        }
    }
    assert!(compared > 100, "only {compared} packets compared");
}

/// One test block's steps on fresh state; the number of packets compared,
/// or the first mismatch.
fn run_test(
    loaded: &mut patronus_runtime::Loaded,
    program: &ir::Program,
    policy: &patronus_compiler::typed::Policy,
    test: &patronus_compiler::typed::Test,
    mutation: &patronus_compiler::testgen::Mutation,
) -> Result<usize, String> {
    // Fresh state per test, as `patronus test` does (one load per policy:
    // big LPM tries are slow to free).
    loaded.reset_state().expect("state maps cleared");
    let mut interp = Interpreter::new(policy);
    let mut now = 0;
    let mut compared = 0;
    for step in &test.steps {
        let frame = apply(&step.packet, mutation);
        for _ in 0..step.packet.repeat.clamp(1, 50) {
            now += 1_000;
            if step.expect.is_none() {
                // A frame the kernel refuses to test-run as an skb (some
                // truncated ones) is sent by neither.
                let sent = !loaded.has_program(ProgramKind::Tc) || loaded.run_tc(&frame).is_ok();
                if sent {
                    interp.outbound(&frame, now);
                }
                continue;
            }
            let want = xdp_common::expected(&interp.inbound(&frame, now));
            let got = xdp_common::run_and_count(loaded, program, &frame).expect("xdp test run");
            if got != want {
                return Err(format!(
                    "test {:?}, packet {:?}, mutation {mutation:?}: kernel {got:?}, interpreter {want:?}\nframe {:02x?}",
                    test.name,
                    step.packet,
                    packet::build(&step.packet)
                ));
            }
            compared += 1;
        }
    }
    Ok(compared)
}
