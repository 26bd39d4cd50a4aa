//! Reload under load on the real kernel: while a client pings the server
//! every 10 ms and streams data over an open TCP connection, `patronusc
//! apply` swaps between two policies that both allow that traffic, over
//! and over. No echo reply may go missing, the stream never breaks, and
//! the conntrack table keeps its entries. The figures (reloads, pings
//! sent and lost, apply and swap time percentiles) are printed to stderr.
//! This file holds a single test: it redirects the process's stdout
//! around each apply to read the swap time `apply` reports.

mod e2e_support;
mod netns;

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e_support::{Pinger, percentile, report};
use netns::{SERVER, Setup, echo_server, open_connection};
use patronus_cli::common::Status;
use patronus_runtime::testing::kernel_or_skip;

const RELOADS: usize = 100;
const PING_INTERVAL: Duration = Duration::from_millis(10);

/// Two policies that both allow the stream (port 80) and the pings; they
/// differ elsewhere so that every apply loads a different program.
const POLICY_A: &str = "\
options {
  default   = deny
  conntrack = on
}

allow tcp to port 80 label \"web\"
allow icmp type echo-request label \"ping\"
allow udp to port 53 label \"dns\"
";

const POLICY_B: &str = "\
options {
  default   = deny
  conntrack = on
}

allow tcp to port { 80, 443 } label \"web\"
allow icmp type echo-request label \"ping\"
allow tcp from 198.51.100.0/24 to port 22 label \"ssh\"
";

/// Runs `f` with the process's stdout sent to a temporary file; returns
/// what was written there.
fn capture_stdout<T>(f: impl FnOnce() -> T) -> (T, String) {
    let mut file = tempfile_in_tmp();
    std::io::stdout().flush().expect("flushing stdout");
    // SAFETY: dup/dup2 on descriptors this process owns; stdout is put
    // back below before anything else uses it.
    let saved = unsafe { libc::dup(1) };
    assert!(saved >= 0, "dup(1): {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    unsafe { libc::dup2(file.as_raw_fd(), 1) };
    let value = f();
    let _ = std::io::stdout().flush();
    // SAFETY: as above.
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    let mut text = String::new();
    file.rewind().expect("rewinding the capture");
    file.read_to_string(&mut text).expect("reading the capture");
    (value, text)
}

fn tempfile_in_tmp() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("patronus-e2e-stdout-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("creating the capture file");
    // Unlinked at once: the descriptor is all that is needed.
    let _ = std::fs::remove_file(&path);
    file
}

/// The `swap: N µs` line of an apply report.
fn swap_time(report: &str) -> Option<Duration> {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("swap:"))?;
    let micros: f64 = line
        .trim_start()
        .strip_prefix("swap:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(micros / 1e6))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[test]
fn reload_under_load_loses_nothing() {
    if !kernel_or_skip("reload_under_load_loses_nothing") {
        return;
    }
    let setup = Setup::new("reload");
    echo_server(&setup.server, SERVER, 80);
    let policies = [
        setup.policy_file("a", POLICY_A),
        setup.policy_file("b", POLICY_B),
    ];
    let apply = |i: usize| {
        let path = policies[i % 2].to_str().expect("UTF-8").to_owned();
        setup.patronusc(&["apply", &path, "-i", &setup.iface])
    };
    assert_eq!(apply(0), Status::Success);

    let stop = Arc::new(AtomicBool::new(false));

    // The stream: write a chunk, read its echo, forever; any error ends it.
    let mut stream = open_connection(&setup.client, SERVER, 80);
    let streamed = Arc::new(AtomicU64::new(0));
    let streamer = {
        let (stop, streamed) = (stop.clone(), streamed.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let chunk = [0x5au8; 1024];
            let mut echo = [0u8; 1024];
            while !stop.load(Ordering::Relaxed) {
                stream
                    .write_all(&chunk)
                    .map_err(|e| format!("write: {e}"))?;
                stream
                    .read_exact(&mut echo)
                    .map_err(|e| format!("read: {e}"))?;
                if echo != chunk {
                    return Err("the echo differs".into());
                }
                streamed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                // Continuous, without taking a whole core of the 2-core CI.
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
    };

    // The flood: one echo request every 10 ms; replies counted by sequence.
    let pinger = Arc::new(Pinger::new(&setup.client, SERVER));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent, pinger) = (stop.clone(), sent.clone(), pinger.clone());
        std::thread::spawn(move || {
            let mut seq: u16 = 0;
            while !stop.load(Ordering::Relaxed) {
                pinger.send(seq).expect("sending an echo request");
                sent.fetch_add(1, Ordering::Relaxed);
                seq = seq.wrapping_add(1);
                std::thread::sleep(PING_INTERVAL);
            }
        })
    };
    let receiver = {
        let (stop, pinger) = (stop.clone(), pinger.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            let mut quiet_since: Option<Instant> = None;
            loop {
                let got = pinger.recv_reply(Instant::now() + Duration::from_millis(50));
                if let Some(seq) = got {
                    seen.insert(seq);
                    quiet_since = None;
                } else if stop.load(Ordering::Relaxed) {
                    // Stopped: drain replies still in flight, then end.
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(300) {
                        return seen.len() as u64;
                    }
                }
            }
        })
    };

    // Let both flows start and be tracked before the first reload.
    std::thread::sleep(Duration::from_millis(200));
    let ct_before = setup.conntrack_entries();
    assert!(
        ct_before >= 2,
        "the stream and the pings are tracked ({ct_before})"
    );

    let mut apply_times = Vec::with_capacity(RELOADS);
    let mut swap_times = Vec::with_capacity(RELOADS);
    let started = Instant::now();
    for i in 1..=RELOADS {
        let t = Instant::now();
        let (status, out) = capture_stdout(|| apply(i));
        apply_times.push(t.elapsed());
        assert_eq!(status, Status::Success, "reload {i}: {out}");
        // The report's `swap:` line (should its wording change, the figure
        // goes missing from the summary; the reload itself is what is tested).
        swap_times.extend(swap_time(&out));
    }
    let reload_wall = started.elapsed();
    let ct_after = setup.conntrack_entries();
    // Let the last swap see some traffic too.
    std::thread::sleep(Duration::from_millis(100));

    stop.store(true, Ordering::Relaxed);
    sender.join().expect("the ping sender panicked");
    let replies = receiver.join().expect("the ping receiver panicked");
    let stream_result = streamer.join().expect("the streamer panicked");
    let sent = sent.load(Ordering::Relaxed);
    let lost = sent.saturating_sub(replies);

    report(&format!(
        "reload under load: {RELOADS} reloads in {:.1} s; pings sent {sent}, lost {lost}; \
         streamed {} KiB; conntrack entries {ct_before} before, {ct_after} after",
        reload_wall.as_secs_f64(),
        streamed.load(Ordering::Relaxed) / 1024
    ));
    report(&format!(
        "  apply time p50 {} p99 {}; swap time p50 {} p99 {} ({} swaps reported)",
        ms(percentile(&apply_times, 50)),
        ms(percentile(&apply_times, 99)),
        ms(percentile(&swap_times, 50)),
        ms(percentile(&swap_times, 99)),
        swap_times.len(),
    ));

    assert_eq!(
        stream_result,
        Ok(()),
        "the TCP stream survives every reload"
    );
    assert!(
        streamed.load(Ordering::Relaxed) > 0,
        "the stream moved data"
    );
    assert_eq!(lost, 0, "{lost} of {sent} echo requests lost their reply");
    assert!(
        ct_after >= ct_before,
        "the reloads kept the conntrack entries ({ct_before} before, {ct_after} after)"
    );
}
