//! How the egress program is attached, chosen from the probed features:
//! a tcx link (Linux 6.6) when the kernel has tcx, pinned and swapped
//! like the XDP link; else a `cls_bpf` filter (direct action) in the
//! interface's `clsact` qdisc, set up over rtnetlink (every kernel since
//! 4.5). A filter has no link to pin: it lives as long as the qdisc, at a
//! fixed priority and handle so that a replacement finds it (a new filter
//! at the same place replaces the program in one step) and removal
//! deletes exactly it. A policy installed with a filter pins its egress
//! program (`prog_tc`) but no `link_tc`: that is how [`filter_installed`]
//! tells.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::RuntimeError;
use crate::features;
use crate::sys;

/// Priority of Patronus's egress filter: fixed (and unusual) so that
/// replace and remove find it without stored state.
pub const FILTER_PRIORITY: u16 = 0xc0de;
/// Handle of the filter at that priority.
pub const FILTER_HANDLE: u32 = 1;

const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the clsact qdisc's parent.
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`.
const CLSACT_EGRESS: u32 = 0xffff_fff3;
const ETH_P_ALL: u16 = 0x0003;

/// An attached egress program.
#[derive(Debug)]
pub enum Egress {
    /// A tcx link: pinned as `link_tc`, swapped with `BPF_LINK_UPDATE`.
    Link(OwnedFd),
    /// A `cls_bpf` filter in the `clsact` qdisc.
    Filter,
}

/// Attaches (or, for a filter, replaces) the egress program of `ifindex`.
pub fn egress(prog: BorrowedFd<'_>, ifindex: u32) -> Result<Egress, RuntimeError> {
    if features::current().tcx {
        return sys::link_create(prog, ifindex, sys::attach_type::TCX_EGRESS, 0)
            .map(Egress::Link)
            .map_err(|error| RuntimeError::Io {
                context: "attaching the tc egress program (tcx link)",
                error,
            });
    }
    set_filter(prog, ifindex).map(|()| Egress::Filter)
}

/// Puts `prog` into the `clsact` egress hook of `ifindex` as Patronus's
/// filter, creating the qdisc when needed and replacing the program of a
/// filter already there.
pub fn set_filter(prog: BorrowedFd<'_>, ifindex: u32) -> Result<(), RuntimeError> {
    let io = |context: &'static str| move |error| RuntimeError::Io { context, error };
    let socket = Netlink::open().map_err(io("opening an rtnetlink socket"))?;
    let mut qdisc = Message::new(
        RTM_NEWQDISC,
        NLM_F_CREATE | NLM_F_EXCL,
        ifindex,
        0xffff_0000,
        TC_H_CLSACT,
        0,
    );
    qdisc.attr(TCA_KIND, b"clsact\0");
    match socket.request(&qdisc) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EEXIST) => {}
        Err(error) => {
            return Err(io("adding the clsact qdisc for the egress program")(error));
        }
    }
    let mut filter = filter_message(RTM_NEWTFILTER, NLM_F_CREATE, ifindex);
    let options = filter.begin_nested(TCA_OPTIONS);
    filter.attr(TCA_BPF_FD, &(prog.as_raw_fd() as u32).to_ne_bytes());
    filter.attr(TCA_BPF_NAME, b"patronus_egress\0");
    filter.attr(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes());
    filter.end_nested(options);
    socket.request(&filter).map_err(io(
        "attaching the tc egress program (clsact cls_bpf filter)",
    ))
}

/// Removes Patronus's egress filter from `ifindex`; `Ok(false)` when there
/// was none (or the interface is gone).
pub fn remove_filter(ifindex: u32) -> Result<bool, RuntimeError> {
    let io = |context: &'static str| move |error| RuntimeError::Io { context, error };
    let socket = Netlink::open().map_err(io("opening an rtnetlink socket"))?;
    let filter = filter_message(RTM_DELTFILTER, 0, ifindex);
    match socket.request(&filter) {
        Ok(()) => Ok(true),
        Err(error)
            if matches!(
                error.raw_os_error(),
                Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)
            ) =>
        {
            Ok(false)
        }
        Err(error) => Err(io("removing the tc egress filter")(error)),
    }
}

/// Whether the policy pinned at `pins` runs its egress program as a
/// filter (a pinned egress program without a tcx link).
pub fn filter_installed(pins: &crate::pins::Pins) -> bool {
    use patronus_codegen::elf::ProgramKind;
    pins.prog(ProgramKind::Tc).exists() && !pins.tc_link().exists()
}

/// Removes the egress filter of the policy pinned at `pins`, if it runs
/// one (its interface read from the pinned XDP link): before the pins go,
/// since nothing else would take the filter down.
pub fn remove_filter_of(pins: &crate::pins::Pins) {
    use std::os::fd::AsFd as _;
    if filter_installed(pins)
        && let Ok(link) = sys::obj_get(&pins.xdp_link())
        && let Ok(info) = sys::link_info(link.as_fd())
        && info.ifindex != 0
    {
        let _ = remove_filter(info.ifindex);
    }
}

/// The egress program running for the policy pinned at `pins`: the tcx
/// link's, or with a filter the pinned egress program (the filter at
/// Patronus's priority is only ever set from it).
pub fn running_egress(pins: &crate::pins::Pins) -> Option<u32> {
    use std::os::fd::AsFd as _;
    if filter_installed(pins) {
        let ifindex = crate::pins::pinned_link(&pins.xdp_link())?.ifindex;
        let prog = sys::obj_get(&pins.prog(patronus_codegen::elf::ProgramKind::Tc)).ok()?;
        return (ifindex != 0)
            .then(|| sys::prog_id(prog.as_fd()).ok())
            .flatten();
    }
    crate::pins::pinned_link(&pins.tc_link())
        .filter(|info| info.ifindex != 0)
        .map(|info| info.prog_id)
}

fn filter_message(kind: u16, flags: u16, ifindex: u32) -> Message {
    let info = (u32::from(FILTER_PRIORITY) << 16) | u32::from(ETH_P_ALL.to_be());
    let mut message = Message::new(kind, flags, ifindex, FILTER_HANDLE, CLSACT_EGRESS, info);
    message.attr(TCA_KIND, b"bpf\0");
    message
}

/// One netlink request: `nlmsghdr`, a family header (`tcmsg` here;
/// `ifinfomsg` or `genlmsghdr` for the doctor's queries), attributes.
pub(crate) struct Message {
    bytes: Vec<u8>,
}

impl Message {
    /// A request whose family header is `header` (the doctor's queries).
    pub(crate) fn with_header(kind: u16, flags: u16, header: &[u8]) -> Message {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set at send
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        bytes.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        bytes.extend_from_slice(header);
        let mut message = Message { bytes };
        message.pad();
        message
    }

    fn new(kind: u16, flags: u16, ifindex: u32, handle: u32, parent: u32, info: u32) -> Message {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set at send
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        bytes.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        // struct tcmsg: family (AF_UNSPEC), padding, ifindex, handle,
        // parent, info.
        bytes.extend_from_slice(&[0u8; 4]);
        bytes.extend_from_slice(&ifindex.to_ne_bytes());
        bytes.extend_from_slice(&handle.to_ne_bytes());
        bytes.extend_from_slice(&parent.to_ne_bytes());
        bytes.extend_from_slice(&info.to_ne_bytes());
        Message { bytes }
    }

    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.pad();
    }

    fn begin_nested(&mut self, kind: u16) -> usize {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end_nested(&mut self, at: usize) {
        let len = (self.bytes.len() - at) as u16;
        self.bytes[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(&self) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        let len = bytes.len() as u32;
        bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        bytes
    }
}

pub(crate) struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        Netlink::open_protocol(libc::NETLINK_ROUTE)
    }

    /// A socket of netlink family `protocol` (`NETLINK_ROUTE`,
    /// `NETLINK_GENERIC`).
    pub(crate) fn open_protocol(protocol: i32) -> io::Result<Netlink> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we now own.
        Ok(Netlink {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends `message` and waits for its acknowledgement: `Ok` or the
    /// kernel's error.
    fn request(&self, message: &Message) -> io::Result<()> {
        self.send(message)?;
        let mut reply = [0u8; 8192];
        loop {
            // SAFETY: reply is valid for its length.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut at = 0usize;
            let got = got as usize;
            while at + 16 <= got {
                let len =
                    u32::from_ne_bytes([reply[at], reply[at + 1], reply[at + 2], reply[at + 3]])
                        as usize;
                let kind = u16::from_ne_bytes([reply[at + 4], reply[at + 5]]);
                if kind == NLMSG_ERROR && at + 20 <= got {
                    let code = i32::from_ne_bytes([
                        reply[at + 16],
                        reply[at + 17],
                        reply[at + 18],
                        reply[at + 19],
                    ]);
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                if len < 16 {
                    break;
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// Sends a `GET` request (not a dump) and returns the payloads (after
    /// `nlmsghdr`) of the kernel's answers, or the kernel's error.
    pub(crate) fn query(&self, message: &Message) -> io::Result<Vec<Vec<u8>>> {
        const NLMSG_DONE: u16 = 3;
        self.send(message)?;
        let mut answers = Vec::new();
        // Link messages with statistics exceed a page; 64 KiB holds any.
        let mut reply = vec![0u8; 65536];
        loop {
            // SAFETY: reply is valid for its length.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = got as usize;
            let mut at = 0usize;
            while at + 16 <= got {
                let len =
                    u32::from_ne_bytes([reply[at], reply[at + 1], reply[at + 2], reply[at + 3]])
                        as usize;
                if len < 16 || at + len > got {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let kind = u16::from_ne_bytes([reply[at + 4], reply[at + 5]]);
                match kind {
                    NLMSG_ERROR if len >= 20 => {
                        let code = i32::from_ne_bytes([
                            reply[at + 16],
                            reply[at + 17],
                            reply[at + 18],
                            reply[at + 19],
                        ]);
                        return if code == 0 {
                            Ok(answers)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    NLMSG_DONE => return Ok(answers),
                    _ => answers.push(reply[at + 16..at + len].to_vec()),
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    fn send(&self, message: &Message) -> io::Result<()> {
        let bytes = message.finish();
        // SAFETY: bytes is valid for its length; the kernel is the peer
        // (address zero).
        let sent = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The attributes (`nlattr`s) of a netlink payload: type (flags
/// stripped) and value, in order; stops at the first malformed one.
pub(crate) fn attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut attrs = Vec::new();
    while bytes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff;
        if len < 4 || len > bytes.len() {
            break;
        }
        attrs.push((kind, &bytes[4..len]));
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_message_layout() {
        let mut message = filter_message(RTM_NEWTFILTER, NLM_F_CREATE, 7);
        let nested = message.begin_nested(TCA_OPTIONS);
        message.attr(TCA_BPF_FD, &5u32.to_ne_bytes());
        message.end_nested(nested);
        let bytes = message.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        // tcmsg: ifindex 7, handle 1, parent clsact egress, prio | ETH_P_ALL.
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(bytes[24..28].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_ne_bytes(bytes[28..32].try_into().unwrap()),
            0xffff_fff3
        );
        assert_eq!(
            u32::from_ne_bytes(bytes[32..36].try_into().unwrap()),
            0xc0de_0300
        );
        // TCA_KIND "bpf\0", then the nested options (8 bytes + one attr).
        assert_eq!(&bytes[36..44], &[8, 0, 1, 0, b'b', b'p', b'f', 0]);
        assert_eq!(u16::from_ne_bytes([bytes[44], bytes[45]]), 12);
    }
}
