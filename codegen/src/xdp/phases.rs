//! The rule phases of one family's path: deny, established, limit, allow,
//! default (LANGUAGE.md §3), from the IR's classifiers.
//!
//! Matching a phase: the family's start bitmap ANDed with one bitmap per
//! classifier (an inline compare chain or one map lookup: `lookup`; TCP
//! flags as cubes: `cubes`). This module is the phases' control flow.
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

use patronus_compiler::ir::{self, PhaseKind};
use patronus_compiler::semantics::{Counter, Phase};
use patronus_compiler::typed::{Family, RuleId};

use super::Gen;
use super::ctx::*;
use super::lookup::{ACC, Matcher, live_words};
use crate::error::CodegenError;
use crate::insn::regs::FP;
use crate::insn::{AluOp, Asm, JmpOp, Label, Reg, Width};
use crate::layout::{applicable, candidates};
use crate::state;

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
        self.rule_marks.push((self.asm.len(), rule));
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
