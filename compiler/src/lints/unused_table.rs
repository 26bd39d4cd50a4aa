//! P0105 unused-table: a `table` that no rule uses.
//!
//! A table that is loaded but never matched is often a rule that was
//! meant to reference it (`deny from @blocklist`) and was deleted or
//! misspelled: the addresses the author wanted blocked are not.

use super::LintContext;
use super::usage;
use crate::codes::Code;
use crate::diag::Diagnostic;

pub fn check(ctx: &LintContext) -> Vec<Diagnostic> {
    usage::analyse(ctx.ast)
        .tables
        .iter()
        .map(|u| super::unused_const::diagnose(ctx, u, "table", '@', Code::UnusedTable))
        .collect()
}
