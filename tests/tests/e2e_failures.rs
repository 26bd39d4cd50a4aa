//! Failure paths of `patronusc apply` on the real kernel, each checked
//! with traffic: after every failed apply the running policy still
//! enforces (port 8080, which the running policy drops and the rejected
//! one would allow, still times out; port 80 still connects; the XDP link
//! runs the same program). Covered: a policy that does not parse, one the
//! verifier rejects (through the test-only `PATRONUS_TEST_BREAK_VERIFIER`
//! knob of `cmd_apply`), an interface that does not exist, a pin root that
//! is not on bpffs, and pins left behind by crashed runs (stale staging
//! names beside a running policy; a loaded but never attached object;
//! links severed by the interface going away and coming back, after which
//! the next apply attaches afresh).
//!
//! One test only: it sets an environment variable, which no other thread
//! of this process may read at the same time.

mod netns;

use std::io::ErrorKind;
use std::path::Path;

use clap::Parser as _;
use netns::{SERVER, Setup, echo_server, try_connect};
use patronus_cli::cli::{Cli, Command};
use patronus_cli::cmd_apply;
use patronus_cli::common::Status;
use patronus_runtime::install;
use patronus_runtime::sys;
use patronus_runtime::testing::kernel_or_skip;

/// The running policy: web only.
const WEB: &str = "\
options {
  default   = deny
  conntrack = on
}

allow tcp to port 80 label \"web\"
";

/// What every failing apply tries to install: web and 8080.
const WEB_AND_8080: &str = "\
options {
  default   = deny
  conntrack = on
}

allow tcp to port { 80, 8080 } label \"web\"
";

const BREAK_VERIFIER: &str = "PATRONUS_TEST_BREAK_VERIFIER";

/// The running policy is WEB, untouched: same program, same verdicts.
fn assert_still_web(setup: &Setup, prog: u32, after: &str) {
    assert_eq!(
        setup.xdp_prog_id(),
        Some(prog),
        "after {after}: the XDP link runs the same program"
    );
    assert!(
        try_connect(&setup.client, SERVER, 80).is_ok(),
        "after {after}: port 80 still connects"
    );
    match try_connect(&setup.client, SERVER, 8080) {
        Ok(_) => panic!("after {after}: port 8080 connected; the running policy drops it"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::TimedOut, "after {after}: {e}"),
    }
    assert!(
        !setup.pins().dir.join("maps_new").exists() && !setup.pins().dir.join("prog_new").exists(),
        "after {after}: no staging pins are left behind"
    );
}

fn map_id(path: &Path) -> u32 {
    let fd = install::open_map(path).unwrap_or_else(|e| panic!("{e}"));
    sys::map_info(std::os::fd::AsFd::as_fd(&fd))
        .unwrap_or_else(|e| panic!("map info of {}: {e}", path.display()))
        .id
}

/// `patronusc load POLICY --pin-dir DIR` (in-process).
fn load_pinned(policy: &Path, dir: &Path) {
    let argv = [
        "patronusc",
        "load",
        policy.to_str().expect("UTF-8"),
        "--pin-dir",
        dir.to_str().expect("UTF-8"),
    ];
    let cli = Cli::try_parse_from(argv).expect("the command line parses");
    let Command::Load(args) = &cli.command else {
        panic!("not a load command")
    };
    assert_eq!(
        cmd_apply::run_load(args).expect("load runs"),
        Status::Success
    );
}

#[test]
fn failed_applies_leave_the_running_policy_enforcing() {
    if !kernel_or_skip("failed_applies_leave_the_running_policy_enforcing") {
        return;
    }
    let setup = Setup::new("fail");
    echo_server(&setup.server, SERVER, 80);
    echo_server(&setup.server, SERVER, 8080);
    let wider = setup.policy_file("wider", WEB_AND_8080);
    let wider = wider.to_str().expect("UTF-8");
    assert_eq!(
        setup.apply_text("web", WEB).expect("apply"),
        Status::Success
    );
    let prog = setup.xdp_prog_id().expect("attached");
    assert_still_web(&setup, prog, "the first apply");

    // 1. A policy that does not parse: refused before anything is loaded.
    let broken = format!("{WEB_AND_8080}allow tcp to port (\n");
    assert_eq!(
        setup.apply_text("broken", &broken).expect("apply reports"),
        Status::Failure
    );
    assert_still_web(&setup, prog, "a syntax error");

    // 2. The verifier rejects the program: the error carries its log.
    // SAFETY: this process runs this one test; no other thread reads the
    // environment while it is set (the echo servers never do).
    unsafe { std::env::set_var(BREAK_VERIFIER, "1") };
    let rejected = setup.try_patronusc(&["apply", wider, "-i", &setup.iface]);
    // SAFETY: as above.
    unsafe { std::env::remove_var(BREAK_VERIFIER) };
    let message = rejected
        .expect_err("the verifier rejects the broken program")
        .to_string();
    assert!(
        message.contains("verifier log") && message.contains("invalid access to packet"),
        "the error shows the verifier's log lines:\n{message}"
    );
    assert_still_web(&setup, prog, "a verifier rejection");

    // 3. An interface that does not exist.
    let message = setup
        .try_patronusc(&["apply", wider, "-i", "pt-nosuch0"])
        .expect_err("no such interface")
        .to_string();
    assert!(
        message.contains("pt-nosuch0"),
        "the error names the interface: {message}"
    );
    assert_still_web(&setup, prog, "a missing interface");

    // 4. A pin root that is not on bpffs (a plain directory).
    let not_bpffs = setup.state_root.join("not-bpffs");
    std::fs::create_dir_all(&not_bpffs).expect("creating the directory");
    // Root's and 0700, as patronusc trusts a pin root: what is refused here
    // is the file system alone.
    std::fs::set_permissions(
        &not_bpffs,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod 0700");
    let state_root = setup.state_root.display().to_string();
    let message = setup
        .try_patronusc(&[
            "apply",
            wider,
            "-i",
            &setup.iface,
            "--pin-root",
            not_bpffs.to_str().expect("UTF-8"),
            "--state-root",
            &state_root,
        ])
        .expect_err("pins need bpffs")
        .to_string();
    assert!(
        message.contains("not on a bpffs"),
        "the error says why: {message}"
    );
    assert_still_web(&setup, prog, "a pin root off bpffs");

    // 5. Staging pins of a crashed replacement beside the running policy
    // (a whole object's worth, maps of the very same shapes): the next
    // apply replaces them and keeps the running conntrack table.
    let pins = setup.pins();
    let scratch = setup.pin_root.join("scratch");
    load_pinned(Path::new(wider), &scratch);
    std::fs::create_dir_all(pins.dir.join("maps_new")).expect("creating maps_new");
    for (from, to) in [
        (scratch.join("maps/ct_v4"), pins.dir.join("maps_new/ct_v4")),
        (scratch.join("maps/stats"), pins.dir.join("maps_new/stats")),
        (scratch.join("prog"), pins.dir.join("prog_new")),
    ] {
        std::fs::rename(&from, &to)
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
    }
    install::uninstall(&install::Pins::new(&scratch));
    let ct_v4 = map_id(&pins.map("ct_v4"));
    assert_eq!(
        setup
            .try_patronusc(&["apply", wider, "-i", &setup.iface])
            .expect("apply over stale staging pins"),
        Status::Success
    );
    assert!(
        try_connect(&setup.client, SERVER, 8080).is_ok(),
        "the new policy runs"
    );
    // Stale staging pins from a crashed replace are cleared, never renamed
    // over the live ones: the running conntrack map stays the same map.
    assert_eq!(
        map_id(&pins.map("ct_v4")),
        ct_v4,
        "a stale staged ct_v4 pin must not replace the live one"
    );
    assert!(
        !pins.dir.join("maps_new").exists() && !pins.dir.join("prog_new").exists(),
        "the stale staging pins are gone"
    );

    // 6. A first apply that crashed after pinning and before attaching:
    // pins without a link. The next apply attaches cleanly.
    assert_eq!(
        setup.patronusc(&["unload", "-i", &setup.iface]),
        Status::Success
    );
    let web = setup.policy_file("web", WEB);
    load_pinned(&web, &pins.dir);
    assert!(!pins.installed(), "loaded, not attached");
    assert!(
        try_connect(&setup.client, SERVER, 8080).is_ok(),
        "nothing filters yet"
    );
    assert_eq!(
        setup
            .try_patronusc(&["apply", web.to_str().expect("UTF-8"), "-i", &setup.iface])
            .expect("apply over pins without a link"),
        Status::Success
    );
    let prog = setup.xdp_prog_id().expect("attached");
    assert_still_web(&setup, prog, "an apply over a crashed first apply");

    // 7. The interface went away under the running policy (its link pins
    // stay, severed) and came back under the same name: nothing runs, so
    // the next apply clears the dead pins and attaches afresh.
    setup.delete_veth();
    setup.create_veth();
    let web = web.to_str().expect("UTF-8");
    assert_eq!(
        setup.try_patronusc(&["apply", web, "-i", &setup.iface]),
        Ok(Status::Success),
        "an apply over links severed by the interface going away"
    );
    let prog = setup.xdp_prog_id().expect("attached");
    assert_still_web(&setup, prog, "an apply over severed links");
}
