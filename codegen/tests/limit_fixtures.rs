//! Fixtures of the diagnostics code generation reports (`build`, `apply`):
//! every `compiler/tests/fixtures/codegen/*.pf` is checked, lowered and
//! compiled within the instruction limit its first line gives; the limit
//! error must blame a rule, and the diagnostic `build` shows for it
//! (rendered as the CLI renders it) is compared with an insta snapshot
//! named after the fixture, which must carry the code its name starts with.

use std::path::{Path, PathBuf};

use patronus_codegen::{CodegenError, Limits, compile_with_limits};
use patronus_compiler::codes::Code;
use patronus_compiler::diag::{Files, program_limit_diagnostic};
use patronus_compiler::{LoadedFile, TableLoader, ir, render};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compiler/tests/fixtures/codegen")
}

struct NoTables;

impl TableLoader for NoTables {
    fn load(&self, _policy: &str, _path: &str) -> Result<LoadedFile, String> {
        Err("the fixtures use no table files".into())
    }
}

/// The `MAX_INSNS` of the fixture's first line.
fn max_insns(stem: &str, text: &str) -> usize {
    text.lines()
        .next()
        .and_then(|line| line.split("limit of ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stem}.pf: the first line gives no `limit of N`"))
}

#[test]
fn codegen_fixtures_match_snapshots() {
    let fixtures = patronus_compiler::testgen::policy_files(&fixtures_dir());
    assert!(
        !fixtures.is_empty(),
        "no fixtures in {}",
        fixtures_dir().display()
    );
    for (stem, text) in fixtures {
        let mut files = Files::new();
        let file = files.add(format!("fixtures/codegen/{stem}.pf"), text.as_str());
        let checked = patronus_compiler::check(&mut files, file, &NoTables);
        assert!(
            !checked.has_errors(),
            "{stem}.pf: {:?}",
            checked.diagnostics
        );
        let policy = checked.policy.expect("a checked policy");
        let program = ir::lower(&policy);
        let limits = Limits {
            max_insns: max_insns(&stem, &text),
            ..Limits::default()
        };
        let err = compile_with_limits(&program, &limits)
            .expect_err("the fixture is over its instruction limit");
        let CodegenError::Limit {
            what,
            rule: Some(rule),
        } = &err
        else {
            panic!("{stem}.pf: not a limit error blaming a rule: {err:?}");
        };
        let span = policy
            .rule_span(*rule)
            .expect("the rule is one of the policy's");
        let diagnostic = program_limit_diagnostic(policy.file, span, what);
        let code = Code::lookup(stem.split('-').next().unwrap_or_default());
        assert_eq!(Some(diagnostic.code), code, "{stem}.pf");
        let rendered = render::human(&files, &[diagnostic], false);
        let mut settings = insta::Settings::clone_current();
        settings.set_input_file(fixtures_dir().join(format!("{stem}.pf")));
        settings.bind(|| insta::assert_snapshot!(stem.clone(), rendered));
    }
}
