//! [`RunnerIngest`]: incremental, idempotent sync of a runner database into
//! a world, one tick per sync that changed something.

use crate::error::IngestError;
use crate::index::{self, Index, Key, ReportOwner, StoredReport, TrackedRun, value_hash};
use crate::report::RunReport;
use crate::statedb::{self, AgentRow, ReportRow, Scan, Source};
use crate::time::{self, Timestamp};
use autoresearch_core::{ComponentRegistry, Run, Storage, Tick, TickWriter, World};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The world runner rows go to unless told otherwise.
pub const DEFAULT_WORLD: &str = "runner-fleet";

/// The saved index is rewritten when it is this many ticks behind the head
/// (a new ingester replays at most this many ticks onto it).
const SAVE_EVERY: u64 = 16;

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
    /// A directory where the ingest keeps its index of the world between
    /// processes (see [`RunnerIngest`]); `None`: a new ingester reads the
    /// whole world from the ledger. Nothing in it is needed for correctness.
    pub cache_dir: Option<PathBuf>,
    /// Learn which rows changed from the table's pages, hashed record by
    /// record (`sqlite_dbpage`, when SQLite has it), instead of stepping
    /// through every row with SQL. Default true; both give the same ledger.
    pub page_reads: bool,
}

impl RunnerConfig {
    /// A config for the runner database at `path`: world [`DEFAULT_WORLD`], experiments derived
    /// from agent names, no cache directory, page reads on.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunnerConfig {
            path: path.into(),
            world: DEFAULT_WORLD.to_string(),
            experiment: None,
            cache_dir: None,
            page_reads: true,
        }
    }
}

/// What one sync did. Warnings and the naive-timestamp count concern the
/// rows this sync wrote; `orphan_reports` and `runs_missing` describe the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// The runner database read, as a display path.
    pub source: String,
    /// The world written.
    pub world: String,
    /// The tick this sync appended; `None` when nothing had changed.
    pub tick: Option<u64>,
    /// `agents` rows in the file, all of them looked at.
    pub rows_read: usize,
    /// `run_reports` rows read.
    pub reports_read: usize,
    /// Runs new to the world.
    pub runs_added: usize,
    /// Runs already in the world whose row changed.
    pub runs_changed: usize,
    /// Runs in the world whose row is no longer in the file (kept in the ledger).
    pub runs_missing: usize,
    /// RunReport components written (new or superseding reports).
    pub reports_attached: usize,
    /// Reports whose agent_id has no agents row (not written).
    pub orphan_reports: usize,
    /// Timestamps written that had no UTC offset and were taken as UTC.
    pub timestamps_without_offset: usize,
    /// Every warning of this sync, including those not listed in `warnings`.
    pub warnings_total: usize,
    /// The first warnings, at most 100, one line each (an unparseable timestamp, an orphan report,
    /// an index that could not be saved).
    pub warnings: Vec<String>,
    /// Where this sync's knowledge of the world came from: `kept` (this
    /// ingester's previous sync), `saved` (the index saved in the cache
    /// dir), `world` (the world read from the ledger) or `new` (no world yet).
    pub index: &'static str,
    /// How the file was read: `pages` (each row's fingerprint from the
    /// table's pages), `rows` (the row-scan fallback, when SQLite lacks
    /// `sqlite_dbpage` or page reads are off) or `unchanged` (the file
    /// had not changed since the last sync and was not read).
    pub read_path: &'static str,
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

/// What a warm ingester keeps between syncs: a writer at the world's head
/// and the index of what the world holds.
struct Warm {
    writer: TickWriter,
    index: Index,
}

/// Syncs one runner database into one world.
///
/// The world is never materialized on the way: the ingester keeps an index
/// of the runs it wrote (entity, a hash of each stored value, each source
/// row's fingerprint by rowid) and appends ticks through a [`TickWriter`].
/// A re-sync reads each row's rowid and fingerprint (the hash of its record
/// bytes, from the table's pages: see [`RunnerConfig::page_reads`]), fetches
/// only rows whose fingerprint changed, and compares the runs built from
/// them with the stored ones by value hash. When the file did not change at
/// all since the last sync (`PRAGMA data_version`), nothing is read.
///
/// Keep it across syncs (as `--watch` does). A new ingester loads the index
/// saved in [`RunnerConfig::cache_dir`] (written on an ingester's first
/// sync and then every few ticks) when it was saved for the same world,
/// file and experiment setting, and replays the ticks appended since (by
/// any writer) onto it. Otherwise (missing, corrupt, ahead of the world, a
/// change it cannot follow such as a removed run, no cache dir) it
/// materializes the world once to build the index, with the same result.
pub struct RunnerIngest {
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    config: RunnerConfig,
    warm: Option<Warm>,
    source: Option<Source>,
    /// What a sync of the unchanged file reports (rows read, missing runs,
    /// scan warnings), and the head it holds for.
    idle: Option<(Tick, SyncReport)>,
    /// The head the saved index file was written at.
    saved_head: Option<Tick>,
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
            warm: None,
            source: None,
            idle: None,
            saved_head: None,
        }
    }

    /// The configuration this ingester syncs with.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// The file the index of this world and source is saved in, if any.
    fn cache_file(&self) -> Option<PathBuf> {
        let dir = self.config.cache_dir.as_ref()?;
        let safe: String = self
            .config
            .world
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .take(64)
            .collect();
        let key = format!("{}\0{}", self.config.world, self.config.path.display());
        let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        Some(dir.join(format!("runner-{safe}-{h:016x}.idx")))
    }

    fn key(&self, writer: &TickWriter) -> Key {
        Key {
            world: writer.info().clone(),
            next_entity: writer.next_entity(),
            source: self.config.path.display().to_string(),
            experiment: self.config.experiment.clone(),
        }
    }

    fn ledger_err(&self, source: autoresearch_core::Error) -> IngestError {
        IngestError::Ledger {
            path: self.config.path.clone(),
            world: self.config.world.clone(),
            source,
        }
    }

    /// The writer and index for the world's current head: kept from the
    /// last sync, loaded from the cache file, or built from the world.
    /// `None` when the world does not exist yet.
    async fn resume(&mut self) -> Result<(Option<Warm>, &'static str), IngestError> {
        if let Some(w) = self.warm.take() {
            // Valid only if nobody else wrote the world meanwhile.
            let info = self.storage.world(w.writer.info().id).await;
            if info.is_ok_and(|i| i.head == w.writer.head()) {
                return Ok((Some(w), "kept"));
            }
        }
        let found = self
            .storage
            .find_world(&self.config.world)
            .await
            .map_err(|e| self.ledger_err(e.into()))?;
        let Some(info) = found else {
            return Ok((None, "new"));
        };
        if let Some(file) = self.cache_file() {
            let expect = Key {
                world: info.clone(),
                next_entity: 0,
                source: self.config.path.display().to_string(),
                experiment: self.config.experiment.clone(),
            };
            let loaded = tokio::task::spawn_blocking(move || index::load(&file, &expect)).await;
            if let Ok(Some((key, mut index))) = loaded
                && key.world.head <= info.head
            {
                // Ticks appended after the save (by this ingest or others)
                // are replayed onto the index.
                let mut next_entity = key.next_entity;
                let replayed = if key.world.head < info.head {
                    let records = autoresearch_core::ledger::read_records(
                        self.storage.as_ref(),
                        info.id,
                        key.world.head.next(),
                        info.head,
                    )
                    .await;
                    records.is_ok_and(|records| {
                        index.replay(&self.registry, info.id, &records, &mut next_entity)
                    })
                } else {
                    true
                };
                // Resuming re-checks the head: a writer may have appended since.
                let writer = TickWriter::resume(
                    self.storage.clone(),
                    self.registry.clone(),
                    info.id,
                    info.head,
                    next_entity,
                )
                .await;
                if replayed && let Ok(writer) = writer {
                    self.saved_head = Some(key.world.head);
                    return Ok((Some(Warm { writer, index }), "saved"));
                }
            }
        }
        let world = World::open_id(self.storage.clone(), self.registry.clone(), info.id)
            .await
            .map_err(|e| self.ledger_err(e))?;
        let index =
            Index::of_world(&world, &self.registry).map_err(|e| self.ledger_err(e.into()))?;
        let writer = TickWriter::from_world(&world).map_err(|e| self.ledger_err(e))?;
        Ok((Some(Warm { writer, index }), "world"))
    }

    /// Reads the database and appends what changed since the last sync as
    /// one tick. Errors leave the ledger unchanged (the file is read fully
    /// before anything is written; the tick is appended atomically).
    /// Cost: O(changed rows) ledger work, plus one pass over the file's
    /// pages (over its rows without page reads; nothing when the file is
    /// unchanged); a new ingester without a valid saved index first
    /// materializes the world.
    pub async fn sync(&mut self) -> Result<SyncReport, IngestError> {
        // A new ingester first loads its index (or reads the world): the
        // runner file's pages are read meanwhile, on another thread.
        let prefetch = (self.warm.is_none() && self.config.page_reads).then(|| {
            let source = self.source.take();
            let path = self.config.path.clone();
            tokio::task::spawn_blocking(move || {
                let mut source = match source.filter(|s| s.is_for(&path)) {
                    Some(s) => Some(s),
                    None => Source::open(&path, true).ok(),
                };
                if let Some(s) = &mut source {
                    s.prefetch_pages();
                }
                source
            })
        });
        let resumed = self.resume().await;
        if let Some(prefetch) = prefetch {
            self.source = prefetch.await.ok().flatten();
        }
        let (warm, index_source) = resumed?;
        let path = self.config.path.clone();
        // With the world unchanged since the last scan, a file nobody wrote
        // since gives the same result, so it is not read.
        let idle = match (&warm, self.idle.take()) {
            (Some(w), Some((head, idle))) if head == w.writer.head() => Some(idle),
            _ => None,
        };
        let (world_writer, mut index) = match warm {
            Some(w) => (Some(w.writer), w.index),
            None => (None, Index::default()),
        };
        index.seen.reset(index.runs.len());
        let source = self.source.take();
        let check_idle = idle.is_some();
        let page_reads = self.config.page_reads;
        let (source, index, scan) = tokio::task::spawn_blocking(move || {
            let mut source = match source.filter(|s| s.is_for(&path)) {
                Some(s) if check_idle && s.unchanged_since_last_scan() => {
                    return (Some(s), index, Ok(None));
                }
                Some(s) => s,
                None => match Source::open(&path, page_reads) {
                    Ok(s) => s,
                    Err(e) => return (None, index, Err(e)),
                },
            };
            let scan = statedb::scan(&mut source, &mut index);
            (Some(source), index, scan.map(Some))
        })
        .await
        .map_err(|e| IngestError::Thread {
            path: self.config.path.clone(),
            reason: e.to_string(),
        })?;
        self.source = source;
        let scan = match scan {
            Ok(Some(scan)) => scan,
            Ok(None) => {
                // Only asked for when there is a warm writer and an idle report.
                let (Some(writer), Some(mut report)) = (world_writer, idle) else {
                    return Err(IngestError::Thread {
                        path: self.config.path.clone(),
                        reason: "an unchanged file without a previous sync".to_string(),
                    });
                };
                report.index = index_source;
                report.read_path = "unchanged";
                self.idle = Some((writer.head(), report.clone()));
                self.warm = Some(Warm { writer, index });
                return Ok(report);
            }
            Err(e) => {
                // Nothing was written: the index stays valid for the next sync.
                if let Some(writer) = world_writer {
                    self.warm = Some(Warm { writer, index });
                }
                return Err(e);
            }
        };
        let mut index = index;
        let mut writer = match world_writer {
            Some(w) => w,
            // Created by the commit, with the first tick: one durable write.
            None => TickWriter::create_on_commit(
                self.storage.clone(),
                self.registry.clone(),
                &self.config.world,
            ),
        };
        let mut report = SyncReport {
            source: self.config.path.display().to_string(),
            world: self.config.world.clone(),
            index: index_source,
            read_path: scan.read_path,
            ..SyncReport::default()
        };
        let mut idle = report.clone();
        let applied = apply(
            &mut writer,
            &mut index,
            scan,
            &self.config,
            &mut report,
            &mut idle,
        );
        // On an error the index may be ahead of the ledger: it is dropped.
        let tick = match applied {
            Ok(()) => writer.commit().await,
            Err(e) => Err(e),
        }
        .map_err(|e| self.ledger_err(e))?;
        if report.runs_added + report.runs_changed + report.reports_attached > 0 {
            report.tick = Some(tick.0);
        }
        let mut warm = Warm { writer, index };
        // Saved on the first sync and then every SAVE_EVERY ticks: a new
        // ingester replays the ticks after the save.
        if let Some(file) = self.cache_file()
            && self
                .saved_head
                .is_none_or(|h| tick.0.saturating_sub(h.0) >= SAVE_EVERY || h > tick)
        {
            let key = self.key(&warm.writer);
            let saved = tokio::task::spawn_blocking(move || {
                let r = index::save(&file, &key, &warm.index).map_err(|e| (file, e));
                (warm, r)
            })
            .await
            .map_err(|e| IngestError::Thread {
                path: self.config.path.clone(),
                reason: e.to_string(),
            })?;
            warm = saved.0;
            match saved.1 {
                Ok(()) => self.saved_head = Some(tick),
                // The ledger is written; only the next new ingester is slower.
                Err((file, e)) => report.warn(format!(
                    "could not save the ingest index to {}: {e}",
                    file.display()
                )),
            }
        }
        self.idle = Some((tick, idle));
        self.warm = Some(warm);
        Ok(report)
    }
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
        run_id: row.text(1),
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

/// A row with what parsing it found: its times and their warnings.
struct Built {
    row: AgentRow,
    started_at_ms: i64,
    finished_at_ms: i64,
    naive: usize,
    warnings: Vec<String>,
}

fn build_run(row: AgentRow) -> Built {
    let agent_id = row.get(0).unwrap_or_default();
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
    Built {
        row,
        started_at_ms,
        finished_at_ms,
        naive,
        warnings,
    }
}

impl Built {
    fn run_id(&self) -> &str {
        self.row.get(0).unwrap_or_default()
    }

    /// The run this row gives, borrowing its text.
    fn view<'a>(&'a self, config: &'a RunnerConfig, commit_hash: &'a str) -> RunView<'a> {
        let row = &self.row;
        let harness = row.get(3).unwrap_or_default();
        let agent_name = row.get(9).unwrap_or_default();
        let experiment_name = match &config.experiment {
            Some(e) => e.as_str(),
            None => experiment_from_agent_name(agent_name, harness).unwrap_or("adhoc"),
        };
        RunView {
            run_id: self.run_id(),
            experiment_name,
            vm_name: row.get(1).unwrap_or_default(),
            status: row.get(2).unwrap_or("booting"),
            harness,
            repo_url: row.get(4).unwrap_or_default(),
            branch: row.get(5).unwrap_or("main"),
            task: row.get(6).unwrap_or_default(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            agent_name,
            workspace_path: row.get(10).unwrap_or_default(),
            commit_hash,
        }
    }
}

/// A [`Run`] borrowing its text: serializes to exactly the bytes the `Run`
/// it stands for does (same fields, same order), so the ingest encodes rows
/// without allocating a string per field. [`RunView::to_run`] names every
/// field of `Run`, so a field added there breaks the build here.
#[derive(Serialize)]
struct RunView<'a> {
    run_id: &'a str,
    experiment_name: &'a str,
    vm_name: &'a str,
    status: &'a str,
    harness: &'a str,
    repo_url: &'a str,
    branch: &'a str,
    task: &'a str,
    started_at_ms: i64,
    finished_at_ms: i64,
    agent_name: &'a str,
    workspace_path: &'a str,
    commit_hash: &'a str,
}

impl RunView<'_> {
    #[cfg(test)]
    fn to_run(&self) -> Run {
        Run {
            run_id: self.run_id.to_string(),
            experiment_name: self.experiment_name.to_string(),
            vm_name: self.vm_name.to_string(),
            status: self.status.to_string(),
            harness: self.harness.to_string(),
            repo_url: self.repo_url.to_string(),
            branch: self.branch.to_string(),
            task: self.task.to_string(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            agent_name: self.agent_name.to_string(),
            workspace_path: self.workspace_path.to_string(),
            commit_hash: self.commit_hash.to_string(),
        }
    }

    /// The encoding, written into `scratch` and returned exactly sized.
    fn encode(&self, scratch: &mut Vec<u8>) -> Result<Vec<u8>, autoresearch_core::Error> {
        scratch.clear();
        let taken = std::mem::take(scratch);
        let out = postcard::to_extend(self, taken).map_err(|source| {
            autoresearch_core::Error::Registry(autoresearch_core::RegistryError::Encode {
                component: "Run".to_string(),
                source,
            })
        })?;
        *scratch = out;
        Ok(scratch.clone())
    }
}

/// Buffers the changes of one sync into `writer` and updates `index`.
/// Runs are encoded from their rows through [`RunView`]: no owned `Run`
/// is built.
/// `idle` receives what a sync of the same, unchanged file would report.
fn apply(
    writer: &mut TickWriter,
    index: &mut Index,
    scan: Scan,
    config: &RunnerConfig,
    report: &mut SyncReport,
    idle: &mut SyncReport,
) -> Result<(), autoresearch_core::Error> {
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
    *idle = report.clone();

    // The latest report per agent among the rows read, and report fingerprints.
    let mut latest: HashMap<String, RunReport> = HashMap::new();
    let mut report_fps: Vec<(String, String, u64)> = Vec::new();
    for row in &scan.reports {
        let rep = report_from_row(row, report);
        report_fps.push((rep.report_id.clone(), rep.run_id.clone(), row.fp));
        match latest.get(&rep.run_id) {
            Some(cur) if cur.order_key() >= rep.order_key() => {}
            _ => {
                latest.insert(rep.run_id.clone(), rep);
            }
        }
    }

    let built: Vec<(i64, Option<u32>, Built)> = scan
        .agents
        .into_iter()
        .map(|(rowid, hint, r)| (rowid, hint, build_run(r)))
        .collect();
    // New runs are spawned in start order, as the reference loader reads them.
    // Sort positions, not the rows themselves.
    let mut keys: Vec<(i64, &str, usize)> = built
        .iter()
        .enumerate()
        .map(|(i, (_, _, b))| (b.started_at_ms, b.run_id(), i))
        .collect();
    keys.sort_unstable();
    let order: Vec<usize> = keys.into_iter().map(|(_, _, i)| i).collect();
    let mut by_rowid = scan.unchanged;
    // Sized once for every row to write: a spawn and a run each (a report
    // more grows it), rather than doubling a first ingest's tick a score
    // of times.
    by_rowid.reserve(built.len());
    writer.reserve(2 * built.len());
    index.runs.reserve(built.len());
    let run_component = writer.registry().name_of::<Run>()?.to_string();
    let registry = writer.registry().clone();
    let mut scratch = Vec::with_capacity(512);
    for (rowid, hint, b) in order.into_iter().map(|i| &built[i]) {
        let run_id = b.run_id();
        let slot = index.slot_hinted(run_id, *hint);
        let stored = slot.map(|s| &index.runs[s as usize]);
        let stored_report = stored.and_then(|s| s.report.as_ref());
        let new_report = match (latest.remove(run_id), stored_report) {
            (Some(n), Some(s)) if s.order_key() > n.order_key() => None,
            (n, _) => n,
        };
        // The commit of the newest report that names one, else the stored run's.
        let best = match (&new_report, stored_report) {
            (Some(n), _) => Some(n.commit_hash.as_str()),
            (None, s) => s.map(|s| s.commit_hash.as_str()),
        };
        let commit_hash = match best.filter(|c| !c.is_empty()) {
            Some(c) => c.to_string(),
            None => stored.map(|s| s.commit_hash.clone()).unwrap_or_default(),
        };
        let new_report = match new_report {
            Some(r) => {
                let hash = value_hash(&registry.encode(&r)?.1);
                let changed = stored_report.is_none_or(|s| s.hash != hash);
                changed.then_some((r, hash))
            }
            None => None,
        };
        let bytes = b.view(config, &commit_hash).encode(&mut scratch)?;
        let run_hash = value_hash(&bytes);
        let (slot, run_written) = match slot {
            Some(slot) => {
                let t = &mut index.runs[slot as usize];
                let changed = t.run_hash != run_hash;
                if changed {
                    writer.set_encoded(t.entity, run_component.clone(), bytes);
                    report.runs_changed += 1;
                }
                t.run_hash = run_hash;
                t.commit_hash = commit_hash;
                index.seen.mark(slot);
                (slot, changed)
            }
            None => {
                let entity = writer.spawn();
                writer.set_encoded(entity, run_component.clone(), bytes);
                report.runs_added += 1;
                let slot = index.push(TrackedRun {
                    agent_id: run_id.to_string(),
                    entity,
                    run_hash,
                    commit_hash,
                    report: None,
                });
                index.seen.mark(slot);
                (slot, true)
            }
        };
        if let Some((r, hash)) = new_report {
            let t = &mut index.runs[slot as usize];
            writer.set(t.entity, &r)?;
            report.reports_attached += 1;
            t.report = Some(StoredReport {
                created_at_ms: r.created_at_ms,
                report_id: r.report_id,
                commit_hash: r.commit_hash,
                hash,
            });
        }
        if run_written {
            report.timestamps_without_offset += b.naive;
            for w in &b.warnings {
                report.warn(w.clone());
            }
        }
        by_rowid.push((*rowid, b.row.fp, slot));
    }
    for (report_id, agent_id, fp) in report_fps {
        if index.slot(&agent_id).is_some() {
            index.reports.insert(report_id, fp);
        }
    }
    // Two sorted runs (the unchanged rows, then the rows written): the
    // stable sort merges them in one pass.
    by_rowid.sort_by_key(|r| r.0);
    index.by_rowid = by_rowid;
    report.runs_missing = index.runs.len() - index.seen.len();
    // The report rows as read, each with its agent's run as it is now.
    if scan.report_pages {
        let mut rows = scan.report_rows_kept;
        rows.extend(scan.report_rows_read.into_iter().map(|(rowid, fp, agent)| {
            let slot = match agent {
                None => ReportOwner::Bad.code(),
                Some(id) => index.slot(&id).unwrap_or(ReportOwner::Orphan.code()),
            };
            (rowid, fp, slot)
        }));
        rows.sort_by_key(|r| r.0);
        index.report_rows = rows;
    } else {
        index.report_rows.clear();
    }
    idle.runs_missing = report.runs_missing;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_view_encodes_exactly_as_its_run() {
        let registry = crate::registry();
        let mut scratch = Vec::new();
        for (i, text) in ["", "a", "ü-ñ 🚀", &"x".repeat(300)]
            .into_iter()
            .enumerate()
        {
            let view = RunView {
                run_id: text,
                experiment_name: "exp",
                vm_name: text,
                status: "running",
                harness: "claude-code",
                repo_url: text,
                branch: "main",
                task: text,
                started_at_ms: -(i as i64) * 1_000_000_007,
                finished_at_ms: i64::MAX - i as i64,
                agent_name: text,
                workspace_path: "/ws",
                commit_hash: text,
            };
            let (name, expected) = registry.encode(&view.to_run()).unwrap();
            assert_eq!(name, "Run");
            assert_eq!(view.encode(&mut scratch).unwrap(), expected, "case {i}");
        }
    }
}
