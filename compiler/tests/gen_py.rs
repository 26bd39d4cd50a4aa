//! The external oracle: the benchmark's own frames and expected verdicts
//! (`shared/bench/pkts/gen.py`), evaluated by the reference interpreter on
//! the reference policy (`shared/bench/reference.pf`). gen.py is run into a
//! temporary directory on every test run; nothing it writes is copied into
//! the repository.
//!
//! Like the benchmark harness, each packet of packets.tsv meets conntrack
//! pre-populated with the flows of flows.txt: here the host sends one ACK
//! of each flow out of the interface (`Interpreter::outbound`) first.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use patronus_compiler::diag::Files;
use patronus_compiler::interp::Interpreter;
use patronus_compiler::typed::{PROTO_TCP, PROTO_UDP, Packet, Policy, tcp_flags};
use patronus_compiler::{LoadedFile, TableLoader, check, packet, render};
use patronus_grammar::ast::Verdict;

/// Serves `table ... file "build/pkts/NAME"` from gen.py's output directory.
struct GenOutput(PathBuf);

impl TableLoader for GenOutput {
    fn load(&self, _policy: &str, path: &str) -> Result<LoadedFile, String> {
        let name = Path::new(path)
            .file_name()
            .ok_or_else(|| format!("no file name in {path}"))?;
        let resolved = self.0.join(name);
        let text =
            fs::read_to_string(&resolved).map_err(|e| format!("{}: {e}", resolved.display()))?;
        Ok(LoadedFile {
            name: resolved.display().to_string(),
            text,
        })
    }
}

fn run_gen_py() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("patronus-gen-py-{}", std::process::id()));
    let status = Command::new("python3")
        .arg(manifest.join("../../shared/bench/pkts/gen.py"))
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(
        status.status.success(),
        "gen.py failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

fn reference_policy(gen_out: &Path) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/reference.pf");
    let text = fs::read_to_string(&path).expect("reference.pf is readable");
    let mut files = Files::new();
    let file = files.add(path.display().to_string(), text);
    let checked = check(&mut files, file, &GenOutput(gen_out.to_path_buf()));
    match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => panic!(
            "reference.pf does not check:\n{}",
            render::human(&files, &checked.diagnostics, false)
        ),
    }
}

/// `proto saddr sport daddr dport` lines; the host's side is the destination.
fn flows(gen_out: &Path) -> Vec<Packet> {
    let text = fs::read_to_string(gen_out.join("flows.txt")).expect("flows.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 5, "flows.txt line {line:?}");
            let proto = match f[0] {
                "tcp" => PROTO_TCP,
                "udp" => PROTO_UDP,
                other => panic!("flows.txt protocol {other}"),
            };
            let (remote, remote_port): (IpAddr, u16) =
                (f[1].parse().unwrap(), f[2].parse().unwrap());
            let (host, host_port): (IpAddr, u16) = (f[3].parse().unwrap(), f[4].parse().unwrap());
            // What the host sends on this flow.
            Packet {
                proto,
                src: host,
                dst: remote,
                src_port: host_port,
                dst_port: remote_port,
                tcp_flags: tcp_flags::ACK,
                icmp_type: 0,
                icmp_code: 0,
                vlan: None,
                repeat: 1,
            }
        })
        .collect()
}

fn verdict_of(word: &str) -> Verdict {
    match word {
        "PASS" => Verdict::Pass,
        "DROP" => Verdict::Drop,
        other => panic!("unknown verdict {other}"),
    }
}

/// Rows of a gen.py TSV file after its header.
fn rows(path: &Path) -> Vec<Vec<String>> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn reference_policy_gives_every_expected_verdict() {
    let gen_out = run_gen_py();
    let policy = reference_policy(&gen_out);
    let flows = flows(&gen_out);
    let mut failures = Vec::new();

    let packets = rows(&gen_out.join("packets.tsv"));
    assert_eq!(packets.len(), 15, "packets.tsv rows");
    for row in &packets {
        let (name, first, steady) = (&row[0], verdict_of(&row[1]), verdict_of(&row[2]));
        let frame = fs::read(gen_out.join(format!("{name}.bin"))).expect("frame file");
        let mut interp = Interpreter::new(&policy);
        for flow in &flows {
            interp.outbound(&packet::build(flow), 0);
        }
        let out = interp.inbound(&frame, 1_000);
        if out.verdict != first {
            failures.push(format!("{name} first: expected {first:?}, got {out:?}"));
        }
        // Steady state: many repeats in quick succession (1 µs apart), as
        // `bpftool prog run ... repeat` does; the last verdict counts.
        let mut last = out;
        for i in 0..200u64 {
            last = interp.inbound(&frame, 2_000 + i * 1_000);
        }
        if last.verdict != steady {
            failures.push(format!("{name} steady: expected {steady:?}, got {last:?}"));
        }
    }

    let edge = rows(&gen_out.join("edge/edge.tsv"));
    assert_eq!(edge.len(), 39, "edge.tsv rows");
    for row in &edge {
        let (name, expect) = (&row[0], verdict_of(&row[1]));
        let frame = fs::read(gen_out.join("edge").join(format!("{name}.bin"))).expect("frame file");
        let out = Interpreter::new(&policy).inbound(&frame, 0);
        if out.verdict != expect {
            failures.push(format!(
                "edge {name} ({}): expected {expect:?}, got {out:?}",
                row[2]
            ));
        }
    }
    let _ = fs::remove_dir_all(&gen_out);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
