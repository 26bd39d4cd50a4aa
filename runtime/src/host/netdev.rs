//! What the kernel says about an interface by name, in this process's
//! (thread's) network namespace: its index and whether it is a loopback
//! device. `/sys/class/net` would describe the namespace sysfs was
//! mounted in, which is not always ours.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::IfaceName;

/// The interface's current index; `None` when no interface has that name.
pub fn ifindex(iface: &IfaceName) -> Option<u32> {
    let name = std::ffi::CString::new(iface.as_str()).ok()?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Whether the interface is a loopback device (`IFF_LOOPBACK`).
pub fn is_loopback(iface: &IfaceName) -> io::Result<bool> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    // IfaceName guarantees at most 15 bytes: the name and its NUL fit.
    for (slot, byte) in request.ifr_name.iter_mut().zip(iface.as_bytes()) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `request`.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    Ok(i32::from(flags) & libc::IFF_LOOPBACK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lo_is_loopback() {
        // Every network namespace has `lo`.
        let lo = IfaceName::new("lo").expect("a valid name");
        assert!(is_loopback(&lo).expect("SIOCGIFFLAGS on lo"));
        assert!(ifindex(&lo).is_some());
        let none = IfaceName::new("pt-nosuch9").expect("a valid name");
        assert!(ifindex(&none).is_none());
    }
}
