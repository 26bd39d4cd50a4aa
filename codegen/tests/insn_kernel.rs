//! Kernel ABI numbers and the stack frame allocator.

use patronus_codegen::insn::kernel::Helper;
use patronus_codegen::insn::regs::{Frame, MAX_STACK, StackSlot};

#[test]
fn helper_numbers_match_uapi() {
    // From `enum bpf_func_id` in linux/bpf.h (printed by a C program
    // including the installed header).
    let expected = [
        (Helper::MapLookupElem, 1),
        (Helper::MapUpdateElem, 2),
        (Helper::MapDeleteElem, 3),
        (Helper::KtimeGetNs, 5),
        (Helper::TracePrintk, 6),
        (Helper::GetPrandomU32, 7),
        (Helper::GetSmpProcessorId, 8),
        (Helper::TailCall, 12),
        (Helper::Redirect, 23),
        (Helper::CsumDiff, 28),
        (Helper::XdpAdjustHead, 44),
        (Helper::RedirectMap, 51),
        (Helper::KtimeGetBootNs, 125),
        (Helper::RingbufOutput, 130),
        (Helper::RingbufReserve, 131),
        (Helper::RingbufSubmit, 132),
        (Helper::RingbufDiscard, 133),
        (Helper::KtimeGetCoarseNs, 160),
    ];
    assert_eq!(expected.len(), Helper::ALL.len());
    for (helper, id) in expected {
        assert_eq!(helper.id(), id, "{helper:?}");
        assert_eq!(Helper::from_id(id), Some(helper));
        assert!(helper.name().starts_with("bpf_"));
    }
    assert_eq!(Helper::from_id(4), None);
}

#[test]
fn frame_hands_out_aligned_slots_until_full() {
    let mut frame = Frame::new();
    let key = frame.alloc("lpm key", 20).unwrap();
    assert_eq!(key, StackSlot { off: -24, size: 20 });
    assert_eq!(key.at(0), Some(-24));
    assert_eq!(key.at(19), Some(-5));
    assert_eq!(key.at(20), None);
    let word = frame.alloc("port", 2).unwrap();
    assert_eq!(word.off, -32);
    assert_eq!(frame.used(), 32);
    frame.alloc("rest", MAX_STACK - 32).unwrap();
    let error = frame.alloc("one too many", 1).unwrap_err();
    assert_eq!(error.used, MAX_STACK);
    assert!(error.to_string().contains("`one too many`"));
    assert_eq!(frame.slots().len(), 3);
}
