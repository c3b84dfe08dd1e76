//! `World::modify` changes a component in place. Checked against the path
//! it replaces (the latest value read, changed, and given back with
//! `insert_owned`) over random status, run_id and score changes mixed
//! with inserts, removals, despawns, spawns, commits, stages, discards,
//! forks, commits as a fork's first tick and commits that fail (another
//! writer first, a fork's name taken): the same pending
//! changes (a failed commit's too), the same materialized state after every
//! tick, the same records in the ledger and the same state reopened; the run
//! index kept in step; every snapshot written equal to a replay. Then its errors, one by one.

use autoresearch_core::{
    Change, ComponentRegistry, ComponentValue, EntityId, Error, MemoryStorage, Run, RunStatus,
    State, Storage, StorageError, Tick, World, ledger,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(f64);

fn registry() -> Arc<ComponentRegistry> {
    let mut reg = ComponentRegistry::standard();
    reg.register::<Score>("Score").unwrap();
    Arc::new(reg)
}

#[derive(Clone, Debug)]
enum Op {
    Spawn(u8),
    Status(usize, usize),
    RunId(usize, u8),
    AddScore(usize, i8),
    InsertScore(usize, i8),
    RemoveScore(usize),
    Despawn(usize),
    Commit,
    Stage,
    Discard,
    Fork,
    /// Another writer appends a tick first: the next commit fails.
    Conflict,
    /// The pending changes committed as a new fork's first tick; under a
    /// name already taken (`true`) that fails.
    CommitAsFork(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..6).prop_map(Op::Spawn),
        6 => (0usize..16, 0usize..RunStatus::ALL.len()).prop_map(|(e, s)| Op::Status(e, s)),
        2 => (0usize..16, 0u8..6).prop_map(|(e, id)| Op::RunId(e, id)),
        3 => (0usize..16, any::<i8>()).prop_map(|(e, d)| Op::AddScore(e, d)),
        2 => (0usize..16, any::<i8>()).prop_map(|(e, v)| Op::InsertScore(e, v)),
        1 => (0usize..16).prop_map(Op::RemoveScore),
        1 => (0usize..16).prop_map(Op::Despawn),
        3 => Just(Op::Commit),
        1 => Just(Op::Stage),
        1 => Just(Op::Discard),
        1 => Just(Op::Fork),
        1 => Just(Op::Conflict),
        1 => any::<bool>().prop_map(Op::CommitAsFork),
    ]
}

/// The path `modify` replaces: the latest value (a pending set of it, else
/// the materialized one), changed, then given back with `insert_owned`.
fn modify_by_copy<T: ComponentValue + Clone>(
    w: &mut World,
    entity: EntityId,
    f: impl FnOnce(&mut T),
) -> Result<(), Error> {
    if !w.is_live(entity) {
        return Err(Error::NoSuchEntity {
            world: w.id(),
            entity,
        });
    }
    let name = w.registry().name_of::<T>().unwrap().to_string();
    let no_component = || Error::NoSuchComponent {
        world: w.id(),
        entity,
        component: name.clone(),
    };
    let latest = w.pending().iter().rev().find_map(|c| match c {
        Change::Set {
            entity: e,
            component,
            value,
        } if *e == entity && *component == name => Some(Some(value.clone())),
        Change::Remove {
            entity: e,
            component,
        } if *e == entity && *component == name => Some(None),
        _ => None,
    });
    let mut value: T = match latest {
        Some(Some(bytes)) => w.registry().decode(w.id(), &bytes).unwrap(),
        Some(None) => return Err(no_component()),
        None => w.get::<T>(entity).ok_or_else(no_component)?,
    };
    f(&mut value);
    w.insert_owned(entity, value)
}

/// The variant of an outcome, for comparing the two paths' errors.
fn kind(r: &Result<(), Error>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(Error::NoSuchEntity { .. }) => "no such entity",
        Err(Error::NoSuchComponent { .. }) => "no such component",
        Err(_) => "other error",
    }
}

fn run_id(i: u8) -> String {
    format!("run-{i}")
}

/// The run index agrees with a scan of the materialized runs.
fn check_index(w: &World, ops: &[Op]) {
    for i in 0..6 {
        let id = run_id(i);
        assert_eq!(
            w.run_by_id(&id),
            w.find::<Run>(|r| r.run_id == id),
            "{id} after {ops:?}"
        );
    }
}

async fn scenario(ops: Vec<Op>) {
    let reg = registry();
    let sa: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(3)));
    let sb: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(3)));
    let mut a = World::create(sa.clone(), reg.clone(), "w").await.unwrap();
    let mut b = World::create(sb.clone(), reg.clone(), "w").await.unwrap();
    // Every id ever spawned (dead ones too: their errors are compared).
    let mut ids: Vec<EntityId> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let pick = |k: usize| ids.get(k % ids.len().max(1)).copied();
        let seen = &ops[..=i];
        match op {
            Op::Spawn(id) => {
                let run = Run::new(run_id(*id), "exp");
                let e = a.spawn_with(&run).unwrap();
                assert_eq!(b.spawn_owned(run).unwrap(), e);
                a.insert(e, &Score(0.0)).unwrap();
                b.insert(e, &Score(0.0)).unwrap();
                ids.push(e);
            }
            Op::Status(k, s) => {
                let Some(e) = pick(*k) else { continue };
                let status = RunStatus::ALL[*s];
                let ra = a.modify(e, |r: &mut Run| r.set_status(status));
                let rb = modify_by_copy(&mut b, e, |r: &mut Run| r.set_status(status));
                assert_eq!(kind(&ra), kind(&rb), "{seen:?}");
            }
            Op::RunId(k, id) => {
                let Some(e) = pick(*k) else { continue };
                let ra = a.modify(e, |r: &mut Run| r.run_id = run_id(*id));
                let rb = modify_by_copy(&mut b, e, |r: &mut Run| r.run_id = run_id(*id));
                assert_eq!(kind(&ra), kind(&rb), "{seen:?}");
            }
            Op::AddScore(k, d) => {
                let Some(e) = pick(*k) else { continue };
                let ra = a.modify(e, |s: &mut Score| s.0 += f64::from(*d));
                let rb = modify_by_copy(&mut b, e, |s: &mut Score| s.0 += f64::from(*d));
                assert_eq!(kind(&ra), kind(&rb), "{seen:?}");
            }
            Op::InsertScore(k, v) => {
                let Some(e) = pick(*k) else { continue };
                let ra = a.insert(e, &Score(f64::from(*v)));
                let rb = b.insert(e, &Score(f64::from(*v)));
                assert_eq!(kind(&ra), kind(&rb), "{seen:?}");
            }
            Op::RemoveScore(k) => {
                let Some(e) = pick(*k) else { continue };
                let ra = a.remove::<Score>(e);
                let rb = b.remove::<Score>(e);
                assert_eq!(kind(&ra), kind(&rb), "{seen:?}");
            }
            Op::Despawn(k) => {
                let Some(e) = pick(*k) else { continue };
                let ra = a.despawn(e);
                let rb = b.despawn(e);
                assert_eq!(kind(&ra), kind(&rb), "{seen:?}");
            }
            Op::Commit => {
                assert_eq!(a.commit().await.unwrap(), b.commit().await.unwrap());
            }
            Op::Stage => {
                assert_eq!(a.stage().unwrap(), b.stage().unwrap());
            }
            Op::Discard => {
                a.discard_pending();
                b.discard_pending();
            }
            Op::Conflict => {
                // The same tick appended to both ledgers by another handle.
                for (w, st) in [(&a, &sa), (&b, &sb)] {
                    let mut other = World::open_id(st.clone(), reg.clone(), w.id())
                        .await
                        .unwrap();
                    other.spawn().unwrap();
                    other.commit().await.unwrap();
                }
                let (ra, rb) = (a.commit().await, b.commit().await);
                let conflict = |r: &Result<Tick, Error>| match r {
                    Ok(_) => "ok",
                    Err(Error::Storage(StorageError::Conflict { .. })) => "conflict",
                    Err(_) => "other error",
                };
                assert_eq!(conflict(&ra), conflict(&rb), "{seen:?}");
                // A failed commit gives every pending change back, those
                // made in place encoded again from hecs.
                assert_eq!(a.pending(), b.pending(), "{seen:?}");
                a.refresh().await.unwrap();
                b.refresh().await.unwrap();
            }
            Op::CommitAsFork(taken) => {
                let name = match taken {
                    true => "w".to_string(),
                    false => format!("fork-as-{i}"),
                };
                let (ra, rb) = (a.commit_as_fork(&name).await, b.commit_as_fork(&name).await);
                assert_eq!(
                    ra.map(|info| info.head).map_err(|e| e.to_string()),
                    rb.map(|info| info.head).map_err(|e| e.to_string()),
                    "{seen:?}"
                );
            }
            Op::Fork => {
                // A fork copies what the ledger holds: no pending change,
                // none of what `modify` changed in place.
                a.flush().await.unwrap();
                b.flush().await.unwrap();
                let name = format!("fork-{i}");
                let fa = a.fork_world(a.tick(), &name).await.unwrap();
                let fb = b.fork_world(b.tick(), &name).await.unwrap();
                assert_eq!(
                    fa.encode_state().unwrap(),
                    fb.encode_state().unwrap(),
                    "{seen:?}"
                );
                check_index(&fa, seen);
            }
        }
        assert_eq!(a.pending(), b.pending(), "{seen:?}");
        if a.pending().is_empty() {
            assert_eq!(
                a.encode_state().unwrap(),
                b.encode_state().unwrap(),
                "{seen:?}"
            );
        }
        check_index(&a, seen);
    }
    let head = a.commit().await.unwrap();
    assert_eq!(b.commit().await.unwrap(), head);
    assert_eq!(a.encode_state().unwrap(), b.encode_state().unwrap());
    // The ledgers hold the same changes, tick by tick, and reopen to the
    // state the committing world holds.
    let changes = |records: Vec<autoresearch_core::TickRecord>| -> Vec<(Tick, Vec<Change>)> {
        records.into_iter().map(|r| (r.tick, r.changes)).collect()
    };
    let ra = ledger::read_records(sa.as_ref(), a.id(), Tick(1), head)
        .await
        .unwrap();
    let rb = ledger::read_records(sb.as_ref(), b.id(), Tick(1), head)
        .await
        .unwrap();
    assert_eq!(changes(ra), changes(rb), "{ops:?}");
    // Every snapshot the commits wrote is the state a replay from the
    // first tick reaches.
    let records = ledger::read_records(sa.as_ref(), a.id(), Tick(1), head)
        .await
        .unwrap();
    let mut at = head;
    while let Some(snap) = sa.own_snapshot_at_or_before(a.id(), at).await.unwrap() {
        let mut replayed = State::empty();
        for r in records.iter().take_while(|r| r.tick <= snap.tick) {
            replayed.apply(a.id(), r).unwrap();
        }
        assert_eq!(State::from_snapshot(snap.clone()), replayed, "{ops:?}");
        if snap.tick == Tick(0) {
            break;
        }
        at = Tick(snap.tick.0 - 1);
    }
    let reopened = World::open_id(sa, reg, a.id()).await.unwrap();
    assert_eq!(
        reopened.encode_state().unwrap(),
        a.encode_state().unwrap(),
        "{ops:?}"
    );
    check_index(&reopened, &ops);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn modify_stores_what_get_change_insert_owned_stores(ops in prop::collection::vec(op(), 1..60)) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(scenario(ops));
    }
}

/// A world with one committed run (with a Score) and one committed
/// entity without components.
async fn world() -> (World, EntityId, EntityId) {
    let st: Arc<dyn Storage> = Arc::new(MemoryStorage::new(None));
    let mut w = World::create(st, registry(), "w").await.unwrap();
    let run = w.spawn_with(&Run::new("r1", "exp")).unwrap();
    w.insert(run, &Score(1.0)).unwrap();
    let bare = w.spawn().unwrap();
    w.commit().await.unwrap();
    (w, run, bare)
}

#[tokio::test]
async fn modify_errors_are_typed_and_change_nothing() {
    let (mut w, run, bare) = world().await;
    let ran = std::cell::Cell::new(false);
    let set = |r: &mut Run| {
        ran.set(true);
        r.set_status(RunStatus::Running);
    };
    let err = w.modify(EntityId(999), set).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoSuchEntity {
                entity: EntityId(999),
                ..
            }
        ),
        "{err}"
    );
    let err = w.modify(bare, set).unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchComponent { entity, component, .. } if *entity == bare && component == "Run"),
        "{err}"
    );
    assert!(err.to_string().contains("has no Run component"), "{err}");
    #[derive(Serialize, Deserialize)]
    struct Unregistered;
    let err = w.modify(run, |_: &mut Unregistered| ()).unwrap_err();
    assert!(matches!(err, Error::Registry(_)), "{err}");

    // A pending removal or despawn is seen.
    w.remove::<Score>(run).unwrap();
    let err = w.modify(run, |s: &mut Score| s.0 = 2.0).unwrap_err();
    assert!(matches!(err, Error::NoSuchComponent { .. }), "{err}");
    w.despawn(run).unwrap();
    let err = w.modify(run, set).unwrap_err();
    assert!(matches!(err, Error::NoSuchEntity { .. }), "{err}");
    assert!(!ran.get(), "f never ran");
    assert_eq!(w.pending().len(), 2, "only the removal and the despawn");

    // Despawned and committed; then a read-only handle.
    w.commit().await.unwrap();
    let err = w.modify(run, set).unwrap_err();
    assert!(matches!(err, Error::NoSuchEntity { .. }), "{err}");
    let mut past = World::open_at(w.storage().clone(), registry(), w.id(), Tick(1))
        .await
        .unwrap();
    let err = past.modify(run, set).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    assert_eq!(past.get::<Run>(run).unwrap().status, "booting");
    assert!(!ran.get());
}

#[tokio::test]
async fn modify_is_read_at_once_undone_by_discard_and_kept_by_a_failed_commit() {
    let (mut w, run, _) = world().await;
    let old = w.modify(run, |r: &mut Run| {
        let old = r.run_id.clone();
        r.run_id = "r2".into();
        r.set_status(RunStatus::Running);
        old
    });
    assert_eq!(old.unwrap(), "r1", "modify returns what f returns");
    assert_eq!(w.get::<Run>(run).unwrap().status, "running");
    assert_eq!(w.run_by_id("r2").map(|(e, _)| e), Some(run));
    assert!(w.run_by_id("r1").is_none());
    // A second modify sees the first.
    w.modify(run, |r: &mut Run| r.task.push_str("more"))
        .unwrap();
    assert_eq!(w.get::<Run>(run).unwrap().run_id, "r2");
    w.discard_pending();
    let back = w.get::<Run>(run).unwrap();
    assert_eq!(back, Run::new("r1", "exp"));
    assert_eq!(w.run_by_id("r1").map(|(e, _)| e), Some(run));
    assert!(w.run_by_id("r2").is_none());
    assert!(w.pending().is_empty());

    // Another writer gets in first: the commit fails, the change stays
    // pending and in place; refresh puts the old value back under the
    // other writer's tick.
    let mut other = World::open_id(w.storage().clone(), registry(), w.id())
        .await
        .unwrap();
    other.modify(run, |s: &mut Score| s.0 = 5.0).unwrap();
    other.commit().await.unwrap();
    w.modify(run, |r: &mut Run| r.set_status(RunStatus::Stopped))
        .unwrap();
    let err = w.commit().await.unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::Conflict { .. })),
        "{err}"
    );
    assert_eq!(w.pending().len(), 1);
    assert_eq!(w.get::<Run>(run).unwrap().status, "stopped");
    w.refresh().await.unwrap();
    assert_eq!(w.get::<Run>(run).unwrap().status, "booting");
    assert_eq!(w.get::<Score>(run), Some(Score(5.0)));
    w.modify(run, |r: &mut Run| r.set_status(RunStatus::Stopped))
        .unwrap();
    assert_eq!(w.commit().await.unwrap(), Tick(3));
    let again = World::open_id(w.storage().clone(), registry(), w.id())
        .await
        .unwrap();
    assert_eq!(again.encode_state().unwrap(), w.encode_state().unwrap());
    assert_eq!(again.get::<Run>(run).unwrap().status, "stopped");
}
