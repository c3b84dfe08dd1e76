//! Records and snapshots longer than a page, stored in parts
//! (`encoding::parts`, `stored`): every read sees the whole value, the
//! tables hold about the compressed size, damage is a clear error.

use super::*;
use crate::test_support::{Rng, registry};
use autoresearch_core::{Error, Run, RunStatus, Storage, World, ledger};
use redb::ReadableTable;
use std::sync::Arc;

/// `n` runs whose text does not compress away (random ids and tasks).
fn runs(n: usize, seed: u64) -> Vec<Run> {
    let mut rng = Rng(seed);
    let words = ["optimize", "reduce", "latency", "refactor", "loop", "tests"];
    (0..n)
        .map(|i| {
            let id = format!("{:016x}-{i:05}", rng.next());
            let mut run = Run::new(&id, "exp");
            run.task = (0..8)
                .map(|_| *rng.pick(&words))
                .collect::<Vec<_>>()
                .join(" ");
            run.workspace_path = format!("/var/lib/runner/{id}");
            run
        })
        .collect()
}

fn open(path: &Path, snapshot_interval: Option<u64>) -> Arc<RedbStorage> {
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

/// World "w": tick 1 spawns 600 runs (a record and a snapshot of tens of
/// KB), tick 2 changes the status of every tenth.
async fn big_world(path: &Path) -> (WorldId, Vec<Run>) {
    let st = open(path, Some(1));
    let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
    let all = runs(600, 7);
    for r in &all {
        w.spawn_with(r).unwrap();
    }
    assert_eq!(w.commit().await.unwrap(), Tick(1));
    for (e, _) in w.find_all::<Run>(|_| true).into_iter().step_by(10) {
        let mut run = w.get::<Run>(e).unwrap();
        run.set_status(RunStatus::Running);
        w.insert(e, &run).unwrap();
    }
    assert_eq!(w.commit().await.unwrap(), Tick(2));
    (w.id(), all)
}

/// Raw `(stub length, number of parts)` of `world`'s tick in `values`
/// and `parts`.
fn raw_layout(
    path: &Path,
    values: redb::TableDefinition<(u64, u64), &[u8]>,
    parts: redb::TableDefinition<(u64, u64, u64), &[u8]>,
    world: WorldId,
    tick: u64,
) -> (usize, usize) {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let txn = db.begin_read().unwrap();
    let stub = txn
        .open_table(values)
        .unwrap()
        .get((world.0, tick))
        .unwrap()
        .unwrap()
        .value()
        .len();
    let n = txn
        .open_table(parts)
        .unwrap()
        .range((world.0, tick, 0)..=(world.0, tick, u64::MAX))
        .unwrap()
        .count();
    (stub, n)
}

#[tokio::test]
async fn long_records_and_snapshots_are_stored_in_parts_and_every_read_sees_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, all) = big_world(&path).await;
    let (stub, n) = raw_layout(&path, RECORDS, encoding::RECORD_PARTS, id, 1);
    assert_eq!(stub, 18, "a stub in the records table");
    assert!(n >= 2, "{n} parts");
    let (stub, n) = raw_layout(&path, SNAPSHOTS, encoding::SNAPSHOT_PARTS, id, 1);
    assert!(stub == 18 && n >= 2, "snapshot: stub {stub}, {n} parts");

    let redb = open(&path, Some(1));
    let st: Arc<dyn Storage> = redb.clone();
    let reg = registry();
    // The whole record, as a replay reads it.
    let records = st.read_own_records(id, Tick(1), Tick(2)).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].changes.len(), 1200);
    // Reopened (from the snapshot), at tick 1 (time travel), one
    // component's values (spans and copies), a fork: the same runs.
    let w = World::open(st.clone(), reg.clone(), "w").await.unwrap();
    let mut ids: Vec<String> = w
        .find_all::<Run>(|_| true)
        .into_iter()
        .map(|(_, r)| r.run_id)
        .collect();
    ids.sort();
    let mut want: Vec<String> = all.iter().map(|r| r.run_id.clone()).collect();
    want.sort();
    assert_eq!(ids, want);
    let running = |w: &World| {
        w.find_all::<Run>(|_| true)
            .into_iter()
            .filter(|(_, r)| r.status == "running")
            .count()
    };
    assert_eq!(running(&w), 60);
    let past = World::open_at(st.clone(), reg.clone(), id, Tick(1))
        .await
        .unwrap();
    assert_eq!(running(&past), 0);
    assert_eq!(past.len(), 600);
    let values = ledger::component_values_at::<Run>(st.as_ref(), &reg, id, Tick(2))
        .await
        .unwrap();
    assert_eq!(values.iter().count(), 600);
    let copied = ledger::component_at::<Run>(st.as_ref(), &reg, id, Tick(1))
        .await
        .unwrap();
    assert_eq!(copied.len(), 600);
    let state = ledger::state_at(st.as_ref(), id, Tick(1)).await.unwrap();
    let snap = st
        .own_snapshot_at_or_before(id, Tick(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap, state.to_snapshot());
    let mut fork = w.fork_world(Tick(1), "f").await.unwrap();
    assert_eq!(running(&fork), 0);
    let (e, mut run) = fork.find_all::<Run>(|_| true).into_iter().next().unwrap();
    run.set_status(RunStatus::Crashed);
    fork.insert(e, &run).unwrap();
    assert_eq!(fork.commit().await.unwrap(), Tick(2));
    // The current state reads its values from the record in parts.
    assert!(st.read_current(id, vec![]).await.unwrap().is_some());
    assert_eq!(w.run_by_id(&all[3].run_id).unwrap().1.run_id, all[3].run_id);
    // An entity's history reads the record's entities.
    assert_eq!(
        w.history(e).await.unwrap().first().map(|c| c.tick),
        Some(Tick(1))
    );

    // The parts take about the value's own length: no power-of-two
    // allocation around the whole value.
    let tables = redb.table_bytes().await.unwrap();
    let bytes = |name: &str| {
        tables
            .iter()
            .find(|t| t.name == name)
            .map(TableBytes::total)
            .unwrap()
    };
    let stored = |name: &str| tables.iter().find(|t| t.name == name).unwrap().stored;
    let parts = bytes("record_parts");
    assert!(
        parts <= stored("record_parts") * 11 / 10 + 8192,
        "record_parts {parts} B for {} B of parts",
        stored("record_parts")
    );
}

/// Rewrites part `part` of `world`'s tick of `parts` (removes it when
/// `edit` returns `None`).
fn edit_part(
    path: &Path,
    parts: redb::TableDefinition<(u64, u64, u64), &[u8]>,
    key: (u64, u64, u64),
    edit: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
) {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(parts).unwrap();
        let bytes = t.get(key).unwrap().unwrap().value().to_vec();
        match edit(bytes) {
            Some(b) => t.insert(key, b.as_slice()).unwrap(),
            None => t.remove(key).unwrap(),
        };
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_damaged_or_missing_part_is_an_error_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, _) = big_world(&path).await;
    edit_part(&path, encoding::RECORD_PARTS, (id.0, 1, 1), |mut b| {
        b[10] ^= 0xff;
        Some(b)
    });
    edit_part(&path, encoding::SNAPSHOT_PARTS, (id.0, 1, 0), |_| None);
    let st: Arc<dyn Storage> = open(&path, Some(1));
    let corrupt = |err: StorageError, what: &str, why: &str| match err {
        StorageError::Corrupt {
            world,
            tick,
            reason,
        } => {
            assert_eq!((world, tick), (id, Tick(1)));
            assert!(reason.contains(what) && reason.contains(why), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    };
    corrupt(
        st.read_own_records(id, Tick(1), Tick(2)).await.unwrap_err(),
        "tick record",
        "checksum",
    );
    corrupt(
        st.own_snapshot_at_or_before(id, Tick(1)).await.unwrap_err(),
        "snapshot",
        "missing",
    );
    corrupt(
        st.read_own_component_spans(id, Tick(1), Tick(1), "Run")
            .await
            .unwrap_err(),
        "tick record",
        "checksum",
    );
    // Time travel reports it, never a panic; the world stays readable
    // from the later snapshot.
    let err = ledger::state_at(st.as_ref(), id, Tick(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Storage(StorageError::Corrupt { .. })),
        "{err}"
    );
    assert_eq!(
        ledger::state_at(st.as_ref(), id, Tick(2))
            .await
            .unwrap()
            .entities
            .len(),
        600
    );
}
