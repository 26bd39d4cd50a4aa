//! Shared by the kernel tests (`kernel_*.rs`): policy checking with tables
//! read from disk, compiling and loading into the kernel, temporary
//! directories that clean up after themselves.

#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use patronus_cli::cmd_test::KernelPolicy;
use patronus_cli::common::FsTableLoader;
use patronus_compiler::diag::Files;
use patronus_compiler::typed::Policy;
use patronus_compiler::{check, render};

pub use patronus_runtime::testing::kernel_or_skip;

/// The repository root (this crate lives in `tests/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every `policies/*.pf`, sorted.
pub fn policy_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("policies"))
        .expect("policies/ is readable")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "pf"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no policies found");
    files
}

/// Checks a policy file (tables relative to it); panics on errors.
pub fn check_policy(path: &Path) -> (Files, Policy) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut files = Files::new();
    let file = files.add(path.display().to_string(), text);
    let checked = check(&mut files, file, &FsTableLoader);
    match checked.policy {
        Some(policy) if !checked.has_errors() => (files, policy),
        _ => panic!(
            "{} does not check:\n{}",
            path.display(),
            render::human(&files, &checked.diagnostics, false)
        ),
    }
}

/// Compiles and loads a checked policy; panics with the error.
pub fn load(path: &Path, policy: &Policy) -> KernelPolicy {
    KernelPolicy::load(policy).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A directory removed (with its contents) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under `base` named after `label` and this process.
    pub fn new_in(base: &Path, label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = base.join(format!(
            "patronus-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn new(label: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), label)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

/// A network namespace with a veth pair `pt0`/`pt1` (documentation
/// addresses), deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn with_veth(label: &str) -> Netns {
        let name = format!("patronus-{label}-{}", std::process::id());
        // A leftover from a killed run would make `add` fail.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        let n = ns.0.as_str();
        run(
            "ip",
            &[
                "-n", n, "link", "add", "pt0", "type", "veth", "peer", "name", "pt1",
            ],
        );
        run(
            "ip",
            &["-n", n, "addr", "add", "192.0.2.1/24", "dev", "pt0"],
        );
        run(
            "ip",
            &["-n", n, "addr", "add", "192.0.2.2/24", "dev", "pt1"],
        );
        run("ip", &["-n", n, "link", "set", "pt0", "up"]);
        run("ip", &["-n", n, "link", "set", "pt1", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

/// `ip link set dev pt0 xdp obj OBJECT sec xdp` inside `ns`, checks the
/// program shows on the link, then detaches it.
pub fn attach_xdp_in_netns(ns: &Netns, object: &Path) {
    let n = ns.0.as_str();
    let object_arg = object.display().to_string();
    run(
        "ip",
        &[
            "-n",
            n,
            "link",
            "set",
            "dev",
            "pt0",
            "xdp",
            "obj",
            &object_arg,
            "sec",
            "xdp",
        ],
    );
    let shown = run("ip", &["-n", n, "-d", "link", "show", "dev", "pt0"]);
    assert!(
        shown.contains("prog/xdp"),
        "{}: no XDP program on pt0:\n{shown}",
        object.display()
    );
    run("ip", &["-n", n, "link", "set", "dev", "pt0", "xdp", "off"]);
}

/// `bpftool prog loadall OBJECT DIR` with a fresh pin directory under
/// /sys/fs/bpf, removed afterwards; at least one program must be pinned.
pub fn bpftool_loadall(object: &Path) {
    let pins = TempDir::new_in(Path::new("/sys/fs/bpf"), "bpftool");
    let pin_dir = pins.0.join("progs");
    let object_arg = object.display().to_string();
    let pin_arg = pin_dir.display().to_string();
    run("bpftool", &["prog", "loadall", &object_arg, &pin_arg]);
    let pinned = std::fs::read_dir(&pin_dir).map(|d| d.count()).unwrap_or(0);
    assert!(
        pinned >= 1,
        "{}: nothing pinned under {pin_arg}",
        object.display()
    );
}
