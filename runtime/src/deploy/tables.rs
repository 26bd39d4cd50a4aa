//! Run-time edits of a running policy's tables (`patronusc table
//! add|del`), like `nft add element`: which maps a table feeds directly
//! (its fast path, decided once per apply by [`fast_paths`]), and the
//! edit of those maps for one prefix ([`edit_running`]), DIR-24 slot
//! arrays included.
//!
//! A table gets a fast path for a family when, in every phase and address
//! field where a rule uses it, the field's classifier is a map and every
//! rule constraining that field uses no other table and no literal prefix
//! of that family: then each entry of the map is a prefix of the table,
//! and each carries the same rule bitmap (nested prefixes hold the bits of
//! their covering ones, which are the same bits), so adding a prefix is
//! one `BPF_MAP_UPDATE_ELEM` (`BPF_NOEXIST`) per map and deleting one a
//! `BPF_MAP_DELETE_ELEM` per map, with no parsing of the policy. Anything
//! else is recompiled by the caller and applied as a whole.

use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsFd as _, BorrowedFd};

use patronus_codegen::insn::kernel::map_type;
use patronus_codegen::layout::dir24::FALLBACK;
use patronus_codegen::{Object, TableFeed};
use patronus_compiler::ir::{self, Field};
use patronus_compiler::net::Prefix;
use patronus_compiler::typed::{AddrMatch, Family, Policy, Rule, TableId};

use crate::pins::{Pins, live_map};
use crate::sys;

/// A classifier map holding exactly one table's prefixes of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastMap {
    pub map: String,
    /// LPM trie (`prefixlen` u32 LE + address) or, if false, a hash of
    /// host addresses (the address alone; only host prefixes fit).
    pub lpm: bool,
    /// The value of every entry.
    pub value: Vec<u8>,
    /// The DIR-24 slot array in front of this trie, if any: its slots say
    /// 1 (the table's one bitmap), 0 or FALLBACK.
    pub d24: Option<String>,
}

/// One table's fast paths: per family the maps to change (possibly none:
/// no rule uses the table), or `None`: recompile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRoutes {
    pub name: String,
    pub v4: Option<Vec<FastMap>>,
    pub v6: Option<Vec<FastMap>>,
}

#[derive(Clone, Copy)]
enum Side {
    Src,
    Dst,
}

impl Side {
    fn of(self, rule: &Rule) -> Option<&AddrMatch> {
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

/// The fast paths of every table of a compiled policy (see the module
/// documentation for the condition).
pub fn fast_paths(policy: &Policy, program: &ir::Program, object: &Object) -> Vec<TableRoutes> {
    policy
        .tables
        .iter()
        .enumerate()
        .map(|(ti, table)| {
            let tid = TableId(u32::try_from(ti).unwrap_or(u32::MAX));
            let [v4, v6] = maps_fed_by(policy, program, object, tid);
            TableRoutes {
                name: table.name.clone(),
                v4,
                v6,
            }
        })
        .collect()
}

/// Per family, the maps table `tid` feeds alone, or `None` when some map
/// it feeds mixes it with other sets (or is no map).
pub fn maps_fed_by(
    policy: &Policy,
    program: &ir::Program,
    object: &Object,
    tid: TableId,
) -> [Option<Vec<FastMap>>; 2] {
    let mut fams: [Option<Vec<FastMap>>; 2] = [Some(Vec::new()), Some(Vec::new())];
    for (pi, phase) in program.phases.iter().enumerate() {
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
                let fast = match only_table {
                    true => object
                        .classifier_maps(program, pi, side.field(*family))
                        .and_then(|feed| fast_map(feed, v4)),
                    false => None,
                };
                match (fast, &mut fams[fi]) {
                    (Some(fast), Some(maps)) => maps.push(fast),
                    _ => fams[fi] = None,
                }
            }
        }
    }
    fams
}

/// The fast path through one classifier a table feeds alone: every entry
/// holds the same bitmap (behind DIR-24 arrays, the arrays' one bitmap:
/// the trie may be empty), and the map is what the keys are laid out for
/// (codegen could store a classifier another way); else `None`.
fn fast_map(feed: TableFeed<'_>, v4: bool) -> Option<FastMap> {
    let uniform = |entries: &[(Vec<u8>, Vec<u8>)]| {
        let first = entries.first().map(|(_, v)| v);
        (
            first.cloned(),
            entries.iter().all(|(_, v)| Some(v) == first),
        )
    };
    let (map, lpm, d24, (first, same)) = match feed {
        TableFeed::Hash(map) => (map, false, None, uniform(&map.entries)),
        TableFeed::Lpm(map) => (map, true, None, uniform(&map.entries)),
        TableFeed::Dir24 {
            trie,
            slots,
            bitmaps,
        } => {
            let first = bitmaps.entries.first().map(|(_, v)| v);
            let same =
                bitmaps.entries.len() == 1 && trie.entries.iter().all(|(_, v)| Some(v) == first);
            (trie, true, Some(slots.name.clone()), (first.cloned(), same))
        }
    };
    let addr = if v4 { 4 } else { 16 };
    let expected = match lpm {
        true => (map_type::LPM_TRIE, 4 + addr),
        false => (map_type::HASH, addr),
    };
    match first {
        Some(value) if same && (map.map_type, map.key_size()) == expected => Some(FastMap {
            map: map.name.clone(),
            lpm,
            value,
            d24,
        }),
        _ => None,
    }
}

fn addr_octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The key of `prefix` in a fast-path map; `None`: it does not fit (a
/// network prefix for a host hash).
pub fn fast_key(map: &FastMap, prefix: &Prefix) -> Option<Vec<u8>> {
    let host = u32::from(prefix.len) == if prefix.is_ipv4() { 32 } else { 128 };
    if map.lpm {
        Some(lpm_key(prefix))
    } else {
        host.then(|| addr_octets(prefix.addr))
    }
}

/// An LPM trie key: `prefixlen` u32 LE, then the address.
pub fn lpm_key(prefix: &Prefix) -> Vec<u8> {
    let mut key = u32::from(prefix.len).to_le_bytes().to_vec();
    key.extend(addr_octets(prefix.addr));
    key
}

fn v4_key(addr: u32, len: u8) -> Vec<u8> {
    lpm_key(&Prefix {
        addr: IpAddr::V4(addr.into()),
        len,
    })
}

/// The /24 slots an IPv4 prefix covers: `(first, last)` slot indices.
pub fn dir24_span(addr: u32, len: u8) -> (u32, u32) {
    let first = addr >> 8;
    let last = if len >= 24 {
        first
    } else {
        first + (1u32 << (24 - u32::from(len))) - 1
    };
    (first, last)
}

/// A trie entry an addition behind DIR-24 arrays writes: its key, and
/// whether it is the change asked for (else it only keeps an answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrieInsert {
    pub key: Vec<u8>,
    pub counts: bool,
}

/// The trie entries adding `addr/len` writes, given the slots it covers
/// now (see [`dir24_span`]): a prefix longer than /24 goes into the trie
/// (and a /24 covered until now keeps that answer outside it, as a /24
/// entry); a shorter one fills the trie only where a slot says FALLBACK
/// (a longer prefix lies inside that /24).
pub fn dir24_trie_inserts(addr: u32, len: u8, current: &[u32]) -> Vec<TrieInsert> {
    let (first, _) = dir24_span(addr, len);
    if len > 24 {
        let mut out = vec![TrieInsert {
            key: v4_key(addr, len),
            counts: true,
        }];
        if current.first() == Some(&1) {
            out.push(TrieInsert {
                key: v4_key(first << 8, 24),
                counts: false,
            });
        }
        return out;
    }
    current
        .iter()
        .enumerate()
        .filter(|(_, slot)| **slot == FALLBACK)
        .map(|(i, _)| TrieInsert {
            key: v4_key((first + i as u32) << 8, 24),
            counts: true,
        })
        .collect()
}

/// A slot after adding a prefix of length `len`: FALLBACK stays (the trie
/// answers), a prefix longer than /24 makes it FALLBACK, else it says 1,
/// the table's bitmap.
pub fn dir24_slot_after_add(len: u8, slot: u32) -> u32 {
    if len > 24 || slot == FALLBACK {
        FALLBACK
    } else {
        1
    }
}

/// What [`edit_running`] did with one prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edited {
    Changed,
    /// Already there (add) or not there (delete).
    Unchanged,
    /// The fast path cannot make this change (a full map, a network
    /// prefix for a host hash, deleting a prefix of at most /24 behind
    /// DIR-24 arrays): recompile the policy with it.
    Recompile,
}

/// Why an edit failed: the caller's hook, or the kernel.
#[derive(Debug)]
pub enum EditError<E> {
    Hook(E),
    Failed(String),
}

impl<E: fmt::Display> fmt::Display for EditError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::Hook(e) => e.fmt(f),
            EditError::Failed(what) => f.write_str(what),
        }
    }
}

/// Adds (or deletes) `prefix` in the fast-path `maps` of the policy
/// pinned at `pins`. `before_write` runs after each map is opened and
/// before anything is written to it (the caller records the change
/// durably there, once).
pub fn edit_running<E>(
    pins: &Pins,
    maps: &[FastMap],
    prefix: &Prefix,
    add: bool,
    before_write: &mut dyn FnMut() -> Result<(), E>,
) -> Result<Edited, EditError<E>> {
    let plan: Option<Vec<(&FastMap, Vec<u8>)>> = maps
        .iter()
        .map(|m| fast_key(m, prefix).map(|k| (m, k)))
        .collect();
    let Some(plan) = plan.filter(|p| !p.is_empty()) else {
        return Ok(Edited::Recompile);
    };
    let mut changed = false;
    for (map, key) in &plan {
        let fd = live_map(pins, &map.map, false)
            .map_err(|e| EditError::Failed(format!("cannot open the table's map: {e}")))?;
        before_write().map_err(EditError::Hook)?;
        crate::fault::point("table map write");
        let result = match &map.d24 {
            Some(slots) => match dir24_edit(pins, slots, fd.as_fd(), prefix, &map.value, add)? {
                // Deleting a prefix of at most /24: whether the table
                // still covers its /24s takes the table.
                None => return Ok(Edited::Recompile),
                Some(did) => Ok(did),
            },
            None if add => sys::map_insert_elem(fd.as_fd(), key, &map.value),
            None => sys::map_delete_elem(fd.as_fd(), key),
        };
        match result {
            Ok(did) => changed |= did,
            // E2BIG (hash full), ENOSPC (LPM trie full): the general path
            // compiles bigger maps and reloads; an entry already written
            // to another map is what it will write too.
            Err(e) if add && matches!(e.raw_os_error(), Some(7 | 28)) => {
                return Ok(Edited::Recompile);
            }
            Err(e) => {
                return Err(EditError::Failed(format!(
                    "cannot {} {prefix} in map `{}`: {e}",
                    if add { "add" } else { "delete" },
                    map.map,
                )));
            }
        }
    }
    Ok(if changed {
        Edited::Changed
    } else {
        Edited::Unchanged
    })
}

/// A fast-path change of a table behind DIR-24 arrays: the trie first,
/// then the slots, so no packet sees a slot pointing at a missing entry.
/// `Ok(None)` when the change needs the table; else whether anything
/// changed.
fn dir24_edit<E>(
    pins: &Pins,
    slots_map: &str,
    trie: BorrowedFd<'_>,
    prefix: &Prefix,
    value: &[u8],
    add: bool,
) -> Result<Option<bool>, EditError<E>> {
    let IpAddr::V4(addr) = prefix.addr else {
        return Ok(None);
    };
    let addr = u32::from(addr);
    let failed = |what: String| EditError::Failed(what);
    if !add && prefix.len <= 24 {
        return Ok(None);
    }
    if !add {
        // The slot stays FALLBACK: the trie answers the same without it.
        return sys::map_delete_elem(trie, &v4_key(addr, prefix.len))
            .map(Some)
            .map_err(|e| {
                failed(format!(
                    "cannot delete {}/{} from the trie: {e}",
                    prefix.addr, prefix.len
                ))
            });
    }
    let slots = live_map(pins, slots_map, false)
        .map_err(|e| failed(format!("cannot open the table's DIR-24 array: {e}")))?;
    let (first, last) = dir24_span(addr, prefix.len);
    let read = |bytes: &[u8], i: usize| {
        u32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    let current: Vec<u32> =
        crate::mapped::with_slots(slots_map, slots.as_fd(), first, last, |bytes| {
            (0..bytes.len() / 4).map(|i| read(bytes, i)).collect()
        })
        .map_err(|e| failed(format!("cannot read the DIR-24 slots: {e}")))?;
    let mut changed = false;
    for insert in dir24_trie_inserts(addr, prefix.len, &current) {
        let did = sys::map_insert_elem(trie, &insert.key, value)
            .map_err(|e| failed(format!("cannot add to the trie: {e}")))?;
        changed |= did && insert.counts;
    }
    let flipped = crate::mapped::with_slots(slots_map, slots.as_fd(), first, last, |bytes| {
        let mut flipped = 0;
        for i in 0..bytes.len() / 4 {
            let new = dir24_slot_after_add(prefix.len, read(bytes, i));
            if read(bytes, i) != new {
                bytes[4 * i..4 * i + 4].copy_from_slice(&new.to_le_bytes());
                flipped += 1;
            }
        }
        flipped
    })
    .map_err(|e| failed(format!("cannot write the DIR-24 slots: {e}")))?;
    Ok(Some(changed || flipped > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> Prefix {
        let (addr, len) = text.split_once('/').expect("a prefix");
        Prefix::new(
            addr.parse().expect("an address"),
            len.parse().expect("a length"),
        )
        .expect("valid")
    }

    fn v4(text: &str) -> u32 {
        u32::from(text.parse::<std::net::Ipv4Addr>().expect("an address"))
    }

    #[test]
    fn keys_follow_the_map_layout() {
        let trie = FastMap {
            map: "deny_src_v4".into(),
            lpm: true,
            value: vec![1],
            d24: None,
        };
        let hash = FastMap {
            lpm: false,
            ..trie.clone()
        };
        assert_eq!(
            fast_key(&trie, &prefix("192.0.2.0/24")),
            Some(vec![24, 0, 0, 0, 192, 0, 2, 0])
        );
        assert_eq!(
            fast_key(&hash, &prefix("192.0.2.7/32")),
            Some(vec![192, 0, 2, 7])
        );
        // A network does not fit a hash of hosts: recompiled.
        assert_eq!(fast_key(&hash, &prefix("192.0.2.0/24")), None);
        assert_eq!(
            fast_key(&hash, &prefix("2001:db8::1/128")).map(|k| k.len()),
            Some(16)
        );
    }

    #[test]
    fn dir24_plans_longer_prefixes_into_the_trie_and_shorter_into_slots() {
        // A /16 spans 256 slots.
        assert_eq!(dir24_span(v4("10.1.0.0"), 16), (0x000a_0100, 0x000a_01ff));
        assert_eq!(dir24_span(v4("10.1.2.128"), 25), (0x000a_0102, 0x000a_0102));
        // A /25 inside a /24 the table covers: the /25 counts, the /24
        // entry keeps the rest of the /24 answering as before.
        let inserts = dir24_trie_inserts(v4("10.1.2.128"), 25, &[1]);
        assert_eq!(
            inserts,
            [
                TrieInsert {
                    key: vec![25, 0, 0, 0, 10, 1, 2, 128],
                    counts: true
                },
                TrieInsert {
                    key: vec![24, 0, 0, 0, 10, 1, 2, 0],
                    counts: false
                },
            ]
        );
        // Inside an uncovered /24: just the /25.
        assert_eq!(dir24_trie_inserts(v4("10.1.2.128"), 25, &[0]).len(), 1);
        // A /23 over one empty and one FALLBACK slot: the trie gets the
        // FALLBACK /24 only (the empty one is answered by its slot).
        let inserts = dir24_trie_inserts(v4("10.1.2.0"), 23, &[0, FALLBACK]);
        assert_eq!(
            inserts,
            [TrieInsert {
                key: vec![24, 0, 0, 0, 10, 1, 3, 0],
                counts: true
            }]
        );
        // Slots: a /25 makes its slot FALLBACK; a /23 sets 1 except where
        // the trie must answer.
        assert_eq!(dir24_slot_after_add(25, 1), FALLBACK);
        assert_eq!(dir24_slot_after_add(25, 0), FALLBACK);
        assert_eq!(dir24_slot_after_add(23, 0), 1);
        assert_eq!(dir24_slot_after_add(23, FALLBACK), FALLBACK);
    }

    fn compiled(text: &str, tables: &[(&str, &str)]) -> (Policy, ir::Program, Object) {
        struct Tables<'a>(&'a [(&'a str, &'a str)]);
        impl patronus_compiler::TableLoader for Tables<'_> {
            fn load(&self, _: &str, path: &str) -> Result<patronus_compiler::LoadedFile, String> {
                self.0
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(p, t)| patronus_compiler::LoadedFile {
                        name: (*p).to_owned(),
                        text: (*t).to_owned(),
                    })
                    .ok_or_else(|| format!("no table {path}"))
            }
        }
        let mut files = patronus_compiler::diag::Files::new();
        let file = files.add("p.pf", text.to_owned());
        let checked = patronus_compiler::check(&mut files, file, &Tables(tables));
        assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
        let policy = checked.policy.expect("a policy");
        let program = ir::lower(&policy);
        let object = patronus_codegen::compile(&program).expect("compiles");
        (policy, program, object)
    }

    #[test]
    fn a_table_alone_in_its_field_has_a_fast_path_a_mixed_one_not() {
        // Enough prefixes (nested ones too) for a map, not inline compares.
        let list: String = (0..32)
            .map(|i| format!("10.{i}.0.0/16\n10.{i}.7.0/24\n"))
            .collect();
        let (policy, program, object) = compiled(
            "table blocked file \"blocked.txt\"\ntable mixed file \"blocked.txt\"\n\
             deny from @blocked\nallow tcp from { @mixed, 192.0.2.0/24 } to port 22\n",
            &[("blocked.txt", &list)],
        );
        let routes = fast_paths(&policy, &program, &object);
        let blocked = routes
            .iter()
            .find(|t| t.name == "blocked")
            .expect("blocked");
        let maps = blocked.v4.as_ref().expect("an IPv4 fast path");
        assert_eq!(maps.len(), 1);
        assert!(maps[0].lpm && maps[0].d24.is_none());
        // No IPv6 prefix in the table: no IPv6 map to change, so an IPv6
        // prefix added at run time takes the recompile.
        assert_eq!(blocked.v6, None);
        let mixed = routes.iter().find(|t| t.name == "mixed").expect("mixed");
        assert_eq!(mixed.v4, None, "shares its map with a literal prefix");
    }
}
