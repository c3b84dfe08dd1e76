//! Forking a [`World`]: a fork in the catalogue, the handle turned into
//! the fork (with or without its first tick), or a second handle.

use super::World;
use crate::error::Error;
use crate::ids::Tick;
use crate::storage::WorldInfo;

impl World {
    /// Forks this world at `at` (at most this world's tick) into a new world
    /// named `name`. O(1): nothing is copied.
    pub async fn fork(&self, at: Tick, name: &str) -> Result<WorldInfo, Error> {
        if at > self.tick {
            return Err(Error::TickBeyondHead {
                world: self.info.id,
                tick: at,
                head: self.tick,
            });
        }
        Ok(self.storage.fork_world(self.info.id, at, name).await?)
    }

    /// Turns this handle into a new fork named `name` at this handle's
    /// tick, in O(1): the materialized state is the fork's, so nothing is
    /// copied or read. The world it was stays in the ledger (open it again
    /// to go on writing it). A handle opened at a past tick (read-only)
    /// becomes a writable branch from that tick. Pending changes stay
    /// pending, now for the fork. Returns the fork's catalogue entry.
    ///
    /// Errors as [`World::fork`]; also when staged ticks are not flushed
    /// (the fork shares only what the ledger holds). On an error the
    /// handle is unchanged.
    pub async fn fork_in_place(&mut self, name: &str) -> Result<WorldInfo, Error> {
        self.check_flushed(name)?;
        let info = self
            .storage
            .fork_world(self.info.id, self.tick, name)
            .await?;
        self.info = info.clone();
        self.read_only = false;
        Ok(info)
    }

    /// Turns this handle into a new fork named `name` at this handle's
    /// tick and commits the pending changes as the fork's first tick, in
    /// one step ([`Storage::fork_and_append`](crate::Storage::fork_and_append): one durable write on a
    /// backend that stores both together, where [`World::fork_in_place`]
    /// then [`World::commit`] make two). The materialized state is kept,
    /// nothing is copied or read; the world it was stays in the ledger.
    /// With nothing pending it is [`World::fork_in_place`]. Returns the
    /// fork's catalogue entry (its head is the new tick).
    ///
    /// Errors as [`World::fork_in_place`] and [`World::commit`]; on an
    /// error nothing is stored (on a backend with an atomic
    /// `fork_and_append`), the handle is unchanged and the changes stay
    /// pending.
    pub async fn commit_as_fork(&mut self, name: &str) -> Result<WorldInfo, Error> {
        self.check_flushed(name)?;
        let Some(out) = self.outgoing()? else {
            return self.fork_in_place(name).await;
        };
        let tick = out.record.tick;
        let forked = self
            .storage
            .fork_and_append(
                self.info.id,
                self.tick,
                name,
                vec![(out.record, out.snapshot)],
            )
            .await;
        let info = match forked {
            Ok(info) => info,
            Err(e) => {
                self.restore_pending(out.kept);
                return Err(e.into());
            }
        };
        self.info = info.clone();
        self.read_only = false;
        self.apply_stored(tick, &out.kept, out.sizes)?;
        Ok(info)
    }

    fn check_flushed(&self, name: &str) -> Result<(), Error> {
        if self.staged.is_empty() {
            return Ok(());
        }
        Err(Error::Storage(crate::StorageError::Backend {
            context: format!("forking {} into {name:?}", self.info.id),
            source: format!("{} staged tick(s) are not flushed yet", self.staged.len()).into(),
        }))
    }

    /// Forks this world at `at` into a new world named `name` (as
    /// [`World::fork`]) and returns it open at its head, writable. Forking
    /// at this world's own tick copies its materialized state (no ledger
    /// read; O(entities)); an earlier tick reads the fork's state from the
    /// ledger. Staged ticks must be flushed first: the fork shares only
    /// what the ledger holds.
    pub async fn fork_world(&self, at: Tick, name: &str) -> Result<World, Error> {
        self.check_flushed(name)?;
        let info = self.fork(at, name).await?;
        if at == self.tick {
            self.copied_as(info)
        } else {
            World::open_id(self.storage.clone(), self.registry.clone(), info.id).await
        }
    }
}
