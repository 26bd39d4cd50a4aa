//! One open document, analysed: the compiler's check (the same call and
//! table loader as `patronusc check`), the syntax tree, and where each
//! `$const` and `@table` is defined and used. Recomputed from the text on
//! every request: policies are small and checking is fast, so there is no
//! cache to keep in step with edits.

use patronus_compiler::diag::{FileId, Files};
use patronus_compiler::{Checked, check};
use patronus_grammar::ast::{self, Span};
use patronus_grammar::lexer::{self, Tok};

use crate::common::TableFiles;

/// The two kinds of names a policy defines and refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    Const,
    Table,
}

impl SymbolKind {
    pub fn sigil(self) -> char {
        match self {
            SymbolKind::Const => '$',
            SymbolKind::Table => '@',
        }
    }
}

/// A name under the cursor: a definition's name or a `$x`/`@x` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub kind: SymbolKind,
    pub name: String,
    /// The name's span as written (with the sigil for a reference).
    pub span: Span,
}

pub struct Analysis {
    pub files: Files,
    pub file: FileId,
    pub checked: Checked,
    pub ast: ast::Policy,
    /// Every token of the text (comments left out).
    pub tokens: Vec<lexer::Spanned>,
}

impl Analysis {
    /// Checks `text` as the policy named `name` (its path when the document
    /// is a file, so `table NAME file "PATH"` resolves beside it).
    pub fn new(name: &str, text: &str) -> Analysis {
        let mut files = Files::new();
        let file = files.add(name, text);
        // Table files from the policy's own tree only, as `check` without
        // `--allow-path`.
        let checked = check(&mut files, file, &TableFiles::default());
        let (ast, _) = patronus_grammar::parse(text);
        let tokens = lexer::lex(text).tokens;
        Analysis {
            files,
            file,
            checked,
            ast,
            tokens,
        }
    }

    pub fn text(&self) -> &str {
        &self.files.get(self.file).text
    }

    /// The name at `offset` (a cursor just past a name still counts).
    pub fn symbol_at(&self, offset: usize) -> Option<Symbol> {
        let at = |span: Span| span.start <= offset && offset <= span.end;
        for (l, tok, r) in &self.tokens {
            let span = Span::new(*l, *r);
            if !at(span) {
                continue;
            }
            match tok {
                Tok::ConstRef(name) => return Some(symbol(SymbolKind::Const, name, span)),
                Tok::TableRef(name) => return Some(symbol(SymbolKind::Table, name, span)),
                _ => {}
            }
        }
        self.definitions().into_iter().find(|d| at(d.span))
    }

    /// Every definition, in file order.
    pub fn definitions(&self) -> Vec<Symbol> {
        self.ast
            .items
            .iter()
            .filter_map(|item| match item {
                ast::Item::Const(c) => Some(symbol(SymbolKind::Const, &c.name.name, c.name.span)),
                ast::Item::Table(t) => Some(symbol(SymbolKind::Table, &t.name.name, t.name.span)),
                _ => None,
            })
            .collect()
    }

    /// The first definition of a name (a second one is a P0010 error).
    pub fn definition(&self, kind: SymbolKind, name: &str) -> Option<Symbol> {
        self.definitions()
            .into_iter()
            .find(|d| d.kind == kind && d.name == name)
    }

    /// Every `$name` or `@name` reference, in file order.
    pub fn references(&self, kind: SymbolKind, name: &str) -> Vec<Span> {
        self.tokens
            .iter()
            .filter_map(|(l, tok, r)| {
                let found = match (kind, tok) {
                    (SymbolKind::Const, Tok::ConstRef(n))
                    | (SymbolKind::Table, Tok::TableRef(n)) => n == name,
                    _ => false,
                };
                found.then(|| Span::new(*l, *r))
            })
            .collect()
    }

    pub fn const_def(&self, name: &str) -> Option<&ast::ConstDef> {
        self.ast.items.iter().find_map(|item| match item {
            ast::Item::Const(c) if c.name.name == name => Some(c),
            _ => None,
        })
    }

    pub fn table_def(&self, name: &str) -> Option<&ast::TableDef> {
        self.ast.items.iter().find_map(|item| match item {
            ast::Item::Table(t) if t.name.name == name => Some(t),
            _ => None,
        })
    }

    /// How many values a constant stands for once the constants it names
    /// are expanded (`None` when it names one that is missing or cyclic).
    pub fn const_size(&self, name: &str) -> Option<usize> {
        let mut visiting = Vec::new();
        self.const_size_inner(name, &mut visiting)
    }

    fn const_size_inner(&self, name: &str, visiting: &mut Vec<String>) -> Option<usize> {
        // Depth is bounded by the number of constants (a cycle stops).
        if visiting.iter().any(|v| v == name) {
            return None;
        }
        let def = self.const_def(name)?;
        visiting.push(name.to_string());
        let size = self.expr_size(&def.value, visiting);
        visiting.pop();
        size
    }

    fn expr_size(&self, expr: &ast::Expr, visiting: &mut Vec<String>) -> Option<usize> {
        match &expr.kind {
            ast::ExprKind::Set(items) => items.iter().try_fold(0usize, |n, e| {
                Some(n.saturating_add(self.expr_size(e, visiting)?))
            }),
            ast::ExprKind::ConstRef(name) => self.const_size_inner(name, visiting),
            _ => Some(1),
        }
    }
}

fn symbol(kind: SymbolKind, name: &str, span: Span) -> Symbol {
    Symbol {
        kind,
        name: name.to_string(),
        span,
    }
}
