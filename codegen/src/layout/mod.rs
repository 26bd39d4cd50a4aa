//! The map layout of a policy, decided once, before any instruction is
//! emitted: every map the programs use, in object order, each with a typed
//! [`MapRole`], its definition and its initial entries; and per classifier
//! its [`ClassifierStorage`] (inline compares, one map, or an LPM trie
//! behind DIR-24 arrays).
//!
//! Emission (`xdp`, `tc`, `state`) only reads the layout: a map's
//! [`MapRef`] is asked by role ([`Layout::stats`], [`Layout::conntrack`],
//! [`Layout::rate_limit`], [`Layout::log_maps`], [`Layout::dir24_of`],
//! [`Layout::const_ref`]). The object carries it (`Object::layout`), so
//! the runtime and the CLI ask it too (`Object::state_maps`,
//! `Object::content_maps`, ...) instead of parsing names. Names stay what
//! `ir::plan` and [`dir24`] make them: they are the pin names users see.
//!
//! Object order (it is the `MapRef` numbering, so it fixes the ELF bytes):
//! the maps of `ir::Program::maps` in plan order, then the maps the
//! program adds, in the order the XDP program first uses them — per family
//! path (IPv4, then IPv6), per rule phase in emission order (deny, then
//! limit and allow): a wide phase's constants, the DIR-24 arrays of its
//! big IPv4 tries, the log maps at its first rule with `log`.
//!
//! - [`candidates`]: the candidate lists wide phases append to bitmaps.
//! - [`dir24`]: the DIR-24 arrays' format, names and contents.

pub mod candidates;
pub mod dir24;

use std::collections::HashMap;

use patronus_compiler::ir::plan::{Contents, MapKind};
use patronus_compiler::ir::{self, Classifier, Field, Key, PhaseKind, PhasePlan, Storage};
use patronus_compiler::typed::{Family, RateKey};

use crate::abi::{self, classifier::bitmap_bytes};
use crate::elf::{DataType, MapDef};
use crate::error::CodegenError;
use crate::insn::MapRef;
use crate::insn::kernel::map_type;
use candidates::PhaseCandidates;

/// What a map is for. Decided here (from the IR plan's typed contents and
/// the layout pass); nothing downstream re-derives it from a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRole {
    /// Classifier `classifier` of phase `phase` (field `field`): a hash,
    /// LPM trie or array of rule bitmaps. Behind DIR-24 arrays, the trie
    /// holds only what their fallback slots need.
    Classifier {
        phase: usize,
        classifier: usize,
        field: Field,
    },
    /// The constant bitmaps (start, miss, absent, inline entries) of a
    /// wide phase, by index.
    PhaseConsts { phase: usize },
    /// The DIR-24 slot array in front of classifier map `trie` (index in
    /// the object's maps); memory-mapped, filled from runs.
    Dir24Slots { trie: usize },
    /// The DIR-24 bitmap array in front of classifier map `trie`.
    Dir24Bitmaps { trie: usize },
    /// One family's conntrack table (state).
    Conntrack(Family),
    /// The token buckets of rate key `key` (state); `family: None` for
    /// `per global`.
    RateLimit {
        key: RateKey,
        family: Option<Family>,
    },
    /// The per-CPU counters, laid out as `ir::Program::counters`.
    Stats,
    /// The ring buffer of `log` events.
    LogEvents,
    /// The token bucket capping `log` events.
    LogBucket,
}

impl MapRole {
    /// Traffic state written by the data path (conntrack, rate-limit
    /// buckets): carried over when a policy is replaced, cleared by a reset.
    pub fn is_state(self) -> bool {
        matches!(self, MapRole::Conntrack(_) | MapRole::RateLimit { .. })
    }

    /// Filled from the policy (classifier maps, phase constants, DIR-24
    /// arrays): what an in-place update rewrites.
    pub fn is_content(self) -> bool {
        matches!(
            self,
            MapRole::Classifier { .. }
                | MapRole::PhaseConsts { .. }
                | MapRole::Dir24Slots { .. }
                | MapRole::Dir24Bitmaps { .. }
        )
    }

    /// Filled through its memory mapping (runs, [`dir24`]), not by
    /// per-element updates.
    pub fn is_mapped(self) -> bool {
        matches!(self, MapRole::Dir24Slots { .. })
    }
}

/// How one classifier is looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifierStorage {
    /// Compares against constants in the code: no map.
    Inline,
    /// One map of kind `kind` (hash, LPM trie or array).
    Map { map: usize, kind: MapKind },
    /// An IPv4 LPM trie behind DIR-24 arrays ([`dir24`]).
    Dir24 {
        trie: usize,
        slots: usize,
        bitmaps: usize,
    },
}

impl ClassifierStorage {
    /// Every map the classifier's entries live in (none when inline).
    pub fn maps(self) -> Vec<usize> {
        match self {
            ClassifierStorage::Inline => Vec::new(),
            ClassifierStorage::Map { map, .. } => vec![map],
            ClassifierStorage::Dir24 {
                trie,
                slots,
                bitmaps,
            } => vec![trie, slots, bitmaps],
        }
    }
}

/// The constants of one wide phase: their map and the index of each.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PhaseConsts {
    map: usize,
    index: HashMap<Vec<u64>, u32>,
    values: Vec<Vec<u64>>,
}

/// The layout of a policy's maps (see the module doc). Map indices are
/// positions in the object's maps (`Object::maps`, `MapRef`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    roles: Vec<MapRole>,
    /// `[phase][classifier]`.
    classifiers: Vec<Vec<ClassifierStorage>>,
    /// By phase index.
    consts: Vec<Option<PhaseConsts>>,
    /// Candidate-list layouts of wide phases that use them, by phase.
    candidates: Vec<Option<PhaseCandidates>>,
}

/// Lays out the maps of `program`: the layout and the maps' definitions
/// with their initial entries, in object order (parallel to
/// [`Layout::roles`]).
pub fn plan(program: &ir::Program) -> Result<(Layout, Vec<MapDef>), CodegenError> {
    let mut b = Builder {
        program,
        defs: Vec::new(),
        layout: Layout {
            roles: Vec::new(),
            classifiers: program
                .phases
                .iter()
                .map(|p| vec![ClassifierStorage::Inline; p.classifiers.len()])
                .collect(),
            consts: vec![None; program.phases.len()],
            candidates: program.phases.iter().map(candidates::plan).collect(),
        },
        log: false,
    };
    for (m, plan) in program.maps.iter().enumerate() {
        let mut def = abi::map_def(program, plan)?;
        let role = match plan.contents {
            Contents::Classifier { phase, classifier } => {
                let c =
                    abi::classifier_of(program, plan).ok_or_else(|| CodegenError::Internal {
                        what: format!("map `{}` names a missing classifier", plan.name),
                    })?;
                def.entries = abi::classifier::entries(c, plan.kind);
                b.layout.classifiers[phase][classifier] = ClassifierStorage::Map {
                    map: m,
                    kind: plan.kind,
                };
                MapRole::Classifier {
                    phase,
                    classifier,
                    field: c.field,
                }
            }
            Contents::Conntrack(family) => MapRole::Conntrack(family),
            Contents::RateLimit { key, family } => MapRole::RateLimit { key, family },
            Contents::Stats => MapRole::Stats,
        };
        b.push(role, def);
    }
    // The maps the XDP program adds, in the order it first uses them.
    for family in [Family::Ipv4, Family::Ipv6] {
        for (pi, phase) in program.phases.iter().enumerate() {
            if phase.kind == PhaseKind::Deny {
                b.phase(pi, family)?;
            }
        }
        for (pi, phase) in program.phases.iter().enumerate() {
            if phase.kind != PhaseKind::Deny {
                b.phase(pi, family)?;
            }
        }
    }
    b.finish_consts();
    b.extend_primaries();
    Ok((b.layout, b.defs))
}

struct Builder<'p> {
    program: &'p ir::Program,
    defs: Vec<MapDef>,
    layout: Layout,
    /// The log maps are laid out.
    log: bool,
}

impl Builder<'_> {
    fn push(&mut self, role: MapRole, def: MapDef) -> usize {
        self.layout.roles.push(role);
        self.defs.push(def);
        self.defs.len() - 1
    }

    /// The maps phase `pi` adds on `family`'s path, in the order the phase
    /// code first uses them (`xdp::phases`).
    fn phase(&mut self, pi: usize, family: Family) -> Result<(), CodegenError> {
        let program = self.program;
        let phase = &program.phases[pi];
        let start = phase.start_for(family);
        if start.is_zero() {
            return Ok(());
        }
        let wide = phase.words != 1;
        if wide {
            self.constant(pi, &start.0);
        }
        for ci in applicable(phase, family) {
            let c = &phase.classifiers[ci];
            match c.storage {
                Storage::Inline if wide => {
                    for i in inline_order(c) {
                        self.constant(pi, c.entry(i));
                    }
                }
                Storage::Inline => {}
                Storage::Map(m) => {
                    if program.maps[m].kind == MapKind::LpmTrie && dir24::wanted(c) {
                        self.dir24(pi, ci, m)?;
                    }
                }
            }
            if wide {
                self.constant(pi, &c.miss.0);
                if can_be_absent(c.field) {
                    self.constant(pi, &c.absent.0);
                }
            }
        }
        // Every rule the path can decide by (or charge) has its leaf; the
        // first with `log` adds the log maps.
        let logs = start
            .iter()
            .filter_map(|bit| phase.rules.get(bit))
            .any(|r| program.rules.get(r.0 as usize).is_some_and(|r| r.log));
        if logs && !self.log && abi::log::bucket_bounds(program.options.log_rate).is_some() {
            self.log = true;
            self.push(MapRole::LogEvents, abi::log::ringbuf_map());
            self.push(MapRole::LogBucket, abi::log::bucket_map());
        }
        Ok(())
    }

    /// Gives `bits` an index in phase `pi`'s constants (the map is made at
    /// the phase's first constant).
    fn constant(&mut self, pi: usize, bits: &[u64]) {
        if self.layout.consts[pi].is_none() {
            let phase = &self.program.phases[pi];
            // A phase with candidate lists may take its primary bitmap
            // from here (miss, absent, inline entries): every constant
            // carries a list.
            let value_size = self.layout.candidates[pi]
                .as_ref()
                .map_or(8 * phase.words, PhaseCandidates::value_size)
                as u32;
            let def = MapDef::empty(
                format!("consts_{}", phase.kind.name()),
                map_type::ARRAY,
                1,
                Some(DataType::U32),
                Some(DataType::Bytes(value_size)),
            );
            let map = self.push(MapRole::PhaseConsts { phase: pi }, def);
            self.layout.consts[pi] = Some(PhaseConsts {
                map,
                index: HashMap::new(),
                values: Vec::new(),
            });
        }
        if let Some(consts) = &mut self.layout.consts[pi] {
            let next = consts.values.len() as u32;
            if *consts.index.entry(bits.to_vec()).or_insert(next) == next {
                consts.values.push(bits.to_vec());
            }
        }
    }

    /// The DIR-24 arrays in front of classifier `ci`'s trie `trie`, which
    /// then keeps only what fallback slots need.
    fn dir24(&mut self, pi: usize, ci: usize, trie: usize) -> Result<(), CodegenError> {
        let c = &self.program.phases[pi].classifiers[ci];
        let tables = dir24::build(c);
        // A candidate primary's bitmaps carry their lists here too.
        let cand = self.layout.primary_of(self.program, trie).cloned();
        let value_size = cand
            .as_ref()
            .map_or(8 * c.words, PhaseCandidates::value_size) as u32;
        let name = self.defs[trie].name.clone();
        let slots = self.push(
            MapRole::Dir24Slots { trie },
            dir24::slots_map(&name, &tables),
        );
        let bitmaps = self.push(
            MapRole::Dir24Bitmaps { trie },
            dir24::bitmaps_map(&name, &tables, value_size, |bytes| match &cand {
                Some(cand) => cand.extend(&bytes),
                None => bytes,
            }),
        );
        self.defs[trie].entries = dir24::trie_entries(&tables);
        self.layout.classifiers[pi][ci] = ClassifierStorage::Dir24 {
            trie,
            slots,
            bitmaps,
        };
        Ok(())
    }

    /// The constants' entries, once every path has asked for its own.
    fn finish_consts(&mut self) {
        for (pi, consts) in self.layout.consts.iter().enumerate() {
            let Some(consts) = consts else { continue };
            let cand = self.layout.candidates[pi].as_ref();
            let def = &mut self.defs[consts.map];
            def.max_entries = consts.values.len().max(1) as u32;
            def.entries = consts
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let bitmap = bitmap_bytes(v);
                    let value = cand.map_or(bitmap.clone(), |c| c.extend(&bitmap));
                    ((i as u32).to_le_bytes().to_vec(), value)
                })
                .collect();
        }
    }

    /// A wide phase's primary classifier maps: each value carries its
    /// candidate list ([`candidates`]).
    fn extend_primaries(&mut self) {
        for m in 0..self.program.maps.len() {
            let Some(cand) = self.layout.primary_of(self.program, m) else {
                continue;
            };
            let size = cand.value_size() as u32;
            let def = &mut self.defs[m];
            def.value = Some(DataType::Bytes(size));
            for (_, value) in &mut def.entries {
                *value = cand.extend(value);
            }
        }
    }
}

/// The classifiers of a phase that apply on a family's path, in the order
/// the phase code looks them up: address classifiers of the other family
/// are never consulted; inline compares first (cheap, and they can end the
/// phase before a lookup).
pub fn applicable(phase: &PhasePlan, family: Family) -> Vec<usize> {
    let mut order: Vec<usize> = (0..phase.classifiers.len())
        .filter(|&i| match phase.classifiers[i].field {
            Field::SrcAddr(f) | Field::DstAddr(f) => f == family,
            _ => true,
        })
        .collect();
    order.sort_by_key(|&i| phase.classifiers[i].storage != Storage::Inline);
    order
}

/// The order inline compares test a classifier's entries: longest prefix
/// first (the first hit is the longest match), exact ICMP (type, code)
/// before (type, any code), else entry order.
pub fn inline_order(c: &Classifier) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    match c.field {
        Field::SrcAddr(_) | Field::DstAddr(_) => order.sort_by_key(|&i| match c.keys[i] {
            Key::Prefix(p) => std::cmp::Reverse(p.len),
            _ => std::cmp::Reverse(0),
        }),
        Field::Icmp => {
            order.sort_by_key(|&i| !matches!(c.keys[i], Key::Icmp { code: Some(_), .. }))
        }
        _ => {}
    }
    order
}

/// Fields some IP packets lack (ports, ICMP, TCP flags, VLAN): their
/// classifiers have an `absent` bitmap.
pub fn can_be_absent(field: Field) -> bool {
    !matches!(field, Field::Proto | Field::SrcAddr(_) | Field::DstAddr(_))
}

impl Layout {
    /// The role of every map, in object order.
    pub fn roles(&self) -> &[MapRole] {
        &self.roles
    }

    /// The role of map `map`.
    pub fn role(&self, map: usize) -> Option<MapRole> {
        self.roles.get(map).copied()
    }

    /// The maps whose role satisfies `pred`, in object order.
    pub fn maps_where(&self, pred: impl Fn(MapRole) -> bool) -> Vec<usize> {
        (0..self.roles.len())
            .filter(|&m| pred(self.roles[m]))
            .collect()
    }

    fn find(&self, role: MapRole) -> Option<usize> {
        self.roles.iter().position(|r| *r == role)
    }

    fn map_ref(&self, role: MapRole) -> Result<MapRef, CodegenError> {
        self.find(role)
            .map(|m| MapRef(m as u32))
            .ok_or_else(|| CodegenError::Internal {
                what: format!("the layout has no {role:?} map"),
            })
    }

    /// How classifier `classifier` of phase `phase` is looked up.
    pub fn classifier(&self, phase: usize, classifier: usize) -> Option<ClassifierStorage> {
        self.classifiers.get(phase)?.get(classifier).copied()
    }

    /// How phase `phase`'s classifier of `field` is looked up (`None`:
    /// the phase does not constrain the field).
    pub fn classifier_of_field(
        &self,
        program: &ir::Program,
        phase: usize,
        field: Field,
    ) -> Option<ClassifierStorage> {
        let ci = program
            .phases
            .get(phase)?
            .classifiers
            .iter()
            .position(|c| c.field == field)?;
        self.classifier(phase, ci)
    }

    /// The stats map.
    pub fn stats(&self) -> Result<MapRef, CodegenError> {
        self.map_ref(MapRole::Stats)
    }

    /// `family`'s conntrack map.
    pub fn conntrack(&self, family: Family) -> Result<MapRef, CodegenError> {
        self.map_ref(MapRole::Conntrack(family))
    }

    /// The bucket map of rate key `key` on `family`'s path (the one
    /// `per global` array whatever the family).
    pub fn rate_limit(&self, key: RateKey, family: Family) -> Result<MapRef, CodegenError> {
        let family = (key != RateKey::Global).then_some(family);
        self.map_ref(MapRole::RateLimit { key, family })
    }

    /// The log ring buffer and bucket, when some rule logs.
    pub fn log_maps(&self) -> Option<(MapRef, MapRef)> {
        let ring = self.find(MapRole::LogEvents)?;
        let bucket = self.find(MapRole::LogBucket)?;
        Some((MapRef(ring as u32), MapRef(bucket as u32)))
    }

    /// The DIR-24 (slots, bitmaps) arrays in front of classifier map
    /// `trie`, if it has them.
    pub fn dir24_of(&self, trie: usize) -> Option<(MapRef, MapRef)> {
        let slots = self.find(MapRole::Dir24Slots { trie })?;
        let bitmaps = self.find(MapRole::Dir24Bitmaps { trie })?;
        Some((MapRef(slots as u32), MapRef(bitmaps as u32)))
    }

    /// Phase `phase`'s constants map and the index of `bits` in it.
    pub fn const_ref(&self, phase: usize, bits: &[u64]) -> Result<(MapRef, u32), CodegenError> {
        let consts = self
            .consts
            .get(phase)
            .and_then(Option::as_ref)
            .ok_or_else(|| CodegenError::Internal {
                what: format!("phase {phase} has no constants map"),
            })?;
        let index = consts
            .index
            .get(bits)
            .ok_or_else(|| CodegenError::Internal {
                what: format!("a constant of phase {phase} was not laid out"),
            })?;
        Ok((MapRef(consts.map as u32), *index))
    }

    /// The candidate-list layout of phase `phase`, if it uses one.
    pub fn candidates(&self, phase: usize) -> Option<&PhaseCandidates> {
        self.candidates.get(phase)?.as_ref()
    }

    /// The candidate layout whose lists classifier map `map`'s values
    /// carry: the map is a primary of its phase ([`candidates`]).
    pub fn primary_of(&self, program: &ir::Program, map: usize) -> Option<&PhaseCandidates> {
        self.candidates.iter().enumerate().find_map(|(pi, cand)| {
            let cand = cand.as_ref()?;
            let classifiers = &program.phases.get(pi)?.classifiers;
            cand.primary
                .iter()
                .flatten()
                .any(|&ci| classifiers.get(ci).map(|c| c.storage) == Some(Storage::Map(map)))
                .then_some(cand)
        })
    }

    /// The classifier maps whose values carry candidate lists, with the
    /// layout of the lists.
    pub fn primaries(&self, program: &ir::Program) -> Vec<(usize, &PhaseCandidates)> {
        (0..program.maps.len())
            .filter_map(|m| self.primary_of(program, m).map(|c| (m, c)))
            .collect()
    }
}
