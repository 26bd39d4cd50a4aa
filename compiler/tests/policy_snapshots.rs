//! The committed verdict snapshots of the repository's policies
//! (`policies/NAME.pf.snap`, written by `patronusc snapshot`) still match
//! what the policies do. A behaviour change to a policy, or to the
//! compiler's meaning of one, fails here until the snapshot is updated
//! (`patronusc snapshot --update policies/NAME.pf`) and reviewed.

use patronus_compiler::testgen::{policies_dir, repository_policies};
use patronus_compiler::{ir, snapshot};

#[test]
fn every_repository_policy_matches_its_snapshot() {
    let policies = repository_policies();
    assert!(policies.len() >= 6, "policies/ has the example policies");
    for (stem, policy) in policies {
        let path = policies_dir().join(format!("{stem}.pf.snap"));
        let stored = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `patronusc snapshot`)", path.display()));
        let current = snapshot::render(&format!("{stem}.pf"), &policy, &ir::lower(&policy));
        let mismatch = snapshot::compare(&stored, &current);
        assert!(
            mismatch.is_empty(),
            "{stem}.pf no longer matches its snapshot:\n- {}\n+ {}",
            mismatch
                .removed
                .iter()
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>()
                .join("\n- "),
            mismatch.added.join("\n+ ")
        );
        // Rendering is deterministic: the stored text is byte for byte the same.
        assert_eq!(stored, current, "{stem}");
    }
}
