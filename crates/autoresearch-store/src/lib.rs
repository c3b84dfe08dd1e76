//! autoresearch-store: the redb implementation of `autoresearch_core::Storage`.
//!
//! One redb file holds many worlds: a catalogue of worlds (name, parent, fork
//! tick, head), each world's tick records and snapshots keyed by
//! `(world, tick)`, and an index from entity to the ticks that changed it.
//! The layout and every value encoding live in the private `encoding` module; the file format
//! is described in `docs/ledger-format.md`.
//!
//! - Durable by default: when `append` returns `Ok`, the tick has been
//!   fsynced and survives a kill -9.
//! - Group commit: one writer thread applies every queued write in one redb
//!   transaction, so concurrent appenders share fsyncs.
//! - Several processes may open one file at once (redb's multi-writer mode);
//!   the head + 1 check runs inside the write transaction, against the file's
//!   latest commit, so racing writers in different processes are refused
//!   with `Conflict`, never interleaved.
//! - All redb work runs on the writer thread or on `spawn_blocking`, never on
//!   the async executor.
//!
//! It depends on autoresearch-core only. Reads through fork lineage (time
//! travel, entity history) are core's, written once above the trait.

mod encoding;
mod writer;

pub use encoding::FORMAT_VERSION;

use async_trait::async_trait;
use autoresearch_core::{
    EntityId, Snapshot, Storage, StorageError, Tick, TickRecord, WorldId, WorldInfo,
};
use encoding::{
    ENTITY_TICKS, FORMAT_KEY, META, RECORDS, SNAPSHOTS, TABLE_NAMES, WORLD_NAMES, WORLDS,
};
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    // Field order matters: the writer joins its thread before the database
    // handle is released.
    writer: Writer,
    db: Arc<Database>,
    path: PathBuf,
    snapshot_interval: Option<u64>,
}

/// A failed step: either a storage-level refusal or a redb error.
pub(crate) enum Failure {
    Storage(StorageError),
    Db(redb::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Failure::Storage(e)
    }
}

impl Failure {
    fn into_error(self, context: impl FnOnce() -> String) -> StorageError {
        match self {
            Failure::Storage(e) => e,
            Failure::Db(e) => StorageError::Backend {
                context: context(),
                reason: e.to_string(),
            },
        }
    }

    /// The error as reported to each member of a failed batch.
    pub(crate) fn clone_as_error(&self, context: &str) -> StorageError {
        StorageError::Backend {
            context: context.to_string(),
            reason: match self {
                Failure::Storage(e) => e.to_string(),
                Failure::Db(e) => e.to_string(),
            },
        }
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

fn open_error(path: &Path, e: DatabaseError) -> StorageError {
    let path = path.display().to_string();
    match e {
        DatabaseError::DatabaseAlreadyOpen => StorageError::Locked {
            path,
            reason: "another process (or handle) has it open in exclusive mode".into(),
        },
        DatabaseError::LockProtocolMismatch => StorageError::Locked {
            path,
            reason: "a process built with an incompatible redb version has it open".into(),
        },
        other => StorageError::Backend {
            context: format!("opening ledger {path}"),
            reason: other.to_string(),
        },
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
            return Err(StorageError::Backend {
                context: format!("opening ledger {display}"),
                reason: "non-durable commits need Sharing::Exclusive: other processes could \
                         not see them"
                    .into(),
            });
        }
        if config.snapshot_interval == Some(0) {
            return Err(StorageError::Backend {
                context: format!("opening ledger {display}"),
                reason: "snapshot_interval must be at least 1 (None: never)".into(),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::Backend {
                context: format!("creating the directory of ledger {display}"),
                reason: e.to_string(),
            })?;
        }
        let mut builder = Database::builder();
        builder.set_cache_size(config.cache_bytes);
        builder.set_concurrency_mode(match config.sharing {
            Sharing::MultiProcess => ConcurrencyMode::MultiWriter,
            Sharing::Exclusive => ConcurrencyMode::ExclusiveWriter,
        });
        let db = builder.create(path).map_err(|e| open_error(path, e))?;
        ensure_schema(&db, &display)?;
        let db = Arc::new(db);
        let writer = Writer::start(
            db.clone(),
            BatchLimits {
                max_ops: config.max_batch_ops.max(1),
                max_bytes: config.max_batch_bytes.max(1),
                max_wait: config.max_batch_wait,
                durable: config.durable,
            },
            display,
        )?;
        Ok(RedbStorage {
            writer,
            db,
            path: path.to_path_buf(),
            snapshot_interval: config.snapshot_interval,
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
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
    /// called outside a tokio runtime).
    async fn read<T, C, F>(&self, context: C, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        C: FnOnce() -> String,
        F: FnOnce(&ReadTransaction) -> Result<T, Failure> + Send + 'static,
    {
        let db = self.db.clone();
        let job = move || -> Result<T, Failure> {
            let txn = db.begin_read()?;
            f(&txn)
        };
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.spawn_blocking(job).await.unwrap_or_else(|e| {
                Err(Failure::Storage(StorageError::Backend {
                    context: format!("reading ledger {}", self.path.display()),
                    reason: format!("read task failed: {e}"),
                }))
            }),
            Err(_) => job(),
        };
        result.map_err(|e| {
            e.into_error(|| format!("{} in ledger {}", context(), self.path.display()))
        })
    }

    /// Queues a write and waits for its group commit.
    async fn write<T>(&self, make: impl FnOnce(writer::Reply<T>) -> Op) -> Result<T, StorageError> {
        let (tx, rx) = oneshot::channel();
        self.writer.submit(make(tx))?;
        rx.await.map_err(|_| self.writer.stopped())?
    }
}

/// A tick record (and its snapshot) encoded for the writer.
struct EncodedAppend {
    world: WorldId,
    tick: Tick,
    record: Vec<u8>,
    entities: Vec<EntityId>,
    snapshot: Option<Vec<u8>>,
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
        let record =
            encoding::encode_record(record).map_err(|r| encode_failed(world, tick, "record", r))?;
        let snapshot = snapshot
            .map(encoding::encode_snapshot)
            .transpose()
            .map_err(|r| encode_failed(world, tick, "snapshot", r))?;
        Ok(EncodedAppend {
            world,
            tick,
            record,
            entities,
            snapshot,
        })
    }

    fn into_op(self, reply: writer::Reply<()>) -> Op {
        Op::Append {
            world: self.world,
            tick: self.tick,
            record: self.record,
            entities: self.entities,
            snapshot: self.snapshot,
            reply,
        }
    }
}

/// Creates missing tables and checks (or records) the file's format version.
fn ensure_schema(db: &Database, path: &str) -> Result<(), StorageError> {
    let context = || format!("preparing ledger {path}");
    let check = |bytes: &[u8]| -> Result<(), StorageError> {
        let found =
            encoding::decode_file_version(bytes).map_err(|reason| StorageError::Backend {
                context: context(),
                reason,
            })?;
        if found > FORMAT_VERSION {
            return Err(StorageError::NewerFormat {
                what: format!("ledger {path}"),
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(())
    };
    // A read first, so that an up-to-date file is not written on every open.
    let ready = (|| -> Result<bool, Failure> {
        let txn = db.begin_read()?;
        let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
        if !names.iter().any(|n| n == META.name()) {
            return Ok(false);
        }
        match txn.open_table(META)?.get(FORMAT_KEY)? {
            Some(v) => check(v.value())?,
            None => return Ok(false),
        }
        Ok(TABLE_NAMES.iter().all(|t| names.iter().any(|n| n == t)))
    })()
    .map_err(|e| e.into_error(context))?;
    if ready {
        return Ok(());
    }
    (|| -> Result<(), Failure> {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let existing = meta.get(FORMAT_KEY)?.map(|v| v.value().to_vec());
            match existing {
                Some(v) => check(&v)?,
                None => {
                    meta.insert(FORMAT_KEY, encoding::encode_file_version().as_slice())?;
                }
            }
            txn.open_table(WORLDS)?;
            txn.open_table(WORLD_NAMES)?;
            txn.open_table(RECORDS)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(ENTITY_TICKS)?;
        }
        txn.commit()?;
        Ok(())
    })()
    .map_err(|e| e.into_error(context))
}

fn encode_failed(world: WorldId, tick: Tick, what: &str, reason: String) -> StorageError {
    StorageError::Backend {
        context: format!("encoding the {what} of {world} tick {tick}"),
        reason,
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
        let name = name.to_string();
        self.write(|reply| Op::Create { name, reply }).await
    }

    async fn fork_world(
        &self,
        parent: WorldId,
        at: Tick,
        name: &str,
    ) -> Result<WorldInfo, StorageError> {
        let name = name.to_string();
        self.write(|reply| Op::Fork {
            parent,
            at,
            name,
            reply,
        })
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
            move |txn| {
                let id = match table(txn, WORLD_NAMES)?.get(owned.as_str())? {
                    Some(id) => WorldId(id.value()),
                    None => return Ok(None),
                };
                load_world(&table(txn, WORLDS)?, id).map(Some)
            },
        )
        .await
    }

    async fn list_worlds(&self) -> Result<Vec<WorldInfo>, StorageError> {
        self.read(
            || "listing worlds".to_string(),
            |txn| {
                let worlds = table(txn, WORLDS)?;
                let mut out = Vec::new();
                for entry in worlds.iter()? {
                    let (k, v) = entry?;
                    let id = WorldId(k.value());
                    out.push(
                        encoding::decode_world(id, v.value())
                            .map_err(|e| e.at(id, Tick::ZERO, "catalogue entry"))?,
                    );
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
        let append = EncodedAppend::new(world, record, snapshot)?;
        self.write(|reply| append.into_op(reply)).await
    }

    /// Queues every record with the writer at once, so that group commit
    /// puts them in one transaction (one durable commit) unless a batch
    /// limit splits them; each is still checked as `head + 1` in order.
    async fn append_all(
        &self,
        world: WorldId,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<(), StorageError> {
        // Everything is encoded before anything is queued.
        let appends = records
            .into_iter()
            .map(|(record, snapshot)| EncodedAppend::new(world, record, snapshot))
            .collect::<Result<Vec<_>, _>>()?;
        let mut replies = Vec::with_capacity(appends.len());
        for append in appends {
            let (reply, rx) = oneshot::channel();
            self.writer.submit(append.into_op(reply))?;
            replies.push(rx);
        }
        for rx in replies {
            rx.await.map_err(|_| self.writer.stopped())??;
        }
        Ok(())
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
        self.write(|reply| Op::PutSnapshot {
            world,
            tick,
            snapshot,
            reply,
        })
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
}

#[cfg(test)]
mod tests;
