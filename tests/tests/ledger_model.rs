//! The ledger against a plain in-memory model.
//!
//! Random sequences of spawn / insert / remove / despawn / commit / fork /
//! drop-and-reopen run on a `World` over both backends (the in-memory
//! reference and the redb file), with snapshots every tick, every 3 ticks and
//! never. After every step, the materialized state of every world at every
//! one of its ticks (`ledger::state_at`), and the live world at its head
//! (`World::encode_state`), must equal the model.

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
                    let v = Label(format!("l{value}"));
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
