//! Classifier lookups of a rule phase: per classifier, inline compares
//! (table-driven: [`inline_tests`]) or one map lookup (with the DIR-24
//! arrays in front of a big IPv4 trie), delivering its bitmap in a
//! register (one-word phases) or as a pointer on the stack (wide phases,
//! whose constants live in the phase's `consts_<phase>` map).

use patronus_compiler::ir::{Classifier, Field, Key, PhasePlan, Storage};
use patronus_compiler::net::Prefix;
use patronus_compiler::typed::Family;

use super::Gen;
use super::ctx::*;
use super::cubes::flag_groups;
use crate::error::CodegenError;
use crate::insn::regs::{FP, SCRATCH};
use crate::insn::{JmpOp, Label, MapRef, Reg, SwapBits, Width};
use crate::layout::{applicable, dir24, inline_order};

/// How a classifier's result is delivered.
#[derive(Clone, Copy)]
pub(super) enum Mode {
    /// One word: `r1` = the bitmap, then `r9 &= r1`, leave when zero.
    Word { nomatch: Label },
    /// Wide: `r0` = pointer to the bitmap, saved at `slot`.
    Wide {
        phase: usize,
        slot: i16,
        nomatch: Label,
    },
}

/// How a phase's match result is read.
pub(super) enum Matcher {
    /// In r9.
    Word,
    /// Pointers to the start bitmap and each classifier's bitmap.
    Wide { start_slot: i16, slots: Vec<i16> },
}

/// The accumulator (one word of it, for wide phases).
pub(super) const ACC: Reg = SCRATCH;

/// The words of a start bitmap that can be non-zero.
pub(super) fn live_words(start: &patronus_compiler::ir::Bits) -> Vec<usize> {
    (0..start.0.len()).filter(|&w| start.0[w] != 0).collect()
}

impl Gen<'_> {
    /// Emits the phase's match. One word: falls through with the (non-zero)
    /// result in r9, jumps to `nomatch` when it is zero. Wide: looks every
    /// classifier up and saves the bitmap pointers; [`Gen::wide_word`] then
    /// computes one word of the result.
    pub(super) fn match_phase(
        &mut self,
        pi: usize,
        family: Family,
        nomatch: Label,
    ) -> Result<Matcher, CodegenError> {
        let phase: &PhasePlan = &self.program.phases[pi];
        let start = phase.start_for(family).clone();
        let classifiers = applicable(phase, family);
        if phase.words == 1 {
            self.asm.ld_imm64(ACC, start.0[0]);
            for ci in classifiers {
                let c = &self.program.phases[pi].classifiers[ci];
                self.classifier(c, Mode::Word { nomatch })?;
            }
            return Ok(Matcher::Word);
        }
        // A constant bitmap's lookup cannot fail (the key is in range), but
        // the verifier wants the NULL check: it goes to a local abort, as
        // `nomatch` may be out of jump range past the phase's words.
        let _ = nomatch;
        let body = self.asm.new_label();
        let nomatch = self.asm.named_label("consts_lookup_failed");
        self.asm.ja(body);
        self.asm.bind(nomatch);
        self.asm
            .mov64_imm(Reg::R0, crate::insn::kernel::xdp_action::ABORTED);
        self.asm.exit();
        self.asm.bind(body);
        let start_slot = self.ptr_slot(0)?;
        self.const_ptr(pi, &start.0, nomatch)?;
        self.asm.stx_dw(FP, start_slot, Reg::R0);
        let mut slots = Vec::new();
        for (k, ci) in classifiers.into_iter().enumerate() {
            let slot = self.ptr_slot(k + 1)?;
            let c = &self.program.phases[pi].classifiers[ci];
            self.classifier(
                c,
                Mode::Wide {
                    phase: pi,
                    slot,
                    nomatch,
                },
            )?;
            slots.push(slot);
        }
        Ok(Matcher::Wide { start_slot, slots })
    }

    /// r9 = word `w` of a wide phase's result.
    pub(super) fn wide_word(&mut self, matcher: &Matcher, w: usize) {
        let Matcher::Wide { start_slot, slots } = matcher else {
            return;
        };
        let off = (8 * w) as i16;
        self.asm.comment(format!("word {w}"));
        self.asm.ldx_dw(Reg::R1, FP, *start_slot);
        self.asm.ldx_dw(ACC, Reg::R1, off);
        for &slot in slots {
            self.asm.ldx_dw(Reg::R1, FP, slot);
            self.asm.ldx_dw(Reg::R1, Reg::R1, off);
            self.asm.alu64(crate::insn::AluOp::And, ACC, Reg::R1);
        }
    }

    /// A stack slot for the `k`th bitmap pointer of a wide phase.
    fn ptr_slot(&mut self, k: usize) -> Result<i16, CodegenError> {
        let name = format!("bitmap_ptr{k}");
        if let Some((_, s)) = self.frame.slots().iter().find(|(n, _)| *n == name) {
            return Ok(s.off);
        }
        Ok(self.frame.alloc(&name, 8)?.off)
    }

    /// `r0` = pointer to a constant bitmap of a wide phase (in its consts
    /// map); jumps to `nomatch` if the lookup fails (it cannot).
    fn const_ptr(&mut self, pi: usize, bits: &[u64], nomatch: Label) -> Result<(), CodegenError> {
        let (map, index) = self.layout.const_ref(pi, bits)?;
        self.asm.st_w(FP, self.key.off, index as i32);
        crate::state::emit_lookup_at(&mut self.asm, map, self.key.off);
        self.asm.jeq_imm(Reg::R0, 0, nomatch);
        Ok(())
    }

    /// Delivers a constant bitmap in `mode`.
    fn deliver_const(&mut self, mode: Mode, bits: &[u64], done: Label) -> Result<(), CodegenError> {
        match mode {
            Mode::Word { nomatch } => {
                if bits[0] == 0 {
                    self.asm.ja(nomatch);
                } else {
                    self.asm.ld_imm64(Reg::R1, bits[0]);
                    self.asm.ja(done);
                }
            }
            Mode::Wide { phase, nomatch, .. } => {
                self.const_ptr(phase, bits, nomatch)?;
                self.asm.ja(done);
            }
        }
        Ok(())
    }

    /// After a map lookup: a hit delivers the value, a miss falls through.
    fn deliver_hit(&mut self, mode: Mode, done: Label) {
        let miss = self.asm.new_label();
        self.asm.jeq_imm(Reg::R0, 0, miss);
        if let Mode::Word { .. } = mode {
            self.asm.ldx_dw(Reg::R1, Reg::R0, 0);
        }
        self.asm.ja(done);
        self.asm.bind(miss);
    }

    fn finish_delivery(&mut self, mode: Mode, done: Label) {
        self.asm.bind(done);
        match mode {
            Mode::Word { nomatch } => {
                self.asm.alu64(crate::insn::AluOp::And, ACC, Reg::R1);
                self.asm.jeq_imm(ACC, 0, nomatch);
            }
            Mode::Wide { slot, .. } => self.asm.stx_dw(FP, slot, Reg::R0),
        }
    }

    /// `goto absent_label` when the packet lacks the field; `false` for
    /// fields every IP packet has (no jump emitted).
    fn absent_check(&mut self, field: Field, absent: Label) -> bool {
        let a = &mut self.asm;
        match field {
            Field::SrcPort | Field::DstPort => {
                let present = a.new_label();
                a.ldx_b(Reg::R1, FP, self.pkt.at(PKT_L4));
                a.jeq_imm(Reg::R1, i32::from(L4_TCP), present);
                a.jne_imm(Reg::R1, i32::from(L4_UDP), absent);
                a.bind(present);
            }
            Field::Icmp => {
                a.ldx_b(Reg::R1, FP, self.pkt.at(PKT_L4));
                a.jne_imm(Reg::R1, i32::from(L4_ICMP), absent);
            }
            Field::TcpFlags => {
                a.ldx_b(Reg::R1, FP, self.pkt.at(PKT_L4));
                a.jne_imm(Reg::R1, i32::from(L4_TCP), absent);
            }
            Field::Vlan => {
                a.ldx_b(Reg::R1, FP, self.pkt.at(PKT_HAS_VLAN));
                a.jeq_imm(Reg::R1, 0, absent);
            }
            Field::Proto | Field::SrcAddr(_) | Field::DstAddr(_) => return false,
        }
        true
    }

    /// One classifier: inline compares or a map lookup, delivering its
    /// bitmap per `mode`.
    fn classifier(&mut self, c: &Classifier, mode: Mode) -> Result<(), CodegenError> {
        let done = self.asm.new_label();
        let absent = self.asm.new_label();
        self.asm.comment(format!(
            "lookup {} ({})",
            c.field.name(),
            match c.storage {
                Storage::Inline => format!("inline, {} entries", c.len()),
                Storage::Map(i) => format!("map {}", self.program.maps[i].name),
            }
        ));
        let can_be_absent = self.absent_check(c.field, absent);
        match c.storage {
            Storage::Inline => self.inline_entries(c, mode, done)?,
            Storage::Map(m) => self.map_lookup(c, MapRef(m as u32), mode, done)?,
        }
        self.deliver_const(mode, &c.miss.0, done)?;
        if can_be_absent {
            self.asm.bind(absent);
            self.deliver_const(mode, &c.absent.0, done)?;
        }
        self.finish_delivery(mode, done);
        Ok(())
    }

    /// Inline compares, from the table [`inline_tests`] makes: the field is
    /// loaded once ([`inline_loads`]), then each test sequence that holds
    /// delivers its bitmap and jumps to `done`; falls through on a miss.
    fn inline_entries(
        &mut self,
        c: &Classifier,
        mode: Mode,
        done: Label,
    ) -> Result<(), CodegenError> {
        for load in inline_loads(c.field) {
            let a = &mut self.asm;
            match load {
                Load::Byte(reg, at) => a.ldx_b(reg, FP, self.pkt.at(at)),
                Load::Half(reg, at) => a.ldx_h(reg, FP, self.pkt.at(at)),
                Load::HalfWire(reg, at) => {
                    a.ldx_h(reg, FP, self.pkt.at(at));
                    a.to_be(reg, SwapBits::B16);
                }
            }
        }
        for (bits, tests) in inline_tests(c) {
            let next = self.asm.new_label();
            for test in tests {
                match test {
                    Test::Eq(reg, value) => self.asm.jne_imm(reg, value, next),
                    Test::Within(reg, lo, hi) => {
                        self.asm.jlt_imm(reg, lo, next);
                        self.asm.jgt_imm(reg, hi, next);
                    }
                    Test::Masked(mask, set) => {
                        self.asm.mov64_reg(Reg::R3, Reg::R2);
                        self.asm.and64_imm(Reg::R3, i32::from(mask));
                        self.asm.jne_imm(Reg::R3, i32::from(set), next);
                    }
                    Test::Prefix(p, family, base) => self.prefix_test(p, family, base, next),
                }
            }
            self.deliver_const(mode, &bits, done)?;
            self.asm.bind(next);
        }
        Ok(())
    }

    /// `goto next` unless the address at `base` is inside `p`. Compares
    /// 32-bit words in host order under the prefix mask.
    fn prefix_test(&mut self, p: Prefix, family: Family, base: i16, next: Label) {
        let bytes: Vec<u8> = match p.addr {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let words = if family == Family::Ipv4 { 1 } else { 4 };
        let len = u32::from(p.len);
        for w in 0..words {
            let covered = len.saturating_sub(32 * w as u32).min(32);
            if covered == 0 {
                break;
            }
            let mask: u32 = if covered == 32 {
                u32::MAX
            } else {
                !(u32::MAX >> covered)
            };
            let net = u32::from_be_bytes([
                bytes[4 * w],
                bytes[4 * w + 1],
                bytes[4 * w + 2],
                bytes[4 * w + 3],
            ]) & mask;
            self.asm
                .ldx_w(Reg::R3, FP, self.pkt.at(base) + 4 * w as i16);
            self.asm.to_be(Reg::R3, SwapBits::B32);
            if mask != u32::MAX {
                self.asm.and32_imm(Reg::R3, mask as i32);
            }
            self.asm
                .jump_if(Width::W32, JmpOp::Ne, Reg::R3, net as i32, next);
        }
    }

    /// Builds the key, looks it up; a hit delivers the value and jumps to
    /// `done`, a miss falls through.
    fn map_lookup(
        &mut self,
        c: &Classifier,
        map: MapRef,
        mode: Mode,
        done: Label,
    ) -> Result<(), CodegenError> {
        let pkt = self.pkt;
        let key = self.key.off;
        let kind = self.program.maps[map.0 as usize].kind;
        let mut dir24_miss = None;
        let mut key_ptr = key;
        let a = &mut self.asm;
        match c.field {
            Field::SrcAddr(f) | Field::DstAddr(f) => {
                let base = if matches!(c.field, Field::SrcAddr(_)) {
                    PKT_SRC
                } else {
                    PKT_DST
                };
                let words = if f == Family::Ipv4 { 1 } else { 4 };
                if let Some(arrays) = self.layout.dir24_of(map.0 as usize) {
                    dir24_miss = Some(self.dir24_lookup(arrays, base, mode, done));
                }
                let a = &mut self.asm;
                if kind == patronus_compiler::ir::plan::MapKind::LpmTrie {
                    a.st_w(FP, key, 32 * words);
                    for w in 0..words as i16 {
                        a.ldx_w(Reg::R1, FP, pkt.at(base) + 4 * w);
                        a.stx_w(FP, key + 4 + 4 * w, Reg::R1);
                    }
                } else {
                    // Hash of full addresses: the packet slot is the key.
                    key_ptr = pkt.at(base);
                }
            }
            Field::Proto => {
                a.ldx_b(Reg::R1, FP, pkt.at(PKT_PROTO));
                a.stx_w(FP, key, Reg::R1);
            }
            Field::TcpFlags => {
                a.ldx_b(Reg::R1, FP, pkt.at(PKT_TCP_FLAGS));
                a.stx_w(FP, key, Reg::R1);
            }
            Field::SrcPort | Field::DstPort => {
                let at = if c.field == Field::SrcPort {
                    PKT_SPORT
                } else {
                    PKT_DPORT
                };
                a.ldx_h(Reg::R1, FP, pkt.at(at));
                a.to_be(Reg::R1, SwapBits::B16);
                if kind == patronus_compiler::ir::plan::MapKind::Array {
                    a.stx_w(FP, key, Reg::R1);
                } else {
                    a.stx_h(FP, key, Reg::R1);
                }
            }
            Field::Vlan => {
                a.ldx_h(Reg::R1, FP, pkt.at(PKT_VLAN));
                a.stx_h(FP, key, Reg::R1);
            }
            Field::Icmp => {
                // {type, code, any_code = 0, pad}, then {type, 0, 1, pad}.
                a.ldx_b(Reg::R1, FP, pkt.at(PKT_ICMP_TYPE));
                a.ldx_b(Reg::R2, FP, pkt.at(PKT_ICMP_CODE));
                a.lsh64_imm(Reg::R2, 8);
                a.or64_reg(Reg::R1, Reg::R2);
                a.stx_w(FP, key, Reg::R1);
                crate::state::emit_lookup_at(a, map, key);
                self.deliver_hit(mode, done);
                let a = &mut self.asm;
                a.ldx_b(Reg::R1, FP, pkt.at(PKT_ICMP_TYPE));
                a.alu64(crate::insn::AluOp::Or, Reg::R1, 0x1_0000);
                a.stx_w(FP, key, Reg::R1);
            }
        }
        let a = &mut self.asm;
        crate::state::emit_lookup_at(a, map, key_ptr);
        self.deliver_hit(mode, done);
        if let Some(miss) = dir24_miss {
            self.asm.bind(miss);
        }
        Ok(())
    }

    /// The DIR-24 arrays in front of a big IPv4 trie ([`dir24`]): a slot
    /// with a bitmap delivers it and jumps to `done`; an empty slot jumps
    /// to the returned label, to be bound past the trie lookup (where the
    /// miss is delivered); a [`dir24::FALLBACK`] slot falls through to the
    /// trie lookup that follows.
    fn dir24_lookup(
        &mut self,
        (slots_map, bitmaps_map): (MapRef, MapRef),
        base: i16,
        mode: Mode,
        done: Label,
    ) -> Label {
        let key = self.key.off;
        let addr = self.pkt.at(base);
        let trie = self.asm.new_label();
        let miss = self.asm.new_label();
        let a = &mut self.asm;
        a.comment("DIR-24: the address's /24 slot");
        a.ldx_w(Reg::R1, FP, addr);
        a.to_be(Reg::R1, SwapBits::B32);
        a.rsh64_imm(Reg::R1, 9);
        a.stx_w(FP, key, Reg::R1);
        crate::state::emit_lookup_at(a, slots_map, key);
        a.jeq_imm(Reg::R0, 0, trie);
        // Which u32 of the element: bit 8 of the address (host order).
        a.ldx_w(Reg::R1, FP, addr);
        a.to_be(Reg::R1, SwapBits::B32);
        a.rsh64_imm(Reg::R1, 6);
        a.and64_imm(Reg::R1, 4);
        a.add64_reg(Reg::R0, Reg::R1);
        a.ldx_w(Reg::R1, Reg::R0, 0);
        a.jeq_imm(Reg::R1, 0, miss);
        a.jump_if(Width::W32, JmpOp::Eq, Reg::R1, dir24::FALLBACK as i32, trie);
        a.stx_w(FP, key, Reg::R1);
        crate::state::emit_lookup_at(a, bitmaps_map, key);
        self.deliver_hit(mode, done);
        self.asm.ja(miss);
        self.asm.bind(trie);
        miss
    }
}

/// How an inline classifier's field is loaded before its compares.
enum Load {
    /// A byte at `PKT_*` offset.
    Byte(Reg, i16),
    /// A 16-bit value kept in host order.
    Half(Reg, i16),
    /// A 16-bit value in network order, swapped to host order.
    HalfWire(Reg, i16),
}

/// One compare of an inline entry; a failing one jumps to the next entry.
enum Test {
    /// `reg == value`.
    Eq(Reg, i32),
    /// `lo <= reg <= hi`.
    Within(Reg, i32, i32),
    /// `r2 & mask == set` (through r3): a TCP-flags cube.
    Masked(u8, u8),
    /// The address at `PKT_*` offset `base` is inside the prefix.
    Prefix(Prefix, Family, i16),
}

/// The loads of `field` for its inline compares: r2 (and r3 for the ICMP
/// code); addresses are read word by word by each prefix test.
fn inline_loads(field: Field) -> Vec<Load> {
    match field {
        Field::Proto => vec![Load::Byte(Reg::R2, PKT_PROTO)],
        Field::SrcPort => vec![Load::HalfWire(Reg::R2, PKT_SPORT)],
        Field::DstPort => vec![Load::HalfWire(Reg::R2, PKT_DPORT)],
        Field::Icmp => vec![
            Load::Byte(Reg::R2, PKT_ICMP_TYPE),
            Load::Byte(Reg::R3, PKT_ICMP_CODE),
        ],
        Field::TcpFlags => vec![Load::Byte(Reg::R2, PKT_TCP_FLAGS)],
        Field::Vlan => vec![Load::Half(Reg::R2, PKT_VLAN)],
        Field::SrcAddr(_) | Field::DstAddr(_) => Vec::new(),
    }
}

/// The inline compares of `c`, in test order ([`inline_order`]; TCP flags
/// as cubes grouped by bitmap): each entry's bitmap and the tests that
/// must all hold for it.
fn inline_tests(c: &Classifier) -> Vec<(Vec<u64>, Vec<Test>)> {
    if c.field == Field::TcpFlags {
        return flag_groups(c)
            .into_iter()
            .flat_map(|(bits, cubes)| {
                cubes
                    .into_iter()
                    .map(move |(mask, set)| (bits.clone(), vec![Test::Masked(mask, set)]))
            })
            .collect();
    }
    let base = match c.field {
        Field::SrcAddr(_) => PKT_SRC,
        _ => PKT_DST,
    };
    inline_order(c)
        .into_iter()
        .filter_map(|i| {
            let tests = match (c.keys[i], c.field) {
                (Key::Proto(p), _) => vec![Test::Eq(Reg::R2, i32::from(p))],
                (Key::Prefix(p), Field::SrcAddr(f) | Field::DstAddr(f)) => {
                    vec![Test::Prefix(p, f, base)]
                }
                (Key::Ports(r), _) if r.lo == r.hi => vec![Test::Eq(Reg::R2, i32::from(r.lo))],
                (Key::Ports(r), _) => {
                    vec![Test::Within(Reg::R2, i32::from(r.lo), i32::from(r.hi))]
                }
                (Key::Icmp { ty, code }, _) => {
                    let mut tests = vec![Test::Eq(Reg::R2, i32::from(ty))];
                    tests.extend(code.map(|code| Test::Eq(Reg::R3, i32::from(code))));
                    tests
                }
                (Key::Vlan(v), _) => vec![Test::Eq(Reg::R2, i32::from(v))],
                _ => return None,
            };
            Some((c.entry(i).to_vec(), tests))
        })
        .collect()
}
