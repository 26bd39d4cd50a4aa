//! `patronusc apply | status | stats | unload | load` against the real
//! kernel: two network namespaces joined by a veth pair (documentation
//! addresses), the policy applied on the server side, TCP connections from
//! the client side that succeed or fail as the policy says. The commands
//! run in-process (parsed by the real command line) on a thread that has
//! entered the server namespace with setns(2), which keeps bpffs visible.

mod netns;

use std::path::PathBuf;

use clap::Parser as _;
use netns::{CLIENT, SERVER, Setup, connects, echo_server, echo_works, open_connection, repo_root};
use patronus_cli::cli::{Cli, Command};
use patronus_cli::common::Status;
use patronus_cli::{cmd_apply, cmd_confirm, cmd_log, cmd_stats};
use patronus_runtime::install::{self, Pins};
use patronus_runtime::testing::kernel_or_skip;

/// Server-only policy 2: SSH only. Connections the server opened stay
/// established through conntrack.
const SSH_ONLY: &str = "\
options {
  default   = deny
  conntrack = on
}

allow tcp to port 22 label \"ssh\"
";

#[test]
fn apply_enforces_swaps_keeping_flows_and_unloads() {
    if !kernel_or_skip("apply_enforces_swaps_keeping_flows_and_unloads") {
        return;
    }
    let setup = Setup::new("apply");
    let web = repo_root().join("policies/web.pf");
    let web = web.to_str().expect("a UTF-8 path");
    let dir = tempdir(&setup);
    let ssh_only = dir.join("ssh-only.pf");
    std::fs::write(&ssh_only, SSH_ONLY).expect("writing the policy");
    let broken = dir.join("broken.pf");
    std::fs::write(&broken, "allow tcp to port 99999\n").expect("writing the policy");

    for port in [80, 8080] {
        echo_server(&setup.server, SERVER, port);
    }
    echo_server(&setup.client, CLIENT, 7000);
    assert!(
        connects(&setup.client, SERVER, 8080),
        "no policy yet: 8080 is open"
    );

    // web.pf: 80 open, 8080 closed.
    assert_eq!(
        setup.patronusc(&["apply", web, "-i", &setup.iface]),
        Status::Success
    );
    assert!(setup.pins().installed());
    assert!(connects(&setup.client, SERVER, 80), "web.pf allows port 80");
    assert!(
        !connects(&setup.client, SERVER, 8080),
        "web.pf drops port 8080"
    );

    // A flow the server opens: recorded by the egress program.
    let mut outbound = open_connection(&setup.server, CLIENT, 7000);
    assert!(
        echo_works(&mut outbound, b"before"),
        "the server's own flow works"
    );
    let entries_before = setup.conntrack_entries();
    assert!(entries_before >= 1, "conntrack holds the server's flow");
    let first_prog = setup.xdp_prog_id().expect("the XDP link is pinned");

    // Swap to SSH-only: port 80 closes, the established flow keeps working.
    assert_eq!(
        setup.patronusc(&[
            "apply",
            ssh_only.to_str().expect("UTF-8"),
            "-i",
            &setup.iface
        ]),
        Status::Success
    );
    let second_prog = setup.xdp_prog_id().expect("the XDP link is still pinned");
    assert_ne!(first_prog, second_prog, "the link runs the new program");
    assert!(
        setup.conntrack_entries() >= entries_before,
        "the swap kept the conntrack entries"
    );
    assert!(
        echo_works(&mut outbound, b"after"),
        "the established flow survives the swap"
    );
    assert!(
        !connects(&setup.client, SERVER, 80),
        "SSH-only drops port 80"
    );

    // A policy that does not compile changes nothing.
    assert_eq!(
        setup.patronusc(&["apply", broken.to_str().expect("UTF-8"), "-i", &setup.iface]),
        Status::Failure
    );
    assert_eq!(
        setup.xdp_prog_id(),
        Some(second_prog),
        "the running policy stays"
    );
    assert!(
        !connects(&setup.client, SERVER, 80),
        "still enforcing SSH-only"
    );

    assert_eq!(
        setup.patronusc(&["status", "-i", &setup.iface]),
        Status::Success
    );
    assert_eq!(
        setup.patronusc(&["stats", "-i", &setup.iface, "--json"]),
        Status::Success
    );
    let stats = counters_by_name(&setup);
    assert!(
        stats.get("default").copied().unwrap_or(0) >= 1,
        "the dropped SYNs count as default: {stats:?}"
    );
    assert!(
        stats.get("established").copied().unwrap_or(0) >= 1,
        "the echo reply counts as established: {stats:?}"
    );

    // Concurrent applies queue on the lock; both succeed, one policy runs.
    let ssh_only = ssh_only.to_str().expect("UTF-8");
    let statuses: Vec<Status> = std::thread::scope(|scope| {
        let runs: Vec<_> = [web, ssh_only]
            .into_iter()
            .map(|policy| scope.spawn(|| setup.patronusc(&["apply", policy, "-i", &setup.iface])))
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("an apply thread panicked"))
            .collect()
    });
    assert_eq!(statuses, [Status::Success, Status::Success]);
    assert!(setup.pins().installed());
    assert!(
        !setup.pins().dir.join("maps_new").exists(),
        "no staging pins are left behind"
    );

    // Unload: pins gone, traffic flows again.
    assert_eq!(
        setup.patronusc(&["unload", "-i", &setup.iface]),
        Status::Success
    );
    assert!(!setup.pins().dir.exists(), "unload removes the pins");
    assert!(
        connects(&setup.client, SERVER, 80),
        "no policy: port 80 is open"
    );
    assert_eq!(
        setup.patronusc(&["unload", "-i", &setup.iface]),
        Status::Failure
    );
}

/// Phase counter packets by phase name, read as `stats` reads them.
fn counters_by_name(setup: &Setup) -> std::collections::HashMap<String, u64> {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(setup.state_root.join(&setup.iface).join("meta.json"))
            .expect("the metadata file"),
    )
    .expect("the metadata is JSON");
    let fd = install::open_map(&setup.pins().map("stats")).expect("the stats map is pinned");
    let values = install::read_counters(std::os::fd::AsFd::as_fd(&fd)).expect("reading stats");
    let counters = meta["counters"].as_array().expect("a counters list");
    assert_eq!(counters.len(), values.len(), "the layout matches the map");
    counters
        .iter()
        .zip(values)
        .filter(|(c, _)| c["kind"] == "phase")
        .map(|(c, v)| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                v.first().copied().unwrap_or(0),
            )
        })
        .collect()
}

fn tempdir(setup: &Setup) -> PathBuf {
    let dir = setup.state_root.join("policies");
    std::fs::create_dir_all(&dir).expect("creating the policy directory");
    dir
}

#[test]
fn load_pins_without_attaching_and_records_out_flows() {
    if !kernel_or_skip("load_pins_without_attaching_and_records_out_flows") {
        return;
    }
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/patronus-test-load-{}",
        std::process::id()
    ));
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            install::uninstall(&Pins::new(&self.0));
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let web = repo_root().join("policies/web.pf");
    let argv = [
        "patronusc",
        "load",
        web.to_str().expect("UTF-8"),
        "--pin-dir",
        dir.to_str().expect("UTF-8"),
        "--out",
        "tcp 192.0.2.80:40000 -> 198.51.100.7:443",
        "--out",
        "udp [2001:db8::80]:5000 -> [2001:db8:5::1]:53",
    ];
    let cli = Cli::try_parse_from(argv).expect("the command line parses");
    let Command::Load(args) = &cli.command else {
        panic!("not a load command")
    };
    assert_eq!(
        cmd_apply::run_load(args).expect("load runs"),
        Status::Success
    );
    assert!(dir.join("prog").exists(), "the XDP program is pinned");
    let pins = Pins::new(&dir);
    assert!(!pins.installed(), "nothing is attached");
    for (map, expected) in [("ct_v4", 1), ("ct_v6", 1)] {
        let fd = install::open_map(&pins.map(map)).expect("the map is pinned");
        assert_eq!(
            install::count_entries(std::os::fd::AsFd::as_fd(&fd)).expect("counting"),
            expected,
            "{map} holds the --out flow"
        );
    }
}

/// Rule counter packets by rule identity (label or normalised text).
fn rule_counters(setup: &Setup) -> std::collections::HashMap<String, u64> {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(setup.state_root.join(&setup.iface).join("meta.json"))
            .expect("the metadata file"),
    )
    .expect("the metadata is JSON");
    let fd = install::open_map(&setup.pins().map("stats")).expect("the stats map is pinned");
    let values = install::read_counters(std::os::fd::AsFd::as_fd(&fd)).expect("reading stats");
    let counters = meta["counters"].as_array().expect("a counters list");
    counters
        .iter()
        .zip(values)
        .filter(|(c, _)| c["kind"] == "rule")
        .map(|(c, v)| {
            (
                c["identity"]
                    .as_str()
                    .expect("rules record identity")
                    .to_owned(),
                v.first().copied().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn counters_of_kept_rules_survive_a_replace() {
    if !kernel_or_skip("counters_of_kept_rules_survive_a_replace") {
        return;
    }
    let setup = Setup::new("ctr");
    let dir = tempdir(&setup);
    let before = dir.join("before.pf");
    std::fs::write(
        &before,
        "options { default = deny }\n\
         allow tcp to port 8080 label \"alt\"\n\
         allow tcp to port 80 label \"web\"\n",
    )
    .expect("writing the policy");
    // "web" moves to another index; "alt" goes away.
    let after = dir.join("after.pf");
    std::fs::write(
        &after,
        "options { default = deny }\n\
         allow tcp to port 22 label \"ssh\"\n\
         allow udp to port 53\n\
         allow tcp to port 80 label \"web\"\n",
    )
    .expect("writing the policy");
    for port in [80, 8080] {
        echo_server(&setup.server, SERVER, port);
    }
    let iface = setup.iface.clone();
    assert_eq!(
        setup.patronusc(&["apply", before.to_str().expect("UTF-8"), "-i", &iface]),
        Status::Success
    );
    for port in [80, 80, 8080] {
        assert!(connects(&setup.client, SERVER, port), "port {port} is open");
    }
    let old = rule_counters(&setup);
    let web_before = old["web"];
    assert!(web_before >= 2, "two connections to port 80: {old:?}");
    assert!(old["alt"] >= 1, "one connection to port 8080: {old:?}");

    assert_eq!(
        setup.patronusc(&["apply", after.to_str().expect("UTF-8"), "-i", &iface]),
        Status::Success
    );
    let new = rule_counters(&setup);
    assert!(
        new["web"] >= web_before,
        "the kept rule keeps its count: {web_before} -> {new:?}"
    );
    assert!(
        !new.contains_key("alt"),
        "the removed rule is gone: {new:?}"
    );
    assert_eq!(new["ssh"], 0, "a new rule starts at zero: {new:?}");
    assert_eq!(new["allow udp to port 53"], 0, "{new:?}");
    // The same numbers in the Prometheus exposition: "web" is rule 3 now.
    let argv: Vec<String> = ["patronusc", "stats", "-i", &iface, "--prometheus"]
        .iter()
        .map(|a| (*a).to_owned())
        .chain(setup.roots())
        .collect();
    let cli = Cli::try_parse_from(&argv).expect("the command line parses");
    let Command::Stats(args) = &cli.command else {
        panic!("not a stats command")
    };
    let text = cmd_stats::format_prometheus(&cmd_stats::collect(args).expect("reading stats"));
    let prefix =
        format!("patronus_rule_packets_total{{iface=\"{iface}\",rule=\"3\",label=\"web\",");
    let web_line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no web line in:\n{text}"));
    let exported: u64 = web_line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a counter value");
    assert!(exported >= web_before, "{web_line}");
    assert!(!text.contains("label=\"alt\""), "{text}");
}

/// `patronusc confirm | rollback-watcher ARGS... --pin-root .. --state-root
/// ..` in the server namespace.
fn confirm_cmd(setup: &Setup, args: &[&str]) -> Status {
    let argv: Vec<String> = std::iter::once("patronusc".to_owned())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .chain(setup.roots())
        .collect();
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    netns::in_netns(&setup.server, move || match &cli.command {
        Command::Confirm(a) => cmd_confirm::run_confirm(a),
        Command::RollbackWatcher(a) => cmd_confirm::run_watcher(a),
        other => panic!("not a confirm command: {other:?}"),
    })
    .unwrap_or_else(|e| panic!("patronusc {args:?}: {e}"))
}

fn policy_hash(setup: &Setup) -> String {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(setup.state_root.join(&setup.iface).join("meta.json"))
            .expect("the metadata file"),
    )
    .expect("the metadata is JSON");
    meta["policy_hash"].as_str().expect("a hash").to_owned()
}

/// The token of the apply waiting for confirmation.
fn pending_token(setup: &Setup) -> String {
    let pending: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(setup.state_root.join(&setup.iface).join("pending.json"))
            .expect("an apply is pending"),
    )
    .expect("pending.json is JSON");
    pending["token"].as_str().expect("a token").to_owned()
}

/// What the detached watcher does, run in-process (a spawned watcher
/// would be this test binary, not patronusc): wait 2 s, then roll back
/// unless confirmed.
fn run_watcher(setup: &Setup) -> Status {
    let token = pending_token(setup);
    confirm_cmd(
        setup,
        &[
            "rollback-watcher",
            "-i",
            &setup.iface,
            "--token",
            &token,
            "--after-ms",
            "2000",
        ],
    )
}

#[test]
fn unconfirmed_applies_roll_back_and_confirmed_ones_stay() {
    if !kernel_or_skip("unconfirmed_applies_roll_back_and_confirmed_ones_stay") {
        return;
    }
    let setup = Setup::new("confirm");
    let iface = setup.iface.clone();
    let dir = tempdir(&setup);
    // The fallback policy reads a table file: the rollback must not need
    // it any more (it is deleted before the rollback).
    std::fs::write(dir.join("clients.txt"), "192.0.2.0/24\n").expect("writing the table");
    let web = dir.join("web.pf");
    std::fs::write(
        &web,
        "options { default = deny }\n\
         table clients file \"clients.txt\"\n\
         allow tcp to port 22 label \"ssh\"\n\
         allow tcp from @clients to port 80 label \"web\"\n",
    )
    .expect("writing the policy");
    let ssh_only = dir.join("ssh-only.pf");
    std::fs::write(&ssh_only, SSH_ONLY).expect("writing the policy");
    let (web, ssh_only) = (
        web.to_str().expect("UTF-8").to_owned(),
        ssh_only.to_str().expect("UTF-8").to_owned(),
    );
    echo_server(&setup.server, SERVER, 80);

    assert_eq!(
        setup.patronusc(&["apply", &web, "-i", &iface]),
        Status::Success
    );
    let web_prog = setup.xdp_prog_id().expect("attached");
    let web_hash = policy_hash(&setup);
    assert!(connects(&setup.client, SERVER, 80));

    // Not confirmed: web.pf comes back.
    assert_eq!(
        setup.patronusc(&[
            "apply",
            &ssh_only,
            "-i",
            &iface,
            "--confirm",
            "2s",
            "--no-watcher"
        ]),
        Status::Success
    );
    let ssh_prog = setup.xdp_prog_id().expect("attached");
    assert_ne!(ssh_prog, web_prog);
    assert_ne!(policy_hash(&setup), web_hash);
    assert!(!connects(&setup.client, SERVER, 80), "SSH-only is running");
    std::fs::remove_file(dir.join("clients.txt")).expect("removing the table");
    assert_eq!(run_watcher(&setup), Status::Success);
    let rolled_back = setup.xdp_prog_id().expect("still attached");
    assert_ne!(rolled_back, ssh_prog, "the rollback swapped the program");
    assert_eq!(policy_hash(&setup), web_hash, "web.pf is back");
    assert!(connects(&setup.client, SERVER, 80), "web.pf enforces again");
    let log = std::fs::read_to_string(setup.state_root.join(&iface).join("rollback.log"))
        .expect("the rollback is logged");
    assert!(log.contains("rolled back to"), "{log}");
    assert_eq!(
        confirm_cmd(&setup, &["confirm", "-i", &iface]),
        Status::Failure,
        "nothing is pending after a rollback"
    );

    // Confirmed: SSH-only stays.
    assert_eq!(
        setup.patronusc(&[
            "apply",
            &ssh_only,
            "-i",
            &iface,
            "--confirm",
            "2s",
            "--no-watcher"
        ]),
        Status::Success
    );
    let token = pending_token(&setup);
    let ssh_hash = policy_hash(&setup);
    assert_eq!(
        confirm_cmd(&setup, &["confirm", "-i", &iface]),
        Status::Success
    );
    assert!(
        setup
            .state_root
            .join(&iface)
            .join(format!("confirmed-{token}"))
            .exists(),
        "confirm leaves its marker for the watcher"
    );
    let confirmed_prog = setup.xdp_prog_id();
    assert_eq!(
        confirm_cmd(
            &setup,
            &[
                "rollback-watcher",
                "-i",
                &iface,
                "--token",
                &token,
                "--after-ms",
                "2000",
            ]
        ),
        Status::Success
    );
    assert_eq!(setup.xdp_prog_id(), confirmed_prog, "no rollback");
    assert_eq!(policy_hash(&setup), ssh_hash);
    assert!(!connects(&setup.client, SERVER, 80), "SSH-only stays");

    // Nothing before: an unconfirmed first apply is unloaded.
    assert_eq!(setup.patronusc(&["unload", "-i", &iface]), Status::Success);
    assert_eq!(
        setup.patronusc(&[
            "apply",
            &ssh_only,
            "-i",
            &iface,
            "--confirm",
            "1s",
            "--no-watcher"
        ]),
        Status::Success
    );
    assert_eq!(run_watcher(&setup), Status::Success);
    assert!(
        !setup.pins().installed(),
        "the unconfirmed policy is unloaded"
    );
    // The kernel frees an unpinned link from a work queue: allow it a
    // moment under load.
    assert!(
        (0..3).any(|_| connects(&setup.client, SERVER, 80)),
        "no policy: port 80 is open"
    );
}

#[test]
fn log_prints_the_events_of_log_rules() {
    if !kernel_or_skip("log_prints_the_events_of_log_rules") {
        return;
    }
    let setup = Setup::new("log");
    let iface = setup.iface.clone();
    let policy = tempdir(&setup).join("logged.pf");
    std::fs::write(
        &policy,
        "options { default = deny }\n\
         allow tcp to port 22 label \"ssh\"\n\
         allow tcp to port 80 label \"web\" log\n",
    )
    .expect("writing the policy");
    echo_server(&setup.server, SERVER, 80);
    assert_eq!(
        setup.patronusc(&["apply", policy.to_str().expect("UTF-8"), "-i", &iface]),
        Status::Success
    );
    assert!(connects(&setup.client, SERVER, 80));
    let roots = cmd_apply::Roots {
        pin_root: setup.pin_root.clone(),
        state_root: setup.state_root.clone(),
    };
    let mut lines = Vec::new();
    let read = cmd_log::read_events(
        &roots,
        &iface,
        Some(1),
        Some(std::time::Duration::from_secs(5)),
        &mut |line| {
            lines.push(line);
            Ok(())
        },
    )
    .expect("reading the log");
    assert_eq!(read, 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line.contains(&format!("rule 2 \"web\" pass tcp {CLIENT}:"))
            && line.ends_with(&format!(" -> {SERVER}:80")),
        "{line}"
    );
    // Conntrack decides the rest of the connection (not logged): a second
    // connection gives the command its event; it stops at N.
    assert!(connects(&setup.client, SERVER, 80));
    let argv = [
        "patronusc",
        "log",
        "-i",
        &iface,
        "--count",
        "1",
        "--timeout",
        "5s",
    ];
    let argv: Vec<String> = argv
        .iter()
        .map(|a| (*a).to_owned())
        .chain(setup.roots())
        .collect();
    let cli = Cli::try_parse_from(&argv).expect("the command line parses");
    let Command::Log(args) = &cli.command else {
        panic!("not a log command")
    };
    assert_eq!(cmd_log::run_log(args).expect("log runs"), Status::Success);
}
