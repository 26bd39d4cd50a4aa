//! The answers to each request, as pure functions of one [`Analysis`]:
//! diagnostics, hover, definition, references, completion, formatting,
//! code actions (the lints' fixes), code lenses and the `explain` command.

use std::collections::HashMap;
use std::fmt::Write as _;

use lsp_types::{
    CodeAction, CodeActionKind, CodeLens, Command, CompletionItem, CompletionItemKind,
    CompletionTextEdit, Diagnostic as LspDiagnostic, DiagnosticRelatedInformation,
    DiagnosticSeverity, Hover, HoverContents, Location, MarkupContent, MarkupKind, NumberOrString,
    Position, Range, TextEdit, Uri, WorkspaceEdit,
};
use patronus_compiler::codes::Code;
use patronus_compiler::diag::{Diagnostic, Severity};
use patronus_compiler::interp::Interpreter;
use patronus_compiler::net::Prefix;
use patronus_compiler::packet;
use patronus_compiler::typed;
use patronus_grammar::ast::{self, Span};
use patronus_grammar::lexer::Tok;

use super::analysis::{Analysis, SymbolKind};
use super::text::{LineIndex, path_to_uri};
use crate::cmd_explain;
use crate::names::{PACKET_INTERVAL_NS, counters_text, phase_name, rule_name, verdict_name};

/// The command an `explain` code lens runs: arguments are the document's
/// URI and the 0-based line of a test step.
pub const EXPLAIN_COMMAND: &str = "patronus.explain";

/// Every diagnostic of the check, grouped by the file it points into: the
/// document itself (under `uri`) and any table file it loaded.
pub fn diagnostics(uri: &Uri, a: &Analysis) -> Vec<(Uri, Vec<LspDiagnostic>)> {
    let mut by_file: Vec<(Uri, Vec<LspDiagnostic>)> = vec![(uri.clone(), Vec::new())];
    let mut slot: HashMap<usize, usize> = HashMap::from([(a.file.0, 0)]);
    let mut places = Places::new(uri, a);
    for d in &a.checked.diagnostics {
        let file = d.primary.file.0;
        let index = match slot.get(&file) {
            Some(&i) => i,
            None => {
                let Some(file_uri) = places.uri(d.primary.file) else {
                    continue;
                };
                by_file.push((file_uri, Vec::new()));
                slot.insert(file, by_file.len() - 1);
                by_file.len() - 1
            }
        };
        let converted = to_lsp(&mut places, d);
        by_file[index].1.push(converted);
    }
    by_file
}

/// The URI and line index of each file of an analysis, made once: a
/// policy with a hundred thousand diagnostics must not index its text a
/// hundred thousand times.
pub struct Places<'a> {
    uri: &'a Uri,
    a: &'a Analysis,
    indexes: HashMap<usize, LineIndex<'a>>,
    uris: HashMap<usize, Option<Uri>>,
}

impl<'a> Places<'a> {
    pub fn new(uri: &'a Uri, a: &'a Analysis) -> Self {
        Places {
            uri,
            a,
            indexes: HashMap::new(),
            uris: HashMap::new(),
        }
    }

    fn uri(&mut self, file: patronus_compiler::diag::FileId) -> Option<Uri> {
        if file == self.a.file {
            return Some(self.uri.clone());
        }
        let a = self.a;
        self.uris
            .entry(file.0)
            .or_insert_with(|| {
                let path = std::path::Path::new(&a.files.get(file).name);
                path.canonicalize().ok().and_then(|p| path_to_uri(&p))
            })
            .clone()
    }

    fn range(&mut self, file: patronus_compiler::diag::FileId, span: Span) -> Range {
        let a = self.a;
        self.indexes
            .entry(file.0)
            .or_insert_with(|| LineIndex::new(&a.files.get(file).text))
            .range(span)
    }
}

/// One compiler diagnostic as the protocol has it: the same code, span,
/// message, help and notes as `patronusc check`; secondary labels become
/// related information.
pub fn to_lsp(places: &mut Places, d: &Diagnostic) -> LspDiagnostic {
    let info = d.code.info();
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        let _ = write!(message, "\nhelp: {help}");
    }
    for note in &d.notes {
        let _ = write!(message, "\nnote: {note}");
    }
    let related: Vec<DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .filter_map(|l| {
            Some(DiagnosticRelatedInformation {
                location: Location::new(places.uri(l.file)?, places.range(l.file, l.span)),
                message: l.message.clone(),
            })
        })
        .collect();
    LspDiagnostic {
        range: places.range(d.primary.file, d.primary.span),
        severity: Some(match d.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(info.code.to_string())),
        code_description: None,
        source: Some("patronusc".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        tags: None,
        data: Some(serde_json::json!({ "name": info.name, "label": d.primary.message })),
    }
}

/// Hover on a `$const` or `@table` (or its definition): the value as
/// written, its size and where it is defined; on a test step: the trace
/// of its packet, as `patronusc explain` prints it.
pub fn hover(a: &Analysis, offset: usize) -> Option<Hover> {
    let index = LineIndex::new(a.text());
    let (markdown, span) = if let Some(symbol) = a.symbol_at(offset) {
        let text = match symbol.kind {
            SymbolKind::Const => const_hover(a, &symbol.name, &index)?,
            SymbolKind::Table => table_hover(a, &symbol.name, &index)?,
        };
        (text, symbol.span)
    } else {
        let (step_span, report) = explain_at(a, index.line(offset))?;
        (format!("```text\n{report}```"), step_span)
    };
    Some(Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value: markdown,
        }),
        range: Some(index.range(span)),
    })
}

fn const_hover(a: &Analysis, name: &str, index: &LineIndex) -> Option<String> {
    let def = a.const_def(name)?;
    let written = a.text().get(def.value.span.range()).unwrap_or("");
    let mut out = format!("```patronus\nconst {name} = {written}\n```\n\n");
    match a.const_size(name) {
        Some(1) => out.push_str("1 value"),
        Some(n) => {
            let _ = write!(out, "{n} values");
        }
        None => out.push_str("names a constant that is not defined, or itself"),
    }
    let uses = a.references(SymbolKind::Const, name).len();
    let _ = write!(
        out,
        " · defined on line {} · used {}",
        index.line(def.span.start) + 1,
        times(uses)
    );
    Some(out)
}

fn table_hover(a: &Analysis, name: &str, index: &LineIndex) -> Option<String> {
    let def = a.table_def(name)?;
    let typed = a
        .checked
        .policy
        .as_ref()
        .and_then(|p| p.tables.iter().find(|t| t.name == name));
    let mut out = String::from("```patronus\n");
    match &def.source {
        ast::TableSource::Inline(e) => {
            let _ = writeln!(
                out,
                "table {name} {}",
                a.text().get(e.span.range()).unwrap_or("")
            );
        }
        ast::TableSource::File(path) => {
            let _ = writeln!(out, "table {name} file {:?}", path.value);
        }
    }
    out.push_str("```\n\n");
    match typed {
        Some(t) => {
            let v4 = t.prefixes.iter().filter(|p| p.is_ipv4()).count();
            let _ = write!(
                out,
                "{} ({v4} IPv4, {} IPv6)",
                count(t.prefixes.len(), "prefix", "prefixes"),
                t.prefixes.len() - v4
            );
            if let Some(file) = t.source_file {
                let _ = write!(out, " from `{}`", a.files.get(file).name);
            }
        }
        None => out.push_str("size unknown until the policy has no errors"),
    }
    let uses = a.references(SymbolKind::Table, name).len();
    let _ = write!(
        out,
        " · defined on line {} · used {}",
        index.line(def.span.start) + 1,
        times(uses)
    );
    Some(out)
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn times(n: usize) -> String {
    match n {
        0 => "nowhere".to_string(),
        1 => "once".to_string(),
        n => format!("{n} times"),
    }
}

/// Where the name at `offset` is defined.
pub fn definition(uri: &Uri, a: &Analysis, offset: usize) -> Option<Location> {
    let symbol = a.symbol_at(offset)?;
    let def = a.definition(symbol.kind, &symbol.name)?;
    Some(Location::new(
        uri.clone(),
        LineIndex::new(a.text()).range(def.span),
    ))
}

/// Every use of the name at `offset`, and its definition if asked.
pub fn references(uri: &Uri, a: &Analysis, offset: usize, declaration: bool) -> Vec<Location> {
    let Some(symbol) = a.symbol_at(offset) else {
        return Vec::new();
    };
    let index = LineIndex::new(a.text());
    let mut spans = Vec::new();
    if declaration && let Some(def) = a.definition(symbol.kind, &symbol.name) {
        spans.push(def.span);
    }
    spans.extend(a.references(symbol.kind, &symbol.name));
    spans
        .into_iter()
        .map(|span| Location::new(uri.clone(), index.range(span)))
        .collect()
}

/// The language's keywords (every word `grammar/src/lexer.rs` has a token
/// for; a test keeps the two in step).
pub const KEYWORDS: &[&str] = &[
    "interface",
    "const",
    "table",
    "file",
    "options",
    "allow",
    "deny",
    "limit",
    "test",
    "expect",
    "out",
    "from",
    "to",
    "port",
    "any",
    "proto",
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
    "ip4",
    "ip6",
    "type",
    "code",
    "flags",
    "vlan",
    "rate",
    "burst",
    "per",
    "label",
    "log",
    "repeat",
    "pass",
    "drop",
];

/// `options { KEY = VALUE }` keys with the values they take (a test checks
/// each against the compiler).
pub const OPTIONS: &[(&str, &str)] = &[
    ("default", "deny | allow"),
    ("conntrack", "on | off"),
    ("conntrack-size", "a number of flows"),
    ("ratelimit-size", "a number of buckets"),
    ("fragments", "drop"),
    ("arp", "pass | drop"),
    ("ndp", "pass | drop"),
    ("log-rate", "events per second"),
    ("timeout", "timeout NAME = DURATION"),
];

/// The second words of `timeout NAME = DURATION`.
pub const TIMEOUTS: &[&str] = &[
    "tcp-syn",
    "tcp-established",
    "tcp-closing",
    "tcp-rst",
    "udp",
    "udp-stream",
    "icmp",
];

/// ICMP and ICMPv6 type names with their numbers (ICMP, ICMPv6).
pub const ICMP_TYPES: &[(&str, Option<u8>, Option<u8>)] = &[
    ("echo-reply", Some(0), Some(129)),
    ("destination-unreachable", Some(3), Some(1)),
    ("unreachable", Some(3), Some(1)),
    ("source-quench", Some(4), None),
    ("redirect", Some(5), Some(137)),
    ("echo-request", Some(8), Some(128)),
    ("router-advertisement", Some(9), Some(134)),
    ("router-solicitation", Some(10), Some(133)),
    ("time-exceeded", Some(11), Some(3)),
    ("parameter-problem", Some(12), Some(4)),
    ("timestamp", Some(13), None),
    ("timestamp-request", Some(13), None),
    ("timestamp-reply", Some(14), None),
    ("information-request", Some(15), None),
    ("information-reply", Some(16), None),
    ("address-mask-request", Some(17), None),
    ("address-mask-reply", Some(18), None),
    ("packet-too-big", None, Some(2)),
    ("multicast-listener-query", None, Some(130)),
    ("multicast-listener-report", None, Some(131)),
    ("multicast-listener-done", None, Some(132)),
    ("neighbor-solicitation", None, Some(135)),
    ("neighbor-advertisement", None, Some(136)),
];

/// Completion at `offset`: after `$` the constants, after `@` the tables,
/// after `type` the ICMP type names, inside `options { }` the option
/// names, elsewhere keywords and every defined name.
pub fn completion(a: &Analysis, offset: usize) -> Vec<CompletionItem> {
    let text = a.text();
    let offset = offset.min(text.len());
    // The word being typed, with its sigil.
    let start = text[..offset]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .map_or(0, |i| i + 1);
    let sigil = text[..start]
        .chars()
        .next_back()
        .filter(|c| *c == '$' || *c == '@');
    let word_start = start - sigil.map_or(0, char::len_utf8);
    let index = LineIndex::new(text);
    let replace = Range::new(index.position(word_start), index.position(offset));
    let edit = |label: &str| {
        Some(CompletionTextEdit::Edit(TextEdit::new(
            replace,
            label.to_string(),
        )))
    };
    let item = |label: String, kind, detail: String| CompletionItem {
        text_edit: edit(&label),
        label,
        kind: Some(kind),
        detail: Some(detail),
        ..Default::default()
    };
    let names = |kind: SymbolKind| {
        let index = &index;
        a.definitions()
            .into_iter()
            .filter(move |d| d.kind == kind)
            .map(move |d| {
                let what = match kind {
                    SymbolKind::Const => "const",
                    SymbolKind::Table => "table",
                };
                item(
                    format!("{}{}", kind.sigil(), d.name),
                    match kind {
                        SymbolKind::Const => CompletionItemKind::CONSTANT,
                        SymbolKind::Table => CompletionItemKind::VARIABLE,
                    },
                    format!("{what} (line {})", index.line(d.span.start) + 1),
                )
            })
    };
    match sigil {
        Some('$') => return names(SymbolKind::Const).collect(),
        Some('@') => return names(SymbolKind::Table).collect(),
        _ => {}
    }
    let before = a
        .tokens
        .iter()
        .take_while(|t| t.2 < start || (t.2 == start && t.0 < start))
        .last();
    let icmp = || {
        ICMP_TYPES.iter().map(|&(name, v4, v6)| {
            let number = |n: Option<u8>| n.map_or("-".to_string(), |n| n.to_string());
            item(
                name.to_string(),
                CompletionItemKind::ENUM_MEMBER,
                format!("ICMP type {} · ICMPv6 type {}", number(v4), number(v6)),
            )
        })
    };
    if matches!(before, Some((_, Tok::Type, _))) {
        return icmp().collect();
    }
    if let Some((_, Tok::Ident(word), _)) = before
        && word == "timeout"
    {
        return TIMEOUTS
            .iter()
            .map(|t| {
                item(
                    t.to_string(),
                    CompletionItemKind::PROPERTY,
                    "timeout".into(),
                )
            })
            .collect();
    }
    if in_options(a, offset) {
        return OPTIONS
            .iter()
            .map(|(key, value)| {
                item(
                    key.to_string(),
                    CompletionItemKind::PROPERTY,
                    value.to_string(),
                )
            })
            .collect();
    }
    KEYWORDS
        .iter()
        .map(|k| item(k.to_string(), CompletionItemKind::KEYWORD, "keyword".into()))
        .chain(names(SymbolKind::Const))
        .chain(names(SymbolKind::Table))
        .chain(icmp())
        .collect()
}

/// Whether `offset` is inside an `options { ... }` block (one still being
/// typed, without its `}`, counts up to the next statement).
fn in_options(a: &Analysis, offset: usize) -> bool {
    let mut open = false;
    for (l, tok, _) in &a.tokens {
        if *l >= offset {
            break;
        }
        match tok {
            Tok::Options => open = true,
            Tok::RBrace => open = false,
            t if t.starts_statement() => open = false,
            _ => {}
        }
    }
    open
}

/// The whole document in `fmt`'s layout: one edit, none when already
/// formatted; `Err` with the first syntax error when it does not parse.
pub fn formatting(a: &Analysis) -> Result<Vec<TextEdit>, String> {
    let text = a.text();
    match patronus_grammar::fmt::format(text) {
        Ok(formatted) if formatted == text => Ok(Vec::new()),
        Ok(formatted) => {
            let index = LineIndex::new(text);
            Ok(vec![TextEdit::new(
                index.range(Span::new(0, text.len())),
                formatted,
            )])
        }
        Err(errors) => {
            let first = errors
                .first()
                .map(|e| {
                    let p = LineIndex::new(text).position(e.span.start);
                    format!(" (line {}: {})", p.line + 1, e.message)
                })
                .unwrap_or_default();
            Err(format!("cannot format a policy with syntax errors{first}"))
        }
    }
}

/// Quick fixes for the lints that have one, for the diagnostics that touch
/// `range`: remove a shadowed (P0103) or redundant (P0102) rule, clear the
/// host bits of a CIDR (P0101) or keep the single host, remove an unused
/// constant (P0104) or table (P0105).
pub fn code_actions(uri: &Uri, a: &Analysis, range: Range) -> Vec<CodeAction> {
    let text = a.text();
    let index = LineIndex::new(text);
    let wanted = Span::new(index.offset(range.start), index.offset(range.end));
    let mut out = Vec::new();
    let mut places = Places::new(uri, a);
    for d in &a.checked.diagnostics {
        let span = d.primary.span;
        if d.primary.file != a.file || span.start > wanted.end || wanted.start > span.end {
            continue;
        }
        let diagnostic = to_lsp(&mut places, d);
        let fix = |title: String, span: Span, new_text: String, preferred: bool| CodeAction {
            title,
            kind: Some(CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![diagnostic.clone()]),
            edit: Some(WorkspaceEdit {
                changes: Some(HashMap::from([(
                    uri.clone(),
                    vec![TextEdit::new(index.range(span), new_text)],
                )])),
                ..Default::default()
            }),
            is_preferred: Some(preferred),
            ..Default::default()
        };
        match d.code {
            Code::ShadowedRule | Code::DuplicateRule => {
                let what = if d.code == Code::ShadowedRule {
                    "shadowed"
                } else {
                    "redundant"
                };
                out.push(fix(
                    format!("Remove the {what} rule"),
                    whole_lines(text, span),
                    String::new(),
                    false,
                ));
            }
            Code::UnusedConst | Code::UnusedTable => {
                // The diagnostic points at the name; remove its statement.
                let Some(item) = a.ast.items.iter().find(|item| match item {
                    ast::Item::Const(c) => c.name.span == span,
                    ast::Item::Table(t) => t.name.span == span,
                    _ => false,
                }) else {
                    continue;
                };
                let what = if d.code == Code::UnusedConst {
                    "constant"
                } else {
                    "table"
                };
                out.push(fix(
                    format!("Remove the unused {what}"),
                    whole_lines(text, item.span()),
                    String::new(),
                    false,
                ));
            }
            Code::HostBits => {
                let Some(written) = text.get(span.range()) else {
                    continue;
                };
                let Ok((ip, Some(len))) = patronus_grammar::lexer::parse_address(written) else {
                    continue;
                };
                let Some(network) = u8::try_from(len).ok().and_then(|l| Prefix::new(ip, l)) else {
                    continue;
                };
                out.push(fix(
                    format!("Clear the host bits: `{network}`"),
                    span,
                    network.to_string(),
                    true,
                ));
                out.push(fix(
                    format!("Match the single host `{ip}`"),
                    span,
                    ip.to_string(),
                    false,
                ));
            }
            _ => {}
        }
    }
    out
}

/// `span` widened to whole lines when nothing but blanks (and a trailing
/// comment, which is about the rule) shares its lines; else `span` itself.
fn whole_lines(text: &str, span: Span) -> Span {
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let rest_end = text[span.end..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i + 1);
    let before_blank = text[line_start..span.start].trim().is_empty();
    let after = text[span.end..rest_end].trim();
    if before_blank && (after.is_empty() || after.starts_with('#')) {
        Span::new(line_start, rest_end)
    } else {
        span
    }
}

/// Renames the `$const` or `@table` at `offset`: its definition and every
/// use. `new_name` may be written with or without the sigil; it must be a
/// name the lexer reads as one (not a keyword) and not already defined.
pub fn rename(
    uri: &Uri,
    a: &Analysis,
    offset: usize,
    new_name: &str,
) -> Result<Option<WorkspaceEdit>, String> {
    let Some(symbol) = a.symbol_at(offset) else {
        return Ok(None);
    };
    let name = new_name
        .strip_prefix(symbol.kind.sigil())
        .unwrap_or(new_name);
    let lexes_as_name = matches!(
        patronus_grammar::lexer::lex(name).tokens.as_slice(),
        [(0, Tok::Ident(n), end)] if n == name && *end == name.len()
    );
    if !lexes_as_name {
        return Err(format!(
            "`{name}` is not a name (a letter or `_`, then letters, digits, `_` or `-`; not a keyword)"
        ));
    }
    if name != symbol.name && a.definition(symbol.kind, name).is_some() {
        return Err(format!(
            "`{}{name}` is already defined",
            symbol.kind.sigil()
        ));
    }
    let index = LineIndex::new(a.text());
    let mut edits = Vec::new();
    if let Some(def) = a.definition(symbol.kind, &symbol.name) {
        edits.push(TextEdit::new(index.range(def.span), name.to_string()));
    }
    for span in a.references(symbol.kind, &symbol.name) {
        edits.push(TextEdit::new(
            index.range(span),
            format!("{}{name}", symbol.kind.sigil()),
        ));
    }
    Ok(Some(WorkspaceEdit {
        changes: Some(HashMap::from([(uri.clone(), edits)])),
        ..Default::default()
    }))
}

/// An `explain` lens on every `expect` line of every test.
pub fn code_lenses(uri: &Uri, a: &Analysis) -> Vec<CodeLens> {
    let index = LineIndex::new(a.text());
    let mut out = Vec::new();
    for item in &a.ast.items {
        let ast::Item::Test(test) = item else {
            continue;
        };
        for step in &test.steps {
            if !matches!(step.kind, ast::StepKind::Expect(_)) {
                continue;
            }
            let line = index.line(step.span.start);
            out.push(CodeLens {
                range: index.range(step.span),
                command: Some(Command::new(
                    "explain".to_string(),
                    EXPLAIN_COMMAND.to_string(),
                    Some(vec![
                        serde_json::Value::String(uri.as_str().to_string()),
                        serde_json::Value::from(line),
                    ]),
                )),
                data: None,
            });
        }
    }
    out
}

/// The trace of the test step on `line`, run as `patronusc test` runs it
/// (the test's earlier steps first, 1 ms apart), in `patronusc explain`'s
/// words; with the step's span. `None` when no step is on that line.
pub fn explain_at(a: &Analysis, line: usize) -> Option<(Span, String)> {
    let index = LineIndex::new(a.text());
    let ast_step = a.ast.items.iter().find_map(|item| match item {
        ast::Item::Test(t) => t.steps.iter().find(|s| index.line(s.span.start) == line),
        _ => None,
    })?;
    let Some(policy) = a
        .checked
        .policy
        .as_ref()
        .filter(|_| !a.checked.has_errors())
    else {
        return Some((
            ast_step.span,
            "the policy has errors: fix them to explain this packet\n".to_string(),
        ));
    };
    let (test, position) = policy.tests.iter().find_map(|t| {
        t.steps
            .iter()
            .position(|s| s.span == ast_step.span)
            .map(|i| (t, i))
    })?;
    Some((
        ast_step.span,
        explain_step(policy, test, position, a.text()),
    ))
}

fn explain_step(policy: &typed::Policy, test: &typed::Test, position: usize, text: &str) -> String {
    let mut interp = Interpreter::new(policy);
    let mut now_ns = 0u64;
    for step in &test.steps[..position] {
        let frame = packet::build(&step.packet);
        for _ in 0..step.packet.repeat.max(1) {
            now_ns += PACKET_INTERVAL_NS;
            match step.expect {
                Some(_) => {
                    interp.inbound(&frame, now_ns);
                }
                None => interp.outbound(&frame, now_ns),
            }
        }
    }
    let step = &test.steps[position];
    let written = text.get(step.span.range()).unwrap_or("").trim();
    let mut report = format!("test {:?}, step {}: {written}\n", test.name, position + 1);
    if step.expect.is_none() {
        report.push_str("an `out` step: a packet the host sends, not filtered\n");
        return report;
    }
    let frame = packet::build(&step.packet);
    now_ns += PACKET_INTERVAL_NS;
    let (outcome, trace) = interp.inbound_traced(&frame, now_ns);
    for t in &trace {
        let (phase, finding) = cmd_explain::describe(policy, t);
        let _ = writeln!(report, "  {phase:<12} {finding}");
    }
    let decided_by = outcome
        .rule
        .map(|r| format!(", {}", rule_name(policy, r)))
        .unwrap_or_default();
    let _ = writeln!(
        report,
        "verdict: {} (phase {}{decided_by})",
        verdict_name(outcome.verdict),
        phase_name(outcome.phase)
    );
    let _ = writeln!(
        report,
        "counters: {}",
        counters_text(policy, &outcome.counters)
    );
    if let Some(expected) = step.expect
        && expected != outcome.verdict
    {
        let _ = writeln!(report, "FAILS: the test expects {}", verdict_name(expected));
    }
    if step.packet.repeat > 1 {
        report.push_str("note: the first of the `repeat` packets is traced\n");
    }
    report
}

/// The offset of a position in the analysed text.
pub fn offset(a: &Analysis, position: Position) -> usize {
    LineIndex::new(a.text()).offset(position)
}

#[cfg(test)]
mod tests {
    //! The completion vocabularies are copies of the lexer's and the
    //! compiler's; these tests fail when either side changes alone.
    use super::*;

    fn check(text: &str) -> Analysis {
        Analysis::new("vocabulary.pf", text)
    }

    #[test]
    fn keywords_are_every_word_the_lexer_has_a_token_for() {
        let lexer = include_str!("../../../grammar/src/lexer.rs");
        let mut words: Vec<&str> = lexer
            .split("#[token(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric()) && !w.is_empty())
            .collect();
        words.sort_unstable();
        let mut ours = KEYWORDS.to_vec();
        ours.sort_unstable();
        assert_eq!(ours, words);
    }

    #[test]
    fn option_names_are_the_compilers() {
        let a = check("options { no-such-option = 1 }\n");
        let help = a.checked.diagnostics[0].help.clone().unwrap_or_default();
        for (key, _) in OPTIONS {
            assert!(help.contains(&format!("`{key}`")), "{key} not in: {help}");
        }
        assert_eq!(help.matches('`').count() / 2, OPTIONS.len(), "{help}");
        for timeout in TIMEOUTS {
            let a = check(&format!("options {{ timeout {timeout} = 10s }}\n"));
            assert!(a.checked.diagnostics.is_empty(), "timeout {timeout}");
        }
    }

    #[test]
    fn icmp_type_names_are_the_compilers_with_their_numbers() {
        for &(name, v4, v6) in ICMP_TYPES {
            for (keyword, number) in [("icmp", v4), ("icmpv6", v6)] {
                let by_name = check(&format!("allow {keyword} type {name}\n"));
                match number {
                    Some(n) => {
                        let by_number = check(&format!("allow {keyword} type {n}\n"));
                        let icmp = |a: &Analysis| {
                            a.checked
                                .policy
                                .as_ref()
                                .map(|p| p.rules[0].matcher.icmp.clone())
                        };
                        assert!(by_name.checked.diagnostics.is_empty(), "{keyword} {name}");
                        assert_eq!(icmp(&by_name), icmp(&by_number), "{keyword} {name}");
                    }
                    None => assert!(by_name.checked.has_errors(), "{keyword} {name}"),
                }
            }
        }
    }
}
