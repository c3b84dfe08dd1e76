//! Committing a [`World`]'s buffered changes: [`World::commit`] (one
//! durable tick), [`World::stage`] and [`World::flush`] (ticks appended
//! together), and what a commit keeps to apply its record after the
//! append or to give the changes back after a failed one.

use super::{Held, World};
use crate::error::Error;
use crate::ids::{EntityId, Tick, now_ms};
use crate::record::{Change, Snapshot, TickRecord};

/// A change of a record handed to the storage, as [`World::commit`] keeps
/// it to apply the record after the append, or to give the changes back
/// after a failed one.
pub(super) enum Kept {
    /// A copy of the change.
    Change(Change),
    /// A `Set` made in place on this entity, which no later change of the
    /// record touches: hecs holds its value, nothing need be copied.
    InPlace(EntityId),
}

/// The next tick's record, the snapshot due after it, and the
/// `(replay_bytes, state_bytes)` once it is applied.
type NextTick = (TickRecord, Option<Snapshot>, (u64, u64));

/// The next tick as [`World::outgoing`] hands it to the storage.
pub(super) struct Outgoing {
    pub(super) record: TickRecord,
    pub(super) snapshot: Option<Snapshot>,
    /// `(replay_bytes, state_bytes)` once the tick is stored.
    pub(super) sizes: (u64, u64),
    pub(super) kept: Vec<Kept>,
}

impl World {
    /// Appends the buffered changes as tick `head + 1` and applies them.
    /// With nothing buffered, returns the current tick and appends nothing.
    /// When the durable point matters, this is it: on `Ok`, every tick so
    /// far is durable, staged ones ([`World::stage`]) included.
    ///
    /// Errors: `Conflict` when another writer advanced the world first (call
    /// [`World::refresh`] and redo the changes); on any error the pending
    /// changes are kept and the materialized state is unchanged. With
    /// staged ticks before it, it is [`World::stage`] then [`World::flush`]
    /// and fails as they do.
    pub async fn commit(&mut self) -> Result<Tick, Error> {
        self.check_writable()?;
        if !self.staged.is_empty() {
            // Behind earlier staged ticks: stage this one too, append all.
            self.stage()?;
            return self.flush().await;
        }
        let Some(out) = self.outgoing()? else {
            return Ok(self.tick);
        };
        let tick = out.record.tick;
        let appended = self
            .storage
            .append(self.info.id, out.record, out.snapshot)
            .await;
        if let Err(e) = appended {
            // Keep the changes (and owned values) for the caller to
            // inspect or redo.
            self.restore_pending(out.kept);
            return Err(e.into());
        }
        self.apply_stored(tick, &out.kept, out.sizes)?;
        Ok(tick)
    }

    /// The pending changes as the next tick: its record, the snapshot
    /// due after it and the `(replay, state)` sizes once it is applied;
    /// `None` when nothing is pending. On an error (the snapshot could
    /// not be made) the changes stay pending.
    fn next_tick(&mut self) -> Result<Option<NextTick>, Error> {
        let Some(record) = self.next_record() else {
            return Ok(None);
        };
        let snapshot = match self.snapshot_after(&record) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.pending = record.changes;
                return Err(e);
            }
        };
        let sizes = self.sizes_after(&record, snapshot.as_ref());
        Ok(Some((record, snapshot, sizes)))
    }

    /// [`World::next_tick`] for the storage, with what applying it here
    /// needs once it is stored, values changed in place not copied (see
    /// [`World::keep_for_apply`]).
    pub(super) fn outgoing(&mut self) -> Result<Option<Outgoing>, Error> {
        let Some((record, snapshot, sizes)) = self.next_tick()? else {
            return Ok(None);
        };
        let kept = self.keep_for_apply(&record.changes);
        Ok(Some(Outgoing {
            record,
            snapshot,
            sizes,
            kept,
        }))
    }

    /// After the storage stored tick `tick` of [`World::outgoing`]:
    /// applies it as the new head and takes its replay and state sizes.
    pub(super) fn apply_stored(
        &mut self,
        tick: Tick,
        kept: &[Kept],
        sizes: (u64, u64),
    ) -> Result<(), Error> {
        self.apply_kept(tick, kept)?;
        (self.replay_bytes, self.state_bytes) = sizes;
        Ok(())
    }

    /// Applies the record of tick `tick` (the next one), as
    /// [`World::keep_for_apply`] kept it, as the new head.
    fn apply_kept(&mut self, tick: Tick, kept: &[Kept]) -> Result<(), Error> {
        let mut values = std::mem::take(&mut self.pending_values);
        self.clear_pending();
        let applied = self.apply_changes(tick, kept.iter().map(Kept::change), values.drain(..));
        // Emptied, its memory kept for the next tick's values.
        self.pending_values = values;
        applied?;
        self.info.head = tick;
        Ok(())
    }

    /// What [`World::commit`] keeps of the pending `changes` it hands to
    /// the storage: a copy of each, except a `Set` made in place whose
    /// entity no later change touches (hecs holds exactly the value it
    /// records). O(changes) hash look-ups.
    fn keep_for_apply(&mut self, changes: &[Change]) -> Vec<Kept> {
        if self.undo.is_empty() {
            // Nothing made in place.
            return changes.iter().cloned().map(Kept::Change).collect();
        }
        let mut later = std::mem::take(&mut self.scratch);
        later.clear();
        let mut kept: Vec<Kept> = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate().rev() {
            let last = later.insert(c.entity(), ()).is_none();
            kept.push(match last && self.in_place(i) {
                true => Kept::InPlace(c.entity()),
                false => Kept::Change(c.clone()),
            });
        }
        kept.reverse();
        self.scratch = later;
        kept
    }

    /// Gives the changes [`World::keep_for_apply`] kept back to `pending`
    /// after a failed append, encoding the values changed in place again
    /// from hecs. Should one no longer encode (a type whose encoding
    /// fails only sometimes), the pending changes are dropped and the
    /// values changed in place put back, as [`World::discard_pending`]
    /// does, so that hecs and the pending changes still agree.
    pub(super) fn restore_pending(&mut self, kept: Vec<Kept>) {
        let mut pending = Vec::with_capacity(kept.len());
        for (i, k) in kept.into_iter().enumerate() {
            let change = match k {
                Kept::Change(c) => Some(c),
                Kept::InPlace(entity) => self.reencode(i, entity),
            };
            match change {
                Some(c) => pending.push(c),
                None => {
                    self.discard_pending();
                    return;
                }
            }
        }
        self.pending = pending;
    }

    /// Pending change `i`, a `Set` of `entity` made in place, encoded
    /// again from the value hecs holds.
    fn reencode(&self, i: usize, entity: EntityId) -> Option<Change> {
        let k = self
            .pending_values
            .binary_search_by_key(&i, |(at, _)| *at)
            .ok()?;
        let Held::InPlace(encode) = &self.pending_values[k].1 else {
            return None;
        };
        let e = self.hecs_entity(entity)?;
        let (component, value) = encode(&self.registry, &self.hecs, e)?.ok()?;
        Some(Change::Set {
            entity,
            component,
            value,
        })
    }

    /// The pending changes as the record of tick `head + 1`; `None` when
    /// nothing is pending. The owned values stay, for [`World::apply_next`].
    fn next_record(&mut self) -> Option<TickRecord> {
        // The next tick's buffer starts at this one's size: a steady
        // workload's changes are not regrown from empty every tick.
        let n = self.pending.len();
        (n > 0).then(|| TickRecord {
            tick: self.tick.next(),
            at_ms: now_ms(),
            changes: std::mem::replace(&mut self.pending, Vec::with_capacity(n)),
        })
    }

    /// Applies `record`, the one [`World::next_record`] made, as the new head.
    fn apply_next(&mut self, record: &TickRecord) -> Result<(), Error> {
        let values = std::mem::take(&mut self.pending_values);
        self.clear_pending();
        self.apply_changes(
            record.tick,
            record.changes.iter().map(Some),
            values.into_iter(),
        )?;
        self.info.head = record.tick;
        Ok(())
    }

    /// Makes the buffered changes tick `head + 1` here, at once, and queues
    /// its append for [`World::flush`] (or the next [`World::commit`]),
    /// which appends every staged tick together: with a backend that
    /// commits them in one durable write ([`crate::Storage::append_all`]), several
    /// ticks cost one write. Reads see a staged tick at once; other
    /// readers of the ledger see it once flushed, and it is lost if the
    /// process dies before that ([`World::history`] and [`World::fork`] read
    /// the ledger, so they too see it once flushed). Use it for steps nothing
    /// outside this process depends on until a later flush.
    ///
    /// With nothing buffered, returns the current tick and stages nothing.
    /// Errors as [`World::commit`] does before appending (read-only world,
    /// a snapshot that cannot be encoded); the pending changes are kept.
    pub fn stage(&mut self) -> Result<Tick, Error> {
        self.check_writable()?;
        let Some((record, snapshot, sizes)) = self.next_tick()? else {
            return Ok(self.tick);
        };
        self.apply_next(&record)?;
        (self.replay_bytes, self.state_bytes) = sizes;
        let tick = record.tick;
        self.staged.push((record, snapshot));
        Ok(tick)
    }

    /// How many staged ticks wait for [`World::flush`].
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Appends every staged tick ([`World::stage`]), in order, together.
    /// Returns the head.
    ///
    /// The staged ticks are stored all or nothing. On an error (`Conflict`:
    /// another writer advanced the world first) none of them is stored, they
    /// are dropped, and this world goes back to the state the ledger holds,
    /// as a fresh [`World::open`] would see it; redo their changes on it if
    /// they still apply.
    pub async fn flush(&mut self) -> Result<Tick, Error> {
        if self.staged.is_empty() {
            return Ok(self.tick);
        }
        let staged = std::mem::take(&mut self.staged);
        match self.storage.append_all(self.info.id, staged).await {
            Ok(()) => Ok(self.tick),
            Err(e) => {
                let fresh =
                    World::open_id(self.storage.clone(), self.registry.clone(), self.info.id)
                        .await?;
                *self = fresh;
                Err(e.into())
            }
        }
    }
}

impl Kept {
    /// The change, `None` for one made in place.
    fn change(&self) -> Option<&Change> {
        match self {
            Kept::Change(c) => Some(c),
            Kept::InPlace(_) => None,
        }
    }
}
