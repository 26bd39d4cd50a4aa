//! Assembler: label resolution, limits as errors, listings.

use patronus_codegen::insn::kernel::{Helper, xdp_action, xdp_md};
use patronus_codegen::insn::regs::{CTX, DATA, DATA_END, FP, Frame, RET};
use patronus_codegen::insn::{
    Asm, AsmError, Insn, JmpOp, MapRef, MapReloc, Program, Reg, Size, Src, Width, decode_all,
};

/// A small XDP program in the shape the generator emits: prologue,
/// bounds check, one map lookup with a counter bump, verdicts.
fn sample() -> Program {
    let mut frame = Frame::new();
    let key = frame.alloc("rule key", 4).unwrap();
    let mut asm = Asm::new();
    let drop = asm.named_label("drop");
    let pass = asm.named_label("pass");

    asm.comment("prologue: keep ctx, packet start and end in callee-saved registers");
    asm.mov64_reg(CTX, Reg::R1);
    asm.ldx_w(DATA, CTX, xdp_md::DATA);
    asm.ldx_w(DATA_END, CTX, xdp_md::DATA_END);
    asm.comment("phase invalid: Ethernet header must fit");
    asm.mov64_reg(Reg::R1, DATA);
    asm.add64_imm(Reg::R1, 14);
    asm.jgt_reg(Reg::R1, DATA_END, drop);
    asm.comment("rule 1: count hits of key 0");
    asm.st_w(FP, key.off, 0);
    asm.ld_map(Reg::R1, MapRef(1));
    asm.mov64_reg(Reg::R2, FP);
    asm.add64_imm(Reg::R2, i32::from(key.off));
    asm.call(Helper::MapLookupElem);
    asm.jeq_imm(RET, 0, pass);
    asm.mov64_imm(Reg::R1, 1);
    asm.atomic_add(Width::W64, RET, 0, Reg::R1);
    asm.bind(pass);
    asm.comment("verdicts");
    asm.mov64_imm(RET, xdp_action::PASS);
    asm.exit();
    asm.bind(drop);
    asm.mov64_imm(RET, xdp_action::DROP);
    asm.exit();
    asm.finish().unwrap()
}

#[test]
fn listing_matches_bpftool_format() {
    let program = sample();
    let expected = "\
; prologue: keep ctx, packet start and end in callee-saved registers
   0: (bf) r6 = r1
   1: (61) r7 = *(u32 *)(r6 +0)
   2: (61) r8 = *(u32 *)(r6 +4)
; phase invalid: Ethernet header must fit
   3: (bf) r1 = r7
   4: (07) r1 += 14
   5: (2d) if r1 > r8 goto pc+11
; rule 1: count hits of key 0
   6: (62) *(u32 *)(r10 -8) = 0
   7: (18) r1 = map[counters]
   9: (bf) r2 = r10
  10: (07) r2 += -8
  11: (85) call bpf_map_lookup_elem#1
  12: (15) if r0 == 0x0 goto pc+2
  13: (b7) r1 = 1
  14: (db) lock *(u64 *)(r0 +0) += r1
; verdicts
  15: (b7) r0 = 2
  16: (95) exit
  17: (b7) r0 = 1
  18: (95) exit
";
    assert_eq!(program.listing(&["rules_v4", "counters"][..]), expected);
    assert_eq!(program.slot_count(), 19);
}

#[test]
fn map_relocations_point_at_slots() {
    let program = sample();
    assert_eq!(
        program.map_relocs(),
        vec![MapReloc {
            slot: 7,
            map: MapRef(1)
        }]
    );
    assert_eq!(program.map_relocs()[0].byte_offset(), 56);
    let bytes = program.encode();
    assert_eq!(bytes.len(), 19 * 8);
    // The relocated slot holds LD_IMM64 with src_reg = BPF_PSEUDO_MAP_FD.
    assert_eq!(&bytes[56..58], &[0x18, 0x11]);
    assert_eq!(decode_all(&bytes).unwrap(), program.insns());
}

#[test]
fn backward_jumps_and_local_calls() {
    let mut asm = Asm::new();
    let top = asm.new_label();
    let sub = asm.new_label();
    asm.mov64_imm(Reg::R0, 0);
    asm.bind(top);
    asm.add64_imm(Reg::R0, 1);
    asm.ld_imm64(Reg::R2, 1 << 40);
    asm.jlt_imm(Reg::R0, 10, top);
    asm.call_local(sub);
    asm.exit();
    asm.bind(sub);
    asm.mov64_imm(Reg::R0, 0);
    asm.exit();
    let program = asm.finish().unwrap();
    // Slots: 0 mov, 1 add, 2-3 ld_imm64, 4 jlt, 5 call, 6 exit, 7 sub.
    assert_eq!(
        program.insns()[3],
        Insn::JumpIf {
            width: Width::W64,
            op: JmpOp::Lt,
            dst: Reg::R0,
            src: Src::Imm(10),
            off: -4
        }
    );
    assert_eq!(program.insns()[4], Insn::CallLocal { off: 1 });
    assert_eq!(
        program.labels(),
        &[(1, "L0".to_string()), (6, "L1".to_string())]
    );
}

#[test]
fn longest_jumps_fit_and_one_more_is_an_error_naming_the_label() {
    // A forward jump over `n` single-slot instructions has offset `n`.
    let build = |n: usize| {
        let mut asm = Asm::new();
        let far = asm.named_label("rule 7: next");
        asm.ja(far);
        for _ in 0..n {
            asm.mov64_imm(Reg::R0, 0);
        }
        asm.bind(far);
        asm.exit();
        asm.finish()
    };
    let program = build(i16::MAX as usize).unwrap();
    assert_eq!(program.insns()[0], Insn::Ja { off: i16::MAX });
    let error = build(i16::MAX as usize + 1).unwrap_err();
    assert_eq!(
        error,
        AsmError::JumpOutOfRange {
            label: "rule 7: next".into(),
            from: 0,
            to: 32769
        }
    );
    assert!(error.to_string().contains("`rule 7: next`"), "{error}");

    // Backwards: the offset is target - (from + 1).
    let mut asm = Asm::new();
    let back = asm.named_label("loop");
    asm.bind(back);
    for _ in 0..=i16::MAX as usize {
        asm.mov64_imm(Reg::R0, 0);
    }
    asm.ja(back);
    let error = asm.finish().unwrap_err();
    assert!(matches!(error, AsmError::JumpOutOfRange { ref label, .. } if label == "loop"));
}

#[test]
fn misuse_is_reported() {
    let mut asm = Asm::new();
    let nowhere = asm.named_label("nowhere");
    asm.jeq_imm(Reg::R1, 0, nowhere);
    asm.exit();
    assert_eq!(
        asm.finish(),
        Err(AsmError::UnboundLabel {
            label: "nowhere".into()
        })
    );

    let mut asm = Asm::new();
    let twice = asm.named_label("twice");
    asm.bind(twice);
    asm.exit();
    asm.bind(twice);
    asm.exit();
    assert_eq!(
        asm.finish(),
        Err(AsmError::LabelBoundTwice {
            label: "twice".into()
        })
    );

    let mut asm = Asm::new();
    let end = asm.named_label("end");
    asm.ja(end);
    asm.bind(end);
    assert_eq!(
        asm.finish(),
        Err(AsmError::LabelPastEnd {
            label: "end".into()
        })
    );

    let mut asm = Asm::new();
    asm.mov64_imm(Reg::R0, 0);
    assert_eq!(asm.finish(), Err(AsmError::FallsOffEnd));

    assert_eq!(Asm::new().finish(), Err(AsmError::Empty));

    let mut asm = Asm::new();
    asm.exit();
    asm.comment("trailing");
    assert_eq!(
        asm.finish(),
        Err(AsmError::DanglingComment {
            comment: "trailing".into()
        })
    );

    let mut other = Asm::new();
    other.new_label();
    let foreign = other.new_label();
    let mut asm = Asm::new();
    asm.ja(foreign);
    assert_eq!(asm.finish(), Err(AsmError::ForeignLabel { label: 1 }));
}

#[test]
fn every_size_helper_emits_its_size() {
    let mut asm = Asm::new();
    asm.ldx_b(Reg::R1, Reg::R7, 0);
    asm.ldx_h(Reg::R1, Reg::R7, 0);
    asm.ldx_w(Reg::R1, Reg::R7, 0);
    asm.ldx_dw(Reg::R1, Reg::R7, 0);
    asm.stx_b(Reg::R10, -1, Reg::R1);
    asm.stx_h(Reg::R10, -2, Reg::R1);
    asm.stx_w(Reg::R10, -4, Reg::R1);
    asm.stx_dw(Reg::R10, -8, Reg::R1);
    asm.st_b(Reg::R10, -1, 1);
    asm.st_h(Reg::R10, -2, 1);
    asm.st_w(Reg::R10, -4, 1);
    asm.st_dw(Reg::R10, -8, 1);
    asm.exit();
    let program = asm.finish().unwrap();
    let sizes: Vec<Size> = program
        .insns()
        .iter()
        .filter_map(|insn| match *insn {
            Insn::Load { size, .. } | Insn::Store { size, .. } | Insn::StoreImm { size, .. } => {
                Some(size)
            }
            _ => None,
        })
        .collect();
    let once = [Size::B, Size::H, Size::W, Size::DW];
    assert_eq!(sizes, [once, once, once].concat());
}
