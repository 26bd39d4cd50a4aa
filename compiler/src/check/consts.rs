//! The const graph: which consts refer to which, found once per policy
//! before any value is expanded. One iterative depth-first walk (no
//! recursion, linear in the number of consts and references) finds cycles,
//! each const's nesting depth and its size once expanded, and enforces
//! [`MAX_CONST_DEPTH`] and [`MAX_EXPANDED_ELEMENTS`]. Expanding a value
//! later only descends into consts found sound here, so it is bounded by
//! those limits too.

use std::collections::HashMap;

use patronus_grammar::ast::{self, Expr, ExprKind, Span};

use super::Checker;
use crate::codes::Code;
use crate::limits::{MAX_CONST_DEPTH, MAX_EXPANDED_ELEMENTS};

/// What the walk found out about one const.
#[derive(Clone, Copy, Debug)]
pub struct ConstFacts {
    /// Consts in the longest chain from this one (1: it uses no const).
    pub depth: usize,
    /// Elements once every const in it is expanded (saturating).
    pub size: u64,
    /// False when it is part of a cycle, over a limit, or uses a const that
    /// is (or one that does not exist): already reported, never expanded.
    pub sound: bool,
}

/// One const being walked.
struct Frame<'a> {
    def: &'a ast::ConstDef,
    /// The `$const` references in its value, in source order.
    refs: Vec<(&'a str, Span)>,
    next: usize,
    facts: ConstFacts,
    /// The reference through which the longest chain goes.
    deepest: Option<(&'a str, Span)>,
}

enum Mark {
    /// On the walk's stack: a reference to it closes a cycle.
    Active,
    Done(ConstFacts),
}

impl<'a> Checker<'a> {
    /// Walks the const graph, reporting cycles and consts over a limit,
    /// and fills [`Checker::const_facts`].
    pub fn analyse_consts(&mut self, policy: &'a ast::Policy) {
        let mut marks: HashMap<&'a str, Mark> = HashMap::new();
        for item in &policy.items {
            let ast::Item::Const(def) = item else {
                continue;
            };
            let name = def.name.name.as_str();
            let is_first = self.consts.get(name).is_some_and(|f| std::ptr::eq(*f, def));
            if !is_first || marks.contains_key(name) {
                continue;
            }
            marks.insert(name, Mark::Active);
            let mut stack = vec![frame(def)];
            while let Some(top) = stack.last_mut() {
                if let Some(&(used, span)) = top.refs.get(top.next) {
                    top.next += 1;
                    let Some(&used_def) = self.consts.get(used) else {
                        // Unknown: reported where the definition is checked.
                        top.facts.sound = false;
                        continue;
                    };
                    match marks.get(used) {
                        Some(Mark::Active) => {
                            top.facts.sound = false;
                            self.cycle(used, span, used_def);
                        }
                        Some(Mark::Done(facts)) => {
                            let facts = *facts;
                            combine(top, (used, span), facts);
                        }
                        None => {
                            marks.insert(used, Mark::Active);
                            stack.push(frame(used_def));
                        }
                    }
                    continue;
                }
                let Some(mut done) = stack.pop() else { break };
                if done.facts.sound {
                    self.check_limits(&mut done);
                }
                let name = done.def.name.name.as_str();
                marks.insert(name, Mark::Done(done.facts));
                self.const_facts.insert(name, done.facts);
                if let Some(parent) = stack.last_mut() {
                    let span = parent.refs[parent.next - 1].1;
                    combine(parent, (name, span), done.facts);
                }
            }
        }
    }

    fn cycle(&mut self, name: &str, span: Span, def: &'a ast::ConstDef) {
        let d = self
            .error(
                Code::UnknownConst,
                format!("`${name}` is defined in terms of itself"),
                span,
                "this refers back to the const being defined",
            )
            .with_secondary(self.label(def.name.span, format!("`${name}` is defined here")))
            .with_help(
                "a const can use other consts, but not itself, directly or through another const",
            );
        self.emit(d);
    }

    /// Reports a const over a limit whose parts are all within it: the
    /// one const where the limit is crossed, not every const above it.
    fn check_limits(&mut self, done: &mut Frame<'a>) {
        let name = &done.def.name.name;
        if done.facts.depth > MAX_CONST_DEPTH {
            done.facts.sound = false;
            let mut d = self
                .error(
                    Code::ExpansionLimit,
                    format!(
                        "`${name}` goes through {} consts, more than the limit of {MAX_CONST_DEPTH}",
                        done.facts.depth
                    ),
                    done.def.name.span,
                    format!("a chain of {} consts starts here", done.facts.depth),
                )
                .with_help("define the const with its values, not through a long chain of other consts");
            if let Some((via, span)) = done.deepest {
                d = d.with_secondary(
                    self.label(span, format!("the chain continues through `${via}`")),
                );
            }
            self.emit(d);
        } else if done.facts.size > MAX_EXPANDED_ELEMENTS {
            done.facts.sound = false;
            let d = self
                .error(
                    Code::ExpansionLimit,
                    format!(
                        "`${name}` expands to more than {MAX_EXPANDED_ELEMENTS} elements"
                    ),
                    done.def.name.span,
                    "this const is too large once its consts are expanded",
                )
                .with_help("list each element once (a const used twice in a set doubles it), or put the addresses in a table");
            self.emit(d);
        }
    }
}

fn frame(def: &ast::ConstDef) -> Frame<'_> {
    let mut refs = Vec::new();
    let mut leaves = 0u64;
    // Values nest at most `MAX_NESTING` deep, but a work list costs nothing.
    let mut work: Vec<&Expr> = vec![&def.value];
    while let Some(e) = work.pop() {
        match &e.kind {
            ExprKind::ConstRef(n) => refs.push((n.as_str(), e.span)),
            ExprKind::Set(items) => work.extend(items.iter().rev()),
            ExprKind::Not(inner) => work.push(inner),
            _ => leaves += 1,
        }
    }
    Frame {
        def,
        refs,
        next: 0,
        facts: ConstFacts {
            depth: 1,
            size: leaves,
            sound: true,
        },
        deepest: None,
    }
}

fn combine<'a>(parent: &mut Frame<'a>, via: (&'a str, Span), child: ConstFacts) {
    if !child.sound {
        parent.facts.sound = false;
        return;
    }
    if child.depth + 1 > parent.facts.depth {
        parent.facts.depth = child.depth + 1;
        parent.deepest = Some(via);
    }
    parent.facts.size = parent.facts.size.saturating_add(child.size);
}
