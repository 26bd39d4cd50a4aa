//! Reading `log` events from an installed policy's pinned ring buffer
//! (`maps/log_events`, layout in `patronus_codegen::abi::log`): aya's
//! `RingBuf` over the pinned map, `poll(2)` to wait for the next event.
//!
//! A ring buffer has one consumer position: two readers at once split the
//! events between them.

use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, RingBuf};
use patronus_codegen::abi::log::{LogEvent, decode_event};

use crate::error::RuntimeError;

/// A consumer of one pinned log ring buffer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

fn open_err(path: &Path, error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Io {
        context: "opening the log ring buffer",
        error: io::Error::other(format!("{}: {error}", path.display())),
    }
}

impl EventReader {
    pub fn open(path: &Path) -> Result<EventReader, RuntimeError> {
        let data = MapData::from_pin(path).map_err(|e| open_err(path, e))?;
        let map = Map::from_map_data(data).map_err(|e| open_err(path, e))?;
        let ring = RingBuf::try_from(map).map_err(|e| open_err(path, e))?;
        Ok(EventReader { ring })
    }

    /// The next event, waiting up to `timeout` (`None`: forever).
    /// `Ok(None)` when the time ran out. Records too short to be events
    /// are skipped.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Option<LogEvent>, RuntimeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(item) = self.ring.next()
                && let Some(event) = decode_event(&item)
            {
                return Ok(Some(event));
            }
            let wait_ms = match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    // Rounded up: a 0 ms poll would spin.
                    i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
                }
            };
            let mut pollfd = libc::pollfd {
                fd: self.ring.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let ret = unsafe { libc::poll(&mut pollfd, 1, wait_ms) };
            if ret < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(RuntimeError::Io {
                        context: "waiting for log events",
                        error,
                    });
                }
            }
        }
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of an event's
/// `time_ns` (`bpf_ktime_get_coarse_ns`).
pub fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain data written by the call.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}
