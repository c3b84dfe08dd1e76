//! Fair comparisons across invocations: a loop started with another
//! comparator than the experiment's last decisions says what stored
//! evidence the new one reuses, and a run waiting for votes is decided
//! only by the comparator that made it wait, once it has votes.

use super::*;

impl Controller {
    /// When this loop's comparator is not the one that made the
    /// experiment's latest decision, says so (an [`Event::Warning`]) and
    /// what evidence it reuses: the incumbent's stored samples, gathered
    /// under the earlier comparator, are the new comparator's incumbent
    /// side (a candidate is measured afresh). Returns the message.
    pub(super) async fn announce_comparator_switch(&self) -> Option<String> {
        let exp = self.cfg.experiment.clone();
        let now = self.comparator.spec();
        let (before, head) = self
            .ledger
            .read(|w| {
                let before = attempts(w, &exp)
                    .into_iter()
                    .rev()
                    .filter_map(|a| a.outcome.map(|o| o.comparator))
                    // A fork's promotion by hand was no comparator's.
                    .find(|c| !c.is_empty() && c != Outcome::PROMOTED_BY_FORK);
                let head = w.branch_head(&exp).map(|(_, h)| {
                    let ev = stored_evidence(w, &h.run_id, &h.commit_hash);
                    (h.commit_hash, h.run_id, ev.results)
                });
                (before, head)
            })
            .await;
        let before = before.filter(|b| *b != now)?;
        let reused = match &head {
            Some((commit, run_id, results)) if !results.is_empty() => {
                let metric = self.cfg.primary_metric.clone();
                let values: Vec<f64> = match &metric {
                    Some(m) => results
                        .iter()
                        .filter_map(|r| r.outputs().ok()?.get(m)?.as_f64())
                        .collect(),
                    None => Vec::new(),
                };
                let mean = match (&metric, values.is_empty()) {
                    (Some(m), false) => format!(
                        ", {m} mean {}",
                        autoresearch_core::num::fmt_f64(
                            values.iter().sum::<f64>() / values.len() as f64
                        )
                    ),
                    _ => String::new(),
                };
                format!(
                    "the incumbent {} (run {run_id}) keeps its {} stored sample{}{mean}, taken under the earlier comparator, as its evidence; candidates are measured afresh",
                    short_commit(commit),
                    results.len(),
                    if results.len() == 1 { "" } else { "s" },
                )
            }
            Some((commit, _, _)) => format!(
                "the incumbent {} has no stored sample; it is measured when a candidate needs one",
                short_commit(commit)
            ),
            None => "no incumbent yet".to_string(),
        };
        let note = format!("comparator changed from {before} to {now}: {reused}");
        tracing::info!("{note}");
        self.emit(Event::Warning(note.clone()));
        Some(note)
    }

    /// Whether a run waiting for votes may be asked about again by this
    /// loop: it has votes, and this loop's comparator is the one that made
    /// it wait (another would decide it on other grounds, silently). A run
    /// left waiting for that second reason is said once per loop.
    pub(super) fn may_revisit(&self, pending: &Attempt, votes: usize) -> bool {
        let recorded = pending
            .outcome
            .as_ref()
            .map(|o| o.comparator.clone())
            .unwrap_or_default();
        let now = self.comparator.spec();
        if recorded.is_empty() || recorded == now {
            return votes > 0;
        }
        let first_time = self
            .left_pending
            .lock()
            .map(|mut seen| seen.insert(pending.run.run_id.clone()))
            .unwrap_or(false);
        if first_time {
            let note = format!(
                "run {} waits for votes under comparator {recorded}; this loop compares with {now}, which does not decide it: it stays pending (settle it with `autoresearch run --comparator '{recorded}'` once voted)",
                pending.run.run_id
            );
            self.warn(note);
        }
        false
    }
}
