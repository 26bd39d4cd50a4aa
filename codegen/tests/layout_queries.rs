//! The questions the runtime and the CLI ask an object about its maps
//! (`Object::state_maps`, `content_maps`, `stats_map`, `conntrack_maps`,
//! `classifier_maps`, `dir24_of`, `is_mapped`, `role_of`), answered from
//! the layout's typed roles; and the layout's own invariants (roles
//! parallel to the maps, every map reference an emitter asks for exists).
//! No kernel needed.

mod xdp_common;

use patronus_codegen::layout::{self, ClassifierStorage, MapRole};
use patronus_codegen::{Object, TableFeed, compile};
use patronus_compiler::ir::{self, Field, PhaseKind};
use patronus_compiler::typed::{Family, RateKey};
use patronus_compiler::{LoadedFile, TableLoader};

/// Serves `big.txt`: enough IPv4 prefixes for DIR-24 arrays, one longer
/// than /24 (a fallback slot).
struct Big;

impl TableLoader for Big {
    fn load(&self, _policy: &str, path: &str) -> Result<LoadedFile, String> {
        if path != "big.txt" {
            return Err(format!("no table {path}"));
        }
        let mut text: String = (0..600)
            .map(|i| format!("100.{}.{}.0/24\n", i / 256, i % 256))
            .collect();
        text.push_str("100.0.3.16/28\n");
        Ok(LoadedFile {
            name: path.to_string(),
            text,
        })
    }
}

const POLICY: &str = "table big file \"big.txt\"\n\
                      options { conntrack = on }\n\
                      deny from @big log\n\
                      deny tcp from 2001:db8::/32 to port 23\n\
                      allow tcp to port 22 rate 10/s per src\n\
                      allow tcp to port 80 rate 5/s per global\n\
                      allow udp from 10.0.0.0/8 to port 53\n";

fn compiled() -> (ir::Program, Object) {
    let policy = xdp_common::check_policy(POLICY, &Big);
    let program = ir::lower(&policy);
    let object = compile(&program).expect("compiles");
    (program, object)
}

fn names<'a>(maps: impl Iterator<Item = &'a patronus_codegen::MapDef>) -> Vec<&'a str> {
    maps.map(|m| m.name.as_str()).collect()
}

#[test]
fn state_maps_are_conntrack_and_buckets_only() {
    let (_, object) = compiled();
    assert_eq!(
        names(object.state_maps()),
        ["ct_v4", "ct_v6", "rl_src_v4", "rl_src_v6", "rl_global"]
    );
    assert_eq!(
        object
            .conntrack_maps()
            .iter()
            .map(|(f, m)| (*f, m.name.as_str()))
            .collect::<Vec<_>>(),
        [(Family::Ipv4, "ct_v4"), (Family::Ipv6, "ct_v6")]
    );
    assert_eq!(
        object.role_of("rl_global"),
        Some(MapRole::RateLimit {
            key: RateKey::Global,
            family: None
        })
    );
    assert_eq!(object.stats_map().map(|m| m.name.as_str()), Some("stats"));
    assert_eq!(
        object.log_events_map().map(|m| m.name.as_str()),
        Some("log_events")
    );
}

#[test]
fn content_maps_are_what_the_policy_fills() {
    let (_, object) = compiled();
    let content = names(object.content_maps());
    assert!(content.contains(&"deny_src4"), "{content:?}");
    assert!(content.contains(&"deny_src4_d24"), "{content:?}");
    assert!(content.contains(&"deny_src4_d24b"), "{content:?}");
    for not in [
        "stats",
        "ct_v4",
        "rl_src_v4",
        "rl_global",
        "log_events",
        "log_bucket",
    ] {
        assert!(!content.contains(&not), "{not} in {content:?}");
    }
    // Every map is either content, state, counters or log: nothing is
    // left without a role.
    assert_eq!(object.layout.roles().len(), object.maps.len());
}

#[test]
fn a_big_table_feeds_a_trie_behind_dir24_arrays() {
    let (program, object) = compiled();
    let deny = program
        .phases
        .iter()
        .position(|p| p.kind == PhaseKind::Deny)
        .expect("a deny phase");
    let Some(TableFeed::Dir24 {
        trie,
        slots,
        bitmaps,
    }) = object.classifier_maps(&program, deny, Field::SrcAddr(Family::Ipv4))
    else {
        panic!("the big table's classifier is not behind DIR-24 arrays");
    };
    assert_eq!(
        (
            trie.name.as_str(),
            slots.name.as_str(),
            bitmaps.name.as_str()
        ),
        ("deny_src4", "deny_src4_d24", "deny_src4_d24b")
    );
    assert!(object.is_mapped("deny_src4_d24"));
    assert!(!object.is_mapped("deny_src4_d24b"));
    assert!(!object.is_mapped("deny_src4"));
    // Behind the arrays the trie holds only the fallback /24's needs.
    assert!(
        trie.entries.len() < 10,
        "{} trie entries",
        trie.entries.len()
    );
    let (s, b) = object.dir24_of("deny_src4").expect("arrays");
    assert_eq!(
        (s.name.as_str(), b.name.as_str()),
        ("deny_src4_d24", "deny_src4_d24b")
    );
    assert!(object.dir24_of("stats").is_none());
    // An inline classifier feeds no map; a field the phase does not
    // constrain has no classifier.
    assert_eq!(
        object.classifier_maps(&program, deny, Field::Vlan),
        None,
        "no VLAN classifier"
    );
}

#[test]
fn roles_match_the_plan_and_every_classifier_storage_points_at_its_maps() {
    let (program, object) = compiled();
    let (layout, maps) = layout::plan(&program).expect("lays out");
    assert_eq!(maps, object.maps, "the object's maps are the layout's");
    for (m, plan) in program.maps.iter().enumerate() {
        assert_eq!(maps[m].name, plan.name, "plan maps come first, in order");
        let role = layout.role(m).expect("a role");
        assert_eq!(role.is_state(), plan.contents.is_runtime(), "{}", plan.name);
    }
    for (pi, phase) in program.phases.iter().enumerate() {
        for ci in 0..phase.classifiers.len() {
            match layout.classifier(pi, ci).expect("storage") {
                ClassifierStorage::Inline => {}
                ClassifierStorage::Map { map, .. } => assert_eq!(
                    layout.role(map),
                    Some(MapRole::Classifier {
                        phase: pi,
                        classifier: ci,
                        field: phase.classifiers[ci].field
                    })
                ),
                ClassifierStorage::Dir24 {
                    trie,
                    slots,
                    bitmaps,
                } => {
                    assert_eq!(layout.role(slots), Some(MapRole::Dir24Slots { trie }));
                    assert_eq!(layout.role(bitmaps), Some(MapRole::Dir24Bitmaps { trie }));
                }
            }
        }
    }
    assert!(layout.conntrack(Family::Ipv6).is_ok());
    assert!(layout.rate_limit(RateKey::Global, Family::Ipv6).is_ok());
    assert!(layout.rate_limit(RateKey::Dst, Family::Ipv4).is_err());
    assert!(layout.log_maps().is_some());
}

#[test]
fn without_state_or_logs_there_are_no_such_maps() {
    let policy =
        xdp_common::check_policy("options { conntrack = off }\nallow tcp to port 22\n", &Big);
    let program = ir::lower(&policy);
    let object = compile(&program).expect("compiles");
    assert_eq!(object.state_maps().count(), 0);
    assert!(object.conntrack_maps().is_empty());
    assert!(object.log_events_map().is_none());
    assert_eq!(names(object.content_maps()), Vec::<&str>::new());
    assert!(object.stats_map().is_some());
}
