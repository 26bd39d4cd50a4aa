//! How a compiled policy goes onto an interface that may already run one:
//! in place (only classifier contents change) or by a load and an atomic
//! replace, and which state maps a replace keeps. Data in, data out: the
//! callers read the kernel and the records, these functions decide.

use patronus_codegen::Object;

use super::roles;
use crate::loaded::MapShape;

/// FNV-1a 64 of `bytes`: the hashes recorded for a policy's text and its
/// object.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The object's identity as recorded (`object_hash`): FNV-1a of the ELF,
/// hex. Equal ELF bytes are the same programs and map definitions.
pub fn object_hash(object: &Object) -> String {
    format!("{:016x}", fnv1a(&object.elf))
}

/// What was recorded when the running policy was applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub object_hash: Option<String>,
    /// The XDP program loaded for that object.
    pub xdp_prog_id: Option<u32>,
    /// The counter layout: per counter, what identifies it across
    /// policies (rule identity or phase), `None` when nothing does.
    pub counter_keys: Vec<Option<String>>,
}

/// The attachment the pinned XDP link reports now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// 0 once the interface went away.
    pub ifindex: u32,
    pub prog_id: u32,
}

/// The policy about to be applied.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub object_hash: &'a str,
    pub counter_keys: &'a [Option<String>],
    /// The interface it goes on.
    pub ifindex: u32,
}

/// How to apply a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Same object, still running here, same counter layout: rewrite the
    /// classifier maps, load nothing.
    InPlace,
    /// Load the object and attach it (fresh) or swap it in (replace).
    Load,
}

/// In place exactly when the record describes the very object of
/// `candidate`, still running (the recorded program behind a link on
/// this interface), with the same counter layout; else a load.
pub fn decide(
    recorded: Option<&Recorded>,
    link: Option<Link>,
    candidate: &Candidate<'_>,
) -> Change {
    let Some(recorded) = recorded else {
        return Change::Load;
    };
    // A link severed by its interface going away (ifindex 0), or one on
    // another interface of that name, runs nothing here: reload.
    let running = link
        .filter(|l| l.ifindex == candidate.ifindex)
        .map(|l| l.prog_id);
    let same = recorded.object_hash.as_deref() == Some(candidate.object_hash)
        && running.is_some()
        && recorded.xdp_prog_id == running
        && recorded.counter_keys == candidate.counter_keys;
    if same { Change::InPlace } else { Change::Load }
}

/// Which state maps of a replace come from the running policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptState {
    /// Pinned with exactly the planned shape: taken over.
    pub kept: Vec<String>,
    /// Pinned with another shape: the new policy starts them empty.
    pub reset: Vec<String>,
}

/// The state maps (see [`roles::state_maps`]) `object` takes over from a
/// running policy whose pinned maps have the shapes `pinned` reports
/// (`None`: not pinned; a new map, neither kept nor reset).
pub fn kept_state(object: &Object, pinned: &dyn Fn(&str) -> Option<MapShape>) -> KeptState {
    let mut out = KeptState::default();
    for map in roles::state_maps(object) {
        match pinned(&map.name) {
            None => {}
            Some(shape) if shape == MapShape::of(map) => out.kept.push(map.name.clone()),
            Some(_) => out.reset.push(map.name.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<Option<String>> {
        k.iter().map(|k| Some((*k).to_owned())).collect()
    }

    fn recorded(hash: &str, prog: u32, counters: &[&str]) -> Recorded {
        Recorded {
            object_hash: Some(hash.into()),
            xdp_prog_id: Some(prog),
            counter_keys: keys(counters),
        }
    }

    #[test]
    fn in_place_only_for_the_same_object_running_here_with_the_same_counters() {
        let counters = keys(&["rule:web", "phase:allow"]);
        let candidate = Candidate {
            object_hash: "aa",
            counter_keys: &counters,
            ifindex: 7,
        };
        let link = Some(Link {
            ifindex: 7,
            prog_id: 40,
        });
        let same = recorded("aa", 40, &["rule:web", "phase:allow"]);
        assert_eq!(decide(Some(&same), link, &candidate), Change::InPlace);
        // Nothing recorded, nothing running.
        assert_eq!(decide(None, link, &candidate), Change::Load);
        assert_eq!(decide(Some(&same), None, &candidate), Change::Load);
        // Another object.
        let other = recorded("bb", 40, &["rule:web", "phase:allow"]);
        assert_eq!(decide(Some(&other), link, &candidate), Change::Load);
        // The recorded program is not the one running.
        let stale = recorded("aa", 41, &["rule:web", "phase:allow"]);
        assert_eq!(decide(Some(&stale), link, &candidate), Change::Load);
        // The interface went away (ifindex 0) or is another one.
        for ifindex in [0, 8] {
            let moved = Some(Link {
                ifindex,
                prog_id: 40,
            });
            assert_eq!(decide(Some(&same), moved, &candidate), Change::Load);
        }
        // Same object, another counter layout (a rule renamed).
        let renamed = recorded("aa", 40, &["rule:www", "phase:allow"]);
        assert_eq!(decide(Some(&renamed), link, &candidate), Change::Load);
    }

    #[test]
    fn a_replace_keeps_state_maps_of_the_same_shape_only() {
        let text = "options { conntrack = on }\nlimit tcp to port 22 rate 10/s per src\n\
                    allow tcp to port { 22, 80, 443, 8080, 8443 }\n";
        let mut files = patronus_compiler::diag::Files::new();
        let file = files.add("p.pf", text.to_owned());
        struct NoTables;
        impl patronus_compiler::TableLoader for NoTables {
            fn load(&self, _: &str, path: &str) -> Result<patronus_compiler::LoadedFile, String> {
                Err(format!("no table {path}"))
            }
        }
        let checked = patronus_compiler::check(&mut files, file, &NoTables);
        let program = patronus_compiler::ir::lower(&checked.policy.expect("a policy"));
        let object = patronus_codegen::compile(&program).expect("compiles");
        let def = |name: &str| {
            object
                .maps
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("no map {name}"))
                .clone()
        };
        let pinned = |name: &str| match name {
            // Same shape as planned (state or not: only state is kept).
            "ct_v4" | "stats" => Some(MapShape::of(&def(name))),
            // Resized by the new policy.
            "rl_src_v4" => {
                let mut resized = def(name);
                resized.max_entries /= 2;
                Some(MapShape::of(&resized))
            }
            _ => None,
        };
        assert_eq!(
            kept_state(&object, &pinned),
            KeptState {
                kept: vec!["ct_v4".into()],
                reset: vec!["rl_src_v4".into()],
            }
        );
    }
}
