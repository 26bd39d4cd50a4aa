//! `patronusc doctor`: the production checklist and the troubleshooting
//! steps as checks of this host, an interface and a policy. Owns the
//! [`Report`] (a list of [`Check`]s, each pass / warn / fail / unknown
//! with what was found and the command that fixes it); the CLI renders it.
//!
//! - [`judge`]: the decisions, pure functions over parsed facts.
//! - [`probe`]: reading the facts (rtnetlink, generic netlink, ethtool
//!   ioctls, sysfs, procfs), each as the value or why it cannot be known.
//!
//! Kernel features come from [`crate::features`], the map plan of a
//! policy from its compiled object ([`PolicyPlan`]). Every reader acts in
//! the calling thread's network namespace.

pub mod judge;
pub mod probe;

use std::path::Path;

use patronus_codegen::Object;

use crate::error::RuntimeError;
use crate::features::{self, Feature};
use crate::host::{IfaceName, netdev};
use judge::{Bpffs, Fact, PlannedMap};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// Could not be told (no permission, no such file, too old a kernel);
    /// the detail says why.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

/// One check: a stable id (`iface.xdp-native`), what it checks, the
/// outcome, what was found, and the command that fixes a warn or fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn new(
        id: &str,
        title: &str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Check {
        Check {
            id: id.to_owned(),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            fix,
        }
    }
}

/// Every check run, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any check failed (`doctor` exits 1).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// How many checks have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// What a compiled policy asks of the host: kernel features and maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyPlan {
    pub needs: Vec<Feature>,
    pub maps: Vec<PlannedMap>,
}

impl PolicyPlan {
    /// The plan of a compiled policy (its object parsed as `apply` would).
    pub fn of(object: &Object) -> Result<PolicyPlan, RuntimeError> {
        let parsed = crate::loaded::parse_object(&object.elf)?;
        let mut needs = features::needs(&parsed);
        // `apply` always attaches through an XDP link.
        needs.push(Feature::XdpLink);
        let maps = object
            .maps
            .iter()
            .map(|m| PlannedMap {
                name: m.name.clone(),
                map_type: m.map_type,
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries,
            })
            .collect();
        Ok(PolicyPlan { needs, maps })
    }
}

/// What to examine.
#[derive(Clone, Debug, Default)]
pub struct Options<'a> {
    /// The interface to examine (its checks are left out without one).
    pub iface: Option<&'a IfaceName>,
    /// A policy whose features and maps to check against this host.
    pub policy: Option<&'a PolicyPlan>,
    /// Where Patronus pins policies (tells its XDP program from others).
    pub pin_root: Option<&'a Path>,
}

/// Runs every check that applies to `options`.
pub fn run(options: &Options<'_>) -> Report {
    let mut checks = Vec::new();
    checks.push(judge::jit(probe::sysctl("net.core.bpf_jit_enable")));
    checks.push(judge::btf(
        Path::new("/sys/kernel/btf/vmlinux")
            .try_exists()
            .map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}")),
    ));
    checks.push(judge::bpffs(bpffs()));
    checks.push(judge::governor(probe::governors()));
    checks.push(judge::syncookies(probe::sysctl("net.ipv4.tcp_syncookies")));
    checks.extend(feature_checks(options.policy));
    if let Some(plan) = options.policy {
        checks.push(judge::memory(
            &plan.maps,
            crate::sys::possible_cpus()
                .map(|n| n as u64)
                .map_err(|e| format!("possible CPUs: {e}")),
            probe::mem_available(),
        ));
    }
    if let Some(iface) = options.iface {
        checks.extend(interface_checks(iface, options.pin_root));
    }
    Report { checks }
}

fn bpffs() -> Fact<Bpffs> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    // The last mount at a path is the one visible there (mounts stack).
    let mounted = mountinfo
        .lines()
        .rev()
        .find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            (before.split_whitespace().nth(4) == Some("/sys/fs/bpf"))
                .then(|| after.split_whitespace().next() == Some("bpf"))
        })
        .unwrap_or(false);
    let ephemeral = if mounted {
        crate::host::mounts::ephemeral_reason(Path::new("/sys/fs/bpf"))
    } else {
        None
    };
    Ok(Bpffs { mounted, ephemeral })
}

fn feature_checks(policy: Option<&PolicyPlan>) -> Vec<Check> {
    // Without bpf(2) every probe answers "absent": say so instead.
    let usable = crate::probe().map_err(|e| e.to_string());
    let found = features::current();
    let mut checks = vec![match &usable {
        Ok(()) => Check::new(
            "kernel.bpf",
            "loading BPF programs",
            Status::Pass,
            format!(
                "this process loads and test-runs XDP programs (Linux {})",
                found.release
            ),
            None,
        ),
        Err(reason) => Check::new(
            "kernel.bpf",
            "loading BPF programs",
            Status::Fail,
            reason.clone(),
            Some("run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)".to_owned()),
        ),
    }];
    for feature in Feature::ALL {
        let present = match &usable {
            Ok(()) => Ok(found.has(feature)),
            Err(_) => Err("not probed: this process cannot load BPF programs (kernel.bpf)".into()),
        };
        let needed = policy.map(|p| p.needs.contains(&feature));
        checks.push(judge::feature(feature, present, needed, &found.release));
    }
    checks
}

/// The program of Patronus's XDP link pinned in `pins`, if it is attached
/// to `ifindex`; why not known when the pin cannot be read.
fn patronus_program(pins: &crate::install::Pins, ifindex: u32) -> Fact<Option<u32>> {
    use std::os::fd::AsFd as _;
    let path = pins.xdp_link();
    let link = match crate::sys::obj_get(&path) {
        Ok(link) => link,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None);
        }
        Err(e) => return Err(format!("reading `{}`: {e}", path.display())),
    };
    let info = crate::sys::link_info(link.as_fd())
        .map_err(|e| format!("reading `{}`: {e}", path.display()))?;
    Ok((info.ifindex == ifindex).then_some(info.prog_id))
}

fn interface_checks(iface: &IfaceName, pin_root: Option<&Path>) -> Vec<Check> {
    let name = iface.as_str();
    let Some(ifindex) = netdev::ifindex(iface) else {
        return vec![Check::new(
            "iface.exists",
            "the interface",
            Status::Fail,
            format!("no interface `{name}` in this network namespace"),
            Some("ip link show".to_owned()),
        )];
    };
    let mut checks = vec![Check::new(
        "iface.exists",
        "the interface",
        Status::Pass,
        format!("`{name}` has index {ifindex}"),
        None,
    )];
    let driver = probe::driver(name).unwrap_or_else(|_| match netdev::is_loopback(iface) {
        Ok(true) => "loopback".to_owned(),
        _ => "driver unknown".to_owned(),
    });
    let attached = probe::xdp_attached(ifindex);
    let patronus = match pin_root {
        Some(root) => patronus_program(&crate::install::Pins::new(root.join(name)), ifindex),
        None => Ok(None),
    };
    let running_mode = attached
        .as_ref()
        .ok()
        .and_then(|a| a.programs.first().map(|(mode, _)| *mode));
    checks.push(judge::native_xdp(
        name,
        &driver,
        probe::xdp_features(ifindex, &features::current().release),
        running_mode,
    ));
    checks.push(judge::xdp_attached(name, attached, patronus));
    let cpus = probe::online_cpus();
    checks.push(judge::rx_queues(
        name,
        probe::rx_channels(name),
        cpus.clone(),
    ));
    checks.push(judge::irq_affinity(
        name,
        probe::irqs(name, ifindex, &driver),
        cpus,
    ));
    checks.push(judge::offloads(name, probe::active_features(name)));
    checks.push(judge::rings(name, probe::rings(name)));
    checks
}
