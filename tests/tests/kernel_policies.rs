//! The example policies in the kernel: every `test` block of
//! `policies/*.pf` passes with the kernel engine, `bpftool prog loadall`
//! accepts each compiled object, and `ip link set ... xdp obj` attaches it
//! to a veth inside a network namespace this test creates and deletes.
//! Skipped with a message when the kernel cannot be used, failed instead
//! when PATRONUS_REQUIRE_KERNEL=1.

mod kernel_support;

use std::path::Path;

use kernel_support::{
    Netns, TempDir, attach_xdp_in_netns, bpftool_loadall, check_policy, kernel_or_skip, load,
    policy_files,
};
use patronus_runtime::ProgramKind;

#[test]
fn every_policy_test_block_passes_in_the_kernel() {
    if !kernel_or_skip("every_policy_test_block_passes_in_the_kernel") {
        return;
    }
    let mut failures = Vec::new();
    for path in policy_files() {
        let (files, policy) = check_policy(&path);
        let mut kernel = load(&path, &policy);
        let verified = |kind| kernel.loaded.stats(kind).and_then(|s| s.verified_insns);
        eprintln!(
            "{}: {} instructions, verified_insns xdp {:?}, tc {:?}",
            path.display(),
            kernel.object.insn_count,
            verified(ProgramKind::Xdp),
            verified(ProgramKind::Tc)
        );
        for test in &policy.tests {
            match kernel.run_test(&policy, test) {
                Ok(None) => {}
                Ok(Some(failure)) => {
                    let (line, _) = files.line_col(policy.file, failure.step.span.start);
                    failures.push(format!(
                        "{}:{line}: test {:?}, repetition {}: expected {:?}, got {:?}",
                        path.display(),
                        test.name,
                        failure.repetition,
                        failure.expected,
                        failure.outcome
                    ));
                }
                Err(error) => failures.push(format!(
                    "{}: test {:?}: kernel error: {error}",
                    path.display(),
                    test.name
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "failing tests:\n{}",
        failures.join("\n")
    );
}

/// Writes the compiled object of `path` to `dir/NAME.o`.
fn write_object(path: &Path, dir: &Path) -> std::path::PathBuf {
    let (_, policy) = check_policy(path);
    let program = patronus_compiler::ir::lower(&policy);
    let object =
        patronus_codegen::compile(&program).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("policy");
    let out = dir.join(format!("{stem}.o"));
    std::fs::write(&out, &object.elf).expect("writing the object");
    out
}

#[test]
fn bpftool_loads_every_policy_object() {
    if !kernel_or_skip("bpftool_loads_every_policy_object") {
        return;
    }
    let objects = TempDir::new("bpftool-objects");
    for path in policy_files() {
        bpftool_loadall(&write_object(&path, &objects.0));
    }
}

#[test]
fn ip_link_attaches_every_policy_to_a_veth_in_a_netns() {
    if !kernel_or_skip("ip_link_attaches_every_policy_to_a_veth_in_a_netns") {
        return;
    }
    let objects = TempDir::new("iplink-objects");
    let ns = Netns::with_veth("iplink");
    for path in policy_files() {
        attach_xdp_in_netns(&ns, &write_object(&path, &objects.0));
    }
}
