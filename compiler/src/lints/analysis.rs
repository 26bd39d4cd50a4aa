//! What the rule lints share: every rule's packets as boxes, and which
//! allow/limit rules the denies shadow (the shadowed-rule lint reports
//! them; duplicate-rule and unreachable-limit stay quiet about them so a
//! rule gets one warning, the most important).
//!
//! [`Analysis::of`] computes this once per [`super::run`]: `run` keeps the
//! result for the policy it is linting while the lints run, and a lint
//! called on its own computes it afresh.

use std::cell::RefCell;
use std::rc::Rc;

use patronus_grammar::ast::Action;

use super::cover::{Index, PacketBox, Space, boxes_covered, union_covers};
use crate::typed;

/// The rule-set facts the rule lints share.
pub struct Analysis {
    /// The packets each rule matches, indexed like `policy.rules`.
    pub boxes: Vec<Vec<PacketBox>>,
    /// Every shadowed allow/limit rule, in file order.
    pub shadowed: Vec<Shadowed>,
    /// The deny rules' boxes.
    pub denies: Index,
}

thread_local! {
    /// The analysis of the policy [`super::run`] is linting (by address).
    static CURRENT: RefCell<Option<(*const typed::Policy, Rc<Analysis>)>> = const { RefCell::new(None) };
}

impl Analysis {
    fn compute(policy: &typed::Policy) -> Analysis {
        let boxes = rule_boxes(policy);
        let denies = index_of(policy, &boxes, Action::Deny);
        let shadowed = shadowed(policy, &boxes, &denies);
        Analysis {
            boxes,
            shadowed,
            denies,
        }
    }

    /// The denies that together drop every packet of `target`, or `None`
    /// if they do not (or that would take too long to decide).
    pub fn denied(&self, target: &[PacketBox]) -> Option<Vec<usize>> {
        shadowing_denies(&self.denies, &self.boxes, target)
    }

    /// The analysis of `policy`: the one [`Analysis::during`] keeps, or a
    /// fresh one.
    pub fn of(policy: &typed::Policy) -> Rc<Analysis> {
        let kept = CURRENT.with(|c| {
            c.borrow()
                .as_ref()
                .filter(|(p, _)| std::ptr::eq(*p, policy))
                .map(|(_, a)| a.clone())
        });
        kept.unwrap_or_else(|| Rc::new(Analysis::compute(policy)))
    }

    /// Runs `f` with the analysis of `policy` computed once and kept for
    /// [`Analysis::of`]; forgets it afterwards.
    pub fn during<R>(policy: &typed::Policy, f: impl FnOnce() -> R) -> R {
        /// Restores the previous analysis even if a lint panics, so a later
        /// policy at the same address never sees this one's.
        struct Restore(Option<(*const typed::Policy, Rc<Analysis>)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.replace(self.0.take()));
            }
        }
        let analysis = Rc::new(Analysis::compute(policy));
        let _restore = Restore(CURRENT.with(|c| c.replace(Some((policy as *const _, analysis)))));
        f()
    }
}

/// The packets each rule matches, indexed like `policy.rules`.
pub fn rule_boxes(policy: &typed::Policy) -> Vec<Vec<PacketBox>> {
    let space = Space::new(&policy.tables, !policy.options.fragments_drop);
    policy
        .rules
        .iter()
        .map(|r| space.boxes(&r.matcher))
        .collect()
}

/// An index over the boxes of the rules with `action`.
pub fn index_of(policy: &typed::Policy, boxes: &[Vec<PacketBox>], action: Action) -> Index {
    Index::new(
        policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.action == action)
            .flat_map(|(i, _)| boxes[i].iter().map(move |b| (i, b.clone())))
            .collect(),
    )
}

/// An allow or limit rule that the denies drop every packet of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadowed {
    /// Index into `policy.rules`.
    pub rule: usize,
    /// The denies that together cover it (one when a single deny does).
    pub by: Vec<usize>,
}

/// Every shadowed allow/limit rule, in file order.
fn shadowed(policy: &typed::Policy, boxes: &[Vec<PacketBox>], denies: &Index) -> Vec<Shadowed> {
    let mut out = Vec::new();
    for (rule, r) in policy.rules.iter().enumerate() {
        if r.action == Action::Deny || boxes[rule].is_empty() {
            continue;
        }
        if let Some(by) = shadowing_denies(denies, boxes, &boxes[rule]) {
            out.push(Shadowed { rule, by });
        }
    }
    out
}

/// How many denies covering a box are looked at (see
/// [`Index::covering_at_most`]).
const MAX_CANDIDATES: usize = 64;

/// The denies covering all of `target`, or `None` if they do not (or that
/// would take too long to decide).
fn shadowing_denies(
    denies: &Index,
    boxes: &[Vec<PacketBox>],
    target: &[PacketBox],
) -> Option<Vec<usize>> {
    // One deny covering the whole rule makes the clearest message.
    let first = target.first()?;
    for entry in denies.covering_at_most(first, MAX_CANDIDATES) {
        let deny = denies.entry(entry).0;
        if boxes_covered(target, &boxes[deny]) {
            return Some(vec![deny]);
        }
    }
    let mut by = Vec::new();
    for b in target {
        let found = denies.covering_at_most(b, MAX_CANDIDATES);
        if let Some(&entry) = found.first() {
            by.push(denies.entry(entry).0);
            continue;
        }
        if !denies.may_cover(b) {
            return None;
        }
        let touching = denies.intersecting(b);
        let candidates: Vec<&PacketBox> = touching.iter().map(|&e| &denies.entry(e).1).collect();
        let used = union_covers(b, &candidates)?;
        by.extend(used.into_iter().map(|k| denies.entry(touching[k]).0));
    }
    by.sort_unstable();
    by.dedup();
    Some(by)
}

/// `allow`, `allow ... rate`, `deny` or `limit`: how messages name a rule.
pub fn describe(rule: &typed::Rule) -> &'static str {
    match (rule.action, rule.rate.is_some()) {
        (Action::Allow, false) => "allow",
        (Action::Allow, true) => "allow ... rate",
        (Action::Deny, _) => "deny",
        (Action::Limit, _) => "limit",
    }
}
