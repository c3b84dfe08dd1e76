//! The dashboard's view of a whole ledger: a live index per world and a
//! few past ticks.

use super::*;

/// The dashboard's view of a ledger: the live index of each world, kept in
/// step with the ledger on every read, and a few materialized past ticks.
pub struct LedgerView {
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    live: Mutex<HashMap<WorldId, Arc<RwLock<WorldIndex>>>>,
    past: Mutex<Vec<(WorldId, Tick, Arc<WorldIndex>)>>,
}

/// How many past-tick indexes are kept (time travel back and forth).
const PAST_KEPT: usize = 4;

impl LedgerView {
    /// A view of the ledger behind `storage`, decoding with `registry`.
    pub fn new(storage: Arc<dyn Storage>, registry: Arc<ComponentRegistry>) -> LedgerView {
        LedgerView {
            storage,
            registry,
            live: Mutex::new(HashMap::new()),
            past: Mutex::new(Vec::new()),
        }
    }

    /// The storage read.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The registry components are decoded with.
    pub fn registry(&self) -> &Arc<ComponentRegistry> {
        &self.registry
    }

    /// Every world, ordered by id. Cost: one catalogue read.
    pub async fn worlds(&self) -> Result<Vec<WorldInfo>, WebError> {
        self.storage
            .list_worlds()
            .await
            .map_err(|e| WebError::ledger("listing the worlds", e))
    }

    /// The world named `name`; `NotFound` when there is none.
    pub async fn world(&self, name: &str) -> Result<WorldInfo, WebError> {
        self.storage
            .find_world(name)
            .await
            .map_err(|e| WebError::ledger(format!("looking up world {name:?}"), e))?
            .ok_or_else(|| WebError::NotFound(format!("no world named {name:?} in the ledger")))
    }

    /// The live index of `world`, brought up to its head first. The first
    /// call for a world materializes its head (O(state)); later calls apply
    /// only the ticks appended since (O(new ticks)).
    pub async fn live(&self, world: &WorldInfo) -> Result<Arc<RwLock<WorldIndex>>, WebError> {
        let slot = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.entry(world.id)
                .or_insert_with(|| Arc::new(RwLock::new(WorldIndex::empty(world.clone()))))
                .clone()
        };
        let info = self
            .storage
            .world(world.id)
            .await
            .map_err(|e| WebError::ledger(format!("reading world {:?}", world.name), e))?;
        if slot.read().await.tick >= info.head {
            return Ok(slot);
        }
        let mut idx = slot.write().await;
        if idx.tick >= info.head {
            return Ok(slot.clone());
        }
        if idx.tick == Tick::ZERO {
            *idx = self.materialize(&info, info.head).await?;
        } else {
            let records =
                ledger::read_records(self.storage.as_ref(), info.id, idx.tick.next(), info.head)
                    .await
                    .map_err(|e| {
                        WebError::ledger(format!("reading the new ticks of {:?}", info.name), e)
                    })?;
            for r in &records {
                idx.apply(&self.registry, r)?;
            }
        }
        idx.info = info;
        drop(idx);
        Ok(slot)
    }

    /// The index of `world` as it was at `tick` (time travel), which must
    /// not be past the head (`BadRequest`). Cost: one materialization
    /// (snapshot plus replay) unless recently asked for.
    pub async fn at(&self, world: &WorldInfo, tick: Tick) -> Result<Arc<WorldIndex>, WebError> {
        if tick > world.head {
            return Err(WebError::BadRequest(format!(
                "tick {} is past the head of world {:?} (tick {})",
                tick.0, world.name, world.head.0
            )));
        }
        if let Some(hit) = self
            .past
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(w, t, _)| *w == world.id && *t == tick)
        {
            return Ok(hit.2.clone());
        }
        let idx = Arc::new(self.materialize(world, tick).await?);
        let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        past.push((world.id, tick, idx.clone()));
        if past.len() > PAST_KEPT {
            past.remove(0);
        }
        Ok(idx)
    }

    async fn materialize(&self, world: &WorldInfo, tick: Tick) -> Result<WorldIndex, WebError> {
        let state = ledger::state_at(self.storage.as_ref(), world.id, tick)
            .await
            .map_err(|e| {
                WebError::ledger(
                    format!("reading world {:?} at tick {}", world.name, tick.0),
                    e,
                )
            })?;
        // The last ticks' records, for the index's window of recent ticks
        // (and the time of `tick`).
        let recent = if tick == Tick::ZERO {
            Vec::new()
        } else {
            let from = Tick(tick.0.saturating_sub(RECENT_TICKS as u64 - 1).max(1));
            ledger::read_records(self.storage.as_ref(), world.id, from, tick)
                .await
                .map_err(|e| {
                    WebError::ledger(
                        format!(
                            "reading the last ticks of {:?} up to {}",
                            world.name, tick.0
                        ),
                        e,
                    )
                })?
        };
        let at_ms = recent.last().map_or(0, |r| r.at_ms);
        let info = world.clone();
        let registry = self.registry.clone();
        let mut idx =
            tokio::task::spawn_blocking(move || WorldIndex::from_state(info, &state, &registry))
                .await
                .map_err(|e| {
                    WebError::Internal(format!("indexing world {:?}: {e}", world.name))
                })??;
        idx.at_ms = at_ms;
        for r in &recent {
            idx.recent.push(r);
        }
        Ok(idx)
    }

    /// The run page's reads of `row` at `tick`: its full Result records and
    /// every tick that changed the run (with what it did), through the
    /// ledger's entity index. Each tick record is read once, so the cost is
    /// the size of the few ticks that touched the run, not the history.
    pub async fn run_detail(
        &self,
        world: &WorldInfo,
        idx: &WorldIndex,
        row: &RunRow,
    ) -> Result<(Vec<EvalResult>, Vec<(Tick, i64, String)>), WebError> {
        let tick = idx.tick;
        let mut records = Records {
            by_tick: HashMap::new(),
            recent: &idx.recent,
        };
        let mut results = Vec::new();
        for s in &row.samples {
            let mut value = None;
            for (_, _, change) in records.history(self, world, tick, s.entity).await? {
                match change {
                    Change::Set {
                        component,
                        value: v,
                        ..
                    } if component == "Result" => value = Some(v),
                    Change::Remove { component, .. } if component == "Result" => value = None,
                    Change::Despawn { .. } => value = None,
                    _ => {}
                }
            }
            if let Some(v) = value {
                results.push(
                    self.registry
                        .decode::<EvalResult>(world.id, &v)
                        .map_err(|e| {
                            WebError::ledger(format!("decoding Result {}", s.entity), e)
                        })?,
                );
            }
        }
        let mut ticks: Vec<(Tick, i64, String)> = Vec::new();
        for (t, at_ms, change) in records.history(self, world, tick, row.entity).await? {
            let what = match &change {
                Change::Spawn { .. } => "recorded".to_string(),
                Change::Set {
                    component, value, ..
                } if component == "Run" => self
                    .registry
                    .decode::<Run>(world.id, value)
                    .map(|r| format!("run {}", r.status))
                    .unwrap_or_else(|_| "run changed".into()),
                Change::Set {
                    component, value, ..
                } if component == "Outcome" => self
                    .registry
                    .decode::<Outcome>(world.id, value)
                    .map(|o| format!("decided {}", o.status))
                    .unwrap_or_else(|_| "decided".into()),
                Change::Set { component, .. } => format!("{component} set"),
                Change::Remove { component, .. } => format!("{component} removed"),
                Change::Despawn { .. } => "removed".to_string(),
            };
            match ticks.last_mut() {
                Some(last) if last.0 == t => {
                    last.2.push_str(", ");
                    last.2.push_str(&what);
                }
                _ => ticks.push((t, at_ms, what)),
            }
        }
        Ok((results, ticks))
    }
}

/// Tick records read for one page, each read (and decoded) once.
struct Records<'a> {
    by_tick: HashMap<(WorldId, Tick), Arc<TickRecord>>,
    /// The index's window of recent ticks: the store is asked only about
    /// the ticks before it.
    recent: &'a RecentTicks,
}

impl Records<'_> {
    /// Every change to `entity` in `world` up to `to`, oldest first, with
    /// its tick and time: [`ledger::entity_history`], sharing reads, with
    /// the ticks of the recent window (which must end at `to`) taken from
    /// it instead of the store.
    async fn history(
        &mut self,
        view: &LedgerView,
        world: &WorldInfo,
        to: Tick,
        entity: EntityId,
    ) -> Result<Vec<(Tick, i64, Change)>, WebError> {
        let storage = view.storage.as_ref();
        let err = |e: &dyn std::fmt::Display| {
            WebError::ledger(
                format!("reading the history of {entity} in {:?}", world.name),
                e,
            )
        };
        let mut out = Vec::new();
        for seg in ledger::segments(storage, world.id, to)
            .await
            .map_err(|e| err(&e))?
        {
            // The window covers `cut..=to`; the store answers for the rest.
            let cut = self.recent.first().unwrap_or(to.next());
            let mut ticks = Vec::new();
            if seg.from < cut {
                let store_to = seg.to.min(Tick(cut.0 - 1));
                ticks = storage
                    .own_entity_ticks(seg.world, entity, store_to)
                    .await
                    .map_err(|e| err(&e))?;
                ticks.retain(|t| *t >= seg.from);
            }
            ticks.extend(
                self.recent
                    .ticks_of(entity)
                    .filter(|t| *t >= seg.from && *t <= seg.to && *t >= cut),
            );
            for t in ticks {
                let rec = match self.by_tick.get(&(seg.world, t)) {
                    Some(r) => r.clone(),
                    None => {
                        let recs = storage
                            .read_own_records(seg.world, t, t)
                            .await
                            .map_err(|e| err(&e))?;
                        let Some(r) = recs.into_iter().next() else {
                            continue;
                        };
                        let r = Arc::new(r);
                        self.by_tick.insert((seg.world, t), r.clone());
                        r
                    }
                };
                out.extend(
                    rec.changes
                        .iter()
                        .filter(|c| c.entity() == entity)
                        .map(|c| (rec.tick, rec.at_ms, c.clone())),
                );
            }
        }
        Ok(out)
    }
}
