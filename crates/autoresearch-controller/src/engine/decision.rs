use super::*;

impl Controller {
    pub(super) fn outcome(
        &self,
        run_id: &str,
        status: OutcomeStatus,
        reason: &str,
        descriptor: &Value,
        base: &str,
    ) -> Outcome {
        Outcome {
            run_id: run_id.to_string(),
            comparator: match status {
                OutcomeStatus::Crash | OutcomeStatus::Baseline => String::new(),
                _ => self.comparator.spec(),
            },
            status,
            reason: reason.to_string(),
            descriptor_json: descriptor.to_string(),
            base_commit: base.to_string(),
            decided_at_ms: now_ms(),
        }
    }

    /// Finishes a run with a decision that does not move the head.
    pub(super) async fn finish(
        &self,
        c: &Cand,
        status: OutcomeStatus,
        reason: &str,
        descriptor: &Value,
    ) -> Result<OutcomeStatus, LoopError> {
        let run_status = if status == OutcomeStatus::Crash {
            RunStatus::Crashed
        } else {
            RunStatus::Stopped
        };
        let outcome = self.outcome(&c.run_id, status.clone(), reason, descriptor, &c.base);
        let (commit, workspace) = (c.commit.clone(), c.workspace.clone());
        let description = c.description_record();
        let (entity, finished_at) = (c.entity, now_ms());
        let (run_id, proposer) = (c.run_id.clone(), c.proposer_cost.clone());
        // Staged: nothing acts on a decision that leaves the head alone
        // before the next job start, which makes it durable.
        self.ledger
            .stage(
                &format!("recording {status} of run {}", c.run_id),
                move |w| {
                    let mut r = run_of(w, entity)?;
                    r.set_status(run_status);
                    r.finished_at_ms = finished_at;
                    if !commit.is_empty() {
                        r.commit_hash = commit.clone();
                    }
                    if !workspace.is_empty() {
                        r.workspace_path = workspace.clone();
                    }
                    w.insert(entity, &r)?;
                    if let Some(p) = &proposer {
                        Self::charge_in(w, &run_id, |cost| p.charge(cost))?;
                    }
                    if let Some(d) = &description {
                        w.insert(entity, d)?;
                    }
                    w.insert(entity, &outcome)
                },
            )
            .await?;
        self.finished_event(&c.run_id, &c.commit, status.clone(), reason)
            .await;
        Ok(status)
    }

    pub(super) async fn finished_event(
        &self,
        run_id: &str,
        commit: &str,
        status: OutcomeStatus,
        reason: &str,
    ) {
        let exp = self.cfg.experiment.clone();
        let rid = run_id.to_string();
        let (metrics, head) = self
            .ledger
            .read(|w| {
                // One run, not a scan of every attempt.
                let a = w
                    .run_by_id(&rid)
                    .map(|(entity, run)| Attempt::of(w, entity, run));
                let m = a.as_ref().map(history::final_metrics).unwrap_or_default();
                let h = w
                    .branch_head(&exp)
                    .map(|(_, h)| h.commit_hash)
                    .unwrap_or_default();
                (m, h)
            })
            .await;
        self.emit(Event::Finished {
            run_id: run_id.to_string(),
            commit: commit.to_string(),
            status,
            reason: reason.to_string(),
            metrics: metrics
                .into_iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .collect(),
            head,
        });
    }

    /// How many samples of `commit` are recorded under `owner`.
    pub(super) async fn sample_count(&self, owner: &str, commit: &str) -> u32 {
        let (o, c) = (owner.to_string(), commit.to_string());
        self.ledger
            .read(move |w| {
                w.results_for(&o)
                    .iter()
                    .filter(|(_, r)| r.counts_for(&c))
                    .count() as u32
            })
            .await
    }

    pub(super) async fn evidence(
        &self,
        run_id: &str,
        commit: &str,
        base: Option<&str>,
    ) -> Result<Evidence, LoopError> {
        let (o, c) = (run_id.to_string(), commit.to_string());
        let mut evidence = self.ledger.read(move |w| stored_evidence(w, &o, &c)).await;
        let diff = match base {
            Some(b) if b != commit && self.cfg.evidence_diff => {
                let (b, c) = (b.to_string(), commit.to_string());
                let limit = self.cfg.output_limit;
                Some(self.git(move |g| g.diff(&b, &c)).await?).map(|d| {
                    if d.len() > limit {
                        let mut end = limit;
                        while !d.is_char_boundary(end) {
                            end -= 1;
                        }
                        d[..end].to_string()
                    } else {
                        d
                    }
                })
            }
            _ => None,
        };
        evidence.diff = diff;
        Ok(evidence)
    }

    // --- Deciding -------------------------------------------------------

    /// Asks the comparator about `cands` against `head`, adding samples
    /// while it asks for more. Every budget is the comparator's (a `stat`
    /// spec's `max_n` counts failed samples too); the loop stops asking only
    /// on a kill request, or when a comparator asks for nothing or for more
    /// than the guard [`LoopConfig::max_samples`] allows in one decision.
    /// Each look carries the experiment's noise model, which is recorded
    /// when it changed.
    pub(super) async fn decide(
        &self,
        head: &Head,
        cands: &[Cand],
    ) -> Result<Vec<Result<Decision, String>>, LoopError> {
        let mut taken_inc = 0u32;
        let mut taken: Vec<u32> = vec![0; cands.len()];
        loop {
            let noise = self.noise_model().await;
            let mut inc = self.evidence(&head.run_id, &head.commit, None).await?;
            inc.noise = Some(noise.clone());
            let mut evs = Vec::with_capacity(cands.len());
            for c in cands {
                let mut e = self.evidence(&c.run_id, &c.commit, Some(&c.base)).await?;
                e.noise = Some(noise.clone());
                evs.push(e);
            }
            let decisions = self.ask_comparator(&inc, &evs).await;
            let Some(want_inc) = decisions.iter().filter_map(need_more).map(|(i, _)| i).max()
            else {
                self.record_noise(noise).await?;
                return Ok(decisions);
            };
            let asks_nothing = decisions
                .iter()
                .filter_map(need_more)
                .any(|(i, c)| i == 0 && c == 0);
            let guard = self.cfg.max_samples;
            let over_guard = taken_inc.saturating_add(want_inc) > guard
                || decisions.iter().zip(&taken).any(|(d, t)| {
                    need_more(d).is_some_and(|(_, more)| t.saturating_add(more) > guard)
                });
            if asks_nothing || over_guard || self.shutdown.level() >= Shutdown::KILL {
                self.record_noise(noise).await?;
                let why = if asks_nothing {
                    "the comparator asked for more samples but for none of either side".to_string()
                } else if over_guard {
                    format!(
                        "the comparator asked for more than the loop's guard of {guard} samples a side in one decision"
                    )
                } else {
                    LoopCause::Interrupted.to_string()
                };
                return Ok(budget_spent(decisions, &why));
            }
            taken_inc += want_inc;
            for (t, d) in taken.iter_mut().zip(&decisions) {
                *t += need_more(d).map_or(0, |(_, c)| c);
            }
            self.sample_more(head, cands, &decisions, want_inc).await?;
        }
    }

    /// The experiment's noise model as the ledger has it now (every
    /// repeated sample of every run). Cost: one pass over the Results.
    pub(super) async fn noise_model(&self) -> NoiseModel {
        let exp = self.cfg.experiment.clone();
        self.ledger
            .read(move |w| autoresearch_core::noise::experiment_noise(w, &exp, now_ms()))
            .await
    }

    /// Stores `model` on the experiment's entity when it estimates
    /// something other than the stored one (staged with the decision).
    pub(super) async fn record_noise(&self, model: NoiseModel) -> Result<(), LoopError> {
        let exp = self.cfg.experiment.clone();
        let stored = self
            .ledger
            .read(move |w| {
                let (e, _) = w.experiment(&exp)?;
                Some((e, w.get::<NoiseModel>(e)))
            })
            .await;
        let Some((entity, old)) = stored else {
            return Ok(());
        };
        if model.metrics.is_empty() || old.is_some_and(|o| o.same_estimate(&model)) {
            return Ok(());
        }
        self.ledger
            .stage("recording the noise model", move |w| {
                w.insert(entity, &model)
            })
            .await
    }

    /// One question to the comparator: `compare` for one candidate,
    /// `compare_round` for several; a failure is every candidate's error.
    async fn ask_comparator(
        &self,
        inc: &Evidence,
        evs: &[Evidence],
    ) -> Vec<Result<Decision, String>> {
        if let [one] = evs {
            return vec![
                self.comparator
                    .compare(inc, one)
                    .await
                    .map_err(|e| e.to_string()),
            ];
        }
        match self.comparator.compare_round(inc, evs).await {
            Ok(d) if d.len() == evs.len() => d.into_iter().map(Ok).collect(),
            Ok(d) => {
                let why = format!(
                    "comparator returned {} decisions for {} candidates",
                    d.len(),
                    evs.len()
                );
                vec![Err(why); evs.len()]
            }
            Err(e) => vec![Err(e.to_string()); evs.len()],
        }
    }

    /// Takes the samples the comparator asked for: `want_inc` more of the
    /// incumbent (one batch at a time across parallel decisions, in the
    /// first candidate's checkout), then each candidate's own, each side's
    /// as one batch ([`Controller::evaluate_samples`]: at once where the
    /// executor can). A failing sample is recorded; the comparator sees
    /// fewer samples.
    async fn sample_more(
        &self,
        head: &Head,
        cands: &[Cand],
        decisions: &[Result<Decision, String>],
        want_inc: u32,
    ) -> Result<(), LoopError> {
        if want_inc > 0 {
            let _g = self.incumbent_lock.lock().await;
            let workspace = cands
                .first()
                .map_or(head.run_id.clone(), |c| c.run_id.clone());
            self.evaluate_samples(
                &head.run_id,
                &workspace,
                &head.commit,
                want_inc,
                INCUMBENT_STEP,
            )
            .await?;
        }
        for (c, d) in cands.iter().zip(decisions) {
            let Some((_, more)) = need_more(d) else {
                continue;
            };
            self.emit(Event::Step {
                run_id: c.run_id.clone(),
                step: "sampling".into(),
            });
            self.evaluate_samples(&c.run_id, &c.run_id, &c.commit, more, CANDIDATE_STEP)
                .await?;
        }
        Ok(())
    }

    /// Applies one decision for `c` measured against `head`. Returns the
    /// final status word.
    pub(super) async fn apply(
        &self,
        head: &Head,
        c: Cand,
        d: Result<Decision, String>,
    ) -> Result<OutcomeStatus, LoopError> {
        let d = match d {
            Ok(d) => d,
            Err(why) => {
                let reason = format!("comparator failed: {why}");
                return self
                    .finish(&c, OutcomeStatus::Discard, &reason, &json!({"error": why}))
                    .await;
            }
        };
        match d.verdict {
            Verdict::Keep => self.promote_or_rebase(head, c, d).await,
            Verdict::Discard | Verdict::NeedMore { .. } => {
                self.finish(&c, OutcomeStatus::Discard, &d.reason, &d.descriptor)
                    .await
            }
            Verdict::Pending => {
                self.finish(&c, OutcomeStatus::Pending, &d.reason, &d.descriptor)
                    .await
            }
        }
    }

    /// Asks the comparator again about runs waiting for votes. Returns how
    /// many were decided.
    pub(super) async fn revisit_pending(&self) -> Result<(u64, u64), LoopError> {
        self.ledger.refresh().await?;
        let exp = self.cfg.experiment.clone();
        // Pending outcomes are few: look them up rather than build every attempt.
        let pending: Vec<(Attempt, usize)> = self
            .ledger
            .read(|w| {
                w.find_all::<Outcome>(|o| o.status == OutcomeStatus::Pending)
                    .into_iter()
                    .filter_map(|(entity, outcome)| {
                        let run = w.get::<Run>(entity)?;
                        let decided = run.status().map(|s| s.is_terminal()).unwrap_or(false);
                        let votes = w
                            .find_all::<autoresearch_core::Vote>(|v| v.run_id == run.run_id)
                            .len();
                        (run.experiment_name == exp && decided).then(|| {
                            let a = Attempt {
                                entity,
                                results: Vec::new(),
                                outcome: Some(outcome),
                                description: None,
                                run,
                            };
                            (a, votes)
                        })
                    })
                    .collect()
            })
            .await;
        // A run stays pending until voted, and is decided only by the
        // comparator that made it wait (see `fairness`).
        let pending: Vec<Attempt> = pending
            .into_iter()
            .filter(|(a, votes)| self.may_revisit(a, *votes))
            .map(|(a, _)| a)
            .collect();
        let (mut kept, mut discarded) = (0, 0);
        for a in pending {
            let Some(head) = self.head().await else { break };
            let o = a.outcome.clone().unwrap_or_default();
            let c = Cand {
                run_id: a.run.run_id.clone(),
                entity: a.entity,
                base: o.base_commit.clone(),
                commit: a.run.commit_hash.clone(),
                workspace: String::new(),
                left_out: Vec::new(),
                proposer_cost: None,
                description: String::new(),
            };
            let inc_head = if c.base == head.commit {
                head.clone()
            } else {
                // Compare against the head it was measured with; a keep is then rebased.
                Head {
                    commit: c.base.clone(),
                    run_id: self
                        .run_at_commit(&c.base)
                        .await
                        .unwrap_or(head.run_id.clone()),
                }
            };
            let mut ds = self.decide(&inc_head, std::slice::from_ref(&c)).await?;
            let d = ds.pop().unwrap_or_else(|| Err("no decision".into()));
            match &d {
                Ok(Decision {
                    verdict: Verdict::Pending,
                    ..
                }) => continue,
                Ok(Decision {
                    verdict: Verdict::Keep,
                    ..
                }) => {
                    if self.apply(&inc_head, c.clone(), d).await? == OutcomeStatus::Keep {
                        kept += 1;
                    } else {
                        discarded += 1;
                    }
                }
                _ => {
                    self.apply(&inc_head, c.clone(), d).await?;
                    discarded += 1;
                }
            }
            log_release(&c.run_id, self.executor.release(&c.run_id).await);
        }
        Ok((kept, discarded))
    }

    pub(super) async fn run_at_commit(&self, commit: &str) -> Option<String> {
        let (exp, c) = (self.cfg.experiment.clone(), commit.to_string());
        self.ledger
            .read(move |w| {
                attempts(w, &exp)
                    .into_iter()
                    .rev()
                    .find(|a| {
                        a.run.commit_hash == c
                            && a.outcome.as_ref().is_some_and(|o| o.status.is_head())
                    })
                    .map(|a| a.run.run_id)
            })
            .await
    }
}

/// The samples a decision asks for, (incumbent, candidate), if it does.
fn need_more(d: &Result<Decision, String>) -> Option<(u32, u32)> {
    match d {
        Ok(Decision {
            verdict:
                Verdict::NeedMore {
                    incumbent,
                    candidate,
                },
            ..
        }) => Some((*incumbent, *candidate)),
        _ => None,
    }
}

/// The decisions with every need for more samples turned into a discard
/// saying `why` the loop stopped sampling.
fn budget_spent(
    decisions: Vec<Result<Decision, String>>,
    why: &str,
) -> Vec<Result<Decision, String>> {
    decisions
        .into_iter()
        .map(|d| match d {
            Ok(Decision {
                verdict: Verdict::NeedMore { .. },
                reason,
                descriptor,
            }) => Ok(Decision::new(
                Verdict::Discard,
                format!("undecided ({reason}): {why}"),
                descriptor,
            )),
            other => other,
        })
        .collect()
}
