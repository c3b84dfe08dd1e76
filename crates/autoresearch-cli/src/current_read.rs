//! The read commands' fast path (issue #19): a reader of the world's head
//! from the current state the ledger keeps ([`CurrentReader`]), without
//! materializing the world. `None` when the ledger keeps none for the
//! world (a fork, a ledger written before it was kept): the command then
//! opens the world as before. Time travel (`--tick`) always opens it.

use crate::ledger;
use crate::target::Target;
use autoresearch_core::query::{CurrentReader, QueryError};

/// A reader of `target`'s world at its head, when its ledger keeps a
/// current state for it. A ledger whose current state cannot be read
/// (damaged) gives `None` too: the log is the source of truth, and reading
/// it reports any damage there.
pub async fn reader(target: &Target) -> Option<CurrentReader> {
    match CurrentReader::open(target.storage.clone(), ledger::registry(), target.info.id).await {
        Ok(r) => r,
        Err(e) => {
            fell_back(target, &anyhow::Error::new(e));
            None
        }
    }
}

/// Whether a fast read failed in the ledger's current state (another
/// writer advanced the world meanwhile, or a value did not read), not in
/// what the command does with it: the command then reads by materializing
/// instead, which answers from the log (and names any damage there).
pub fn from_ledger(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<QueryError>().is_some())
}

/// Notes (at debug level) why `target` is read by materializing.
pub fn fell_back(target: &Target, e: &anyhow::Error) {
    tracing::debug!(
        world = %target.world,
        "reading the current state failed, materializing instead: {e:#}"
    );
}
