//! The `current_index` table's chunks of secondary keys: changed in place
//! by a writer, scanned by a read.

use super::codec::{CHUNK, KeyChunk, decode_chunk, encode_chunk};
use crate::Failure;
use crate::Stop;
use autoresearch_core::EntityId;
use redb::{ReadableTable, Table};
use std::borrow::Cow;
use std::ops::Bound;

/// One change to the secondary keys: `(index, key, entity, added)`.
pub(super) type KeyOp<'a> = (&'a str, &'a str, u64, bool);

/// A range of `current_index`: `(world, index, first key, first entity)`
/// to an encoded chunk.
pub(super) type ChunkRange<'t> =
    redb::Range<'t, (u64, &'static str, &'static str, u64), &'static [u8]>;

/// The chunk of `index` that holds (or would hold) `(key, entity)`:
/// its first entry and entries; `None` before the index's first chunk.
/// `Err(None)` when it does not decode.
#[expect(clippy::type_complexity, reason = "a private helper's tuple")]
fn chunk_at(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
    entity: u64,
) -> Result<Result<Option<((String, u64), KeyChunk)>, ()>, Failure> {
    let found = table
        .range::<(u64, &str, &str, u64)>((w, index, "", 0)..=(w, index, key, entity))?
        .next_back();
    let Some(entry) = found else {
        return Ok(Ok(None));
    };
    let (k, v) = entry?;
    let (_, _, first, fe) = k.value();
    Ok(match decode_chunk(v.value()) {
        Some(c) => Ok(Some(((first.to_string(), fe), c))),
        None => Err(()),
    })
}

/// The first entry of `index`'s first chunk after `(key, entity)`.
fn next_chunk(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
    entity: u64,
) -> Result<Option<(String, u64)>, Failure> {
    let next = table
        .range::<(u64, &str, &str, u64)>((
            Bound::Excluded((w, index, key, entity)),
            Bound::Unbounded,
        ))?
        .next();
    Ok(match next {
        Some(entry) => {
            let (k, _) = entry?;
            let (kw, ki, kk, ke) = k.value();
            (kw == w && ki == index).then(|| (kk.to_string(), ke))
        }
        None => None,
    })
}

/// Applies `ops` (sorted by index, key, entity; one per entry) to world
/// `w`'s chunks: each chunk they fall in is read, changed and written back
/// once, cut into chunks of at most [`CHUNK`].
pub(super) fn apply_keys(
    table: &mut Table<'_, (u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    ops: &[KeyOp<'_>],
) -> Result<(), Stop> {
    let mut i = 0;
    while i < ops.len() {
        let (index, key, entity, _) = ops[i];
        // The ops' keys are borrowed, not copied: an ingest adds tens of
        // thousands.
        let (start, mut entries): (_, Vec<(Cow<'_, str>, u64)>) =
            match chunk_at(table, w, index, key, entity)? {
                Ok(Some((start, c))) => (
                    Some(start),
                    c.into_iter().map(|(k, e)| (Cow::Owned(k), e)).collect(),
                ),
                Ok(None) => (None, Vec::new()),
                Err(()) => return Err(Stop::Unkept),
            };
        let end = next_chunk(table, w, index, key, entity)?;
        // Ops past the chunk's last stored entry (a new index, an ingest)
        // append: the ops are sorted and distinct, so once one is past it,
        // every later one is past every entry, stored or added, and is
        // compared with nothing.
        let mut past_last = entries.is_empty();
        let mut j = i;
        while j < ops.len() {
            let (oi, ok, oe, add) = ops[j];
            if oi != index
                || end
                    .as_ref()
                    .is_some_and(|(k, e)| (ok, oe) >= (k.as_str(), *e))
            {
                break;
            }
            past_last = past_last
                || entries
                    .last()
                    .is_none_or(|(k, e)| (k.as_ref(), *e) < (ok, oe));
            let found = if past_last {
                Err(entries.len())
            } else {
                entries.binary_search_by(|(k, e)| (k.as_ref(), *e).cmp(&(ok, oe)))
            };
            match (found, add) {
                (Err(at), true) => entries.insert(at, (Cow::Borrowed(ok), oe)),
                (Ok(at), false) => {
                    entries.remove(at);
                }
                _ => {}
            }
            j += 1;
        }
        if let Some((k, e)) = &start {
            table.remove((w, index, k.as_str(), *e))?;
        }
        for piece in entries.chunks(CHUNK) {
            let (k, e) = &piece[0];
            table.insert((w, index, k.as_ref(), *e), encode_chunk(piece).as_slice())?;
        }
        i = j;
    }
    Ok(())
}

/// The chunks of `index` of world `w` in key order, from the one that
/// holds the first key at or after `key` (which may start before it) to
/// the end of the table: callers stop at the first chunk of another world
/// or index. Cost: two range look-ups.
pub(super) fn chunks_from<'t>(
    table: &'t impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
) -> Result<ChunkRange<'t>, Failure> {
    let start = match table
        .range::<(u64, &str, &str, u64)>((w, index, "", 0)..=(w, index, key, 0))?
        .next_back()
    {
        Some(entry) => {
            let (k, _) = entry?;
            let (_, _, first, fe) = k.value();
            (first.to_string(), fe)
        }
        None => (key.to_string(), 0),
    };
    Ok(table.range::<(u64, &str, &str, u64)>((
        Bound::Included((w, index, start.0.as_str(), start.1)),
        Bound::Unbounded,
    ))?)
}

/// The entries of `index` whose key is `key` (starts with it, when
/// `prefix`), ascending; at most `limit` unless `prefix`. `None` when a
/// chunk does not decode.
pub(super) fn keyed_forward(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
    prefix: bool,
    limit: usize,
) -> Result<Option<Vec<(String, EntityId)>>, Failure> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(Some(out));
    }
    let range = chunks_from(table, w, index, key)?;
    for entry in range {
        let (k, v) = entry?;
        let (kw, ki, _, _) = k.value();
        if kw != w || ki != index {
            break;
        }
        let Some(chunk) = decode_chunk(v.value()) else {
            return Ok(None);
        };
        for (ck, ce) in chunk {
            if ck.as_str() < key {
                continue;
            }
            let hit = if prefix {
                ck.starts_with(key)
            } else {
                ck == key
            };
            // Sorted: past the first miss, nothing matches.
            if !hit {
                return Ok(Some(out));
            }
            out.push((ck, EntityId(ce)));
            if !prefix && out.len() >= limit {
                return Ok(Some(out));
            }
        }
    }
    Ok(Some(out))
}

/// The entries of `index` whose key is `key`, newest (highest entity)
/// first, at most `limit`: read backwards from the chunk holding the
/// last. `None` when a chunk does not decode.
pub(super) fn keyed_newest(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
    limit: usize,
) -> Result<Option<Vec<(String, EntityId)>>, Failure> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(Some(out));
    }
    let range = table
        .range::<(u64, &str, &str, u64)>((w, index, "", 0)..=(w, index, key, u64::MAX))?
        .rev();
    for entry in range {
        let (_, v) = entry?;
        let Some(chunk) = decode_chunk(v.value()) else {
            return Ok(None);
        };
        for (ck, ce) in chunk.into_iter().rev() {
            match ck.as_str().cmp(key) {
                std::cmp::Ordering::Greater => continue,
                std::cmp::Ordering::Less => return Ok(Some(out)),
                std::cmp::Ordering::Equal => {}
            }
            out.push((ck, EntityId(ce)));
            if out.len() >= limit {
                return Ok(Some(out));
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Rng;
    use redb::{Database, TableDefinition, backends::InMemoryBackend};
    use std::collections::BTreeSet;

    const TABLE: TableDefinition<(u64, &str, &str, u64), &[u8]> = TableDefinition::new("keys");

    /// Every entry of `index` of world `w`, chunk after chunk, and the
    /// size of its largest chunk.
    fn stored(
        table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
        w: u64,
        index: &str,
    ) -> (Vec<(String, u64)>, usize) {
        let mut out = Vec::new();
        let mut largest = 0;
        for entry in table
            .range::<(u64, &str, &str, u64)>((w, index, "", 0)..(w, index, "\u{10ffff}", 0))
            .unwrap()
        {
            let (k, v) = entry.unwrap();
            let chunk = decode_chunk(v.value()).unwrap();
            let (_, _, first, fe) = k.value();
            assert_eq!(
                (first.to_string(), fe),
                chunk[0],
                "a chunk's key is its first entry"
            );
            largest = largest.max(chunk.len());
            out.extend(chunk);
        }
        (out, largest)
    }

    /// Batches of sorted ops (adds and removes, of keys before, among and
    /// after the stored ones, so that both the search and the append are
    /// taken, in one chunk and across several) leave the entries a set
    /// gets, in chunks of at most `CHUNK`.
    #[test]
    fn applied_ops_leave_the_entries_of_a_set() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        let mut table = txn.open_table(TABLE).unwrap();
        let keys: Vec<String> = (0..40).map(|i| format!("k{:02}", i * 7 % 40)).collect();
        let indexes = ["experiment", "run"];
        let mut rng = Rng(23);
        let mut model: BTreeSet<(&str, String, u64)> = BTreeSet::new();
        for round in 0..60u64 {
            // Early rounds add above everything stored (an ingest's
            // appends), later ones anywhere.
            let n = 1 + rng.below(if round % 5 == 0 { 300 } else { 40 }) as usize;
            let mut ops: Vec<KeyOp<'_>> = (0..n)
                .map(|_| {
                    let index = *rng.pick(&indexes);
                    let k = if round < 10 {
                        keys[(round as usize * 4 + rng.below(4) as usize) % keys.len()].as_str()
                    } else {
                        rng.pick(&keys).as_str()
                    };
                    (index, k, rng.below(30), rng.below(3) != 0)
                })
                .collect();
            ops.sort_unstable();
            ops.dedup_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2));
            apply_keys(&mut table, 7, &ops).ok().unwrap();
            for &(i, k, e, add) in &ops {
                if add {
                    model.insert((i, k.to_string(), e));
                } else {
                    model.remove(&(i, k.to_string(), e));
                }
            }
            for index in indexes {
                let want: Vec<(String, u64)> = model
                    .iter()
                    .filter(|(i, _, _)| *i == index)
                    .map(|(_, k, e)| (k.clone(), *e))
                    .collect();
                let (got, largest) = stored(&table, 7, index);
                assert_eq!(got, want, "round {round}, index {index}");
                assert!(largest <= CHUNK, "round {round}: a chunk of {largest}");
            }
        }
        assert!(model.len() > 3 * CHUNK, "several chunks were written");
    }
}
