//! `patronusc diff OLD NEW`: what a policy change does to traffic. Reads
//! both policies (files, `REV:PATH`, or `--git REV POLICY`, whose table
//! files are read at the same revision through `git show`), checks and
//! lowers them, and prints [`patronus_compiler::diff`]'s regions and option
//! changes as rustc-like diagnostics (P0201, P0202), JSON, a Markdown table
//! for a pull-request comment, GitHub workflow commands, or `test` blocks
//! pinning the new behaviour.
//!
//! Exit status: 0, or 1 with `--exit-code` when a verdict changes; 2 on
//! usage, I/O or git errors and when a policy has errors.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use patronus_compiler::diag::{Diagnostic, FileId, Files};
use patronus_compiler::diff::{self, Describer, PolicyDiff, RuleChange, decision_text};
use patronus_compiler::regions::{self, Decision, Dim, FieldSet, Region};
use patronus_compiler::render;
use serde_json::{Value, json};

use crate::common::{CliError, ColorArgs, Status, write_stdout};
use crate::policy_source::{LoadedPolicy, Source, load_policy};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old policy: a file, or REV:PATH (the file at a git revision, as
    /// `git show` names it). With --git, the policy file to compare with
    /// its version at REV.
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The new policy: a file or REV:PATH.
    #[arg(value_name = "NEW")]
    pub new: Option<String>,
    /// Compare POLICY (the only path given) at git revision REV with the
    /// file as it is now; table files are read at REV too.
    #[arg(long, value_name = "REV")]
    pub git: Option<String>,
    /// Also report regions whose verdict is the same but whose deciding
    /// phase or rule changed, and every rule added or removed.
    #[arg(long)]
    pub all: bool,
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    pub format: DiffFormat,
    /// Exit 1 when any verdict changes (for CI gates).
    #[arg(long)]
    pub exit_code: bool,
    /// Print `test` blocks whose `expect` lines pin the new behaviour of
    /// every reported region, instead of the report.
    #[arg(long)]
    pub emit_tests: bool,
    #[command(flatten)]
    pub color: ColorArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// rustc-like, with the deciding rules underlined.
    Human,
    Json,
    /// A table fit for a pull-request comment.
    Markdown,
    /// GitHub Actions workflow commands (annotations on the new policy).
    Github,
}

pub fn run(args: &DiffArgs) -> Result<Status, CliError> {
    let (old_source, new_source) = match (&args.git, &args.new) {
        (Some(rev), None) => (
            Source::at_revision(rev, Path::new(&args.old)),
            Source::File(PathBuf::from(&args.old)),
        ),
        (None, Some(new)) => (Source::parse(&args.old), Source::parse(new)),
        (Some(_), Some(_)) => {
            return Err(CliError::new(
                "--git REV compares one policy with itself at REV: `patronusc diff --git REV POLICY`",
            ));
        }
        (None, None) => {
            return Err(CliError::new(
                "diff needs two policies (`patronusc diff OLD NEW`) or `--git REV POLICY`",
            ));
        }
    };
    // Checking is most of a large diff's time: both policies at once.
    let color = args.color.color;
    let (old_loaded, new_loaded) = std::thread::scope(|scope| {
        let old = scope.spawn(|| {
            let mut files = Files::new();
            load_policy(&mut files, &old_source, color).map(|p| (files, p))
        });
        let mut files = Files::new();
        let new = load_policy(&mut files, &new_source, color).map(|p| (files, p));
        let old = old
            .join()
            .unwrap_or_else(|_| Err(CliError::new("checking the old policy failed")));
        (old, new)
    });
    let (mut files, old) = old_loaded?;
    let (new_files, mut new) = new_loaded?;
    // One `Files` for both, so diagnostics can point into either: the new
    // policy's files follow the old one's.
    let offset = files.iter().count();
    for (_, f) in new_files.iter() {
        files.add(f.name.clone(), f.text.clone());
    }
    let shift = |id: FileId| FileId(id.0 + offset);
    new.file = shift(new.file);
    new.policy.file = shift(new.policy.file);
    for t in &mut new.policy.tables {
        t.source_file = t.source_file.map(shift);
    }
    let d = diff::diff(old.side(), new.side(), args.all);
    let lines = [old.file, new.file]
        .into_iter()
        .map(|f| (f, line_starts(&files.get(f).text)))
        .collect();
    let report = Report {
        files: &files,
        old: &old,
        new: &new,
        diff: &d,
        lines,
    };
    let text = if args.emit_tests {
        report.tests()
    } else {
        match args.format {
            DiffFormat::Human => report.human(args.color.color.for_stdout()),
            DiffFormat::Json => report.json(),
            DiffFormat::Markdown => report.markdown(),
            DiffFormat::Github => report.github(),
        }
    };
    write_stdout(&text)?;
    Ok(Status::failure_if(
        args.exit_code && d.verdict_changes() > 0,
    ))
}

/// One diff, ready to print in every format.
pub struct Report<'a> {
    pub files: &'a Files,
    pub old: &'a LoadedPolicy,
    pub new: &'a LoadedPolicy,
    pub diff: &'a PolicyDiff,
    /// Per policy file: line start offsets (a 10,000-rule diff names
    /// rules hundreds of times; `Files::line_col` scans from the start).
    pub lines: std::collections::HashMap<FileId, Vec<usize>>,
}

impl Report<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, file: FileId, offset: usize) -> (usize, usize) {
        let text = &self.files.get(file).text;
        let Some(starts) = self.lines.get(&file) else {
            return self.files.line_col(file, offset);
        };
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = starts.partition_point(|&s| s <= offset);
        let start = starts[line - 1];
        (line, text[start..offset].chars().count() + 1)
    }
}

/// Line starts of a text.
pub fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

const MAX_ITEMS: usize = 8;
const MAX_MARKDOWN_ROWS: usize = 50;

fn arrow(r: &Region) -> String {
    format!(
        "{} → {}",
        diff::verdict_name(r.decisions[0].verdict()),
        diff::verdict_name(r.decisions[1].verdict())
    )
}

fn changes_verdict(r: &Region) -> bool {
    r.decisions[0].verdict() != r.decisions[1].verdict()
}

fn example_text(r: &Region) -> String {
    regions::example(r).map_or_else(
        || "none (only land packets)".to_string(),
        |p| regions::packet_text(&p),
    )
}

impl Report<'_> {
    fn summary(&self) -> String {
        let n = self.diff.verdict_changes();
        let to_drop = self
            .diff
            .regions
            .iter()
            .filter(|r| {
                changes_verdict(r)
                    && r.decisions[1].verdict() == patronus_grammar::ast::Verdict::Drop
            })
            .count();
        let mut s = format!(
            "{} region{} change verdict ({} pass → drop, {} drop → pass)",
            n,
            if n == 1 { "" } else { "s" },
            to_drop,
            n - to_drop
        );
        let decisions = self.diff.regions.len() - n;
        if decisions > 0 {
            let _ = write!(s, ", {decisions} change deciding phase or rule");
        }
        if !self.diff.options.is_empty() {
            let _ = write!(s, ", {} option or rate changes", self.diff.options.len());
        }
        s
    }

    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        diff::diagnostics(self.diff, &self.old.policy, &self.new.policy, MAX_ITEMS)
    }

    fn option_lines(&self) -> Vec<String> {
        self.diff
            .options
            .iter()
            .map(|o| format!("{}: {} → {}", o.name, o.old, o.new))
            .collect()
    }

    fn rule_lines(&self) -> Vec<String> {
        self.diff
            .rules
            .iter()
            .map(|c| match c {
                RuleChange::Removed(id) => {
                    let r = &self.old.policy.rules[id.0 as usize];
                    let (line, _) = self.line_col(self.old.file, r.span.start);
                    format!(
                        "removed: {} {} ({}:{line})",
                        diff::action_name(r.action),
                        diff::rule_title(r),
                        self.old.name
                    )
                }
                RuleChange::Added(id) => {
                    let r = &self.new.policy.rules[id.0 as usize];
                    let (line, _) = self.line_col(self.new.file, r.span.start);
                    format!(
                        "added: {} {} ({}:{line})",
                        diff::action_name(r.action),
                        diff::rule_title(r),
                        self.new.name
                    )
                }
            })
            .collect()
    }

    pub fn human(&self, color: bool) -> String {
        let mut out = format!(
            "diff {} → {}: {}\n\n",
            self.old.name,
            self.new.name,
            self.summary()
        );
        out.push_str(&render::human(self.files, &self.diagnostics(), color));
        let options = self.option_lines();
        if !options.is_empty() {
            out.push_str("option, rate and logging changes (stateful; no region shows them):\n");
            for l in options {
                let _ = writeln!(out, "  {l}");
            }
            out.push('\n');
        }
        let rules = self.rule_lines();
        if !rules.is_empty() {
            out.push_str("rules (by label or text):\n");
            for l in rules {
                let _ = writeln!(out, "  {l}");
            }
            out.push('\n');
        }
        if self.diff.is_empty() {
            out.push_str("no change in behaviour\n");
        }
        out
    }

    fn side_json(&self, side: &LoadedPolicy, d: Decision) -> Value {
        let rule = d.rule().and_then(|id| side.policy.rules.get(id.0 as usize));
        json!({
            "verdict": diff::verdict_name(d.verdict()),
            "phase": crate::names::phase_name(d.phase()),
            "decided_by": decision_text(&side.policy, d),
            "rule": rule.map(|r| {
                let (line, column) = self.line_col(side.file, r.span.start);
                json!({
                    "index": r.id.0 + 1,
                    "label": r.label,
                    "text": r.identity,
                    "file": side.name,
                    "line": line,
                    "column": column,
                })
            }),
        })
    }

    pub fn json(&self) -> String {
        let mut describer = Describer::new(0);
        let regions: Vec<Value> = self
            .diff
            .regions
            .iter()
            .map(|r| {
                let mut fields = serde_json::Map::new();
                for dim in Dim::ALL {
                    // Fields the packets do not carry, or any value of, are left out.
                    let v = match r.field(dim) {
                        FieldSet::Any | FieldSet::Absent => continue,
                        FieldSet::Set(set) if *set == dim.domain(r.family) => continue,
                        FieldSet::Set(set) => Value::String(field_text(&describer, r, dim, set)),
                    };
                    fields.insert(dim.name().to_string(), v);
                }
                json!({
                    "change": if changes_verdict(r) { "verdict" } else { "decision" },
                    "family": match r.family { patronus_compiler::typed::Family::Ipv4 => "ip4", _ => "ip6" },
                    "match": describer.matcher(r),
                    "fields": fields,
                    "example": regions::example(r).map(|p| regions::packet_text(&p)),
                    "old": self.side_json(self.old, r.decisions[0]),
                    "new": self.side_json(self.new, r.decisions[1]),
                })
            })
            .collect();
        let options: Vec<Value> = self
            .diff
            .options
            .iter()
            .map(|o| json!({"name": o.name, "old": o.old, "new": o.new}))
            .collect();
        let rules: Vec<Value> = self
            .diff
            .rules
            .iter()
            .map(|c| {
                let (change, side, id) = match c {
                    RuleChange::Removed(id) => ("removed", self.old, *id),
                    RuleChange::Added(id) => ("added", self.new, *id),
                };
                let r = &side.policy.rules[id.0 as usize];
                let (line, _) = self.line_col(side.file, r.span.start);
                json!({
                    "change": change,
                    "action": diff::action_name(r.action),
                    "label": r.label,
                    "text": r.identity,
                    "file": side.name,
                    "line": line,
                })
            })
            .collect();
        let v = json!({
            "old": self.old.name,
            "new": self.new.name,
            "verdict_changes": self.diff.verdict_changes(),
            "regions": regions,
            "options": options,
            "rules": rules,
        });
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    }

    fn markdown_decision(&self, side: &LoadedPolicy, d: Decision) -> String {
        let mut s = format!(
            "**{}** {}",
            diff::verdict_name(d.verdict()),
            decision_text(&side.policy, d)
        );
        if let Some(r) = d.rule().and_then(|id| side.policy.rules.get(id.0 as usize)) {
            let (line, _) = self.line_col(side.file, r.span.start);
            let _ = write!(s, " (line {line})");
        }
        md_cell(&s)
    }

    pub fn markdown(&self) -> String {
        let mut describer = Describer::new(MAX_ITEMS);
        let mut out = format!(
            "### Policy diff: `{}` → `{}`\n\n{}.\n",
            self.old.name,
            self.new.name,
            self.summary()
        );
        if !self.diff.regions.is_empty() {
            out.push_str("\n| Change | Packets | Example | Old | New |\n|---|---|---|---|---|\n");
            for r in self.diff.regions.iter().take(MAX_MARKDOWN_ROWS) {
                let change = if changes_verdict(r) {
                    arrow(r)
                } else {
                    "decision".to_string()
                };
                let _ = writeln!(
                    out,
                    "| {} | `{}` | `{}` | {} | {} |",
                    md_cell(&change),
                    md_cell(&describer.matcher(r)),
                    md_cell(&example_text(r)),
                    self.markdown_decision(self.old, r.decisions[0]),
                    self.markdown_decision(self.new, r.decisions[1]),
                );
            }
            if self.diff.regions.len() > MAX_MARKDOWN_ROWS {
                let _ = writeln!(
                    out,
                    "\n… and {} more regions (`patronusc diff --format json` lists all).",
                    self.diff.regions.len() - MAX_MARKDOWN_ROWS
                );
            }
        }
        if !self.diff.options.is_empty() {
            out.push_str("\n**Option, rate and logging changes**\n\n| Setting | Old | New |\n|---|---|---|\n");
            for o in &self.diff.options {
                let _ = writeln!(
                    out,
                    "| {} | `{}` | `{}` |",
                    md_cell(&o.name),
                    md_cell(&o.old),
                    md_cell(&o.new)
                );
            }
        }
        let rules = self.rule_lines();
        if !rules.is_empty() {
            out.push_str("\n**Rules**\n\n");
            for l in rules {
                let _ = writeln!(out, "- {}", md_cell(&l));
            }
        }
        if self.diff.is_empty() {
            out.push_str("\nNo change in behaviour.\n");
        }
        out
    }

    pub fn github(&self) -> String {
        let mut out = render::github(self.files, &self.diagnostics());
        for l in self.option_lines() {
            let _ = writeln!(
                out,
                "::notice title=option changed::{}",
                l.replace('%', "%25").replace('\n', "%0A")
            );
        }
        out
    }

    /// `test` blocks pinning the new verdict of every reported region.
    pub fn tests(&self) -> String {
        let mut describer = Describer::new(MAX_ITEMS);
        let mut body = String::new();
        for r in &self.diff.regions {
            let Some(p) = regions::example(r) else {
                continue;
            };
            let _ = writeln!(
                body,
                "  # {} (was {})",
                describer.matcher(r),
                diff::verdict_name(r.decisions[0].verdict())
            );
            let _ = writeln!(
                body,
                "  expect {} {}",
                diff::verdict_name(r.decisions[1].verdict()),
                regions::packet_text(&p)
            );
        }
        if body.is_empty() {
            return String::new();
        }
        format!(
            "test \"behaviour changed from {}\" {{\n{body}}}\n",
            self.old.name.replace('"', "'")
        )
    }
}

/// One field of a region in full, for JSON.
fn field_text(describer: &Describer, r: &Region, dim: Dim, set: &regions::Ranges) -> String {
    match dim {
        Dim::Src | Dim::Dst => describer.addrs(r.family, set),
        Dim::SrcPort | Dim::DstPort => describer.ports(set),
        _ => {
            let mut one = Region {
                family: r.family,
                fields: std::array::from_fn(|_| FieldSet::Any),
                decisions: Vec::new(),
            };
            one.fields[Dim::ALL.iter().position(|d| *d == dim).unwrap_or(0)] =
                FieldSet::Set(set.clone());
            let mut d = Describer::new(0);
            let text = d.matcher(&one);
            text.split_once(' ')
                .map_or(text.clone(), |(_, rest)| rest.to_string())
        }
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
