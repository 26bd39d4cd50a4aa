//! The loader on a hand-assembled object: map filling (batched hash,
//! per-entry LPM trie), test runs of both programs, counters, state reset,
//! verifier rejections with annotations, corrupt objects. Needs the
//! kernel: skipped with a message unless PATRONUS_REQUIRE_KERNEL=1.

use patronus_codegen::elf::ProgramKind;
use patronus_codegen::insn::kernel::xdp_action;
use patronus_codegen::insn::{Asm, Reg};
use patronus_runtime::testing::{SampleObject, ipv4_frame, kernel_or_skip};
use patronus_runtime::{Image, Loaded, MapFill, RuntimeError};

const PASS: u32 = xdp_action::PASS as u32;
const DROP: u32 = xdp_action::DROP as u32;
const UDP: u8 = 17;
const TCP: u8 = 6;
const HOST: [u8; 4] = [192, 0, 2, 1];

fn sample() -> SampleObject {
    // 20 000 trusted addresses: three batches of the batched path.
    SampleObject::new(20_000).expect("the sample object assembles")
}

#[test]
fn verdicts_counters_and_state() {
    if !kernel_or_skip("verdicts_counters_and_state") {
        return;
    }
    let sample = sample();
    let mut loaded = Loaded::load(&sample.image()).expect("loads");
    let verified = loaded
        .stats(ProgramKind::Xdp)
        .and_then(|s| s.verified_insns);
    assert!(
        verified.is_some_and(|n| n > 10),
        "verified_insns: {verified:?}"
    );
    eprintln!(
        "sample: verified_insns xdp {verified:?}, tc {:?}",
        loaded.stats(ProgramKind::Tc)
    );

    let run = |loaded: &Loaded, proto, src| {
        loaded
            .run_xdp(&ipv4_frame(proto, src, HOST, 5000, 53))
            .expect("test run")
            .retval
    };
    assert_eq!(run(&loaded, TCP, [192, 0, 2, 9]), PASS, "plain TCP passes");
    assert_eq!(run(&loaded, UDP, [192, 0, 2, 9]), DROP, "UDP drops");
    assert_eq!(run(&loaded, TCP, [198, 51, 100, 7]), DROP, "LPM /24 hit");
    assert_eq!(run(&loaded, TCP, [203, 0, 113, 200]), DROP, "LPM /25 hit");
    assert_eq!(run(&loaded, TCP, [203, 0, 113, 100]), PASS, "LPM /25 miss");
    // The last trusted address was written by the third batch.
    assert_eq!(run(&loaded, UDP, [10, 0, 78, 31]), PASS, "trusted (hash)");
    assert_eq!(run(&loaded, UDP, [10, 0, 78, 32]), DROP, "not trusted");

    let counters = loaded.read_counters("stats").expect("counters");
    assert_eq!(counters, vec![vec![4, 0], vec![3, 0]]);

    // Egress records the destination; replies from it then pass.
    let peer = [192, 0, 2, 77];
    assert_eq!(run(&loaded, UDP, peer), DROP);
    let tc = loaded
        .run_tc(&ipv4_frame(UDP, HOST, peer, 53, 5000))
        .expect("tc test run");
    assert_eq!(tc.retval, 0, "TC_ACT_OK");
    assert_eq!(run(&loaded, UDP, peer), PASS, "seen by egress");

    loaded.reset_state().expect("reset");
    assert_eq!(run(&loaded, UDP, peer), DROP, "state cleared");
    assert_eq!(run(&loaded, TCP, [198, 51, 100, 7]), DROP, "tables kept");
    assert_eq!(run(&loaded, UDP, [10, 0, 0, 1]), PASS, "batched table kept");
    let counters = loaded.read_counters("stats").expect("counters");
    assert_eq!(
        counters,
        vec![vec![2, 0], vec![1, 0]],
        "counters zeroed by reset"
    );
}

#[test]
fn repeated_runs_report_a_duration() {
    if !kernel_or_skip("repeated_runs_report_a_duration") {
        return;
    }
    let sample = sample();
    let loaded = Loaded::load(&sample.image()).expect("loads");
    let frame = ipv4_frame(TCP, [192, 0, 2, 9], HOST, 1, 2);
    let run = loaded.run(ProgramKind::Xdp, &frame, 1000).expect("runs");
    assert_eq!(run.retval, PASS);
    assert!(run.duration.as_nanos() > 0);
    assert_eq!(run.data_out, frame, "the program does not rewrite");
    assert_eq!(loaded.read_counters("stats").expect("counters")[1][0], 1000);
}

#[test]
fn short_frames_are_an_error_not_a_verdict() {
    if !kernel_or_skip("short_frames_are_an_error_not_a_verdict") {
        return;
    }
    let sample = sample();
    let loaded = Loaded::load(&sample.image()).expect("loads");
    let error = loaded
        .run_xdp(&[0u8; 10])
        .expect_err("10 bytes is too short");
    let message = error.to_string();
    assert!(message.contains("14 bytes"), "{message}");
}

#[test]
fn bad_map_images_are_reported_by_name() {
    if !kernel_or_skip("bad_map_images_are_reported_by_name") {
        return;
    }
    let sample = sample();
    let mut image = sample.image();
    image.maps.push(MapFill {
        name: "nope",
        entries: vec![],
    });
    let error = Loaded::load(&image).expect_err("unknown map");
    assert!(matches!(&error, RuntimeError::UnknownMap { map } if map == "nope"));

    let mut image = sample.image();
    image.maps = vec![MapFill {
        name: "trusted",
        entries: vec![(&[1, 2, 3], &[1, 0, 0, 0])],
    }];
    let error = Loaded::load(&image).expect_err("short key");
    assert_eq!(
        error.to_string(),
        "map `trusted` entry 0: the key is 3 bytes, the map's is 4"
    );

    let keys: Vec<[u8; 8]> = (0..17u32)
        .map(|i| {
            let mut k = [0u8; 8];
            k[..4].copy_from_slice(&32u32.to_ne_bytes());
            k[4..].copy_from_slice(&i.to_be_bytes());
            k
        })
        .collect();
    let mut image = sample.image();
    image.maps = vec![MapFill {
        name: "block",
        entries: keys.iter().map(|k| (&k[..], &[1u8, 0, 0, 0][..])).collect(),
    }];
    let error = Loaded::load(&image).expect_err("too many");
    assert_eq!(
        error.to_string(),
        "map `block` holds at most 16 entries, the image has 17"
    );
}

#[test]
fn verifier_rejection_names_the_instruction_and_its_block() {
    if !kernel_or_skip("verifier_rejection_names_the_instruction_and_its_block") {
        return;
    }
    // Reads the packet without a bounds check.
    let mut asm = Asm::new();
    asm.comment("prologue");
    asm.ldx_w(Reg::R2, Reg::R1, 0);
    asm.comment("rule 7 \"careless\": reads the ethertype unchecked");
    asm.ldx_h(Reg::R0, Reg::R2, 12);
    asm.mov64_imm(Reg::R0, 2);
    asm.exit();
    let program = asm.finish().expect("assembles");
    let elf = patronus_codegen::elf::write_object(&patronus_codegen::elf::ObjectSpec {
        license: "GPL".into(),
        maps: &[],
        programs: vec![patronus_codegen::elf::ProgramDef {
            kind: ProgramKind::Xdp,
            name: "careless".into(),
            program: &program,
        }],
    })
    .expect("writes");
    let listing = program.listing(&[] as &[&str]);
    let image = Image {
        elf: &elf,
        maps: vec![],
        listings: vec![(ProgramKind::Xdp, &listing)],
    };
    let error = Loaded::load(&image).expect_err("the verifier rejects it");
    let RuntimeError::Verifier {
        insn,
        annotation,
        log_tail,
        ..
    } = &error
    else {
        panic!("not a verifier error: {error}");
    };
    assert_eq!(*insn, Some(1));
    assert_eq!(
        annotation.as_deref(),
        Some("rule 7 \"careless\": reads the ethertype unchecked")
    );
    assert!(
        log_tail
            .iter()
            .any(|l| l.contains("invalid access to packet")),
        "{log_tail:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("the kernel rejected the XDP program `careless`"),
        "{message}"
    );
    assert!(message.contains("at instruction 1 (rule 7"), "{message}");
}

#[test]
fn corrupt_objects_give_clear_errors() {
    if !kernel_or_skip("corrupt_objects_give_clear_errors") {
        return;
    }
    let sample = SampleObject::new(4).expect("assembles");
    let shapes = SampleObject::shapes();
    let load = |elf: &[u8]| {
        let mut image = sample.image();
        image.elf = elf;
        // With the planned shapes, a flipped size is refused before the
        // kernel allocates anything.
        Loaded::load_checked(&image, &shapes)
    };
    for len in [0, 3, 16, 64, sample.elf.len() / 2, sample.elf.len() - 1] {
        let error = load(&sample.elf[..len]).expect_err("truncated");
        assert!(
            matches!(error, RuntimeError::BadObject { .. }),
            "truncated to {len}: {error}"
        );
    }
    let mut bad_magic = sample.elf.clone();
    bad_magic[1] ^= 0xff;
    let error = load(&bad_magic).expect_err("bad magic");
    assert!(
        error
            .to_string()
            .starts_with("the object is not a loadable BPF ELF file"),
        "{error}"
    );

    // Every single flipped byte: an error or a load, never a crash. A flip
    // that still loads (padding, names) must still run.
    let mut failures = 0;
    for at in 0..sample.elf.len() {
        let mut elf = sample.elf.clone();
        elf[at] ^= 0x5a;
        match load(&elf) {
            Ok(loaded) => {
                let _ = loaded.run_xdp(&ipv4_frame(TCP, [192, 0, 2, 9], HOST, 1, 2));
            }
            Err(error) => {
                failures += 1;
                assert!(!error.to_string().is_empty());
            }
        }
    }
    assert!(
        failures > sample.elf.len() / 4,
        "only {failures} flips rejected"
    );
}

#[test]
fn maps_must_have_their_planned_shapes() {
    if !kernel_or_skip("maps_must_have_their_planned_shapes") {
        return;
    }
    let sample = SampleObject::new(4).expect("assembles");
    let mut shapes = SampleObject::shapes();
    Loaded::load_checked(&sample.image(), &shapes).expect("the planned shapes load");
    shapes[2].1.max_entries = 3;
    let error = Loaded::load_checked(&sample.image(), &shapes).expect_err("stats differs");
    let message = error.to_string();
    assert!(
        message.contains("map `stats` is declared as") && message.contains("max_entries: 2"),
        "{message}"
    );
    // Only one mismatch at a time: maps are checked in hash order.
    shapes[2].1.max_entries = 2;
    shapes.remove(0);
    let error = Loaded::load_checked(&sample.image(), &shapes).expect_err("block unplanned");
    assert!(
        error
            .to_string()
            .contains("map `block` is not one the compiler planned")
    );
}

#[test]
fn probe_reports_a_usable_kernel() {
    if !kernel_or_skip("probe_reports_a_usable_kernel") {
        return;
    }
    patronus_runtime::probe().expect("probe");
}
