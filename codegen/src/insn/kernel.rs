//! Kernel ABI numbers that generated code uses: helper function ids,
//! context field offsets, program return codes and map types.
//!
//! Every value was checked against the uapi headers (`linux/bpf.h`,
//! `linux/pkt_cls.h`) by compiling a C program that prints the enum
//! constants and `offsetof`s; `tests/insn_kernel.rs` pins the helper ids.

/// Kernel helper functions (`enum bpf_func_id`, `BPF_FUNC_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Helper {
    /// `void *bpf_map_lookup_elem(map, key)`: value pointer or NULL.
    MapLookupElem,
    /// `long bpf_map_update_elem(map, key, value, flags)`.
    MapUpdateElem,
    /// `long bpf_map_delete_elem(map, key)`.
    MapDeleteElem,
    /// `u64 bpf_ktime_get_ns(void)`: CLOCK_MONOTONIC.
    KtimeGetNs,
    /// `long bpf_trace_printk(fmt, fmt_size, ...)`.
    TracePrintk,
    /// `u32 bpf_get_prandom_u32(void)`.
    GetPrandomU32,
    /// `u32 bpf_get_smp_processor_id(void)`.
    GetSmpProcessorId,
    /// `long bpf_tail_call(ctx, prog_array, index)`.
    TailCall,
    /// `long bpf_redirect(ifindex, flags)`.
    Redirect,
    /// `s64 bpf_csum_diff(from, from_size, to, to_size, seed)`.
    CsumDiff,
    /// `long bpf_xdp_adjust_head(xdp_md, delta)`.
    XdpAdjustHead,
    /// `long bpf_redirect_map(map, key, flags)`.
    RedirectMap,
    /// `u64 bpf_ktime_get_boot_ns(void)`: CLOCK_BOOTTIME.
    KtimeGetBootNs,
    /// `long bpf_ringbuf_output(ringbuf, data, size, flags)`.
    RingbufOutput,
    /// `void *bpf_ringbuf_reserve(ringbuf, size, flags)`.
    RingbufReserve,
    /// `void bpf_ringbuf_submit(data, flags)`.
    RingbufSubmit,
    /// `void bpf_ringbuf_discard(data, flags)`.
    RingbufDiscard,
    /// `u64 bpf_ktime_get_coarse_ns(void)`: CLOCK_MONOTONIC_COARSE.
    KtimeGetCoarseNs,
}

impl Helper {
    pub const ALL: [Helper; 18] = [
        Helper::MapLookupElem,
        Helper::MapUpdateElem,
        Helper::MapDeleteElem,
        Helper::KtimeGetNs,
        Helper::TracePrintk,
        Helper::GetPrandomU32,
        Helper::GetSmpProcessorId,
        Helper::TailCall,
        Helper::Redirect,
        Helper::CsumDiff,
        Helper::XdpAdjustHead,
        Helper::RedirectMap,
        Helper::KtimeGetBootNs,
        Helper::RingbufOutput,
        Helper::RingbufReserve,
        Helper::RingbufSubmit,
        Helper::RingbufDiscard,
        Helper::KtimeGetCoarseNs,
    ];

    /// The helper's `BPF_FUNC_*` number (the `imm` of `call`).
    pub const fn id(self) -> u32 {
        match self {
            Helper::MapLookupElem => 1,
            Helper::MapUpdateElem => 2,
            Helper::MapDeleteElem => 3,
            Helper::KtimeGetNs => 5,
            Helper::TracePrintk => 6,
            Helper::GetPrandomU32 => 7,
            Helper::GetSmpProcessorId => 8,
            Helper::TailCall => 12,
            Helper::Redirect => 23,
            Helper::CsumDiff => 28,
            Helper::XdpAdjustHead => 44,
            Helper::RedirectMap => 51,
            Helper::KtimeGetBootNs => 125,
            Helper::RingbufOutput => 130,
            Helper::RingbufReserve => 131,
            Helper::RingbufSubmit => 132,
            Helper::RingbufDiscard => 133,
            Helper::KtimeGetCoarseNs => 160,
        }
    }

    /// The helper with number `id`, if it is one we name.
    pub fn from_id(id: u32) -> Option<Helper> {
        Helper::ALL.into_iter().find(|helper| helper.id() == id)
    }

    /// The kernel's name for the helper, as bpftool prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Helper::MapLookupElem => "bpf_map_lookup_elem",
            Helper::MapUpdateElem => "bpf_map_update_elem",
            Helper::MapDeleteElem => "bpf_map_delete_elem",
            Helper::KtimeGetNs => "bpf_ktime_get_ns",
            Helper::TracePrintk => "bpf_trace_printk",
            Helper::GetPrandomU32 => "bpf_get_prandom_u32",
            Helper::GetSmpProcessorId => "bpf_get_smp_processor_id",
            Helper::TailCall => "bpf_tail_call",
            Helper::Redirect => "bpf_redirect",
            Helper::CsumDiff => "bpf_csum_diff",
            Helper::XdpAdjustHead => "bpf_xdp_adjust_head",
            Helper::RedirectMap => "bpf_redirect_map",
            Helper::KtimeGetBootNs => "bpf_ktime_get_boot_ns",
            Helper::RingbufOutput => "bpf_ringbuf_output",
            Helper::RingbufReserve => "bpf_ringbuf_reserve",
            Helper::RingbufSubmit => "bpf_ringbuf_submit",
            Helper::RingbufDiscard => "bpf_ringbuf_discard",
            Helper::KtimeGetCoarseNs => "bpf_ktime_get_coarse_ns",
        }
    }
}

/// Field offsets of `struct xdp_md` (the XDP program context, r1 at entry).
/// Loads are 32-bit; the verifier rewrites them to the real pointers.
pub mod xdp_md {
    pub const DATA: i16 = 0;
    pub const DATA_END: i16 = 4;
    pub const DATA_META: i16 = 8;
    pub const INGRESS_IFINDEX: i16 = 12;
    pub const RX_QUEUE_INDEX: i16 = 16;
    pub const EGRESS_IFINDEX: i16 = 20;
}

/// Field offsets of `struct __sk_buff` (the tc program context).
pub mod sk_buff {
    pub const LEN: i16 = 0;
    pub const MARK: i16 = 8;
    pub const PROTOCOL: i16 = 16;
    pub const INGRESS_IFINDEX: i16 = 36;
    pub const IFINDEX: i16 = 40;
    pub const DATA: i16 = 76;
    pub const DATA_END: i16 = 80;
    pub const DATA_META: i16 = 140;
}

/// XDP program return codes (`enum xdp_action`).
pub mod xdp_action {
    pub const ABORTED: i32 = 0;
    pub const DROP: i32 = 1;
    pub const PASS: i32 = 2;
    pub const TX: i32 = 3;
    pub const REDIRECT: i32 = 4;
}

/// tc classifier return codes (`TC_ACT_*` in `linux/pkt_cls.h`).
pub mod tc_action {
    pub const OK: i32 = 0;
    pub const SHOT: i32 = 2;
}

/// Map types (`enum bpf_map_type`), as written into BTF map definitions:
/// the one place these numbers are spelled (codegen, runtime and CLI use
/// these names).
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PERCPU_HASH: u32 = 5;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const LRU_HASH: u32 = 9;
    pub const LRU_PERCPU_HASH: u32 = 10;
    pub const LPM_TRIE: u32 = 11;
    pub const CPUMAP: u32 = 16;
    pub const XSKMAP: u32 = 17;
    pub const RINGBUF: u32 = 27;
    pub const BLOOM_FILTER: u32 = 30;
}

/// Map creation flags used by our maps.
pub mod map_flags {
    /// `BPF_F_NO_PREALLOC`: required for `LPM_TRIE`.
    pub const NO_PREALLOC: u32 = 1;
    /// `BPF_F_MMAPABLE`: an array the runtime fills through its memory
    /// mapping (the DIR-24 slot arrays, `layout::dir24`).
    pub const MMAPABLE: u32 = 1 << 10;
}

/// `flags` argument of `bpf_map_update_elem`.
pub mod update_flags {
    /// `BPF_ANY`: create or overwrite.
    pub const ANY: i32 = 0;
    /// `BPF_NOEXIST`: create only.
    pub const NOEXIST: i32 = 1;
    /// `BPF_EXIST`: overwrite only.
    pub const EXIST: i32 = 2;
}
