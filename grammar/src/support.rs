//! Small pieces the grammar's actions use.

use std::net::IpAddr;

use lalrpop_util::ParseError;

use crate::ast::{Endpoint, Expr, Ident, Span};
use crate::lexer::Tok;

/// An error raised by a grammar action (not by the LR automaton).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserError {
    pub span: Span,
    pub message: String,
}

impl UserError {
    pub fn new(l: usize, r: usize, message: impl Into<String>) -> Self {
        UserError {
            span: Span::new(l, r),
            message: message.into(),
        }
    }
}

/// One trailing option of a test packet, before they are folded together.
pub enum PacketOpt {
    Flags(Ident),
    Type(Expr, Option<Expr>),
    Vlan((u64, Span)),
    Repeat((u64, Span)),
}

pub type ActionResult<T> = Result<T, ParseError<usize, Tok, UserError>>;

pub fn endpoint(
    addr: (IpAddr, Option<u32>),
    port: Option<(u64, Span)>,
    l: usize,
    r: usize,
) -> ActionResult<Endpoint> {
    if addr.1.is_some() {
        return Err(ParseError::User {
            error: UserError::new(l, r, "a test packet needs a single address, not a CIDR"),
        });
    }
    Ok(Endpoint {
        addr: addr.0,
        port,
        span: Span::new(l, r),
    })
}
