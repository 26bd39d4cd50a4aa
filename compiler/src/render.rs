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
/// What is quoted is bounded: messages by [`bound_message`], source lines
/// longer than [`MAX_SHOWN_LINE_BYTES`] by [`Shown`] (an excerpt around
/// each label; the column then counts within the excerpt), and control
/// characters in the source are shown as `?` so a file cannot drive the
/// terminal.
pub fn human(files: &Files, diagnostics: &[Diagnostic], color: bool) -> String {
    // Every labelled offset of each file, to keep around them.
    let mut marks: Vec<Vec<usize>> = vec![Vec::new(); files.iter().count()];
    for d in diagnostics {
        for label in std::iter::once(&d.primary).chain(&d.secondary) {
            if let Some(m) = marks.get_mut(label.file.0) {
                m.extend([label.span.start, label.span.end]);
            }
        }
    }
    let mut simple = SimpleFiles::new();
    let mut shown = Vec::new();
    for ((_, f), mut marks) in files.iter().zip(marks) {
        marks.sort_unstable();
        marks.dedup();
        let view = Shown::new(&f.text, &marks);
        simple.add(f.name.clone(), view.text.clone());
        shown.push(view);
    }
    let mut buffer = if color {
        termcolor::Buffer::ansi()
    } else {
        termcolor::Buffer::no_color()
    };
    let config = term::Config::default();
    for d in diagnostics {
        let _ = term::emit(&mut buffer, &config, &simple, &to_codespan(d, &shown));
    }
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

/// A file as the human output shows it: control characters replaced,
/// lines longer than [`MAX_SHOWN_LINE_BYTES`] cut to their start and a
/// window around each labelled offset, `…` where text is left out. Line
/// numbers are kept; offsets map from the file to the shown text.
struct Shown {
    text: String,
    /// Kept runs, in order: (start in the file, end in the file, start in
    /// `text`). Empty when nothing was cut (offsets are then the same).
    kept: Vec<(usize, usize, usize)>,
}

impl Shown {
    /// Bytes kept at the start of a cut line, and on each side of a mark.
    const HEAD: usize = 80;
    const AROUND: usize = 40;

    fn new(original: &str, marks: &[usize]) -> Shown {
        let mut text = String::with_capacity(original.len().min(1 << 20));
        let mut kept: Vec<(usize, usize, usize)> = Vec::new();
        let mut cut_any = false;
        let mut line_start = 0usize;
        let mut pending = 0usize; // start of the uncut run not yet recorded
        for line in original.split_inclusive('\n') {
            let line_end = line_start + line.len();
            if line.len() <= MAX_SHOWN_LINE_BYTES {
                push_clean(&mut text, line);
                line_start = line_end;
                continue;
            }
            cut_any = true;
            if pending < line_start {
                kept.push((pending, line_start, text.len() - (line_start - pending)));
            }
            // Windows to keep, merged, at character boundaries.
            let mut windows: Vec<(usize, usize)> = vec![(line_start, line_start + Self::HEAD)];
            let first = marks.partition_point(|&m| m < line_start);
            for &m in marks[first..].iter().take_while(|&&m| m <= line_end) {
                windows.push((
                    m.saturating_sub(Self::AROUND).max(line_start),
                    m + Self::AROUND,
                ));
            }
            windows.sort_unstable();
            let mut merged: Vec<(usize, usize)> = Vec::new();
            for (a, b) in windows {
                let a = floor_boundary(original, a);
                let b = floor_boundary(original, b.min(line_end));
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            let mut at = line_start;
            for (a, b) in merged {
                if a > at {
                    text.push('…');
                }
                kept.push((a, b, text.len()));
                push_clean(&mut text, &original[a..b]);
                at = b;
            }
            if at < line_end {
                text.push('…');
                if line.ends_with('\n') {
                    text.push('\n');
                }
            }
            line_start = line_end;
            pending = line_end;
        }
        if cut_any && pending < original.len() {
            kept.push((
                pending,
                original.len(),
                text.len() - (original.len() - pending),
            ));
        }
        if !cut_any {
            kept.clear();
        }
        Shown { text, kept }
    }

    /// Where a file offset is in the shown text (a left-out offset maps to
    /// the `…` that replaces it).
    fn map(&self, offset: usize) -> usize {
        if self.kept.is_empty() {
            return offset.min(self.text.len());
        }
        let i = self.kept.partition_point(|&(start, _, _)| start <= offset);
        if i == 0 {
            return 0;
        }
        let (start, end, shown) = self.kept[i - 1];
        (shown + offset.min(end) - start).min(self.text.len())
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

fn to_codespan(d: &Diagnostic, shown: &[Shown]) -> cs::Diagnostic<usize> {
    let severity = match d.severity {
        Severity::Error => cs::Severity::Error,
        Severity::Warning => cs::Severity::Warning,
    };
    let range = |l: &Label| {
        let view = &shown[l.file.0];
        let start = view.map(l.span.start);
        start..view.map(l.span.end).max(start)
    };
    let mut labels = vec![
        cs::Label::primary(d.primary.file.0, range(&d.primary))
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
    if let Some(help) = &d.help {
        notes.push(format!("help: {}", bound_message(help)));
    }
    cs::Diagnostic::new(severity)
        .with_code(d.code.info().code)
        .with_message(bound_message(&d.message))
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
/// each file's line starts are found once, then every lookup is a binary
/// search, so rendering stays linear on huge policies. Same numbering as
/// [`Files::line_col`]: columns count characters; an end offset maps to the
/// column just past the span (exclusive, as SARIF wants).
struct Positions<'a> {
    files: &'a Files,
    line_starts: Vec<Option<Vec<usize>>>,
}

impl<'a> Positions<'a> {
    fn new(files: &'a Files) -> Self {
        Positions {
            files,
            line_starts: vec![None; files.iter().count()],
        }
    }

    fn line_col(&mut self, file: FileId, offset: usize) -> (usize, usize) {
        let text = &self.files.get(file).text;
        let starts = self.line_starts[file.0].get_or_insert_with(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The last line start at or before `offset`.
        let line = starts.partition_point(|&start| start <= offset);
        let line_start = starts[line - 1];
        let column = text[line_start..offset].chars().count() + 1;
        (line, column)
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
    fn long_lines_are_shown_around_their_labels() {
        let long = format!(
            "deny from {}$target{}\n",
            "x".repeat(5_000),
            "y".repeat(5_000)
        );
        let text = format!("allow tcp\n{long}allow\u{1b}udp\n");
        let at = text.find("$target").unwrap();
        let view = Shown::new(&text, &[at, at + 7]);
        // Line numbers and short lines are kept; control characters are not.
        assert_eq!(view.text.lines().count(), 3);
        assert!(view.text.starts_with("allow tcp\ndeny from xxx"));
        assert!(view.text.ends_with("\nallow?udp\n"));
        let line = view.text.lines().nth(1).unwrap();
        assert!(line.len() < 300, "{} bytes", line.len());
        assert!(line.contains("x…x") && line.contains("$target") && line.ends_with('…'));
        // Offsets map onto the same text, in order.
        assert_eq!(&view.text[view.map(at)..view.map(at + 7)], "$target");
        let next = text.rfind("allow").unwrap();
        assert_eq!(&view.text[view.map(next)..view.map(next) + 5], "allow");
        let mut last = 0;
        for offset in (0..=text.len()).step_by(7) {
            let mapped = view.map(offset);
            assert!(mapped >= last && mapped <= view.text.len());
            assert!(view.text.is_char_boundary(mapped));
            last = mapped;
        }
        // Without long lines the text is the file's and offsets stay.
        let short = Shown::new("a\tb\r\nc\n", &[1]);
        assert_eq!(short.text, "a\tb\r\nc\n");
        assert_eq!(short.map(3), 3);
    }

    #[test]
    fn first_paragraph_skips_the_heading() {
        assert_eq!(first_paragraph("# P1 x\n\nOne\ntwo.\n\nMore."), "One two.");
    }
}
