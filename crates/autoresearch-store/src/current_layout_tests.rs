//! The current state kept in files of earlier layouts and of other
//! versions: missing tables and forks fall back to the log, an older
//! build's append or an entry of another version stops the keeping, and
//! a world kept in an earlier layout is read as kept and moved by the
//! next append; nothing stored is lost.

use crate::{RedbConfig, RedbStorage};
use autoresearch_core::current::CurrentRead;
use autoresearch_core::{Run, RunStatus, Storage, Tick, World};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable};
use std::sync::Arc;

use crate::current_tests::{check, open_both, pending_of};
use crate::test_support::{Rng, raw_db, registry};

#[tokio::test]
async fn forks_and_ledgers_written_without_it_fall_back_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        for i in 0..5 {
            w.spawn_with(&Run::new(format!("r{i}"), "w")).unwrap();
            w.commit().await.unwrap();
        }
        assert!(st.read_current(w.id(), vec![]).await.unwrap().is_some());
        // A fork keeps none: its reads materialize.
        let fork = w.fork(Tick(3), "what-if").await.unwrap();
        assert_eq!(st.read_current(fork.id, vec![]).await.unwrap(), None);
        let mut f = World::open_id(st.clone(), registry(), fork.id)
            .await
            .unwrap();
        f.spawn_with(&Run::new("f", "w")).unwrap();
        f.commit().await.unwrap();
        assert_eq!(st.read_current(fork.id, vec![]).await.unwrap(), None);
        w.id()
    };
    // A ledger written before the current state was kept: its tables are
    // missing.
    {
        let db = raw_db(&path);
        let txn = db.begin_write().unwrap();
        txn.delete_table(crate::current::TICKS).unwrap();
        txn.delete_table(crate::current::INDEX).unwrap();
        txn.delete_table(crate::current::PENDING).unwrap();
        txn.delete_table(crate::current::TALLY).unwrap();
        txn.delete_table(crate::current::HEAD).unwrap();
        txn.commit().unwrap();
    }
    let ro = RedbStorage::open_read_only(&path).unwrap();
    assert_eq!(
        ro.read_current(id, vec![CurrentRead::Tally]).await.unwrap(),
        None
    );
    drop(ro);
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    assert_eq!(st.read_current(id, vec![]).await.unwrap(), None);
    // Appending to it keeps none (never a partial state), and nothing
    // stored is lost.
    let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
    w.spawn_with(&Run::new("r5", "w")).unwrap();
    w.commit().await.unwrap();
    assert_eq!(st.read_current(id, vec![]).await.unwrap(), None);
    let again = World::open_id(st.clone(), registry(), id).await.unwrap();
    assert_eq!(again.find_all::<Run>(|_| true).len(), 6);
}

#[tokio::test]
async fn a_world_appended_to_by_an_older_build_keeps_none_from_then_on() {
    for layout in ["current_head", "state row"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let id = {
            let st: Arc<dyn Storage> =
                Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
            let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
            w.spawn_with(&Run::new("r0", "w")).unwrap();
            w.commit().await.unwrap();
            w.id()
        };
        // An older build appends tick 2 and leaves the head kept at tick
        // 1: in `current_head` (the layout before the state row), or in
        // the state row (which a build of file format 6 never reads).
        {
            let db = raw_db(&path);
            let txn = db.begin_write().unwrap();
            if layout == "current_head" {
                assert_eq!(crate::current::to_previous_layout(&txn, id.0), 1);
                txn.open_table(crate::current::HEAD)
                    .unwrap()
                    .insert(id.0, 0)
                    .unwrap();
            } else {
                let mut t = txn.open_table(crate::current::PENDING).unwrap();
                let key = (id.0, crate::current::STATE_KEY);
                let mut row = t.get(key).unwrap().unwrap().value().to_vec();
                assert_eq!(crate::current::state_head(&row), Some(1));
                row[1..9].copy_from_slice(&0u64.to_le_bytes());
                t.insert(key, row.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        assert_eq!(st.read_current(id, vec![]).await.unwrap(), None, "{layout}");
        let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
        w.spawn_with(&Run::new("r1", "w")).unwrap();
        w.commit().await.unwrap();
        assert_eq!(st.read_current(id, vec![]).await.unwrap(), None, "{layout}");
        assert_eq!(w.find_all::<Run>(|_| true).len(), 2, "{layout}");
    }
}

#[tokio::test]
async fn a_tally_of_another_version_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        w.spawn_with(&Run::new("r0", "w")).unwrap();
        w.commit().await.unwrap();
        assert!(
            st.read_current(w.id(), vec![CurrentRead::Tally])
                .await
                .unwrap()
                .is_some()
        );
        w.id()
    };
    {
        let db = raw_db(&path);
        let txn = db.begin_write().unwrap();
        // As the layout before the state row kept it.
        crate::current::to_previous_layout(&txn, id.0);
        {
            let mut t = txn.open_table(crate::current::TALLY).unwrap();
            let mut bytes = t.get(id.0).unwrap().unwrap().value().to_vec();
            assert_eq!(bytes[0], 1, "the tally starts with its version");
            bytes[0] = 9;
            t.insert(id.0, bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    assert_eq!(
        st.read_current(id, vec![CurrentRead::Tally]).await.unwrap(),
        None
    );
    // A writer stops keeping it; nothing stored is lost.
    let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
    w.spawn_with(&Run::new("r1", "w")).unwrap();
    w.commit().await.unwrap();
    assert_eq!(st.read_current(id, vec![]).await.unwrap(), None);
    assert_eq!(w.find_all::<Run>(|_| true).len(), 2);
}

/// A ledger kept by a build before `current_pending` (its head in
/// `current_at`, no pending table) reads as kept, and the first append by
/// this build moves its head to `current_head`.
#[tokio::test]
async fn a_world_kept_in_the_previous_layout_is_read_and_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = {
        let (redb, st) = open_both(&path);
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        for i in 0..2_100u64 {
            w.spawn_with(&Run::new(format!("r{i}"), "w")).unwrap();
        }
        w.commit().await.unwrap();
        assert_eq!(pending_of(&redb, w.id()).await, (0, 0));
        w.id()
    };
    const OLD_AT: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("current_at");
    {
        let db = raw_db(&path);
        let txn = db.begin_write().unwrap();
        let head = crate::current::to_previous_layout(&txn, id.0);
        txn.delete_table(crate::current::HEAD).unwrap();
        txn.delete_table(crate::current::PENDING).unwrap();
        txn.open_table(OLD_AT).unwrap().insert(id.0, head).unwrap();
        txn.commit().unwrap();
    }
    // Read-only: the previous layout answers as it did.
    let mut rng = Rng(8);
    {
        let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
        check(&ro, id, &mut rng, 8).await;
    }
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    check(&st, id, &mut rng, 8).await;
    let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
    let e = w.find_all::<Run>(|r| r.run_id == "r7")[0].0;
    let mut run = w.get::<Run>(e).unwrap();
    run.set_status(RunStatus::Stopped);
    w.insert_owned(e, run).unwrap();
    w.commit().await.unwrap();
    check(&st, id, &mut rng, 8).await;
    drop(w);
    drop(st);
    let db = raw_db(&path);
    let txn = db.begin_read().unwrap();
    assert_eq!(
        txn.open_table(OLD_AT)
            .unwrap()
            .get(id.0)
            .unwrap()
            .map(|v| v.value()),
        None
    );
    assert_eq!(state_head_of(&txn, id.0), Some(2));
}

/// The head tick in world `w`'s state row, if it has one.
fn state_head_of(txn: &ReadTransaction, w: u64) -> Option<u64> {
    let t = txn.open_table(crate::current::PENDING).unwrap();
    t.get((w, crate::current::STATE_KEY))
        .unwrap()
        .map(|v| crate::current::state_head(v.value()).unwrap())
}

/// World `w`'s entries in `current_head` and `current_tally` (the layout
/// before the state row).
fn previous_layout_of(txn: &ReadTransaction, w: u64) -> (Option<u64>, bool) {
    let head = txn.open_table(crate::current::HEAD).unwrap();
    let tally = txn.open_table(crate::current::TALLY).unwrap();
    (
        head.get(w).unwrap().map(|v| v.value()),
        tally.get(w).unwrap().is_some(),
    )
}

/// An update tick keeps the head and the tally in the world's state row
/// (beside its pending changes, one leaf page), never in `current_head`
/// or `current_tally`; a world kept in that earlier layout (file format 6)
/// reads as kept, read-only and read-write, and the first append by this
/// build moves it to the state row; reads equal the recount throughout.
#[tokio::test]
async fn the_head_and_tally_live_in_the_state_row_and_the_earlier_layout_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let mut rng = Rng(21);
    let (id, e) = {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        for i in 0..5u64 {
            w.spawn_with(&Run::new(format!("r{i}"), "a")).unwrap();
        }
        w.commit().await.unwrap();
        let e = w.find_all::<Run>(|r| r.run_id == "r3")[0].0;
        let mut run = w.get::<Run>(e).unwrap();
        run.set_status(RunStatus::Crashed);
        w.insert_owned(e, run).unwrap();
        w.commit().await.unwrap();
        check(&st, w.id(), &mut rng, 4).await;
        (w.id(), e)
    };
    {
        let db = raw_db(&path);
        let txn = db.begin_read().unwrap();
        assert_eq!(state_head_of(&txn, id.0), Some(2));
        assert_eq!(previous_layout_of(&txn, id.0), (None, false));
        drop(txn);
        // The earlier layout, as a build of file format 6 left it.
        let txn = db.begin_write().unwrap();
        assert_eq!(crate::current::to_previous_layout(&txn, id.0), 2);
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(state_head_of(&txn, id.0), None);
        assert_eq!(previous_layout_of(&txn, id.0), (Some(2), true));
    }
    {
        let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path).unwrap());
        assert!(ro.read_current(id, vec![]).await.unwrap().is_some());
        check(&ro, id, &mut rng, 4).await;
    }
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    check(&st, id, &mut rng, 4).await;
    let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
    let mut run = w.get::<Run>(e).unwrap();
    run.set_status(RunStatus::Running);
    w.insert_owned(e, run).unwrap();
    w.commit().await.unwrap();
    assert!(st.read_current(id, vec![]).await.unwrap().is_some());
    check(&st, id, &mut rng, 4).await;
    drop(w);
    drop(st);
    let db = raw_db(&path);
    let txn = db.begin_read().unwrap();
    assert_eq!(state_head_of(&txn, id.0), Some(3));
    assert_eq!(previous_layout_of(&txn, id.0), (None, false));
}

/// A pending entry of another version is not read: reads fall back, and
/// a writer stops keeping the world's state (its pending entries go);
/// nothing stored is lost.
#[tokio::test]
async fn a_pending_entry_of_another_version_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = {
        let (redb, st) = open_both(&path);
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        w.spawn_with(&Run::new("r0", "w")).unwrap();
        w.commit().await.unwrap();
        w.spawn_with(&Run::new("r1", "w")).unwrap();
        w.commit().await.unwrap();
        assert!(st.read_current(w.id(), vec![]).await.unwrap().is_some());
        assert_eq!(pending_of(&redb, w.id()).await.0, 2);
        w.id()
    };
    {
        let db = raw_db(&path);
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(crate::current::PENDING).unwrap();
            let mut bytes = t.get((id.0, 2)).unwrap().unwrap().value().to_vec();
            assert_eq!(bytes[0], 1, "a pending entry starts with its version");
            bytes[0] = 9;
            t.insert((id.0, 2), bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (redb, st) = open_both(&path);
    assert_eq!(st.read_current(id, vec![]).await.unwrap(), None);
    let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
    w.spawn_with(&Run::new("r2", "w")).unwrap();
    w.commit().await.unwrap();
    assert_eq!(st.read_current(id, vec![]).await.unwrap(), None);
    assert_eq!(w.find_all::<Run>(|_| true).len(), 3);
    assert_eq!(pending_of(&redb, id).await, (0, 0));
}
