//! [`Loaded`]: one object in the kernel — its maps created and filled,
//! its XDP and tc programs verified — plus test runs, counters and state
//! resets on it.
//!
//! Loading goes through aya (ELF parsing, relocation, BTF, map creation,
//! program load with verifier logs); map filling, test runs and map reads
//! use the raw commands in [`crate::sys`], because aya has no batched
//! updates or test runs and we want byte-level maps whose layout codegen
//! owns.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aya::maps::{Map, MapData};
use aya::programs::{Program, ProgramError};
use aya::{EbpfError, EbpfLoader};
use patronus_codegen::elf::ProgramKind;

use crate::batch::{BATCH_ENTRIES, WriteError, batch_refused, update_batched};
use crate::error::{RuntimeError, annotation, failing_insn, log_tail};
use crate::sys;

/// Map types (`enum bpf_map_type`) the runtime fills, clears or reads.
use patronus_codegen::insn::kernel::map_type;

/// `bpf_prog_type` numbers of the probe program.
const PROG_TYPE_XDP: u32 = 6;

/// What to load: the ELF, the initial contents of its maps, and the
/// listings that explain a verifier rejection.
#[derive(Clone, Debug, Default)]
pub struct Image<'a> {
    pub elf: &'a [u8],
    /// Maps to fill after creation; maps not named here start empty (and
    /// are the ones [`Loaded::reset_state`] clears).
    pub maps: Vec<MapFill<'a>>,
    /// Per program kind, the bpftool-style listing with `; comment` block
    /// headers (as `insn::Program::listing` prints it).
    pub listings: Vec<(ProgramKind, &'a str)>,
}

/// The initial entries of one map: key and value bytes exactly as the map
/// stores them (codegen's ABI). For per-CPU maps a value of the map's
/// value size is written to every CPU.
#[derive(Clone, Debug)]
pub struct MapFill<'a> {
    pub name: &'a str,
    pub entries: Vec<(&'a [u8], &'a [u8])>,
}

/// A map's definition as the compiler planned it: what the ELF must
/// declare (see [`Loaded::load_checked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapShape {
    /// The shape the compiler planned for `map`.
    pub fn of(map: &patronus_codegen::MapDef) -> MapShape {
        MapShape {
            map_type: map.map_type,
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries,
            flags: map.flags,
        }
    }

    /// No map's shape (a map whose info cannot be read).
    pub const UNKNOWN: MapShape = MapShape {
        map_type: 0,
        key_size: 0,
        value_size: 0,
        max_entries: 0,
        flags: 0,
    };

    /// The shape of a map the kernel already has.
    pub fn of_info(info: &sys::MapInfo) -> MapShape {
        MapShape {
            map_type: info.map_type,
            key_size: info.key_size,
            value_size: info.value_size,
            max_entries: info.max_entries,
            flags: info.map_flags,
        }
    }
}

/// Without shapes to compare with, the most kernel memory an object's
/// maps may ask for (a rough upper bound of what creation preallocates).
pub const MAX_UNCHECKED_MAP_BYTES: u64 = 4 << 30;

/// Compares the parsed object's maps with the expected shapes, or bounds
/// their size when no shapes are given.
fn check_map_shapes(
    parsed: &aya_obj::Object,
    shapes: &[(&str, MapShape)],
) -> Result<(), RuntimeError> {
    let shapes: HashMap<&str, MapShape> = shapes.iter().copied().collect();
    let mut total: u64 = 0;
    for (name, map) in &parsed.maps {
        let found = MapShape {
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
        };
        if shapes.is_empty() {
            let entry = u64::from(found.key_size) + u64::from(found.value_size) + 64;
            total = total.saturating_add(entry.saturating_mul(u64::from(found.max_entries)));
            continue;
        }
        match shapes.get(name.as_str()) {
            Some(expected) if *expected == found => {}
            Some(expected) => {
                return Err(RuntimeError::BadObject {
                    message: format!(
                        "map `{name}` is declared as {found:?}, the compiler planned {expected:?}"
                    ),
                });
            }
            None => {
                return Err(RuntimeError::BadObject {
                    message: format!("map `{name}` is not one the compiler planned"),
                });
            }
        }
    }
    if total > MAX_UNCHECKED_MAP_BYTES {
        return Err(RuntimeError::BadObject {
            message: format!(
                "the maps would take about {} MiB of kernel memory, more than the {} MiB allowed without map shapes",
                total >> 20,
                MAX_UNCHECKED_MAP_BYTES >> 20
            ),
        });
    }
    Ok(())
}

/// How a loaded program did in the verifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// Instructions the verifier processed (`bpf_prog_info.verified_insns`):
    /// the number the 1M complexity limit applies to.
    pub verified_insns: Option<u32>,
}

/// One `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (`XDP_*` or `TC_ACT_*`).
    pub retval: u32,
    /// Mean time per run as the kernel measured it.
    pub duration: Duration,
    /// The frame after the program ran.
    pub data_out: Vec<u8>,
}

struct MapHandle {
    fd: OwnedFd,
    info: sys::MapInfo,
    /// Filled from a non-empty image: not cleared by `reset_state`.
    filled: bool,
}

struct ProgramHandle {
    name: String,
    fd: OwnedFd,
    stats: ProgramStats,
}

/// A loaded object: maps created and filled, programs verified. Dropping
/// it closes every descriptor, which unloads programs and maps that are
/// not attached or pinned.
pub struct Loaded {
    ebpf: aya::Ebpf,
    maps: HashMap<String, MapHandle>,
    xdp: Option<ProgramHandle>,
    tc: Option<ProgramHandle>,
    cpus: usize,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("maps", &self.maps.keys().collect::<Vec<_>>())
            .field("xdp", &self.xdp.as_ref().map(|p| &p.name))
            .field("tc", &self.tc.as_ref().map(|p| &p.name))
            .finish()
    }
}

fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => Some(d),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn is_percpu(map_type: u32) -> bool {
    matches!(
        map_type,
        map_type::PERCPU_HASH | map_type::PERCPU_ARRAY | map_type::LRU_PERCPU_HASH
    )
}

fn is_array(map_type: u32) -> bool {
    matches!(map_type, map_type::ARRAY | map_type::PERCPU_ARRAY)
}

fn is_hash_like(map_type: u32) -> bool {
    matches!(
        map_type,
        map_type::HASH
            | map_type::LRU_HASH
            | map_type::PERCPU_HASH
            | map_type::LRU_PERCPU_HASH
            | map_type::LPM_TRIE
    )
}

/// A private pin directory for objects whose maps pin by name: the maps
/// must be fresh (aya would reuse a map already pinned under the same
/// path), and pins are removed right after loading, so pinning is off
/// unless the caller pins explicitly.
struct PinDir(PathBuf);

impl PinDir {
    fn create() -> Result<PinDir, RuntimeError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/patronus-load-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).map_err(|error| RuntimeError::Io {
            context: "creating a pin directory under /sys/fs/bpf (is bpffs mounted?)",
            error,
        })?;
        Ok(PinDir(path))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Unpinning leaves the maps alive: the loader holds their fds.
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

thread_local! {
    /// One loader per thread: `EbpfLoader::new` parses the kernel's BTF
    /// (megabytes), which our objects never need (no CO-RE relocations),
    /// so it is built once with BTF turned off. The pin directory is set
    /// before each load that pins; without pinned maps it is not read.
    static LOADER: std::cell::RefCell<EbpfLoader<'static>> = {
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        std::cell::RefCell::new(loader)
    };
}

fn bad_object(error: EbpfError) -> RuntimeError {
    match error {
        EbpfError::MapError(e) => RuntimeError::MapCreate {
            message: e.to_string(),
        },
        other => {
            // The source chain carries the detail (e.g. which section).
            let mut message = other.to_string();
            let mut source = std::error::Error::source(&other);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            RuntimeError::BadObject { message }
        }
    }
}

fn dup(fd: BorrowedFd<'_>, context: &'static str) -> Result<OwnedFd, RuntimeError> {
    fd.try_clone_to_owned()
        .map_err(|error| RuntimeError::Io { context, error })
}

impl Loaded {
    /// Loads a compiled policy: [`Loaded::load_checked`] with the maps
    /// the compiler planned.
    pub fn load_object(object: &patronus_codegen::Object) -> Result<Loaded, RuntimeError> {
        Loaded::load_object_reusing(object, &[])
    }

    /// Loads `image`, whose maps must have exactly these definitions
    /// (every map of the ELF named, none other), checked before the kernel
    /// creates anything: a hand-edited object cannot ask for other maps
    /// (a flipped `max_entries` could exhaust the machine's memory).
    pub fn load_checked(
        image: &Image<'_>,
        shapes: &[(&str, MapShape)],
    ) -> Result<Loaded, RuntimeError> {
        Loaded::load_inner(image, shapes, &[])
    }

    /// Loads `image`: creates the maps, verifies and loads the XDP and tc
    /// programs, then fills the maps from their images. Without expected
    /// map shapes, objects whose maps would take more than
    /// [`MAX_UNCHECKED_MAP_BYTES`] are refused.
    pub fn load(image: &Image<'_>) -> Result<Loaded, RuntimeError> {
        Loaded::load_inner(image, &[], &[])
    }

    /// [`Loaded::load_object`], except that each `(name, path)` of `reuse`
    /// is the map pinned at `path` instead of a new one (state that must
    /// survive a policy replacement). The caller checks that the pinned
    /// map has the planned shape: the loader does not.
    pub fn load_object_reusing(
        object: &patronus_codegen::Object,
        reuse: &[(&str, &Path)],
    ) -> Result<Loaded, RuntimeError> {
        let shapes: Vec<(&str, MapShape)> = object
            .maps
            .iter()
            .map(|map| (map.name.as_str(), MapShape::of(map)))
            .collect();
        Loaded::load_inner(&Image::from(object), &shapes, reuse)
    }

    fn load_inner(
        image: &Image<'_>,
        shapes: &[(&str, MapShape)],
        reuse: &[(&str, &Path)],
    ) -> Result<Loaded, RuntimeError> {
        // Parse once on our side: a clear error for corrupt objects before
        // any kernel work, and whether a pin directory is needed.
        let parsed = parse_object(image.elf)?;
        check_map_shapes(&parsed, shapes)?;
        // A missing helper or map type is named with the kernel that has
        // it, rather than left to the verifier's "unknown func".
        if !crate::features::needs(&parsed).is_empty() {
            crate::features::current().check(&parsed)?;
        }
        let pins = parsed
            .maps
            .values()
            .any(|m| !matches!(m.pinning(), aya_obj::maps::PinningType::None));
        let pin_dir = if pins { Some(PinDir::create()?) } else { None };

        let loaded = if reuse.is_empty() {
            LOADER.with(|loader| {
                let mut loader = loader.borrow_mut();
                if let Some(dir) = &pin_dir {
                    loader.default_map_pin_directory(&dir.0);
                }
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.load(image.elf)))
            })
        } else {
            // A loader of its own: map paths would stick to the shared one.
            let mut loader = EbpfLoader::new();
            loader.btf(None);
            if let Some(dir) = &pin_dir {
                loader.default_map_pin_directory(&dir.0);
            }
            for (name, path) in reuse {
                loader.map_pin_path(name, *path);
            }
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.load(image.elf)))
        };
        let mut ebpf = loaded
            .map_err(|_| RuntimeError::BadObject {
                message: "the loader failed on malformed input".into(),
            })?
            .map_err(bad_object)?;
        drop(pin_dir);

        let mut xdp = None;
        let mut tc = None;
        for (name, program) in ebpf.programs_mut() {
            let (kind, result) = match program {
                Program::Xdp(p) => (ProgramKind::Xdp, p.load()),
                Program::SchedClassifier(p) => (ProgramKind::Tc, p.load()),
                other => {
                    return Err(RuntimeError::BadObject {
                        message: format!(
                            "program `{name}` has type {:?}; only XDP and tc classifier programs are supported",
                            other.prog_type()
                        ),
                    });
                }
            };
            result.map_err(|e| verifier_error(kind, name, e, image))?;
            let (fd, info) = match program {
                Program::Xdp(p) => (p.fd(), p.info()),
                Program::SchedClassifier(p) => (p.fd(), p.info()),
                _ => continue,
            };
            let fd = fd.map_err(|e| RuntimeError::Io {
                context: "getting the program's descriptor",
                error: io::Error::other(e.to_string()),
            })?;
            let handle = ProgramHandle {
                name: name.to_owned(),
                fd: dup(fd.as_fd(), "duplicating a program descriptor")?,
                stats: ProgramStats {
                    verified_insns: info.ok().and_then(|i| i.verified_instruction_count()),
                },
            };
            let slot = match kind {
                ProgramKind::Xdp => &mut xdp,
                ProgramKind::Tc => &mut tc,
            };
            *slot = Some(handle);
        }

        let mut maps = HashMap::new();
        for (name, map) in ebpf.maps() {
            let Some(data) = map_data(map) else { continue };
            let fd = dup(data.fd().as_fd(), "duplicating a map descriptor")?;
            let info = sys::map_info(fd.as_fd()).map_err(|error| RuntimeError::Map {
                map: name.to_owned(),
                op: "reading map info",
                error,
            })?;
            maps.insert(
                name.to_owned(),
                MapHandle {
                    fd,
                    info,
                    filled: false,
                },
            );
        }
        let cpus = sys::possible_cpus().map_err(|error| RuntimeError::Io {
            context: "counting possible CPUs",
            error,
        })?;
        let mut loaded = Loaded {
            ebpf,
            maps,
            xdp,
            tc,
            cpus,
        };
        for fill in &image.maps {
            loaded.fill(fill)?;
        }
        Ok(loaded)
    }

    /// Writes `fill`'s entries into its map: batched where the kernel
    /// supports it for the map type (LPM tries since Linux 5.x through the
    /// generic batch ops: the kernel still inserts one by one, but one
    /// syscall per [`BATCH_ENTRIES`] instead of per entry), one by one
    /// when the first batch is refused.
    fn fill(&mut self, fill: &MapFill<'_>) -> Result<(), RuntimeError> {
        let cpus = self.cpus;
        let handle = self
            .maps
            .get_mut(fill.name)
            .ok_or_else(|| RuntimeError::UnknownMap {
                map: fill.name.to_owned(),
            })?;
        if fill.entries.is_empty() {
            return Ok(());
        }
        handle.filled = true;
        let info = handle.info;
        if crate::deploy::roles::filled_through_mapping(info.map_flags) {
            return crate::mapped::fill_runs(fill.name, handle.fd.as_fd(), &info, &fill.entries);
        }
        if fill.entries.len() > info.max_entries as usize {
            return Err(RuntimeError::TooManyEntries {
                map: fill.name.to_owned(),
                entries: fill.entries.len(),
                max_entries: info.max_entries,
            });
        }
        let key_size = info.key_size as usize;
        let value_size = info.value_size as usize;
        let percpu = is_percpu(info.map_type);
        let slot = value_size.next_multiple_of(8);
        for (i, (key, value)) in fill.entries.iter().enumerate() {
            if key.len() != key_size {
                return Err(RuntimeError::EntrySize {
                    map: fill.name.to_owned(),
                    entry: i,
                    what: "the key",
                    expected: key_size,
                    got: key.len(),
                });
            }
            if value.len() != value_size {
                return Err(RuntimeError::EntrySize {
                    map: fill.name.to_owned(),
                    entry: i,
                    what: "the value",
                    expected: value_size,
                    got: value.len(),
                });
            }
        }
        // Per-CPU values: the same value in every CPU's 8-aligned slot.
        let stored_value = |value: &[u8], out: &mut Vec<u8>| {
            if percpu {
                for _ in 0..cpus {
                    out.extend_from_slice(value);
                    out.resize(out.len() + slot - value_size, 0);
                }
            } else {
                out.extend_from_slice(value);
            }
        };
        let fd = handle.fd.as_fd();
        update_batched(fd, &fill.entries, &stored_value, None).map_err(|failed| {
            let WriteError {
                error,
                done,
                batched,
            } = failed;
            if batched {
                RuntimeError::Map {
                    map: fill.name.to_owned(),
                    op: "batched update",
                    error: io::Error::new(error.kind(), format!("{error} (at entry {done})")),
                }
            } else {
                RuntimeError::Map {
                    map: fill.name.to_owned(),
                    op: "update",
                    error,
                }
            }
        })
    }

    /// Runs the XDP program once on `frame`.
    pub fn run_xdp(&self, frame: &[u8]) -> Result<TestRun, RuntimeError> {
        self.run(ProgramKind::Xdp, frame, 1)
    }

    /// Runs the tc egress program once on `frame`.
    pub fn run_tc(&self, frame: &[u8]) -> Result<TestRun, RuntimeError> {
        self.run(ProgramKind::Tc, frame, 1)
    }

    /// Runs a program `repeat` times on `frame` (the kernel's loop, for
    /// timing); the duration is the mean per run. State persists between
    /// repetitions as for real traffic.
    pub fn run(
        &self,
        kind: ProgramKind,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRun, RuntimeError> {
        let program = self.program(kind)?;
        let result = sys::prog_test_run(program.fd.as_fd(), frame, repeat).map_err(|error| {
            RuntimeError::TestRun {
                kind,
                frame_len: frame.len(),
                error,
            }
        })?;
        Ok(TestRun {
            retval: result.retval,
            duration: Duration::from_nanos(u64::from(result.duration_ns)),
            data_out: result.data_out,
        })
    }

    fn program(&self, kind: ProgramKind) -> Result<&ProgramHandle, RuntimeError> {
        match kind {
            ProgramKind::Xdp => self.xdp.as_ref(),
            ProgramKind::Tc => self.tc.as_ref(),
        }
        .ok_or(RuntimeError::NoProgram { kind })
    }

    pub fn has_program(&self, kind: ProgramKind) -> bool {
        self.program(kind).is_ok()
    }

    /// The program's symbol name in the object.
    pub fn program_name(&self, kind: ProgramKind) -> Option<&str> {
        self.program(kind).ok().map(|p| p.name.as_str())
    }

    /// Verifier statistics of a loaded program.
    pub fn stats(&self, kind: ProgramKind) -> Option<ProgramStats> {
        self.program(kind).ok().map(|p| p.stats)
    }

    /// The program's descriptor (for attaching with other tools).
    pub fn program_fd(&self, kind: ProgramKind) -> Option<BorrowedFd<'_>> {
        self.program(kind).ok().map(|p| p.fd.as_fd())
    }

    /// aya's handle on the XDP program, to attach it to an interface.
    pub fn xdp_mut(&mut self) -> Option<&mut aya::programs::Xdp> {
        let name = self.xdp.as_ref()?.name.clone();
        match self.ebpf.program_mut(&name)? {
            Program::Xdp(p) => Some(p),
            _ => None,
        }
    }

    /// aya's handle on the tc program, to attach it to an interface.
    pub fn tc_mut(&mut self) -> Option<&mut aya::programs::SchedClassifier> {
        let name = self.tc.as_ref()?.name.clone();
        match self.ebpf.program_mut(&name)? {
            Program::SchedClassifier(p) => Some(p),
            _ => None,
        }
    }

    /// Names of every map of the object.
    pub fn map_names(&self) -> impl Iterator<Item = &str> {
        self.maps.keys().map(String::as_str)
    }

    pub fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.maps.get(name).map(|m| m.fd.as_fd())
    }

    fn map(&self, name: &str) -> Result<&MapHandle, RuntimeError> {
        self.maps.get(name).ok_or_else(|| RuntimeError::UnknownMap {
            map: name.to_owned(),
        })
    }

    /// The value stored under `key`, per CPU for per-CPU maps (each
    /// `value_size` bytes); `None` if absent.
    pub fn lookup(&self, name: &str, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, RuntimeError> {
        let map = self.map(name)?;
        let value_size = map.info.value_size as usize;
        let (slots, slot) = if is_percpu(map.info.map_type) {
            (self.cpus, value_size.next_multiple_of(8))
        } else {
            (1, value_size)
        };
        if key.len() != map.info.key_size as usize {
            return Err(RuntimeError::EntrySize {
                map: name.to_owned(),
                entry: 0,
                what: "the key",
                expected: map.info.key_size as usize,
                got: key.len(),
            });
        }
        let mut buf = vec![0u8; slots * slot];
        let found = sys::map_lookup_elem(map.fd.as_fd(), key, &mut buf).map_err(|error| {
            RuntimeError::Map {
                map: name.to_owned(),
                op: "lookup",
                error,
            }
        })?;
        Ok(found.then(|| {
            buf.chunks(slot)
                .map(|chunk| chunk[..value_size].to_vec())
                .collect()
        }))
    }

    /// An array of u64 counters (e.g. the stats map): for each index, the
    /// value's little-endian u64 words summed over CPUs.
    pub fn read_counters(&self, name: &str) -> Result<Vec<Vec<u64>>, RuntimeError> {
        let map = self.map(name)?;
        if !is_array(map.info.map_type) || map.info.value_size % 8 != 0 {
            return Err(RuntimeError::Map {
                map: name.to_owned(),
                op: "reading counters",
                error: io::Error::new(io::ErrorKind::InvalidInput, "not an array of u64 counters"),
            });
        }
        let words = map.info.value_size as usize / 8;
        let mut out = Vec::with_capacity(map.info.max_entries as usize);
        for index in 0..map.info.max_entries {
            let mut sums = vec![0u64; words];
            for cpu_value in self.lookup(name, &index.to_ne_bytes())?.unwrap_or_default() {
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

    /// Writes one entry (e.g. to pre-populate conntrack); the value is
    /// copied to every CPU of a per-CPU map.
    pub fn update(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), RuntimeError> {
        let filled = self.map(name)?.filled;
        self.fill(&MapFill {
            name,
            entries: vec![(key, value)],
        })?;
        if let Some(map) = self.maps.get_mut(name) {
            map.filled = filled;
        }
        Ok(())
    }

    /// Back to the state right after loading: every map that was not
    /// filled from an image (conntrack, rate-limit buckets, counters) is
    /// emptied (hash maps) or zeroed (arrays).
    pub fn reset_state(&mut self) -> Result<(), RuntimeError> {
        for (name, map) in &self.maps {
            if !crate::deploy::roles::accumulates(map.filled) {
                continue;
            }
            clear_map(name, map, self.cpus)?;
        }
        Ok(())
    }
}

fn clear_map(name: &str, map: &MapHandle, cpus: usize) -> Result<(), RuntimeError> {
    let fd = map.fd.as_fd();
    let err = |op, error| RuntimeError::Map {
        map: name.to_owned(),
        op,
        error,
    };
    let info = map.info;
    if is_hash_like(info.map_type) {
        let key_size = info.key_size as usize;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut next = vec![0u8; key_size];
        // Bounded: a map never holds more than max_entries keys.
        while keys.len() <= info.max_entries as usize {
            let more = sys::map_get_next_key(fd, keys.last().map(Vec::as_slice), &mut next)
                .map_err(|e| err("listing keys", e))?;
            if !more {
                break;
            }
            keys.push(next.clone());
        }
        for key in &keys {
            sys::map_delete_elem(fd, key).map_err(|e| err("delete", e))?;
        }
    } else if is_array(info.map_type) {
        let slot = if is_percpu(info.map_type) {
            (info.value_size as usize).next_multiple_of(8) * cpus
        } else {
            info.value_size as usize
        };
        let mut start = 0u32;
        while start < info.max_entries {
            let count = (info.max_entries - start).min(BATCH_ENTRIES as u32);
            let keys: Vec<u8> = (start..start + count).flat_map(u32::to_ne_bytes).collect();
            let values = vec![0u8; slot * count as usize];
            if let Err((error, _)) = sys::map_update_batch(fd, &keys, &values, count) {
                if !batch_refused(&error) {
                    return Err(err("zeroing", error));
                }
                let zero = vec![0u8; slot];
                for index in start..start + count {
                    sys::map_update_elem(fd, &index.to_ne_bytes(), &zero)
                        .map_err(|e| err("zeroing", e))?;
                }
            }
            start += count;
        }
    }
    Ok(())
}

fn verifier_error(
    kind: ProgramKind,
    name: &str,
    error: ProgramError,
    image: &Image<'_>,
) -> RuntimeError {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let insn = failing_insn(&log);
            let annotation = insn.and_then(|insn| {
                image
                    .listings
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .and_then(|(_, listing)| annotation(listing, insn))
            });
            RuntimeError::Verifier {
                kind,
                program: name.to_owned(),
                error: io_error,
                log_tail: log_tail(&log),
                insn,
                annotation,
            }
        }
        other => RuntimeError::Verifier {
            kind,
            program: name.to_owned(),
            error: io::Error::other(other.to_string()),
            log_tail: Vec::new(),
            insn: None,
            annotation: None,
        },
    }
}

/// Whether this process can load and test-run BPF programs: creates a
/// map, loads `r0 = XDP_PASS; exit` and runs it once. The error says why
/// not (permissions, no bpf(2), test runs unsupported).
pub fn probe() -> Result<(), RuntimeError> {
    let unavailable = |what: &str, error: io::Error| {
        let hint = match error.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => {
                " (needs root, or CAP_BPF with CAP_NET_ADMIN and CAP_PERFMON)"
            }
            Some(libc::ENOSYS) => " (the kernel has no bpf() system call)",
            _ => "",
        };
        RuntimeError::Unavailable {
            reason: format!("{what}: {error}{hint}"),
        }
    };
    sys::create_probe_map().map_err(|e| unavailable("creating a BPF map", e))?;
    // r0 = 2 (XDP_PASS); exit
    let insns: [u8; 16] = [
        0xb7, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, //
        0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let prog = sys::load_probe_program(PROG_TYPE_XDP, &insns)
        .map_err(|e| unavailable("loading an XDP program", e))?;
    let frame = [0u8; 64];
    let run = sys::prog_test_run(prog.as_fd(), &frame, 1)
        .map_err(|e| unavailable("BPF_PROG_TEST_RUN on an XDP program", e))?;
    if run.retval != 2 {
        return Err(RuntimeError::Unavailable {
            reason: format!("a test program returning 2 returned {}", run.retval),
        });
    }
    Ok(())
}

impl<'a> From<&'a patronus_codegen::Object> for Image<'a> {
    /// The compiled policy's ELF, map images and listing (the XDP
    /// program's).
    fn from(object: &'a patronus_codegen::Object) -> Image<'a> {
        Image {
            elf: &object.elf,
            maps: object
                .maps
                .iter()
                .map(|map| MapFill {
                    name: &map.name,
                    entries: map
                        .entries
                        .iter()
                        .map(|(k, v)| (k.as_slice(), v.as_slice()))
                        .collect(),
                })
                .collect(),
            listings: vec![(ProgramKind::Xdp, &object.listing)],
        }
    }
}
/// Parses a compiled object on our side (aya-obj), as loading it would:
/// a corrupt object is a clear error before any kernel work, and a parser
/// panic on malformed input is one too.
pub(crate) fn parse_object(elf: &[u8]) -> Result<aya_obj::Object, RuntimeError> {
    std::panic::catch_unwind(|| aya_obj::Object::parse(elf))
        .map_err(|_| RuntimeError::BadObject {
            message: "the ELF parser failed on malformed input".into(),
        })?
        .map_err(|e| RuntimeError::BadObject {
            message: e.to_string(),
        })
}
