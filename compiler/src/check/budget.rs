//! What a typed policy will cost the kernel and the compiler, estimated
//! before anything is lowered, so that a policy too large to load stops at
//! `check` (exit 1) instead of after minutes and gigabytes of lowering and
//! a verifier refusal.
//!
//! Two estimates, both from the rules' sizes alone (one pass, no bitmaps):
//!
//! - The XDP program's verification. Each rule adds its own leaf (a bit test
//!   and a jump to its action) that the verifier walks; measured on Linux
//!   6.18 at 17.8–18.2 processed instructions per rule for 5,000–20,000
//!   rules of one address and one port, so [`VERIFIED_PER_RULE`] = 16 is a
//!   lower bound: a policy refused here would certainly be refused by the
//!   kernel's limit of [`MAX_VERIFIED_INSNS`].
//! - The classifier bitmaps lowering builds: each distinct value a phase's
//!   rules match on (and every entry of a table they use) gets one bitmap
//!   of one bit per rule of the phase, so n rules of distinct addresses cost
//!   n² / 8 bytes (100,000 rules: 1.25 GB per field).
//!
//! Each limit is blamed on the rule from which on the policy is over it.

use std::collections::HashSet;

use patronus_grammar::ast::Action;

use super::Checker;
use crate::codes::Code;
use crate::net::{PortRange, Prefix};
use crate::typed::{IcmpMatch, Rule, Table, TableId};

/// The kernel's limit on instructions the verifier processes per program.
pub const MAX_VERIFIED_INSNS: u64 = 1_000_000;

/// A lower bound of the verifier's work per rule (see the module doc).
pub const VERIFIED_PER_RULE: u64 = 16;

/// The most bytes of classifier bitmaps lowering may build: with the rest
/// of lowering and code generation, compiling stays within a few GB.
pub const MAX_BITMAP_BYTES: u64 = 512 << 20;

/// The distinct values one phase's rules match on, per field.
#[derive(Default)]
struct PhaseValues {
    rules: u64,
    src: HashSet<Prefix>,
    dst: HashSet<Prefix>,
    tables_src: HashSet<TableId>,
    tables_dst: HashSet<TableId>,
    table_entries: u64,
    src_ports: HashSet<PortRange>,
    dst_ports: HashSet<PortRange>,
    other: HashSet<(u8, IcmpMatch)>,
}

impl PhaseValues {
    fn add(&mut self, rule: &Rule, tables: &[Table]) {
        self.rules += 1;
        let m = &rule.matcher;
        for (addr, set, used) in [
            (&m.src, &mut self.src, &mut self.tables_src),
            (&m.dst, &mut self.dst, &mut self.tables_dst),
        ] {
            if let Some(a) = addr {
                set.extend(a.set.prefixes.iter().copied());
                for t in &a.set.tables {
                    if used.insert(*t) {
                        self.table_entries += tables
                            .get(t.0 as usize)
                            .map_or(0, |t| t.prefixes.len() as u64);
                    }
                }
            }
        }
        for (ports, set) in [
            (&m.src_ports, &mut self.src_ports),
            (&m.dst_ports, &mut self.dst_ports),
        ] {
            if let Some(p) = ports {
                set.extend(p.ranges.iter().copied());
            }
        }
        if let Some(icmp) = &m.icmp {
            self.other.extend(icmp.iter().map(|i| (0, *i)));
        }
        if let Some(protos) = &m.protos {
            let as_match = |p: u8| IcmpMatch { ty: p, code: None };
            self.other.extend(protos.iter().map(|p| (1, as_match(*p))));
        }
    }

    /// Bytes of bitmaps: (entries + 1 default) per field, one bit per rule.
    fn bitmap_bytes(&self) -> u64 {
        let words = self.rules.div_ceil(64);
        let entries = [
            self.src.len() as u64,
            self.dst.len() as u64,
            self.table_entries,
            // A port range is two boundaries in a range map.
            2 * self.src_ports.len() as u64,
            2 * self.dst_ports.len() as u64,
            self.other.len() as u64,
        ];
        entries
            .iter()
            .filter(|&&e| e > 0)
            .map(|e| (e + 1).saturating_mul(words).saturating_mul(8))
            .fold(0u64, u64::saturating_add)
    }
}

impl Checker<'_> {
    /// Reports a policy whose program the kernel would refuse, or whose
    /// lowering would take more than [`MAX_BITMAP_BYTES`] of bitmaps.
    pub fn check_budget(&mut self, rules: &[Rule], tables: &[Table]) {
        // Deny, limit (rate-limited allows too) and allow phases.
        let mut phases: [PhaseValues; 3] = Default::default();
        let mut bitmap_blame: Option<(usize, u64)> = None;
        let mut verifier_blame: Option<usize> = None;
        for (i, rule) in rules.iter().enumerate() {
            let verified = (i as u64 + 1) * VERIFIED_PER_RULE;
            if verified > MAX_VERIFIED_INSNS && verifier_blame.is_none() {
                verifier_blame = Some(i);
            }
            let phase = match rule.action {
                Action::Deny => 0,
                Action::Limit => 1,
                Action::Allow => 2,
            };
            phases[phase].add(rule, tables);
            if rule.rate.is_some() && rule.action == Action::Allow {
                phases[1].add(rule, tables);
            }
            if bitmap_blame.is_none() {
                // Only the phases this rule changed changed: cheap to redo.
                let bytes = phases
                    .iter()
                    .map(PhaseValues::bitmap_bytes)
                    .fold(0u64, u64::saturating_add);
                if bytes > MAX_BITMAP_BYTES {
                    bitmap_blame = Some((i, bytes));
                }
            }
            if bitmap_blame.is_some() && verifier_blame.is_some() {
                break;
            }
        }
        let total = rules.len() as u64;
        if let Some(i) = verifier_blame {
            let estimate = total * VERIFIED_PER_RULE;
            let d = self
                .error(
                    Code::KernelLimit,
                    format!(
                        "the policy's {total} rules need at least {estimate} instructions verified, over the kernel's limit of {MAX_VERIFIED_INSNS}"
                    ),
                    rules[i].span,
                    format!("rule {} and every rule after it are past the limit", i + 1),
                )
                .with_note(format!(
                    "the verifier walks at least {VERIFIED_PER_RULE} instructions per rule: at most {} rules fit",
                    MAX_VERIFIED_INSNS / VERIFIED_PER_RULE
                ))
                .with_help("merge rules that share an action into one rule with sets, or move addresses into tables (a table costs the verifier nothing per entry)");
            self.emit(d);
        }
        if let Some((i, bytes)) = bitmap_blame {
            let d = self
                .error(
                    Code::KernelLimit,
                    format!(
                        "compiling this policy would take more than {} MiB of rule bitmaps",
                        MAX_BITMAP_BYTES >> 20
                    ),
                    rules[i].span,
                    format!(
                        "the rules up to this one need {} MiB",
                        bytes.div_ceil(1 << 20)
                    ),
                )
                .with_note("every distinct address, port or table entry the rules match on gets a bitmap with one bit per rule of its phase: the cost grows with rules × values")
                .with_help("merge rules that share an action into one rule with sets, or match many addresses with one rule and a table");
            self.emit(d);
        }
    }
}
