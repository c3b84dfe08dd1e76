//! autoresearch-store: the redb implementation of `autoresearch_core::Storage`.
//!
//! One redb file holds many worlds: a catalogue of worlds (name, parent, fork
//! tick, head), each world's tick records and snapshots keyed by
//! `(world, tick)`, an index from entity to the ticks that changed it, and
//! each entity's liveness changes (for the append check).
//! The layout and every value encoding live in the private `encoding` module; the file format
//! is described in `docs/ledger-format.md`.
//!
//! - Durable by default: when `append` returns `Ok`, the tick has been
//!   fsynced and survives a kill -9.
//! - Group commit: one writer thread applies every queued write in one redb
//!   transaction, so concurrent appenders share fsyncs.
//! - Several processes may open one file at once (redb's multi-writer mode);
//!   the head + 1 check and the liveness check run inside the write
//!   transaction, against the file's latest commit, so racing writers in
//!   different processes are refused with `Conflict`, never interleaved, and
//!   no tick that fails to replay is stored (`NotApplicable`). A batch of
//!   ticks (`append_all`) is stored all or nothing.
//! - `RedbStorage::open_read_only` never creates or writes the file.
//! - A damaged file gives errors naming it, never a panic: redb's panics
//!   are contained at this crate's boundary (`StorageError::Damaged`).
//! - All redb work runs on the writer thread or on `spawn_blocking`, never on
//!   the async executor.
//!
//! It depends on autoresearch-core only. Reads through fork lineage (time
//! travel, entity history) are core's, written once above the trait.

mod catalogue;
mod current;
mod encoding;
mod failure;
mod schema;
mod series;
mod span_cache;
mod spans;
mod storage_impl;
mod stored;
mod writer;

pub(crate) use catalogue::{find_name, load_world};
use schema::{check_version, ensure_schema};
use storage_impl::encode_failed;

pub use encoding::{FORMAT_VERSION, VALUE_VERSION};
pub use writer::CommitStats;

use autoresearch_core::{ChangeKind, EntityId, Snapshot, StorageError, Tick, TickRecord, WorldId};
use encoding::{
    ENTITY_TICKS, LIVENESS, META, RECORDS, SNAPSHOTS, TABLE_NAMES, WORLD_NAMES, WORLDS,
    estimated_bytes,
};
pub(crate) use failure::*;
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTableMetadata,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use writer::{BatchLimits, Op, Writer};

/// Who may open the ledger file while this process has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sharing {
    /// Any number of processes read and write the file at once (redb's
    /// multi-writer mode). Every commit is durable and two-phase.
    #[default]
    MultiProcess,
    /// This process alone; any other open fails with `Locked`. Allows
    /// non-durable commits (`durable: false`) for bulk loads.
    Exclusive,
}

/// Options of a redb ledger. `RedbConfig::default()` is durable and
/// multi-process.
#[derive(Clone, Debug)]
pub struct RedbConfig {
    /// Snapshot every this many ticks (`None`: never). Bounds time travel:
    /// at most this many records are replayed after a snapshot.
    pub snapshot_interval: Option<u64>,
    /// Whether other processes may use the file at the same time.
    pub sharing: Sharing,
    /// Whether every commit is fsynced before `append` returns. `false`
    /// needs [`Sharing::Exclusive`]: commits then reach the disk when a
    /// later durable commit or the close flushes them, and a crash may lose
    /// the latest ticks (never corrupt earlier ones).
    pub durable: bool,
    /// Group commit: at most this many queued writes in one transaction.
    pub max_batch_ops: usize,
    /// Group commit: stop adding writes to a transaction past this many bytes.
    pub max_batch_bytes: usize,
    /// Group commit: how long a transaction may wait for worlds that
    /// appended in the last two batches but are not queued yet. Only delays
    /// commits when several worlds are appending; zero turns it off.
    pub max_batch_wait: std::time::Duration,
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// Records and snapshots decoded for one-component reads
    /// (`ledger::component_values_at`) kept between reads, in bytes
    /// (decoded bodies plus changes; the oldest kept are dropped first;
    /// zero keeps none): reads of nearby ticks, and repeated reads of one,
    /// decompress and decode each stored value once. The same bytes hold
    /// the states such reads replayed from 16 records or more and read
    /// twice, gathered into one body each and used as snapshots in memory
    /// (see `Storage::offer_component_span_snapshot`).
    pub decoded_cache_bytes: usize,
}

impl Default for RedbConfig {
    fn default() -> Self {
        RedbConfig {
            snapshot_interval: Some(autoresearch_core::DEFAULT_SNAPSHOT_INTERVAL),
            sharing: Sharing::MultiProcess,
            durable: true,
            max_batch_ops: 4096,
            max_batch_bytes: 64 << 20,
            max_batch_wait: std::time::Duration::from_millis(2),
            cache_bytes: 256 << 20,
            decoded_cache_bytes: 64 << 20,
        }
    }
}

/// Size of one table, as redb accounts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableBytes {
    /// The redb table's name.
    pub name: String,
    /// Key and value bytes.
    pub stored: u64,
    /// B-tree overhead (headers, branch pages).
    pub metadata: u64,
    /// Unused space inside allocated pages.
    pub fragmented: u64,
}

impl TableBytes {
    /// Everything the table occupies.
    pub fn total(&self) -> u64 {
        self.stored + self.metadata + self.fragmented
    }
}

/// A ledger in one redb file.
///
/// Cheap to share (`Arc<dyn Storage>`). Dropping it waits for queued writes
/// to finish, then closes the file.
pub struct RedbStorage {
    /// `None` for a read-only open. Shut down before `db` is released.
    writer: Option<Writer>,
    db: Db,
    sink: ErrorSink,
    snapshot_interval: Option<u64>,
    /// Decoded one-component reads kept between reads.
    spans: Arc<span_cache::SpanCache>,
    /// Records decoded as delta bases, kept between reads.
    bases: Arc<stored::BaseMemo>,
}

/// The database handle: read-write, or read-only (never writes the file).
#[derive(Clone)]
enum Db {
    Write(Arc<Database>),
    Read(Arc<ReadOnlyDatabase>),
    Closed,
}

impl Db {
    fn begin_read(&self) -> Result<ReadTransaction, Failure> {
        match self {
            Db::Write(db) => Ok(db.begin_read()?),
            Db::Read(db) => Ok(db.begin_read()?),
            Db::Closed => Err(Failure::Db(redb::Error::DatabaseClosed)),
        }
    }
}

impl Drop for RedbStorage {
    fn drop(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            w.shutdown();
        }
        // Closing a damaged file may panic inside redb: contain it.
        let db = std::mem::replace(&mut self.db, Db::Closed);
        let _ = catch(|| drop(db));
    }
}

fn open_error(path: &Path, e: DatabaseError) -> StorageError {
    let path_s = path.display().to_string();
    match e {
        DatabaseError::DatabaseAlreadyOpen => StorageError::Locked {
            path: path_s,
            reason: "another process (or handle) has it open in exclusive mode".into(),
        },
        DatabaseError::LockProtocolMismatch => StorageError::Locked {
            path: path_s,
            reason: "a process built with an incompatible redb version has it open".into(),
        },
        other => StorageError::Backend {
            context: format!("opening ledger {path_s}"),
            source: Box::new(other),
        },
    }
}

fn config_error(path: &Path, reason: &str) -> StorageError {
    StorageError::Backend {
        context: format!("opening ledger {}", path.display()),
        source: reason.into(),
    }
}

impl RedbStorage {
    /// Opens (creating if absent, with its parent directory) the ledger at
    /// `path`.
    ///
    /// Errors: `Locked` when another process holds the file in exclusive
    /// mode (or this one asks for exclusive use of a file others have open);
    /// `NewerFormat` for a file written by a newer build; `Backend` for I/O
    /// failures, a file that is not a redb database, or an invalid config.
    /// Cost: a new file, or one missing tables, takes one durable commit.
    pub fn open(path: &Path, config: RedbConfig) -> Result<RedbStorage, StorageError> {
        let display = path.display().to_string();
        if !config.durable && config.sharing == Sharing::MultiProcess {
            return Err(config_error(
                path,
                "non-durable commits need Sharing::Exclusive: other processes could not see them",
            ));
        }
        if config.snapshot_interval == Some(0) {
            return Err(config_error(
                path,
                "snapshot_interval must be at least 1 (None: never)",
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::Backend {
                context: format!("creating the directory of ledger {display}"),
                source: Box::new(e),
            })?;
        }
        let sink = ErrorSink::new(path);
        let db = sink.contain("while opening it", || {
            let mut builder = Database::builder();
            builder.set_cache_size(config.cache_bytes);
            builder.set_concurrency_mode(match config.sharing {
                Sharing::MultiProcess => ConcurrencyMode::MultiWriter,
                Sharing::Exclusive => ConcurrencyMode::ExclusiveWriter,
            });
            builder.create(path).map_err(|e| open_error(path, e))
        })?;
        // The schema is checked apart from the open, the database outside
        // the closure: a panic in the check (a damaged table tree) unwinds
        // without dropping it. redb marks a file whose database is dropped
        // while a panic unwinds as needing recovery, which then fails on
        // every later open; closed here, the file is left as it was found.
        if let Err(e) = sink.contain("while opening it", || ensure_schema(&db, &sink)) {
            // Its own panic, if any, leaves the file as an unwinding drop
            // would: nothing more is lost, and the open's error stands.
            let _ = catch(move || drop(db));
            return Err(e);
        }
        let db = Arc::new(db);
        let writer = Writer::start(
            db.clone(),
            BatchLimits {
                max_ops: config.max_batch_ops.max(1),
                max_bytes: config.max_batch_bytes.max(1),
                max_wait: config.max_batch_wait,
                durable: config.durable,
            },
            sink.clone(),
        )?;
        Ok(RedbStorage {
            writer: Some(writer),
            db: Db::Write(db),
            sink,
            snapshot_interval: config.snapshot_interval,
            spans: Arc::new(span_cache::SpanCache::new(config.decoded_cache_bytes)),
            bases: Arc::default(),
        })
    }

    /// Opens the existing ledger at `path` for reading only. It never
    /// creates the file or its directory, never writes to the file (no
    /// upgrade, no repair, no lock or sidecar file; it takes only redb's
    /// shared byte-range read lock), so it works on a read-only filesystem
    /// and beside processes writing the file. Every write through it fails
    /// with `ReadOnlyLedger`.
    ///
    /// Errors: `LedgerNotFound` naming the path when there is no such
    /// file; `NewerFormat` for a file written by a newer build; `Damaged`
    /// or `Backend` (naming the file) for a file that is not a readable
    /// ledger; `NeedsRepair` for a file a writer left unclean (a crash, a
    /// failed write) while no writer has it open: a read-write open
    /// repairs it.
    pub fn open_read_only(path: &Path) -> Result<RedbStorage, StorageError> {
        let display = path.display().to_string();
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(StorageError::Backend {
                    context: format!("opening ledger {display} read-only"),
                    source: "not a regular file".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::LedgerNotFound {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => {
                return Err(StorageError::Backend {
                    context: format!("opening ledger {display} read-only"),
                    source: Box::new(e),
                });
            }
        }
        let sink = ErrorSink::new(path);
        let db = sink.contain(&format!("opening ledger {display} read-only"), || {
            let mut builder = Database::builder();
            builder.set_cache_size(RedbConfig::default().cache_bytes.min(64 << 20));
            // A reader beside multi-process writers: it loads no allocator
            // state, so it needs no clean shutdown of the file to read it.
            builder.set_concurrency_mode(ConcurrencyMode::MultiWriter);
            let db = builder.open_read_only(path).map_err(|e| match e {
                DatabaseError::RepairAborted => StorageError::NeedsRepair {
                    path: path.to_path_buf(),
                },
                e => open_error(path, e),
            })?;
            check_version(&db, &sink)?;
            Ok(db)
        })?;
        Ok(RedbStorage {
            writer: None,
            db: Db::Read(Arc::new(db)),
            sink,
            snapshot_interval: None,
            spans: Arc::new(span_cache::SpanCache::new(
                RedbConfig::default().decoded_cache_bytes,
            )),
            bases: Arc::default(),
        })
    }

    /// Write transactions and writes this handle's writer thread has
    /// committed since it was opened (zero for a read-only handle): how
    /// many writes shared each durable commit.
    pub fn commit_stats(&self) -> CommitStats {
        self.writer
            .as_ref()
            .map_or_else(CommitStats::default, Writer::stats)
    }

    /// Whether this handle was opened with [`RedbStorage::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.sink.path
    }

    /// Bytes each table of the ledger occupies (the current-state and
    /// chart-series tables only when the file has them). Cost: one read transaction.
    pub async fn table_bytes(&self) -> Result<Vec<TableBytes>, StorageError> {
        self.read(
            || "measuring tables".to_string(),
            |txn| {
                let mut out = Vec::new();
                for name in TABLE_NAMES {
                    let stats = match name {
                        "meta" => txn.open_table(META)?.stats()?,
                        "worlds" => txn.open_table(WORLDS)?.stats()?,
                        "world_names" => txn.open_table(WORLD_NAMES)?.stats()?,
                        "records" => txn.open_table(RECORDS)?.stats()?,
                        "snapshots" => txn.open_table(SNAPSHOTS)?.stats()?,
                        "liveness" => txn.open_table(LIVENESS)?.stats()?,
                        "spawn_ranges" => txn.open_table(encoding::SPAWNS)?.stats()?,
                        "record_parts" => txn.open_table(encoding::RECORD_PARTS)?.stats()?,
                        "snapshot_parts" => txn.open_table(encoding::SNAPSHOT_PARTS)?.stats()?,
                        _ => txn.open_table(ENTITY_TICKS)?.stats()?,
                    };
                    out.push(TableBytes {
                        name: name.to_string(),
                        stored: stats.stored_bytes(),
                        metadata: stats.metadata_bytes(),
                        fragmented: stats.fragmented_bytes(),
                    });
                }
                out.extend(current::table_bytes(txn)?);
                out.extend(series::table_bytes(txn)?);
                Ok(out)
            },
        )
        .await
    }

    /// Runs `f` in a read transaction off the async executor (inline when
    /// called outside a tokio runtime). A panic inside redb (a damaged
    /// file) is contained and reported as `Damaged`.
    async fn read<T, C, F>(&self, context: C, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        C: FnOnce() -> String,
        F: FnOnce(&ReadTransaction) -> Result<T, Failure> + Send + 'static,
    {
        let db = self.db.clone();
        let job = move || -> Result<T, Failure> {
            catch(|| {
                let txn = db.begin_read()?;
                f(&txn)
            })
            .unwrap_or_else(|panic| Err(Failure::Panic(panic)))
        };
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.spawn_blocking(job).await.unwrap_or_else(|e| {
                Err(Failure::Storage(StorageError::Backend {
                    context: format!("reading ledger {}", self.sink.path.display()),
                    source: Box::new(e),
                }))
            }),
            Err(_) => job(),
        };
        result.map_err(|e| {
            let context = || format!("{} in ledger {}", context(), self.sink.path.display());
            match e {
                Failure::Panic(panic) => self.sink.damaged(&context(), panic.as_ref()),
                e => self.sink.error(e, context),
            }
        })
    }

    /// Queues a write and waits for its group commit.
    async fn write<T>(
        &self,
        what: impl FnOnce() -> String,
        make: impl FnOnce(writer::Reply<T>) -> Op,
    ) -> Result<T, StorageError> {
        let Some(writer) = self.writer.as_ref() else {
            return Err(StorageError::ReadOnlyLedger {
                path: self.sink.path.clone(),
                context: what(),
            });
        };
        let (tx, rx) = oneshot::channel();
        writer.submit(make(tx))?;
        rx.await.map_err(|_| writer.stopped())?
    }
}

/// A tick record (and its snapshot) encoded for the writer.
///
/// A large record (an ingest's) is encoded (and compressed) on a thread of
/// its own while the writer maintains the current state and the chart
/// series from its changes, which need only [`EncodedAppend::changes_full`];
/// the writer takes the bytes with [`EncodedAppend::record`] when it stores
/// them. On 2 cores that takes the encoding off the ingest's critical path.
/// A small record is encoded whole only when the writer stores it whole
/// (not as deltas of earlier values), by that first
/// [`EncodedAppend::record`].
pub(crate) struct EncodedAppend {
    pub(crate) tick: Tick,
    /// The world written (for errors).
    world: WorldId,
    /// The record's time (for a re-encoding with deltas).
    pub(crate) at_ms: i64,
    /// The record encoded whole: done, or under way.
    record: RecordBytes,
    /// About the encoded size (the record may still be encoding).
    estimated: usize,
    /// The distinct entities the record touches (for the entity index).
    pub(crate) entities: Vec<EntityId>,
    /// What each change does to which entity, in order (for the check).
    pub(crate) changes: Vec<(ChangeKind, EntityId)>,
    pub(crate) snapshot: Option<Vec<u8>>,
    /// The record's changes, for the current state (`current`) and the
    /// series; shared with the thread encoding them.
    pub(crate) changes_full: Arc<[autoresearch_core::Change]>,
}

/// The thread encoding a record, and what it gives.
type Encoding = std::thread::JoinHandle<Result<Vec<u8>, String>>;

/// A record's encoding: done, or on a thread of its own (joined once, by
/// the first [`EncodedAppend::record`]).
struct RecordBytes {
    done: std::sync::OnceLock<Result<Vec<u8>, String>>,
    running: Mutex<Option<Encoding>>,
    /// Encoded by the first [`EncodedAppend::record`], if any.
    lazy: bool,
}

/// Records estimated at this many bytes or more are encoded on a thread of
/// their own (starting one costs tens of microseconds; an update tick's
/// record takes less to encode).
const ENCODE_APART_FROM: usize = 64 * 1024;

impl EncodedAppend {
    /// Errors: a snapshot of another tick, or a value that cannot be
    /// encoded (a record encoded apart reports that from
    /// [`EncodedAppend::record`] instead).
    fn new(
        world: WorldId,
        record: TickRecord,
        snapshot: Option<Snapshot>,
    ) -> Result<EncodedAppend, StorageError> {
        let tick = record.tick;
        let at_ms = record.at_ms;
        if let Some(s) = snapshot.as_ref().filter(|s| s.tick != tick) {
            return Err(StorageError::SnapshotOutOfRange {
                world,
                tick: s.tick,
            });
        }
        let entities = record.entities();
        let changes = record
            .changes
            .iter()
            .map(|c| (c.kind(), c.entity()))
            .collect();
        let estimated = estimated_bytes(&record.changes);
        let changes_full: Arc<[autoresearch_core::Change]> = Arc::from(record.changes);
        let record = if estimated >= ENCODE_APART_FROM {
            let shared = changes_full.clone();
            // Encoded from the shared changes, not a copy of them.
            let job = move || encoding::encode_changes(at_ms, &shared);
            match std::thread::Builder::new()
                .name("record-encoder".into())
                .spawn(job)
            {
                Ok(handle) => RecordBytes::running(handle),
                // No thread to be had: encode here.
                Err(_) => RecordBytes::done(encoding::encode_changes(at_ms, &changes_full)),
            }
        } else {
            // Encoded whole only if the writer stores it whole: an update
            // tick's record is usually stored with deltas
            // (`stored::LastSets::encode`), so its whole encoding (and
            // compression) would be thrown away.
            RecordBytes::lazy()
        };
        let snapshot = snapshot
            .map(encoding::encode_snapshot)
            .transpose()
            .map_err(|r| encode_failed(world, tick, "snapshot", r))?;
        Ok(EncodedAppend {
            tick,
            world,
            at_ms,
            record,
            estimated,
            entities,
            changes,
            snapshot,
            changes_full,
        })
    }

    /// The record encoded whole, waiting for its thread when it is encoded
    /// apart, encoding it here on the first call for a small record.
    /// Errors: the record could not be encoded (or its thread panicked).
    /// Such a failure is met after the batch's first writes, so it is a
    /// [`Failure::Aborted`]: the whole transaction is dropped.
    pub(crate) fn record(&self) -> Result<&[u8], Failure> {
        let done = self.record.done.get_or_init(|| {
            let handle = self
                .record
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            match handle {
                Some(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("the thread encoding it panicked".to_string())),
                None if self.record.lazy => {
                    encoding::encode_changes(self.at_ms, &self.changes_full)
                }
                None => Err("its encoding was lost".to_string()),
            }
        });
        match done {
            Ok(bytes) => Ok(bytes),
            Err(reason) => Err(Failure::Aborted(encode_failed(
                self.world,
                self.tick,
                "record",
                reason.clone(),
            ))),
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        let record = match self.record.done.get() {
            Some(Ok(bytes)) => bytes.len(),
            _ => self.estimated,
        };
        record
            + self.entities.len() * 8
            + self.changes.len() * 16
            + self.snapshot.as_ref().map_or(0, Vec::len)
    }
}

impl RecordBytes {
    fn done(bytes: Result<Vec<u8>, String>) -> RecordBytes {
        RecordBytes {
            done: std::sync::OnceLock::from(bytes),
            running: Mutex::new(None),
            lazy: false,
        }
    }

    fn running(handle: Encoding) -> RecordBytes {
        RecordBytes {
            done: std::sync::OnceLock::new(),
            running: Mutex::new(Some(handle)),
            lazy: false,
        }
    }

    /// Not encoded until asked for.
    fn lazy() -> RecordBytes {
        RecordBytes {
            done: std::sync::OnceLock::new(),
            running: Mutex::new(None),
            lazy: true,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod current_tests;

#[cfg(test)]
mod current_layout_tests;

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod series_tests;

#[cfg(test)]
mod parts_tests;

#[cfg(test)]
mod delta_tests;

#[cfg(test)]
mod span_tests;

#[cfg(test)]
mod small_tick_tests;

#[cfg(test)]
mod bulk_tests;

#[cfg(test)]
mod columnar_tests;
