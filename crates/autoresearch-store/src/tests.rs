//! Behaviour and error cases of the redb ledger, including ones that need
//! raw access to the file (corrupt values, newer format versions).

use super::*;
use crate::encoding::FORMAT_KEY;
use autoresearch_core::{
    ComponentRegistry, Error, Run, RunStatus, Storage, StorageError, Tick, World, ledger,
};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(f64);

fn registry() -> Arc<ComponentRegistry> {
    let mut reg = ComponentRegistry::with_lifecycle();
    reg.register::<Score>("Score").unwrap();
    Arc::new(reg)
}

fn config(k: Option<u64>) -> RedbConfig {
    RedbConfig {
        snapshot_interval: k,
        ..RedbConfig::default()
    }
}

fn open(path: &Path, k: Option<u64>) -> Arc<dyn Storage> {
    Arc::new(RedbStorage::open(path, config(k)).unwrap())
}

/// A ledger with one world "w" of three ticks: tick 1 spawns e0 with a run,
/// ticks 2 and 3 change its status and score.
async fn three_ticks(path: &Path) -> WorldId {
    let st = open(path, Some(2));
    let mut w = World::create(st, registry(), "w").await.unwrap();
    let e = w.spawn_with(&Run::new("r1", "w")).unwrap();
    w.commit().await.unwrap();
    for (i, s) in [RunStatus::Running, RunStatus::Stopped]
        .into_iter()
        .enumerate()
    {
        let mut run = w.get::<Run>(e).unwrap();
        run.set_status(s);
        w.insert(e, &run).unwrap();
        w.insert(e, &Score(i as f64)).unwrap();
        w.commit().await.unwrap();
    }
    w.id()
}

/// Rewrites one stored value with `edit`, through redb directly.
fn edit_value(
    path: &Path,
    def: TableDefinition<(u64, u64), &[u8]>,
    key: (u64, u64),
    edit: impl FnOnce(&mut Vec<u8>),
) {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(def).unwrap();
        let mut bytes = t.get(key).unwrap().unwrap().value().to_vec();
        edit(&mut bytes);
        t.insert(key, bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn commit_reopen_time_travel_fork_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/ledger.redb");
    let id = three_ticks(&path).await;
    let st = open(&path, Some(2));
    let reg = registry();
    let w = World::open(st.clone(), reg.clone(), "w").await.unwrap();
    assert_eq!(w.id(), id);
    assert_eq!(w.tick(), Tick(3));
    assert_eq!(w.run_by_id("r1").unwrap().1.status, "stopped");
    let past = World::open_at(st.clone(), reg.clone(), id, Tick(1))
        .await
        .unwrap();
    assert_eq!(past.run_by_id("r1").unwrap().1.status, "booting");

    let fork = w.fork(Tick(2), "what-if").await.unwrap();
    assert_eq!(fork.head, Tick(2));
    let mut f = World::open_id(st.clone(), reg.clone(), fork.id)
        .await
        .unwrap();
    let e = f.run_by_id("r1").unwrap().0;
    assert_eq!(f.get::<Score>(e), Some(Score(0.0)));
    f.insert(e, &Score(9.0)).unwrap();
    assert_eq!(f.commit().await.unwrap(), Tick(3));
    let parent_at_3 = ledger::state_at(st.as_ref(), id, Tick(3)).await.unwrap();
    let fork_at_3 = ledger::state_at(st.as_ref(), fork.id, Tick(3))
        .await
        .unwrap();
    assert_ne!(parent_at_3.entities, fork_at_3.entities);

    let hist = w.history(e).await.unwrap();
    assert_eq!(
        hist.iter().map(|c| c.tick.0).collect::<Vec<_>>(),
        vec![1, 1, 2, 2, 3, 3]
    );
    assert_eq!(f.history(e).await.unwrap().len(), 5);

    let names: Vec<String> = st
        .list_worlds()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, vec!["w", "what-if"]);
    assert!(st.find_world("nope").await.unwrap().is_none());
    assert!(matches!(
        st.create_world("w").await,
        Err(StorageError::NameTaken(n)) if n == "w"
    ));
    assert!(matches!(
        st.fork_world(id, Tick(4), "x").await,
        Err(StorageError::ForkBeyondHead {
            at: Tick(4),
            head: Tick(3),
            ..
        })
    ));
    assert!(matches!(
        st.world(WorldId(99)).await,
        Err(StorageError::NoSuchWorld(WorldId(99)))
    ));
}

#[tokio::test]
async fn racing_appends_of_one_tick_admit_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(&dir.path().join("l.redb"), None);
    let w = st.create_world("w").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            let rec = TickRecord {
                tick: Tick(1),
                at_ms: i,
                changes: vec![autoresearch_core::Change::Spawn {
                    entity: EntityId(0),
                }],
            };
            st.append(w.id, rec, None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StorageError::Conflict {
                attempted: Tick(1),
                head: Tick(1),
                ..
            }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(st.world(w.id).await.unwrap().head, Tick(1));
    assert_eq!(
        st.read_own_records(w.id, Tick(1), Tick(9))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn put_snapshot_is_checked_against_own_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = three_ticks(&path).await;
    let st = open(&path, None);
    let fork = st.fork_world(id, Tick(2), "f").await.unwrap();
    let state = ledger::state_at(st.as_ref(), id, Tick(2)).await.unwrap();
    let err = st
        .put_snapshot(fork.id, state.to_snapshot())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::SnapshotOutOfRange { tick: Tick(2), .. }),
        "{err}"
    );
    st.put_snapshot(id, state.to_snapshot()).await.unwrap();
    let got = st
        .own_snapshot_at_or_before(id, Tick(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, state.to_snapshot());
}

#[tokio::test]
async fn corrupt_record_is_an_error_naming_world_and_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = three_ticks(&path).await;
    edit_value(&path, RECORDS, (id.0, 3), |b| b.truncate(b.len() / 2));
    let st = open(&path, Some(2));
    let err = ledger::state_at(st.as_ref(), id, Tick(3))
        .await
        .unwrap_err();
    // Replay stops before the damage: the error names the last readable
    // tick, the damaged one and the file.
    let Error::Unreplayable {
        world,
        readable_to,
        source,
        ..
    } = &err
    else {
        panic!("expected Unreplayable, got {err}");
    };
    assert_eq!((*world, *readable_to), (id, Tick(2)));
    assert!(err.to_string().contains("l.redb"), "{err}");
    // A query of one component meets the same damage, with the same error.
    let query = ledger::component_at::<Run>(st.as_ref(), &registry(), id, Tick(3))
        .await
        .unwrap_err();
    assert_eq!(query.to_string(), err.to_string());
    match source.as_ref() {
        Error::Storage(StorageError::Corrupt {
            world,
            tick,
            reason,
        }) => {
            assert_eq!((*world, *tick), (id, Tick(3)));
            assert!(reason.contains("tick record"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    // Ticks before the damage still read.
    assert!(ledger::state_at(st.as_ref(), id, Tick(2)).await.is_ok());
}

#[tokio::test]
async fn corrupt_snapshot_is_an_error_naming_world_and_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = three_ticks(&path).await;
    edit_value(&path, SNAPSHOTS, (id.0, 2), |b| b.truncate(3));
    let st = open(&path, Some(2));
    let err = ledger::state_at(st.as_ref(), id, Tick(2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Storage(StorageError::Corrupt { world, tick: Tick(2), .. }) if *world == id),
        "{err}"
    );
}

#[tokio::test]
async fn value_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = three_ticks(&path).await;
    edit_value(&path, RECORDS, (id.0, 1), |b| b[0] = VALUE_VERSION + 1);
    let st = open(&path, Some(2));
    let err = st.read_own_records(id, Tick(1), Tick(1)).await.unwrap_err();
    match err {
        StorageError::NewerFormat {
            what,
            found,
            supported,
        } => {
            assert_eq!((found, supported), (VALUE_VERSION + 1, VALUE_VERSION));
            assert!(
                what.contains(&id.to_string()) && what.contains("tick 1"),
                "{what}"
            );
        }
        other => panic!("expected NewerFormat, got {other}"),
    }
}

#[tokio::test]
async fn file_from_a_newer_format_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    three_ticks(&path).await;
    {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(FORMAT_KEY, [FORMAT_VERSION + 1].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStorage::open(&path, RedbConfig::default())
        .err()
        .unwrap();
    assert!(
        matches!(&err, StorageError::NewerFormat { found, .. } if *found == FORMAT_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("l.redb"), "{err}");
}

#[tokio::test]
async fn a_file_held_exclusively_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let exclusive = RedbConfig {
        sharing: Sharing::Exclusive,
        ..RedbConfig::default()
    };
    let held = RedbStorage::open(&path, exclusive.clone()).unwrap();
    for cfg in [RedbConfig::default(), exclusive.clone()] {
        let err = RedbStorage::open(&path, cfg).err().unwrap();
        assert!(
            matches!(&err, StorageError::Locked { path: p, .. } if p.ends_with("l.redb")),
            "{err}"
        );
    }
    drop(held);
    // Shared holders admit each other, and refuse an exclusive open.
    let a = RedbStorage::open(&path, RedbConfig::default()).unwrap();
    let b = RedbStorage::open(&path, RedbConfig::default()).unwrap();
    let err = RedbStorage::open(&path, exclusive).err().unwrap();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    // And see each other's commits.
    let w = a.create_world("shared").await.unwrap();
    assert_eq!(b.find_world("shared").await.unwrap(), Some(w));
}

#[tokio::test]
async fn unknown_component_names_world_and_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    three_ticks(&path).await;
    let st = open(&path, Some(2));
    let bare = Arc::new(ComponentRegistry::with_lifecycle());
    let err = World::open(st, bare, "w").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"Score\"") && msg.contains("world#0"),
        "{msg}"
    );
}

#[test]
fn a_file_that_is_not_a_ledger_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    std::fs::write(&path, vec![0x5a; 10_000]).unwrap();
    let err = RedbStorage::open(&path, RedbConfig::default())
        .err()
        .unwrap();
    assert!(
        matches!(&err, StorageError::Backend { context, .. } if context.contains("l.redb")),
        "{err}"
    );
}

#[test]
fn invalid_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    for cfg in [
        RedbConfig {
            durable: false,
            ..RedbConfig::default()
        },
        RedbConfig {
            snapshot_interval: Some(0),
            ..RedbConfig::default()
        },
    ] {
        let err = RedbStorage::open(&path, cfg).err().unwrap();
        assert!(matches!(err, StorageError::Backend { .. }), "{err}");
    }
    assert!(!path.exists(), "a refused config creates no file");
}

#[tokio::test]
async fn non_durable_exclusive_ledger_keeps_its_ticks_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let cfg = RedbConfig {
        sharing: Sharing::Exclusive,
        durable: false,
        ..RedbConfig::default()
    };
    {
        let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, cfg).unwrap());
        let mut w = World::create(st, registry(), "bulk").await.unwrap();
        for i in 0..50 {
            w.spawn_with(&Score(i as f64)).unwrap();
            w.commit().await.unwrap();
        }
    }
    let st = open(&path, None);
    let w = World::open(st, registry(), "bulk").await.unwrap();
    assert_eq!((w.tick(), w.len()), (Tick(50), 50));
}

#[tokio::test]
async fn table_bytes_reports_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    three_ticks(&path).await;
    let st = RedbStorage::open(&path, RedbConfig::default()).unwrap();
    let tables = st.table_bytes().await.unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let mut expected = TABLE_NAMES.to_vec();
    expected.extend([
        "current_ticks",
        "current_index",
        "current_tally",
        "current_pending",
        "current_head",
        "series_head",
        "series_points",
        "series_crashed",
        "series_runs",
        "series_results",
    ]);
    assert_eq!(names, expected);
    let records = tables.iter().find(|t| t.name == "records").unwrap();
    assert!(records.stored > 0 && records.total() >= records.stored);
}

/// The entity index across many chunks, forks inside a chunk, and the
/// unfinished chunk, against a brute-force scan of the records.
#[tokio::test]
async fn entity_index_matches_a_scan_of_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(&dir.path().join("l.redb"), Some(50));
    let reg = registry();
    let mut w = World::create(st.clone(), reg.clone(), "w").await.unwrap();
    let ids: Vec<EntityId> = (0..7)
        .map(|i| w.spawn_with(&Score(i as f64)).unwrap())
        .collect();
    w.commit().await.unwrap();
    for t in 2..=300u64 {
        for (i, e) in ids.iter().enumerate() {
            if t % (i as u64 + 2) == 0 {
                w.insert(*e, &Score(t as f64)).unwrap();
            }
        }
        if w.pending().is_empty() {
            w.insert(ids[0], &Score(0.5)).unwrap();
        }
        w.commit().await.unwrap();
    }
    let fork = st.fork_world(w.id(), Tick(150), "f").await.unwrap();
    let mut f = World::open_id(st.clone(), reg.clone(), fork.id)
        .await
        .unwrap();
    for t in 151..=270u64 {
        f.insert(ids[(t % 7) as usize], &Score(-(t as f64)))
            .unwrap();
        f.commit().await.unwrap();
    }
    for world in [w.id(), fork.id] {
        let info = st.world(world).await.unwrap();
        let records = st
            .read_own_records(world, info.first_own_tick(), info.head)
            .await
            .unwrap();
        for e in &ids {
            for to in [
                Tick(1),
                Tick(64),
                Tick(65),
                Tick(150),
                Tick(199),
                Tick(256),
                info.head,
            ] {
                let expected: Vec<Tick> = records
                    .iter()
                    .filter(|r| r.tick <= to && r.entities().contains(e))
                    .map(|r| r.tick)
                    .collect();
                let got = st.own_entity_ticks(world, *e, to).await.unwrap();
                assert_eq!(got, expected, "{world} {e} up to {to}");
            }
        }
    }
    let hist = f.history(ids[3]).await.unwrap();
    assert!(hist.iter().any(|c| c.tick.0 <= 150) && hist.iter().any(|c| c.tick.0 > 150));
}

#[tokio::test]
async fn size_is_the_file_length_and_large_ticks_are_stored_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let redb = Arc::new(RedbStorage::open(&path, config(None)).unwrap());
    let st: Arc<dyn Storage> = redb.clone();
    let empty = st.size_bytes().await.unwrap().unwrap();
    assert_eq!(empty, std::fs::metadata(&path).unwrap().len());
    // 2,000 runs alike but for their ids: one tick of about 200 KB raw.
    let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
    let run = |i: usize| {
        let mut run = Run::new(format!("run-{i:05}"), "w");
        run.repo_url = "https://github.com/example/nanogpt-speedrun.git".into();
        run.task = "optimize the training loop and profile memory usage".into();
        run
    };
    for i in 0..2_000 {
        w.spawn_with(&run(i)).unwrap();
    }
    w.commit().await.unwrap();
    let records = redb
        .table_bytes()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "records")
        .unwrap();
    let raw: usize = 2_000 * postcard::to_stdvec(&run(0)).unwrap().len();
    assert!(
        records.stored * 3 < raw as u64,
        "records hold {} bytes for {raw} raw",
        records.stored
    );
    assert_eq!(
        st.size_bytes().await.unwrap().unwrap(),
        std::fs::metadata(&path).unwrap().len()
    );
    drop(w);
    // Read back whole, through a fresh open.
    drop(st);
    drop(redb);
    let st = open(&path, None);
    let w = World::open(st, registry(), "w").await.unwrap();
    assert_eq!(w.len(), 2_000);
    assert_eq!(w.run_by_id("run-01999").unwrap().1.task.len(), 51);
}
