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

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use patronus_bench::{PROG_TYPE_XDP, main_with, number};
use patronus_runtime::sys;

const USAGE: &str = "xdpgen IFNAME FRAME SECONDS";
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
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

/// `struct xdp_md` as `ctx_in`: only `data_end` and `ingress_ifindex` set.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The `BPF_PROG_TEST_RUN` slice of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn send(prog: &OwnedFd, frame: &[u8], ctx: &XdpMd, repeat: u32) -> Result<(), String> {
    let mut attr = TestRun {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: BATCH_SIZE,
        ..TestRun::default()
    };
    // SAFETY: attr is the kernel's layout for this command; frame and ctx
    // outlive the call and have the sizes stated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRun,
            size_of::<TestRun>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(format!(
            "BPF_PROG_TEST_RUN (live frames): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
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
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let mut repeat: u32 = 1 << 20;
    let mut frames: u64 = 0;
    loop {
        send(&prog, &frame, &ctx, repeat)?;
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
