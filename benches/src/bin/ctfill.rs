//! `ctfill PINDIR [--levels "0 1000 ..."] [--probes K] [--repeat R] [--seed S]`:
//! the conntrack scaling curve of benches/run. Owns filling a pinned
//! Patronus policy's IPv4 conntrack table (`PINDIR/maps/ct_v4`) with random
//! distinct established flows and timing the pinned XDP program
//! (`PINDIR/prog`) under `BPF_PROG_TEST_RUN` at each fill level.
//!
//! The policy must be loaded with `patronusc load --out` flows (their entry
//! gives the live `last_ns`/timeout of an established flow, so the filled
//! entries look exactly like ones the data path wrote), allow TCP to ports
//! 80 and 443 from 10.0.0.0/8, and have a conntrack table larger than the
//! highest level plus the probes.
//!
//! For each level (entries filled so far, cumulative) one TSV row on stdout:
//! - `est_one_flow`: ns/run of one established ACK repeated R times (hot);
//! - `est_random`: mean ns of K runs of 1 repetition, each an ACK of a
//!   different filled flow (every lookup a different entry);
//! - `new_flow`: mean ns of K runs of 1 repetition, each a SYN of a flow the
//!   table has never seen (lookup miss + insert); those entries are deleted
//!   again so every level holds exactly its number of filled flows;
//! - `floor_r1`: mean ns of K single runs of `return XDP_DROP`, the cost of
//!   timing one repetition (subtract it from the two random columns).
//!
//! Flows: remote 10.x.y.z (random, excluded from every bench blocklist),
//! random source port, to 10.77.0.2; keys encoded by `patronus_codegen::abi`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use patronus_bench::{Rng, XDP_DROP, floor_program, frame, number};
use patronus_codegen::abi::conntrack::{self as ct, VALUE_DIR, VALUE_SIZE, VALUE_STATE};
use patronus_compiler::interp::conntrack::FlowState;
use patronus_compiler::ir::FlowKey;
use patronus_runtime::sys;

const XDP_PASS: u32 = 2;
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// Entries per `BPF_MAP_UPDATE_BATCH` call.
const BATCH: usize = 8192;

struct Options {
    dir: PathBuf,
    levels: Vec<usize>,
    probes: usize,
    repeat: u32,
    seed: u64,
}

fn main() -> ExitCode {
    patronus_bench::main_with(
        "ctfill",
        "ctfill PINDIR [--levels \"0 1000 10000\"] [--probes K] [--repeat R] [--seed S]",
        parse_args,
        run,
    )
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        dir: PathBuf::new(),
        levels: vec![0, 1_000, 10_000, 100_000, 1_000_000],
        probes: 10_000,
        repeat: 1_000_000,
        seed: 1,
    };
    let mut dir = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--levels" => {
                options.levels = value("--levels")?
                    .split_whitespace()
                    .map(|s| s.parse().map_err(|_| format!("bad level `{s}`")))
                    .collect::<Result<_, _>>()?;
            }
            "--probes" => options.probes = number(&value("--probes")?)?,
            "--repeat" => options.repeat = number(&value("--repeat")?)?,
            "--seed" => options.seed = number(&value("--seed")?)?,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    options.dir = dir.ok_or("missing PINDIR")?;
    if options.levels.windows(2).any(|w| w[0] > w[1]) {
        return Err("--levels must be ascending (the table is filled cumulatively)".into());
    }
    if options.probes == 0 || options.repeat == 0 {
        return Err("--probes and --repeat must be positive".into());
    }
    Ok(options)
}

/// Distinct remote endpoints (10.x.y.z, port >= 1024) across the whole run.
struct Flows {
    rng: Rng,
    seen: HashSet<u64>,
}

impl Flows {
    fn fresh(&mut self) -> (Ipv4Addr, u16) {
        loop {
            let r = self.rng.next_u64();
            let addr = 0x0a00_0000 | (r as u32 & 0x00ff_ffff);
            let port = 1024 + ((r >> 32) as u16 % (65535 - 1024));
            if Ipv4Addr::from(addr) == LOCAL {
                continue;
            }
            if self.seen.insert(u64::from(addr) << 16 | u64::from(port)) {
                return (Ipv4Addr::from(addr), port);
            }
        }
    }
}

fn flow_key(remote: Ipv4Addr, port: u16, local_port: u16) -> FlowKey {
    FlowKey {
        proto: 6,
        src: IpAddr::V4(remote),
        dst: IpAddr::V4(LOCAL),
        src_port: port,
        dst_port: local_port,
    }
}

fn test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> Result<(u32, u32), String> {
    let r =
        sys::prog_test_run(prog, data, repeat).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
    Ok((r.retval, r.duration_ns))
}

/// ns of one repetition over `frames`, each run once: the median of the
/// means of 5 chunks (a chunk disturbed by the VM stays out). Every verdict
/// must be `expect`.
fn mean_single(
    prog: BorrowedFd<'_>,
    frames: &[Vec<u8>],
    expect: u32,
    what: &str,
) -> Result<f64, String> {
    let mut means = Vec::new();
    for chunk in frames.chunks(frames.len().div_ceil(5).max(1)) {
        let mut total = 0u64;
        for f in chunk {
            let (ret, ns) = test_run(prog, f, 1)?;
            if ret != expect {
                return Err(format!("{what}: verdict {ret}, expected {expect}"));
            }
            total += u64::from(ns);
        }
        means.push(total as f64 / chunk.len() as f64);
    }
    means.sort_by(f64::total_cmp);
    means
        .get(means.len() / 2)
        .copied()
        .ok_or_else(|| format!("{what}: no frames"))
}

/// The value of a live established entry: the one an `--out` flow left.
fn template_value(map: BorrowedFd<'_>, key_size: usize) -> Result<Vec<u8>, String> {
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; key_size];
    let mut value = vec![0u8; VALUE_SIZE];
    while sys::map_get_next_key(map, key.as_deref(), &mut next)
        .map_err(|e| format!("ct_v4: {e}"))?
    {
        if sys::map_lookup_elem(map, &next, &mut value).map_err(|e| format!("ct_v4: {e}"))?
            && value[VALUE_STATE as usize] == ct::state_code(FlowState::TcpEstablished)
        {
            return Ok(value);
        }
        key = Some(next.clone());
    }
    Err("ct_v4 holds no established flow: load the policy with `patronusc load --out ...`".into())
}

fn fill(
    map: BorrowedFd<'_>,
    flows: &mut Flows,
    template: &[u8],
    count: usize,
    filled: &mut Vec<(Ipv4Addr, u16)>,
) -> Result<(), String> {
    let mut keys = Vec::with_capacity(BATCH * 16);
    let mut values = Vec::with_capacity(BATCH * VALUE_SIZE);
    let mut left = count;
    while left > 0 {
        let n = left.min(BATCH);
        keys.clear();
        values.clear();
        for _ in 0..n {
            let (remote, port) = flows.fresh();
            let tuple = flow_key(remote, port, 443);
            keys.extend(ct::encode_key(&tuple).ok_or("key encoding failed")?);
            let mut value = template.to_vec();
            // The flow started with the remote's packet (tuple's direction).
            value[VALUE_DIR as usize] = u8::from(ct::in_key_order(&tuple));
            values.extend(value);
            filled.push((remote, port));
        }
        sys::map_update_batch(map, &keys, &values, n as u32).map_err(|(e, done)| {
            format!("BPF_MAP_UPDATE_BATCH on ct_v4: {e} after {done} entries")
        })?;
        left -= n;
    }
    Ok(())
}

fn run(o: &Options) -> Result<(), String> {
    let open = |p: &Path| sys::obj_get(p).map_err(|e| format!("{}: {e}", p.display()));
    let prog = open(&o.dir.join("prog"))?;
    let map = open(&o.dir.join("maps/ct_v4"))?;
    let info = sys::map_info(map.as_fd()).map_err(|e| format!("ct_v4: {e}"))?;
    let key_size = ct::key_layout(patronus_compiler::typed::Family::Ipv4).size;
    if info.key_size as usize != key_size || info.value_size as usize != VALUE_SIZE {
        return Err(format!(
            "ct_v4 has key/value sizes {}/{}, the ABI says {key_size}/{VALUE_SIZE}",
            info.key_size, info.value_size
        ));
    }
    let top = o.levels.last().copied().unwrap_or(0);
    if (info.max_entries as usize) < top + o.probes + 16 {
        return Err(format!(
            "ct_v4 holds {} entries, the run needs {} (raise `conntrack-size`)",
            info.max_entries,
            top + o.probes + 16
        ));
    }
    let template = template_value(map.as_fd(), key_size)?;
    let floor = floor_program()?;
    let hot = frame("tcp 192.0.2.20:40001 -> 10.77.0.2:443 flags A")?;

    let mut flows = Flows {
        rng: Rng(o.seed),
        seen: HashSet::new(),
    };
    let mut filled = Vec::with_capacity(top);
    let mut sampler = Rng(o.seed ^ 0x5eed);
    println!("entries\test_one_flow\test_random\tnew_flow\tfloor_r1");
    for &level in &o.levels {
        let t0 = Instant::now();
        let add = level - filled.len();
        fill(map.as_fd(), &mut flows, &template, add, &mut filled)?;
        if add > 0 {
            let secs = t0.elapsed().as_secs_f64();
            eprintln!(
                "ctfill: +{add} flows in {secs:.3} s ({:.0} entries/s), {level} filled",
                add as f64 / secs
            );
        }
        // Every probe a different flow: filled ones for est_random, unseen
        // ones for new_flow.
        let est: Vec<Vec<u8>> = if filled.is_empty() {
            Vec::new()
        } else {
            (0..o.probes)
                .map(|_| {
                    let (a, p) = filled[(sampler.next_u64() % filled.len() as u64) as usize];
                    frame(&format!("tcp {a}:{p} -> {LOCAL}:443 flags A"))
                })
                .collect::<Result<_, _>>()?
        };
        let fresh: Vec<(Ipv4Addr, u16)> = (0..o.probes).map(|_| flows.fresh()).collect();
        let new: Vec<Vec<u8>> = fresh
            .iter()
            .map(|(a, p)| frame(&format!("tcp {a}:{p} -> {LOCAL}:80 flags S")))
            .collect::<Result<_, _>>()?;

        let (ret, one) = test_run(prog.as_fd(), &hot, o.repeat)?;
        if ret != XDP_PASS {
            return Err(format!(
                "established one-flow packet: verdict {ret}, expected PASS (2)"
            ));
        }
        let est_ns = if est.is_empty() {
            String::new()
        } else {
            format!(
                "{:.1}",
                mean_single(prog.as_fd(), &est, XDP_PASS, "established flow")?
            )
        };
        let new_ns = mean_single(prog.as_fd(), &new, XDP_PASS, "new flow")?;
        let floor_ns = mean_single(floor.as_fd(), &new, XDP_DROP, "floor")?;
        println!("{level}\t{one}\t{est_ns}\t{new_ns:.1}\t{floor_ns:.1}");
        // Drop the probes' flows again: the next level holds only filled ones.
        for (a, p) in &fresh {
            let key = ct::encode_key(&flow_key(*a, *p, 80)).ok_or("key encoding failed")?;
            sys::map_delete_elem(map.as_fd(), &key).map_err(|e| format!("ct_v4 delete: {e}"))?;
        }
    }
    Ok(())
}
