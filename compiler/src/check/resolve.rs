//! Names: the const, table and test namespaces (duplicates, unknown names
//! with suggestions), and flattening a value through the consts it uses
//! into leaves that remember which `$const` they came through, so a kind
//! error can point both at the use and at the definition.

use std::collections::HashMap;

use patronus_grammar::ast::{self, Expr, ExprKind, Span};

use super::Checker;
use super::names;
use crate::codes::Code;
use crate::limits::quote;
use crate::typed::TableId;

/// A `$const` written in a value, with the definition it resolved to.
#[derive(Clone, Copy, Debug)]
pub struct ConstUse<'a> {
    pub name: &'a str,
    pub span: Span,
    pub def: &'a ast::ConstDef,
}

/// One element of a flattened value.
#[derive(Clone, Copy, Debug)]
pub struct Leaf<'a> {
    pub expr: &'a Expr,
    /// The outermost `$const` the element was reached through, if any.
    pub via: Option<ConstUse<'a>>,
}

impl Leaf<'_> {
    /// The span to blame at the place of use: the `$const` if the element
    /// came through one, else the element itself.
    pub fn use_span(&self) -> Span {
        self.via.map_or(self.expr.span, |u| u.span)
    }
}

/// A value with sets and consts expanded.
#[derive(Debug, Default)]
pub struct Flat<'a> {
    /// The `!` in front of the whole value, if any.
    pub negated: Option<Span>,
    pub leaves: Vec<Leaf<'a>>,
    /// False when part of the value could not be resolved (already reported).
    pub complete: bool,
}

/// Where the flattener is inside the value.
#[derive(Clone, Copy)]
struct Position<'a> {
    via: Option<ConstUse<'a>>,
    /// How many consts deep: problems inside a const's own definition are
    /// reported once, when the definition itself is checked (depth 0).
    depth: usize,
    /// At the top of the whole value (where `!` is allowed).
    top: bool,
    /// At the top of the innermost const's body.
    const_top: bool,
}

/// What a value element is, for kind consistency inside a const.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Addresses,
    Ports,
    Protocols,
    IcmpTypes,
}

impl Group {
    fn plural(self) -> &'static str {
        match self {
            Group::Addresses => "addresses",
            Group::Ports => "port ranges",
            Group::Protocols => "protocols",
            Group::IcmpTypes => "ICMP types",
        }
    }
}

impl<'a> Checker<'a> {
    /// Fills the const and table namespaces and reports duplicate const,
    /// table and test names.
    pub fn collect_names(&mut self, policy: &'a ast::Policy) {
        let mut first_table: HashMap<&str, &ast::TableDef> = HashMap::new();
        let mut first_test: HashMap<&str, &ast::TestBlock> = HashMap::new();
        for item in &policy.items {
            match item {
                ast::Item::Const(c) => match self.consts.get(c.name.name.as_str()) {
                    Some(first) => {
                        let first_span = first.name.span;
                        self.duplicate_name("const", &c.name.name, c.name.span, first_span);
                    }
                    None => {
                        self.consts.insert(&c.name.name, c);
                    }
                },
                ast::Item::Table(t) => match first_table.get(t.name.name.as_str()) {
                    Some(first) => {
                        let first_span = first.name.span;
                        self.duplicate_name("table", &t.name.name, t.name.span, first_span);
                    }
                    None => {
                        first_table.insert(&t.name.name, t);
                        let id = TableId(self.table_defs.len() as u32);
                        self.tables.insert(&t.name.name, id);
                        self.table_defs.push(t);
                    }
                },
                ast::Item::Test(t) => match first_test.get(t.name.value.as_str()) {
                    Some(first) => {
                        let first_span = first.name.span;
                        self.duplicate_name("test", &t.name.value, t.name.span, first_span);
                    }
                    None => {
                        first_test.insert(&t.name.value, t);
                    }
                },
                _ => {}
            }
        }
    }

    fn duplicate_name(&mut self, what: &str, name: &str, span: Span, first: Span) {
        let shown = match what {
            "const" => format!("${name}"),
            "table" => format!("@{name}"),
            _ => format!("\"{name}\""),
        };
        let d = self
            .error(
                Code::DuplicateName,
                format!("the {what} `{shown}` is defined twice"),
                span,
                format!("`{shown}` redefined here"),
            )
            .with_secondary(self.label(first, "first defined here"))
            .with_help(format!(
                "rename one of the two {what}s, or remove one of them"
            ));
        self.emit(d);
    }

    /// Checks what can be checked in a const without knowing where it is
    /// used: names it refers to, `!` placement, CIDR lengths, port ranges,
    /// and that its elements are all of one kind.
    pub fn check_const_definitions(&mut self, policy: &'a ast::Policy) {
        for item in &policy.items {
            let ast::Item::Const(def) = item else {
                continue;
            };
            let is_first = self
                .consts
                .get(def.name.name.as_str())
                .is_some_and(|first| std::ptr::eq(*first, def));
            if !is_first {
                continue;
            }
            let flat = self.flatten_from(&def.value, Some(def.name.name.as_str()));
            // Elements written in this const, with their kind; `None` for
            // numbers (a port, protocol or ICMP type) and `any`.
            let mut kinds: Vec<(Leaf<'a>, Option<Group>)> = Vec::new();
            for leaf in &flat.leaves {
                if !self.leaf_ok(leaf) || leaf.via.is_some() {
                    continue;
                }
                let group = match &leaf.expr.kind {
                    ExprKind::Addr { .. } | ExprKind::TableRef(_) => Some(Group::Addresses),
                    ExprKind::Range(..) => Some(Group::Ports),
                    ExprKind::Name(n) if names::protocol(n).is_some() => Some(Group::Protocols),
                    ExprKind::Name(n) if names::is_icmp_type_name(n) => Some(Group::IcmpTypes),
                    ExprKind::Name(n) => {
                        self.unknown_value_name(n, leaf.expr.span);
                        continue;
                    }
                    ExprKind::Number(_) => None,
                    _ => continue,
                };
                kinds.push((*leaf, group));
            }
            let Some((first, dominant)) = kinds
                .iter()
                .find_map(|(leaf, group)| group.map(|g| (leaf.expr.span, g)))
            else {
                continue;
            };
            for (leaf, group) in &kinds {
                let fits = match group {
                    Some(g) => *g == dominant,
                    None => dominant != Group::Addresses,
                };
                if !fits {
                    self.mixed_const(leaf, dominant, first);
                }
            }
        }
    }

    fn mixed_const(&mut self, leaf: &Leaf<'a>, group: Group, first: Span) {
        let found = self.describe(leaf.expr);
        let d = self
            .error(
                Code::WrongKind,
                format!(
                    "a const must hold values of one kind, but this one mixes {} with {found}",
                    group.plural()
                ),
                leaf.expr.span,
                format!("expected one of the {}", group.plural()),
            )
            .with_secondary(self.label(
                first,
                format!("this makes the const a set of {}", group.plural()),
            ))
            .with_help("split it into one const per kind");
        self.emit(d);
    }

    fn unknown_value_name(&mut self, name: &str, span: Span) {
        let candidates = names::PROTOCOLS
            .iter()
            .chain(names::ICMP4_TYPES)
            .chain(names::ICMP6_TYPES)
            .map(|(n, _)| *n);
        let mut d = self.error(
            Code::WrongKind,
            format!("`{name}` is not a protocol or ICMP type name"),
            span,
            "unknown name",
        );
        d = match names::suggest(name, candidates) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help("a const holds addresses, ports, protocols (`tcp`, `udp`, `icmp`, `icmpv6`, numbers) or ICMP type names"),
        };
        self.emit(d);
    }

    /// Expands sets and consts in a value used in a rule, a table or a test.
    pub fn flatten(&mut self, expr: &'a Expr) -> Flat<'a> {
        self.flatten_from(expr, None)
    }

    /// `inside`: the const whose body `expr` is. A definition is checked
    /// without expanding the consts it uses (each is checked where it is
    /// defined, and cycles and limits by [`Checker::analyse_consts`]), so
    /// checking every definition stays linear in the policy's size.
    ///
    /// A work list, not recursion: the depth is bounded by the nesting and
    /// const-depth limits anyway, but the stack is not the place to find out.
    fn flatten_from(&mut self, expr: &'a Expr, inside: Option<&'a str>) -> Flat<'a> {
        let mut flat = Flat {
            complete: true,
            ..Flat::default()
        };
        let definition = inside.is_some();
        // Elements this value takes from consts, to bound it.
        let mut from_consts = 0u64;
        let mut work: Vec<(&'a Expr, Position<'a>)> = vec![(
            expr,
            Position {
                via: None,
                depth: 0,
                top: true,
                const_top: false,
            },
        )];
        while let Some((expr, at)) = work.pop() {
            match &expr.kind {
                ExprKind::Not(inner) => {
                    if at.top {
                        flat.negated = Some(expr.span);
                    } else {
                        flat.complete = false;
                        self.misplaced_not(expr.span, at);
                    }
                    let inner_at = Position {
                        top: false,
                        const_top: false,
                        ..at
                    };
                    work.push((inner, inner_at));
                }
                ExprKind::Set(items) => {
                    let item_at = Position {
                        top: false,
                        const_top: false,
                        ..at
                    };
                    work.extend(items.iter().rev().map(|item| (item, item_at)));
                }
                ExprKind::ConstRef(name) => {
                    let Some(&def) = self.consts.get(name.as_str()) else {
                        flat.complete = false;
                        if at.depth == 0 {
                            self.unknown_const(name, expr.span);
                        }
                        continue;
                    };
                    if definition {
                        if !at.top && matches!(def.value.kind, ExprKind::Not(_)) {
                            flat.complete = false;
                            self.negated_in_set(name, expr.span, def.value.span);
                        }
                        continue;
                    }
                    // Cycles, consts over a limit and consts using those
                    // were reported where they are defined.
                    let Some(facts) = self.const_facts.get(name.as_str()).filter(|f| f.sound)
                    else {
                        flat.complete = false;
                        continue;
                    };
                    if at.depth == 0 {
                        let size = facts.size;
                        from_consts = from_consts.saturating_add(size);
                        if !self.expansion_fits(name, expr.span, size, from_consts) {
                            flat.complete = false;
                            continue;
                        }
                    }
                    let this_use = ConstUse {
                        name,
                        span: expr.span,
                        def,
                    };
                    let body_at = Position {
                        via: at.via.or(Some(this_use)),
                        depth: at.depth + 1,
                        top: at.top,
                        const_top: true,
                    };
                    work.push((&def.value, body_at));
                }
                _ => flat.leaves.push(Leaf { expr, via: at.via }),
            }
        }
        flat
    }

    /// Whether expanding `$name` (`size` elements) keeps this value, with
    /// `from_consts` elements from consts so far, and the whole policy
    /// within the expansion limits; reports the use that goes past one.
    fn expansion_fits(&mut self, name: &str, span: Span, size: u64, from_consts: u64) -> bool {
        use crate::limits::{MAX_EXPANDED_ELEMENTS, MAX_EXPANDED_TOTAL};
        if self.expansion_exhausted {
            return false;
        }
        if from_consts > MAX_EXPANDED_ELEMENTS {
            let d = self
                .error(
                    Code::ExpansionLimit,
                    format!("this value expands to more than {MAX_EXPANDED_ELEMENTS} elements"),
                    span,
                    format!("`${name}` alone holds {size}"),
                )
                .with_help("use each const once per value, or put the addresses in a table");
            self.emit(d);
            return false;
        }
        self.expanded_total = self.expanded_total.saturating_add(size);
        if self.expanded_total > MAX_EXPANDED_TOTAL {
            // Once: every later use would only repeat it.
            self.expansion_exhausted = true;
            let d = self
                .error(
                    Code::ExpansionLimit,
                    format!(
                        "the policy's values take more than {MAX_EXPANDED_TOTAL} elements from consts in total"
                    ),
                    span,
                    format!("expanding `${name}` here goes past the limit"),
                )
                .with_help("a large set used by many rules belongs in a table: rules then share it instead of each holding a copy");
            self.emit(d);
            return false;
        }
        true
    }

    /// A negated const used inside a set in another const's definition.
    fn negated_in_set(&mut self, name: &str, used: Span, not_span: Span) {
        let d = self
            .error(
                Code::WrongKind,
                format!("`${name}` is negated and cannot be used inside a set"),
                used,
                "used inside a set here",
            )
            .with_secondary(self.label(not_span, "negated here"))
            .with_help("negate the whole value instead (`!{ a, b }`), or match the exceptions with a separate rule");
        self.emit(d);
    }

    fn misplaced_not(&mut self, not_span: Span, at: Position<'a>) {
        let help = "negate the whole value instead (`!{ a, b }`), or match the exceptions with a separate rule";
        if at.const_top && at.depth == 1 {
            // The const is negated as a whole but was used inside a set.
            let Some(used) = at.via else { return };
            let d = self
                .error(
                    Code::WrongKind,
                    format!(
                        "`${}` is negated and cannot be used inside a set",
                        used.name
                    ),
                    used.span,
                    "used inside a set here",
                )
                .with_secondary(self.label(not_span, "negated here"))
                .with_help(help);
            self.emit(d);
        } else if at.depth == 0 {
            let d = self
                .error(
                    Code::WrongKind,
                    "`!` can only negate a whole value, not an element of a set",
                    not_span,
                    "negation inside a set",
                )
                .with_help(help);
            self.emit(d);
        }
    }

    fn unknown_const(&mut self, name: &str, span: Span) {
        if self.defined_in_broken_statement("const", name) {
            return;
        }
        let shown = quote(name);
        let mut d = self.error(
            Code::UnknownConst,
            format!("cannot find const `${shown}`"),
            span,
            "not defined",
        );
        let suggestion = self
            .may_suggest(self.consts.len())
            .then(|| names::suggest(name, self.consts.keys().copied()))
            .flatten()
            .and_then(|s| self.consts.get(s).map(|def| (s, *def)));
        d = match suggestion {
            Some((s, def)) => d
                .with_secondary(self.label(def.name.span, format!("`${s}` is defined here")))
                .with_help(format!("did you mean `${s}`?")),
            None => d.with_help(format!("define it: `const {shown} = ...`")),
        };
        self.emit(d);
    }

    pub fn unknown_table(&mut self, name: &str, span: Span) {
        if self.defined_in_broken_statement("table", name) {
            return;
        }
        let shown = quote(name);
        let mut d = self.error(
            Code::UnknownTable,
            format!("cannot find table `@{shown}`"),
            span,
            "not defined",
        );
        let suggestion = self
            .may_suggest(self.tables.len())
            .then(|| names::suggest(name, self.tables.keys().copied()))
            .flatten()
            .and_then(|s| {
                let id = self.tables.get(s)?;
                Some((s, self.table_defs[id.0 as usize].name.span))
            });
        d = match suggestion {
            Some((s, at)) => d
                .with_secondary(self.label(at, format!("`@{s}` is defined here")))
                .with_help(format!("did you mean `@{s}`?")),
            None => d.with_help(format!(
                "define it: `table {shown} {{ ... }}` or `table {shown} file \"PATH\"`"
            )),
        };
        self.emit(d);
    }

    /// Checks what is wrong with an element wherever it is used: CIDR
    /// lengths, port ranges, table names. Reports only elements written
    /// directly in the value (those inside consts are reported with the
    /// const's definition). Returns whether the element is usable.
    pub fn leaf_ok(&mut self, leaf: &Leaf<'a>) -> bool {
        let report = leaf.via.is_none();
        let span = leaf.expr.span;
        match &leaf.expr.kind {
            ExprKind::Addr {
                ip,
                prefix: Some(len),
            } => {
                let max = crate::net::max_len(*ip);
                if *len > max {
                    if report {
                        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                        let d = self
                            .error(
                                Code::CidrLength,
                                format!("prefix length /{len} is too long for an {family} address"),
                                span,
                                format!("{family} prefixes are /0 to /{max}"),
                            )
                            .with_help(format!("use a length of at most {max}, or write the address alone for a single host"));
                        self.emit(d);
                    }
                    return false;
                }
                true
            }
            ExprKind::Range(lo, hi) => {
                if *hi > 65535 || *lo > 65535 {
                    if report {
                        let d = self
                            .error(
                                Code::PortRange,
                                format!("port range `{lo}-{hi}` goes past 65535"),
                                span,
                                "ports are 0-65535",
                            )
                            .with_help("ports are 16-bit numbers: keep both ends at most 65535");
                        self.emit(d);
                    }
                    return false;
                }
                if lo > hi {
                    if report {
                        let d = self
                            .error(
                                Code::PortRange,
                                format!("port range `{lo}-{hi}` is empty"),
                                span,
                                "the first port is larger than the last",
                            )
                            .with_help(format!("write it low to high: `{hi}-{lo}`"));
                        self.emit(d);
                    }
                    return false;
                }
                true
            }
            ExprKind::TableRef(name) => {
                if self.tables.contains_key(name.as_str()) {
                    return true;
                }
                if report {
                    self.unknown_table(name, span);
                }
                false
            }
            _ => true,
        }
    }

    /// How an element reads in a message: "the port range `1-5`".
    pub fn describe(&self, expr: &Expr) -> String {
        let text = self.source.get(expr.span.range()).unwrap_or("");
        match &expr.kind {
            ExprKind::Any => "`any`".to_string(),
            ExprKind::Number(n) => format!("the number `{n}`"),
            ExprKind::Range(lo, hi) => format!("the port range `{lo}-{hi}`"),
            ExprKind::Addr { prefix: None, .. } => format!("the address `{text}`"),
            ExprKind::Addr { .. } => format!("the network `{text}`"),
            ExprKind::Name(n) if names::protocol(n).is_some() => format!("the protocol `{n}`"),
            ExprKind::Name(n) if names::is_icmp_type_name(n) => format!("the ICMP type `{n}`"),
            ExprKind::Name(n) => format!("the name `{n}`"),
            ExprKind::TableRef(n) => format!("the table `@{n}`"),
            ExprKind::ConstRef(n) => format!("`${n}`"),
            ExprKind::Set(_) => "a set".to_string(),
            ExprKind::Not(_) => "a negation".to_string(),
        }
    }

    /// An element of the wrong kind. Through a const, the primary label is
    /// the use and a secondary one points into the const's definition.
    pub fn wrong_kind(&mut self, leaf: &Leaf<'a>, expected: &str, help: Option<String>) {
        if leaf.via.is_some()
            && let ExprKind::Name(n) = &leaf.expr.kind
            && names::protocol(n).is_none()
            && !names::is_icmp_type_name(n)
        {
            // Reported with the const's definition: a name that is nothing.
            return;
        }
        if let Some(used) = leaf.via
            && !self.kind_reported.insert(used.span)
        {
            // One report per `$const` use, however many elements it holds.
            return;
        }
        let found = self.describe(leaf.expr);
        let mut d = match leaf.via {
            None => self.error(
                Code::WrongKind,
                format!("expected {expected}, found {found}"),
                leaf.expr.span,
                format!("expected {expected} here"),
            ),
            Some(used) => self
                .error(
                    Code::WrongKind,
                    format!("expected {expected}, but `${}` holds {found}", used.name),
                    used.span,
                    format!("expected {expected} here"),
                )
                .with_secondary(self.label(leaf.expr.span, format!("{found} comes from here")))
                .with_secondary(self.label(
                    used.def.name.span,
                    format!("`${}` is defined here", used.name),
                )),
        };
        if let Some(help) = help {
            d = d.with_help(help);
        }
        self.emit(d);
    }

    /// A number too large for what it is used as (`what`: "port", ...).
    pub fn out_of_range(&mut self, leaf: &Leaf<'a>, code: Code, what: &str, value: u64, max: u64) {
        let mut d = self
            .error(
                code,
                format!("{what} `{value}` is out of range"),
                leaf.expr.span,
                format!("{what}s are 0-{max}"),
            )
            .with_help(format!("use a {what} from 0 to {max}"));
        if let Some(used) = leaf.via {
            d = d.with_secondary(self.label(used.span, format!("used as a {what} here")));
        }
        self.emit(d);
    }
}
