//! What every subcommand shares: the outcome and error types behind the
//! exit codes, reading policy files into [`Files`], the file-system
//! [`TableLoader`], writing human diagnostics to stderr, and showing why the
//! code generator refused a policy.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use patronus_codegen::CodegenError;
use patronus_compiler::diag::{Diagnostic, FileId, Files, Severity};
use patronus_compiler::limits::MAX_TABLE_FILE_BYTES;
use patronus_compiler::typed::Policy;
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
/// that is not UTF-8, the line and byte where the bad byte is. Only regular
/// files of at most [`MAX_POLICY_FILE_BYTES`] are read (see [`read_bounded`]).
pub fn read_text(path: &Path) -> Result<String, String> {
    let bytes = read_bounded(path, MAX_POLICY_FILE_BYTES, "a policy file")?;
    utf8_text(path, bytes)
}

/// The largest policy file read (a 100,000-rule policy is about 4 MB).
pub const MAX_POLICY_FILE_BYTES: u64 = 64 << 20;

fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, String> {
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

/// Reads at most `max` bytes of a regular file (`what`: "a table file").
///
/// A FIFO would block `read` forever, `/dev/zero` never ends, and `/proc`
/// or `/sys` files are generated on demand (`/proc/self/environ` holds the
/// process's secrets): the type is checked before the file is opened and
/// again on the open file (opened non-blocking, not following a symbolic
/// link in the last component), and the read stops one byte past `max`.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    // Links resolved first, so that the last component of what is opened
    // cannot be swapped for a link in between (O_NOFOLLOW).
    let real = std::fs::canonicalize(path).map_err(|err| describe_io_error(path, &err))?;
    let before = std::fs::metadata(&real).map_err(|err| describe_io_error(path, &err))?;
    not_special(path, &before, what)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&real)
        .map_err(|err| describe_io_error(path, &err))?;
    let meta = file
        .metadata()
        .map_err(|err| describe_io_error(path, &err))?;
    not_special(path, &meta, what)?;
    if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
        return Err(format!(
            "cannot read `{}`: it was replaced while being opened",
            path.display()
        ));
    }
    if let Some(fs) = pseudo_filesystem(&file) {
        return Err(format!(
            "cannot read `{}`: it is on {fs}, whose files are generated by the kernel; {what} must be a regular file on disk",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| describe_io_error(path, &err))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "cannot read `{}`: it is larger than {} MiB, the limit for {what}",
            path.display(),
            max >> 20
        ));
    }
    Ok(bytes)
}

/// Refuses what is not a regular file, naming what it is.
fn not_special(path: &Path, meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    let is = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a file"
    };
    Err(format!(
        "cannot read `{}`: is {is}, not a regular file; {what} must be a regular file",
        path.display()
    ))
}

/// The name of the kernel pseudo file system `file` is on, if it is one.
fn pseudo_filesystem(file: &std::fs::File) -> Option<&'static str> {
    use std::os::fd::AsRawFd;
    // SAFETY: `statfs` is plain data; fstatfs fills it or fails.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid open descriptor and a valid pointer to `st`.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    // Magic numbers from linux/magic.h.
    let kinds: &[(i64, &str)] = &[
        (0x9fa0, "procfs (/proc)"),
        (0x6265_6572, "sysfs (/sys)"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0x6367_7270, "cgroup2"),
        (0x0027_e0eb, "cgroupfs"),
        (0xcafe_4a11, "bpffs"),
        (0x6e73_6673, "nsfs"),
        (0xde5e_81e4, "efivarfs"),
        (0x0000_1373, "devfs"),
    ];
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    kinds
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

fn describe_io_error(path: &Path, err: &io::Error) -> String {
    let what = match err.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory, not a file".to_string(),
        _ if err.raw_os_error() == Some(libc::ELOOP) => {
            "is a symbolic link that changed while it was opened".to_string()
        }
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

/// `--allow-path DIR`, for every subcommand that reads table files.
#[derive(Debug, Clone, Default, Args)]
pub struct TableAccessArgs {
    /// Also read table files under DIR (repeatable). Without it, a policy
    /// reads table files only from its own directory and below.
    #[arg(long = "allow-path", value_name = "DIR")]
    pub allow_path: Vec<PathBuf>,
}

impl TableAccessArgs {
    pub fn loader(&self) -> Result<TableFiles, CliError> {
        TableFiles::new(&self.allow_path)
    }
}

/// Loads `table NAME file "PATH"` files from disk, relative to the
/// directory of the policy that names them, confined to that directory's
/// tree: a policy under review in CI must not be able to read (and have
/// diagnostics quote) the runner's files. The same as
/// `TableFiles::default()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsTableLoader;

impl FsTableLoader {
    /// Where `path`, as written in the policy `policy_name`, is on disk.
    pub fn resolve(policy_name: &str, path: &str) -> PathBuf {
        TableFiles::resolve(policy_name, path)
    }
}

impl TableLoader for FsTableLoader {
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        TableFiles::default().load(policy_name, path)
    }
}

/// [`FsTableLoader`] with directories outside the policy's tree allowed
/// (`--allow-path`). Files read from those are never quoted in diagnostics.
#[derive(Debug, Default)]
pub struct TableFiles {
    /// Canonical directories table files may also come from.
    allowed: Vec<PathBuf>,
    /// Names of the files loaded from outside the policy's tree.
    outside: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl TableFiles {
    /// Table files from the policy's tree and from each of `allow`, which
    /// must be existing directories.
    pub fn new(allow: &[PathBuf]) -> Result<TableFiles, CliError> {
        let mut allowed = Vec::with_capacity(allow.len());
        for dir in allow {
            let real = std::fs::canonicalize(dir)
                .map_err(|err| CliError::new(format!("--allow-path {}: {}", dir.display(), err)))?;
            if !real.is_dir() {
                return Err(CliError::new(format!(
                    "--allow-path {}: not a directory",
                    dir.display()
                )));
            }
            allowed.push(real);
        }
        Ok(TableFiles {
            allowed,
            outside: Default::default(),
        })
    }

    /// Where `path`, as written in the policy `policy_name`, is on disk.
    pub fn resolve(policy_name: &str, path: &str) -> PathBuf {
        match Path::new(policy_name).parent() {
            Some(dir) => dir.join(path),
            None => PathBuf::from(path),
        }
    }

    /// The directory tree a policy's table files come from by default.
    fn tree(policy_name: &str) -> Result<PathBuf, String> {
        let dir = match Path::new(policy_name).parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::canonicalize(dir).map_err(|err| describe_io_error(dir, &err))
    }
}

impl TableLoader for TableFiles {
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let resolved = Self::resolve(policy_name, path);
        let tree = Self::tree(policy_name)?;
        // Symbolic links and `..` resolved first: a link in the tree to
        // `/etc` is outside it.
        let real =
            std::fs::canonicalize(&resolved).map_err(|err| describe_io_error(&resolved, &err))?;
        let inside = real.starts_with(&tree);
        if !inside && !self.allowed.iter().any(|dir| real.starts_with(dir)) {
            return Err(format!(
                "`{}` is outside the policy's directory `{}`; table files are read only from there (give `--allow-path DIR` to allow another directory)",
                resolved.display(),
                tree.display()
            ));
        }
        let bytes = read_bounded(&resolved, MAX_TABLE_FILE_BYTES, "a table file")?;
        let text = utf8_text(&resolved, bytes)?;
        let name = resolved.display().to_string();
        if !inside {
            self.outside.borrow_mut().insert(name.clone());
        }
        Ok(LoadedFile { name, text })
    }

    fn may_quote(&self, _policy_name: &str, file: &LoadedFile) -> bool {
        !self.outside.borrow().contains(&file.name)
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

/// `90s`, `5m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 90s, 5m, 500ms)"))?;
    let millis = match unit {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(format!("`{text}`: the unit is one of ms, s, m, h")),
    };
    match millis {
        Some(0) => Err("the confirmation time must be more than zero".into()),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("`{text}` is too long")),
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) of nanoseconds since the Unix epoch.
pub fn utc_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let millis = (unix_ns / 1_000_000) % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

pub fn runtime_err(context: &str) -> impl FnOnce(patronus_runtime::RuntimeError) -> CliError + '_ {
    move |err| CliError::new(format!("{context}: {err}"))
}

/// Refuses early, with a clear message (exit 2), when this process
/// cannot load or attach programs.
pub(crate) fn require_privileges() -> Result<(), CliError> {
    match patronus_runtime::privileges::missing_privileges() {
        Some(why) => Err(CliError::new(why)),
        None => Ok(()),
    }
}

/// Readers (`status`, `stats`, `log`): the pins and the state are root's
/// alone, so without privileges "nothing applied" would be a lie.
pub(crate) fn require_root_to_read() -> Result<(), CliError> {
    match patronus_runtime::privileges::missing_privileges() {
        Some(_) => Err(CliError::new(
            "permission denied: run as root (the pins and the state of applied policies are \
             readable by root only)",
        )),
        None => Ok(()),
    }
}

/// The diagnostic of a kernel limit the code generator blames on a rule
/// (`P0017`, at the rule's span in `policy`); `None` for any other error.
pub fn codegen_limit_diagnostic(policy: &Policy, err: &CodegenError) -> Option<Diagnostic> {
    let CodegenError::Limit {
        what,
        rule: Some(rule),
    } = err
    else {
        return None;
    };
    let span = policy.rule_span(*rule)?;
    Some(patronus_compiler::diag::program_limit_diagnostic(
        policy.file,
        span,
        what,
    ))
}

/// Shows why the code generator refused the policy `name` for `build` and
/// `apply`. A kernel limit is the policy's fault: at a rule it is a
/// diagnostic pointing there, else one `error:` line; either is printed
/// here and `Ok` comes back (the command fails, exit 1). Any other error
/// is the compiler's: a [`CliError`] (exit 2).
pub fn report_codegen_error(
    files: &Files,
    policy: &Policy,
    name: &str,
    err: &CodegenError,
    color: ColorChoice,
) -> Result<(), CliError> {
    if let Some(diagnostic) = codegen_limit_diagnostic(policy, err) {
        print_human_diagnostics(files, &[diagnostic], color);
        return Ok(());
    }
    match err {
        CodegenError::Limit { .. } | CodegenError::Stack(_) => {
            eprintln!("error: `{name}` exceeds a limit of the kernel: {err}");
            Ok(())
        }
        _ => Err(CliError::new(format!("cannot compile `{name}`: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00.000");
        // 2024-02-29 12:34:56.789: a leap day.
        assert_eq!(
            utc_time(1_709_210_096_789_000_000),
            "2024-02-29 12:34:56.789"
        );
        assert_eq!(utc_time(951_782_400_000_000_000), "2000-02-29 00:00:00.000");
    }

    use patronus_compiler::codes::Code;
    use patronus_compiler::typed::RuleId;

    struct NoTables;

    impl TableLoader for NoTables {
        fn load(&self, _policy: &str, _path: &str) -> Result<LoadedFile, String> {
            Err("no tables".into())
        }
    }

    fn policy(text: &str) -> Policy {
        let mut files = Files::new();
        let file = files.add("p.pf", text);
        patronus_compiler::check(&mut files, file, &NoTables)
            .policy
            .expect("a valid policy")
    }

    #[test]
    fn a_limit_blamed_on_a_rule_points_at_the_rule() {
        let text = "allow tcp to port 22\nallow udp to port 53\n";
        let policy = policy(text);
        let err = CodegenError::Limit {
            what: "the program needs more than 10 instructions".into(),
            rule: Some(RuleId(1)),
        };
        let d = codegen_limit_diagnostic(&policy, &err).expect("a diagnostic");
        assert_eq!(d.code, Code::ProgramLimit);
        assert_eq!(d.primary.file, policy.file);
        let span = d.primary.span;
        assert_eq!(&text[span.start..span.end], "allow udp to port 53");
        assert!(
            d.message.contains("more than 10 instructions"),
            "{}",
            d.message
        );
    }

    #[test]
    fn other_codegen_errors_are_not_rule_diagnostics() {
        let policy = policy("allow tcp to port 22\n");
        for err in [
            CodegenError::Limit {
                what: "a map is too large".into(),
                rule: None,
            },
            // An id that is no rule of the policy (a bug upstream) does
            // not point anywhere.
            CodegenError::Limit {
                what: "x".into(),
                rule: Some(RuleId(7)),
            },
            CodegenError::Internal { what: "x".into() },
        ] {
            assert_eq!(codegen_limit_diagnostic(&policy, &err), None, "{err:?}");
        }
    }
}
