//! End-to-end tests of `patronusc explain`: the trace of one packet through
//! a small policy, as insta snapshots, for each deciding phase; `--after`
//! steps (inbound and `out`); and usage errors (exit 2).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "patronusc-explain-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(unique);
        fs::create_dir_all(&dir).expect("create temp dir");
        fs::write(dir.join("web.pf"), WEB).expect("write policy");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const WEB: &str = r#"# a small web server policy
deny  from 198.51.100.0/24                             label "blocklist"
allow tcp to port { 80, 443 }                          label "web"
allow tcp from 192.0.2.0/24 to port 22 rate 2/s burst 2 label "ssh"
allow icmp type echo-request
"#;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn explain(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_patronusc"))
        .args(["explain", "--color", "never", "web.pf"])
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run patronusc");
    Run {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

fn ok(args: &[&str]) -> String {
    let dir = TempDir::new("ok");
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
    let dir = TempDir::new("bad");
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
