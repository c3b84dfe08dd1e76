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

mod current;
mod encoding;
mod failure;
mod writer;

pub use encoding::{FORMAT_VERSION, VALUE_VERSION};

use async_trait::async_trait;
use autoresearch_core::{
    ChangeKind, EntityId, Snapshot, Storage, StorageError, Tick, TickRecord, WorldId, WorldInfo,
};
use encoding::{
    ENTITY_TICKS, FORMAT_KEY, LIVENESS, META, RECORDS, SNAPSHOTS, TABLE_NAMES, WORLD_NAMES, WORLDS,
};
pub(crate) use failure::*;
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
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
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(db)));
    }
}

/// The catalogue entry of `id`, from any view of the `worlds` table.
pub(crate) fn load_world<T: ReadableTable<u64, &'static [u8]>>(
    worlds: &T,
    id: WorldId,
) -> Result<WorldInfo, Failure> {
    let guard = worlds.get(id.0)?.ok_or(StorageError::NoSuchWorld(id))?;
    encoding::decode_world(id, guard.value())
        .map_err(|e| e.at(id, Tick::ZERO, "catalogue entry").into())
}

/// The world named `name`, from any view of the catalogue and its name
/// index, checked against each other: `Ok(None)` only when both agree that
/// no world has that name. A name entry pointing at a world of another
/// name, a world missing from the index, an index and a catalogue of
/// different sizes, or a catalogue entry that does not decode is
/// `Corrupt`: never "no such world", which would let a caller create a
/// second world of that name. Cost: one point read when the name exists,
/// a scan of the catalogue (one entry per world) when it does not.
pub(crate) fn find_name<W, N>(
    worlds: &W,
    names: &N,
    name: &str,
) -> Result<Option<WorldInfo>, Failure>
where
    W: ReadableTable<u64, &'static [u8]>,
    N: ReadableTable<&'static str, u64>,
{
    let corrupt = |world: WorldId, reason: String| {
        Failure::Storage(StorageError::Corrupt {
            world,
            tick: Tick::ZERO,
            reason: format!("world catalogue: {reason}"),
        })
    };
    if let Some(id) = names.get(name)? {
        let id = WorldId(id.value());
        let info = match load_world(worlds, id) {
            Err(Failure::Storage(StorageError::NoSuchWorld(_))) => {
                return Err(corrupt(
                    id,
                    format!("the name {name:?} points at a missing world"),
                ));
            }
            other => other?,
        };
        if info.name != name {
            return Err(corrupt(
                id,
                format!("the name {name:?} points at a world named {:?}", info.name),
            ));
        }
        return Ok(Some(info));
    }
    for entry in worlds.iter()? {
        let (k, v) = entry?;
        let id = WorldId(k.value());
        let info = encoding::decode_world(id, v.value())
            .map_err(|e| Failure::from(e.at(id, Tick::ZERO, "catalogue entry")))?;
        if info.name == name {
            return Err(corrupt(id, format!("the name index lacks {name:?}")));
        }
    }
    let (w, n) = (worlds.len()?, names.len()?);
    if w != n {
        return Err(corrupt(
            WorldId(0),
            format!("{w} worlds but {n} names in the name index"),
        ));
    }
    Ok(None)
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
        let db = sink.contain(&format!("opening ledger {display}"), || {
            let mut builder = Database::builder();
            builder.set_cache_size(config.cache_bytes);
            builder.set_concurrency_mode(match config.sharing {
                Sharing::MultiProcess => ConcurrencyMode::MultiWriter,
                Sharing::Exclusive => ConcurrencyMode::ExclusiveWriter,
            });
            let db = builder.create(path).map_err(|e| open_error(path, e))?;
            ensure_schema(&db, &sink)?;
            Ok(db)
        })?;
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
        })
    }

    /// Whether this handle was opened with [`RedbStorage::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.sink.path
    }

    /// Bytes each table of the ledger occupies. Cost: one read transaction.
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
                        _ => txn.open_table(ENTITY_TICKS)?.stats()?,
                    };
                    out.push(TableBytes {
                        name: name.to_string(),
                        stored: stats.stored_bytes(),
                        metadata: stats.metadata_bytes(),
                        fragmented: stats.fragmented_bytes(),
                    });
                }
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
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let txn = db.begin_read()?;
                f(&txn)
            }))
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
pub(crate) struct EncodedAppend {
    pub(crate) tick: Tick,
    pub(crate) record: Vec<u8>,
    /// The distinct entities the record touches (for the entity index).
    pub(crate) entities: Vec<EntityId>,
    /// What each change does to which entity, in order (for the check).
    pub(crate) changes: Vec<(ChangeKind, EntityId)>,
    pub(crate) snapshot: Option<Vec<u8>>,
    /// The record's changes, for the current state (`current`).
    pub(crate) changes_full: Vec<autoresearch_core::Change>,
}

impl EncodedAppend {
    /// Errors: a snapshot of another tick, or a value that cannot be encoded.
    fn new(
        world: WorldId,
        record: TickRecord,
        snapshot: Option<Snapshot>,
    ) -> Result<EncodedAppend, StorageError> {
        let tick = record.tick;
        if let Some(s) = snapshot.as_ref().filter(|s| s.tick != tick) {
            return Err(StorageError::SnapshotOutOfRange {
                world,
                tick: s.tick,
            });
        }
        let entities = record.entities();
        let changes_full = record.changes.clone();
        let changes = record
            .changes
            .iter()
            .map(|c| (c.kind(), c.entity()))
            .collect();
        let record =
            encoding::encode_record(record).map_err(|r| encode_failed(world, tick, "record", r))?;
        let snapshot = snapshot
            .map(encoding::encode_snapshot)
            .transpose()
            .map_err(|r| encode_failed(world, tick, "snapshot", r))?;
        Ok(EncodedAppend {
            tick,
            record,
            entities,
            changes,
            snapshot,
            changes_full,
        })
    }

    pub(crate) fn bytes(&self) -> usize {
        self.record.len()
            + self.entities.len() * 8
            + self.changes.len() * 16
            + self.snapshot.as_ref().map_or(0, Vec::len)
    }
}

/// Checks the file's format version: newer files are refused.
/// Returns the version, `None` for a file without one (no `meta` table).
fn check_version(db: &impl ReadableDatabase, sink: &ErrorSink) -> Result<Option<u8>, StorageError> {
    let path = sink.path.display().to_string();
    let context = || format!("reading the format version of ledger {path}");
    let txn = db
        .begin_read()
        .map_err(|e| sink.error(Failure::from(e), context))?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(sink.error(e.into(), context)),
    };
    let Some(v) = meta
        .get(FORMAT_KEY)
        .map_err(|e| sink.error(e.into(), context))?
    else {
        return Ok(None);
    };
    let found =
        encoding::decode_file_version(v.value()).map_err(|reason| StorageError::Backend {
            context: context(),
            source: reason.into(),
        })?;
    if found > FORMAT_VERSION {
        return Err(StorageError::NewerFormat {
            what: format!("ledger {path}"),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(Some(found))
}

/// Creates missing tables and checks (or records) the file's format
/// version; upgrades a format 1 file (fills `liveness` from the records).
fn ensure_schema(db: &Database, sink: &ErrorSink) -> Result<(), StorageError> {
    let path = sink.path.display().to_string();
    let context = || format!("preparing ledger {path}");
    // A read first, so that an up-to-date file is not written on every open.
    let version = check_version(db, sink)?;
    if version == Some(FORMAT_VERSION) {
        let names = (|| -> Result<Vec<String>, Failure> {
            let txn = db.begin_read()?;
            Ok(txn.list_tables()?.map(|t| t.name().to_string()).collect())
        })()
        .map_err(|e| sink.error(e, context))?;
        if TABLE_NAMES.iter().all(|t| names.iter().any(|n| n == t)) {
            return Ok(());
        }
    }
    (|| -> Result<(), Failure> {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let existing = meta.get(FORMAT_KEY)?.map(|v| v.value().to_vec());
            let found = match existing {
                Some(v) => {
                    encoding::decode_file_version(&v).map_err(|reason| StorageError::Backend {
                        context: context(),
                        source: reason.into(),
                    })?
                }
                None => FORMAT_VERSION,
            };
            if found > FORMAT_VERSION {
                return Err(StorageError::NewerFormat {
                    what: format!("ledger {path}"),
                    found,
                    supported: FORMAT_VERSION,
                }
                .into());
            }
            txn.open_table(WORLDS)?;
            txn.open_table(WORLD_NAMES)?;
            let records = txn.open_table(RECORDS)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(ENTITY_TICKS)?;
            let had_liveness = txn.list_tables()?.any(|t| t.name() == LIVENESS.name());
            let mut liveness = txn.open_table(LIVENESS)?;
            if found < 2 || !had_liveness {
                // Format 1 had no liveness table: derive it from the log
                // (checked inside the write transaction, so two processes
                // upgrading at once do it once).
                for entry in records.iter()? {
                    let (k, v) = entry?;
                    let (w, tick) = k.value();
                    let changes = encoding::record_liveness(Tick(tick), v.value())
                        .map_err(|e| e.at(WorldId(w), Tick(tick), "tick record"))?;
                    for (e, alive) in changes {
                        liveness.insert((w, e.0, tick), alive)?;
                    }
                }
            }
            meta.insert(FORMAT_KEY, encoding::encode_file_version().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    })()
    .map_err(|e| sink.error(e, context))
}

fn encode_failed(world: WorldId, tick: Tick, what: &str, reason: String) -> StorageError {
    StorageError::Backend {
        context: format!("encoding the {what} of {world} tick {tick}"),
        source: reason.into(),
    }
}

/// Opens a table in a read transaction; keeps the type noise in one place.
fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<'static, K, V>,
) -> Result<redb::ReadOnlyTable<K, V>, Failure> {
    Ok(txn.open_table(def)?)
}

#[async_trait]
impl Storage for RedbStorage {
    async fn create_world(&self, name: &str) -> Result<WorldInfo, StorageError> {
        let owned = name.to_string();
        self.write(
            || format!("creating world {name:?}"),
            |reply| Op::Create { name: owned, reply },
        )
        .await
    }

    async fn fork_world(
        &self,
        parent: WorldId,
        at: Tick,
        name: &str,
    ) -> Result<WorldInfo, StorageError> {
        let name = name.to_string();
        self.write(
            || format!("forking {parent} at tick {at}"),
            |reply| Op::Fork {
                parent,
                at,
                name,
                reply,
            },
        )
        .await
    }

    async fn world(&self, id: WorldId) -> Result<WorldInfo, StorageError> {
        self.read(
            || format!("reading the catalogue entry of {id}"),
            move |txn| load_world(&table(txn, WORLDS)?, id),
        )
        .await
    }

    async fn find_world(&self, name: &str) -> Result<Option<WorldInfo>, StorageError> {
        let owned = name.to_string();
        self.read(
            || format!("looking up world {name:?}"),
            move |txn| find_name(&table(txn, WORLDS)?, &table(txn, WORLD_NAMES)?, &owned),
        )
        .await
    }

    async fn list_worlds(&self) -> Result<Vec<WorldInfo>, StorageError> {
        self.read(
            || "listing worlds".to_string(),
            |txn| {
                let worlds = table(txn, WORLDS)?;
                let names = table(txn, WORLD_NAMES)?;
                let mut out = Vec::new();
                for entry in worlds.iter()? {
                    let (k, v) = entry?;
                    let id = WorldId(k.value());
                    let info = encoding::decode_world(id, v.value())
                        .map_err(|e| e.at(id, Tick::ZERO, "catalogue entry"))?;
                    // Each listed world must be found again by its name (a
                    // damaged B-tree can list keys a look-up cannot reach).
                    match find_name(&worlds, &names, &info.name)? {
                        Some(found) if found.id == id => out.push(info),
                        _ => {
                            return Err(StorageError::Corrupt {
                                world: id,
                                tick: Tick::ZERO,
                                reason: format!(
                                    "world catalogue: {:?} is listed but a look-up does not find it",
                                    info.name
                                ),
                            }
                            .into());
                        }
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    async fn append(
        &self,
        world: WorldId,
        record: TickRecord,
        snapshot: Option<Snapshot>,
    ) -> Result<(), StorageError> {
        self.append_all(world, vec![(record, snapshot)]).await
    }

    /// The records go to the writer as one operation: checked together
    /// inside the write transaction and stored together, or not at all.
    async fn append_all(
        &self,
        world: WorldId,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let first = records[0].0.tick;
        // Everything is encoded before anything is queued.
        let appends = records
            .into_iter()
            .map(|(record, snapshot)| EncodedAppend::new(world, record, snapshot))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(
            || format!("appending tick {first} of {world}"),
            |reply| Op::Append {
                world,
                appends,
                reply,
            },
        )
        .await
    }

    fn location(&self) -> String {
        format!("ledger {}", self.sink.path.display())
    }

    async fn read_own_records(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
    ) -> Result<Vec<TickRecord>, StorageError> {
        self.read(
            || format!("reading ticks {from}..={to} of {world}"),
            move |txn| {
                load_world(&table(txn, WORLDS)?, world)?;
                let mut out = Vec::new();
                if from > to {
                    return Ok(out);
                }
                let records = table(txn, RECORDS)?;
                for entry in records.range((world.0, from.0)..=(world.0, to.0))? {
                    let (k, v) = entry?;
                    let tick = Tick(k.value().1);
                    out.push(
                        encoding::decode_record(tick, v.value())
                            .map_err(|e| e.at(world, tick, "tick record"))?,
                    );
                }
                Ok(out)
            },
        )
        .await
    }

    async fn own_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
    ) -> Result<Option<Snapshot>, StorageError> {
        self.read(
            || format!("reading the snapshot at or before tick {at} of {world}"),
            move |txn| {
                load_world(&table(txn, WORLDS)?, world)?;
                let snapshots = table(txn, SNAPSHOTS)?;
                let Some(entry) = snapshots.range((world.0, 0)..=(world.0, at.0))?.next_back()
                else {
                    return Ok(None);
                };
                let (k, v) = entry?;
                let tick = Tick(k.value().1);
                let snapshot = encoding::decode_snapshot(tick, v.value())
                    .map_err(|e| e.at(world, tick, "snapshot"))?;
                Ok(Some(snapshot))
            },
        )
        .await
    }

    async fn put_snapshot(&self, world: WorldId, snapshot: Snapshot) -> Result<(), StorageError> {
        let tick = snapshot.tick;
        let snapshot = encoding::encode_snapshot(snapshot)
            .map_err(|r| encode_failed(world, tick, "snapshot", r))?;
        self.write(
            || format!("storing a snapshot of {world} tick {tick}"),
            |reply| Op::PutSnapshot {
                world,
                tick,
                snapshot,
                reply,
            },
        )
        .await
    }

    async fn delete_world(&self, world: WorldId) -> Result<(), StorageError> {
        self.write(
            || format!("deleting {world}"),
            |reply| Op::Delete { world, reply },
        )
        .await
    }

    async fn own_entity_ticks(
        &self,
        world: WorldId,
        entity: EntityId,
        to: Tick,
    ) -> Result<Vec<Tick>, StorageError> {
        self.read(
            || format!("reading the ticks that changed {entity} in {world}"),
            move |txn| {
                let info = load_world(&table(txn, WORLDS)?, world)?;
                let to = to.min(info.head);
                let first = info.first_own_tick();
                let mut out = Vec::new();
                if to < first {
                    return Ok(out);
                }
                // Completed chunks from the index, one point read each.
                let (first_chunk, _) = encoding::index_slot(first);
                let (to_chunk, _) = encoding::index_slot(to);
                let closed = info.head.0 / encoding::INDEX_CHUNK;
                let index = table(txn, ENTITY_TICKS)?;
                for chunk in first_chunk..=to_chunk.min(closed.saturating_sub(1)) {
                    if closed == 0 {
                        break;
                    }
                    if let Some(mask) = index.get((world.0, chunk, entity.0))? {
                        out.extend(
                            encoding::index_ticks(chunk, mask.value())
                                .filter(|t| *t >= first && *t <= to),
                        );
                    }
                }
                // The unfinished chunk, from its records.
                let tail = Tick((closed * encoding::INDEX_CHUNK + 1).max(first.0));
                if tail <= to {
                    let records = table(txn, RECORDS)?;
                    for entry in records.range((world.0, tail.0)..=(world.0, to.0))? {
                        let (k, v) = entry?;
                        let tick = Tick(k.value().1);
                        let touched = encoding::record_entities(tick, v.value())
                            .map_err(|e| e.at(world, tick, "tick record"))?;
                        if touched.binary_search(&entity).is_ok() {
                            out.push(tick);
                        }
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    fn snapshot_interval(&self) -> Option<u64> {
        self.snapshot_interval
    }

    /// From the `current_*` tables (see the `current` module), in one read
    /// transaction; `None` for a world that keeps none at its head.
    async fn read_current(
        &self,
        world: WorldId,
        reads: Vec<autoresearch_core::current::CurrentRead>,
    ) -> Result<Option<autoresearch_core::current::CurrentView>, StorageError> {
        self.read(
            || format!("reading the current state of {world}"),
            move |txn| current::read(txn, world, &reads),
        )
        .await
    }

    /// The ledger file's length in bytes (redb allocates in regions, so
    /// it includes free space inside the file).
    async fn size_bytes(&self) -> Result<Option<u64>, StorageError> {
        let path = self.sink.path.clone();
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) => Err(StorageError::Backend {
                context: format!("measuring ledger {}", path.display()),
                source: Box::new(e),
            }),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod current_tests;
