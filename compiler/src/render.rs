//! Rendering diagnostics to text: the one place where [`Diagnostic`] data
//! becomes what users read. Pure functions from data to strings; the CLI
//! decides where the text goes.

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use serde_json::{Value, json};

use crate::codes::Code;
use crate::diag::{Diagnostic, FileId, Files, Label, Severity};
use crate::limits::{MAX_SHOWN_LINE_BYTES, bound_message};

/// rustc-style text: `error[P0002]: ...`, file:line:col, the span
/// underlined, secondary labels, `= help:` lines.
///
/// What is quoted is bounded: messages by [`bound_message`], and a
/// diagnostic with a label on a source line longer than
/// [`MAX_SHOWN_LINE_BYTES`] shows an [`Excerpt`] of its lines (the start
/// of the line and a window around each of its labels, `…` where text is
/// left out). Control characters in the source are shown as `?`, so a
/// file cannot drive the terminal.
pub fn human(files: &Files, diagnostics: &[Diagnostic], color: bool) -> String {
    let shown: Vec<Shown> = diagnostics.iter().map(Shown::of_diagnostic).collect();
    human_shown(files, &shown, color)
}

/// How loud a [`Report`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Note,
}

/// A report that points into the policy but is not a diagnostic of it (a
/// failed test, the rule that decided a traced packet): shown as
/// [`human`] shows a diagnostic, without a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub level: Level,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
}

/// [`human`] for one [`Report`].
pub fn human_report(files: &Files, report: &Report, color: bool) -> String {
    let shown = Shown {
        code: None,
        severity: match report.level {
            Level::Error => cs::Severity::Error,
            Level::Note => cs::Severity::Note,
        },
        message: &report.message,
        primary: &report.primary,
        secondary: &report.secondary,
        help: None,
        notes: &report.notes,
    };
    human_shown(files, &[shown], color)
}

/// What [`human`] shows of a diagnostic or a report.
struct Shown<'a> {
    code: Option<&'static str>,
    severity: cs::Severity,
    message: &'a str,
    primary: &'a Label,
    secondary: &'a [Label],
    help: Option<&'a str>,
    notes: &'a [String],
}

impl<'a> Shown<'a> {
    fn of_diagnostic(d: &'a Diagnostic) -> Self {
        Shown {
            code: Some(d.code.info().code),
            severity: match d.severity {
                Severity::Error => cs::Severity::Error,
                Severity::Warning => cs::Severity::Warning,
            },
            message: &d.message,
            primary: &d.primary,
            secondary: &d.secondary,
            help: d.help.as_deref(),
            notes: &d.notes,
        }
    }
}

fn human_shown(files: &Files, diagnostics: &[Shown], color: bool) -> String {
    let clean: Vec<String> = files
        .iter()
        .map(|(_, f)| {
            let mut text = String::with_capacity(f.text.len());
            push_clean(&mut text, &f.text);
            text
        })
        .collect();
    let mut simple = SimpleFiles::new();
    for ((_, f), text) in files.iter().zip(&clean) {
        simple.add(f.name.as_str(), text.as_str());
    }
    let mut columns: Vec<Option<Columns>> =
        std::iter::repeat_with(|| None).take(clean.len()).collect();
    let mut buffer = if color {
        termcolor::Buffer::ansi()
    } else {
        termcolor::Buffer::no_color()
    };
    let config = term::Config::default();
    for d in diagnostics {
        let labels: Vec<&Label> = std::iter::once(d.primary).chain(d.secondary).collect();
        let long = labels.iter().any(|l| {
            let cols =
                columns[l.file.0].get_or_insert_with(|| Columns::new(&files.get(l.file).text));
            [l.span.start, l.span.end].iter().any(|&at| {
                let (start, end) = cols.line_bounds(cols.line_index(floor_boundary(cols.text, at)));
                end - start > MAX_SHOWN_LINE_BYTES
            })
        });
        if !long {
            let text_len = |l: &Label| clean[l.file.0].len();
            let range = |l: &Label| {
                let start = l.span.start.min(text_len(l));
                start..l.span.end.clamp(start, text_len(l))
            };
            let _ = term::emit(&mut buffer, &config, &simple, &to_codespan(d, range));
            continue;
        }
        let excerpts = Excerpts::new(files, &labels, &mut columns);
        let range = |l: &Label| excerpts.range(l);
        let _ = term::emit(&mut buffer, &config, &excerpts, &to_codespan(d, range));
    }
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

/// The lines one diagnostic points at, cut short: what the human output
/// shows for a diagnostic on a long line. Line numbers and columns are
/// those of the file; only the text in between is left out.
struct Excerpts<'a> {
    files: &'a Files,
    by_file: Vec<Option<Excerpt>>,
}

struct Excerpt {
    text: String,
    /// Per line of `text`: where it starts, and its number in the file.
    lines: Vec<(usize, usize)>,
    /// Kept runs, in order: (start in the file, end in the file, start in
    /// `text`).
    kept: Vec<(usize, usize, usize)>,
    /// True columns of the labels' starts, by offset in `text`.
    columns: Vec<(usize, usize)>,
}

impl<'a> Excerpts<'a> {
    /// Bytes kept at the start of a long line, and on each side of a label.
    const HEAD: usize = 80;
    const AROUND: usize = 40;

    fn new(files: &'a Files, labels: &[&Label], columns: &mut [Option<Columns<'a>>]) -> Self {
        let mut by_file: Vec<Option<Excerpt>> = std::iter::repeat_with(|| None)
            .take(columns.len())
            .collect();
        for (id, slot) in by_file.iter_mut().enumerate() {
            let mut marks: Vec<usize> = labels
                .iter()
                .filter(|l| l.file.0 == id)
                .flat_map(|l| [l.span.start, l.span.end.max(l.span.start)])
                .collect();
            if marks.is_empty() {
                continue;
            }
            let original = files.get(FileId(id)).text.as_str();
            let cols = columns[id].get_or_insert_with(|| Columns::new(original));
            for m in &mut marks {
                *m = floor_boundary(original, *m);
            }
            marks.sort_unstable();
            marks.dedup();
            let mut lines: Vec<usize> = marks.iter().map(|&m| cols.line_index(m)).collect();
            lines.dedup();
            let mut excerpt = Excerpt {
                text: String::new(),
                lines: Vec::new(),
                kept: Vec::new(),
                columns: Vec::new(),
            };
            for line in lines {
                let (start, end) = cols.line_bounds(line);
                let mut windows = vec![(start, start + Self::HEAD)];
                if end - start <= MAX_SHOWN_LINE_BYTES {
                    windows = vec![(start, end)];
                } else {
                    let first = marks.partition_point(|&m| m < start);
                    for &m in marks[first..].iter().take_while(|&&m| m <= end) {
                        windows.push((m.saturating_sub(Self::AROUND).max(start), m + Self::AROUND));
                    }
                }
                let mut merged: Vec<(usize, usize)> = Vec::new();
                for (a, b) in windows {
                    let a = floor_boundary(original, a);
                    let b = floor_boundary(original, b.min(end));
                    match merged.last_mut() {
                        Some(last) if a <= last.1 => last.1 = last.1.max(b),
                        _ => merged.push((a, b)),
                    }
                }
                excerpt.lines.push((excerpt.text.len(), line + 1));
                let mut at = start;
                for (a, b) in merged {
                    if a > at {
                        excerpt.text.push('…');
                    }
                    excerpt.kept.push((a, b, excerpt.text.len()));
                    push_clean(&mut excerpt.text, &original[a..b]);
                    at = b;
                }
                if at < end {
                    excerpt.text.push('…');
                }
                excerpt.text.push('\n');
            }
            for l in labels.iter().filter(|l| l.file.0 == id) {
                let column = cols.line_col(l.span.start).1;
                excerpt.columns.push((excerpt.map(l.span.start), column));
            }
            *slot = Some(excerpt);
        }
        Excerpts { files, by_file }
    }

    fn range(&self, label: &Label) -> std::ops::Range<usize> {
        match &self.by_file[label.file.0] {
            Some(e) => {
                let start = e.map(label.span.start);
                start..e.map(label.span.end).max(start)
            }
            None => 0..0,
        }
    }

    fn excerpt(&self, id: usize) -> Result<&Excerpt, codespan_reporting::files::Error> {
        self.by_file
            .get(id)
            .and_then(Option::as_ref)
            .ok_or(codespan_reporting::files::Error::FileMissing)
    }
}

impl Excerpt {
    /// Where a file offset is in `text` (a left-out offset maps to the end
    /// of the run before it, where the `…` is).
    fn map(&self, offset: usize) -> usize {
        let i = self.kept.partition_point(|&(start, _, _)| start <= offset);
        if i == 0 {
            return 0;
        }
        let (start, end, shown) = self.kept[i - 1];
        shown + offset.min(end) - start
    }
}

impl<'f> codespan_reporting::files::Files<'f> for Excerpts<'_> {
    type FileId = usize;
    type Name = &'f str;
    type Source = &'f str;

    fn name(&'f self, id: usize) -> Result<&'f str, codespan_reporting::files::Error> {
        self.excerpt(id)?;
        Ok(self.files.get(FileId(id)).name.as_str())
    }

    fn source(&'f self, id: usize) -> Result<&'f str, codespan_reporting::files::Error> {
        Ok(self.excerpt(id)?.text.as_str())
    }

    fn line_index(
        &'f self,
        id: usize,
        byte: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        let e = self.excerpt(id)?;
        Ok(e.lines
            .partition_point(|&(start, _)| start <= byte)
            .saturating_sub(1))
    }

    fn line_number(
        &'f self,
        id: usize,
        line: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        let e = self.excerpt(id)?;
        e.lines.get(line).map(|&(_, number)| number).ok_or(
            codespan_reporting::files::Error::LineTooLarge {
                given: line,
                max: e.lines.len().saturating_sub(1),
            },
        )
    }

    fn column_number(
        &'f self,
        id: usize,
        line: usize,
        byte: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        let e = self.excerpt(id)?;
        if let Some(&(_, column)) = e.columns.iter().find(|&&(at, _)| at == byte) {
            return Ok(column);
        }
        let range = self.line_range(id, line)?;
        Ok(codespan_reporting::files::column_index(&e.text, range, byte) + 1)
    }

    fn line_range(
        &'f self,
        id: usize,
        line: usize,
    ) -> Result<std::ops::Range<usize>, codespan_reporting::files::Error> {
        let e = self.excerpt(id)?;
        let start = e
            .lines
            .get(line)
            .ok_or(codespan_reporting::files::Error::LineTooLarge {
                given: line,
                max: e.lines.len().saturating_sub(1),
            })?
            .0;
        let end = e
            .lines
            .get(line + 1)
            .map_or(e.text.len(), |&(next, _)| next);
        Ok(start..end)
    }
}

/// Appends `text` with control characters (but tabs, line ends) replaced
/// by `?`, byte for byte, so offsets do not move.
fn push_clean(out: &mut String, text: &str) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let keep =
            !c.is_control() || c == '\n' || c == '\t' || (c == '\r' && chars.peek() == Some(&'\n'));
        if keep {
            out.push(c);
        } else {
            out.extend(std::iter::repeat_n('?', c.len_utf8()));
        }
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn to_codespan(
    d: &Shown,
    range: impl Fn(&Label) -> std::ops::Range<usize>,
) -> cs::Diagnostic<usize> {
    let mut labels = vec![
        cs::Label::primary(d.primary.file.0, range(d.primary))
            .with_message(bound_message(&d.primary.message)),
    ];
    labels.extend(
        d.secondary.iter().map(|l| {
            cs::Label::secondary(l.file.0, range(l)).with_message(bound_message(&l.message))
        }),
    );
    let mut notes: Vec<String> = d
        .notes
        .iter()
        .map(|n| bound_message(n).into_owned())
        .collect();
    if let Some(help) = d.help {
        notes.push(format!("help: {}", bound_message(help)));
    }
    let diagnostic = cs::Diagnostic::new(d.severity);
    let diagnostic = match d.code {
        Some(code) => diagnostic.with_code(code),
        None => diagnostic,
    };
    diagnostic
        .with_message(bound_message(d.message))
        .with_labels(labels)
        .with_notes(notes)
}

/// The message with its help and notes, as one bounded text (GitHub and
/// SARIF have one message field).
fn full_message(d: &Diagnostic) -> String {
    let mut message = bound_message(&d.message).into_owned();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(&bound_message(help));
    }
    for note in &d.notes {
        message.push_str("\nnote: ");
        message.push_str(&bound_message(note));
    }
    message
}

/// Byte offsets to 1-based (line, column) for many diagnostics at once:
/// each file's [`Columns`] are built once, so rendering stays linear on
/// huge policies. Same numbering as [`Files::line_col`]: columns count
/// characters; an end offset maps to the column just past the span
/// (exclusive, as SARIF wants).
struct Positions<'a> {
    files: &'a Files,
    columns: Vec<Option<Columns<'a>>>,
}

impl<'a> Positions<'a> {
    fn new(files: &'a Files) -> Self {
        Positions {
            files,
            columns: std::iter::repeat_with(|| None)
                .take(files.iter().count())
                .collect(),
        }
    }

    fn line_col(&mut self, file: FileId, offset: usize) -> (usize, usize) {
        let text = self.files.get(file).text.as_str();
        self.columns[file.0]
            .get_or_insert_with(|| Columns::new(text))
            .line_col(offset)
    }

    fn region(&mut self, label: &Label) -> Region {
        let (line, column) = self.line_col(label.file, label.span.start);
        let (end_line, end_column) =
            self.line_col(label.file, label.span.end.max(label.span.start));
        Region {
            line,
            column,
            end_line,
            end_column,
        }
    }
}

/// Lines and character columns of one text. Counting the characters from
/// the start of the line for every label would be quadratic on a long line
/// with many labels, so a long line gets, once, the character count at
/// every [`Columns::STEP`] bytes, and a column costs at most that much.
struct Columns<'a> {
    text: &'a str,
    starts: Vec<usize>,
    /// Per long line (by index): (byte offset, characters of the line
    /// before it) about every STEP bytes.
    marks: std::collections::HashMap<usize, Vec<(usize, usize)>>,
}

impl<'a> Columns<'a> {
    const STEP: usize = 256;

    fn new(text: &'a str) -> Self {
        Columns {
            text,
            starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            marks: std::collections::HashMap::new(),
        }
    }

    /// The 0-based index of the line holding `offset`.
    fn line_index(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset) - 1
    }

    /// Where line `index` starts and ends (before its `\n`).
    fn line_bounds(&self, index: usize) -> (usize, usize) {
        let start = self.starts[index];
        let end = self
            .starts
            .get(index + 1)
            .map_or(self.text.len(), |next| next - 1);
        (start, end.max(start))
    }

    /// 1-based (line, column) of a byte offset.
    fn line_col(&mut self, offset: usize) -> (usize, usize) {
        let offset = floor_boundary(self.text, offset);
        let line = self.line_index(offset);
        let (start, end) = self.line_bounds(line);
        if end - start <= Self::STEP {
            return (line + 1, self.text[start..offset].chars().count() + 1);
        }
        let text = self.text;
        let marks = self.marks.entry(line).or_insert_with(|| {
            let mut marks = vec![(start, 0)];
            let (mut at, mut count) = (start, 0);
            while at + Self::STEP <= end {
                let next = floor_boundary(text, at + Self::STEP);
                count += text[at..next].chars().count();
                marks.push((next, count));
                at = next;
            }
            marks
        });
        let (at, before) = marks[marks.partition_point(|&(at, _)| at <= offset) - 1];
        (line + 1, before + text[at..offset].chars().count() + 1)
    }
}

struct Region {
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// One JSON object per diagnostic, one per line (JSON Lines). Lines and
/// columns are 1-based, columns count characters, `end_column` is just past
/// the span. `labels` lists every labelled place, the primary one first.
pub fn json_lines(files: &Files, diagnostics: &[Diagnostic]) -> String {
    let mut positions = Positions::new(files);
    let mut out = String::new();
    for d in diagnostics {
        let info = d.code.info();
        let at = positions.region(&d.primary);
        let labels: Vec<Value> = std::iter::once((&d.primary, true))
            .chain(d.secondary.iter().map(|l| (l, false)))
            .map(|(label, primary)| {
                let r = positions.region(label);
                json!({
                    "file": files.get(label.file).name,
                    "line": r.line,
                    "column": r.column,
                    "end_line": r.end_line,
                    "end_column": r.end_column,
                    "byte_start": label.span.start,
                    "byte_end": label.span.end,
                    "message": bound_message(&label.message),
                    "primary": primary,
                })
            })
            .collect();
        let object = json!({
            "code": info.code,
            "name": info.name,
            "severity": severity_name(d.severity),
            "file": files.get(d.primary.file).name,
            "line": at.line,
            "column": at.column,
            "end_line": at.end_line,
            "end_column": at.end_column,
            "message": bound_message(&d.message),
            "help": d.help.as_deref().map(bound_message),
            "notes": d.notes.iter().map(|n| bound_message(n)).collect::<Vec<_>>(),
            "labels": labels,
        });
        out.push_str(&object.to_string());
        out.push('\n');
    }
    out
}

/// GitHub Actions workflow commands, one per diagnostic:
/// `::error file=F,line=L,col=C,endLine=EL,endColumn=EC,title=P0103 shadowed-rule::message`.
/// Help and notes follow the message on their own lines (escaped `%0A`).
pub fn github(files: &Files, diagnostics: &[Diagnostic]) -> String {
    let mut positions = Positions::new(files);
    let mut out = String::new();
    for d in diagnostics {
        let info = d.code.info();
        let at = positions.region(&d.primary);
        let message = full_message(d);
        out.push_str(&format!(
            "::{} file={},line={},col={},endLine={},endColumn={},title={}::{}\n",
            severity_name(d.severity),
            github_property(&files.get(d.primary.file).name),
            at.line,
            at.column,
            at.end_line,
            at.end_column,
            github_property(&format!("{} {}", info.code, info.name)),
            github_data(&message),
        ));
    }
    out
}

/// Escapes a workflow-command message (the part after `::`).
fn github_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow-command property value (`file=...`, `title=...`).
fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// The tool that produced a SARIF log.
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

const SARIF_SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// A SARIF 2.1.0 log (one run) for the diagnostics of several compilations,
/// each with its own [`Files`]. Every code is listed as a rule, in
/// [`Code::ALL`] order, so `ruleIndex` is stable; file names become
/// relative URIs; columns count Unicode code points.
pub fn sarif(batches: &[(&Files, &[Diagnostic])], tool: &ToolInfo) -> String {
    let rules: Vec<Value> = Code::ALL.iter().map(|&code| sarif_rule(code)).collect();
    let log = SarifLog {
        schema: SARIF_SCHEMA,
        version: "2.1.0",
        runs: [SarifRun {
            tool: json!({
                "driver": {
                    "name": tool.name,
                    "version": tool.version,
                    "semanticVersion": tool.version,
                    "rules": rules,
                }
            }),
            column_kind: "unicodeCodePoints",
            results: SarifResults { batches },
        }],
    };
    let mut text =
        serde_json::to_string_pretty(&log).expect("JSON with string keys always serializes");
    text.push('\n');
    text
}

/// The log's outer shape; typed so that results can stream (below).
#[derive(Serialize)]
struct SarifLog<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: [SarifRun<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifRun<'a> {
    tool: Value,
    column_kind: &'static str,
    results: SarifResults<'a>,
}

/// Results built one at a time as they are written, so a policy with a
/// hundred thousand diagnostics never holds them all as JSON trees.
struct SarifResults<'a> {
    batches: &'a [(&'a Files, &'a [Diagnostic])],
}

impl Serialize for SarifResults<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let total = self.batches.iter().map(|(_, d)| d.len()).sum();
        let mut seq = serializer.serialize_seq(Some(total))?;
        for &(files, diagnostics) in self.batches {
            let mut positions = Positions::new(files);
            for d in diagnostics {
                seq.serialize_element(&sarif_result(files, &mut positions, d))?;
            }
        }
        seq.end()
    }
}

fn sarif_level(severity: Severity) -> &'static str {
    // SARIF's levels are none/note/warning/error, the same words as ours.
    severity_name(severity)
}

fn sarif_rule(code: Code) -> Value {
    let info = code.info();
    json!({
        "id": info.code,
        "name": info.name,
        "shortDescription": { "text": info.summary },
        "fullDescription": { "text": first_paragraph(info.explanation) },
        "help": { "text": info.explanation, "markdown": info.explanation },
        "defaultConfiguration": { "level": sarif_level(info.severity) },
    })
}

/// The first paragraph of an explanation page, without a leading heading.
fn first_paragraph(markdown: &str) -> String {
    markdown
        .split("\n\n")
        .map(str::trim)
        .find(|p| !p.is_empty() && !p.starts_with('#'))
        .unwrap_or(markdown.trim())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn sarif_result(files: &Files, positions: &mut Positions<'_>, d: &Diagnostic) -> Value {
    let info = d.code.info();
    let rule_index = Code::ALL.iter().position(|&c| c == d.code);
    let message = full_message(d);
    let primary = sarif_location(files, positions, &d.primary, None);
    let related: Vec<Value> = d
        .secondary
        .iter()
        .enumerate()
        .map(|(i, label)| sarif_location(files, positions, label, Some(i)))
        .collect();
    let mut result = json!({
        "ruleId": info.code,
        "ruleIndex": rule_index,
        "level": sarif_level(d.severity),
        "message": { "text": message },
        "locations": [primary],
    });
    if !related.is_empty() {
        result["relatedLocations"] = Value::Array(related);
    }
    result
}

/// A SARIF location; related locations carry an `id` and their label as
/// the message, the primary one its label too when it has one.
fn sarif_location(
    files: &Files,
    positions: &mut Positions<'_>,
    label: &Label,
    id: Option<usize>,
) -> Value {
    let r = positions.region(label);
    let mut location = json!({
        "physicalLocation": {
            "artifactLocation": { "uri": file_uri(&files.get(label.file).name) },
            "region": {
                "startLine": r.line,
                "startColumn": r.column,
                "endLine": r.end_line,
                "endColumn": r.end_column,
            }
        }
    });
    if let Some(id) = id {
        location["id"] = json!(id);
    }
    if !label.message.is_empty() {
        location["message"] = json!({ "text": bound_message(&label.message) });
    }
    location
}

/// A file name as a URI reference: relative paths stay relative (what
/// GitHub code scanning resolves against the repository root), with `./`
/// dropped and separators turned to `/`; absolute paths become `file://`
/// URIs. Characters not allowed in a URI path are percent-encoded.
fn file_uri(name: &str) -> String {
    let mut path = name.replace('\\', "/");
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.to_string();
    }
    let absolute_windows = path.as_bytes().get(1) == Some(&b':');
    let prefix = if path.starts_with('/') {
        "file://"
    } else if absolute_windows {
        "file:///"
    } else {
        ""
    };
    let mut uri = String::with_capacity(prefix.len() + path.len());
    uri.push_str(prefix);
    for byte in path.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || b"-._~/!$&'()*+,;=@".contains(&byte)
            || (byte == b':' && absolute_windows);
        if keep {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use patronus_grammar::ast::Span;

    use super::*;

    fn sample() -> (Files, Vec<Diagnostic>) {
        let mut files = Files::new();
        let text = "allow tcp to port 22\ndeny from 10.0.0.0/8\n# é, ü\nallow from 10.1.2.3\n";
        let policy = files.add("./dir/my policy.pf", text);
        let deny = text.find("deny").unwrap();
        let allow = text.rfind("allow").unwrap();
        let shadowed = Diagnostic::new(
            Code::ShadowedRule,
            "this allow never passes anything",
            Label::new(policy, Span::new(allow, allow + 19), "shadowed"),
        )
        .with_secondary(Label::new(
            policy,
            Span::new(deny, deny + 20),
            "because this deny covers it",
        ))
        .with_help("remove the allow, or narrow the deny");
        let unknown = Diagnostic::new(
            Code::UnknownConst,
            "no const named `web`, with 100% \"quotes\", commas: and\nnewlines",
            Label::new(policy, Span::new(18, 20), ""),
        );
        (files, vec![unknown, shadowed])
    }

    #[test]
    fn positions_agree_with_files_line_col_at_every_offset() {
        let (files, _) = sample();
        let id = FileId(0);
        let mut positions = Positions::new(&files);
        for offset in 0..=files.get(id).text.len() + 3 {
            assert_eq!(
                positions.line_col(id, offset),
                files.line_col(id, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn json_lines_is_one_object_per_diagnostic_with_positions() {
        let (files, diagnostics) = sample();
        let text = json_lines(&files, &diagnostics);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["code"], "P0002");
        assert_eq!(lines[0]["severity"], "error");
        assert_eq!(lines[0]["help"], Value::Null);
        assert_eq!(lines[1]["name"], "shadowed-rule");
        assert_eq!(lines[1]["severity"], "warning");
        assert_eq!(
            (&lines[1]["line"], &lines[1]["column"]),
            (&json!(4), &json!(1))
        );
        assert_eq!(lines[1]["end_column"], 20);
        assert_eq!(lines[1]["labels"][1]["line"], 2);
        assert_eq!(lines[1]["labels"][1]["primary"], false);
        assert_eq!(lines[1]["help"], "remove the allow, or narrow the deny");
    }

    #[test]
    fn github_escapes_properties_and_data() {
        let (files, diagnostics) = sample();
        let text = github(&files, &diagnostics);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "::error file=./dir/my policy.pf,line=1,col=19,endLine=1,endColumn=21,\
             title=P0002 unknown-const::no const named `web`, with 100%25 \"quotes\", \
             commas: and%0Anewlines"
        );
        assert!(lines[1].starts_with(
            "::warning file=./dir/my policy.pf,line=4,col=1,endLine=4,endColumn=20,\
             title=P0103 shadowed-rule::this allow"
        ));
        assert!(lines[1].ends_with("%0Ahelp: remove the allow, or narrow the deny"));
        assert_eq!(github_property("a:b,c%"), "a%3Ab%2Cc%25");
    }

    #[test]
    fn sarif_lists_every_rule_and_points_results_at_them() {
        let (files, diagnostics) = sample();
        let tool = ToolInfo {
            name: "patronusc".into(),
            version: "0.1.0".into(),
        };
        let log: Value = serde_json::from_str(&sarif(&[(&files, &diagnostics)], &tool)).unwrap();
        let run = &log["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), Code::ALL.len());
        for result in run["results"].as_array().unwrap() {
            let index = result["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rules[index]["id"], result["ruleId"]);
        }
        let shadowed = &run["results"][1];
        assert_eq!(shadowed["level"], "warning");
        let location = &shadowed["locations"][0]["physicalLocation"];
        assert_eq!(location["artifactLocation"]["uri"], "dir/my%20policy.pf");
        assert_eq!(location["region"]["startLine"], 4);
        assert_eq!(
            shadowed["relatedLocations"][0]["physicalLocation"]["region"]["startLine"],
            2
        );
        assert!(run["results"][0].get("relatedLocations").is_none());
    }

    #[test]
    fn file_uris_are_relative_or_file_scheme() {
        assert_eq!(file_uri("policies/web.pf"), "policies/web.pf");
        assert_eq!(file_uri(".\\policies\\a b.pf"), "policies/a%20b.pf");
        assert_eq!(
            file_uri("/etc/patronus/#1.pf"),
            "file:///etc/patronus/%231.pf"
        );
        assert_eq!(file_uri("C:\\p\\x.pf"), "file:///C:/p/x.pf");
        assert_eq!(file_uri("ü.pf"), "%C3%BC.pf");
    }

    #[test]
    fn source_lines_are_shown_without_control_characters_and_cut_when_long() {
        let mut files = Files::new();
        let long = format!(
            "deny from {}$target{}\n",
            "x".repeat(5_000),
            "y".repeat(5_000)
        );
        let text = format!("allow\u{1b}[2J tcp\n{long}");
        let id = files.add("p.pf", text.as_str());
        let at = text.find("$target").unwrap();
        let diagnostics = [
            Diagnostic::new(Code::Syntax, "here", Label::new(id, Span::new(0, 5), "a")),
            Diagnostic::new(
                Code::UnknownConst,
                "there",
                Label::new(id, Span::new(at, at + 7), "b"),
            ),
        ];
        let out = human(&files, &diagnostics, false);
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(out.contains("allow?[2J tcp"), "{out}");
        let shown = out.lines().find(|l| l.contains("$target")).unwrap();
        assert!(shown.len() < 300, "{shown}");
        assert!(shown.contains("deny from xxx") && shown.contains("x…x") && shown.ends_with("yy…"));
        // The true line and column of the cut line.
        assert!(
            out.contains(&format!("p.pf:2:{}", at - text.find("deny").unwrap() + 1)),
            "{out}"
        );
    }

    #[test]
    fn columns_on_long_lines_agree_with_counting() {
        let mut files = Files::new();
        let text = format!("a\n{}\nb", "é1ü€x".repeat(400));
        let id = files.add("x", text.as_str());
        let mut columns = Columns::new(&files.get(id).text);
        for offset in 0..=text.len() + 2 {
            assert_eq!(
                columns.line_col(offset),
                files.line_col(id, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn first_paragraph_skips_the_heading() {
        assert_eq!(first_paragraph("# P1 x\n\nOne\ntwo.\n\nMore."), "One two.");
    }
}
