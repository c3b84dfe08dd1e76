//! The column layout's encoder: a record's changes cut into streams and
//! columns, each piece a zstd frame.

use super::*;
use std::collections::HashMap;

/// A map hashed with foldhash's fast hasher at a fixed seed, several
/// times faster than the standard hasher on short texts. Not resistant to
/// chosen collisions, which at worst slow down encoding one record.
type FxMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
/// A dictionary of byte strings in first-seen order, with the index of
/// each string pushed to `idx`; `None` past `cap` distinct strings.
struct Dict<'a> {
    ids: FxMap<&'a [u8], u32>,
    entries: Vec<&'a [u8]>,
    cap: usize,
}

impl<'a> Dict<'a> {
    /// Sized for `cap` strings (at most 4,096) at once: a column of many distinct texts
    /// fills it to `cap` before it gives up, and regrowing the map on the
    /// way cost more than filling it (ids are in first-seen order either
    /// way).
    fn new(cap: usize) -> Self {
        Dict {
            ids: FxMap::with_capacity_and_hasher(cap.min(4096) + 1, Default::default()),
            entries: Vec::new(),
            cap,
        }
    }

    fn id(&mut self, s: &'a [u8]) -> Option<u32> {
        if let Some(id) = self.ids.get(s) {
            return Some(*id);
        }
        if self.entries.len() >= self.cap {
            return None;
        }
        let id = self.entries.len() as u32;
        self.ids.insert(s, id);
        self.entries.push(s);
        Some(id)
    }

    fn write(&self, block: &mut Vec<u8>) {
        let mut s = Vec::with_capacity(self.entries.iter().map(|e| e.len() + 2).sum());
        put(&mut s, self.entries.len() as u64);
        for e in &self.entries {
            put(&mut s, e.len() as u64);
            s.extend_from_slice(e);
        }
        section(block, &s);
    }
}

/// The record's changes laid out by column, as a stored value; `None`
/// when the layout does not apply (fewer than [`COLUMNS_FROM`] changes, or
/// sizes past what the reader accepts): the caller stores it row-wise.
pub(crate) fn encode_record(at_ms: i64, changes: &[Change]) -> Option<Vec<u8>> {
    if changes.len() < COLUMNS_FROM {
        return None;
    }
    let n = changes.len();
    let mut block = Vec::with_capacity(n * 16);
    put(&mut block, zigzag(at_ms));
    put(&mut block, n as u64);
    let mut raw_len = varint_len(zigzag(at_ms)) + varint_len(n as u64);
    let mut tags = Vec::with_capacity(n);
    let mut entities = Vec::with_capacity(n * 2);
    let mut name_idx = Vec::with_capacity(n);
    let mut names: Vec<&str> = Vec::new();
    let mut name_ids: FxMap<&str, u32> = FxMap::default();
    let mut values: Vec<Vec<&[u8]>> = Vec::new();
    let mut last: Option<(&str, u32)> = None;
    let mut prev = 0u64;
    for c in changes {
        let (tag, entity, name, value) = match c {
            Change::Spawn { entity } => (0u8, entity.0, None, None),
            Change::Set {
                entity,
                component,
                value,
            } => (
                1,
                entity.0,
                Some(component.as_str()),
                Some(value.as_slice()),
            ),
            Change::Remove { entity, component } => (2, entity.0, Some(component.as_str()), None),
            Change::Despawn { entity } => (3, entity.0, None, None),
        };
        tags.push(tag);
        put(&mut entities, zigzag(entity.wrapping_sub(prev) as i64));
        prev = entity;
        raw_len += 1 + varint_len(entity);
        let Some(name) = name else { continue };
        let id = match last {
            Some((l, id)) if l == name => id,
            _ => {
                let id = *name_ids.entry(name).or_insert_with(|| {
                    names.push(name);
                    values.push(Vec::new());
                    (names.len() - 1) as u32
                });
                last = Some((name, id));
                id
            }
        };
        put(&mut name_idx, u64::from(id));
        raw_len += varint_len(name.len() as u64) + name.len();
        if let Some(v) = value {
            values[id as usize].push(v);
            raw_len += varint_len(v.len() as u64) + v.len();
        }
    }
    // The columns take about what the values took row-wise: reserved
    // once rather than grown (and copied) a few times over megabytes.
    block.reserve(raw_len);
    section(&mut block, &tags);
    section(&mut block, &entities);
    let mut dict = Vec::new();
    put(&mut dict, names.len() as u64);
    for name in &names {
        put(&mut dict, name.len() as u64);
        dict.extend_from_slice(name.as_bytes());
    }
    section(&mut block, &dict);
    section(&mut block, &name_idx);
    let mut cuts = vec![block.len()];
    for (name, vals) in names.iter().zip(&values) {
        encode_values(&mut block, name, vals, &mut cuts);
    }
    if raw_len > u32::MAX as usize
        || block.len() > u32::MAX as usize
        || raw_len > block.len().saturating_mul(MAX_RATIO)
    {
        return None;
    }
    let mut out = Vec::with_capacity(block.len() / 3);
    out.extend_from_slice(&[COLUMNS_VERSION, CODEC_COLUMNS]);
    out.extend_from_slice(&(raw_len as u32).to_le_bytes());
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    // Each column its own frame: zstd's entropy tables then fit each
    // column, not a mix of them (a 2,000-run ingest: 15% smaller).
    let mut from = 0;
    for to in cuts.into_iter().chain([block.len()]) {
        if to <= from {
            continue;
        }
        let frame = crate::encoding::value::zstd_compress(&block[from..to], ZSTD_LEVEL).ok()?;
        out.extend_from_slice(&((to - from) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
        from = to;
    }
    if block.len() > (out.len() - 10).saturating_mul(MAX_RATIO) {
        return None;
    }
    Some(out)
}

/// Appends one component's values: its shape id, then by field (or only
/// the opaque streams).
pub(super) fn encode_values(
    block: &mut Vec<u8>,
    name: &str,
    vals: &[&[u8]],
    cuts: &mut Vec<usize>,
) {
    let id = shape_for(name);
    let Some(shape) = shape(id) else {
        block.push(0);
        opaque(block, vals.iter().copied());
        cuts.push(block.len());
        return;
    };
    let w = shape.len();
    // Column-major (field `k` of value `r` at `k * n + r`): each column is
    // read several times below, and a strided read of a large record's
    // rows missed the cache at every value. Each value is parsed straight
    // into its columns (not into rows transposed after: a 10,000-run
    // ingest's rows were 3 MB more to allocate, fill and free).
    let stride = vals.len();
    let mut cols = vec![Field::Int(0); stride * w];
    let mut row: Vec<Field<'_>> = Vec::with_capacity(w);
    let mut kinds = Vec::with_capacity(vals.len());
    let mut others = Vec::new();
    let mut n = 0;
    for v in vals {
        row.clear();
        if parse(shape, v, &mut row) {
            for (k, f) in row.iter().enumerate() {
                cols[k * stride + n] = *f;
            }
            n += 1;
            kinds.push(1u8);
        } else {
            kinds.push(0);
            others.push(*v);
        }
    }
    // Values that did not parse leave their columns' tails unused: the
    // columns move down to stride `n` (each to a place at or before its own).
    if n < stride {
        for k in 1..w {
            cols.copy_within(k * stride..k * stride + n, k * n);
        }
        cols.truncate(n * w);
    }
    block.push(id);
    section(block, &kinds);
    opaque(block, others.into_iter());
    cuts.push(block.len());
    columns(block, &cols, shape, n, cuts);
}

/// Appends each column of `n` parsed values (`cols` column-major).
pub(super) fn columns(
    block: &mut Vec<u8>,
    cols: &[Field<'_>],
    shape: &[Leaf],
    n: usize,
    cuts: &mut Vec<usize>,
) {
    for (k, leaf) in shape.iter().enumerate() {
        match leaf {
            Text => text_column(block, cols, shape, k, n),
            Int => int_column(block, cols, shape, k, n),
        }
        cuts.push(block.len());
    }
}

/// Values stored as they are: their lengths, then their bytes.
pub(super) fn opaque<'a>(block: &mut Vec<u8>, vals: impl Iterator<Item = &'a [u8]>) {
    let mut lens = Vec::new();
    let mut bytes = Vec::new();
    for v in vals {
        put(&mut lens, v.len() as u64);
        bytes.extend_from_slice(v);
    }
    section(block, &lens);
    section(block, &bytes);
}

/// Text field `k` of value `r` of `n` values laid out column-major.
fn text_at<'a>(cols: &[Field<'a>], n: usize, r: usize, k: usize) -> &'a [u8] {
    match cols[k * n + r] {
        Field::Text(s) => s,
        Field::Int(_) => &[],
    }
}

/// Number field `k` of value `r` of `n` values laid out column-major.
fn int_at(cols: &[Field<'_>], n: usize, r: usize, k: usize) -> i64 {
    match cols[k * n + r] {
        Field::Int(v) => v,
        Field::Text(_) => 0,
    }
}

/// Text field `k` of `n` parsed values (`rows` column-major): suffix
/// source, mode, streams.
fn text_column(block: &mut Vec<u8>, rows: &[Field<'_>], shape: &[Leaf], k: usize, n: usize) {
    let sample = n.min(SAMPLE);
    let mut best = (0usize, 0usize);
    for (j, leaf) in shape.iter().enumerate().take(k) {
        if *leaf != Text {
            continue;
        }
        let total: usize = (0..sample)
            .map(|r| common_suffix(text_at(rows, n, r, k), text_at(rows, n, r, j)))
            .sum();
        if total > best.0 {
            best = (total, j + 1);
        }
    }
    let src = if sample > 0 && best.0 >= 3 * sample {
        best.1
    } else {
        0
    };
    block.push(src as u8);
    let mut rests = Vec::with_capacity(n);
    if src == 0 {
        rests.extend((0..n).map(|r| text_at(rows, n, r, k)));
    } else {
        let mut lens = Vec::with_capacity(n);
        for r in 0..n {
            let s = text_at(rows, n, r, k);
            let l = common_suffix(s, text_at(rows, n, r, src - 1));
            put(&mut lens, l as u64);
            rests.push(&s[..s.len() - l]);
        }
        section(block, &lens);
    }
    let cap = (n / 4).clamp(16, 1 << 16);
    let mut dict = Dict::new(cap);
    let mut idx = Vec::with_capacity(n);
    if rests.iter().all(|s| match dict.id(s) {
        Some(id) => {
            put(&mut idx, u64::from(id));
            true
        }
        None => false,
    }) {
        block.push(DICTIONARY);
        dict.write(block);
        section(block, &idx);
        return;
    }
    let spaces: usize = rests
        .iter()
        .take(SAMPLE)
        .map(|s| s.iter().filter(|b| **b == b' ').count())
        .sum();
    if spaces >= 2 * rests.len().min(SAMPLE) {
        let mut words = Dict::new((n / 2).clamp(16, 1 << 16));
        let mut counts = Vec::with_capacity(n);
        let mut idx = Vec::with_capacity(n * 8);
        let fits = rests.iter().all(|s| {
            put(&mut counts, s.split(|b| *b == b' ').count() as u64);
            s.split(|b| *b == b' ').all(|word| match words.id(word) {
                Some(id) => {
                    put(&mut idx, u64::from(id));
                    true
                }
                None => false,
            })
        });
        if fits {
            block.push(WORDS);
            words.write(block);
            section(block, &counts);
            section(block, &idx);
            return;
        }
    }
    block.push(PLAIN);
    let mut lens = Vec::with_capacity(n);
    let mut bytes = Vec::with_capacity(rests.iter().map(|s| s.len()).sum());
    for s in &rests {
        put(&mut lens, s.len() as u64);
        bytes.extend_from_slice(s);
    }
    section(block, &lens);
    section(block, &bytes);
}

/// Number field `k` of `n` parsed values (`rows` column-major):
/// reference, zero flags, deltas.
fn int_column(block: &mut Vec<u8>, rows: &[Field<'_>], shape: &[Leaf], k: usize, n: usize) {
    // Mode 0: from the field's last non-zero value; mode j + 1: from
    // number field j of the same value.
    let cost = |mode: usize| -> usize {
        let mut last = 0i64;
        let mut total = 0;
        for r in 0..n {
            let v = int_at(rows, n, r, k);
            if v == 0 {
                continue;
            }
            let base = if mode == 0 {
                last
            } else {
                int_at(rows, n, r, mode - 1)
            };
            total += varint_len(zigzag(v.wrapping_sub(base)));
            last = v;
        }
        total
    };
    let mut best = (cost(0), 0usize);
    for (j, leaf) in shape.iter().enumerate().take(k) {
        if *leaf == Int {
            let c = cost(j + 1);
            if c < best.0 {
                best = (c, j + 1);
            }
        }
    }
    let mode = best.1;
    block.push(mode as u8);
    let mut zeros = Vec::with_capacity(n);
    let mut deltas = Vec::with_capacity(n * 3);
    let mut last = 0i64;
    for r in 0..n {
        let v = int_at(rows, n, r, k);
        zeros.push(u8::from(v == 0));
        if v == 0 {
            continue;
        }
        let base = if mode == 0 {
            last
        } else {
            int_at(rows, n, r, mode - 1)
        };
        put(&mut deltas, zigzag(v.wrapping_sub(base)));
        last = v;
    }
    section(block, &zeros);
    section(block, &deltas);
}
