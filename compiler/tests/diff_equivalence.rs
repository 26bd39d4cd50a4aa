//! Edits that do not change behaviour report no change in `diff`: every
//! repository policy against its `fmt` output (no region, option or rule
//! change, even with `--all`), and against itself with its rule lines in
//! reverse order (no verdict change; the deciding rule may move where
//! rules of one phase overlap, which `--all` reports, by design).

use patronus_compiler::diag::Files;
use patronus_compiler::diff;
use patronus_compiler::ir;
use patronus_compiler::regions::Side;
use patronus_compiler::testgen::{PoliciesLoader, policies_dir, policy_files};
use patronus_compiler::typed::Policy;

fn checked(name: &str, text: &str) -> Policy {
    let mut files = Files::new();
    let file = files.add(format!("policies/{name}.pf"), text.to_string());
    let c = patronus_compiler::check(&mut files, file, &PoliciesLoader);
    assert!(!c.has_errors(), "{name} checks");
    c.policy.expect("a policy")
}

fn diff_of(a: &Policy, b: &Policy, all: bool) -> diff::PolicyDiff {
    let (pa, pb) = (ir::lower(a), ir::lower(b));
    diff::diff(
        Side {
            policy: a,
            program: &pa,
        },
        Side {
            policy: b,
            program: &pb,
        },
        all,
    )
}

#[test]
fn fmt_output_and_reordered_rules_change_nothing() {
    let sources = policy_files(&policies_dir());
    assert!(sources.len() >= 6);
    for (name, text) in sources {
        let original = checked(&name, &text);
        let formatted = patronus_grammar::fmt::format(&text).expect("repository policies parse");
        let d = diff_of(&original, &checked(&name, &formatted), true);
        assert!(d.is_empty(), "{name}: fmt changed behaviour: {d:?}");

        let lines: Vec<&str> = text.lines().collect();
        let is_rule = |l: &&str| {
            ["allow ", "deny ", "limit "]
                .iter()
                .any(|k| l.starts_with(k))
        };
        let mut rules: Vec<&str> = lines.iter().copied().filter(is_rule).collect();
        rules.reverse();
        let mut next = rules.into_iter();
        let reordered: String = lines
            .iter()
            .map(|l| {
                if is_rule(l) {
                    next.next().unwrap_or(l)
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(reordered, text, "{name} has rules to reorder");
        let d = diff_of(&original, &checked(&name, &reordered), false);
        assert!(
            d.regions.is_empty() && d.options.is_empty(),
            "{name}: reordering changed verdicts: {d:?}"
        );
    }
}
