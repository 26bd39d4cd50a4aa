//! Test-only kernel access for the state tests: raw `bpf(2)` map creation,
//! program load (map fds patched into `LD_IMM64`), `BPF_PROG_TEST_RUN` and
//! map reads. Kept here (not the runtime crate) so the hooks can be tested
//! on their own, before the object packaging exists.
//!
//! Kernel tests skip with a visible message when the kernel is unusable,
//! and fail instead when `PATRONUS_REQUIRE_KERNEL=1`.

#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use patronus_codegen::insn::Program;

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_MAP_GET_NEXT_KEY: i32 = 4;
const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_TEST_RUN: i32 = 10;
pub const PROG_TYPE_SCHED_CLS: u32 = 3;
pub const PROG_TYPE_XDP: u32 = 6;

fn bpf(cmd: i32, attr: &mut [u64]) -> Result<i64, String> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix of the size
    // passed; pointers inside it reference live buffers of the caller.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(ret)
    }
}

fn pack(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Whether to run kernel tests: `Ok(false)` = skip (message printed).
pub fn kernel_available(test: &str) -> bool {
    let probe = Map::create(patronus_codegen::insn::kernel::map_type::ARRAY, 4, 8, 1);
    match probe {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("PATRONUS_REQUIRE_KERNEL").as_deref() == Ok("1") {
                panic!("{test}: kernel required but unusable: {e}");
            }
            eprintln!("SKIPPED {test}: cannot use bpf(2): {e}");
            false
        }
    }
}

pub struct Map {
    pub fd: OwnedFd,
    pub key_size: u32,
    pub value_size: u32,
}

impl Map {
    pub fn create(map_type: u32, key_size: u32, value_size: u32, max: u32) -> Result<Map, String> {
        let mut attr = [0u64; 16];
        attr[0] = pack(map_type, key_size);
        attr[1] = pack(value_size, max);
        let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
        // SAFETY: a fresh fd returned by the kernel, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Map {
            fd,
            key_size,
            value_size,
        })
    }

    pub fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut value = vec![0u8; self.value_size as usize];
        let mut attr = [0u64; 4];
        attr[0] = self.fd.as_raw_fd() as u64;
        attr[1] = key.as_ptr() as u64;
        attr[2] = value.as_mut_ptr() as u64;
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).ok()?;
        Some(value)
    }

    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let mut prev: Option<Vec<u8>> = None;
        loop {
            let mut next = vec![0u8; self.key_size as usize];
            let mut attr = [0u64; 3];
            attr[0] = self.fd.as_raw_fd() as u64;
            attr[1] = prev.as_ref().map_or(0, |k| k.as_ptr() as u64);
            attr[2] = next.as_mut_ptr() as u64;
            if bpf(BPF_MAP_GET_NEXT_KEY, &mut attr).is_err() {
                return keys;
            }
            keys.push(next.clone());
            prev = Some(next);
        }
    }
}

pub struct Prog {
    pub fd: OwnedFd,
    /// "processed N insns" of the verifier.
    pub verified_insns: u64,
}

/// Loads `program` with `maps[i]` behind `MapRef(i)`; panics with the
/// verifier log on rejection.
pub fn load(program: &Program, prog_type: u32, maps: &[Option<&Map>]) -> Prog {
    let mut bytes = program.encode();
    for reloc in program.map_relocs() {
        let map = maps
            .get(reloc.map.0 as usize)
            .copied()
            .flatten()
            .unwrap_or_else(|| panic!("program uses map {} the test did not create", reloc.map.0));
        let at = reloc.byte_offset();
        bytes[at + 1] = (bytes[at + 1] & 0x0f) | (1 << 4);
        bytes[at + 4..at + 8].copy_from_slice(&map.fd.as_raw_fd().to_le_bytes());
    }
    let license = b"GPL\0";
    let try_load = |level: u32, log: &mut Vec<u8>| {
        let mut attr = [0u64; 16];
        attr[0] = pack(prog_type, (bytes.len() / 8) as u32);
        attr[1] = bytes.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        attr[3] = pack(level, log.len() as u32);
        attr[4] = log.as_mut_ptr() as u64;
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let mut log = vec![0u8; 1 << 16];
    match try_load(4, &mut log) {
        Ok(fd) => {
            let text = String::from_utf8_lossy(&log);
            let verified_insns = text
                .split("processed ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Prog {
                // SAFETY: a fresh fd from the kernel.
                fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
                verified_insns,
            }
        }
        Err(e) => {
            let mut log = vec![0u8; 1 << 24];
            let _ = try_load(2, &mut log);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0');
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let names: Vec<String> = (0..maps.len()).map(|i| format!("map{i}")).collect();
            panic!(
                "verifier rejected the program ({e}):\n{}\n--- listing ---\n{}",
                tail.join("\n"),
                program.listing(names.as_slice())
            );
        }
    }
}

/// Runs `prog` once on `frame`; returns the program's return value.
pub fn run(prog: &Prog, frame: &[u8]) -> u32 {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = [0u64; 10];
    attr[0] = pack(prog.fd.as_raw_fd() as u32, 0);
    attr[1] = pack(frame.len() as u32, out.len() as u32);
    attr[2] = frame.as_ptr() as u64;
    attr[3] = out.as_mut_ptr() as u64;
    attr[4] = pack(1, 0);
    bpf(BPF_PROG_TEST_RUN, &mut attr).expect("BPF_PROG_TEST_RUN");
    (attr[0] >> 32) as u32
}
