//! Read-only opens: they never create or write the ledger file, and they
//! read what read-write handles (other processes) commit.

use autoresearch_core::{
    ChangeKind, ComponentRegistry, Storage, StorageError, Tick, World, ledger,
};
use autoresearch_store::{FORMAT_VERSION, RedbConfig, RedbStorage};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(i64);

fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::new();
    r.register::<Score>("Score").unwrap();
    Arc::new(r)
}

/// A ledger with world "w": e0 spawned and scored, e1 spawned and despawned.
async fn small_ledger(path: &Path) {
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(path, RedbConfig::default()).unwrap());
    let mut w = World::create(st, registry(), "w").await.unwrap();
    let e0 = w.spawn_with(&Score(1)).unwrap();
    let e1 = w.spawn_with(&Score(2)).unwrap();
    w.commit().await.unwrap();
    w.insert(e0, &Score(3)).unwrap();
    w.despawn(e1).unwrap();
    w.commit().await.unwrap();
}

/// Every name in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_missing_ledger_is_an_error_naming_it_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mistyped/ledger.redb");
    let err = RedbStorage::open_read_only(&path).err().unwrap();
    assert!(
        matches!(&err, StorageError::LedgerNotFound { path: p } if *p == path),
        "{err}"
    );
    assert!(err.to_string().contains("mistyped/ledger.redb"), "{err}");
    assert!(!dir.path().join("mistyped").exists());
    // A directory is not a ledger either.
    let err = RedbStorage::open_read_only(dir.path()).err().unwrap();
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_read_only_open_never_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    small_ledger(&path).await;
    let before = std::fs::read(&path).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Read-only permissions (root ignores them, so the assertions below
    // are what shows that nothing is written: same bytes, same mtime, no
    // new file beside the ledger).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    {
        let ro = RedbStorage::open_read_only(&path).unwrap();
        assert!(ro.is_read_only());
        let st: Arc<dyn Storage> = Arc::new(ro);
        let worlds = st.list_worlds().await.unwrap();
        assert_eq!(worlds.len(), 1);
        let w = World::open(st.clone(), registry(), "w").await.unwrap();
        assert_eq!((w.tick(), w.len()), (Tick(2), 1));
        let history =
            ledger::entity_history(st.as_ref(), w.id(), autoresearch_core::EntityId(1), Tick(2))
                .await
                .unwrap();
        assert_eq!(history.last().unwrap().change.kind(), ChangeKind::Despawn);
        // Writes are refused, naming the file.
        let err = st.create_world("x").await.unwrap_err();
        assert!(
            matches!(&err, StorageError::ReadOnlyLedger { path: p, .. } if *p == path),
            "{err}"
        );
        let mut w = w;
        w.spawn_with(&Score(5)).unwrap();
        let err = w.commit().await.unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file's bytes changed"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    assert_eq!(listing(dir.path()), vec!["ledger.redb".to_string()]);
}

#[tokio::test]
async fn a_read_only_open_reads_beside_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    small_ledger(&path).await;
    let writer: Arc<dyn Storage> =
        Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let reader: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
    let mut w = World::open(writer, registry(), "w").await.unwrap();
    w.spawn_with(&Score(9)).unwrap();
    w.commit().await.unwrap();
    let seen = reader.find_world("w").await.unwrap().unwrap();
    assert_eq!(seen.head, Tick(3));
    let state = ledger::state_at(reader.as_ref(), seen.id, Tick(3))
        .await
        .unwrap();
    assert_eq!(state.entities.len(), 2);
}

/// A format 1 file (before the liveness table) is read as it is by a
/// read-only open, and upgraded by the first read-write open: entities
/// alive in the old log can be changed, dead ones cannot.
#[tokio::test]
async fn a_format_1_file_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    small_ledger(&path).await;
    {
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        let live: redb::TableDefinition<(u64, u64, u64), bool> =
            redb::TableDefinition::new("liveness");
        assert!(txn.delete_table(live).unwrap());
        assert!(txn.delete_table(SPAWNS).unwrap());
        let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        txn.open_table(meta)
            .unwrap()
            .insert("format_version", [1u8].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
    assert_eq!(
        World::open(ro.clone(), registry(), "w")
            .await
            .unwrap()
            .len(),
        1
    );
    drop(ro);
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let mut w = World::open(st.clone(), registry(), "w").await.unwrap();
    let e0 = autoresearch_core::EntityId(0);
    w.insert(e0, &Score(7)).unwrap();
    assert_eq!(w.commit().await.unwrap(), Tick(3));
    let stale = autoresearch_core::TickRecord {
        tick: Tick(4),
        at_ms: 1,
        changes: vec![autoresearch_core::Change::Remove {
            entity: autoresearch_core::EntityId(1),
            component: "Score".into(),
        }],
    };
    let err = st.append(w.id(), stale, None).await.unwrap_err();
    assert!(matches!(err, StorageError::NotApplicable { .. }), "{err}");
    assert_eq!(FORMAT_VERSION, 6);
}

const SPAWNS: redb::TableDefinition<(u64, u64, u64), u64> =
    redb::TableDefinition::new("spawn_ranges");
const LIVENESS: redb::TableDefinition<(u64, u64, u64), bool> =
    redb::TableDefinition::new("liveness");
const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");

/// A format 3 file (one liveness entry per spawn, every current value in
/// `current_values`) is read as it is by a read-only open and upgraded by
/// the first read-write open: the old current-state tables are dropped
/// (its world's reads materialize), its liveness entries still decide
/// which entities a tick may change, and new spawns become ranges.
#[tokio::test]
async fn a_format_3_file_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    small_ledger(&path).await;
    let values: redb::TableDefinition<(u64, &str, u64), &[u8]> =
        redb::TableDefinition::new("current_values");
    let ticks: redb::TableDefinition<(u64, &str, u64), &[u8]> =
        redb::TableDefinition::new("current_ticks");
    {
        // Rewritten in format 3's shape: spawns as liveness entries, a
        // current_values table, no spawn_ranges or current_ticks.
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let ranges: Vec<((u64, u64, u64), u64)> = txn
                .open_table(SPAWNS)
                .unwrap()
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value(), v.value())
                })
                .collect();
            assert_eq!(ranges, [((0, 1, 0), 1)], "both spawns are one range");
            let mut live = txn.open_table(LIVENESS).unwrap();
            for ((w, last, first), tick) in ranges {
                for e in first..=last {
                    live.insert((w, e, tick), true).unwrap();
                }
            }
            let mut old = txn.open_table(values).unwrap();
            old.insert((0, "Score", 0), [6u8].as_slice()).unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", [3u8].as_slice())
                .unwrap();
        }
        assert!(txn.delete_table(SPAWNS).unwrap());
        assert!(txn.delete_table(ticks).unwrap());
        txn.commit().unwrap();
    }
    let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
    let w = World::open(ro.clone(), registry(), "w").await.unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(ro.read_current(w.id(), vec![]).await.unwrap(), None);
    drop((w, ro));
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let mut w = World::open(st.clone(), registry(), "w").await.unwrap();
    assert_eq!(st.read_current(w.id(), vec![]).await.unwrap(), None);
    let e0 = autoresearch_core::EntityId(0);
    w.insert(e0, &Score(7)).unwrap();
    let e2 = w.spawn_with(&Score(8)).unwrap();
    assert_eq!(w.commit().await.unwrap(), Tick(3));
    let stale = autoresearch_core::TickRecord {
        tick: Tick(4),
        at_ms: 1,
        changes: vec![autoresearch_core::Change::Remove {
            entity: autoresearch_core::EntityId(1),
            component: "Score".into(),
        }],
    };
    let err = st.append(w.id(), stale, None).await.unwrap_err();
    assert!(matches!(err, StorageError::NotApplicable { .. }), "{err}");
    let again = World::open(st.clone(), registry(), "w").await.unwrap();
    assert_eq!(again.get::<Score>(e0), Some(Score(7)));
    assert_eq!(again.get::<Score>(e2), Some(Score(8)));
    let id = again.id();
    drop((w, again, st));
    let db = redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(&path)
        .unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert!(!names.iter().any(|n| n == "current_values"), "{names:?}");
    let meta = txn.open_table(META).unwrap();
    assert_eq!(
        meta.get("format_version").unwrap().unwrap().value(),
        [FORMAT_VERSION]
    );
    // The new spawn is a range of its own; the old spawns stay entries.
    let spawns = txn.open_table(SPAWNS).unwrap();
    assert_eq!(
        spawns.get((id.0, e2.0, e2.0)).unwrap().map(|v| v.value()),
        Some(3)
    );
}

const RECORDS: redb::TableDefinition<(u64, u64), &[u8]> = redb::TableDefinition::new("records");
const RECORD_PARTS: redb::TableDefinition<(u64, u64, u64), &[u8]> =
    redb::TableDefinition::new("record_parts");
const SNAPSHOT_PARTS: redb::TableDefinition<(u64, u64, u64), &[u8]> =
    redb::TableDefinition::new("snapshot_parts");

/// `n` scores that do not compress away.
fn noisy_scores(n: u64, seed: u64) -> Vec<Score> {
    (0..n)
        .map(|i| Score((seed.wrapping_add(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 2) as i64))
        .collect()
}

/// A format 4 file (long records stored whole in `records`, no parts
/// tables) is read as it is by a read-only open and upgraded by the first
/// read-write open: the parts tables are created, the old records still
/// read, and new long records are stored in parts.
#[tokio::test]
async fn a_format_4_file_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let first = noisy_scores(2_000, 1);
    let id = {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        let mut w = World::create(st, registry(), "w").await.unwrap();
        for s in &first {
            w.spawn_with(s).unwrap();
        }
        w.commit().await.unwrap();
        w.id()
    };
    {
        // Rewritten in format 4's shape: the record whole, no parts tables.
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let parts = txn.open_table(RECORD_PARTS).unwrap();
            let whole: Vec<u8> = parts
                .range((id.0, 1, 0)..=(id.0, 1, u64::MAX))
                .unwrap()
                .flat_map(|e| e.unwrap().1.value().to_vec())
                .collect();
            assert!(whole.len() > 4096, "{} bytes: not in parts", whole.len());
            txn.open_table(RECORDS)
                .unwrap()
                .insert((id.0, 1), whole.as_slice())
                .unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", [4u8].as_slice())
                .unwrap();
        }
        assert!(txn.delete_table(RECORD_PARTS).unwrap());
        assert!(txn.delete_table(SNAPSHOT_PARTS).unwrap());
        txn.commit().unwrap();
    }
    let scores = |w: &World| {
        let mut v: Vec<i64> = w
            .find_all::<Score>(|_| true)
            .into_iter()
            .map(|(_, s)| s.0)
            .collect();
        v.sort();
        v
    };
    let mut want: Vec<i64> = first.iter().map(|s| s.0).collect();
    want.sort();
    let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
    let w = World::open(ro.clone(), registry(), "w").await.unwrap();
    assert_eq!(scores(&w), want);
    drop((w, ro));

    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let mut w = World::open(st.clone(), registry(), "w").await.unwrap();
    assert_eq!(scores(&w), want);
    for s in noisy_scores(2_000, 2) {
        w.spawn_with(&s).unwrap();
    }
    assert_eq!(w.commit().await.unwrap(), Tick(2));
    let past = World::open_at(st.clone(), registry(), id, Tick(1))
        .await
        .unwrap();
    assert_eq!(scores(&past), want);
    assert_eq!(
        World::open(st.clone(), registry(), "w")
            .await
            .unwrap()
            .len(),
        4_000
    );
    drop((w, past, st));
    let db = redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(&path)
        .unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(
        meta.get("format_version").unwrap().unwrap().value(),
        [FORMAT_VERSION]
    );
    // The old record stays whole; the new one is in parts.
    let records = txn.open_table(RECORDS).unwrap();
    assert!(records.get((id.0, 1)).unwrap().unwrap().value().len() > 4096);
    assert_eq!(records.get((id.0, 2)).unwrap().unwrap().value().len(), 18);
    let parts = txn.open_table(RECORD_PARTS).unwrap();
    assert!(
        parts
            .range((id.0, 2, 0)..=(id.0, 2, u64::MAX))
            .unwrap()
            .count()
            >= 2
    );
}
