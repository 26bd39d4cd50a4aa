//! Counters carried from a replaced policy into its successor, by rule
//! identity (or phase name), so that `stats` keeps counting across an
//! apply for every rule still there.
//!
//! [`carried`] decides what goes where (data in, data out); [`Carry`]
//! does it around the swap in two steps that keep the counters monotonic
//! for a reader: before the swap, the old totals are written into the new
//! map (not in use yet); after the swap and before the new pins are
//! published, what the old program counted in between is added. (The
//! race this closes: the new map used to be published under `maps/stats`
//! before anything was carried, and a `stats` read in that window saw the
//! new policy's few packets instead of the running totals.) A failure
//! loses statistics, not filtering: it is a warning.

use std::collections::HashMap;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use super::roles;
use crate::counters::{add_counters, read_counters};
use crate::loaded::Loaded;
use crate::pins::{Pins, live_map};

/// Which counters of the replaced policy go where in the new one: pairs
/// `(new index, summed words)` for every new counter whose key (rule
/// identity or phase name; `None`: not carried) the old layout also had.
/// A key held by several old counters (identical unlabelled rules) is
/// carried to the first new counter with it only, so nothing is counted
/// twice; all-zero totals are not written.
pub fn carried(
    old: &[Option<String>],
    old_values: &[Vec<u64>],
    new: &[Option<String>],
) -> Vec<(u32, Vec<u64>)> {
    let mut by_key: HashMap<&str, Vec<u64>> = HashMap::new();
    for (key, words) in old.iter().zip(old_values) {
        let Some(key) = key else {
            continue;
        };
        let total = by_key.entry(key).or_insert_with(|| vec![0; words.len()]);
        for (sum, word) in total.iter_mut().zip(words) {
            *sum = sum.wrapping_add(*word);
        }
    }
    new.iter()
        .enumerate()
        .filter_map(|(index, key)| {
            let words = by_key.remove(key.as_deref()?)?;
            let index = u32::try_from(index).ok()?;
            words.iter().any(|w| *w != 0).then_some((index, words))
        })
        .collect()
}

/// The carry-over of one replace (see the module documentation).
pub struct Carry {
    old_stats: OwnedFd,
    old: Vec<Option<String>>,
    new: Vec<Option<String>>,
    baseline: Vec<Vec<u64>>,
    /// Counters carried (the larger of the two steps).
    pub carried: usize,
    /// What could not be carried, for the operator.
    pub warnings: Vec<String>,
}

impl Carry {
    /// The replaced policy's counters, final once its program no longer
    /// runs; only from a map the running program uses (`None`: nothing
    /// to carry).
    pub fn open(pins: &Pins, old: Vec<Option<String>>, new: Vec<Option<String>>) -> Option<Carry> {
        let old_stats = live_map(pins, roles::STATS_MAP, true).ok()?;
        Some(Carry {
            old_stats,
            old,
            new,
            baseline: Vec::new(),
            carried: 0,
            warnings: Vec::new(),
        })
    }

    fn add(&mut self, stats: BorrowedFd<'_>, values: &[Vec<u64>]) -> usize {
        let carried = carried(&self.old, values, &self.new);
        // One kill point per carry, whatever the number of counters (it
        // depends on the traffic): kill-point numbers stay stable.
        crate::fault::point("carry counters");
        for (index, words) in &carried {
            if let Err(err) = add_counters(stats, *index, words) {
                self.warnings.push(format!(
                    "counter {index} of the replaced policy not kept: {err}"
                ));
            }
        }
        carried.len()
    }

    fn read(&mut self) -> Option<Vec<Vec<u64>>> {
        match read_counters(self.old_stats.as_fd()) {
            Ok(values) => Some(values),
            Err(err) => {
                self.warnings
                    .push(format!("counters of the replaced policy not kept: {err}"));
                None
            }
        }
    }

    /// Before the swap: the old totals into the new, unused map.
    pub fn before(&mut self, loaded: &Loaded) {
        let Some(stats) = loaded.map_fd(roles::STATS_MAP) else {
            return;
        };
        let Some(values) = self.read() else {
            return;
        };
        self.carried = self.add(stats, &values);
        self.baseline = values;
    }

    /// After the swap: what the old program counted since [`Carry::before`].
    pub fn after(&mut self, loaded: &Loaded) {
        let Some(stats) = loaded.map_fd(roles::STATS_MAP) else {
            return;
        };
        let Some(values) = self.read() else {
            return;
        };
        let delta: Vec<Vec<u64>> = values
            .iter()
            .enumerate()
            .map(|(i, words)| {
                let base = self.baseline.get(i);
                words
                    .iter()
                    .enumerate()
                    .map(|(w, v)| v.wrapping_sub(base.and_then(|b| b.get(w)).copied().unwrap_or(0)))
                    .collect()
            })
            .collect();
        let carried = self.add(stats, &delta);
        self.carried = self.carried.max(carried);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<Option<String>> {
        k.iter().map(|k| Some((*k).to_owned())).collect()
    }

    #[test]
    fn counters_follow_rule_identity_and_phase_name() {
        let old = keys(&[
            "rule:web",
            "rule:allow udp to port 53",
            "rule:allow udp to port 53",
            "phase:allow",
            "phase:default",
        ]);
        let old_values = vec![
            vec![10, 1000],
            vec![2, 200],
            vec![3, 300],
            vec![15, 1500],
            vec![0, 0],
        ];
        let new = keys(&[
            "rule:ssh",
            "rule:web",
            "rule:allow udp to port 53",
            "phase:default",
            "phase:allow",
            "rule:allow udp to port 53",
        ]);
        // "web" moved from 0 to 1; both identical udp rules summed onto the
        // first new one; "allow" moved; zero "default" is not written.
        assert_eq!(
            carried(&old, &old_values, &new),
            vec![(1, vec![10, 1000]), (2, vec![5, 500]), (4, vec![15, 1500])]
        );
    }

    #[test]
    fn counters_without_a_key_are_not_carried() {
        assert!(carried(&[None], &[vec![1, 1]], &[None]).is_empty());
        assert!(carried(&[None], &[vec![1, 1]], &keys(&["rule:x"])).is_empty());
    }
}
