//! End-to-end tests of `patronusc explain`: the trace of one packet through
//! a small policy, as insta snapshots, for each deciding phase; `--after`
//! steps (inbound and `out`); and usage errors (exit 2).

use std::path::Path;

mod common;

use common::{Run, TempDir, patronusc};

/// A temporary directory holding `web.pf`.
fn web_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.write("web.pf", WEB);
    dir
}

const WEB: &str = r#"# a small web server policy
deny  from 198.51.100.0/24                             label "blocklist"
allow tcp to port { 80, 443 }                          label "web"
allow tcp from 192.0.2.0/24 to port 22 rate 2/s burst 2 label "ssh"
allow icmp type echo-request
"#;

fn explain(cwd: &Path, args: &[&str]) -> Run {
    let mut all = vec!["explain", "--color", "never", "web.pf"];
    all.extend_from_slice(args);
    patronusc(cwd, &all)
}

fn ok(args: &[&str]) -> String {
    let dir = web_dir("ok");
    let run = explain(&dir.0, args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    run.stdout
}

#[test]
fn allowed_new_connection() {
    insta::assert_snapshot!(
        "explain_allow",
        ok(&["tcp 203.0.113.9:40000 -> 10.0.0.2:443 flags S"])
    );
}

#[test]
fn denied_source() {
    insta::assert_snapshot!(
        "explain_deny",
        ok(&["tcp 198.51.100.4:40000 -> 10.0.0.2:443 flags S"])
    );
}

#[test]
fn default_deny() {
    insta::assert_snapshot!(
        "explain_default",
        ok(&["udp 203.0.113.9:5000 -> 10.0.0.2:5353"])
    );
}

#[test]
fn invalid_packet() {
    insta::assert_snapshot!(
        "explain_invalid",
        ok(&["tcp 203.0.113.9:40000 -> 10.0.0.2:443 flags SF"])
    );
}

#[test]
fn rate_limited_after_earlier_packets() {
    insta::assert_snapshot!(
        "explain_rate_limit",
        ok(&[
            "tcp 192.0.2.5:40002 -> 10.0.0.2:22 flags S",
            "--after",
            "tcp 192.0.2.5:40000 -> 10.0.0.2:22 flags S repeat 2",
        ])
    );
}

#[test]
fn reply_to_a_host_connection_is_established() {
    insta::assert_snapshot!(
        "explain_established",
        ok(&[
            "tcp 203.0.113.7:443 -> 10.0.0.2:50000 flags SA",
            "--after",
            "out tcp 10.0.0.2:50000 -> 203.0.113.7:443 flags S",
        ])
    );
}

#[test]
fn a_bad_packet_is_a_usage_error() {
    let dir = web_dir("bad");
    let run = explain(&dir.0, &["tcp 203.0.113.9:40000 -> "]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("PACKET"), "{}", run.stderr);
    let run = explain(
        &dir.0,
        &[
            "tcp 203.0.113.9:1 -> 10.0.0.2:2",
            "--after",
            "sideways tcp 1.2.3.4 -> 5.6.7.8",
        ],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--after 1"), "{}", run.stderr);
}
