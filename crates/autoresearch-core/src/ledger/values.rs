//! One component's values at a tick without a world
//! ([`component_values_at`], [`ComponentValues`]): the nearest snapshot of
//! the component and the records after it replayed into a column sorted
//! by entity, the values left in the bodies they were read with; a state
//! replayed from records is offered to the backend to keep
//! ([`Storage::offer_component_span_snapshot`]).

use super::{Segment, lineage_records_in, segments, state_at};
use crate::error::Error;
use crate::ids::{EntityId, Tick, WorldId};
use crate::record::{ComponentChange, Span, SpanRecord, SpanSnapshot};
use crate::registry::{ComponentRegistry, ComponentValue};
use crate::storage::{Storage, StorageError};
use std::sync::Arc;

/// Every entity alive at a tick that holds one component, with that
/// component's value as stored (the registry's postcard bytes), ordered by
/// entity id: what [`component_values_at`] returns. The values stay in
/// the bodies they were read with (a decoded snapshot, decoded records),
/// shared, not copied one by one; read each with [`ComponentValues::iter`]
/// or [`ComponentValues::get`] and decode a borrowed view of it (such as
/// [`crate::RunRef`]).
#[derive(Clone, Debug, Default)]
pub struct ComponentValues {
    #[expect(
        clippy::rc_buffer,
        reason = "a decoded Vec is shared as it is; Arc<[u8]> would copy it"
    )]
    bodies: Vec<Arc<Vec<u8>>>,
    /// (entity, body index, span), sorted by entity; every span checked
    /// to lie inside its body.
    entries: Vec<(EntityId, u32, Span)>,
}

impl ComponentValues {
    /// How many entities hold the component.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entity holds the component.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn bytes(&self, body: u32, span: Span) -> &[u8] {
        // Checked when the entry was made.
        self.bodies
            .get(body as usize)
            .and_then(|b| span.get(b))
            .unwrap_or_default()
    }

    /// Each entity and its value, in entity order. O(1) per item.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (EntityId, &[u8])> + '_ {
        self.entries
            .iter()
            .map(|&(e, body, span)| (e, self.bytes(body, span)))
    }

    /// The value of `entity`, if it holds the component. O(log n).
    pub fn get(&self, entity: EntityId) -> Option<&[u8]> {
        let i = self
            .entries
            .binary_search_by_key(&entity, |(e, ..)| *e)
            .ok()?;
        let (_, body, span) = self.entries[i];
        Some(self.bytes(body, span))
    }

    /// The values of `snapshot`, sharing its body; `None` when its
    /// entities are out of order or a span reaches past the body.
    fn of_snapshot(snapshot: SpanSnapshot) -> Option<ComponentValues> {
        let mut entries = Vec::with_capacity(snapshot.entities.len());
        let mut previous = None;
        for (e, span) in snapshot.entities {
            if previous.is_some_and(|p| p >= e) {
                return None;
            }
            previous = Some(e);
            if let Some(span) = span {
                span.get(&snapshot.body)?;
                entries.push((e, 0, span));
            }
        }
        Some(ComponentValues {
            bodies: vec![snapshot.body],
            entries,
        })
    }

    /// Every value copied into its own `Vec`, in entity order.
    pub fn to_vecs(&self) -> Vec<(EntityId, Vec<u8>)> {
        self.iter().map(|(e, v)| (e, v.to_vec())).collect()
    }
}

/// One entity's state in a replay of one component.
#[derive(Clone, Copy)]
enum Slot {
    /// Despawned (kept in place so that the rows stay sorted cheaply).
    Dead,
    /// Alive without the component.
    Bare,
    /// Alive with the value at this span of this body.
    Value(u32, Span),
}

/// The state of one component during a replay: (entity, slot), sorted by
/// entity. Entity ids grow with every spawn, so a spawn is almost always
/// a push at the end and a change to the newest entity a look at the
/// last row; others are a binary search.
#[derive(Default)]
struct Column {
    rows: Vec<(EntityId, Slot)>,
}

impl Column {
    fn find(&self, entity: EntityId) -> Result<usize, usize> {
        let (Some((first, _)), Some((last, _))) = (self.rows.first(), self.rows.last()) else {
            return Err(0);
        };
        if *last < entity {
            return Err(self.rows.len());
        }
        // Ids are handed out in order, so rows are mostly consecutive ids:
        // the row `entity - first` places on is a first guess, O(1) where
        // it holds (a binary search of a large column misses the cache at
        // each step).
        let guess = usize::try_from(entity.0.wrapping_sub(first.0)).unwrap_or(usize::MAX);
        if entity >= *first && self.rows.get(guess).is_some_and(|(e, _)| *e == entity) {
            return Ok(guess);
        }
        self.rows.binary_search_by_key(&entity, |(e, _)| *e)
    }

    /// Applies `change` (its value in body `body`, `len` bytes long).
    /// Errors (the reason) on a change that does not apply or a span
    /// outside its body.
    fn apply(
        &mut self,
        change: &ComponentChange<Span>,
        body: u32,
        len: usize,
    ) -> Result<(), String> {
        let entity = change.entity();
        let at = self.find(entity);
        let alive = matches!(at, Ok(i) if !matches!(self.rows[i].1, Slot::Dead));
        if change.kind().apply_to(alive).is_err() {
            return Err(format!("{} of {entity} does not apply", change.kind()));
        }
        let slot = match change {
            ComponentChange::Spawn(_) | ComponentChange::Remove(_) => Slot::Bare,
            &ComponentChange::Set(_, span) => {
                if span.start as usize + span.len as usize > len {
                    return Err(format!("the value of {entity} lies outside its record"));
                }
                Slot::Value(body, span)
            }
            ComponentChange::Despawn(_) => Slot::Dead,
            ComponentChange::Other(..) => return Ok(()),
        };
        match at {
            Ok(i) => self.rows[i].1 = slot,
            Err(i) => self.rows.insert(i, (entity, slot)),
        }
        Ok(())
    }

    /// The bytes of the live rows' values, in all (saturating).
    fn value_bytes(&self) -> usize {
        self.rows
            .iter()
            .map(|(_, slot)| match *slot {
                Slot::Value(_, span) => span.len as usize,
                Slot::Dead | Slot::Bare => 0,
            })
            .fold(0, usize::saturating_add)
    }

    /// The live rows as a snapshot at `tick`, their values (spans of
    /// `bodies`, checked when applied) copied into one body in entity
    /// order. `None` when they hold 4 GiB or more.
    #[expect(clippy::rc_buffer, reason = "the bodies as ComponentValues holds them")]
    fn gather(&self, tick: Tick, bodies: &[Arc<Vec<u8>>]) -> Option<SpanSnapshot> {
        let value = |b: u32, span: Span| bodies.get(b as usize).and_then(|body| span.get(body));
        // Spans may overlap (damage), so the sum may pass any real size:
        // refused before anything is reserved.
        let total = self.value_bytes();
        if u32::try_from(total).is_err() {
            return None;
        }
        let live = self
            .rows
            .iter()
            .filter(|(_, slot)| !matches!(slot, Slot::Dead))
            .count();
        let mut body = Vec::with_capacity(total);
        let mut entities = Vec::with_capacity(live);
        for &(e, slot) in &self.rows {
            match slot {
                Slot::Dead => {}
                Slot::Bare => entities.push((e, None)),
                Slot::Value(b, span) => {
                    entities.push((e, Some(Span::push(&mut body, value(b, span)?)?)));
                }
            }
        }
        Some(SpanSnapshot {
            tick,
            body: Arc::new(body),
            entities,
        })
    }
}

/// The values of component `T` of every entity alive in `world` at
/// `tick` ([`ComponentValues`]): the answer to "the runs at tick T"
/// without materializing a [`crate::World`] or copying a value. Cost: the
/// nearest snapshot and the records after it (as [`state_at`]), read
/// through the backend's one-component projections
/// ([`Storage::own_component_span_snapshot_at_or_before`],
/// [`Storage::read_own_component_spans`]), then O(log n) per change
/// replayed (O(1) for spawns in id order). A log that does not replay is
/// an error, as from [`state_at`].
pub async fn component_values_at<T: ComponentValue>(
    storage: &dyn Storage,
    registry: &ComponentRegistry,
    world: WorldId,
    tick: Tick,
) -> Result<ComponentValues, Error> {
    let name = registry.name_of::<T>()?;
    let segs = segments(storage, world, tick).await?;
    let mut base = None;
    for seg in segs.iter().rev() {
        if let Some(s) = storage
            .own_component_span_snapshot_at_or_before(seg.world, seg.to, name)
            .await?
            && s.tick >= seg.from
        {
            base = Some(s);
            break;
        }
    }
    let at = base.as_ref().map_or(Tick::ZERO, |s| s.tick);
    let mut bodies = Vec::new();
    let mut column = Column::default();
    if let Some(s) = base {
        let len = s.body.len();
        let sorted = s.entities.windows(2).all(|w| w[0].0 < w[1].0);
        let inside = s
            .entities
            .iter()
            .all(|(_, v)| v.is_none_or(|span| span.start as usize + span.len as usize <= len));
        if !sorted || !inside {
            return Err(Error::Storage(StorageError::Corrupt {
                world,
                tick: s.tick,
                reason: "snapshot entities out of order or values outside it".into(),
            }));
        }
        column.rows = s
            .entities
            .into_iter()
            .map(|(e, v)| (e, v.map_or(Slot::Bare, |span| Slot::Value(0, span))))
            .collect();
        bodies.push(s.body);
    }
    let records = if at < tick {
        span_records_in(storage, world, &segs, at.next(), tick, name).await
    } else {
        Ok(Vec::new())
    };
    let mut replayed = 0;
    let consistent = records.and_then(|records| {
        replayed = records.len();
        for record in records {
            let b = u32::try_from(bodies.len()).unwrap_or(u32::MAX);
            let len = record.body.len();
            // A replay from no snapshot starts with the world's first
            // record (an ingest's spawns): at most a row per change, grown
            // once. Later records add few rows and grow as a Vec does.
            if column.rows.is_empty() {
                column.rows.reserve(record.changes.len());
            }
            for change in record.changes.iter() {
                column.apply(change, b, len).map_err(|reason| {
                    Error::Storage(StorageError::Corrupt {
                        world,
                        tick: record.tick,
                        reason,
                    })
                })?;
            }
            bodies.push(record.body);
        }
        Ok(())
    });
    if let Err(e) = consistent {
        // The full replay names the last readable tick; use its error.
        state_at(storage, world, tick).await?;
        return Err(e);
    }
    // A state replayed from records may be kept by the backend, gathered
    // into one body, as a snapshot at `tick` of the world that owns it.
    if replayed > 0
        && let Some(owner) = segs.last().filter(|s| s.to == tick)
        && let Some(kept) = storage.offer_component_span_snapshot(
            owner.world,
            name,
            tick,
            replayed,
            column.value_bytes(),
            &mut || column.gather(tick, &bodies),
        )
        && let Some(values) = ComponentValues::of_snapshot(kept)
    {
        return Ok(values);
    }
    let entries = column
        .rows
        .into_iter()
        .filter_map(|(e, slot)| match slot {
            Slot::Value(b, span) => Some((e, b, span)),
            Slot::Dead | Slot::Bare => None,
        })
        .collect();
    Ok(ComponentValues { bodies, entries })
}

/// The records `from..=to` of the lineage `segs`, projected on
/// `component` with their values in place
/// ([`Storage::read_own_component_spans`]), checked to be contiguous.
async fn span_records_in(
    storage: &dyn Storage,
    world: WorldId,
    segs: &[Segment],
    from: Tick,
    to: Tick,
    component: &str,
) -> Result<Vec<SpanRecord>, Error> {
    lineage_records_in(
        world,
        segs,
        from,
        to,
        |w, lo, hi| storage.read_own_component_spans(w, lo, hi, component),
        |r| r.tick,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChangeKind;

    fn span(start: u32, len: u32) -> Span {
        Span { start, len }
    }

    fn values(column: &Column) -> Vec<(u64, Option<(u32, u32)>)> {
        column
            .rows
            .iter()
            .filter_map(|(e, slot)| match slot {
                Slot::Dead => None,
                Slot::Bare => Some((e.0, None)),
                Slot::Value(b, s) => Some((e.0, Some((*b, s.start)))),
            })
            .collect()
    }

    #[test]
    fn a_column_replays_changes_in_and_out_of_id_order() {
        let mut c = Column::default();
        for change in [
            ComponentChange::Spawn(EntityId(5)),
            ComponentChange::Set(EntityId(5), span(0, 2)),
            ComponentChange::Spawn(EntityId(9)),
            // Out of id order: inserted in place, rows stay sorted.
            ComponentChange::Spawn(EntityId(2)),
            ComponentChange::Set(EntityId(2), span(2, 2)),
            ComponentChange::Other(EntityId(9), ChangeKind::Set),
        ] {
            c.apply(&change, 0, 4).unwrap();
        }
        assert_eq!(
            values(&c),
            [(2, Some((0, 2))), (5, Some((0, 0))), (9, None)]
        );
        c.apply(&ComponentChange::Remove(EntityId(5)), 1, 0)
            .unwrap();
        c.apply(&ComponentChange::Despawn(EntityId(2)), 1, 0)
            .unwrap();
        c.apply(&ComponentChange::Set(EntityId(9), span(0, 1)), 1, 1)
            .unwrap();
        assert_eq!(values(&c), [(5, None), (9, Some((1, 0)))]);
    }

    #[test]
    fn a_column_finds_rows_by_id_offset_and_across_gaps() {
        let mut c = Column::default();
        // Ids 10..=12 then a gap to 20..=21: the offset guess holds for
        // the first run of ids and misses after the gap.
        for e in [10, 11, 12, 20, 21] {
            c.apply(&ComponentChange::Spawn(EntityId(e)), 0, 0).unwrap();
        }
        assert_eq!(c.find(EntityId(12)), Ok(2));
        assert_eq!(c.find(EntityId(20)), Ok(3));
        assert_eq!(c.find(EntityId(21)), Ok(4));
        assert_eq!(c.find(EntityId(15)), Err(3));
        assert_eq!(c.find(EntityId(3)), Err(0));
        assert_eq!(c.find(EntityId(u64::MAX)), Err(5));
        for (e, start) in [(11, 0), (20, 1), (10, 2)] {
            c.apply(&ComponentChange::Set(EntityId(e), span(start, 1)), 0, 4)
                .unwrap();
        }
        // A spawn into the gap keeps the rows sorted.
        c.apply(&ComponentChange::Spawn(EntityId(15)), 0, 0)
            .unwrap();
        c.apply(&ComponentChange::Set(EntityId(15), span(3, 1)), 0, 4)
            .unwrap();
        assert_eq!(
            values(&c),
            [
                (10, Some((0, 2))),
                (11, Some((0, 0))),
                (12, None),
                (15, Some((0, 3))),
                (20, Some((0, 1))),
                (21, None)
            ]
        );
    }

    #[test]
    fn a_column_refuses_changes_that_do_not_apply() {
        let mut c = Column::default();
        c.apply(&ComponentChange::Spawn(EntityId(1)), 0, 0).unwrap();
        let refused = [
            ComponentChange::Spawn(EntityId(1)),
            ComponentChange::Set(EntityId(2), span(0, 0)),
            ComponentChange::Remove(EntityId(0)),
            ComponentChange::Despawn(EntityId(3)),
            ComponentChange::Other(EntityId(4), ChangeKind::Set),
            // A value past the end of its record.
            ComponentChange::Set(EntityId(1), span(2, 3)),
        ];
        for change in &refused {
            let err = c.apply(change, 0, 4).unwrap_err();
            assert!(!err.is_empty(), "{change:?}");
        }
        c.apply(&ComponentChange::Despawn(EntityId(1)), 0, 0)
            .unwrap();
        let err = c
            .apply(&ComponentChange::Set(EntityId(1), span(0, 0)), 0, 0)
            .unwrap_err();
        assert_eq!(err, "set of e1 does not apply");
    }

    #[test]
    fn a_gathered_column_holds_the_live_values_in_one_body_in_entity_order() {
        let bodies = vec![Arc::new(b"aaBBcc".to_vec()), Arc::new(b"xyz".to_vec())];
        let mut c = Column::default();
        for e in 1..=4 {
            c.apply(&ComponentChange::Spawn(EntityId(e)), 0, 0).unwrap();
        }
        for (e, b, start, len) in [(1, 0, 4, 2), (2, 1, 0, 3), (4, 0, 2, 2)] {
            let len_body = bodies[b as usize].len();
            c.apply(
                &ComponentChange::Set(EntityId(e), span(start, len)),
                b,
                len_body,
            )
            .unwrap();
        }
        c.apply(&ComponentChange::Despawn(EntityId(3)), 1, 3)
            .unwrap();
        c.apply(&ComponentChange::Spawn(EntityId(5)), 1, 3).unwrap();
        let s = c.gather(Tick(7), &bodies).unwrap();
        assert_eq!(s.tick, Tick(7));
        assert_eq!(&s.body[..], b"ccxyzBB");
        assert_eq!(
            s.entities,
            [
                (EntityId(1), Some(span(0, 2))),
                (EntityId(2), Some(span(2, 3))),
                (EntityId(4), Some(span(5, 2))),
                (EntityId(5), None),
            ]
        );
        let values = ComponentValues::of_snapshot(s.clone()).unwrap();
        let got: Vec<_> = values.iter().map(|(e, v)| (e.0, v.to_vec())).collect();
        assert_eq!(
            got,
            [
                (1, b"cc".to_vec()),
                (2, b"xyz".to_vec()),
                (4, b"BB".to_vec())
            ]
        );
        // A snapshot out of entity order, or with a span past its body, is
        // refused.
        let mut swapped = s.clone();
        swapped.entities.swap(0, 3);
        assert!(ComponentValues::of_snapshot(swapped).is_none());
        let mut past = s;
        past.entities[3].1 = Some(span(6, 2));
        assert!(ComponentValues::of_snapshot(past).is_none());
        // Values of 4 GiB or more in all (here overlapping spans, as a
        // damaged log could give) are refused before anything is
        // reserved.
        let huge = Column {
            rows: vec![
                (EntityId(1), Slot::Value(0, span(0, u32::MAX))),
                (EntityId(2), Slot::Value(0, span(0, u32::MAX))),
            ],
        };
        assert_eq!(huge.value_bytes(), 2 * u32::MAX as usize);
        assert!(huge.gather(Tick(1), &bodies).is_none());
    }
}
