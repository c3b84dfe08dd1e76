//! The window of the last ticks the index applied: which entities each
//! changed, so a run page asks the store only about older ticks.

use super::*;

/// How many of the latest ticks an index remembers the entities of
/// ([`RecentTicks`]). The redb store indexes which ticks changed an entity
/// in closed chunks of 64 ticks and finds the ticks of its unfinished chunk
/// by reading their records; asking it only about ticks older than the
/// last 64 keeps its answer to point reads, so that a run page costs the
/// same however long the history (and however large its ticks) is.
pub const RECENT_TICKS: usize = 64;

/// The entities changed by each of an index's last [`RECENT_TICKS`] ticks
/// (a contiguous window ending at the index's tick), and, per entity, the
/// ticks of that window that changed it.
#[derive(Debug, Default)]
pub struct RecentTicks {
    pub(super) ticks: VecDeque<(Tick, Vec<EntityId>)>,
    pub(super) by_entity: HashMap<EntityId, VecDeque<Tick>>,
}

impl RecentTicks {
    /// Adds `record` (the tick after the last one added), forgetting the
    /// oldest beyond [`RECENT_TICKS`]. Cost: O(changes of the ticks added
    /// and dropped).
    pub(super) fn push(&mut self, record: &TickRecord) {
        if self
            .ticks
            .back()
            .is_some_and(|(t, _)| t.next() != record.tick)
        {
            // Not contiguous (cannot happen when fed in order): start over.
            self.ticks.clear();
            self.by_entity.clear();
        }
        let mut entities: Vec<EntityId> = record.changes.iter().map(|c| c.entity()).collect();
        entities.sort_unstable();
        entities.dedup();
        for e in &entities {
            self.by_entity.entry(*e).or_default().push_back(record.tick);
        }
        self.ticks.push_back((record.tick, entities));
        while self.ticks.len() > RECENT_TICKS {
            let Some((old, entities)) = self.ticks.pop_front() else {
                break;
            };
            for e in entities {
                if let Some(ts) = self.by_entity.get_mut(&e) {
                    if ts.front() == Some(&old) {
                        ts.pop_front();
                    }
                    if ts.is_empty() {
                        self.by_entity.remove(&e);
                    }
                }
            }
        }
    }

    /// The first tick of the window, if it holds any.
    pub fn first(&self) -> Option<Tick> {
        self.ticks.front().map(|(t, _)| *t)
    }

    /// The ticks of the window that changed `entity`, ascending.
    pub fn ticks_of(&self, entity: EntityId) -> impl Iterator<Item = Tick> + '_ {
        self.by_entity.get(&entity).into_iter().flatten().copied()
    }
}
