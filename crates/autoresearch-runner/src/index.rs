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
    /// `(rowid, fingerprint, owner)` of the report rows the last scan
    /// read from the pages, sorted by rowid (the owner is
    /// [`ReportOwner::code`]: the slot of the report's agent's run, or a
    /// mark). An unchanged row
    /// whose agent is still in the file is not read again; empty: read
    /// every report row.
    pub report_rows: Vec<(i64, u64, u32)>,
    /// The runs whose row this sync saw.
    pub seen: Seen,
}

/// A set of positions in `Index::runs`, one bit each (a sync marks 100,000
/// runs in a few kilobytes, whatever order their rows come in).
#[derive(Default)]
pub(crate) struct Seen(Vec<u64>);

impl Seen {
    /// Empties the set, for a sync of `runs` runs.
    pub fn reset(&mut self, runs: usize) {
        self.0.clear();
        self.0.resize(runs.div_ceil(64), 0);
    }
    pub fn mark(&mut self, slot: u32) {
        let word = slot as usize / 64;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (slot % 64);
    }
    pub fn contains(&self, slot: u32) -> bool {
        self.0
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
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

    /// Adds a run, returning its position. The caller checked that its
    /// agent_id is not in the index yet.
    /// Reserves room for `additional` more runs (and their agent_ids, once
    /// the look-up exists): a sync that pushes many sizes both once
    /// instead of growing (and rehashing) them as it goes.
    pub fn reserve(&mut self, additional: usize) {
        self.runs.reserve(additional);
        if self.runs.is_empty() {
            // Nothing to look up yet: an empty look-up costs nothing to build.
            let _ = self.agents.get_or_init(Agents::default);
        }
        if let Some(agents) = self.agents.get_mut() {
            agents.by_hash.reserve(additional);
        }
    }

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
        let mut by_entity = ByEntity::of(&self.runs);
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
                    let slot = match by_entity.get(&self.runs, *entity) {
                        Some(a) if self.runs[a as usize].agent_id == run.run_id => a,
                        Some(_) => return false,
                        None if self.slot(&run.run_id).is_none() => {
                            let slot = self.push(TrackedRun {
                                agent_id: run.run_id.clone(),
                                entity: *entity,
                                run_hash: 0,
                                commit_hash: String::new(),
                                report: None,
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
                    let Some(slot) = by_entity.get(&self.runs, *entity) else {
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
                Change::Despawn { entity } if by_entity.get(&self.runs, *entity).is_some() => {
                    return false;
                }
                // Other components and entities are not the ingest's.
                _ => {}
            }
        }
        self.by_rowid.retain(|r| !touched.contains(&r.2));
        self.report_rows.retain(|r| !touched.contains(&r.2));
        true
    }
}

/// Entity id to position in `runs`. Runs an ingest spawned sit in `runs`
/// in entity order: then a binary search, with no map of every entity.
enum ByEntity {
    /// Runs up to this position are sorted by entity.
    Sorted(usize, HashMap<EntityId, u32>),
    Map(HashMap<EntityId, u32, std::hash::BuildHasherDefault<PreHashed>>),
}

impl ByEntity {
    fn of(runs: &[TrackedRun]) -> ByEntity {
        if runs.is_sorted_by_key(|t| t.entity) {
            ByEntity::Sorted(runs.len(), HashMap::new())
        } else {
            ByEntity::Map(
                runs.iter()
                    .enumerate()
                    .map(|(i, t)| (t.entity, i as u32))
                    .collect(),
            )
        }
    }

    fn get(&self, runs: &[TrackedRun], entity: EntityId) -> Option<u32> {
        match self {
            ByEntity::Sorted(n, added) => runs[..*n]
                .binary_search_by_key(&entity, |t| t.entity)
                .ok()
                .map(|i| i as u32)
                .or_else(|| added.get(&entity).copied()),
            ByEntity::Map(m) => m.get(&entity).copied(),
        }
    }

    fn insert(&mut self, entity: EntityId, slot: u32) {
        match self {
            ByEntity::Sorted(_, added) => added.insert(entity, slot),
            ByEntity::Map(m) => m.insert(entity, slot),
        };
    }
}

/// File magic and format version of a saved index.
const MAGIC: &[u8; 8] = b"ARIDX\x00\x00\x03";

/// Which world state and which ingest a saved index belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Key {
    pub world: WorldInfo,
    /// The world's next entity id at `world.head`.
    pub next_entity: u64,
    pub source: String,
    pub experiment: Option<String>,
}

/// The head of a saved index (postcard), followed by fixed-size records
/// of the runs, their text, and the row index, each little-endian:
/// a new process decodes 100,000 runs without a parse per field.
#[derive(Serialize, Deserialize)]
struct Header {
    key: Key,
    reports: Vec<(String, u64)>,
    /// The stored reports of runs, by position in `runs`.
    run_reports: Vec<(u32, StoredReport)>,
    runs: u64,
    text: u64,
    by_rowid: u64,
    report_rows: u64,
}

/// Bytes per run record: entity, run hash, agent_id length, commit length.
const RUN_BYTES: usize = 8 + 8 + 4 + 4;
/// Bytes per row record: rowid, fingerprint, position in `runs`.
const ROW_BYTES: usize = 8 + 8 + 4;

fn encode_body(key: &Key, index: &Index) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let text: usize = index
        .runs
        .iter()
        .map(|t| t.agent_id.len() + t.commit_hash.len())
        .sum();
    let header = Header {
        key: key.clone(),
        reports: index.reports.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        run_reports: index
            .runs
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.report.clone().map(|r| (i as u32, r)))
            .collect(),
        runs: index.runs.len() as u64,
        text: text as u64,
        by_rowid: index.by_rowid.len() as u64,
        report_rows: index.report_rows.len() as u64,
    };
    let head = postcard::to_allocvec(&header).map_err(std::io::Error::other)?;
    let rows = index.by_rowid.len() + index.report_rows.len();
    let mut body = Vec::with_capacity(index.runs.len() * RUN_BYTES + text + rows * ROW_BYTES);
    for t in &index.runs {
        body.extend_from_slice(&t.entity.0.to_le_bytes());
        body.extend_from_slice(&t.run_hash.to_le_bytes());
        body.extend_from_slice(&(t.agent_id.len() as u32).to_le_bytes());
        body.extend_from_slice(&(t.commit_hash.len() as u32).to_le_bytes());
    }
    for t in &index.runs {
        body.extend_from_slice(t.agent_id.as_bytes());
        body.extend_from_slice(t.commit_hash.as_bytes());
    }
    for (rowid, fp, slot) in index.by_rowid.iter().chain(&index.report_rows) {
        body.extend_from_slice(&rowid.to_le_bytes());
        body.extend_from_slice(&fp.to_le_bytes());
        body.extend_from_slice(&slot.to_le_bytes());
    }
    Ok((head, body))
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap_or_default())
}

/// The index in `body`; `None` on anything malformed.
fn decode_body(body: &[u8]) -> Option<(Key, Index)> {
    let (header, rest): (Header, &[u8]) = postcard::take_from_bytes(body).ok()?;
    let runs = usize::try_from(header.runs).ok()?;
    let text = usize::try_from(header.text).ok()?;
    let rows = usize::try_from(header.by_rowid).ok()?;
    let report_rows = usize::try_from(header.report_rows).ok()?;
    let (fixed, rest) = rest.split_at_checked(runs.checked_mul(RUN_BYTES)?)?;
    let (text_bytes, rest) = rest.split_at_checked(text)?;
    let (rest, report_rest) = rest.split_at_checked(rows.checked_mul(ROW_BYTES)?)?;
    if report_rest.len() != report_rows.checked_mul(ROW_BYTES)? {
        return None;
    }
    let text_bytes = std::str::from_utf8(text_bytes).ok()?;
    let mut at = 0usize;
    let mut take = |len: u32| -> Option<String> {
        let end = at.checked_add(len as usize)?;
        let s = text_bytes.get(at..end)?.to_string();
        at = end;
        Some(s)
    };
    let mut index = Index::default();
    index.runs.reserve(runs);
    for rec in fixed.chunks_exact(RUN_BYTES) {
        index.runs.push(TrackedRun {
            entity: EntityId(le64(rec)),
            run_hash: le64(&rec[8..]),
            agent_id: take(le32(&rec[16..]))?,
            commit_hash: take(le32(&rec[20..]))?,
            report: None,
        });
    }
    if at != text_bytes.len() {
        return None;
    }
    for (slot, report) in header.run_reports {
        index.runs.get_mut(slot as usize)?.report = Some(report);
    }
    let row = |r: &[u8]| (le64(r) as i64, le64(&r[8..]), le32(&r[16..]));
    index.by_rowid = rest.chunks_exact(ROW_BYTES).map(row).collect();
    index.report_rows = report_rest.chunks_exact(ROW_BYTES).map(row).collect();
    index.reports = header.reports.into_iter().collect();
    Some((header.key, index))
}

/// Writes `index` for the world state `key` to `path`, atomically (a
/// temporary file renamed over it). Errors are I/O errors of the cache file.
pub(crate) fn save(path: &Path, key: &Key, index: &Index) -> std::io::Result<()> {
    let (head, body) = encode_body(key, index)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| {
        let mut file = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&tmp)?);
        let mut sum = xxhash_rust::xxh3::Xxh3::new();
        sum.update(&head);
        sum.update(&body);
        file.write_all(MAGIC)?;
        file.write_all(&head)?;
        file.write_all(&body)?;
        file.write_all(&sum.digest().to_le_bytes())?;
        // Flushed and closed before the rename.
        drop(file.into_inner().map_err(|e| e.into_error())?);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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
    let (key, index) = decode_body(body)?;
    let (k, e) = (&key, expect);
    if k.world.id != e.world.id
        || k.world.name != e.world.name
        || k.world.created_at_ms != e.world.created_at_ms
        || k.world.parent != e.world.parent
        || k.source != e.source
        || k.experiment != e.experiment
    {
        return None;
    }
    // Positions must be in range: a hand-edited file is refused, not trusted.
    let n = index.runs.len() as u32;
    if index.by_rowid.iter().any(|r| r.2 >= n) || !index.by_rowid.is_sorted_by_key(|r| r.0) {
        return None;
    }
    if index
        .report_rows
        .iter()
        .any(|r| matches!(ReportOwner::of_code(r.2), ReportOwner::Run(slot) if slot >= n))
        || !index.report_rows.is_sorted_by_key(|r| r.0)
    {
        return None;
    }
    Some((key, index))
}

/// Whom a report row of the runner database belongs to, as
/// [`Index::report_rows`] stores it: one `u32` per row (the saved index
/// keeps fixed-size records), the two highest values being marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReportOwner {
    /// The run at this slot of [`Index::runs`].
    Run(u32),
    /// A row with no text report_id or agent_id (skipped with a warning).
    Bad,
    /// A row whose agent had no run when it was read.
    Orphan,
}

impl ReportOwner {
    const BAD: u32 = u32::MAX;
    const ORPHAN: u32 = u32::MAX - 1;

    /// The stored form.
    pub(crate) const fn code(self) -> u32 {
        match self {
            ReportOwner::Run(slot) => slot,
            ReportOwner::Bad => Self::BAD,
            ReportOwner::Orphan => Self::ORPHAN,
        }
    }

    /// The owner of a stored code.
    pub(crate) const fn of_code(code: u32) -> ReportOwner {
        match code {
            Self::BAD => ReportOwner::Bad,
            Self::ORPHAN => ReportOwner::Orphan,
            slot => ReportOwner::Run(slot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoresearch_core::{Tick, WorldId};

    fn sample() -> (Key, Index) {
        let key = Key {
            world: WorldInfo {
                id: WorldId(3),
                name: "runner-fleet".into(),
                parent: None,
                head: Tick(9),
                created_at_ms: 17,
            },
            next_entity: 40,
            source: "/x/state.db".into(),
            experiment: None,
        };
        let mut index = Index::default();
        for i in 0..5u64 {
            index.push(TrackedRun {
                agent_id: format!("agent-ü{i}"),
                entity: EntityId(i * 2),
                run_hash: u64::MAX - i,
                commit_hash: if i % 2 == 0 {
                    String::new()
                } else {
                    format!("c{i}")
                },
                report: (i == 3).then(|| StoredReport {
                    created_at_ms: -5,
                    report_id: "r".into(),
                    commit_hash: "c3".into(),
                    hash: 7,
                }),
            });
            index.by_rowid.push((i as i64 - 2, i * 31, i as u32));
        }
        index.reports.insert("r".into(), 99);
        index.report_rows = vec![(-1, 5, 3), (4, 6, u32::MAX)];
        (key, index)
    }

    fn tracked(agent_id: &str, entity: u64) -> TrackedRun {
        TrackedRun {
            agent_id: agent_id.into(),
            entity: EntityId(entity),
            run_hash: entity,
            commit_hash: String::new(),
            report: None,
        }
    }

    #[test]
    fn a_reserved_index_finds_every_run_pushed_after_it() {
        // Reserved empty (the look-up made at once), reserved with runs
        // before the look-up exists, and reserved after it was built.
        for case in 0..3 {
            let mut index = Index::default();
            if case > 0 {
                index.push(tracked("a0", 0));
            }
            if case == 2 {
                assert_eq!(index.slot("a0"), Some(0));
            }
            index.reserve(100);
            assert!(index.runs.capacity() >= index.runs.len() + 100);
            let first = index.runs.len();
            for i in first..first + 100 {
                assert_eq!(index.slot(&format!("a{i}")), None, "case {case}");
                let slot = index.push(tracked(&format!("a{i}"), i as u64));
                assert_eq!(slot as usize, i);
            }
            for i in 0..first + 100 {
                assert_eq!(index.slot(&format!("a{i}")), Some(i as u32), "case {case}");
            }
            assert_eq!(index.slot("missing"), None);
        }
    }

    #[test]
    fn the_saved_encoding_round_trips_and_refuses_damage_without_panicking() {
        let (key, index) = sample();
        let (head, body) = encode_body(&key, &index).unwrap();
        let bytes = [head, body].concat();
        let (k, got) = decode_body(&bytes).unwrap();
        assert_eq!(k, key);
        let view = |i: &Index| -> Vec<String> { i.runs.iter().map(|t| format!("{t:?}")).collect() };
        assert_eq!(view(&got), view(&index));
        assert_eq!(got.by_rowid, index.by_rowid);
        assert_eq!(got.report_rows, index.report_rows);
        assert_eq!(got.reports, index.reports);
        // Every cut is refused; flipped bytes are refused or decode to
        // something, never a panic.
        for cut in 0..bytes.len() {
            assert!(decode_body(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0xff;
            let _ = decode_body(&b);
        }
    }
}
