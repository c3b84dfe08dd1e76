//! Consistency checks of a ledger through the [`Storage`] trait (what
//! `autoresearch doctor` runs), the same for every backend.
//!
//! For each world: its whole log is replayed from tick 0 through its
//! lineage, ignoring snapshots (so a damaged record is found even where a
//! snapshot would hide it); every own snapshot is compared with the replayed
//! state at its tick; every entity's index entries are compared with the
//! ticks whose records touch it. Across worlds: names are unique. Nothing is
//! written; [`repair_world`] is the one writing step, and it only adds.

use crate::error::Error;
use crate::ids::{EntityId, Tick, WorldId};
use crate::ledger;
use crate::record::State;
use crate::storage::{Storage, WorldInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How many ticks one read of a replay asks for.
const WINDOW: u64 = 512;

/// Something wrong with a world.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The log cannot be replayed past `readable_to` (a record is missing,
    /// unreadable or does not apply to the state before it).
    Unreplayable {
        /// The last tick whose state replays.
        readable_to: Tick,
        /// Why the next tick does not.
        reason: String,
    },
    /// A stored snapshot differs from the replayed state at its tick.
    SnapshotMismatch {
        /// The snapshot's tick.
        tick: Tick,
    },
    /// A snapshot could not be read.
    SnapshotUnreadable {
        /// The tick asked for.
        at: Tick,
        /// The backend's error.
        reason: String,
    },
    /// The entity index disagrees with the records.
    IndexMismatch {
        /// The entity.
        entity: EntityId,
        /// Ticks whose records touch it but the index does not list.
        missing: Vec<Tick>,
        /// Ticks the index lists whose records do not touch it.
        extra: Vec<Tick>,
    },
    /// The index could not be read for an entity.
    IndexUnreadable {
        /// The entity.
        entity: EntityId,
        /// The backend's error.
        reason: String,
    },
    /// Several worlds have this world's name.
    DuplicateName {
        /// Every world of the name.
        worlds: Vec<WorldId>,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unreplayable {
                readable_to,
                reason,
            } => write!(
                f,
                "the log cannot be replayed past tick {readable_to}: {reason}"
            ),
            Problem::SnapshotMismatch { tick } => {
                write!(
                    f,
                    "the snapshot at tick {tick} differs from the replayed state"
                )
            }
            Problem::SnapshotUnreadable { at, reason } => {
                write!(
                    f,
                    "the snapshot at or before tick {at} cannot be read: {reason}"
                )
            }
            Problem::IndexMismatch {
                entity,
                missing,
                extra,
            } => write!(
                f,
                "the index of {entity} misses ticks {missing:?} and lists ticks {extra:?} that do not touch it"
            ),
            Problem::IndexUnreadable { entity, reason } => {
                write!(f, "the index of {entity} cannot be read: {reason}")
            }
            Problem::DuplicateName { worlds } => {
                let ids: Vec<String> = worlds.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{} worlds share this name: {}",
                    worlds.len(),
                    ids.join(", ")
                )
            }
        }
    }
}

/// What the checks found for one world.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldReport {
    /// The world as the catalogue lists it.
    pub info: WorldInfo,
    /// The ticks replayed (the head when nothing is wrong).
    pub replayed_to: Tick,
    /// Snapshots compared with the replay.
    pub snapshots_checked: usize,
    /// Entities whose index was compared with the records.
    pub entities_checked: usize,
    /// Everything wrong, empty when the world is sound.
    pub problems: Vec<Problem>,
}

impl WorldReport {
    /// Whether nothing is wrong.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every world of the ledger. Errors only when the catalogue itself
/// cannot be listed; a world's damage is a [`Problem`] in its report.
/// Cost: a full replay of every world (one read of every record of every
/// lineage) plus one index read per entity.
pub async fn check_ledger(storage: &dyn Storage) -> Result<Vec<WorldReport>, Error> {
    let worlds = storage.list_worlds().await?;
    let mut by_name: HashMap<&str, Vec<WorldId>> = HashMap::new();
    for w in &worlds {
        by_name.entry(w.name.as_str()).or_default().push(w.id);
    }
    let mut reports = Vec::with_capacity(worlds.len());
    for w in &worlds {
        let mut r = check_world(storage, w).await;
        if let Some(ids) = by_name.get(w.name.as_str()).filter(|ids| ids.len() > 1) {
            r.problems.push(Problem::DuplicateName {
                worlds: ids.clone(),
            });
        }
        reports.push(r);
    }
    Ok(reports)
}

/// Checks one world: replay from tick 0, snapshots, entity index.
pub async fn check_world(storage: &dyn Storage, info: &WorldInfo) -> WorldReport {
    let mut report = WorldReport {
        info: info.clone(),
        replayed_to: Tick::ZERO,
        snapshots_checked: 0,
        entities_checked: 0,
        problems: Vec::new(),
    };
    let (snapshots, snapshot_problems) = own_snapshot_ticks(storage, info).await;
    report.problems.extend(snapshot_problems);
    let mut touched: BTreeMap<EntityId, BTreeSet<Tick>> = BTreeMap::new();
    let mut state = State::empty();
    let mut from = 1;
    while from <= info.head.0 {
        let to = (from + WINDOW - 1).min(info.head.0);
        let records = match ledger::read_records(storage, info.id, Tick(from), Tick(to)).await {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(Problem::Unreplayable {
                    readable_to: state.tick,
                    reason: e.to_string(),
                });
                break;
            }
        };
        for r in &records {
            if let Err(e) = state.apply(info.id, r) {
                report.problems.push(Problem::Unreplayable {
                    readable_to: state.tick,
                    reason: e.to_string(),
                });
                return finish(storage, info, report, state.tick, touched).await;
            }
            if r.tick >= info.first_own_tick() {
                for e in r.entities() {
                    touched.entry(e).or_default().insert(r.tick);
                }
            }
            if let Some(snap) = snapshots.get(&r.tick) {
                report.snapshots_checked += 1;
                if State::from_snapshot(snap.clone()) != state {
                    report
                        .problems
                        .push(Problem::SnapshotMismatch { tick: r.tick });
                }
            }
        }
        from = to + 1;
    }
    let replayed = state.tick;
    finish(storage, info, report, replayed, touched).await
}

async fn finish(
    storage: &dyn Storage,
    info: &WorldInfo,
    mut report: WorldReport,
    replayed_to: Tick,
    touched: BTreeMap<EntityId, BTreeSet<Tick>>,
) -> WorldReport {
    report.replayed_to = replayed_to;
    for (entity, ticks) in touched {
        report.entities_checked += 1;
        match storage.own_entity_ticks(info.id, entity, replayed_to).await {
            Ok(indexed) => {
                let indexed: BTreeSet<Tick> = indexed.into_iter().collect();
                let missing: Vec<Tick> = ticks.difference(&indexed).copied().collect();
                let extra: Vec<Tick> = indexed.difference(&ticks).copied().collect();
                if !missing.is_empty() || !extra.is_empty() {
                    report.problems.push(Problem::IndexMismatch {
                        entity,
                        missing,
                        extra,
                    });
                }
            }
            Err(e) => report.problems.push(Problem::IndexUnreadable {
                entity,
                reason: e.to_string(),
            }),
        }
    }
    report
}

/// The world's own snapshots by tick (walking down from the head).
async fn own_snapshot_ticks(
    storage: &dyn Storage,
    info: &WorldInfo,
) -> (BTreeMap<Tick, crate::record::Snapshot>, Vec<Problem>) {
    let mut out = BTreeMap::new();
    let mut at = info.head;
    let first = info.first_own_tick();
    while at >= first && at > Tick::ZERO {
        match storage.own_snapshot_at_or_before(info.id, at).await {
            Ok(Some(s)) if s.tick >= first && s.tick <= at => {
                let next = Tick(s.tick.0.saturating_sub(1));
                out.insert(s.tick, s);
                at = next;
            }
            Ok(_) => break,
            Err(e) => {
                return (
                    out,
                    vec![Problem::SnapshotUnreadable {
                        at,
                        reason: e.to_string(),
                    }],
                );
            }
        }
    }
    (out, Vec::new())
}

/// Saves what is readable of a world whose log stops replaying at
/// `readable_to`: a fork of it at that tick named `name`, which reads (and
/// can be written) like any world. Nothing is deleted or changed in the
/// damaged world. Cost: one catalogue row.
pub async fn repair_world(
    storage: &dyn Storage,
    world: WorldId,
    readable_to: Tick,
    name: &str,
) -> Result<WorldInfo, Error> {
    Ok(storage.fork_world(world, readable_to, name).await?)
}
