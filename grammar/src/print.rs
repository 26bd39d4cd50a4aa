//! Printing the AST back to policy text. Each node prints in its one
//! canonical spelling, so `parse(print(ast))` gives the same tree (up to
//! spans); the formatter builds its layout from these pieces.

use std::fmt::Write;
use std::net::IpAddr;

use crate::ast::*;

/// The whole policy, one statement per line (no comments, no alignment).
pub fn policy(p: &Policy) -> String {
    let mut out = String::new();
    for item in &p.items {
        out.push_str(&self::item(item));
        out.push('\n');
    }
    out
}

pub fn item(item: &Item) -> String {
    match item {
        Item::Interface(i) => format!("interface {}", iface_name(&i.name.name)),
        Item::Const(c) => format!("const {} = {}", c.name.name, expr(&c.value)),
        Item::Table(t) => match &t.source {
            TableSource::Inline(e) => format!("table {} {}", t.name.name, expr(e)),
            TableSource::File(path) => {
                format!("table {} file {}", t.name.name, string(&path.value))
            }
        },
        Item::Options(o) => {
            let mut s = String::from("options {\n");
            for e in &o.entries {
                let _ = writeln!(s, "  {}", option_entry(e));
            }
            s.push('}');
            s
        }
        Item::Rule(r) => rule(r),
        Item::Test(t) => {
            let mut s = format!("test {} {{\n", string(&t.name.value));
            for step in &t.steps {
                let _ = writeln!(s, "  {}", test_step(step));
            }
            s.push('}');
            s
        }
    }
}

fn iface_name(name: &str) -> String {
    let is_ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && crate::lexer::lex(name).tokens.len() == 1
        && matches!(
            crate::lexer::lex(name).tokens[0].1,
            crate::lexer::Tok::Ident(_)
        );
    if is_ident {
        name.to_string()
    } else {
        string(name)
    }
}

pub fn option_entry(e: &OptionEntry) -> String {
    let key = match &e.sub {
        Some(sub) => format!("{} {}", e.key.name, sub.name),
        None => e.key.name.clone(),
    };
    format!("{key} = {}", option_value(&e.value.kind))
}

pub fn option_value(v: &OptionValueKind) -> String {
    match v {
        OptionValueKind::Word(w) => w.clone(),
        OptionValueKind::Number(n) => n.to_string(),
        OptionValueKind::Duration(ms) => duration(*ms),
    }
}

/// Milliseconds in the largest unit that divides them exactly.
pub fn duration(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Any => "any".to_string(),
        ExprKind::Number(n) => n.to_string(),
        ExprKind::Range(a, b) => format!("{a}-{b}"),
        ExprKind::Addr { ip, prefix } => match prefix {
            Some(p) => format!("{ip}/{p}"),
            None => ip.to_string(),
        },
        ExprKind::Name(n) => n.clone(),
        ExprKind::ConstRef(n) => format!("${n}"),
        ExprKind::TableRef(n) => format!("@{n}"),
        ExprKind::Set(items) if items.is_empty() => "{ }".to_string(),
        ExprKind::Set(items) => {
            let inner: Vec<String> = items.iter().map(expr).collect();
            format!("{{ {} }}", inner.join(", "))
        }
        ExprKind::Not(inner) => format!("!{}", expr(inner)),
    }
}

pub fn action(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Limit => "limit",
    }
}

pub fn proto_keyword(p: ProtoKeyword) -> &'static str {
    match p {
        ProtoKeyword::Tcp => "tcp",
        ProtoKeyword::Udp => "udp",
        ProtoKeyword::Icmp => "icmp",
        ProtoKeyword::Icmpv6 => "icmpv6",
    }
}

/// A rule on one line: action, match fields, rate, modifiers.
pub fn rule(r: &Rule) -> String {
    let mut parts = vec![action(r.action).to_string()];
    parts.extend(r.fields.iter().map(|f| match_field(&f.kind)));
    if let Some(rate) = &r.rate {
        parts.push(rate_spec(rate));
    }
    parts.extend(r.mods.iter().map(modifier));
    parts.join(" ")
}

pub fn match_field(f: &MatchFieldKind) -> String {
    match f {
        MatchFieldKind::Proto(p) => proto_keyword(*p).to_string(),
        MatchFieldKind::ProtoExpr(e) => format!("proto {}", expr(e)),
        MatchFieldKind::Family(Family::Ip4) => "ip4".to_string(),
        MatchFieldKind::Family(Family::Ip6) => "ip6".to_string(),
        MatchFieldKind::From { addrs, port } => {
            endpoint_match("from", addrs.as_ref(), port.as_ref())
        }
        MatchFieldKind::To { addrs, port } => endpoint_match("to", addrs.as_ref(), port.as_ref()),
        MatchFieldKind::IcmpType { ty, code } => match code {
            Some(c) => format!("type {} code {}", expr(ty), expr(c)),
            None => format!("type {}", expr(ty)),
        },
        MatchFieldKind::Flags { set, mask } => match mask {
            Some(m) => format!("flags {}/{}", set.name, m.name),
            None => format!("flags {}", set.name),
        },
        MatchFieldKind::Vlan(e) => format!("vlan {}", expr(e)),
    }
}

fn endpoint_match(word: &str, addrs: Option<&Expr>, port: Option<&Expr>) -> String {
    match (addrs, port) {
        (Some(a), Some(p)) => format!("{word} {} port {}", expr(a), expr(p)),
        (Some(a), None) => format!("{word} {}", expr(a)),
        (None, Some(p)) => format!("{word} port {}", expr(p)),
        (None, None) => word.to_string(),
    }
}

pub fn rate_spec(r: &RateSpec) -> String {
    let unit = match r.unit {
        RateUnit::Second => "s",
        RateUnit::Minute => "m",
        RateUnit::Hour => "h",
    };
    let mut s = format!("rate {}/{unit}", r.count);
    if let Some((b, _)) = r.burst {
        let _ = write!(s, " burst {b}");
    }
    if let Some(per) = &r.per {
        let _ = write!(s, " per {}", per.name);
    }
    s
}

pub fn modifier(m: &Modifier) -> String {
    match m {
        Modifier::Label(s) => format!("label {}", string(&s.value)),
        Modifier::Log(_) => "log".to_string(),
    }
}

pub fn test_step(step: &TestStep) -> String {
    match step.kind {
        StepKind::Expect(Verdict::Pass) => format!("expect pass {}", packet(&step.packet)),
        StepKind::Expect(Verdict::Drop) => format!("expect drop {}", packet(&step.packet)),
        StepKind::Out => format!("out {}", packet(&step.packet)),
    }
}

pub fn packet(p: &PacketSpec) -> String {
    let proto = match &p.proto {
        PacketProto::Keyword(k) => proto_keyword(*k).to_string(),
        PacketProto::Number(n) => format!("proto {n}"),
    };
    let mut s = format!("{proto} {} -> {}", endpoint(&p.src), endpoint(&p.dst));
    if let Some(f) = &p.flags {
        let _ = write!(s, " flags {}", f.name);
    }
    if let Some(t) = &p.icmp_type {
        let _ = write!(s, " type {}", expr(t));
        if let Some(c) = &p.icmp_code {
            let _ = write!(s, " code {}", expr(c));
        }
    }
    if let Some((v, _)) = p.vlan {
        let _ = write!(s, " vlan {v}");
    }
    if let Some((n, _)) = p.repeat {
        let _ = write!(s, " repeat {n}");
    }
    s
}

pub fn endpoint(e: &Endpoint) -> String {
    match (e.addr, e.port) {
        (IpAddr::V6(a), Some((port, _))) => format!("[{a}]:{port}"),
        (addr, Some((port, _))) => format!("{addr}:{port}"),
        (addr, None) => addr.to_string(),
    }
}
