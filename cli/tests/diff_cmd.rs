//! End-to-end tests of `patronusc diff`, `snapshot` and `test --coverage`:
//! the built binary on small policies in a fresh temporary directory (and
//! a git repository made there), checking exit codes and what each format
//! states. The emitted tests are run: pasted into the new policy they pass,
//! into the old one they fail.

use std::process::Command;

mod common;

use common::{TempDir, patronusc};

const OLD: &str = r#"table scanners file "scanners.txt"
options { default = deny }
deny  from @scanners                   label "scanners"
allow tcp to port { 80, 443 }          label "web"
allow tcp from 192.0.2.0/24 to port 22 label "ssh"
"#;

/// SSH from everywhere, HTTP dropped, conntrack off.
const NEW: &str = r#"table scanners file "scanners.txt"
options { default = deny  conntrack = off }
deny  from @scanners                   label "scanners"
allow tcp to port 443                  label "web"
allow tcp to port 22                   label "ssh"
"#;

fn setup(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.write("old.pf", OLD);
    dir.write("new.pf", NEW);
    dir.write("scanners.txt", "203.0.113.0/24\n");
    dir
}

#[test]
fn verdict_changes_are_reported_with_examples_and_rules() {
    let dir = setup("human");
    let run = patronusc(&dir.0, &["diff", "--color", "never", "old.pf", "new.pf"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    // HTTP now dropped (both families), SSH from outside 192.0.2.0/24 and
    // outside the scanners now passes.
    assert!(
        out.contains("warning[P0201]: pass → drop: ip4 tcp from !203.0.113.0/24 to port 80"),
        "{out}"
    );
    assert!(
        out.contains("drop → pass: ip4 tcp from !{ 192.0.2.0/24, 203.0.113.0/24 } to port 22"),
        "{out}"
    );
    assert!(
        out.contains("new.pf:5:1"),
        "the new ssh rule is underlined: {out}"
    );
    assert!(out.contains("= example: tcp "), "{out}");
    assert!(out.contains("conntrack: on → off"), "{out}");
    assert!(
        out.contains("4 regions change verdict (2 pass → drop, 2 drop → pass)"),
        "{out}"
    );

    let gate = patronusc(&dir.0, &["diff", "--exit-code", "old.pf", "new.pf"]);
    assert_eq!(gate.code, 1, "{}", gate.stderr);
    let same = patronusc(
        &dir.0,
        &["diff", "--exit-code", "--all", "old.pf", "old.pf"],
    );
    assert_eq!(same.code, 0);
    assert!(
        same.stdout.contains("no change in behaviour"),
        "{}",
        same.stdout
    );
}

#[test]
fn json_markdown_and_github_formats() {
    let dir = setup("formats");
    let run = patronusc(&dir.0, &["diff", "--format", "json", "old.pf", "new.pf"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["verdict_changes"], 4);
    let regions = v["regions"].as_array().expect("regions");
    let ssh = regions
        .iter()
        .find(|r| r["fields"]["dport"] == "22" && r["family"] == "ip4")
        .expect("the ssh region");
    assert_eq!(ssh["old"]["verdict"], "drop");
    assert_eq!(ssh["new"]["rule"]["label"], "ssh");
    assert_eq!(ssh["new"]["rule"]["line"], 5);
    assert_eq!(v["options"][0]["name"], "conntrack");

    let md = patronusc(
        &dir.0,
        &["diff", "--format", "markdown", "old.pf", "new.pf"],
    )
    .stdout;
    assert!(
        md.contains("| Change | Packets | Example | Old | New |"),
        "{md}"
    );
    assert!(md.contains("| drop → pass | `ip4 tcp from"), "{md}");

    let gh = patronusc(&dir.0, &["diff", "--format", "github", "old.pf", "new.pf"]).stdout;
    assert!(
        gh.lines()
            .any(|l| l.starts_with("::warning file=new.pf,line=5,")
                && l.contains("title=P0201 verdict-changed::drop → pass")),
        "{gh}"
    );
    assert!(
        gh.contains("::notice title=option changed::conntrack: on → off"),
        "{gh}"
    );
}

#[test]
fn emitted_tests_pin_the_new_behaviour() {
    let dir = setup("emit");
    let run = patronusc(&dir.0, &["diff", "--emit-tests", "old.pf", "new.pf"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("test \"behaviour changed from old.pf\" {"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.matches("\n  expect ").count(),
        4,
        "{}",
        run.stdout
    );
    dir.write("new_tested.pf", format!("{NEW}\n{}", run.stdout));
    dir.write("old_tested.pf", format!("{OLD}\n{}", run.stdout));
    let new = patronusc(
        &dir.0,
        &["test", "--engine", "interpreter", "new_tested.pf"],
    );
    assert_eq!(new.code, 0, "{}{}", new.stdout, new.stderr);
    let old = patronusc(
        &dir.0,
        &["test", "--engine", "interpreter", "old_tested.pf"],
    );
    assert_eq!(old.code, 1, "the old policy fails them: {}", old.stdout);
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(status.status.success(), "git {args:?}: {status:?}");
}

#[test]
fn git_revisions_read_the_table_files_at_that_revision() {
    let dir = setup("git");
    git(&dir.0, &["init", "-q"]);
    git(&dir.0, &["add", "old.pf", "scanners.txt"]);
    git(&dir.0, &["commit", "-q", "-m", "one"]);
    // Only the table file changes: 198.51.100.0/24 joins the scanners.
    dir.write("scanners.txt", "203.0.113.0/24\n198.51.100.0/24\n");
    let run = patronusc(
        &dir.0,
        &["diff", "--format", "json", "--git", "HEAD", "old.pf"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["old"], "HEAD:./old.pf");
    let srcs: Vec<&str> = v["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| r["fields"]["src"].as_str().unwrap_or(""))
        .collect();
    assert!(
        !srcs.is_empty() && srcs.iter().all(|s| *s == "198.51.100.0/24"),
        "{srcs:?}"
    );
    // REV:PATH names the same thing.
    let same = patronusc(
        &dir.0,
        &["diff", "--format", "json", "HEAD:old.pf", "old.pf"],
    );
    assert_eq!(same.code, 0, "{}", same.stderr);
    let w: serde_json::Value = serde_json::from_str(&same.stdout).expect("JSON");
    let matches = |v: &serde_json::Value| -> Vec<String> {
        v["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .map(|r| r["match"].to_string())
            .collect()
    };
    assert_eq!(matches(&w), matches(&v));
    // An unknown revision is an error naming it.
    let bad = patronusc(&dir.0, &["diff", "--git", "no-such-rev", "old.pf"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("no-such-rev"), "{}", bad.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let dir = setup("usage");
    let run = patronusc(&dir.0, &["diff", "old.pf"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("diff needs two policies"),
        "{}",
        run.stderr
    );
    let run = patronusc(&dir.0, &["diff", "old.pf", "missing.pf"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("missing.pf"), "{}", run.stderr);
    dir.write("broken.pf", "allow tcp to port 70000\n");
    let run = patronusc(&dir.0, &["diff", "old.pf", "broken.pf"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("P0006"), "{}", run.stderr);
}

#[test]
fn snapshot_write_check_refuse_and_update() {
    let dir = setup("snapshot");
    let write = patronusc(&dir.0, &["snapshot", "old.pf"]);
    assert_eq!(write.code, 0, "{}{}", write.stdout, write.stderr);
    assert!(
        write.stdout.contains("old.pf.snap: written"),
        "{}",
        write.stdout
    );
    let stored = std::fs::read_to_string(dir.0.join("old.pf.snap")).expect("snapshot written");
    assert!(
        stored.contains("pass ip4 tcp from 192.0.2.0/24 to port 22  => allow rule \"ssh\""),
        "{stored}"
    );

    let check = patronusc(&dir.0, &["snapshot", "--check", "old.pf"]);
    assert_eq!(check.code, 0, "{}", check.stdout);

    // The behaviour changes: SSH from everywhere.
    dir.write("old.pf", OLD.replace("from 192.0.2.0/24 ", ""));
    let check = patronusc(
        &dir.0,
        &["snapshot", "--check", "--color", "never", "old.pf"],
    );
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains("error[P0203]: old.pf no longer matches old.pf.snap"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("- pass ip4 tcp from 192.0.2.0/24 to port 22"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("+ pass ip4 tcp from !203.0.113.0/24 to port 22"),
        "{}",
        check.stdout
    );

    // Without --update, a different snapshot is not overwritten.
    let refuse = patronusc(&dir.0, &["snapshot", "old.pf"]);
    assert_eq!(refuse.code, 1);
    assert_eq!(
        std::fs::read_to_string(dir.0.join("old.pf.snap")).expect("kept"),
        stored
    );

    let update = patronusc(&dir.0, &["snapshot", "--update", "old.pf"]);
    assert_eq!(update.code, 0, "{}", update.stdout);
    assert_eq!(
        patronusc(&dir.0, &["snapshot", "--check", "old.pf"]).code,
        0
    );

    let none = patronusc(&dir.0, &["snapshot", "--check", "new.pf"]);
    assert_eq!(none.code, 1);
    assert!(none.stdout.contains("no snapshot"), "{}", none.stdout);
}

#[test]
fn coverage_lists_unreached_rules_and_gates() {
    let dir = setup("coverage");
    let tested = format!(
        "{OLD}\ntest \"web\" {{\n  expect pass tcp 198.51.100.1:40000 -> 192.0.2.80:443\n  expect drop tcp 203.0.113.9:40000 -> 192.0.2.80:443\n}}\n"
    );
    dir.write("tested.pf", &tested);
    let run = patronusc(
        &dir.0,
        &["test", "--engine", "interpreter", "--coverage", "tested.pf"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("rules    2/3 (66.7%)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("not reached: rule 3 \"ssh\" (tested.pf:5)"),
        "{}",
        run.stdout
    );

    let gate = patronusc(
        &dir.0,
        &[
            "test",
            "--engine",
            "interpreter",
            "--min-coverage",
            "80",
            "tested.pf",
        ],
    );
    assert_eq!(gate.code, 1, "{}", gate.stdout);
    assert!(
        gate.stdout.contains("coverage FAILED: --min-coverage 80"),
        "{}",
        gate.stdout
    );

    let json = patronusc(
        &dir.0,
        &[
            "test",
            "--engine",
            "interpreter",
            "--coverage=json",
            "--min-coverage",
            "60",
            "tested.pf",
        ],
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("only JSON on stdout");
    assert_eq!(v["rules_covered"], 2);
    assert_eq!(v["policies"][0]["rules"]["not_reached"][0]["label"], "ssh");
    assert!(json.stderr.contains("test result: ok"), "{}", json.stderr);
}
