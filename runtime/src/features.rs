//! What this kernel's BPF offers, found by asking it: tiny programs are
//! loaded and tiny maps created, once per process. Version numbers are
//! only used where no probe can tell (XDP links), because distributions
//! backport BPF features into old version numbers.
//!
//! The runtime chooses from the answers: the code generation for the
//! verifier ([`Features::limits`]), tcx or a classic `clsact` filter for
//! the egress program (`attach`), and refuses an object that needs what
//! the kernel lacks with an error naming the feature and the Linux
//! version that has it ([`Features::check`]) instead of the verifier's
//! "unknown func". `patronusc doctor` reports every probe ([`Feature::ALL`]).

use std::io;
use std::os::fd::AsFd as _;
use std::sync::OnceLock;

use patronus_codegen::insn::kernel::map_flags::MMAPABLE;
use patronus_codegen::insn::kernel::{Helper, map_type};
use patronus_codegen::insn::{Asm, Insn, Reg, SwapBits, encode_all};
use patronus_codegen::{Limits, Verifier};

use crate::error::RuntimeError;
use crate::sys;

/// `bpf_prog_type`s of the probe programs.
const PROG_TYPE_SCHED_CLS: u32 = 3;
const PROG_TYPE_XDP: u32 = 6;
/// `BPF_FUNC_tcp_raw_gen_syncookie_ipv4`.
const HELPER_RAW_GEN_SYNCOOKIE_IPV4: u32 = 204;

/// A kernel feature a policy may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `bpf_ktime_get_coarse_ns`: the clock of conntrack and rate limits.
    CoarseClock,
    /// `BPF_MAP_TYPE_RINGBUF`: `log` events.
    Ringbuf,
    /// `BPF_F_MMAPABLE` arrays: DIR-24 address arrays.
    MmapableArray,
    /// BPF links for XDP: the attachment `apply` pins and swaps.
    XdpLink,
    /// tcx links for the egress program (else a `clsact` filter).
    Tcx,
    /// `bpf_tcp_raw_gen_syncookie_ipv4` and friends: SYN cookies from XDP.
    Syncookie,
    /// `BPF_map_type::BLOOM_FILTER`.
    BloomFilter,
    /// `BPF_map_type::CPUMAP`: spreading packets over CPUs.
    Cpumap,
    /// `BPF_map_type::XSKMAP`: AF_XDP sockets.
    Xskmap,
}

impl Feature {
    /// Every probed feature, in report order.
    pub const ALL: [Feature; 9] = [
        Feature::XdpLink,
        Feature::Tcx,
        Feature::CoarseClock,
        Feature::Ringbuf,
        Feature::MmapableArray,
        Feature::Syncookie,
        Feature::BloomFilter,
        Feature::Cpumap,
        Feature::Xskmap,
    ];

    /// A short stable name (doctor's check ids).
    pub fn id(self) -> &'static str {
        match self {
            Feature::CoarseClock => "coarse-clock",
            Feature::Ringbuf => "ringbuf",
            Feature::MmapableArray => "mmapable-array",
            Feature::XdpLink => "xdp-link",
            Feature::Tcx => "tcx",
            Feature::Syncookie => "syncookie-helpers",
            Feature::BloomFilter => "bloom-filter",
            Feature::Cpumap => "cpumap",
            Feature::Xskmap => "xskmap",
        }
    }

    /// What the feature is and what needs it.
    pub fn name(self) -> &'static str {
        match self {
            Feature::CoarseClock => {
                "the bpf_ktime_get_coarse_ns helper (the clock of conntrack and rate limits)"
            }
            Feature::Ringbuf => "BPF ring buffers (the `log` events)",
            Feature::MmapableArray => {
                "memory-mapped BPF arrays (the DIR-24 arrays of large IPv4 tables)"
            }
            Feature::XdpLink => "BPF links for XDP (how `apply` attaches and swaps policies)",
            Feature::Tcx => "tcx links (the egress program; without them a clsact filter is used)",
            Feature::Syncookie => "the bpf_tcp_raw_gen_syncookie helpers (SYN cookies from XDP)",
            Feature::BloomFilter => "BPF bloom filter maps",
            Feature::Cpumap => "BPF CPU maps (spreading packets over CPUs)",
            Feature::Xskmap => "BPF XSK maps (AF_XDP sockets)",
        }
    }

    /// The first mainline Linux release that has it.
    pub fn since(self) -> &'static str {
        match self {
            Feature::CoarseClock => "5.11",
            Feature::Ringbuf => "5.8",
            Feature::MmapableArray => "5.5",
            Feature::XdpLink => "5.9",
            Feature::Tcx => "6.6",
            Feature::Syncookie => "6.0",
            Feature::BloomFilter => "5.16",
            Feature::Cpumap => "4.15",
            Feature::Xskmap => "4.18",
        }
    }
}

/// The answers of the probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// `uname -r`.
    pub release: String,
    /// The verifier generation: whether it keeps bounds through byte swaps.
    pub verifier: Verifier,
    pub coarse_clock: bool,
    pub ringbuf: bool,
    pub mmapable_array: bool,
    pub xdp_link: bool,
    /// tcx (Linux 6.6): egress programs attached as BPF links. Without it
    /// the egress program goes into a `clsact` qdisc as a `cls_bpf` filter.
    pub tcx: bool,
    pub syncookie: bool,
    pub bloom_filter: bool,
    pub cpumap: bool,
    pub xskmap: bool,
}

/// The probed features of the running kernel (probed on first use).
/// A probe that cannot run (no privileges, no bpf(2)) answers with the
/// conservative choice: portable code, feature absent.
pub fn current() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(probe_all)
}

fn probe_all() -> Features {
    let release = release();
    Features {
        verifier: if bounds_through_swaps() {
            Verifier::BoundsThroughSwaps
        } else {
            Verifier::Portable
        },
        coarse_clock: helper_callable(Helper::KtimeGetCoarseNs),
        ringbuf: sys::create_map(map_type::RINGBUF, 0, 0, 4096, 0).is_ok(),
        mmapable_array: sys::create_map(map_type::ARRAY, 4, 4, 1, MMAPABLE).is_ok(),
        // A link-create probe cannot tell "no XDP links" from "no such
        // interface" (both EINVAL): the version decides.
        xdp_link: version_at_least(&release, (5, 9)),
        tcx: tcx_present(),
        syncookie: syncookie_helpers(),
        bloom_filter: sys::create_map(map_type::BLOOM_FILTER, 0, 4, 1, 0).is_ok(),
        cpumap: sys::create_map(map_type::CPUMAP, 4, 4, 1, 0).is_ok(),
        xskmap: sys::create_map(map_type::XSKMAP, 4, 4, 1, 0).is_ok(),
        release,
    }
}

impl Features {
    /// Code generation limits for this kernel's verifier.
    pub fn limits(&self) -> Limits {
        Limits {
            verifier: self.verifier,
            ..Limits::default()
        }
    }

    /// Whether the kernel has `feature`.
    pub fn has(&self, feature: Feature) -> bool {
        match feature {
            Feature::CoarseClock => self.coarse_clock,
            Feature::Ringbuf => self.ringbuf,
            Feature::MmapableArray => self.mmapable_array,
            Feature::XdpLink => self.xdp_link,
            Feature::Tcx => self.tcx,
            Feature::Syncookie => self.syncookie,
            Feature::BloomFilter => self.bloom_filter,
            Feature::Cpumap => self.cpumap,
            Feature::Xskmap => self.xskmap,
        }
    }

    /// Refuses `object` when it needs a feature this kernel lacks.
    pub fn check(&self, object: &aya_obj::Object) -> Result<(), RuntimeError> {
        for feature in needs(object) {
            self.require(feature)?;
        }
        Ok(())
    }

    /// An error unless the kernel has `feature`.
    pub fn require(&self, feature: Feature) -> Result<(), RuntimeError> {
        if self.has(feature) {
            Ok(())
        } else {
            Err(RuntimeError::MissingFeature {
                feature: feature.name(),
                since: feature.since(),
                release: self.release.clone(),
            })
        }
    }
}

/// The features `object` uses: helpers its programs call, map types and
/// flags of its maps.
pub fn needs(object: &aya_obj::Object) -> Vec<Feature> {
    let mut needs = Vec::new();
    let calls = |helper: u32| {
        object.functions.values().any(|f| {
            // src_reg 0: a helper call (1 is a call of a BPF function).
            f.instructions
                .iter()
                .any(|i| i.code == 0x85 && i.src_reg() == 0 && i.imm == helper as i32)
        })
    };
    if calls(Helper::KtimeGetCoarseNs.id()) {
        needs.push(Feature::CoarseClock);
    }
    // The four raw syncookie helpers (gen/check, IPv4/IPv6) came together.
    if (HELPER_RAW_GEN_SYNCOOKIE_IPV4..HELPER_RAW_GEN_SYNCOOKIE_IPV4 + 4).any(calls) {
        needs.push(Feature::Syncookie);
    }
    for map in object.maps.values() {
        let feature = match map.map_type() {
            map_type::RINGBUF => Some(Feature::Ringbuf),
            map_type::BLOOM_FILTER => Some(Feature::BloomFilter),
            map_type::CPUMAP => Some(Feature::Cpumap),
            map_type::XSKMAP => Some(Feature::Xskmap),
            _ => None,
        };
        if let Some(feature) = feature
            && !needs.contains(&feature)
        {
            needs.push(feature);
        }
        if map.map_flags() & MMAPABLE != 0 && !needs.contains(&Feature::MmapableArray) {
            needs.push(Feature::MmapableArray);
        }
    }
    needs
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether `release` (`5.10.0-46-amd64`, `6.1.192`) is at least `want`.
pub fn version_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

fn load(prog_type: u32, asm: Asm) -> io::Result<()> {
    let program = asm
        .finish()
        .map_err(|e| io::Error::other(format!("probe program: {e}")))?;
    sys::load_probe_program(prog_type, &encode_all(program.insns())).map(drop)
}

/// Whether an XDP program may call `helper`.
fn helper_callable(helper: Helper) -> bool {
    let mut asm = Asm::new();
    asm.call(helper);
    asm.mov64_imm(Reg::R0, 2);
    asm.exit();
    load(PROG_TYPE_XDP, asm).is_ok()
}

/// Whether an XDP program may call `bpf_tcp_raw_gen_syncookie_ipv4`
/// (Linux 6.0, `CONFIG_SYN_COOKIES`): called with a zeroed IPv4 and TCP
/// header on the stack, the arguments its prototype asks for, so only a
/// missing helper makes the verifier refuse.
fn syncookie_helpers() -> bool {
    let mut asm = Asm::new();
    asm.mov64_imm(Reg::R1, 0);
    for off in [-8, -16, -24, -32, -40] {
        asm.stx_dw(Reg::R10, off, Reg::R1);
    }
    asm.mov64_reg(Reg::R1, Reg::R10);
    asm.add64_imm(Reg::R1, -40); // struct iphdr: 20 bytes
    asm.mov64_reg(Reg::R2, Reg::R10);
    asm.add64_imm(Reg::R2, -20); // struct tcphdr: 20 bytes
    asm.mov64_imm(Reg::R3, 20);
    asm.emit(Insn::Call {
        helper: HELPER_RAW_GEN_SYNCOOKIE_IPV4,
    });
    asm.mov64_imm(Reg::R0, 2);
    asm.exit();
    load(PROG_TYPE_XDP, asm).is_ok()
}

/// Whether the verifier keeps the bounds of a byte-swapped packet field:
/// adds a `be16` length to a packet pointer, which a verifier that
/// forgets them (Linux 6.1's) rejects as "math between pkt pointer and
/// register with unbounded min value".
fn bounds_through_swaps() -> bool {
    let mut asm = Asm::new();
    let out = asm.new_label();
    asm.ldx_w(Reg::R2, Reg::R1, 0);
    asm.ldx_w(Reg::R3, Reg::R1, 4);
    asm.mov64_reg(Reg::R4, Reg::R2);
    asm.add64_imm(Reg::R4, 2);
    asm.jgt_reg(Reg::R4, Reg::R3, out);
    asm.ldx_h(Reg::R5, Reg::R2, 0);
    asm.to_be(Reg::R5, SwapBits::B16);
    asm.mov64_reg(Reg::R4, Reg::R2);
    asm.add64_reg(Reg::R4, Reg::R5);
    asm.bind(out);
    asm.mov64_imm(Reg::R0, 2);
    asm.exit();
    load(PROG_TYPE_XDP, asm).is_ok()
}

/// Whether `BPF_LINK_CREATE` knows tcx: with tcx the kernel looks for the
/// interface (ifindex 0: `ENODEV`); without, the attach type is unknown
/// for a `sched_cls` program (`EINVAL`). Nothing is attached either way.
fn tcx_present() -> bool {
    let mut asm = Asm::new();
    asm.mov64_imm(Reg::R0, 0);
    asm.exit();
    let Ok(program) = asm.finish() else {
        return false;
    };
    let Ok(prog) = sys::load_probe_program(PROG_TYPE_SCHED_CLS, &encode_all(program.insns()))
    else {
        return false;
    };
    match sys::link_create(prog.as_fd(), 0, sys::attach_type::TCX_EGRESS, 0) {
        Ok(_) => true,
        Err(error) => error.raw_os_error() == Some(libc::ENODEV),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions() {
        assert!(version_at_least("6.1.0-57-amd64", (5, 9)));
        assert!(version_at_least("5.10.0-46-amd64", (5, 9)));
        assert!(!version_at_least("5.4.0-150-generic", (5, 9)));
        assert!(version_at_least("5.15.0", (5, 15)));
        assert!(!version_at_least("unknown", (5, 9)));
    }

    #[test]
    fn features_name_their_kernel_version() {
        let features = Features {
            release: "5.10.0-46-amd64".into(),
            verifier: Verifier::Portable,
            coarse_clock: false,
            ringbuf: true,
            mmapable_array: true,
            xdp_link: true,
            tcx: false,
            syncookie: false,
            bloom_filter: false,
            cpumap: true,
            xskmap: true,
        };
        let error = features
            .require(Feature::CoarseClock)
            .expect_err("the clock is missing")
            .to_string();
        assert!(error.contains("bpf_ktime_get_coarse_ns"), "{error}");
        assert!(error.contains("5.11"), "{error}");
        assert!(error.contains("5.10.0-46-amd64"), "{error}");
        assert!(features.require(Feature::Ringbuf).is_ok());
    }
}
