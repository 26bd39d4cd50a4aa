//! The tokens of the policy language (logos). Addresses are single tokens
//! (an IPv6 address is full of colons, so it cannot be assembled from
//! punctuation later); whether a token is a valid address is decided here,
//! so `999.1.1.1` is a lexical error pointing at itself.

use std::net::IpAddr;

use logos::Logos;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LexError {
    #[default]
    UnexpectedChar,
    NumberTooLarge,
    BadAddress(String),
    BadDuration,
    UnterminatedString,
}

impl LexError {
    pub fn message(&self, slice: &str) -> String {
        match self {
            LexError::UnexpectedChar => format!("unexpected character `{}`", slice.escape_debug()),
            LexError::NumberTooLarge => format!("number `{slice}` is too large"),
            LexError::BadAddress(why) => format!("`{slice}` is not a valid address: {why}"),
            LexError::BadDuration => format!("duration `{slice}` is too large"),
            LexError::UnterminatedString => "unterminated string".to_string(),
        }
    }
}

#[derive(Logos, Clone, Debug, PartialEq, Eq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(error = LexError)]
pub enum Tok {
    #[regex(r"#[^\n]*")]
    Comment,

    #[token("interface")]
    Interface,
    #[token("const")]
    Const,
    #[token("table")]
    Table,
    #[token("file")]
    File,
    #[token("options")]
    Options,
    #[token("allow")]
    Allow,
    #[token("deny")]
    Deny,
    #[token("limit")]
    Limit,
    #[token("test")]
    Test,
    #[token("expect")]
    Expect,
    #[token("out")]
    Out,
    #[token("from")]
    From,
    #[token("to")]
    To,
    #[token("port")]
    Port,
    #[token("any")]
    Any,
    #[token("proto")]
    Proto,
    #[token("tcp")]
    Tcp,
    #[token("udp")]
    Udp,
    #[token("icmp")]
    Icmp,
    #[token("icmpv6")]
    Icmpv6,
    #[token("ip4")]
    Ip4,
    #[token("ip6")]
    Ip6,
    #[token("type")]
    Type,
    #[token("code")]
    Code,
    #[token("flags")]
    Flags,
    #[token("vlan")]
    Vlan,
    #[token("rate")]
    Rate,
    #[token("burst")]
    Burst,
    #[token("per")]
    Per,
    #[token("label")]
    Label,
    #[token("log")]
    Log,
    #[token("repeat")]
    Repeat,
    #[token("pass")]
    Pass,
    #[token("drop")]
    Drop,

    #[regex(r"[A-Za-z_][A-Za-z0-9_-]*", |lex| lex.slice().to_string())]
    Ident(String),
    #[regex(r"\$[A-Za-z_][A-Za-z0-9_-]*", |lex| lex.slice()[1..].to_string())]
    ConstRef(String),
    #[regex(r"@[A-Za-z_][A-Za-z0-9_-]*", |lex| lex.slice()[1..].to_string())]
    TableRef(String),
    #[regex(r"[0-9]+", |lex| lex.slice().parse::<u64>().map_err(|_| LexError::NumberTooLarge))]
    Number(u64),
    /// Milliseconds.
    #[regex(r"[0-9]+(ms|s|m|h|d)", duration)]
    Duration(u64),
    #[regex(r#""([^"\\\n]|\\.)*""#, string)]
    #[regex(r#""([^"\\\n]|\\.)*"#, |_| Err(LexError::UnterminatedString), priority = 1)]
    Str(String),
    #[regex(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/[0-9]+)?", address)]
    // Must start with hex digits and a colon, or `::`: logos does not back
    // out of a longer candidate, so a lone `:` (as in `192.0.2.1:80`) must
    // never look like the start of an IPv6 address.
    #[regex(r"([0-9A-Fa-f]+:|::)[0-9A-Fa-f:.]*(/[0-9]+)?", address)]
    Addr((IpAddr, Option<u32>)),

    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token(",")]
    Comma,
    #[token("=")]
    Eq,
    #[token("!")]
    Bang,
    #[token("-")]
    Minus,
    #[token("/")]
    Slash,
    #[token(":")]
    Colon,
    #[token("->")]
    Arrow,

    /// Stands in for text that did not lex, so the statement around it
    /// fails to parse where the bad text is.
    Error,
}

fn duration(lex: &mut logos::Lexer<Tok>) -> Result<u64, LexError> {
    let s = lex.slice();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits_end].parse().map_err(|_| LexError::BadDuration)?;
    let unit_ms: u64 = match &s[digits_end..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => 86_400_000,
    };
    n.checked_mul(unit_ms).ok_or(LexError::BadDuration)
}

fn string(lex: &mut logos::Lexer<Tok>) -> String {
    let s = lex.slice();
    let inner = &s[1..s.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn address(lex: &mut logos::Lexer<Tok>) -> Result<(IpAddr, Option<u32>), LexError> {
    parse_address(lex.slice()).map_err(LexError::BadAddress)
}

/// Parses `ADDR` or `ADDR/LEN` (the length unchecked).
pub fn parse_address(text: &str) -> Result<(IpAddr, Option<u32>), String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (
            a,
            Some(
                l.parse::<u32>()
                    .map_err(|_| format!("prefix length `{l}` is too large"))?,
            ),
        ),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| {
        if addr.contains(':') {
            "not an IPv6 address".to_string()
        } else {
            "not an IPv4 address (four numbers 0-255)".to_string()
        }
    })?;
    Ok((ip, len))
}

/// A token with its byte span, or a lexical error with its span.
pub type Spanned = (usize, Tok, usize);

/// Lexes the whole source: tokens, comments (kept apart for the
/// formatter), and lexical errors.
pub fn lex(source: &str) -> Lexed {
    let mut out = Lexed::default();
    let mut lexer = Tok::lexer(source);
    while let Some(result) = lexer.next() {
        let span = lexer.span();
        match result {
            Ok(Tok::Comment) => out.comments.push(span.clone()),
            Ok(tok) => out.tokens.push((span.start, tok, span.end)),
            Err(e) => {
                out.errors
                    .push((span.start, e.message(lexer.slice()), span.end));
                out.tokens.push((span.start, Tok::Error, span.end));
            }
        }
    }
    out
}

#[derive(Default, Debug)]
pub struct Lexed {
    pub tokens: Vec<Spanned>,
    pub comments: Vec<std::ops::Range<usize>>,
    pub errors: Vec<(usize, String, usize)>,
}

impl Tok {
    /// Words that start a statement: parsing recovers at them.
    pub fn starts_statement(&self) -> bool {
        matches!(
            self,
            Tok::Interface
                | Tok::Const
                | Tok::Table
                | Tok::Options
                | Tok::Allow
                | Tok::Deny
                | Tok::Limit
                | Tok::Test
        )
    }
}
