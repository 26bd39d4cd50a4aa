//! P0101 host-bits: a CIDR whose address has bits set past the prefix
//! length, like `10.1.2.3/8`.
//!
//! The compiler clears them (the rule means `10.0.0.0/8`), but the author
//! probably meant either the network or the single host `10.1.2.3`: a typo
//! in the length turns one host into sixteen million. Checked in the policy
//! (every address expression) and in table files (every line).

use std::collections::BTreeSet;
use std::net::IpAddr;

use patronus_grammar::ast::{self, Expr, ExprKind, Span};

use super::LintContext;
use crate::codes::Code;
use crate::diag::{Diagnostic, FileId, Label};
use crate::net::{self, Prefix};

pub fn check(ctx: &LintContext) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut exprs = Vec::new();
    for item in &ctx.ast.items {
        collect_item_exprs(item, &mut exprs);
    }
    for expr in exprs {
        walk(expr, &mut |e| {
            if let ExprKind::Addr {
                ip,
                prefix: Some(len),
            } = &e.kind
                && let Some(d) = diagnose(ctx.file, e.span, *ip, *len)
            {
                out.push(d);
            }
        });
    }
    // A table file may back several tables (and be read once for each):
    // warn about it once.
    let files: BTreeSet<FileId> = ctx
        .policy
        .tables
        .iter()
        .filter_map(|t| t.source_file)
        .collect();
    let mut seen_names = BTreeSet::new();
    for file in files {
        if !seen_names.insert(&ctx.files.get(file).name) {
            continue;
        }
        let text = &ctx.files.get(file).text;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if let Some((start, ip, len)) = parse_cidr_line(line) {
                let token_len = line[start..]
                    .split(['#'])
                    .next()
                    .map_or(0, |t| t.trim_end().len());
                let span = Span::new(offset + start, offset + start + token_len);
                out.extend(diagnose(file, span, ip, len));
            }
            offset += line.len();
        }
    }
    out
}

/// The expressions of an item that can hold addresses.
fn collect_item_exprs<'a>(item: &'a ast::Item, out: &mut Vec<&'a Expr>) {
    match item {
        ast::Item::Const(c) => out.push(&c.value),
        ast::Item::Table(t) => {
            if let ast::TableSource::Inline(e) = &t.source {
                out.push(e);
            }
        }
        ast::Item::Rule(r) => {
            for f in &r.fields {
                if let ast::MatchFieldKind::From { addrs, .. }
                | ast::MatchFieldKind::To { addrs, .. } = &f.kind
                {
                    out.extend(addrs);
                }
            }
        }
        ast::Item::Interface(_) | ast::Item::Options(_) | ast::Item::Test(_) => {}
    }
}

fn walk<'a>(e: &'a Expr, visit: &mut impl FnMut(&'a Expr)) {
    visit(e);
    match &e.kind {
        ExprKind::Set(items) => items.iter().for_each(|i| walk(i, visit)),
        ExprKind::Not(inner) => walk(inner, visit),
        _ => {}
    }
}

/// A table file line holding `ADDR/LEN`: the token's offset in the line,
/// the address and the length. Lines the table loader rejects are its
/// business (P0009), not this lint's.
fn parse_cidr_line(line: &str) -> Option<(usize, IpAddr, u32)> {
    let content = line.split('#').next().unwrap_or("");
    let token = content.trim();
    let (addr, len) = token.split_once('/')?;
    let len: u32 = len.trim().parse().ok()?;
    // A full-length prefix has no host bits: skip parsing the address
    // (blocklists are mostly `/32`s, and may have a million lines).
    let full = if addr.contains(':') { 128 } else { 32 };
    if len == full {
        return None;
    }
    let ip: IpAddr = addr.trim().parse().ok()?;
    let start = content.len() - content.trim_start().len();
    Some((start, ip, len))
}

fn diagnose(file: FileId, span: Span, ip: IpAddr, len: u32) -> Option<Diagnostic> {
    let len8 = u8::try_from(len).ok()?;
    let network = Prefix::new(ip, len8)?;
    if network.addr == ip {
        return None;
    }
    let host = Prefix::host(ip);
    let suggestion = if len == net::max_len(ip) {
        network.to_string()
    } else {
        format!(
            "`{network}` for the network, or `{}` for the single host",
            host.addr
        )
    };
    Some(
        Diagnostic::new(
            Code::HostBits,
            format!("`{ip}/{len}` has host bits set"),
            Label::new(file, span, format!("this means `{network}`")),
        )
        .with_help(format!("write {suggestion}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_lines() {
        let (start, ip, len) = parse_cidr_line("  10.1.2.3/8  # typo\n").unwrap();
        assert_eq!((start, ip.to_string(), len), (2, "10.1.2.3".to_string(), 8));
        assert!(parse_cidr_line("10.1.2.3\n").is_none());
        assert!(parse_cidr_line("# 10.1.2.3/8\n").is_none());
    }

    #[test]
    fn only_host_bits_warn() {
        let f = FileId(0);
        let span = Span::new(0, 1);
        assert!(diagnose(f, span, "10.0.0.0".parse().unwrap(), 8).is_none());
        assert!(diagnose(f, span, "10.0.0.1".parse().unwrap(), 32).is_none());
        assert!(diagnose(f, span, "10.0.0.1".parse().unwrap(), 40).is_none());
        let d = diagnose(f, span, "10.1.2.3".parse().unwrap(), 8).unwrap();
        assert_eq!(d.primary.message, "this means `10.0.0.0/8`");
        assert_eq!(
            d.help.as_deref(),
            Some("write `10.0.0.0/8` for the network, or `10.1.2.3` for the single host")
        );
        let d = diagnose(f, span, "2001:db8::1".parse().unwrap(), 64).unwrap();
        assert_eq!(d.primary.message, "this means `2001:db8::/64`");
    }
}
