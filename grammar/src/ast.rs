//! The syntax tree of a policy file, exactly as written: no name resolution,
//! no kind checking. Every node carries the byte span it came from, so later
//! stages can point diagnostics at the source.
//!
//! Value positions (const bodies, `from`/`to` addresses, ports, protocols,
//! ICMP types) share one untyped [`Expr`]: whether `80` is a port, a protocol
//! number or an ICMP type is decided by the compiler from where it is used.

use std::net::IpAddr;

/// A half-open byte range `start..end` into the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub const fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// A name as written, with its span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole policy file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Policy {
    pub items: Vec<Item>,
    /// `#` comments in source order, kept for the formatter.
    pub comments: Vec<Comment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    /// The text after `#`, without the line break.
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Interface(InterfaceDecl),
    Const(ConstDef),
    Table(TableDef),
    Options(OptionsBlock),
    Rule(Rule),
    Test(TestBlock),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Interface(i) => i.span,
            Item::Const(c) => c.span,
            Item::Table(t) => t.span,
            Item::Options(o) => o.span,
            Item::Rule(r) => r.span,
            Item::Test(t) => t.span,
        }
    }
}

/// `interface NAME`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceDecl {
    pub name: Ident,
    pub span: Span,
}

/// `const NAME = VALUE`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstDef {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `table NAME { ... }` or `table NAME file "PATH"`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDef {
    pub name: Ident,
    pub source: TableSource,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableSource {
    /// The `{ ... }` set, as an [`ExprKind::Set`] expression.
    Inline(Expr),
    /// `file "PATH"`: the path as written (relative to the policy file).
    File(StrLit),
}

/// A string literal: its unescaped value and the span of the quoted text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrLit {
    pub value: String,
    pub span: Span,
}

/// `options { KEY = VALUE ... }`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionsBlock {
    pub entries: Vec<OptionEntry>,
    pub span: Span,
}

/// `KEY = VALUE` or `timeout NAME = DURATION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionEntry {
    pub key: Ident,
    /// The second word of two-word keys (`timeout tcp-syn`).
    pub sub: Option<Ident>,
    pub value: OptionValue,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionValue {
    pub kind: OptionValueKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionValueKind {
    /// A bare word: `deny`, `on`, `drop`, ...
    Word(String),
    Number(u64),
    /// `120s`, `5d`, `500ms`: the duration in milliseconds.
    Duration(u64),
}

/// An untyped value expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprKind {
    /// `any`
    Any,
    /// A decimal number: a port, protocol number or ICMP type/code.
    Number(u64),
    /// `N-M`
    Range(u64, u64),
    /// An address or CIDR as written; `prefix` is unchecked (the compiler
    /// reports lengths out of range), `ip` may have host bits set.
    Addr { ip: IpAddr, prefix: Option<u32> },
    /// A bare word in value position: a protocol (`tcp`), an ICMP type
    /// name (`echo-request`), ...
    Name(String),
    /// `$NAME`
    ConstRef(String),
    /// `@NAME`
    TableRef(String),
    /// `{ a, b, ... }`
    Set(Vec<Expr>),
    /// `!x`
    Not(Box<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Deny,
    Limit,
}

/// `allow|deny|limit MATCH [rate ...] [MODS]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub action_span: Span,
    /// The match fields in the order written (each kind at most once is a
    /// compiler check, not a parse rule).
    pub fields: Vec<MatchField>,
    pub rate: Option<RateSpec>,
    pub mods: Vec<Modifier>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchField {
    pub kind: MatchFieldKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtoKeyword {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ip4,
    Ip6,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchFieldKind {
    /// `tcp`, `udp`, `icmp`, `icmpv6`
    Proto(ProtoKeyword),
    /// `proto N`, `proto { tcp, udp }`, `proto $x`
    ProtoExpr(Expr),
    /// `ip4`, `ip6`
    Family(Family),
    /// `from [ADDRS] [port PORTS]` (at least one of the two; `to port 80`
    /// means any local address).
    From {
        addrs: Option<Expr>,
        port: Option<Expr>,
    },
    /// `to [ADDRS] [port PORTS]`
    To {
        addrs: Option<Expr>,
        port: Option<Expr>,
    },
    /// `type NAME|N|{...} [code N]`
    IcmpType { ty: Expr, code: Option<Expr> },
    /// `flags F[/MASK]`: the letters as written (validated by the compiler).
    Flags { set: Ident, mask: Option<Ident> },
    /// `vlan N`
    Vlan(Expr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateUnit {
    Second,
    Minute,
    Hour,
}

/// `rate N/UNIT [burst B] [per KEY]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u64,
    pub count_span: Span,
    pub unit: RateUnit,
    pub burst: Option<(u64, Span)>,
    /// `src`, `dst`, `flow`, `global` (checked by the compiler).
    pub per: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modifier {
    Label(StrLit),
    Log(Span),
}

/// `test "NAME" { STEP... }`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestBlock {
    pub name: StrLit,
    pub steps: Vec<TestStep>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass,
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// `expect pass|drop PACKET`
    Expect(Verdict),
    /// `out PACKET`
    Out,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestStep {
    pub kind: StepKind,
    pub packet: PacketSpec,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketProto {
    Keyword(ProtoKeyword),
    /// `proto N`
    Number(u64),
}

/// `PROTO SRC[:PORT] -> DST[:PORT] [flags F] [type T [code C]] [vlan N] [repeat N]`.
/// IPv6 endpoints with a port are written `[2001:db8::1]:443`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketSpec {
    pub proto: PacketProto,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub flags: Option<Ident>,
    pub icmp_type: Option<Expr>,
    pub icmp_code: Option<Expr>,
    pub vlan: Option<(u64, Span)>,
    pub repeat: Option<(u64, Span)>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: Option<(u64, Span)>,
    pub span: Span,
}
