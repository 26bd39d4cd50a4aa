//! Fills memory-mapped array maps (`BPF_F_MMAPABLE`): the DIR-24 slot
//! arrays of big IPv4 classifiers (`patronus_codegen::layout::dir24`), whose
//! images are runs rather than entries. Writing through a shared mapping
//! fills 64 MiB at memory speed, where 8 million update syscalls would
//! take seconds.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use patronus_codegen::layout::dir24;

use crate::RuntimeError;
use crate::sys::MapInfo;

/// Writes `entries` (runs, the image of a `_d24` map) into the array
/// behind `fd`. The array must be fresh (all zero), as a newly created map
/// is.
pub fn fill_runs(
    name: &str,
    fd: BorrowedFd<'_>,
    info: &MapInfo,
    entries: &[(&[u8], &[u8])],
) -> Result<(), RuntimeError> {
    let len = info.max_entries as usize * (info.value_size as usize).next_multiple_of(8);
    with_mapping(name, fd, len, |memory| expand_into(name, entries, memory))?
}

/// Decodes runs and expands them into `memory`.
fn expand_into(
    name: &str,
    entries: &[(&[u8], &[u8])],
    memory: &mut [u8],
) -> Result<(), RuntimeError> {
    let bad = |what: String| RuntimeError::Map {
        map: name.to_owned(),
        op: "fill",
        error: io::Error::new(io::ErrorKind::InvalidData, what),
    };
    let mut runs = Vec::with_capacity(entries.len());
    for (i, (key, value)) in entries.iter().enumerate() {
        runs.push(
            dir24::decode_run(key, value).ok_or_else(|| bad(format!("entry {i} is not a run")))?,
        );
    }
    dir24::expand_runs(&runs, memory).map_err(bad)
}

/// Runs `f` on a shared read-write mapping of the map's `len` value bytes.
fn with_mapping<R>(
    name: &str,
    fd: BorrowedFd<'_>,
    len: usize,
    f: impl FnOnce(&mut [u8]) -> R,
) -> Result<R, RuntimeError> {
    with_mapping_at(name, fd, 0, len, f)
}

/// Runs `f` on a shared read-write mapping of `len` value bytes from byte
/// `offset` (page aligned).
fn with_mapping_at<R>(
    name: &str,
    fd: BorrowedFd<'_>,
    offset: usize,
    len: usize,
    f: impl FnOnce(&mut [u8]) -> R,
) -> Result<R, RuntimeError> {
    // SAFETY: a shared read-write mapping of the map's value area, which
    // the kernel sizes to at least `len` bytes for an mmapable array.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(RuntimeError::Map {
            map: name.to_owned(),
            op: "mmap",
            error: io::Error::last_os_error(),
        });
    }
    // SAFETY: `base` maps `len` writable bytes and nothing else in this
    // process aliases them while `f` runs.
    let memory = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
    let result = f(memory);
    // SAFETY: unmapping exactly the mapping made above.
    unsafe {
        libc::munmap(base, len);
    }
    Ok(result)
}

/// Rewrites a running `_d24` array to the contents `entries` (runs)
/// describe, writing only the 8-byte elements that differ (each an aligned
/// store, so a packet reads the old or the new slot pair, never a torn
/// one). Returns how many elements changed.
pub fn rewrite_runs(
    name: &str,
    fd: BorrowedFd<'_>,
    info: &MapInfo,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<usize, RuntimeError> {
    let len = info.max_entries as usize * (info.value_size as usize).next_multiple_of(8);
    let mut wanted = vec![0u8; len];
    let runs: Vec<(&[u8], &[u8])> = entries
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    expand_into(name, &runs, &mut wanted)?;
    with_mapping(name, fd, len, |memory| {
        let mut changed = 0;
        for (now, new) in memory.chunks_exact_mut(8).zip(wanted.chunks_exact(8)) {
            if now != new {
                now.copy_from_slice(new);
                changed += 1;
            }
        }
        changed
    })
}

/// Runs `f` on the slots `first..=last` of a running `_d24` array (u32 LE
/// each, two per element), through a shared mapping: `patronusc table`
/// changes a few slots of a big table without rewriting the rest.
pub fn with_slots<R>(
    name: &str,
    fd: BorrowedFd<'_>,
    first: u32,
    last: u32,
    f: impl FnOnce(&mut [u8]) -> R,
) -> Result<R, RuntimeError> {
    let info = crate::sys::map_info(fd).map_err(|error| RuntimeError::Map {
        map: name.to_owned(),
        op: "read the map's info",
        error,
    })?;
    let len = info.max_entries as usize * (info.value_size as usize).next_multiple_of(8);
    let (start, end) = (first as usize * 4, (last as usize + 1) * 4);
    if first > last || end > len || !crate::deploy::roles::filled_through_mapping(info.map_flags) {
        return Err(RuntimeError::Map {
            map: name.to_owned(),
            op: "map slots",
            error: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slots {first}..={last} are not in this array"),
            ),
        });
    }
    // Only the pages holding the slots: the kernel maps an array's whole
    // range up front, milliseconds for 64 MiB.
    let page = 4096;
    let offset = start / page * page;
    let span = (end.next_multiple_of(page)).min(len.next_multiple_of(page)) - offset;
    with_mapping_at(name, fd, offset, span, |memory| {
        f(&mut memory[start - offset..end - offset])
    })
}
