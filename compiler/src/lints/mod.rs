//! The lints: warnings about a policy that type-checks but is probably not
//! what its author meant (LANGUAGE.md §6). One module per lint, each with
//! its code and a `check`; [`LINTS`] is the registry and [`run`] runs them
//! all on a checked policy.
//!
//! The rule lints (shadowed, duplicate, unreachable) reason on packet sets,
//! not on text: see [`cover`]. A lint that cannot decide stays quiet —
//! a false warning costs more trust than a missed one.

pub mod analysis;
pub mod cover;
pub mod duplicate_rule;
pub mod host_bits;
pub mod ndp_dropped;
pub mod shadowed_rule;
pub mod unreachable_limit;
pub mod unused_const;
pub mod unused_table;
mod usage;

use patronus_grammar::ast;

use crate::codes::Code;
use crate::diag::{Diagnostic, FileId, Files};
use crate::typed;

/// What a lint may look at: the source files, the syntax tree (for spans
/// and names as written) and the typed policy (for meaning).
pub struct LintContext<'a> {
    pub files: &'a Files,
    /// The policy file.
    pub file: FileId,
    pub ast: &'a ast::Policy,
    pub policy: &'a typed::Policy,
}

/// One lint: its diagnostic code and the check that reports it.
pub struct Lint {
    pub code: Code,
    pub check: fn(&LintContext) -> Vec<Diagnostic>,
}

/// Every lint, in code order.
pub static LINTS: &[Lint] = &[
    Lint {
        code: Code::HostBits,
        check: host_bits::check,
    },
    Lint {
        code: Code::DuplicateRule,
        check: duplicate_rule::check,
    },
    Lint {
        code: Code::ShadowedRule,
        check: shadowed_rule::check,
    },
    Lint {
        code: Code::UnusedConst,
        check: unused_const::check,
    },
    Lint {
        code: Code::UnusedTable,
        check: unused_table::check,
    },
    Lint {
        code: Code::NdpDropped,
        check: ndp_dropped::check,
    },
    Lint {
        code: Code::UnreachableLimit,
        check: unreachable_limit::check,
    },
];

/// Runs every lint; the warnings come back in source order (files in the
/// order they were read).
pub fn run(ctx: &LintContext) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = analysis::Analysis::during(ctx.policy, || {
        LINTS.iter().flat_map(|lint| (lint.check)(ctx)).collect()
    });
    out.sort_by_key(|d| (d.primary.file, d.primary.span.start, d.code));
    out
}

#[cfg(test)]
mod tests;
