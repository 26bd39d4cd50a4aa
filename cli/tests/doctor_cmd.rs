//! The built `patronusc doctor`: its JSON shape and exit status, a
//! policy with errors (exit 2), and a user without privileges, for whom
//! the kernel-feature checks are "unknown" with the reason rather than
//! "absent".

mod common;

use common::{TempDir, patronusc};

fn checks(json: &str) -> Vec<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(json).expect("doctor --json is JSON");
    value["checks"].as_array().expect("a checks array").clone()
}

#[test]
fn json_report_and_exit_status() {
    let dir = TempDir::new("doctor-json");
    let out = patronusc(&dir.0, &["doctor", "--json"]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let checks = checks(&out.stdout);
    let ids: Vec<&str> = checks.iter().filter_map(|c| c["id"].as_str()).collect();
    for id in [
        "kernel.jit",
        "kernel.btf",
        "host.bpffs",
        "net.syncookies",
        "kernel.bpf",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(!ids.iter().any(|id| id.starts_with("iface.")), "{ids:?}");
    let mut failed = false;
    for check in &checks {
        let status = check["status"].as_str().expect("a status");
        assert!(
            ["pass", "warn", "fail", "unknown"].contains(&status),
            "{check}"
        );
        failed |= status == "fail";
        // Every warn and fail says how to fix it, every unknown why.
        if status == "warn" || status == "fail" {
            assert!(check["fix"].is_string(), "{check}");
        }
        assert!(
            !check["detail"].as_str().unwrap_or("").is_empty(),
            "{check}"
        );
    }
    assert_eq!(out.code, i32::from(failed), "{}", out.stdout);
}

#[test]
fn a_policy_with_errors_is_an_input_error() {
    let dir = TempDir::new("doctor-bad");
    dir.write("bad.pf", "allow tcp to port 99999\n");
    let out = patronusc(&dir.0, &["doctor", "bad.pf"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("has errors"), "{}", out.stderr);
}

#[test]
fn without_privileges_kernel_features_are_unknown() {
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let dir = TempDir::new("doctor-nonroot");
    let output = if root {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                env!("CARGO_BIN_EXE_patronusc"),
                "doctor",
                "--json",
            ])
            .current_dir(&dir.0)
            .output()
            .expect("running setpriv")
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_patronusc"))
            .args(["doctor", "--json"])
            .output()
            .expect("running patronusc")
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Unprivileged BPF may be allowed on this kernel: then there is
    // nothing to see.
    let checks = checks(&stdout);
    let bpf = checks
        .iter()
        .find(|c| c["id"] == "kernel.bpf")
        .expect("kernel.bpf");
    if bpf["status"] == "pass" {
        return;
    }
    assert_eq!(bpf["status"], "fail", "{bpf}");
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    for check in checks.iter().filter(|c| {
        c["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("kernel.feature."))
    }) {
        assert_eq!(check["status"], "unknown", "{check}");
        assert!(
            check["detail"]
                .as_str()
                .unwrap_or("")
                .contains("not probed"),
            "{check}"
        );
    }
}
