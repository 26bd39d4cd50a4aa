//! The registry of diagnostic codes: every error and lint the compiler can
//! report, with its stable code, name, default severity and explanation
//! (`patronusc explain-code CODE`). Codes are never reused or renumbered.
//!
//! P00xx are errors, P01xx are warnings (lints), P02xx report behaviour
//! changes (`patronusc diff`, `snapshot --check`).

use crate::diag::Severity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    // Errors
    Syntax,
    UnknownConst,
    UnknownTable,
    WrongKind,
    FamilyMix,
    PortRange,
    CidrLength,
    TableFile,
    TableLine,
    RateZero,
    DuplicateName,
    DuplicateField,
    BadOption,
    BadPacket,
    ExpansionLimit,
    KernelLimit,
    ProgramLimit,
    // Warnings
    HostBits,
    DuplicateRule,
    ShadowedRule,
    UnusedConst,
    UnusedTable,
    NdpDropped,
    UnreachableLimit,
    // Behaviour changes
    VerdictChanged,
    DecisionChanged,
    SnapshotMismatch,
}

pub struct CodeInfo {
    pub code: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    /// One line: what the code is about.
    pub summary: &'static str,
    /// The explanation page (markdown): why, an example, how to fix.
    pub explanation: &'static str,
}

impl Code {
    pub const ALL: &'static [Code] = &[
        Code::Syntax,
        Code::UnknownConst,
        Code::UnknownTable,
        Code::WrongKind,
        Code::FamilyMix,
        Code::PortRange,
        Code::CidrLength,
        Code::TableFile,
        Code::TableLine,
        Code::RateZero,
        Code::DuplicateName,
        Code::DuplicateField,
        Code::BadOption,
        Code::BadPacket,
        Code::HostBits,
        Code::DuplicateRule,
        Code::ShadowedRule,
        Code::UnusedConst,
        Code::UnusedTable,
        Code::NdpDropped,
        Code::UnreachableLimit,
        // Appended, not in code order: SARIF's ruleIndex of the others stays.
        Code::ExpansionLimit,
        Code::KernelLimit,
        Code::VerdictChanged,
        Code::DecisionChanged,
        Code::SnapshotMismatch,
        Code::ProgramLimit,
    ];

    pub fn info(self) -> CodeInfo {
        use Severity::{Error, Warning};
        let (code, name, severity, summary, explanation) = match self {
            Code::Syntax => (
                "P0001",
                "syntax",
                Error,
                "the text is not valid policy syntax",
                include_str!("../explain/P0001.md"),
            ),
            Code::UnknownConst => (
                "P0002",
                "unknown-const",
                Error,
                "a `$name` that no `const` defines",
                include_str!("../explain/P0002.md"),
            ),
            Code::UnknownTable => (
                "P0003",
                "unknown-table",
                Error,
                "an `@name` that no `table` defines",
                include_str!("../explain/P0003.md"),
            ),
            Code::WrongKind => (
                "P0004",
                "wrong-kind",
                Error,
                "a value of the wrong kind for where it is used",
                include_str!("../explain/P0004.md"),
            ),
            Code::FamilyMix => (
                "P0005",
                "family-mix",
                Error,
                "IPv4 and IPv6 mixed where one family is required",
                include_str!("../explain/P0005.md"),
            ),
            Code::PortRange => (
                "P0006",
                "port-range",
                Error,
                "a port outside 0-65535 or an empty range",
                include_str!("../explain/P0006.md"),
            ),
            Code::CidrLength => (
                "P0007",
                "cidr-length",
                Error,
                "a CIDR prefix length out of range",
                include_str!("../explain/P0007.md"),
            ),
            Code::TableFile => (
                "P0008",
                "table-file",
                Error,
                "a table file that is missing or unreadable",
                include_str!("../explain/P0008.md"),
            ),
            Code::TableLine => (
                "P0009",
                "table-line",
                Error,
                "a line of a table file that is not an address or CIDR",
                include_str!("../explain/P0009.md"),
            ),
            Code::RateZero => (
                "P0010",
                "rate-zero",
                Error,
                "a rate or burst of 0",
                include_str!("../explain/P0010.md"),
            ),
            Code::DuplicateName => (
                "P0011",
                "duplicate-name",
                Error,
                "a const, table or test name defined twice",
                include_str!("../explain/P0011.md"),
            ),
            Code::DuplicateField => (
                "P0012",
                "duplicate-field",
                Error,
                "a match field or option given twice",
                include_str!("../explain/P0012.md"),
            ),
            Code::BadOption => (
                "P0013",
                "bad-option",
                Error,
                "an unknown option or a bad option value",
                include_str!("../explain/P0013.md"),
            ),
            Code::BadPacket => (
                "P0014",
                "bad-packet",
                Error,
                "a test packet that cannot be built",
                include_str!("../explain/P0014.md"),
            ),
            Code::ExpansionLimit => (
                "P0015",
                "expansion-limit",
                Error,
                "consts nested too deeply or expanding to too many elements",
                include_str!("../explain/P0015.md"),
            ),
            Code::KernelLimit => (
                "P0016",
                "kernel-limit",
                Error,
                "a policy too large for the kernel's verifier or to compile",
                include_str!("../explain/P0016.md"),
            ),
            Code::ProgramLimit => (
                "P0017",
                "program-limit",
                Error,
                "the generated program exceeds a kernel limit at a rule",
                include_str!("../explain/P0017.md"),
            ),
            Code::HostBits => (
                "P0101",
                "host-bits",
                Warning,
                "a CIDR with host bits set",
                include_str!("../explain/P0101.md"),
            ),
            Code::DuplicateRule => (
                "P0102",
                "duplicate-rule",
                Warning,
                "a rule that another rule already makes redundant",
                include_str!("../explain/P0102.md"),
            ),
            Code::ShadowedRule => (
                "P0103",
                "shadowed-rule",
                Warning,
                "an allow that a deny fully covers, so it never passes anything",
                include_str!("../explain/P0103.md"),
            ),
            Code::UnusedConst => (
                "P0104",
                "unused-const",
                Warning,
                "a const that no rule uses",
                include_str!("../explain/P0104.md"),
            ),
            Code::UnusedTable => (
                "P0105",
                "unused-table",
                Warning,
                "a table that no rule uses",
                include_str!("../explain/P0105.md"),
            ),
            Code::NdpDropped => (
                "P0106",
                "ndp-dropped",
                Warning,
                "IPv6 is allowed but neighbor discovery is dropped",
                include_str!("../explain/P0106.md"),
            ),
            Code::UnreachableLimit => (
                "P0107",
                "unreachable-limit",
                Warning,
                "a limit that no allow rule could ever reach",
                include_str!("../explain/P0107.md"),
            ),
            Code::VerdictChanged => (
                "P0201",
                "verdict-changed",
                Warning,
                "packets whose verdict a policy change flips (`patronusc diff`)",
                include_str!("../explain/P0201.md"),
            ),
            Code::DecisionChanged => (
                "P0202",
                "decision-changed",
                Warning,
                "packets decided by another phase or rule after a change (`diff --all`)",
                include_str!("../explain/P0202.md"),
            ),
            Code::SnapshotMismatch => (
                "P0203",
                "snapshot-mismatch",
                Error,
                "the policy no longer behaves as its verdict snapshot records",
                include_str!("../explain/P0203.md"),
            ),
        };
        CodeInfo {
            code,
            name,
            severity,
            summary,
            explanation,
        }
    }

    /// Looks a code up by its number (`P0103`) or its name (`shadowed-rule`).
    pub fn lookup(text: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| {
            let info = c.info();
            info.code.eq_ignore_ascii_case(text) || info.name == text
        })
    }
}
