//! TickWriter: ticks appended without a materialized world read back like
//! ticks a World committed, snapshots included.

use autoresearch_core::{
    ComponentRegistry, Error, MemoryStorage, Run, Storage, StorageError, Tick, TickWriter, World,
    ledger,
};
use std::sync::Arc;

fn setup(k: Option<u64>) -> (Arc<dyn Storage>, Arc<ComponentRegistry>) {
    let reg = ComponentRegistry::with_lifecycle();
    (Arc::new(MemoryStorage::new(k)), Arc::new(reg))
}

/// Writes the same ticks through a World and through a TickWriter (resumed
/// from the world at every other tick) and compares the states at every tick.
#[tokio::test]
async fn writer_ticks_equal_world_ticks_with_snapshots() {
    let (st_a, reg) = setup(Some(3));
    let (st_b, _) = setup(Some(3));
    let mut a = World::create(st_a.clone(), reg.clone(), "w").await.unwrap();
    let mut b = TickWriter::create(st_b.clone(), reg.clone(), "w")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for t in 0..8u64 {
        if t % 2 == 1 {
            // A new process: resume from what it knows about the head.
            let (id, head, next) = (b.info().id, b.head(), b.next_entity());
            b = TickWriter::resume(st_b.clone(), reg.clone(), id, head, next)
                .await
                .unwrap();
        }
        let run = Run::new(format!("r{t}"), "exp");
        let ea = a.spawn_with(&run).unwrap();
        let eb = b.spawn();
        if t % 3 == 0 {
            let (name, bytes) = reg.encode(&run).unwrap();
            b.set_encoded(eb, name, bytes);
        } else {
            b.set(eb, &run).unwrap();
        }
        assert_eq!(ea, eb);
        ids.push(ea);
        let mut changed = Run::new(format!("r{}", t / 2), "exp");
        changed.status = format!("s{t}");
        a.insert(ids[(t / 2) as usize], &changed).unwrap();
        b.set(ids[(t / 2) as usize], &changed).unwrap();
        assert_eq!(a.commit().await.unwrap(), b.commit().await.unwrap());
    }
    assert_eq!(b.head(), Tick(8));
    for t in 1..=8 {
        let sa = ledger::state_at(st_a.as_ref(), a.id(), Tick(t))
            .await
            .unwrap();
        let sb = ledger::state_at(st_b.as_ref(), b.info().id, Tick(t))
            .await
            .unwrap();
        assert_eq!(sa, sb, "state at tick {t}");
    }
    // The snapshot the writer made at tick 6 is the state at tick 6.
    let snap = st_b
        .own_snapshot_at_or_before(b.info().id, Tick(7))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.tick, Tick(6));
    let sa = ledger::state_at(st_a.as_ref(), a.id(), Tick(6))
        .await
        .unwrap();
    assert_eq!(snap, sa.to_snapshot());
    // A world opened afterwards continues from the writer's ids.
    let mut w = World::open_id(st_b.clone(), reg.clone(), b.info().id)
        .await
        .unwrap();
    assert_eq!(w.next_entity(), b.next_entity());
    assert_eq!(w.run_by_id("r7").unwrap().0, ids[7]);
    w.spawn().unwrap();
    assert_eq!(w.commit().await.unwrap(), Tick(9));
}

#[tokio::test]
async fn stale_head_is_a_conflict_and_nothing_is_written() {
    let (st, reg) = setup(None);
    let mut w = World::create(st.clone(), reg.clone(), "w").await.unwrap();
    w.spawn_with(&Run::new("r1", "exp")).unwrap();
    w.commit().await.unwrap();
    let mut writer = TickWriter::from_world(&w).unwrap();
    assert_eq!((writer.head(), writer.next_entity()), (Tick(1), 1));
    // Another writer advances the world.
    w.spawn_with(&Run::new("r2", "exp")).unwrap();
    w.commit().await.unwrap();
    let err = TickWriter::resume(st.clone(), reg.clone(), w.id(), Tick(1), 1)
        .await
        .err()
        .unwrap();
    assert!(matches!(
        err,
        Error::Storage(StorageError::Conflict { head: Tick(2), .. })
    ));
    let e = writer.spawn();
    writer.set(e, &Run::new("r3", "exp")).unwrap();
    let err = writer.commit().await.unwrap_err();
    assert!(matches!(err, Error::Storage(StorageError::Conflict { .. })));
    assert_eq!(writer.head(), Tick(1));
    assert_eq!(st.world(w.id()).await.unwrap().head, Tick(2));
    // Nothing buffered: nothing appended.
    let mut idle = TickWriter::from_world(&w).unwrap();
    assert_eq!(idle.commit().await.unwrap(), Tick(2));
    assert_eq!(st.world(w.id()).await.unwrap().head, Tick(2));
}

#[tokio::test]
async fn read_only_world_gives_no_writer() {
    let (st, reg) = setup(None);
    let mut w = World::create(st.clone(), reg.clone(), "w").await.unwrap();
    w.spawn_with(&Run::new("r1", "exp")).unwrap();
    w.commit().await.unwrap();
    w.spawn_with(&Run::new("r2", "exp")).unwrap();
    w.commit().await.unwrap();
    let past = World::open_at(st, reg, w.id(), Tick(1)).await.unwrap();
    assert!(matches!(
        TickWriter::from_world(&past),
        Err(Error::ReadOnly { .. })
    ));
}

/// A fork made by a writer's first commit holds its parent's state at the
/// fork tick plus that tick (with a snapshot when one is due, made from
/// the parent's state); a refused one leaves no world behind.
#[tokio::test]
async fn a_fork_on_commit_is_made_with_its_first_tick() {
    for k in [None, Some(1)] {
        let (st, reg) = setup(k);
        let mut w = World::create(st.clone(), reg.clone(), "w").await.unwrap();
        let e = w.spawn_with(&Run::new("r0", "exp")).unwrap();
        w.commit().await.unwrap();
        w.insert(e, &Run::new("r0-late", "exp")).unwrap();
        w.commit().await.unwrap();
        // Forked at tick 1 (before the rename), with a spawn and a change.
        let mut f = TickWriter::fork_on_commit(st.clone(), reg.clone(), w.id(), Tick(1), "f", 1);
        assert_eq!(f.head(), Tick(1));
        let born = f.spawn();
        f.set(born, &Run::new("r1", "exp")).unwrap();
        f.set(e, &Run::new("r0-fork", "exp")).unwrap();
        assert_eq!(f.commit().await.unwrap(), Tick(2));
        let info = st.find_world("f").await.unwrap().unwrap();
        assert_eq!(info.id, f.info().id);
        assert_eq!(info.head, Tick(2));
        assert_eq!(
            info.parent.map(|p| (p.parent, p.tick)),
            Some((w.id(), Tick(1)))
        );
        let fork = World::open_id(st.clone(), reg.clone(), info.id)
            .await
            .unwrap();
        assert_eq!(fork.get::<Run>(e).unwrap().run_id, "r0-fork");
        assert_eq!(fork.get::<Run>(born).unwrap().run_id, "r1");
        let snapshot = st
            .own_snapshot_at_or_before(info.id, Tick(2))
            .await
            .unwrap();
        assert_eq!(snapshot.is_some(), k.is_some(), "snapshot with k={k:?}");
        if let Some(s) = snapshot {
            assert_eq!(s, fork.encode_state().unwrap().to_snapshot());
        }
        // A name taken: refused at the commit, nothing new in the ledger.
        let mut taken =
            TickWriter::fork_on_commit(st.clone(), reg.clone(), w.id(), Tick(2), "w", 1);
        taken.set(e, &Run::new("x", "exp")).unwrap();
        let err = taken.commit().await.unwrap_err();
        assert!(
            matches!(err, Error::Storage(StorageError::NameTaken(_))),
            "{err}"
        );
        assert_eq!(st.list_worlds().await.unwrap().len(), 2);
        // Nothing buffered: the empty fork.
        let mut empty =
            TickWriter::fork_on_commit(st.clone(), reg.clone(), w.id(), Tick(2), "e", 1);
        assert_eq!(empty.commit().await.unwrap(), Tick(2));
        let info = st.find_world("e").await.unwrap().unwrap();
        assert_eq!(
            (info.head, info.parent.map(|p| p.tick)),
            (Tick(2), Some(Tick(2)))
        );
    }
}
