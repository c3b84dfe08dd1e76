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
//! appenders share one commit instead of alternating between two. A batch
//! with no append in it (a create, a fork, a delete) never waits, and a
//! fork with its first ticks counts as its parent's appender, whose handle
//! now writes the fork.
//!
//! Each operation is validated (world exists, ticks start at head + 1, each
//! tick applies to the state before it, ...) inside the transaction before
//! it writes anything, so a refused operation leaves no trace and does not
//! affect its batch-mates. One operation may carry several ticks of a world
//! (`append_all`): they are checked together and stored together or not at
//! all. A redb failure aborts the whole transaction and is reported to
//! every operation in it: nothing of a failed batch is stored. So is a
//! panic inside redb (a damaged file), which the thread contains.

use crate::{EncodedAppend, ErrorSink, Failure};
use autoresearch_core::{StorageError, Tick, WorldId, WorldInfo};
use redb::{Database, Durability};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

mod apply;
#[cfg(test)]
mod cache_tests;

use apply::{Tables, apply};

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
    /// A fork and its first own ticks, stored all or nothing.
    ForkAppend {
        parent: WorldId,
        at: Tick,
        name: String,
        appends: Vec<EncodedAppend>,
        reply: Reply<WorldInfo>,
    },
    /// A new root world and its first ticks, stored all or nothing.
    CreateAppend {
        name: String,
        appends: Vec<EncodedAppend>,
        reply: Reply<WorldInfo>,
    },
    /// Consecutive ticks of one world, stored all or nothing.
    Append {
        world: WorldId,
        appends: Vec<EncodedAppend>,
        reply: Reply<()>,
    },
    PutSnapshot {
        world: WorldId,
        tick: Tick,
        snapshot: Vec<u8>,
        reply: Reply<()>,
    },
    /// A world and everything of its own, refused while it has forks.
    Delete { world: WorldId, reply: Reply<()> },
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Create { name, .. } | Op::Fork { name, .. } => name.len() + 64,
            Op::Append { appends, .. } => appends.iter().map(EncodedAppend::bytes).sum(),
            Op::ForkAppend { name, appends, .. } | Op::CreateAppend { name, appends, .. } => {
                name.len() + 64 + appends.iter().map(EncodedAppend::bytes).sum::<usize>()
            }
            Op::PutSnapshot { snapshot, .. } => snapshot.len(),
            Op::Delete { .. } => 64,
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

/// What the writer thread has committed since the ledger was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// redb write transactions the writer ran (committed or failed).
    pub transactions: u64,
    /// Queued writes (appends, creates, forks, ...) those transactions
    /// carried: `writes / transactions` is the group-commit factor.
    pub writes: u64,
    /// Transactions that waited (up to `RedbConfig::max_batch_wait`) for
    /// worlds that appended recently but were not queued yet.
    pub waits: u64,
    /// Nanoseconds the writer thread spent applying queued writes inside
    /// its transactions (checks, records, current state, series: CPU and
    /// page reads), from `begin_write` to just before `commit`.
    pub apply_ns: u64,
    /// Nanoseconds the writer thread spent in redb's `commit` (writing the
    /// dirty pages, and the fsync of a durable commit).
    pub commit_ns: u64,
}

/// Counters the writer thread updates and the handle reads.
#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    writes: AtomicU64,
    waits: AtomicU64,
    apply_ns: AtomicU64,
    commit_ns: AtomicU64,
}

/// Handle on the writer thread. Dropping it lets queued work finish, then
/// joins the thread.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
    path: String,
    counters: Arc<Counters>,
}

impl Writer {
    pub(crate) fn start(
        db: Arc<Database>,
        limits: BatchLimits,
        sink: ErrorSink,
    ) -> Result<Writer, StorageError> {
        let (tx, rx) = mpsc::channel::<Op>();
        let path = sink.path.display().to_string();
        let counters = Arc::new(Counters::default());
        let counted = counters.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                run(&db, &rx, limits, &sink, &counted);
                // Closing a damaged file may panic inside redb too.
                let _ = crate::catch(|| drop(db));
            })
            .map_err(|e| StorageError::Backend {
                context: format!("starting the writer thread of ledger {path}"),
                source: Box::new(e),
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            path,
            counters,
        })
    }

    /// Transactions and writes committed so far.
    pub(crate) fn stats(&self) -> CommitStats {
        CommitStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            waits: self.counters.waits.load(Ordering::Relaxed),
            apply_ns: self.counters.apply_ns.load(Ordering::Relaxed),
            commit_ns: self.counters.commit_ns.load(Ordering::Relaxed),
        }
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
            source: "the ledger's writer thread has stopped".into(),
        }
    }

    /// Lets queued work finish, then joins the thread.
    pub(crate) fn shutdown(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    db: &Database,
    rx: &mpsc::Receiver<Op>,
    limits: BatchLimits,
    sink: &ErrorSink,
    counters: &Counters,
) {
    // Worlds that appended in the last two batches: how many appenders are
    // active, and so how many appends a batch should wait for.
    let mut recent: [HashSet<WorldId>; 2] = Default::default();
    let mut caches = Caches::default();
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
        // for the next one. A lone appender never waits, nor does a batch
        // without an append (a create, a fork, a delete): its caller is not
        // one of the appenders being waited for.
        let active = recent[0].union(&recent[1]).count();
        if !batch.appenders.is_empty()
            && batch.appenders.len() < active
            && !limits.max_wait.is_zero()
        {
            counters.waits.fetch_add(1, Ordering::Relaxed);
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
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters
            .writes
            .fetch_add(batch.ops.len() as u64, Ordering::Relaxed);
        commit_batch(db, batch.ops, limits.durable, sink, &mut caches, counters);
    }
}

/// What the writer thread keeps across transactions; cleared when one
/// fails, as it may hold what that transaction wrote.
#[derive(Default)]
struct Caches {
    /// Each world's pending current-state changes, decoded
    /// (`crate::current`).
    inputs: crate::current::InputCache,
    /// The ticks that last set each value, for deltas (`crate::stored`).
    last: crate::stored::LastSets,
    /// The entities of each world's latest ticks, for the entity index.
    chunks: apply::ChunkTicks,
}

impl Caches {
    /// Forgets everything (after a failed transaction, which may have
    /// noted some of it).
    fn clear(&mut self) {
        self.inputs.clear();
        self.last.clear();
        self.chunks.clear();
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
        match &op {
            Op::Append { world, .. } => {
                self.appenders.insert(*world);
            }
            // The parent's appender goes on writing as the fork
            // (`World::commit_as_fork`): counted as the parent's, so that the
            // batch does not wait for a tick of the parent that will not come.
            Op::ForkAppend { parent, .. } => {
                self.appenders.insert(*parent);
            }
            _ => {}
        }
        self.ops.push(op);
    }

    fn full(&self, limits: &BatchLimits) -> bool {
        self.ops.len() >= limits.max_ops || self.bytes >= limits.max_bytes
    }
}
/// Runs one group commit and replies to every operation in it.
fn commit_batch(
    db: &Database,
    ops: Vec<Op>,
    durable: bool,
    sink: &ErrorSink,
    caches: &mut Caches,
    counters: &Counters,
) {
    // A panic inside redb (a damaged file) must not take the thread down:
    // it fails this batch, whose transaction is dropped uncommitted, and
    // later batches start a fresh one.
    let outcome =
        crate::catch(|| run_batch(db, &ops, durable, caches, counters)).unwrap_or_else(|panic| {
            Err(Failure::Storage(sink.damaged(
                &format!("committing {} queued write(s)", ops.len()),
                &panic,
            )))
        });
    match outcome {
        Ok(results) => {
            for (op, result) in ops.into_iter().zip(results) {
                reply(op, result.map_err(|e| sink.in_file(e)));
            }
        }
        Err(failure) => {
            // The cache may hold records of the failed transaction.
            caches.clear();
            let context = format!(
                "committing {} queued write(s) to ledger {}; none was stored",
                ops.len(),
                sink.path.display()
            );
            let error = sink.shared(failure, &context);
            for op in ops {
                reply(op, Err(error.to_error()));
            }
        }
    }
}

fn run_batch(
    db: &Database,
    ops: &[Op],
    durable: bool,
    caches: &mut Caches,
    counters: &Counters,
) -> Result<Vec<Result<Done, StorageError>>, Failure> {
    let started = Instant::now();
    let mut txn = db.begin_write()?;
    if !durable {
        txn.set_durability(Durability::None)
            .map_err(redb::Error::from)?;
    }
    let results = {
        let mut t = Tables::open(&txn, caches)?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match apply(&mut t, op) {
                Ok(done) => Ok(done),
                Err(Failure::Storage(e)) => Err(e),
                Err(db) => return Err(db),
            });
        }
        results
    };
    let applied = Instant::now();
    txn.commit()?;
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    counters
        .apply_ns
        .fetch_add(nanos(applied - started), Ordering::Relaxed);
    counters
        .commit_ns
        .fetch_add(nanos(applied.elapsed()), Ordering::Relaxed);
    Ok(results)
}

fn reply(op: Op, result: Result<Done, StorageError>) {
    // A caller that stopped waiting (its future was dropped) is no error.
    match op {
        Op::Create { reply, .. }
        | Op::Fork { reply, .. }
        | Op::ForkAppend { reply, .. }
        | Op::CreateAppend { reply, .. } => {
            let _ = reply.send(result.and_then(|d| match d {
                Done::Info(info) => Ok(info),
                Done::Unit => Err(internal("a world operation returned no world")),
            }));
        }
        Op::Append { reply, .. } | Op::PutSnapshot { reply, .. } | Op::Delete { reply, .. } => {
            let _ = reply.send(result.map(|_| ()));
        }
    }
}

fn internal(reason: &str) -> StorageError {
    StorageError::Backend {
        context: "ledger writer".into(),
        source: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{LIVENESS, RECORDS, SPAWNS, WORLDS};
    use crate::load_world;
    use autoresearch_core::EntityId;
    use autoresearch_core::{Change, TickRecord};
    use redb::ReadableDatabase;

    fn append(
        world: WorldId,
        tick: u64,
        changes: Vec<Change>,
    ) -> (Op, oneshot::Receiver<Result<(), StorageError>>) {
        let record = TickRecord {
            tick: Tick(tick),
            at_ms: 0,
            changes,
        };
        let (reply, rx) = oneshot::channel();
        let appends = vec![EncodedAppend::new(world, record, None).unwrap()];
        let op = Op::Append {
            world,
            appends,
            reply,
        };
        (op, rx)
    }

    fn spawn(e: u64) -> Change {
        Change::Spawn {
            entity: EntityId(e),
        }
    }

    /// Appends of several worlds queued together share one write
    /// transaction; the refused ones (a stale tick, a change to an entity
    /// that is not alive) get their own error and store nothing, the
    /// others are stored and get `Ok`.
    #[test]
    fn a_group_commit_stores_its_good_appends_and_refuses_the_bad_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let db = Database::builder().create(&path).unwrap();
        let sink = ErrorSink::new(&path);
        crate::schema::ensure_schema(&db, &sink).unwrap();
        let mut creates = Vec::new();
        let mut created = Vec::new();
        for name in ["a", "b", "c", "d"] {
            let (reply, rx) = oneshot::channel();
            creates.push(Op::Create {
                name: name.into(),
                reply,
            });
            created.push(rx);
        }
        let mut caches = Caches::default();
        let counters = Counters::default();
        commit_batch(&db, creates, true, &sink, &mut caches, &counters);
        let ids: Vec<WorldId> = created
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap().unwrap().id)
            .collect();

        let (a, mut ra) = append(ids[0], 1, vec![spawn(0), spawn(1)]);
        // Tick 2 of a world at tick 0: a conflict.
        let (b, mut rb) = append(ids[1], 2, vec![spawn(0)]);
        // A component on an entity never spawned: not applicable.
        let set = Change::Set {
            entity: EntityId(5),
            component: "Score".into(),
            value: vec![1],
        };
        let (c, mut rc) = append(ids[2], 1, vec![spawn(0), set]);
        let (d, mut rd) = append(ids[3], 1, vec![spawn(0)]);
        commit_batch(&db, vec![a, b, c, d], true, &sink, &mut caches, &counters);

        assert!(matches!(ra.try_recv().unwrap(), Ok(())));
        assert!(matches!(rd.try_recv().unwrap(), Ok(())));
        match rb.try_recv().unwrap() {
            Err(StorageError::Conflict {
                attempted, head, ..
            }) => assert_eq!((attempted, head), (Tick(2), Tick(0))),
            other => panic!("expected a conflict, got {other:?}"),
        }
        match rc.try_recv().unwrap() {
            Err(StorageError::NotApplicable { entity, .. }) => assert_eq!(entity, EntityId(5)),
            other => panic!("expected not applicable, got {other:?}"),
        }

        let txn = db.begin_read().unwrap();
        let worlds = txn.open_table(WORLDS).unwrap();
        let records = txn.open_table(RECORDS).unwrap();
        let liveness = txn.open_table(LIVENESS).unwrap();
        let heads: Vec<u64> = ids
            .iter()
            .map(|id| match load_world(&worlds, *id) {
                Ok(info) => info.head.0,
                Err(_) => panic!("world {id} is not in the catalogue"),
            })
            .collect();
        assert_eq!(heads, [1, 0, 0, 1]);
        let stored: Vec<bool> = ids
            .iter()
            .map(|id| records.get((id.0, 1)).unwrap().is_some())
            .collect();
        assert_eq!(stored, [true, false, false, true]);
        // The refused world's spawn left no liveness entry; the stored
        // world's two spawns are one range.
        let spawns = txn.open_table(SPAWNS).unwrap();
        assert!(liveness.get((ids[2].0, 0, 1)).unwrap().is_none());
        assert!(
            spawns
                .range((ids[2].0, 0, 0)..=(ids[2].0, u64::MAX, u64::MAX))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(liveness.get((ids[0].0, 1, 1)).unwrap().is_none());
        assert_eq!(
            spawns.get((ids[0].0, 1, 0)).unwrap().map(|v| v.value()),
            Some(1)
        );
    }
}
