//! `corpus DIR`: writes the benchmark corpus (`patronus_compiler::corpus`)
//! as the files the shell harness reads:
//!
//! - `DIR/NAME.bin`, one Ethernet frame per benchmark packet, and
//!   `DIR/packets.tsv` (`name first steady path description`);
//! - `DIR/edge/NAME.bin` and `DIR/edge/edge.tsv` (`name expect description`);
//! - `DIR/flows.txt`, the established flows (`proto remote rport host hport`);
//! - `DIR/blocklist-N.txt` for N in 10, 100, 1,000, 100,000 and
//!   `DIR/naive-rules-N.txt` for N up to 1,000 (the naive program's array).
//!
//! `corpus blocklist N FILE` writes one more blocklist (any N, e.g. the
//! 1,000,000 of the curves). Files are written whole or not at all (a
//! temporary name, then a rename), so an interrupted run leaves nothing
//! half-written for the next one to trust.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use patronus_bench::{main_with, number};
use patronus_compiler::corpus;
use patronus_grammar::ast::Verdict;

const USAGE: &str = "corpus DIR | corpus blocklist N FILE";

enum Job {
    All(PathBuf),
    Blocklist(usize, PathBuf),
}

fn parse(args: Vec<String>) -> Result<Job, String> {
    match args.as_slice() {
        [dir] => Ok(Job::All(dir.into())),
        [cmd, n, file] if cmd == "blocklist" => Ok(Job::Blocklist(number(n)?, file.into())),
        _ => Err("expected a directory, or `blocklist N FILE`".to_owned()),
    }
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Drop => "DROP",
    }
}

fn run(job: &Job) -> Result<(), String> {
    let dir = match job {
        Job::Blocklist(n, file) => return write(file, corpus::blocklist_text(*n)),
        Job::All(dir) => dir,
    };
    let edge_dir = dir.join("edge");
    fs::create_dir_all(&edge_dir).map_err(|e| format!("{}: {e}", edge_dir.display()))?;

    let mut tsv = String::from("name\tfirst\tsteady\tpath\tdescription\n");
    for case in corpus::packets() {
        write(&dir.join(format!("{}.bin", case.name)), &case.frame)?;
        tsv += &format!(
            "{}\t{}\t{}\t{}\t{}\n",
            case.name,
            word(case.first),
            word(case.steady),
            case.path,
            case.what
        );
    }
    write(&dir.join("packets.tsv"), tsv)?;

    let mut tsv = String::from("name\texpect\tdescription\n");
    for case in corpus::edge_cases() {
        write(&edge_dir.join(format!("{}.bin", case.name)), &case.frame)?;
        tsv += &format!("{}\t{}\t{}\n", case.name, word(case.expect), case.what);
    }
    write(&edge_dir.join("edge.tsv"), tsv)?;

    let mut flows =
        String::from("# proto remote remote_port host host_port: established beforehand\n");
    for f in corpus::flows() {
        let proto = if f.proto == 6 { "tcp" } else { "udp" };
        flows += &format!(
            "{proto} {} {} {} {}\n",
            f.remote, f.remote_port, f.host, f.host_port
        );
    }
    write(&dir.join("flows.txt"), flows)?;

    for n in corpus::BLOCKLIST_SIZES {
        write(
            &dir.join(format!("blocklist-{n}.txt")),
            corpus::blocklist_text(n),
        )?;
        if n <= 1_000 {
            write(
                &dir.join(format!("naive-rules-{n}.txt")),
                corpus::naive_rules(n),
            )?;
        }
    }
    eprintln!(
        "corpus: wrote {} packets, {} edge cases, flows and blocklists to {}",
        corpus::packets().len(),
        corpus::edge_cases().len(),
        dir.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    main_with("corpus", USAGE, parse, run)
}
