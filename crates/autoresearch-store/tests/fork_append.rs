//! A fork and its first tick in one step (`Storage::fork_and_append`,
//! `World::commit_as_fork`): on redb one write transaction that stores
//! both or nothing; on the in-memory reference the default (fork, append,
//! delete the fork on a refusal). Both give the same answers.

use autoresearch_core::{
    Change, ComponentRegistry, EntityId, Error, MemoryStorage, Storage, StorageError, Tick,
    TickRecord, World,
};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(i64);

fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::new();
    r.register::<Score>("Score").unwrap();
    Arc::new(r)
}

fn backends(dir: &Path) -> Vec<Arc<dyn Storage>> {
    let config = RedbConfig {
        snapshot_interval: Some(3),
        ..RedbConfig::default()
    };
    vec![
        Arc::new(MemoryStorage::new(Some(3))),
        Arc::new(RedbStorage::open(&dir.join("l.redb"), config).unwrap()),
    ]
}

#[tokio::test]
async fn commit_as_fork_makes_the_fork_with_its_first_tick() {
    let dir = tempfile::tempdir().unwrap();
    for st in backends(dir.path()) {
        let mut w = World::create(st.clone(), registry(), "main").await.unwrap();
        let e = w.spawn_with(&Score(1)).unwrap();
        w.commit().await.unwrap();
        w.insert(e, &Score(2)).unwrap();
        w.commit().await.unwrap();
        let parent = w.id();
        w.insert(e, &Score(3)).unwrap();
        let info = w.commit_as_fork("branch").await.unwrap();
        assert_eq!(info.head, Tick(3), "{}", st.location());
        assert_eq!(
            info.parent.map(|p| (p.parent, p.tick)),
            Some((parent, Tick(2)))
        );
        assert_eq!(
            (w.id(), w.tick(), w.get::<Score>(e)),
            (info.id, Tick(3), Some(Score(3)))
        );
        // The parent is untouched; the fork reads its own tick and,
        // through lineage, the parent's.
        assert_eq!(st.world(parent).await.unwrap().head, Tick(2));
        let main = World::open(st.clone(), registry(), "main").await.unwrap();
        assert_eq!(main.get::<Score>(e), Some(Score(2)));
        let fork = World::open(st.clone(), registry(), "branch").await.unwrap();
        assert_eq!(
            (fork.tick(), fork.get::<Score>(e)),
            (Tick(3), Some(Score(3)))
        );
        let past = World::open_at(st.clone(), registry(), info.id, Tick(1))
            .await
            .unwrap();
        assert_eq!(past.get::<Score>(e), Some(Score(1)));
        // The handle goes on writing the fork; the tick due a snapshot
        // (every 3) got one, under the fork.
        assert!(
            st.own_snapshot_at_or_before(info.id, Tick(3))
                .await
                .unwrap()
                .is_some_and(|s| s.tick == Tick(3))
        );
        w.insert(e, &Score(4)).unwrap();
        assert_eq!(w.commit().await.unwrap(), Tick(4));
        assert_eq!(st.world(info.id).await.unwrap().head, Tick(4));
        // With nothing pending it is a plain fork in place.
        let empty = w.commit_as_fork("empty").await.unwrap();
        assert_eq!(
            (empty.head, empty.parent.map(|p| p.tick)),
            (Tick(4), Some(Tick(4)))
        );
    }
}

#[tokio::test]
async fn a_refused_fork_or_tick_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for st in backends(dir.path()) {
        let loc = st.location();
        let mut w = World::create(st.clone(), registry(), "main").await.unwrap();
        let e = w.spawn_with(&Score(1)).unwrap();
        w.commit().await.unwrap();
        let main = w.id();
        let rec = |tick: u64, entity: u64| TickRecord {
            tick: Tick(tick),
            at_ms: 1,
            changes: vec![Change::Despawn {
                entity: EntityId(entity),
            }],
        };
        // A tick that does not apply (the entity was never spawned).
        let err = st
            .fork_and_append(main, Tick(1), "f", vec![(rec(2, 99), None)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::NotApplicable { .. }),
            "{loc}: {err}"
        );
        // A tick that is not the fork tick + 1.
        let err = st
            .fork_and_append(main, Tick(1), "f", vec![(rec(3, e.0), None)])
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Conflict { .. }), "{loc}: {err}");
        // Beyond the parent's head, and a taken name.
        let err = st
            .fork_and_append(main, Tick(5), "f", vec![(rec(6, e.0), None)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::ForkBeyondHead { .. }),
            "{loc}: {err}"
        );
        let err = st
            .fork_and_append(main, Tick(1), "main", vec![(rec(2, e.0), None)])
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::NameTaken(_)), "{loc}: {err}");
        assert!(st.find_world("f").await.unwrap().is_none(), "{loc}");
        assert_eq!(st.list_worlds().await.unwrap().len(), 1, "{loc}");
        // Through the World: the handle is unchanged, its change pending.
        w.insert(e, &Score(2)).unwrap();
        let err = w.commit_as_fork("main").await.unwrap_err();
        assert!(
            matches!(err, Error::Storage(StorageError::NameTaken(_))),
            "{loc}: {err}"
        );
        assert_eq!(
            (w.id(), w.tick(), w.get::<Score>(e)),
            (main, Tick(1), Some(Score(1)))
        );
        let info = w.commit_as_fork("g").await.unwrap();
        assert_eq!((info.head, w.get::<Score>(e)), (Tick(2), Some(Score(2))));
        // After the refusals the fork that did succeed is a valid world.
        let ok = st
            .fork_and_append(main, Tick(1), "f", vec![(rec(2, e.0), None)])
            .await
            .unwrap();
        assert_eq!(ok.head, Tick(2), "{loc}");
        let f = World::open_id(st.clone(), registry(), ok.id).await.unwrap();
        assert!(f.is_empty(), "{loc}");
    }
}

/// The writer's group commit waits (up to `max_batch_wait`) for worlds
/// that appended recently. A world that turns into its fork
/// (`commit_as_fork`, `fork_in_place`) will not append to the parent
/// again, so those writes must not wait for it: that wait was 2 ms of the
/// 3.3 ms a fork of 10,000 runs took (issue #19, `bench fork`).
#[tokio::test]
async fn a_fork_does_not_wait_for_its_parents_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let st =
        Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
    let mut a = World::create(st.clone(), registry(), "a").await.unwrap();
    let mut b = World::create(st.clone(), registry(), "b").await.unwrap();
    let ea = a.spawn_with(&Score(0)).unwrap();
    let eb = b.spawn_with(&Score(0)).unwrap();
    // Two worlds appending in turn: each append waits for the other (the
    // counter counts waits, so the zero below is not vacuous).
    let before = st.commit_stats();
    for i in 1..=3 {
        a.insert(ea, &Score(i)).unwrap();
        a.commit().await.unwrap();
        b.insert(eb, &Score(i)).unwrap();
        b.commit().await.unwrap();
    }
    assert!(st.commit_stats().waits > before.waits);

    // One world appending, then forking itself twice and appending.
    let mut w = World::create(st.clone(), registry(), "main").await.unwrap();
    let e = w.spawn_with(&Score(0)).unwrap();
    w.commit().await.unwrap();
    for i in 1..=3 {
        w.insert(e, &Score(i)).unwrap();
        w.commit().await.unwrap();
    }
    let before = st.commit_stats();
    w.insert(e, &Score(10)).unwrap();
    let fork = w.commit_as_fork("branch").await.unwrap();
    w.fork_in_place("branch-2").await.unwrap();
    w.insert(e, &Score(11)).unwrap();
    w.commit().await.unwrap();
    let after = st.commit_stats();
    assert_eq!(
        (
            after.transactions - before.transactions,
            after.waits - before.waits
        ),
        (3, 0)
    );
    // The forks read right through their lineage.
    let branch = World::open_id(st.clone(), registry(), fork.id)
        .await
        .unwrap();
    assert_eq!(
        (branch.tick(), branch.get::<Score>(e)),
        (Tick(5), Some(Score(10)))
    );
    let again = World::open(st.clone(), registry(), "branch-2")
        .await
        .unwrap();
    assert_eq!(
        (again.tick(), again.get::<Score>(e)),
        (Tick(6), Some(Score(11)))
    );
}
