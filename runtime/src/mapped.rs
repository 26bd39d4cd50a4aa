//! Fills memory-mapped array maps (`BPF_F_MMAPABLE`): the DIR-24 slot
//! arrays of big IPv4 classifiers (`patronus_codegen::xdp::dir24`), whose
//! images are runs rather than entries. Writing through a shared mapping
//! fills 64 MiB at memory speed, where 8 million update syscalls would
//! take seconds.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use patronus_codegen::xdp::dir24;

use crate::RuntimeError;
use crate::sys::MapInfo;

/// Writes `runs` (image entries of a `_d24` map) into the array behind
/// `fd`. The array must be fresh (all zero), as a newly created map is.
pub fn fill_runs(
    name: &str,
    fd: BorrowedFd<'_>,
    info: &MapInfo,
    entries: &[(&[u8], &[u8])],
) -> Result<(), RuntimeError> {
    let map_err = |op, error| RuntimeError::Map {
        map: name.to_owned(),
        op,
        error,
    };
    let mut runs = Vec::with_capacity(entries.len());
    for (i, (key, value)) in entries.iter().enumerate() {
        let run = dir24::decode_run(key, value).ok_or_else(|| {
            map_err(
                "decode the image",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("entry {i} is not a run"),
                ),
            )
        })?;
        runs.push(run);
    }
    let len = info.max_entries as usize * (info.value_size as usize).next_multiple_of(8);
    // SAFETY: a shared read-write mapping of the map's value area, which
    // the kernel sizes to at least `len` bytes for an mmapable array; it
    // is unmapped below before anything else can see the slice.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(map_err("mmap", io::Error::last_os_error()));
    }
    // SAFETY: `base` maps `len` writable bytes (above) and nothing else
    // aliases them in this process.
    let memory = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
    let result = dir24::expand_runs(&runs, memory)
        .map_err(|e| map_err("fill", io::Error::new(io::ErrorKind::InvalidData, e)));
    // SAFETY: unmapping exactly the mapping made above.
    unsafe {
        libc::munmap(base, len);
    }
    result
}
