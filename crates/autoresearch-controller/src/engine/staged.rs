//! The experiment world as the loop writes it: durable ticks, staged ticks,
//! and the one place where a write that met another writer's tick is retried.
//!
//! A *staged* step is applied to the world at once but appended only with
//! the next durable tick or [`StagedLedger::flush`], so that several steps
//! cost one durable write. Each staged step's closure is kept until then:
//! when the append meets a tick another process wrote first (`Conflict`),
//! the world is refreshed and every staged step is made again on top, then
//! the write is tried again, up to [`MAX_CONFLICT_RETRIES`] times.

use super::LoopError;
use autoresearch_core::{StorageError, World};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Mutex;

/// How many times one write is redone after losing a race to another writer.
const MAX_CONFLICT_RETRIES: u32 = 20;

/// A staged step's changes, kept to be made again should the flush of its
/// tick meet another writer's tick.
type StagedStep = Box<dyn FnMut(&mut World) -> Result<(), autoresearch_core::Error> + Send>;

/// The world, and the steps staged on it that are not durable yet.
struct Inner {
    world: World,
    staged: Vec<(String, StagedStep)>,
}

/// How a write reaches the ledger.
#[derive(Clone, Copy)]
enum Write {
    /// The pending changes as one more tick, after the staged ones.
    Commit,
    /// Only the staged ticks.
    Flush,
}

/// The experiment world behind a lock, with its staged steps.
pub(super) struct StagedLedger {
    /// The world's name, for errors.
    name: String,
    inner: Mutex<Inner>,
    /// How many steps are staged (a copy of `inner.staged.len()` readable
    /// without waiting for the world, e.g. while a durable tick commits).
    staged_steps: AtomicUsize,
}

impl StagedLedger {
    pub(super) fn new(world: World) -> StagedLedger {
        StagedLedger {
            name: world.name().to_string(),
            inner: Mutex::new(Inner {
                world,
                staged: Vec::new(),
            }),
            staged_steps: AtomicUsize::new(0),
        }
    }

    /// Reads the world as this process sees it (staged steps included).
    pub(super) async fn read<T>(&self, f: impl FnOnce(&World) -> T) -> T {
        let l = self.inner.lock().await;
        f(&l.world)
    }

    /// Applies `f` and commits it as one durable tick, after the staged
    /// ticks before it (all in one write); on a conflict with another
    /// writer (a vote), refreshes, makes the staged steps again, and applies
    /// `f` again.
    pub(super) async fn tick<T>(
        &self,
        doing: &str,
        f: impl FnMut(&mut World) -> Result<T, autoresearch_core::Error>,
    ) -> Result<T, LoopError> {
        let mut l = self.inner.lock().await;
        self.write(&mut l, doing, Write::Commit, f).await
    }

    /// Applies `f` as the next tick at once, but leaves its append to the
    /// next durable tick or [`StagedLedger::flush`]. Only for steps nothing
    /// outside this process acts on before then: every job start and every
    /// branch update flushes first. `f` is kept until then, to be made
    /// again on a refreshed world should another writer get in first.
    pub(super) async fn stage(
        &self,
        doing: &str,
        mut f: impl FnMut(&mut World) -> Result<(), autoresearch_core::Error> + Send + 'static,
    ) -> Result<(), LoopError> {
        let mut l = self.inner.lock().await;
        let staged = f(&mut l.world).and_then(|_| l.world.stage());
        if let Err(e) = staged {
            l.world.discard_pending();
            return Err(self.error(doing, e));
        }
        l.staged.push((doing.to_string(), Box::new(f)));
        self.staged_steps.store(l.staged.len(), Ordering::Release);
        Ok(())
    }

    /// Makes every staged step durable (without waiting for the world when
    /// there is none).
    pub(super) async fn flush(&self) -> Result<(), LoopError> {
        if self.staged_steps.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let mut l = self.inner.lock().await;
        self.flush_locked(&mut l).await
    }

    /// Catches up with ticks other processes appended (votes), after making
    /// the staged steps durable.
    pub(super) async fn refresh(&self) -> Result<(), LoopError> {
        let mut l = self.inner.lock().await;
        self.flush_locked(&mut l).await?;
        l.world
            .refresh()
            .await
            .map_err(|e| self.error("refreshing", e))?;
        Ok(())
    }

    /// A ledger error of this world, saying what was being done.
    pub(super) fn error(&self, doing: &str, source: autoresearch_core::Error) -> LoopError {
        LoopError::Ledger {
            doing: doing.to_string(),
            world: self.name.clone(),
            source,
        }
    }

    async fn flush_locked(&self, l: &mut Inner) -> Result<(), LoopError> {
        if l.staged.is_empty() {
            return Ok(());
        }
        self.write(l, "appending staged steps", Write::Flush, |_| Ok(()))
            .await
    }

    /// The one conflict-retry loop: applies `f`, writes, and on a
    /// `Conflict` catches up, makes the staged steps again and tries again.
    /// On success nothing is staged any more.
    async fn write<T>(
        &self,
        l: &mut Inner,
        doing: &str,
        how: Write,
        mut f: impl FnMut(&mut World) -> Result<T, autoresearch_core::Error>,
    ) -> Result<T, LoopError> {
        let mut retries_left = MAX_CONFLICT_RETRIES;
        loop {
            let out = match f(&mut l.world) {
                Ok(v) => v,
                Err(e) => {
                    l.world.discard_pending();
                    return Err(self.error(doing, e));
                }
            };
            let written = match how {
                Write::Commit => l.world.commit().await,
                Write::Flush => l.world.flush().await,
            };
            match written {
                Ok(_) => {
                    l.staged.clear();
                    self.staged_steps.store(0, Ordering::Release);
                    return Ok(out);
                }
                Err(autoresearch_core::Error::Storage(StorageError::Conflict { .. }))
                    if retries_left > 0 =>
                {
                    retries_left -= 1;
                    self.redo_staged(l).await?;
                }
                Err(e) => {
                    l.world.discard_pending();
                    return Err(self.error(doing, e));
                }
            }
        }
    }

    /// After a conflict: catches up with the ledger (a failed flush already
    /// went back to it, dropping the staged ticks) and stages the staged
    /// steps again on top.
    async fn redo_staged(&self, l: &mut Inner) -> Result<(), LoopError> {
        l.world
            .refresh()
            .await
            .map_err(|e| self.error("refreshing", e))?;
        for (doing, f) in l.staged.iter_mut() {
            let staged = f(&mut l.world).and_then(|_| l.world.stage());
            if let Err(e) = staged {
                l.world.discard_pending();
                return Err(self.error(doing, e));
            }
        }
        Ok(())
    }
}
