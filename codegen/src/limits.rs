//! The limits a generated program must stay within: instruction count and
//! the verifier generation the code targets. A leaf: every generator reads
//! it, it reads nothing of theirs.

/// The kernel's limit on instructions the verifier processes, and the
/// program length we refuse to exceed.
pub const MAX_INSNS: usize = 1_000_000;

/// The limits a generated program must stay within. [`Default`] is the
/// kernel's, for any verifier; [`compile_with_limits`](crate::compile_with_limits) takes others so that
/// tests reach the limit errors with small policies, and so that the
/// runtime can ask for the code of the verifier it probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most instruction slots the XDP program may have.
    pub max_insns: usize,
    /// The verifier the code must satisfy.
    pub verifier: Verifier,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_insns: MAX_INSNS,
            verifier: Verifier::default(),
        }
    }
}

/// Which verifier generation the generated code must pass. The
/// difference is one instruction per header length: an older verifier
/// (Linux 6.1's, for one) forgets the bounds of a byte-swapped value
/// (`r3 = be16 r3` leaves r3 unknown), so a length read from the packet
/// is masked to 16 bits before it is added to a packet pointer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verifier {
    /// Any verifier Patronus supports. The default: an object written to
    /// a file may be loaded on another kernel.
    #[default]
    Portable,
    /// A verifier that keeps the bounds of a byte swap (the runtime
    /// probes for it): the masks are left out.
    BoundsThroughSwaps,
}
