//! Candidate lists: how a wide deny or allow phase (more than 64 rules)
//! finds its first matching rule without scanning every bitmap word.
//!
//! The phase picks one classifier per family path as its *primary*, and
//! each of the primary's bitmaps (map values and constants) carries, after
//! the bitmap words, the sorted list of the live rule bits it has set (u16
//! each, [`END`] past the end). A packet's matching rules are all in its
//! primary bitmap, so the first candidate whose bit is also set in the
//! start bitmap and in every other classifier's bitmap is the first
//! matching rule: one word test per candidate, at most [`MAX_CANDIDATES`],
//! whatever the number of rules. A bitmap with more candidates than that
//! carries [`LONG`] instead, and a packet that gets it falls back to the
//! word-by-word scan. The primary is the classifier with the fewest such
//! long bitmaps, the miss and absent bitmaps (which every unlisted value
//! gets) counting most.
//!
//! The lists are plain data appended to map values: this module computes
//! the layout and the bytes; `phases` emits the code that reads them.

use patronus_compiler::ir::{Classifier, Field, PhaseKind, PhasePlan};
use patronus_compiler::typed::Family;

/// The longest candidate list a primary may have (the unrolled loop's
/// length).
pub const MAX_CANDIDATES: usize = 16;

/// Marks the end of a list shorter than the phase's list length.
pub const END: u16 = 0xFFFF;

/// In the first slot: this bitmap has too many candidates; scan words.
pub const LONG: u16 = 0xFFFE;

/// A wide phase's candidate layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseCandidates {
    /// Bitmap words per value (`PhasePlan::words`).
    pub words: usize,
    /// List slots per value: the longest list of the phase's primaries.
    pub slots: usize,
    /// The primary classifier per family path (IPv4, IPv6), if that path
    /// uses candidates.
    pub primary: [Option<usize>; 2],
    /// Per family path: some bitmap of the primary is [`LONG`], so the
    /// word scan is still needed there.
    pub needs_scan: [bool; 2],
    /// The rules either family can match (lists hold only these).
    pub live: Vec<u64>,
}

impl PhaseCandidates {
    /// Bytes of one extended value: the bitmap, then the list padded to 8.
    pub fn value_size(&self) -> usize {
        8 * self.words + list_bytes(self.slots)
    }

    /// The byte offset of list slot `i` in a value.
    pub fn slot_offset(&self, i: usize) -> usize {
        8 * self.words + 2 * i
    }

    /// A bitmap value (`8 * words` bytes) with its list appended: the
    /// live rule bits in order, then [`END`]s; or [`LONG`] first when they
    /// do not fit.
    pub fn extend(&self, bitmap: &[u8]) -> Vec<u8> {
        let mut list: Vec<u16> = Vec::with_capacity(self.slots);
        if self.list_len(bitmap) > self.slots {
            list.push(LONG);
        } else {
            for (w, chunk) in bitmap.chunks_exact(8).enumerate() {
                let mut word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
                word &= self.live.get(w).copied().unwrap_or(0);
                while word != 0 {
                    list.push((w * 64 + word.trailing_zeros() as usize) as u16);
                    word &= word - 1;
                }
            }
        }
        list.resize(self.slots, END);
        let mut out = Vec::with_capacity(self.value_size());
        out.extend_from_slice(bitmap);
        out.extend(list.iter().flat_map(|b| b.to_le_bytes()));
        out.resize(self.value_size(), 0);
        out
    }
}

impl PhaseCandidates {
    /// How many live rules a bitmap value (`8 * words` bytes) has set.
    fn list_len(&self, bitmap: &[u8]) -> usize {
        bitmap
            .chunks_exact(8)
            .zip(&self.live)
            .map(|(chunk, live)| {
                let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
                (word & live).count_ones() as usize
            })
            .sum()
    }
}

fn list_bytes(slots: usize) -> usize {
    (2 * slots).next_multiple_of(8)
}

/// Decides whether a phase uses candidate lists, and its layout.
pub fn plan(phase: &PhasePlan) -> Option<PhaseCandidates> {
    if phase.words <= 1 || phase.kind == PhaseKind::Limit {
        return None;
    }
    // Rule bits are u16 list entries, END excluded.
    if phase.rules.len() >= usize::from(END) {
        return None;
    }
    let live: Vec<u64> = (0..phase.words)
        .map(|w| phase.start[0].0[w] | phase.start[1].0[w])
        .collect();
    let mut primary = [None, None];
    let mut needs_scan = [true, true];
    let mut slots = 0;
    for family in [Family::Ipv4, Family::Ipv6] {
        let fi = patronus_compiler::ir::family_index(family);
        if phase.start[fi].is_zero() {
            continue;
        }
        let best = phase
            .classifiers
            .iter()
            .enumerate()
            .filter(|(_, c)| applies(c, family))
            .filter_map(|(i, c)| choice_cost(c, &live).map(|(cost, longest)| ((cost, longest), i)))
            .min();
        if let Some(((cost, longest), i)) = best {
            primary[fi] = Some(i);
            needs_scan[fi] = cost > 0;
            slots = slots.max(longest.max(1));
        }
    }
    if primary.iter().all(Option::is_none) {
        return None;
    }
    Some(PhaseCandidates {
        words: phase.words,
        slots,
        primary,
        needs_scan,
        live,
    })
}

/// Whether the classifier is consulted on `family`'s path.
fn applies(c: &Classifier, family: Family) -> bool {
    match c.field {
        Field::SrcAddr(f) | Field::DstAddr(f) => f == family,
        _ => true,
    }
}

/// How bad `c` is as a primary, as (cost, longest short list): the share
/// of its entries whose list is long, scaled to 1,000, plus 1,000 if the
/// miss bitmap is long and 100 if the absent one is (for fields a packet
/// can lack). Entries are weighed as a share because a few entries may
/// take most traffic (TCP and UDP for the protocol). `None` when every
/// bitmap is long.
fn choice_cost(c: &Classifier, live: &[u64]) -> Option<(usize, usize)> {
    let count = |bits: &[u64]| -> usize {
        bits.iter()
            .zip(live)
            .map(|(b, l)| (b & l).count_ones() as usize)
            .sum()
    };
    let mut longest = 0;
    let mut any_short = false;
    let mut judge = |len: usize| -> bool {
        let long = len > MAX_CANDIDATES;
        if !long {
            any_short = true;
            longest = longest.max(len);
        }
        long
    };
    let long_entries = (0..c.len()).filter(|&i| judge(count(c.entry(i)))).count();
    let mut cost = (1000 * long_entries).checked_div(c.len()).unwrap_or(0);
    if judge(count(&c.miss.0)) {
        cost += 1000;
    }
    let can_be_absent = !matches!(
        c.field,
        Field::Proto | Field::SrcAddr(_) | Field::DstAddr(_)
    );
    if can_be_absent && judge(count(&c.absent.0)) {
        cost += 100;
    }
    any_short.then_some((cost, longest))
}
