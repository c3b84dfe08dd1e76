//! Large records laid out by column (`encoding::columnar`, file format 6)
//! through the store: an ingest's record is stored that way, and every
//! reader (replay, time travel, one-component reads, deltas based on it,
//! a fresh or read-only handle) sees the runs committed; a format 5 file,
//! whose ingest record is row-wise, still reads and is upgraded.

use super::*;
use crate::stored::{ReadValues, WriteValues};
use crate::test_support::{Rng, registry};
use autoresearch_core::{Run, RunStatus, Storage, World, ledger};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs in the ingest: past the layout's threshold of changes.
const RUNS: usize = 1_500;

fn open(path: &Path) -> Arc<dyn Storage> {
    Arc::new(
        RedbStorage::open(
            path,
            RedbConfig {
                snapshot_interval: None,
                ..RedbConfig::default()
            },
        )
        .unwrap(),
    )
}

fn runs_of(w: &World) -> BTreeMap<EntityId, Run> {
    w.find_all::<Run>(|_| true).into_iter().collect()
}

/// World "w": tick 1 spawns [`RUNS`] runs of the parity shape, ticks 2..=6
/// each change the status of 40 of them (stored as deltas of tick 1's
/// values). Returns the world and the runs after each tick (index =
/// tick).
async fn history(path: &Path) -> (WorldId, Vec<BTreeMap<EntityId, Run>>) {
    let st = open(path);
    let mut w = World::create(st, registry(), "w").await.unwrap();
    let mut rng = Rng(5);
    let exps = ["kernel-tune", "sat-solver", "docs-fix", "rust-port"];
    for i in 0..RUNS {
        let exp = *rng.pick(&exps);
        let id = format!("{:016x}-{i:07}", rng.next());
        let mut run = Run::new(id.clone(), exp);
        run.vm_name = format!("vm-{exp}-{i:07}");
        run.workspace_path = format!("/var/lib/runner/workspaces/{id}");
        run.task = (0..6 + rng.below(8))
            .map(|_| *rng.pick(&["fix", "the", "loop", "add", "tests", "port"]))
            .collect::<Vec<_>>()
            .join(" ");
        run.started_at_ms = 1_767_225_600_000 + 37_000 * i as i64 + rng.below(1000) as i64;
        if rng.below(2) == 0 {
            run.finished_at_ms = run.started_at_ms + 60_000 * (1 + rng.below(100) as i64);
        }
        w.spawn_with(&run).unwrap();
    }
    w.commit().await.unwrap();
    let mut states = vec![BTreeMap::new(), runs_of(&w)];
    let entities: Vec<EntityId> = states[1].keys().copied().collect();
    for _ in 2..=6 {
        for _ in 0..40 {
            let e = *rng.pick(&entities);
            let mut run = w.get::<Run>(e).unwrap();
            run.set_status(*rng.pick(&[RunStatus::Booting, RunStatus::Stopping]));
            w.insert(e, &run).unwrap();
        }
        w.commit().await.unwrap();
        states.push(runs_of(&w));
    }
    (w.id(), states)
}

/// The value of a store operation that must succeed here.
fn ok<T>(r: Result<T, Failure>) -> T {
    match r {
        Ok(v) => v,
        Err(_) => panic!("a store operation failed"),
    }
}

fn raw_db(path: &Path) -> Database {
    Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap()
}

/// The stored value of `world`'s record of `tick`, joined from its parts
/// (a record with deltas resolved).
fn joined_record(path: &Path, world: WorldId, tick: u64) -> Vec<u8> {
    let db = raw_db(path);
    let txn = db.begin_read().unwrap();
    let records = ok(ReadValues::records(&txn));
    ok(records.get(world.0, tick)).unwrap().to_vec()
}

async fn check_reads(st: &Arc<dyn Storage>, id: WorldId, states: &[BTreeMap<EntityId, Run>]) {
    let reg = registry();
    for tick in 1..states.len() as u64 {
        let past = World::open_at(st.clone(), reg.clone(), id, Tick(tick))
            .await
            .unwrap();
        assert_eq!(runs_of(&past), states[tick as usize], "tick {tick}");
        let values = ledger::component_values_at::<Run>(st.as_ref(), &reg, id, Tick(tick))
            .await
            .unwrap();
        assert_eq!(values.len(), RUNS, "one-component read at {tick}");
    }
    let now = World::open(st.clone(), reg, "w").await.unwrap();
    assert_eq!(runs_of(&now), states[states.len() - 1]);
    let run = &states[states.len() - 1].values().next().unwrap().run_id;
    assert_eq!(&now.run_by_id(run).unwrap().1.run_id, run);
}

#[tokio::test]
async fn an_ingest_is_laid_out_by_column_and_every_reader_sees_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, states) = history(&path).await;
    let ingest = joined_record(&path, id, 1);
    assert_eq!(ingest[0], 4, "the ingest is laid out by column");
    // Later ticks hold deltas whose base values are in it.
    let versions: Vec<u8> = {
        let db = raw_db(&path);
        let txn = db.begin_read().unwrap();
        let records = txn.open_table(RECORDS).unwrap();
        (2..=6)
            .map(|t| records.get((id.0, t)).unwrap().unwrap().value()[0])
            .collect()
    };
    assert!(versions.contains(&encoding::DELTA_VERSION), "{versions:?}");
    // Its runs' values, row-wise and compressed, would take more.
    let record = encoding::decode_record(Tick(1), &ingest).unwrap();
    let row_wise = encoding::encode_record_rows(record).unwrap();
    assert!(
        ingest.len() * 3 < row_wise.len() * 2,
        "{} bytes by column, {} row-wise",
        ingest.len(),
        row_wise.len()
    );
    // A fresh handle (nothing decoded yet) and a read-only one.
    check_reads(&open(&path), id, &states).await;
    let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
    check_reads(&ro, id, &states).await;
}

#[tokio::test]
async fn a_format_5_file_with_a_row_wise_ingest_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, states) = history(&path).await;
    {
        // Rewritten in format 5's shape: the ingest record row-wise.
        let record = encoding::decode_record(Tick(1), &joined_record(&path, id, 1)).unwrap();
        let row_wise = encoding::encode_record_rows(record).unwrap();
        assert_eq!(row_wise[0], encoding::PACKED_VERSION);
        let db = raw_db(&path);
        let txn = db.begin_write().unwrap();
        {
            let mut records = ok(WriteValues::records(&txn, &Arc::default()));
            ok(records.insert(id.0, 1, &row_wise));
            txn.open_table(META)
                .unwrap()
                .insert(encoding::FORMAT_KEY, [5u8].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    assert_eq!(joined_record(&path, id, 1)[0], encoding::PACKED_VERSION);
    let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
    check_reads(&ro, id, &states).await;
    drop(ro);
    let st = open(&path);
    check_reads(&st, id, &states).await;
    drop(st);
    let db = raw_db(&path);
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(
        meta.get(encoding::FORMAT_KEY).unwrap().unwrap().value(),
        [FORMAT_VERSION]
    );
}
