//! Reads through fork lineage, written once above the [`Storage`] trait so
//! that every backend behaves alike: materializing a tick (nearest snapshot,
//! then replay) and an entity's audit history.

use crate::error::Error;
use crate::ids::{EntityId, Tick, WorldId};
use crate::record::{Change, ComponentRecord, State, TickRecord};
use crate::registry::{ComponentRegistry, ComponentValue};
use crate::storage::{Storage, StorageError, WorldInfo};
mod values;

pub use values::{ComponentValues, component_values_at};

/// One segment of a world's log as seen from a descendant: `world` owns ticks
/// `from..=to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The world whose own log holds these ticks.
    pub world: WorldId,
    /// The first tick of the segment.
    pub from: Tick,
    /// The last tick of the segment (inclusive).
    pub to: Tick,
}

/// The segments that make up `world`'s ticks `1..=to`, oldest first.
/// Cost: one catalogue read per ancestor.
pub async fn segments(
    storage: &dyn Storage,
    world: WorldId,
    to: Tick,
) -> Result<Vec<Segment>, Error> {
    let mut out = Vec::new();
    let mut info = storage.world(world).await?;
    let mut upper = to;
    if upper > info.head {
        return Err(Error::TickBeyondHead {
            world,
            tick: to,
            head: info.head,
        });
    }
    loop {
        let from = info.first_own_tick();
        if from <= upper {
            out.push(Segment {
                world: info.id,
                from,
                to: upper,
            });
        }
        match info.parent {
            Some(p) => {
                upper = upper.min(p.tick);
                info = parent_of(storage, &info, p.parent).await?;
            }
            None => break,
        }
    }
    out.reverse();
    Ok(out)
}

/// Records of `world` in `from..=to`, following lineage into ancestors.
pub async fn read_records(
    storage: &dyn Storage,
    world: WorldId,
    from: Tick,
    to: Tick,
) -> Result<Vec<TickRecord>, Error> {
    let mut out = Vec::new();
    if from > to {
        return Ok(out);
    }
    for seg in segments(storage, world, to).await? {
        let lo = seg.from.max(from);
        if lo > seg.to {
            continue;
        }
        out.extend(storage.read_own_records(seg.world, lo, seg.to).await?);
    }
    check_contiguous(world, from.max(Tick(1)), to, &out)?;
    Ok(out)
}

fn check_contiguous(
    world: WorldId,
    from: Tick,
    to: Tick,
    records: &[TickRecord],
) -> Result<(), Error> {
    check_ticks(world, from, to, records.iter().map(|r| r.tick))
}

/// Errors (`Corrupt`, naming the first missing tick) unless `ticks` are
/// exactly `from..=to` in order.
fn check_ticks(
    world: WorldId,
    from: Tick,
    to: Tick,
    ticks: impl Iterator<Item = Tick> + Clone,
) -> Result<(), Error> {
    let expected = to.0.saturating_sub(from.0) + 1;
    let mut n = 0u64;
    let mut in_order = true;
    for (t, want) in ticks.clone().zip(from.0..) {
        n += 1;
        in_order &= t.0 == want;
    }
    if n != expected || !in_order {
        let missing = (from.0..=to.0)
            .zip(ticks.map(|t| t.0).chain(std::iter::repeat(0)))
            .find(|(want, got)| want != got)
            .map_or(to, |(want, _)| Tick(want));
        return Err(Error::Storage(StorageError::Corrupt {
            world,
            tick: missing,
            reason: "tick record missing from the log".into(),
        }));
    }
    Ok(())
}

/// The state of `world` at `tick`: the nearest snapshot at or before it on
/// the world's lineage, then a replay of the records after it.
/// Cost: O(snapshot size + ticks since that snapshot), independent of history.
pub async fn state_at(storage: &dyn Storage, world: WorldId, tick: Tick) -> Result<State, Error> {
    Ok(state_and_replay_at(storage, world, tick).await?.0)
}

/// As [`state_at`], with about how many bytes of records were replayed
/// after the snapshot ([`TickRecord::approx_bytes`]), for snapshot
/// policies ([`Storage::snapshot_due_after`]).
pub async fn state_and_replay_at(
    storage: &dyn Storage,
    world: WorldId,
    tick: Tick,
) -> Result<(State, u64), Error> {
    let base = base_snapshot(storage, world, tick).await?;
    let mut state = base.map(State::from_snapshot).unwrap_or_else(State::empty);
    match replay(storage, world, &mut state, tick).await {
        Ok(bytes) => Ok((state, bytes)),
        Err(source) => Err(Error::Unreplayable {
            location: storage.location(),
            world,
            readable_to: state.tick,
            source: Box::new(source),
        }),
    }
}

/// The nearest snapshot at or before `tick` on `world`'s lineage.
async fn base_snapshot(
    storage: &dyn Storage,
    world: WorldId,
    tick: Tick,
) -> Result<Option<crate::Snapshot>, Error> {
    let segs = segments(storage, world, tick).await?;
    for seg in segs.iter().rev() {
        if let Some(s) = storage.own_snapshot_at_or_before(seg.world, seg.to).await?
            && s.tick >= seg.from
        {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Applies the records after `state` up to `to`; returns about how many
/// bytes they held. On an error, `state` is at the last tick that read and
/// applied.
async fn replay(
    storage: &dyn Storage,
    world: WorldId,
    state: &mut State,
    to: Tick,
) -> Result<u64, Error> {
    if state.tick >= to {
        return Ok(0);
    }
    let error = match read_records(storage, world, state.tick.next(), to).await {
        Ok(records) => {
            let mut bytes = 0;
            for rec in records {
                bytes += rec.approx_bytes();
                state.apply_owned(world, rec)?;
            }
            return Ok(bytes);
        }
        Err(e) => e,
    };
    // Which tick is unreadable: one record at a time (the error path only;
    // at most a snapshot interval of reads).
    while state.tick < to {
        let next = state.tick.next();
        for rec in read_records(storage, world, next, next).await? {
            state.apply(world, &rec)?;
        }
    }
    Err(error)
}

/// Every entity of `world` alive at `tick` that holds component `T`, with
/// its value, ordered by entity id: the answer to "the runs at tick T"
/// without materializing a [`crate::World`] (no hecs world, no other
/// component decoded). Cost: as [`state_at`], plus one decode per entity
/// holding `T`.
pub async fn component_at<T: ComponentValue>(
    storage: &dyn Storage,
    registry: &ComponentRegistry,
    world: WorldId,
    tick: Tick,
) -> Result<Vec<(EntityId, T)>, Error> {
    let values = component_values_at::<T>(storage, registry, world, tick).await?;
    let mut out = Vec::with_capacity(values.len());
    for (entity, value) in values.iter() {
        out.push((entity, registry.decode::<T>(world, value)?));
    }
    Ok(out)
}

/// As [`component_at`], with each value as stored (the registry's postcard
/// bytes), not decoded, each in its own `Vec`. Cost: as
/// [`component_values_at`], plus one copy of every value; prefer that one
/// for large reads.
pub async fn component_bytes_at<T: ComponentValue>(
    storage: &dyn Storage,
    registry: &ComponentRegistry,
    world: WorldId,
    tick: Tick,
) -> Result<Vec<(EntityId, Vec<u8>)>, Error> {
    Ok(component_values_at::<T>(storage, registry, world, tick)
        .await?
        .to_vecs())
}

/// As [`read_records`], projected on `component`
/// ([`Storage::read_own_component_records`]).
pub async fn read_component_records(
    storage: &dyn Storage,
    world: WorldId,
    from: Tick,
    to: Tick,
    component: &str,
) -> Result<Vec<ComponentRecord>, Error> {
    if from > to {
        return Ok(Vec::new());
    }
    let segs = segments(storage, world, to).await?;
    component_records_in(storage, world, &segs, from, to, component).await
}

/// The records `from..=to` of the lineage `segs` (from [`segments`] up to
/// at least `to`), projected on `component`, checked to be contiguous.
async fn component_records_in(
    storage: &dyn Storage,
    world: WorldId,
    segs: &[Segment],
    from: Tick,
    to: Tick,
    component: &str,
) -> Result<Vec<ComponentRecord>, Error> {
    lineage_records_in(
        world,
        segs,
        from,
        to,
        |w, lo, hi| storage.read_own_component_records(w, lo, hi, component),
        |r| r.tick,
    )
    .await
}

/// The records `from..=to` of the lineage `segs`, each segment's own
/// read with `read(world, lo, hi)` (one of the `Storage::read_own_*`
/// projections), checked to be contiguous (`tick` gives a record's).
async fn lineage_records_in<R, F, Fut>(
    world: WorldId,
    segs: &[Segment],
    from: Tick,
    to: Tick,
    read: F,
    tick: fn(&R) -> Tick,
) -> Result<Vec<R>, Error>
where
    F: Fn(WorldId, Tick, Tick) -> Fut,
    Fut: Future<Output = Result<Vec<R>, StorageError>>,
{
    let mut out = Vec::new();
    for seg in segs {
        let (lo, hi) = (seg.from.max(from), seg.to.min(to));
        if lo > hi {
            continue;
        }
        out.extend(read(seg.world, lo, hi).await?);
    }
    check_ticks(world, from.max(Tick(1)), to, out.iter().map(tick))?;
    Ok(out)
}

/// One entry of an entity's audit history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityChange {
    /// The tick that made the change.
    pub tick: Tick,
    /// When that tick was committed, in Unix milliseconds.
    pub at_ms: i64,
    /// What the tick did to the entity.
    pub change: Change,
}

/// Every change to `entity` in `world` up to `to`, oldest first, read through
/// the backend's entity index (no scan of the world's log).
pub async fn entity_history(
    storage: &dyn Storage,
    world: WorldId,
    entity: EntityId,
    to: Tick,
) -> Result<Vec<EntityChange>, Error> {
    let mut out = Vec::new();
    for seg in segments(storage, world, to).await? {
        let ticks = storage.own_entity_ticks(seg.world, entity, seg.to).await?;
        for t in ticks.into_iter().filter(|t| *t >= seg.from) {
            for rec in storage.read_own_records(seg.world, t, t).await? {
                out.extend(
                    rec.changes
                        .into_iter()
                        .filter(|c| c.entity() == entity)
                        .map(|change| EntityChange {
                            tick: rec.tick,
                            at_ms: rec.at_ms,
                            change,
                        }),
                );
            }
        }
    }
    Ok(out)
}

/// The catalogue entry of `child`'s parent: one that is missing is a
/// damaged ledger, not a caller's mistake.
async fn parent_of(
    storage: &dyn Storage,
    child: &WorldInfo,
    parent: WorldId,
) -> Result<WorldInfo, Error> {
    match storage.world(parent).await {
        Err(StorageError::NoSuchWorld(_)) => Err(Error::Storage(StorageError::Corrupt {
            world: child.id,
            tick: Tick::ZERO,
            reason: format!(
                "its parent {parent} is missing from the {}",
                storage.location()
            ),
        })),
        other => Ok(other?),
    }
}

/// The lineage of a world, itself first, then its parent, and so on.
pub async fn lineage(storage: &dyn Storage, world: WorldId) -> Result<Vec<WorldInfo>, Error> {
    let mut out = vec![storage.world(world).await?];
    while let Some((child, p)) = out.last().and_then(|w| Some((w.clone(), w.parent?))) {
        out.push(parent_of(storage, &child, p.parent).await?);
    }
    Ok(out)
}
