//! The Patronus policy language's syntax: a logos lexer, a lalrpop grammar
//! and the AST with byte spans. Parsing never stops at the first error: the
//! token stream is split into statements at statement keywords and each is
//! parsed on its own, so one run reports an error per broken statement.

pub mod ast;
pub mod fmt;
pub mod lexer;
pub mod print;
pub mod spanless;
mod support;

use lalrpop_util::{ParseError as LrError, lalrpop_mod};

use ast::Span;
use lexer::Tok;
use support::UserError;

lalrpop_mod!(
    #[allow(clippy::all, clippy::pedantic, unused_parens, dead_code)]
    grammar,
    "/policy.rs"
);

/// A syntax error with the span it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub span: ast::Span,
    /// What the parser would have accepted there, as shown to users
    /// (`` `port` ``, `an address`, ...); may be empty.
    pub expected: Vec<String>,
}

/// Parses a whole policy file. Always returns a policy (with the statements
/// that parsed) and the syntax errors of those that did not.
pub fn parse(source: &str) -> (ast::Policy, Vec<ParseError>) {
    let lexed = lexer::lex(source);
    let mut policy = ast::Policy {
        items: Vec::new(),
        comments: lexed
            .comments
            .iter()
            .map(|r| ast::Comment {
                text: source[r.start + 1..r.end]
                    .trim_end_matches('\r')
                    .to_string(),
                span: Span::new(r.start, r.end),
            })
            .collect(),
    };
    let mut errors = Vec::new();
    let parser = grammar::StatementParser::new();
    for chunk in split_statements(&lexed.tokens) {
        if let Some(&(l, _, r)) = chunk.iter().find(|t| t.1 == Tok::Error) {
            // The lexer already explained what is wrong with this text.
            if let Some((_, msg, _)) = lexed.errors.iter().find(|e| e.0 == l) {
                errors.push(ParseError {
                    message: msg.clone(),
                    span: Span::new(l, r),
                    expected: Vec::new(),
                });
            }
            continue;
        }
        if let Some(span) = too_deep(chunk) {
            errors.push(ParseError {
                message: format!("values nested more than {MAX_NESTING} levels deep"),
                span,
                expected: Vec::new(),
            });
            continue;
        }
        let end = chunk.last().map_or(source.len(), |t| t.2);
        match parser.parse(chunk.iter().cloned()) {
            Ok(item) => policy.items.push(item),
            Err(e) => errors.push(convert_error(e, source, end)),
        }
    }
    (policy, errors)
}

/// How deeply `{ }` sets and `!` may nest. Real policies use two or three
/// levels; the limit keeps every recursive walk over values (printing,
/// checking, dropping) far from the stack's end on hostile input.
pub const MAX_NESTING: usize = 32;

/// The span of the first token that nests values deeper than
/// [`MAX_NESTING`], if any.
fn too_deep(tokens: &[lexer::Spanned]) -> Option<Span> {
    let mut depth = 0usize;
    let mut bangs = 0usize;
    for (l, tok, r) in tokens {
        match tok {
            Tok::LBrace => depth += 1,
            Tok::RBrace => depth = depth.saturating_sub(1),
            _ => {}
        }
        bangs = if *tok == Tok::Bang { bangs + 1 } else { 0 };
        if depth + bangs > MAX_NESTING {
            return Some(Span::new(*l, *r));
        }
    }
    None
}

/// Parses one test packet (§7 syntax), as `patronusc explain` takes it on the
/// command line: `tcp 192.0.2.1:40000 -> 198.51.100.2:22 flags S`.
pub fn parse_packet(source: &str) -> Result<ast::PacketSpec, ParseError> {
    let lexed = lexer::lex(source);
    if let Some((l, msg, r)) = lexed.errors.first() {
        return Err(ParseError {
            message: msg.clone(),
            span: Span::new(*l, *r),
            expected: Vec::new(),
        });
    }
    if let Some(span) = too_deep(&lexed.tokens) {
        return Err(ParseError {
            message: format!("values nested more than {MAX_NESTING} levels deep"),
            span,
            expected: Vec::new(),
        });
    }
    grammar::PacketSpecParser::new()
        .parse(lexed.tokens)
        .map_err(|e| convert_error(e, source, source.len()))
}

/// Splits the token stream before every statement keyword at brace depth 0.
/// Keywords that can never appear inside braces also split at any depth (an
/// unclosed `{` must not swallow the rest of the file); `allow`/`deny` inside
/// braces are option values (`default = deny`) unless not preceded by `=`.
fn split_statements(tokens: &[lexer::Spanned]) -> Vec<&[lexer::Spanned]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    for (i, (_, tok, _)) in tokens.iter().enumerate() {
        let split = tok.starts_statement()
            && (depth == 0
                || match tok {
                    Tok::Allow | Tok::Deny => i > 0 && tokens[i - 1].1 != Tok::Eq,
                    _ => true,
                });
        if split {
            if i > start {
                chunks.push(&tokens[start..i]);
            }
            start = i;
            depth = 0;
        }
        match tok {
            Tok::LBrace => depth += 1,
            Tok::RBrace => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if start < tokens.len() {
        chunks.push(&tokens[start..]);
    }
    chunks
}

fn convert_error(e: LrError<usize, Tok, UserError>, source: &str, end: usize) -> ParseError {
    match e {
        LrError::InvalidToken { location } => ParseError {
            message: "invalid token".to_string(),
            span: Span::new(location, location + 1),
            expected: Vec::new(),
        },
        LrError::UnrecognizedEof { location, expected } => {
            let at = location.max(end);
            ParseError {
                message: "this statement ends too early".to_string(),
                span: Span::new(at, at),
                expected: pretty_expected(&expected),
            }
        }
        LrError::UnrecognizedToken {
            token: (l, _, r),
            expected,
        } => ParseError {
            message: format!("unexpected `{}`", &source[l..r]),
            span: Span::new(l, r),
            expected: pretty_expected(&expected),
        },
        LrError::ExtraToken { token: (l, _, r) } => ParseError {
            message: format!("unexpected `{}`", &source[l..r]),
            span: Span::new(l, r),
            expected: Vec::new(),
        },
        LrError::User { error } => ParseError {
            message: error.message,
            span: error.span,
            expected: Vec::new(),
        },
    }
}

/// lalrpop names terminals by their grammar spelling (`"\"port\""`,
/// `"address"`); users read `` `port` `` and `an address`.
fn pretty_expected(expected: &[String]) -> Vec<String> {
    let mut out: Vec<String> = expected
        .iter()
        .map(|t| {
            let t = t.trim_matches('"');
            match t {
                "name" => "a name".to_string(),
                "$const" => "a `$const`".to_string(),
                "@table" => "a `@table`".to_string(),
                "number" => "a number".to_string(),
                "duration" => "a duration (`30s`, `5m`, `2h`, `5d`)".to_string(),
                "string" => "a string".to_string(),
                "address" => "an address".to_string(),
                other => format!("`{}`", other.replace("\\\"", "\"")),
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}
