//! The core error type.

use crate::ids::{EntityId, Tick, WorldId};
use crate::record::ApplyError;
use crate::registry::RegistryError;
use crate::storage::StorageError;

/// Errors of the world and ledger layer. Each says what was being done to which
/// world, tick or entity.
#[derive(Debug, thiserror::Error)]
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
    #[error("{world}: opened read-only at tick {tick}; fork it to write")]
    ReadOnly { world: WorldId, tick: Tick },
}
