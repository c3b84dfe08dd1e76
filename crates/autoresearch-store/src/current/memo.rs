//! Exact-key look-ups in `current_index` for the writer's chart series,
//! with the chunks they decode kept for the rest of one append.
//!
//! The series joins every new Result to its run by `run_id` (and checks
//! the run's own `run_id` key): an ingest tick of 1,000 attempts makes
//! 2,000 to 3,000 look-ups, nearly all in the few chunks at the end of the
//! index. Decoding a chunk (hundreds of keys, bit-packed) per look-up made
//! those look-ups two fifths of the history writer's time (`perf`, `bench
//! history --attempts 100000`); a [`ChunkMemo`] decodes each chunk once
//! per append. It is valid only while `current_index` is not written: the
//! series reads it after `current::maintain` wrote it, and writes only its
//! own tables, so one memo lives for one `series::maintain` call.

use super::codec::{KeyChunk, decode_chunk};
use super::keys::chunks_from;
use crate::Failure;
use redb::ReadableTable;
use std::collections::HashMap;
use std::rc::Rc;

/// Chunks of `current_index` decoded during one append, by their table
/// key `(world, index, first key, first entity)`; `None` for one that does
/// not decode.
#[derive(Default)]
pub(crate) struct ChunkMemo {
    chunks: HashMap<(u64, String, String, u64), Option<Rc<KeyChunk>>>,
}

impl ChunkMemo {
    /// The entities whose key in `index` of world `w` is exactly `key`,
    /// ascending, as [`super::entities_with_key`] answers (same chunks, same
    /// order), decoding each chunk at most once per memo. `None` when a
    /// chunk does not decode. Cost: one or two range look-ups; a chunk's
    /// decoding only the first time it is read.
    pub(crate) fn entities_with_key(
        &mut self,
        table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
        w: u64,
        index: &str,
        key: &str,
    ) -> Result<Option<Vec<u64>>, Failure> {
        let range = chunks_from(table, w, index, key)?;
        let mut out = Vec::new();
        for entry in range {
            let (k, v) = entry?;
            let (kw, ki, first, fe) = k.value();
            if kw != w || ki != index {
                break;
            }
            let memo_key = (w, index.to_string(), first.to_string(), fe);
            let chunk = match self.chunks.get(&memo_key) {
                Some(c) => c.clone(),
                None => {
                    let c = decode_chunk(v.value()).map(Rc::new);
                    self.chunks.insert(memo_key, c.clone());
                    c
                }
            };
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            // Sorted by key: skip to the first entry at or after `key`.
            let from = chunk.partition_point(|(ck, _)| ck.as_str() < key);
            for (ck, ce) in &chunk[from..] {
                if ck != key {
                    return Ok(Some(out));
                }
                out.push(*ce);
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::current::INDEX;
    use redb::{Database, ReadableDatabase};

    /// The memo answers as `entities_with_key` does, on keys inside a
    /// chunk, across a chunk boundary, before the first and after the last
    /// key, and for a damaged chunk; a chunk read twice is decoded once.
    #[test]
    fn memo_answers_as_the_index_does_and_decodes_a_chunk_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("memo.redb")).unwrap();
        let chunk = |entries: &[(&str, u64)]| {
            let owned: KeyChunk = entries.iter().map(|(k, e)| (k.to_string(), *e)).collect();
            super::super::codec::encode_chunk(&owned)
        };
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(INDEX).unwrap();
            let a = chunk(&[("a", 1), ("b", 2), ("b", 3)]);
            let b = chunk(&[("b", 4), ("c", 5)]);
            t.insert((7, "result", "a", 1), a.as_slice()).unwrap();
            t.insert((7, "result", "b", 4), b.as_slice()).unwrap();
            t.insert((7, "broken", "a", 1), [0xffu8, 1, 2].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(INDEX).unwrap();
        let mut memo = ChunkMemo::default();
        for key in ["", "a", "b", "c", "d", "bb"] {
            let want = crate::current::entities_with_key(&t, 7, "result", key)
                .ok()
                .unwrap();
            let got = memo.entities_with_key(&t, 7, "result", key).ok().unwrap();
            assert_eq!(got, want, "key {key:?}");
        }
        assert_eq!(
            memo.entities_with_key(&t, 7, "result", "b").ok().unwrap(),
            Some(vec![2, 3, 4])
        );
        assert_eq!(memo.chunks.len(), 2);
        assert_eq!(
            memo.entities_with_key(&t, 7, "broken", "a").ok().unwrap(),
            None
        );
        assert_eq!(
            memo.entities_with_key(&t, 8, "result", "a").ok().unwrap(),
            Some(vec![])
        );
    }
}
