//! Shared by codegen's XDP kernel tests: compiling the repository policies,
//! loading an [`Object`] with the runtime crate, and reading the stats map
//! back as the counters a packet touched.

#![allow(dead_code)]

pub mod generate;

use std::path::{Path, PathBuf};

use patronus_codegen::{Object, compile};
use patronus_compiler::diag::Files;
use patronus_compiler::ir;
use patronus_compiler::semantics::Counter;
use patronus_compiler::typed::Policy;
use patronus_compiler::{LoadedFile, TableLoader};
use patronus_runtime::{Image, Loaded, MapFill, ProgramKind};

pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("policies")
}

/// Reads table files relative to `policies/`.
pub struct PoliciesLoader;

impl TableLoader for PoliciesLoader {
    fn load(&self, _policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        std::fs::read_to_string(policies_dir().join(path))
            .map(|text| LoadedFile {
                name: format!("policies/{path}"),
                text,
            })
            .map_err(|e| e.to_string())
    }
}

/// Every `policies/*.pf` as (stem, checked policy), sorted by name.
pub fn repository_policies() -> Vec<(String, Policy)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(policies_dir())
        .expect("policies/ exists")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pf"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 name")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("readable policy");
            let mut files = Files::new();
            let file = files.add(format!("policies/{stem}.pf"), text);
            let checked = patronus_compiler::check(&mut files, file, &PoliciesLoader);
            let failed = checked.has_errors();
            let policy = checked
                .policy
                .filter(|_| !failed)
                .unwrap_or_else(|| panic!("{stem} checks"));
            (stem, policy)
        })
        .collect()
}

/// `true` when kernel tests can run (see `patronus_runtime::testing`).
pub fn kernel(test: &str) -> bool {
    patronus_runtime::testing::kernel_or_skip(test)
}

/// Loads a compiled object with its map images.
pub fn load(object: &Object) -> Loaded {
    let maps = object
        .maps
        .iter()
        .filter(|m| !m.entries.is_empty())
        .map(|m| MapFill {
            name: &m.name,
            entries: m
                .entries
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect(),
        })
        .collect();
    let image = Image {
        elf: &object.elf,
        maps,
        listings: vec![(ProgramKind::Xdp, object.listing.as_str())],
    };
    Loaded::load(&image).unwrap_or_else(|e| panic!("load failed: {e}"))
}

/// Compiles and loads a lowered program.
pub fn compile_and_load(program: &ir::Program) -> (Object, Loaded) {
    let object = compile(program).unwrap_or_else(|e| panic!("compile failed: {e}"));
    let loaded = load(&object);
    (object, loaded)
}

/// The stats map as packet counts per counter.
pub fn packet_counts(loaded: &Loaded) -> Vec<u64> {
    loaded
        .read_counters("stats")
        .expect("stats readable")
        .into_iter()
        .map(|words| words.first().copied().unwrap_or(0))
        .collect()
}

/// The counters that grew between two reads.
pub fn grown(program: &ir::Program, before: &[u64], after: &[u64]) -> Vec<Counter> {
    let mut out: Vec<Counter> = program
        .counters
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a > b)
        .map(|(c, _)| *c)
        .collect();
    out.sort();
    out
}
