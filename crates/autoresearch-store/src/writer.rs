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
//! Each operation is validated (world exists, ticks start at head + 1, each
//! tick applies to the state before it, ...) inside the transaction before
//! it writes anything, so a refused operation leaves no trace and does not
//! affect its batch-mates. One operation may carry several ticks of a world
//! (`append_all`): they are checked together and stored together or not at
//! all. A redb failure aborts the whole transaction and is reported to
//! every operation in it: nothing of a failed batch is stored. So is a
//! panic inside redb (a damaged file), which the thread contains.

use crate::encoding::{
    self, ENTITY_TICKS, INDEX_CHUNK, LAST_DELETED_KEY, LIVENESS, META, RECORDS, SNAPSHOTS, SPAWNS,
    WORLD_NAMES, WORLDS,
};
use crate::{EncodedAppend, ErrorSink, Failure, find_name, load_world};
use autoresearch_core::{
    EntityId, ForkPoint, LivenessCheck, StorageError, Tick, WorldId, WorldInfo, now_ms,
};
use redb::{Database, Durability, ReadableTable, Table};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// Counters the writer thread updates and the handle reads.
#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    writes: AtomicU64,
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
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(db)));
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
    let mut inputs = crate::current::InputCache::default();
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
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters
            .writes
            .fetch_add(batch.ops.len() as u64, Ordering::Relaxed);
        commit_batch(db, batch.ops, limits.durable, sink, &mut inputs);
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
        // (A fork's first append is a new world: not a recent appender.)
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
    liveness: Table<'t, (u64, u64, u64), bool>,
    /// Spawns of new entities as ranges (`encoding::SPAWNS`).
    spawns: Table<'t, (u64, u64, u64), u64>,
    meta: Table<'t, &'static str, &'static [u8]>,
    /// The current state of each world (`crate::current`).
    current: crate::current::CurrentTables<'t>,
    /// The chart series of each world (`crate::series`).
    series: crate::series::SeriesTables<'t>,
}

/// Runs one group commit and replies to every operation in it.
fn commit_batch(
    db: &Database,
    ops: Vec<Op>,
    durable: bool,
    sink: &ErrorSink,
    inputs: &mut crate::current::InputCache,
) {
    // A panic inside redb (a damaged file) must not take the thread down:
    // it fails this batch, whose transaction is dropped uncommitted, and
    // later batches start a fresh one.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_batch(db, &ops, durable, inputs)
    }))
    .unwrap_or_else(|panic| {
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
            inputs.clear();
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
    inputs: &mut crate::current::InputCache,
) -> Result<Vec<Result<Done, StorageError>>, Failure> {
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
            liveness: txn.open_table(LIVENESS)?,
            spawns: txn.open_table(SPAWNS)?,
            meta: txn.open_table(META)?,
            current: crate::current::CurrentTables::open(&txn, inputs)?,
            series: crate::series::SeriesTables::open(&txn)?,
        };
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
    txn.commit()?;
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

fn encode_world(info: &WorldInfo) -> Result<Vec<u8>, Failure> {
    encoding::encode_world(info).map_err(|reason| {
        Failure::Storage(StorageError::Backend {
            context: format!("encoding the catalogue entry of {}", info.id),
            source: reason.into(),
        })
    })
}

fn add_world(t: &mut Tables<'_>, name: &str, parent: Option<ForkPoint>) -> Result<Done, Failure> {
    let info = plan_world(t, name, parent)?;
    insert_world(t, &info)?;
    Ok(Done::Info(info))
}

/// Writes a planned world's catalogue entry and name.
fn insert_world(t: &mut Tables<'_>, info: &WorldInfo) -> Result<(), Failure> {
    let bytes = encode_world(info)?;
    t.worlds.insert(info.id.0, bytes.as_slice())?;
    t.names.insert(info.name.as_str(), info.id.0)?;
    Ok(())
}

/// The catalogue entry a new world named `name` gets, checked (the name
/// is free, the parent exists and has the fork tick), nothing written.
fn plan_world(t: &Tables<'_>, name: &str, parent: Option<ForkPoint>) -> Result<WorldInfo, Failure> {
    if let Some(p) = parent {
        let info = load_world(&t.worlds, p.parent)?;
        if p.tick > info.head {
            return Err(StorageError::ForkBeyondHead {
                world: p.parent,
                at: p.tick,
                head: info.head,
            }
            .into());
        }
    }
    // Checked against the catalogue as well as the name index, so that a
    // damaged index refuses the create instead of allowing a second world
    // of one name.
    if find_name(&t.worlds, &t.names, name)?.is_some() {
        return Err(StorageError::NameTaken(name.to_string()).into());
    }
    // After the greatest id in the catalogue and any deleted one: an id
    // is never given to a second world.
    let after_deleted = match t.meta.get(LAST_DELETED_KEY)? {
        Some(v) => {
            encoding::decode_last_deleted(v.value())
                .map_err(|e| e.at(WorldId(0), Tick::ZERO, "meta last_deleted_world"))?
                + 1
        }
        None => 0,
    };
    let id = t
        .worlds
        .last()?
        .map_or(0, |(k, _)| k.value() + 1)
        .max(after_deleted);
    Ok(WorldInfo {
        id: WorldId(id),
        name: name.to_string(),
        head: parent.map_or(Tick::ZERO, |p| p.tick),
        parent,
        created_at_ms: now_ms(),
    })
}

/// Applies one operation. Every check runs before the first write, so an
/// `Err(Failure::Storage)` leaves the transaction as it found it.
fn apply(t: &mut Tables<'_>, op: &Op) -> Result<Done, Failure> {
    match op {
        Op::Create { name, .. } => add_world(t, name, None),
        Op::Fork {
            parent, at, name, ..
        } => add_world(
            t,
            name,
            Some(ForkPoint {
                parent: *parent,
                tick: *at,
            }),
        ),
        Op::ForkAppend {
            parent,
            at,
            name,
            appends,
            ..
        } => {
            let fork = Some(ForkPoint {
                parent: *parent,
                tick: *at,
            });
            add_world_with(t, name, fork, appends)
        }
        Op::CreateAppend { name, appends, .. } => add_world_with(t, name, None, appends),
        Op::Append { world, appends, .. } => {
            let info = load_world(&t.worlds, *world)?;
            let planned = check_append(t, &info, appends)?;
            write_append(t, info, appends, planned)?;
            Ok(Done::Unit)
        }
        Op::Delete { world, .. } => delete(t, *world),
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
            // A stored snapshot never changes: the span cache of every
            // handle on this file may keep it decoded.
            if t.snapshots.get((world.0, tick.0))?.is_none() {
                t.snapshots.insert((world.0, tick.0), snapshot.as_slice())?;
            }
            Ok(Done::Unit)
        }
    }
}

/// A new world (a root, or a fork of `fork`) and its first `appends`,
/// every check of both before the first write.
fn add_world_with(
    t: &mut Tables<'_>,
    name: &str,
    fork: Option<ForkPoint>,
    appends: &[EncodedAppend],
) -> Result<Done, Failure> {
    let info = plan_world(t, name, fork)?;
    let planned = check_append(t, &info, appends)?;
    insert_world(t, &info)?;
    let info = write_append(t, info, appends, planned)?;
    Ok(Done::Info(info))
}

/// Deletes `world` and every key of its own (records, snapshots, entity
/// index, liveness), after checking that no world was forked from it.
fn delete(t: &mut Tables<'_>, world: WorldId) -> Result<Done, Failure> {
    let info = load_world(&t.worlds, world)?;
    let mut forks = Vec::new();
    for entry in t.worlds.iter()? {
        let (k, v) = entry?;
        let id = WorldId(k.value());
        let other = encoding::decode_world(id, v.value())
            .map_err(|e| e.at(id, Tick::ZERO, "catalogue entry"))?;
        if other.parent.is_some_and(|p| p.parent == world) {
            forks.push(other.name);
        }
    }
    if !forks.is_empty() {
        return Err(StorageError::HasForks { world, forks }.into());
    }
    let w = world.0;
    if t.worlds.last()?.is_some_and(|(k, _)| k.value() == w) {
        let before = match t.meta.get(LAST_DELETED_KEY)? {
            Some(v) => encoding::decode_last_deleted(v.value())
                .map_err(|e| e.at(world, Tick::ZERO, "meta last_deleted_world"))?,
            None => 0,
        };
        let bytes = encoding::encode_last_deleted(w.max(before));
        t.meta.insert(LAST_DELETED_KEY, bytes.as_slice())?;
    }
    t.worlds.remove(w)?;
    t.names.remove(info.name.as_str())?;
    t.records.retain_in((w, 0)..=(w, u64::MAX), |_, _| false)?;
    t.snapshots
        .retain_in((w, 0)..=(w, u64::MAX), |_, _| false)?;
    t.index
        .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
    t.liveness
        .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
    t.spawns
        .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
    t.current.delete(w)?;
    t.series.delete(w)?;
    Ok(Done::Unit)
}

/// What [`check_append`] found: each tick's liveness changes and the
/// entity-index chunks the ticks complete.
struct PlannedAppend {
    liveness: Vec<Vec<(EntityId, bool)>>,
    chunks: Vec<(u64, std::collections::BTreeMap<u64, u64>)>,
}

/// Checks every tick of `appends` against `info`'s world (consecutive
/// from its head + 1, each applying to the state before it), writing
/// nothing.
fn check_append(
    t: &Tables<'_>,
    info: &WorldInfo,
    appends: &[EncodedAppend],
) -> Result<PlannedAppend, Failure> {
    let world = info.id;
    let Some(first) = appends.first() else {
        return Ok(PlannedAppend {
            liveness: Vec::new(),
            chunks: Vec::new(),
        });
    };
    let head = info.head;
    for (i, a) in appends.iter().enumerate() {
        if a.tick.0 != head.0 + 1 + i as u64 {
            return Err(StorageError::Conflict {
                world,
                attempted: a.tick,
                head,
            }
            .into());
        }
    }
    let mut check = LivenessCheck::new(world);
    let mut liveness = Vec::with_capacity(appends.len());
    for a in appends {
        let changes = a.changes.iter().copied();
        liveness.push(check.check(a.tick, changes, |e| alive_at(t, info, e, head))?);
    }
    // Entity-index chunks the batch completes.
    let mut chunks = Vec::new();
    for (i, a) in appends.iter().enumerate() {
        if a.tick.0 % INDEX_CHUNK == 0 {
            chunks.push(chunk_masks(t, info, first.tick, &appends[..=i])?);
        }
    }
    Ok(PlannedAppend { liveness, chunks })
}

/// Stores checked `appends` ([`check_append`]) and `info` with its new
/// head; returns that entry. A failure here is redb's and aborts the
/// transaction.
fn write_append(
    t: &mut Tables<'_>,
    mut info: WorldInfo,
    appends: &[EncodedAppend],
    planned: PlannedAppend,
) -> Result<WorldInfo, Failure> {
    let Some(last) = appends.last() else {
        return Ok(info);
    };
    let PlannedAppend { liveness, chunks } = planned;
    let before = info.clone();
    info.head = last.tick;
    let entry = encode_world(&info)?;
    crate::current::maintain(&mut t.current, &t.records, &before, appends)?;
    crate::series::maintain(&mut t.series, &mut t.current, &t.records, &before, appends)?;
    let w = info.id.0;
    for (chunk, masks) in chunks {
        for (e, mask) in masks {
            t.index.insert((w, chunk, e), mask)?;
        }
    }
    // Spawns above every range of the world become ranges (one entry per
    // run of consecutive ids), so that ranges never overlap.
    let mut top = match t
        .spawns
        .range((w, 0, 0)..=(w, u64::MAX, u64::MAX))?
        .next_back()
    {
        Some(entry) => Some(entry?.0.value().1),
        None => None,
    };
    for (a, live) in appends.iter().zip(liveness) {
        let k = a.tick.0;
        let mut run: Option<(u64, u64)> = None;
        for (e, alive) in live {
            let e = e.0;
            if !alive || top.is_some_and(|top| e <= top) {
                t.liveness.insert((w, e, k), alive)?;
                continue;
            }
            run = match run {
                Some((first, last)) if e == last + 1 => Some((first, e)),
                Some((first, last)) => {
                    t.spawns.insert((w, last, first), k)?;
                    Some((e, e))
                }
                None => Some((e, e)),
            };
        }
        if let Some((first, last)) = run {
            t.spawns.insert((w, last, first), k)?;
            top = Some(last);
        }
        t.records.insert((w, k), a.record.as_slice())?;
        if let Some(s) = &a.snapshot {
            t.snapshots.insert((w, k), s.as_slice())?;
        }
    }
    t.worlds.insert(w, entry.as_slice())?;
    Ok(info)
}

/// Whether `entity` is alive in `info`'s world at tick `at` (at most its
/// head): the newest liveness entry at or before `at`, in the world's own
/// segment, then in its parent's at most at the fork tick, and so on.
fn alive_at(t: &Tables<'_>, info: &WorldInfo, entity: EntityId, at: Tick) -> Result<bool, Failure> {
    let mut info = info.clone();
    let mut at = at;
    loop {
        // A root world at tick 0 is empty (a new world's first append).
        if info.parent.is_none() && at == Tick::ZERO {
            return Ok(false);
        }
        let (w, e) = (info.id.0, entity.0);
        let single = match t.liveness.range((w, e, 0)..=(w, e, at.0))?.next_back() {
            Some(entry) => {
                let (k, v) = entry?;
                Some((k.value().2, v.value()))
            }
            None => None,
        };
        let spawned = match t.spawns.range((w, e, 0)..=(w, u64::MAX, u64::MAX))?.next() {
            Some(entry) => {
                let (k, v) = entry?;
                let (_, _, first) = k.value();
                let tick = v.value();
                (first <= e && tick <= at.0).then_some(tick)
            }
            None => None,
        };
        // The newer of the two (an entity is in no range and has no entry
        // of the same tick).
        match (single, spawned) {
            (Some((tick, alive)), Some(spawn)) => {
                return Ok(if spawn > tick { true } else { alive });
            }
            (Some((_, alive)), None) => return Ok(alive),
            (None, Some(_)) => return Ok(true),
            (None, None) => {}
        }
        match info.parent {
            Some(p) => {
                at = at.min(p.tick);
                info = load_world(&t.worlds, p.parent)?;
            }
            None => return Ok(false),
        }
    }
}

/// The entity-index masks of the chunk that the last of `batch` completes:
/// every entity changed by the world's own ticks in it. Ticks before
/// `batch_from` come from their stored records (whichever process appended
/// them), the others from the batch.
fn chunk_masks(
    t: &Tables<'_>,
    info: &WorldInfo,
    batch_from: Tick,
    batch: &[EncodedAppend],
) -> Result<(u64, std::collections::BTreeMap<u64, u64>), Failure> {
    let tick = batch[batch.len() - 1].tick;
    let (chunk, _) = encoding::index_slot(tick);
    let w = info.id.0;
    let from = (chunk * INDEX_CHUNK + 1).max(info.first_own_tick().0);
    let mut masks: std::collections::BTreeMap<u64, u64> = Default::default();
    if from < batch_from.0 {
        for entry in t.records.range((w, from)..(w, batch_from.0))? {
            let (k, v) = entry?;
            let at = Tick(k.value().1);
            let (_, bit) = encoding::index_slot(at);
            let touched = encoding::record_entities(at, v.value())
                .map_err(|e| e.at(info.id, at, "tick record"))?;
            for e in touched {
                *masks.entry(e.0).or_default() |= bit;
            }
        }
    }
    for a in batch.iter().filter(|a| a.tick.0 >= from) {
        let (_, bit) = encoding::index_slot(a.tick);
        for e in &a.entities {
            *masks.entry(e.0).or_default() |= bit;
        }
    }
    Ok((chunk, masks))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut inputs = crate::current::InputCache::default();
        commit_batch(&db, creates, true, &sink, &mut inputs);
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
        commit_batch(&db, vec![a, b, c, d], true, &sink, &mut inputs);

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
