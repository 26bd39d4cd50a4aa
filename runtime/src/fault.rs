//! Kill points for crash-consistency tests: every mutating step of an
//! install, replace, in-place update, table change, confirm or unload
//! calls [`point`] first. With `PATRONUS_TEST_FAULT_AT=N` in the
//! environment the process kills itself with `SIGKILL` at the N-th point
//! (counted from 1), exactly as a `kill -9` would land there; with
//! `PATRONUS_TEST_FAULT_TRACE=1` each point is printed to stderr
//! (`fault point N: STEP`), which is how a test learns how many there are.
//! Not a user option: unset, a point costs one relaxed atomic increment.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the point to die at.
pub const FAULT_AT_VAR: &str = "PATRONUS_TEST_FAULT_AT";
/// The variable that prints every point.
pub const FAULT_TRACE_VAR: &str = "PATRONUS_TEST_FAULT_TRACE";

static COUNT: AtomicU32 = AtomicU32::new(0);

fn config() -> &'static (Option<u32>, bool) {
    static CONFIG: OnceLock<(Option<u32>, bool)> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let at = std::env::var(FAULT_AT_VAR)
            .ok()
            .and_then(|v| v.trim().parse().ok());
        let trace = std::env::var_os(FAULT_TRACE_VAR).is_some_and(|v| v == "1");
        (at, trace)
    })
}

/// A mutating step named `step` is about to happen.
pub fn point(step: &str) {
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let (at, trace) = config();
    if *trace {
        eprintln!("fault point {n}: {step}");
    }
    if *at == Some(n) {
        // SAFETY: raising a signal at ourselves; SIGKILL cannot be caught.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}
