//! The one batched map writer: entries written `BATCH_ENTRIES` at a time
//! with `BPF_MAP_UPDATE_BATCH` where the kernel supports it for the map
//! type, one by one once the first batch is refused. Loading
//! (`Loaded::fill`) and the in-place update of a running policy
//! (`crate::install`) both write through it.

use std::io;
use std::os::fd::BorrowedFd;

use crate::sys;

/// Entries per `BPF_MAP_UPDATE_BATCH` call: bounds the staging buffers.
pub(crate) const BATCH_ENTRIES: usize = 8192;

/// The batch command is not implemented for this map type (or kernel).
pub(crate) fn batch_refused(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(sys::ENOTSUPP | libc::EOPNOTSUPP | libc::EINVAL)
    )
}

/// Kill points ([`crate::fault::point`]) a writer passes: one before each
/// batch and one before each single update. Loading has none (a kill
/// before the swap changes nothing), an in-place update has them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultPoints {
    pub batch: &'static str,
    pub single: &'static str,
}

/// Why [`update_batched`] stopped.
#[derive(Debug)]
pub(crate) struct WriteError {
    pub error: io::Error,
    /// Entries written before the failure.
    pub done: usize,
    /// The failure was a batch command's (else a single update's).
    pub batched: bool,
}

/// Writes `entries` (key, value) into `fd`; `stored_value` turns a value
/// into the bytes the map stores (per-CPU maps: one copy per CPU).
pub(crate) fn update_batched(
    fd: BorrowedFd<'_>,
    entries: &[(&[u8], &[u8])],
    stored_value: &dyn Fn(&[u8], &mut Vec<u8>),
    faults: Option<FaultPoints>,
) -> Result<(), WriteError> {
    let mut done = 0;
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut batched = true;
    while batched && done < entries.len() {
        let chunk = &entries[done..(done + BATCH_ENTRIES).min(entries.len())];
        keys.clear();
        values.clear();
        for (key, value) in chunk {
            keys.extend_from_slice(key);
            stored_value(value, &mut values);
        }
        if let Some(faults) = faults {
            crate::fault::point(faults.batch);
        }
        match sys::map_update_batch(fd, &keys, &values, chunk.len() as u32) {
            Ok(()) => done += chunk.len(),
            Err((error, 0)) if done == 0 && batch_refused(&error) => batched = false,
            Err((error, applied)) => {
                return Err(WriteError {
                    error,
                    done: done + applied as usize,
                    batched: true,
                });
            }
        }
    }
    let mut value = Vec::new();
    for (key, stored) in &entries[done..] {
        value.clear();
        stored_value(stored, &mut value);
        if let Some(faults) = faults {
            crate::fault::point(faults.single);
        }
        sys::map_update_elem(fd, key, &value).map_err(|error| WriteError {
            error,
            done,
            batched: false,
        })?;
        done += 1;
    }
    Ok(())
}
