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
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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
