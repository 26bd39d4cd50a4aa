//! Support for tests that need the kernel, shared by this crate's tests,
//! the root `tests/` crate and codegen's differential tests.
//!
//! - [`kernel_or_skip`]: the one place that decides whether a kernel test
//!   runs, fails (`PATRONUS_REQUIRE_KERNEL=1` and no usable kernel) or is
//!   skipped with a visible message.
//! - [`SampleObject`]: a small hand-assembled object (XDP + tc, an LPM
//!   trie, a hash, a per-CPU counter array and a state map) that exercises
//!   every path of the loader without the code generator.

use patronus_codegen::elf::{
    DataType, ElfError, Field, MapDef, ObjectSpec, ProgramDef, ProgramKind, write_object,
};
use patronus_codegen::insn::kernel::{
    Helper, map_flags, map_type, sk_buff, tc_action, xdp_action, xdp_md,
};
use patronus_codegen::insn::regs::{CTX, DATA, DATA_END, FP, RET, SCRATCH};
use patronus_codegen::insn::{Asm, AsmError, MapRef, Program, Reg, Width};

use std::io::Write as _;

use crate::loaded::{Image, MapFill, MapShape};

/// The environment variable that turns an unusable kernel into a failure.
pub const REQUIRE_KERNEL_VAR: &str = "PATRONUS_REQUIRE_KERNEL";

/// `true` when the kernel can load and test-run programs. Otherwise panics
/// if `PATRONUS_REQUIRE_KERNEL=1`, else prints why `test` is skipped and
/// returns `false`.
pub fn kernel_or_skip(test: &str) -> bool {
    match crate::probe() {
        Ok(()) => true,
        Err(error) => {
            if std::env::var(REQUIRE_KERNEL_VAR).as_deref() == Ok("1") {
                panic!("{test}: {REQUIRE_KERNEL_VAR}=1 but {error}");
            }
            // Straight to the stderr handle: the test harness captures
            // `eprintln!` of passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {error} (set {REQUIRE_KERNEL_VAR}=1 to fail instead)"
            );
            false
        }
    }
}

/// Map indices of [`SampleObject`].
pub mod sample_maps {
    /// LPM trie of IPv4 source prefixes to drop (filled per entry).
    pub const BLOCK: u32 = 0;
    /// Hash of IPv4 sources always passed (filled in batches).
    pub const TRUSTED: u32 = 1;
    /// Per-CPU array: index 0 counts drops, 1 passes.
    pub const STATS: u32 = 2;
    /// Hash written by the tc program: destinations the host sent to; the
    /// XDP program passes packets from them (a toy conntrack).
    pub const SEEN: u32 = 3;
    pub const NAMES: [&str; 4] = ["block", "trusted", "stats", "seen"];
}

/// The sample programs and their object.
pub struct SampleObject {
    pub xdp: Program,
    pub tc: Program,
    pub elf: Vec<u8>,
    pub xdp_listing: String,
    pub tc_listing: String,
    /// `block` entries: (prefix length, address) → 1.
    pub block: Vec<(Vec<u8>, Vec<u8>)>,
    /// `trusted` entries: address → 1.
    pub trusted: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SampleObject {
    /// `block` holds 198.51.100.0/24 and 203.0.113.128/25; `trusted` holds
    /// `trusted_count` addresses 10.0.x.y (enough to need several batches).
    pub fn new(trusted_count: u32) -> Result<SampleObject, SampleError> {
        let xdp = sample_xdp()?;
        let tc = sample_tc()?;
        let elf = sample_elf(&xdp, &tc)?;
        let block = [([198, 51, 100, 0], 24u32), ([203, 0, 113, 128], 25)]
            .into_iter()
            .map(|(addr, len)| {
                let mut key = len.to_ne_bytes().to_vec();
                key.extend_from_slice(&addr);
                (key, 1u32.to_ne_bytes().to_vec())
            })
            .collect();
        let trusted = (0..trusted_count)
            .map(|i| {
                let addr = [10, 0, (i >> 8) as u8, i as u8];
                (addr.to_vec(), 1u32.to_ne_bytes().to_vec())
            })
            .collect();
        Ok(SampleObject {
            xdp_listing: xdp.listing(&sample_maps::NAMES[..]),
            tc_listing: tc.listing(&sample_maps::NAMES[..]),
            xdp,
            tc,
            elf,
            block,
            trusted,
        })
    }

    /// The maps' definitions, for [`Loaded::load_checked`](crate::Loaded::load_checked).
    pub fn shapes() -> Vec<(&'static str, MapShape)> {
        sample_maps()
            .iter()
            .zip(sample_maps::NAMES)
            .map(|(def, name)| {
                let size = |ty: &Option<DataType>| ty.as_ref().map_or(0, DataType::size);
                let shape = MapShape {
                    map_type: def.map_type,
                    key_size: size(&def.key),
                    value_size: size(&def.value),
                    max_entries: def.max_entries,
                    flags: def.flags,
                };
                (name, shape)
            })
            .collect()
    }

    /// The loader's input for this object.
    pub fn image(&self) -> Image<'_> {
        Image {
            elf: &self.elf,
            maps: vec![
                MapFill {
                    name: "block",
                    entries: entry_slices(&self.block),
                },
                MapFill {
                    name: "trusted",
                    entries: entry_slices(&self.trusted),
                },
            ],
            listings: vec![
                (ProgramKind::Xdp, &self.xdp_listing),
                (ProgramKind::Tc, &self.tc_listing),
            ],
        }
    }
}

/// Borrowed (key, value) pairs of owned entries, as [`MapFill`] takes them.
pub fn entry_slices(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    entries
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect()
}

#[derive(Debug)]
pub enum SampleError {
    Asm(AsmError),
    Elf(ElfError),
}

impl From<AsmError> for SampleError {
    fn from(e: AsmError) -> Self {
        SampleError::Asm(e)
    }
}

impl From<ElfError> for SampleError {
    fn from(e: ElfError) -> Self {
        SampleError::Elf(e)
    }
}

fn u32_field(name: &str, offset: u32) -> Field {
    Field {
        name: name.into(),
        ty: DataType::U32,
        offset,
    }
}

fn sample_maps() -> Vec<MapDef> {
    vec![
        MapDef {
            name: "block".into(),
            map_type: map_type::LPM_TRIE,
            max_entries: 16,
            flags: map_flags::NO_PREALLOC,
            key: Some(DataType::Struct {
                name: "block_key".into(),
                size: 8,
                fields: vec![
                    u32_field("prefixlen", 0),
                    Field {
                        name: "addr".into(),
                        ty: DataType::Bytes(4),
                        offset: 4,
                    },
                ],
            }),
            value: Some(DataType::U32),
            pin_by_name: false,
            entries: Vec::new(),
        },
        MapDef {
            name: "trusted".into(),
            map_type: map_type::HASH,
            max_entries: 1 << 16,
            // Cheap to create: the corrupt-object test loads it ~2000 times.
            flags: map_flags::NO_PREALLOC,
            key: Some(DataType::Bytes(4)),
            value: Some(DataType::U32),
            pin_by_name: false,
            entries: Vec::new(),
        },
        MapDef {
            name: "stats".into(),
            map_type: map_type::PERCPU_ARRAY,
            max_entries: 2,
            flags: 0,
            key: Some(DataType::U32),
            value: Some(DataType::Struct {
                name: "counter".into(),
                size: 16,
                fields: vec![
                    Field {
                        name: "packets".into(),
                        ty: DataType::U64,
                        offset: 0,
                    },
                    Field {
                        name: "bytes".into(),
                        ty: DataType::U64,
                        offset: 8,
                    },
                ],
            }),
            pin_by_name: false,
            entries: Vec::new(),
        },
        MapDef {
            name: "seen".into(),
            map_type: map_type::LRU_HASH,
            max_entries: 1024,
            flags: 0,
            key: Some(DataType::Bytes(4)),
            value: Some(DataType::U32),
            pin_by_name: false,
            entries: Vec::new(),
        },
    ]
}

/// `r0 = map[key at fp+off]`, jumping to `hit` when found.
fn lookup(asm: &mut Asm, map: u32, key_off: i16, hit: patronus_codegen::insn::Label) {
    asm.ld_map(Reg::R1, MapRef(map));
    asm.mov64_reg(Reg::R2, FP);
    asm.add64_imm(Reg::R2, i32::from(key_off));
    asm.call(Helper::MapLookupElem);
    asm.jne_imm(RET, 0, hit);
}

/// Drops UDP and sources in `block`, passes `trusted` and `seen` sources
/// and everything else; counts drops and passes in `stats`.
fn sample_xdp() -> Result<Program, AsmError> {
    let mut asm = Asm::new();
    let pass = asm.named_label("pass");
    let drop = asm.named_label("drop");
    let count = asm.named_label("count");
    let out = asm.named_label("out");
    asm.comment("prologue");
    asm.mov64_reg(CTX, Reg::R1);
    asm.ldx_w(DATA, CTX, xdp_md::DATA);
    asm.ldx_w(DATA_END, CTX, xdp_md::DATA_END);
    asm.comment("Ethernet + IPv4 header must fit, else pass");
    asm.mov64_reg(Reg::R1, DATA);
    asm.add64_imm(Reg::R1, 34);
    asm.jgt_reg(Reg::R1, DATA_END, pass);
    asm.ldx_h(Reg::R1, DATA, 12);
    asm.jne_imm(Reg::R1, 0x0008, pass);
    asm.comment("trusted sources pass");
    asm.ldx_w(Reg::R1, DATA, 26);
    asm.stx_w(FP, -4, Reg::R1);
    lookup(&mut asm, sample_maps::TRUSTED, -4, pass);
    asm.comment("replies to destinations the host sent to pass");
    lookup(&mut asm, sample_maps::SEEN, -4, pass);
    asm.comment("blocked prefixes drop");
    asm.st_w(FP, -8, 32);
    lookup(&mut asm, sample_maps::BLOCK, -8, drop);
    asm.comment("UDP drops");
    asm.ldx_b(Reg::R1, DATA, 23);
    asm.jeq_imm(Reg::R1, 17, drop);
    asm.bind(pass);
    asm.mov64_imm(SCRATCH, xdp_action::PASS);
    asm.ja(count);
    asm.bind(drop);
    asm.mov64_imm(SCRATCH, xdp_action::DROP);
    asm.bind(count);
    asm.comment("count the verdict: stats[verdict - 1].packets += 1");
    let bump = asm.named_label("bump");
    asm.mov64_reg(Reg::R1, SCRATCH);
    asm.add64_imm(Reg::R1, -1);
    asm.stx_w(FP, -12, Reg::R1);
    lookup(&mut asm, sample_maps::STATS, -12, bump);
    asm.ja(out);
    asm.bind(bump);
    asm.mov64_imm(Reg::R1, 1);
    asm.atomic_add(Width::W64, RET, 0, Reg::R1);
    asm.bind(out);
    asm.mov64_reg(RET, SCRATCH);
    asm.exit();
    asm.finish()
}

fn sample_tc() -> Result<Program, AsmError> {
    let mut asm = Asm::new();
    let out = asm.named_label("out");
    asm.comment("prologue");
    asm.mov64_reg(CTX, Reg::R1);
    asm.ldx_w(DATA, CTX, sk_buff::DATA);
    asm.ldx_w(DATA_END, CTX, sk_buff::DATA_END);
    asm.mov64_reg(Reg::R1, DATA);
    asm.add64_imm(Reg::R1, 34);
    asm.jgt_reg(Reg::R1, DATA_END, out);
    asm.ldx_h(Reg::R1, DATA, 12);
    asm.jne_imm(Reg::R1, 0x0008, out);
    asm.comment("remember the destination: seen[dst] = 1");
    asm.ldx_w(Reg::R1, DATA, 30);
    asm.stx_w(FP, -4, Reg::R1);
    asm.st_w(FP, -8, 1);
    asm.ld_map(Reg::R1, MapRef(sample_maps::SEEN));
    asm.mov64_reg(Reg::R2, FP);
    asm.add64_imm(Reg::R2, -4);
    asm.mov64_reg(Reg::R3, FP);
    asm.add64_imm(Reg::R3, -8);
    asm.mov64_imm(Reg::R4, 0);
    asm.call(Helper::MapUpdateElem);
    asm.bind(out);
    asm.mov64_imm(RET, tc_action::OK);
    asm.exit();
    asm.finish()
}

fn sample_elf(xdp: &Program, tc: &Program) -> Result<Vec<u8>, ElfError> {
    write_object(&ObjectSpec {
        license: "GPL".into(),
        maps: &sample_maps(),
        programs: vec![
            ProgramDef {
                kind: ProgramKind::Xdp,
                name: "sample_xdp".into(),
                program: xdp,
            },
            ProgramDef {
                kind: ProgramKind::Tc,
                name: "sample_tc".into(),
                program: tc,
            },
        ],
    })
}

/// An Ethernet + IPv4 + UDP/TCP frame (checksums zero: the programs
/// under test do not check them).
pub fn ipv4_frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let l4_len: u16 = if proto == 6 { 20 } else { 8 };
    let total = 20 + l4_len;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&8u16.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.resize(f.len().max(60), 0);
    f
}
