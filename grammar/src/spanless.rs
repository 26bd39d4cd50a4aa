//! Comparing trees by meaning rather than position: [`erase_spans`] sets
//! every span to zero and drops comments, so two parses of differently laid
//! out text compare equal exactly when they say the same thing.

use crate::ast::*;

/// A copy of `policy` with all spans zeroed and no comments.
pub fn erase_spans(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    p.comments.clear();
    for item in &mut p.items {
        erase_item(item);
    }
    p
}

fn erase_item(item: &mut Item) {
    match item {
        Item::Interface(i) => {
            i.span = Span::default();
            ident(&mut i.name);
        }
        Item::Const(c) => {
            c.span = Span::default();
            ident(&mut c.name);
            expr(&mut c.value);
        }
        Item::Table(t) => {
            t.span = Span::default();
            ident(&mut t.name);
            match &mut t.source {
                TableSource::Inline(e) => expr(e),
                TableSource::File(s) => s.span = Span::default(),
            }
        }
        Item::Options(o) => {
            o.span = Span::default();
            for e in &mut o.entries {
                e.span = Span::default();
                ident(&mut e.key);
                if let Some(s) = &mut e.sub {
                    ident(s);
                }
                e.value.span = Span::default();
            }
        }
        Item::Rule(r) => rule(r),
        Item::Test(t) => {
            t.span = Span::default();
            t.name.span = Span::default();
            for s in &mut t.steps {
                s.span = Span::default();
                packet(&mut s.packet);
            }
        }
    }
}

fn rule(r: &mut Rule) {
    r.span = Span::default();
    r.action_span = Span::default();
    for f in &mut r.fields {
        f.span = Span::default();
        match &mut f.kind {
            MatchFieldKind::Proto(_) | MatchFieldKind::Family(_) => {}
            MatchFieldKind::ProtoExpr(e) | MatchFieldKind::Vlan(e) => expr(e),
            MatchFieldKind::From { addrs, port } | MatchFieldKind::To { addrs, port } => {
                addrs.iter_mut().for_each(expr);
                port.iter_mut().for_each(expr);
            }
            MatchFieldKind::IcmpType { ty, code } => {
                expr(ty);
                code.iter_mut().for_each(expr);
            }
            MatchFieldKind::Flags { set, mask } => {
                ident(set);
                mask.iter_mut().for_each(ident);
            }
        }
    }
    if let Some(rate) = &mut r.rate {
        rate.span = Span::default();
        rate.count_span = Span::default();
        if let Some(b) = &mut rate.burst {
            b.1 = Span::default();
        }
        rate.per.iter_mut().for_each(ident);
    }
    for m in &mut r.mods {
        match m {
            Modifier::Label(s) => s.span = Span::default(),
            Modifier::Log(s) => *s = Span::default(),
        }
    }
}

fn packet(p: &mut PacketSpec) {
    p.span = Span::default();
    for e in [&mut p.src, &mut p.dst] {
        e.span = Span::default();
        if let Some(port) = &mut e.port {
            port.1 = Span::default();
        }
    }
    p.flags.iter_mut().for_each(ident);
    p.icmp_type.iter_mut().for_each(expr);
    p.icmp_code.iter_mut().for_each(expr);
    for n in [&mut p.vlan, &mut p.repeat].into_iter().flatten() {
        n.1 = Span::default();
    }
}

fn ident(i: &mut Ident) {
    i.span = Span::default();
}

fn expr(e: &mut Expr) {
    e.span = Span::default();
    match &mut e.kind {
        ExprKind::Set(items) => items.iter_mut().for_each(expr),
        ExprKind::Not(inner) => expr(inner),
        _ => {}
    }
}
