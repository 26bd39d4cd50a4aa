//! The repository stands alone: no tracked file may point outside it. A
//! path into a sibling checkout beside the repository, or into one
//! machine's work or home directories ([`FORBIDDEN`]), works only where it
//! was written, so a fresh clone would fail a build, a test, a benchmark or
//! a reader. Every git-tracked file is searched (every file
//! under the root, less build output, when this is not a git checkout);
//! the failure names each offending `file:line`.
//!
//! `scripts/check-standalone` is the other half: it clones HEAD into an
//! empty temporary directory and builds every test there.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What must not appear. Built with `concat!` so this file does not match
/// itself: no allow-list needed.
const FORBIDDEN: [&str; 7] = [
    concat!("..", "/shared"),
    concat!("shared", "/bench"),
    concat!("shared", "/spec"),
    concat!("/wo", "rk/"),
    concat!("/ro", "ot/"),
    concat!("/ho", "me/"),
    concat!("/Us", "ers/"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Directories that hold build output or local results, never sources.
const UNTRACKED: [&str; 7] = [
    ".git",
    "target",
    "benches/build",
    "benches/results",
    "fuzz/target",
    "fuzz/corpus",
    "fuzz/artifacts",
];

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if UNTRACKED.iter().any(|u| rel == Path::new(u)) {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.push(rel);
        }
    }
}

/// The files to search, relative to the root.
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output();
    match listed {
        Ok(out) if out.status.success() => out
            .stdout
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            .collect(),
        _ => {
            let mut files = Vec::new();
            walk(root, root, &mut files);
            files
        }
    }
}

/// `file:line: text` for every line of `text` holding a forbidden string.
fn offences(file: &Path, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| FORBIDDEN.iter().any(|f| line.contains(f)))
        .map(|(i, line)| format!("{}:{}: {}", file.display(), i + 1, line.trim()))
        .collect()
}

#[test]
fn no_tracked_file_points_outside_the_repository() {
    let root = root();
    let files = tracked_files(&root);
    assert!(
        files.iter().any(|f| f == Path::new("Cargo.toml")),
        "found no Cargo.toml among {} files under {}",
        files.len(),
        root.display()
    );
    let mut found = Vec::new();
    for file in &files {
        // Deleted but still tracked (a dirty worktree): nothing to read.
        let Ok(bytes) = std::fs::read(root.join(file)) else {
            continue;
        };
        found.extend(offences(file, &String::from_utf8_lossy(&bytes)));
    }
    assert!(
        found.is_empty(),
        "{} line(s) point outside the repository (a fresh clone has nothing beside it):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_search_names_file_and_line() {
    let text = format!("fine\nsee {}/bench here\n", concat!("..", "/shared"));
    assert_eq!(
        offences(Path::new("README.md"), &text),
        vec![format!(
            "README.md:2: see {}/bench here",
            concat!("..", "/shared")
        )]
    );
    assert!(offences(Path::new("x"), "docs/language.md and benches/ only").is_empty());
}
