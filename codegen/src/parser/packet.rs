//! The parsed packet's stack layout: where the frame parser
//! ([`super`]) leaves each header field, and what the rule phases and the
//! state generators read. The field table (offsets, sizes, byte order) is
//! documented with the contract in `crate::xdp::ctx`, which re-exports it.

use crate::insn::regs::StackSlot;

pub const PKT_SRC: i16 = 0;
pub const PKT_DST: i16 = 16;
pub const PKT_SPORT: i16 = 32;
pub const PKT_DPORT: i16 = 34;
pub const PKT_PROTO: i16 = 36;
pub const PKT_TCP_FLAGS: i16 = 37;
pub const PKT_ICMP_TYPE: i16 = 38;
pub const PKT_ICMP_CODE: i16 = 39;
pub const PKT_ECHO_ID: i16 = 40;
pub const PKT_L4: i16 = 42;
pub const PKT_IS_ECHO: i16 = 43;
pub const PKT_VLAN: i16 = 44;
pub const PKT_HAS_VLAN: i16 = 46;
pub const PKT_HOP_LIMIT: i16 = 47;
pub const PKT_LEN: i16 = 48;
/// Bytes of the packet region.
pub const PKT_SIZE: usize = 56;

/// Values of [`PKT_L4`].
pub const L4_OTHER: u8 = 0;
pub const L4_TCP: u8 = 1;
pub const L4_UDP: u8 = 2;
pub const L4_ICMP: u8 = 3;
pub const L4_FRAGMENT: u8 = 4;

/// Where the parsed packet lives: `r10 + base + PKT_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSlots {
    pub base: i16,
}

impl PacketSlots {
    pub fn from_slot(slot: StackSlot) -> PacketSlots {
        PacketSlots { base: slot.off }
    }

    /// The `r10`-relative offset of a packet field (`PKT_*`).
    pub fn at(self, field: i16) -> i16 {
        self.base + field
    }
}
