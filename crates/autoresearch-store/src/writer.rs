//! The group-commit writer: one dedicated thread owns every redb write
//! transaction of a [`crate::RedbStorage`].
//!
//! Callers (async tasks) send encoded operations over a channel and await a
//! reply. The thread takes whatever is queued, up to the configured limits,
//! applies it in one write transaction and commits once, so concurrent
//! appenders share a commit (and its fsyncs) instead of paying one each.
//! A lone writer commits at once. When several worlds have been appending,
//! a batch waits up to `max_wait` for those of them not yet queued (they are
//! usually a few microseconds from their next tick), so that concurrent
//! appenders share one commit instead of alternating between two.
//!
//! Each operation is validated (world exists, tick is head + 1, ...) inside
//! the transaction before it writes anything, so a refused operation leaves
//! no trace and does not affect its batch-mates. A redb failure aborts the
//! whole transaction and is reported to every operation in it: nothing of a
//! failed batch is stored.

use crate::encoding::{self, ENTITY_TICKS, INDEX_CHUNK, RECORDS, SNAPSHOTS, WORLD_NAMES, WORLDS};
use crate::{Failure, load_world};
use autoresearch_core::{EntityId, ForkPoint, StorageError, Tick, WorldId, WorldInfo, now_ms};
use redb::{Database, Durability, ReadableTable, Table};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// One write, encoded and ready for the writer thread.
pub(crate) enum Op {
    Create {
        name: String,
        reply: Reply<WorldInfo>,
    },
    Fork {
        parent: WorldId,
        at: Tick,
        name: String,
        reply: Reply<WorldInfo>,
    },
    Append {
        world: WorldId,
        tick: Tick,
        record: Vec<u8>,
        entities: Vec<EntityId>,
        snapshot: Option<Vec<u8>>,
        reply: Reply<()>,
    },
    PutSnapshot {
        world: WorldId,
        tick: Tick,
        snapshot: Vec<u8>,
        reply: Reply<()>,
    },
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Create { name, .. } | Op::Fork { name, .. } => name.len() + 64,
            Op::Append {
                record,
                entities,
                snapshot,
                ..
            } => record.len() + entities.len() * 24 + snapshot.as_ref().map_or(0, Vec::len),
            Op::PutSnapshot { snapshot, .. } => snapshot.len(),
        }
    }
}

/// What an applied operation hands back.
enum Done {
    Info(WorldInfo),
    Unit,
}

/// Limits of one group commit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchLimits {
    pub max_ops: usize,
    pub max_bytes: usize,
    /// How long a batch may wait for appenders that were active recently.
    pub max_wait: Duration,
    pub durable: bool,
}

/// Handle on the writer thread. Dropping it lets queued work finish, then
/// joins the thread.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
    path: String,
}

impl Writer {
    pub(crate) fn start(
        db: Arc<Database>,
        limits: BatchLimits,
        path: String,
    ) -> Result<Writer, StorageError> {
        let (tx, rx) = mpsc::channel::<Op>();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || run(&db, &rx, limits, &thread_path))
            .map_err(|e| StorageError::Backend {
                context: format!("starting the writer thread of ledger {path}"),
                reason: e.to_string(),
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            path,
        })
    }

    /// Queues `op`. Errors only when the writer thread is gone.
    pub(crate) fn submit(&self, op: Op) -> Result<(), StorageError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(op).ok())
            .ok_or_else(|| self.stopped())
    }

    /// The error for a writer that can take no more work.
    pub(crate) fn stopped(&self) -> StorageError {
        StorageError::Backend {
            context: format!("writing to ledger {}", self.path),
            reason: "the ledger's writer thread has stopped".into(),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Op>, limits: BatchLimits, path: &str) {
    // Worlds that appended in the last two batches: how many appenders are
    // active, and so how many appends a batch should wait for.
    let mut recent: [HashSet<WorldId>; 2] = Default::default();
    while let Ok(first) = rx.recv() {
        let mut batch = Batch::new(first);
        while !batch.full(&limits) {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // Appenders that were in the previous batches are probably preparing
        // their next tick right now. Waiting a moment for them lets them
        // share this commit instead of each missing it by a hair and paying
        // for the next one. A lone appender never waits.
        let active = recent[0].union(&recent[1]).count();
        if batch.appenders.len() < active && !limits.max_wait.is_zero() {
            let deadline = Instant::now() + limits.max_wait;
            while batch.appenders.len() < active && !batch.full(&limits) {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
        }
        recent.swap(0, 1);
        recent[1] = std::mem::take(&mut batch.appenders);
        // A panic inside redb must not take the thread down with it: the
        // batch's reply channels are dropped while unwinding, so its callers
        // get an error, and later batches start a fresh transaction.
        let ops = batch.ops;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit_batch(db, ops, limits.durable, path)
        }));
    }
}

/// The operations of one group commit being gathered.
struct Batch {
    ops: Vec<Op>,
    bytes: usize,
    appenders: HashSet<WorldId>,
}

impl Batch {
    fn new(first: Op) -> Batch {
        let mut b = Batch {
            ops: Vec::new(),
            bytes: 0,
            appenders: HashSet::new(),
        };
        b.push(first);
        b
    }

    fn push(&mut self, op: Op) {
        self.bytes += op.bytes();
        if let Op::Append { world, .. } = &op {
            self.appenders.insert(*world);
        }
        self.ops.push(op);
    }

    fn full(&self, limits: &BatchLimits) -> bool {
        self.ops.len() >= limits.max_ops || self.bytes >= limits.max_bytes
    }
}

struct Tables<'t> {
    worlds: Table<'t, u64, &'static [u8]>,
    names: Table<'t, &'static str, u64>,
    records: Table<'t, (u64, u64), &'static [u8]>,
    snapshots: Table<'t, (u64, u64), &'static [u8]>,
    index: Table<'t, (u64, u64, u64), u64>,
}

fn commit_batch(db: &Database, ops: Vec<Op>, durable: bool, path: &str) {
    let outcome = (|| -> Result<Vec<Result<Done, StorageError>>, Failure> {
        let mut txn = db.begin_write()?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(redb::Error::from)?;
        }
        let results = {
            let mut t = Tables {
                worlds: txn.open_table(WORLDS)?,
                names: txn.open_table(WORLD_NAMES)?,
                records: txn.open_table(RECORDS)?,
                snapshots: txn.open_table(SNAPSHOTS)?,
                index: txn.open_table(ENTITY_TICKS)?,
            };
            let mut results = Vec::with_capacity(ops.len());
            for op in &ops {
                results.push(match apply(&mut t, op) {
                    Ok(done) => Ok(done),
                    Err(Failure::Storage(e)) => Err(e),
                    Err(db) => return Err(db),
                });
            }
            results
        };
        txn.commit()?;
        Ok(results)
    })();
    match outcome {
        Ok(results) => {
            for (op, result) in ops.into_iter().zip(results) {
                reply(op, result);
            }
        }
        Err(failure) => {
            let context = format!(
                "committing {} queued write(s) to ledger {path}; none was stored",
                ops.len()
            );
            for op in ops {
                reply(op, Err(failure.clone_as_error(&context)));
            }
        }
    }
}

fn reply(op: Op, result: Result<Done, StorageError>) {
    // A caller that stopped waiting (its future was dropped) is no error.
    match op {
        Op::Create { reply, .. } | Op::Fork { reply, .. } => {
            let _ = reply.send(result.and_then(|d| match d {
                Done::Info(info) => Ok(info),
                Done::Unit => Err(internal("a world operation returned no world")),
            }));
        }
        Op::Append { reply, .. } | Op::PutSnapshot { reply, .. } => {
            let _ = reply.send(result.map(|_| ()));
        }
    }
}

fn internal(reason: &str) -> StorageError {
    StorageError::Backend {
        context: "ledger writer".into(),
        reason: reason.into(),
    }
}

fn encode_world(info: &WorldInfo) -> Result<Vec<u8>, Failure> {
    encoding::encode_world(info).map_err(|reason| {
        Failure::Storage(StorageError::Backend {
            context: format!("encoding the catalogue entry of {}", info.id),
            reason,
        })
    })
}

fn add_world(t: &mut Tables<'_>, name: &str, parent: Option<ForkPoint>) -> Result<Done, Failure> {
    if t.names.get(name)?.is_some() {
        return Err(StorageError::NameTaken(name.to_string()).into());
    }
    let id = t.worlds.last()?.map_or(0, |(k, _)| k.value() + 1);
    let info = WorldInfo {
        id: WorldId(id),
        name: name.to_string(),
        head: parent.map_or(Tick::ZERO, |p| p.tick),
        parent,
        created_at_ms: now_ms(),
    };
    let bytes = encode_world(&info)?;
    t.worlds.insert(id, bytes.as_slice())?;
    t.names.insert(name, id)?;
    Ok(Done::Info(info))
}

/// Applies one operation. Every check runs before the first write, so an
/// `Err(Failure::Storage)` leaves the transaction as it found it.
fn apply(t: &mut Tables<'_>, op: &Op) -> Result<Done, Failure> {
    match op {
        Op::Create { name, .. } => add_world(t, name, None),
        Op::Fork {
            parent, at, name, ..
        } => {
            let p = load_world(&t.worlds, *parent)?;
            if *at > p.head {
                return Err(StorageError::ForkBeyondHead {
                    world: *parent,
                    at: *at,
                    head: p.head,
                }
                .into());
            }
            add_world(
                t,
                name,
                Some(ForkPoint {
                    parent: *parent,
                    tick: *at,
                }),
            )
        }
        Op::Append {
            world,
            tick,
            record,
            entities,
            snapshot,
            ..
        } => {
            let mut info = load_world(&t.worlds, *world)?;
            if *tick != info.head.next() {
                return Err(StorageError::Conflict {
                    world: *world,
                    attempted: *tick,
                    head: info.head,
                }
                .into());
            }
            info.head = *tick;
            let entry = encode_world(&info)?;
            let (w, k) = (world.0, tick.0);
            if k % INDEX_CHUNK == 0 {
                close_index_chunk(t, &info, *tick, entities)?;
            }
            t.records.insert((w, k), record.as_slice())?;
            if let Some(s) = snapshot {
                t.snapshots.insert((w, k), s.as_slice())?;
            }
            t.worlds.insert(w, entry.as_slice())?;
            Ok(Done::Unit)
        }
        Op::PutSnapshot {
            world,
            tick,
            snapshot,
            ..
        } => {
            let info = load_world(&t.worlds, *world)?;
            if *tick < info.first_own_tick() || *tick > info.head {
                return Err(StorageError::SnapshotOutOfRange {
                    world: *world,
                    tick: *tick,
                }
                .into());
            }
            t.snapshots.insert((world.0, tick.0), snapshot.as_slice())?;
            Ok(Done::Unit)
        }
    }
}

/// Writes the entity index of the chunk that `tick` completes: the masks of
/// every entity changed by the world's own ticks in it. The earlier ticks'
/// entities come from their stored records, so this is right whichever
/// process appended them. Checks (decoding) run before the first write.
fn close_index_chunk(
    t: &mut Tables<'_>,
    info: &WorldInfo,
    tick: Tick,
    entities: &[EntityId],
) -> Result<(), Failure> {
    let (chunk, _) = encoding::index_slot(tick);
    let w = info.id.0;
    let from = (chunk * INDEX_CHUNK + 1).max(info.first_own_tick().0);
    let mut masks: std::collections::BTreeMap<u64, u64> = Default::default();
    for entry in t.records.range((w, from)..(w, tick.0))? {
        let (k, v) = entry?;
        let at = Tick(k.value().1);
        let (_, bit) = encoding::index_slot(at);
        let touched = encoding::record_entities(at, v.value())
            .map_err(|e| e.at(info.id, at, "tick record"))?;
        for e in touched {
            *masks.entry(e.0).or_default() |= bit;
        }
    }
    let (_, bit) = encoding::index_slot(tick);
    for e in entities {
        *masks.entry(e.0).or_default() |= bit;
    }
    for (e, mask) in masks {
        t.index.insert((w, chunk, e), mask)?;
    }
    Ok(())
}
