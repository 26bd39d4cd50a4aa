//! End-to-end tests of `patronusc test`: the built binary on small policies
//! in a fresh temporary directory; outputs are insta snapshots, exit codes
//! 0 (all pass), 1 (a test failed), 2 (compile or I/O error). Also the
//! benchmark's reference policy (with gen.py's blocklist) passes its tests.

use std::fs;
use std::path::Path;

mod common;

use common::{TempDir, patronusc};

const WEB: &str = r#"# a small web server policy
const admins = { 192.0.2.0/24 }

deny  from 198.51.100.0/24                             label "blocklist"
allow tcp to port { 80, 443 }                          label "web"
allow tcp from $admins to port 22 rate 2/s burst 2     label "ssh"

test "web is open, the blocklist wins" {
  expect pass tcp 203.0.113.9:40000 -> 10.0.0.2:443 flags S
  expect drop tcp 198.51.100.4:40000 -> 10.0.0.2:443 flags S
  expect drop udp 203.0.113.9:5000 -> 10.0.0.2:5353
}

test "replies to the host are established" {
  expect drop tcp 203.0.113.7:443 -> 10.0.0.2:50000 flags SA
  out tcp 10.0.0.2:50000 -> 203.0.113.7:443 flags S
  expect pass tcp 203.0.113.7:443 -> 10.0.0.2:50000 flags SA
}

test "ssh: two new connections, then the bucket is empty" {
  expect pass tcp 192.0.2.5:40000 -> 10.0.0.2:22 flags S repeat 2
  expect drop tcp 192.0.2.5:40001 -> 10.0.0.2:22 flags S
}
"#;

#[test]
fn passing_tests_exit_0() {
    let dir = TempDir::new("pass");
    dir.write("web.pf", WEB);
    let run = patronusc(
        &dir.0,
        &[
            "test",
            "--engine",
            "interpreter",
            "--color",
            "never",
            "web.pf",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    insta::assert_snapshot!("test_pass", run.stdout);
}

#[test]
fn a_failing_step_is_shown_with_the_deciding_rule_and_exits_1() {
    let dir = TempDir::new("fail");
    let failing = format!(
        "{WEB}\ntest \"wrong: ssh is not limited\" {{\n  expect pass tcp 192.0.2.6:40000 -> 10.0.0.2:22 flags S repeat 3\n}}\n\n\
         test \"wrong: the blocklist is open\" {{\n  expect pass tcp 198.51.100.9:1234 -> 10.0.0.2:80 flags S\n}}\n"
    );
    dir.write("web.pf", &failing);
    let run = patronusc(
        &dir.0,
        &[
            "test",
            "--engine",
            "interpreter",
            "--color",
            "never",
            "web.pf",
        ],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    insta::assert_snapshot!("test_fail", run.stdout);
}

#[test]
fn a_policy_that_does_not_compile_exits_2() {
    let dir = TempDir::new("broken");
    dir.write("broken.pf", "allow tcp to port $nope\n");
    dir.write("web.pf", WEB);
    let run = patronusc(
        &dir.0,
        &[
            "test",
            "--engine",
            "interpreter",
            "--color",
            "never",
            "broken.pf",
            "web.pf",
        ],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("$nope") || run.stderr.contains("nope"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("1 policy of 2 did not compile"),
        "{}",
        run.stderr
    );
    // The policy that compiles still ran, but the summary is not "ok".
    assert!(
        run.stdout.contains(
            "test result: FAILED. 3 passed; 0 failed; 1 policy did not compile, load or run"
        ),
        "{}",
        run.stdout
    );

    let missing = patronusc(&dir.0, &["test", "missing.pf"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("missing.pf"), "{}", missing.stderr);
}

#[test]
fn a_policy_that_fails_to_load_or_has_no_tests_is_never_ok() {
    let dir = TempDir::new("nothing-ran");
    dir.write("broken.pf", "allow tcp to port $nope\n");
    dir.write("empty.pf", "allow tcp to port 80\n");
    let broken = patronusc(&dir.0, &["test", "--engine", "interpreter", "broken.pf"]);
    assert_eq!(broken.code, 2, "{}{}", broken.stdout, broken.stderr);
    assert!(!broken.stdout.contains("ok."), "{}", broken.stdout);
    assert!(
        broken
            .stdout
            .contains("test result: FAILED. 0 passed; 0 failed"),
        "{}",
        broken.stdout
    );
    let empty = patronusc(&dir.0, &["test", "--engine", "interpreter", "empty.pf"]);
    assert_eq!(empty.code, 1, "{}{}", empty.stdout, empty.stderr);
    assert!(
        empty
            .stdout
            .contains("test result: FAILED. 0 passed; 0 failed; no tests ran"),
        "{}",
        empty.stdout
    );
}

#[test]
fn the_reference_policy_passes_its_own_tests() {
    let dir = TempDir::new("reference");
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/reference.pf");
    let reference = fs::read_to_string(reference).expect("benches/reference.pf");
    dir.write("reference.pf", &reference);
    // The table the policy names, relative to it.
    dir.write(
        "build/pkts/blocklist-1000.txt",
        patronus_compiler::corpus::blocklist_text(1000),
    );
    let run = patronusc(
        &dir.0,
        &[
            "test",
            "--engine",
            "interpreter",
            "--color",
            "never",
            "reference.pf",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("test result: ok. 2 passed; 0 failed"),
        "{}",
        run.stdout
    );
}
