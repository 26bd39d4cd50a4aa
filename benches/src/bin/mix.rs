//! `mix --blocklist FILE --prog NAME=PIN... [--frames K] [--passes P]
//! [--shares "0 10 ..."] [--seed S]`: the blocklist-share curve of
//! benches/run. Owns building a mix of distinct frames of which a given share
//! comes from inside the blocklist, and timing pinned XDP programs on it
//! under `BPF_PROG_TEST_RUN`.
//!
//! Every frame is a UDP datagram to 10.77.0.2:5353 (a port the reference
//! policy denies) from a different random source: the blocklisted ones from
//! a random prefix of FILE (random host bits), the others from random
//! unicast addresses no prefix of FILE covers. Every program must drop every
//! frame (checked). Each frame runs once per pass (1 repetition, so LPM
//! walks differ from run to run); the figure is the mean ns over all runs.
//! A `return XDP_DROP` program timed the same way is the `xdp_drop` column
//! (the cost of timing one repetition).
//!
//! Output: TSV on stdout, `blocklisted_pct<TAB>NAME...<TAB>xdp_drop`.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use patronus_bench::{Rng, XDP_DROP, floor_program, frame, number};
use patronus_runtime::sys;

struct Options {
    blocklist: PathBuf,
    progs: Vec<(String, PathBuf)>,
    frames: usize,
    passes: usize,
    shares: Vec<u32>,
    seed: u64,
}

fn main() -> ExitCode {
    patronus_bench::main_with(
        "mix",
        "mix --blocklist FILE --prog NAME=PIN... [--frames K] [--passes P] [--shares \"0 50 100\"] [--seed S]",
        parse_args,
        run,
    )
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options {
        blocklist: PathBuf::new(),
        progs: Vec::new(),
        frames: 2000,
        passes: 5,
        shares: vec![0, 10, 25, 50, 75, 90, 100],
        seed: 7,
    };
    let mut blocklist = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--blocklist" => blocklist = Some(PathBuf::from(value("--blocklist")?)),
            "--prog" => {
                let v = value("--prog")?;
                let (name, pin) = v
                    .split_once('=')
                    .ok_or(format!("--prog expects NAME=PIN, got `{v}`"))?;
                o.progs.push((name.to_owned(), PathBuf::from(pin)));
            }
            "--frames" => o.frames = number(&value("--frames")?)?,
            "--passes" => o.passes = number(&value("--passes")?)?,
            "--seed" => o.seed = number(&value("--seed")?)?,
            "--shares" => {
                o.shares = value("--shares")?
                    .split_whitespace()
                    .map(number)
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    o.blocklist = blocklist.ok_or("missing --blocklist")?;
    if o.progs.is_empty() {
        return Err("give at least one --prog".into());
    }
    if o.frames == 0 || o.passes == 0 || o.shares.iter().any(|&s| s > 100) {
        return Err("--frames and --passes must be positive, shares 0..100".into());
    }
    Ok(o)
}

/// The IPv4 prefixes of a bench blocklist file (`a.b.c.d/len` lines).
struct Blocklist {
    prefixes: Vec<(u32, u8)>,
    set: HashSet<(u32, u8)>,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl Blocklist {
    fn read(path: &PathBuf) -> Result<Blocklist, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut prefixes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.contains(':') {
                continue;
            }
            let bad = || {
                format!(
                    "{}:{}: `{line}` is not an IPv4 prefix",
                    path.display(),
                    i + 1
                )
            };
            let (addr, len) = line.split_once('/').ok_or_else(bad)?;
            let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
            let len: u8 = len.parse().map_err(|_| bad())?;
            if len > 32 {
                return Err(bad());
            }
            prefixes.push((u32::from(addr) & mask(len), len));
        }
        if prefixes.is_empty() {
            return Err(format!("{}: no IPv4 prefixes", path.display()));
        }
        let set = prefixes.iter().copied().collect();
        Ok(Blocklist { prefixes, set })
    }

    fn covers(&self, addr: u32) -> bool {
        (0..=32).any(|len| self.set.contains(&(addr & mask(len), len)))
    }

    fn inside(&self, rng: &mut Rng) -> Ipv4Addr {
        let (net, len) = self.prefixes[(rng.next_u64() % self.prefixes.len() as u64) as usize];
        Ipv4Addr::from(net | (rng.next_u64() as u32 & !mask(len)))
    }

    fn outside(&self, rng: &mut Rng) -> Ipv4Addr {
        loop {
            let a = rng.next_u64() as u32;
            let first = a >> 24;
            // Unicast sources only, and never the DUT's own address.
            if first == 0 || first == 127 || first >= 224 || a == 0x0a4d_0002 || self.covers(a) {
                continue;
            }
            return Ipv4Addr::from(a);
        }
    }
}

/// Median over `passes` passes of the mean ns of one repetition over
/// `frames` (the median keeps a pass disturbed by the VM out).
fn mean_ns(
    prog: BorrowedFd<'_>,
    name: &str,
    frames: &[Vec<u8>],
    passes: usize,
) -> Result<f64, String> {
    let mut means = Vec::with_capacity(passes);
    // Pass 0 warms up and checks verdicts; it is not timed.
    for pass in 0..=passes {
        let mut total = 0u64;
        for f in frames {
            let r = sys::prog_test_run(prog, f, 1)
                .map_err(|e| format!("{name}: BPF_PROG_TEST_RUN: {e}"))?;
            if r.retval != XDP_DROP {
                return Err(format!(
                    "{name}: verdict {} on a mix frame, expected DROP (1)",
                    r.retval
                ));
            }
            total += u64::from(r.duration_ns);
        }
        if pass > 0 {
            means.push(total as f64 / frames.len() as f64);
        }
    }
    means.sort_by(f64::total_cmp);
    means
        .get(means.len() / 2)
        .copied()
        .ok_or_else(|| format!("{name}: no passes"))
}

fn run(o: &Options) -> Result<(), String> {
    let blocklist = Blocklist::read(&o.blocklist)?;
    let mut progs = Vec::new();
    for (name, pin) in &o.progs {
        let fd = sys::obj_get(pin).map_err(|e| format!("{name}: {}: {e}", pin.display()))?;
        progs.push((name.as_str(), fd));
    }
    let floor = floor_program()?;
    let mut rng = Rng(o.seed);
    let names: Vec<&str> = progs.iter().map(|(n, _)| *n).collect();
    println!("blocklisted_pct\t{}\txdp_drop", names.join("\t"));
    for &share in &o.shares {
        let hits = (o.frames * share as usize + 50) / 100;
        let mut frames = Vec::with_capacity(o.frames);
        for i in 0..o.frames {
            let src = if i < hits {
                blocklist.inside(&mut rng)
            } else {
                blocklist.outside(&mut rng)
            };
            let sport = 1024 + (rng.next_u64() % 60000) as u16;
            frames.push(frame(&format!("udp {src}:{sport} -> 10.77.0.2:5353"))?);
        }
        // Interleave hits and misses (Fisher-Yates), as real traffic would.
        for i in (1..frames.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            frames.swap(i, j);
        }
        let mut row = vec![share.to_string()];
        for (name, fd) in &progs {
            row.push(format!(
                "{:.1}",
                mean_ns(fd.as_fd(), name, &frames, o.passes)?
            ));
        }
        row.push(format!(
            "{:.1}",
            mean_ns(floor.as_fd(), "xdp_drop", &frames, o.passes)?
        ));
        println!("{}", row.join("\t"));
    }
    Ok(())
}
