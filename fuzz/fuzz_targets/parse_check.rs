//! Fuzz target `parse_check`: arbitrary bytes, read as UTF-8 (lossily), go
//! through the whole front end — parse, resolve, load tables, type check,
//! lint — and every diagnostic is rendered. Nothing on that path may panic,
//! whatever the input: it all runs on user-written text.
//!
//! Tables come from [`MemoryTables`], which serves a few small files (one
//! with a bad line, one that may not be quoted) by name and errors for
//! every other path (`/dev/zero` included: nothing is read from disk), so
//! the table paths of the seed corpus (policies/, compiler fixtures)
//! resolve too. The seeds include the hostile shapes of the fixtures (long
//! const chains, doubling consts, a huge identifier, 62,501 rules): the
//! limits of docs/language.md keep each run bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use patronus_compiler::diag::Files;
use patronus_compiler::{LoadedFile, TableLoader, check, render};

/// The table files the fuzzer can name, by path as written in a policy
/// (matched on the file name, so `tables/x.txt` and `x.txt` both load).
const TABLES: &[(&str, &str)] = &[
    (
        "bastion-banned.txt",
        "# banned\n203.0.113.66\n198.51.100.128/27\n2001:db8:bad::/48\n",
    ),
    (
        "reference-blocklist.txt",
        "198.51.100.0/24\n203.0.113.96/27\n2001:db8:bad::/48\n",
    ),
    (
        "bogons-and-blocklist.txt",
        "# bogons\n10.0.0.0/8\nfc00::/7\n\n# blocklist\n203.0.113.200\n2001:db8:b0b0::/48\n",
    ),
    ("blocklist.txt", "192.0.2.0/24\n2001:db8::/32\n"),
    ("empty.txt", ""),
    // A bad line and a host-bits CIDR: the error and warning paths.
    ("bad.txt", "192.0.2.1\nnot-an-address\n10.1.2.3/8\n"),
    // Served as if from outside the policy's directory (`--allow-path`):
    // its bad lines are reported without quoting it.
    ("outside.txt", "192.0.2.1\nSECRET=x\n\u{1b}[2J\n"),
];

struct MemoryTables;

impl TableLoader for MemoryTables {
    fn load(&self, _policy_name: &str, path: &str) -> Result<LoadedFile, String> {
        let file_name = path.rsplit('/').next().unwrap_or(path);
        TABLES
            .iter()
            .find(|(name, _)| *name == file_name)
            .map(|(name, text)| LoadedFile {
                name: format!("tables/{name}"),
                text: (*text).to_string(),
            })
            .ok_or_else(|| format!("{path}: no such file"))
    }

    fn may_quote(&self, _policy_name: &str, file: &LoadedFile) -> bool {
        file.name != "tables/outside.txt"
    }
}

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let mut files = Files::new();
    let file = files.add("fuzz.pf", source.into_owned());
    let checked = check(&mut files, file, &MemoryTables);
    // Rendering indexes into the source by span: a bad span panics here.
    let human = render::human(&files, &checked.diagnostics, false);
    let json = render::json_lines(&files, &checked.diagnostics);
    // A file that may not be quoted never is.
    assert!(!human.contains("SECRET") && !json.contains("SECRET"));
    if checked.policy.is_some() {
        assert!(
            !checked.has_errors(),
            "a policy came back along with errors"
        );
    }
});
