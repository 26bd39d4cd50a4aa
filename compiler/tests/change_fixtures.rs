//! Fixtures of the behaviour-change codes (P02xx), which `check` never
//! reports: each `tests/fixtures/changes/CODE-name/` holds `old.pf` and
//! `new.pf` (a diff; `--all` for P0202) or `policy.pf` and its stored
//! `policy.pf.snap` (a snapshot check). The rendered diagnostics are
//! compared with an insta snapshot named after the directory, and must
//! carry the directory's code.

use std::path::{Path, PathBuf};

use patronus_compiler::codes::Code;
use patronus_compiler::diag::{Diagnostic, Files};
use patronus_compiler::regions::Side;
use patronus_compiler::testgen::PoliciesLoader;
use patronus_compiler::{diff, ir, render, snapshot};

pub fn changes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("changes")
}

fn load(files: &mut Files, dir: &Path, name: &str) -> patronus_compiler::typed::Policy {
    let text = std::fs::read_to_string(dir.join(name)).expect("fixture file");
    let stem = dir.file_name().and_then(|s| s.to_str()).unwrap_or("");
    let file = files.add(format!("changes/{stem}/{name}"), text);
    let c = patronus_compiler::check(files, file, &PoliciesLoader);
    assert!(!c.has_errors(), "{stem}/{name} checks");
    c.policy.expect("policy")
}

fn diagnostics(dir: &Path, code: Code) -> (Files, Vec<Diagnostic>) {
    let mut files = Files::new();
    if dir.join("old.pf").exists() {
        let old = load(&mut files, dir, "old.pf");
        let new = load(&mut files, dir, "new.pf");
        let (po, pn) = (ir::lower(&old), ir::lower(&new));
        let d = diff::diff(
            Side {
                policy: &old,
                program: &po,
            },
            Side {
                policy: &new,
                program: &pn,
            },
            code == Code::DecisionChanged,
        );
        let diags = diff::diagnostics(&d, &old, &new, 8);
        (files, diags)
    } else {
        let policy = load(&mut files, dir, "policy.pf");
        let stored = std::fs::read_to_string(dir.join("policy.pf.snap")).expect("stored snapshot");
        let current = snapshot::render("policy.pf", &policy, &ir::lower(&policy));
        let m = snapshot::compare(&stored, &current);
        let stem = dir.file_name().and_then(|s| s.to_str()).unwrap_or("");
        let snap_name = format!("changes/{stem}/policy.pf.snap");
        let snap = files.add(snap_name.clone(), stored.clone());
        let diags = if m.is_empty() {
            Vec::new()
        } else {
            vec![snapshot::mismatch_diagnostic(
                "policy.pf",
                snap,
                &snap_name,
                &stored,
                &m,
            )]
        };
        (files, diags)
    }
}

#[test]
fn change_fixtures_match_snapshots_and_report_their_code() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(changes_dir())
        .expect("fixtures/changes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut codes = Vec::new();
    for dir in dirs {
        let stem = dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let code = Code::lookup(stem.split('-').next().unwrap_or(""))
            .unwrap_or_else(|| panic!("{stem}: the name does not start with a code"));
        let (files, diags) = diagnostics(&dir, code);
        assert!(
            diags.iter().any(|d| d.code == code),
            "{stem} reports no {}",
            code.info().code
        );
        codes.push(code.info().code);
        let rendered = render::human(&files, &diags, false);
        let mut settings = insta::Settings::clone_current();
        settings.set_prepend_module_to_snapshot(false);
        settings.set_snapshot_path("snapshots");
        settings.bind(|| insta::assert_snapshot!(format!("changes-{stem}"), rendered));
    }
    for code in Code::ALL {
        let info = code.info();
        if info.code.starts_with("P02") {
            assert!(codes.contains(&info.code), "no fixture for {}", info.code);
        }
    }
}
