//! Values changed in place stored as deltas (`encoding::delta`,
//! `stored::LastSets`): every reader (replay, time travel, one-component
//! reads, forks, the current state, a fresh or read-only handle) sees the
//! values that were committed; chains are bounded; damage is an error.

use super::*;
use crate::test_support::{Rng, registry};
use autoresearch_core::{Change, Error, Run, RunStatus, Storage, World, ledger};
use redb::ReadableTable;
use std::collections::BTreeMap;
use std::sync::Arc;

const STATUSES: [RunStatus; 5] = [
    RunStatus::Booting,
    RunStatus::Running,
    RunStatus::Stopping,
    RunStatus::Stopped,
    RunStatus::Crashed,
];

fn open(path: &Path, snapshot_interval: Option<u64>) -> Arc<dyn Storage> {
    Arc::new(
        RedbStorage::open(
            path,
            RedbConfig {
                snapshot_interval,
                ..RedbConfig::default()
            },
        )
        .unwrap(),
    )
}

/// The runs of `w`, by entity.
fn runs_of(w: &World) -> BTreeMap<EntityId, Run> {
    w.find_all::<Run>(|_| true).into_iter().collect()
}

/// Commits `w` and returns the record it stored (the changes as made).
async fn commit(w: &mut World) -> TickRecord {
    let changes = w.pending().to_vec();
    let tick = w.commit().await.unwrap();
    TickRecord {
        tick,
        at_ms: 0,
        changes,
    }
}

/// World "w": tick 1 spawns 120 runs, ticks 2..=25 each change the status
/// of 15 of them (some twice in one tick, some gaining a task), with a
/// snapshot every 7 ticks. Returns the world, every committed record and
/// the runs after each tick (index = tick).
async fn history(path: &Path) -> (WorldId, Vec<TickRecord>, Vec<BTreeMap<EntityId, Run>>) {
    let st = open(path, Some(7));
    let mut w = World::create(st, registry(), "w").await.unwrap();
    let mut rng = Rng(11);
    for i in 0..120 {
        let mut run = Run::new(format!("{:016x}-{i}", rng.next()), "exp");
        run.task = format!("optimize the training loop of model {i} and tighten its tests");
        w.spawn_with(&run).unwrap();
    }
    let mut records = vec![commit(&mut w).await];
    let mut states = vec![BTreeMap::new(), runs_of(&w)];
    let entities: Vec<EntityId> = states[1].keys().copied().collect();
    for tick in 2..=25u64 {
        for k in 0..15 {
            let e = *rng.pick(&entities);
            let mut run = w.get::<Run>(e).unwrap();
            run.set_status(*rng.pick(&STATUSES));
            if k == 0 {
                run.task.push_str(&format!(" (again at {tick})"));
            }
            w.insert(e, &run).unwrap();
        }
        records.push(commit(&mut w).await);
        states.push(runs_of(&w));
    }
    (w.id(), records, states)
}

/// The raw stored bytes of `world`'s record of `tick` (joined from its
/// parts when long; deltas not resolved).
fn raw_record(path: &Path, world: WorldId, tick: u64) -> Vec<u8> {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(RECORDS).unwrap();
    let raw = t.get((world.0, tick)).unwrap().unwrap().value().to_vec();
    let Some(stub) = encoding::stub(&raw).unwrap() else {
        return raw;
    };
    let parts = txn.open_table(encoding::RECORD_PARTS).unwrap();
    let read: Vec<(u64, Vec<u8>)> = parts
        .range((world.0, tick, 0)..=(world.0, tick, u64::MAX))
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value().2, v.value().to_vec())
        })
        .collect();
    encoding::join(stub, read.iter().map(|(i, v)| (*i, v.as_slice()))).unwrap()
}

/// The chain length of each value `world`'s ticks `1..=head` set, by
/// `(entity, tick)`, following each delta's named base; asserts that
/// every base is an older tick that set the same value.
fn chain_lengths(path: &Path, world: WorldId, head: u64) -> BTreeMap<(u64, u64), usize> {
    let mut depths = BTreeMap::new();
    for tick in 1..=head {
        let sets = encoding::record_set_entries(&raw_record(path, world, tick)).unwrap();
        for ((e, _), entry) in sets {
            let d = match entry {
                encoding::SetEntry::Whole(_) => 0,
                encoding::SetEntry::Delta { base, .. } => {
                    assert!(base < tick, "entity {e} at {tick}: base {base}");
                    depths[&(e, base)] + 1
                }
            };
            depths.insert((e, tick), d);
        }
    }
    depths
}

async fn check_reads(
    st: &Arc<dyn Storage>,
    id: WorldId,
    records: &[TickRecord],
    states: &[BTreeMap<EntityId, Run>],
) {
    let reg = registry();
    // The records as replays read them: exactly the changes committed.
    let stored = st.read_own_records(id, Tick(1), Tick(25)).await.unwrap();
    assert_eq!(stored.len(), records.len());
    for (got, want) in stored.iter().zip(records) {
        assert_eq!((got.tick, &got.changes), (want.tick, &want.changes));
    }
    for tick in [1u64, 2, 6, 7, 8, 13, 14, 20, 25] {
        let past = World::open_at(st.clone(), reg.clone(), id, Tick(tick))
            .await
            .unwrap();
        assert_eq!(runs_of(&past), states[tick as usize], "tick {tick}");
        let values = ledger::component_values_at::<Run>(st.as_ref(), &reg, id, Tick(tick))
            .await
            .unwrap();
        let decoded: BTreeMap<EntityId, Run> = values
            .iter()
            .map(|(e, b)| (e, postcard::from_bytes(b).unwrap()))
            .collect();
        assert_eq!(
            decoded, states[tick as usize],
            "one-component read at {tick}"
        );
        let copied = ledger::component_at::<Run>(st.as_ref(), &reg, id, Tick(tick))
            .await
            .unwrap();
        assert_eq!(copied.len(), states[tick as usize].len());
    }
}

#[tokio::test]
async fn values_changed_in_place_are_stored_as_deltas_and_every_reader_sees_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, records, states) = history(&path).await;

    // Update ticks hold deltas and take a fraction of their whole encoding.
    for tick in [3u64, 12, 25] {
        let raw = raw_record(&path, id, tick);
        assert_eq!(raw[0], encoding::DELTA_VERSION, "tick {tick}");
        let values: usize = records[tick as usize - 1]
            .changes
            .iter()
            .map(|c| match c {
                Change::Set { value, .. } => value.len(),
                _ => 0,
            })
            .sum();
        assert!(
            raw.len() * 3 < values,
            "tick {tick}: {} bytes with deltas for {values} bytes of values",
            raw.len(),
        );
    }
    // Every base is an older tick that set the value, and no chain is
    // longer than MAX_CHAIN.
    let depths = chain_lengths(&path, id, 25);
    assert!(
        depths
            .values()
            .all(|d| *d <= usize::from(encoding::delta::MAX_CHAIN))
    );

    // The writing handle, a fresh one, and a read-only one read the same.
    let st = open(&path, Some(7));
    check_reads(&st, id, &records, &states).await;
    drop(st);
    let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
    check_reads(&ro, id, &records, &states).await;
    drop(ro);

    // The current state reads its values through the deltas.
    let st = open(&path, Some(7));
    let reg = registry();
    let w = World::open(st.clone(), reg.clone(), "w").await.unwrap();
    assert_eq!(runs_of(&w), states[25]);
    assert!(st.read_current(id, vec![]).await.unwrap().is_some());
    let (e, run) = states[25].iter().next().unwrap();
    assert_eq!(w.run_by_id(&run.run_id).unwrap(), (*e, run.clone()));

    // A fork reads its parent's deltas, and stores its own.
    let mut fork = w.fork_world(Tick(10), "f").await.unwrap();
    assert_eq!(runs_of(&fork), states[10]);
    let mut want = states[10].clone();
    for round in 0..3 {
        for (e, run) in want.iter_mut().take(5) {
            run.set_status(STATUSES[round + 1]);
            fork.insert(*e, &*run).unwrap();
        }
        fork.commit().await.unwrap();
    }
    assert_eq!(runs_of(&fork), want);
    let again = World::open(open(&path, Some(7)), reg.clone(), "f")
        .await
        .unwrap();
    assert_eq!(runs_of(&again), want);
    let at_11 = ledger::state_at(st.as_ref(), fork.id(), Tick(11))
        .await
        .unwrap();
    let mut first_round = states[10].clone();
    for (_, run) in first_round.iter_mut().take(5) {
        run.set_status(STATUSES[1]);
    }
    let decoded: BTreeMap<EntityId, Run> = at_11
        .entities
        .iter()
        .filter_map(|(e, comps)| {
            comps
                .iter()
                .find(|(n, _)| n.as_str() == "Run")
                .map(|(_, v)| (*e, postcard::from_bytes(v).unwrap()))
        })
        .collect();
    assert_eq!(decoded, first_round);
}

#[tokio::test]
async fn a_missing_base_or_a_damaged_delta_is_an_error_naming_the_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, _, _) = history(&path).await;
    // Tick 1 (the base of every first change) gone.
    {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(RECORDS).unwrap();
            t.remove((id.0, 1)).unwrap();
            // Tick 20's record cut short.
            let mut bytes = t.get((id.0, 20)).unwrap().unwrap().value().to_vec();
            assert_eq!(bytes[0], encoding::DELTA_VERSION);
            bytes.truncate(bytes.len() - 5);
            t.insert((id.0, 20), bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let st = open(&path, Some(7));
    let err = st.read_own_records(id, Tick(2), Tick(2)).await.unwrap_err();
    match &err {
        StorageError::Corrupt {
            world,
            tick,
            reason,
        } => {
            assert_eq!((*world, *tick), (id, Tick(2)));
            assert!(
                reason.contains("base") && reason.contains("tick 1"),
                "{reason}"
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let err = st
        .read_own_component_spans(id, Tick(20), Tick(20), "Run")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { tick: Tick(20), .. }),
        "{err}"
    );
    // Time travel reports it, never a panic.
    let err = ledger::state_at(st.as_ref(), id, Tick(20))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("l.redb"), "{err}");
    assert!(matches!(
        ledger::state_at(st.as_ref(), id, Tick(2)).await,
        Err(Error::Storage(StorageError::Corrupt { .. }) | Error::Unreplayable { .. })
    ));
}

/// A tick of the parity benchmark's shape (100 status changes of runs an
/// ingest spawned) stores its record in a few bytes per change, inline
/// in the records table (no page of its own, no parts).
#[tokio::test]
async fn a_tick_of_status_changes_stores_a_few_bytes_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let st = open(&path, None);
    let mut w = World::create(st, registry(), "w").await.unwrap();
    let mut rng = Rng(5);
    let words = [
        "optimize", "reduce", "latency", "refactor", "the", "training", "loop",
    ];
    for i in 0..1_000 {
        let id = format!("{:016x}-{i:07}", rng.next());
        let mut run = Run::new(id.clone(), "kernel-tune");
        run.vm_name = format!("vm-kernel-tune-{i:07}");
        run.harness = "claude-code".into();
        run.repo_url = "https://github.com/example/kernel-tune.git".into();
        run.task = (0..12)
            .map(|_| *rng.pick(&words))
            .collect::<Vec<_>>()
            .join(" ");
        run.agent_name = "kernel-tune-claude-code".into();
        run.workspace_path = format!("/var/lib/archetype-runner/workspaces/{id}");
        w.spawn_with(&run).unwrap();
    }
    w.commit().await.unwrap();
    let entities: Vec<EntityId> = runs_of(&w).into_keys().collect();
    let mut values = 0;
    for e in entities.iter().step_by(10) {
        let mut run = w.get::<Run>(*e).unwrap();
        run.set_status(RunStatus::Stopping);
        values += postcard::to_stdvec(&run).unwrap().len();
        w.insert(*e, &run).unwrap();
    }
    assert_eq!(w.commit().await.unwrap(), Tick(2));
    let raw = raw_record(&path, w.id(), 2);
    eprintln!(
        "tick of 100 status changes: {} bytes stored for {values} bytes of values",
        raw.len()
    );
    assert_eq!(raw[0], encoding::DELTA_VERSION);
    assert!(raw.len() <= encoding::INLINE_MAX, "{} bytes", raw.len());
    assert!(raw.len() * 10 < values, "{} bytes for {values}", raw.len());
}

/// Status changes (a few bytes of a run) are deltas of the whole value
/// the ingest stored, however many times a run changed: a read resolves
/// each with one base record, the one every delta shares, instead of a
/// chain of records at older ticks. A value changed in more places (the
/// task growing) still makes a delta, of its last value where that is
/// smaller, and every reader sees the committed values.
#[tokio::test]
async fn status_changes_are_deltas_of_the_ingested_value_one_base_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let st = open(&path, Some(16));
    let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
    let mut rng = Rng(3);
    for i in 0..40 {
        let mut run = Run::new(format!("{:016x}-{i}", rng.next()), "exp");
        run.task = format!("optimize the training loop of model {i} and tighten its tests");
        w.spawn_with(&run).unwrap();
    }
    w.commit().await.unwrap();
    let entities: Vec<EntityId> = runs_of(&w).into_keys().collect();
    let mut states = vec![BTreeMap::new(), runs_of(&w)];
    // 60 ticks of status changes (each run changes about 8 times).
    for _ in 2..=61u64 {
        for _ in 0..5 {
            let e = *rng.pick(&entities);
            let mut run = w.get::<Run>(e).unwrap();
            run.set_status(*rng.pick(&STATUSES));
            w.insert(e, &run).unwrap();
        }
        w.commit().await.unwrap();
        states.push(runs_of(&w));
    }
    let depths = chain_lengths(&path, w.id(), 61);
    let mut deltas = 0;
    for tick in 2..=61u64 {
        let sets = encoding::record_set_entries(&raw_record(&path, w.id(), tick)).unwrap();
        for ((e, _), entry) in sets {
            if let encoding::SetEntry::Delta { base, .. } = entry {
                deltas += 1;
                assert_eq!(base, 1, "entity {e} at {tick}");
                assert_eq!(depths[&(e, tick)], 1);
            }
        }
    }
    assert!(deltas > 250, "{deltas} deltas of 300 changes");

    // Ten ticks that give one run a commit hash, then change its last
    // digits: a delta of the ingested value would keep the whole hash,
    // one of the last value only the digits, so that run's deltas are of
    // its last value (a chain), within MAX_CHAIN.
    let grown = entities[7];
    for tick in 62..=71u64 {
        let mut run = w.get::<Run>(grown).unwrap();
        run.commit_hash = format!("{:040x}", 0xabc0 + tick);
        w.insert(grown, &run).unwrap();
        w.commit().await.unwrap();
        states.push(runs_of(&w));
    }
    let depths = chain_lengths(&path, w.id(), 71);
    let chains: Vec<usize> = (62..=71).map(|t| depths[&(grown.0, t)]).collect();
    assert!(chains.iter().any(|d| *d > 1), "{chains:?}");
    assert!(
        chains
            .iter()
            .all(|d| *d <= usize::from(encoding::delta::MAX_CHAIN)),
        "{chains:?}"
    );
    // At most one of them stored whole (a chain that reached MAX_CHAIN).
    let sizes: Vec<usize> = (63..=71u64)
        .map(|t| raw_record(&path, w.id(), t).len())
        .collect();
    assert!(sizes.iter().filter(|n| **n < 40).count() >= 8, "{sizes:?}");

    // Every reader, on this handle and a fresh one, sees the committed runs.
    let reg = registry();
    for st in [st, open(&path, Some(16))] {
        for tick in [1u64, 2, 15, 16, 17, 40, 61, 62, 66, 71] {
            let past = World::open_at(st.clone(), reg.clone(), w.id(), Tick(tick))
                .await
                .unwrap();
            assert_eq!(runs_of(&past), states[tick as usize], "tick {tick}");
            let values = ledger::component_values_at::<Run>(st.as_ref(), &reg, w.id(), Tick(tick))
                .await
                .unwrap();
            let decoded: BTreeMap<EntityId, Run> = values
                .iter()
                .map(|(e, b)| (e, postcard::from_bytes(b).unwrap()))
                .collect();
            assert_eq!(decoded, states[tick as usize], "one component at {tick}");
        }
    }
}

/// A file written before deltas named the whole value's tick holds chains
/// of deltas each of the tick before (up to MAX_CHAIN long): rewritten
/// that way, every reader still sees the committed values.
#[tokio::test]
async fn chains_of_the_tick_before_as_older_writers_made_them_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, records, states) = history(&path).await;
    // Each record rewritten as the older writer stored it: every Set of a
    // value set before is a delta of the tick that last set it, until a
    // chain is MAX_CHAIN long.
    let mut last: BTreeMap<(u64, String), (u64, u8, Vec<u8>)> = BTreeMap::new();
    let mut longest = 0;
    let mut rewritten = Vec::new();
    for rec in &records {
        let mut deltas = Vec::new();
        let mut noted = Vec::new();
        for c in &rec.changes {
            let Change::Set {
                entity,
                component,
                value,
            } = c
            else {
                deltas.push(None);
                continue;
            };
            let key = (entity.0, component.clone());
            let d = match last.get(&key) {
                Some((base, depth, old)) if *depth < encoding::delta::MAX_CHAIN => {
                    encoding::delta::diff(old, value).map(|(p, s, _)| ((*base, p, s), depth + 1))
                }
                _ => None,
            };
            deltas.push(d.map(|(d, _)| d));
            let depth = d.map_or(0, |(_, depth)| depth);
            longest = longest.max(depth);
            noted.push((key, (rec.tick.0, depth, value.clone())));
        }
        last.extend(noted);
        let bytes = encoding::encode_record_with_deltas(rec.at_ms, &rec.changes, &deltas).unwrap();
        rewritten.push((rec.tick.0, bytes));
    }
    assert!(longest >= 3, "chains of {longest}");
    {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(RECORDS).unwrap();
            for (tick, bytes) in &rewritten {
                t.insert((id.0, *tick), bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let depths = chain_lengths(&path, id, 25);
    assert_eq!(depths.values().max().copied(), Some(usize::from(longest)));
    let st = open(&path, Some(7));
    check_reads(&st, id, &records, &states).await;
    let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
    check_reads(&ro, id, &records, &states).await;
}
