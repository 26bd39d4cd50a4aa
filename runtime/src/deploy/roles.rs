//! The questions the runtime and the CLI ask about a compiled policy's
//! maps, in one place: traffic state carried across a replace, classifier
//! contents an in-place update rewrites, conntrack, the counters. Each is
//! answered by the object's typed map layout (`patronus_codegen::layout`),
//! never by parsing a map's name; the names below are only how the pins
//! of two roles are found when no object is at hand (`status`, `stats`).

use patronus_codegen::{MapDef, Object};
use patronus_compiler::ir::plan::{STATS_MAP_NAME, conntrack_map_name};
use patronus_compiler::typed::Family;

/// The pin name of the counters' map ([`Object::stats_map`]).
pub const STATS_MAP: &str = STATS_MAP_NAME;

/// The pin names of the conntrack maps, one per family
/// ([`Object::conntrack_maps`]).
pub const CONNTRACK_MAPS: [&str; 2] = [
    conntrack_map_name(Family::Ipv4),
    conntrack_map_name(Family::Ipv6),
];

/// The maps a replace keeps from the running policy (shape permitting):
/// conntrack and rate-limit buckets.
pub fn state_maps(object: &Object) -> impl Iterator<Item = &MapDef> {
    object.state_maps()
}

/// The conntrack maps of `object`.
pub fn conntrack_maps(object: &Object) -> impl Iterator<Item = &MapDef> {
    object.conntrack_maps().into_iter().map(|(_, map)| map)
}

/// The counters' map of `object`, if it counts.
pub fn stats_map(object: &Object) -> Option<&MapDef> {
    object.stats_map()
}

/// Whether a loaded map is state a test run accumulates (reset between
/// runs): every map the object does not fill from an image — conntrack,
/// buckets, counters, log events; a classifier whose image is empty is
/// empty either way.
pub fn accumulates(filled_from_image: bool) -> bool {
    !filled_from_image
}

/// Whether a loaded map (known by its kernel flags, as read back from the
/// kernel) is written through a memory mapping (runs, not entries): the
/// DIR-24 slot arrays, the only maps codegen creates `BPF_F_MMAPABLE`.
pub fn filled_through_mapping(map_flags: u32) -> bool {
    map_flags & patronus_codegen::insn::kernel::map_flags::MMAPABLE != 0
}

/// The maps an in-place update rewrites: classifier maps, the DIR-24
/// arrays in front of a classifier trie, and the constant bitmaps of wide
/// phases — never state, counters or log events.
pub fn content_maps(object: &Object) -> Vec<&MapDef> {
    object.content_maps().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use patronus_compiler::ir;

    fn compile(policy: &str) -> (ir::Program, Object) {
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
        (program, object)
    }

    #[test]
    fn a_replace_keeps_conntrack_and_buckets_only() {
        let (_, o) = compile(
            "options { conntrack = on }\nlimit tcp to port 22 rate 10/s per src\n\
             allow tcp to port { 22, 80, 443, 8080, 8443 } log\n",
        );
        let kept: Vec<&str> = state_maps(&o).map(|m| m.name.as_str()).collect();
        assert_eq!(kept, ["ct_v4", "ct_v6", "rl_src_v4", "rl_src_v6"]);
        let ct: Vec<&str> = conntrack_maps(&o).map(|m| m.name.as_str()).collect();
        assert_eq!(ct, CONNTRACK_MAPS);
        assert_eq!(stats_map(&o).map(|m| m.name.as_str()), Some(STATS_MAP));
    }

    #[test]
    fn in_place_rewrites_classifiers_their_arrays_and_constants() {
        let (program, object) = compile(
            "options { conntrack = on }\nallow tcp to port { 22, 80, 443, 8080, 8443 }\n\
             allow from { 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 192.0.2.7, 198.51.100.9 }\n",
        );
        let content: Vec<&str> = content_maps(&object)
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert!(!content.is_empty());
        let state: Vec<&str> = state_maps(&object).map(|m| m.name.as_str()).collect();
        for name in &content {
            assert!(!state.contains(name) && *name != STATS_MAP, "{name}");
        }
        for m in &object.maps {
            let classifier = program.maps.iter().any(|p| {
                p.name == m.name && matches!(p.contents, ir::plan::Contents::Classifier { .. })
            });
            if classifier {
                assert!(content.contains(&m.name.as_str()), "{}", m.name);
            }
        }
    }
}
