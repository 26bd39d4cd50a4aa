//! Tables: inline `{ ... }` sets and table files (one address or CIDR per
//! line, `#` comments, blank lines), loaded through the [`TableLoader`] and
//! normalised into sorted, deduplicated prefixes. Table files can hold a
//! million lines, so their parser does no allocation per line.

use std::net::IpAddr;

use patronus_grammar::ast::{self, ExprKind, Span};

use super::Checker;
use crate::codes::Code;
use crate::diag::{Diagnostic, FileId, Files, Label};
use crate::net::Prefix;
use crate::typed::Table;
use crate::{LoadedFile, TableLoader};

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
                    ast::TableSource::File(path) => match loader.load(policy_name, &path.value) {
                        Ok(LoadedFile { name, text }) => {
                            let id = files.add(name, text);
                            let (prefixes, errors) = parse_table_file(id, &files.get(id).text);
                            self.diagnostics.extend(errors);
                            (prefixes, Some(id))
                        }
                        Err(why) => {
                            let d = self
                                .error(
                                    Code::TableFile,
                                    format!("cannot read table file `{}`", path.value),
                                    path.span,
                                    why,
                                )
                                .with_secondary(self.label(def.name.span, format!("for table `@{}`", def.name.name)))
                                .with_help("the path is relative to the policy file; check that the file exists and is readable");
                            self.emit(d);
                            (Vec::new(), None)
                        }
                    },
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
    // About 16 bytes per line is typical of IPv4 lists.
    let mut prefixes = Vec::with_capacity(text.len() / 16);
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut bad_lines = 0usize;
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
                bad_lines += 1;
                if bad_lines <= MAX_LINE_ERRORS {
                    let span = Span::new(offset, offset + trimmed.len());
                    diagnostics.push(bad_line(file, span, trimmed, problem));
                }
            }
        }
    }
    if bad_lines > MAX_LINE_ERRORS
        && let Some(last) = diagnostics.last_mut()
    {
        last.notes.push(format!(
            "{} more bad lines in this file are not shown",
            bad_lines - MAX_LINE_ERRORS
        ));
    }
    (normalise(prefixes), diagnostics)
}

/// What is wrong with a table line.
#[derive(Debug, PartialEq, Eq)]
enum LineProblem {
    NotAnAddress,
    BadLength,
    LengthTooLong { max: u32 },
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
        .with_help("a table file has one address or CIDR per line (`192.0.2.1`, `2001:db8::/32`); `#` starts a comment")
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
