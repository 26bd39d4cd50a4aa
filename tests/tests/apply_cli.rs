//! `patronusc apply` and friends without the kernel: the command line
//! (including the `patronusc POLICY.pf` shorthand) and the refusal of a
//! policy with errors before anything is loaded.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser as _;
use patronus_cli::cli::{Cli, Command};
use patronus_cli::cmd_apply::{self, Mode};
use patronus_cli::common::Status;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn argv(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn a_policy_file_first_means_apply() {
    let web = repo_root().join("policies/web.pf");
    let web = web.to_str().expect("a UTF-8 path");
    let args = patronus_cli::apply_shorthand(argv(&["patronusc", web, "-i", "veth0"]));
    assert_eq!(args, argv(&["patronusc", "apply", web, "-i", "veth0"]));
    let cli = Cli::try_parse_from(args).expect("the shorthand parses");
    let Command::Apply(apply) = cli.command else {
        panic!("the shorthand is not apply: {:?}", cli.command)
    };
    assert_eq!(apply.iface.as_deref(), Some("veth0"));
    assert_eq!(apply.mode, Mode::Auto);
    assert_eq!(apply.roots.pin_root, Path::new("/sys/fs/bpf/patronus"));

    // Subcommands and names that are not policy files stay as they are.
    for args in [
        argv(&["patronusc", "check", web]),
        argv(&["patronusc", "missing.pf"]),
        argv(&["patronusc", "Cargo.toml"]),
    ] {
        assert_eq!(patronus_cli::apply_shorthand(args.clone()), args);
    }
}

#[test]
fn the_subcommands_parse() {
    for (args, ok) in [
        (&["patronusc", "status", "--json"][..], true),
        (&["patronusc", "stats", "-i", "eth0"], true),
        (&["patronusc", "unload", "-i", "eth0"], true),
        (&["patronusc", "unload"], false),
        (
            &[
                "patronusc",
                "load",
                "p.pf",
                "--pin-dir",
                "/sys/fs/bpf/x",
                "--out",
                "tcp 192.0.2.1:1 -> 198.51.100.1:2",
            ],
            true,
        ),
        (&["patronusc", "load", "p.pf"], false),
        (&["patronusc", "apply", "p.pf", "--mode", "generic"], true),
        (&["patronusc", "apply", "p.pf", "--mode", "turbo"], false),
        (&["patronusc", "apply", "p.pf", "--confirm", "90s"], true),
        (&["patronusc", "apply", "p.pf", "--confirm", "0s"], false),
        (&["patronusc", "apply", "p.pf", "--confirm", "soon"], false),
        (&["patronusc", "confirm", "-i", "eth0"], true),
        (&["patronusc", "confirm"], false),
        (&["patronusc", "stats", "--prometheus"], true),
        (&["patronusc", "stats", "--json", "--prometheus"], false),
        (&["patronusc", "stats", "--watch"], true),
        (&["patronusc", "stats", "--watch", "5", "-i", "eth0"], true),
        (&["patronusc", "stats", "--watch", "0"], false),
        (&["patronusc", "stats", "--watch", "--json"], false),
        (&["patronusc", "log", "-i", "eth0", "--count", "3"], true),
        (&["patronusc", "log", "--count", "3"], false),
    ] {
        assert_eq!(Cli::try_parse_from(args).is_ok(), ok, "{args:?}");
    }
}

#[test]
fn the_new_flags_parse_to_their_values() {
    let cli =
        Cli::try_parse_from(["patronusc", "apply", "p.pf", "--confirm", "2m"]).expect("parses");
    let Command::Apply(apply) = cli.command else {
        panic!("not apply")
    };
    assert_eq!(apply.confirm, Some(std::time::Duration::from_secs(120)));
    let cli = Cli::try_parse_from(["patronusc", "stats", "--watch"]).expect("parses");
    let Command::Stats(stats) = cli.command else {
        panic!("not stats")
    };
    assert_eq!(stats.watch, Some(2), "--watch alone redraws every 2 s");
}

#[test]
fn a_policy_with_errors_is_refused_before_loading() {
    let dir = std::env::temp_dir().join(format!("patronus-apply-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    let policy = dir.join("broken.pf");
    std::fs::write(&policy, "allow tcp to port 99999\n").expect("writing the policy");
    let pins = dir.join("pins");
    let state = dir.join("state");
    let cli = Cli::try_parse_from([
        "patronusc",
        "apply",
        policy.to_str().expect("UTF-8"),
        "-i",
        "lo",
        "--pin-root",
        pins.to_str().expect("UTF-8"),
        "--state-root",
        state.to_str().expect("UTF-8"),
    ])
    .expect("the command line parses");
    let Command::Apply(args) = &cli.command else {
        panic!("not apply")
    };
    let status = cmd_apply::run_apply(args).expect("a policy error is not a usage error");
    assert_eq!(status, Status::Failure);
    assert!(!pins.exists(), "nothing was pinned");
    assert!(!state.exists(), "nothing was recorded");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_interface_is_a_usage_error() {
    let web = repo_root().join("policies/web.pf");
    let dir = std::env::temp_dir().join(format!("patronus-apply-iface-{}", std::process::id()));
    let cli = Cli::try_parse_from([
        "patronusc",
        "apply",
        web.to_str().expect("UTF-8"),
        "-i",
        "patronus-none0",
        "--pin-root",
        dir.join("pins").to_str().expect("UTF-8"),
        "--state-root",
        dir.join("state").to_str().expect("UTF-8"),
    ])
    .expect("the command line parses");
    let Command::Apply(args) = &cli.command else {
        panic!("not apply")
    };
    let error = cmd_apply::run_apply(args).expect_err("no such interface");
    assert!(error.message.contains("patronus-none0"), "{error}");
    assert!(!dir.exists(), "nothing was created");
}
