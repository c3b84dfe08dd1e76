use super::*;

impl Controller {
    /// Writes the proposer's history file: every attempt of the experiment,
    /// and `new` (a run about to be recorded) as the last one if the world
    /// does not hold it yet. Lines of decided attempts are kept from one
    /// call to the next, so a long experiment costs a walk over its Runs
    /// (no copies) plus the few attempts still open, not a rebuild of every
    /// attempt. Only the ledger read holds the world; rendering and writing
    /// happen on a blocking thread, alongside a tick.
    pub(super) async fn write_history(&self, new: Option<&Run>) -> Result<PathBuf, LoopError> {
        /// Beyond this many attempts not cached, one grouped pass over all
        /// Results beats looking each one up.
        const LOOKUPS: usize = 16;
        let exp = self.cfg.experiment.clone();
        let new_id = new.map(|r| r.run_id.clone());
        let (mut open, new_seen) = self
            .ledger
            .read(|w| {
                let mut todo = Vec::new();
                {
                    let cached = self.history_rows.lock();
                    let cached = cached.as_deref();
                    let mut q = w.hecs().query::<(&EntityId, &Run)>();
                    for (id, run) in q.iter() {
                        let known = cached.is_ok_and(|c| c.contains_key(id));
                        if run.experiment_name == exp && !known {
                            todo.push((*id, run.clone()));
                        }
                    }
                }
                let new_seen = new_id
                    .as_ref()
                    .is_some_and(|n| todo.iter().any(|(_, r)| &r.run_id == n));
                let found: Vec<Attempt> = if todo.len() > LOOKUPS {
                    let wanted: std::collections::HashSet<EntityId> =
                        todo.iter().map(|(id, _)| *id).collect();
                    attempts(w, &exp)
                        .into_iter()
                        .filter(|a| wanted.contains(&a.entity))
                        .collect()
                } else {
                    todo.into_iter()
                        .map(|(entity, run)| Attempt::of(w, entity, run))
                        .collect()
                };
                let mut open = Vec::new();
                let mut done = Vec::new();
                for a in &found {
                    let row = (a.entity, history::Row::of(a));
                    if history::Row::is_final(a) {
                        done.push(row);
                    } else {
                        open.push(row);
                    }
                }
                if let Ok(mut c) = self.history_rows.lock() {
                    c.extend(done);
                }
                (open, new_seen)
            })
            .await;
        if let Some(run) = new.filter(|_| !new_seen) {
            let a = Attempt {
                entity: EntityId(u64::MAX),
                run: run.clone(),
                results: Vec::new(),
                outcome: None,
                description: None,
            };
            open.push((a.entity, history::Row::of(&a)));
        }
        let path = self.cfg.history_path();
        let (p, cache) = (path.clone(), self.history_rows.clone());
        let metric = self.cfg.primary_metric.clone();
        blocking(move || {
            let cached = cache
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            let mut rows: Vec<(EntityId, &history::Row)> =
                cached.iter().map(|(id, r)| (*id, r)).collect();
            rows.extend(open.iter().map(|(id, r)| (*id, r)));
            rows.sort_by_key(|(id, _)| *id);
            let text = history::render_rows(rows.iter().map(|(_, r)| *r), metric.as_deref());
            drop(cached);
            history::write(&p, &text)
        })
        .await?
        .map_err(|source| LoopError::History {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}
