//! The front end after parsing: turns syntax errors into diagnostics,
//! resolves `$const` and `@table` names, loads table files, type-checks
//! rules, options and tests into a [`typed::Policy`], then runs the lints.
//!
//! Every problem becomes a [`Diagnostic`]; checking goes on after an error
//! so that one run reports as much as it can, but a policy with any error
//! yields no typed policy.

mod budget;
mod consts;
mod names;
mod options;
mod packets;
mod resolve;
mod rules;
mod tables;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use patronus_grammar::ast::{self, Span};

use crate::codes::Code;
use crate::diag::{Diagnostic, FileId, Files, Label, Severity};
use crate::typed::{self, TableId};
use crate::{Checked, TableLoader};

/// How many name comparisons "did you mean" suggestions may make in all.
const SUGGEST_BUDGET: usize = 4_000_000;

/// The state of one check: where diagnostics go and what names mean.
pub(crate) struct Checker<'a> {
    /// The policy file.
    pub file: FileId,
    /// Its text (rules' identities are cut out of it).
    pub source: &'a str,
    pub diagnostics: Vec<Diagnostic>,
    /// The first definition of each const.
    pub consts: HashMap<&'a str, &'a ast::ConstDef>,
    /// The first definition of each table, by name.
    pub tables: HashMap<&'a str, TableId>,
    /// The first definitions of tables in file order: `TableId(i)` is
    /// `table_defs[i]`.
    pub table_defs: Vec<&'a ast::TableDef>,
    /// `$const` uses already reported as the wrong kind.
    pub kind_reported: HashSet<Span>,
    /// Whether the file had syntax errors: a name used but not defined may
    /// then be defined by a statement that did not parse.
    pub syntax_errors: bool,
    /// What [`Checker::analyse_consts`] found about each const.
    pub const_facts: HashMap<&'a str, consts::ConstFacts>,
    /// Elements all values so far took from consts.
    pub expanded_total: u64,
    /// Set once [`crate::limits::MAX_EXPANDED_TOTAL`] was passed (and said).
    pub expansion_exhausted: bool,
    /// Bytes of table files read so far.
    pub table_bytes: u64,
    /// Candidates "did you mean" may still compare names with: each unknown
    /// name is compared with every const or table, so twenty thousand of
    /// each took minutes. When it runs out, help says how to define it.
    pub suggest_budget: usize,
    /// `(keyword, name)` of every `const NAME` / `table NAME` in the text,
    /// found once (see [`Checker::defined_in_broken_statement`]).
    broken_definitions: Option<HashSet<(&'static str, &'a str)>>,
}

impl<'a> Checker<'a> {
    pub fn new(file: FileId, source: &'a str) -> Self {
        Checker {
            file,
            source,
            diagnostics: Vec::new(),
            consts: HashMap::new(),
            tables: HashMap::new(),
            table_defs: Vec::new(),
            kind_reported: HashSet::new(),
            syntax_errors: false,
            const_facts: HashMap::new(),
            expanded_total: 0,
            expansion_exhausted: false,
            table_bytes: 0,
            suggest_budget: SUGGEST_BUDGET,
            broken_definitions: None,
        }
    }

    /// A label in the policy file.
    pub fn label(&self, span: Span, message: impl Into<String>) -> Label {
        Label::new(self.file, span, message)
    }

    /// A diagnostic whose primary label is in the policy file.
    pub fn error(
        &self,
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(code, message, self.label(span, label))
    }

    pub fn emit(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// Whether `keyword NAME` appears in the text, as in a `const` or
    /// `table` statement that did not parse: reporting its uses as unknown
    /// would only repeat the syntax error.
    ///
    /// The text is scanned once, for both keywords, the first time this is
    /// asked (scanning it for every unknown name was quadratic).
    pub fn defined_in_broken_statement(&mut self, keyword: &'static str, name: &str) -> bool {
        if !self.syntax_errors {
            return false;
        }
        let source = self.source;
        let found = self.broken_definitions.get_or_insert_with(|| {
            let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            let mut found = HashSet::new();
            for keyword in ["const", "table"] {
                for (at, _) in source.match_indices(keyword) {
                    let before_ok = source[..at]
                        .chars()
                        .next_back()
                        .is_none_or(|c| !is_ident(c));
                    let rest = &source[at + keyword.len()..];
                    let after_keyword = rest.trim_start();
                    if !before_ok || after_keyword.len() == rest.len() {
                        continue;
                    }
                    let end = after_keyword
                        .find(|c: char| !is_ident(c))
                        .unwrap_or(after_keyword.len());
                    if end > 0 {
                        found.insert((keyword, &after_keyword[..end]));
                    }
                }
            }
            found
        });
        found.contains(&(keyword, name))
    }

    /// Whether a "did you mean" over `candidates` names fits what is left
    /// of [`Checker::suggest_budget`] (and takes it).
    pub fn may_suggest(&mut self, candidates: usize) -> bool {
        match self.suggest_budget.checked_sub(candidates) {
            Some(left) => {
                self.suggest_budget = left;
                true
            }
            None => false,
        }
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// See [`crate::check`].
pub(crate) fn check(files: &mut Files, file: FileId, loader: &dyn TableLoader) -> Checked {
    // Owned copies: table files are added to `files` while the policy's
    // text and name are still in use.
    let source = files.get(file).text.clone();
    let policy_name = files.get(file).name.clone();
    let (ast, parse_errors) = patronus_grammar::parse(&source);

    let mut checker = Checker::new(file, &source);
    for e in &parse_errors {
        checker.emit(syntax_error(file, e));
    }
    checker.syntax_errors = !parse_errors.is_empty();

    checker.collect_names(&ast);
    checker.analyse_consts(&ast);
    checker.check_const_definitions(&ast);
    let tables = checker.load_tables(files, &policy_name, loader);
    let options = checker.check_options(&ast);
    let interface = checker.check_interface(&ast);
    let rules = checker.check_rules(&ast);
    let tests = checker.check_tests(&ast);
    if checker.error_count() == 0 {
        // Only a policy that is otherwise sound is worth sizing.
        checker.check_budget(&rules, &tables);
    }

    let mut diagnostics = checker.diagnostics;
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    let policy = (!has_errors).then_some(typed::Policy {
        file,
        interface,
        options,
        rules,
        tables,
        tests,
    });
    if let Some(typed) = &policy {
        diagnostics.extend(crate::lints::run(&crate::lints::LintContext {
            files: &*files,
            file,
            ast: &ast,
            policy: typed,
        }));
    }
    Checked {
        policy,
        diagnostics: finish(diagnostics),
    }
}

fn syntax_error(file: FileId, e: &patronus_grammar::ParseError) -> Diagnostic {
    let label = match e.expected.as_slice() {
        [one] => format!("expected {one}"),
        _ if e.span.start == e.span.end => "the statement ends here".to_string(),
        [] => "not valid here".to_string(),
        _ => "not expected here".to_string(),
    };
    let mut d = Diagnostic::new(
        Code::Syntax,
        e.message.clone(),
        Label::new(file, e.span, label),
    );
    if e.expected.len() > 1 {
        d = d.with_help(format!("expected one of {}", e.expected.join(", ")));
    }
    d
}

/// Drops repeats (a broken const reports the same problem at each use) and
/// puts diagnostics in source order, files in the order they were read.
fn finish(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = HashSet::new();
    let mut out: Vec<Diagnostic> = diagnostics
        .into_iter()
        .filter(|d| seen.insert((d.code, d.primary.file, d.primary.span, d.message.clone())))
        .collect();
    out.sort_by_key(|d| (d.primary.file, d.primary.span.start));
    out
}
