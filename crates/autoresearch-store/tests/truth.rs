//! One truth under concurrency: every backend stores a batch of ticks all
//! or nothing, and refuses a tick that does not apply to its world's head,
//! so every stored history replays. The same cases run on the reference
//! `MemoryStorage` and on redb files, several handles on one file standing
//! for several processes.

use autoresearch_core::{
    Change, ChangeKind, ComponentRegistry, EntityId, Error, MemoryStorage, State, Storage,
    StorageError, Tick, TickRecord, World, WorldId, ledger,
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

fn redb(path: &Path) -> Arc<dyn Storage> {
    let config = RedbConfig {
        snapshot_interval: Some(2),
        ..RedbConfig::default()
    };
    Arc::new(RedbStorage::open(path, config).unwrap())
}

/// A backend's name and two handles on one of its ledgers.
type Handles = (&'static str, Arc<dyn Storage>, Arc<dyn Storage>);

/// Both backends, each as two handles on one ledger (two processes).
fn backends(dir: &Path) -> Vec<Handles> {
    let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(2)));
    let path = dir.join("ledger.redb");
    vec![
        ("memory", memory.clone(), memory),
        ("redb", redb(&path), redb(&path)),
    ]
}

fn spawn(e: u64) -> Change {
    Change::Spawn {
        entity: EntityId(e),
    }
}
fn set(e: u64, v: u8) -> Change {
    Change::Set {
        entity: EntityId(e),
        component: "Score".into(),
        value: vec![v],
    }
}
fn remove(e: u64) -> Change {
    Change::Remove {
        entity: EntityId(e),
        component: "Score".into(),
    }
}
fn despawn(e: u64) -> Change {
    Change::Despawn {
        entity: EntityId(e),
    }
}

fn records(
    from: u64,
    ticks: &[Vec<Change>],
) -> Vec<(TickRecord, Option<autoresearch_core::Snapshot>)> {
    ticks
        .iter()
        .zip(from..)
        .map(|(changes, t)| {
            (
                TickRecord {
                    tick: Tick(t),
                    at_ms: 1,
                    changes: changes.clone(),
                },
                None,
            )
        })
        .collect()
}

/// The states the model gives for `ticks` applied to the empty world.
fn model(world: WorldId, ticks: &[Vec<Change>]) -> Vec<State> {
    let mut out = vec![State::empty()];
    for r in records(1, ticks) {
        let mut s = out.last().unwrap().clone();
        s.apply(world, &r.0).unwrap();
        out.push(s);
    }
    out
}

/// Every tick of `world` replays from tick 0 and equals `expected`.
async fn assert_replays(st: &dyn Storage, world: WorldId, expected: &[State], what: &str) {
    let info = st.world(world).await.unwrap();
    assert_eq!(info.head, Tick(expected.len() as u64 - 1), "{what}: head");
    for (t, want) in expected.iter().enumerate() {
        let got = ledger::state_at(st, world, Tick(t as u64)).await.unwrap();
        assert_eq!(&got, want, "{what}: tick {t}");
    }
}

type Refusal = Option<(u64, u64, ChangeKind)>;

/// Appends `setup` (each tick on its own), then `attempt` as one batch,
/// and checks the outcome (`None`: stored; `Some((tick, entity, kind))`:
/// refused naming them) on every backend; either way the ledger replays.
async fn check(name: &str, setup: &[Vec<Change>], attempt: &[Vec<Change>], want: Refusal) {
    let dir = tempfile::tempdir().unwrap();
    for (backend, st, _) in backends(dir.path()) {
        let what = format!("{name} on {backend}");
        let w = st.create_world("w").await.unwrap().id;
        for r in records(1, setup) {
            st.append(w, r.0, r.1).await.unwrap();
        }
        let first = setup.len() as u64 + 1;
        let got = st.append_all(w, records(first, attempt)).await;
        let mut history = setup.to_vec();
        match (got, want) {
            (Ok(()), None) => history.extend_from_slice(attempt),
            (
                Err(StorageError::NotApplicable {
                    world,
                    attempted,
                    entity,
                    change,
                }),
                Some((t, e, kind)),
            ) => {
                assert_eq!(
                    (world, attempted, entity, change),
                    (w, Tick(t), EntityId(e), kind),
                    "{what}"
                );
            }
            (got, want) => panic!("{what}: got {got:?}, expected refusal {want:?}"),
        }
        assert_replays(st.as_ref(), w, &model(w, &history), &what).await;
    }
}

#[tokio::test]
async fn ticks_that_do_not_apply_to_the_head_are_refused() {
    use ChangeKind::*;
    let s1 = || vec![vec![spawn(0), set(0, 1)]];
    check(
        "spawn of a live entity",
        &s1(),
        &[vec![spawn(0)]],
        Some((2, 0, Spawn)),
    )
    .await;
    check(
        "set on a never spawned entity",
        &s1(),
        &[vec![set(5, 1)]],
        Some((2, 5, Set)),
    )
    .await;
    check(
        "remove on a never spawned entity",
        &s1(),
        &[vec![remove(5)]],
        Some((2, 5, Remove)),
    )
    .await;
    check(
        "despawn of a never spawned entity",
        &s1(),
        &[vec![despawn(5)]],
        Some((2, 5, Despawn)),
    )
    .await;
    let gone = || vec![vec![spawn(0)], vec![despawn(0)]];
    check(
        "set on a despawned entity",
        &gone(),
        &[vec![set(0, 1)]],
        Some((3, 0, Set)),
    )
    .await;
    check(
        "remove on a despawned entity",
        &gone(),
        &[vec![remove(0)]],
        Some((3, 0, Remove)),
    )
    .await;
    check(
        "despawn of a despawned entity",
        &gone(),
        &[vec![despawn(0)]],
        Some((3, 0, Despawn)),
    )
    .await;
    // What replay accepts, the check accepts.
    check(
        "spawn again after a despawn",
        &gone(),
        &[vec![spawn(0), set(0, 2)]],
        None,
    )
    .await;
    check(
        "spawn, set and despawn in one tick",
        &[],
        &[vec![spawn(3), set(3, 1), despawn(3)]],
        None,
    )
    .await;
    check(
        "the change order inside a tick counts",
        &[],
        &[vec![set(3, 1), spawn(3)]],
        Some((1, 3, Set)),
    )
    .await;
    check("an empty tick", &s1(), &[vec![]], None).await;
}

#[tokio::test]
async fn a_batch_is_stored_all_or_nothing() {
    use ChangeKind::*;
    let s1 = || vec![vec![spawn(0)]];
    check(
        "a good tick before a bad one",
        &s1(),
        &[vec![spawn(1), set(1, 1)], vec![set(9, 1)]],
        Some((3, 9, Set)),
    )
    .await;
    check(
        "a tick built on an earlier tick of the batch",
        &s1(),
        &[vec![despawn(0)], vec![set(0, 1)]],
        Some((3, 0, Set)),
    )
    .await;
    check(
        "ticks each applying to the one before",
        &s1(),
        &[vec![spawn(1)], vec![set(1, 1), despawn(0)], vec![spawn(0)]],
        None,
    )
    .await;
    // Ticks that are not consecutive from head + 1: Conflict, nothing stored.
    let dir = tempfile::tempdir().unwrap();
    for (backend, st, _) in backends(dir.path()) {
        let w = st.create_world("w").await.unwrap().id;
        let mut batch = records(1, &[vec![spawn(0)], vec![spawn(1)]]);
        batch[1].0.tick = Tick(3);
        let err = st.append_all(w, batch).await.unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Conflict {
                    attempted: Tick(3),
                    ..
                }
            ),
            "{backend}: {err}"
        );
        assert_replays(st.as_ref(), w, &model(w, &[]), backend).await;
        // A snapshot of another tick refuses the batch too.
        let mut batch = records(1, &[vec![spawn(0)], vec![spawn(1)]]);
        batch[1].1 = Some(State::empty().to_snapshot());
        assert!(st.append_all(w, batch).await.is_err(), "{backend}");
        assert_replays(st.as_ref(), w, &model(w, &[]), backend).await;
    }
}

/// The bug of issue #11: two processes on one world, one of them with
/// staged ticks built on a state the other has since changed. Its flush
/// must store nothing (before, the tick after a refused one could still be
/// stored), and the ledger must still replay.
#[tokio::test]
async fn a_stale_staged_batch_from_another_process_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, a, b) in backends(dir.path()) {
        let reg = registry();
        let mut wa = World::create(a.clone(), reg.clone(), "exp").await.unwrap();
        let e0 = wa.spawn_with(&Score(1)).unwrap();
        wa.commit().await.unwrap();
        let mut wb = World::open(b.clone(), reg.clone(), "exp").await.unwrap();
        // Process A despawns e0 (tick 2); B, still at tick 1, stages a
        // change to e0 (its tick 2) and a spawn built on it (its tick 3).
        wa.despawn(e0).unwrap();
        assert_eq!(wa.commit().await.unwrap(), Tick(2));
        wb.insert(e0, &Score(2)).unwrap();
        wb.stage().unwrap();
        let e1 = wb.spawn_with(&Score(3)).unwrap();
        wb.stage().unwrap();
        let err = wb.flush().await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Storage(StorageError::Conflict {
                    attempted: Tick(2),
                    head: Tick(2),
                    ..
                })
            ),
            "{backend}: {err}"
        );
        // B is back at what the ledger holds; none of its ticks is there.
        assert_eq!(wb.tick(), Tick(2), "{backend}");
        assert!(wb.hecs_entity(e1).is_none(), "{backend}");
        let w = wa.id();
        for st in [&a, &b] {
            assert_eq!(st.world(w).await.unwrap().head, Tick(2), "{backend}");
            let s = ledger::state_at(st.as_ref(), w, Tick(2)).await.unwrap();
            assert!(s.entities.is_empty(), "{backend}: {s:?}");
        }
        // A stale tick with the right number is refused too: B's raw
        // append of tick 3 setting e0, which A despawned.
        let stale = records(3, &[vec![set(e0.0, 9)]]);
        let err = b.append_all(w, stale).await.unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::NotApplicable {
                    attempted: Tick(3),
                    change: ChangeKind::Set,
                    ..
                }
            ),
            "{backend}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("tick 3") && msg.contains("e0") && msg.contains("set"),
            "{msg}"
        );
        // Both processes still open and write the world.
        World::open(a.clone(), reg.clone(), "exp").await.unwrap();
        let mut wb = World::open(b.clone(), reg.clone(), "exp").await.unwrap();
        wb.spawn_with(&Score(4)).unwrap();
        assert_eq!(wb.commit().await.unwrap(), Tick(3), "{backend}");
        assert_eq!(
            World::open(a, reg, "exp").await.unwrap().len(),
            1,
            "{backend}"
        );
    }
}

/// A fork inherits its parent's entities alive at the fork tick, and only
/// those; what either side does later does not change the other's check.
#[tokio::test]
async fn forks_check_against_their_lineage() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, st, other) in backends(dir.path()) {
        let p = st.create_world("parent").await.unwrap().id;
        let ticks = [vec![spawn(0), spawn(1)], vec![despawn(1), spawn(2)]];
        st.append_all(p, records(1, &ticks)).await.unwrap();
        let f = other.fork_world(p, Tick(1), "fork").await.unwrap().id;
        let refused = |r: Result<(), StorageError>, e: u64| {
            assert!(
                matches!(r, Err(StorageError::NotApplicable { entity, .. }) if entity == EntityId(e)),
                "{backend}: {r:?}"
            )
        };
        // e1 is alive in the fork (despawned in the parent after the fork);
        // e2 was spawned in the parent after the fork: dead in the fork.
        refused(st.append_all(f, records(2, &[vec![set(2, 1)]])).await, 2);
        st.append_all(
            f,
            records(2, &[vec![set(0, 1), set(1, 1), despawn(0)], vec![spawn(2)]]),
        )
        .await
        .unwrap();
        // The fork's despawn of e0 leaves the parent's e0 alive; the
        // parent's e1 stays dead.
        refused(st.append_all(p, records(3, &[vec![set(1, 1)]])).await, 1);
        st.append_all(p, records(3, &[vec![set(0, 2)]]))
            .await
            .unwrap();
        // A fork of the fork sees the fork's liveness at its fork tick.
        let ff = st.fork_world(f, Tick(2), "fork2").await.unwrap().id;
        refused(
            other.append_all(ff, records(3, &[vec![set(0, 1)]])).await,
            0,
        );
        other
            .append_all(ff, records(3, &[vec![set(1, 3)]]))
            .await
            .unwrap();
        for w in [p, f, ff] {
            let head = st.world(w).await.unwrap().head;
            for t in 0..=head.0 {
                ledger::state_at(st.as_ref(), w, Tick(t)).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn creating_a_world_whose_name_exists_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, a, b) in backends(dir.path()) {
        let w = a.create_world("x").await.unwrap();
        let err = b.create_world("x").await.unwrap_err();
        assert!(
            matches!(&err, StorageError::NameTaken(n) if n == "x"),
            "{backend}: {err}"
        );
        let err = b.fork_world(w.id, Tick(0), "x").await.unwrap_err();
        assert!(
            matches!(&err, StorageError::NameTaken(n) if n == "x"),
            "{backend}: {err}"
        );
        assert_eq!(a.list_worlds().await.unwrap().len(), 1, "{backend}");
    }
}
