//! Patronus runtime: the only crate that talks to the kernel.
//!
//! - [`Loaded`]: an object loaded with aya — maps created and filled from
//!   their images (batched updates where the kernel allows), XDP and tc
//!   programs verified — with `BPF_PROG_TEST_RUN` test runs, counter reads
//!   and state resets.
//! - [`install`]: attaching a policy to an interface (XDP + tcx egress
//!   links pinned on bpffs), atomic replacement, in-place updates, removal;
//!   on [`pins`] (the bpffs names, live maps), [`counters`] and
//!   [`privileges`].
//! - [`deploy`]: the deployment decisions — map roles, in place or
//!   replace, counters carried by rule identity, run-time table edits.
//! - [`host`]: the pin and state directories of each interface (validated
//!   names, root-owned 0700 directories used through verified descriptors).
//! - [`events`]: `log` events from a pinned ring buffer.
//! - [`probe`]: whether this process can load and test-run programs at all.
//! - [`attach`]: the egress program as a tcx link or, without tcx, a
//!   `clsact` filter.
//! - [`doctor`]: `patronusc doctor`'s checks of the host, an interface
//!   and a policy's needs, as a report of pass / warn / fail / unknown.
//! - [`features`]: what this kernel's BPF offers (verifier generation,
//!   helpers, map types, tcx, XDP links), probed once per process.
//! - [`RuntimeError`]: every failure as data; verifier rejections carry the
//!   log's last lines and the listing's annotation of the failing
//!   instruction.
//!
//! Byte layouts of keys and values belong to codegen; the runtime writes
//! the bytes it is given and reads counters as u64 words.

pub mod attach;
mod batch;
pub mod counters;
pub mod deploy;
pub mod doctor;
pub mod error;
pub mod events;
pub mod fault;
pub mod features;
pub mod host;
pub mod install;
pub mod loaded;
pub mod mapped;
pub mod pins;
pub mod privileges;
pub mod sys;

pub use error::RuntimeError;
pub use loaded::{Image, Loaded, MapFill, MapShape, ProgramStats, TestRun, probe};
pub use patronus_codegen::elf::ProgramKind;
pub mod testing;
