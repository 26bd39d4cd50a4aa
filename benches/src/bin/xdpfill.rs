//! `xdpfill`: fills the maps of the benchmark's hand-written XDP programs
//! (`benches/xdp/`) through the bpf syscall, and reports a pinned program's
//! size. The byte layouts are those of `benches/xdp/layout.h`.
//!
//! - `xdpfill blocklist MAPDIR FILE`: every CIDR of FILE (a blocklist-N.txt)
//!   into `MAPDIR/block4` / `MAPDIR/block6` (LPM tries).
//! - `xdpfill flows MAPDIR FILE [BACKGROUND]`: the flows of FILE (the
//!   corpus's flows.txt) into `MAPDIR/ct4` as established TCP, plus
//!   BACKGROUND random established flows (seeded), so lookups hit a
//!   populated table as on a busy host.
//! - `xdpfill rules MAPDIR FILE`: the naive program's rule array
//!   (`MAPDIR/rules`) from a naive-rules-N.txt.
//! - `xdpfill info PINNED`: `xlated_bytes jited_bytes verified_insns` of a
//!   pinned program, one line (sizes from `bpftool`, the verifier's count
//!   from the kernel's program info).

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use patronus_bench::{Rng, main_with, number};
use patronus_runtime::sys;

const USAGE: &str = "xdpfill blocklist|flows|rules MAPDIR FILE [BACKGROUND] | xdpfill info PINNED";
/// Entries per `BPF_MAP_UPDATE_BATCH` call.
const BATCH: usize = 8192;
/// `TTL_TCP_EST` of layout.h: five days.
const TTL_TCP_EST_NS: u64 = 5 * 24 * 3600 * 1_000_000_000;

enum Job {
    Blocklist(PathBuf, PathBuf),
    Flows(PathBuf, PathBuf, usize),
    Rules(PathBuf, PathBuf),
    Info(PathBuf),
}

fn parse(args: Vec<String>) -> Result<Job, String> {
    let p = |s: &String| PathBuf::from(s);
    match args.as_slice() {
        [c, dir, file] if c == "blocklist" => Ok(Job::Blocklist(p(dir), p(file))),
        [c, dir, file] if c == "flows" => Ok(Job::Flows(p(dir), p(file), 0)),
        [c, dir, file, n] if c == "flows" => Ok(Job::Flows(p(dir), p(file), number(n)?)),
        [c, dir, file] if c == "rules" => Ok(Job::Rules(p(dir), p(file))),
        [c, pinned] if c == "info" => Ok(Job::Info(p(pinned))),
        _ => Err("unknown command or wrong arguments".to_owned()),
    }
}

fn open(path: &Path) -> Result<OwnedFd, String> {
    sys::obj_get(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_lines(file: &Path) -> Result<Vec<(usize, String)>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim().to_owned()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// `ADDR/LEN` (or a bare address) as the address and its prefix length.
fn cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = text.split_once('/').unwrap_or((text, ""));
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{text}` is not a CIDR"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() { max } else { number(len)? };
    if len > max {
        return Err(format!("`{text}`: prefix length over {max}"));
    }
    Ok((addr, len))
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Writes `count` entries laid end to end: batched, or one at a time
/// where the map type has no batch update.
fn put(map: &OwnedFd, name: &str, keys: &[u8], values: &[u8], count: usize) -> Result<(), String> {
    if count == 0 {
        return Ok(());
    }
    let (ks, vs) = (keys.len() / count, values.len() / count);
    for start in (0..count).step_by(BATCH) {
        let n = BATCH.min(count - start);
        let k = &keys[start * ks..(start + n) * ks];
        let v = &values[start * vs..(start + n) * vs];
        if sys::map_update_batch(map.as_fd(), k, v, n as u32).is_err() {
            for i in 0..n {
                sys::map_update_elem(
                    map.as_fd(),
                    &k[i * ks..(i + 1) * ks],
                    &v[i * vs..(i + 1) * vs],
                )
                .map_err(|e| format!("{name}: update: {e}"))?;
            }
        }
    }
    Ok(())
}

fn blocklist(dir: &Path, file: &Path) -> Result<(), String> {
    let (mut k4, mut k6) = (Vec::new(), Vec::new());
    for (line, text) in read_lines(file)? {
        let (addr, len) = cidr(&text).map_err(|e| format!("{}:{line}: {e}", file.display()))?;
        let keys = if addr.is_ipv4() { &mut k4 } else { &mut k6 };
        keys.extend(u32::from(len).to_ne_bytes());
        keys.extend(octets(addr));
    }
    let (n4, n6) = (k4.len() / 8, k6.len() / 20);
    put(&open(&dir.join("block4"))?, "block4", &k4, &vec![1; n4], n4)?;
    put(&open(&dir.join("block6"))?, "block6", &k6, &vec![1; n6], n6)?;
    eprintln!("xdpfill: {n4} IPv4 and {n6} IPv6 prefixes");
    Ok(())
}

/// `CLOCK_MONOTONIC_COARSE`, the clock of `bpf_ktime_get_coarse_ns()`.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A `struct flow4` key: remote source first, as the inbound packet has it.
fn flow4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&src);
    k[4..8].copy_from_slice(&dst);
    k[8..10].copy_from_slice(&sport.to_be_bytes());
    k[10..12].copy_from_slice(&dport.to_be_bytes());
    k[12] = proto;
    k
}

fn flows(dir: &Path, file: &Path, background: usize) -> Result<(), String> {
    let mut keys = Vec::new();
    let mut listed = 0;
    for (line, text) in read_lines(file)? {
        let at = |e: String| format!("{}:{line}: {e}", file.display());
        let f: Vec<&str> = text.split_whitespace().collect();
        let [proto, remote, rport, host, hport] = f.as_slice() else {
            return Err(at(
                "expected `proto remote remote_port host host_port`".to_owned()
            ));
        };
        let proto = match *proto {
            "tcp" => 6,
            "udp" => 17,
            other => return Err(at(format!("protocol `{other}`"))),
        };
        let addr = |s: &str| match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok(a.octets()),
            _ => Err(at(format!("`{s}` is not an IPv4 address"))),
        };
        keys.extend(flow4(
            addr(remote)?,
            number(rport).map_err(at)?,
            addr(host)?,
            number(hport).map_err(at)?,
            proto,
        ));
        listed += 1;
    }
    // Background: TCP from random 10.x.y.z (outside every blocklist) to
    // the DUT's port 443.
    let mut rng = Rng(0x5eed_f10b);
    for _ in 0..background {
        let r = rng.next_u64();
        let src = [10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8];
        keys.extend(flow4(
            src,
            1024 + (r >> 32) as u16 % 60000,
            [10, 77, 0, 2],
            443,
            6,
        ));
    }
    let count = keys.len() / 16;
    let mut value = coarse_now_ns().to_ne_bytes().to_vec();
    value.extend(TTL_TCP_EST_NS.to_ne_bytes());
    let values = value.repeat(count);
    put(&open(&dir.join("ct4"))?, "ct4", &keys, &values, count)?;
    eprintln!("xdpfill: {listed} flows and {background} background flows established");
    Ok(())
}

/// One `struct rule` of layout.h (44 bytes).
fn rule(line: &str) -> Result<Vec<u8>, String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [action, family, proto, icmp, lo, hi, source] = f.as_slice() else {
        return Err("expected 7 fields".to_owned());
    };
    let action = match *action {
        "deny" => 1u8,
        "allow" => 2,
        "limit" => 3,
        other => return Err(format!("action `{other}`")),
    };
    let family: u8 = number(family)?;
    let (proto, proto_mask) = match *proto {
        "any" => (0u8, 0u8),
        "tcp" => (6, 0xff),
        "udp" => (17, 0xff),
        "icmp" => (1, 0xff),
        "icmpv6" => (58, 0xff),
        n => (number(n)?, 0xff),
    };
    let (icmp, icmp_mask) = match *icmp {
        "any" => (0u8, 0u8),
        n => (number(n)?, 0xff),
    };
    let (addr, len) = cidr(source)?;
    if (family == 4) != addr.is_ipv4() {
        return Err(format!("`{source}` is not an IPv{family} prefix"));
    }
    let mut src = [0u8; 16];
    let mut mask = [0u8; 16];
    for (i, byte) in octets(addr).into_iter().enumerate() {
        let bits = (len as usize).saturating_sub(i * 8).min(8) as u32;
        let m = (0xff00u16 >> bits) as u8;
        mask[i] = m;
        src[i] = byte & m;
    }
    let mut r = vec![action, family, proto, proto_mask, icmp, icmp_mask];
    r.extend(number::<u16>(lo)?.to_ne_bytes());
    r.extend(number::<u16>(hi)?.to_ne_bytes());
    r.extend([0, 0]);
    r.extend(src);
    r.extend(mask);
    Ok(r)
}

fn rules(dir: &Path, file: &Path) -> Result<(), String> {
    let map = open(&dir.join("rules"))?;
    let info = sys::map_info(map.as_fd()).map_err(|e| format!("rules: {e}"))?;
    let lines = read_lines(file)?;
    if lines.len() > info.max_entries as usize {
        return Err(format!(
            "{} rules do not fit the program's array of {}",
            lines.len(),
            info.max_entries
        ));
    }
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for (i, (line, text)) in lines.iter().enumerate() {
        keys.extend((i as u32).to_ne_bytes());
        values.extend(rule(text).map_err(|e| format!("{}:{line}: {e}", file.display()))?);
    }
    put(&map, "rules", &keys, &values, lines.len())?;
    eprintln!("xdpfill: {} rules", lines.len());
    Ok(())
}

fn info(pinned: &Path) -> Result<(), String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "pinned"])
        .arg(pinned)
        .output()
        .map_err(|e| format!("bpftool: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bpftool prog show: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bpftool's JSON: {e}"))?;
    let size = |key: &str| {
        json.get(key)
            .and_then(|v| v.as_u64())
            .map_or("-".to_owned(), |v| v.to_string())
    };
    let verified = aya::programs::ProgramInfo::from_pin(pinned)
        .ok()
        .and_then(|i| i.verified_instruction_count())
        .map_or("-".to_owned(), |v| v.to_string());
    println!(
        "{} {} {verified}",
        size("bytes_xlated"),
        size("bytes_jited")
    );
    Ok(())
}

fn run(job: &Job) -> Result<(), String> {
    match job {
        Job::Blocklist(dir, file) => blocklist(dir, file),
        Job::Flows(dir, file, n) => flows(dir, file, *n),
        Job::Rules(dir, file) => rules(dir, file),
        Job::Info(pinned) => info(pinned),
    }
}

fn main() -> ExitCode {
    main_with("xdpfill", USAGE, parse, run)
}
