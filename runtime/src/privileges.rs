//! Whether this process may load and attach programs at all, judged
//! from its effective capabilities before anything is attempted.

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Why this process cannot load and attach programs, judged from its
/// effective capabilities: attaching needs `CAP_NET_ADMIN`, loading needs
/// `CAP_BPF` (or `CAP_SYS_ADMIN`, which kernels before 5.8 wanted).
/// `None` when it can, or when `/proc` cannot tell (the kernel will).
pub fn missing_privileges() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    missing_in_status(&status)
}

/// [`missing_privileges`] on the text of a `/proc/PID/status` file.
pub fn missing_in_status(status: &str) -> Option<String> {
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())?;
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "loading and attaching eBPF programs needs root (missing {}); run it with sudo",
            missing.join(" and ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_come_from_the_effective_set() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(missing_in_status(root), None);
        let user = "CapPrm:\t000001ffffffffff\nCapEff:\t0000000000000000\n";
        assert_eq!(
            missing_in_status(user).as_deref(),
            Some(
                "loading and attaching eBPF programs needs root (missing CAP_BPF and \
                 CAP_NET_ADMIN); run it with sudo"
            )
        );
        // CAP_NET_ADMIN and CAP_SYS_ADMIN (an older kernel's CAP_BPF).
        let old_style = format!("CapEff:\t{:016x}\n", (1u64 << 12) | (1u64 << 21));
        assert_eq!(missing_in_status(&old_style), None);
        let bpf_only = format!("CapEff:\t{:016x}\n", 1u64 << 39);
        assert!(missing_in_status(&bpf_only).is_some_and(|m| m.contains("missing CAP_NET_ADMIN)")));
        assert_eq!(missing_in_status("no such line"), None);
    }
}
