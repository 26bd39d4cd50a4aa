//! The listing of every repository policy, snapshotted: a change in the
//! generated code shows as a reviewable diff. The snapshots hold the code
//! for verifiers that keep bounds through byte swaps (what `apply` loads
//! on a current kernel); the portable code (`--emit asm`, `build`) differs
//! from it only by the masks checked below. Also: compiling is
//! deterministic, and bpftool (libbpf) accepts every object.

mod xdp_common;

use patronus_codegen::{Limits, Verifier, compile, compile_with_limits};
use patronus_compiler::ir;

/// The limits of a verifier that keeps bounds through byte swaps.
fn current() -> Limits {
    Limits {
        verifier: Verifier::BoundsThroughSwaps,
        ..Limits::default()
    }
}

#[test]
fn listings_of_the_repository_policies() {
    for (name, policy) in xdp_common::repository_policies() {
        let program = ir::lower(&policy);
        let limits = current();
        let object =
            compile_with_limits(&program, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again =
            compile_with_limits(&program, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(object.elf, again.elf, "{name}: compiling twice differs");
        assert_eq!(object.listing, again.listing, "{name}: listings differ");
        insta::assert_snapshot!(format!("asm_{name}"), object.listing);
    }
}

/// The portable code (the default) is the snapshotted code plus one mask
/// after each byte-swapped header length that reaches packet-pointer
/// arithmetic: IPv4 total length and IPv6 payload length, nothing else.
#[test]
fn portable_code_only_adds_the_length_masks() {
    for (name, policy) in xdp_common::repository_policies() {
        let program = ir::lower(&policy);
        let fast =
            compile_with_limits(&program, &current()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let portable = compile(&program).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            portable.insn_count,
            fast.insn_count + 2,
            "{name}: one mask per family"
        );
        let strip = |listing: &str| -> Vec<String> {
            // Instruction numbers and jump offsets shift around a mask:
            // compare the instructions without them.
            listing
                .lines()
                .map(|l| {
                    let l = match l.split_once(": ") {
                        Some((n, rest)) if n.trim().parse::<usize>().is_ok() => rest,
                        _ => l,
                    };
                    match l.find("goto pc") {
                        Some(at) => l[..at].to_string(),
                        None => l.to_string(),
                    }
                })
                .collect()
        };
        let (fast_lines, portable_lines) = (strip(&fast.listing), strip(&portable.listing));
        let mut extra: Vec<&String> = Vec::new();
        let mut f = fast_lines.iter().peekable();
        for line in &portable_lines {
            if f.peek() == Some(&line) {
                f.next();
            } else {
                extra.push(line);
            }
        }
        assert!(
            f.next().is_none(),
            "{name}: the portable listing lost lines"
        );
        assert_eq!(extra.len(), 2, "{name}: extra lines {extra:?}");
        for line in extra {
            assert!(
                line.contains("r3 &= 0xffff") || line.contains("r3 &= 65535"),
                "{name}: unexpected extra line {line:?}"
            );
        }
    }
}

/// `bpftool prog loadall` (libbpf's loader, not ours) loads every object;
/// the pins are removed afterwards.
#[test]
fn bpftool_loads_every_object() {
    if !xdp_common::kernel("bpftool_loads_every_object") {
        return;
    }
    let Ok(status) = std::process::Command::new("bpftool")
        .arg("version")
        .output()
    else {
        if std::env::var("PATRONUS_REQUIRE_KERNEL").as_deref() == Ok("1") {
            panic!("bpftool is not installed");
        }
        eprintln!("SKIPPED bpftool_loads_every_object: bpftool is not installed");
        return;
    };
    assert!(status.status.success(), "bpftool version fails");
    let work = std::env::temp_dir().join(format!("patronus-xdp-bpftool-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temporary directory");
    for (name, policy) in xdp_common::repository_policies() {
        let object = compile(&ir::lower(&policy)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = work.join(format!("{name}.o"));
        std::fs::write(&path, &object.elf).expect("object written");
        let pins = format!(
            "/sys/fs/bpf/patronus-xdp-test-{}-{name}",
            std::process::id()
        );
        let out = std::process::Command::new("bpftool")
            .args(["prog", "loadall"])
            .arg(&path)
            .arg(&pins)
            .output()
            .expect("bpftool runs");
        let _ = std::fs::remove_dir_all(&pins);
        assert!(
            out.status.success(),
            "{name}: bpftool prog loadall failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// The `.maps` file format reads back exactly what was written.
#[test]
fn map_images_round_trip_through_the_maps_file() {
    for (name, policy) in xdp_common::repository_policies() {
        let object = compile(&ir::lower(&policy)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = patronus_codegen::abi::encode_images(&object.maps);
        let back =
            patronus_codegen::abi::decode_images(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The file has sizes, not BTF types: compare what it carries.
        let carried = |m: &patronus_codegen::MapDef| {
            (
                m.name.clone(),
                m.map_type,
                m.key_size(),
                m.value_size(),
                m.max_entries,
                m.flags,
                m.entries.clone(),
            )
        };
        let back: Vec<_> = back.iter().map(carried).collect();
        let want: Vec<_> = object.maps.iter().map(carried).collect();
        assert_eq!(back, want, "{name}");
    }
    assert!(patronus_codegen::abi::decode_images("patronus-maps 1\nmap x\n").is_err());
}
