//! Snapshots of the lowered form of every policy in the repository's
//! `policies/` directory (the reference policy included): `--emit ir` in
//! full, `--emit maps` with long entry lists elided to their first and last
//! lines plus a digest of all of them, so a change anywhere still shows.
//! Also checks the text forms are deterministic (lowering twice gives the
//! same bytes).

use std::fs;
use std::path::{Path, PathBuf};

use patronus_compiler::diag::Files;
use patronus_compiler::ir;
use patronus_compiler::{LoadedFile, TableLoader};

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("policies")
}

/// Reads table files relative to `policies/`.
struct PoliciesLoader;

impl TableLoader for PoliciesLoader {
    fn load(&self, _policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        fs::read_to_string(policies_dir().join(path))
            .map(|text| LoadedFile {
                name: format!("policies/{path}"),
                text,
            })
            .map_err(|e| e.to_string())
    }
}

fn policies() -> Vec<(String, String)> {
    patronus_compiler::testgen::policy_files(&policies_dir())
}

fn lower(stem: &str, text: &str) -> ir::Program {
    let mut files = Files::new();
    let file = files.add(format!("policies/{stem}.pf"), text);
    let checked = patronus_compiler::check(&mut files, file, &PoliciesLoader);
    let rendered = patronus_compiler::render::human(&files, &checked.diagnostics, false);
    let policy = match checked.policy {
        Some(p) if !checked.has_errors() => p,
        _ => panic!("policies/{stem}.pf does not check:\n{rendered}"),
    };
    ir::lower(&policy)
}

/// Entry lists longer than `ELIDE_OVER` keep this many first lines.
const ELIDE_OVER: usize = 64;
const KEEP_HEAD: usize = 24;
const KEEP_TAIL: usize = 4;

/// The maps text with long entry runs cut to head and tail plus an FNV-1a
/// digest of every entry line.
fn elide(maps: &str) -> String {
    let mut out = String::new();
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, out: &mut String| {
        if run.len() > ELIDE_OVER {
            let mut hash: u64 = 0xcbf29ce484222325;
            for line in run.iter() {
                for b in line.bytes().chain([b'\n']) {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x100000001b3);
                }
            }
            for line in &run[..KEEP_HEAD] {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!(
                "    ... {} entries elided; fnv1a64 of all {} entry lines: {hash:016x}\n",
                run.len() - KEEP_HEAD - KEEP_TAIL,
                run.len()
            ));
            for line in &run[run.len() - KEEP_TAIL..] {
                out.push_str(line);
                out.push('\n');
            }
        } else {
            for line in run.iter() {
                out.push_str(line);
                out.push('\n');
            }
        }
        run.clear();
    };
    for line in maps.lines() {
        if line.starts_with("    ") {
            run.push(line);
        } else {
            flush(&mut run, &mut out);
            out.push_str(line);
            out.push('\n');
        }
    }
    flush(&mut run, &mut out);
    out
}

#[test]
fn every_policy_lowers_to_its_snapshot() {
    let all = policies();
    assert!(
        all.iter().any(|(stem, _)| stem == "reference"),
        "policies/reference.pf (the benchmark's reference policy) is snapshotted"
    );
    for (stem, text) in all {
        let program = lower(&stem, &text);
        let ir_text = ir::text::ir(&program);
        let maps_text = ir::text::maps(&program);
        // Deterministic: no hash-seed or address dependence.
        let again = lower(&stem, &text);
        assert_eq!(ir_text, ir::text::ir(&again), "{stem}: IR text is stable");
        assert_eq!(
            maps_text,
            ir::text::maps(&again),
            "{stem}: maps text is stable"
        );
        insta::assert_snapshot!(format!("{stem}.ir"), ir_text);
        insta::assert_snapshot!(format!("{stem}.maps"), elide(&maps_text));
    }
}
