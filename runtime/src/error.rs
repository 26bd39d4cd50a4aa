//! Everything that can go wrong between an object and a running program,
//! as data with messages a user can act on.

use std::fmt;
use std::io;

use patronus_codegen::elf::ProgramKind;

/// How many lines of the verifier log an error keeps.
pub const VERIFIER_TAIL_LINES: usize = 12;

#[derive(Debug)]
pub enum RuntimeError {
    /// The kernel cannot run BPF programs for us (not root, no bpf(2), ...).
    Unavailable { reason: String },
    /// The object is not a BPF ELF the loader understands (truncated,
    /// corrupted, hand-edited).
    BadObject { message: String },
    /// The kernel refused to create a map.
    MapCreate { message: String },
    /// The object has no program of this kind.
    NoProgram { kind: ProgramKind },
    /// The verifier (or the load syscall) rejected a program.
    Verifier {
        kind: ProgramKind,
        program: String,
        /// The load syscall's error.
        error: io::Error,
        /// The last lines of the verifier log, oldest first.
        log_tail: Vec<String>,
        /// The instruction the verifier stopped at, if the log names one.
        insn: Option<usize>,
        /// The listing's comment block for that instruction (the rule or
        /// phase the code belongs to), when a listing was given.
        annotation: Option<String>,
    },
    /// A map image names a map the object does not define.
    UnknownMap { map: String },
    /// A map image entry does not fit the map's key or value size.
    EntrySize {
        map: String,
        entry: usize,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A map image has more entries than the map can hold.
    TooManyEntries {
        map: String,
        entries: usize,
        max_entries: u32,
    },
    /// A map operation failed.
    Map {
        map: String,
        op: &'static str,
        error: io::Error,
    },
    /// A test run was refused (bad frame size, program type, ...).
    TestRun {
        kind: ProgramKind,
        frame_len: usize,
        error: io::Error,
    },
    /// An in-place update of a running policy's maps failed; the entries
    /// already changed were put back (`restored`) or not (the error of
    /// the restore).
    InPlace {
        cause: Box<RuntimeError>,
        restored: Result<(), String>,
    },
    /// The running policy's pinned map does not have the shape an in-place
    /// update expects (a full reload is needed).
    ShapeChanged { map: String },
    /// The object needs a kernel feature this kernel lacks.
    MissingFeature {
        feature: &'static str,
        /// The first Linux release that has it.
        since: &'static str,
        /// This kernel's release.
        release: String,
    },
    /// Any other syscall failure.
    Io {
        context: &'static str,
        error: io::Error,
    },
}

fn kind_name(kind: ProgramKind) -> &'static str {
    match kind {
        ProgramKind::Xdp => "XDP",
        ProgramKind::Tc => "tc egress",
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Unavailable { reason } => {
                write!(f, "the kernel cannot run BPF programs here: {reason}")
            }
            RuntimeError::BadObject { message } => {
                write!(f, "the object is not a loadable BPF ELF file: {message}")
            }
            RuntimeError::MissingFeature {
                feature,
                since,
                release,
            } => write!(
                f,
                "this kernel ({release}) lacks {feature}, which the policy needs: \
                 Linux {since} or later has it"
            ),
            RuntimeError::MapCreate { message } => {
                write!(f, "the kernel refused to create a map: {message}")
            }
            RuntimeError::NoProgram { kind } => {
                write!(f, "the object has no {} program", kind_name(*kind))
            }
            RuntimeError::Verifier {
                kind,
                program,
                error,
                log_tail,
                insn,
                annotation,
            } => {
                write!(
                    f,
                    "the kernel rejected the {} program `{program}`: {error}",
                    kind_name(*kind)
                )?;
                if let Some(insn) = insn {
                    write!(f, "\n  at instruction {insn}")?;
                    if let Some(annotation) = annotation {
                        write!(f, " ({annotation})")?;
                    }
                }
                if log_tail.is_empty() {
                    f.write_str("\n  (the verifier log is empty)")?;
                } else {
                    f.write_str("\n  verifier log (last lines):")?;
                    for line in log_tail {
                        write!(f, "\n    {line}")?;
                    }
                }
                Ok(())
            }
            RuntimeError::InPlace { cause, restored } => {
                write!(f, "updating the running maps in place failed: {cause}")?;
                match restored {
                    Ok(()) => f.write_str(" (the previous entries were restored)"),
                    Err(why) => write!(f, " (restoring the previous entries ALSO failed: {why})"),
                }
            }
            RuntimeError::ShapeChanged { map } => write!(
                f,
                "the running map `{map}` is missing or has another shape than the new policy's"
            ),
            RuntimeError::UnknownMap { map } => {
                write!(f, "map image `{map}` has no map of that name in the object")
            }
            RuntimeError::EntrySize {
                map,
                entry,
                what,
                expected,
                got,
            } => write!(
                f,
                "map `{map}` entry {entry}: {what} is {got} bytes, the map's is {expected}"
            ),
            RuntimeError::TooManyEntries {
                map,
                entries,
                max_entries,
            } => write!(
                f,
                "map `{map}` holds at most {max_entries} entries, the image has {entries}"
            ),
            RuntimeError::Map { map, op, error } => write!(f, "map `{map}`: {op} failed: {error}"),
            RuntimeError::TestRun {
                kind,
                frame_len,
                error,
            } => {
                write!(
                    f,
                    "test run of the {} program on a {frame_len}-byte frame failed: {error}",
                    kind_name(*kind)
                )?;
                if error.raw_os_error() == Some(libc::EINVAL) && *frame_len < 14 {
                    f.write_str(" (the kernel needs at least an Ethernet header, 14 bytes)")?;
                }
                Ok(())
            }
            RuntimeError::Io { context, error } => write!(f, "{context}: {error}"),
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeError::Verifier { error, .. }
            | RuntimeError::Map { error, .. }
            | RuntimeError::TestRun { error, .. }
            | RuntimeError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The last `VERIFIER_TAIL_LINES` non-empty lines of a verifier log.
pub fn log_tail(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(VERIFIER_TAIL_LINES);
    lines[start..].iter().map(|l| (*l).to_owned()).collect()
}

/// The instruction the verifier was at when it stopped: the last line of
/// the form `N: (op) ...` (level-1 logs print each instruction they walk),
/// or for control-flow errors, which stop before the walk, the `insn N` of
/// the message (`unreachable insn 7`, `back-edge from insn 9 to 3`).
pub fn failing_insn(log: &str) -> Option<usize> {
    log.lines().rev().find_map(|line| {
        if let Some((index, _)) = line.split_once(": (")
            && let Ok(index) = index.trim().parse()
        {
            return Some(index);
        }
        // ` insn N`, not `max_states_per_insn N` of the statistics line.
        let padded = format!(" {line}");
        let (_, rest) = padded.split_once(" insn ")?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The `; comment` lines that head the block containing instruction
/// `insn` in a bpftool-style listing (`; ...` headers, `   N: (op) ...`).
pub fn annotation(listing: &str, insn: usize) -> Option<String> {
    let mut block: Vec<&str> = Vec::new();
    let mut block_closed = false;
    for line in listing.lines() {
        let trimmed = line.trim_start();
        if let Some(comment) = trimmed.strip_prefix(';') {
            if block_closed {
                block.clear();
                block_closed = false;
            }
            block.push(comment.trim());
            continue;
        }
        block_closed = true;
        let index = trimmed
            .split_once(':')
            .and_then(|(n, _)| n.trim().parse::<usize>().ok());
        if index == Some(insn) {
            return (!block.is_empty()).then(|| block.join("; "));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
; prologue
   0: (bf) r6 = r1
   1: (61) r7 = *(u32 *)(r6 +0)
; rule 2 \"web\": dport
   2: (bf) r1 = r7
   3: (07) r1 += 14
";

    #[test]
    fn annotation_is_the_block_header() {
        assert_eq!(annotation(LISTING, 1).as_deref(), Some("prologue"));
        assert_eq!(
            annotation(LISTING, 3).as_deref(),
            Some("rule 2 \"web\": dport")
        );
        assert_eq!(annotation(LISTING, 9), None);
    }

    #[test]
    fn failing_insn_is_the_last_walked() {
        let log = "0: R1=ctx() R10=fp0\n0: (bf) r6 = r1\n1: (61) r7 = *(u32 *)(r6 +0)\n\
                   invalid bpf_context access off=0 size=4\nprocessed 2 insns";
        assert_eq!(failing_insn(log), Some(1));
        assert_eq!(failing_insn("nothing here"), None);
        let cfg = "unreachable insn 173\nverification time 9 usec\nstack depth 0\n\
                   processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0";
        assert_eq!(failing_insn(cfg), Some(173));
        assert_eq!(failing_insn("back-edge from insn 9 to 3\n"), Some(9));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let log: String = (0..40).map(|i| format!("line {i}\n\n")).collect();
        let tail = log_tail(&log);
        assert_eq!(tail.len(), VERIFIER_TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 39"));
    }
}
