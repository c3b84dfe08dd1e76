//! Large tick records laid out by column (file format 6, value version 4).
//!
//! An ingest's record holds thousands of `Set`s of the same component,
//! whose values share their shape (a core [`Run`] is thirteen fields,
//! text and numbers) and much of their text. Compressing the row-wise
//! postcard as one stream (value version 2) leaves zstd to find that
//! structure at short range; this layout hands it over instead. The
//! record's changes are split into streams: their kinds, their entities
//! (each as the difference from the previous change's), their component
//! names (a dictionary), and each component's values. The values of a
//! component whose shape this module knows ([`Leaf`], by component
//! name: `Run`) are cut into one column per field:
//!
//! - a text field first drops the longest suffix it shares with an
//!   earlier text field of the same value (`workspace_path` ends with
//!   `run_id`, `agent_name` with `harness`), chosen on the first
//!   [`SAMPLE`] values; what is left is stored through a dictionary when
//!   few distinct texts repeat (statuses, experiment names), as indexes
//!   into a dictionary of words when the text is words (a task), or as
//!   lengths and bytes;
//! - a number field is stored as a zero flag and the difference from the
//!   field's last non-zero value or from an earlier number field of the
//!   same value (`finished_at_ms` from `started_at_ms`), whichever is
//!   shorter over the record.
//!
//! A value that does not parse as its component's shape, exactly and in
//! canonical postcard, and every value of a component without a known
//! shape, is stored as it is in a stream of its component. Decoding
//! rebuilds the exact postcard body of value version 2 (a `RecordV1`),
//! so every reader of records reads this layout through
//! [`super::body`] without change, and the shape never has to match the
//! component's type for a value to round-trip: it only decides how well
//! it compresses. The streams, each behind its length, form one block;
//! the block is cut between columns and each piece compressed as a zstd
//! frame of its own, so that zstd's entropy tables fit one column.
//!
//! Stored value: [`COLUMNS_VERSION`], [`CODEC_COLUMNS`], the body's
//! length (u32 little-endian), the block's length (u32 little-endian),
//! then for each piece its length and its frame's length (u32
//! little-endian each) and the frame. The body may claim at most
//! [`MAX_RATIO`] times the block, and the block at most that times the
//! bytes after the lengths, checked before anything is allocated.
//!
//! [`Run`]: autoresearch_core::Run

use super::DecodeError;
use autoresearch_core::Change;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The version byte of a record laid out by column (file format 6).
pub(crate) const COLUMNS_VERSION: u8 = 4;

/// The codec byte that follows [`COLUMNS_VERSION`].
pub(crate) const CODEC_COLUMNS: u8 = 4;

/// Records with fewer changes are stored row-wise (value version 2): the
/// layout pays off on an ingest of many values of one shape.
const COLUMNS_FROM: usize = 1024;

/// The largest ratio of the body to the block, and of the block to its
/// zstd frame, that this build writes; a larger claim is damage.
const MAX_RATIO: usize = 256;

/// zstd's level for the block: its fastest positive one.
const ZSTD_LEVEL: i32 = 1;

/// Values a text field's suffix source and text mode are chosen on.
const SAMPLE: usize = 64;

/// One field of a known component shape, as postcard encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    /// A string or byte string: a varint length, then the bytes.
    Text,
    /// A signed integer: a zigzag varint.
    Int,
}

use Leaf::{Int, Text};

/// Shape 1: core's `Run` (eight text fields, `started_at_ms`,
/// `finished_at_ms`, three text fields). Fixed once written: a change to
/// `Run` makes its values opaque to this shape, never misread.
const RUN_SHAPE: [Leaf; 13] = [
    Text, Text, Text, Text, Text, Text, Text, Text, Int, Int, Text, Text, Text,
];

/// The shape a shape id names.
fn shape(id: u8) -> Option<&'static [Leaf]> {
    match id {
        1 => Some(&RUN_SHAPE),
        _ => None,
    }
}

/// The shape id to try for a component's values (0: none).
fn shape_for(component: &str) -> u8 {
    match component {
        "Run" => 1,
        _ => 0,
    }
}

/// Text modes.
const PLAIN: u8 = 0;
const DICTIONARY: u8 = 1;
const WORDS: u8 = 2;

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `bytes` as a stream: its length, then itself.
fn section(out: &mut Vec<u8>, bytes: &[u8]) {
    put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A reader over bytes; every read is checked (`None` past the end or on
/// a varint that is not canonical postcard).
#[derive(Clone, Copy, Default)]
struct Cur<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cur { bytes, at: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            if i == 9 && byte > 1 {
                return None;
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // A longer encoding than needed would not re-encode to
                // the same bytes.
                return (i == 0 || byte != 0).then_some(v);
            }
        }
        None
    }

    fn usize(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    /// The next stream (its length, then its bytes).
    fn section(&mut self) -> Option<Cur<'a>> {
        let n = self.usize()?;
        Some(Cur::new(self.take(n)?))
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// One field of a parsed value.
#[derive(Clone, Copy)]
enum Field<'a> {
    Text(&'a [u8]),
    Int(i64),
}

/// Parses `value` as `shape`, pushing its fields; `false` (nothing
/// pushed) unless it is exactly the canonical postcard of that shape.
fn parse<'a>(shape: &[Leaf], value: &'a [u8], out: &mut Vec<Field<'a>>) -> bool {
    let start = out.len();
    let mut cur = Cur::new(value);
    for leaf in shape {
        let field = match leaf {
            Text => cur.usize().and_then(|n| cur.take(n)).map(Field::Text),
            Int => cur.varint().map(|v| Field::Int(unzigzag(v))),
        };
        match field {
            Some(f) => out.push(f),
            None => {
                out.truncate(start);
                return false;
            }
        }
    }
    if !cur.done() {
        out.truncate(start);
        return false;
    }
    true
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// rustc's FxHash: a multiply and a rotate per eight bytes, several times
/// faster than the standard hasher on short texts. Not resistant to
/// chosen collisions, which at worst slow down encoding one record.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map hashed with [`Fx`].
type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// A dictionary of byte strings in first-seen order, with the index of
/// each string pushed to `idx`; `None` past `cap` distinct strings.
struct Dict<'a> {
    ids: FxMap<&'a [u8], u32>,
    entries: Vec<&'a [u8]>,
    cap: usize,
}

impl<'a> Dict<'a> {
    fn new(cap: usize) -> Self {
        Dict {
            ids: FxMap::default(),
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

/// Reads a dictionary written by [`Dict::write`].
fn read_dict<'a>(cur: &mut Cur<'a>) -> Option<Vec<&'a [u8]>> {
    let mut s = cur.section()?;
    let n = s.usize()?;
    // Each entry takes at least a byte: a damaged count is not trusted.
    let mut out = Vec::with_capacity(n.min(s.bytes.len()));
    for _ in 0..n {
        let len = s.usize()?;
        out.push(s.take(len)?);
    }
    s.done().then_some(out)
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
        let frame = super::value::zstd_compress(&block[from..to], ZSTD_LEVEL).ok()?;
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
fn encode_values(block: &mut Vec<u8>, name: &str, vals: &[&[u8]], cuts: &mut Vec<usize>) {
    let id = shape_for(name);
    let Some(shape) = shape(id) else {
        block.push(0);
        opaque(block, vals.iter().copied());
        cuts.push(block.len());
        return;
    };
    let w = shape.len();
    let mut rows: Vec<Field<'_>> = Vec::with_capacity(vals.len() * w);
    let mut kinds = Vec::with_capacity(vals.len());
    let mut others = Vec::new();
    for v in vals {
        if parse(shape, v, &mut rows) {
            kinds.push(1u8);
        } else {
            kinds.push(0);
            others.push(*v);
        }
    }
    block.push(id);
    section(block, &kinds);
    opaque(block, others.into_iter());
    cuts.push(block.len());
    let n = rows.len() / w;
    for (k, leaf) in shape.iter().enumerate() {
        match leaf {
            Text => text_column(block, &rows, shape, k, n),
            Int => int_column(block, &rows, shape, k, n),
        }
        cuts.push(block.len());
    }
}

/// Values stored as they are: their lengths, then their bytes.
fn opaque<'a>(block: &mut Vec<u8>, vals: impl Iterator<Item = &'a [u8]>) {
    let mut lens = Vec::new();
    let mut bytes = Vec::new();
    for v in vals {
        put(&mut lens, v.len() as u64);
        bytes.extend_from_slice(v);
    }
    section(block, &lens);
    section(block, &bytes);
}

fn text_at<'a>(rows: &[Field<'a>], w: usize, r: usize, k: usize) -> &'a [u8] {
    match rows[r * w + k] {
        Field::Text(s) => s,
        Field::Int(_) => &[],
    }
}

fn int_at(rows: &[Field<'_>], w: usize, r: usize, k: usize) -> i64 {
    match rows[r * w + k] {
        Field::Int(v) => v,
        Field::Text(_) => 0,
    }
}

/// Text field `k` of `n` parsed values: suffix source, mode, streams.
fn text_column(block: &mut Vec<u8>, rows: &[Field<'_>], shape: &[Leaf], k: usize, n: usize) {
    let w = shape.len();
    let sample = n.min(SAMPLE);
    let mut best = (0usize, 0usize);
    for (j, leaf) in shape.iter().enumerate().take(k) {
        if *leaf != Text {
            continue;
        }
        let total: usize = (0..sample)
            .map(|r| common_suffix(text_at(rows, w, r, k), text_at(rows, w, r, j)))
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
        rests.extend((0..n).map(|r| text_at(rows, w, r, k)));
    } else {
        let mut lens = Vec::with_capacity(n);
        for r in 0..n {
            let s = text_at(rows, w, r, k);
            let l = common_suffix(s, text_at(rows, w, r, src - 1));
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

/// Number field `k` of `n` parsed values: reference, zero flags, deltas.
fn int_column(block: &mut Vec<u8>, rows: &[Field<'_>], shape: &[Leaf], k: usize, n: usize) {
    let w = shape.len();
    // Mode 0: from the field's last non-zero value; mode j + 1: from
    // number field j of the same value.
    let cost = |mode: usize| -> usize {
        let mut last = 0i64;
        let mut total = 0;
        for r in 0..n {
            let v = int_at(rows, w, r, k);
            if v == 0 {
                continue;
            }
            let base = if mode == 0 {
                last
            } else {
                int_at(rows, w, r, mode - 1)
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
        let v = int_at(rows, w, r, k);
        zeros.push(u8::from(v == 0));
        if v == 0 {
            continue;
        }
        let base = if mode == 0 {
            last
        } else {
            int_at(rows, w, r, mode - 1)
        };
        put(&mut deltas, zigzag(v.wrapping_sub(base)));
        last = v;
    }
    section(block, &zeros);
    section(block, &deltas);
}

/// How a text field's text (before its suffix) is read back.
enum Rest<'a> {
    Plain {
        lens: Cur<'a>,
        bytes: Cur<'a>,
    },
    Dict {
        dict: Vec<&'a [u8]>,
        idx: Cur<'a>,
    },
    Words {
        dict: Vec<&'a [u8]>,
        counts: Cur<'a>,
        idx: Cur<'a>,
    },
}

/// How one field is read back.
enum FieldReader<'a> {
    Text {
        /// 0, or 1 + the earlier text field whose suffix follows.
        src: usize,
        suffixes: Cur<'a>,
        rest: Rest<'a>,
    },
    Int {
        /// 0 (from the last non-zero value), or 1 + an earlier number
        /// field of the same value.
        mode: usize,
        zeros: Cur<'a>,
        deltas: Cur<'a>,
        last: i64,
    },
}

/// One component's values, read back in order.
struct ValueReader<'a> {
    shape: &'static [Leaf],
    kinds: Cur<'a>,
    lens: Cur<'a>,
    bytes: Cur<'a>,
    fields: Vec<FieldReader<'a>>,
}

impl<'a> ValueReader<'a> {
    fn read(cur: &mut Cur<'a>) -> Option<Self> {
        let id = cur.byte()?;
        let shape: &'static [Leaf] = if id == 0 { &[] } else { shape(id)? };
        let kinds = if id == 0 {
            Cur::default()
        } else {
            cur.section()?
        };
        let lens = cur.section()?;
        let bytes = cur.section()?;
        let mut fields = Vec::with_capacity(shape.len());
        for (k, leaf) in shape.iter().enumerate() {
            let field = match leaf {
                Text => {
                    let src = usize::from(cur.byte()?);
                    if src > k || (src > 0 && shape[src - 1] != Text) {
                        return None;
                    }
                    let suffixes = if src > 0 {
                        cur.section()?
                    } else {
                        Cur::default()
                    };
                    let rest = match cur.byte()? {
                        PLAIN => Rest::Plain {
                            lens: cur.section()?,
                            bytes: cur.section()?,
                        },
                        DICTIONARY => Rest::Dict {
                            dict: read_dict(cur)?,
                            idx: cur.section()?,
                        },
                        WORDS => Rest::Words {
                            dict: read_dict(cur)?,
                            counts: cur.section()?,
                            idx: cur.section()?,
                        },
                        _ => return None,
                    };
                    FieldReader::Text {
                        src,
                        suffixes,
                        rest,
                    }
                }
                Int => {
                    let mode = usize::from(cur.byte()?);
                    if mode > k || (mode > 0 && shape[mode - 1] != Int) {
                        return None;
                    }
                    FieldReader::Int {
                        mode,
                        zeros: cur.section()?,
                        deltas: cur.section()?,
                        last: 0,
                    }
                }
            };
            fields.push(field);
        }
        Some(ValueReader {
            shape,
            kinds,
            lens,
            bytes,
            fields,
        })
    }

    /// Appends the next value as postcard bytes (its length, then it),
    /// at most `budget` bytes of it.
    fn next(&mut self, out: &mut Vec<u8>, scratch: &mut Scratch, budget: usize) -> Option<()> {
        let shaped = if self.shape.is_empty() {
            false
        } else {
            match self.kinds.byte()? {
                0 => false,
                1 => true,
                _ => return None,
            }
        };
        if !shaped {
            let len = self.lens.usize()?;
            put(out, len as u64);
            out.extend_from_slice(self.bytes.take(len)?);
            return Some(());
        }
        let Scratch {
            value,
            rest,
            ranges,
            ints,
        } = scratch;
        value.clear();
        ranges.clear();
        ranges.resize(self.fields.len(), (0, 0));
        ints.clear();
        ints.resize(self.fields.len(), 0);
        for (k, field) in self.fields.iter_mut().enumerate() {
            match field {
                FieldReader::Text {
                    src,
                    suffixes,
                    rest: how,
                } => {
                    rest.clear();
                    match how {
                        Rest::Plain { lens, bytes } => {
                            let len = lens.usize()?;
                            rest.extend_from_slice(bytes.take(len)?);
                        }
                        Rest::Dict { dict, idx } => {
                            rest.extend_from_slice(dict.get(idx.usize()?)?);
                        }
                        Rest::Words { dict, counts, idx } => {
                            let count = counts.usize()?;
                            if count == 0 || count > budget.saturating_add(1) {
                                return None;
                            }
                            for i in 0..count {
                                if i > 0 {
                                    rest.push(b' ');
                                }
                                rest.extend_from_slice(dict.get(idx.usize()?)?);
                                if rest.len() > budget {
                                    return None;
                                }
                            }
                        }
                    }
                    let (from, to) = if *src > 0 {
                        let l = suffixes.usize()?;
                        let (a, b) = *ranges.get(*src - 1)?;
                        (b.checked_sub(l).filter(|s| *s >= a)?, b)
                    } else {
                        (0, 0)
                    };
                    put(value, (rest.len() + (to - from)) as u64);
                    let start = value.len();
                    value.extend_from_slice(rest);
                    value.extend_from_within(from..to);
                    ranges[k] = (start, value.len());
                }
                FieldReader::Int {
                    mode,
                    zeros,
                    deltas,
                    last,
                } => {
                    let v = match zeros.byte()? {
                        1 => 0,
                        0 => {
                            let base = if *mode == 0 {
                                *last
                            } else {
                                *ints.get(*mode - 1)?
                            };
                            let v = base.wrapping_add(unzigzag(deltas.varint()?));
                            *last = v;
                            v
                        }
                        _ => return None,
                    };
                    ints[k] = v;
                    put(value, zigzag(v));
                }
            }
            if value.len() > budget {
                return None;
            }
        }
        put(out, value.len() as u64);
        out.extend_from_slice(value);
        Some(())
    }

    /// Whether every stream was read to its end.
    fn done(&self) -> bool {
        self.kinds.done()
            && self.lens.done()
            && self.bytes.done()
            && self.fields.iter().all(|f| match f {
                FieldReader::Text { suffixes, rest, .. } => {
                    suffixes.done()
                        && match rest {
                            Rest::Plain { lens, bytes } => lens.done() && bytes.done(),
                            Rest::Dict { idx, .. } => idx.done(),
                            Rest::Words { counts, idx, .. } => counts.done() && idx.done(),
                        }
                }
                FieldReader::Int { zeros, deltas, .. } => zeros.done() && deltas.done(),
            })
    }
}

/// Buffers reused from one value to the next.
#[derive(Default)]
struct Scratch {
    value: Vec<u8>,
    rest: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    ints: Vec<i64>,
}

/// The postcard body (value version 2's, a `RecordV1`) of a record laid
/// out by column; `payload` is what follows its version and codec bytes.
/// Errors (`Corrupt`) on damaged bytes, before allocating more than the
/// bounded lengths allow.
pub(crate) fn decode_record(payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let bad = |what: &str| DecodeError::Corrupt(format!("record laid out by column: {what}"));
    let (raw_len, rest) = payload
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("no body length"))?;
    let (block_len, mut frames) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("no block length"))?;
    let raw_len = u32::from_le_bytes(*raw_len) as usize;
    let block_len = u32::from_le_bytes(*block_len) as usize;
    if block_len > frames.len().saturating_mul(MAX_RATIO)
        || raw_len > block_len.saturating_mul(MAX_RATIO)
    {
        return Err(bad(&format!(
            "claims {raw_len} bytes from a block of {block_len} in {} compressed",
            frames.len()
        )));
    }
    let mut block = Vec::with_capacity(block_len);
    while !frames.is_empty() {
        let (len, rest) = frames
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("a column without its length"))?;
        let (frame_len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("a column without its frame's length"))?;
        let len = u32::from_le_bytes(*len) as usize;
        let frame_len = u32::from_le_bytes(*frame_len) as usize;
        if len > block_len - block.len() || frame_len > rest.len() {
            return Err(bad("a column longer than its block or its bytes"));
        }
        let (frame, rest) = rest.split_at(frame_len);
        let column =
            super::value::zstd_decompress(frame, len).map_err(|e| bad(&format!("zstd: {e}")))?;
        if column.len() != len {
            return Err(bad("a column of another length than it claims"));
        }
        block.extend_from_slice(&column);
        frames = rest;
    }
    if block.len() != block_len {
        return Err(bad(&format!(
            "the block holds {} bytes, its length says {block_len}",
            block.len()
        )));
    }
    let out = rebuild(&block, raw_len).ok_or_else(|| bad("damaged streams"))?;
    if out.len() != raw_len {
        return Err(bad(&format!(
            "rebuilt {} bytes, its length says {raw_len}",
            out.len()
        )));
    }
    Ok(out)
}

/// The body from the block's streams, at most `raw_len` bytes of it.
fn rebuild(block: &[u8], raw_len: usize) -> Option<Vec<u8>> {
    let mut cur = Cur::new(block);
    let at_ms = cur.varint()?;
    let n = cur.usize()?;
    let mut out = Vec::with_capacity(raw_len);
    put(&mut out, at_ms);
    put(&mut out, n as u64);
    let mut tags = cur.section()?;
    let mut entities = cur.section()?;
    let names = read_dict(&mut cur)?;
    let mut name_idx = cur.section()?;
    let mut readers = Vec::with_capacity(names.len());
    for _ in 0..names.len() {
        readers.push(ValueReader::read(&mut cur)?);
    }
    if !cur.done() {
        return None;
    }
    let mut scratch = Scratch::default();
    let mut entity = 0u64;
    for _ in 0..n {
        let tag = tags.byte()?;
        if tag > 3 {
            return None;
        }
        entity = entity.wrapping_add(unzigzag(entities.varint()?) as u64);
        out.push(tag);
        put(&mut out, entity);
        if tag == 1 || tag == 2 {
            let id = name_idx.usize()?;
            let name = names.get(id)?;
            put(&mut out, name.len() as u64);
            out.extend_from_slice(name);
            if tag == 1 {
                let budget = raw_len.checked_sub(out.len())?;
                readers.get_mut(id)?.next(&mut out, &mut scratch, budget)?;
            }
        }
        if out.len() > raw_len {
            return None;
        }
    }
    let all_read = tags.done() && entities.done() && name_idx.done();
    (all_read && readers.iter().all(ValueReader::done)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::super::{ChangeV1, RecordV1};
    use super::*;
    use autoresearch_core::{EntityId, Run};
    use proptest::prelude::*;

    /// The postcard body value version 2 stores for these changes.
    fn row_wise(at_ms: i64, changes: &[Change]) -> Vec<u8> {
        postcard::to_stdvec(&RecordV1 {
            at_ms,
            changes: changes.iter().cloned().map(ChangeV1::from).collect(),
        })
        .unwrap()
    }

    /// Runs shaped as `bench parity`'s ingest makes them.
    fn runs(n: usize) -> Vec<Change> {
        let statuses = ["booting", "running", "stopped", "crashed"];
        let exps = ["kernel-tune", "sat-solver", "docs-fix"];
        let mut out = Vec::new();
        for i in 0..n {
            let exp = exps[i % 3];
            let id = format!(
                "{:016x}-{i:07}",
                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            );
            let run = Run {
                run_id: id.clone(),
                experiment_name: exp.into(),
                vm_name: format!("vm-{exp}-{i:07}"),
                status: statuses[i % 4].into(),
                harness: "opencode".into(),
                repo_url: format!("https://github.com/example/{exp}.git"),
                branch: format!("auto/{exp}/{}", i % 97),
                task: ["fix the loop", "add tests to the module", "port it"][i % 3].into(),
                started_at_ms: 1_767_225_600_000 + 37_000 * i as i64 + (i as i64 * 7919) % 1000,
                finished_at_ms: if i % 2 == 0 {
                    0
                } else {
                    1_767_225_600_000 + 37_000 * i as i64 + 60_000
                },
                agent_name: format!("{exp}-opencode"),
                workspace_path: format!("/var/lib/workspaces/{id}"),
                commit_hash: String::new(),
            };
            out.push(Change::Spawn {
                entity: EntityId(i as u64 + 1),
            });
            out.push(Change::Set {
                entity: EntityId(i as u64 + 1),
                component: "Run".into(),
                value: postcard::to_stdvec(&run).unwrap(),
            });
        }
        out
    }

    fn stored(at_ms: i64, changes: &[Change]) -> Vec<u8> {
        let bytes = encode_record(at_ms, changes).expect("laid out by column");
        assert_eq!(bytes[..2], [COLUMNS_VERSION, CODEC_COLUMNS]);
        bytes
    }

    #[test]
    fn an_ingest_of_runs_round_trips_and_is_smaller_than_row_wise_zstd() {
        let changes = runs(3000);
        let bytes = stored(1_767_225_600_123, &changes);
        let body = row_wise(1_767_225_600_123, &changes);
        assert_eq!(decode_record(&bytes[2..]).unwrap(), body);
        let zstd = super::super::value::zstd_compress(&body, ZSTD_LEVEL).unwrap();
        assert!(
            bytes.len() * 2 < zstd.len(),
            "{} bytes by column against {} row-wise",
            bytes.len(),
            zstd.len()
        );
    }

    #[test]
    fn a_run_parses_as_the_run_shape() {
        // The shape is core's Run field for field: a change there shows
        // here (its values would still round-trip, stored whole).
        let Change::Set { value, .. } = &runs(1)[1] else {
            unreachable!()
        };
        let mut fields = Vec::new();
        assert!(parse(&RUN_SHAPE, value, &mut fields));
        assert_eq!(fields.len(), RUN_SHAPE.len());
    }

    #[test]
    fn few_changes_stay_row_wise() {
        assert!(encode_record(1, &runs(COLUMNS_FROM / 2 - 1)).is_none());
    }

    #[test]
    fn damaged_blocks_are_errors() {
        let changes = runs(COLUMNS_FROM);
        let bytes = stored(5, &changes);
        let payload = &bytes[2..];
        for cut in [0, 3, 7, payload.len() / 2, payload.len() - 1] {
            assert!(matches!(
                decode_record(&payload[..cut]),
                Err(DecodeError::Corrupt(_))
            ));
        }
        let mut claims = payload.to_vec();
        claims[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            matches!(decode_record(&claims), Err(DecodeError::Corrupt(r)) if r.contains("claims"))
        );
    }

    /// A change of a small random record.
    fn change() -> impl Strategy<Value = Change> {
        let text = proptest::collection::vec(
            prop_oneof![Just(b' '), Just(b'a'), Just(b'-'), any::<u8>()],
            0..12,
        );
        let run = (
            proptest::collection::vec(text.clone(), 11),
            any::<i64>(),
            prop_oneof![Just(0i64), any::<i64>()],
        )
            .prop_map(|(t, a, b)| {
                let mut v = Vec::new();
                for (i, s) in t.iter().enumerate() {
                    if i == 8 {
                        put(&mut v, zigzag(a));
                        put(&mut v, zigzag(b));
                    }
                    put(&mut v, s.len() as u64);
                    v.extend_from_slice(s);
                }
                v
            });
        let value = prop_oneof![run, proptest::collection::vec(any::<u8>(), 0..40)];
        let name = prop_oneof![Just("Run".to_string()), Just("Result".to_string())];
        let entity = prop_oneof![0u64..40, any::<u64>()].prop_map(EntityId);
        prop_oneof![
            entity.clone().prop_map(|entity| Change::Spawn { entity }),
            (entity.clone(), name.clone(), value).prop_map(|(entity, component, value)| {
                Change::Set {
                    entity,
                    component,
                    value,
                }
            }),
            (entity.clone(), name)
                .prop_map(|(entity, component)| Change::Remove { entity, component }),
            entity.prop_map(|entity| Change::Despawn { entity }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any record of enough changes rebuilds to its row-wise body.
        #[test]
        fn records_round_trip(
            at_ms in any::<i64>(),
            changes in proptest::collection::vec(change(), COLUMNS_FROM..COLUMNS_FROM + 200),
        ) {
            let bytes = stored(at_ms, &changes);
            prop_assert_eq!(decode_record(&bytes[2..]).unwrap(), row_wise(at_ms, &changes));
        }

        /// Damaged blocks (recompressed, so that the streams themselves
        /// are damaged) give an error or some body, never a panic.
        #[test]
        fn damaged_streams_are_errors_not_panics(
            seed in 0usize..10_000,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let changes: Vec<Change> = runs(COLUMNS_FROM)
                .into_iter()
                .chain((0..seed % 7).map(|i| Change::Despawn { entity: EntityId(i as u64) }))
                .collect();
            let bytes = stored(seed as i64, &changes);
            let raw_len = u32::from_le_bytes(bytes[2..6].try_into().unwrap()) as usize;
            let mut block = Vec::new();
            let mut rest = &bytes[10..];
            while !rest.is_empty() {
                let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                let frame_len = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
                let column = &rest[8..8 + frame_len];
                block.extend(super::super::value::zstd_decompress(column, len).unwrap());
                rest = &rest[8 + frame_len..];
            }
            for (at, to) in flips {
                let at = at % block.len();
                block[at] = to;
            }
            if let Some(c) = cut {
                block.truncate(c % block.len());
            }
            let frame = super::super::value::zstd_compress(&block, 1).unwrap();
            let mut payload = Vec::new();
            payload.extend_from_slice(&(raw_len as u32).to_le_bytes());
            payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
            payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
            payload.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            payload.extend_from_slice(&frame);
            if let Ok(body) = decode_record(&payload) {
                prop_assert_eq!(body.len(), raw_len);
            }
        }

        /// Arbitrary bytes after the codec byte are an error or a body,
        /// never a panic.
        #[test]
        fn arbitrary_payloads_do_not_panic(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_record(&payload);
        }
    }
}
