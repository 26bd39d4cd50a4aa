//! Shared pieces of the benchmark drivers in `src/bin/` (one binary per
//! measurement; `benches/run` calls them). Not a library for users.

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use patronus_compiler::diag::Files;
use patronus_runtime::sys;

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `BPF_PROG_TYPE_XDP`.
pub const PROG_TYPE_XDP: u32 = 6;

/// Runs a driver: usage errors (from `parse`) exit 2 with `usage`, run
/// errors exit 1, both prefixed with the driver's name.
pub fn main_with<O>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(Vec<String>) -> Result<O, String>,
    run: impl FnOnce(&O) -> Result<(), String>,
) -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{name}: {message}");
            eprintln!("usage: {usage}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A number argument; `_` separators allowed (`1_000_000`).
pub fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))
}

/// The Ethernet frame of a packet in policy test syntax (docs/language.md §9),
/// as `patronusc test` builds it.
pub fn frame(spec: &str) -> Result<Vec<u8>, String> {
    let ast = patronus_grammar::parse_packet(spec).map_err(|e| e.message)?;
    let mut files = Files::new();
    let file = files.add("packet", spec.to_owned());
    let packet = patronus_compiler::packet_from_spec(file, spec, &ast).map_err(|diagnostics| {
        let text: Vec<_> = diagnostics.iter().map(|d| d.message.clone()).collect();
        format!("`{spec}`: {}", text.join("; "))
    })?;
    Ok(patronus_compiler::packet::build(&packet))
}

/// `r0 = XDP_DROP; exit`: the floor, timed the same way as the programs.
pub fn floor_program() -> Result<OwnedFd, String> {
    let mut insns = vec![0xb7, 0, 0, 0];
    insns.extend(XDP_DROP.to_le_bytes());
    insns.extend([0x95, 0, 0, 0, 0, 0, 0, 0]);
    sys::load_probe_program(PROG_TYPE_XDP, &insns).map_err(|e| format!("loading the floor: {e}"))
}

/// splitmix64, seeded: every run draws the same flows and mixes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
