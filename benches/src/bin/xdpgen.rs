//! `xdpgen IFNAME FRAME SECONDS`: the veth benchmark's traffic generator.
//! Sends the Ethernet frame in file FRAME out of IFNAME as fast as one CPU
//! can, for SECONDS (at most 30), then prints `frames=N seconds=S pps=R`
//! (what was offered; the receiving side counts what it took).
//!
//! How: a two-instruction XDP program that returns `XDP_TX`, run under
//! `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` and the context's
//! ingress interface set to IFNAME. Every repetition then becomes a real
//! frame transmitted out of IFNAME — on a veth, straight into the peer's
//! receive ring, with no socket or qdisc on the way (xdp-trafficgen's
//! method).

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use patronus_bench::{PROG_TYPE_XDP, main_with, number};
use patronus_runtime::sys;

const USAGE: &str = "xdpgen IFNAME FRAME SECONDS";
const XDP_TX: u32 = 3;
/// Frames the kernel sends per internal batch (its default is 64 too).
const BATCH_SIZE: u32 = 64;
/// The hard cap on a run: never an unbounded flood.
const MAX_SECONDS: f64 = 30.0;

struct Options {
    ifname: String,
    frame: PathBuf,
    seconds: f64,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let [ifname, frame, seconds] = args.as_slice() else {
        return Err("expected IFNAME FRAME SECONDS".to_owned());
    };
    let seconds: f64 = number(seconds)?;
    if !(seconds > 0.0 && seconds <= MAX_SECONDS) {
        return Err(format!("SECONDS must be in (0, {MAX_SECONDS}]"));
    }
    Ok(Options {
        ifname: ifname.clone(),
        frame: frame.into(),
        seconds,
    })
}

fn run(o: &Options) -> Result<(), String> {
    let frame = std::fs::read(&o.frame).map_err(|e| format!("{}: {e}", o.frame.display()))?;
    if frame.len() < 14 {
        return Err(format!(
            "{}: shorter than an Ethernet header",
            o.frame.display()
        ));
    }
    let name = std::ffi::CString::new(o.ifname.as_str()).map_err(|_| "bad interface name")?;
    // SAFETY: name is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("no interface {}", o.ifname));
    }
    // r0 = XDP_TX; exit
    let mut insns = vec![0xb7, 0, 0, 0];
    insns.extend(XDP_TX.to_le_bytes());
    insns.extend([0x95, 0, 0, 0, 0, 0, 0, 0]);
    let prog = sys::load_probe_program(PROG_TYPE_XDP, &insns)
        .map_err(|e| format!("loading the XDP_TX program: {e}"))?;

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let mut repeat: u32 = 1 << 20;
    let mut frames: u64 = 0;
    loop {
        sys::prog_test_run_live_frames(prog.as_fd(), &frame, ifindex, repeat, BATCH_SIZE)
            .map_err(|e| format!("BPF_PROG_TEST_RUN (live frames): {e}"))?;
        frames += u64::from(repeat);
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Shrink the last calls so the run ends near its deadline.
        let per_frame = now.duration_since(start).as_secs_f64() / frames as f64;
        let left = deadline.duration_since(now).as_secs_f64();
        repeat = repeat.min((left / per_frame) as u32 + 1);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "frames={frames} seconds={secs:.3} pps={:.0}",
        frames as f64 / secs
    );
    Ok(())
}

fn main() -> ExitCode {
    main_with("xdpgen", USAGE, parse, run)
}
