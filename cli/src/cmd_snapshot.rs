//! `patronusc snapshot POLICY...`: verdict snapshots, the insta workflow
//! applied to firewall behaviour. `POLICY.snap` (next to the policy) holds
//! [`patronus_compiler::snapshot`]'s text.
//!
//! - no flag: write the snapshot when there is none (or it is the same);
//!   refuse to overwrite a different one (exit 1, showing the difference);
//! - `--check`: exit 1 when the policy no longer matches its snapshot
//!   (P0203, the lines that no longer hold and those that hold now, in
//!   policy terms), or when there is no snapshot;
//! - `--update`: rewrite the snapshot.
//!
//! Exit 2 on usage or I/O errors and when a policy has errors.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use patronus_compiler::diag::Files;
use patronus_compiler::{render, snapshot};

use crate::common::{CliError, ColorArgs, Status, read_text, write_stdout};
use crate::policy_source::{Source, load_policy};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Policy files; each one's snapshot is POLICY.snap beside it.
    #[arg(value_name = "POLICY", required = true)]
    pub policies: Vec<PathBuf>,
    /// Compare with the stored snapshot; exit 1 when the behaviour differs.
    #[arg(long, conflicts_with = "update")]
    pub check: bool,
    /// Rewrite the snapshot, accepting the policy's current behaviour.
    #[arg(long)]
    pub update: bool,
    #[command(flatten)]
    pub color: ColorArgs,
}

/// `web.pf` → `web.pf.snap`.
pub fn snapshot_path(policy: &Path) -> PathBuf {
    let mut name = policy.as_os_str().to_owned();
    name.push(".snap");
    PathBuf::from(name)
}

pub fn run(args: &SnapshotArgs) -> Result<Status, CliError> {
    let mut failed = false;
    let mut out = String::new();
    let color = args.color.color.for_stdout();
    for path in &args.policies {
        let mut files = Files::new();
        let loaded = load_policy(&mut files, &Source::File(path.clone()), args.color.color)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let current = snapshot::render(&name, &loaded.policy, &loaded.program);
        let snap = snapshot_path(path);
        let stored = if snap.exists() {
            Some(read_text(&snap).map_err(CliError::new)?)
        } else {
            None
        };
        let regions = current
            .lines()
            .filter(|l| l.starts_with("pass ") || l.starts_with("drop "))
            .count();
        let mismatch = stored.as_ref().map(|s| snapshot::compare(s, &current));
        match (&mismatch, args.check, args.update) {
            (None, true, _) => {
                failed = true;
                let _ = writeln!(
                    out,
                    "{}: no snapshot (write one with `patronusc snapshot {}`)",
                    snap.display(),
                    path.display()
                );
            }
            (Some(m), _, false) if !m.is_empty() => {
                failed = true;
                let stored = stored.as_deref().unwrap_or_default();
                out.push_str(&render_mismatch(path, &snap, stored, m, color));
                if !args.check {
                    let _ = writeln!(
                        out,
                        "{}: not overwritten; accept the change with `patronusc snapshot --update {}`",
                        snap.display(),
                        path.display()
                    );
                }
            }
            (Some(_), true, _) => {
                let _ = writeln!(out, "{}: ok ({regions} regions)", snap.display());
            }
            _ => {
                if stored.as_deref() != Some(current.as_str()) {
                    std::fs::write(&snap, &current).map_err(|e| {
                        CliError::new(format!("cannot write `{}`: {e}", snap.display()))
                    })?;
                    let _ = writeln!(out, "{}: written ({regions} regions)", snap.display());
                } else {
                    let _ = writeln!(out, "{}: unchanged ({regions} regions)", snap.display());
                }
            }
        }
    }
    write_stdout(&out)?;
    Ok(Status::failure_if(failed))
}

/// The P0203 diagnostic, rendered with the stored snapshot as its source.
fn render_mismatch(
    policy: &Path,
    snap: &Path,
    stored: &str,
    m: &snapshot::Mismatch,
    color: bool,
) -> String {
    let mut files = Files::new();
    let snap_name = snap.display().to_string();
    let file = files.add(snap_name.clone(), stored.to_string());
    let d =
        snapshot::mismatch_diagnostic(&policy.display().to_string(), file, &snap_name, stored, m);
    render::human(&files, &[d], color)
}
