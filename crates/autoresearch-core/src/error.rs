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
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("no world named {0:?}")]
    NoWorldNamed(String),
    #[error("{world}: tick {tick} is beyond the head {head}")]
    TickBeyondHead {
        world: WorldId,
        tick: Tick,
        head: Tick,
    },
    #[error("{world}: entity {entity} is not alive")]
    NoSuchEntity { world: WorldId, entity: EntityId },
    /// Replaying a world's log stopped: ticks after `readable_to` cannot be
    /// read or applied (a damaged or inconsistent ledger). The world still
    /// reads at `readable_to` and, as far as the log holds, before it.
    #[error("{location} {world}: the log cannot be replayed past tick {readable_to}: {source}")]
    Unreplayable {
        location: String,
        world: WorldId,
        readable_to: Tick,
        #[source]
        source: Box<Error>,
    },
    #[error("{world}: opened read-only at tick {tick}; fork it to write")]
    ReadOnly { world: WorldId, tick: Tick },
}
