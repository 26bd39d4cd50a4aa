//! The generated XDP programs of every repository policy in the kernel:
//! they load (verifier), their size and verifier cost are reported, and
//! each policy's own test packets (plus malformed variants) get the same
//! verdict and the same counters as the reference interpreter.

mod xdp_common;

use patronus_codegen::compile;
use patronus_compiler::interp::Interpreter;
use patronus_compiler::ir;
use patronus_compiler::packet;
use patronus_grammar::ast::Verdict;
use patronus_runtime::ProgramKind;

use xdp_common::generate::{Mutation, apply};

#[test]
fn repository_policies_load_and_agree_with_the_interpreter() {
    if !xdp_common::kernel("repository_policies_load_and_agree_with_the_interpreter") {
        return;
    }
    let mutations = [
        Mutation::None,
        Mutation::Truncate(40),
        Mutation::SetByte(14 + 20 + 13, 0x29),
        Mutation::SetByte(14 + 6, 0x20),
        Mutation::Vlans(2, 7, true),
        Mutation::Vlans(3, 5, false),
        Mutation::ExtHeaders(vec![0, 60]),
        Mutation::ExtHeaders(vec![0, 60, 43, 60, 60]),
        Mutation::Ethertype(0x0806),
    ];
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
                        let want = interp.inbound(&frame, now);
                        let before = xdp_common::packet_counts(&loaded);
                        let run = loaded.run_xdp(&frame).expect("xdp test run");
                        let after = xdp_common::packet_counts(&loaded);
                        let got = if run.retval == 2 {
                            Verdict::Pass
                        } else {
                            Verdict::Drop
                        };
                        let mut want_counters = want.counters.clone();
                        want_counters.sort();
                        let got_counters = xdp_common::grown(&program, &before, &after);
                        assert_eq!(
                            (got, &got_counters),
                            (want.verdict, &want_counters),
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
