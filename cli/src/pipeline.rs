//! The one place the CLI turns a policy into something to deploy: a policy
//! file (its tables read from disk and remembered) or a saved
//! [`Snapshot`] (its tables from the snapshot), optionally with run-time
//! table changes applied to the checked policy, is checked (diagnostics
//! printed), lowered and compiled for this kernel's verifier
//! ([`Compiled`]).

use std::path::Path;

use patronus_codegen::{MapDef, Object};
use patronus_compiler::diag::Files;
use patronus_compiler::ir;
use patronus_compiler::semantics::Counter;
use patronus_compiler::typed::Policy;
use patronus_compiler::{LoadedFile, TableLoader};
use patronus_runtime::deploy::{decide, roles, tables};

use crate::common::{CliError, ColorArgs, TableAccessArgs, print_human_diagnostics};
use crate::names::{phase_name, rule_name};
use crate::state_dir::{Change, CounterMeta, Snapshot, TablesMeta};

/// Where a policy comes from.
pub(crate) enum Source<'a> {
    /// A policy file; its tables read through the access rules given.
    File {
        path: &'a Path,
        tables: &'a TableAccessArgs,
    },
    /// The saved sources of an applied policy.
    Saved(&'a Snapshot),
}

/// A compiled policy and what the state files need from its source.
pub(crate) struct Compiled {
    pub(crate) policy: Policy,
    pub(crate) program: ir::Program,
    pub(crate) object: Object,
    pub(crate) text: String,
    pub(crate) counters: Vec<CounterMeta>,
    /// Per table change compiled in, whether it changed the table.
    pub(crate) effective: Vec<bool>,
    /// The sources it was compiled from, to compile it again later
    /// (rollback) whatever happens to the files meanwhile.
    pub(crate) snapshot: Snapshot,
}

impl Compiled {
    /// What identifies each counter across policies (for the decision
    /// and the carry-over in `patronus_runtime::deploy`).
    pub(crate) fn counter_keys(&self) -> Vec<Option<String>> {
        self.counters.iter().map(CounterMeta::carry_key).collect()
    }

    /// The object's recorded identity.
    pub(crate) fn object_hash(&self) -> String {
        decide::object_hash(&self.object)
    }

    /// FNV-1a 64 of the policy text, hex.
    pub(crate) fn policy_hash(&self) -> String {
        format!("{:016x}", decide::fnv1a(self.text.as_bytes()))
    }

    /// The maps an in-place update rewrites.
    pub(crate) fn content_maps(&self) -> Vec<&MapDef> {
        roles::content_maps(&self.object)
    }

    /// The tables' fast paths, as `tables.json` records them.
    pub(crate) fn tables_meta(&self, object_hash: &str) -> TablesMeta {
        TablesMeta::of(
            tables::fast_paths(&self.policy, &self.program, &self.object),
            object_hash,
        )
    }
}

/// Reads tables from disk ([`crate::common::TableFiles`]) and remembers them.
struct RecordingLoader {
    files: crate::common::TableFiles,
    read: std::cell::RefCell<Vec<(String, String, String, String)>>,
}

impl TableLoader for RecordingLoader {
    fn may_quote(&self, policy_name: &str, file: &LoadedFile) -> bool {
        self.files.may_quote(policy_name, file)
    }

    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let file = self.files.load(policy_name, path)?;
        self.read.borrow_mut().push((
            policy_name.to_owned(),
            path.to_owned(),
            file.name.clone(),
            file.text.clone(),
        ));
        Ok(file)
    }
}

/// Serves the tables of a [`Snapshot`].
struct SnapshotLoader<'a>(&'a Snapshot);

impl TableLoader for SnapshotLoader<'_> {
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        self.0
            .tables
            .iter()
            .find(|(p, t, _, _)| p == policy_name && t == path)
            .map(|(_, _, name, text)| LoadedFile {
                name: name.clone(),
                text: text.clone(),
            })
            .ok_or_else(|| format!("`{path}` is not in the saved policy"))
    }
}

/// Checks, lowers and compiles the policy from `source` with the table
/// `edits` applied after checking; `Ok(None)` when the policy has errors
/// (they are printed).
pub(crate) fn compile(
    source: Source<'_>,
    edits: &[Change],
    color: &ColorArgs,
) -> Result<Option<Compiled>, CliError> {
    match source {
        Source::File { path, tables } => {
            let text = crate::common::read_text(path).map_err(CliError::new)?;
            let loader = RecordingLoader {
                files: tables.loader()?,
                read: Default::default(),
            };
            let name = path.display().to_string();
            let Some(mut compiled) = compile_text(&name, &text, &loader, edits, color)? else {
                return Ok(None);
            };
            compiled.snapshot.tables = loader.read.into_inner();
            Ok(Some(compiled))
        }
        Source::Saved(snapshot) => {
            let loader = SnapshotLoader(snapshot);
            let mut compiled = compile_text(&snapshot.name, &snapshot.text, &loader, edits, color)?;
            if let Some(compiled) = &mut compiled {
                compiled.snapshot.tables = snapshot.tables.clone();
            }
            Ok(compiled)
        }
    }
}

fn compile_text(
    name: &str,
    text: &str,
    loader: &dyn TableLoader,
    edits: &[Change],
    color: &ColorArgs,
) -> Result<Option<Compiled>, CliError> {
    let mut files = Files::new();
    let file = files.add(name.to_owned(), text.to_owned());
    let checked = patronus_compiler::check(&mut files, file, loader);
    print_human_diagnostics(&files, &checked.diagnostics, color.color);
    let mut policy = match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => return Ok(None),
    };
    let effective = edit_tables(&mut policy, edits)?;
    let program = ir::lower(&policy);
    // The code this kernel's verifier accepts (the fast path when it
    // keeps bounds through byte swaps).
    let limits = patronus_runtime::features::current().limits();
    let mut object = match patronus_codegen::compile_with_limits(&program, &limits) {
        Ok(object) => object,
        Err(err) => {
            crate::common::report_codegen_error(&files, &policy, name, &err, color.color)?;
            return Ok(None);
        }
    };
    test_knob_break_verifier(&mut object)?;
    let counters = program
        .counters
        .iter()
        .map(|counter| match counter {
            Counter::Rule(rule) => {
                let location = policy.rules.get(rule.0 as usize).map(|r| {
                    let (line, _) = files.line_col(policy.file, r.span.start);
                    format!("{name}:{line}")
                });
                CounterMeta {
                    kind: "rule".into(),
                    name: rule_name(&policy, *rule),
                    location,
                    identity: policy
                        .rules
                        .get(rule.0 as usize)
                        .map(|r| r.identity.clone()),
                    rule: Some(rule.0 + 1),
                    label: policy
                        .rules
                        .get(rule.0 as usize)
                        .and_then(|r| r.label.clone()),
                }
            }
            Counter::Phase(phase) => CounterMeta {
                kind: "phase".into(),
                name: phase_name(*phase),
                location: None,
                identity: None,
                rule: None,
                label: None,
            },
        })
        .collect();
    Ok(Some(Compiled {
        policy,
        program,
        object,
        text: text.to_owned(),
        counters,
        effective,
        snapshot: Snapshot {
            name: name.to_owned(),
            text: text.to_owned(),
            tables: Vec::new(),
        },
    }))
}

/// Applies `changes` to the policy's tables (normalised: sorted, no
/// duplicates). Returns, per change, whether it changed anything.
fn edit_tables(policy: &mut Policy, changes: &[Change]) -> Result<Vec<bool>, CliError> {
    let mut effective = Vec::with_capacity(changes.len());
    for c in changes {
        let table = policy
            .tables
            .iter_mut()
            .find(|t| t.name == c.table)
            .ok_or_else(|| CliError::new(format!("the saved policy has no table `{}`", c.table)))?;
        let at = table.prefixes.binary_search(&c.prefix);
        effective.push(match (c.add, at) {
            (true, Err(i)) => {
                table.prefixes.insert(i, c.prefix);
                true
            }
            (false, Ok(i)) => {
                table.prefixes.remove(i);
                true
            }
            _ => false,
        });
    }
    Ok(effective)
}

/// Test-only (tests/tests/e2e_failures.rs): with
/// `PATRONUS_TEST_BREAK_VERIFIER=1` in the environment, the XDP program
/// reads a byte through the packet pointer before any bounds check (its
/// third instruction, right after `r7 = data`), which the verifier must
/// reject. Not a user option: it exists to test the verifier error path.
fn test_knob_break_verifier(object: &mut Object) -> Result<(), CliError> {
    if std::env::var_os("PATRONUS_TEST_BREAK_VERIFIER").is_none_or(|v| v != "1") {
        return Ok(());
    }
    let elf = &mut object.elf;
    let field = |at: usize, len: usize| -> usize {
        elf.get(at..at + len).map_or(0, |b| {
            b.iter().rev().fold(0, |n, &x| n << 8 | usize::from(x))
        })
    };
    let (shoff, shentsize, shnum) = (field(0x28, 8), field(0x3a, 2), field(0x3c, 2));
    let strtab = field(shoff + field(0x3e, 2) * shentsize + 0x18, 8);
    let xdp = (0..shnum).map(|i| shoff + i * shentsize).find(|&header| {
        let name = strtab + field(header, 4);
        elf.get(name..name + 4) == Some(b"xdp\0")
    });
    // `r7 = *(u32 *)(r6 + 0)` (data) must be instruction 1.
    let patch = xdp
        .map(|header| field(header + 0x18, 8) + 16)
        .filter(|&at| elf.get(at - 8..at - 4) == Some(&[0x61, 0x67, 0, 0]));
    let Some(at) = patch else {
        return Err(CliError::new(
            "PATRONUS_TEST_BREAK_VERIFIER: unexpected program prologue",
        ));
    };
    // `r1 = *(u8 *)(r7 + 0)`: BPF_LDX | BPF_MEM | BPF_B, dst r1, src r7.
    elf[at..at + 8].copy_from_slice(&[0x71, 0x71, 0, 0, 0, 0, 0, 0]);
    Ok(())
}
