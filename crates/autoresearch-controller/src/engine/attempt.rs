use super::*;

impl Controller {
    /// Updates the run on `entity` with `edit`, and optionally sets its Outcome, in one tick.
    pub(super) async fn update_run(
        &self,
        doing: &str,
        entity: EntityId,
        edit: impl Fn(&mut Run),
        outcome: Option<Outcome>,
    ) -> Result<Run, LoopError> {
        self.ledger
            .tick(doing, |w| {
                let mut run = run_of(w, entity)?;
                edit(&mut run);
                w.insert(entity, &run)?;
                if let Some(o) = &outcome {
                    w.insert(entity, o)?;
                }
                Ok(run)
            })
            .await
    }

    // --- Jobs -----------------------------------------------------------

    pub(super) fn limits(&self, timeout: Duration) -> Limits {
        Limits {
            timeout,
            output_limit: self.cfg.output_limit,
            kill_grace: self.cfg.kill_grace,
        }
    }

    pub(super) fn tail(&self, s: &str) -> String {
        let limit = 2048.min(self.cfg.output_limit);
        let start = s.len().saturating_sub(limit);
        let start = (start..=s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s[start..].to_string()
    }

    pub(super) fn crash_of(&self, step: &str, what: &str, report: &JobReport) -> Crash {
        Crash {
            reason: format!("{step}: {what}"),
            detail: json!({
                "step": step,
                LoopCause::KEY: what,
                "exit": report.status,
                "stdout_tail": self.tail(&report.stdout_tail),
                "stderr_tail": self.tail(&report.stderr_tail),
                "stdout_log": report.stdout_log,
                "stderr_log": report.stderr_log,
            }),
        }
    }

    /// Launches one candidate against `head` and takes it through the
    /// attempt's states up to its first evaluation: booting, proposing (the
    /// proposer's job), the candidate checked (a change, no protected path),
    /// evaluating (sample 0). Returns the candidate for the decision, or the
    /// status it finished with on the way.
    pub(super) async fn attempt(&self, head: &Head, run_id: String) -> Result<Prepared, LoopError> {
        let (mut cand, history) = self.start_attempt(head, &run_id).await?;
        let report = match self.propose(head, &mut cand, &history).await? {
            Ok(report) => report,
            Err(finished) => return Ok(Prepared::Done(finished)),
        };
        if let Some(finished) = self.check_candidate(head, &mut cand, &report).await? {
            return Ok(Prepared::Done(finished));
        }
        self.emit(Event::Step {
            run_id: run_id.clone(),
            step: AttemptState::Evaluating.as_str().into(),
        });
        let evaluated = self
            .evaluate(
                &run_id,
                &run_id,
                &cand.commit,
                0,
                CANDIDATE_STEP,
                Some(&cand),
            )
            .await?;
        cand.workspace.clear();
        cand.proposer_cost = None;
        cand.description.clear();
        match evaluated {
            Ok(_) => Ok(Prepared::Evaluated(cand)),
            Err(c) => self
                .finish(&cand, OutcomeStatus::Crash, &c.reason, &c.detail)
                .await
                .map(Prepared::Done),
        }
    }

    /// Booting: records the run (two ticks, `booting` then `running`, made
    /// durable in one write with whatever the previous run staged, before the
    /// job starts: a controller killed from then on leaves a run in flight
    /// that `recover` marks interrupted) while the history file (this run
    /// last, as running) is written. Returns the candidate-to-be and the
    /// history file's path.
    async fn start_attempt(&self, head: &Head, run_id: &str) -> Result<(Cand, PathBuf), LoopError> {
        let run = self.new_run(run_id, &self.cfg.propose_command);
        let recording = format!("recording run {run_id}");
        let (history, entity) = tokio::join!(
            self.write_history(Some(&run)),
            self.ledger.tick(&recording, |w| {
                let entity = w.spawn_with(&run)?;
                w.stage()?;
                let mut running = run.clone();
                running.set_status(RunStatus::Running);
                w.insert(entity, &running)?;
                Ok(entity)
            }),
        );
        let cand = Cand {
            run_id: run_id.to_string(),
            entity: entity?,
            base: head.commit.clone(),
            commit: String::new(),
            workspace: String::new(),
            left_out: Vec::new(),
            proposer_cost: None,
            description: String::new(),
        };
        let history = history?;
        self.emit(Event::Started {
            run_id: run_id.to_string(),
            base: head.commit.clone(),
        });
        self.emit(Event::Step {
            run_id: run_id.to_string(),
            step: AttemptState::Proposing.as_str().into(),
        });
        Ok((cand, history))
    }

    /// Proposing: runs the proposer on a checkout of `head`. Its report, or
    /// the status the run finished with (interrupted, proposer failed).
    async fn propose(
        &self,
        head: &Head,
        cand: &mut Cand,
        history: &std::path::Path,
    ) -> Result<Result<Box<JobReport>, OutcomeStatus>, LoopError> {
        let mut env = BTreeMap::new();
        env.insert("AUTORESEARCH_BASE_COMMIT".to_string(), head.commit.clone());
        env.insert(
            "AUTORESEARCH_RESULTS".to_string(),
            history.display().to_string(),
        );
        env.insert(
            "AUTORESEARCH_EXPERIMENT".to_string(),
            self.cfg.experiment.clone(),
        );
        env.insert("AUTORESEARCH_BRANCH".to_string(), self.cfg.branch.clone());
        let job = self.propose_job(&cand.run_id, &head.commit, env);
        let report = match self.exec(job).await? {
            JobEnd::Report(r) => {
                cand.proposer_cost = Some(ProposerCost::of(&r));
                r
            }
            JobEnd::Interrupted => {
                let detail = LoopCause::Interrupted.descriptor(json!({"step": "propose"}));
                let cause = LoopCause::Interrupted.as_str();
                return Ok(Err(self
                    .finish(cand, OutcomeStatus::Crash, cause, &detail)
                    .await?));
            }
        };
        if !report.status.success() {
            let c = self.crash_of("propose", &format!("proposer {}", report.status), &report);
            return Ok(Err(self
                .finish(cand, OutcomeStatus::Crash, &c.reason, &c.detail)
                .await?));
        }
        Ok(Ok(report))
    }

    /// The proposer's job for run `run_id` on `base`, with `env`.
    pub(super) fn propose_job(
        &self,
        run_id: &str,
        base: &str,
        env: BTreeMap<String, String>,
    ) -> Job {
        Job {
            run_id: run_id.to_string(),
            step: PROPOSE_STEP.into(),
            repo: self.cfg.repo.display().to_string(),
            commit: base.to_string(),
            workdir: self.cfg.workdir.clone(),
            command: self.cfg.propose_command.clone(),
            env,
            limits: self.limits(self.cfg.propose_timeout),
            output: Default::default(),
            commit_changes: true,
            // Read for the cost metrics it prints (`tokens: 1234`, `cost: 0.12`).
            metrics: Some(MetricsFormat::Lines.spec(&[])),
            held_out: false,
        }
    }

    /// The proposer's commit as the candidate: it must change something,
    /// touch no protected path (every kind of change counts) and add
    /// nothing the limits refuse. The ref keeps the candidate reachable
    /// before anything else refers to it; the ledger records it with its
    /// first result or its decision (a run interrupted before that gets it
    /// back from the ref in `recover`). `None` when the candidate goes on
    /// to evaluation, else the status it finished with.
    pub(super) async fn check_candidate(
        &self,
        head: &Head,
        cand: &mut Cand,
        report: &JobReport,
    ) -> Result<Option<OutcomeStatus>, LoopError> {
        if report.commit.is_empty() || report.commit == head.commit {
            // No commit to carry it: what the proposer printed about its idea.
            cand.description = description_line(&report.stdout_tail).unwrap_or_default();
            return self.finish_no_change(cand).await.map(Some);
        }
        cand.commit = report.commit.clone();
        cand.workspace = report.workspace.clone();
        cand.left_out = report.left_out.clone();
        let (refname, commit) = (self.candidate_ref(&cand.run_id), cand.commit.clone());
        let base = head.commit.clone();
        let (changes, message) = self
            .git(move |g| {
                g.create_ref(&refname, &commit)?;
                let message = g.run(&["log", "-1", "--format=%B", &commit])?;
                Ok((g.changes(&base, &commit)?, message))
            })
            .await?;
        // The executor made the proposer's description the commit's message.
        cand.description = clean_description(&message).unwrap_or_default();
        self.crash_point("after-candidate");
        if changes.is_empty() {
            return self.finish_no_change(cand).await.map(Some);
        }
        let protected = changes.iter().find_map(|c| {
            let pattern = self.protection.matching(&c.path)?;
            Some((c.path.clone(), pattern.to_string()))
        });
        let refused = match protected {
            Some((path, pattern)) => Some((
                format!("touches protected path {path}"),
                LoopCause::ProtectedPath,
                json!({"path": path, "pattern": pattern}),
            )),
            None => self.refusal(&changes).await?,
        };
        if let Some((reason, cause, extra)) = refused {
            let mut detail = cause.descriptor(extra);
            detail["left_out"] = json!(cand.left_out);
            return self
                .finish(cand, OutcomeStatus::Discard, &reason, &detail)
                .await
                .map(Some);
        }
        Ok(None)
    }

    /// What the limits refuse in `changes`: a gitlink (unless allowed), a
    /// file over the size limit. The reason, the cause and its detail.
    async fn refusal(
        &self,
        changes: &[crate::git::Change],
    ) -> Result<Option<(String, LoopCause, Value)>, LoopError> {
        if !self.cfg.allow_gitlinks
            && let Some(c) = changes.iter().find(|c| c.is_gitlink())
        {
            let reason = format!(
                "refused: adds a nested repository or gitlink at {} ([propose] allow_gitlinks)",
                c.path
            );
            return Ok(Some((
                reason,
                LoopCause::Refused,
                json!({"path": c.path, "gitlink": true}),
            )));
        }
        let files: Vec<&crate::git::Change> = changes
            .iter()
            .filter(|c| c.status != 'D' && !c.is_gitlink())
            .collect();
        let oids: Vec<String> = files.iter().map(|c| c.new_blob.clone()).collect();
        let sizes = self.git(move |g| g.object_sizes(&oids)).await?;
        let limit = self.cfg.max_file_size;
        Ok(files
            .iter()
            .zip(sizes)
            .find(|(_, s)| *s > limit)
            .map(|(c, size)| {
                (
                    format!(
                        "refused: {} is {size} bytes, over [propose] max_file_size ({limit})",
                        c.path
                    ),
                    LoopCause::Refused,
                    json!({"path": c.path, "size": size, "limit": limit}),
                )
            }))
    }

    async fn finish_no_change(&self, cand: &Cand) -> Result<OutcomeStatus, LoopError> {
        let detail = LoopCause::NoChange.descriptor(json!({}));
        self.finish(
            cand,
            OutcomeStatus::Discard,
            LoopCause::NoChange.as_str(),
            &detail,
        )
        .await
    }
}
