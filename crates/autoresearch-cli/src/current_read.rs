//! The read commands' fast path (issue #19): a reader of the world's head
//! from the current state the ledger keeps ([`CurrentReader`]), without
//! materializing the world. `None` when the ledger keeps none for the
//! world (a fork, a ledger written before it was kept): the command then
//! opens the world as before. Time travel (`--tick`) always opens it.

use crate::ledger;
use crate::target::Target;
use anyhow::Context;
use autoresearch_core::query::{CurrentReader, QueryError};

/// A reader of `target`'s world at its head, when its ledger keeps a
/// current state for it.
pub async fn reader(target: &Target) -> anyhow::Result<Option<CurrentReader>> {
    CurrentReader::open(target.storage.clone(), ledger::registry(), target.info.id)
        .await
        .with_context(|| {
            format!(
                "reading the current state of world {:?} in {}",
                target.world,
                target.storage.location()
            )
        })
}

/// Whether a fast read failed only because another writer advanced the
/// world meanwhile: the command then reads by materializing instead.
pub fn moved(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<QueryError>(),
            Some(QueryError::Moved { .. })
        )
    })
}
