//! The Patronus policy language's syntax: a logos lexer, a lalrpop grammar
//! and the AST with byte spans. Parsing never stops at the first error: it
//! recovers at the next statement keyword so one run reports many errors.

pub mod ast;

/// A syntax error with the span it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub span: ast::Span,
    /// What the parser would have accepted there, as shown to users
    /// (`"port"`, `an address`, ...); may be empty.
    pub expected: Vec<String>,
}

/// Parses a whole policy file. Always returns a policy (with the statements
/// that parsed) and the syntax errors of those that did not.
pub fn parse(source: &str) -> (ast::Policy, Vec<ParseError>) {
    let _ = source;
    todo!("grammar")
}

/// Parses one test packet (§7 syntax), as `patronusc explain` takes it on the
/// command line: `tcp 192.0.2.1:40000 -> 198.51.100.2:22 flags S`.
pub fn parse_packet(source: &str) -> Result<ast::PacketSpec, ParseError> {
    let _ = source;
    todo!("grammar")
}
