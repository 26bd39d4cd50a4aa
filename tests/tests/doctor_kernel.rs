//! `patronusc doctor` against the real kernel: one end of a veth pair in
//! a network namespace this test creates, and that namespace's loopback,
//! before and after a policy is applied, and beside an XDP program that
//! is not the doctor's pinned policy. The command line is parsed for
//! real and run in-process on a thread inside the namespace.
//!
//! The snapshot holds each check's id and status; statuses that depend on
//! the machine (kernel version, CPUs, cpufreq, BTF) are written `*` and
//! asserted against what the test reads itself instead. Skipped without a
//! usable kernel, failed instead when PATRONUS_REQUIRE_KERNEL=1.

mod netns;

use clap::Parser as _;
use netns::{Setup, in_netns, repo_root};
use patronus_cli::cli::{Cli, Command};
use patronus_cli::cmd_doctor;
use patronus_cli::common::Status;
use patronus_runtime::doctor::{Check, Report, Status as CheckStatus};
use patronus_runtime::features::{self, Feature};
use patronus_runtime::testing::kernel_or_skip;

/// Checks whose status depends on the machine, not on what the test set up.
const MACHINE_DEPENDENT: [&str; 5] = [
    "kernel.btf",
    "host.cpufreq",
    "iface.xdp-native",
    "iface.rx-queues",
    "iface.rings",
];

/// `doctor ARGS...` parsed as the binary parses it, run in namespace `ns`
/// (`None`: this process's): the report and the exit status.
fn doctor(ns: Option<&str>, args: &[&str]) -> (Report, Status) {
    let argv: Vec<String> = ["patronusc", "doctor"]
        .iter()
        .chain(args)
        .map(|a| (*a).to_owned())
        .collect();
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let run = move || {
        let Command::Doctor(args) = &cli.command else {
            panic!("not doctor: {:?}", cli.command)
        };
        let report = cmd_doctor::report(args).unwrap_or_else(|e| panic!("doctor: {e}"));
        let status = cmd_doctor::run(args).unwrap_or_else(|e| panic!("doctor: {e}"));
        (report, status)
    };
    match ns {
        Some(ns) => in_netns(ns, run),
        None => run(),
    }
}

fn check<'a>(report: &'a Report, id: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#?}"))
}

/// `id status` lines of the checks whose id starts with `prefix`,
/// machine-dependent statuses (and every kernel feature: they follow the
/// kernel's version) written `*`.
fn normalised(report: &Report, prefix: &str) -> String {
    report
        .checks
        .iter()
        .filter(|c| c.id.starts_with(prefix))
        .map(|c| {
            let status = if MACHINE_DEPENDENT.contains(&c.id.as_str())
                || c.id.starts_with("kernel.feature.")
            {
                "*"
            } else {
                c.status.as_str()
            };
            format!("{} {status}\n", c.id)
        })
        .collect()
}

fn online_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs");
    patronus_runtime::sys::parse_cpu_list(text.trim()).expect("a CPU list")
}

#[test]
fn doctor_on_a_veth_and_loopback() {
    if !kernel_or_skip("doctor_on_a_veth_and_loopback") {
        return;
    }
    let setup = Setup::new("doctor");
    let web = repo_root().join("policies/web.pf");
    let web = web.to_str().expect("a UTF-8 path");
    let pin_root = setup.pin_root.display().to_string();
    let iface = setup.iface.clone();
    let args = ["-i", &iface, web, "--pin-root", &pin_root];

    // Nothing attached yet.
    let (before, status) = doctor(Some(&setup.server), &args);
    let found = features::current();
    for feature in Feature::ALL {
        let check = check(&before, &format!("kernel.feature.{}", feature.id()));
        // web.pf: conntrack (the coarse clock), `log` (a ring buffer), and
        // `apply`'s XDP link.
        let needed = matches!(
            feature,
            Feature::XdpLink | Feature::CoarseClock | Feature::Ringbuf
        );
        let expected = if found.has(feature) || !needed {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        };
        assert_eq!(check.status, expected, "{check:?}");
    }
    let native = check(&before, "iface.xdp-native");
    if features::version_at_least(&found.release, (6, 3)) {
        assert_ne!(native.status, CheckStatus::Unknown, "{native:?}");
        assert!(
            native.detail.starts_with("veth: xdp_features"),
            "{native:?}"
        );
    } else {
        assert_eq!(native.status, CheckStatus::Unknown, "{native:?}");
        assert!(native.detail.contains("6.3"), "{native:?}");
    }
    // A veth made without `numrxqueues` has one RX queue.
    let queues = check(&before, "iface.rx-queues");
    let expected = if online_cpus() > 1 {
        CheckStatus::Warn
    } else {
        CheckStatus::Pass
    };
    assert_eq!(queues.status, expected, "{queues:?}");
    assert!(queues.detail.starts_with("1 RX queue"), "{queues:?}");
    // net.core.bpf_jit_enable exists in the initial namespace only; the
    // doctor says so rather than guessing.
    let jit = check(&before, "kernel.jit");
    assert!(jit.detail.contains("host's network namespace"), "{jit:?}");
    assert_eq!(status, Status::failure_if(before.failed()));

    // Applied: the running program is Patronus's.
    setup.patronusc(&["apply", web, "-i", &iface]);
    let (applied, status) = doctor(Some(&setup.server), &args);
    // `apply --mode auto` takes native mode where the veth driver has it
    // (a pass), else generic (a warn: slower).
    let attached = check(&applied, "iface.xdp-attached");
    assert!(
        (attached.status == CheckStatus::Pass && attached.detail.contains("native mode"))
            || (attached.status == CheckStatus::Warn && attached.detail.contains("generic mode")),
        "{attached:?}"
    );
    let prog = setup.xdp_prog_id().expect("the policy is attached");
    assert!(
        attached.detail.contains(&format!("program {prog}")),
        "{attached:?}"
    );
    assert!(!applied.failed(), "{applied:#?}");
    assert_eq!(status, Status::Success);

    // The same program seen from another pin root is someone else's: a
    // failed check and exit 1.
    let elsewhere = setup.state_root.join("other-pins").display().to_string();
    let foreign_args = ["-i", &iface, "--pin-root", &elsewhere];
    let (foreign, status) = doctor(Some(&setup.server), &foreign_args);
    let attached = check(&foreign, "iface.xdp-attached");
    assert_eq!(attached.status, CheckStatus::Fail, "{attached:?}");
    assert!(
        attached
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("xdp off")),
        "{attached:?}"
    );
    assert_eq!(status, Status::Failure);
    setup.patronusc(&["unload", "-i", &iface]);

    // The namespace's loopback and a missing interface.
    let (lo, _) = doctor(Some(&setup.server), &["-i", "lo"]);
    let (missing, status) = doctor(Some(&setup.server), &["-i", "pt-nosuch0"]);
    assert_eq!(status, Status::Failure);

    let snapshot = format!(
        "# veth, web.pf, nothing attached\n{}\n# veth, web.pf applied\n{}\n\
         # veth, another pin root\n{}\n# loopback\n{}\n# no such interface\n{}",
        normalised(&before, ""),
        // The attach mode is asserted above.
        normalised(&applied, "iface.")
            .replace("iface.xdp-attached pass", "iface.xdp-attached *")
            .replace("iface.xdp-attached warn", "iface.xdp-attached *"),
        normalised(&foreign, "iface."),
        normalised(&lo, "iface."),
        normalised(&missing, "iface."),
    );
    insta::assert_snapshot!("doctor_veth_and_loopback", snapshot);
}

/// In the host's namespace the JIT setting is visible: its status is the
/// one the file's value calls for.
#[test]
fn doctor_reads_the_jit_setting() {
    if !kernel_or_skip("doctor_reads_the_jit_setting") {
        return;
    }
    let (report, _) = doctor(None, &[]);
    let jit = check(&report, "kernel.jit");
    let expected = match std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable")
        .as_deref()
        .map(str::trim)
    {
        Ok("1") => CheckStatus::Pass,
        Ok("2") => CheckStatus::Warn,
        Ok("0") => CheckStatus::Fail,
        _ => CheckStatus::Unknown,
    };
    assert_eq!(jit.status, expected, "{jit:?}");
    let bpffs = check(&report, "host.bpffs");
    // The kernel tests pin on /sys/fs/bpf: it is mounted.
    assert_ne!(bpffs.status, CheckStatus::Unknown, "{bpffs:?}");
    assert!(report.checks.iter().all(|c| !c.id.starts_with("iface.")));
}
