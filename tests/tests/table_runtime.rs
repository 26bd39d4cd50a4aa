//! Incremental apply and `patronusc table add|del` against the real
//! kernel: a policy applied to a veth in a network namespace, verdicts read
//! by test runs of the pinned (running) XDP program, program identity by
//! the pinned link's program id.

mod netns;

use std::os::fd::AsFd as _;

use clap::Parser as _;
use netns::{Setup, in_netns};
use patronus_cli::cli::{Cli, Command};
use patronus_cli::common::{CliError, Status};
use patronus_cli::{cmd_apply, cmd_confirm, cmd_table};
use patronus_runtime::ProgramKind;
use patronus_runtime::install;
use patronus_runtime::sys;
use patronus_runtime::testing::{ipv4_frame, kernel_or_skip};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Twenty prefixes: enough for a map (more than the 16 IPv4 prefixes that
/// compile to inline compares), too few for DIR-24 arrays.
const BLOCK: &str = "203.0.113.0/28, 203.0.113.16/28, 203.0.113.32/28, 203.0.113.48/28, \
                     203.0.113.64/28, 198.51.100.0/30, 100.64.0.0/24, 100.64.1.0/24, \
                     100.64.2.0/24, 100.64.3.0/24, 100.64.4.0/24, 100.64.5.0/24, \
                     100.64.6.0/24, 100.64.7.0/24, 100.64.8.0/24, 100.64.9.0/24, \
                     100.64.10.0/24, 100.64.11.0/24, 100.64.12.0/24, 100.64.13.0/24";

fn policy(extra_prefixes: &str, extra_rules: &str) -> String {
    format!(
        "table block {{ {BLOCK}{extra_prefixes} }}\n\
         table other {{ 198.51.100.64/28, 198.51.100.80/28, 198.51.100.96/28, 198.51.100.112/28, \
         198.51.100.128/28 }}\n\
         options {{\n  default = allow\n}}\n\
         deny from @block\n{extra_rules}"
    )
}

/// Runs any `patronusc` command line in the server namespace.
fn patronusc(setup: &Setup, args: &[&str]) -> Result<Status, CliError> {
    let mut argv: Vec<String> = std::iter::once("patronusc".to_owned())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect();
    argv.extend(setup.roots());
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    in_netns(&setup.server, move || match &cli.command {
        Command::Apply(a) => cmd_apply::run_apply(a),
        Command::Table(a) => cmd_table::run(a),
        Command::RollbackWatcher(a) => cmd_confirm::run_watcher(a),
        other => panic!("unexpected command {other:?}"),
    })
}

fn ok(setup: &Setup, args: &[&str]) {
    assert_eq!(
        patronusc(setup, args).unwrap_or_else(|e| panic!("{args:?}: {e}")),
        Status::Success,
        "{args:?}"
    );
}

fn prog_id(setup: &Setup) -> u32 {
    install::pinned_link(&setup.pins().xdp_link())
        .expect("a policy is attached")
        .prog_id
}

/// The running XDP program's verdict on a UDP packet from `src`.
fn verdict(setup: &Setup, src: [u8; 4]) -> u32 {
    let prog = sys::obj_get(&setup.pins().prog(ProgramKind::Xdp)).expect("the pinned program");
    let frame = ipv4_frame(17, src, [192, 0, 2, 80], 4000, 53);
    sys::prog_test_run(prog.as_fd(), &frame, 1)
        .expect("a test run")
        .retval
}

fn apply(setup: &Setup, name: &str, text: &str) {
    let path = setup.policy_file(name, text);
    ok(
        setup,
        &["apply", path.to_str().expect("UTF-8"), "-i", &setup.iface],
    );
}

#[test]
fn incremental_apply_keeps_the_program_and_changes_verdicts() {
    if !kernel_or_skip("incremental_apply_keeps_the_program_and_changes_verdicts") {
        return;
    }
    let setup = Setup::new("incr");
    apply(&setup, "p1", &policy("", ""));
    let id = prog_id(&setup);
    assert_eq!(verdict(&setup, [203, 0, 113, 5]), XDP_DROP);
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_PASS);

    // One prefix more, one less: same program, new verdicts.
    let changed = policy(", 192.0.2.0/28", "").replace("198.51.100.0/30", "198.51.100.4/30");
    apply(&setup, "p2", &changed);
    assert_eq!(prog_id(&setup), id, "the program was reloaded");
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_DROP);
    assert_eq!(verdict(&setup, [198, 51, 100, 1]), XDP_PASS);
    assert_eq!(verdict(&setup, [198, 51, 100, 5]), XDP_DROP);

    // An unconfirmed in-place apply rolls back in place too, and a
    // run-time table change made meanwhile goes with it.
    let p4 = setup.policy_file("p4", &policy(", 10.1.0.0/16", ""));
    ok(
        &setup,
        &[
            "apply",
            p4.to_str().expect("UTF-8"),
            "-i",
            &setup.iface,
            "--confirm",
            "60s",
            "--no-watcher",
        ],
    );
    ok(
        &setup,
        &["table", "add", "-i", &setup.iface, "block", "10.2.0.0/16"],
    );
    assert_eq!(verdict(&setup, [10, 1, 0, 1]), XDP_DROP);
    assert_eq!(verdict(&setup, [10, 2, 0, 1]), XDP_DROP);
    let pending = std::fs::read_to_string(setup.state_root.join(&setup.iface).join("pending.json"))
        .expect("an apply is pending");
    let pending: serde_json::Value = serde_json::from_str(&pending).expect("JSON");
    let token = pending["token"].as_str().expect("a token").to_owned();
    let iface = setup.iface.clone();
    ok(
        &setup,
        &[
            "rollback-watcher",
            "-i",
            &iface,
            "--token",
            &token,
            "--after-ms",
            "0",
        ],
    );
    assert_eq!(prog_id(&setup), id, "the rollback reloaded the program");
    assert_eq!(verdict(&setup, [10, 1, 0, 1]), XDP_PASS);
    assert_eq!(verdict(&setup, [10, 2, 0, 1]), XDP_PASS);
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_DROP, "back to p2");

    // Another rule: new code, a full replace.
    apply(&setup, "p3", &policy("", "deny udp to port 53\n"));
    assert_ne!(prog_id(&setup), id, "new code must load a new program");
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_DROP);
}

#[test]
fn table_add_and_del_change_the_running_policy() {
    if !kernel_or_skip("table_add_and_del_change_the_running_policy") {
        return;
    }
    let setup = Setup::new("tbl");
    apply(&setup, "p1", &policy("", ""));
    let id = prog_id(&setup);
    let iface = setup.iface.clone();

    // Fast path: one update in the LPM trie.
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_PASS);
    ok(
        &setup,
        &["table", "add", "-i", &iface, "block", "192.0.2.0/24"],
    );
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_DROP);
    assert_eq!(prog_id(&setup), id);
    // Adding it again is a no-op; deleting it twice fails the second time.
    ok(
        &setup,
        &["table", "add", "-i", &iface, "block", "192.0.2.0/24"],
    );
    ok(
        &setup,
        &["table", "del", "-i", &iface, "block", "192.0.2.0/24"],
    );
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_PASS);
    assert_eq!(
        patronusc(
            &setup,
            &["table", "del", "-i", &iface, "block", "192.0.2.0/24"]
        )
        .ok(),
        Some(Status::Failure)
    );

    // Bad input: errors, nothing changed.
    for args in [
        &[
            "table",
            "add",
            "-i",
            iface.as_str(),
            "block",
            "192.0.2.1/24",
        ][..],
        &["table", "add", "-i", iface.as_str(), "nope", "192.0.2.0/24"],
        &[
            "table",
            "add",
            "-i",
            iface.as_str(),
            "block",
            "192.0.2.0/40",
        ],
        &["table", "add", "-i", "nosuchif0", "block", "192.0.2.0/24"],
    ] {
        let error = patronusc(&setup, args).expect_err("bad input must fail");
        assert!(!error.to_string().is_empty());
    }
    let error = patronusc(
        &setup,
        &["table", "add", "-i", &iface, "block", "192.0.2.1/24"],
    )
    .expect_err("host bits");
    assert!(
        error.to_string().contains("did you mean 192.0.2.0/24"),
        "{error}"
    );
    assert_eq!(verdict(&setup, [192, 0, 2, 1]), XDP_PASS);

    // A full apply from files forgets run-time changes.
    ok(
        &setup,
        &["table", "add", "-i", &iface, "block", "192.0.2.0/24"],
    );
    apply(&setup, "p1", &policy("", ""));
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_PASS);
}

#[test]
fn mixed_tables_are_recompiled_like_the_equivalent_policy() {
    if !kernel_or_skip("mixed_tables_are_recompiled_like_the_equivalent_policy") {
        return;
    }
    // `other` shares the deny phase's source map with `block`, with
    // another rule bitmap: no fast path for either.
    let rules = "deny tcp from @other to port 22\n";
    let setup = Setup::new("mix");
    apply(&setup, "p1", &policy("", rules));
    let iface = setup.iface.clone();
    ok(
        &setup,
        &["table", "add", "-i", &iface, "other", "192.0.2.0/28"],
    );
    ok(
        &setup,
        &["table", "add", "-i", &iface, "block", "198.51.100.64/28"],
    );
    let samples: [[u8; 4]; 5] = [
        [192, 0, 2, 9],
        [198, 51, 100, 70],
        [198, 51, 100, 100],
        [203, 0, 113, 1],
        [10, 1, 2, 3],
    ];
    let ports = [22u16, 53];
    let run_all = |setup: &Setup| -> Vec<u32> {
        let prog = sys::obj_get(&setup.pins().prog(ProgramKind::Xdp)).expect("the pinned program");
        samples
            .iter()
            .flat_map(|src| ports.iter().map(move |p| (*src, *p)))
            .map(|(src, port)| {
                let frame = ipv4_frame(6, src, [192, 0, 2, 80], 4000, port);
                sys::prog_test_run(prog.as_fd(), &frame, 1)
                    .expect("a test run")
                    .retval
            })
            .collect()
    };
    let runtime = run_all(&setup);
    // The same contents written in the file.
    let equivalent = policy(", 198.51.100.64/28", rules)
        .replace("198.51.100.128/28 }", "198.51.100.128/28, 192.0.2.0/28 }");
    apply(&setup, "p2", &equivalent);
    assert_eq!(run_all(&setup), runtime);
    // 192.0.2.9 to port 22 (other), 198.51.100.70 anywhere (block).
    assert_eq!(runtime[0], XDP_DROP);
    assert_eq!(runtime[1], XDP_PASS);
    assert_eq!(runtime[2], XDP_DROP);
    assert_eq!(runtime[3], XDP_DROP);
}

/// A table big enough for DIR-24 arrays in front of its trie
/// (`codegen::layout::dir24`): a file change applies in place (the array is
/// rewritten through its mapping) and `table add|del` take the recompile
/// path, since one trie entry alone would not change a verdict.
#[test]
fn dir24_tables_change_in_place_and_at_run_time() {
    if !kernel_or_skip("dir24_tables_change_in_place_and_at_run_time") {
        return;
    }
    let setup = Setup::new("d24");
    // 5,000 prefixes of 10.0.0.0/8: /24s, and /28s inside other /24s
    // (fallback slots) so both paths of the lookup are used.
    let table = |extra: &str| {
        let mut text = String::new();
        for i in 0..5_000u32 {
            let (b, c) = (i / 250, i % 250);
            if i % 2 == 0 {
                text.push_str(&format!("10.{b}.{c}.0/24\n"));
            } else {
                text.push_str(&format!("10.{}.{c}.16/28\n", 100 + b));
            }
        }
        text.push_str(extra);
        text
    };
    let table_path = setup.policy_file("big.txt", &table(""));
    let policy = format!(
        "table big file \"{}\"\noptions {{\n  default = allow\n}}\ndeny from @big\n",
        table_path.display()
    );
    apply(&setup, "d1", &policy);
    let id = prog_id(&setup);
    assert_eq!(verdict(&setup, [10, 0, 0, 7]), XDP_DROP, "a /24 slot");
    assert_eq!(verdict(&setup, [10, 100, 1, 17]), XDP_DROP, "inside a /28");
    assert_eq!(
        verdict(&setup, [10, 100, 1, 40]),
        XDP_PASS,
        "fallback slot, outside the /28"
    );
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_PASS);

    // The file gains a /24 and a /28: same code, arrays rewritten in place.
    setup.policy_file("big.txt", &table("192.0.2.0/24\n10.100.1.32/28\n"));
    apply(&setup, "d2", &policy);
    assert_eq!(prog_id(&setup), id, "the program was reloaded");
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_DROP);
    assert_eq!(verdict(&setup, [10, 100, 1, 40]), XDP_DROP);
    assert_eq!(verdict(&setup, [10, 100, 1, 60]), XDP_PASS);

    // At run time, through the arrays: a /32 where nothing was, a /28
    // inside a covered /24 (its slot turns to the trie, which keeps the
    // /24's answer), both deleted again.
    ok(
        &setup,
        &["table", "add", "-i", &setup.iface, "big", "203.0.113.7/32"],
    );
    assert_eq!(verdict(&setup, [203, 0, 113, 7]), XDP_DROP);
    assert_eq!(verdict(&setup, [203, 0, 113, 8]), XDP_PASS);
    ok(
        &setup,
        &["table", "add", "-i", &setup.iface, "big", "10.0.0.16/28"],
    );
    assert_eq!(verdict(&setup, [10, 0, 0, 17]), XDP_DROP);
    assert_eq!(verdict(&setup, [10, 0, 0, 200]), XDP_DROP, "still the /24");
    for gone in ["203.0.113.7/32", "10.0.0.16/28"] {
        ok(&setup, &["table", "del", "-i", &setup.iface, "big", gone]);
    }
    assert_eq!(verdict(&setup, [203, 0, 113, 7]), XDP_PASS);
    assert_eq!(
        verdict(&setup, [10, 0, 0, 17]),
        XDP_DROP,
        "the /24 covers it"
    );
    assert_eq!(prog_id(&setup), id, "run-time changes reloaded the program");

    // A /24 that had no slot, then gone again (a delete of at most /24
    // takes the table: the recompile path).
    ok(
        &setup,
        &["table", "add", "-i", &setup.iface, "big", "198.51.100.0/24"],
    );
    assert_eq!(verdict(&setup, [198, 51, 100, 1]), XDP_DROP);
    ok(
        &setup,
        &["table", "del", "-i", &setup.iface, "big", "198.51.100.0/24"],
    );
    assert_eq!(verdict(&setup, [198, 51, 100, 1]), XDP_PASS);
    assert_eq!(verdict(&setup, [192, 0, 2, 9]), XDP_DROP);
}
