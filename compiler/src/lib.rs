//! The Patronus compiler proper: from a parsed policy to a typed, checked
//! policy (resolve, type check, lints), its meaning as a reference
//! interpreter, and its lowering to an IR with map plans.
//!
//! No I/O happens here: table files come in through [`TableLoader`], which
//! the CLI implements over the file system (and tests over a map).

mod check;
pub mod codes;
#[cfg(feature = "corpus")]
pub mod corpus;
pub mod coverage;
pub mod diag;
pub mod diff;
pub mod frame;
pub mod interp;
pub mod ir;
pub mod limits;
pub mod lints;
pub mod net;
pub mod packet;
pub mod proto;
pub mod regions;
pub mod render;
pub mod semantics;
pub mod snapshot;
#[cfg(feature = "testgen")]
pub mod testgen;
pub mod typed;

use diag::{Diagnostic, FileId, Files};

/// Reads the table files a policy names (`table NAME file "PATH"`).
pub trait TableLoader {
    /// Reads `path` as written in the policy, relative to the policy file
    /// named `policy_name`. Returns the name to show in diagnostics (the
    /// resolved path) and the contents, or an error message (not found,
    /// permission denied, not UTF-8, a directory, ...).
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String>;

    /// Whether diagnostics may quote lines of `file` (as loaded for the
    /// policy `policy_name`). A loader that reads files from outside the
    /// directory tree the policy's author controls says no: a CI log must
    /// not show the runner's files. Such a file's bad lines are reported
    /// by line number only, at the `file "PATH"` in the policy.
    fn may_quote(&self, _policy_name: &str, _file: &LoadedFile) -> bool {
        true
    }
}

pub struct LoadedFile {
    pub name: String,
    pub text: String,
}

/// The result of checking one policy: the typed policy when there were no
/// errors, and every diagnostic (errors and warnings) in source order.
pub struct Checked {
    pub policy: Option<typed::Policy>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == diag::Severity::Error)
    }
}

/// Parses, resolves, type-checks and lints the policy in `file`. Table
/// files it loads are added to `files`.
pub fn check(files: &mut Files, file: FileId, loader: &dyn TableLoader) -> Checked {
    check::check(files, file, loader)
}

/// Types one packet written in test syntax (`patronusc explain`'s PACKET
/// argument) exactly as a test step would be: the same defaults and the same
/// `P0014` diagnostics, pointing into `file` (which holds `source`).
pub fn packet_from_spec(
    file: FileId,
    source: &str,
    spec: &patronus_grammar::ast::PacketSpec,
) -> Result<typed::Packet, Vec<Diagnostic>> {
    let mut checker = check::Checker::new(file, source);
    match checker.packet(spec) {
        Some(packet) if checker.diagnostics.is_empty() => Ok(packet),
        _ => Err(checker.diagnostics),
    }
}
