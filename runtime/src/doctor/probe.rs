//! Reading what the doctor judges: rtnetlink (`IFLA_XDP`), the generic
//! netlink `netdev` family (`xdp_features`), ethtool ioctls (driver,
//! channels, rings, features), sysfs and procfs. Each reader returns the
//! parsed fact or why it could not be read (`Err(reason)`), never a
//! default. Sockets and ioctls act in the calling thread's network
//! namespace; sysfs describes the namespace it was mounted in, so sysfs
//! readers first check that it shows our interface.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::judge::{Fact, Rings, XdpAttached, XdpMode};
use crate::attach::{Message, Netlink, attributes};

const RTM_GETLINK: u16 = 18;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GRINGPARAM: u32 = 0x10;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

fn os_reason(what: &str, error: &io::Error) -> String {
    let hint = match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => " (run as root)",
        Some(libc::EOPNOTSUPP) => " (the driver does not report it)",
        _ => "",
    };
    format!("{what}: {error}{hint}")
}

/// The XDP programs attached to `ifindex`, from `RTM_GETLINK`'s `IFLA_XDP`.
pub fn xdp_attached(ifindex: u32) -> Fact<XdpAttached> {
    let socket = Netlink::open_protocol(libc::NETLINK_ROUTE)
        .map_err(|e| os_reason("opening an rtnetlink socket", &e))?;
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut header = [0u8; 16];
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    let request = Message::with_header(RTM_GETLINK, 0, &header);
    let answers = socket
        .query(&request)
        .map_err(|e| os_reason("RTM_GETLINK", &e))?;
    let link = answers
        .iter()
        .find(|a| a.len() >= 16)
        .ok_or_else(|| "RTM_GETLINK: no link in the answer".to_owned())?;
    let Some((_, xdp)) = attributes(&link[16..])
        .into_iter()
        .find(|(kind, _)| *kind == IFLA_XDP)
    else {
        return Err("the kernel's link message has no IFLA_XDP".into());
    };
    Ok(parse_ifla_xdp(xdp))
}

fn u32_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// The programs of a nested `IFLA_XDP` attribute.
pub fn parse_ifla_xdp(xdp: &[u8]) -> XdpAttached {
    let attrs = attributes(xdp);
    let get = |want: u16| {
        attrs
            .iter()
            .find(|(kind, _)| *kind == want)
            .and_then(|(_, v)| u32_of(v))
            .filter(|id| *id != 0)
    };
    let mode = attrs
        .iter()
        .find(|(kind, _)| *kind == IFLA_XDP_ATTACHED)
        .and_then(|(_, v)| v.first().copied())
        .unwrap_or(0);
    let single = |mode: XdpMode| get(IFLA_XDP_PROG_ID).map(|id| vec![(mode, id)]);
    let programs = match mode {
        XDP_ATTACHED_DRV => single(XdpMode::Native),
        XDP_ATTACHED_SKB => single(XdpMode::Generic),
        XDP_ATTACHED_HW => single(XdpMode::Offload),
        XDP_ATTACHED_MULTI => Some(
            [
                (XdpMode::Native, IFLA_XDP_DRV_PROG_ID),
                (XdpMode::Generic, IFLA_XDP_SKB_PROG_ID),
                (XdpMode::Offload, IFLA_XDP_HW_PROG_ID),
            ]
            .into_iter()
            .filter_map(|(mode, attr)| get(attr).map(|id| (mode, id)))
            .collect(),
        ),
        _ => None,
    };
    XdpAttached {
        programs: programs.unwrap_or_default(),
    }
}

/// The driver's `xdp_features` (`NETDEV_A_DEV_XDP_FEATURES` of the
/// generic netlink family `netdev`, Linux 6.3).
pub fn xdp_features(ifindex: u32, release: &str) -> Fact<u64> {
    let socket = Netlink::open_protocol(libc::NETLINK_GENERIC)
        .map_err(|e| os_reason("opening a generic netlink socket", &e))?;
    let mut family = Message::with_header(GENL_ID_CTRL, 0, &[CTRL_CMD_GETFAMILY, 1, 0, 0]);
    family.attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0");
    let answers = match socket.query(&family) {
        Ok(answers) => answers,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Err(format!(
                "this kernel (Linux {release}) has no `netdev` generic netlink family, which \
                 reports xdp_features since Linux 6.3"
            ));
        }
        Err(e) => return Err(os_reason("resolving the netdev netlink family", &e)),
    };
    let id = answers
        .iter()
        .filter(|a| a.len() >= 4)
        .flat_map(|a| attributes(&a[4..]))
        .find(|(kind, _)| *kind == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, v)| Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?)))
        .ok_or_else(|| "the netdev family's id is missing from the answer".to_owned())?;
    let mut request = Message::with_header(id, 0, &[NETDEV_CMD_DEV_GET, 1, 0, 0]);
    request.attr(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes());
    let answers = socket
        .query(&request)
        .map_err(|e| os_reason("NETDEV_CMD_DEV_GET", &e))?;
    answers
        .iter()
        .filter(|a| a.len() >= 4)
        .flat_map(|a| attributes(&a[4..]))
        .find(|(kind, _)| *kind == NETDEV_A_DEV_XDP_FEATURES)
        .and_then(|(_, v)| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
        .ok_or_else(|| "the kernel's answer has no xdp_features".to_owned())
}

/// An `AF_INET` datagram socket for ethtool ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SIOCETHTOOL` on `iface` with `data` (its first word the command).
fn ethtool(iface: &str, data: &mut [u8]) -> io::Result<()> {
    let socket = ioctl_socket()?;
    // SAFETY: ifreq is plain data.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    // The caller passes a validated name (at most 15 bytes).
    for (slot, byte) in request.ifr_name.iter_mut().zip(iface.as_bytes()) {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: the kernel reads the command from `data` and writes at most
    // the structure that command defines, which the caller sized.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL as _, &mut request) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn word(data: &[u8], index: usize) -> u32 {
    let at = index * 4;
    u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The driver's name (`ETHTOOL_GDRVINFO`).
pub fn driver(iface: &str) -> Fact<String> {
    // struct ethtool_drvinfo: cmd, then driver[32], ...: 196 bytes.
    let mut data = [0u8; 196];
    data[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    ethtool(iface, &mut data).map_err(|e| os_reason("ETHTOOL_GDRVINFO", &e))?;
    Ok(c_string(&data[4..36]))
}

/// RX queues in use: the driver's RX plus combined channels
/// (`ETHTOOL_GCHANNELS`).
pub fn rx_channels(iface: &str) -> Fact<u32> {
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other,
    // max_combined, rx_count, tx_count, other_count, combined_count.
    let mut data = [0u8; 36];
    data[..4].copy_from_slice(&ETHTOOL_GCHANNELS.to_ne_bytes());
    ethtool(iface, &mut data).map_err(|e| os_reason("ETHTOOL_GCHANNELS (RX queues)", &e))?;
    Ok(word(&data, 5) + word(&data, 8))
}

/// RX ring size and its maximum (`ETHTOOL_GRINGPARAM`).
pub fn rings(iface: &str) -> Fact<Rings> {
    // struct ethtool_ringparam: cmd, rx_max, rx_mini_max, rx_jumbo_max,
    // tx_max, rx, rx_mini, rx_jumbo, tx.
    let mut data = [0u8; 36];
    data[..4].copy_from_slice(&ETHTOOL_GRINGPARAM.to_ne_bytes());
    ethtool(iface, &mut data).map_err(|e| os_reason("ETHTOOL_GRINGPARAM (ring sizes)", &e))?;
    Ok(Rings {
        rx: word(&data, 5),
        rx_max: word(&data, 1),
    })
}

/// The names of the netdev features that are active (`ETHTOOL_GFEATURES`,
/// named through the `ETH_SS_FEATURES` string set).
pub fn active_features(iface: &str) -> Fact<Vec<String>> {
    let reason = |what: &'static str| move |e: io::Error| os_reason(what, &e);
    // struct ethtool_sset_info: cmd, reserved, u64 sset_mask, u32 data[1].
    let mut info = [0u8; 20];
    info[..4].copy_from_slice(&ETHTOOL_GSSET_INFO.to_ne_bytes());
    info[8..16].copy_from_slice(&(1u64 << ETH_SS_FEATURES).to_ne_bytes());
    ethtool(iface, &mut info).map_err(reason("ETHTOOL_GSSET_INFO"))?;
    let count = word(&info, 4) as usize;
    if count == 0 || count > 4096 {
        return Err(format!("ETHTOOL_GSSET_INFO: {count} feature names"));
    }
    // struct ethtool_gstrings: cmd, string_set, len, data[len * 32].
    let mut strings = vec![0u8; 12 + count * ETH_GSTRING_LEN];
    strings[..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    strings[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
    strings[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
    ethtool(iface, &mut strings).map_err(reason("ETHTOOL_GSTRINGS"))?;
    // struct ethtool_gfeatures: cmd, size, then per 32 features
    // {available, requested, active, never_changed}.
    let blocks = count.div_ceil(32);
    let mut features = vec![0u8; 8 + blocks * 16];
    features[..4].copy_from_slice(&ETHTOOL_GFEATURES.to_ne_bytes());
    features[4..8].copy_from_slice(&(blocks as u32).to_ne_bytes());
    ethtool(iface, &mut features).map_err(reason("ETHTOOL_GFEATURES"))?;
    Ok((0..count)
        .filter(|bit| word(&features, 2 + (bit / 32) * 4 + 2) & (1 << (bit % 32)) != 0)
        .map(|bit| c_string(&strings[12 + bit * ETH_GSTRING_LEN..][..ETH_GSTRING_LEN]))
        .collect())
}

/// `/sys/class/net/IFACE`, when the mounted sysfs shows this namespace's
/// interface of that name (same index); else why not.
pub fn sysfs_dir(iface: &str, ifindex: u32) -> Fact<std::path::PathBuf> {
    let dir = std::path::Path::new("/sys/class/net").join(iface);
    let index = std::fs::read_to_string(dir.join("ifindex")).map_err(|_| {
        format!(
            "/sys/class/net/{iface} is missing: the mounted sysfs belongs to another network \
             namespace (run in a mount namespace with this network namespace's sysfs, e.g. \
             `ip netns exec`)"
        )
    })?;
    if index.trim().parse::<u32>().ok() != Some(ifindex) {
        return Err(format!(
            "/sys/class/net/{iface} describes another interface of that name (the mounted sysfs \
             belongs to another network namespace)"
        ));
    }
    Ok(dir)
}

/// The IRQs of the NIC behind `iface` and their `smp_affinity_list`:
/// its PCI MSI vectors (`device/msi_irqs`), else the `/proc/interrupts`
/// lines naming the interface or its device (`virtio2-input.0`).
pub fn irqs(iface: &str, ifindex: u32, driver: &str) -> Fact<Vec<(u32, String)>> {
    let dir = sysfs_dir(iface, ifindex)?;
    let Ok(device) = std::fs::read_link(dir.join("device")) else {
        return Err(format!(
            "`{iface}` ({driver}) has no device in sysfs: a virtual interface, no IRQs of its own"
        ));
    };
    let mut numbers: Vec<u32> = match std::fs::read_dir(dir.join("device/msi_irqs")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    if numbers.is_empty() {
        let interrupts = std::fs::read_to_string("/proc/interrupts")
            .map_err(|e| os_reason("/proc/interrupts", &e))?;
        let device = device
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(iface)
            .to_owned();
        numbers = irqs_naming(&interrupts, &[iface, &device]);
    }
    numbers.sort_unstable();
    let mut irqs = Vec::new();
    for irq in numbers {
        let path = format!("/proc/irq/{irq}/smp_affinity_list");
        match std::fs::read_to_string(&path) {
            Ok(cpus) => irqs.push((irq, cpus.trim().to_owned())),
            // An MSI vector without a handler (unused queue) has no
            // directory: not one of the NIC's live IRQs.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(os_reason(&path, &e)),
        }
    }
    Ok(irqs)
}

/// IRQ numbers of the `/proc/interrupts` lines whose action is one of
/// `names` or starts with one and a separator (`eth0-TxRx-0`,
/// `virtio2-input.0`); only the receive queues' (`rx`, `input`) when
/// some are named so, since the control IRQs do not carry packets.
pub fn irqs_naming(interrupts: &str, names: &[&str]) -> Vec<u32> {
    let named: Vec<(u32, &str)> = interrupts
        .lines()
        .filter_map(|line| {
            let (number, rest) = line.trim_start().split_once(':')?;
            let number = number.parse().ok()?;
            let action = rest.split_whitespace().last()?;
            names
                .iter()
                .any(|name| {
                    action == *name
                        || action
                            .strip_prefix(name)
                            .is_some_and(|tail| tail.starts_with(['-', '_', '@']))
                })
                .then_some((number, action))
        })
        .collect();
    let is_rx = |action: &str| {
        let lower = action.to_ascii_lowercase();
        lower.contains("rx") || lower.contains("input")
    };
    let rx_only = named.iter().any(|(_, action)| is_rx(action));
    named
        .into_iter()
        .filter(|(_, action)| !rx_only || is_rx(action))
        .map(|(number, _)| number)
        .collect()
}

/// `(cpu, governor)` of every CPU with cpufreq.
pub fn governors() -> Fact<Vec<(u32, String)>> {
    let entries = std::fs::read_dir("/sys/devices/system/cpu")
        .map_err(|e| os_reason("/sys/devices/system/cpu", &e))?;
    let mut governors = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(cpu) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cpu"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(governor) = std::fs::read_to_string(entry.path().join("cpufreq/scaling_governor"))
        {
            governors.push((cpu, governor.trim().to_owned()));
        }
    }
    governors.sort();
    Ok(governors)
}

/// Online CPUs (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> Fact<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map_err(|e| os_reason("/sys/devices/system/cpu/online", &e))?;
    crate::sys::parse_cpu_list(text.trim())
        .map(|n| n as u32)
        .ok_or_else(|| format!("cannot parse /sys/devices/system/cpu/online: {text:?}"))
}

/// A sysctl's text from `/proc/sys`, as this thread's namespaces see it.
pub fn sysctl(name: &str) -> Fact<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().to_owned()),
        // net.core.bpf_jit_enable exists in the initial network namespace
        // only.
        Err(e) if e.kind() == io::ErrorKind::NotFound && name.starts_with("net.core.") => Err(
            format!("{path} is missing: {name} is only visible from the host's network namespace"),
        ),
        Err(e) => Err(os_reason(&path, &e)),
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn mem_available() -> Fact<u64> {
    let text =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| os_reason("/proc/meminfo", &e))?;
    parse_mem_available(&text).ok_or_else(|| "no MemAvailable in /proc/meminfo".to_owned())
}

pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(payload);
        while bytes.len() % 4 != 0 {
            bytes.push(0);
        }
        bytes
    }

    #[test]
    fn ifla_xdp_modes() {
        let mut single = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_SKB]);
        single.extend(attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes()));
        assert_eq!(
            parse_ifla_xdp(&single).programs,
            vec![(XdpMode::Generic, 42)]
        );
        let mut multi = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_MULTI]);
        multi.extend(attr(IFLA_XDP_DRV_PROG_ID, &7u32.to_ne_bytes()));
        multi.extend(attr(IFLA_XDP_SKB_PROG_ID, &8u32.to_ne_bytes()));
        assert_eq!(
            parse_ifla_xdp(&multi).programs,
            vec![(XdpMode::Native, 7), (XdpMode::Generic, 8)]
        );
        let none = attr(IFLA_XDP_ATTACHED, &[0]);
        assert!(parse_ifla_xdp(&none).programs.is_empty());
    }

    #[test]
    fn interrupt_lines_by_interface_name() {
        let text = "\
           CPU0       CPU1
  24:          0          0  PCI-MSI 512000-edge      ahci[0000:00:1f.2]
 130:        100          0  PCI-MSI 1048576-edge      eth0-TxRx-0
 131:          0        100  PCI-MSI 1048577-edge      eth0-TxRx-1
 132:          0          0  PCI-MSI 1048578-edge      eth0
 133:          0          0  PCI-MSI 1048579-edge      eth01-TxRx-0
NMI:          0          0   Non-maskable interrupts
";
        // The queues' IRQs (TxRx), not the one named plainly `eth0`.
        assert_eq!(irqs_naming(text, &["eth0"]), vec![130, 131]);
        assert_eq!(irqs_naming(text, &["ahci"]), Vec::<u32>::new());
        let virtio = "\
 37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
 38:          0       5223 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       4029          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 40:       4029          0 PCI-MSIX-0000:00:04.0   2-edge      virtio3-input.0
 41:          0          0 PCI-MSIX-0000:00:05.0   0-edge      eth9
";
        assert_eq!(irqs_naming(virtio, &["eth0", "virtio2"]), vec![38]);
        // No receive queue named: every IRQ of the device.
        assert_eq!(irqs_naming(virtio, &["eth9", "0000:00:05.0"]), vec![41]);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:  16000 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }
}
