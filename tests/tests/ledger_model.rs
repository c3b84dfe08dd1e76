//! The ledger against a plain in-memory model.
//!
//! Random sequences of spawn / insert / remove / despawn / commit / fork /
//! drop-and-reopen run on a `World` over both backends (the in-memory
//! reference and the redb file), with snapshots every tick, every 3 ticks and
//! never. After every step, the materialized state of every world at every
//! one of its ticks (`ledger::state_at`), and the live world at its head
//! (`World::encode_state`), must equal the model. A second model runs
//! several writers on one world (below).

use autoresearch_core::{
    ComponentRegistry, EntityId, MemoryStorage, State, Storage, Tick, World, WorldId, ledger,
};
use autoresearch_store::{RedbConfig, RedbStorage, Sharing};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(i64);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Label(String);

fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::new();
    r.register::<Score>("Score").unwrap();
    r.register::<Label>("Label").unwrap();
    Arc::new(r)
}

#[derive(Clone, Debug)]
enum Op {
    Spawn {
        world: usize,
    },
    Insert {
        world: usize,
        entity: usize,
        label: bool,
        value: u8,
    },
    Remove {
        world: usize,
        entity: usize,
        label: bool,
    },
    Despawn {
        world: usize,
        entity: usize,
    },
    Commit {
        world: usize,
    },
    /// `World::stage`: the next tick, applied but not yet appended.
    Stage {
        world: usize,
    },
    /// `World::flush`: appends the staged ticks.
    Flush {
        world: usize,
    },
    Fork {
        world: usize,
        at: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0usize..8;
    prop_oneof![
        3 => w.clone().prop_map(|world| Op::Spawn { world }),
        4 => (w.clone(), 0usize..16, any::<bool>(), any::<u8>())
            .prop_map(|(world, entity, label, value)| Op::Insert { world, entity, label, value }),
        1 => (w.clone(), 0usize..16, any::<bool>())
            .prop_map(|(world, entity, label)| Op::Remove { world, entity, label }),
        1 => (w.clone(), 0usize..16).prop_map(|(world, entity)| Op::Despawn { world, entity }),
        4 => w.clone().prop_map(|world| Op::Commit { world }),
        2 => w.clone().prop_map(|world| Op::Stage { world }),
        1 => w.clone().prop_map(|world| Op::Flush { world }),
        1 => (w, 0usize..64).prop_map(|(world, at)| Op::Fork { world, at }),
        1 => Just(Op::Reopen),
    ]
}

type Entities = BTreeMap<EntityId, BTreeMap<String, Vec<u8>>>;

/// One world of the model: its state at every tick, and the state its
/// writer sees with pending changes applied.
#[derive(Clone)]
struct ModelWorld {
    /// `ticks[t]` = (next entity id, entities) after tick t.
    ticks: Vec<(u64, Entities)>,
    working: (u64, Entities),
    pending: bool,
    /// The last `staged` ticks are staged, not yet in the ledger.
    staged: usize,
}

impl ModelWorld {
    fn state(&self, t: usize) -> State {
        let (next_entity, entities) = self.ticks[t].clone();
        State {
            tick: Tick(t as u64),
            next_entity,
            entities,
        }
    }

    fn head(&self) -> usize {
        self.ticks.len() - 1
    }

    /// The last tick the ledger holds.
    fn durable(&self) -> usize {
        self.head() - self.staged
    }

    fn live(&self, pick: usize) -> Option<EntityId> {
        let ids: Vec<EntityId> = self.working.1.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[pick % ids.len()])
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redb { shared: bool },
}

struct Harness {
    backend: Backend,
    interval: Option<u64>,
    path: PathBuf,
    storage: Option<Arc<dyn Storage>>,
    worlds: Vec<World>,
    model: Vec<ModelWorld>,
    forks: usize,
}

impl Harness {
    fn open_storage(&self) -> Arc<dyn Storage> {
        match self.backend {
            Backend::Memory => Arc::new(MemoryStorage::new(self.interval)),
            Backend::Redb { shared } => {
                let config = RedbConfig {
                    snapshot_interval: self.interval,
                    sharing: if shared {
                        Sharing::MultiProcess
                    } else {
                        Sharing::Exclusive
                    },
                    durable: shared,
                    ..RedbConfig::default()
                };
                Arc::new(RedbStorage::open(&self.path, config).unwrap())
            }
        }
    }

    fn storage(&self) -> Arc<dyn Storage> {
        self.storage.clone().unwrap()
    }

    async fn new(backend: Backend, interval: Option<u64>, dir: &Path) -> Harness {
        let mut h = Harness {
            backend,
            interval,
            path: dir.join("ledger.redb"),
            storage: None,
            worlds: Vec::new(),
            model: Vec::new(),
            forks: 0,
        };
        h.storage = Some(h.open_storage());
        let w = World::create(h.storage(), registry(), "root")
            .await
            .unwrap();
        h.worlds.push(w);
        let empty = (0, Entities::new());
        h.model.push(ModelWorld {
            ticks: vec![empty.clone()],
            working: empty,
            pending: false,
            staged: 0,
        });
        h
    }

    async fn step(&mut self, op: &Op) {
        let n = self.worlds.len();
        match *op {
            Op::Spawn { world } => {
                let (w, m) = (&mut self.worlds[world % n], &mut self.model[world % n]);
                let id = w.spawn().unwrap();
                assert_eq!(id, EntityId(m.working.0), "spawn allocates the next id");
                m.working.0 += 1;
                m.working.1.insert(id, BTreeMap::new());
                m.pending = true;
            }
            Op::Insert {
                world,
                entity,
                label,
                value,
            } => {
                let (w, m) = (&mut self.worlds[world % n], &mut self.model[world % n]);
                let Some(e) = m.live(entity) else { return };
                let (name, bytes) = if label {
                    // Every few labels are long, so that records and
                    // snapshots cross the size the store compresses from.
                    let v = Label(if value % 4 == 0 {
                        format!("l{value}-").repeat(80)
                    } else {
                        format!("l{value}")
                    });
                    w.insert(e, &v).unwrap();
                    ("Label", postcard::to_stdvec(&v).unwrap())
                } else {
                    let v = Score(i64::from(value) - 100);
                    w.insert(e, &v).unwrap();
                    ("Score", postcard::to_stdvec(&v).unwrap())
                };
                m.working
                    .1
                    .get_mut(&e)
                    .unwrap()
                    .insert(name.to_string(), bytes);
                m.pending = true;
            }
            Op::Remove {
                world,
                entity,
                label,
            } => {
                let (w, m) = (&mut self.worlds[world % n], &mut self.model[world % n]);
                let Some(e) = m.live(entity) else { return };
                let name = if label {
                    w.remove::<Label>(e).unwrap();
                    "Label"
                } else {
                    w.remove::<Score>(e).unwrap();
                    "Score"
                };
                m.working.1.get_mut(&e).unwrap().remove(name);
                m.pending = true;
            }
            Op::Despawn { world, entity } => {
                let (w, m) = (&mut self.worlds[world % n], &mut self.model[world % n]);
                let Some(e) = m.live(entity) else { return };
                w.despawn(e).unwrap();
                m.working.1.remove(&e);
                m.pending = true;
            }
            Op::Commit { world } => {
                let (w, m) = (&mut self.worlds[world % n], &mut self.model[world % n]);
                let tick = w.commit().await.unwrap();
                if m.pending {
                    m.ticks.push(m.working.clone());
                    m.pending = false;
                }
                m.staged = 0;
                assert_eq!(tick, Tick(m.head() as u64));
            }
            Op::Stage { world } => {
                let (w, m) = (&mut self.worlds[world % n], &mut self.model[world % n]);
                let tick = w.stage().unwrap();
                if m.pending {
                    m.ticks.push(m.working.clone());
                    m.pending = false;
                    m.staged += 1;
                }
                assert_eq!(tick, Tick(m.head() as u64));
                assert_eq!(w.staged(), m.staged);
            }
            Op::Flush { world } => {
                let (w, m) = (&mut self.worlds[world % n], &mut self.model[world % n]);
                let tick = w.flush().await.unwrap();
                m.staged = 0;
                assert_eq!(tick, Tick(m.head() as u64));
            }
            Op::Fork { world, at } => {
                let i = world % n;
                // A fork reads the ledger: staged ticks are not there yet.
                let at = at % (self.model[i].durable() + 1);
                self.forks += 1;
                let name = format!("fork-{}", self.forks);
                let info = self.worlds[i].fork(Tick(at as u64), &name).await.unwrap();
                assert_eq!(info.head, Tick(at as u64));
                let ticks = self.model[i].ticks[..=at].to_vec();
                self.model.push(ModelWorld {
                    working: ticks[at].clone(),
                    ticks,
                    pending: false,
                    staged: 0,
                });
                let fork = World::open_id(self.storage(), registry(), info.id)
                    .await
                    .unwrap();
                self.worlds.push(fork);
            }
            Op::Reopen => {
                let ids: Vec<WorldId> = self.worlds.iter().map(World::id).collect();
                self.worlds.clear();
                if matches!(self.backend, Backend::Redb { .. }) {
                    // The last handle on the file: dropping it closes it.
                    self.storage = None;
                    self.storage = Some(self.open_storage());
                }
                for id in ids {
                    let w = World::open_id(self.storage(), registry(), id)
                        .await
                        .unwrap();
                    self.worlds.push(w);
                }
                // Staged ticks die with their world handle.
                for m in &mut self.model {
                    let durable = m.durable();
                    m.ticks.truncate(durable + 1);
                    m.staged = 0;
                    m.working = m.ticks.last().unwrap().clone();
                    m.pending = false;
                }
            }
        }
    }

    async fn check(&self, after: &Op) {
        let st = self.storage();
        for (w, m) in self.worlds.iter().zip(&self.model) {
            assert_eq!(
                w.tick(),
                Tick(m.head() as u64),
                "{} head after {after:?}",
                w.name()
            );
            // The live world encodes its committed state, whatever is pending.
            let live = m.state(m.head());
            assert_eq!(
                w.encode_state().unwrap(),
                live,
                "{} live state after {after:?}",
                w.name()
            );
            let info = st.world(w.id()).await.unwrap();
            assert_eq!(
                info.head,
                Tick(m.durable() as u64),
                "{} ledger head after {after:?}",
                w.name()
            );
            for t in 0..=m.durable() {
                let got = ledger::state_at(st.as_ref(), w.id(), Tick(t as u64))
                    .await
                    .unwrap();
                assert_eq!(got, m.state(t), "{} at tick {t} after {after:?}", w.name());
                // The query of one component's values reads the same state.
                let scores =
                    ledger::component_at::<Score>(st.as_ref(), &registry(), w.id(), Tick(t as u64))
                        .await
                        .unwrap();
                let expected: Vec<(EntityId, Score)> = got
                    .entities
                    .iter()
                    .filter_map(|(e, c)| Some((*e, postcard::from_bytes(c.get("Score")?).unwrap())))
                    .collect();
                assert_eq!(
                    scores,
                    expected,
                    "{} Scores at tick {t} after {after:?}",
                    w.name()
                );
            }
        }
    }
}

fn run(backend: Backend, interval: Option<u64>, ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut h = Harness::new(backend, interval, dir.path()).await;
        for op in ops {
            h.step(op).await;
            h.check(op).await;
        }
    });
}

fn interval() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(Some(1)), Just(Some(3)), Just(None)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn memory_ledger_matches_the_model(k in interval(), ops in prop::collection::vec(op(), 1..40)) {
        run(Backend::Memory, k, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn redb_ledger_matches_the_model(
        k in interval(),
        shared in any::<bool>(),
        ops in prop::collection::vec(op(), 1..30),
    ) {
        run(Backend::Redb { shared }, k, &ops);
    }
}

// --- Several writers on one ledger ---------------------------------------
//
// Three handles on one world, interleaving their changes, stages, flushes,
// commits and refreshes, plus raw appends of ticks that do not apply. With
// redb, handles 0 and 1 are two opens of one file (two processes) and
// handle 2 shares handle 0's storage; with memory, all share one ledger.
// The model: one history the ledger holds, and per handle the ticks its
// world has applied (a prefix of that history, then its staged ticks). A
// flush or commit succeeds exactly when the handle's durable tick is the
// ledger's head; otherwise it is `Conflict` and stores nothing. After every
// step every tick of the stored history replays from tick 0 and equals the
// model, whichever handle reads it.

use autoresearch_core::{Change, Error, StorageError, TickRecord};

const HANDLES: usize = 3;

#[derive(Clone, Debug)]
enum Multi {
    Spawn {
        h: usize,
    },
    Insert {
        h: usize,
        entity: usize,
        value: u8,
    },
    Despawn {
        h: usize,
        entity: usize,
    },
    Stage {
        h: usize,
    },
    Commit {
        h: usize,
    },
    Flush {
        h: usize,
    },
    Refresh {
        h: usize,
    },
    /// A raw append of the next tick that does not apply to the head (a
    /// spawn of a live entity, or a set on a dead one), alone or after a
    /// good tick in one batch.
    Stale {
        h: usize,
        spawn_live: bool,
        entity: usize,
        batch: bool,
    },
}

fn multi_op() -> impl Strategy<Value = Multi> {
    let h = 0usize..HANDLES;
    prop_oneof![
        3 => h.clone().prop_map(|h| Multi::Spawn { h }),
        4 => (h.clone(), 0usize..16, any::<u8>())
            .prop_map(|(h, entity, value)| Multi::Insert { h, entity, value }),
        1 => (h.clone(), 0usize..16).prop_map(|(h, entity)| Multi::Despawn { h, entity }),
        2 => h.clone().prop_map(|h| Multi::Stage { h }),
        3 => h.clone().prop_map(|h| Multi::Commit { h }),
        2 => h.clone().prop_map(|h| Multi::Flush { h }),
        2 => h.clone().prop_map(|h| Multi::Refresh { h }),
        1 => (h, any::<bool>(), 0usize..16, any::<bool>())
            .prop_map(|(h, spawn_live, entity, batch)| Multi::Stale { h, spawn_live, entity, batch }),
    ]
}

type TickState = (u64, Entities);

/// One handle's world as the model sees it.
struct View {
    /// The states of every tick its world has applied.
    ticks: Vec<TickState>,
    working: TickState,
    pending: bool,
    staged: usize,
}

impl View {
    fn of(ledger: &[TickState]) -> View {
        View {
            ticks: ledger.to_vec(),
            working: ledger.last().unwrap().clone(),
            pending: false,
            staged: 0,
        }
    }

    /// The last tick the handle knows to be in the ledger.
    fn durable(&self) -> usize {
        self.ticks.len() - 1 - self.staged
    }

    fn live(&self, pick: usize) -> Option<EntityId> {
        let ids: Vec<EntityId> = self.working.1.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[pick % ids.len()])
    }
}

fn state_of(t: usize, s: &TickState) -> State {
    State {
        tick: Tick(t as u64),
        next_entity: s.0,
        entities: s.1.clone(),
    }
}

fn conflict(e: &Error) -> bool {
    matches!(e, Error::Storage(StorageError::Conflict { .. }))
}

struct Multiverse {
    storages: Vec<Arc<dyn Storage>>,
    worlds: Vec<World>,
    ledger: Vec<TickState>,
    views: Vec<View>,
}

impl Multiverse {
    async fn new(backend: Backend, interval: Option<u64>, dir: &Path) -> Multiverse {
        let storages: Vec<Arc<dyn Storage>> = match backend {
            Backend::Memory => {
                let m: Arc<dyn Storage> = Arc::new(MemoryStorage::new(interval));
                vec![m.clone(), m.clone(), m]
            }
            Backend::Redb { .. } => {
                let path = dir.join("ledger.redb");
                let config = RedbConfig {
                    snapshot_interval: interval,
                    ..RedbConfig::default()
                };
                let a: Arc<dyn Storage> =
                    Arc::new(RedbStorage::open(&path, config.clone()).unwrap());
                let b: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, config).unwrap());
                vec![a.clone(), b, a]
            }
        };
        World::create(storages[0].clone(), registry(), "shared")
            .await
            .unwrap();
        let mut worlds = Vec::new();
        for st in &storages {
            worlds.push(World::open(st.clone(), registry(), "shared").await.unwrap());
        }
        let ledger = vec![(0, Entities::new())];
        let views = (0..HANDLES).map(|_| View::of(&ledger)).collect();
        Multiverse {
            storages,
            worlds,
            ledger,
            views,
        }
    }

    /// The handle's staged ticks (and pending changes, for a commit) were
    /// appended, or refused with `Conflict` because another handle moved
    /// the head. `result` is what the world returned.
    fn settle(&mut self, h: usize, result: Result<Tick, Error>, after: &Multi) {
        let v = &mut self.views[h];
        let base = v.durable();
        if base + 1 == self.ledger.len() {
            let tick = result.unwrap_or_else(|e| panic!("{after:?}: {e}"));
            self.ledger.extend_from_slice(&v.ticks[base + 1..]);
            v.staged = 0;
            assert_eq!(tick, Tick(v.ticks.len() as u64 - 1), "{after:?}");
        } else {
            let e = result.expect_err("a stale handle's append must be refused");
            assert!(conflict(&e), "{after:?}: {e}");
        }
    }

    async fn step(&mut self, op: &Multi) {
        match *op {
            Multi::Spawn { h } => {
                let id = self.worlds[h].spawn().unwrap();
                let v = &mut self.views[h];
                v.working.0 = v.working.0.max(id.0 + 1);
                v.working.1.insert(id, BTreeMap::new());
                v.pending = true;
            }
            Multi::Insert { h, entity, value } => {
                let v = &mut self.views[h];
                let Some(e) = v.live(entity) else { return };
                let s = Score(i64::from(value));
                self.worlds[h].insert(e, &s).unwrap();
                v.working
                    .1
                    .get_mut(&e)
                    .unwrap()
                    .insert("Score".into(), postcard::to_stdvec(&s).unwrap());
                v.pending = true;
            }
            Multi::Despawn { h, entity } => {
                let v = &mut self.views[h];
                let Some(e) = v.live(entity) else { return };
                self.worlds[h].despawn(e).unwrap();
                v.working.1.remove(&e);
                v.pending = true;
            }
            Multi::Stage { h } => {
                self.worlds[h].stage().unwrap();
                let v = &mut self.views[h];
                if v.pending {
                    v.ticks.push(v.working.clone());
                    v.pending = false;
                    v.staged += 1;
                }
            }
            Multi::Commit { h } => {
                let v = &mut self.views[h];
                if v.pending {
                    v.ticks.push(v.working.clone());
                    v.pending = false;
                    v.staged += 1;
                }
                if v.staged == 0 {
                    assert_eq!(
                        self.worlds[h].commit().await.unwrap(),
                        Tick(v.ticks.len() as u64 - 1)
                    );
                    return;
                }
                let lone = v.staged == 1 && self.worlds[h].staged() == 0;
                let result = self.worlds[h].commit().await;
                let stale = self.views[h].durable() + 1 != self.ledger.len();
                self.settle(h, result, op);
                if stale {
                    let v = &mut self.views[h];
                    if lone {
                        // A plain commit keeps its changes pending and its
                        // world as it was.
                        let t = v.ticks.pop().unwrap();
                        v.staged = 0;
                        v.working = t;
                        v.pending = true;
                    } else {
                        // A flush failure reopens the world at the ledger.
                        *v = View::of(&self.ledger);
                    }
                }
            }
            Multi::Flush { h } => {
                if self.views[h].staged == 0 {
                    self.worlds[h].flush().await.unwrap();
                    return;
                }
                let result = self.worlds[h].flush().await;
                let stale = self.views[h].durable() + 1 != self.ledger.len();
                self.settle(h, result, op);
                if stale {
                    self.views[h] = View::of(&self.ledger);
                }
            }
            Multi::Refresh { h } => {
                let v = &mut self.views[h];
                if v.pending {
                    v.working = v.ticks.last().unwrap().clone();
                    v.pending = false;
                }
                let stale = v.staged > 0 && v.durable() + 1 != self.ledger.len();
                let result = self.worlds[h].refresh().await;
                if stale {
                    let e = result.expect_err("a stale handle's flush must be refused");
                    assert!(conflict(&e), "{op:?}: {e}");
                } else {
                    result.unwrap();
                    let v = &self.views[h];
                    self.ledger.extend_from_slice(&v.ticks[v.durable() + 1..]);
                }
                self.views[h] = View::of(&self.ledger);
            }
            Multi::Stale {
                h,
                spawn_live,
                entity,
                batch,
            } => {
                let head = &self.ledger.last().unwrap().1;
                let live: Vec<EntityId> = head.keys().copied().collect();
                let bad = if spawn_live && !live.is_empty() {
                    Change::Spawn {
                        entity: live[entity % live.len()],
                    }
                } else {
                    // Never spawned, or spawned and despawned.
                    let dead = (0..1000u64)
                        .map(EntityId)
                        .filter(|e| !head.contains_key(e))
                        .nth(entity)
                        .unwrap();
                    Change::Set {
                        entity: dead,
                        component: "Score".into(),
                        value: vec![0],
                    }
                };
                let next = self.ledger.len() as u64;
                let mut records = Vec::new();
                if batch {
                    // A good tick first: it must not be stored either.
                    records.push(TickRecord {
                        tick: Tick(next),
                        at_ms: 1,
                        changes: vec![Change::Spawn {
                            entity: EntityId(5000 + next),
                        }],
                    });
                }
                let bad_tick = Tick(next + records.len() as u64);
                records.push(TickRecord {
                    tick: bad_tick,
                    at_ms: 1,
                    changes: vec![bad],
                });
                let records = records.into_iter().map(|r| (r, None)).collect();
                let err = self.storages[h]
                    .append_all(self.worlds[h].id(), records)
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, StorageError::NotApplicable { attempted, .. } if attempted == bad_tick),
                    "{op:?}: {err}"
                );
            }
        }
    }

    async fn check(&self, after: &Multi) {
        let id = self.worlds[0].id();
        let head = self.ledger.len() - 1;
        for st in &self.storages {
            assert_eq!(
                st.world(id).await.unwrap().head,
                Tick(head as u64),
                "head after {after:?}"
            );
        }
        // Every stored tick replays from tick 0, read through either file handle.
        for (t, want) in self.ledger.iter().enumerate() {
            let st = &self.storages[t % 2];
            let got = ledger::state_at(st.as_ref(), id, Tick(t as u64))
                .await
                .unwrap();
            assert_eq!(got, state_of(t, want), "tick {t} after {after:?}");
        }
        for (h, (w, v)) in self.worlds.iter().zip(&self.views).enumerate() {
            let t = v.ticks.len() - 1;
            assert_eq!(w.tick(), Tick(t as u64), "handle {h} tick after {after:?}");
            assert_eq!(w.staged(), v.staged, "handle {h} staged after {after:?}");
            assert_eq!(
                w.encode_state().unwrap(),
                state_of(t, &v.ticks[t]),
                "handle {h} state after {after:?}"
            );
            // A handle's durable ticks are the ledger's.
            assert_eq!(
                &v.ticks[..=v.durable()],
                &self.ledger[..=v.durable()],
                "handle {h}"
            );
        }
    }
}

fn run_multi(backend: Backend, interval: Option<u64>, ops: &[Multi]) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut m = Multiverse::new(backend, interval, dir.path()).await;
        for op in ops {
            m.step(op).await;
            m.check(op).await;
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn concurrent_writers_on_memory_keep_one_replayable_history(
        k in interval(),
        ops in prop::collection::vec(multi_op(), 1..40),
    ) {
        run_multi(Backend::Memory, k, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn concurrent_writers_on_one_redb_file_keep_one_replayable_history(
        k in interval(),
        ops in prop::collection::vec(multi_op(), 1..30),
    ) {
        run_multi(Backend::Redb { shared: true }, k, &ops);
    }
}
