//! Property tests: encode/decode are inverse, and decoding arbitrary bytes
//! never panics and only accepts canonical images.

use patronus_codegen::insn::{
    AluOp, AtomicOp, ByteOrder, Insn, JmpOp, MapRef, Reg, Size, Src, SwapBits, Width, decode_all,
    encode_all,
};
use proptest::prelude::*;
use proptest::sample::select;

fn reg() -> impl Strategy<Value = Reg> {
    select(Reg::ALL.to_vec())
}

fn width() -> impl Strategy<Value = Width> {
    select(vec![Width::W32, Width::W64])
}

fn size() -> impl Strategy<Value = Size> {
    select(vec![Size::B, Size::H, Size::W, Size::DW])
}

fn src() -> impl Strategy<Value = Src> {
    prop_oneof![reg().prop_map(Src::Reg), any::<i32>().prop_map(Src::Imm)]
}

fn insn() -> impl Strategy<Value = Insn> {
    prop_oneof![
        (width(), select(AluOp::ALL.to_vec()), reg(), src()).prop_map(|(width, op, dst, src)| {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            }
        }),
        (width(), reg()).prop_map(|(width, dst)| Insn::Neg { width, dst }),
        (
            select(vec![ByteOrder::ToLe, ByteOrder::ToBe, ByteOrder::Swap]),
            select(vec![SwapBits::B16, SwapBits::B32, SwapBits::B64]),
            reg()
        )
            .prop_map(|(order, bits, dst)| Insn::Endian { order, bits, dst }),
        (
            width(),
            select(JmpOp::ALL.to_vec()),
            reg(),
            src(),
            any::<i16>()
        )
            .prop_map(|(width, op, dst, src, off)| Insn::JumpIf {
                width,
                op,
                dst,
                src,
                off
            }),
        any::<i16>().prop_map(|off| Insn::Ja { off }),
        any::<u32>().prop_map(|helper| Insn::Call { helper }),
        any::<i32>().prop_map(|off| Insn::CallLocal { off }),
        Just(Insn::Exit),
        (size(), reg(), reg(), any::<i16>()).prop_map(|(size, dst, base, off)| Insn::Load {
            size,
            dst,
            base,
            off
        }),
        (size(), reg(), any::<i16>(), reg()).prop_map(|(size, base, off, src)| Insn::Store {
            size,
            base,
            off,
            src
        }),
        (size(), reg(), any::<i16>(), any::<i32>()).prop_map(|(size, base, off, imm)| {
            Insn::StoreImm {
                size,
                base,
                off,
                imm,
            }
        }),
        (
            width(),
            select(AtomicOp::ALL.to_vec()),
            reg(),
            any::<i16>(),
            reg()
        )
            .prop_map(|(width, op, base, off, src)| Insn::Atomic {
                width,
                op,
                base,
                off,
                src
            }),
        (reg(), any::<u64>()).prop_map(|(dst, imm)| Insn::LdImm64 { dst, imm }),
        (reg(), any::<u32>()).prop_map(|(dst, map)| Insn::LdMap {
            dst,
            map: MapRef(map)
        }),
    ]
}

/// Bytes biased towards valid-looking opcodes so the decoder's deeper
/// checks get exercised, not only the opcode table.
fn slot_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (insn(), any::<usize>(), any::<u8>()).prop_map(|(insn, at, byte)| {
            let mut bytes = insn.encode().to_vec();
            let len = bytes.len();
            bytes[at % len] ^= byte;
            bytes
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn decode_inverts_encode(insn in insn()) {
        let encoded = insn.encode();
        prop_assert_eq!(encoded.len(), insn.slots() * 8);
        prop_assert_eq!(Insn::decode(&encoded), Ok(insn));
        prop_assert_eq!(encoded[0], insn.opcode());
    }

    #[test]
    fn decoding_is_canonical(bytes in slot_bytes()) {
        // Never panics; whatever it accepts re-encodes to the same bytes.
        if let Ok(insn) = Insn::decode(&bytes) {
            let encoded = insn.encode();
            prop_assert_eq!(&bytes[..encoded.len()], encoded.as_bytes());
        }
    }

    #[test]
    fn streams_round_trip(insns in prop::collection::vec(insn(), 0..20)) {
        let bytes = encode_all(&insns);
        prop_assert_eq!(decode_all(&bytes), Ok(insns));
    }

    #[test]
    fn stream_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(insns) = decode_all(&bytes) {
            prop_assert_eq!(encode_all(&insns), bytes);
        }
    }

    #[test]
    fn display_never_panics(insn in insn()) {
        prop_assert!(!insn.to_string().is_empty());
    }
}

#[derive(Clone, Debug)]
enum Action {
    Mov,
    Wide,
    Jump(usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Mov),
        Just(Action::Wide),
        any::<usize>().prop_map(Action::Jump),
    ]
}

proptest! {
    /// Every resolved jump lands on the slot its label was bound to,
    /// whatever mix of one- and two-slot instructions lies in between.
    #[test]
    fn jumps_land_on_their_labels(
        actions in prop::collection::vec(action(), 0..60),
        binds in prop::collection::vec(any::<usize>(), 1..6),
    ) {
        let mut asm = patronus_codegen::insn::Asm::new();
        let labels: Vec<_> = binds.iter().map(|_| asm.new_label()).collect();
        let bind_at: Vec<usize> = binds.iter().map(|b| b % (actions.len() + 1)).collect();
        let mut jumps = Vec::new();
        for position in 0..=actions.len() {
            for (label, _) in bind_at.iter().enumerate().filter(|(_, at)| **at == position) {
                asm.bind(labels[label]);
            }
            match actions.get(position) {
                Some(Action::Mov) => asm.mov64_imm(Reg::R0, 0),
                Some(Action::Wide) => asm.ld_imm64(Reg::R1, u64::MAX),
                Some(Action::Jump(k)) => {
                    let label = k % labels.len();
                    jumps.push((asm.len(), label));
                    asm.ja(labels[label]);
                }
                None => {}
            }
        }
        asm.exit();
        let program = asm.finish().unwrap();

        let mut slot_of = Vec::new();
        let mut slot = 0;
        for insn in program.insns() {
            slot_of.push(slot);
            slot += insn.slots();
        }
        for (index, label) in jumps {
            let Insn::Ja { off } = program.insns()[index] else {
                panic!("instruction {index} is not a jump");
            };
            let name = format!("L{label}");
            let bound = program.labels().iter().find(|(_, n)| *n == name).unwrap().0;
            let landing = slot_of[index] as i64 + 1 + i64::from(off);
            prop_assert_eq!(landing, slot_of[bound] as i64);
        }
    }
}
