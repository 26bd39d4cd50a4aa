//! Connection tracking (LANGUAGE.md §3): which flows are live, in which
//! state, and when they expire.
//!
//! - A flow is identified by its 5-tuple (protocol, addresses, ports). A
//!   packet belongs to a flow if its tuple is the flow's original tuple or
//!   the reverse of it (a reply). Internally the key is the tuple with its
//!   two endpoints in a canonical order, so both directions find one entry.
//! - ICMP/ICMPv6 echo: the echo id stands in for the ports, as (id, 0) for a
//!   request and (0, id) for a reply, so a reply is the reversed tuple of its
//!   request and an inbound request never matches an outbound one.
//! - Other ICMP messages (errors, NDP, ...) are not flows: they are never
//!   established and never tracked. Non-first fragments (only kept when
//!   `fragments` is not `drop`) have no ports and are not tracked either.
//! - Other IP protocols (GRE, ESP, ...) are flows with ports 0 and the UDP
//!   timeouts (a datagram protocol without connection state).
//!
//! States and timeouts (measured from the flow's last packet; the flow is
//! live while `now - last < timeout`):
//! - TCP: `tcp_syn` after a SYN, `tcp_established` once a packet without
//!   SYN was seen, `tcp_closing` after a FIN, `tcp_rst` after a RST (a FIN
//!   after a RST keeps the RST state). A lone SYN (SYN without ACK) on a
//!   closing or reset flow starts a new connection (port reuse).
//! - UDP and other protocols: `udp`, `udp_stream` once both directions seen.
//! - ICMP echo: `icmp`.
//!
//! The table is an [`Lru`] of `conntrack_size` flows; an expired flow is
//! removed when a lookup finds it.

use std::net::IpAddr;

use super::lru::Lru;
use crate::frame::{ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST, IpPacket, Transport};
use crate::typed::{PROTO_TCP, Timeouts, tcp_flags};

/// A 5-tuple as a packet carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Tuple {
    /// The tuple of `packet`, or `None` if it cannot belong to a flow.
    pub fn of(packet: &IpPacket) -> Option<Tuple> {
        let (src_port, dst_port) = match packet.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => (src_port, dst_port),
            Transport::Icmp {
                ty,
                echo_id: Some(id),
                ..
            } => {
                if ty == ICMP_ECHO_REQUEST || ty == ICMPV6_ECHO_REQUEST {
                    (id, 0)
                } else {
                    (0, id)
                }
            }
            Transport::Icmp { echo_id: None, .. } | Transport::Fragment => return None,
            Transport::Other => (0, 0),
        };
        Some(Tuple {
            proto: packet.proto,
            src: packet.src,
            dst: packet.dst,
            src_port,
            dst_port,
        })
    }

    pub fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }

    /// The direction-free key: the smaller endpoint first.
    fn key(&self) -> Tuple {
        if (self.src, self.src_port) <= (self.dst, self.dst_port) {
            *self
        } else {
            self.reversed()
        }
    }
}

/// Where a flow is in its life; decides its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowState {
    TcpSyn,
    TcpEstablished,
    TcpClosing,
    TcpRst,
    /// UDP (or another datagram protocol), one direction seen so far.
    Udp,
    /// UDP, both directions seen.
    UdpStream,
    Icmp,
}

impl FlowState {
    pub fn timeout_ns(self, timeouts: &Timeouts) -> u64 {
        match self {
            FlowState::TcpSyn => timeouts.tcp_syn,
            FlowState::TcpEstablished => timeouts.tcp_established,
            FlowState::TcpClosing => timeouts.tcp_closing,
            FlowState::TcpRst => timeouts.tcp_rst,
            FlowState::Udp => timeouts.udp,
            FlowState::UdpStream => timeouts.udp_stream,
            FlowState::Icmp => timeouts.icmp,
        }
    }

    /// The name shown by `explain`.
    pub fn name(self) -> &'static str {
        match self {
            FlowState::TcpSyn => "tcp-syn",
            FlowState::TcpEstablished => "tcp-established",
            FlowState::TcpClosing => "tcp-closing",
            FlowState::TcpRst => "tcp-rst",
            FlowState::Udp => "udp",
            FlowState::UdpStream => "udp-stream",
            FlowState::Icmp => "icmp",
        }
    }

    /// The state of a new flow whose first packet is `packet`.
    fn initial(packet: &IpPacket) -> FlowState {
        match packet.proto {
            PROTO_TCP => FlowState::TcpSyn.after(packet, false),
            _ if packet.icmp().is_some() => FlowState::Icmp,
            _ => FlowState::Udp,
        }
    }

    /// The state after `packet` was seen; `is_reply` = it travels against
    /// the flow's original direction.
    fn after(self, packet: &IpPacket, is_reply: bool) -> FlowState {
        use tcp_flags::{FIN, RST, SYN};
        match (self, packet.tcp_flags()) {
            (_, Some(flags)) if flags & RST != 0 => FlowState::TcpRst,
            (FlowState::TcpRst, Some(_)) => FlowState::TcpRst,
            (_, Some(flags)) if flags & FIN != 0 => FlowState::TcpClosing,
            (FlowState::TcpSyn, Some(flags)) if flags & SYN == 0 => FlowState::TcpEstablished,
            (FlowState::Udp, None) if is_reply => FlowState::UdpStream,
            (state, _) => state,
        }
    }
}

/// One tracked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The tuple of the packet that started the flow.
    pub original: Tuple,
    pub state: FlowState,
    pub last_seen_ns: u64,
}

impl Flow {
    fn is_live(&self, now_ns: u64, timeouts: &Timeouts) -> bool {
        now_ns.saturating_sub(self.last_seen_ns) < self.state.timeout_ns(timeouts)
    }
}

/// What an established lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The flow after this packet updated it.
    pub flow: Flow,
    /// The packet is a reply (reversed original tuple).
    pub is_reply: bool,
    /// Time since the flow's previous packet.
    pub idle_ns: u64,
}

#[derive(Clone, Debug)]
pub struct Conntrack {
    flows: Lru<Tuple, Flow>,
    timeouts: Timeouts,
}

impl Conntrack {
    pub fn new(capacity: u32, timeouts: Timeouts) -> Self {
        Conntrack {
            flows: Lru::new(capacity as usize),
            timeouts,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Phase 3: if `packet` belongs to a live flow, updates the flow with it
    /// and returns the hit. An expired flow is removed.
    pub fn lookup(&mut self, packet: &IpPacket, now_ns: u64) -> Option<Hit> {
        let tuple = Tuple::of(packet)?;
        let key = tuple.key();
        let timeouts = self.timeouts;
        let flow = self.flows.get_mut(&key)?;
        if !flow.is_live(now_ns, &timeouts) {
            self.flows.remove(&key);
            return None;
        }
        let is_reply = tuple != flow.original;
        let idle_ns = now_ns.saturating_sub(flow.last_seen_ns);
        flow.state = flow.state.after(packet, is_reply);
        flow.last_seen_ns = now_ns;
        Some(Hit {
            flow: *flow,
            is_reply,
            idle_ns,
        })
    }

    /// Starts tracking `packet`'s flow (an allowed inbound packet, or one the
    /// host sent), or updates the live flow it belongs to. Returns the flow,
    /// `None` if the packet cannot be tracked.
    pub fn track(&mut self, packet: &IpPacket, now_ns: u64) -> Option<Flow> {
        let tuple = Tuple::of(packet)?;
        let key = tuple.key();
        let timeouts = self.timeouts;
        if let Some(flow) = self.flows.get_mut(&key) {
            let reopens = packet.is_lone_syn()
                && matches!(flow.state, FlowState::TcpClosing | FlowState::TcpRst);
            if flow.is_live(now_ns, &timeouts) && !reopens {
                let is_reply = tuple != flow.original;
                flow.state = flow.state.after(packet, is_reply);
                flow.last_seen_ns = now_ns;
                return Some(*flow);
            }
        }
        let flow = Flow {
            original: tuple,
            state: FlowState::initial(packet),
            last_seen_ns: now_ns,
        };
        self.flows.insert(key, flow);
        Some(flow)
    }
}
