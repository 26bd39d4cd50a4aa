//! Front-end speed on hostile and large inputs: a 1,000,000-line table file
//! (target: well under 2 s), a policy of 100,000 rules, a 10 MB policy, and
//! the largest example policy. The whole of `compiler::check` is timed:
//! parse, resolve, table loading, type check and lints. Plain `std::time`;
//! run with `cargo bench -p patronus-compiler --bench check`. Each figure is
//! the best of three runs, to keep scheduler noise out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use patronus_compiler::diag::Files;
use patronus_compiler::{LoadedFile, TableLoader, check};

/// Serves table files from memory, so the figures are the compiler's alone.
struct MemLoader(HashMap<String, String>);

impl TableLoader for MemLoader {
    fn load(&self, _policy: &str, path: &str) -> Result<LoadedFile, String> {
        let text = self
            .0
            .get(path)
            .ok_or_else(|| format!("no table `{path}`"))?;
        Ok(LoadedFile {
            name: path.to_string(),
            text: text.clone(),
        })
    }
}

fn best_of_three(policy: &str, tables: &MemLoader) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut diagnostics = 0;
    for _ in 0..3 {
        let mut files = Files::new();
        let file = files.add("bench.pf", policy);
        let started = Instant::now();
        let checked = check(&mut files, file, tables);
        best = best.min(started.elapsed());
        diagnostics = checked.diagnostics.len();
    }
    (best, diagnostics)
}

fn report(what: &str, policy: &str, tables: &MemLoader) {
    let (time, diagnostics) = best_of_three(policy, tables);
    println!(
        "{what:<48} {:>10.1} ms  ({diagnostics} diagnostics)",
        time.as_secs_f64() * 1e3
    );
}

fn main() {
    let mut table = String::with_capacity(20 << 20);
    for i in 0..1_000_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        if i % 10 == 0 {
            table.push_str(&format!("2001:db8:{a:x}{b:02x}:{c:x}::/64  # v6\n"));
        } else {
            table.push_str(&format!("{}.{b}.{c}.0/24\n", u32::from(a) + 10));
        }
    }
    let tables = MemLoader(HashMap::from([("big.txt".to_string(), table)]));
    report(
        "1,000,000-line table file",
        "table big file \"big.txt\"\ndeny from @big\nallow tcp to port 22\n",
        &tables,
    );

    let none = MemLoader(HashMap::new());
    let rules: String = (0..100_000u32)
        .map(|i| {
            let [_, a, b, _] = i.to_be_bytes();
            format!(
                "allow tcp from 10.{a}.{b}.0/24 to port {}\n",
                1 + i % 60_000
            )
        })
        .collect();
    report("100,000 rules", &rules, &none);

    let mut ten_mb = String::with_capacity(10 << 20);
    while ten_mb.len() < 10 << 20 {
        ten_mb.push_str("# padding comment that makes the file large without adding rules\n");
    }
    ten_mb.push_str("allow tcp to port 22\n");
    report("10 MB policy (comments)", &ten_mb, &none);

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    let router = std::fs::read_to_string(format!("{root}/router.pf"));
    let router_tables = std::fs::read_dir(format!("{root}/tables"));
    if let (Ok(router), Ok(dir)) = (router, router_tables) {
        let mut map = HashMap::new();
        for entry in dir.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                map.insert(
                    format!("tables/{}", entry.file_name().to_string_lossy()),
                    text,
                );
            }
        }
        report(
            "policies/router.pf (largest example)",
            &router,
            &MemLoader(map),
        );
    }
}
