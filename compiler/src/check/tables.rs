//! Tables: inline `{ ... }` sets and table files (one address or CIDR per
//! line, `#` comments, blank lines), loaded through the [`TableLoader`] and
//! normalised into sorted, deduplicated prefixes. Table files can hold a
//! million lines, so their parser does no allocation per line.

use std::net::IpAddr;

use patronus_grammar::ast::{self, ExprKind, Span};

use super::Checker;
use crate::TableLoader;
use crate::codes::Code;
use crate::diag::{Diagnostic, FileId, Files, Label};
use crate::limits::{MAX_TABLE_FILES_TOTAL_BYTES, quote};
use crate::net::Prefix;
use crate::typed::Table;

/// How many bad lines of one table file are reported one by one; a file
/// that is not a table at all would otherwise bury everything else.
const MAX_LINE_ERRORS: usize = 10;

impl<'a> Checker<'a> {
    /// Builds every table (first definitions, in file order), loading
    /// table files through `loader` and adding them to `files`.
    pub fn load_tables(
        &mut self,
        files: &mut Files,
        policy_name: &str,
        loader: &dyn TableLoader,
    ) -> Vec<Table> {
        let defs = self.table_defs.clone();
        defs.into_iter()
            .map(|def| {
                let (prefixes, source_file) = match &def.source {
                    ast::TableSource::Inline(set) => (self.inline_table(def, set), None),
                    ast::TableSource::File(path) => {
                        self.table_file(files, policy_name, loader, def, path)
                    }
                };
                Table {
                    name: def.name.name.clone(),
                    span: def.name.span,
                    prefixes,
                    source_file,
                }
            })
            .collect()
    }

    /// Loads, parses and reports on one table file, within the limit on
    /// the bytes of table files a policy may read in total.
    fn table_file(
        &mut self,
        files: &mut Files,
        policy_name: &str,
        loader: &dyn TableLoader,
        def: &'a ast::TableDef,
        path: &'a ast::StrLit,
    ) -> (Vec<Prefix>, Option<FileId>) {
        let shown = quote(&path.value);
        let loaded = if self.table_bytes > MAX_TABLE_FILES_TOTAL_BYTES {
            Err(format!(
                "the policy's table files already total more than {} MiB, the limit",
                MAX_TABLE_FILES_TOTAL_BYTES >> 20
            ))
        } else {
            loader.load(policy_name, &path.value)
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(why) => {
                let d = self
                    .error(
                        Code::TableFile,
                        format!("cannot read table file `{shown}`"),
                        path.span,
                        "this file cannot be used",
                    )
                    .with_note(why)
                    .with_secondary(self.label(def.name.span, format!("for table `@{}`", def.name.name)))
                    .with_help("the path is relative to the policy file, inside the policy's directory; check that it is a regular file that exists and is readable");
                self.emit(d);
                return (Vec::new(), None);
            }
        };
        self.table_bytes = self.table_bytes.saturating_add(loaded.text.len() as u64);
        if loader.may_quote(policy_name, &loaded) {
            let id = files.add(loaded.name, loaded.text);
            let (prefixes, errors) = parse_table_file(id, &files.get(id).text);
            self.diagnostics.extend(errors);
            return (prefixes, Some(id));
        }
        // Not quotable: report bad lines by number, at the path in the
        // policy, and keep the text out of `files` (and so out of every
        // rendering and lint).
        let (prefixes, bad) = parse_table_lines(&loaded.text);
        let mut line = 1usize;
        let mut counted_to = 0usize;
        for &(span, problem) in &bad.shown {
            line += loaded.text.as_bytes()[counted_to..span.start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            counted_to = span.start;
            let d = self
                .error(
                    Code::TableLine,
                    format!("line {line} of table file `{shown}` {}", problem.unquoted()),
                    path.span,
                    "the file is outside the policy's directory, so its lines are not quoted",
                )
                .with_help(TABLE_LINE_HELP);
            self.emit(d);
        }
        if let Some(more) = bad.more() {
            self.emit(self.error(
                Code::TableLine,
                format!("{more} more bad lines in table file `{shown}` are not shown"),
                path.span,
                "",
            ));
        }
        (prefixes, None)
    }

    fn inline_table(&mut self, def: &'a ast::TableDef, set: &'a ast::Expr) -> Vec<Prefix> {
        let flat = self.flatten(set);
        if let Some(not) = flat.negated {
            let d = self
                .error(
                    Code::WrongKind,
                    "a table cannot be negated",
                    not,
                    "negation here",
                )
                .with_help(format!(
                    "negate where the table is used: `from !@{}`",
                    def.name.name
                ));
            self.emit(d);
        }
        let mut prefixes = Vec::with_capacity(flat.leaves.len());
        for leaf in &flat.leaves {
            match &leaf.expr.kind {
                ExprKind::Addr { ip, prefix } => {
                    if !self.leaf_ok(leaf) {
                        continue;
                    }
                    let len = prefix.unwrap_or_else(|| crate::net::max_len(*ip));
                    // `leaf_ok` checked the length.
                    if let Some(p) = u8::try_from(len).ok().and_then(|len| Prefix::new(*ip, len)) {
                        prefixes.push(p);
                    }
                }
                ExprKind::TableRef(_) => self.wrong_kind(
                    leaf,
                    "an address or CIDR",
                    Some("a table cannot contain another table; list the addresses, or match both tables in the rule: `from { @a, @b }`".into()),
                ),
                _ => self.wrong_kind(
                    leaf,
                    "an address or CIDR",
                    Some("a table holds addresses and CIDRs only (IPv4 and IPv6 may mix)".into()),
                ),
            }
        }
        normalise(prefixes)
    }
}

fn normalise(mut prefixes: Vec<Prefix>) -> Vec<Prefix> {
    prefixes.sort_unstable();
    prefixes.dedup();
    prefixes
}

/// Parses a table file: one address or CIDR per line, `#` comments to the
/// end of a line, blank lines, IPv4 and IPv6 mixed. Returns the prefixes
/// (sorted, deduplicated, host bits cleared) and a diagnostic per bad line.
pub fn parse_table_file(file: FileId, text: &str) -> (Vec<Prefix>, Vec<Diagnostic>) {
    let (prefixes, bad) = parse_table_lines(text);
    let mut diagnostics: Vec<Diagnostic> = bad
        .shown
        .iter()
        .map(|&(span, problem)| bad_line(file, span, &text[span.range()], problem))
        .collect();
    if let Some(more) = bad.more()
        && let Some(last) = diagnostics.last_mut()
    {
        last.notes
            .push(format!("{more} more bad lines in this file are not shown"));
    }
    (prefixes, diagnostics)
}

/// The bad lines of a table file: the first [`MAX_LINE_ERRORS`] (the
/// trimmed entry's span and what is wrong) and how many there are.
struct BadLines {
    shown: Vec<(Span, LineProblem)>,
    count: usize,
}

impl BadLines {
    /// How many bad lines are not in `shown`, if any.
    fn more(&self) -> Option<usize> {
        (self.count > self.shown.len()).then(|| self.count - self.shown.len())
    }
}

fn parse_table_lines(text: &str) -> (Vec<Prefix>, BadLines) {
    // About 16 bytes per line is typical of IPv4 lists.
    let mut prefixes = Vec::with_capacity(text.len() / 16);
    let mut bad = BadLines {
        shown: Vec::new(),
        count: 0,
    };
    let mut line_start = 0usize;
    for line in text.split('\n') {
        let start = line_start;
        line_start += line.len() + 1;
        let content = match line.find('#') {
            Some(hash) => &line[..hash],
            None => line,
        };
        let trimmed = content.trim();
        if trimmed.is_empty() {
            continue;
        }
        let offset = start + (trimmed.as_ptr() as usize - line.as_ptr() as usize);
        match parse_table_entry(trimmed) {
            Ok(prefix) => prefixes.push(prefix),
            Err(problem) => {
                bad.count += 1;
                if bad.count <= MAX_LINE_ERRORS {
                    bad.shown
                        .push((Span::new(offset, offset + trimmed.len()), problem));
                }
            }
        }
    }
    (normalise(prefixes), bad)
}

const TABLE_LINE_HELP: &str = "a table file has one address or CIDR per line (`192.0.2.1`, `2001:db8::/32`); `#` starts a comment";

/// What is wrong with a table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineProblem {
    NotAnAddress,
    BadLength,
    LengthTooLong { max: u32 },
}

impl LineProblem {
    /// What is wrong, without quoting the line ("line 3 ... {this}").
    fn unquoted(self) -> String {
        match self {
            LineProblem::NotAnAddress => "is not an address or CIDR".to_string(),
            LineProblem::BadLength => "has a malformed prefix length".to_string(),
            LineProblem::LengthTooLong { max } => {
                format!("has a prefix length longer than /{max}")
            }
        }
    }
}

fn parse_table_entry(entry: &str) -> Result<Prefix, LineProblem> {
    let (addr, len) = match entry.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (entry, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| LineProblem::NotAnAddress)?;
    let max = crate::net::max_len(ip);
    let len = match len {
        None => max,
        Some(text) => {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(LineProblem::BadLength);
            }
            text.parse::<u32>()
                .map_err(|_| LineProblem::LengthTooLong { max })?
        }
    };
    if len > max {
        return Err(LineProblem::LengthTooLong { max });
    }
    Prefix::new(ip, len as u8).ok_or(LineProblem::LengthTooLong { max })
}

fn bad_line(file: FileId, span: Span, text: &str, problem: LineProblem) -> Diagnostic {
    let text = quote(text);
    let (message, label) = match problem {
        LineProblem::NotAnAddress => (
            format!("`{text}` is not an address or CIDR"),
            "expected an address or CIDR".to_string(),
        ),
        LineProblem::BadLength => (
            format!("`{text}` has a malformed prefix length"),
            "expected a number after `/`".to_string(),
        ),
        LineProblem::LengthTooLong { max } => (
            format!("the prefix length in `{text}` is too long"),
            format!("at most /{max} for this address family"),
        ),
    };
    Diagnostic::new(Code::TableLine, message, Label::new(file, span, label))
        .with_help(TABLE_LINE_HELP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> Prefix {
        parse_table_entry(text).unwrap()
    }

    #[test]
    fn table_file_lines_comments_and_families() {
        let text =
            "# blocklist\n10.0.0.0/8   # private\n\n  2001:db8::/32\r\n192.0.2.1\n10.1.2.3/8\n";
        let (prefixes, errors) = parse_table_file(FileId(1), text);
        assert!(errors.is_empty());
        assert_eq!(
            prefixes,
            vec![
                prefix("10.0.0.0/8"),
                prefix("192.0.2.1"),
                prefix("2001:db8::/32")
            ]
        );
    }

    #[test]
    fn bad_lines_point_at_the_line() {
        let text = "10.0.0.1\n  bogus  # x\n10.0.0.0/33\n10.0.0.0/\n";
        let (prefixes, errors) = parse_table_file(FileId(1), text);
        assert_eq!(prefixes.len(), 1);
        let spans: Vec<&str> = errors
            .iter()
            .map(|d| &text[d.primary.span.range()])
            .collect();
        assert_eq!(spans, ["bogus", "10.0.0.0/33", "10.0.0.0/"]);
        assert!(
            errors
                .iter()
                .all(|d| d.code == Code::TableLine && d.primary.file == FileId(1))
        );
    }

    #[test]
    fn many_bad_lines_are_summarised() {
        let text = "x\n".repeat(25);
        let (_, errors) = parse_table_file(FileId(0), &text);
        assert_eq!(errors.len(), MAX_LINE_ERRORS);
        assert_eq!(
            errors[MAX_LINE_ERRORS - 1].notes,
            vec!["15 more bad lines in this file are not shown".to_string()]
        );
    }

    #[test]
    fn a_million_lines_parse() {
        let mut text = String::new();
        for i in 0..1_000_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            text.push_str(&format!("{}.{b}.{c}.0/24\n", a + 10));
        }
        let started = std::time::Instant::now();
        let (prefixes, errors) = parse_table_file(FileId(0), &text);
        let elapsed = started.elapsed();
        assert!(errors.is_empty());
        assert_eq!(prefixes.len(), 1_000_000);
        eprintln!("1,000,000 table lines parsed in {elapsed:?}");
        // Generous for debug builds on a busy machine; release is far faster.
        assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
    }
}
