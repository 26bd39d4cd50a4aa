//! The CI integrations run for real on the example policy repository
//! (`examples/policy-repo`): its policies check, test and match their
//! snapshots; every pre-commit hook's command (`.pre-commit-hooks.yaml`)
//! passes on them; and `ci/patronus-ci` — the GitHub Action's steps — passes
//! on the repository, then on a pull-request-like change fails the
//! snapshot check and reports the verdict change in its Markdown diff.
//! (The schema checks of the same files are `scripts/check-ci-files`.)

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{TempDir, patronusc};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> PathBuf {
    root().join("examples/policy-repo")
}

/// Copies the example repository (files only) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read example dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_patronusc"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("GIT_AUTHOR_NAME", "ci")
        .env("GIT_AUTHOR_EMAIL", "ci@example.invalid")
        .env("GIT_COMMITTER_NAME", "ci")
        .env("GIT_COMMITTER_EMAIL", "ci@example.invalid")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_policies_pass_check_test_and_snapshot() {
    let dir = example();
    for args in [
        &["check", "--deny-warnings", "policies/web.pf"][..],
        &["test", "policies/web.pf"],
        &["snapshot", "--check", "policies/web.pf"],
        &["fmt", "--check", "policies/web.pf"],
    ] {
        let run = patronusc(&dir, args);
        assert_eq!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
    }
}

#[test]
fn every_pre_commit_hook_command_passes_on_the_example() {
    let manifest = std::fs::read_to_string(root().join(".pre-commit-hooks.yaml")).expect("hooks");
    let entries: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("entry:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        entries,
        ["patronusc check", "patronusc fmt", "patronusc test"]
    );
    let dir = TempDir::new("hooks");
    copy_tree(&example(), &dir.0);
    let before = std::fs::read_to_string(dir.0.join("policies/web.pf")).expect("policy");
    for entry in entries {
        let mut words: Vec<&str> = entry.split_whitespace().collect();
        words.push("policies/web.pf");
        let (code, out, err) = run(&dir.0, words[0], &words[1..]);
        assert_eq!(code, 0, "{entry}: {out}{err}");
    }
    // The fmt hook left the (formatted) policy as it was...
    let after = std::fs::read_to_string(dir.0.join("policies/web.pf")).expect("policy");
    assert_eq!(before, after);
    // ...and rewrites one that is not.
    std::fs::write(
        dir.0.join("policies/web.pf"),
        before.replace("deny  from", "deny from"),
    )
    .expect("write");
    let (code, _, err) = run(&dir.0, "patronusc", &["fmt", "policies/web.pf"]);
    assert_eq!(code, 0, "{err}");
    let refmt = std::fs::read_to_string(dir.0.join("policies/web.pf")).expect("policy");
    assert_eq!(refmt, before);
}

#[test]
fn the_action_script_passes_then_reports_a_pull_request_change() {
    let dir = TempDir::new("action");
    copy_tree(&example(), &dir.0);
    let script = root().join("ci/patronus-ci");
    let script = script.to_str().expect("UTF-8 path");
    let git = |args: &[&str]| {
        let (code, out, err) = run(&dir.0, "git", args);
        assert_eq!(code, 0, "git {args:?}: {out}{err}");
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "base"]);

    let (code, out, err) = run(
        &dir.0,
        script,
        &[
            "--format",
            "github",
            "--base",
            "main",
            "--markdown",
            "diff.md",
            "policies/web.pf",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("::error"), "{out}");
    let report = std::fs::read_to_string(dir.0.join("diff.md")).expect("diff.md");
    assert!(report.contains("#### `policies/web.pf`"), "{report}");

    // The pull request: SSH from anywhere.
    git(&["checkout", "--quiet", "-b", "open-ssh"]);
    let policy = dir.0.join("policies/web.pf");
    let text = std::fs::read_to_string(&policy).expect("policy");
    std::fs::write(
        &policy,
        text.replace("allow tcp from $office to port 22", "allow tcp to port 22"),
    )
    .expect("write");
    git(&["commit", "--quiet", "-am", "ssh from anywhere"]);
    let (code, out, err) = run(
        &dir.0,
        script,
        &[
            "--format",
            "github",
            "--base",
            "main",
            "--markdown",
            "diff.md",
            "policies/web.pf",
        ],
    );
    // The test that pins "SSH only from the office" fails, the snapshot no
    // longer matches, and the diff says which packets now pass.
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("failed: test (exit 1) snapshot (exit 1)"),
        "{err}"
    );
    let report = std::fs::read_to_string(dir.0.join("diff.md")).expect("diff.md");
    assert!(
        report.contains("drop → pass") || report.contains("drop -> pass"),
        "{report}"
    );
    assert!(
        report.contains("port 22") || report.contains(":22"),
        "{report}"
    );
}
