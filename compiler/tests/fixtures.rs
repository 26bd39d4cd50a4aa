//! Diagnostic fixtures: every `tests/fixtures/*.pf` is checked and its
//! rendered diagnostics are compared with an insta snapshot named after
//! it. A fixture's file name starts with the code it demonstrates
//! (`P0002-unknown-const.pf`) and must produce that code; every code in
//! the registry must have a fixture (the P02xx behaviour-change codes in
//! `fixtures/changes/`, see `change_fixtures.rs`).

use std::fs;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use patronus_compiler::codes::Code;
use patronus_compiler::diag::{Diagnostic, Files};
use patronus_compiler::{LoadedFile, TableLoader};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Reads table files relative to the fixtures directory and names them
/// `fixtures/PATH`, so snapshots do not depend on where the tree lives.
/// Like the CLI's loader, only regular files inside the fixtures directory:
/// a fixture naming `/dev/zero` must not hang the test.
struct FixtureLoader;

impl TableLoader for FixtureLoader {
    fn load(&self, _policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let resolved = fixtures_dir().join(path);
        let inside = fs::canonicalize(&resolved)
            .is_ok_and(|real| fs::canonicalize(fixtures_dir()).is_ok_and(|d| real.starts_with(d)));
        if !inside {
            return Err("outside the policy's directory".to_string());
        }
        if !fs::metadata(&resolved).is_ok_and(|m| m.is_file()) {
            return Err("not a regular file".to_string());
        }
        match fs::read_to_string(resolved) {
            Ok(text) => Ok(LoadedFile {
                name: format!("fixtures/{path}"),
                text,
            }),
            Err(e) => Err(match e.kind() {
                io::ErrorKind::NotFound => "no such file".to_string(),
                io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                io::ErrorKind::IsADirectory => "is a directory".to_string(),
                io::ErrorKind::InvalidData => "not UTF-8 text".to_string(),
                _ => e.to_string(),
            }),
        }
    }
}

/// Every fixture: (file stem, source).
fn fixtures() -> Vec<(String, String)> {
    patronus_compiler::testgen::policy_files(&fixtures_dir())
}

fn check(stem: &str, text: &str) -> (Files, Vec<Diagnostic>) {
    let mut files = Files::new();
    let file = files.add(format!("fixtures/{stem}.pf"), text);
    let checked = patronus_compiler::check(&mut files, file, &FixtureLoader);
    (files, checked.diagnostics)
}

/// The code a fixture is about: the file name up to the first `-`.
fn fixture_code(stem: &str) -> Option<Code> {
    Code::lookup(stem.split('-').next()?)
}

#[test]
fn fixtures_match_snapshots() {
    let mut failed = Vec::new();
    for (stem, text) in fixtures() {
        let (files, diagnostics) = check(&stem, &text);
        let rendered = patronus_compiler::render::human(&files, &diagnostics, false);
        let mut settings = insta::Settings::clone_current();
        settings.set_prepend_module_to_snapshot(false);
        settings.set_snapshot_path("snapshots");
        settings.set_input_file(fixtures_dir().join(format!("{stem}.pf")));
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            settings.bind(|| insta::assert_snapshot!(stem.clone(), rendered));
        }));
        if outcome.is_err() {
            failed.push(stem);
        }
    }
    assert!(failed.is_empty(), "snapshots differ for: {failed:?}");
}

#[test]
fn every_fixture_reports_its_own_code() {
    for (stem, text) in fixtures() {
        let code = fixture_code(&stem)
            .unwrap_or_else(|| panic!("{stem}.pf: the name does not start with a known code"));
        let (_, diagnostics) = check(&stem, &text);
        assert!(
            diagnostics.iter().any(|d| d.code == code),
            "{stem}.pf reports no {}: {:?}",
            code.info().code,
            diagnostics
                .iter()
                .map(|d| d.code.info().code)
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_code_has_a_fixture() {
    let stems: Vec<String> = fixtures().into_iter().map(|(stem, _)| stem).collect();
    // Behaviour-change codes (P02xx) come from `diff` and `snapshot`, not
    // `check`: their fixtures are in fixtures/changes (change_fixtures.rs).
    // Code-generation codes come from `build` and `apply`: their fixtures
    // are in fixtures/codegen (codegen/tests/limit_fixtures.rs).
    let codegen: Vec<String> =
        patronus_compiler::testgen::policy_files(&fixtures_dir().join("codegen"))
            .into_iter()
            .map(|(stem, _)| stem)
            .collect();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.info().code)
        .filter(|code| !code.starts_with("P02"))
        .filter(|code| !stems.iter().chain(&codegen).any(|s| s.starts_with(code)))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a fixture in tests/fixtures: {missing:?}"
    );
}
