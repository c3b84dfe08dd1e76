//! Evaluations: one job of the evaluator on a commit, its metrics recorded
//! as a Result; the repeated samples a comparator asks for go out together
//! ([`Controller::evaluate_samples`]).

use super::*;

impl Controller {
    /// The evaluator's job on `commit` in the checkout of run `workspace`,
    /// as sample `sample` of the commit, under the step name `step`.
    pub(super) fn eval_job(&self, workspace: &str, commit: &str, sample: u32, step: &str) -> Job {
        let mut env = BTreeMap::new();
        env.insert("AUTORESEARCH_SAMPLE".to_string(), sample.to_string());
        env.insert(
            "AUTORESEARCH_EXPERIMENT".to_string(),
            self.cfg.experiment.clone(),
        );
        env.insert("AUTORESEARCH_COMMIT".to_string(), commit.to_string());
        Job {
            run_id: workspace.to_string(),
            step: step.to_string(),
            repo: self.cfg.repo.display().to_string(),
            commit: commit.to_string(),
            workdir: self.cfg.workdir.clone(),
            command: self.cfg.evaluate_command.clone(),
            env,
            limits: self.limits(self.cfg.evaluate_timeout),
            output: self.cfg.metrics.source(),
            commit_changes: false,
            metrics: Some(self.cfg.metrics.spec(&self.cfg.require)),
            held_out: false,
        }
    }

    /// Evaluates `commit` once, as sample `sample`, in the checkout of
    /// `workspace` (`step` [`CANDIDATE_STEP`] marks a candidate's sample,
    /// which a comparator may leave out once the commit is the incumbent);
    /// records a Result under `owner`, and with it (same tick) the
    /// candidate `cand` when given. The metrics, or why the evaluation
    /// counts as a crash.
    pub(super) async fn evaluate(
        &self,
        owner: &str,
        workspace: &str,
        commit: &str,
        sample: u32,
        step: &str,
        cand: Option<&Cand>,
    ) -> Result<Result<Map<String, Value>, Crash>, LoopError> {
        let name = self.job_steps(workspace, step, 1).await.remove(0);
        let job = self.eval_job(workspace, commit, sample, &name);
        match self.exec(job).await? {
            JobEnd::Report(report) => {
                self.record_eval(owner, commit, sample, step, *report, cand)
                    .await
            }
            JobEnd::Interrupted => Ok(Err(Crash {
                reason: LoopCause::Interrupted.to_string(),
                detail: LoopCause::Interrupted.descriptor(json!({"step": step})),
            })),
        }
    }

    /// Takes `count` more samples of `commit` at once (one batch of jobs,
    /// [`Controller::exec_batch`]: in parallel where the executor can) in
    /// the checkout of `workspace`, numbered on from the samples `owner`
    /// has, and records each as [`Controller::evaluate`] does. A failing
    /// sample is recorded; an interrupted batch records nothing.
    pub(super) async fn evaluate_samples(
        &self,
        owner: &str,
        workspace: &str,
        commit: &str,
        count: u32,
        step: &str,
    ) -> Result<(), LoopError> {
        if count == 0 {
            return Ok(());
        }
        let first = self.sample_count(owner, commit).await;
        let names = self.job_steps(workspace, step, count).await;
        let jobs = names
            .iter()
            .zip(first..)
            .map(|(name, sample)| self.eval_job(workspace, commit, sample, name))
            .collect();
        let Some(reports) = self.exec_batch(jobs).await? else {
            return Ok(());
        };
        for (report, sample) in reports.into_iter().zip(first..) {
            let _failed_sample_is_recorded = self
                .record_eval(owner, commit, sample, step, report, None)
                .await?;
        }
        Ok(())
    }

    /// Records what an evaluation of `commit` (sample `sample`, taken as
    /// `step`) reported, as a Result under `owner` with its cost, and the
    /// candidate `cand` when given (same tick, staged). The metrics, or
    /// why the evaluation counts as a crash.
    pub(super) async fn record_eval(
        &self,
        owner: &str,
        commit: &str,
        sample: u32,
        step: &str,
        report: JobReport,
        cand: Option<&Cand>,
    ) -> Result<Result<Map<String, Value>, Crash>, LoopError> {
        let parsed = if !report.status.success() {
            Err(self.crash_of("evaluate", &format!("evaluator {}", report.status), &report))
        } else {
            // The executor's reading of the whole output; else the bounded
            // output it returned.
            let reading = report.metrics.clone().unwrap_or_else(|| {
                metrics::read_text(&self.cfg.metrics.spec(&self.cfg.require), &report.output)
            });
            match reading.check(&self.cfg.require) {
                Ok(()) => Ok(reading.into_outputs()),
                Err(e) => Err(self.crash_of("evaluate", &e.to_string(), &report)),
            }
        };
        let mut outputs = match &parsed {
            Ok(m) => m.clone(),
            Err(_) => Map::new(),
        };
        let meta = ResultMeta {
            commit: commit.to_string(),
            sample,
            exit_code: report.status.code(),
            status: Some(report.status.clone()),
            duration_ms: report.duration.as_millis() as u64,
            stdout_log: report.stdout_log.clone(),
            stderr_log: report.stderr_log.clone(),
            left_out: cand.map(|c| c.left_out.clone()).unwrap_or_default(),
            role: if step == CANDIDATE_STEP || step == REBASED_STEP {
                ResultMeta::CANDIDATE.to_string()
            } else {
                String::new()
            },
        };
        outputs.insert(EvalResult::META.into(), json!(meta));
        let result = EvalResult::new(owner, "evaluate", &Value::Object(outputs), now_ms());
        // Staged: the decision that reads it follows at once, and the next
        // job start or branch update makes both durable in one write.
        let cand = cand.map(|c| {
            let proposer = c.proposer_cost.clone();
            (
                c.entity,
                c.commit.clone(),
                c.workspace.clone(),
                proposer,
                c.description_record(),
            )
        });
        let owner_id = owner.to_string();
        self.ledger
            .stage(&format!("recording a result of run {owner}"), move |w| {
                let proposer = cand.as_ref().and_then(|c| c.3.as_ref());
                Self::charge_in(w, &owner_id, |cost| {
                    let evaluate = autoresearch_core::CostKind::Evaluate;
                    cost.charge(evaluate, cost::usage_of(&report), &[]);
                    if let Some(p) = proposer {
                        p.charge(cost);
                    }
                })?;
                if let Some((entity, commit, workspace, _, description)) = &cand {
                    let mut run = run_of(w, *entity)?;
                    run.commit_hash = commit.clone();
                    if !workspace.is_empty() {
                        run.workspace_path = workspace.clone();
                    }
                    w.insert(*entity, &run)?;
                    if let Some(d) = description {
                        w.insert(*entity, d)?;
                    }
                }
                w.spawn_with(&result).map(drop)
            })
            .await?;
        Ok(parsed)
    }
}
