//! Held-out confirmation (`[confirm]`): a candidate the comparator would
//! keep is measured once more by the confirm command, and so is the
//! incumbent when its confirm value is not stored yet; the candidate is
//! promoted only when its value does not regress beyond the tolerance.
//!
//! Its states are ticks: a [`Confirmation`] `running` on the candidate's
//! entity (durable before the job starts: the attempt is then
//! [`AttemptState::Confirming`], which `recover` finishes as interrupted),
//! then the verdict with the values, recorded with the decision it leads
//! to. The incumbent's reference value is stored on the incumbent's run
//! only once measured, so a kill during its measurement stores nothing.

use super::*;
use crate::config::ConfirmConfig;
use autoresearch_core::cost::CostKind;
use autoresearch_core::{ConfirmStatus, Confirmation};

/// What the confirmation of a candidate decided.
pub(super) enum Confirmed {
    /// Promote it: confirmed (its record, for the keep's descriptor), or
    /// no `[confirm]` is configured.
    Yes(Option<Box<Confirmation>>),
    /// Not confirmed: a discard with this reason and descriptor.
    No {
        /// One line for people.
        reason: String,
        /// The Outcome's descriptor (cause `not confirmed`).
        descriptor: Value,
    },
    /// A kill was requested during the confirmation.
    Interrupted,
}

/// One run of the confirm command.
enum Probe {
    Value(f64),
    Failed(String),
    Interrupted,
}

impl Controller {
    /// Confirms candidate `c`, which the comparator would keep with
    /// decision `d`, against `head` (see the module doc).
    pub(super) async fn confirm(
        &self,
        head: &Head,
        c: &Cand,
        d: &Decision,
    ) -> Result<Confirmed, LoopError> {
        let Some(cfg) = self.cfg.confirm.clone() else {
            return Ok(Confirmed::Yes(None));
        };
        let mut rec = Confirmation {
            run_id: c.run_id.clone(),
            commit: c.commit.clone(),
            status: ConfirmStatus::Running,
            command: cfg.command.clone(),
            metric: cfg.metric.clone(),
            direction: cfg.direction,
            incumbent_commit: head.commit.clone(),
            tolerance: cfg.tolerance,
            at_ms: now_ms(),
            ..Confirmation::default()
        };
        let running = rec.clone();
        let entity = c.entity;
        self.ledger
            .tick(
                &format!("recording the confirmation of run {}", c.run_id),
                move |w| w.insert(entity, &running),
            )
            .await?;
        self.crash_point("confirming");
        self.emit(Event::Step {
            run_id: c.run_id.clone(),
            step: AttemptState::Confirming.as_str().into(),
        });
        let incumbent = self.incumbent_confirm_value(head, c, &cfg).await?;
        let (probe, report) = self.probe(&c.commit, &c.run_id, &cfg, "confirm").await?;
        if let Some(r) = &report {
            rec.duration_ms = r.duration.as_millis() as u64;
            rec.stdout_log = r.stdout_log.clone();
            rec.stderr_log = r.stderr_log.clone();
        }
        let higher = match cfg.direction {
            autoresearch_core::compare::Direction::Maximize => "higher",
            _ => "lower",
        };
        let num = autoresearch_core::num::fmt_f64;
        // Each verdict has a summary for the Outcome's reason, which the
        // proposer reads in its history file (so it holds no held-out
        // value or output), and the details for the Confirmation.
        let verdict = match (probe, incumbent) {
            (Probe::Interrupted, _) | (_, Probe::Interrupted) => None,
            (Probe::Failed(why), _) => Some((
                ConfirmStatus::Failed,
                "the confirm command failed on the candidate".to_string(),
                why,
            )),
            (Probe::Value(v), Probe::Failed(why)) => {
                rec.value = Some(v);
                Some((
                    ConfirmStatus::Failed,
                    format!(
                        "the incumbent {} has no confirm value to hold it against",
                        short_commit(&head.commit)
                    ),
                    why,
                ))
            }
            (Probe::Value(v), Probe::Value(iv)) => {
                rec.value = Some(v);
                rec.incumbent_value = Some(iv);
                let ok = Confirmation::passes(cfg.direction, iv, v, cfg.tolerance);
                let how = format!(
                    "{} {} vs the incumbent's {} ({higher} is better, tolerance {})",
                    cfg.metric,
                    num(v),
                    num(iv),
                    num(cfg.tolerance)
                );
                Some(if ok {
                    (ConfirmStatus::Confirmed, "confirmed".to_string(), how)
                } else {
                    (
                        ConfirmStatus::Rejected,
                        "it regressed on the held-out data".to_string(),
                        how,
                    )
                })
            }
        };
        let Some((status, summary, details)) = verdict else {
            rec.status = ConfirmStatus::Interrupted;
            rec.reason = LoopCause::Interrupted.to_string();
            self.store_confirmation(c.entity, rec, &c.run_id, report)
                .await?;
            return Ok(Confirmed::Interrupted);
        };
        rec.status = status.clone();
        rec.reason = format!("{summary}: {details}");
        rec.at_ms = now_ms();
        let stored = rec.clone();
        self.store_confirmation(c.entity, stored, &c.run_id, report)
            .await?;
        if status == ConfirmStatus::Confirmed {
            return Ok(Confirmed::Yes(Some(Box::new(rec))));
        }
        let reason = format!(
            "{}: {summary}; the comparator would keep it ({})",
            LoopCause::NotConfirmed,
            d.reason
        );
        let descriptor = LoopCause::NotConfirmed.descriptor(json!({
            "confirm": rec.summary(),
            "comparator": {"reason": d.reason, "descriptor": d.descriptor},
        }));
        Ok(Confirmed::No { reason, descriptor })
    }

    /// Recovery of a run killed while confirming ([`AttemptState::Confirming`]):
    /// its confirmation is marked interrupted and the run crashed
    /// ("interrupted"), never promoted unconfirmed. The incumbent's value
    /// is stored only once measured, so nothing half-measured remains.
    pub(super) async fn interrupted_confirmation(&self, c: &Cand) -> Result<(), LoopError> {
        let entity = c.entity;
        self.ledger
            .stage(
                &format!("recording the interrupted confirmation of run {}", c.run_id),
                move |w| match w.get::<Confirmation>(entity) {
                    Some(mut rec) => {
                        rec.status = ConfirmStatus::Interrupted;
                        rec.reason = LoopCause::Interrupted.to_string();
                        rec.at_ms = now_ms();
                        w.insert(entity, &rec)
                    }
                    None => Ok(()),
                },
            )
            .await?;
        let detail = LoopCause::Interrupted.descriptor(json!({"step": "confirm"}));
        self.finish(
            c,
            OutcomeStatus::Crash,
            &format!(
                "{} during its held-out confirmation",
                LoopCause::Interrupted
            ),
            &detail,
        )
        .await?;
        Ok(())
    }

    /// The incumbent's confirm value: stored on its run when measured on
    /// its commit, else measured now (in the candidate's checkout) and
    /// stored, a failure included (a failure is measured again next time).
    async fn incumbent_confirm_value(
        &self,
        head: &Head,
        c: &Cand,
        cfg: &ConfirmConfig,
    ) -> Result<Probe, LoopError> {
        let _one_at_a_time = self.incumbent_lock.lock().await;
        let (rid, commit) = (head.run_id.clone(), head.commit.clone());
        let (command, metric) = (cfg.command.clone(), cfg.metric.clone());
        let found = self
            .ledger
            .read(move |w| {
                let (entity, _) = w.run_by_id(&rid)?;
                Some((entity, w.get::<Confirmation>(entity)))
            })
            .await;
        let Some((entity, stored)) = found else {
            return Ok(Probe::Failed(format!(
                "the incumbent's run {} is not in the ledger",
                head.run_id
            )));
        };
        if let Some(v) = stored
            .filter(|s| s.is_reference_for(&commit, &command, &metric))
            .and_then(|s| s.value)
        {
            return Ok(Probe::Value(v));
        }
        self.emit(Event::Step {
            run_id: c.run_id.clone(),
            step: format!(
                "confirming the incumbent {} first",
                short_commit(&head.commit)
            ),
        });
        let (probe, report) = self
            .probe(&head.commit, &c.run_id, cfg, "confirm-incumbent")
            .await?;
        let (status, value, reason) = match &probe {
            Probe::Value(v) => (
                ConfirmStatus::Measured,
                Some(*v),
                "the incumbent's reference value".to_string(),
            ),
            Probe::Failed(why) => (ConfirmStatus::Failed, None, why.clone()),
            Probe::Interrupted => return Ok(Probe::Interrupted),
        };
        let rec = Confirmation {
            run_id: head.run_id.clone(),
            commit: head.commit.clone(),
            status,
            command: cfg.command.clone(),
            metric: cfg.metric.clone(),
            direction: cfg.direction,
            value,
            tolerance: cfg.tolerance,
            reason,
            duration_ms: report.as_ref().map_or(0, |r| r.duration.as_millis() as u64),
            stdout_log: report
                .as_ref()
                .map(|r| r.stdout_log.clone())
                .unwrap_or_default(),
            stderr_log: report
                .as_ref()
                .map(|r| r.stderr_log.clone())
                .unwrap_or_default(),
            at_ms: now_ms(),
            ..Confirmation::default()
        };
        self.store_confirmation(entity, rec, &head.run_id, report)
            .await?;
        Ok(probe)
    }

    /// Stores `rec` on `entity` and charges the job to run `owner`, in one
    /// staged tick (the decision that follows makes it durable).
    async fn store_confirmation(
        &self,
        entity: EntityId,
        rec: Confirmation,
        owner: &str,
        report: Option<JobReport>,
    ) -> Result<(), LoopError> {
        let owner_id = owner.to_string();
        self.ledger
            .stage(
                &format!("recording the confirmation of run {owner}"),
                move |w| {
                    w.insert(entity, &rec)?;
                    match &report {
                        Some(r) => Self::charge_in(w, &owner_id, |cost| {
                            cost.charge(CostKind::Confirm, cost::usage_of(r), &[])
                        }),
                        None => Ok(()),
                    }
                },
            )
            .await
    }

    /// Runs the confirm command once on `commit`, in the checkout of
    /// `workspace`: its value, or why there is none.
    async fn probe(
        &self,
        commit: &str,
        workspace: &str,
        cfg: &ConfirmConfig,
        step: &str,
    ) -> Result<(Probe, Option<JobReport>), LoopError> {
        let mut env = BTreeMap::new();
        env.insert(
            "AUTORESEARCH_EXPERIMENT".to_string(),
            self.cfg.experiment.clone(),
        );
        env.insert("AUTORESEARCH_COMMIT".to_string(), commit.to_string());
        let required = vec![cfg.metric.clone()];
        let job = Job {
            run_id: workspace.to_string(),
            step: step.to_string(),
            repo: self.cfg.repo.display().to_string(),
            commit: commit.to_string(),
            workdir: self.cfg.workdir.clone(),
            command: cfg.command.clone(),
            env,
            limits: self.limits(cfg.timeout.0),
            output: cfg.metrics.source(),
            commit_changes: false,
            metrics: Some(cfg.metrics.spec(&required)),
            held_out: true,
        };
        let report = match self.exec(job).await? {
            JobEnd::Report(r) => *r,
            JobEnd::Interrupted => return Ok((Probe::Interrupted, None)),
        };
        if !report.status.success() {
            let why = format!("confirm command {}", report.status);
            return Ok((Probe::Failed(why), Some(report)));
        }
        let reading = report
            .metrics
            .clone()
            .unwrap_or_else(|| metrics::read_text(&cfg.metrics.spec(&required), &report.output));
        if let Err(e) = reading.check(&required) {
            return Ok((Probe::Failed(e.to_string()), Some(report)));
        }
        let value = reading.values.get(&cfg.metric).and_then(Value::as_f64);
        let probe = match value {
            Some(v) if v.is_finite() => Probe::Value(v),
            _ => Probe::Failed(format!("{} is not a finite number", cfg.metric)),
        };
        Ok((probe, Some(report)))
    }
}
