//! The doctor's decisions: pure functions from what was read (already
//! parsed) to a [`Check`]. No I/O here, so every rule is unit-tested
//! without root. A fact that could not be read arrives as `Err(reason)`
//! and becomes [`Status::Unknown`] with that reason, never a guess.

use patronus_codegen::insn::kernel::map_type;

use super::{Check, Status};
use crate::features::Feature;

/// A fact read from the host, or why it could not be.
pub type Fact<T> = Result<T, String>;

fn unknown(id: &str, title: &str, reason: String) -> Check {
    Check::new(id, title, Status::Unknown, reason, None)
}

/// `net.core.bpf_jit_enable` (the text of its /proc file).
pub fn jit(value: Fact<String>) -> Check {
    let (id, title) = ("kernel.jit", "BPF JIT compiler");
    let value = match value {
        Ok(value) => value,
        Err(reason) => return unknown(id, title, reason),
    };
    let fix = Some("sysctl -w net.core.bpf_jit_enable=1".to_owned());
    match value.trim() {
        "1" => Check::new(id, title, Status::Pass, "net.core.bpf_jit_enable = 1", None),
        "0" => Check::new(
            id,
            title,
            Status::Fail,
            "net.core.bpf_jit_enable = 0: programs run in the interpreter, many times slower \
             per packet",
            fix,
        ),
        "2" => Check::new(
            id,
            title,
            Status::Warn,
            "net.core.bpf_jit_enable = 2: the JIT writes every compiled image to the kernel log \
             (a debugging mode)",
            fix,
        ),
        other => unknown(
            id,
            title,
            format!("net.core.bpf_jit_enable reads {other:?}, not 0, 1 or 2"),
        ),
    }
}

/// Whether `/sys/kernel/btf/vmlinux` exists.
pub fn btf(present: Fact<bool>) -> Check {
    let (id, title) = ("kernel.btf", "kernel BTF (/sys/kernel/btf/vmlinux)");
    match present {
        Err(reason) => unknown(id, title, reason),
        Ok(true) => Check::new(
            id,
            title,
            Status::Pass,
            "/sys/kernel/btf/vmlinux present",
            None,
        ),
        Ok(false) => Check::new(
            id,
            title,
            Status::Warn,
            "no /sys/kernel/btf/vmlinux: policies load (they carry their own BTF), but \
             `bpftool prog profile` and BTF-based tracing of them do not work",
            Some("use a kernel built with CONFIG_DEBUG_INFO_BTF=y".to_owned()),
        ),
    }
}

/// What the mount table says about `/sys/fs/bpf` (and the pin root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bpffs {
    /// A bpf file system is mounted exactly at `/sys/fs/bpf`.
    pub mounted: bool,
    /// Why pins there would vanish with this mount namespace, if they would.
    pub ephemeral: Option<String>,
}

pub fn bpffs(facts: Fact<Bpffs>) -> Check {
    let (id, title) = ("host.bpffs", "bpffs mounted at /sys/fs/bpf");
    match facts {
        Err(reason) => unknown(id, title, reason),
        Ok(Bpffs { mounted: false, .. }) => Check::new(
            id,
            title,
            Status::Fail,
            "no bpf file system at /sys/fs/bpf: `apply` cannot pin the policy's links and maps",
            Some("mount -t bpf bpf /sys/fs/bpf".to_owned()),
        ),
        Ok(Bpffs {
            ephemeral: Some(reason),
            ..
        }) => Check::new(id, title, Status::Fail, reason, None),
        Ok(Bpffs { .. }) => Check::new(id, title, Status::Pass, "bpf on /sys/fs/bpf", None),
    }
}

/// The scaling governor of each CPU that has cpufreq (`(cpu, governor)`).
pub fn governor(governors: Fact<Vec<(u32, String)>>) -> Check {
    let (id, title) = ("host.cpufreq", "CPU frequency governor");
    let governors = match governors {
        Err(reason) => return unknown(id, title, reason),
        Ok(g) if g.is_empty() => {
            return unknown(
                id,
                title,
                "no CPU has /sys/devices/system/cpu/cpuN/cpufreq (no cpufreq driver, as in most \
                 virtual machines): the frequency is not under this kernel's control"
                    .into(),
            );
        }
        Ok(g) => g,
    };
    let slow: Vec<String> = governors
        .iter()
        .filter(|(_, g)| g != "performance")
        .map(|(cpu, g)| format!("cpu{cpu}: {g}"))
        .collect();
    if slow.is_empty() {
        Check::new(
            id,
            title,
            Status::Pass,
            format!("performance on all {} CPUs", governors.len()),
            None,
        )
    } else {
        Check::new(
            id,
            title,
            Status::Warn,
            format!(
                "not `performance` on {} of {} CPUs ({}): latency rises while a CPU clocks up \
                 under a burst",
                slow.len(),
                governors.len(),
                abbreviate(&slow, 4)
            ),
            Some("cpupower frequency-set -g performance".to_owned()),
        )
    }
}

/// `net.ipv4.tcp_syncookies` of this network namespace.
pub fn syncookies(value: Fact<String>) -> Check {
    let (id, title) = (
        "net.syncookies",
        "TCP SYN cookies (net.ipv4.tcp_syncookies)",
    );
    let value = match value {
        Ok(value) => value,
        Err(reason) => return unknown(id, title, reason),
    };
    match value.trim() {
        "1" => Check::new(
            id,
            title,
            Status::Pass,
            "1: cookies when the SYN queue overflows",
            None,
        ),
        "2" => Check::new(
            id,
            title,
            Status::Pass,
            "2: cookies for every SYN (TCP options such as window scaling are lost)",
            None,
        ),
        "0" => Check::new(
            id,
            title,
            Status::Warn,
            "0: a SYN flood the policy passes fills the SYN queue and refuses real clients",
            Some("sysctl -w net.ipv4.tcp_syncookies=1".to_owned()),
        ),
        other => unknown(
            id,
            title,
            format!("net.ipv4.tcp_syncookies reads {other:?}"),
        ),
    }
}

/// One kernel feature: present or not, and whether the policy needs it
/// (`None`: no policy given).
pub fn feature(
    feature: Feature,
    present: Fact<bool>,
    needed: Option<bool>,
    release: &str,
) -> Check {
    let id = format!("kernel.feature.{}", feature.id());
    let title = feature.name();
    let present = match present {
        Ok(present) => present,
        Err(reason) => return unknown(&id, title, reason),
    };
    let upgrade = || Some(format!("upgrade to Linux {} or later", feature.since()));
    match (present, needed) {
        (true, Some(true)) => Check::new(
            &id,
            title,
            Status::Pass,
            "present; the policy uses it",
            None,
        ),
        (true, _) => Check::new(&id, title, Status::Pass, "present", None),
        // tcx has a fallback (`clsact`): its absence costs nothing.
        (false, _) if feature == Feature::Tcx => Check::new(
            &id,
            title,
            Status::Pass,
            format!(
                "absent (Linux {release}; tcx is {}+): the egress program goes into a clsact \
                 filter instead",
                feature.since()
            ),
            None,
        ),
        (false, Some(true)) => Check::new(
            &id,
            title,
            Status::Fail,
            format!(
                "absent (Linux {release}; needs {}+) and the policy uses it: `apply` refuses it",
                feature.since()
            ),
            upgrade(),
        ),
        (false, Some(false)) => Check::new(
            &id,
            title,
            Status::Pass,
            format!(
                "absent (Linux {release}; needs {}+); the policy does not use it",
                feature.since()
            ),
            None,
        ),
        (false, None) => Check::new(
            &id,
            title,
            Status::Warn,
            format!(
                "absent (Linux {release}; needs {}+): policies that use it cannot be applied",
                feature.since()
            ),
            upgrade(),
        ),
    }
}

/// One planned map of a policy, as sized by the compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMap {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// `BPF_MAP_TYPE_*` whose values are stored once per possible CPU.
const PER_CPU_TYPES: [u32; 3] = [
    map_type::PERCPU_HASH,
    map_type::PERCPU_ARRAY,
    map_type::LRU_PERCPU_HASH,
];
const RINGBUF: u32 = map_type::RINGBUF;

/// Bytes of keys and values `map` can hold at most: `(key + value) ×
/// max_entries`, the value once per possible CPU (rounded to 8 bytes, as
/// the kernel stores it) for per-CPU maps, the buffer size for a ring
/// buffer. A lower bound: the kernel's per-element overhead comes on top.
pub fn map_bytes(map: &PlannedMap, possible_cpus: u64) -> u64 {
    if map.map_type == RINGBUF {
        return u64::from(map.max_entries);
    }
    let value = if PER_CPU_TYPES.contains(&map.map_type) {
        u64::from(map.value_size).next_multiple_of(8) * possible_cpus
    } else {
        u64::from(map.value_size)
    };
    (u64::from(map.key_size) + value) * u64::from(map.max_entries)
}

/// The policy's planned map memory against `MemAvailable` (bytes).
pub fn memory(maps: &[PlannedMap], possible_cpus: Fact<u64>, available: Fact<u64>) -> Check {
    let (id, title) = ("policy.memory", "memory for the policy's maps");
    let (cpus, available) = match (possible_cpus, available) {
        (Ok(c), Ok(a)) => (c, a),
        (Err(reason), _) | (_, Err(reason)) => return unknown(id, title, reason),
    };
    let mut sized: Vec<(u64, &str)> = maps
        .iter()
        .map(|m| (map_bytes(m, cpus), m.name.as_str()))
        .collect();
    let planned: u64 = sized.iter().map(|(b, _)| b).sum();
    sized.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let largest: Vec<String> = sized
        .iter()
        .take(3)
        .map(|(b, n)| format!("{n} {}", mib(*b)))
        .collect();
    let detail = format!(
        "{} planned in {} maps (largest: {}; per-CPU values × {cpus} CPUs; kernel overhead \
         not counted) against {} available",
        mib(planned),
        maps.len(),
        largest.join(", "),
        mib(available)
    );
    let fix = Some(
        "lower the policy's conntrack/rate-limit sizes (`options { … }`) or free memory".to_owned(),
    );
    if planned > available {
        Check::new(id, title, Status::Fail, detail, fix)
    } else if planned > available / 2 {
        // A replace holds the old policy's maps and the new ones at once.
        Check::new(
            id,
            title,
            Status::Warn,
            format!("{detail}: over half, and a replace briefly needs twice"),
            fix,
        )
    } else {
        Check::new(id, title, Status::Pass, detail, None)
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// `NETDEV_XDP_ACT_*` bits of `xdp_features`, by name.
const XDP_ACT_NAMES: [(u64, &str); 7] = [
    (1, "basic"),
    (1 << 1, "redirect"),
    (1 << 2, "ndo-xmit"),
    (1 << 3, "xsk-zerocopy"),
    (1 << 4, "hw-offload"),
    (1 << 5, "rx-sg"),
    (1 << 6, "ndo-xmit-sg"),
];

/// Native XDP support: the driver's `xdp_features` (Linux 6.3), and the
/// attach mode of a program already running there (native proves it).
pub fn native_xdp(
    iface: &str,
    driver: &str,
    features: Fact<u64>,
    attached: Option<XdpMode>,
) -> Check {
    let (id, title) = ("iface.xdp-native", "native XDP support of the driver");
    let generic = || {
        Some(format!(
            "no software fix: put the policy on a NIC whose driver has native XDP; on \
             `{iface}`, `apply` runs it in generic mode"
        ))
    };
    match features {
        Ok(bits) => {
            let names: Vec<&str> = XDP_ACT_NAMES
                .iter()
                .filter(|(bit, _)| bits & bit != 0)
                .map(|(_, n)| *n)
                .collect();
            if bits & 1 != 0 {
                Check::new(
                    id,
                    title,
                    Status::Pass,
                    format!("{driver}: xdp_features {}", names.join(", ")),
                    None,
                )
            } else {
                Check::new(
                    id,
                    title,
                    Status::Warn,
                    format!(
                        "{driver}: xdp_features {}: no native XDP, the policy runs in generic \
                         mode (slower; drops after the socket buffer is allocated)",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                    generic(),
                )
            }
        }
        Err(reason) => match attached {
            Some(XdpMode::Native) => Check::new(
                id,
                title,
                Status::Pass,
                format!("{driver}: a program runs in native mode now ({reason})"),
                None,
            ),
            _ => unknown(id, title, format!("{driver}: {reason}")),
        },
    }
}

/// How an XDP program is attached (`IFLA_XDP_ATTACHED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Generic,
    Offload,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::Offload => "offload",
        }
    }
}

/// The XDP programs on an interface (`IFLA_XDP`): (mode, program id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpAttached {
    pub programs: Vec<(XdpMode, u32)>,
}

/// The XDP programs running on the interface, against Patronus's pinned
/// link there (`patronus`: its program id, if a policy is applied).
pub fn xdp_attached(
    iface: &str,
    attached: Fact<XdpAttached>,
    patronus: Fact<Option<u32>>,
) -> Check {
    let (id, title) = ("iface.xdp-attached", "XDP programs on the interface");
    let attached = match attached {
        Ok(a) => a,
        Err(reason) => return unknown(id, title, reason),
    };
    let patronus = match patronus {
        Ok(p) => p,
        Err(_) if attached.programs.is_empty() => None,
        Err(reason) => {
            let programs: Vec<String> = attached
                .programs
                .iter()
                .map(|(mode, prog)| format!("program {prog} ({})", mode.name()))
                .collect();
            return unknown(
                id,
                title,
                format!(
                    "{} attached; whose is unknown: Patronus's pinned link cannot be read \
                     ({reason})",
                    programs.join(", ")
                ),
            );
        }
    };
    let ours = |prog: u32| patronus == Some(prog);
    let others: Vec<String> = attached
        .programs
        .iter()
        .filter(|(_, prog)| !ours(*prog))
        .map(|(mode, prog)| format!("program {prog} ({})", mode.name()))
        .collect();
    if !others.is_empty() {
        return Check::new(
            id,
            title,
            Status::Fail,
            format!(
                "another XDP program is attached: {}; `apply` cannot attach beside it",
                others.join(", ")
            ),
            Some(format!(
                "bpftool net show dev {iface}; then detach it (`ip link set dev {iface} xdp off`) \
                 if nothing needs it"
            )),
        );
    }
    match attached.programs.first() {
        None => Check::new(id, title, Status::Pass, "none attached", None),
        Some((XdpMode::Generic, prog)) => Check::new(
            id,
            title,
            Status::Warn,
            format!("the Patronus policy (program {prog}) runs in generic mode"),
            Some(format!(
                "if the driver has native XDP: `patronusc unload -i {iface}`, fix what made the \
                 native attach fail (see the offload checks), apply again"
            )),
        ),
        Some((mode, prog)) => Check::new(
            id,
            title,
            Status::Pass,
            format!(
                "the Patronus policy (program {prog}) runs in {} mode",
                mode.name()
            ),
            None,
        ),
    }
}

/// RX queues (what the driver reports in use) against online CPUs.
pub fn rx_queues(iface: &str, queues: Fact<u32>, cpus: Fact<u32>) -> Check {
    let (id, title) = ("iface.rx-queues", "RX queues vs CPUs (RSS)");
    let (queues, cpus) = match (queues, cpus) {
        (Ok(q), Ok(c)) => (q, c),
        (Err(reason), _) | (_, Err(reason)) => return unknown(id, title, reason),
    };
    if queues >= cpus {
        Check::new(
            id,
            title,
            Status::Pass,
            format!("{queues} RX queues for {cpus} CPUs"),
            None,
        )
    } else {
        Check::new(
            id,
            title,
            Status::Warn,
            format!(
                "{queues} RX queue{} for {cpus} CPUs: XDP runs on the CPUs that take the \
                 queues' interrupts, so at most {queues} CPU{} filter",
                if queues == 1 { "" } else { "s" },
                if queues == 1 { "" } else { "s" },
            ),
            Some(format!(
                "ethtool -L {iface} combined {cpus} (if the NIC has that many queues)"
            )),
        )
    }
}

/// The CPUs each of the NIC's IRQs may run on (`smp_affinity_list`).
pub fn irq_affinity(iface: &str, irqs: Fact<Vec<(u32, String)>>, cpus: Fact<u32>) -> Check {
    let (id, title) = ("iface.irq-affinity", "IRQ affinity of the NIC's queues");
    let (irqs, cpus) = match (irqs, cpus) {
        (Ok(i), Ok(c)) => (i, c),
        (Err(reason), _) | (_, Err(reason)) => return unknown(id, title, reason),
    };
    if irqs.is_empty() {
        return unknown(id, title, format!("no IRQs of `{iface}` found"));
    }
    let list: Vec<String> = irqs
        .iter()
        .map(|(irq, cpus)| format!("{irq}→{cpus}"))
        .collect();
    let first = &irqs[0].1;
    let pinned_together =
        irqs.len() > 1 && irqs.iter().all(|(_, c)| c == first) && !first.contains(['-', ',']);
    if pinned_together && cpus > 1 {
        Check::new(
            id,
            title,
            Status::Warn,
            format!(
                "all {} IRQs on CPU {first}: one CPU takes every queue",
                irqs.len()
            ),
            Some(format!(
                "spread them: `systemctl start irqbalance`, or write one CPU per queue to \
                 /proc/irq/N/smp_affinity_list ({iface}'s IRQs: {})",
                abbreviate(&list, 8)
            )),
        )
    } else {
        Check::new(
            id,
            title,
            Status::Pass,
            format!(
                "{} IRQ{}: {}",
                irqs.len(),
                if irqs.len() == 1 { "" } else { "s" },
                abbreviate(&list, 8)
            ),
            None,
        )
    }
}

/// Offloads by ethtool feature name (`rx-lro`, `rx-gro-hw`) that are on.
pub fn offloads(iface: &str, active: Fact<Vec<String>>) -> Check {
    let (id, title) = (
        "iface.offloads",
        "offloads that block native XDP (LRO, GRO-HW)",
    );
    let active = match active {
        Ok(a) => a,
        Err(reason) => return unknown(id, title, reason),
    };
    let mut blocking = Vec::new();
    let mut fixes = Vec::new();
    for (feature, short) in [("rx-lro", "lro"), ("rx-gro-hw", "rx-gro-hw")] {
        if active.iter().any(|a| a == feature) {
            blocking.push(feature);
            fixes.push(format!("{short} off"));
        }
    }
    if blocking.is_empty() {
        Check::new(id, title, Status::Pass, "LRO and GRO-HW off", None)
    } else {
        Check::new(
            id,
            title,
            Status::Warn,
            format!(
                "{} on: drivers refuse native XDP with merged receive buffers, so `apply` falls \
                 back to generic mode",
                blocking.join(" and ")
            ),
            Some(format!("ethtool -K {iface} {}", fixes.join(" "))),
        )
    }
}

/// RX ring size in use and the driver's maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rings {
    pub rx: u32,
    pub rx_max: u32,
}

/// Below this many descriptors (or the maximum, if smaller) a burst
/// overflows the ring before XDP has run.
pub const RX_RING_TARGET: u32 = 1024;

pub fn rings(iface: &str, rings: Fact<Rings>) -> Check {
    let (id, title) = ("iface.rings", "RX ring size");
    let rings = match rings {
        Ok(r) => r,
        Err(reason) => return unknown(id, title, reason),
    };
    let target = RX_RING_TARGET.min(rings.rx_max);
    if rings.rx >= target {
        Check::new(
            id,
            title,
            Status::Pass,
            format!("rx {} (max {})", rings.rx, rings.rx_max),
            None,
        )
    } else {
        Check::new(
            id,
            title,
            Status::Warn,
            format!(
                "rx {} of max {}: a burst overflows the ring (rx_missed) before XDP sees it",
                rings.rx, rings.rx_max
            ),
            Some(format!("ethtool -G {iface} rx {target}")),
        )
    }
}

/// The first `n` items, then how many more.
fn abbreviate(items: &[String], n: usize) -> String {
    if items.len() <= n {
        items.join(", ")
    } else {
        format!("{}, … {} more", items[..n].join(", "), items.len() - n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(check: &Check) -> Status {
        check.status
    }

    #[test]
    fn jit_values() {
        assert_eq!(status(&jit(Ok("1\n".into()))), Status::Pass);
        assert_eq!(status(&jit(Ok("0\n".into()))), Status::Fail);
        assert_eq!(status(&jit(Ok("2\n".into()))), Status::Warn);
        let check = jit(Err("no such file".into()));
        assert_eq!(check.status, Status::Unknown);
        assert_eq!(check.detail, "no such file");
        assert!(jit(Ok("0".into())).fix.is_some());
    }

    #[test]
    fn bpffs_decisions() {
        let ok = Bpffs {
            mounted: true,
            ephemeral: None,
        };
        assert_eq!(status(&bpffs(Ok(ok))), Status::Pass);
        let missing = bpffs(Ok(Bpffs {
            mounted: false,
            ephemeral: None,
        }));
        assert_eq!(missing.status, Status::Fail);
        assert_eq!(missing.fix.as_deref(), Some("mount -t bpf bpf /sys/fs/bpf"));
        let private = Bpffs {
            mounted: true,
            ephemeral: Some("private".into()),
        };
        assert_eq!(status(&bpffs(Ok(private))), Status::Fail);
    }

    #[test]
    fn governors() {
        assert_eq!(status(&governor(Ok(vec![]))), Status::Unknown);
        let all = vec![(0, "performance".into()), (1, "performance".into())];
        assert_eq!(status(&governor(Ok(all))), Status::Pass);
        let mixed = governor(Ok(vec![(0, "performance".into()), (1, "powersave".into())]));
        assert_eq!(mixed.status, Status::Warn);
        assert!(mixed.detail.contains("cpu1: powersave"), "{}", mixed.detail);
    }

    #[test]
    fn syncookie_values() {
        assert_eq!(status(&syncookies(Ok("1".into()))), Status::Pass);
        assert_eq!(status(&syncookies(Ok("2".into()))), Status::Pass);
        assert_eq!(status(&syncookies(Ok("0".into()))), Status::Warn);
    }

    #[test]
    fn features_fail_only_when_the_policy_needs_them() {
        let f = Feature::BloomFilter;
        assert_eq!(
            status(&feature(f, Ok(true), Some(true), "6.1")),
            Status::Pass
        );
        assert_eq!(
            status(&feature(f, Ok(false), Some(true), "5.10")),
            Status::Fail
        );
        assert_eq!(
            status(&feature(f, Ok(false), Some(false), "5.10")),
            Status::Pass
        );
        assert_eq!(status(&feature(f, Ok(false), None, "5.10")), Status::Warn);
        assert_eq!(
            status(&feature(Feature::Tcx, Ok(false), None, "6.1")),
            Status::Pass
        );
        let failed = feature(f, Ok(false), Some(true), "5.10");
        assert!(failed.detail.contains("5.16"), "{}", failed.detail);
        assert_eq!(failed.id, "kernel.feature.bloom-filter");
        assert_eq!(
            status(&feature(f, Err("no permission".into()), Some(true), "6.1")),
            Status::Unknown
        );
    }

    #[test]
    fn map_sizes_count_per_cpu_values_per_cpu() {
        let hash = PlannedMap {
            name: "h".into(),
            map_type: 1,
            key_size: 4,
            value_size: 4,
            max_entries: 100,
        };
        assert_eq!(map_bytes(&hash, 8), 800);
        let per_cpu = PlannedMap {
            map_type: 6,
            value_size: 12,
            ..hash.clone()
        };
        // value rounded to 16, × 8 CPUs, + key 4, × 100.
        assert_eq!(map_bytes(&per_cpu, 8), (4 + 16 * 8) * 100);
        let ring = PlannedMap {
            map_type: 27,
            key_size: 0,
            value_size: 0,
            max_entries: 4096,
            ..hash.clone()
        };
        assert_eq!(map_bytes(&ring, 8), 4096);
        let maps = [hash];
        assert_eq!(status(&memory(&maps, Ok(8), Ok(10_000))), Status::Pass);
        assert_eq!(status(&memory(&maps, Ok(8), Ok(1_000))), Status::Warn);
        assert_eq!(status(&memory(&maps, Ok(8), Ok(799))), Status::Fail);
        assert_eq!(
            status(&memory(&maps, Err("x".into()), Ok(799))),
            Status::Unknown
        );
    }

    #[test]
    fn native_xdp_from_features_or_the_running_mode() {
        assert_eq!(
            status(&native_xdp("eth0", "ixgbe", Ok(0b111), None)),
            Status::Pass
        );
        let veth = native_xdp("v0", "veth", Ok(0), None);
        assert_eq!(veth.status, Status::Warn);
        assert!(veth.detail.contains("none"), "{}", veth.detail);
        let old = native_xdp("eth0", "ixgbe", Err("Linux < 6.3".into()), None);
        assert_eq!(old.status, Status::Unknown);
        assert!(old.detail.contains("Linux < 6.3"));
        assert_eq!(
            status(&native_xdp(
                "eth0",
                "ixgbe",
                Err("old".into()),
                Some(XdpMode::Native)
            )),
            Status::Pass
        );
        assert_eq!(
            status(&native_xdp(
                "eth0",
                "ixgbe",
                Err("old".into()),
                Some(XdpMode::Generic)
            )),
            Status::Unknown
        );
    }

    #[test]
    fn attached_programs() {
        let none = XdpAttached::default();
        let check =
            |a: &XdpAttached, p: Fact<Option<u32>>| xdp_attached("v", Ok(a.clone()), p).status;
        assert_eq!(check(&none, Ok(None)), Status::Pass);
        assert_eq!(check(&none, Err("EACCES".into())), Status::Pass);
        let ours = XdpAttached {
            programs: vec![(XdpMode::Native, 7)],
        };
        assert_eq!(check(&ours, Ok(Some(7))), Status::Pass);
        assert_eq!(check(&ours, Ok(None)), Status::Fail);
        // Unreadable pins: whose program it is cannot be told.
        assert_eq!(check(&ours, Err("EACCES".into())), Status::Unknown);
        let generic = XdpAttached {
            programs: vec![(XdpMode::Generic, 7)],
        };
        assert_eq!(check(&generic, Ok(Some(7))), Status::Warn);
    }

    #[test]
    fn queues_irqs_offloads_rings() {
        assert_eq!(status(&rx_queues("v", Ok(1), Ok(4))), Status::Warn);
        assert_eq!(status(&rx_queues("v", Ok(4), Ok(4))), Status::Pass);
        assert_eq!(
            status(&rx_queues("v", Err("x".into()), Ok(4))),
            Status::Unknown
        );

        let together = vec![(30, "2".into()), (31, "2".into())];
        assert_eq!(
            status(&irq_affinity("e", Ok(together), Ok(4))),
            Status::Warn
        );
        let spread = vec![(30, "0".into()), (31, "1".into())];
        assert_eq!(status(&irq_affinity("e", Ok(spread), Ok(4))), Status::Pass);
        let all = vec![(30, "0-3".into()), (31, "0-3".into())];
        assert_eq!(status(&irq_affinity("e", Ok(all), Ok(4))), Status::Pass);
        assert_eq!(
            status(&irq_affinity("e", Ok(vec![]), Ok(4))),
            Status::Unknown
        );

        let lro = offloads("e", Ok(vec!["rx-gro".into(), "rx-lro".into()]));
        assert_eq!(lro.status, Status::Warn);
        assert_eq!(lro.fix.as_deref(), Some("ethtool -K e lro off"));
        assert_eq!(
            status(&offloads("e", Ok(vec!["rx-gro".into()]))),
            Status::Pass
        );

        assert_eq!(
            status(&rings(
                "e",
                Ok(Rings {
                    rx: 256,
                    rx_max: 4096
                })
            )),
            Status::Warn
        );
        assert_eq!(
            status(&rings(
                "e",
                Ok(Rings {
                    rx: 512,
                    rx_max: 512
                })
            )),
            Status::Pass
        );
        assert_eq!(
            rings(
                "e",
                Ok(Rings {
                    rx: 256,
                    rx_max: 4096
                })
            )
            .fix
            .as_deref(),
            Some("ethtool -G e rx 1024")
        );
    }
}
