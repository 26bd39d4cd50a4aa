//! Diagnostics as data. Every stage of the compiler reports problems as
//! [`Diagnostic`] values carrying a stable [`Code`] and spans into
//! [`Files`]; only the CLI turns them into text (human, JSON, SARIF, GitHub).

use patronus_grammar::ast::Span;

/// Index of a source file in [`Files`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub usize);

/// One source file: the policy or a table file it pulled in.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name diagnostics show (the path as given or resolved).
    pub name: String,
    pub text: String,
}

/// Every file a compilation read, so diagnostics can point into any of them.
#[derive(Clone, Debug, Default)]
pub struct Files {
    files: Vec<SourceFile>,
}

impl Files {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.push(SourceFile {
            name: name.into(),
            text: text.into(),
        });
        FileId(self.files.len() - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0]
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i), f))
    }

    /// 1-based (line, column) of a byte offset; columns count characters.
    pub fn line_col(&self, id: FileId, offset: usize) -> (usize, usize) {
        let text = &self.get(id).text;
        let offset = offset.min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A place in a file with a message about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub file: FileId,
    pub span: Span,
    pub message: String,
}

impl Label {
    pub fn new(file: FileId, span: Span, message: impl Into<String>) -> Self {
        Label {
            file,
            span,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: crate::codes::Code,
    pub severity: Severity,
    /// One line: what is wrong.
    pub message: String,
    /// Where it is wrong (underlined with `^`).
    pub primary: Label,
    /// Related places: the first definition of a duplicate, the deny that
    /// shadows an allow, ...
    pub secondary: Vec<Label>,
    /// How to fix it, where there is a fix.
    pub help: Option<String>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic with the code's default severity.
    pub fn new(code: crate::codes::Code, message: impl Into<String>, primary: Label) -> Self {
        Diagnostic {
            code,
            severity: code.info().severity,
            message: message.into(),
            primary,
            secondary: Vec::new(),
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn with_secondary(mut self, label: Label) -> Self {
        self.secondary.push(label);
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// A syntax error as a diagnostic (`P0001`): the one conversion, used by
/// `check` and by `fmt` (which refuses to format text that does not parse).
pub fn syntax_diagnostic(file: FileId, error: &patronus_grammar::ParseError) -> Diagnostic {
    let label = if error.span.start == error.span.end {
        "the statement ends here".to_string()
    } else {
        "not expected here".to_string()
    };
    let mut d = Diagnostic::new(
        crate::codes::Code::Syntax,
        error.message.clone(),
        Label::new(file, error.span, label),
    );
    match error.expected.as_slice() {
        [] => {}
        [one] => d.help = Some(format!("expected {one}")),
        many => {
            let (last, rest) = many.split_last().unwrap_or((&many[0], &[]));
            d.help = Some(format!("expected one of {} or {last}", rest.join(", ")));
        }
    }
    d
}

/// A kernel limit the generated program exceeds (`P0017`), blamed on the
/// rule at `rule_span`: the code generator reports it as data (what, and
/// the rule's id); `build` and `apply` find the rule's span in the typed
/// policy and show this.
pub fn program_limit_diagnostic(file: FileId, rule_span: Span, what: &str) -> Diagnostic {
    Diagnostic::new(
        crate::codes::Code::ProgramLimit,
        format!("the generated program exceeds a limit of the kernel: {what}"),
        Label::new(file, rule_span, "the program is over the limit from this rule on"),
    )
    .with_help("merge rules that share an action into one rule with sets, or move addresses into tables (a table is one lookup, whatever its size)")
}
