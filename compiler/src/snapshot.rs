//! Verdict snapshots (`POLICY.snap`): a policy's behaviour as reviewable
//! text. Every region of the packet space (see [`crate::regions`]) on one
//! line with its verdict, its match in policy terms and the deciding rule
//! (by label or text, never by line number, so unrelated edits leave the
//! snapshot alone); then the stateful settings no region shows (options,
//! rates). Lines are sorted: the text is canonical, deterministic, and a
//! behaviour change is a line-level diff. Comparing is line-level too, and
//! each line is in policy terms, so the mismatch report is as well.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use patronus_grammar::ast::Span;

use crate::codes::Code;
use crate::diag::{Diagnostic, FileId, Label};
use crate::diff::{self, Describer, decision_text, verdict_name};
use crate::ir::Program;
use crate::regions::{self, Side};
use crate::typed::Policy;

/// The first line of every snapshot (the format's version).
pub const HEADER: &str = "# patronusc verdict snapshot v1";

/// The snapshot text of a checked and lowered policy. `name` is the policy
/// path as shown in the header comment.
pub fn render(name: &str, policy: &Policy, program: &Program) -> String {
    let side = Side { policy, program };
    let regions = regions::regions_canonical(side);
    let mut describer = Describer::new(0);
    let mut lines: BTreeSet<String> = BTreeSet::new();
    for r in &regions {
        let d = r.decisions[0];
        lines.insert(format!(
            "{} {}  => {}",
            verdict_name(d.verdict()),
            describer.matcher(r),
            decision_text(policy, d)
        ));
    }
    let mut out = String::new();
    let _ = writeln!(out, "{HEADER}");
    let _ = writeln!(
        out,
        "# {name}: every region of the packet space (a new flow, rate limits not"
    );
    let _ = writeln!(
        out,
        "# exceeded) with its verdict and deciding rule, then the stateful settings."
    );
    let _ = writeln!(
        out,
        "# Written by `patronusc snapshot`; check with `patronusc snapshot --check`."
    );
    for line in &lines {
        let _ = writeln!(out, "{line}");
    }
    for line in stateful_lines(policy) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Options and per-rule rates: `option conntrack = on`, `rate "ssh" = ...`.
fn stateful_lines(policy: &Policy) -> Vec<String> {
    let o = &policy.options;
    let on = |b: bool| if b { "on" } else { "off" };
    let pass = |b: bool| if b { "pass" } else { "drop" };
    let t = o.timeouts;
    let mut v = vec![
        format!("option conntrack = {}", on(o.conntrack)),
        format!("option conntrack-size = {}", o.conntrack_size),
        format!("option ratelimit-size = {}", o.ratelimit_size),
        format!("option arp = {}", pass(o.arp_pass)),
        format!(
            "option fragments = {}",
            if o.fragments_drop { "drop" } else { "pass" }
        ),
        format!("option log-rate = {}", o.log_rate),
        format!(
            "option timeouts = tcp-syn {} tcp-established {} tcp-closing {} tcp-rst {} udp {} udp-stream {} icmp {}",
            secs(t.tcp_syn),
            secs(t.tcp_established),
            secs(t.tcp_closing),
            secs(t.tcp_rst),
            secs(t.udp),
            secs(t.udp_stream),
            secs(t.icmp)
        ),
    ];
    let mut rates: Vec<String> = policy
        .rules
        .iter()
        .filter_map(|r| {
            r.rate.map(|rate| {
                format!(
                    "rate {} {} = {}",
                    diff::action_name(r.action),
                    diff::rule_title(r),
                    diff::rate_text(&rate)
                )
            })
        })
        .collect();
    rates.sort();
    v.extend(rates);
    v
}

fn secs(ns: u64) -> String {
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else {
        format!("{}ms", ns / 1_000_000)
    }
}

/// How a stored snapshot differs from the current one: the lines only in
/// the stored one (with their 1-based line numbers there) and the lines
/// only in the current one. Comments are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    pub removed: Vec<(usize, String)>,
    pub added: Vec<String>,
}

impl Mismatch {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

pub fn compare(stored: &str, current: &str) -> Mismatch {
    let content = |text: &str| -> Vec<(usize, String)> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
            .map(|(i, l)| (i + 1, l.trim_end().to_string()))
            .collect()
    };
    let (old, new) = (content(stored), content(current));
    let old_set: BTreeSet<&str> = old.iter().map(|(_, l)| l.as_str()).collect();
    let new_set: BTreeSet<&str> = new.iter().map(|(_, l)| l.as_str()).collect();
    let mut m = Mismatch {
        removed: old
            .iter()
            .filter(|(_, l)| !new_set.contains(l.as_str()))
            .cloned()
            .collect(),
        added: new
            .iter()
            .filter(|(_, l)| !old_set.contains(l.as_str()))
            .map(|(_, l)| l.clone())
            .collect(),
    };
    // A stored snapshot of another format version is a mismatch as a whole.
    if !stored.starts_with(HEADER) && m.is_empty() {
        m.removed
            .push((1, stored.lines().next().unwrap_or("").to_string()));
    }
    m
}

/// P0203 on the first stored line that no longer holds (in `snap_file`,
/// which holds `stored`), with every removed (`-`) and added (`+`) line
/// as notes.
pub fn mismatch_diagnostic(
    policy_name: &str,
    snap_file: FileId,
    snap_name: &str,
    stored: &str,
    m: &Mismatch,
) -> Diagnostic {
    let line_span = |line: usize| {
        let start: usize = stored
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum();
        let start = start.min(stored.len());
        let len = stored[start..].find('\n').unwrap_or(stored.len() - start);
        Span::new(start, start + len)
    };
    let primary = match m.removed.first() {
        Some((line, _)) => Label::new(snap_file, line_span(*line), "no longer holds"),
        None => Label::new(snap_file, line_span(1), "the policy now has more regions"),
    };
    let mut d = Diagnostic::new(
        Code::SnapshotMismatch,
        format!("{policy_name} no longer matches {snap_name}"),
        primary,
    )
    .with_help(format!(
        "if the change is intended: `patronusc snapshot --update {policy_name}`"
    ));
    for (_, l) in &m.removed {
        d = d.with_note(format!("- {l}"));
    }
    for l in &m.added {
        d = d.with_note(format!("+ {l}"));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_ignores_comments_and_reports_lines() {
        let a = format!("{HEADER}\n# x\npass a\ndrop b\n");
        let b = format!("{HEADER}\n# y\npass a\npass b\n");
        let m = compare(&a, &b);
        assert_eq!(m.removed, vec![(4, "drop b".to_string())]);
        assert_eq!(m.added, vec!["pass b".to_string()]);
        assert!(compare(&a, &a).is_empty());
        assert!(!compare("pass a\n", &format!("{HEADER}\npass a\n")).is_empty());
    }
}
