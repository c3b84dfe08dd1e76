//! Runs waiting for votes decided outside the loop: `autoresearch vote`
//! applies a decision as soon as the quorum is in, without launching a
//! candidate.

use super::*;

impl Controller {
    /// Asks the comparator again about every run waiting for votes and
    /// applies what it decides (a keep promotes the candidate, moving the
    /// branch by compare-and-swap, rebased and evaluated again when the head
    /// moved since it was measured), then stops: no candidate is launched.
    /// Returns how many were kept and discarded; runs still short of their
    /// quorum stay pending.
    ///
    /// The lease rules of [`Controller::run`] apply: when a live loop holds
    /// the world's lease this fails at once with [`LoopError::LeaseHeld`]
    /// and touches nothing (that loop decides the run itself, before its
    /// next round); otherwise runs left in flight are recovered first.
    pub async fn decide_pending(self: Arc<Self>) -> Result<(u64, u64), LoopError> {
        let lease = self.acquire_lease().await?;
        let out = match self.recover().await {
            Ok(_) => self.revisit_pending().await,
            Err(e) => Err(e),
        };
        let flushed = self.ledger.flush().await;
        let out = out.and_then(|s| flushed.map(|_| s));
        let closed = self.executor.close().await;
        let released = self.release_lease(lease).await;
        let decided = out?;
        closed?;
        released?;
        Ok(decided)
    }
}
