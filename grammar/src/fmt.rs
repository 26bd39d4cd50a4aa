//! The canonical layout of a policy file (`patronusc fmt`), like rustfmt:
//! one statement per line, runs of `const`s and `table`s with their `=` and
//! bodies aligned, actions padded so match fields line up, option keys
//! aligned, sets sorted (no set's order has meaning), and every comment kept.
//!
//! Comments stay with the statement they sit on: a comment on its own line
//! goes above the statement after it, a comment at the end of a line stays
//! at the end of that statement's line (aligned within a run). A comment in
//! the middle of a one-line statement moves above it.
//!
//! Formatting is idempotent: `format(format(x)) == format(x)`.

use std::cmp::Ordering;

use crate::ast::*;
use crate::{ParseError, parse, print};

/// Formats `source`; a file with syntax errors is not formatted.
pub fn format(source: &str) -> Result<String, Vec<ParseError>> {
    let (mut policy, errors) = parse(source);
    if !errors.is_empty() {
        return Err(errors);
    }
    sort_sets(&mut policy);
    Ok(Formatter::new(source, &policy).run())
}

/// Sorts every set in the policy into canonical order (numbers, then
/// ranges, addresses by family and value, then names and references).
pub fn sort_sets(policy: &mut Policy) {
    for item in &mut policy.items {
        match item {
            Item::Const(c) => sort_expr(&mut c.value),
            Item::Table(t) => {
                if let TableSource::Inline(e) = &mut t.source {
                    sort_expr(e);
                }
            }
            Item::Rule(r) => {
                for f in &mut r.fields {
                    match &mut f.kind {
                        MatchFieldKind::ProtoExpr(e) | MatchFieldKind::Vlan(e) => sort_expr(e),
                        MatchFieldKind::From { addrs, port }
                        | MatchFieldKind::To { addrs, port } => {
                            addrs.iter_mut().for_each(sort_expr);
                            port.iter_mut().for_each(sort_expr);
                        }
                        MatchFieldKind::IcmpType { ty, code } => {
                            sort_expr(ty);
                            code.iter_mut().for_each(sort_expr);
                        }
                        MatchFieldKind::Proto(_)
                        | MatchFieldKind::Family(_)
                        | MatchFieldKind::Flags { .. } => {}
                    }
                }
            }
            Item::Test(t) => {
                for s in &mut t.steps {
                    s.packet.icmp_type.iter_mut().for_each(sort_expr);
                }
            }
            Item::Interface(_) | Item::Options(_) => {}
        }
    }
}

fn sort_expr(e: &mut Expr) {
    match &mut e.kind {
        ExprKind::Set(items) => {
            items.iter_mut().for_each(sort_expr);
            items.sort_by(compare_exprs);
        }
        ExprKind::Not(inner) => sort_expr(inner),
        _ => {}
    }
}

fn compare_exprs(a: &Expr, b: &Expr) -> Ordering {
    fn rank(e: &Expr) -> u8 {
        match e.kind {
            ExprKind::Any => 0,
            ExprKind::Number(_) | ExprKind::Range(..) => 1,
            ExprKind::Addr { ip, .. } if ip.is_ipv4() => 2,
            ExprKind::Addr { .. } => 3,
            ExprKind::Name(_) => 4,
            ExprKind::ConstRef(_) => 5,
            ExprKind::TableRef(_) => 6,
            ExprKind::Set(_) => 7,
            ExprKind::Not(_) => 8,
        }
    }
    rank(a)
        .cmp(&rank(b))
        .then_with(|| match (&a.kind, &b.kind) {
            (ExprKind::Number(x), ExprKind::Number(y)) => x.cmp(y),
            (ExprKind::Number(x), ExprKind::Range(y, _)) => x.cmp(y).then(Ordering::Less),
            (ExprKind::Range(x, _), ExprKind::Number(y)) => x.cmp(y).then(Ordering::Greater),
            (ExprKind::Range(x1, x2), ExprKind::Range(y1, y2)) => (x1, x2).cmp(&(y1, y2)),
            (ExprKind::Addr { ip: x, prefix: px }, ExprKind::Addr { ip: y, prefix: py }) => {
                (x, px).cmp(&(y, py))
            }
            _ => print::expr(a).cmp(&print::expr(b)),
        })
}

/// A comment's place relative to the code around it.
struct CommentInfo {
    text: String,
    start: usize,
    end: usize,
}

struct Formatter<'a> {
    source: &'a str,
    policy: &'a Policy,
    comments: Vec<CommentInfo>,
    /// Index of the first comment not yet placed.
    next_comment: usize,
}

/// One output line of a top-level statement: code plus an optional
/// trailing comment, tagged with the run it aligns with.
struct Line {
    kind: RunKind,
    /// Alignment columns: for consts and tables the name, then the rest.
    parts: Vec<String>,
    trailing: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RunKind {
    /// Comments, multi-line blocks and anything that does not align.
    Verbatim,
    Interface,
    Const,
    Table,
    Rule,
}

impl<'a> Formatter<'a> {
    fn new(source: &'a str, policy: &'a Policy) -> Self {
        let comments = policy
            .comments
            .iter()
            .map(|c| CommentInfo {
                text: c.text.trim_end().to_string(),
                start: c.span.start,
                end: c.span.end,
            })
            .collect();
        Formatter {
            source,
            policy,
            comments,
            next_comment: 0,
        }
    }

    /// Whether the text between `a` and `b` holds an empty line.
    fn blank_line_between(&self, a: usize, b: usize) -> bool {
        if a >= b {
            return false;
        }
        let segments: Vec<&str> = self.source[a..b].split('\n').collect();
        segments.len() > 2
            && segments[1..segments.len() - 1]
                .iter()
                .any(|s| s.trim().is_empty())
    }

    /// Comments that start before `pos`, not yet placed.
    fn take_comments_before(&mut self, pos: usize) -> Vec<usize> {
        let mut taken = Vec::new();
        while self.next_comment < self.comments.len()
            && self.comments[self.next_comment].start < pos
        {
            taken.push(self.next_comment);
            self.next_comment += 1;
        }
        taken
    }

    /// The comment right after `end` on the same line, if any, and before
    /// `next` (where the next piece of code starts).
    fn take_trailing(&mut self, end: usize, next: usize) -> Option<String> {
        let c = self.comments.get(self.next_comment)?;
        if c.start >= end && c.start < next && !self.source[end..c.start].contains('\n') {
            self.next_comment += 1;
            Some(format!("#{}", self.comments[self.next_comment - 1].text))
        } else {
            None
        }
    }

    fn run(mut self) -> String {
        // Groups of lines separated by blank lines; alignment is per run of
        // same-kind lines inside a group.
        let mut groups: Vec<Vec<Line>> = vec![Vec::new()];
        // End of the last thing emitted (item or comment), to find blank lines.
        let mut last_end = 0usize;
        let mut last_kind: Option<RunKind> = None;
        let items = &self.policy.items;
        for (index, item) in items.iter().enumerate() {
            let next_start = items.get(index + 1).map_or(usize::MAX, |i| i.span().start);
            let span = item.span();
            let leading = self.take_comments_before(span.start);
            let kind = run_kind(item);
            let first_start = leading
                .first()
                .map_or(span.start, |&i| self.comments[i].start);
            let kind_changed = last_kind.is_some_and(|k| k != kind || k == RunKind::Verbatim);
            if !groups.last().is_some_and(Vec::is_empty)
                && (self.blank_line_between(last_end, first_start) || kind_changed)
            {
                groups.push(Vec::new());
            }
            for i in leading {
                let c = &self.comments[i];
                if c.start > last_end
                    && self.blank_line_between(last_end, c.start)
                    && !groups.last().is_some_and(Vec::is_empty)
                {
                    groups.push(Vec::new());
                }
                let text = format!("#{}", c.text);
                last_end = c.end;
                push_line(&mut groups, verbatim(text));
            }
            // Comments inside a one-line statement move above it.
            let inner: Vec<usize> = if matches!(item, Item::Options(_) | Item::Test(_)) {
                Vec::new()
            } else {
                self.take_comments_before(span.end)
            };
            for i in inner {
                let text = format!("#{}", self.comments[i].text);
                push_line(&mut groups, verbatim(text));
            }
            let lines = match item {
                Item::Options(o) => self.options_block(o, next_start),
                Item::Test(t) => self.test_block(t, next_start),
                _ => {
                    let trailing = self.take_trailing(span.end, next_start);
                    vec![Line {
                        kind,
                        parts: item_parts(item),
                        trailing,
                    }]
                }
            };
            if let Some(g) = groups.last_mut() {
                g.extend(lines);
            }
            last_end = span.end;
            if let Some(c) = self.next_comment.checked_sub(1).map(|i| &self.comments[i])
                && c.end > last_end
            {
                last_end = c.end;
            }
            last_kind = Some(kind);
        }
        let rest = self.take_comments_before(usize::MAX);
        for i in rest {
            let c = &self.comments[i];
            if (self.blank_line_between(last_end, c.start) || last_kind.is_some())
                && !groups.last().is_some_and(Vec::is_empty)
            {
                groups.push(Vec::new());
                last_kind = None;
            }
            let text = format!("#{}", c.text);
            last_end = c.end;
            push_line(&mut groups, verbatim(text));
        }
        let mut out = String::new();
        for group in groups.iter().filter(|g| !g.is_empty()) {
            if !out.is_empty() {
                out.push('\n');
            }
            render_group(group, &mut out);
        }
        out
    }

    fn options_block(&mut self, o: &OptionsBlock, next_start: usize) -> Vec<Line> {
        let width = o
            .entries
            .iter()
            .map(|e| option_key(e).chars().count())
            .max()
            .unwrap_or(0);
        let mut body: Vec<(String, Option<String>)> = Vec::new();
        for (index, e) in o.entries.iter().enumerate() {
            let next = o
                .entries
                .get(index + 1)
                .map_or(o.span.end, |n| n.span.start);
            for i in self.take_comments_before(e.span.start) {
                body.push((format!("#{}", self.comments[i].text), None));
            }
            let code = format!(
                "{:width$} = {}",
                option_key(e),
                print::option_value(&e.value.kind)
            );
            let trailing = self.take_trailing(e.span.end, next);
            body.push((code, trailing));
        }
        self.close_block("options {".to_string(), body, o.span, next_start)
    }

    fn test_block(&mut self, t: &TestBlock, next_start: usize) -> Vec<Line> {
        let mut body: Vec<(String, Option<String>)> = Vec::new();
        for (index, s) in t.steps.iter().enumerate() {
            let next = t.steps.get(index + 1).map_or(t.span.end, |n| n.span.start);
            for i in self.take_comments_before(s.span.start) {
                body.push((format!("#{}", self.comments[i].text), None));
            }
            let code = print::test_step(s);
            let trailing = self.take_trailing(s.span.end, next);
            body.push((code, trailing));
        }
        self.close_block(
            format!("test {} {{", print::string(&t.name.value)),
            body,
            t.span,
            next_start,
        )
    }

    /// Emits `head`, the indented body with aligned trailing comments, the
    /// comments left before the closing brace, and `}`.
    fn close_block(
        &mut self,
        head: String,
        mut body: Vec<(String, Option<String>)>,
        span: Span,
        next_start: usize,
    ) -> Vec<Line> {
        for i in self.take_comments_before(span.end) {
            body.push((format!("#{}", self.comments[i].text), None));
        }
        let head_trailing = None;
        let mut lines = vec![Line {
            kind: RunKind::Verbatim,
            parts: vec![head],
            trailing: head_trailing,
        }];
        let col = body
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(c, _)| c.chars().count())
            .max()
            .unwrap_or(0);
        for (code, trailing) in body {
            let text = match trailing {
                Some(t) => format!("  {code:col$}  {t}"),
                None => format!("  {code}"),
            };
            lines.push(verbatim(text));
        }
        let trailing = self.take_trailing(span.end, next_start);
        lines.push(Line {
            kind: RunKind::Verbatim,
            parts: vec!["}".to_string()],
            trailing,
        });
        lines
    }
}

fn push_line(groups: &mut [Vec<Line>], line: Line) {
    if let Some(g) = groups.last_mut() {
        g.push(line);
    }
}

fn verbatim(text: String) -> Line {
    Line {
        kind: RunKind::Verbatim,
        parts: vec![text],
        trailing: None,
    }
}

fn option_key(e: &OptionEntry) -> String {
    match &e.sub {
        Some(sub) => format!("{} {}", e.key.name, sub.name),
        None => e.key.name.clone(),
    }
}

fn run_kind(item: &Item) -> RunKind {
    match item {
        Item::Interface(_) => RunKind::Interface,
        Item::Const(_) => RunKind::Const,
        Item::Table(_) => RunKind::Table,
        Item::Rule(_) => RunKind::Rule,
        Item::Options(_) | Item::Test(_) => RunKind::Verbatim,
    }
}

/// The alignment columns of a one-line statement.
fn item_parts(item: &Item) -> Vec<String> {
    match item {
        Item::Const(c) => vec![
            format!("const {}", c.name.name),
            format!("= {}", print::expr(&c.value)),
        ],
        Item::Table(t) => {
            let body = match &t.source {
                TableSource::Inline(e) => print::expr(e),
                TableSource::File(p) => format!("file {}", print::string(&p.value)),
            };
            vec![format!("table {}", t.name.name), body]
        }
        Item::Rule(r) => {
            let rest = print::rule(r);
            let action = print::action(r.action);
            let tail = rest[action.len()..].trim_start().to_string();
            if tail.is_empty() {
                vec![action.to_string()]
            } else {
                vec![format!("{action:5}"), tail]
            }
        }
        other => vec![print::item(other)],
    }
}

fn render_group(group: &[Line], out: &mut String) {
    let mut i = 0;
    while i < group.len() {
        let kind = group[i].kind;
        let mut j = i + 1;
        while j < group.len() && group[j].kind == kind && kind != RunKind::Verbatim {
            j += 1;
        }
        let run = &group[i..j];
        let name_width = if matches!(kind, RunKind::Const | RunKind::Table) {
            run.iter()
                .map(|l| l.parts[0].chars().count())
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        let codes: Vec<String> = run
            .iter()
            .map(|l| match kind {
                RunKind::Const | RunKind::Table => {
                    format!("{:name_width$} {}", l.parts[0], l.parts[1])
                }
                _ => l.parts.join(" "),
            })
            .collect();
        let col = run
            .iter()
            .zip(&codes)
            .filter(|(l, _)| l.trailing.is_some())
            .map(|(_, c)| c.chars().count())
            .max()
            .unwrap_or(0);
        for (l, code) in run.iter().zip(codes) {
            match &l.trailing {
                Some(t) => {
                    out.push_str(&format!("{code:col$}  {t}"));
                }
                None => out.push_str(&code),
            }
            out.push('\n');
        }
        i = j;
    }
}
