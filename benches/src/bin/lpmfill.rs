//! `lpmfill [N]` (root): map fill rates, batched (`BPF_MAP_UPDATE_BATCH`,
//! 8192 entries a call) against one `BPF_MAP_UPDATE_ELEM` per entry, for
//! an LPM trie of N /28 prefixes and a hash of N host addresses (default
//! N = 1,000,000). The maps come from a compiled one-rule policy (`deny
//! from @t`) loaded empty with `patronus_runtime::Loaded::load`; the
//! entries are codegen's image of the table. Prints `key<TAB>value` lines:
//! `{lpm,hash}_{batch,elem}_per_s`.

use std::os::fd::BorrowedFd;
use std::process::ExitCode;
use std::time::Instant;

use patronus_compiler::diag::Files;
use patronus_compiler::{LoadedFile, TableLoader, ir};
use patronus_runtime::{Image, Loaded, sys};

struct Table(String);

impl TableLoader for Table {
    fn load(&self, _policy: &str, _path: &str) -> Result<LoadedFile, String> {
        Ok(LoadedFile {
            name: "t.txt".into(),
            text: self.0.clone(),
        })
    }
}

/// The compiled policy `deny from @t` with `t` = `lines`.
fn compile(lines: String) -> Result<patronus_codegen::Object, String> {
    let text = "table t file \"t.txt\"\noptions {\n  default = allow\n}\ndeny from @t\n";
    let mut files = Files::new();
    let file = files.add("fill.pf".to_owned(), text.to_owned());
    let checked = patronus_compiler::check(&mut files, file, &Table(lines));
    if checked.has_errors() {
        return Err("the generated policy has errors".into());
    }
    let policy = checked.policy.ok_or("the generated policy has errors")?;
    patronus_codegen::compile(&ir::lower(&policy)).map_err(|e| e.to_string())
}

/// Entries per second for `entries` written into `fd`, batched or not.
fn fill(fd: BorrowedFd<'_>, entries: &[(Vec<u8>, Vec<u8>)], batched: bool) -> Result<f64, String> {
    let started = Instant::now();
    if batched {
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for chunk in entries.chunks(8192) {
            keys.clear();
            values.clear();
            for (k, v) in chunk {
                keys.extend_from_slice(k);
                values.extend_from_slice(v);
            }
            sys::map_update_batch(fd, &keys, &values, chunk.len() as u32)
                .map_err(|(e, at)| format!("batched update (at {at}): {e}"))?;
        }
    } else {
        for (k, v) in entries {
            sys::map_update_elem(fd, k, v).map_err(|e| format!("update: {e}"))?;
        }
    }
    Ok(entries.len() as f64 / started.elapsed().as_secs_f64())
}

fn run() -> Result<(), String> {
    let n: u32 = match std::env::args().nth(1) {
        Some(text) => text.parse().map_err(|_| "usage: lpmfill [N]")?,
        None => 1_000_000,
    };
    let base = u32::from(std::net::Ipv4Addr::new(16, 0, 0, 0));
    for (label, step, len) in [("lpm", 16u32, 28), ("hash", 1, 32)] {
        let lines: String = (0..n)
            .map(|i| format!("{}/{len}\n", std::net::Ipv4Addr::from(base + i * step)))
            .collect();
        let object = compile(lines)?;
        let image = object
            .maps
            .iter()
            .find(|m| !m.entries.is_empty())
            .ok_or("no filled map")?;
        for batched in [true, false] {
            let empty = Image {
                elf: &object.elf,
                maps: Vec::new(),
                listings: Vec::new(),
            };
            let loaded = Loaded::load(&empty).map_err(|e| e.to_string())?;
            let fd = loaded.map_fd(&image.name).ok_or("map missing")?;
            let rate = fill(fd, &image.entries, batched)?;
            let kind = if batched { "batch" } else { "elem" };
            println!("{label}_{kind}_per_s\t{rate:.0}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lpmfill: error: {message}");
            ExitCode::FAILURE
        }
    }
}
