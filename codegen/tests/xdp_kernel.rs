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
        for mutation in &mutations {
            for test in &policy.tests {
                // Fresh state per test, as `patronus test` does (one load
                // per policy: big LPM tries are slow to free).
                loaded.reset_state().expect("state maps cleared");
                let mut interp = Interpreter::new(&policy);
                let mut now = 0;
                for step in &test.steps {
                    let frame = apply(&step.packet, mutation);
                    for _ in 0..step.packet.repeat.clamp(1, 50) {
                        now += 1_000;
                        if step.expect.is_none() {
                            // A frame the kernel refuses to test-run as an
                            // skb (some truncated ones) is sent by neither.
                            let sent = !loaded.has_program(ProgramKind::Tc)
                                || loaded.run_tc(&frame).is_ok();
                            if sent {
                                interp.outbound(&frame, now);
                            }
                            continue;
                        }
                        let want = xdp_common::expected(&interp.inbound(&frame, now));
                        let got = xdp_common::run_and_count(&loaded, &program, &frame)
                            .expect("xdp test run");
                        assert_eq!(
                            got,
                            want,
                            "{name}, test {:?}, packet {:?}, mutation {mutation:?}\nframe {:02x?}",
                            test.name,
                            step.packet,
                            packet::build(&step.packet)
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 100, "only {compared} packets compared");
}
