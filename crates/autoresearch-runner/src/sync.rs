//! [`RunnerIngest`]: incremental, idempotent sync of a runner database into
//! a world, one tick per sync that changed something.

use crate::error::IngestError;
use crate::report::RunReport;
use crate::statedb::{self, AgentRow, Index, ReportRow, Scan, Tracked};
use crate::time::{self, Timestamp};
use autoresearch_core::{ComponentRegistry, EntityId, Run, Storage, World};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The world runner rows go to unless told otherwise.
pub const DEFAULT_WORLD: &str = "runner-fleet";

/// At most this many warnings are listed in a report; `warnings_total` counts all.
const MAX_WARNINGS: usize = 100;

/// What to sync from where.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The runner's `state.db`.
    pub path: PathBuf,
    /// The world to write (default [`DEFAULT_WORLD`]).
    pub world: String,
    /// Put every run in this experiment instead of deriving it from agent_name.
    pub experiment: Option<String>,
}

impl RunnerConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunnerConfig {
            path: path.into(),
            world: DEFAULT_WORLD.to_string(),
            experiment: None,
        }
    }
}

/// What one sync did. Warnings and the naive-timestamp count concern the
/// rows this sync wrote; `orphan_reports` and `runs_missing` describe the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub source: String,
    pub world: String,
    /// The tick this sync appended; `None` when nothing had changed.
    pub tick: Option<u64>,
    pub rows_read: usize,
    pub reports_read: usize,
    pub runs_added: usize,
    pub runs_changed: usize,
    /// Runs in the world whose row is no longer in the file (kept in the ledger).
    pub runs_missing: usize,
    /// RunReport components written (new or superseding reports).
    pub reports_attached: usize,
    /// Reports whose agent_id has no agents row (not written).
    pub orphan_reports: usize,
    /// Timestamps written that had no UTC offset and were taken as UTC.
    pub timestamps_without_offset: usize,
    pub warnings_total: usize,
    pub warnings: Vec<String>,
}

impl SyncReport {
    fn warn(&mut self, w: String) {
        self.warnings_total += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        }
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tick = self
            .tick
            .map_or_else(|| "no new tick".to_string(), |t| format!("tick {t}"));
        writeln!(f, "{} -> {} ({tick})", self.source, self.world)?;
        writeln!(
            f,
            "rows read {}, runs added {}, runs changed {}, reports attached {}, warnings {}",
            self.rows_read,
            self.runs_added,
            self.runs_changed,
            self.reports_attached,
            self.warnings_total
        )?;
        if self.runs_missing > 0 {
            writeln!(
                f,
                "{} runs no longer in the file (kept in the ledger)",
                self.runs_missing
            )?;
        }
        if self.timestamps_without_offset > 0 {
            writeln!(
                f,
                "{} timestamps without a UTC offset were taken as UTC",
                self.timestamps_without_offset
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.warnings_total > self.warnings.len() {
            writeln!(
                f,
                "... and {} more warnings",
                self.warnings_total - self.warnings.len()
            )?;
        }
        Ok(())
    }
}

/// The experiment an agent belongs to by the `{experiment}-{harness}` naming
/// convention, if `agent_name` follows it.
pub fn experiment_from_agent_name<'a>(agent_name: &'a str, harness: &str) -> Option<&'a str> {
    if harness.is_empty() {
        return None;
    }
    agent_name
        .strip_suffix(harness)?
        .strip_suffix('-')
        .filter(|e| !e.is_empty())
}

struct Cache {
    world: World,
    index: Index,
}

/// Syncs one runner database into one world. Keep it across syncs (as
/// `--watch` does): a warm ingester re-reads the file but materializes only
/// rows whose fingerprint changed. A cold one compares every row by value.
pub struct RunnerIngest {
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    config: RunnerConfig,
    cache: Option<Cache>,
}

impl RunnerIngest {
    /// `registry` must hold the lifecycle components and [`RunReport`]
    /// (see [`crate::register`]).
    pub fn new(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        config: RunnerConfig,
    ) -> Self {
        RunnerIngest {
            storage,
            registry,
            config,
            cache: None,
        }
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Reads the database and appends what changed since the last sync as
    /// one tick. Errors leave the ledger unchanged (the file is read fully
    /// before anything is written; the tick is appended atomically).
    /// Cost: one scan of the file; O(changed rows) ledger work when warm.
    pub async fn sync(&mut self) -> Result<SyncReport, IngestError> {
        let ledger_err = |source| IngestError::Ledger {
            path: self.config.path.clone(),
            world: self.config.world.clone(),
            source,
        };
        // A warm cache is valid only if nobody else wrote the world meanwhile.
        let mut cache = match self.cache.take() {
            Some(c) => {
                let info = self.storage.world(c.world.id()).await;
                match info {
                    Ok(i) if i.head == c.world.tick() => Some(c),
                    _ => None,
                }
            }
            None => None,
        };
        if cache.is_none() {
            let exists = self
                .storage
                .find_world(&self.config.world)
                .await
                .map_err(|e| ledger_err(e.into()))?;
            if exists.is_some() {
                let world = World::open(
                    self.storage.clone(),
                    self.registry.clone(),
                    &self.config.world,
                )
                .await
                .map_err(ledger_err)?;
                let index = cold_index(&world);
                cache = Some(Cache { world, index });
            }
        }
        let (world, mut index) = match cache {
            Some(c) => (Some(c.world), c.index),
            None => (None, Index::default()),
        };
        index.epoch += 1;
        let path = self.config.path.clone();
        let (index, scan) = tokio::task::spawn_blocking(move || {
            let scan = statedb::scan(&path, &mut index);
            (index, scan)
        })
        .await
        .map_err(|e| IngestError::Thread {
            path: self.config.path.clone(),
            reason: e.to_string(),
        })?;
        let scan = scan?;
        let mut world = match world {
            Some(w) => w,
            None => World::open_or_create(
                self.storage.clone(),
                self.registry.clone(),
                &self.config.world,
            )
            .await
            .map_err(ledger_err)?,
        };
        let mut index = index;
        let mut report = SyncReport {
            source: self.config.path.display().to_string(),
            world: self.config.world.clone(),
            ..SyncReport::default()
        };
        let applied = apply(&mut world, &mut index, scan, &self.config, &mut report);
        let committed = match applied {
            Ok(()) => world.commit().await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(tick) => {
                if report.runs_added + report.runs_changed + report.reports_attached > 0 {
                    report.tick = Some(tick.0);
                }
                self.cache = Some(Cache { world, index });
                Ok(report)
            }
            Err(e) => Err(ledger_err(e)),
        }
    }
}

/// The index of a world read from its state: fingerprints unknown.
fn cold_index(world: &World) -> Index {
    let mut index = Index::default();
    let mut q = world.hecs().query::<(&EntityId, &Run)>();
    for (id, run) in q.iter() {
        index.runs.insert(
            run.run_id.clone(),
            Tracked {
                entity: *id,
                fp: 0,
                seen: 0,
            },
        );
    }
    let mut q = world.hecs().query::<(&EntityId, &RunReport)>();
    for (id, rep) in q.iter() {
        index.reports.insert(
            rep.report_id.clone(),
            Tracked {
                entity: *id,
                fp: 0,
                seen: 0,
            },
        );
    }
    index
}

fn report_from_row(row: &ReportRow, report: &mut SyncReport) -> RunReport {
    let created = time::parse(row.get(9));
    let report_id = row.text(0);
    if created == Timestamp::Invalid {
        report.warn(format!(
            "report {report_id}: unparseable created_at {:?} left at 0",
            row.text(9)
        ));
    }
    RunReport {
        report_id,
        agent_id: row.text(1),
        request_id: row.text(2),
        exit_status: row.text(3),
        commit_hash: row.text(4),
        diff_stat: row.text(5),
        stdout_tail: row.text(6),
        stderr_tail: row.text(7),
        metadata_json: row.get(8).unwrap_or("{}").to_string(),
        created_at_ms: created.ms(),
    }
}

/// A run built from its row, with what parsing it found.
struct Built {
    run: Run,
    naive: usize,
    warnings: Vec<String>,
    fp: u64,
}

fn build_run(mut row: AgentRow, config: &RunnerConfig) -> Built {
    let agent_id = row.take(0).unwrap_or_default();
    let mut naive = 0;
    let mut warnings = Vec::new();
    let mut ms = |col: usize| {
        let t = time::parse(row.get(col));
        match t {
            Timestamp::Naive(_) => naive += 1,
            Timestamp::Invalid => warnings.push(format!(
                "agent {agent_id}: unparseable {} {:?} left at 0",
                statedb::AGENT_COLUMNS[col],
                row.text(col)
            )),
            _ => {}
        }
        t.ms()
    };
    let started_at_ms = ms(7);
    let finished_at_ms = ms(8);
    let harness = row.take(3).unwrap_or_default();
    let agent_name = row.take(9).unwrap_or_default();
    let experiment_name = match &config.experiment {
        Some(e) => e.clone(),
        None => experiment_from_agent_name(&agent_name, &harness)
            .unwrap_or("adhoc")
            .to_string(),
    };
    let run = Run {
        run_id: agent_id,
        experiment_name,
        vm_name: row.take(1).unwrap_or_default(),
        status: row.take(2).unwrap_or_else(|| "booting".to_string()),
        harness,
        repo_url: row.take(4).unwrap_or_default(),
        branch: row.take(5).unwrap_or_else(|| "main".to_string()),
        task: row.take(6).unwrap_or_default(),
        started_at_ms,
        finished_at_ms,
        agent_name,
        workspace_path: row.take(10).unwrap_or_default(),
        commit_hash: String::new(),
    };
    Built {
        run,
        naive,
        warnings,
        fp: row.fp,
    }
}

/// Buffers the changes of one sync into `world` and updates `index`.
fn apply(
    world: &mut World,
    index: &mut Index,
    scan: Scan,
    config: &RunnerConfig,
    report: &mut SyncReport,
) -> Result<(), autoresearch_core::Error> {
    let epoch = index.epoch;
    report.rows_read = scan.rows_read;
    report.reports_read = scan.reports_read;
    for w in scan.warnings {
        report.warn(w);
    }
    for (report_id, agent_id) in &scan.orphan_reports {
        report.orphan_reports += 1;
        report.warn(format!(
            "report {report_id}: agent {agent_id} has no agents row; report not ingested"
        ));
    }

    // The latest report per agent among the rows read, and report fingerprints.
    let mut latest: HashMap<String, RunReport> = HashMap::new();
    let mut report_fps: Vec<(String, String, u64)> = Vec::new();
    for row in &scan.reports {
        let rep = report_from_row(row, report);
        report_fps.push((rep.report_id.clone(), rep.agent_id.clone(), row.fp));
        match latest.get(&rep.agent_id) {
            Some(cur) if cur.order_key() >= rep.order_key() => {}
            _ => {
                latest.insert(rep.agent_id.clone(), rep);
            }
        }
    }

    let built: Vec<Built> = scan
        .agents
        .into_iter()
        .map(|r| build_run(r, config))
        .collect();
    // New runs are spawned in start order, as the reference loader reads them.
    // Sort positions, not the (large) runs themselves.
    let mut keys: Vec<(i64, &str, usize)> = built
        .iter()
        .enumerate()
        .map(|(i, b)| (b.run.started_at_ms, b.run.run_id.as_str(), i))
        .collect();
    keys.sort_unstable();
    let order: Vec<usize> = keys.into_iter().map(|(_, _, i)| i).collect();
    let mut built: Vec<Option<Built>> = built.into_iter().map(Some).collect();
    for b in order.into_iter().filter_map(|i| built[i].take()) {
        let Built {
            mut run,
            naive,
            warnings,
            fp,
        } = b;
        let tracked = index.runs.get(&run.run_id).copied();
        // The stored components are compared in place, not cloned.
        let (run_changed, report_changed, new_report) = {
            let stored = tracked.and_then(|t| world.hecs_entity(t.entity));
            let stored_run = stored.and_then(|e| world.hecs().get::<&Run>(e).ok());
            let stored_report = stored.and_then(|e| world.hecs().get::<&RunReport>(e).ok());
            let stored_report = stored_report.as_deref();
            let new_report = match (latest.remove(&run.run_id), stored_report) {
                (Some(n), Some(s)) if s.order_key() > n.order_key() => None,
                (n, _) => n,
            };
            let best = new_report.as_ref().or(stored_report);
            run.commit_hash = match best.filter(|r| !r.commit_hash.is_empty()) {
                Some(r) => r.commit_hash.clone(),
                None => stored_run
                    .as_deref()
                    .map(|r| r.commit_hash.clone())
                    .unwrap_or_default(),
            };
            let report_changed = new_report.is_some() && new_report.as_ref() != stored_report;
            let run_changed = stored_run.as_deref().map(|s| *s != run);
            (run_changed, report_changed, new_report)
        };
        let run_id = run.run_id.clone();
        // Written values are moved into the world (no decode at commit).
        let (entity, run_written) = match (tracked, run_changed) {
            (Some(t), Some(changed)) => {
                if changed {
                    world.insert_owned(t.entity, run)?;
                    report.runs_changed += 1;
                }
                (t.entity, changed)
            }
            _ => {
                let e = world.spawn_owned(run)?;
                report.runs_added += 1;
                (e, true)
            }
        };
        if report_changed && let Some(r) = new_report {
            world.insert_owned(entity, r)?;
            report.reports_attached += 1;
        }
        if run_written {
            report.timestamps_without_offset += naive;
            for w in warnings {
                report.warn(w);
            }
        }
        let tracked = Tracked {
            entity,
            fp,
            seen: epoch,
        };
        match index.runs.get_mut(&run_id) {
            Some(t) => *t = tracked,
            None => {
                index.runs.insert(run_id, tracked);
            }
        }
    }
    for (report_id, agent_id, fp) in report_fps {
        if let Some(t) = index.runs.get(&agent_id) {
            let entity = t.entity;
            index.reports.insert(
                report_id,
                Tracked {
                    entity,
                    fp,
                    seen: epoch,
                },
            );
        }
    }
    report.runs_missing = index.runs.values().filter(|t| t.seen != epoch).count();
    Ok(())
}
