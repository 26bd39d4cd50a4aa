//! Where a policy's text comes from for `diff` and `snapshot`: a file,
//! or `REV:PATH` in git (its table files read at the same revision through
//! `git show`); and loading it — read, check, lower — into a
//! [`LoadedPolicy`].

use std::path::{Path, PathBuf};
use std::process::Command;

use patronus_compiler::diag::{FileId, Files};
use patronus_compiler::ir::{self, Program};
use patronus_compiler::regions::Side;
use patronus_compiler::typed::Policy;
use patronus_compiler::{LoadedFile, TableLoader, check};

use crate::common::{CliError, ColorChoice, FsTableLoader, print_human_diagnostics, read_text};

/// Where a policy's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// `git -C dir show rev:path`.
    Git {
        rev: String,
        dir: PathBuf,
        path: String,
    },
}

impl Source {
    /// A path, or `REV:PATH` when no file of that name exists.
    pub fn parse(arg: &str) -> Source {
        if Path::new(arg).exists() {
            return Source::File(PathBuf::from(arg));
        }
        match arg.split_once(':') {
            Some((rev, path)) if !rev.is_empty() && !path.is_empty() => Source::Git {
                rev: rev.to_string(),
                dir: PathBuf::from("."),
                path: path.to_string(),
            },
            _ => Source::File(PathBuf::from(arg)),
        }
    }

    /// POLICY at REV, relative to the file's own directory (`./NAME`, as
    /// git resolves it from there), so any working directory works.
    pub fn at_revision(rev: &str, policy: &Path) -> Source {
        let dir = match policy.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = policy
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Source::Git {
            rev: rev.to_string(),
            dir,
            path: format!("./{name}"),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Git { rev, dir, path } if dir == Path::new(".") => format!("{rev}:{path}"),
            Source::Git { rev, dir, path } => {
                format!(
                    "{rev}:{}",
                    dir.join(path.trim_start_matches("./")).display()
                )
            }
        }
    }
}

/// `git -C dir show rev:path`, as UTF-8 text.
fn git_show(rev: &str, dir: &Path, path: &str) -> Result<String, String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .arg("show")
        .arg(format!("{rev}:{path}"))
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "git show {rev}:{path} failed: {}",
            err.trim().lines().next().unwrap_or("unknown error")
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("{rev}:{path} is not valid UTF-8"))
}

/// Reads table files at the policy's git revision, relative to the policy.
struct GitTableLoader {
    rev: String,
    dir: PathBuf,
    /// The policy's path as given to git.
    policy_path: String,
}

impl TableLoader for GitTableLoader {
    fn load(&self, _policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let joined = match Path::new(&self.policy_path).parent() {
            Some(parent) if Path::new(path).is_relative() => parent.join(path),
            _ => PathBuf::from(path),
        };
        let git_path = joined.to_string_lossy().into_owned();
        let text = git_show(&self.rev, &self.dir, &git_path)?;
        Ok(LoadedFile {
            name: format!("{}:{git_path}", self.rev),
            text,
        })
    }
}

/// A policy checked and lowered, ready for regions.
pub struct LoadedPolicy {
    pub file: FileId,
    pub name: String,
    pub policy: Policy,
    pub program: Program,
}

impl LoadedPolicy {
    pub fn side(&self) -> Side<'_> {
        Side {
            policy: &self.policy,
            program: &self.program,
        }
    }
}

/// Reads, checks and lowers a policy into `files`; a policy with errors
/// gets its diagnostics printed and is an error (exit 2).
pub fn load_policy(
    files: &mut Files,
    source: &Source,
    color: ColorChoice,
) -> Result<LoadedPolicy, CliError> {
    let name = source.name();
    let (file, checked) = match source {
        Source::File(path) => {
            let text = read_text(path).map_err(CliError::new)?;
            let file = files.add(name.clone(), text);
            (file, check(files, file, &FsTableLoader))
        }
        Source::Git { rev, dir, path } => {
            let text = git_show(rev, dir, path).map_err(CliError::new)?;
            let file = files.add(name.clone(), text);
            let loader = GitTableLoader {
                rev: rev.clone(),
                dir: dir.clone(),
                policy_path: path.clone(),
            };
            (file, check(files, file, &loader))
        }
    };
    let failed = checked.has_errors();
    match checked.policy {
        Some(policy) if !failed => {
            let program = ir::lower(&policy);
            Ok(LoadedPolicy {
                file,
                name,
                policy,
                program,
            })
        }
        _ => {
            print_human_diagnostics(files, &checked.diagnostics, color);
            Err(CliError::new(format!("`{name}` has errors")))
        }
    }
}
