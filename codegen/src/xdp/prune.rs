//! Removes unreachable instructions from a finished program. The verifier
//! rejects any (`unreachable insn N`), and a generator that specialises
//! freely (a `/0` prefix that always matches, a compare chain whose last
//! test cannot fail, a hook that always jumps) produces some. Rather than
//! making every emitter prove reachability, the program is rebuilt from its
//! reachable instructions, with labels at every jump target and the
//! listing comments kept.

use crate::insn::{Asm, AsmError, Insn, Label, Program};
use std::collections::HashMap;

/// The slot index of every instruction, plus one past the end.
fn slots_of(insns: &[Insn]) -> Vec<usize> {
    let mut out = Vec::with_capacity(insns.len() + 1);
    let mut slot = 0;
    for insn in insns {
        out.push(slot);
        slot += insn.slots();
    }
    out.push(slot);
    out
}

/// The instruction index a jump at `index` lands on.
fn target(insns: &[Insn], slots: &[usize], index: usize, off: i64) -> Option<usize> {
    let to = slots[index] as i64 + 1 + off;
    slots
        .binary_search(&usize::try_from(to).ok()?)
        .ok()
        .filter(|&t| t < insns.len())
}

pub fn prune_unreachable(program: Program) -> Result<Program, AsmError> {
    let insns = program.insns();
    let slots = slots_of(insns);
    let mut reachable = vec![false; insns.len()];
    let mut targets: Vec<Option<usize>> = vec![None; insns.len()];
    let mut work = vec![0usize];
    while let Some(i) = work.pop() {
        if i >= insns.len() || reachable[i] {
            continue;
        }
        reachable[i] = true;
        match insns[i] {
            Insn::JumpIf { off, .. } => {
                let t = target(insns, &slots, i, i64::from(off));
                targets[i] = t;
                work.extend(t);
                work.push(i + 1);
            }
            Insn::Ja { off } => {
                let t = target(insns, &slots, i, i64::from(off));
                targets[i] = t;
                work.extend(t);
            }
            Insn::Exit => {}
            _ => work.push(i + 1),
        }
    }
    if reachable.iter().all(|&r| r) {
        return Ok(program);
    }
    let names: HashMap<usize, &str> = program
        .labels()
        .iter()
        .map(|(i, name)| (*i, name.as_str()))
        .collect();
    let mut asm = Asm::new();
    let mut labels: HashMap<usize, Label> = HashMap::new();
    let mut label_at = |asm: &mut Asm, i: usize| -> Label {
        *labels.entry(i).or_insert_with(|| match names.get(&i) {
            Some(name) => asm.named_label(*name),
            None => asm.new_label(),
        })
    };
    let jump_targets: std::collections::HashSet<usize> =
        targets.iter().flatten().copied().collect();
    for (i, insn) in insns.iter().enumerate() {
        if !reachable[i] {
            continue;
        }
        if jump_targets.contains(&i) {
            let l = label_at(&mut asm, i);
            asm.bind(l);
        }
        for c in program.comments(i) {
            asm.comment(c.clone());
        }
        match *insn {
            Insn::JumpIf {
                width,
                op,
                dst,
                src,
                ..
            } => {
                let t = targets[i].ok_or(AsmError::Empty)?;
                let l = label_at(&mut asm, t);
                asm.jump_if(width, op, dst, src, l);
            }
            Insn::Ja { .. } => {
                let t = targets[i].ok_or(AsmError::Empty)?;
                let l = label_at(&mut asm, t);
                asm.ja(l);
            }
            other => asm.emit(other),
        }
    }
    asm.finish()
}
