use super::*;

impl Controller {
    // --- Head and baselines ---------------------------------------------

    /// Makes the BranchHead agree with the branch: on first run, and when
    /// someone else moved the branch, its tip is evaluated as a baseline and
    /// adopted. A forked world whose branch does not exist yet creates it at
    /// the world's head.
    pub(super) async fn sync_head(&self) -> Result<Head, LoopError> {
        let branch = self.cfg.branch.clone();
        let tip = self.git(move |g| g.branch_tip(&branch)).await?;
        let head = self.head().await;
        match (head, tip) {
            (Some(h), Some(t)) if h.commit == t => Ok(h),
            (Some(h), None) => {
                let (branch, commit) = (self.cfg.branch.clone(), h.commit.clone());
                self.git(move |g| {
                    g.compare_and_swap(
                        &format!("refs/heads/{branch}"),
                        &commit,
                        None,
                        "autoresearch: branch of a forked world",
                    )
                })
                .await?;
                Ok(h)
            }
            (None, None) => {
                let t = self.create_branch().await?;
                self.baseline(&t, "the branch tip when the experiment started")
                    .await
            }
            (None, Some(t)) => {
                self.baseline(&t, "the branch tip when the experiment started")
                    .await
            }
            (Some(h), Some(t)) => {
                let (old, new) = (h.commit.clone(), t.clone());
                let forward = self.git(move |g| g.is_ancestor(&old, &new)).await?;
                let why = if forward {
                    "the branch was moved outside the loop (forward); adopted as a new baseline"
                        .to_string()
                } else {
                    let w = format!(
                        "branch {} was moved outside the loop, not forward: from {} to {} (commits kept on it before may no longer be on it); adopted as a new baseline",
                        self.cfg.branch,
                        short_commit(&h.commit),
                        short_commit(&t)
                    );
                    self.warn(w.clone());
                    w
                };
                self.baseline(&t, &why).await
            }
        }
    }

    /// Creates the missing branch at the repository's HEAD, saying so.
    async fn create_branch(&self) -> Result<String, LoopError> {
        let branch = self.cfg.branch.clone();
        let created = self
            .git(move |g| match g.resolve("HEAD")? {
                None => Ok(None),
                Some(h) => {
                    let refname = format!("refs/heads/{branch}");
                    g.compare_and_swap(&refname, &h, None, "autoresearch: branch created")?;
                    Ok(Some(h))
                }
            })
            .await?;
        let Some(h) = created else {
            return Err(LoopError::NoBranch {
                branch: self.cfg.branch.clone(),
                repo: self.cfg.repo.clone(),
            });
        };
        let note = format!(
            "created branch {} at the current HEAD ({})",
            self.cfg.branch,
            short_commit(&h)
        );
        tracing::info!("{note}");
        self.emit(Event::Warning(note));
        Ok(h)
    }

    pub(super) async fn baseline(&self, commit: &str, why: &str) -> Result<Head, LoopError> {
        let run_id = Self::new_run_id();
        let mut run = self.new_run(&run_id, OutcomeStatus::Baseline.as_str());
        run.commit_hash = commit.to_string();
        let entity = self
            .ledger
            .tick("recording a baseline run", |w| w.spawn_with(&run))
            .await?;
        self.emit(Event::Started {
            run_id: run_id.clone(),
            base: commit.to_string(),
        });
        self.update_run(
            "starting a baseline run",
            entity,
            |r| r.set_status(RunStatus::Running),
            None,
        )
        .await?;
        self.emit(Event::Step {
            run_id: run_id.clone(),
            step: "evaluating".into(),
        });
        let eval = self
            .evaluate(&run_id, &run_id, commit, 0, "baseline", None)
            .await?;
        log_release(&run_id, self.executor.release(&run_id).await);
        let (status, reason, descriptor, run_status) = match &eval {
            Ok(_) => (
                OutcomeStatus::Baseline,
                why.to_string(),
                BranchHead::baseline_descriptor(why),
                RunStatus::Stopped,
            ),
            Err(c) => (
                OutcomeStatus::Crash,
                format!("baseline {}", c.reason),
                c.detail.clone(),
                RunStatus::Crashed,
            ),
        };
        let outcome = self.outcome(&run_id, status.clone(), &reason, &descriptor, "");
        let head = BranchHead::new(
            &self.cfg.experiment,
            commit,
            &run_id,
            &BranchHead::baseline_descriptor(why),
            now_ms(),
        );
        let exp = self.cfg.experiment.clone();
        self.ledger
            .tick("adopting a baseline", |w| {
                let mut r = run_of(w, entity)?;
                r.set_status(run_status);
                r.finished_at_ms = now_ms();
                w.insert(entity, &r)?;
                w.insert(entity, &outcome)?;
                match w.branch_head(&exp) {
                    Some((e, _)) => w.insert(e, &head)?,
                    None => drop(w.spawn_with(&head)?),
                }
                Ok(())
            })
            .await?;
        self.finished_event(&run_id, commit, status, &reason).await;
        Ok(Head {
            commit: commit.to_string(),
            run_id,
        })
    }

    /// Whether the incumbent has at least one sample with metrics.
    pub(super) async fn incumbent_measured(&self, head: &Head) -> bool {
        let (owner, commit) = (head.run_id.clone(), head.commit.clone());
        self.ledger
            .read(move |w| {
                w.results_for(&owner).iter().any(|(_, r)| {
                    r.counts_for(&commit)
                        && matches!(r.outputs(), Ok(Value::Object(o)) if o.keys().any(|k| k != EvalResult::META))
                })
            })
            .await
    }

    /// Evaluates the incumbent once more, as its next sample (after a
    /// failed baseline); whether it gave metrics.
    pub(super) async fn resample_incumbent(&self, head: &Head) -> Result<bool, LoopError> {
        let _one_at_a_time = self.incumbent_lock.lock().await;
        let sample = self.sample_count(&head.run_id, &head.commit).await;
        self.emit(Event::Step {
            run_id: head.run_id.clone(),
            step: format!("re-evaluating the incumbent (sample {sample})"),
        });
        let eval = self
            .evaluate(
                &head.run_id,
                &head.run_id,
                &head.commit,
                sample,
                INCUMBENT_STEP,
                None,
            )
            .await?;
        log_release(&head.run_id, self.executor.release(&head.run_id).await);
        if let Err(c) = &eval {
            let w = format!(
                "the incumbent {} still has no score: {}",
                short_commit(&head.commit),
                c.reason
            );
            self.warn(w);
        }
        Ok(eval.is_ok())
    }

    /// Promotes `c` if `head` is still the head; otherwise rebases it onto the
    /// current head and decides again (a few times at most).
    pub(super) async fn promote_or_rebase(
        &self,
        head: &Head,
        mut c: Cand,
        mut d: Decision,
    ) -> Result<OutcomeStatus, LoopError> {
        let mut head = head.clone();
        for _ in 0..3 {
            match self.confirm(&head, &c, &d).await? {
                confirm::Confirmed::Yes(Some(rec)) => {
                    if let Value::Object(m) = &mut d.descriptor {
                        m.insert("confirm".into(), rec.summary());
                    }
                }
                confirm::Confirmed::Yes(None) => {}
                confirm::Confirmed::No { reason, descriptor } => {
                    return self
                        .finish(&c, OutcomeStatus::Discard, &reason, &descriptor)
                        .await;
                }
                confirm::Confirmed::Interrupted => {
                    let detail = LoopCause::Interrupted.descriptor(json!({"step": "confirm"}));
                    return self
                        .finish(
                            &c,
                            OutcomeStatus::Crash,
                            LoopCause::Interrupted.as_str(),
                            &detail,
                        )
                        .await;
                }
            }
            if self.promote(&head, &c, &d).await? {
                return Ok(OutcomeStatus::Keep);
            }
            // Stale: measured against a head that has moved.
            let new_head = self.sync_head().await?;
            if let Some(finished) = self.rebase_and_evaluate(&mut c, &new_head).await? {
                return Ok(finished);
            }
            head = new_head;
            let mut ds = self.decide(&head, std::slice::from_ref(&c)).await?;
            match ds.pop() {
                Some(Ok(nd)) if nd.verdict == Verdict::Keep => d = nd,
                Some(other) => return Box::pin(self.apply(&head, c, other)).await,
                None => return Err(LoopError::NoDecision { run_id: c.run_id }),
            }
        }
        self.finish(
            &c,
            OutcomeStatus::Discard,
            "stale: the head kept moving",
            &LoopCause::Stale.descriptor(json!({})),
        )
        .await
    }

    /// Rebases `c` onto `new_head` (its commit before the rebase stays
    /// under a ref of its own) and evaluates it there. `None` when it is
    /// ready to be decided again, else the status it finished with: a
    /// discard when the rebase conflicts, a crash when the evaluation fails.
    async fn rebase_and_evaluate(
        &self,
        c: &mut Cand,
        new_head: &Head,
    ) -> Result<Option<OutcomeStatus>, LoopError> {
        self.emit(Event::Step {
            run_id: c.run_id.clone(),
            step: "rebasing".into(),
        });
        let (old_base, commit, onto) = (c.base.clone(), c.commit.clone(), new_head.commit.clone());
        let before = format!("{}.before-rebase-{}", c.run_id, short_commit(&onto));
        let (keep_ref, pre_ref) = (self.candidate_ref(&c.run_id), self.candidate_ref(&before));
        let rebased = self
            .git(move |g| {
                g.set_ref(&pre_ref, &commit)?;
                let r = g.rebase_commit(&old_base, &commit, &onto)?;
                if let Some(r) = &r {
                    g.set_ref(&keep_ref, r)?;
                }
                Ok(r)
            })
            .await?;
        c.base = new_head.commit.clone();
        let Some(rebased) = rebased else {
            let reason = format!(
                "stale: conflicts with the new head {}",
                short_commit(&new_head.commit)
            );
            let detail = LoopCause::Stale.descriptor(json!({"head": new_head.commit}));
            return self
                .finish(c, OutcomeStatus::Discard, &reason, &detail)
                .await
                .map(Some);
        };
        c.commit = rebased;
        let commit = c.commit.clone();
        self.update_run(
            &format!("recording the rebased candidate of run {}", c.run_id),
            c.entity,
            |r| {
                r.commit_hash = commit.clone();
                r.set_status(RunStatus::Running);
            },
            None,
        )
        .await?;
        self.emit(Event::Step {
            run_id: c.run_id.clone(),
            step: AttemptState::Evaluating.as_str().into(),
        });
        match self
            .evaluate(&c.run_id, &c.run_id, &c.commit, 0, REBASED_STEP, None)
            .await?
        {
            Ok(_) => Ok(None),
            Err(crash) => {
                let reason = format!("after rebase: {}", crash.reason);
                self.finish(c, OutcomeStatus::Crash, &reason, &crash.detail)
                    .await
                    .map(Some)
            }
        }
    }

    /// The promotion protocol (see the module doc). False when the head is
    /// no longer `head` (nothing is changed then, except the intent which
    /// the caller overwrites).
    pub(super) async fn promote(
        &self,
        head: &Head,
        c: &Cand,
        d: &Decision,
    ) -> Result<bool, LoopError> {
        let current = self.head().await;
        let branch = self.cfg.branch.clone();
        let tip = self.git(move |g| g.branch_tip(&branch)).await?;
        if current.as_ref().map(|h| &h.commit) != Some(&head.commit)
            || tip.as_deref() != Some(&head.commit)
        {
            return Ok(false);
        }
        let outcome = self.outcome(
            &c.run_id,
            OutcomeStatus::Keep,
            &d.reason,
            &d.descriptor,
            &head.commit,
        );
        let commit = c.commit.clone();
        self.update_run(
            &format!("recording the decision to keep run {}", c.run_id),
            c.entity,
            |r| {
                r.set_status(RunStatus::Stopping);
                r.commit_hash = commit.clone();
            },
            Some(outcome),
        )
        .await?;
        self.crash_point("after-intent");
        if !self.move_branch(&head.commit, &c.commit).await? {
            return Ok(false);
        }
        self.crash_point("after-ref");
        self.complete_promotion(c.entity, &c.run_id, &c.commit, &d.descriptor)
            .await?;
        self.finished_event(&c.run_id, &c.commit, OutcomeStatus::Keep, &d.reason)
            .await;
        Ok(true)
    }

    /// Compare-and-swap of the branch from `old` to `new`, a fast-forward
    /// only; a checkout of the branch follows when clean (see
    /// [`follow_checkout`]). False when the branch was no longer at `old`.
    pub(super) async fn move_branch(&self, old: &str, new: &str) -> Result<bool, LoopError> {
        let (branch, old_s, new_s) = (self.cfg.branch.clone(), old.to_string(), new.to_string());
        let (o, n) = (old_s.clone(), new_s.clone());
        if !self.git(move |g| g.is_ancestor(&o, &n)).await? {
            return Err(LoopError::NotFastForward {
                branch,
                old: old_s,
                new: new_s,
            });
        }
        let refname = format!("refs/heads/{branch}");
        let (o, n) = (old_s.clone(), new_s.clone());
        let moved = self
            .git(move |g| g.compare_and_swap(&refname, &n, Some(&o), "autoresearch: keep"))
            .await?;
        if !moved {
            return Ok(false);
        }
        self.crash_point("after-branch");
        let warning = self
            .git(move |g| follow_checkout(g, &branch, &old_s, &new_s))
            .await?;
        if let Some(w) = warning {
            self.warn(w);
        }
        Ok(true)
    }

    /// After a kill between the branch update and its checkout's: brings
    /// the checkout from `old` to `new` if it still is exactly `old`.
    async fn repair_checkout(&self, old: &str, new: &str) -> Result<(), LoopError> {
        let (branch, o, n) = (self.cfg.branch.clone(), old.to_string(), new.to_string());
        let warning = self
            .git(move |g| {
                if g.branch_tip(&branch)?.as_deref() != Some(n.as_str()) {
                    return Ok(None);
                }
                follow_checkout(g, &branch, &o, &n)
            })
            .await?;
        if let Some(w) = warning {
            self.warn(w);
        }
        Ok(())
    }

    pub(super) async fn complete_promotion(
        &self,
        entity: EntityId,
        run_id: &str,
        commit: &str,
        descriptor: &Value,
    ) -> Result<(), LoopError> {
        let head = BranchHead::new(&self.cfg.experiment, commit, run_id, descriptor, now_ms());
        let exp = self.cfg.experiment.clone();
        let (commit, finished_at) = (commit.to_string(), now_ms());
        // Staged: the branch already points at the candidate, and a
        // controller killed before the next durable write leaves the intent,
        // which `recover` completes the same way.
        self.ledger
            .stage(&format!("advancing the head to run {run_id}"), move |w| {
                let mut r = run_of(w, entity)?;
                r.set_status(RunStatus::Stopped);
                r.finished_at_ms = finished_at;
                r.commit_hash = commit.clone();
                w.insert(entity, &r)?;
                match w.branch_head(&exp) {
                    Some((e, _)) => w.insert(e, &head)?,
                    None => drop(w.spawn_with(&head)?),
                }
                Ok(())
            })
            .await
    }

    // --- Recovery and pending decisions ---------------------------------

    /// Finishes what a killed controller left, by the state each run in
    /// flight was recorded in ([`AttemptState`]): a run `promoting` has its
    /// promotion completed (or is discarded when the branch moved
    /// meanwhile, see the module doc); a run whose evaluations a scheduler
    /// finished meanwhile is carried on from them (see `adopted`), one
    /// whose proposer job it finished from its candidate (see
    /// `adopted_proposal`); any
    /// other run in flight becomes crashed ("interrupted"). Their
    /// checkouts are released. Returns the run ids it touched.
    pub async fn recover(&self) -> Result<Vec<String>, LoopError> {
        self.ledger.refresh().await?;
        let exp = self.cfg.experiment.clone();
        let in_flight: Vec<(AttemptState, Attempt)> = self
            .ledger
            .read(|w| {
                attempts(w, &exp)
                    .into_iter()
                    .map(|a| {
                        let confirmation = w.get::<autoresearch_core::Confirmation>(a.entity);
                        let state = AttemptState::of(&a.run, a.outcome.as_ref())
                            .with_confirmation(&a.run, confirmation.as_ref());
                        (state, a)
                    })
                    .filter(|(state, _)| state.is_in_flight())
                    .collect()
            })
            .await;
        // Jobs it left with a scheduler are waited for or cancelled (never
        // submitted again) and their ends recorded.
        let runs: Vec<String> = in_flight
            .iter()
            .map(|(_, a)| a.run.run_id.clone())
            .collect();
        let adopted = self.adopt_jobs().await?;
        // The head's samples of itself among them (calibration,
        // re-measurement: its run is finished) are recorded under it.
        self.record_head_samples(adopted, &runs).await?;
        // Evaluations among them that ended are read, before the killed
        // controller's checkouts (where an output file may be) go.
        let mut recovered = Vec::with_capacity(in_flight.len());
        for (state, a) in in_flight {
            let mut cand = self.recovered_candidate(&a).await?;
            let (adopted, proposal) = match state {
                AttemptState::Proposing | AttemptState::Evaluating => (
                    Some(self.adopted_evaluations(&a, &mut cand).await?),
                    self.adopted_proposal(&a, &cand).await?,
                ),
                _ => (None, None),
            };
            let adopted = adopted.filter(|e| !e.is_empty());
            recovered.push((state, a, cand, adopted, proposal));
        }
        // Checkouts and processes a killed controller left (a job's
        // `setsid` daemon among them) go before anything runs, once its
        // scheduler jobs, which may use them, have ended.
        log_release("of a killed controller", self.executor.close().await);
        // Every adopted sample is recorded before any run is decided (one
        // run's checkout may have measured the incumbent for all).
        let mut carried = Vec::with_capacity(recovered.len());
        for (state, a, mut cand, adopted, proposal) in recovered {
            let first_failed = match adopted {
                Some(e) => Some(self.record_adopted(&a, &mut cand, e).await?),
                None => None,
            };
            carried.push((state, a, cand, first_failed, proposal));
        }
        let mut touched = Vec::new();
        for (state, a, cand, carried_on, proposal) in carried {
            let run_id = a.run.run_id.clone();
            match (state, &a.outcome) {
                (AttemptState::Promoting, Some(o)) => self.resume_promotion(&cand, o).await?,
                (AttemptState::Confirming, _) => self.interrupted_confirmation(&cand).await?,
                _ if carried_on.is_some() => {
                    self.carry_on(cand, carried_on.flatten()).await?;
                }
                _ if let Some(p) = proposal => self.carry_on_proposal(cand, p).await?,
                _ => {
                    self.finish(
                        &cand,
                        OutcomeStatus::Crash,
                        LoopCause::Interrupted.as_str(),
                        &LoopCause::Interrupted.descriptor(json!({})),
                    )
                    .await?;
                }
            }
            log_release(&run_id, self.executor.release(&run_id).await);
            touched.push(run_id);
        }
        // What recovery decided is durable before anything else happens.
        self.ledger.flush().await?;
        Ok(touched)
    }

    /// The candidate of a run found in flight: its recorded commit, or the
    /// one under its ref when it was made but not yet recorded.
    async fn recovered_candidate(&self, a: &Attempt) -> Result<Cand, LoopError> {
        let run_id = a.run.run_id.clone();
        let mut cand = Cand {
            run_id: run_id.clone(),
            entity: a.entity,
            base: a
                .outcome
                .as_ref()
                .map(|o| o.base_commit.clone())
                .unwrap_or_default(),
            commit: a.run.commit_hash.clone(),
            workspace: String::new(),
            left_out: Vec::new(),
            proposer_cost: None,
            description: String::new(),
        };
        if cand.commit.is_empty() {
            let refname = self.candidate_ref(&run_id);
            cand.commit = self
                .git(move |g| g.resolve(&refname))
                .await?
                .unwrap_or_default();
        }
        Ok(cand)
    }

    /// Steps 2 and 3 of the promotion protocol for a run whose intent
    /// (`o`, a keep) is recorded: done if the branch is still at the base
    /// (or already at the candidate) and the head is the base; only the tick
    /// if the head already is the candidate; otherwise the keep is void.
    async fn resume_promotion(&self, cand: &Cand, o: &Outcome) -> Result<(), LoopError> {
        let head = self.head().await;
        let branch = self.cfg.branch.clone();
        let tip = self.git(move |g| g.branch_tip(&branch)).await?;
        let descriptor: Value = o.descriptor().unwrap_or(json!({}));
        let head_is_base = head.as_ref().is_some_and(|h| h.commit == o.base_commit);
        let already_moved = head_is_base && tip.as_deref() == Some(cand.commit.as_str());
        let promoted = already_moved
            || (head_is_base
                && tip.as_deref() == Some(o.base_commit.as_str())
                && self.move_branch(&o.base_commit, &cand.commit).await?);
        if already_moved {
            self.repair_checkout(&o.base_commit, &cand.commit).await?;
        }
        if promoted {
            self.complete_promotion(cand.entity, &cand.run_id, &cand.commit, &descriptor)
                .await?;
            self.finished_event(&cand.run_id, &cand.commit, OutcomeStatus::Keep, &o.reason)
                .await;
        } else if head.as_ref().is_some_and(|h| h.commit == cand.commit) {
            self.complete_promotion(cand.entity, &cand.run_id, &cand.commit, &descriptor)
                .await?;
        } else {
            self.finish(
                cand,
                OutcomeStatus::Discard,
                "interrupted before promotion; the branch moved meanwhile",
                &LoopCause::Interrupted.descriptor(json!({})),
            )
            .await?;
        }
        Ok(())
    }
}

/// Makes the checkout of `branch` (if it is checked out in `g`) follow the
/// branch from `old` to `new`, when the index and the files are exactly
/// `old` (nothing staged, nothing modified; untracked files do not
/// count): one `read-tree -m -u`, which git applies file by file under
/// the index lock. Otherwise the checkout is left alone and the warning
/// says how to bring it up to date keeping the local changes.
fn follow_checkout(
    g: &Git,
    branch: &str,
    old: &str,
    new: &str,
) -> Result<Option<String>, GitError> {
    if g.is_bare()? || g.checked_out_branch()?.as_deref() != Some(branch) {
        return Ok(None);
    }
    let index_is = |c: &str| {
        g.output(&["diff-index", "--cached", "--quiet", c, "--"], &[])
            .map(|o| o.status.success())
    };
    // The files' stat data first (a `touch` or a copy changes it, not the
    // content): what `git status` does before it compares.
    let _ = g.output(&["update-index", "-q", "--refresh"], &[]);
    let files_are_index = g.output(&["diff-files", "--quiet"], &[])?;
    if index_is(new)? && files_are_index.status.success() {
        return Ok(None);
    }
    let index_is_old = index_is(old)?;
    if !index_is_old || !files_are_index.status.success() {
        // The commit the checkout's index is at: `old`, or, when earlier
        // keeps left the checkout behind too, the first of `old`'s
        // ancestors it matches (the command must start from there).
        let mut base = None;
        if index_is_old {
            base = Some(old.to_string());
        } else if let Ok(list) = g.run(&["rev-list", "--first-parent", "--max-count=200", old]) {
            for c in list.lines().skip(1) {
                if index_is(c)? {
                    base = Some(c.to_string());
                    break;
                }
            }
        }
        let how = match base {
            Some(b) => format!(
                "run `git -C {} read-tree -m -u {b} {new}` to bring it up to date keeping your changes (it refuses, changing nothing, where they overlap the kept changes)",
                g.dir.display()
            ),
            None => "its index matches no commit of the branch: commit or stash your changes, then `git reset --keep` to the branch".to_string(),
        };
        return Ok(Some(format!(
            "branch {branch} advanced to {} but its checkout in {} has local changes: left alone; {how}; until then, git status shows the kept changes as staged reverts: do not commit them",
            short_commit(new),
            g.dir.display()
        )));
    }
    let how = format!(
        "run `git -C {} read-tree -m -u {old} {new}` to bring it up to date keeping your changes (it refuses, changing nothing, where they overlap the kept change)",
        g.dir.display()
    );
    Ok(g.advance_checkout(old, new).err().map(|e| {
        format!("branch {branch} advanced but its checkout could not follow ({e}); {how}")
    }))
}
