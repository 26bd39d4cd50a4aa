//! The object writer, checked by the parser the runtime loads with
//! (aya-obj): maps come back with their definitions, programs with their
//! section kinds and instructions, map loads get relocated.

use aya_obj::maps::PinningType;
use aya_obj::programs::XdpAttachType;
use aya_obj::{Object, ProgramSection};
use patronus_codegen::elf::{
    DataType, ElfError, Field, MapDef, ObjectSpec, ProgramDef, ProgramKind, write_object,
};
use patronus_codegen::insn::kernel::{Helper, map_flags, map_type};
use patronus_codegen::insn::{Asm, Insn, MapRef, Program, Reg, decode_all};
use std::collections::HashSet;

fn lpm_key() -> DataType {
    DataType::Struct {
        name: "lpm_v4_key".into(),
        size: 8,
        fields: vec![
            Field {
                name: "prefixlen".into(),
                ty: DataType::U32,
                offset: 0,
            },
            Field {
                name: "addr".into(),
                ty: DataType::Bytes(4),
                offset: 4,
            },
        ],
    }
}

fn maps() -> Vec<MapDef> {
    vec![
        MapDef {
            name: "rules_v4".into(),
            map_type: map_type::LPM_TRIE,
            max_entries: 1024,
            flags: map_flags::NO_PREALLOC,
            key: Some(lpm_key()),
            value: Some(DataType::U32),
            pin_by_name: true,
            entries: Vec::new(),
        },
        MapDef {
            name: "counters".into(),
            map_type: map_type::PERCPU_ARRAY,
            max_entries: 16,
            flags: 0,
            key: Some(DataType::U32),
            value: Some(DataType::U64),
            pin_by_name: false,
            entries: Vec::new(),
        },
        MapDef {
            name: "events".into(),
            map_type: map_type::RINGBUF,
            max_entries: 1 << 16,
            flags: 0,
            key: None,
            value: None,
            pin_by_name: false,
            entries: Vec::new(),
        },
    ]
}

/// Looks up `counters[0]`, returns XDP_PASS.
fn xdp_program() -> Program {
    let mut asm = Asm::new();
    let out = asm.new_label();
    asm.st_w(Reg::R10, -8, 0);
    asm.ld_map(Reg::R1, MapRef(1));
    asm.mov64_reg(Reg::R2, Reg::R10);
    asm.add64_imm(Reg::R2, -8);
    asm.call(Helper::MapLookupElem);
    asm.jeq_imm(Reg::R0, 0, out);
    asm.bind(out);
    asm.mov64_imm(Reg::R0, 2);
    asm.exit();
    asm.finish().unwrap()
}

fn tc_program() -> Program {
    let mut asm = Asm::new();
    asm.ld_map(Reg::R1, MapRef(0));
    asm.ld_map(Reg::R2, MapRef(2));
    asm.mov64_imm(Reg::R0, 0);
    asm.exit();
    asm.finish().unwrap()
}

fn object(xdp: &Program, tc: &Program) -> Vec<u8> {
    let spec = ObjectSpec {
        license: "GPL".into(),
        maps: &maps(),
        programs: vec![
            ProgramDef {
                kind: ProgramKind::Xdp,
                name: "patronus_xdp".into(),
                program: xdp,
            },
            ProgramDef {
                kind: ProgramKind::Tc,
                name: "patronus_tc".into(),
                program: tc,
            },
        ],
    };
    write_object(&spec).unwrap()
}

fn raw_insns(function: &aya_obj::Function) -> Vec<u8> {
    function
        .instructions
        .iter()
        .flat_map(|insn| {
            let mut bytes = [0u8; 8];
            bytes[0] = insn.code;
            bytes[1] = (insn.src_reg() << 4) | insn.dst_reg();
            bytes[2..4].copy_from_slice(&insn.off.to_le_bytes());
            bytes[4..8].copy_from_slice(&insn.imm.to_le_bytes());
            bytes
        })
        .collect()
}

#[test]
fn aya_parses_maps_and_programs() {
    let (xdp, tc) = (xdp_program(), tc_program());
    let bytes = object(&xdp, &tc);
    let obj = Object::parse(&bytes).expect("aya-obj parses the object");
    assert_eq!(obj.license.to_str().unwrap(), "GPL");

    let rules = &obj.maps["rules_v4"];
    assert_eq!(rules.map_type(), map_type::LPM_TRIE);
    assert_eq!((rules.key_size(), rules.value_size()), (8, 4));
    assert_eq!(rules.max_entries(), 1024);
    assert_eq!(rules.map_flags(), map_flags::NO_PREALLOC);
    assert_eq!(rules.pinning(), PinningType::ByName);
    let counters = &obj.maps["counters"];
    assert_eq!(counters.map_type(), map_type::PERCPU_ARRAY);
    assert_eq!((counters.key_size(), counters.value_size()), (4, 8));
    assert_eq!(counters.pinning(), PinningType::None);
    let events = &obj.maps["events"];
    assert_eq!(events.map_type(), map_type::RINGBUF);
    assert_eq!(events.max_entries(), 1 << 16);
    assert_eq!((events.key_size(), events.value_size()), (0, 0));

    assert!(matches!(
        obj.programs["patronus_xdp"].section,
        ProgramSection::Xdp {
            frags: false,
            attach_type: XdpAttachType::Interface
        }
    ));
    assert!(matches!(
        obj.programs["patronus_tc"].section,
        ProgramSection::SchedClassifier
    ));

    // The instructions are ours, with map loads blanked for relocation.
    let function = &obj.functions[&obj.programs["patronus_xdp"].function_key()];
    let insns = decode_all(&raw_insns(function)).unwrap();
    assert_eq!(insns.len(), xdp.insns().len());
    assert_eq!(
        insns[1],
        Insn::LdImm64 {
            dst: Reg::R1,
            imm: 0
        }
    );
    assert_eq!(insns[2..], xdp.insns()[2..]);
}

#[test]
fn map_loads_relocate_to_the_right_maps() {
    let (xdp, tc) = (xdp_program(), tc_program());
    let mut obj = Object::parse(&object(&xdp, &tc)).unwrap();
    let fds = [("rules_v4", 100), ("counters", 101), ("events", 102)];
    let maps = obj.maps.clone();
    obj.relocate_maps(
        fds.iter().map(|&(name, fd)| (name, fd, &maps[name])),
        &HashSet::new(),
    )
    .expect("relocations resolve");
    let loaded = |name: &str| {
        let function = &obj.functions[&obj.programs[name].function_key()];
        decode_all(&raw_insns(function)).unwrap()
    };
    // After relocation the loads carry BPF_PSEUDO_MAP_FD and the fd,
    // which decodes as our map reference with the fd as index.
    assert_eq!(
        loaded("patronus_xdp")[1],
        Insn::LdMap {
            dst: Reg::R1,
            map: MapRef(101)
        }
    );
    let tc_insns = loaded("patronus_tc");
    assert_eq!(
        tc_insns[0],
        Insn::LdMap {
            dst: Reg::R1,
            map: MapRef(100)
        }
    );
    assert_eq!(
        tc_insns[1],
        Insn::LdMap {
            dst: Reg::R2,
            map: MapRef(102)
        }
    );
}

#[test]
fn writing_is_deterministic() {
    let (xdp, tc) = (xdp_program(), tc_program());
    assert_eq!(object(&xdp, &tc), object(&xdp, &tc));
}

#[test]
fn bad_specs_are_errors() {
    let xdp = xdp_program();
    let write = |maps: Vec<MapDef>, programs: Vec<ProgramDef<'_>>| {
        write_object(&ObjectSpec {
            license: "GPL".into(),
            maps: &maps,
            programs,
        })
    };
    let prog = |kind, name: &str| ProgramDef {
        kind,
        name: name.into(),
        program: &xdp,
    };

    // xdp_program refers to map #1.
    assert_eq!(
        write(vec![], vec![prog(ProgramKind::Xdp, "p")]).unwrap_err(),
        ElfError::UnknownMap {
            program: "p".into(),
            index: 1
        }
    );
    assert_eq!(
        write(
            maps(),
            vec![prog(ProgramKind::Xdp, "p"), prog(ProgramKind::Xdp, "q")]
        )
        .unwrap_err(),
        ElfError::DuplicateSection { section: "xdp" }
    );
    assert_eq!(
        write(maps(), vec![prog(ProgramKind::Xdp, "rules_v4")]).unwrap_err(),
        ElfError::DuplicateName {
            name: "rules_v4".into()
        }
    );
    assert_eq!(
        write(maps(), vec![prog(ProgramKind::Xdp, "has space")]).unwrap_err(),
        ElfError::BadName {
            name: "has space".into()
        }
    );

    let with = |change: fn(&mut MapDef)| {
        let mut maps = maps();
        change(&mut maps[0]);
        write(maps, vec![]).unwrap_err()
    };
    let bad = |reason| ElfError::BadMap {
        map: "rules_v4".into(),
        reason,
    };
    assert_eq!(
        with(|m| m.flags = 0),
        bad("LPM tries require BPF_F_NO_PREALLOC")
    );
    assert_eq!(
        with(|m| m.key = Some(DataType::U64)),
        bad("LPM trie keys must be a struct")
    );
    assert_eq!(
        with(|m| m.max_entries = 0),
        bad("max_entries must be positive")
    );
    assert_eq!(
        with(|m| m.value = None),
        bad("key and value types are required")
    );
    assert_eq!(
        with(|m| m.key = Some(DataType::Struct {
            name: "k".into(),
            size: 4,
            fields: vec![Field {
                name: "wide".into(),
                ty: DataType::U64,
                offset: 0
            },]
        })),
        ElfError::FieldOutOfBounds {
            field: "k.wide".into()
        }
    );
    let mut ring = maps();
    ring[2].max_entries = 5000;
    assert_eq!(
        write(ring, vec![]).unwrap_err(),
        ElfError::BadMap {
            map: "events".into(),
            reason: "ring buffer size must be a power of two and a multiple of the page size"
        }
    );
    let mut array = maps();
    array[1].key = Some(DataType::U64);
    assert_eq!(
        write(array, vec![]).unwrap_err(),
        ElfError::BadMap {
            map: "counters".into(),
            reason: "array maps need a 4-byte key"
        }
    );
}
