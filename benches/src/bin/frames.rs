//! `frames DIR < SPECS`: writes one Ethernet frame per input line, as the
//! policy test syntax describes it (docs/language.md §9), to `DIR/NAME.bin`.
//!
//! Input lines are `NAME<TAB>PACKET` (e.g. `udp_denied\tudp 192.0.2.40:5000 ->
//! 10.77.0.2:5353`); blank lines and `#` comments are skipped. The frames are
//! the ones `patronusc test` and `explain` build, so every benchmark packet is
//! exactly a packet the reference interpreter can judge.

use std::io::{self, BufRead};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: frames DIR < NAME<TAB>PACKET lines");
        return ExitCode::from(2);
    };
    match run(&dir) {
        Ok(count) => {
            eprintln!("frames: wrote {count} frames to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("frames: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &std::path::Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut count = 0;
    for (number, line) in io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, spec) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {}: expected NAME<TAB>PACKET", number + 1))?;
        if name.is_empty() || name.contains('/') {
            return Err(format!("line {}: bad frame name `{name}`", number + 1));
        }
        let frame = patronus_bench::frame(spec)
            .map_err(|e| format!("line {} (`{spec}`): {e}", number + 1))?;
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, frame).map_err(|e| format!("{}: {e}", path.display()))?;
        count += 1;
    }
    Ok(count)
}
