//! Stored records and snapshots read in place: their wire shapes
//! borrowed from a decoded body, projected without copying what is not
//! asked for.

use super::{DecodeError, body, take_whole};
use autoresearch_core::{
    ChangeKind, ComponentChange, ComponentRecord, ComponentSnapshot, EntityId, Tick,
};
use serde::Deserialize;

/// A stored change borrowed from a decoded body: [`ChangeV1`]'s wire
/// shape (same variants in the same order), without copying its text or
/// value.
///
/// [`ChangeV1`]: super::ChangeV1
#[derive(Deserialize)]
pub(crate) enum ChangeRef<'a> {
    Spawn(u64),
    Set(u64, &'a str, &'a [u8]),
    Remove(u64, &'a str),
    Despawn(u64),
}

/// [`RecordV1`] borrowed.
///
/// [`RecordV1`]: super::RecordV1
#[derive(Deserialize)]
struct RecordRef<'a> {
    #[expect(
        dead_code,
        reason = "on the wire before the changes; projections do not need it"
    )]
    at_ms: i64,
    #[serde(borrow)]
    changes: Vec<ChangeRef<'a>>,
}

/// One entity of a [`SnapshotRef`]: its id and (component, value) pairs.
type EntityRef<'a> = (u64, Vec<(&'a str, &'a [u8])>);

/// [`SnapshotV1`] borrowed.
///
/// [`SnapshotV1`]: super::SnapshotV1
#[derive(Deserialize)]
struct SnapshotRef<'a> {
    #[expect(
        dead_code,
        reason = "on the wire before the entities; projections do not need it"
    )]
    next_entity: u64,
    #[serde(borrow)]
    entities: Vec<EntityRef<'a>>,
}

/// A stored record projected on `component`: its changes in order, only
/// that component's values copied out (no text, no other value copied).
pub(crate) fn decode_component_record(
    tick: Tick,
    bytes: &[u8],
    component: &str,
) -> Result<ComponentRecord, DecodeError> {
    let body = body(bytes)?;
    let r: RecordRef<'_> = take_whole(&body)?;
    Ok(ComponentRecord {
        tick,
        changes: r
            .changes
            .into_iter()
            .map(|c| match c {
                ChangeRef::Spawn(e) => ComponentChange::Spawn(EntityId(e)),
                ChangeRef::Set(e, c, v) if c == component => {
                    ComponentChange::Set(EntityId(e), v.to_vec())
                }
                ChangeRef::Set(e, ..) => ComponentChange::Other(EntityId(e), ChangeKind::Set),
                ChangeRef::Remove(e, c) if c == component => ComponentChange::Remove(EntityId(e)),
                ChangeRef::Remove(e, _) => ComponentChange::Other(EntityId(e), ChangeKind::Remove),
                ChangeRef::Despawn(e) => ComponentChange::Despawn(EntityId(e)),
            })
            .collect(),
    })
}

/// Calls `f(entity, component, value)` for every `Set` of a stored record,
/// in order, borrowing the text and value from the decoded body (no copy):
/// how the current state reads a value from the tick that set it.
pub(crate) fn record_sets(
    bytes: &[u8],
    mut f: impl FnMut(EntityId, &str, &[u8]),
) -> Result<(), DecodeError> {
    let body = body(bytes)?;
    let r: RecordRef<'_> = take_whole(&body)?;
    for c in r.changes {
        if let ChangeRef::Set(e, c, v) = c {
            f(EntityId(e), c, v);
        }
    }
    Ok(())
}

/// [`record_sets`] of `components` only: `f(index in components,
/// entity, value)` for each of their `Set`s (in order for each
/// component). A record laid out by column rebuilds only those
/// components' values (`columnar::sets_of_each`), not the whole record.
pub(crate) fn record_sets_of(
    bytes: &[u8],
    components: &[&str],
    mut f: impl FnMut(usize, EntityId, &[u8]),
) -> Result<(), DecodeError> {
    if let Some(payload) = super::value::columnar_payload(bytes) {
        return super::columnar::sets_of_each(payload, components, |i, e, v| {
            f(i, EntityId(e), v);
        });
    }
    record_sets(bytes, |e, c, v| {
        if let Some(i) = components.iter().position(|n| *n == c) {
            f(i, e, v);
        }
    })
}

/// A stored snapshot projected on `component`: every entity, with only
/// that component's value copied out.
pub(crate) fn decode_component_snapshot(
    tick: Tick,
    bytes: &[u8],
    component: &str,
) -> Result<ComponentSnapshot, DecodeError> {
    let body = body(bytes)?;
    let s: SnapshotRef<'_> = take_whole(&body)?;
    Ok(ComponentSnapshot {
        tick,
        entities: s
            .entities
            .into_iter()
            .map(|(e, comps)| {
                let value = comps
                    .into_iter()
                    .find(|(n, _)| *n == component)
                    .map(|(_, v)| v.to_vec());
                (EntityId(e), value)
            })
            .collect(),
    })
}
