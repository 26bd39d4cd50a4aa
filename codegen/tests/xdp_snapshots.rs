//! `--emit asm` of every repository policy, snapshotted: a change in the
//! generated code shows as a reviewable diff. Also: compiling is
//! deterministic, and bpftool (libbpf) accepts every object.

mod xdp_common;

use patronus_codegen::compile;
use patronus_compiler::ir;

#[test]
fn listings_of_the_repository_policies() {
    for (name, policy) in xdp_common::repository_policies() {
        let program = ir::lower(&policy);
        let object = compile(&program).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = compile(&program).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(object.elf, again.elf, "{name}: compiling twice differs");
        assert_eq!(object.listing, again.listing, "{name}: listings differ");
        insta::assert_snapshot!(format!("asm_{name}"), object.listing);
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
        assert_eq!(back, object.maps, "{name}");
    }
    assert!(patronus_codegen::abi::decode_images("patronus-maps 1\nmap x\n").is_err());
}
