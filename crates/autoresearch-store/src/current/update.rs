//! One batch's maintenance of a world's current state: its lifecycle
//! values before the batch, the changed pointers and keys (pending, or
//! folded into the main tables in key order).

use super::codec::{PointerBlock, decode_block, decode_tally, encode_block, encode_tally, slot};
use super::keys::{KeyOp, apply_keys};
use super::pending::{FOLD_NOW, MAX_BYTES, MAX_ENTRIES, Overlay, Pending};
use super::{Blocks, CurrentTables, Input, NEVER_PENDING, Touched, input_index, pointer};
use crate::Stop;
use crate::{EncodedAppend, Failure};
use autoresearch_core::Change;
use autoresearch_core::current::{Facts, FactsRef, INPUTS, Tally};
use redb::{ReadableTable, Table};
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

/// A map by entity id, hashed with foldhash's fast hasher at a fixed
/// seed (SipHash cost a tenth of a bulk fold). Entity ids come from the
/// ledger's own counter, so chosen collisions are not a concern.
pub(crate) type EntityMap<V> = HashMap<u64, V, foldhash::fast::FixedState>;

/// A batch touching at least this many entities computes their facts,
/// and sorts its keys, on two threads (the writer's and a scoped one): an
/// ingest's batch, where that work is most of the writer's. Starting a
/// thread costs tens of microseconds, a thousand entities' facts about a
/// millisecond.
pub(crate) const PARALLEL_FROM: usize = 1_024;

/// Runs `here` on this thread and `apart` on a scoped thread of its own,
/// at once, and returns both results; both run here, one after the other,
/// when no thread can be started. A panic of the other thread is a
/// [`Failure::Aborted`]: the whole transaction is dropped.
pub(crate) fn both<A, B>(
    here: impl FnOnce() -> A,
    apart: impl FnOnce() -> B + Send,
    what: &str,
) -> Result<(A, B), Failure>
where
    B: Send,
{
    let job = std::sync::Mutex::new(Some(apart));
    let take = || job.lock().unwrap_or_else(|p| p.into_inner()).take();
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("ledger-writer-2".into())
            .spawn_scoped(s, || take().map(|f| f()));
        let a = here();
        let b = match spawned {
            Ok(handle) => handle.join().map_err(|_| {
                Failure::Aborted(autoresearch_core::StorageError::Backend {
                    context: format!("{what}, on a second thread"),
                    source: "the thread panicked".into(),
                })
            })?,
            // No thread to be had: the job is still here.
            Err(_) => take().map(|f| f()),
        };
        match b {
            Some(b) => Ok((a, b)),
            None => Err(Failure::Aborted(autoresearch_core::StorageError::Backend {
                context: what.to_string(),
                source: "the second thread's work was lost".into(),
            })),
        }
    })
}

/// The position of the Run in [`INPUTS`].
const RUN_INPUT: usize = 0;

/// Entities whose facts a batch changes: `(entity, before, after)`, the
/// facts after borrowing the values' text.
type Changed<'t> = Vec<(u64, &'t Facts, FactsRef<'t>)>;

/// The entities of `touched` whose facts the batch changes, each with its
/// facts before and after, in `touched`'s order (in parts, one after the
/// other: an ingest's are megabytes, not copied into one vector); `None`
/// when a lifecycle value does not decode. Computed on two threads when
/// `parallel` (the same result).
fn changed_facts<'t, 'a>(
    touched: &'t [(u64, Touched<'a>)],
    parallel: bool,
) -> Result<Option<Vec<Changed<'t>>>, Failure> {
    fn part<'t, 'a>(touched: &'t [(u64, Touched<'a>)]) -> Option<Changed<'t>> {
        let mut out = Vec::with_capacity(touched.len());
        for (e, touch) in touched {
            // Entities only spawned, or changed in other components, have
            // the facts they had.
            if !touch.changed && *touch.before() == Facts::default() {
                continue;
            }
            let after = touch.facts_ref().ok()?;
            if after == *touch.before() {
                continue;
            }
            out.push((*e, touch.before(), after));
        }
        Some(out)
    }
    if !parallel {
        return Ok(part(touched).map(|a| vec![a]));
    }
    let (first, second) = touched.split_at(touched.len() / 2);
    let (a, b) = both(
        || part(first),
        || part(second),
        "computing the current state's facts",
    )?;
    Ok(a.zip(b).map(|(a, b)| vec![a, b]))
}

/// The component names world `w` holds any value of in the main table (a
/// skip scan: one range look-up per name).
fn component_names(
    ticks: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
    w: u64,
) -> Result<Vec<String>, Failure> {
    let mut names: Vec<String> = Vec::new();
    loop {
        let next = match names.last() {
            None => ticks.range((w, "", 0)..(w + 1, "", 0))?.next(),
            Some(last) => ticks
                .range::<(u64, &str, u64)>((
                    Bound::Excluded((w, last.as_str(), u64::MAX)),
                    Bound::Excluded((w + 1, "", 0)),
                ))?
                .next(),
        };
        match next {
            Some(entry) => {
                let (k, _) = entry?;
                names.push(k.value().1.to_string());
            }
            None => return Ok(names),
        }
    }
}

/// The lifecycle components (before the batch) of each of `entities`.
fn load_inputs<'a>(
    t: &mut CurrentTables<'_>,
    records: &crate::stored::WriteValues<'_>,
    blocks: &mut Blocks,
    pending: &Overlay,
    entities: &BTreeSet<u64>,
) -> Result<EntityMap<Touched<'a>>, Stop> {
    if entities.is_empty() {
        return Ok(EntityMap::default());
    }
    let none = Overlay::default();
    // The inputs the world holds any value of, pending or in the main
    // table (a Run, in a world of runs only): the others are not looked
    // up entity by entity.
    let mut held = Vec::with_capacity(INPUTS.len());
    for (i, name) in INPUTS.iter().enumerate() {
        if pending.pointers.contains_key(*name) || blocks.any(&t.ticks, name)? {
            held.push((i, *name));
        }
    }
    let mut wanted = Vec::with_capacity(entities.len());
    for &e in entities {
        for &(i, name) in &held {
            match pointer(blocks, &t.ticks, [&none, pending], name, e)? {
                Some(Some(tick)) => wanted.push((e, i, tick)),
                Some(None) => {}
                None => return Err(Stop::Unkept),
            }
        }
    }
    let mut out: EntityMap<Touched<'a>> = EntityMap::default();
    out.reserve(entities.len());
    for (e, i, tick) in wanted {
        // A pointer to a tick that did not set the value: damaged.
        let v = t
            .inputs
            .value(records, blocks.w, tick, INPUTS[i], e)?
            .ok_or(Stop::Unkept)?;
        let touch = out.entry(e).or_insert_with(Touched::new);
        touch.inputs[i] = Some(Input::Stored(Box::new(v)));
    }
    for &e in entities {
        let touch = out.entry(e).or_insert_with(Touched::new);
        touch.before = Some(Box::new(touch.facts().map_err(|_| Stop::Unkept)?));
    }
    Ok(out)
}

pub(super) fn update(
    t: &mut CurrentTables<'_>,
    records: &crate::stored::WriteValues<'_>,
    w: u64,
    appends: &[EncodedAppend],
    pending: &mut Pending,
) -> Result<(), Stop> {
    let Some(last) = appends.last() else {
        return Ok(());
    };
    let mut blocks = Blocks::new(w);
    // Entities whose lifecycle components the batch changes and that it
    // did not spawn first: their facts before the batch are loaded (from
    // the records their values are in) before anything changes.
    let changes: usize = appends.iter().map(|a| a.changes_full.len()).sum();
    let mut first_is_spawn: EntityMap<bool> = EntityMap::default();
    first_is_spawn.reserve(changes);
    let mut load = BTreeSet::new();
    for a in appends {
        for change in a.changes_full.iter() {
            let e = change.entity().0;
            let spawned = *first_is_spawn
                .entry(e)
                .or_insert(matches!(change, Change::Spawn { .. }));
            let lifecycle = match change {
                Change::Spawn { .. } => false,
                Change::Set { component, .. } | Change::Remove { component, .. } => {
                    input_index(component).is_some()
                }
                Change::Despawn { .. } => true,
            };
            if lifecycle && !spawned {
                load.insert(e);
            }
        }
    }
    let mut loaded = load_inputs(t, records, &mut blocks, &pending.overlay, &load)?;
    // Touched entities in a vector, by position (a map of large values
    // would move them at every growth).
    let mut touched: Vec<(u64, Touched<'_>)> = Vec::with_capacity(first_is_spawn.len());
    let mut position: EntityMap<usize> = EntityMap::default();
    position.reserve(first_is_spawn.len());
    fn touch<'m, 'a>(
        touched: &'m mut Vec<(u64, Touched<'a>)>,
        position: &mut EntityMap<usize>,
        loaded: &mut EntityMap<Touched<'a>>,
        e: u64,
    ) -> &'m mut Touched<'a> {
        let i = *position.entry(e).or_insert_with(|| {
            let t = loaded.remove(&e).unwrap_or_else(Touched::new);
            touched.push((e, t));
            touched.len() - 1
        });
        &mut touched[i].1
    }
    let mut delta = Overlay::default();
    // The main table's component names, read at the first despawn (the
    // main tables do not change before the fold).
    let mut main_names: Option<Vec<String>> = None;
    for a in appends {
        let tick = a.tick.0;
        for change in a.changes_full.iter() {
            match change {
                Change::Spawn { entity } => {
                    touch(&mut touched, &mut position, &mut loaded, entity.0);
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } => {
                    if let Some(i) = input_index(component) {
                        let entry = touch(&mut touched, &mut position, &mut loaded, entity.0);
                        let old = entry.inputs[i].replace(Input::Batch(value.as_slice()));
                        // The Run it held before the batch (only a loaded
                        // value is owned), for the series.
                        if i == RUN_INPUT
                            && let Some(Input::Stored(old)) = old
                        {
                            t.prior_runs.entry(entity.0).or_insert(*old);
                        }
                        entry.changed = true;
                    }
                    delta.set_pointer(component, entity.0, Some(tick));
                }
                Change::Remove { entity, component } => {
                    if let Some(i) = input_index(component) {
                        let entry = touch(&mut touched, &mut position, &mut loaded, entity.0);
                        entry.inputs[i] = None;
                        entry.changed = true;
                    }
                    delta.set_pointer(component, entity.0, None);
                }
                Change::Despawn { entity } => {
                    let e = entity.0;
                    let entry = touch(&mut touched, &mut position, &mut loaded, e);
                    entry.inputs = Default::default();
                    entry.changed = true;
                    if main_names.is_none() {
                        main_names = Some(component_names(&t.ticks, w)?);
                    }
                    let mut names: BTreeSet<String> =
                        main_names.iter().flatten().cloned().collect();
                    names.extend(pending.overlay.pointers.keys().cloned());
                    names.extend(delta.pointers.keys().cloned());
                    for name in names {
                        let held =
                            pointer(&mut blocks, &t.ticks, [&delta, &pending.overlay], &name, e)?
                                .ok_or(Stop::Unkept)?;
                        if held.is_some() {
                            delta.set_pointer(&name, e, None);
                        }
                    }
                }
            }
        }
    }
    let mut now: Vec<KeyOp<'_>> = Vec::new();
    // The other keys' changes: folded at once (sorted) when the batch is
    // folded with nothing pending, else kept in the overlay.
    let mut keyed: Vec<KeyOp<'_>> = Vec::new();
    let parallel = touched.len() >= PARALLEL_FROM;
    let afters = changed_facts(&touched, parallel)?.ok_or(Stop::Unkept)?;
    if parallel {
        // A bulk batch's keys (tens of thousands) sized once, at most
        // every key before and after of each entity, rather than grown
        // op by op.
        let (mut at_once, mut other) = (0, 0);
        for (_, before, after) in afters.iter().flatten() {
            let indexes = before.keys.iter().map(|(i, _)| *i);
            for i in indexes.chain(after.keys.iter().map(|(i, _)| *i)) {
                if NEVER_PENDING.contains(&i) {
                    at_once += 1;
                } else {
                    other += 1;
                }
            }
        }
        now.reserve_exact(at_once);
        keyed.reserve_exact(other);
    }
    let mut tally: Option<Tally> = None;
    for (e, before, after) in afters.iter().flatten() {
        let old = |i: &str, k: &str| before.keys.iter().any(|(bi, bk)| *bi == i && bk == k);
        let new = |i: &str, k: &str| {
            after
                .keys
                .iter()
                .any(|(ai, ak)| *ai == i && ak.as_ref() == k)
        };
        // A handful of keys an entity: a scan beats a set.
        let ops = before
            .keys
            .iter()
            .filter(|(i, k)| !new(i, k))
            .map(|(i, k)| (*i, k.as_str(), false))
            .chain(
                after
                    .keys
                    .iter()
                    .filter(|(i, k)| !old(i, k))
                    .map(|(i, k)| (*i, k.as_ref(), true)),
            );
        for (i, k, added) in ops {
            if NEVER_PENDING.contains(&i) {
                now.push((i, k, *e, added));
            } else {
                keyed.push((i, k, *e, added));
            }
        }
        if tally.is_none() {
            tally = Some(match t.stored_tally(w)? {
                Some(v) => decode_tally(&v).ok_or(Stop::Unkept)?,
                None => Tally::default(),
            });
        }
        if let Some(tally) = &mut tally {
            tally.sub(before);
            tally.add_ref(after);
        }
    }
    let nothing_pending = pending.ends.is_none() && pending.overlay.is_empty();
    // A bulk batch (an ingest): its keys go to the main table sorted,
    // without an overlay of owned keys between. Each entity yields each
    // of its keys once, so this equals folding the overlay.
    let bulk = nothing_pending && delta.len() + keyed.len() >= FOLD_NOW;
    if bulk && parallel {
        both(
            || sort_bulk(&mut now),
            || {
                sort_bulk(&mut keyed);
                keyed.dedup();
            },
            "sorting the current state's keys",
        )?;
    } else {
        sort_by_index(&mut now);
        if bulk {
            sort_by_index(&mut keyed);
            keyed.dedup();
        }
    }
    apply_keys(&mut t.index, w, &now)?;
    if let Some(tally) = &tally {
        let bytes = encode_tally(tally).ok_or(Stop::Unkept)?;
        t.new_tally = Some(bytes);
    }
    if bulk {
        fold(t, w, &delta)?;
        apply_keys(&mut t.index, w, &keyed)?;
        *pending = Pending::default();
        return Ok(());
    }
    for (i, k, e, added) in keyed {
        delta.set_key(i, k.to_string(), e, added);
    }
    if delta.is_empty() {
        return Ok(());
    }
    let encoded = if delta.len() >= FOLD_NOW {
        None
    } else {
        Some(delta.encode().ok_or(Stop::Unkept)?)
    };
    match encoded {
        Some(bytes) if pending.count < MAX_ENTRIES && pending.bytes + bytes.len() <= MAX_BYTES => {
            let k = last.tick.0;
            t.pending.insert((w, k), bytes.as_slice())?;
            pending.count += 1;
            pending.bytes += bytes.len();
            pending.ends = Some((pending.ends.map_or(k, |(first, _)| first), k));
            pending.overlay.merge(delta);
        }
        _ => {
            pending.overlay.merge(delta);
            fold(t, w, &pending.overlay)?;
            if pending.ends.is_some() {
                // Not the state row (`STATE_KEY`): it keeps the tally.
                t.pending
                    .retain_in((w, 0)..(w, super::STATE_KEY), |_, _| false)?;
            }
            *pending = Pending::default();
        }
    }
    Ok(())
}

/// Sorts `ops` by index, key and entity: a handful of index names, so
/// each op is put in its index's bucket first and the buckets sorted by
/// key and entity (the names are not compared again in every comparison).
fn sort_by_index(ops: &mut Vec<KeyOp<'_>>) {
    sort_in_buckets(ops, |bucket| {
        bucket.sort_unstable_by(|a, b| (a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)));
    });
}

/// [`sort_by_index`] for a bulk batch's tens of thousands of ops (an
/// ingest's): the same order, with cheaper comparisons. Within an index,
/// keys are compared by rank when few are distinct (an experiment's name,
/// shared by thousands of runs: each distinct key compared once, then
/// numbers), else by their first eight bytes as a number (run ids: the
/// whole keys compared only where those tie).
fn sort_bulk(ops: &mut Vec<KeyOp<'_>>) {
    sort_in_buckets(ops, |bucket| {
        if !sort_by_rank(bucket) {
            sort_by_prefix(bucket);
        }
    });
}

/// Puts each of `ops` in its index's bucket, each bucket sized once
/// (grown op by op, tens of thousands of ops cost more than their sort),
/// sorts each with `sort` and puts them back in index order.
fn sort_in_buckets<'k>(ops: &mut Vec<KeyOp<'k>>, sort: impl Fn(&mut [KeyOp<'k>])) {
    let mut buckets: Vec<(&str, Vec<KeyOp<'_>>)> = Vec::new();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for op in ops.iter() {
        match counts.iter_mut().find(|(name, _)| *name == op.0) {
            Some((_, n)) => *n += 1,
            None => counts.push((op.0, 1)),
        }
    }
    for (name, n) in counts {
        buckets.push((name, Vec::with_capacity(n)));
    }
    for op in ops.drain(..) {
        // Every op's index was counted above: its bucket is there.
        if let Some((_, bucket)) = buckets.iter_mut().find(|(name, _)| *name == op.0) {
            bucket.push(op);
        }
    }
    buckets.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (_, mut bucket) in buckets {
        sort(&mut bucket);
        ops.append(&mut bucket);
    }
}

/// Sorts one index's ops by key rank, entity and presence; false (left
/// as they were) when more than about an eighth of the keys are distinct.
fn sort_by_rank(ops: &mut [KeyOp<'_>]) -> bool {
    let most = ops.len() / 8 + 16;
    let mut distinct: HashMap<&str, u32, foldhash::fast::FixedState> = HashMap::default();
    let mut keyed: Vec<(u32, u64, bool, &str)> = Vec::with_capacity(ops.len());
    for &(_, k, e, added) in ops.iter() {
        let next = distinct.len() as u32;
        let id = *distinct.entry(k).or_insert(next);
        if distinct.len() > most {
            return false;
        }
        keyed.push((id, e, added, k));
    }
    let mut names: Vec<(&str, u32)> = distinct.into_iter().collect();
    names.sort_unstable();
    let mut rank = vec![0u32; names.len()];
    for (r, (_, id)) in names.iter().enumerate() {
        rank[*id as usize] = r as u32;
    }
    for op in &mut keyed {
        op.0 = rank[op.0 as usize];
    }
    keyed.sort_unstable_by_key(|op| (op.0, op.1, op.2));
    for (op, (_, e, added, k)) in ops.iter_mut().zip(keyed) {
        *op = (op.0, k, e, added);
    }
    true
}

/// Sorts one index's ops by key, entity and presence, each key first
/// compared by its first eight bytes as a big-endian number (zero-padded:
/// the numbers order as the keys do, and tie only where the keys may).
fn sort_by_prefix(ops: &mut [KeyOp<'_>]) {
    fn prefix(k: &str) -> u64 {
        let mut b = [0u8; 8];
        let n = k.len().min(8);
        b[..n].copy_from_slice(&k.as_bytes()[..n]);
        u64::from_be_bytes(b)
    }
    let mut keyed: Vec<(u64, KeyOp<'_>)> = ops.iter().map(|op| (prefix(op.1), *op)).collect();
    keyed.sort_unstable_by(|(pa, a), (pb, b)| {
        pa.cmp(pb)
            .then_with(|| a.1.cmp(b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    for (op, (_, sorted)) in ops.iter_mut().zip(keyed) {
        *op = sorted;
    }
}

/// Writes `overlay` into world `w`'s main tables: each pointer block and
/// key chunk it changes read, changed and written once, in key order.
fn fold(t: &mut CurrentTables<'_>, w: u64, overlay: &Overlay) -> Result<(), Stop> {
    for (component, entities) in &overlay.pointers {
        let c = component.as_str();
        let mut open: Option<(u64, PointerBlock)> = None;
        for (&e, &tick) in entities {
            let (block, offset) = slot(e);
            let b = match &mut open {
                Some((n, b)) if *n == block => b,
                _ => {
                    if let Some((n, b)) = open.take() {
                        write_block(&mut t.ticks, w, c, n, &b)?;
                    }
                    let stored = match t.ticks.get((w, c, block))? {
                        Some(v) => decode_block(v.value()).ok_or(Stop::Unkept)?,
                        None => Vec::new(),
                    };
                    &mut open.insert((block, stored)).1
                }
            };
            match (b.binary_search_by_key(&offset, |(o, _)| *o), tick) {
                (Ok(i), Some(t)) => b[i].1 = t,
                (Err(i), Some(t)) => b.insert(i, (offset, t)),
                (Ok(i), None) => {
                    b.remove(i);
                }
                (Err(_), None) => {}
            }
        }
        if let Some((n, b)) = open {
            write_block(&mut t.ticks, w, c, n, &b)?;
        }
    }
    let ops: Vec<KeyOp<'_>> = overlay
        .keys
        .iter()
        .flat_map(|(i, m)| {
            m.iter()
                .map(move |((k, e), present)| (i.as_str(), k.as_str(), *e, *present))
        })
        .collect();
    apply_keys(&mut t.index, w, &ops)
}

/// Stores pointer block `block` of `component` (removes it when empty).
fn write_block(
    table: &mut Table<'_, (u64, &'static str, u64), &'static [u8]>,
    w: u64,
    component: &str,
    block: u64,
    b: &PointerBlock,
) -> Result<(), Failure> {
    if b.is_empty() {
        table.remove((w, component, block))?;
    } else {
        table.insert((w, component, block), encode_block(b).as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    /// An ingest holds one `Touched` for each entity it spawns, all at
    /// once: at 100,000 runs each byte of it is 100 kB of fresh memory
    /// (it was 424 bytes, the facts and a read value inline).
    #[test]
    fn a_touched_entity_stays_small() {
        let size = size_of::<(u64, Touched<'static>)>();
        assert!(size <= 176, "{size} bytes");
    }
    use super::*;
    use crate::test_support::{Rng, registry};
    use autoresearch_core::{OutcomeStatus, Run, RunStatus, lifecycle::Outcome};

    /// The Run's position in the lifecycle inputs is the one the series'
    /// prior Runs are noted by.
    #[test]
    fn the_run_input_is_the_run() {
        assert_eq!(INPUTS[RUN_INPUT], autoresearch_core::current::RUN);
    }

    /// `both` gives both results whichever thread ran what.
    #[test]
    fn both_returns_both_results() {
        let mut v = vec![3, 1, 2];
        let mut w = ["b", "a"];
        let (x, y) = both(
            || {
                v.sort_unstable();
                v.len()
            },
            || {
                w.sort_unstable();
                w.concat()
            },
            "a test",
        )
        .ok()
        .unwrap();
        assert_eq!((x, y.as_str()), (3, "ab"));
        assert_eq!(v, [1, 2, 3]);
    }

    /// A panic on the second thread aborts the transaction (it is not
    /// taken as an empty result), naming the work.
    #[test]
    fn a_panic_on_the_second_thread_is_an_abort() {
        let r = both(|| 1, || -> u8 { panic!("boom") }, "sorting things");
        match r {
            Err(Failure::Aborted(autoresearch_core::StorageError::Backend { context, .. })) => {
                assert!(context.contains("sorting things"), "{context}");
            }
            Err(_) => panic!("another failure"),
            Ok(_) => panic!("the panic was lost"),
        }
    }

    /// The facts computed on two threads equal those computed on one, on
    /// entities spawned with a Run, with a Run and an Outcome, changed in
    /// other components only, and with a Run that does not decode.
    #[test]
    fn facts_on_two_threads_equal_facts_on_one() {
        let registry = registry();
        let mut rng = Rng(11);
        let mut values: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for i in 0..3_000u64 {
            let mut run = Run::new(format!("r{i}"), ["a", "b", "c"][i as usize % 3]);
            let status = [RunStatus::Running, RunStatus::Stopped, RunStatus::Crashed];
            run.set_status(*rng.pick(&status));
            let outcome = (rng.below(3) == 0).then(|| Outcome {
                status: OutcomeStatus::Keep,
                ..Outcome::default()
            });
            values.push((
                registry.encode(&run).unwrap().1,
                outcome.map(|o| registry.encode(&o).unwrap().1),
            ));
        }
        let touched = |bad: Option<usize>| -> Vec<(u64, Touched<'_>)> {
            values
                .iter()
                .enumerate()
                .map(|(i, (run, outcome))| {
                    let mut t = Touched::new();
                    t.changed = i % 5 != 0;
                    if Some(i) == bad {
                        t.inputs[0] = Some(Input::Batch(&run[..1]));
                    } else if t.changed {
                        t.inputs[0] = Some(Input::Batch(run.as_slice()));
                        t.inputs[1] = outcome.as_deref().map(Input::Batch);
                    }
                    (i as u64 * 3, t)
                })
                .collect()
        };
        let all = touched(None);
        let one: Vec<_> = changed_facts(&all, false).ok().unwrap().unwrap().concat();
        let two: Vec<_> = changed_facts(&all, true).ok().unwrap().unwrap().concat();
        assert_eq!(one.len(), 2_400);
        assert_eq!(one, two);
        // A value that does not decode, in either half.
        for bad in [7, 2_999] {
            let all = touched(Some(bad));
            assert!(changed_facts(&all, false).ok().unwrap().is_none());
            assert!(changed_facts(&all, true).ok().unwrap().is_none());
        }
    }

    /// The bulk sort (by key rank or by key prefix) gives the order of a
    /// plain sort of the tuples: few and many distinct keys, keys shorter
    /// than eight bytes, sharing their first eight, holding zero bytes.
    #[test]
    fn the_bulk_sort_equals_a_plain_sort() {
        let names = ["run", "experiment", "active"];
        let few = [
            "kernel-tune",
            "kernel-tuned",
            "a",
            "a\0",
            "",
            "nanogpt-speedrun",
            "nanogpt-",
        ];
        let mut rng = Rng(17);
        let many: Vec<String> = (0..4_000)
            .map(|i| match i % 4 {
                0 => format!("{:016x}-{i:07}", rng.below(1 << 40)),
                1 => format!("run-0000{}", rng.below(100)),
                2 => format!("r{}", rng.below(1000)),
                _ => format!("x\0{}", rng.below(50)),
            })
            .collect();
        for (len, distinct) in [
            (0usize, 1usize),
            (1, 1),
            (40, 3),
            (3_000, 7),
            (3_000, 4_000),
            (5_000, 40),
        ] {
            let ops: Vec<KeyOp<'_>> = (0..len)
                .map(|_| {
                    let k = if distinct <= few.len() {
                        *rng.pick(&few[..distinct])
                    } else {
                        many[rng.below(distinct.min(many.len()) as u64) as usize].as_str()
                    };
                    (*rng.pick(&names), k, rng.below(3_000), rng.below(2) == 0)
                })
                .collect();
            let mut want = ops.clone();
            want.sort_unstable();
            let mut got = ops;
            sort_bulk(&mut got);
            assert_eq!(got, want, "{len} ops, {distinct} keys");
        }
    }

    /// Sorting by index bucket gives the order of a plain sort of the
    /// tuples, on ops with few and many names, shared and distinct keys.
    #[test]
    fn sorting_by_index_bucket_equals_a_plain_sort() {
        let names = ["run", "experiment", "active", "result", "a", "ab"];
        let keys = ["", "a", "ab", "b", "r10", "r1", "zz"];
        let mut rng = Rng(5);
        for len in [0usize, 1, 2, 17, 300, 2_500] {
            let ops: Vec<KeyOp<'_>> = (0..len)
                .map(|_| {
                    (
                        *rng.pick(&names),
                        *rng.pick(&keys),
                        rng.below(50),
                        rng.below(2) == 0,
                    )
                })
                .collect();
            let mut want = ops.clone();
            want.sort_unstable();
            let mut got = ops;
            sort_by_index(&mut got);
            assert_eq!(got, want, "{len} ops");
        }
    }
}
