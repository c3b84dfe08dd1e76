use super::*;

impl Controller {
    // --- The loop -------------------------------------------------------

    /// Runs the loop until the iteration limit, the time budget, too many
    /// consecutive crashes, or a shutdown request.
    ///
    /// It first takes the world's lease (see [`lease`](super::lease)): when
    /// another live process holds it, this fails at once with
    /// [`LoopError::LeaseHeld`] and touches nothing; runs in flight are
    /// recovered only once the lease is ours.
    pub async fn run(self: Arc<Self>) -> Result<Summary, LoopError> {
        let lease = self.acquire_lease().await?;
        let out = self.clone().run_loop().await;
        // Staged steps become durable however the loop ended.
        let flushed = self.ledger.flush().await;
        let out = out.and_then(|s| flushed.map(|_| s));
        // Pooled checkouts go whether the loop ended well or not.
        let closed = self.executor.close().await;
        let released = self.release_lease(lease).await;
        let s = out?;
        closed?;
        released?;
        Ok(s)
    }

    pub(super) async fn run_loop(self: Arc<Self>) -> Result<Summary, LoopError> {
        let mut s = Summary::default();
        self.recover().await?;
        self.announce_comparator_switch().await;
        let mut crashes_in_a_row = 0u32;
        let mut calibrated = false;
        loop {
            if self.shutdown.level() >= Shutdown::DRAIN {
                s.stopped = LoopCause::Interrupted.to_string();
                s.reason = StopReason::Interrupted;
                break;
            }
            if self.cfg.iterations > 0 && s.launched >= self.cfg.iterations {
                s.stopped = format!("{} iterations done", s.launched);
                s.reason = StopReason::IterationsDone;
                break;
            }
            if self
                .cfg
                .time_budget
                .is_some_and(|b| self.started.elapsed() >= b)
            {
                s.stopped = "time budget spent".into();
                s.reason = StopReason::TimeBudget;
                break;
            }
            if let Some(why) = self.cost_budget_spent().await {
                s.stopped = format!("{}: {why}", LoopCause::CostBudget);
                s.reason = StopReason::CostBudget;
                break;
            }
            let (k, d) = self.revisit_pending().await?;
            s.kept += k;
            s.discarded += d;
            let before = self.head().await.map(|h| h.run_id);
            let head = self.sync_head().await?;
            if before.as_deref() != Some(head.run_id.as_str()) {
                s.baselines += 1;
            }
            // An incumbent without a score (its baseline failed) is measured
            // again before any candidate; each failure counts as a crash.
            if !self.incumbent_measured(&head).await {
                crashes_in_a_row += 1;
                if crashes_in_a_row >= self.cfg.max_consecutive_crashes {
                    s.stopped = format!("{crashes_in_a_row} consecutive crashes");
                    s.reason = StopReason::ConsecutiveCrashes(crashes_in_a_row);
                    break;
                }
                if !self.resample_incumbent(&head).await? {
                    continue;
                }
            }
            if !calibrated {
                self.calibrate(&head).await?;
                calibrated = true;
            }
            let remaining = if self.cfg.iterations > 0 {
                (self.cfg.iterations - s.launched) as usize
            } else {
                usize::MAX
            };
            let k = self.cfg.parallel.min(remaining).max(1);
            s.launched += k as u64;
            let statuses = self.clone().round(&head, k).await?;
            for st in statuses {
                match st {
                    OutcomeStatus::Keep => s.kept += 1,
                    OutcomeStatus::Discard => s.discarded += 1,
                    OutcomeStatus::Pending => s.pending += 1,
                    _ => s.crashed += 1,
                }
                if st == OutcomeStatus::Crash {
                    crashes_in_a_row += 1;
                } else {
                    crashes_in_a_row = 0;
                }
            }
            if crashes_in_a_row >= self.cfg.max_consecutive_crashes {
                s.stopped = format!("{crashes_in_a_row} consecutive crashes");
                s.reason = StopReason::ConsecutiveCrashes(crashes_in_a_row);
                break;
            }
        }
        s.head = self.head().await.map(|h| h.commit).unwrap_or_default();
        Ok(s)
    }

    /// One round: `k` candidates against `head`, decided together.
    pub(super) async fn round(
        self: Arc<Self>,
        head: &Head,
        k: usize,
    ) -> Result<Vec<OutcomeStatus>, LoopError> {
        let mut set = tokio::task::JoinSet::new();
        let run_ids: Vec<String> = (0..k).map(|_| Self::new_run_id()).collect();
        for (i, run_id) in run_ids.iter().enumerate() {
            let this = self.clone();
            let head = head.clone();
            let run_id = run_id.clone();
            set.spawn(async move { (i, this.attempt(&head, run_id).await) });
        }
        let (mut prepared, first_err) = self.prepared(set, &run_ids).await;
        if let Some(e) = first_err {
            for run_id in &run_ids {
                log_release(run_id, self.executor.release(run_id).await);
            }
            return Err(e);
        }
        prepared.sort_by_key(|(i, _)| *i);
        let mut statuses = Vec::new();
        let mut cands = Vec::new();
        for (_, p) in prepared {
            match p {
                Prepared::Done(st) => statuses.push(st),
                Prepared::Evaluated(c) => cands.push(c),
            }
        }
        if !cands.is_empty() {
            let decisions = if self.shutdown.level() >= Shutdown::KILL {
                vec![Err(LoopCause::Interrupted.to_string()); cands.len()]
            } else {
                self.decide(head, &cands).await?
            };
            for (c, d) in cands.iter().cloned().zip(decisions) {
                let keep = matches!(
                    &d,
                    Ok(Decision {
                        verdict: Verdict::Keep,
                        ..
                    })
                );
                if !keep {
                    // Only a keep may evaluate again (after a rebase): the
                    // others give their checkout back now, so that its reset
                    // overlaps the decision's tick.
                    log_release(&c.run_id, self.executor.release(&c.run_id).await);
                }
                let st = match d {
                    Err(why) if LoopCause::from_word(&why) == Some(LoopCause::Interrupted) => {
                        self.finish(
                            &c,
                            OutcomeStatus::Crash,
                            LoopCause::Interrupted.as_str(),
                            &LoopCause::Interrupted.descriptor(json!({})),
                        )
                        .await?
                    }
                    d => self.apply(head, c, d).await?,
                };
                statuses.push(st);
            }
        }
        for run_id in &run_ids {
            log_release(run_id, self.executor.release(run_id).await);
        }
        Ok(statuses)
    }

    /// The round's attempts as they end, and the first error among them
    /// (recorded as its run's cause).
    async fn prepared(
        &self,
        mut set: tokio::task::JoinSet<(usize, Result<Prepared, LoopError>)>,
        run_ids: &[String],
    ) -> (Vec<(usize, Prepared)>, Option<LoopError>) {
        let mut prepared = Vec::with_capacity(run_ids.len());
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok((i, Ok(p))) => prepared.push((i, p)),
                Ok((i, Err(e))) => {
                    self.record_failure(&run_ids[i], &e).await;
                    first_err = first_err.or(Some(e))
                }
                Err(source) => {
                    first_err = first_err.or(Some(LoopError::Task {
                        doing: "making a candidate",
                        source,
                    }))
                }
            }
        }
        (prepared, first_err)
    }

    /// Records the error that stops the loop as the cause of run `run_id`
    /// when it is still in flight (a git failure, a full disk), rather than
    /// leaving it for `recover` to call interrupted. Best effort: a ledger
    /// that cannot be written is only logged.
    async fn record_failure(&self, run_id: &str, e: &LoopError) {
        let id = run_id.to_string();
        let found = self.ledger.read(move |w| w.run_by_id(&id)).await;
        let Some((entity, run)) = found else {
            return;
        };
        if !run.status().is_ok_and(|s| s.is_active()) {
            return;
        }
        let cand = Cand {
            run_id: run_id.to_string(),
            entity,
            base: String::new(),
            commit: String::new(),
            workspace: String::new(),
            left_out: Vec::new(),
            proposer_cost: None,
            description: String::new(),
        };
        let cause = LoopCause::Infrastructure;
        let reason = format!("{cause}: {e}");
        let detail = cause.descriptor(json!({"error": e.to_string()}));
        let recorded = self
            .finish(&cand, OutcomeStatus::Crash, &reason, &detail)
            .await;
        if let Err(err) = recorded.map(drop).and(self.ledger.flush().await) {
            tracing::warn!("recording the failure of run {run_id}: {err}");
        }
    }
}
