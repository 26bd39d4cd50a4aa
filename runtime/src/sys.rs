//! Raw `bpf(2)` commands that aya does not expose: program test runs,
//! batched and single map updates, lookups, key iteration, object info,
//! and the minimal program load the kernel probe uses.
//!
//! Each command has its own `#[repr(C)]` slice of `union bpf_attr`; the
//! kernel accepts an attribute shorter than its union (the rest counts as
//! zero). Failures come back as [`io::Error`] with the errno; callers turn
//! them into [`RuntimeError`](crate::RuntimeError)s that name the map or
//! program.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `ENOTSUPP` (kernel-internal, leaks to user space from the batch ops).
pub const ENOTSUPP: i32 = 524;

/// `BPF_ANY`: create or overwrite.
const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only, `EEXIST` when the key is there.
const BPF_NOEXIST: u64 = 1;

fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// Issues one `bpf(cmd, attr, sizeof attr)` call.
///
/// # Safety
/// `attr` must be the layout the kernel expects for `cmd`, and every
/// pointer in it must be valid for the sizes it states.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: forwarded from the caller; the size is that of `T`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one `BPF_PROG_TEST_RUN` reports.
pub struct TestRunResult {
    pub retval: u32,
    /// Mean nanoseconds per run.
    pub duration_ns: u32,
    /// The bytes of the packet after the program (`data_out`).
    pub data_out: Vec<u8>,
}

/// Runs `prog` on `data` `repeat` times (`BPF_PROG_TEST_RUN`).
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> io::Result<TestRunResult> {
    // Room for programs that grow the packet (adjust_head/tail).
    let mut out = vec![0u8; data.len() + 512];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: ptr(data.as_ptr()),
        data_out: ptr(out.as_mut_ptr()),
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: data and out outlive the call and have the stated sizes.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr)? };
    out.truncate((attr.data_size_out as usize).min(out.len()));
    Ok(TestRunResult {
        retval: attr.retval,
        duration_ns: attr.duration,
        data_out: out,
    })
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: each repetition becomes a real frame.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `struct xdp_md` as a test run's `ctx_in`: only `data_end` and
/// `ingress_ifindex` are set.
#[repr(C)]
#[derive(Default)]
struct XdpMdCtx {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Runs the XDP program `prog` on `frame` `repeat` times in live-frame
/// mode (Linux 5.18), as if received on `ifindex`: a verdict of `XDP_TX`
/// transmits a real frame out of that interface (the bench's traffic
/// generator), `batch_size` frames per kernel batch.
pub fn prog_test_run_live_frames(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> io::Result<()> {
    let ctx = XdpMdCtx {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMdCtx::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: ptr(frame.as_ptr()),
        repeat,
        ctx_size_in: size_of::<XdpMdCtx>() as u32,
        ctx_in: ptr(&ctx as *const XdpMdCtx),
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..TestRunAttr::default()
    };
    // SAFETY: frame and ctx outlive the call and have the stated sizes.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr)? };
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

pub fn map_update_elem(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: ptr(key.as_ptr()),
        value: ptr(value.as_ptr()),
        flags: BPF_ANY,
        ..MapElemAttr::default()
    };
    // SAFETY: the caller checked key and value against the map's sizes.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

/// Creates `key` only if absent: `Ok(false)` when the key was already
/// there (nothing written).
pub fn map_insert_elem(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<bool> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: ptr(key.as_ptr()),
        value: ptr(value.as_ptr()),
        flags: BPF_NOEXIST,
        ..MapElemAttr::default()
    };
    // SAFETY: the caller checked key and value against the map's sizes.
    match unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Looks `key` up into `value` (sized by the caller: for per-CPU maps,
/// one 8-byte-aligned slot per possible CPU). `Ok(false)`: no such key.
pub fn map_lookup_elem(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: ptr(key.as_ptr()),
        value: ptr(value.as_mut_ptr()),
        ..MapElemAttr::default()
    };
    // SAFETY: the caller sized key and value for the map.
    match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn map_delete_elem(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: ptr(key.as_ptr()),
        ..MapElemAttr::default()
    };
    // SAFETY: the caller sized key for the map.
    match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key after `key` (the first key when `key` is `None`), written to
/// `next`. `Ok(false)`: no more keys.
pub fn map_get_next_key(
    map: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> io::Result<bool> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.map_or(0, |k| ptr(k.as_ptr())),
        value: ptr(next.as_mut_ptr()),
        ..MapElemAttr::default()
    };
    // SAFETY: the caller sized key and next for the map.
    match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `BPF_MAP_UPDATE_BATCH` of `count` entries laid end to end in `keys` and
/// `values`. On error, also returns how many entries the kernel applied.
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> Result<(), (io::Error, u32)> {
    let mut attr = BatchAttr {
        keys: ptr(keys.as_ptr()),
        values: ptr(values.as_ptr()),
        count,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: BPF_ANY,
        ..BatchAttr::default()
    };
    // SAFETY: keys and values hold `count` entries of the map's sizes.
    match unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) => Err((e, attr.count)),
    }
}

/// `BPF_MAP_DELETE_BATCH` of `count` keys laid end to end. On error, also
/// returns how many keys the kernel deleted (a missing key is an error,
/// `ENOENT`, and stops the batch).
pub fn map_delete_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    count: u32,
) -> Result<(), (io::Error, u32)> {
    let mut attr = BatchAttr {
        keys: ptr(keys.as_ptr()),
        count,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: keys holds `count` keys of the map's key size.
    match unsafe { bpf(BPF_MAP_DELETE_BATCH, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) => Err((e, attr.count)),
    }
}

/// One `BPF_MAP_LOOKUP_BATCH` step: reads up to `count` entries into
/// `keys`/`values` (room for `count` of each) after the position in
/// `cursor` (`None`: from the start; the kernel writes the next position
/// into `next`, which must be at least a key long, 8 bytes for
/// hash maps). Returns how many entries were read and whether the map is
/// exhausted.
pub fn map_lookup_batch(
    map: BorrowedFd<'_>,
    cursor: Option<&[u8]>,
    next: &mut [u8],
    keys: &mut [u8],
    values: &mut [u8],
    count: u32,
) -> io::Result<(u32, bool)> {
    let mut attr = BatchAttr {
        in_batch: cursor.map_or(0, |c| ptr(c.as_ptr())),
        out_batch: ptr(next.as_mut_ptr()),
        keys: ptr(keys.as_mut_ptr()),
        values: ptr(values.as_mut_ptr()),
        count,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: the caller sized every buffer for `count` entries.
    match unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
        Ok(_) => Ok((attr.count, false)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((attr.count, true)),
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_map_info` (the fields we read).
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
}

pub fn map_info(map: BorrowedFd<'_>) -> io::Result<MapInfo> {
    let mut info = MapInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: map.as_raw_fd() as u32,
        info_len: size_of::<MapInfo>() as u32,
        info: ptr(&raw mut info),
    };
    // SAFETY: info is a prefix of bpf_map_info of the stated length.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    Ok(info)
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// Creates a throw-away array map (the probe's first step).
pub fn create_probe_map() -> io::Result<OwnedFd> {
    create_map(patronus_codegen::insn::kernel::map_type::ARRAY, 4, 4, 1, 0)
}

/// Creates an anonymous map (the feature probes).
pub fn create_map(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
    };
    // SAFETY: a plain map-create attribute without pointers.
    let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr)? };
    // SAFETY: the kernel returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Loads `insns` (encoded) as a program of `prog_type` without a log.
pub fn load_probe_program(prog_type: u32, insns: &[u8]) -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: (insns.len() / 8) as u32,
        insns: ptr(insns.as_ptr()),
        license: ptr(license.as_ptr()),
        ..ProgLoadAttr::default()
    };
    // SAFETY: insns and license outlive the call.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr)? };
    // SAFETY: the kernel returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Number of possible CPUs: per-CPU map values have one slot for each.
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /sys/devices/system/cpu/possible: {text:?}"),
        )
    })
}

/// Counts the CPUs in a list like `0-3,5,7-8`.
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut count = 0;
    for part in text.split(',') {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: usize = lo.parse().ok()?;
                let hi: usize = hi.parse().ok()?;
                count += hi.checked_sub(lo)? + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                count += 1;
            }
        }
    }
    (count > 0).then_some(count)
}

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `enum bpf_attach_type` values of the links we create.
pub mod attach_type {
    pub const XDP: u32 = 37;
    pub const TCX_EGRESS: u32 = 47;
}

/// `XDP_FLAGS_*` of an XDP link.
pub mod xdp_flags {
    pub const SKB_MODE: u32 = 1 << 1;
    pub const DRV_MODE: u32 = 1 << 2;
}

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

fn c_path(path: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Pins a map, program or link at `path` on a bpffs (`BPF_OBJ_PIN`).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> io::Result<()> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: ptr(path.as_ptr()),
        bpf_fd: fd.as_raw_fd() as u32,
        ..ObjAttr::default()
    };
    // SAFETY: path is a NUL-terminated string that outlives the call.
    unsafe { bpf(BPF_OBJ_PIN, &mut attr) }.map(drop)
}

/// Opens the object pinned at `path` (`BPF_OBJ_GET`).
pub fn obj_get(path: &std::path::Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: ptr(path.as_ptr()),
        ..ObjAttr::default()
    };
    // SAFETY: path is a NUL-terminated string that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr)? };
    // SAFETY: the kernel returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `BPF_F_RDONLY`: a descriptor that can read a map but not change it.
const BPF_F_RDONLY: u32 = 1 << 3;

/// Opens the map pinned at `path` read-only (`BPF_OBJ_GET` with
/// `BPF_F_RDONLY`): for readers such as `status` and `stats`. Links and
/// programs refuse the flag.
pub fn obj_get_readonly(path: &std::path::Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: ptr(path.as_ptr()),
        file_flags: BPF_F_RDONLY,
        ..ObjAttr::default()
    };
    // SAFETY: path is a NUL-terminated string that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr)? };
    // SAFETY: the kernel returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    // The per-type union (tcx: relative fd/id, expected revision): zero.
    _rest: [u64; 4],
}

/// Attaches `prog` to interface `ifindex` as a link (`BPF_LINK_CREATE`):
/// the attachment lives as long as the link's descriptor or pin.
pub fn link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
        ..LinkCreateAttr::default()
    };
    // SAFETY: a link-create attribute without pointers.
    let fd = unsafe { bpf(BPF_LINK_CREATE, &mut attr)? };
    // SAFETY: the kernel returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Swaps the program of `link` for `prog` in one step (`BPF_LINK_UPDATE`):
/// packets see either the old or the new program, never none.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..LinkUpdateAttr::default()
    };
    // SAFETY: a link-update attribute without pointers.
    unsafe { bpf(BPF_LINK_UPDATE, &mut attr) }.map(drop)
}

/// The head of `struct bpf_link_info` plus the XDP/tcx `ifindex`.
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    _pad: u32,
    /// `xdp.ifindex` / `tcx.ifindex` (the first word of the union).
    pub ifindex: u32,
    _rest: [u32; 7],
}

pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = LinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: size_of::<LinkInfo>() as u32,
        info: ptr(&raw mut info),
    };
    // SAFETY: info is a prefix of bpf_link_info of the stated length.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    Ok(info)
}

/// The kernel's id of a loaded program.
pub fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    // `bpf_prog_info` starts with `type` and `id`.
    let mut info = [0u32; 2];
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: 8,
        info: ptr(info.as_mut_ptr()),
    };
    // SAFETY: info has the stated length.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    Ok(info[1])
}

/// Opens a loaded program by its kernel id (`BPF_PROG_GET_FD_BY_ID`).
pub fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    // `prog_id`, `next_id`, `open_flags`.
    let mut attr = [id, 0u32, 0u32];
    // SAFETY: an attribute without pointers.
    let fd = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)? };
    // SAFETY: the kernel returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The ids of the maps a loaded program uses (`bpf_prog_info.map_ids`):
/// how a reader tells a live map from a stale pin.
pub fn prog_map_ids(prog: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    // `bpf_prog_info` up to `map_ids`: nr_map_ids at byte 52, the
    // pointer at 56.
    let mut info = [0u8; 64];
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: 64,
        info: ptr(info.as_mut_ptr()),
    };
    // SAFETY: info has the stated length; map_ids is null (count only).
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    let count = u32::from_ne_bytes([info[52], info[53], info[54], info[55]]);
    let mut ids = vec![0u32; count as usize];
    let mut info = [0u8; 64];
    info[52..56].copy_from_slice(&count.to_ne_bytes());
    info[56..64].copy_from_slice(&ptr(ids.as_mut_ptr()).to_ne_bytes());
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: 64,
        info: ptr(info.as_mut_ptr()),
    };
    // SAFETY: map_ids points at `count` u32s that outlive the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    let written = u32::from_ne_bytes([info[52], info[53], info[54], info[55]]);
    ids.truncate(written.min(count) as usize);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn attribute_layouts_match_the_kernel() {
        // Sizes of the union members in linux/bpf.h (6.x).
        assert_eq!(size_of::<TestRunAttr>(), 80);
        assert_eq!(size_of::<BatchAttr>(), 56);
        assert_eq!(size_of::<MapElemAttr>(), 32);
        assert_eq!(size_of::<InfoAttr>(), 16);
    }
}
