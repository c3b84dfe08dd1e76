//! The core error type.

use crate::ids::{EntityId, Tick, WorldId};
use crate::record::ApplyError;
use crate::registry::RegistryError;
use crate::storage::StorageError;

/// Errors of the world and ledger layer. Each says what was being done to which
/// world, tick or entity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage backend failed (I/O, a damaged file, a lost write race).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A component type could not be encoded or decoded through the registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A tick record does not apply to the state it follows.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// No world in the ledger has this name.
    #[error("no world named {0:?}")]
    NoWorldNamed(String),
    /// A read asked for a tick the world has not reached.
    #[error("{world}: tick {tick} is beyond the head {head}")]
    TickBeyondHead {
        /// The world read.
        world: WorldId,
        /// The tick asked for.
        tick: Tick,
        /// The world's latest tick.
        head: Tick,
    },
    /// An operation named an entity that was never spawned or is despawned.
    #[error("{world}: entity {entity} is not alive")]
    NoSuchEntity {
        /// The world looked in.
        world: WorldId,
        /// The entity asked for.
        entity: EntityId,
    },
    /// An operation needed a component the entity does not hold (or whose
    /// removal is pending).
    #[error("{world}: entity {entity} has no {component} component")]
    NoSuchComponent {
        /// The world looked in.
        world: WorldId,
        /// The entity asked for.
        entity: EntityId,
        /// The component's registered name.
        component: String,
    },
    /// Replaying a world's log stopped: ticks after `readable_to` cannot be
    /// read or applied (a damaged or inconsistent ledger). The world still
    /// reads at `readable_to` and, as far as the log holds, before it.
    #[error("{location} {world}: the log cannot be replayed past tick {readable_to}: {source}")]
    Unreplayable {
        /// Where the ledger lives (a path or the backend's description).
        location: String,
        /// The world whose log stops.
        world: WorldId,
        /// The last tick that was read and applied.
        readable_to: Tick,
        /// Why the next tick could not be read or applied.
        #[source]
        source: Box<Error>,
    },
    /// A write was attempted on a world opened at a past tick.
    #[error("{world}: opened read-only at tick {tick}; fork it to write")]
    ReadOnly {
        /// The world opened.
        world: WorldId,
        /// The past tick it was opened at.
        tick: Tick,
    },
}
