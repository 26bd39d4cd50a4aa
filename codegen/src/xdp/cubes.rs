//! TCP-flags classifiers as cubes: the flag bytes of one bitmap covered
//! by a few `(mask, set)` tests (`b & mask == set`), so an inline flags
//! classifier costs one masked compare per cube instead of one per byte.

use patronus_compiler::ir::{Classifier, Key};

/// `(mask, set)`: the flag bytes `b` with `b & mask == set`.
type Cube = (u8, u8);

/// The flags entries grouped by bitmap, each group as (mask, set) cubes
/// `{b : b & mask == set}` covering exactly its bytes.
pub(super) fn flag_groups(c: &Classifier) -> Vec<(Vec<u64>, Vec<Cube>)> {
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
