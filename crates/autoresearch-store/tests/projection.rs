//! Reads of one component (`ledger::component_bytes_at`) through the redb
//! backend's in-place projections give what a full replay gives, on every
//! path: snapshot then records, records only, through fork lineage, with
//! other components, removes and despawns in the log; a damaged record is
//! an error naming its tick, never a panic.

use autoresearch_core::{
    Change, ComponentChange, ComponentRegistry, EntityId, Error, MemoryStorage, Storage,
    StorageError, Tick, TickRecord, WorldId, ledger,
};
use autoresearch_store::{RedbConfig, RedbStorage};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(i64);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Label(String);

fn registry() -> ComponentRegistry {
    let mut r = ComponentRegistry::new();
    r.register::<Score>("Score").unwrap();
    r.register::<Label>("Label").unwrap();
    r
}

fn set(reg: &ComponentRegistry, e: u64, score: i64) -> Change {
    Change::Set {
        entity: EntityId(e),
        component: "Score".into(),
        value: reg.encode(&Score(score)).unwrap().1,
    }
}

fn label(reg: &ComponentRegistry, e: u64, text: &str) -> Change {
    Change::Set {
        entity: EntityId(e),
        component: "Label".into(),
        value: reg.encode(&Label(text.into())).unwrap().1,
    }
}

/// Ticks 1..=9 of a world: spawns, sets of both components, a remove, a
/// despawn; the long label makes some records long enough to be stored
/// compressed.
fn history(reg: &ComponentRegistry) -> Vec<Vec<Change>> {
    let long = "x".repeat(600);
    let mut ticks = Vec::new();
    let mut first = Vec::new();
    for e in 0..40 {
        first.push(Change::Spawn {
            entity: EntityId(e),
        });
        first.push(set(reg, e, e as i64));
        first.push(label(reg, e, &long));
    }
    ticks.push(first);
    for t in 2..=9u64 {
        let mut changes = vec![set(reg, t, 100 + t as i64), label(reg, t + 1, "short")];
        if t == 4 {
            changes.push(Change::Remove {
                entity: EntityId(5),
                component: "Score".into(),
            });
        }
        if t == 6 {
            changes.push(Change::Despawn {
                entity: EntityId(30),
            });
            changes.push(Change::Spawn {
                entity: EntityId(40),
            });
        }
        if t == 8 {
            changes.push(Change::Remove {
                entity: EntityId(9),
                component: "Label".into(),
            });
        }
        ticks.push(changes);
    }
    ticks
}

async fn write(st: &dyn Storage, world: WorldId, from: u64, ticks: &[Vec<Change>]) {
    let mut state = ledger::state_at(st, world, Tick(from - 1)).await.unwrap();
    for (i, changes) in ticks.iter().enumerate() {
        let record = TickRecord {
            tick: Tick(from + i as u64),
            at_ms: 1,
            changes: changes.clone(),
        };
        state.apply(world, &record).unwrap();
        let snapshot = st.snapshot_due(record.tick).then(|| state.to_snapshot());
        st.append(world, record, snapshot).await.unwrap();
    }
}

/// Every entity's Score at `tick` from the full replay.
async fn expected(st: &dyn Storage, world: WorldId, tick: Tick) -> Vec<(EntityId, Vec<u8>)> {
    let state = ledger::state_at(st, world, tick).await.unwrap();
    state
        .entities
        .into_iter()
        .filter_map(|(e, comps)| Some((e, comps.get("Score")?.clone())))
        .collect()
}

fn redb(path: &Path, interval: Option<u64>) -> Arc<dyn Storage> {
    let config = RedbConfig {
        snapshot_interval: interval,
        ..RedbConfig::default()
    };
    Arc::new(RedbStorage::open(path, config).unwrap())
}

#[tokio::test]
async fn one_component_reads_match_the_full_replay_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let ticks = history(&reg);
    for (i, interval) in [None, Some(3)].into_iter().enumerate() {
        let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new(interval));
        let file = redb(&dir.path().join(format!("l{i}.redb")), interval);
        for st in [memory, file] {
            let root = st.create_world("root").await.unwrap().id;
            write(st.as_ref(), root, 1, &ticks[..6]).await;
            let fork = st.fork_world(root, Tick(4), "fork").await.unwrap().id;
            write(st.as_ref(), root, 7, &ticks[6..]).await;
            write(st.as_ref(), fork, 5, &ticks[4..7]).await;
            for (world, head) in [(root, 9), (fork, 7)] {
                for t in 1..=head {
                    let got =
                        ledger::component_bytes_at::<Score>(st.as_ref(), &reg, world, Tick(t))
                            .await
                            .unwrap();
                    let want = expected(st.as_ref(), world, Tick(t)).await;
                    assert_eq!(got, want, "{} {world} tick {t}", st.location());
                    assert!(!got.is_empty());
                    // The values left in place: the same entities and bytes.
                    let values =
                        ledger::component_values_at::<Score>(st.as_ref(), &reg, world, Tick(t))
                            .await
                            .unwrap();
                    let seen: Vec<_> = values.iter().map(|(e, v)| (e, v.to_vec())).collect();
                    assert_eq!(seen, want, "{} {world} tick {t}", st.location());
                    assert_eq!(values.len(), want.len());
                    for (e, v) in &want {
                        assert_eq!(values.get(*e), Some(v.as_slice()));
                    }
                    assert_eq!(values.get(EntityId(999)), None);
                }
            }
            // The decoded form agrees too.
            let scores = ledger::component_at::<Score>(st.as_ref(), &reg, root, Tick(9))
                .await
                .unwrap();
            assert!(scores.contains(&(EntityId(9), Score(109))), "{scores:?}");
            assert!(!scores.iter().any(|(e, _)| *e == EntityId(30)));
        }
    }
}

#[tokio::test]
async fn the_backend_projection_equals_the_default_projection() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let st = redb(&dir.path().join("l.redb"), Some(3));
    let world = st.create_world("w").await.unwrap().id;
    write(st.as_ref(), world, 1, &history(&reg)).await;
    for component in ["Score", "Label", "Missing"] {
        let got = st
            .read_own_component_records(world, Tick(1), Tick(9), component)
            .await
            .unwrap();
        let want: Vec<_> = st
            .read_own_records(world, Tick(1), Tick(9))
            .await
            .unwrap()
            .into_iter()
            .map(|r| autoresearch_core::ComponentRecord::project(r, component))
            .collect();
        assert_eq!(got, want, "{component}");
        // With the values left in place: the same changes and values.
        let spans = st
            .read_own_component_spans(world, Tick(1), Tick(9), component)
            .await
            .unwrap();
        let resolved: Vec<_> = spans
            .iter()
            .map(|r| r.to_component_record().unwrap())
            .collect();
        assert_eq!(resolved, want, "{component}");
        // Only records that set a value of the component keep a body.
        for r in &spans {
            let sets = r
                .changes
                .iter()
                .any(|c| matches!(c, ComponentChange::Set(..)));
            assert_eq!(!r.body.is_empty(), sets, "{component} tick {}", r.tick);
        }
        for at in [Tick(3), Tick(7), Tick(9)] {
            let spans = st
                .own_component_span_snapshot_at_or_before(world, at, component)
                .await
                .unwrap()
                .and_then(|s| s.to_component_snapshot());
            let want = st
                .own_component_snapshot_at_or_before(world, at, component)
                .await
                .unwrap();
            assert_eq!(spans, want, "{component} at {at}");
            let got = st
                .own_component_snapshot_at_or_before(world, at, component)
                .await
                .unwrap();
            let want = st
                .own_snapshot_at_or_before(world, at)
                .await
                .unwrap()
                .map(|s| autoresearch_core::ComponentSnapshot::project(s, component));
            assert_eq!(got, want, "{component} at {at}");
            assert!(got.is_some());
        }
    }
    // Other components' changes stay in the projection, value-less.
    let labels = st
        .read_own_component_records(world, Tick(8), Tick(8), "Score")
        .await
        .unwrap();
    assert!(labels[0].changes.contains(&ComponentChange::Other(
        EntityId(9),
        autoresearch_core::ChangeKind::Remove
    )));
}

#[tokio::test]
async fn a_damaged_record_is_an_error_naming_its_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let reg = registry();
    let world = {
        let st = redb(&path, None);
        let world = st.create_world("w").await.unwrap().id;
        write(st.as_ref(), world, 1, &history(&reg)).await;
        world
    };
    // Cut the record of tick 3 in half, with redb directly.
    {
        const RECORDS: redb::TableDefinition<(u64, u64), &[u8]> =
            redb::TableDefinition::new("records");
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(RECORDS).unwrap();
            let bytes = t.get((world.0, 3)).unwrap().unwrap().value().to_vec();
            t.insert((world.0, 3), &bytes[..bytes.len() / 2]).unwrap();
        }
        txn.commit().unwrap();
    }
    let st = redb(&path, None);
    let err = ledger::component_bytes_at::<Score>(st.as_ref(), &reg, world, Tick(9))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Unreplayable { readable_to: Tick(2), source, .. }
                if matches!(**source, Error::Storage(StorageError::Corrupt { tick: Tick(3), .. }))
        ),
        "{err}"
    );
    // Reads before the damage still work.
    let early = ledger::component_bytes_at::<Score>(st.as_ref(), &reg, world, Tick(2))
        .await
        .unwrap();
    assert_eq!(early.len(), 40);
}

#[tokio::test]
async fn kept_decoded_reads_agree_with_fresh_ones_and_never_outlive_their_world() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let reg = registry();
    let ticks = history(&reg);
    let st = redb(&path, Some(3));
    let root = st.create_world("root").await.unwrap().id;
    write(st.as_ref(), root, 1, &ticks).await;
    let fork = st.fork_world(root, Tick(5), "fork").await.unwrap().id;
    write(st.as_ref(), fork, 6, &ticks[5..7]).await;
    let read = |st: Arc<dyn Storage>, world, t| {
        let reg = reg.clone();
        async move {
            ledger::component_values_at::<Score>(st.as_ref(), &reg, world, Tick(t))
                .await
                .map(|v| v.to_vecs())
        }
    };
    // Twice through this handle (the second from what it kept), once
    // through a fresh one that kept nothing: the same values.
    for (world, head) in [(root, 9), (fork, 7)] {
        for t in 1..=head {
            let first = read(st.clone(), world, t).await.unwrap();
            let again = read(st.clone(), world, t).await.unwrap();
            assert_eq!(first, again, "{world} tick {t}");
            assert_eq!(first, expected(st.as_ref(), world, Tick(t)).await);
        }
    }
    // A deleted world is gone for every read, kept or not.
    st.delete_world(fork).await.unwrap();
    let err = read(st.clone(), fork, 7).await.unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::NoSuchWorld(w)) if w == fork),
        "{err}"
    );
    // Ticks past the head are refused, not served from what was kept.
    let err = read(st.clone(), root, 10).await.unwrap_err();
    assert!(matches!(err, Error::TickBeyondHead { .. }), "{err}");
    // The root still reads.
    assert_eq!(
        read(st.clone(), root, 9).await.unwrap(),
        expected(st.as_ref(), root, Tick(9)).await
    );
}

/// A component that encodes to no bytes at all (a unit struct).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Marker;

#[tokio::test]
async fn values_of_zero_bytes_read_back_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = registry();
    reg.register::<Marker>("Marker").unwrap();
    let st = redb(&dir.path().join("l.redb"), Some(2));
    let world = st.create_world("w").await.unwrap().id;
    let (name, bytes) = reg.encode(&Marker).unwrap();
    assert!(bytes.is_empty());
    let mut ticks = Vec::new();
    for e in 0..3u64 {
        ticks.push(vec![
            Change::Spawn {
                entity: EntityId(e),
            },
            Change::Set {
                entity: EntityId(e),
                component: name.clone(),
                value: Vec::new(),
            },
            set(&reg, e, e as i64),
        ]);
    }
    write(st.as_ref(), world, 1, &ticks).await;
    for t in 1..=3 {
        let values = ledger::component_values_at::<Marker>(st.as_ref(), &reg, world, Tick(t))
            .await
            .unwrap();
        let got: Vec<_> = values.iter().map(|(e, v)| (e.0, v.len())).collect();
        let want: Vec<_> = (0..t).map(|e| (e, 0)).collect();
        assert_eq!(got, want, "tick {t}");
        let markers = ledger::component_at::<Marker>(st.as_ref(), &reg, world, Tick(t))
            .await
            .unwrap();
        assert_eq!(markers.len() as u64, t);
    }
}

/// Every entity's `component` at `tick` from the full replay.
async fn expected_of(
    st: &dyn Storage,
    world: WorldId,
    tick: Tick,
    component: &str,
) -> Vec<(EntityId, Vec<u8>)> {
    let state = ledger::state_at(st, world, tick).await.unwrap();
    state
        .entities
        .into_iter()
        .filter_map(|(e, comps)| Some((e, comps.get(component)?.clone())))
        .collect()
}

#[tokio::test]
async fn partly_kept_reads_of_deltas_agree_with_fresh_ones_in_any_order() {
    // Long labels changed in place are stored as deltas of older ticks
    // (through a fork, across snapshots); reads in a scrambled order
    // through a cache too small to keep everything find some ticks kept
    // and others not, and must answer as a handle that keeps nothing
    // and as the full replay.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let reg = registry();
    let text = |e: u64, t: u64| format!("{}{e:03}-{t:03}{}", "p".repeat(300), "s".repeat(300));
    let mut ticks = vec![
        (0..30)
            .flat_map(|e| {
                [
                    Change::Spawn {
                        entity: EntityId(e),
                    },
                    set(&reg, e, e as i64),
                    label(&reg, e, &text(e, 0)),
                ]
            })
            .collect::<Vec<_>>(),
    ];
    for t in 2..=24u64 {
        ticks.push(
            (0..4)
                .map(|i| label(&reg, (t * 7 + i * 5) % 30, &text(t, i)))
                .chain([set(&reg, t % 30, t as i64)])
                .collect(),
        );
    }
    let writer = redb(&path, Some(5));
    let root = writer.create_world("root").await.unwrap().id;
    write(writer.as_ref(), root, 1, &ticks[..16]).await;
    let fork = writer.fork_world(root, Tick(12), "fork").await.unwrap().id;
    write(writer.as_ref(), root, 17, &ticks[16..]).await;
    write(writer.as_ref(), fork, 13, &ticks[12..20]).await;
    drop(writer);
    let open = |cache: usize| -> Arc<dyn Storage> {
        let config = RedbConfig {
            snapshot_interval: Some(5),
            decoded_cache_bytes: cache,
            ..RedbConfig::default()
        };
        Arc::new(RedbStorage::open(&path, config).unwrap())
    };
    let (small, large, none) = (open(40_000), open(64 << 20), open(0));
    let mut order: Vec<(WorldId, u64)> = (1..=24)
        .map(|t| (root, t))
        .chain((1..=20).map(|t| (fork, t)))
        .collect();
    // A fixed scramble: every read after the first finds a mix of kept
    // and unkept ticks.
    let n = order.len();
    for i in 0..n {
        order.swap(i, (i * 17 + 5) % n);
    }
    for component in ["Label", "Score"] {
        for &(world, t) in order.iter().chain(order.iter().rev()) {
            let want = expected_of(none.as_ref(), world, Tick(t), component).await;
            assert!(!want.is_empty());
            for st in [&small, &large, &none] {
                let got = if component == "Label" {
                    ledger::component_values_at::<Label>(st.as_ref(), &reg, world, Tick(t)).await
                } else {
                    ledger::component_values_at::<Score>(st.as_ref(), &reg, world, Tick(t)).await
                }
                .unwrap()
                .to_vecs();
                assert_eq!(got, want, "{component} of {world} at tick {t}");
            }
        }
    }
}
