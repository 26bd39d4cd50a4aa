//! `STATE_ROOT/IFACE`: everything the CLI keeps about an interface's
//! policy besides the kernel's pins, and the one module that reads and
//! writes it — the metadata (`meta.json`, [`Meta`]), the table metadata
//! (`tables.json`, [`TablesMeta`]), the saved sources (`snapshot.json`,
//! [`Snapshot`]), the run-time table journal (`journal`, [`Change`]), a
//! pending `--confirm` (`pending.json`, [`Pending`]), the rollback log and
//! the interface lock ([`ApplyLock`]). The formats are stable: older and
//! newer `patronusc` read each other's files. Paths below the roots and
//! safe file operations are `patronus_runtime::host`'s; the transaction
//! that writes these files together is `crate::txn`'s.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use patronus_compiler::net::Prefix;
use patronus_runtime::deploy::tables::{FastMap as RoutedMap, TableRoutes};
use patronus_runtime::host::{self, IfaceName, StateDir, StateFile, StateLock};
use patronus_runtime::install::{self, Pins};
use serde::{Deserialize, Serialize};

use crate::common::CliError;

/// Where metadata and lock files live by default.
pub const DEFAULT_STATE_ROOT: &str = host::paths::DEFAULT_STATE_ROOT;

/// `--pin-root` and `--state-root`: the command-line face of
/// [`host::Roots`], which owns every path below them.
#[derive(Debug, Clone, Args)]
pub struct Roots {
    /// The bpffs directory holding one pin directory per interface.
    #[arg(long, value_name = "DIR", default_value = install::DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
    /// The directory holding one metadata directory per interface.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_ROOT)]
    pub state_root: PathBuf,
}

impl Roots {
    pub fn host(&self) -> host::Roots {
        host::Roots::new(&self.pin_root, &self.state_root)
    }

    /// `PIN_ROOT/IFACE` as paths (no file-system access).
    pub fn pins(&self, iface: &IfaceName) -> Pins {
        self.host().pins(iface)
    }

    /// `STATE_ROOT/IFACE`, created when absent, verified.
    pub fn state(&self, iface: &IfaceName) -> Result<StateDir, CliError> {
        Ok(self.host().state(iface)?)
    }

    /// `STATE_ROOT/IFACE` if it exists, verified.
    pub fn existing_state(&self, iface: &IfaceName) -> Result<Option<StateDir>, CliError> {
        Ok(self.host().existing_state(iface)?)
    }

    /// Interfaces with a policy installed under the pin root, or with an
    /// unfinished change or a pending confirmation in the state root.
    pub fn interfaces(&self) -> Result<Vec<IfaceName>, CliError> {
        let mut names = self.host().interfaces()?;
        if let Ok(entries) = std::fs::read_dir(&self.state_root) {
            for entry in entries.flatten() {
                let Some(iface) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| IfaceName::new(n).ok())
                else {
                    continue;
                };
                if let Ok(Some(state)) = self.existing_state(&iface)
                    && (state.exists(&StateFile::Txn) || state.exists(&StateFile::Pending))
                {
                    names.push(iface);
                }
            }
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup_by(|a, b| a.as_str() == b.as_str());
        Ok(names)
    }
}

/// One stats counter as recorded at apply time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounterMeta {
    /// `rule` or `phase`.
    pub kind: String,
    /// `rule 2 "web"` or the phase's name.
    pub name: String,
    /// `file:line` of the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The rule's identity (`typed::Rule::identity`: its label, else its
    /// normalised text): how a replace finds the same rule's counter in
    /// the new layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The rule's number in the file (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// The rule's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl CounterMeta {
    /// What identifies this counter across policies: the rule identity,
    /// or the phase name. `None` for a rule recorded without identity.
    pub fn carry_key(&self) -> Option<String> {
        match self.kind.as_str() {
            "phase" => Some(format!("phase:{}", self.name)),
            _ => self.identity.as_ref().map(|id| format!("rule:{id}")),
        }
    }
}

/// What `apply` records about an installed policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub interface: String,
    pub source: String,
    /// FNV-1a 64 of the policy text, hex.
    pub policy_hash: String,
    pub mode: String,
    /// Seconds since the Unix epoch.
    pub attached_at: u64,
    pub replaced_at: Option<u64>,
    /// Stats map layout: counter `i` is at index `i`.
    pub counters: Vec<CounterMeta>,
    /// FNV-1a 64 of the object's ELF, hex: equal objects allow an
    /// in-place update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_hash: Option<String>,
    /// The kernel id of the XDP program loaded for `object_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_prog_id: Option<u32>,
    /// The kernel id of its tc egress program: `status` checks that the
    /// pair runs together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc_prog_id: Option<u32>,
}

/// A policy's source text and the table files it read, as they were.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The policy's file name, as given (table paths resolve against it).
    pub name: String,
    pub text: String,
    /// `(policy name, path as written, resolved name, contents)`.
    pub tables: Vec<(String, String, String, String)>,
}

/// `STATE_ROOT/IFACE/pending.json`: an apply waiting for confirmation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub token: String,
    /// Milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// What to go back to; `None`: there was no policy, unload.
    pub previous: Option<Snapshot>,
}

/// What an apply records for run-time table changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TablesMeta {
    /// The object these maps belong to (the metadata's `object_hash`).
    pub object_hash: String,
    pub tables: Vec<TableMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableMeta {
    pub name: String,
    /// The fast path for IPv4 prefixes: the maps to change (possibly none:
    /// no rule uses the table), or `None`: recompute.
    pub v4: Option<Vec<FastMap>>,
    pub v6: Option<Vec<FastMap>>,
}

/// A classifier map holding exactly one table's prefixes of one family.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FastMap {
    pub map: String,
    /// LPM trie (`prefixlen` u32 LE + address) or, if false, a hash of
    /// host addresses (the address alone; only host prefixes fit).
    pub lpm: bool,
    /// The value of every entry, hex.
    pub value: String,
    /// The DIR-24 slot array in front of this trie, if any (see
    /// `patronus_runtime::deploy::tables`): its slots say 1 (the table's
    /// one bitmap), 0 or FALLBACK.
    #[serde(default)]
    pub d24: Option<String>,
}

impl TablesMeta {
    /// What an apply of the object `object_hash` records of its tables'
    /// fast paths (`patronus_runtime::deploy::tables::fast_paths`).
    pub fn of(routes: Vec<TableRoutes>, object_hash: &str) -> TablesMeta {
        let maps = |maps: Option<Vec<RoutedMap>>| {
            maps.map(|maps| {
                maps.into_iter()
                    .map(|m| FastMap {
                        map: m.map,
                        lpm: m.lpm,
                        value: hex(&m.value),
                        d24: m.d24,
                    })
                    .collect()
            })
        };
        TablesMeta {
            object_hash: object_hash.to_owned(),
            tables: routes
                .into_iter()
                .map(|t| TableMeta {
                    name: t.name,
                    v4: maps(t.v4),
                    v6: maps(t.v6),
                })
                .collect(),
        }
    }
}

impl FastMap {
    /// The map as the runtime edits it; `None`: the value is damaged.
    pub fn routed(&self) -> Option<RoutedMap> {
        Some(RoutedMap {
            map: self.map.clone(),
            lpm: self.lpm,
            value: unhex(&self.value)?,
            d24: self.d24.clone(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An interface's state directory with its lock held (`STATE_ROOT/IFACE/lock`,
/// see [`host::StateDir::lock`]), released on drop.
pub(crate) struct ApplyLock {
    pub(crate) state: StateDir,
    _held: StateLock,
}

impl ApplyLock {
    /// Blocks until the other command changing `iface` is done.
    pub(crate) fn take(roots: &Roots, iface: &IfaceName) -> Result<ApplyLock, CliError> {
        let state = roots.state(iface)?;
        let held = state.lock()?;
        Ok(ApplyLock { state, _held: held })
    }

    /// The lock if nobody holds it now (`status` does not wait for an
    /// apply).
    pub(crate) fn try_take(
        roots: &Roots,
        iface: &IfaceName,
    ) -> Result<Option<ApplyLock>, CliError> {
        let state = roots.state(iface)?;
        Ok(state
            .try_lock()?
            .map(|held| ApplyLock { state, _held: held }))
    }
}

/// The metadata `apply` recorded for `iface`; `None` when there is none
/// (or it is damaged). Permission and trust problems are errors.
pub fn read_meta(roots: &Roots, iface: &IfaceName) -> Result<Option<Meta>, CliError> {
    let Some(state) = roots.existing_state(iface)? else {
        return Ok(None);
    };
    Ok(state
        .read(&StateFile::Meta)?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

fn read_json<T: for<'de> Deserialize<'de>>(
    state: &StateDir,
    file: &StateFile,
) -> Result<Option<T>, CliError> {
    Ok(state
        .read(file)?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

/// The pending apply recorded in `state`, if any.
pub fn pending(state: &StateDir) -> Result<Option<Pending>, CliError> {
    read_json(state, &StateFile::Pending)
}

/// The saved sources of the running policy, if recorded.
pub(crate) fn saved_snapshot(state: &StateDir) -> Result<Option<Snapshot>, CliError> {
    read_json(state, &StateFile::Snapshot)
}

pub(crate) fn read_tables_meta(
    state: &StateDir,
    iface: &IfaceName,
) -> Result<TablesMeta, CliError> {
    let path = state.file_path(&StateFile::Tables);
    let text = state.read(&StateFile::Tables)?.ok_or_else(|| {
        CliError::new(format!(
            "{iface}: no policy applied by this patronusc (no `{}`); run `patronusc apply` first",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::new(format!("`{}` is damaged: {e}", path.display())))
}

pub(crate) fn read_snapshot(lock: &ApplyLock, iface: &IfaceName) -> Result<Snapshot, CliError> {
    let state = &lock.state;
    let path = state.file_path(&StateFile::Snapshot);
    let text = state.read(&StateFile::Snapshot)?.ok_or_else(|| {
        CliError::new(format!(
            "{iface}: cannot read the running policy's sources `{}`: it does not exist",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::new(format!("`{}` is damaged: {e}", path.display())))
}

/// One journal line.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) add: bool,
    pub(crate) table: String,
    pub(crate) prefix: Prefix,
}

pub(crate) fn read_journal(lock: &ApplyLock) -> Result<Vec<Change>, CliError> {
    let state = &lock.state;
    let path = state.file_path(&StateFile::Journal);
    let Some(text) = state.read(&StateFile::Journal)? else {
        return Ok(Vec::new());
    };
    parse_journal(&text, &path)
}

/// The changes of a journal's text (`path` names it in errors).
pub(crate) fn parse_journal(text: &str, path: &std::path::Path) -> Result<Vec<Change>, CliError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let bad = || CliError::new(format!("`{}` line {}: damaged", path.display(), i + 1));
            let mut words = line.split_whitespace();
            let add = match words.next() {
                Some("add") => true,
                Some("del") => false,
                _ => return Err(bad()),
            };
            let table = words.next().ok_or_else(bad)?.to_owned();
            let prefix = parse_prefix(words.next().ok_or_else(bad)?).map_err(|_| bad())?;
            Ok(Change { add, table, prefix })
        })
        .collect()
}

/// The journal's text with `changes` appended: written whole, through the
/// transaction, never appended in place (a kill mid-line would damage it).
pub(crate) fn journal_with(state: &StateDir, changes: &[Change]) -> Result<String, CliError> {
    let mut text = state.read(&StateFile::Journal)?.unwrap_or_default();
    for c in changes {
        let _ = writeln!(
            text,
            "{} {} {}",
            if c.add { "add" } else { "del" },
            c.table,
            c.prefix
        );
    }
    Ok(text)
}

/// Parses `192.0.2.0/24`, `2001:db8::/32` or a bare address (a host
/// prefix). Host bits are an error naming the prefix meant.
pub fn parse_prefix(text: &str) -> Result<Prefix, String> {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an IPv4 or IPv6 address or CIDR prefix"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(len) => len
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| {
                format!("`{text}`: the prefix length must be a number from 0 to {max}")
            })?,
    };
    let prefix =
        Prefix::new(addr, len).ok_or_else(|| format!("`{text}`: invalid prefix length {len}"))?;
    if prefix.addr != addr {
        return Err(format!(
            "`{text}` has host bits set (did you mean {}?)",
            prefix
        ));
    }
    Ok(prefix)
}

/// Writes a state file (a kill point).
pub(crate) fn write_state(state: &StateDir, file: &StateFile, text: &str) -> Result<(), CliError> {
    patronus_runtime::fault::point("write state");
    Ok(state.write(file, text.as_bytes())?)
}

/// Removes a state file if it is there (a kill point only when it is).
pub(crate) fn remove_state(state: &StateDir, file: &StateFile) -> Result<(), CliError> {
    if state.exists(file) {
        patronus_runtime::fault::point("unlink state");
        state.remove(file)?;
    }
    Ok(())
}

/// Appends a line to `rollback.log`.
pub(crate) fn log_rollback(state: &StateDir, iface: &IfaceName, line: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let line = format!("{now} {iface}: {line}\n");
    let _ = state.append(&StateFile::RollbackLog, line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_with_clear_errors() {
        assert_eq!(
            parse_prefix("192.0.2.0/24").map(|p| p.to_string()),
            Ok("192.0.2.0/24".into())
        );
        assert_eq!(parse_prefix("192.0.2.7").map(|p| p.len), Ok(32));
        assert_eq!(parse_prefix("2001:db8::/32").map(|p| p.len), Ok(32));
        let hint = parse_prefix("192.0.2.1/24").unwrap_err();
        assert!(hint.contains("did you mean 192.0.2.0/24"), "{hint}");
        assert!(parse_prefix("192.0.2.0/33").is_err());
        assert!(parse_prefix("nonsense").is_err());
        assert!(parse_prefix("10.0.0.0/x").is_err());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn counters_are_keyed_by_rule_identity_or_phase_name() {
        let counter = |kind: &str, name: &str, identity: Option<&str>| CounterMeta {
            kind: kind.into(),
            name: name.into(),
            location: None,
            identity: identity.map(str::to_owned),
            rule: None,
            label: None,
        };
        assert_eq!(
            counter("rule", "rule 1 \"web\"", Some("web")).carry_key(),
            Some("rule:web".into())
        );
        assert_eq!(
            counter("phase", "allow", None).carry_key(),
            Some("phase:allow".into())
        );
        // Recorded by an older patronusc without identities: not carried.
        assert_eq!(counter("rule", "rule 1", None).carry_key(), None);
    }
}
