//! `control`: in-process timings of the control plane for benches/control.sh.
//!
//! - `control rules N OUT.pf`: writes a policy with N rules (distinct ports,
//!   addresses, address sets and protocols; no rule shadows another), the
//!   input of the "compile time vs rules" curve.
//! - `control stages POLICY [--repeat R]`: compiles POLICY R times (default
//!   5) through the crates' public APIs and prints, per stage, the median
//!   seconds as `stage<TAB>seconds` lines: `tables` (reading table files),
//!   `check` (parse, resolve, type-check, lints; without table reading),
//!   `lower`, `codegen` (XDP and tc programs), `maps` (map definitions and
//!   images), `listing` (the annotated disassembly `compile` always builds),
//!   `elf`, `encode` (the `.maps` text `patronusc build` writes), and
//!   `total` (the sum).
//! - `control fill POLICY [--repeat R]` (root): loads the compiled policy
//!   with `patronus_runtime::Loaded::load_object` (nothing attached, nothing
//!   pinned) twice per repetition, once with the largest LPM trie's initial
//!   entries (else the largest map's) and once without them; the difference
//!   is that map's fill time.
//!   Prints `map`, `entries`, `load_empty_s`, `load_full_s`, `fill_s` and
//!   `fill_rate_per_s`. The loads are the fastest of R (default 5): the
//!   rest of a load (verifier, preallocated conntrack maps) varies with the
//!   machine's load by more than a small fill takes; `fill_rate_per_s` is
//!   left out when the difference is not positive.
//!
//! Everything printed on stdout is `key<TAB>value`, for the shell to parse.

use std::cell::Cell;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use patronus_codegen::elf::{self, ObjectSpec, ProgramDef, ProgramKind};
use patronus_codegen::object::{Limits, XDP_PROGRAM_NAME};
use patronus_codegen::{abi, layout, tc, xdp};
use patronus_compiler::diag::{Files, Severity};
use patronus_compiler::{LoadedFile, TableLoader, ir};

const USAGE: &str = "usage: control rules N OUT.pf | control stages POLICY [--repeat R] | control fill POLICY [--repeat R]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("rules") => cmd_rules(&args[1..]),
        Some("stages") => cmd_stages(&args[1..]),
        Some("fill") => cmd_fill(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("control: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `POLICY [--repeat R]`.
fn policy_and_repeat(args: &[String]) -> Result<(String, usize), String> {
    let mut policy = None;
    let mut repeat = 5;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--repeat" {
            let value = it.next().ok_or("--repeat needs a number")?;
            repeat = value
                .parse()
                .ok()
                .filter(|r| *r > 0)
                .ok_or_else(|| format!("--repeat: `{value}` is not a positive number"))?;
        } else if policy.is_none() {
            policy = Some(arg.clone());
        } else {
            return Err(format!("unexpected argument `{arg}`\n{USAGE}"));
        }
    }
    Ok((policy.ok_or(USAGE)?, repeat))
}

fn cmd_rules(args: &[String]) -> Result<(), String> {
    let [n, out] = args else {
        return Err(USAGE.to_owned());
    };
    let n: usize = n
        .parse()
        .map_err(|_| format!("`{n}` is not a rule count"))?;
    // Ports 1024 + i stay distinct up to 64,511 rules.
    if n == 0 || n > 60_000 {
        return Err(format!("rule count {n} out of range 1..=60000"));
    }
    std::fs::write(out, rules_policy(n)).map_err(|e| format!("{out}: {e}"))
}

/// A policy with `n` rules that are all distinct and do not overlap, so the
/// lints have nothing to say and every rule reaches the program: four
/// shapes in turn (one TCP source address, a UDP source set, an IPv6 TCP
/// source, a deny of a /24 on one port of `proto { tcp, udp }`), each on a
/// port of its own.
fn rules_policy(n: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {n} generated rules (benches control rules)");
    out.push_str("options {\n  default = deny\n  conntrack = on\n}\n\n");
    for i in 0..n {
        let port = 1024 + i;
        let (a, b) = ((i >> 8) & 0xff, i & 0xff);
        let _ = match i % 4 {
            0 => writeln!(
                out,
                "allow tcp from 10.{a}.{b}.1 to port {port} label \"r{i}\""
            ),
            1 => writeln!(
                out,
                "allow udp from {{ 10.{a}.{b}.0/28, 172.16.{a}.{b} }} to port {port} label \"r{i}\""
            ),
            2 => writeln!(
                out,
                "allow tcp from 2001:db8:{a:x}:{b:x}::/64 to port {port} label \"r{i}\""
            ),
            _ => writeln!(
                out,
                "deny proto {{ tcp, udp }} from 198.18.{b}.0/24 to port {port} label \"r{i}\""
            ),
        };
    }
    out
}

/// Reads table files relative to the policy, and adds up the time spent.
struct TimedLoader {
    spent: Cell<Duration>,
}

impl TableLoader for TimedLoader {
    fn load(&self, policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let started = Instant::now();
        let resolved = match Path::new(policy_name).parent() {
            Some(dir) => dir.join(path),
            None => Path::new(path).to_path_buf(),
        };
        let text =
            std::fs::read_to_string(&resolved).map_err(|e| format!("{}: {e}", resolved.display()));
        self.spent.set(self.spent.get() + started.elapsed());
        Ok(LoadedFile {
            name: resolved.display().to_string(),
            text: text?,
        })
    }
}

/// Checks and lowers `path`; the time spent reading tables and checking.
fn check_and_lower(path: &str) -> Result<(ir::Program, Duration, Duration, Duration), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let loader = TimedLoader {
        spent: Cell::new(Duration::ZERO),
    };
    let started = Instant::now();
    let mut files = Files::new();
    let file = files.add(path, text);
    let checked = patronus_compiler::check(&mut files, file, &loader);
    let check_time = started.elapsed();
    let errors: Vec<&str> = checked
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.message.as_str())
        .collect();
    let policy = match checked.policy {
        Some(policy) if errors.is_empty() => policy,
        _ => return Err(format!("{path} has errors: {}", errors.join("; "))),
    };
    let started = Instant::now();
    let program = ir::lower(&policy);
    let lower_time = started.elapsed();
    let tables = loader.spent.get();
    Ok((
        program,
        tables,
        check_time.saturating_sub(tables),
        lower_time,
    ))
}

const STAGES: [&str; 8] = [
    "tables", "check", "lower", "codegen", "maps", "listing", "elf", "encode",
];

/// One compile of `path`, stage by stage, as `object::compile_with_limits`
/// and `patronusc build` do it.
fn stages_once(path: &str) -> Result<[Duration; 8], String> {
    let (program, tables, check, lower) = check_and_lower(path)?;
    let err = |e: patronus_codegen::CodegenError| format!("cannot compile {path}: {e}");

    // The map layout comes first (emission reads it): "maps".
    let started = Instant::now();
    let (layout, defs) = layout::plan(&program).map_err(err)?;
    let maps = started.elapsed();

    let started = Instant::now();
    let generated = xdp::generate_within(&program, &layout, &Limits::default()).map_err(err)?;
    let egress = if program.usage.conntrack {
        Some(tc::egress_program(&program, &layout).map_err(err)?)
    } else {
        None
    };
    let codegen = started.elapsed();

    let started = Instant::now();
    let names: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
    let mut listing = generated.program.listing(names.as_slice());
    if let Some(egress) = &egress {
        listing.push_str(&egress.listing(names.as_slice()));
    }
    let listing_time = started.elapsed();
    std::hint::black_box(&listing);

    let started = Instant::now();
    let mut programs = vec![ProgramDef {
        kind: ProgramKind::Xdp,
        name: XDP_PROGRAM_NAME.into(),
        program: &generated.program,
    }];
    if let Some(egress) = &egress {
        programs.push(ProgramDef {
            kind: ProgramKind::Tc,
            name: tc::TC_PROGRAM_NAME.into(),
            program: egress,
        });
    }
    let object = elf::write_object(&ObjectSpec {
        license: "GPL".into(),
        maps: &defs,
        programs,
    })
    .map_err(|e| format!("cannot write the object of {path}: {e}"))?;
    let elf_time = started.elapsed();
    std::hint::black_box(&object);

    let started = Instant::now();
    let encoded = abi::encode_images(&defs);
    let encode = started.elapsed();
    std::hint::black_box(&encoded);

    Ok([
        tables,
        check,
        lower,
        codegen,
        maps,
        listing_time,
        elf_time,
        encode,
    ])
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn cmd_stages(args: &[String]) -> Result<(), String> {
    let (path, repeat) = policy_and_repeat(args)?;
    let mut runs: Vec<[Duration; 8]> = Vec::new();
    for _ in 0..repeat {
        runs.push(stages_once(&path)?);
    }
    let mut total = 0.0;
    for (index, stage) in STAGES.iter().enumerate() {
        let value = median(runs.iter().map(|r| r[index].as_secs_f64()).collect());
        total += value;
        println!("{stage}\t{value:.6}");
    }
    println!("total\t{total:.6}");
    Ok(())
}

fn cmd_fill(args: &[String]) -> Result<(), String> {
    let (path, repeat) = policy_and_repeat(args)?;
    let (program, ..) = check_and_lower(&path)?;
    let full =
        patronus_codegen::compile(&program).map_err(|e| format!("cannot compile {path}: {e}"))?;
    // The largest LPM trie (the slowest kind to fill), else the largest
    // map: a DIR-24 array's runs are written through a mapping instead.
    const LPM_TRIE: u32 = 11;
    let (largest, _) = full
        .maps
        .iter()
        .enumerate()
        .max_by_key(|(_, m)| (m.map_type == LPM_TRIE, m.entries.len()))
        .ok_or_else(|| format!("{path}: the object has no maps"))?;
    let mut empty = full.clone();
    empty.maps[largest].entries.clear();
    let entries = full.maps[largest].entries.len();
    let load = |object: &patronus_codegen::Object| -> Result<f64, String> {
        let started = Instant::now();
        let loaded = patronus_runtime::Loaded::load_object(object)
            .map_err(|e| format!("cannot load {path}: {e}"))?;
        let seconds = started.elapsed().as_secs_f64();
        drop(loaded);
        Ok(seconds)
    };
    let (mut load_empty, mut load_full) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeat {
        load_empty = load_empty.min(load(&empty)?);
        load_full = load_full.min(load(&full)?);
    }
    let fill = load_full - load_empty;
    println!("map\t{}", full.maps[largest].name);
    println!("entries\t{entries}");
    println!("load_empty_s\t{load_empty:.6}");
    println!("load_full_s\t{load_full:.6}");
    println!("fill_s\t{fill:.6}");
    if fill > 0.0 {
        println!("fill_rate_per_s\t{:.0}", entries as f64 / fill);
    }
    Ok(())
}
