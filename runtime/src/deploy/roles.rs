//! Which role a map of a compiled policy plays: traffic state carried
//! across a replace, classifier contents an in-place update rewrites, the
//! DIR-24 arrays in front of a classifier trie, conntrack, the counters.
//! Every such question in the runtime and the CLI is asked here, and only
//! here.
//!
//! Today the answers come from map names (`ct_*`, `rl_*`, `consts_*`,
//! `stats`, `<trie>_d24`) and the IR's map plans, exactly as before this
//! module gathered them; once the object carries a typed map layout these
//! functions ask it instead, and nothing outside changes.

use patronus_codegen::xdp::dir24;
use patronus_codegen::{MapImage, Object};
use patronus_compiler::ir::{self, Field, PhasePlan, Storage};

/// The counters' map (`ir::plan::Contents::Stats`), as pinned and loaded.
pub const STATS_MAP: &str = "stats";

/// The conntrack maps, one per family, as pinned.
pub const CONNTRACK_MAPS: [&str; 2] = ["ct_v4", "ct_v6"];

/// Traffic state (conntrack, rate-limit buckets): carried over when a
/// policy is replaced, when its shape is unchanged.
fn is_state_map(name: &str) -> bool {
    name.starts_with("ct_") || name.starts_with("rl_")
}

/// The maps a replace keeps from the running policy (shape permitting).
pub fn state_maps(object: &Object) -> impl Iterator<Item = &MapImage> {
    object.maps.iter().filter(|m| is_state_map(&m.name))
}

/// The conntrack maps of `object`.
pub fn conntrack_maps(object: &Object) -> impl Iterator<Item = &MapImage> {
    object
        .maps
        .iter()
        .filter(|m| CONNTRACK_MAPS.contains(&m.name.as_str()))
}

/// The counters' map of `object`, if it counts.
pub fn stats_map(object: &Object) -> Option<&MapImage> {
    object.maps.iter().find(|m| m.name == STATS_MAP)
}

/// Whether a loaded map is state a test run accumulates (reset between
/// runs): every map the object does not fill from an image — conntrack,
/// buckets, counters, log events; a classifier whose image is empty is
/// empty either way.
pub fn accumulates(filled_from_image: bool) -> bool {
    !filled_from_image
}

/// Whether a map's image is written through a memory mapping (runs, not
/// entries): the DIR-24 slot arrays.
pub fn filled_through_mapping(map_flags: u32) -> bool {
    map_flags & dir24::MMAPABLE != 0
}

/// The maps an in-place update rewrites: classifier maps, the DIR-24
/// arrays in front of a classifier trie, and the constant bitmaps of wide
/// phases — never state, counters or log events.
pub fn content_maps<'a>(object: &'a Object, program: &ir::Program) -> Vec<&'a MapImage> {
    let classifier: Vec<&str> = program
        .maps
        .iter()
        .filter(|m| matches!(m.contents, ir::plan::Contents::Classifier { .. }))
        .map(|m| m.name.as_str())
        .collect();
    object
        .maps
        .iter()
        .filter(|m| {
            // `<map>_d24`, `<map>_d24b`: the arrays of classifier `<map>`.
            let base = dir24::trie_of(&m.name).unwrap_or(&m.name);
            classifier.contains(&base) || m.name.starts_with("consts_")
        })
        .collect()
}

/// The map a phase's classifier of `field` is stored in: its plan and
/// its image; `None` when the classifier is inline or absent.
pub fn classifier_map<'a, 'p>(
    program: &'p ir::Program,
    object: &'a Object,
    phase: &PhasePlan,
    field: Field,
) -> Option<(&'p ir::plan::MapPlan, Option<&'a MapImage>)> {
    let plan = phase
        .classifiers
        .iter()
        .find(|c| c.field == field)
        .and_then(|c| match c.storage {
            Storage::Map(i) => program.maps.get(i),
            Storage::Inline => None,
        })?;
    Some((plan, object.maps.iter().find(|m| m.name == plan.name)))
}

/// The DIR-24 arrays in front of classifier trie `trie`, when it has
/// them: the slot array's name and the bitmaps' image.
pub fn dir24_arrays<'a>(object: &'a Object, trie: &str) -> Option<(String, &'a MapImage)> {
    let bitmaps = dir24::bitmaps_name(trie);
    let bitmaps = object.maps.iter().find(|m| m.name == bitmaps)?;
    Some((dir24::slots_name(trie), bitmaps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str, entries: usize) -> MapImage {
        MapImage {
            name: name.into(),
            map_type: 1,
            key_size: 4,
            value_size: 8,
            max_entries: 16,
            flags: 0,
            entries: (0..entries)
                .map(|i| (vec![i as u8; 4], vec![0; 8]))
                .collect(),
        }
    }

    fn object(names: &[&str]) -> Object {
        Object {
            elf: Vec::new(),
            maps: names.iter().map(|n| map(n, 0)).collect(),
            listing: String::new(),
            insn_count: 0,
            stack_bytes: 0,
        }
    }

    #[test]
    fn a_replace_keeps_conntrack_and_buckets_only() {
        let o = object(&[
            "allow_dport",
            "ct_v4",
            "ct_v6",
            "rl_src_v4",
            "stats",
            "log_events",
            "consts_allow",
        ]);
        let kept: Vec<&str> = state_maps(&o).map(|m| m.name.as_str()).collect();
        assert_eq!(kept, ["ct_v4", "ct_v6", "rl_src_v4"]);
        let ct: Vec<&str> = conntrack_maps(&o).map(|m| m.name.as_str()).collect();
        assert_eq!(ct, CONNTRACK_MAPS);
        assert_eq!(stats_map(&o).map(|m| m.name.as_str()), Some(STATS_MAP));
        assert!(stats_map(&object(&["allow_dport"])).is_none());
    }

    #[test]
    fn in_place_rewrites_classifiers_their_arrays_and_constants() {
        let policy = "options { conntrack = on }\nallow tcp to port { 22, 80, 443, 8080, 8443 }\n\
                      allow from { 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 192.0.2.7, 198.51.100.9 }\n";
        let mut files = patronus_compiler::diag::Files::new();
        let file = files.add("p.pf", policy.to_owned());
        struct NoTables;
        impl patronus_compiler::TableLoader for NoTables {
            fn load(&self, _: &str, path: &str) -> Result<patronus_compiler::LoadedFile, String> {
                Err(format!("no table {path}"))
            }
        }
        let checked = patronus_compiler::check(&mut files, file, &NoTables);
        let program = ir::lower(&checked.policy.expect("a policy"));
        let object = patronus_codegen::compile(&program).expect("compiles");
        let content: Vec<&str> = content_maps(&object, &program)
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert!(!content.is_empty());
        for name in &content {
            assert!(!is_state_map(name) && *name != STATS_MAP, "{name}");
        }
        for m in &object.maps {
            let classifier = program.maps.iter().any(|p| {
                p.name == m.name && matches!(p.contents, ir::plan::Contents::Classifier { .. })
            });
            assert_eq!(classifier, content.contains(&m.name.as_str()), "{}", m.name);
        }
    }
}
