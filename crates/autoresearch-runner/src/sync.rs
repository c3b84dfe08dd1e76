//! [`RunnerIngest`]: incremental, idempotent sync of a runner database into
//! a world, one tick per sync that changed something. How a scan's rows
//! become a tick's changes is in `apply.rs`.

mod apply;

use crate::error::IngestError;
use crate::index::{self, Index, Key};
use crate::statedb::{self, Source};
use apply::apply;
use autoresearch_core::{ComponentRegistry, Storage, Tick, TickWriter, World};
use serde::Serialize;
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
    /// `registry` must hold the lifecycle components and [`crate::RunReport`]
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
