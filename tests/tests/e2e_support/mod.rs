//! Shared by the end-to-end tests (`e2e_*.rs`): ICMP echo over raw
//! sockets (the test machines have no `ping` binary), UDP probes, and the
//! percentile summary the tests print. Sockets are created on a thread
//! that entered a namespace and keep that namespace afterwards.

#![allow(dead_code)] // each test crate uses a different subset

use std::io;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::netns::{in_netns, socket_addr};

/// An ICMP (or ICMPv6) raw socket in one namespace sending echo requests
/// with its own identifier to one address: conntrack keys echo flows by
/// identifier, so two pingers are two flows.
pub struct Pinger {
    fd: OwnedFd,
    target: IpAddr,
    pub id: u16,
}

fn last_error(what: &str) -> io::Error {
    let error = io::Error::last_os_error();
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pinger {
    /// A raw ICMP socket created inside namespace `ns`.
    pub fn new(ns: &str, target: &str) -> Pinger {
        static NEXT_ID: AtomicU16 = AtomicU16::new(0);
        let target: IpAddr = target.parse().expect("an IP address");
        let (family, protocol) = match target {
            IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
        };
        let fd = in_netns(ns, move || {
            // SAFETY: plain socket(2); the descriptor is owned below.
            let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
            if fd < 0 {
                return Err(last_error("creating a raw ICMP socket"));
            }
            // SAFETY: a fresh descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let id = (std::process::id() as u16)
            .wrapping_mul(31)
            .wrapping_add(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        Pinger { fd, target, id }
    }

    /// Sends echo request `seq`.
    pub fn send(&self, seq: u16) -> io::Result<()> {
        let mut packet = [0u8; 16];
        packet[0] = if self.target.is_ipv4() { 8 } else { 128 };
        packet[4..6].copy_from_slice(&self.id.to_be_bytes());
        packet[6..8].copy_from_slice(&seq.to_be_bytes());
        packet[8..16].copy_from_slice(b"patronus");
        if self.target.is_ipv4() {
            // The kernel fills in the ICMPv6 checksum, not the ICMP one.
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        let (storage, len) = sockaddr(self.target);
        // SAFETY: the buffer and the address are valid for the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const storage).cast(),
                len,
            )
        };
        if sent < 0 {
            return Err(last_error("sending an echo request"));
        }
        Ok(())
    }

    /// The sequence number of the next echo reply for this pinger that
    /// arrives before `deadline`; `None` at the deadline.
    pub fn recv_reply(&self, deadline: Instant) -> Option<u16> {
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut poll = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut poll, 1, millis) } <= 0 {
                continue;
            }
            // SAFETY: the buffer is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            // IPv4 raw sockets deliver the IP header; IPv6 ones do not.
            let (icmp, reply_type) = if self.target.is_ipv4() {
                let header = usize::from(buf[0] & 0x0f) * 4;
                (buf.get(header..n).unwrap_or_default(), 0)
            } else {
                (&buf[..n], 129)
            };
            if icmp.len() >= 8
                && icmp[0] == reply_type
                && u16::from_be_bytes([icmp[4], icmp[5]]) == self.id
            {
                return Some(u16::from_be_bytes([icmp[6], icmp[7]]));
            }
        }
    }

    /// One echo request; `true` when its reply arrives within `wait`.
    pub fn ping(&self, seq: u16, wait: Duration) -> bool {
        self.send(seq).expect("sending an echo request");
        let deadline = Instant::now() + wait;
        while let Some(got) = self.recv_reply(deadline) {
            if got == seq {
                return true;
            }
        }
        false
    }
}

fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// A UDP socket bound in `ns` to `addr:port`, with a read timeout.
pub fn udp_listener(ns: &str, addr: &str, port: u16) -> UdpSocket {
    let bind = socket_addr(addr, port);
    let socket = in_netns(ns, move || UdpSocket::bind(bind)).expect("binding a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("setting a read timeout");
    socket
}

/// Sends `message` from namespace `ns` to `addr:port`.
pub fn udp_send(ns: &str, addr: &str, port: u16, message: &'static [u8]) {
    let target = socket_addr(addr, port);
    let any = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    in_netns(ns, move || {
        let socket = UdpSocket::bind(any)?;
        socket.send_to(message, target).map(drop)
    })
    .expect("sending a UDP datagram");
}

/// Whether `socket` receives `message` before its read timeout.
pub fn udp_received(socket: &UdpSocket, message: &[u8]) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == message => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// The `p`-th percentile (0..=100) of `samples` (nearest rank).
pub fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Prints a figure line for the test log, past the test harness's output
/// capture (figures of passing tests must be visible).
pub fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(io::stderr(), "{line}");
}
