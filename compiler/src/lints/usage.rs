//! Which consts and tables a policy uses, for unused-const and
//! unused-table.
//!
//! "Used" means reachable from a rule or a test: a const or table that
//! only unused definitions refer to is unused too (removing the unused
//! ones would leave it dangling), and its warning names who refers to it.

use std::collections::{BTreeSet, HashMap};

use patronus_grammar::ast::{self, Expr, ExprKind, Ident};

/// A const or table name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Name<'a> {
    Const(&'a str),
    Table(&'a str),
}

/// A definition nothing reachable uses.
pub struct Unused<'a> {
    pub ident: &'a Ident,
    /// Unused definitions that refer to it, in file order.
    pub referenced_by: Vec<&'a str>,
}

pub struct Usage<'a> {
    pub consts: Vec<Unused<'a>>,
    pub tables: Vec<Unused<'a>>,
}

pub fn analyse(policy: &ast::Policy) -> Usage<'_> {
    // Each definition's name and the names its value refers to. With
    // duplicate names (an error) this lint does not run, so the first wins.
    let mut defs: Vec<(Name, &Ident, Vec<Name>)> = Vec::new();
    let mut roots: Vec<Name> = Vec::new();
    for item in &policy.items {
        match item {
            ast::Item::Const(c) => {
                let mut refs = Vec::new();
                collect(&c.value, &mut refs);
                defs.push((Name::Const(&c.name.name), &c.name, refs));
            }
            ast::Item::Table(t) => {
                let mut refs = Vec::new();
                if let ast::TableSource::Inline(e) = &t.source {
                    collect(e, &mut refs);
                }
                defs.push((Name::Table(&t.name.name), &t.name, refs));
            }
            ast::Item::Rule(r) => {
                for f in &r.fields {
                    field_exprs(&f.kind, &mut |e| collect(e, &mut roots));
                }
            }
            ast::Item::Test(t) => {
                for step in &t.steps {
                    let p = &step.packet;
                    for e in p.icmp_type.iter().chain(&p.icmp_code) {
                        collect(e, &mut roots);
                    }
                }
            }
            ast::Item::Interface(_) | ast::Item::Options(_) => {}
        }
    }
    let by_name: HashMap<Name, usize> = defs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, d)| (d.0, i))
        .collect();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let mut work: Vec<Name> = roots;
    while let Some(name) = work.pop() {
        if let Some(&i) = by_name.get(&name)
            && used.insert(i)
        {
            work.extend(defs[i].2.iter().copied());
        }
    }
    // Who refers to each name, in file order, each definition once: built
    // once (asking every definition about every unused name was quadratic:
    // 47 s for 50,000 unused consts).
    let mut referrers: HashMap<Name, Vec<usize>> = HashMap::new();
    for (i, (_, _, refs)) in defs.iter().enumerate() {
        for name in refs {
            let list = referrers.entry(*name).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }
    let mut usage = Usage {
        consts: Vec::new(),
        tables: Vec::new(),
    };
    for (i, (name, ident, _)) in defs.iter().enumerate() {
        if used.contains(&i) {
            continue;
        }
        let referenced_by = referrers
            .get(name)
            .into_iter()
            .flatten()
            .map(|&j| match defs[j].0 {
                Name::Const(n) | Name::Table(n) => n,
            })
            .collect();
        let unused = Unused {
            ident,
            referenced_by,
        };
        match name {
            Name::Const(_) => usage.consts.push(unused),
            Name::Table(_) => usage.tables.push(unused),
        }
    }
    usage
}

fn field_exprs<'a>(kind: &'a ast::MatchFieldKind, visit: &mut impl FnMut(&'a Expr)) {
    use ast::MatchFieldKind as K;
    match kind {
        K::ProtoExpr(e) | K::Vlan(e) => visit(e),
        K::From { addrs, port } | K::To { addrs, port } => {
            addrs.iter().chain(port).for_each(visit);
        }
        K::IcmpType { ty, code } => {
            visit(ty);
            code.iter().for_each(visit);
        }
        K::Proto(_) | K::Family(_) | K::Flags { .. } => {}
    }
}

fn collect<'a>(e: &'a Expr, out: &mut Vec<Name<'a>>) {
    match &e.kind {
        ExprKind::ConstRef(n) => out.push(Name::Const(n)),
        ExprKind::TableRef(n) => out.push(Name::Table(n)),
        ExprKind::Set(items) => items.iter().for_each(|i| collect(i, out)),
        ExprKind::Not(inner) => collect(inner, out),
        _ => {}
    }
}
