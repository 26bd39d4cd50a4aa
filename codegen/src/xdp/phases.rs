//! The rule phases of one family's path: deny, established, limit, allow,
//! default (LANGUAGE.md §3), from the IR's classifiers.
//!
//! Matching a phase: the family's start bitmap ANDed with one bitmap per
//! classifier (an inline compare chain or one map lookup).
//!
//! - Phases of at most 64 rules (one word) keep the accumulator in r9 and
//!   leave the phase as soon as it is zero.
//! - Wider phases look every classifier up first and keep a pointer to its
//!   bitmap on the stack (constant bitmaps — start, miss, absent, inline
//!   entries — live in the phase's `consts_<phase>` array map, laid out by
//!   `crate::layout`), then AND
//!   the bitmaps word by word (unrolled), stopping at the first non-zero
//!   word for deny/allow.
//!
//! A non-zero word goes to a binary tree of `jset` tests over the rules
//! that can match on this path (lowest bit = first rule in the file wins);
//! the limit phase instead tests each rule's bit in file order and charges
//! it.

use patronus_compiler::ir::{self, Classifier, Field, Key, PhaseKind, PhasePlan, Storage};
use patronus_compiler::net::Prefix;
use patronus_compiler::semantics::{Counter, Phase};
use patronus_compiler::typed::{Family, RuleId};

use super::Gen;
use super::ctx::*;
use crate::error::CodegenError;
use crate::insn::regs::{FP, SCRATCH};
use crate::insn::{AluOp, Asm, JmpOp, Label, MapRef, Reg, SwapBits, Width};
use crate::layout::{applicable, candidates, dir24, inline_order};
use crate::state;

/// The accumulator (one word of it, for wide phases).
const ACC: Reg = SCRATCH;

/// How a classifier's result is delivered.
#[derive(Clone, Copy)]
enum Mode {
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
enum Matcher {
    /// In r9.
    Word,
    /// Pointers to the start bitmap and each classifier's bitmap.
    Wide { start_slot: i16, slots: Vec<i16> },
}

/// The words of a start bitmap that can be non-zero.
fn live_words(start: &patronus_compiler::ir::Bits) -> Vec<usize> {
    (0..start.0.len()).filter(|&w| start.0[w] != 0).collect()
}

impl Gen<'_> {
    pub(super) fn rule_phases(&mut self, family: Family) -> Result<(), CodegenError> {
        let program = self.program;
        for (pi, phase) in program.phases.iter().enumerate() {
            if phase.kind == PhaseKind::Deny {
                self.decide_phase(pi, family)?;
            }
        }
        if program.usage.conntrack {
            let pass = self.asm.new_label();
            let next = self.asm.new_label();
            self.asm.comment("phase 3: established");
            self.with_hook_ctx(family, |asm, ctx, program| {
                state::emit_established(asm, ctx, program, pass)
            })?;
            self.asm.ja(next);
            self.asm.bind(pass);
            self.leave(Phase::Established, true)?;
            self.asm.bind(next);
        }
        for (pi, phase) in program.phases.iter().enumerate() {
            match phase.kind {
                PhaseKind::Limit => self.limit_phase(pi, family)?,
                PhaseKind::Allow => self.decide_phase(pi, family)?,
                PhaseKind::Deny => {}
            }
        }
        self.asm.comment("phase 6: default");
        let pass = self.default_pass();
        self.leave(Phase::Default, pass)
    }

    fn rule_counter(&self, rule: RuleId) -> Result<i32, CodegenError> {
        self.counter_index(Counter::Rule(rule))
    }

    fn rule_name(&self, rule: RuleId) -> String {
        self.program
            .rules
            .get(rule.0 as usize)
            .map_or_else(|| format!("r{}", rule.0), |r| r.name.clone())
    }

    /// Runs one state hook (`crate::state`) with the context it needs: the
    /// packet slots, frame and layout, for `family`'s path.
    fn with_hook_ctx<R>(
        &mut self,
        family: Family,
        hook: impl FnOnce(&mut Asm, &mut XdpCtx<'_>, &ir::Program) -> R,
    ) -> R {
        let program = self.program;
        let mut ctx = XdpCtx {
            program,
            family,
            pkt: self.pkt,
            frame: &mut self.frame,
            layout: self.layout,
        };
        hook(&mut self.asm, &mut ctx, program)
    }

    /// Deny or allow: the lowest matching rule decides. Per word of the
    /// result: a tree of `jset` tests whose leaves name the rule, one done
    /// block, and the word's own exit blocks (every jump stays short).
    fn decide_phase(&mut self, pi: usize, family: Family) -> Result<(), CodegenError> {
        let phase = &self.program.phases[pi];
        let start = phase.start_for(family).clone();
        if start.is_zero() {
            return Ok(());
        }
        let kind = phase.kind;
        let nomatch = self
            .asm
            .named_label(format!("{}_{}_nomatch", kind.name(), fam(family)));
        self.asm.comment(format!(
            "phase {}: {} rules, {} word(s)",
            kind.name(),
            phase.rules.len(),
            phase.words
        ));
        let matcher = self.match_phase(pi, family, nomatch)?;
        let words: Vec<usize> = match matcher {
            Matcher::Word => vec![0],
            Matcher::Wide { .. } => live_words(&start),
        };
        // With candidate lists a word's block is entered by number; the
        // word scan stays for packets whose primary bitmap is too long.
        let scan = self.asm.new_label();
        let entries = match &matcher {
            Matcher::Wide { start_slot, slots } => {
                self.candidate_search(pi, family, *start_slot, slots, &words, nomatch, scan)?
            }
            Matcher::Word => None,
        };
        // Every primary list fits: no packet scans, the words are only
        // entered by number.
        let fi = ir::family_index(family);
        let scans = match (&entries, self.layout.candidates(pi)) {
            (Some(_), Some(cand)) => cand.needs_scan[fi],
            _ => true,
        };
        if entries.is_some() && scans {
            self.asm.bind(scan);
        }
        for w in words {
            let next_word = self.asm.new_label();
            if let (Matcher::Wide { .. }, true) = (&matcher, scans) {
                self.wide_word(&matcher, w);
                self.asm.jeq_imm(ACC, 0, next_word);
            }
            if let Some(&(_, entry)) = entries.iter().flatten().find(|(ew, _)| *ew == w) {
                self.bind_far(entry);
            }
            let candidates: Vec<usize> = (0..64).filter(|b| start.0[w] >> b & 1 == 1).collect();
            let done = self.asm.new_label();
            self.lowest_bit_tree(pi, family, w, &candidates, done)?;
            self.asm.bind(done);
            let pass = kind == PhaseKind::Allow;
            if pass && self.program.usage.conntrack {
                self.with_hook_ctx(family, state::emit_track)?;
            }
            let index = self.counter_index(Counter::Phase(kind.phase()))?;
            self.asm.st_w(FP, self.phase_key.off, index);
            self.goto_exit(pass, true);
            self.flush_region()?;
            self.asm.bind(next_word);
        }
        if entries.is_some() {
            self.bind_far(nomatch);
        } else {
            self.asm.bind(nomatch);
        }
        Ok(())
    }

    /// The candidate-list search of a wide deny/allow phase (see
    /// [`super::candidates`]): tries the primary bitmap's candidates in
    /// order, each against the start bitmap and every other classifier's
    /// word, and on the first match puts that rule's bit alone in r9 and
    /// jumps to its word's block (returned per live word: `(word, label)`,
    /// bound by the caller with `bind_far`). No candidate left: `nomatch`
    /// (then bound with `bind_far` too); a [`candidates::LONG`] list:
    /// `scan`, the word scan. `None`: the phase only scans words.
    #[allow(clippy::too_many_arguments)]
    fn candidate_search(
        &mut self,
        pi: usize,
        family: Family,
        start_slot: i16,
        slots: &[i16],
        words: &[usize],
        nomatch: Label,
        scan: Label,
    ) -> Result<Option<Vec<(usize, Label)>>, CodegenError> {
        let Some(cand) = self.layout.candidates(pi).cloned() else {
            return Ok(None);
        };
        let fi = ir::family_index(family);
        let Some(primary) = cand.primary[fi] else {
            return Ok(None);
        };
        let phase = &self.program.phases[pi];
        let order = applicable(phase, family);
        let Some(p) = order.iter().position(|&ci| ci == primary) else {
            return Ok(None);
        };
        let nrules = phase.rules.len() as i32;
        self.asm.comment(format!(
            "candidates of {} (at most {})",
            phase.classifiers[primary].field.name(),
            cand.slots
        ));
        let nomatch_far = self.far_label(nomatch);
        let found = self.asm.new_label();
        for i in 0..cand.slots {
            let a = &mut self.asm;
            a.ldx_dw(Reg::R1, FP, slots[p]);
            a.ldx_h(Reg::R2, Reg::R1, cand.slot_offset(i) as i16);
            if i == 0 && cand.needs_scan[fi] {
                a.jeq_imm(Reg::R2, i32::from(candidates::LONG), scan);
            }
            // END (or any bit past the phase) ends the list.
            a.jge_imm(Reg::R2, nrules, nomatch_far);
            a.mov64_reg(Reg::R3, Reg::R2);
            a.alu64(AluOp::Rsh, Reg::R3, 6);
            a.alu64(AluOp::Lsh, Reg::R3, 3);
            a.ldx_dw(Reg::R1, FP, start_slot);
            a.add64_reg(Reg::R1, Reg::R3);
            a.ldx_dw(ACC, Reg::R1, 0);
            for (k, &slot) in slots.iter().enumerate() {
                if k == p {
                    continue;
                }
                a.ldx_dw(Reg::R1, FP, slot);
                a.add64_reg(Reg::R1, Reg::R3);
                a.ldx_dw(Reg::R1, Reg::R1, 0);
                a.alu64(AluOp::And, ACC, Reg::R1);
            }
            a.mov64_reg(Reg::R4, Reg::R2);
            a.alu64(AluOp::And, Reg::R4, 63);
            a.alu64(AluOp::Rsh, ACC, Reg::R4);
            a.alu64(AluOp::And, ACC, 1);
            a.jne_imm(ACC, 0, found);
        }
        self.asm.ja(nomatch_far);
        self.asm.bind(found);
        self.asm
            .comment("the matching rule's bit alone, then its word");
        self.asm.mov64_imm(ACC, 1);
        self.asm.alu64(AluOp::Lsh, ACC, Reg::R4);
        self.asm.alu64(AluOp::Rsh, Reg::R3, 3);
        let mut entries = Vec::with_capacity(words.len());
        for &w in words {
            let entry = self.asm.named_label(format!("word{w}"));
            entries.push((w, entry));
        }
        let targets: Vec<(usize, Label)> = entries
            .iter()
            .map(|&(w, entry)| (w, self.far_label(entry)))
            .collect();
        self.word_dispatch(&targets);
        self.flush_region()?;
        Ok(Some(entries))
    }

    /// A binary search on the word number in r3 over `targets` (sorted),
    /// jumping to the matching target; r3 is one of them.
    fn word_dispatch(&mut self, targets: &[(usize, Label)]) {
        if let [(_, only)] = targets {
            self.asm.ja(*only);
            return;
        }
        let half = targets.len() / 2;
        let right = self.asm.new_label();
        self.asm.jge_imm(Reg::R3, targets[half].0 as i32, right);
        self.word_dispatch(&targets[..half]);
        self.asm.bind(right);
        self.word_dispatch(&targets[half..]);
    }

    /// The leaf of a deciding rule: its counter index into `rule_key`
    /// (an index past the stats map for an `allow ... rate` rule, which the
    /// limit phase already counted: the lookup misses and nothing counts),
    /// its log event, then `done`.
    fn decide_leaf(
        &mut self,
        pi: usize,
        family: Family,
        bit: usize,
        done: Label,
    ) -> Result<(), CodegenError> {
        let phase = &self.program.phases[pi];
        let kind = phase.kind;
        let rule = phase.rules[bit];
        let info = &self.program.rules[rule.0 as usize];
        let (log, charged) = (info.log, info.rate.is_some());
        self.asm.comment(format!(
            "{} rule r{}: {}",
            kind.name(),
            rule.0,
            self.rule_name(rule)
        ));
        self.rule_marks.push((self.asm.len(), self.rule_name(rule)));
        let index = if kind == PhaseKind::Allow && charged {
            self.program.counters.len() as i32
        } else {
            self.rule_counter(rule)?
        };
        self.store_rule_index(index);
        if log {
            self.with_hook_ctx(family, |asm, ctx, program| {
                state::emit_log(asm, ctx, program, rule, kind == PhaseKind::Allow)
            })?;
        }
        self.asm.ja(done);
        Ok(())
    }

    /// Stores a deciding rule's counter index in `rule_key` as two 16-bit
    /// halves. A 32-bit constant there would be an array-map key the
    /// verifier tracks as a constant (and marks precise), so every rule's
    /// leaf would verify the shared tail (conntrack insert, counters, exit)
    /// once per rule; halves are not a constant key, so the leaves' states
    /// merge where they join (test `rule_leaves_merge_before_the_conntrack_tail`).
    fn store_rule_index(&mut self, index: i32) {
        self.asm.st_h(FP, self.rule_key.off, index & 0xFFFF);
        self.asm.st_h(FP, self.rule_key.off + 2, index >> 16);
    }

    /// The limit phase: every matching rule, in file order, takes a token.
    fn limit_phase(&mut self, pi: usize, family: Family) -> Result<(), CodegenError> {
        let phase = &self.program.phases[pi];
        let start = phase.start_for(family).clone();
        if start.is_zero() {
            return Ok(());
        }
        let nomatch = self
            .asm
            .named_label(format!("limit_{}_nomatch", fam(family)));
        self.asm.comment(format!(
            "phase limit: {} rules, {} word(s)",
            phase.rules.len(),
            phase.words
        ));
        let matcher = self.match_phase(pi, family, nomatch)?;
        let words: Vec<usize> = match matcher {
            Matcher::Word => vec![0],
            Matcher::Wide { .. } => live_words(&start),
        };
        for w in words {
            let next_word = self.asm.new_label();
            if let Matcher::Wide { .. } = matcher {
                self.wide_word(&matcher, w);
                self.asm.jeq_imm(ACC, 0, next_word);
            }
            // Launder the word through two 32-bit stores: reloaded as one
            // 64-bit value it is an unknown scalar, so the bit tests below
            // neither prune paths by its value nor mark it precise. A
            // precise word (each matcher path giving a different range)
            // stops the verifier from merging paths at each rule's join:
            // the path count multiplies with every charged rule.
            self.asm
                .comment("hide the bitmap word's value from the verifier");
            self.asm.stx_w(FP, self.acc_save.off, ACC);
            self.asm.mov64_reg(Reg::R1, ACC);
            self.asm.rsh64_imm(Reg::R1, 32);
            self.asm.stx_w(FP, self.acc_save.off + 4, Reg::R1);
            self.asm.ldx_dw(ACC, FP, self.acc_save.off);
            let mut drops = Vec::new();
            for b in (0..64).filter(|b| start.0[w] >> b & 1 == 1) {
                let rule = self.program.phases[pi].rules[w * 64 + b];
                let skip = self.asm.new_label();
                let drop = self.asm.new_label();
                self.asm
                    .comment(format!("limit rule r{}: {}", rule.0, self.rule_name(rule)));
                self.asm.mov64_reg(Reg::R1, ACC);
                self.asm.rsh64_imm(Reg::R1, b as i32);
                self.asm.and64_imm(Reg::R1, 1);
                self.asm.jeq_imm(Reg::R1, 0, skip);
                self.asm.stx_dw(FP, self.acc_save.off, ACC);
                self.with_hook_ctx(family, |asm, ctx, program| {
                    state::emit_rate_limit(asm, ctx, program, rule, drop)
                })?;
                let index = self.rule_counter(rule)?;
                self.asm.st_w(FP, self.rule_key.off, index);
                self.count(self.rule_key);
                self.asm.ldx_dw(ACC, FP, self.acc_save.off);
                self.asm.bind(skip);
                drops.push((rule, drop));
            }
            self.asm.ja(next_word);
            for (rule, drop) in drops {
                self.asm.bind(drop);
                self.asm
                    .comment(format!("limit rule r{}: bucket empty", rule.0));
                let index = self.rule_counter(rule)?;
                self.asm.st_w(FP, self.rule_key.off, index);
                if self.program.rules[rule.0 as usize].log {
                    self.with_hook_ctx(family, |asm, ctx, program| {
                        state::emit_log(asm, ctx, program, rule, false)
                    })?;
                }
                let index = self.counter_index(Counter::Phase(Phase::RateLimit))?;
                self.asm.st_w(FP, self.phase_key.off, index);
                self.goto_exit(false, true);
            }
            self.flush_region()?;
            self.asm.bind(next_word);
        }
        self.asm.bind(nomatch);
        Ok(())
    }

    /// Emits the phase's match. One word: falls through with the (non-zero)
    /// result in r9, jumps to `nomatch` when it is zero. Wide: looks every
    /// classifier up and saves the bitmap pointers; [`Gen::wide_word`] then
    /// computes one word of the result.
    fn match_phase(
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
    fn wide_word(&mut self, matcher: &Matcher, w: usize) {
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

    /// Inline compares; each match delivers its entry and jumps to `done`;
    /// falls through on a miss.
    fn inline_entries(
        &mut self,
        c: &Classifier,
        mode: Mode,
        done: Label,
    ) -> Result<(), CodegenError> {
        let pkt = self.pkt;
        match c.field {
            Field::Proto => {
                self.asm.ldx_b(Reg::R2, FP, pkt.at(PKT_PROTO));
                for (i, k) in c.keys.iter().enumerate() {
                    if let Key::Proto(p) = k {
                        let next = self.asm.new_label();
                        self.asm.jne_imm(Reg::R2, i32::from(*p), next);
                        self.deliver_const(mode, c.entry(i), done)?;
                        self.asm.bind(next);
                    }
                }
            }
            Field::SrcAddr(f) | Field::DstAddr(f) => {
                let base = if matches!(c.field, Field::SrcAddr(_)) {
                    PKT_SRC
                } else {
                    PKT_DST
                };
                // Longest prefix first: the first hit is the longest match.
                for i in inline_order(c) {
                    if let Key::Prefix(p) = c.keys[i] {
                        let next = self.asm.new_label();
                        self.prefix_test(p, f, base, next);
                        self.deliver_const(mode, c.entry(i), done)?;
                        self.asm.bind(next);
                    }
                }
            }
            Field::SrcPort | Field::DstPort => {
                let at = if c.field == Field::SrcPort {
                    PKT_SPORT
                } else {
                    PKT_DPORT
                };
                self.asm.ldx_h(Reg::R2, FP, pkt.at(at));
                self.asm.to_be(Reg::R2, SwapBits::B16);
                for (i, k) in c.keys.iter().enumerate() {
                    if let Key::Ports(r) = k {
                        let next = self.asm.new_label();
                        if r.lo == r.hi {
                            self.asm.jne_imm(Reg::R2, i32::from(r.lo), next);
                        } else {
                            self.asm.jlt_imm(Reg::R2, i32::from(r.lo), next);
                            self.asm.jgt_imm(Reg::R2, i32::from(r.hi), next);
                        }
                        self.deliver_const(mode, c.entry(i), done)?;
                        self.asm.bind(next);
                    }
                }
            }
            Field::Icmp => {
                self.asm.ldx_b(Reg::R2, FP, pkt.at(PKT_ICMP_TYPE));
                self.asm.ldx_b(Reg::R3, FP, pkt.at(PKT_ICMP_CODE));
                // Exact (type, code) entries before (type, any code).
                for exact in [true, false] {
                    for (i, k) in c.keys.iter().enumerate() {
                        if let Key::Icmp { ty, code } = *k {
                            if code.is_some() != exact {
                                continue;
                            }
                            let next = self.asm.new_label();
                            self.asm.jne_imm(Reg::R2, i32::from(ty), next);
                            if let Some(code) = code {
                                self.asm.jne_imm(Reg::R3, i32::from(code), next);
                            }
                            self.deliver_const(mode, c.entry(i), done)?;
                            self.asm.bind(next);
                        }
                    }
                }
            }
            Field::TcpFlags => {
                self.asm.ldx_b(Reg::R2, FP, pkt.at(PKT_TCP_FLAGS));
                for (bits, cubes) in flag_groups(c) {
                    for (mask, set) in cubes {
                        let next = self.asm.new_label();
                        self.asm.mov64_reg(Reg::R3, Reg::R2);
                        self.asm.and64_imm(Reg::R3, i32::from(mask));
                        self.asm.jne_imm(Reg::R3, i32::from(set), next);
                        self.deliver_const(mode, &bits, done)?;
                        self.asm.bind(next);
                    }
                }
            }
            Field::Vlan => {
                self.asm.ldx_h(Reg::R2, FP, pkt.at(PKT_VLAN));
                for (i, k) in c.keys.iter().enumerate() {
                    if let Key::Vlan(v) = k {
                        let next = self.asm.new_label();
                        self.asm.jne_imm(Reg::R2, i32::from(*v), next);
                        self.deliver_const(mode, c.entry(i), done)?;
                        self.asm.bind(next);
                    }
                }
            }
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

    /// A binary tree of `jset` tests on r9 finding the lowest set bit among
    /// `candidates` (sorted bit positions of word `w`; every set bit of r9
    /// is one of them, and at least one is set); each leaf is the rule's
    /// [`Gen::decide_leaf`].
    fn lowest_bit_tree(
        &mut self,
        pi: usize,
        family: Family,
        w: usize,
        candidates: &[usize],
        done: Label,
    ) -> Result<(), CodegenError> {
        if candidates.len() == 1 {
            return self.decide_leaf(pi, family, w * 64 + candidates[0], done);
        }
        let half = candidates.len() / 2;
        let mask: u64 = candidates[..half].iter().fold(0, |m, b| m | 1 << b);
        let left = self.asm.new_label();
        if mask >> 31 == 0 {
            self.asm.jset_imm(ACC, mask as i32, left);
        } else if mask >> 32 == 0 {
            // Only the low word matters: a 32-bit test.
            self.asm
                .jump_if(Width::W32, JmpOp::Set, ACC, mask as u32 as i32, left);
        } else {
            self.asm.ld_imm64(Reg::R2, mask);
            self.asm.jump_if(Width::W64, JmpOp::Set, ACC, Reg::R2, left);
        }
        self.lowest_bit_tree(pi, family, w, &candidates[half..], done)?;
        self.asm.bind(left);
        self.lowest_bit_tree(pi, family, w, &candidates[..half], done)
    }
}

fn fam(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "v4",
        Family::Ipv6 => "v6",
    }
}

/// `(mask, set)`: the flag bytes `b` with `b & mask == set`.
type Cube = (u8, u8);

/// The flags entries grouped by bitmap, each group as (mask, set) cubes
/// `{b : b & mask == set}` covering exactly its bytes.
fn flag_groups(c: &Classifier) -> Vec<(Vec<u64>, Vec<Cube>)> {
    let mut groups: Vec<(Vec<u64>, Vec<u8>)> = Vec::new();
    for (i, k) in c.keys.iter().enumerate() {
        if let Key::Flags(b) = k {
            let bits = c.entry(i).to_vec();
            match groups.iter_mut().find(|(g, _)| *g == bits) {
                Some((_, bytes)) => bytes.push(*b),
                None => groups.push((bits, vec![*b])),
            }
        }
    }
    groups
        .into_iter()
        .map(|(bits, bytes)| (bits, cover(&bytes)))
        .collect()
}

/// A small set of cubes whose union is exactly `bytes`: greedily the
/// largest cube inside the set containing the smallest uncovered byte.
fn cover(bytes: &[u8]) -> Vec<Cube> {
    let mut inside = [false; 256];
    for &b in bytes {
        inside[usize::from(b)] = true;
    }
    let mut covered = [false; 256];
    let mut cubes = Vec::new();
    for &b in bytes {
        if covered[usize::from(b)] {
            continue;
        }
        // Fewest mask bits first = largest cube.
        let mut masks: Vec<u8> = (0..=255u8).collect();
        masks.sort_by_key(|m| m.count_ones());
        let cube = masks.into_iter().find_map(|mask| {
            let set = b & mask;
            (0..=255u8)
                .filter(|x| x & mask == set)
                .all(|x| inside[usize::from(x)])
                .then_some((mask, set))
        });
        let (mask, set) = cube.unwrap_or((0xFF, b));
        for x in 0..=255u8 {
            if x & mask == set {
                covered[usize::from(x)] = true;
            }
        }
        cubes.push((mask, set));
    }
    cubes
}
