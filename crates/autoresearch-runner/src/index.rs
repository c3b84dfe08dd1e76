//! What an ingester knows about the world it writes: which entity holds
//! which agent, a hash of each stored value (so a re-built run is compared
//! without the world materialized), and the fingerprint of each source row
//! by rowid (so an unchanged row is skipped without being read).
//!
//! The index can be saved beside the ledger ([`save`]) and loaded by a later
//! process ([`load`]). A saved index is valid only for the exact world head
//! it was saved at; [`load`] refuses one that is missing, corrupt, from
//! another format version, for another world, source or experiment
//! setting, and the caller then checks the head through the ledger.

use crate::report::RunReport;
use autoresearch_core::{ComponentRegistry, EntityId, RegistryError, Run, World, WorldInfo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The stored `RunReport` of a run, as far as deciding a re-sync needs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredReport {
    pub created_at_ms: i64,
    pub report_id: String,
    pub commit_hash: String,
    /// Hash of the stored component's encoding.
    pub hash: u64,
}

impl StoredReport {
    pub fn order_key(&self) -> (i64, &str) {
        (self.created_at_ms, &self.report_id)
    }
}

/// A run in the world.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TrackedRun {
    pub agent_id: String,
    pub entity: EntityId,
    /// Hash of the stored `Run` component's encoding.
    pub run_hash: u64,
    /// The stored `Run`'s commit_hash (kept when no report gives one).
    pub commit_hash: String,
    pub report: Option<StoredReport>,
    /// The sync that last saw this run's row (`Index::epoch`); not saved.
    #[serde(skip)]
    pub seen: u64,
}

/// A cheap hasher for keys that are hashes already (the xxh3 of an
/// agent_id) or plain integers (entity ids).
#[derive(Default, Clone, Copy)]
pub(crate) struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this; bytes are folded in anyway.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u64(&mut self, v: u64) {
        // A bijective mix: entity ids are small and sequential, and the
        // map needs varied high bits too.
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type AgentMap = HashMap<u64, u32, std::hash::BuildHasherDefault<PreHashed>>;

fn agent_key(agent_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(agent_id.as_bytes())
}

/// What the ledger holds, keyed by the runner's ids.
#[derive(Default)]
pub(crate) struct Index {
    pub runs: Vec<TrackedRun>,
    /// agent_id to position in `runs`, built on first use (a re-sync whose
    /// changed rows kept their rowids never needs it).
    agents: std::cell::OnceCell<Agents>,
    /// `(rowid, row fingerprint, position in runs)` of the rows the last
    /// scan saw, sorted by rowid. A row with the same rowid and fingerprint
    /// holds what the run was last compared with; empty: read every row.
    pub by_rowid: Vec<(i64, u64, u32)>,
    /// report_id to the fingerprint of its row (0: unknown).
    pub reports: HashMap<String, u64>,
    /// Incremented per sync; a row seen in this sync has `seen == epoch`.
    pub epoch: u64,
}

/// The hash that stands for an encoded value.
pub(crate) fn value_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// agent_id to position in `runs`.
#[derive(Default)]
struct Agents {
    /// The xxh3 of an agent_id to its position (checked against the stored
    /// agent_id: no string copies as keys) ...
    by_hash: AgentMap,
    /// ... and agent_ids whose hash another agent_id already took.
    collided: HashMap<String, u32>,
}

impl Agents {
    fn of(runs: &[TrackedRun]) -> Agents {
        let mut a = Agents {
            by_hash: AgentMap::with_capacity_and_hasher(runs.len(), Default::default()),
            collided: HashMap::new(),
        };
        for (slot, run) in runs.iter().enumerate() {
            a.insert(runs, &run.agent_id, slot as u32);
        }
        a
    }

    /// Points `agent_id` to `slot`; `runs[..slot]` are the runs before it.
    fn insert(&mut self, runs: &[TrackedRun], agent_id: &str, slot: u32) {
        use std::collections::hash_map::Entry;
        match self.by_hash.entry(agent_key(agent_id)) {
            Entry::Occupied(o) if runs[*o.get() as usize].agent_id != agent_id => {
                self.collided.insert(agent_id.to_string(), slot);
            }
            Entry::Occupied(mut o) => {
                o.insert(slot);
            }
            Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
    }
}

impl Index {
    /// The position in `runs` of the run of `agent_id`.
    pub fn slot(&self, agent_id: &str) -> Option<u32> {
        let agents = self.agents.get_or_init(|| Agents::of(&self.runs));
        match agents.by_hash.get(&agent_key(agent_id)) {
            Some(&slot) if self.runs[slot as usize].agent_id == agent_id => Some(slot),
            Some(_) => agents.collided.get(agent_id).copied(),
            None => None,
        }
    }

    /// [`Index::slot`], trying `hint` (the run last seen at the same rowid)
    /// first: agent_ids are unique in `runs`, so a match is the answer.
    pub fn slot_hinted(&self, agent_id: &str, hint: Option<u32>) -> Option<u32> {
        match hint {
            Some(h)
                if self
                    .runs
                    .get(h as usize)
                    .is_some_and(|t| t.agent_id == agent_id) =>
            {
                Some(h)
            }
            _ => self.slot(agent_id),
        }
    }

    pub fn run(&self, agent_id: &str) -> Option<&TrackedRun> {
        self.slot(agent_id).map(|slot| &self.runs[slot as usize])
    }

    /// Adds a run, returning its position. The caller checked that its
    /// agent_id is not in the index yet.
    pub fn push(&mut self, run: TrackedRun) -> u32 {
        let slot = self.runs.len() as u32;
        if let Some(agents) = self.agents.get_mut() {
            agents.insert(&self.runs, &run.agent_id, slot);
        }
        self.runs.push(run);
        slot
    }

    /// The index of a materialized world: values hashed, row fingerprints
    /// unknown (every row is read and compared). Cost: one encode per run
    /// and report.
    pub fn of_world(world: &World, registry: &ComponentRegistry) -> Result<Index, RegistryError> {
        let mut index = Index::default();
        let mut q = world
            .hecs()
            .query::<(&EntityId, &Run, Option<&RunReport>)>();
        for (id, run, report) in q.iter() {
            let report = match report {
                Some(r) => {
                    index.reports.insert(r.report_id.clone(), 0);
                    Some(StoredReport {
                        created_at_ms: r.created_at_ms,
                        report_id: r.report_id.clone(),
                        commit_hash: r.commit_hash.clone(),
                        hash: value_hash(&registry.encode(r)?.1),
                    })
                }
                None => None,
            };
            index.push(TrackedRun {
                agent_id: run.run_id.clone(),
                entity: *id,
                run_hash: value_hash(&registry.encode(run)?.1),
                commit_hash: run.commit_hash.clone(),
                report,
                seen: 0,
            });
        }
        // Reports on entities without a Run still name their report ids.
        let mut q = world.hecs().query::<&RunReport>();
        for r in q.iter() {
            index.reports.entry(r.report_id.clone()).or_insert(0);
        }
        Ok(index)
    }
}

impl Index {
    /// Brings an index saved at an earlier head up to date with the ticks
    /// appended since (`records`, in order), by this ingest or any other
    /// writer: stored runs and reports are re-hashed from the recorded
    /// bytes, and every run a tick touched loses its row fingerprint (its
    /// row is read and compared again). `next_entity` is raised past every
    /// spawn. Returns `false` when a change cannot be followed (a run or
    /// report removed, a run's entity despawned or given another run_id, a
    /// report on an entity without a run): the caller reads the world.
    /// Cost: O(changes), plus one map of all entities when there are any.
    pub fn replay(
        &mut self,
        registry: &ComponentRegistry,
        world: autoresearch_core::WorldId,
        records: &[autoresearch_core::TickRecord],
        next_entity: &mut u64,
    ) -> bool {
        use autoresearch_core::Change;
        if records.iter().all(|r| r.changes.is_empty()) {
            return true;
        }
        let mut by_entity: HashMap<EntityId, u32, std::hash::BuildHasherDefault<PreHashed>> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, t)| (t.entity, i as u32))
            .collect();
        let mut touched = std::collections::HashSet::new();
        for change in records.iter().flat_map(|r| &r.changes) {
            match change {
                Change::Spawn { entity } => *next_entity = (*next_entity).max(entity.0 + 1),
                Change::Set {
                    entity,
                    component,
                    value,
                } if component == "Run" => {
                    let Ok(run) = registry.decode::<Run>(world, value) else {
                        return false;
                    };
                    let slot = match by_entity.get(entity) {
                        Some(&a) if self.runs[a as usize].agent_id == run.run_id => a,
                        Some(_) => return false,
                        None if self.slot(&run.run_id).is_none() => {
                            let slot = self.push(TrackedRun {
                                agent_id: run.run_id.clone(),
                                entity: *entity,
                                run_hash: 0,
                                commit_hash: String::new(),
                                report: None,
                                seen: 0,
                            });
                            by_entity.insert(*entity, slot);
                            slot
                        }
                        None => return false,
                    };
                    let t = &mut self.runs[slot as usize];
                    t.run_hash = value_hash(value);
                    t.commit_hash = run.commit_hash;
                    touched.insert(slot);
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } if component == "RunReport" => {
                    let Ok(r) = registry.decode::<RunReport>(world, value) else {
                        return false;
                    };
                    let Some(&slot) = by_entity.get(entity) else {
                        return false;
                    };
                    self.reports.insert(r.report_id.clone(), 0);
                    self.runs[slot as usize].report = Some(StoredReport {
                        created_at_ms: r.created_at_ms,
                        report_id: r.report_id,
                        commit_hash: r.commit_hash,
                        hash: value_hash(value),
                    });
                    touched.insert(slot);
                }
                Change::Remove { component, .. }
                    if component == "Run" || component == "RunReport" =>
                {
                    return false;
                }
                Change::Despawn { entity } if by_entity.contains_key(entity) => return false,
                // Other components and entities are not the ingest's.
                _ => {}
            }
        }
        self.by_rowid.retain(|r| !touched.contains(&r.2));
        true
    }
}

/// File magic and format version of a saved index.
const MAGIC: &[u8; 8] = b"ARIDX\x00\x00\x01";

/// Which world state and which ingest a saved index belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Key {
    pub world: WorldInfo,
    /// The world's next entity id at `world.head`.
    pub next_entity: u64,
    pub source: String,
    pub experiment: Option<String>,
}

/// A saved index as written (borrowed) ...
#[derive(Serialize)]
struct SavedRef<'a> {
    key: &'a Key,
    runs: &'a [TrackedRun],
    by_rowid: &'a [(i64, u64, u32)],
    reports: Vec<(&'a str, u64)>,
}

/// ... and as read (the same encoding, owned).
#[derive(Deserialize)]
struct Saved {
    key: Key,
    runs: Vec<TrackedRun>,
    by_rowid: Vec<(i64, u64, u32)>,
    reports: Vec<(String, u64)>,
}

/// Writes `index` for the world state `key` to `path`, atomically (a
/// temporary file renamed over it). Errors are I/O errors of the cache file.
pub(crate) fn save(path: &Path, key: &Key, index: &Index) -> std::io::Result<()> {
    let saved = SavedRef {
        key,
        runs: &index.runs,
        by_rowid: &index.by_rowid,
        reports: index
            .reports
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| {
        // Streamed through a buffer into the file and the checksum: no
        // copy of the whole encoding in memory.
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(MAGIC)?;
        let sum = xxhash_rust::xxh3::Xxh3::new();
        let out = std::io::BufWriter::with_capacity(1 << 16, Summed { file, sum });
        let mut out = postcard::to_io(&saved, out).map_err(std::io::Error::other)?;
        out.flush()?;
        let Summed { mut file, sum } = out.into_inner().map_err(|e| e.into_error())?;
        file.write_all(&sum.digest().to_le_bytes())?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A file writer that hashes what it writes.
struct Summed {
    file: std::fs::File,
    sum: xxhash_rust::xxh3::Xxh3,
}

impl Write for Summed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Reads the index saved at `path` if it is intact and was saved for
/// `expect` (world id, name, creation time, source and experiment; the head
/// is checked by the caller against the ledger). `None` otherwise.
pub(crate) fn load(path: &Path, expect: &Key) -> Option<(Key, Index)> {
    let bytes = std::fs::read(path).ok()?;
    let body = bytes.strip_prefix(MAGIC)?;
    let (body, sum) = body.split_at_checked(body.len().checked_sub(8)?)?;
    if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != sum {
        return None;
    }
    let saved: Saved = postcard::from_bytes(body).ok()?;
    let (k, e) = (&saved.key, expect);
    if k.world.id != e.world.id
        || k.world.name != e.world.name
        || k.world.created_at_ms != e.world.created_at_ms
        || k.world.parent != e.world.parent
        || k.source != e.source
        || k.experiment != e.experiment
    {
        return None;
    }
    let index = Index {
        runs: saved.runs,
        by_rowid: saved.by_rowid,
        reports: saved.reports.into_iter().collect(),
        ..Index::default()
    };
    // Positions must be in range: a hand-edited file is refused, not trusted.
    let n = index.runs.len() as u32;
    if index.by_rowid.iter().any(|r| r.2 >= n) || !index.by_rowid.is_sorted_by_key(|r| r.0) {
        return None;
    }
    Some((saved.key, index))
}
