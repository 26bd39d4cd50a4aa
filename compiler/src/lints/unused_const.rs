//! P0104 unused-const: a `const` that no rule or test uses.
//!
//! An unused const is usually a leftover from an edit, or a sign that a
//! rule meant to use it names something else. A const only other unused
//! definitions refer to is unused as well (the note says which).

use super::LintContext;
use super::usage::{self, Unused};
use crate::codes::Code;
use crate::diag::{Diagnostic, Label};

pub fn check(ctx: &LintContext) -> Vec<Diagnostic> {
    usage::analyse(ctx.ast)
        .consts
        .iter()
        .map(|u| diagnose(ctx, u, "const", '$', Code::UnusedConst))
        .collect()
}

/// The warning for an unused const or table (`sigil` is how uses are written).
pub(super) fn diagnose(
    ctx: &LintContext,
    unused: &Unused,
    kind: &str,
    sigil: char,
    code: Code,
) -> Diagnostic {
    let name = &unused.ident.name;
    let mut d = Diagnostic::new(
        code,
        format!("{kind} `{name}` is never used"),
        Label::new(ctx.file, unused.ident.span, "defined here"),
    )
    .with_help(format!("remove it, or refer to it as `{sigil}{name}`"));
    if !unused.referenced_by.is_empty() {
        // A few names, then a count: fifty thousand would be one long line.
        const SHOWN: usize = 5;
        let mut names: Vec<String> = unused
            .referenced_by
            .iter()
            .take(SHOWN)
            .map(|n| format!("`{n}`"))
            .collect();
        let more = unused.referenced_by.len().saturating_sub(SHOWN);
        if more > 0 {
            names.push(format!("{more} more"));
        }
        let note = match names.as_slice() {
            [one] => format!("only {one} refers to it, and it is unused too"),
            many => format!(
                "only {} refer to it, and they are unused too",
                many.join(", ")
            ),
        };
        d = d.with_note(note);
    }
    d
}
