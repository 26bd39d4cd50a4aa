//! The contract between the XDP program generator (`xdp`) and the state
//! generators (`state`: conntrack, rate limits, log events; `tc`: the egress
//! program). What the parser leaves where, which registers are live, and the
//! emission hooks the phase code calls.
//!
//! # Registers (see `insn::regs`)
//!
//! | reg | at every hook |
//! |-----|---------------|
//! | r6 `CTX` | the `xdp_md` pointer — must be preserved |
//! | r7 `DATA` | packet start — must be preserved |
//! | r8 `DATA_END` | packet end — must be preserved |
//! | r9 `SCRATCH` | free for the hook: the phase code saves what it keeps there before calling a hook and reloads it after |
//! | r0-r5 | free (clobbered by helper calls anyway) |
//!
//! A hook may not write r6-r8 and may not write the packet slots below.
//!
//! # The parsed packet ([`PacketSlots`])
//!
//! After phase 1 the parser has validated the frame exactly as
//! `patronus_compiler::frame::parse` does and stored the fields in one
//! stack region of [`PKT_SIZE`] bytes at `r10 + pkt.base` (8-byte aligned).
//! The generated code is specialised per address family: every hook is
//! emitted inside an IPv4-only or an IPv6-only path and [`XdpCtx::family`]
//! says which. Fields, at `pkt.base + offset`:
//!
//! | offset | size | field | byte order / meaning |
//! |--------|------|-------|----------------------|
//! | [`PKT_SRC`] | 16 | source address | network order; IPv4 in bytes 0..4 (bytes 4..16 are not written) |
//! | [`PKT_DST`] | 16 | destination address | as above |
//! | [`PKT_SPORT`] | 2 | TCP/UDP source port | network order (as on the wire); 0 when the packet has no ports |
//! | [`PKT_DPORT`] | 2 | TCP/UDP destination port | network order; 0 when no ports |
//! | [`PKT_PROTO`] | 1 | IPv4 protocol / IPv6 upper-layer header after the extension headers | |
//! | [`PKT_TCP_FLAGS`] | 1 | TCP flags byte (offset 13) | 0 for non-TCP |
//! | [`PKT_ICMP_TYPE`] | 1 | ICMP / ICMPv6 type | 0 when [`PKT_L4`] is not [`L4_ICMP`] |
//! | [`PKT_ICMP_CODE`] | 1 | code | as above |
//! | [`PKT_ECHO_ID`] | 2 | ICMP/ICMPv6 echo identifier | network order; 0 when not an echo request/reply |
//! | [`PKT_L4`] | 1 | transport kind | [`L4_OTHER`], [`L4_TCP`], [`L4_UDP`], [`L4_ICMP`] (ICMP under IPv4, ICMPv6 under IPv6), [`L4_FRAGMENT`] (non-first fragment kept: no transport header) |
//! | [`PKT_IS_ECHO`] | 1 | 1 for echo request/reply (`frame::Transport::Icmp { echo_id: Some(_) }`), else 0 | |
//! | [`PKT_VLAN`] | 2 | outer VLAN id (low 12 bits of the TCI) | host order; valid when [`PKT_HAS_VLAN`] is 1 |
//! | [`PKT_HAS_VLAN`] | 1 | 1 when tagged | |
//! | [`PKT_HOP_LIMIT`] | 1 | IPv4 TTL / IPv6 hop limit | |
//! | [`PKT_LEN`] | 4 | frame length `data_end - data` (what byte counters add) | host order |
//!
//! Every field is written on every valid IP packet (bytes 32..48 are zeroed
//! at entry, then the parser fills what the packet has). Land, NDP and invalid packets never reach a
//! hook.
//!
//! # Hooks (implemented in `crate::state`)
//!
//! All take `(asm, ctx, program)` and return `Result<(), CodegenError>`;
//! all may allocate stack slots through [`XdpCtx::frame`]. They add no
//! maps: every map is laid out before emission, and a hook asks
//! [`XdpCtx::layout`] for its map by role (`layout.conntrack(family)`,
//! `layout.rate_limit(key, family)`, `layout.log_maps()`).
//!
//! - `state::emit_established(asm, ctx, program, pass: Label)` — phase 3,
//!   emitted once per family path, only when `program.usage.conntrack`,
//!   after the deny phase. Jump to `pass` when the packet belongs to a live
//!   flow (never for a lone SYN: SYN set, ACK clear); fall through otherwise.
//!   `pass` counts `Phase::Established` and returns `XDP_PASS` (owned by xdp).
//! - `state::emit_rate_limit(asm, ctx, program, rule: RuleId, drop: Label)`
//!   — phase 4, once per limit-phase rule whose bit is set, in file order.
//!   Take a token from `rule`'s bucket (key per `program.rules[rule].rate`);
//!   jump to `drop` when the bucket is empty, fall through when taken. The
//!   xdp side counts the charged rule; `drop` counts the rule and
//!   `Phase::RateLimit` and returns `XDP_DROP`.
//! - `state::emit_track(asm, ctx, program)` — phase 5, after an allow rule
//!   decided, only when `program.usage.conntrack`: start tracking the flow.
//!   Falls through; the xdp side then counts and returns `XDP_PASS`.
//! - `state::emit_log(asm, ctx, program, rule: RuleId, verdict_pass: bool)`
//!   — for rules with `log`, after the rule decided (deny, allow, or a
//!   limit whose bucket was empty), before the counters. Falls through.
//!
//! Stats (owned by xdp, layout in `abi`): `ir::Program::counters[i]` is
//! index `i` of the `stats` per-CPU array, value `{packets: u64, bytes: u64}`
//! little-endian; hooks never touch it.

use patronus_compiler::ir;
use patronus_compiler::typed::Family;

use crate::error::CodegenError;
use crate::insn::regs::{Frame, StackSlot};
use crate::layout::Layout;

/// The packet layout, owned by the parser that fills it.
pub use crate::parser::packet::{
    L4_FRAGMENT, L4_ICMP, L4_OTHER, L4_TCP, L4_UDP, PKT_DPORT, PKT_DST, PKT_ECHO_ID, PKT_HAS_VLAN,
    PKT_HOP_LIMIT, PKT_ICMP_CODE, PKT_ICMP_TYPE, PKT_IS_ECHO, PKT_L4, PKT_LEN, PKT_PROTO, PKT_SIZE,
    PKT_SPORT, PKT_SRC, PKT_TCP_FLAGS, PKT_VLAN, PacketSlots,
};

/// Everything a hook may read or extend while the XDP program is emitted.
pub struct XdpCtx<'p> {
    pub program: &'p ir::Program,
    /// The family of the path being emitted.
    pub family: Family,
    pub pkt: PacketSlots,
    /// The program's stack frame; allocate once and reuse across paths
    /// (e.g. look a slot up by name in `frame.slots()` before allocating).
    pub frame: &'p mut Frame,
    /// Every map of the object, by role.
    pub layout: &'p Layout,
}

impl XdpCtx<'_> {
    /// A named stack slot, allocated on first use and shared afterwards.
    pub fn slot(&mut self, name: &str, size: usize) -> Result<StackSlot, CodegenError> {
        if let Some((_, slot)) = self.frame.slots().iter().find(|(n, _)| n == name) {
            return Ok(*slot);
        }
        self.frame.alloc(name, size).map_err(CodegenError::Stack)
    }
}
