//! The in-place update of a running policy: its classifier maps brought
//! to new images without touching the programs or any other map (see
//! [`update_in_place`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::batch::{FaultPoints, WriteError, update_batched};
use crate::error::RuntimeError;
use crate::loaded::MapShape;
use crate::pins::Pins;
use crate::sys;

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> RuntimeError {
    move |error| RuntimeError::Io { context, error }
}

/// Map types an in-place update handles.
use patronus_codegen::insn::kernel::map_type::{
    ARRAY as MAP_ARRAY, HASH as MAP_HASH, LPM_TRIE as MAP_LPM_TRIE,
};

/// Entries per batched map command of an in-place update.
const INPLACE_BATCH: usize = crate::batch::BATCH_ENTRIES;

/// What [`update_in_place`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InPlace {
    /// Keys that were not there.
    pub added: usize,
    /// Keys whose value changed.
    pub changed: usize,
    /// Keys removed (array slots: zeroed).
    pub removed: usize,
    /// Maps that had at least one change.
    pub maps: usize,
}

/// A map entry: key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A planned write: key, new value, old value (`None`: a new key).
type Upsert = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// One map's planned changes: `(key, new value, old value)` upserts and
/// `(key, old value)` deletes.
struct MapDelta {
    name: String,
    fd: OwnedFd,
    array: bool,
    upserts: Vec<Upsert>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A map's entries as read from the kernel, keys and values each laid end
/// to end (one allocation each, however many entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    pub key_size: usize,
    pub value_size: usize,
    pub keys: Vec<u8>,
    pub values: Vec<u8>,
}

impl MapEntries {
    pub fn len(&self) -> usize {
        self.keys.len().checked_div(self.key_size).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[i * self.key_size..(i + 1) * self.key_size]
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i * self.value_size..(i + 1) * self.value_size]
    }
}

/// Every entry of a (non-per-CPU) map: batched lookups, falling back to
/// walking the keys where the kernel has no batch lookup for the type.
pub fn map_entries(fd: BorrowedFd<'_>) -> Result<MapEntries, RuntimeError> {
    let info = sys::map_info(fd).map_err(io_err("reading map info"))?;
    let (ks, vs) = (info.key_size as usize, info.value_size as usize);
    let mut out = MapEntries {
        key_size: ks,
        value_size: vs,
        ..MapEntries::default()
    };
    let chunk = INPLACE_BATCH.min(info.max_entries.max(1) as usize);
    let mut keys = vec![0u8; ks * chunk];
    let mut values = vec![0u8; vs * chunk];
    // The batch cursor is opaque: a bucket index (hash, 4 bytes) or a key.
    let mut cursor: Vec<u8> = Vec::new();
    let mut next = vec![0u8; ks.max(8)];
    loop {
        let step = sys::map_lookup_batch(
            fd,
            (!cursor.is_empty()).then_some(cursor.as_slice()),
            &mut next,
            &mut keys,
            &mut values,
            chunk as u32,
        );
        match step {
            Ok((count, done)) => {
                let count = count as usize;
                out.keys.extend_from_slice(&keys[..count * ks]);
                out.values.extend_from_slice(&values[..count * vs]);
                if done {
                    return Ok(out);
                }
                cursor.clear();
                cursor.extend_from_slice(&next);
            }
            Err(error)
                if cursor.is_empty()
                    && matches!(
                        error.raw_os_error(),
                        Some(sys::ENOTSUPP | libc::EOPNOTSUPP | libc::EINVAL)
                    ) =>
            {
                break;
            }
            Err(error) => {
                return Err(RuntimeError::Io {
                    context: "reading map entries (batched)",
                    error,
                });
            }
        }
    }
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; ks];
    let mut value = vec![0u8; vs];
    // Bounded: a map never holds more than max_entries keys.
    while out.len() <= info.max_entries as usize {
        let more = sys::map_get_next_key(fd, key.as_deref(), &mut next)
            .map_err(io_err("listing map keys"))?;
        if !more {
            break;
        }
        if sys::map_lookup_elem(fd, &next, &mut value).map_err(io_err("reading an entry"))? {
            out.keys.extend_from_slice(&next);
            out.values.extend_from_slice(&value);
        }
        key = Some(next.clone());
    }
    Ok(out)
}

/// The first 20 bytes of a key as integers, big-endian: for keys of one
/// length, ordering by it (then by the bytes, for longer keys) is the
/// bytes' order, at the cost of integer compares instead of `memcmp`.
type SortKey = (u128, u32);

fn sort_key(key: &[u8]) -> SortKey {
    let mut bytes = [0u8; 20];
    let n = key.len().min(20);
    bytes[..n].copy_from_slice(&key[..n]);
    let mut head = [0u8; 16];
    head.copy_from_slice(&bytes[..16]);
    let mut tail = [0u8; 4];
    tail.copy_from_slice(&bytes[16..]);
    (u128::from_be_bytes(head), u32::from_be_bytes(tail))
}

/// The changes that turn `old` into `image`'s entries: a merge of both
/// sorted by key (no per-entry allocation for the old side, no hashing:
/// this runs over a million entries). For arrays, a slot the image leaves
/// out holds zeros.
fn delta(name: &str, fd: OwnedFd, array: bool, old: &MapEntries, image: &[Entry]) -> MapDelta {
    let mut old_order: Vec<(SortKey, u32)> = (0..old.len())
        .map(|i| (sort_key(old.key(i)), i as u32))
        .collect();
    old_order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| old.key(a.1 as usize).cmp(old.key(b.1 as usize)))
    });
    let old_order: Vec<u32> = old_order.into_iter().map(|(_, i)| i).collect();
    let mut new_order: Vec<(SortKey, &Entry)> = image.iter().map(|e| (sort_key(&e.0), e)).collect();
    new_order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.0.cmp(&b.1.0)));
    let new_order: Vec<&Entry> = new_order.into_iter().map(|(_, e)| e).collect();
    let zero = vec![0u8; old.value_size];
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let (mut i, mut j) = (0, 0);
    let mut removed = |key: &[u8], previous: &[u8], upserts: &mut Vec<Upsert>| {
        if !array {
            deletes.push((key.to_vec(), previous.to_vec()));
        } else if previous != zero.as_slice() {
            upserts.push((key.to_vec(), zero.clone(), Some(previous.to_vec())));
        }
    };
    while i < old_order.len() || j < new_order.len() {
        let old_at = old_order.get(i).map(|&o| o as usize);
        let order = match (old_at, new_order.get(j)) {
            (Some(o), Some(n)) => old.key(o).cmp(n.0.as_slice()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match (order, old_at) {
            (std::cmp::Ordering::Less, Some(o)) => {
                removed(old.key(o), old.value(o), &mut upserts);
                i += 1;
            }
            (std::cmp::Ordering::Equal, Some(o)) => {
                let (key, value) = new_order[j];
                if old.value(o) != value.as_slice() {
                    upserts.push((key.clone(), value.clone(), Some(old.value(o).to_vec())));
                }
                i += 1;
                j += 1;
            }
            _ => {
                let (key, value) = new_order[j];
                upserts.push((key.clone(), value.clone(), None));
                j += 1;
            }
        }
    }
    MapDelta {
        name: name.to_owned(),
        fd,
        array,
        upserts,
        deletes,
    }
}

/// Deletes `keys` from `fd`: batched, per element when refused. A key
/// already gone counts as deleted.
fn delete_keys(fd: BorrowedFd<'_>, all: &[&[u8]]) -> Result<(), (io::Error, usize)> {
    let mut done = 0;
    let mut keys = Vec::new();
    let mut batched = true;
    while batched && done < all.len() {
        let chunk = &all[done..(done + INPLACE_BATCH).min(all.len())];
        keys.clear();
        for k in chunk {
            keys.extend_from_slice(k);
        }
        crate::fault::point("map delete batch");
        match sys::map_delete_batch(fd, &keys, chunk.len() as u32) {
            Ok(()) => done += chunk.len(),
            // Not supported, or a key vanished: finish one by one.
            Err((_, applied)) => {
                done += applied as usize;
                batched = false;
            }
        }
    }
    for k in &all[done..] {
        crate::fault::point("map delete");
        sys::map_delete_elem(fd, k).map_err(|e| (e, done))?;
        done += 1;
    }
    Ok(())
}

/// Puts back the old entries of the first `upserted` upserts and `deleted`
/// deletes of `d`.
fn restore(d: &MapDelta, upserted: usize, deleted: usize) -> Result<(), String> {
    let fd = d.fd.as_fd();
    let mut failed = 0usize;
    for (key, _, old) in &d.upserts[..upserted] {
        let ok = match old {
            Some(old) => sys::map_update_elem(fd, key, old).is_ok(),
            None => sys::map_delete_elem(fd, key).is_ok(),
        };
        failed += usize::from(!ok);
    }
    for (key, old) in &d.deletes[..deleted] {
        failed += usize::from(sys::map_update_elem(fd, key, old).is_err());
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(format!(
            "{failed} entries of map `{}` could not be put back",
            d.name
        ))
    }
}

/// Makes the maps pinned at `pins` hold exactly `images`' entries without
/// touching the programs or any other map: reads each map's current
/// entries from the kernel (so changes made at run time, e.g. by
/// `patronusc table add`, are accounted for), then writes new and changed
/// entries into every map first and deletes removed ones afterwards (an
/// address moving between prefixes is never in neither). Each map must be
/// pinned with exactly the image's shape ([`RuntimeError::ShapeChanged`]
/// otherwise, nothing changed). On failure the entries already changed are
/// restored (best effort: [`RuntimeError::InPlace`] says how it went).
pub fn update_in_place(
    pins: &Pins,
    images: &[&patronus_codegen::MapDef],
) -> Result<InPlace, RuntimeError> {
    let mut deltas = Vec::new();
    // Memory-mapped DIR-24 arrays: rewritten after the upserts (their
    // slots point into the bitmaps and tries updated there).
    let mut mapped = Vec::new();
    for image in images {
        let fd = sys::obj_get(&pins.map(&image.name)).map_err(|_| RuntimeError::ShapeChanged {
            map: image.name.clone(),
        })?;
        let info = sys::map_info(fd.as_fd()).map_err(io_err("reading map info"))?;
        if crate::deploy::roles::filled_through_mapping(info.map_flags) {
            if MapShape::of_info(&info) != MapShape::of(image) {
                return Err(RuntimeError::ShapeChanged {
                    map: image.name.clone(),
                });
            }
            mapped.push((image, fd, info));
            continue;
        }
        if MapShape::of_info(&info) != MapShape::of(image)
            || !matches!(info.map_type, MAP_HASH | MAP_ARRAY | MAP_LPM_TRIE)
        {
            return Err(RuntimeError::ShapeChanged {
                map: image.name.clone(),
            });
        }
        let old = map_entries(fd.as_fd())?;
        deltas.push(delta(
            &image.name,
            fd,
            info.map_type == MAP_ARRAY,
            &old,
            &image.entries,
        ));
    }
    let mut done = InPlace::default();
    // (map index, upserts applied, deletes applied) for the restore.
    let mut progress: Vec<(usize, usize)> = vec![(0, 0); deltas.len()];
    let fail = |cause: RuntimeError, progress: &[(usize, usize)]| {
        let restored = deltas
            .iter()
            .zip(progress)
            .map(|(d, (u, del))| restore(d, *u, *del))
            .filter_map(Result::err)
            .collect::<Vec<_>>();
        RuntimeError::InPlace {
            cause: Box::new(cause),
            restored: if restored.is_empty() {
                Ok(())
            } else {
                Err(restored.join("; "))
            },
        }
    };
    for (i, d) in deltas.iter().enumerate() {
        let entries: Vec<(&[u8], &[u8])> = d
            .upserts
            .iter()
            .map(|(k, v, _)| (k.as_slice(), v.as_slice()))
            .collect();
        let faults = FaultPoints {
            batch: "map update batch",
            single: "map update",
        };
        let as_is = |value: &[u8], out: &mut Vec<u8>| out.extend_from_slice(value);
        if let Err(WriteError {
            error,
            done: applied,
            ..
        }) = update_batched(d.fd.as_fd(), &entries, &as_is, Some(faults))
        {
            progress[i].0 = applied;
            let cause = RuntimeError::Map {
                map: d.name.clone(),
                op: "in-place update",
                error,
            };
            return Err(fail(cause, &progress));
        }
        progress[i].0 = d.upserts.len();
    }
    for (image, fd, info) in &mapped {
        crate::fault::point("rewrite mapped array");
        match crate::mapped::rewrite_runs(&image.name, fd.as_fd(), info, &image.entries) {
            Ok(changed) => {
                done.changed += changed;
                done.maps += usize::from(changed > 0);
            }
            Err(cause) => return Err(fail(cause, &progress)),
        }
    }
    for (i, d) in deltas.iter().enumerate() {
        if d.array {
            continue;
        }
        let keys: Vec<&[u8]> = d.deletes.iter().map(|(k, _)| k.as_slice()).collect();
        if let Err((error, applied)) = delete_keys(d.fd.as_fd(), &keys) {
            progress[i].1 = applied;
            let cause = RuntimeError::Map {
                map: d.name.clone(),
                op: "in-place delete",
                error,
            };
            return Err(fail(cause, &progress));
        }
        progress[i].1 = d.deletes.len();
    }
    for d in &deltas {
        let added = d.upserts.iter().filter(|u| u.2.is_none()).count();
        done.added += added;
        if d.array {
            // Zeroed slots are the array's deletions.
            let zeroed = d
                .upserts
                .iter()
                .filter(|u| u.1.iter().all(|b| *b == 0))
                .count();
            done.removed += zeroed;
            done.changed += d.upserts.len() - added - zeroed;
        } else {
            done.changed += d.upserts.len() - added;
            done.removed += d.deletes.len();
        }
        done.maps += usize::from(!d.upserts.is_empty() || !d.deletes.is_empty());
    }
    Ok(done)
}
