//! What every subcommand shares: the outcome and error types behind the
//! exit codes, reading policy files into [`Files`], the file-system
//! [`TableLoader`], and writing human diagnostics to stderr.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use patronus_compiler::diag::{Diagnostic, FileId, Files, Severity};
use patronus_compiler::{LoadedFile, TableLoader, render};

/// How a subcommand that ran to completion came out: exit 0 or 1. Usage and
/// I/O problems are a [`CliError`] instead (exit 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Exit 0: nothing wrong (warnings alone are fine).
    Success,
    /// Exit 1: the policy has errors, a test failed, a file needs formatting, ...
    Failure,
}

impl Status {
    pub fn failure_if(failed: bool) -> Status {
        if failed {
            Status::Failure
        } else {
            Status::Success
        }
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        match status {
            Status::Success => ExitCode::SUCCESS,
            Status::Failure => ExitCode::from(1),
        }
    }
}

/// A usage or I/O error: printed as `patronusc: error: MESSAGE`, exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<patronus_runtime::host::HostError> for CliError {
    fn from(error: patronus_runtime::host::HostError) -> CliError {
        CliError::new(error.to_string())
    }
}

/// `--color auto|always|never`, for subcommands that print diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorChoice {
    /// Color when the output is a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    Always,
    Never,
}

/// Flatten into a subcommand's arguments (`#[command(flatten)]`) to get `--color`.
#[derive(Debug, Clone, Copy, Args)]
pub struct ColorArgs {
    /// When to color human-readable output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

impl ColorChoice {
    /// Whether to color text written to a stream that is (or is not) a terminal.
    pub fn enabled(self, stream_is_terminal: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }

    pub fn for_stderr(self) -> bool {
        self.enabled(io::stderr().is_terminal())
    }

    pub fn for_stdout(self) -> bool {
        self.enabled(io::stdout().is_terminal())
    }
}

/// Reads a whole file as UTF-8, with a message fit for users on failure:
/// what went wrong (missing, permission denied, a directory) and, for text
/// that is not UTF-8, the line and byte where the bad byte is.
pub fn read_text(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|err| describe_io_error(path, &err))?;
    String::from_utf8(bytes).map_err(|err| {
        let bytes = err.as_bytes();
        let bad = err.utf8_error().valid_up_to();
        let before = &bytes[..bad];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        format!(
            "`{}` is not valid UTF-8: invalid byte 0x{:02X} at line {line}, byte {} of the line (offset {bad} in the file)",
            path.display(),
            bytes[bad],
            bad - line_start + 1,
        )
    })
}

fn describe_io_error(path: &Path, err: &io::Error) -> String {
    let what = match err.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory, not a file".to_string(),
        _ => err.to_string(),
    };
    format!("cannot read `{}`: {what}", path.display())
}

/// Reads a policy file and adds it to `files` under the path as given, so
/// diagnostics show the path the user typed.
pub fn read_policy(files: &mut Files, path: &Path) -> Result<FileId, CliError> {
    let text = read_text(path).map_err(CliError::new)?;
    Ok(files.add(path.display().to_string(), text))
}

/// Loads `table NAME file "PATH"` files from disk, relative to the
/// directory of the policy that names them (absolute paths as they are).
#[derive(Debug, Default, Clone, Copy)]
pub struct FsTableLoader;

impl FsTableLoader {
    /// Where `path`, as written in the policy `policy_name`, is on disk.
    pub fn resolve(policy_name: &str, path: &str) -> PathBuf {
        match Path::new(policy_name).parent() {
            Some(dir) => dir.join(path),
            None => PathBuf::from(path),
        }
    }
}

impl TableLoader for FsTableLoader {
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let resolved = Self::resolve(policy_name, path);
        let text = read_text(&resolved)?;
        Ok(LoadedFile {
            name: resolved.display().to_string(),
            text,
        })
    }
}

/// How many errors and warnings a set of diagnostics holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub errors: usize,
    pub warnings: usize,
}

impl Counts {
    pub fn add(&mut self, diagnostics: &[Diagnostic]) {
        for d in diagnostics {
            match d.severity {
                Severity::Error => self.errors += 1,
                Severity::Warning => self.warnings += 1,
            }
        }
    }

    /// `2 errors, 1 warning in 3 files`.
    pub fn summary(&self, files: usize) -> String {
        format!(
            "{}, {} in {}",
            plural(self.errors, "error"),
            plural(self.warnings, "warning"),
            plural(files, "file")
        )
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Writes diagnostics rustc-style to stderr (colored per `color`).
pub fn print_human_diagnostics(files: &Files, diagnostics: &[Diagnostic], color: ColorChoice) {
    if diagnostics.is_empty() {
        return;
    }
    let text = render::human(files, diagnostics, color.for_stderr());
    // A closed stderr leaves nowhere to report the failure; ignore it.
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error worth
/// a message, so write errors only come back as an I/O [`CliError`].
pub fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(CliError::new(format!("cannot write to stdout: {err}"))),
    }
}
