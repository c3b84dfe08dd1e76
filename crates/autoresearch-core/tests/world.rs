//! World behaviour on the reference in-memory storage.

use autoresearch_core::{
    BranchHead, ComponentRegistry, Error, MemoryStorage, Run, RunStatus, Storage, StorageError,
    Tick, World,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(f64);

fn setup(k: Option<u64>) -> (Arc<dyn Storage>, Arc<ComponentRegistry>) {
    let mut reg = ComponentRegistry::with_lifecycle();
    reg.register::<Score>("Score").unwrap();
    (Arc::new(MemoryStorage::new(k)), Arc::new(reg))
}

#[tokio::test]
async fn commit_time_travel_fork_and_history() {
    let (st, reg) = setup(Some(2));
    let mut w = World::create(st.clone(), reg.clone(), "exp").await.unwrap();
    let e = w.spawn_with(&Run::new("r1", "exp")).unwrap();
    assert_eq!(w.commit().await.unwrap(), Tick(1));
    for (i, status) in [RunStatus::Running, RunStatus::Stopped]
        .into_iter()
        .enumerate()
    {
        let mut run = w.get::<Run>(e).unwrap();
        run.set_status(status);
        w.insert(e, &run).unwrap();
        w.insert(e, &Score(i as f64)).unwrap();
        w.commit().await.unwrap();
    }
    assert_eq!(w.tick(), Tick(3));
    assert_eq!(w.run_by_id("r1").unwrap().1.status, "stopped");

    let mut past = World::open_at(st.clone(), reg.clone(), w.id(), Tick(1))
        .await
        .unwrap();
    assert_eq!(past.run_by_id("r1").unwrap().1.status, "booting");
    assert!(past.get::<Score>(e).is_none());
    assert!(matches!(past.spawn(), Err(Error::ReadOnly { .. })));
    assert!(matches!(past.commit().await, Err(Error::ReadOnly { .. })));

    let fork = w.fork(Tick(2), "what-if").await.unwrap();
    let mut f = World::open_id(st.clone(), reg.clone(), fork.id)
        .await
        .unwrap();
    assert_eq!(f.tick(), Tick(2));
    assert_eq!(f.get::<Score>(e), Some(Score(0.0)));
    let h = f
        .spawn_with(&BranchHead::new("exp", "abc", "r1", &json!({}), 1))
        .unwrap();
    assert!(h.0 > e.0, "fork continues the id sequence");
    f.commit().await.unwrap();
    // The parent does not see the fork's tick.
    let again = World::open_id(st.clone(), reg.clone(), w.id())
        .await
        .unwrap();
    assert!(again.branch_head("exp").is_none());
    assert_eq!(again.tick(), Tick(3));

    let hist = w.history(e).await.unwrap();
    assert_eq!(
        hist.iter().map(|c| c.tick.0).collect::<Vec<_>>(),
        vec![1, 1, 2, 2, 3, 3]
    );
    let fhist = f.history(e).await.unwrap();
    assert_eq!(fhist.len(), 4);
}

#[tokio::test]
async fn two_writers_conflict_and_refresh() {
    let (st, reg) = setup(None);
    let mut a = World::create(st.clone(), reg.clone(), "w").await.unwrap();
    let mut b = World::open(st.clone(), reg.clone(), "w").await.unwrap();
    a.spawn_with(&Score(1.0)).unwrap();
    a.commit().await.unwrap();
    b.spawn_with(&Score(2.0)).unwrap();
    let err = b.commit().await.unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::Conflict { .. })),
        "{err}"
    );
    assert_eq!(b.pending().len(), 2, "pending kept after a refused commit");
    b.refresh().await.unwrap();
    assert_eq!(b.len(), 1);
    b.spawn_with(&Score(2.0)).unwrap();
    assert_eq!(b.commit().await.unwrap(), Tick(2));
}

#[tokio::test]
async fn staged_ticks_are_read_at_once_appended_together_or_dropped_on_a_conflict() {
    let (st, reg) = setup(Some(2));
    let mut a = World::create(st.clone(), reg.clone(), "w").await.unwrap();
    let e = a.spawn_with(&Score(1.0)).unwrap();
    assert_eq!(a.stage().unwrap(), Tick(1));
    a.insert(e, &Score(2.0)).unwrap();
    assert_eq!(a.stage().unwrap(), Tick(2));
    // Read here at once; not in the ledger yet.
    assert_eq!(a.get::<Score>(e), Some(Score(2.0)));
    assert_eq!((a.tick(), a.staged()), (Tick(2), 2));
    assert_eq!(st.world(a.id()).await.unwrap().head, Tick(0));
    // A commit behind staged ticks appends them all, its own last.
    a.insert(e, &Score(3.0)).unwrap();
    assert_eq!(a.commit().await.unwrap(), Tick(3));
    assert_eq!(a.staged(), 0);
    assert_eq!(st.world(a.id()).await.unwrap().head, Tick(3));
    let reread = World::open(st.clone(), reg.clone(), "w").await.unwrap();
    assert_eq!(reread.get::<Score>(e), Some(Score(3.0)));
    let ticks: Vec<u64> = reread
        .history(e)
        .await
        .unwrap()
        .iter()
        .map(|c| c.tick.0)
        .collect();
    assert_eq!(ticks, [1, 1, 2, 3], "spawn and set, then one set per tick");

    // Another writer gets in first: the flush fails and `a` goes back to
    // what the ledger holds, without its staged tick.
    let mut b = World::open(st.clone(), reg.clone(), "w").await.unwrap();
    a.insert(e, &Score(4.0)).unwrap();
    a.stage().unwrap();
    b.insert(e, &Score(5.0)).unwrap();
    b.commit().await.unwrap();
    let err = a.flush().await.unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::Conflict { .. })),
        "{err}"
    );
    assert_eq!((a.tick(), a.staged()), (Tick(4), 0));
    assert_eq!(a.get::<Score>(e), Some(Score(5.0)));
    a.insert(e, &Score(6.0)).unwrap();
    assert_eq!(a.commit().await.unwrap(), Tick(5));
}

#[tokio::test]
async fn unknown_component_names_world_and_component() {
    let (st, reg) = setup(None);
    let mut w = World::create(st.clone(), reg.clone(), "w").await.unwrap();
    w.spawn_with(&Score(1.0)).unwrap();
    w.commit().await.unwrap();
    let bare = Arc::new(ComponentRegistry::with_lifecycle());
    let err = World::open(st.clone(), bare, "w").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Score") && msg.contains("world#0"), "{msg}");
}

#[tokio::test]
async fn unregistered_type_is_refused_at_insert() {
    #[derive(Serialize, Deserialize)]
    struct Nope;
    let (st, reg) = setup(None);
    let mut w = World::create(st, reg, "w").await.unwrap();
    let e = w.spawn().unwrap();
    assert!(matches!(w.insert(e, &Nope), Err(Error::Registry(_))));
}

#[tokio::test]
async fn owned_values_commit_like_encoded_ones_and_survive_a_conflict() {
    let (st, reg) = setup(Some(2));
    let mut a = World::create(st.clone(), reg.clone(), "w").await.unwrap();
    let mut b = World::open(st.clone(), reg.clone(), "w").await.unwrap();
    a.spawn_with(&Score(0.5)).unwrap();
    a.commit().await.unwrap();

    // b is stale: its commit conflicts and keeps the owned values pending.
    let e = b.spawn_owned(Run::new("r1", "w")).unwrap();
    b.insert(e, &Score(1.0)).unwrap();
    b.insert_owned(e, Score(2.0)).unwrap();
    assert!(matches!(
        b.commit().await,
        Err(Error::Storage(StorageError::Conflict { .. }))
    ));
    assert_eq!(b.pending().len(), 4);
    assert!(b.get::<Run>(e).is_none());

    // Redone on a fresh state, mixed with encoded inserts, across a snapshot tick.
    b.refresh().await.unwrap();
    assert!(b.pending().is_empty());
    let e = b.spawn_owned(Run::new("r1", "w")).unwrap();
    let f = b.spawn_with(&Run::new("r2", "w")).unwrap();
    b.insert_owned(f, Score(3.0)).unwrap();
    b.insert(e, &Score(1.0)).unwrap();
    b.insert_owned(e, Score(2.0)).unwrap();
    assert_eq!(b.commit().await.unwrap(), Tick(2));
    assert_eq!(b.get::<Run>(e), Some(Run::new("r1", "w")));
    assert_eq!(b.get::<Run>(f), Some(Run::new("r2", "w")));
    assert_eq!(b.get::<Score>(e), Some(Score(2.0)), "the later insert wins");
    assert_eq!(b.get::<Score>(f), Some(Score(3.0)));

    // The ledger holds the same state as the committing world.
    let again = World::open(st.clone(), reg.clone(), "w").await.unwrap();
    assert_eq!(again.encode_state().unwrap(), b.encode_state().unwrap());
    assert_eq!(again.get::<Score>(e), Some(Score(2.0)));

    // Discarded owned values are not applied by a later commit.
    b.insert_owned(f, Score(9.0)).unwrap();
    b.discard_pending();
    b.insert(f, &Score(4.0)).unwrap();
    b.commit().await.unwrap();
    assert_eq!(b.get::<Score>(f), Some(Score(4.0)));
}

#[tokio::test]
async fn fork_world_and_fork_in_place_give_writable_forks() {
    let (st, reg) = setup(Some(2));
    let mut w = World::create(st.clone(), reg.clone(), "src").await.unwrap();
    let a = w.spawn_with(&Run::new("a", "exp")).unwrap();
    let b = w.spawn_with(&Run::new("b", "exp")).unwrap();
    w.commit().await.unwrap();
    w.insert(a, &Score(1.0)).unwrap();
    assert_eq!(w.commit().await.unwrap(), Tick(2));

    // At the handle's tick: the state is copied, the fork is writable.
    let mut f = w.fork_world(Tick(2), "copy").await.unwrap();
    assert_eq!((f.tick(), f.is_read_only()), (Tick(2), false));
    assert_eq!(f.encode_state().unwrap(), w.encode_state().unwrap());
    assert_eq!(f.run_by_id("b").unwrap().0, b);
    f.insert(b, &Score(9.0)).unwrap();
    assert_eq!(f.commit().await.unwrap(), Tick(3));
    assert_eq!(
        w.get::<Score>(b),
        None,
        "the source does not see the fork's tick"
    );
    assert_eq!(st.world(w.id()).await.unwrap().head, Tick(2));

    // At an earlier tick: read from the ledger.
    let early = w.fork_world(Tick(1), "early").await.unwrap();
    assert_eq!(early.tick(), Tick(1));
    assert_eq!(early.get::<Score>(a), None);
    assert!(matches!(
        w.fork_world(Tick(7), "beyond").await,
        Err(Error::TickBeyondHead { .. })
    ));

    // In place, from a read-only handle at a past tick: a writable branch.
    let mut past = World::open_at(st.clone(), reg.clone(), w.id(), Tick(1))
        .await
        .unwrap();
    assert!(past.is_read_only());
    let source = past.id();
    let info = past.fork_in_place("branch").await.unwrap();
    assert_eq!(
        (past.id(), past.tick(), past.is_read_only()),
        (info.id, Tick(1), false)
    );
    assert_ne!(info.id, source);
    past.insert(a, &Score(5.0)).unwrap();
    assert_eq!(past.commit().await.unwrap(), Tick(2));
    let reread = World::open_id(st.clone(), reg.clone(), info.id)
        .await
        .unwrap();
    assert_eq!(reread.get::<Score>(a), Some(Score(5.0)));
    let src = World::open_id(st.clone(), reg.clone(), source)
        .await
        .unwrap();
    assert_eq!(
        src.get::<Score>(a),
        Some(Score(1.0)),
        "the source is unchanged"
    );

    // A name in use: the handle is left as it was.
    let before = w.id();
    assert!(matches!(
        w.fork_in_place("copy").await,
        Err(Error::Storage(StorageError::NameTaken(_)))
    ));
    assert_eq!(w.id(), before);

    // Staged ticks must be flushed first.
    w.insert(b, &Score(2.0)).unwrap();
    w.stage().unwrap();
    assert!(w.fork_in_place("staged").await.is_err());
    assert!(w.fork_world(w.tick(), "staged").await.is_err());
    w.flush().await.unwrap();
    assert!(w.fork_in_place("staged").await.is_ok());
}

#[tokio::test]
async fn storage_size_grows_with_what_is_stored() {
    let (st, reg) = setup(None);
    assert_eq!(st.size_bytes().await.unwrap(), Some(0));
    let mut w = World::create(st.clone(), reg, "w").await.unwrap();
    let e = w.spawn_with(&Run::new("r", "exp")).unwrap();
    w.commit().await.unwrap();
    let one = st.size_bytes().await.unwrap().unwrap();
    assert!(one > 20, "{one} bytes for a run");
    w.insert(e, &Score(1.0)).unwrap();
    w.commit().await.unwrap();
    assert!(st.size_bytes().await.unwrap().unwrap() > one);
}
