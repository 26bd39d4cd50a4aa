//! End-to-end tests of how `patronusc` reads table files (and policy
//! files): confined to the policy's directory tree unless `--allow-path`
//! widens it, never quoting a file from outside that tree, only regular
//! files of bounded size, and never blocking on a FIFO.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Run, TempDir, patronusc};

/// What the fake secret file holds: it must never appear in any output.
const SECRET: &str = "AWS_SECRET_ACCESS_KEY=hunter2-do-not-print";

const FORMATS: [&str; 4] = ["human", "json", "sarif", "github"];

/// A repository (`repo/`, holding the policy) beside a directory that
/// stands for the rest of the runner (`outside/env`, environ-like: NUL
/// separated `KEY=value` lines with the secret on a line of its own).
fn layout(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.write(
        "outside/env",
        format!("HOME=/root\0PATH=/usr/bin\n{SECRET}\n192.0.2.1\n"),
    );
    fs::create_dir_all(dir.0.join("repo/lists")).expect("mkdir");
    dir
}

fn check(dir: &Path, policy: &str, extra: &[&str], format: &str) -> Run {
    let mut args = vec!["check", "--color", "never", "--format", format];
    args.extend_from_slice(extra);
    args.push(policy);
    patronusc(dir, &args)
}

fn assert_no_secret(run: &Run, what: &str) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.contains("hunter2"),
            "{what}: the secret is on {stream}:\n{text}"
        );
    }
}

#[test]
fn table_files_outside_the_policy_tree_are_refused_by_default() {
    let dir = layout("confine");
    let outside = dir.0.join("outside/env");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, dir.0.join("repo/lists/link")).expect("symlink");
    let paths = [
        "../outside/env".to_string(),
        "lists/../../outside/env".to_string(),
        outside.display().to_string(),
        "lists/link".to_string(),
    ];
    for path in &paths {
        dir.write(
            "repo/p.pf",
            format!("table t file \"{path}\"\ndeny from @t\n"),
        );
        for format in FORMATS {
            let run = check(&dir.0, "repo/p.pf", &[], format);
            let what = format!("{path} ({format})");
            assert_eq!(run.code, 1, "{what}: {}{}", run.stdout, run.stderr);
            assert!(
                run.stdout.contains("P0008") || run.stderr.contains("P0008"),
                "{what}: {}{}",
                run.stdout,
                run.stderr
            );
            assert!(
                (run.stdout.clone() + &run.stderr).contains("outside the policy's directory"),
                "{what}: {}{}",
                run.stdout,
                run.stderr
            );
            assert_no_secret(&run, &what);
        }
    }
    // The same tree, inside: read as before.
    dir.write("repo/lists/ok.txt", "192.0.2.0/24\n");
    dir.write("repo/p.pf", "table t file \"lists/ok.txt\"\ndeny from @t\n");
    let run = check(&dir.0, "repo/p.pf", &[], "human");
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn allow_path_reads_outside_files_but_never_quotes_them() {
    let dir = layout("allow");
    dir.write(
        "repo/p.pf",
        "table t file \"../outside/env\"\ndeny from @t\n",
    );
    for format in FORMATS {
        let run = check(&dir.0, "repo/p.pf", &["--allow-path", "outside"], format);
        assert_eq!(run.code, 1, "{format}: {}{}", run.stdout, run.stderr);
        let all = run.stdout.clone() + &run.stderr;
        assert!(all.contains("P0009"), "{format}: {all}");
        // The bad lines are named by number, at the path in the policy.
        assert!(
            all.contains("line 2 of table file `../outside/env`"),
            "{format}: {all}"
        );
        assert!(!all.contains("PATH=/usr/bin"), "{format}: {all}");
        assert_no_secret(&run, format);
    }
    // A good file from an allowed directory is used.
    dir.write("outside/ok.txt", "192.0.2.0/24\n");
    dir.write(
        "repo/p.pf",
        "table t file \"../outside/ok.txt\"\ndeny from @t\n",
    );
    let run = check(&dir.0, "repo/p.pf", &["--allow-path", "outside"], "human");
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A missing --allow-path directory is a usage error.
    let run = check(&dir.0, "repo/p.pf", &["--allow-path", "nowhere"], "human");
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--allow-path nowhere"),
        "{}",
        run.stderr
    );
}

/// Runs patronusc and kills it if it is still running after 20 s: a FIFO
/// used to hang `check` forever.
fn patronusc_with_deadline(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patronusc"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run patronusc");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let output = child.wait_with_output().expect("output");
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            return (status.code(), text);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "killed after 20 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn only_regular_files_are_read() {
    let dir = layout("special");
    let fifo = dir.0.join("repo/fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    for (path, allow, why) in [
        ("fifo", None, "is a FIFO (named pipe), not a regular file"),
        ("/dev/zero", Some("/dev"), "is a character device"),
        ("/proc/self/environ", Some("/proc"), "procfs"),
        ("lists", None, "is a directory"),
    ] {
        dir.write(
            "repo/p.pf",
            format!("table t file \"{path}\"\ndeny from @t\n"),
        );
        let mut args = vec!["check", "--format", "json"];
        if let Some(allow) = allow {
            args.extend(["--allow-path", allow]);
        }
        args.push("repo/p.pf");
        let (code, out) = patronusc_with_deadline(&dir.0, &args);
        assert_eq!(code, Some(1), "{path}: {out}");
        assert!(out.contains("P0008") && out.contains(why), "{path}: {out}");
    }
    // A policy file that is a FIFO (`check *.pf` in CI) does not hang either.
    let pf = dir.0.join("repo/pipe.pf");
    let status = Command::new("mkfifo").arg(&pf).status().expect("mkfifo");
    assert!(status.success());
    let (code, out) = patronusc_with_deadline(&dir.0, &["check", "repo/pipe.pf"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not a regular file"), "{out}");
}

#[test]
fn table_files_have_a_size_limit() {
    let dir = layout("size");
    let big = dir.0.join("repo/big.txt");
    let file = fs::File::create(&big).expect("create");
    // Sparse: no disk is used, but the size is one byte past the limit.
    file.set_len(patronus_compiler::limits::MAX_TABLE_FILE_BYTES + 1)
        .expect("set_len");
    dir.write("repo/p.pf", "table t file \"big.txt\"\ndeny from @t\n");
    let run = check(&dir.0, "repo/p.pf", &[], "human");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("larger than 64 MiB, the limit for a table file"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_lines_inside_the_tree_are_quoted_short_and_escaped() {
    let dir = layout("quote");
    let long = format!("\u{1b}[2J{}", "x".repeat(100_000));
    dir.write("repo/t.txt", format!("192.0.2.1\n{long}\n"));
    dir.write("repo/p.pf", "table t file \"t.txt\"\ndeny from @t\n");
    for format in FORMATS {
        let run = check(&dir.0, "repo/p.pf", &[], format);
        assert_eq!(run.code, 1, "{format}");
        let all = run.stdout.clone() + &run.stderr;
        assert!(all.contains("P0009"), "{format}: {all}");
        // A bounded excerpt, whatever the format; no raw escape sequence.
        // (SARIF also carries every code's explanation page.)
        let budget = if format == "sarif" { 100_000 } else { 12_000 };
        assert!(all.len() < budget, "{format}: {} bytes", all.len());
        let longest_run = all
            .split(|c: char| c != 'x')
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest_run <= 200, "{format}: a run of {longest_run} `x`s");
        assert!(!all.contains('\u{1b}'), "{format}: raw ESC in {all}");
        assert!(all.contains("xxx…"), "{format}: {all}");
    }
}

#[test]
fn every_subcommand_that_reads_tables_takes_allow_path() {
    let dir = layout("subcommands");
    dir.write("outside/ok.txt", "192.0.2.0/24\n");
    dir.write(
        "repo/p.pf",
        "table t file \"../outside/ok.txt\"\ndeny from @t\nallow tcp to port 22\n\
         test \"t\" {\n  expect drop tcp 192.0.2.1:1000 -> 198.51.100.1:22\n}\n",
    );
    let allow = ["--allow-path", "outside"];
    for args in [
        vec!["check"],
        vec!["build", "--emit", "ir"],
        vec!["test", "--engine", "interpreter"],
        vec!["explain"],
    ] {
        let mut with = args.clone();
        with.extend(allow);
        with.push("repo/p.pf");
        if args[0] == "explain" {
            with.push("tcp 192.0.2.1:1000 -> 198.51.100.1:22");
        }
        let run = patronusc(&dir.0, &with);
        assert_eq!(run.code, 0, "{with:?}: {}{}", run.stdout, run.stderr);
        // Without it, the table is refused.
        let without: Vec<&str> = with
            .iter()
            .copied()
            .filter(|a| !allow.contains(a))
            .collect();
        let run = patronusc(&dir.0, &without);
        assert_ne!(run.code, 0, "{without:?}: {}", run.stderr);
        assert!(
            (run.stdout + &run.stderr).contains("outside the policy's directory"),
            "{without:?}"
        );
    }
    for sub in ["apply", "load"] {
        let help = patronusc(&dir.0, &[sub, "--help"]);
        assert!(
            help.stdout.contains("--allow-path"),
            "{sub}: {}",
            help.stdout
        );
    }
}
