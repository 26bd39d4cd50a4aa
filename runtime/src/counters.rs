//! Reading and writing the u64 counters of a pinned map (the stats
//! array, per CPU or not) and counting the entries of a hash map
//! (conntrack flows): what `stats`, `status` and the counter carry-over
//! of a replace read and write.

use std::io;
use std::os::fd::BorrowedFd;

use patronus_codegen::insn::kernel::map_type;

use crate::error::RuntimeError;
use crate::sys;

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> RuntimeError {
    move |error| RuntimeError::Io { context, error }
}

/// How many entries a pinned hash map holds (e.g. conntrack flows).
pub fn count_entries(map: BorrowedFd<'_>) -> Result<usize, RuntimeError> {
    let info = sys::map_info(map).map_err(io_err("reading map info"))?;
    let mut key = vec![0u8; info.key_size as usize];
    let mut next = vec![0u8; info.key_size as usize];
    let mut count = 0usize;
    let mut first = true;
    // Bounded: a map never holds more than max_entries keys.
    while count <= info.max_entries as usize {
        let more = sys::map_get_next_key(map, (!first).then_some(key.as_slice()), &mut next)
            .map_err(io_err("listing map keys"))?;
        if !more {
            break;
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        count += 1;
    }
    Ok(count)
}

/// A per-CPU (or plain) array of u64 counters: for each index, the
/// value's little-endian u64 words summed over CPUs.
pub fn read_counters(map: BorrowedFd<'_>) -> Result<Vec<Vec<u64>>, RuntimeError> {
    let info = sys::map_info(map).map_err(io_err("reading map info"))?;
    let value_size = info.value_size as usize;
    let percpu = info.map_type == map_type::PERCPU_ARRAY;
    if !(percpu || info.map_type == map_type::ARRAY) || !value_size.is_multiple_of(8) {
        return Err(RuntimeError::Io {
            context: "reading counters",
            error: io::Error::new(io::ErrorKind::InvalidInput, "not an array of u64 counters"),
        });
    }
    let cpus = if percpu {
        sys::possible_cpus().map_err(io_err("counting CPUs"))?
    } else {
        1
    };
    let mut buf = vec![0u8; value_size * cpus];
    let mut out = Vec::with_capacity(info.max_entries as usize);
    for index in 0..info.max_entries {
        buf.fill(0);
        sys::map_lookup_elem(map, &index.to_ne_bytes(), &mut buf)
            .map_err(io_err("reading a counter"))?;
        let mut sums = vec![0u64; value_size / 8];
        for cpu_value in buf.chunks_exact(value_size) {
            for (sum, word) in sums.iter_mut().zip(cpu_value.chunks_exact(8)) {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(word);
                *sum = sum.wrapping_add(u64::from_le_bytes(bytes));
            }
        }
        out.push(sums);
    }
    Ok(out)
}

/// Adds `words` (one total per u64 word of the value, e.g. packets and
/// bytes) to counter `index` of a per-CPU (or plain) u64 array, on the
/// first CPU's slot. Used to carry a replaced policy's counters over; a
/// packet the program counts on that CPU during this read-modify-write
/// can be lost, which is why it is done once, right after the swap.
pub fn add_counters(map: BorrowedFd<'_>, index: u32, words: &[u64]) -> Result<(), RuntimeError> {
    let info = sys::map_info(map).map_err(io_err("reading map info"))?;
    let value_size = info.value_size as usize;
    let percpu = info.map_type == map_type::PERCPU_ARRAY;
    if !(percpu || info.map_type == map_type::ARRAY)
        || !value_size.is_multiple_of(8)
        || index >= info.max_entries
    {
        return Err(RuntimeError::Io {
            context: "writing counters",
            error: io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an array of u64 counters, or the index is out of range",
            ),
        });
    }
    let cpus = if percpu {
        sys::possible_cpus().map_err(io_err("counting CPUs"))?
    } else {
        1
    };
    let mut buf = vec![0u8; value_size * cpus];
    sys::map_lookup_elem(map, &index.to_ne_bytes(), &mut buf)
        .map_err(io_err("reading a counter"))?;
    for (slot, add) in buf[..value_size].chunks_exact_mut(8).zip(words) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(slot);
        let sum = u64::from_le_bytes(bytes).wrapping_add(*add);
        slot.copy_from_slice(&sum.to_le_bytes());
    }
    sys::map_update_elem(map, &index.to_ne_bytes(), &buf).map_err(io_err("writing a counter"))
}
