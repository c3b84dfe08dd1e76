//! Newtypes for the identifiers that cross layer boundaries.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A world in a ledger. Allocated by the storage backend, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorldId(pub u64);

/// A tick of a world. Tick 0 is the empty world; the first `commit()` makes tick 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Tick(pub u64);

/// A stable entity id, allocated by its world and never reused, even after a
/// despawn. Unlike `hecs::Entity` it survives snapshots, replays and forks.
///
/// Every materialized entity carries its `EntityId` as a hecs component, so
/// `world.hecs().query::<(&EntityId, &Run)>()` yields stable ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId(pub u64);

impl Tick {
    pub const ZERO: Tick = Tick(0);

    /// The tick after this one.
    pub fn next(self) -> Tick {
        Tick(self.0 + 1)
    }
}

impl fmt::Display for WorldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "world#{}", self.0)
    }
}

impl fmt::Display for Tick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// Milliseconds since the Unix epoch, the time unit of every record (0 = not set).
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
