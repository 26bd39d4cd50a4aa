//! `patronusc table add|del|list -i IFACE TABLE [CIDR...]`: a running
//! policy's tables changed at run time, like `nft add element`. The table
//! files are not touched: a later `apply` from files makes the kernel
//! match the files again.
//!
//! State, in `STATE_ROOT/IFACE/` beside the apply metadata:
//! - `tables.json` (written by every apply, [`TablesMeta`]): per table and
//!   address family, the classifier maps it can be changed in directly —
//!   the fast path — with the key layout (LPM trie or exact host hash) and
//!   the one value every entry of such a map has. A table gets a fast path
//!   for a family when, in every phase and address field where a rule uses
//!   it, the field's classifier is a map and every rule constraining that
//!   field uses no other table and no literal prefix of that family: then
//!   each entry of the map is a prefix of the table, and each carries the
//!   same rule bitmap (nested prefixes hold the bits of their covering
//!   ones, which are the same bits), so adding a prefix is one
//!   `BPF_MAP_UPDATE_ELEM` (`BPF_NOEXIST`) per map and deleting one a
//!   `BPF_MAP_DELETE_ELEM` per map, with no parsing of the policy.
//! - `journal`: one `add|del TABLE PREFIX` line per change made, appended
//!   after the kernel accepted it; an apply from files removes it.
//!
//! Everything else (a map that mixes the table with other sets, a family
//! without a map, a non-host prefix for a host-only hash map) takes the
//! general path: the saved policy (`snapshot.json`) is compiled again with
//! the journal and the new changes applied to its tables, and applied
//! through the normal apply (in place when the programs and map
//! definitions are unchanged, else a full atomic replace).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::AsFd as _;
use std::time::Instant;

use clap::{Args, Subcommand};
use patronus_codegen::xdp::dir24;
use patronus_compiler::ir::plan::MapKind;
use patronus_compiler::ir::{Field, Storage};
use patronus_compiler::net::Prefix;
use patronus_compiler::typed::{AddrMatch, Family, Policy, TableId};
use patronus_runtime::host::{IfaceName, StateDir, StateFile};
use patronus_runtime::{install, sys};
use serde::{Deserialize, Serialize};

use crate::cmd_apply::{
    ApplyLock, Applying, Commit, Compiled, Mode, Roots, Snapshot, apply_locked_with,
    compile_snapshot_edited, require_privileges, runtime_err,
};
use crate::common::{CliError, ColorArgs, Status, write_stdout};
use crate::txn::{Op, PendingChange, Txn};

#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(subcommand)]
    pub action: TableAction,
}

#[derive(Debug, Subcommand)]
pub enum TableAction {
    /// Add prefixes to a table of the running policy (a prefix already
    /// there is left alone).
    Add(TableEditArgs),
    /// Delete prefixes from a table of the running policy.
    Del(TableEditArgs),
    /// Print the running policy's tables (names and sizes), or one table's
    /// prefixes.
    List(TableListArgs),
}

#[derive(Debug, Args)]
pub struct TableEditArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    /// The table's name in the policy (without `@`).
    #[arg(value_name = "TABLE")]
    pub table: String,
    /// Addresses or CIDR prefixes (IPv4 or IPv6), host bits clear.
    #[arg(value_name = "CIDR", required = true)]
    pub cidrs: Vec<String>,
    /// Benchmarks: print the time spent in this process (µs) on stderr.
    #[arg(long, hide = true)]
    pub timing: bool,
    #[command(flatten)]
    pub roots: Roots,
    #[command(flatten)]
    pub color: ColorArgs,
}

#[derive(Debug, Args)]
pub struct TableListArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    /// Print this table's prefixes.
    #[arg(value_name = "TABLE")]
    pub table: Option<String>,
    #[command(flatten)]
    pub roots: Roots,
    #[command(flatten)]
    pub color: ColorArgs,
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
    /// The DIR-24 array in front of this trie (`codegen::xdp::dir24`), if
    /// any: its slots say 1 (the table's one bitmap), 0 or FALLBACK.
    #[serde(default)]
    pub d24: Option<String>,
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

#[derive(Clone, Copy)]
enum Side {
    Src,
    Dst,
}

impl Side {
    fn of(self, rule: &patronus_compiler::typed::Rule) -> Option<&AddrMatch> {
        match self {
            Side::Src => rule.matcher.src.as_ref(),
            Side::Dst => rule.matcher.dst.as_ref(),
        }
    }

    fn field(self, family: Family) -> Field {
        match self {
            Side::Src => Field::SrcAddr(family),
            Side::Dst => Field::DstAddr(family),
        }
    }
}

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

use patronus_codegen::insn::kernel::map_type::{HASH as MAP_HASH, LPM_TRIE as MAP_LPM_TRIE};

/// The fast-path maps of every table of a compiled policy (see the module
/// documentation for the condition).
pub(crate) fn tables_meta(compiled: &Compiled, object_hash: &str) -> TablesMeta {
    let (policy, program) = (&compiled.policy, &compiled.program);
    let tables = policy
        .tables
        .iter()
        .enumerate()
        .map(|(ti, table)| {
            let tid = TableId(u32::try_from(ti).unwrap_or(u32::MAX));
            let mut fams: [Option<Vec<FastMap>>; 2] = [Some(Vec::new()), Some(Vec::new())];
            for phase in &program.phases {
                for side in [Side::Src, Side::Dst] {
                    let sets: Vec<&AddrMatch> = phase
                        .rules
                        .iter()
                        .filter_map(|r| policy.rules.get(r.0 as usize))
                        .filter_map(|r| side.of(r))
                        .collect();
                    if !sets.iter().any(|m| m.set.tables.contains(&tid)) {
                        continue;
                    }
                    for (fi, family) in FAMILIES.iter().enumerate() {
                        let v4 = *family == Family::Ipv4;
                        let only_table = sets.iter().all(|m| {
                            m.set.tables.iter().all(|t| *t == tid)
                                && !m.set.prefixes.iter().any(|p| p.is_ipv4() == v4)
                        });
                        let plan = phase
                            .classifiers
                            .iter()
                            .find(|c| c.field == side.field(*family))
                            .and_then(|c| match c.storage {
                                Storage::Map(i) => program.maps.get(i),
                                Storage::Inline => None,
                            });
                        let image = plan.and_then(|plan| {
                            compiled.object.maps.iter().find(|m| m.name == plan.name)
                        });
                        // A classifier with DIR-24 arrays in front of its
                        // trie (codegen::xdp::dir24) answers from them: the
                        // fast path changes slots too, and the one bitmap
                        // is the arrays' only one (the trie may be empty).
                        let arrays = plan.and_then(|plan| {
                            let slots = dir24::slots_name(&plan.name);
                            let bitmaps = dir24::bitmaps_name(&plan.name);
                            let bitmaps =
                                compiled.object.maps.iter().find(|m| m.name == bitmaps)?;
                            Some((slots, bitmaps))
                        });
                        let fast = match (only_table, plan, image) {
                            (true, Some(plan), Some(image)) => {
                                let (first, uniform) = match &arrays {
                                    Some((_, bitmaps)) => {
                                        let first = bitmaps.entries.first().map(|(_, v)| v);
                                        let one = bitmaps.entries.len() == 1;
                                        (
                                            first,
                                            one && image
                                                .entries
                                                .iter()
                                                .all(|(_, v)| Some(v) == first),
                                        )
                                    }
                                    None => {
                                        let first = image.entries.first().map(|(_, v)| v);
                                        (first, image.entries.iter().all(|(_, v)| Some(v) == first))
                                    }
                                };
                                let lpm = plan.kind == MapKind::LpmTrie;
                                // The map must be what the keys below are
                                // laid out for (codegen could store a
                                // classifier another way).
                                let addr = if v4 { 4 } else { 16 };
                                let layout = match plan.kind {
                                    MapKind::LpmTrie => (MAP_LPM_TRIE, 4 + addr),
                                    MapKind::Hash => (MAP_HASH, addr),
                                    _ => (0, 0),
                                };
                                match first {
                                    Some(value)
                                        if uniform
                                            && (image.map_type, image.key_size()) == layout =>
                                    {
                                        Some(FastMap {
                                            map: image.name.clone(),
                                            lpm,
                                            value: hex(value),
                                            d24: arrays.as_ref().map(|(slots, _)| slots.clone()),
                                        })
                                    }
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        match (fast, &mut fams[fi]) {
                            (Some(fast), Some(maps)) => maps.push(fast),
                            _ => fams[fi] = None,
                        }
                    }
                }
            }
            let [v4, v6] = fams;
            TableMeta {
                name: table.name.clone(),
                v4,
                v6,
            }
        })
        .collect();
    TablesMeta {
        object_hash: object_hash.to_owned(),
        tables,
    }
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

fn addr_octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The key of `prefix` in a fast-path map; `None`: it does not fit (a
/// network prefix for a host hash).
fn fast_key(map: &FastMap, prefix: &Prefix) -> Option<Vec<u8>> {
    let host = u32::from(prefix.len) == if prefix.is_ipv4() { 32 } else { 128 };
    if map.lpm {
        Some(lpm_key(prefix))
    } else {
        host.then(|| addr_octets(prefix.addr))
    }
}

/// An LPM trie key: `prefixlen` u32 LE, then the address.
fn lpm_key(prefix: &Prefix) -> Vec<u8> {
    let mut key = u32::from(prefix.len).to_le_bytes().to_vec();
    key.extend(addr_octets(prefix.addr));
    key
}

fn read_tables_meta(state: &StateDir, iface: &IfaceName) -> Result<TablesMeta, CliError> {
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

fn unknown_table(name: &str, meta: &TablesMeta) -> CliError {
    let names: Vec<&str> = meta.tables.iter().map(|t| t.name.as_str()).collect();
    CliError::new(if names.is_empty() {
        format!("the running policy has no tables (no table `{name}`)")
    } else {
        format!(
            "the running policy has no table `{name}`; its tables: {}",
            names.join(", ")
        )
    })
}

/// One journal line.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    add: bool,
    table: String,
    prefix: Prefix,
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
fn journal_with(state: &StateDir, changes: &[Change]) -> Result<String, CliError> {
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

/// Applies `changes` to the policy's tables (normalised: sorted, no
/// duplicates). Returns, per change, whether it changed anything.
pub(crate) fn edit_tables(policy: &mut Policy, changes: &[Change]) -> Result<Vec<bool>, CliError> {
    let mut effective = Vec::with_capacity(changes.len());
    for c in changes {
        let table = policy
            .tables
            .iter_mut()
            .find(|t| t.name == c.table)
            .ok_or_else(|| CliError::new(format!("the saved policy has no table `{}`", c.table)))?;
        let at = table.prefixes.binary_search(&c.prefix);
        effective.push(match (c.add, at) {
            (true, Err(i)) => {
                table.prefixes.insert(i, c.prefix);
                true
            }
            (false, Ok(i)) => {
                table.prefixes.remove(i);
                true
            }
            _ => false,
        });
    }
    Ok(effective)
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

pub fn run(args: &TableArgs) -> Result<Status, CliError> {
    match &args.action {
        TableAction::Add(edit) => run_edit(edit, true),
        TableAction::Del(edit) => run_edit(edit, false),
        TableAction::List(list) => run_list(list),
    }
}

fn run_edit(args: &TableEditArgs, add: bool) -> Result<Status, CliError> {
    let started = Instant::now();
    let iface = &args.iface;
    let prefixes = args
        .cidrs
        .iter()
        .map(|c| parse_prefix(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::new)?;
    require_privileges()?;
    let pins = args.roots.pins(iface);
    crate::txn::ignore_hangup();
    let lock = crate::txn::settle(&args.roots, iface)?;
    if !pins.installed() {
        return Err(CliError::new(format!(
            "{iface}: no policy applied (interfaces with one: {})",
            list_or_none(&args.roots.interfaces()?)
        )));
    }
    let state = &lock.state;
    // Begun before the first map write: a kill before the commit below
    // brings the maps back to the journal as it was (the change did not
    // happen), a kill after it finds the journal complete.
    let txn = Txn::new(Op::Table);
    let mut begun = false;
    let meta = read_tables_meta(state, iface)?;
    let table = meta
        .tables
        .iter()
        .find(|t| t.name == args.table)
        .ok_or_else(|| unknown_table(&args.table, &meta))?;
    let mut journal = Vec::new();
    let mut general = Vec::new();
    let mut unchanged = Vec::new();
    let mut kernel_time = std::time::Duration::ZERO;
    for prefix in prefixes {
        let change = Change {
            add,
            table: args.table.clone(),
            prefix,
        };
        let fast = if prefix.is_ipv4() {
            &table.v4
        } else {
            &table.v6
        };
        let plan: Option<Vec<(&FastMap, Vec<u8>)>> = fast.as_ref().and_then(|maps| {
            maps.iter()
                .map(|m| fast_key(m, &prefix).map(|k| (m, k)))
                .collect()
        });
        let Some(plan) = plan.filter(|p| !p.is_empty()) else {
            general.push(change);
            continue;
        };
        let t0 = Instant::now();
        let mut changed = false;
        let mut full = false;
        let mut general_needed = false;
        for (map, key) in &plan {
            let fd = install::live_map(&pins, &map.map, false)
                .map_err(runtime_err("cannot open the table's map"))?;
            if !begun {
                txn.begin(state)?;
                begun = true;
            }
            patronus_runtime::fault::point("table map write");
            let value = unhex(&map.value)
                .ok_or_else(|| CliError::new("the table metadata is damaged (value)"))?;
            let result = match &map.d24 {
                Some(slots) => {
                    let Some(result) = dir24_edit(&pins, slots, fd.as_fd(), &prefix, &value, add)?
                    else {
                        // Deleting a prefix of at most /24: whether the
                        // table still covers its /24s takes the table.
                        general_needed = true;
                        break;
                    };
                    Ok(result)
                }
                None if add => sys::map_insert_elem(fd.as_fd(), key, &value),
                None => sys::map_delete_elem(fd.as_fd(), key),
            };
            match result {
                Ok(did) => changed |= did,
                // E2BIG (hash full), ENOSPC (LPM trie full): the general
                // path compiles bigger maps and reloads; an entry already
                // written to another map is what it will write too.
                Err(e) if add && matches!(e.raw_os_error(), Some(7 | 28)) => {
                    full = true;
                    break;
                }
                Err(e) => {
                    return Err(CliError::new(format!(
                        "cannot {} {prefix} in map `{}`: {e}",
                        if add { "add" } else { "delete" },
                        map.map,
                    )));
                }
            }
        }
        kernel_time += t0.elapsed();
        if full || general_needed {
            general.push(change);
        } else if changed {
            journal.push(change);
        } else {
            unchanged.push(prefix);
        }
    }
    // Recorded before the general path compiles: it replays the journal.
    if begun {
        let mut txn = txn;
        if !journal.is_empty() {
            txn.journal = Some(journal_with(state, &journal)?);
        }
        txn.commit(&args.roots, &lock, iface)?;
    }
    let mut report = String::new();
    if !general.is_empty() {
        let t0 = Instant::now();
        let snapshot = read_snapshot(&lock, iface)?;
        let recorded = read_journal(&lock)?;
        let mut effective = Vec::new();
        let color = args.color;
        let compiled = compile_snapshot_edited(&snapshot, &color, &mut |policy| {
            edit_tables(policy, &recorded)?;
            effective = edit_tables(policy, &general)?;
            Ok(())
        })?;
        let Some(compiled) = compiled else {
            eprintln!(
                "patronusc: the saved policy with these table changes has errors; nothing was changed"
            );
            return Ok(Status::Failure);
        };
        let applied: Vec<Change> = general
            .iter()
            .zip(&effective)
            .filter(|(_, e)| **e)
            .map(|(c, _)| c.clone())
            .collect();
        unchanged.extend(
            general
                .iter()
                .zip(&effective)
                .filter(|(_, e)| !**e)
                .map(|(c, _)| c.prefix),
        );
        if !applied.is_empty() {
            let ifindex = install::ifindex(iface.as_str()).map_err(runtime_err(iface.as_str()))?;
            report = apply_locked_with(
                &args.roots,
                &lock,
                iface,
                ifindex,
                &compiled,
                Mode::Auto,
                &Applying {
                    label: format!("table {}", args.table),
                    source: snapshot.name.clone(),
                    started: t0,
                    compile_time: t0.elapsed(),
                },
                Commit {
                    snapshot: None,
                    journal: Some(journal_with(state, &applied)?),
                    pending: PendingChange::Keep,
                    watcher: None,
                },
            )?;
        }
    }
    let mut status = Status::Success;
    for prefix in &unchanged {
        if add {
            eprintln!("patronusc: {prefix} is already in table `{}`", args.table);
        } else {
            eprintln!("patronusc: {prefix} is not in table `{}`", args.table);
            status = Status::Failure;
        }
    }
    if args.timing {
        eprintln!(
            "timing: kernel {:.1} µs, total {:.1} µs",
            kernel_time.as_secs_f64() * 1e6,
            started.elapsed().as_secs_f64() * 1e6
        );
    }
    if !report.is_empty() {
        write_stdout(&report)?;
    }
    Ok(status)
}

/// A fast-path change of a table behind DIR-24 arrays (slot values: 0,
/// 1 = the table's bitmap, FALLBACK = ask the trie): the trie first, then
/// the slots, so no packet sees a slot pointing at a missing entry.
/// `Ok(None)` when the change needs the table (deleting a prefix of at
/// most /24); else whether anything changed.
fn dir24_edit(
    pins: &install::Pins,
    slots_map: &str,
    trie: std::os::fd::BorrowedFd<'_>,
    prefix: &Prefix,
    value: &[u8],
    add: bool,
) -> Result<Option<bool>, CliError> {
    use patronus_codegen::xdp::dir24::FALLBACK;
    let IpAddr::V4(addr) = prefix.addr else {
        return Ok(None);
    };
    let addr = u32::from(addr);
    let trie_key = |addr: u32, len: u8| {
        lpm_key(&Prefix {
            addr: IpAddr::V4(addr.into()),
            len,
        })
    };
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| CliError::new(format!("cannot {what}: {e}"))
    };
    if !add && prefix.len <= 24 {
        return Ok(None);
    }
    if !add {
        // The slot stays FALLBACK: the trie answers the same without it.
        return sys::map_delete_elem(trie, &trie_key(addr, prefix.len))
            .map(Some)
            .map_err(io(&format!("delete {} from the trie", prefix_text(prefix))));
    }
    let slots = install::live_map(pins, slots_map, false)
        .map_err(runtime_err("cannot open the table's DIR-24 array"))?;
    let first = addr >> 8;
    let last = if prefix.len >= 24 {
        first
    } else {
        first + (1u32 << (24 - u32::from(prefix.len))) - 1
    };
    let read = |bytes: &[u8], i: usize| {
        u32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    let current: Vec<u32> =
        patronus_runtime::mapped::with_slots(slots_map, slots.as_fd(), first, last, |bytes| {
            (0..bytes.len() / 4).map(|i| read(bytes, i)).collect()
        })
        .map_err(runtime_err("cannot read the DIR-24 slots"))?;
    let mut changed = false;
    let insert =
        |key: Vec<u8>| sys::map_insert_elem(trie, &key, value).map_err(io("add to the trie"));
    if prefix.len > 24 {
        changed |= insert(trie_key(addr, prefix.len))?;
        // A /24 covered until now keeps that answer outside the prefix.
        if current[0] == 1 {
            insert(trie_key(first << 8, 24))?;
        }
    } else {
        for (i, &slot) in current.iter().enumerate() {
            if slot == FALLBACK {
                changed |= insert(trie_key((first + i as u32) << 8, 24))?;
            }
        }
    }
    let wanted = |slot: u32| -> u32 {
        if prefix.len > 24 || slot == FALLBACK {
            FALLBACK
        } else {
            1
        }
    };
    let flipped =
        patronus_runtime::mapped::with_slots(slots_map, slots.as_fd(), first, last, |bytes| {
            let mut flipped = 0;
            for i in 0..bytes.len() / 4 {
                let new = wanted(read(bytes, i));
                if read(bytes, i) != new {
                    bytes[4 * i..4 * i + 4].copy_from_slice(&new.to_le_bytes());
                    flipped += 1;
                }
            }
            flipped
        })
        .map_err(runtime_err("cannot write the DIR-24 slots"))?;
    Ok(Some(changed || flipped > 0))
}

fn prefix_text(prefix: &Prefix) -> String {
    format!("{}/{}", prefix.addr, prefix.len)
}

fn list_or_none(names: &[IfaceName]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        let names: Vec<&str> = names.iter().map(IfaceName::as_str).collect();
        names.join(", ")
    }
}

fn run_list(args: &TableListArgs) -> Result<Status, CliError> {
    let iface = &args.iface;
    let lock = crate::txn::settle(&args.roots, iface)?;
    let state = &lock.state;
    let meta = read_tables_meta(state, iface)?;
    if let Some(name) = &args.table
        && !meta.tables.iter().any(|t| &t.name == name)
    {
        return Err(unknown_table(name, &meta));
    }
    let snapshot = read_snapshot(&lock, iface)?;
    let journal = read_journal(&lock)?;
    let mut tables = Vec::new();
    compile_snapshot_edited(&snapshot, &args.color, &mut |policy| {
        edit_tables(policy, &journal)?;
        tables = policy
            .tables
            .iter()
            .map(|t| (t.name.clone(), t.prefixes.clone()))
            .collect();
        Ok(())
    })?;
    let mut out = String::new();
    for (name, prefixes) in &tables {
        match &args.table {
            Some(wanted) if wanted == name => {
                for p in prefixes {
                    let _ = writeln!(out, "{p}");
                }
            }
            Some(_) => {}
            None => {
                let fast = meta
                    .tables
                    .iter()
                    .find(|t| &t.name == name)
                    .map(|t| match (&t.v4, &t.v6) {
                        (Some(_), Some(_)) => "fast path: IPv4, IPv6",
                        (Some(_), None) => "fast path: IPv4",
                        (None, Some(_)) => "fast path: IPv6",
                        (None, None) => "recompiled on change",
                    })
                    .unwrap_or("");
                let _ = writeln!(out, "{name}: {} prefixes ({fast})", prefixes.len());
            }
        }
    }
    if !journal.is_empty() && args.table.is_none() {
        let _ = writeln!(
            out,
            "{} run-time change(s) since the last apply from files",
            journal.len()
        );
    }
    write_stdout(&out)?;
    Ok(Status::Success)
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
}
