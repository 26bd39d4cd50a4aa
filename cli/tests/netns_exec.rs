//! `ip netns exec` gives its command a private /sys without the host's
//! bpffs: an apply there must refuse (exit 2, pointing at `nsenter`) rather
//! than report success for a policy that vanishes when the command exits.

use std::process::Command;

use patronus_runtime::testing::kernel_or_skip;

/// Deletes the namespace even when the test fails.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn apply_under_ip_netns_exec_is_refused_with_a_pointer_to_nsenter() {
    if !kernel_or_skip("apply_under_ip_netns_exec_is_refused_with_a_pointer_to_nsenter") {
        return;
    }
    let ns = Netns(format!("pt-exec-{}", std::process::id()));
    let added = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .expect("ip runs");
    assert!(added.success(), "ip netns add {}", ns.0);
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/web.pf");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            env!("CARGO_BIN_EXE_patronusc"),
            "apply",
            policy,
            "-i",
            "lo",
            // Only `lo` exists there; loopback is refused without it.
            "--force",
        ])
        .output()
        .expect("ip netns exec runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("nsenter --net=/run/netns/{}", ns.0)),
        "stderr: {stderr}"
    );
}
