//! The example policies in the kernel: every `test` block of
//! `policies/*.pf` passes with the kernel engine, `bpftool prog loadall`
//! accepts each compiled object, and `ip link set ... xdp obj` attaches it
//! to a veth inside a network namespace this test creates and deletes.
//! Skipped with a message when the kernel cannot be used, failed instead
//! when PATRONUS_REQUIRE_KERNEL=1.

mod kernel_support;

use std::path::Path;

use kernel_support::{TempDir, check_policy, kernel_or_skip, load, policy_files, run};
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
        eprintln!(
            "{}: {} instructions, verified_insns {:?}",
            path.display(),
            kernel.object.insn_count,
            kernel
                .loaded
                .stats(ProgramKind::Xdp)
                .and_then(|s| s.verified_insns)
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
    assert!(failures.is_empty(), "failing tests:\n{}", failures.join("\n"));
}

/// Writes the compiled object of `path` to `dir/NAME.o`.
fn write_object(path: &Path, dir: &Path) -> std::path::PathBuf {
    let (_, policy) = check_policy(path);
    let program = patronus_compiler::ir::lower(&policy);
    let object = patronus_codegen::compile(&program)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("policy");
    let out = dir.join(format!("{stem}.o"));
    std::fs::write(&out, &object.elf).expect("writing the object");
    out
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("help")
        .output()
        .is_ok()
}

#[test]
fn bpftool_loads_every_policy_object() {
    if !kernel_or_skip("bpftool_loads_every_policy_object") {
        return;
    }
    assert!(have("bpftool"), "bpftool is not installed (scripts/setup installs it)");
    let objects = TempDir::new("bpftool-objects");
    for path in policy_files() {
        let object = write_object(&path, &objects.0);
        let pins = TempDir::new_in(Path::new("/sys/fs/bpf"), "bpftool");
        let pin_dir = pins.0.join("progs");
        let object_arg = object.display().to_string();
        let pin_arg = pin_dir.display().to_string();
        run("bpftool", &["prog", "loadall", &object_arg, &pin_arg]);
        let pinned = std::fs::read_dir(&pin_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(pinned >= 1, "{}: nothing pinned under {pin_arg}", path.display());
    }
}

/// A network namespace that is deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(label: &str) -> Netns {
        let name = format!("patronus-{label}-{}", std::process::id());
        // A leftover from a killed run would make `add` fail.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        run("ip", &["netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

#[test]
fn ip_link_attaches_every_policy_to_a_veth_in_a_netns() {
    if !kernel_or_skip("ip_link_attaches_every_policy_to_a_veth_in_a_netns") {
        return;
    }
    let objects = TempDir::new("iplink-objects");
    let ns = Netns::new("iplink");
    let n = ns.0.as_str();
    run(
        "ip",
        &["-n", n, "link", "add", "pt0", "type", "veth", "peer", "name", "pt1"],
    );
    run("ip", &["-n", n, "addr", "add", "192.0.2.1/24", "dev", "pt0"]);
    run("ip", &["-n", n, "addr", "add", "192.0.2.2/24", "dev", "pt1"]);
    run("ip", &["-n", n, "link", "set", "pt0", "up"]);
    run("ip", &["-n", n, "link", "set", "pt1", "up"]);
    for path in policy_files() {
        let object = write_object(&path, &objects.0);
        let object_arg = object.display().to_string();
        run(
            "ip",
            &[
                "-n", n, "link", "set", "dev", "pt0", "xdp", "obj", &object_arg, "sec", "xdp",
            ],
        );
        let shown = run("ip", &["-n", n, "-d", "link", "show", "dev", "pt0"]);
        assert!(
            shown.contains("xdp"),
            "{}: no XDP program on pt0:\n{shown}",
            path.display()
        );
        run("ip", &["-n", n, "link", "set", "dev", "pt0", "xdp", "off"]);
    }
}
