//! The column layout's decoder: the row-wise postcard body rebuilt from
//! the streams and columns.

use super::*;

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
    let (block, raw_len) = block(payload)?;
    let out = rebuild(&block, raw_len).ok_or_else(|| bad("damaged streams"))?;
    if out.len() != raw_len {
        return Err(bad(&format!(
            "rebuilt {} bytes, its length says {raw_len}",
            out.len()
        )));
    }
    Ok(out)
}

/// Calls `f(entity, value)` for every `Set` of `component` in a record
/// laid out by column (`payload` as for [`decode_record`]), in order, the
/// value as its postcard bytes: what [`decode_record`] then
/// `encoding::record_sets` give for that component, without rebuilding
/// the other components' values (their streams are not read, so damage
/// there goes unseen). Errors (`Corrupt`) on damaged bytes.
#[cfg(test)]
pub(crate) fn sets_of(
    payload: &[u8],
    component: &str,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<(), DecodeError> {
    sets_of_each(payload, &[component], |_, e, v| f(e, v))
}

/// [`sets_of`] for each of `components` in turn, the block decompressed
/// once: `f(index in components, entity, value)`.
pub(crate) fn sets_of_each(
    payload: &[u8],
    components: &[&str],
    mut f: impl FnMut(usize, u64, &[u8]),
) -> Result<(), DecodeError> {
    let (block, raw_len) = block(payload)?;
    for (i, component) in components.iter().enumerate() {
        sets_in(&block, raw_len, component, &mut |e, v| f(i, e, v))
            .ok_or_else(|| bad("damaged streams"))?;
    }
    Ok(())
}

fn bad(what: &str) -> DecodeError {
    DecodeError::Corrupt(format!("record laid out by column: {what}"))
}

/// The decompressed block of `payload` and the body length it claims.
fn block(payload: &[u8]) -> Result<(Vec<u8>, usize), DecodeError> {
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
        let column = crate::encoding::value::zstd_decompress(frame, len)
            .map_err(|e| bad(&format!("zstd: {e}")))?;
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
    Ok((block, raw_len))
}

/// A block's streams, before any change is read.
struct Streams<'a> {
    at_ms: u64,
    /// How many changes.
    n: usize,
    tags: Cur<'a>,
    entities: Cur<'a>,
    /// The component names, by id.
    names: Vec<&'a [u8]>,
    name_idx: Cur<'a>,
    /// Each component's values, by id.
    readers: Vec<ValueReader<'a>>,
    /// The entity of the last change read.
    entity: u64,
}

impl<'a> Streams<'a> {
    /// `None` on a damaged header or bytes left after the streams.
    fn read(block: &'a [u8]) -> Option<Self> {
        let mut cur = Cur::new(block);
        let at_ms = cur.varint()?;
        let n = cur.usize()?;
        let tags = cur.section()?;
        let entities = cur.section()?;
        let names = read_dict(&mut cur)?;
        let name_idx = cur.section()?;
        let mut readers = Vec::with_capacity(names.len());
        for _ in 0..names.len() {
            readers.push(ValueReader::read(&mut cur)?);
        }
        cur.done().then_some(Streams {
            at_ms,
            n,
            tags,
            entities,
            names,
            name_idx,
            readers,
            entity: 0,
        })
    }

    /// The next change's tag, entity and (for a `Set` or a `Remove`) its
    /// component's id, checked to name a component. `None` on damage.
    fn change(&mut self) -> Option<(u8, u64, Option<usize>)> {
        let tag = self.tags.byte()?;
        if tag > 3 {
            return None;
        }
        self.entity = self
            .entity
            .wrapping_add(unzigzag(self.entities.varint()?) as u64);
        let id = if tag == 1 || tag == 2 {
            let id = self.name_idx.usize()?;
            (id < self.names.len()).then_some(id)?;
            Some(id)
        } else {
            None
        };
        Some((tag, self.entity, id))
    }

    /// Whether the change streams were read to their end.
    fn changes_done(&self) -> bool {
        self.tags.done() && self.entities.done() && self.name_idx.done()
    }
}

/// The values of `component`'s `Set`s in the block's streams, each passed
/// to `f` as its postcard bytes; no value longer than `raw_len`. `None`
/// on damaged streams (those read).
fn sets_in(
    block: &[u8],
    raw_len: usize,
    component: &str,
    f: &mut dyn FnMut(u64, &[u8]),
) -> Option<()> {
    let mut streams = Streams::read(block)?;
    let Some(wanted) = streams
        .names
        .iter()
        .position(|name| *name == component.as_bytes())
    else {
        return Some(());
    };
    let mut reader = streams.readers.swap_remove(wanted);
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for _ in 0..streams.n {
        let (tag, entity, id) = streams.change()?;
        if tag == 1 && id == Some(wanted) {
            out.clear();
            reader.next(&mut out, &mut scratch, raw_len)?;
            // `next` puts the value's length, then the value.
            let mut value = Cur::new(&out);
            let len = value.usize()?;
            f(entity, value.take(len)?);
        }
    }
    (streams.changes_done() && reader.done()).then_some(())
}

/// The body from the block's streams, at most `raw_len` bytes of it.
fn rebuild(block: &[u8], raw_len: usize) -> Option<Vec<u8>> {
    let mut streams = Streams::read(block)?;
    let mut out = Vec::with_capacity(raw_len);
    put(&mut out, streams.at_ms);
    put(&mut out, streams.n as u64);
    let mut scratch = Scratch::default();
    for _ in 0..streams.n {
        let (tag, entity, id) = streams.change()?;
        out.push(tag);
        put(&mut out, entity);
        if let Some(id) = id {
            let name = streams.names.get(id)?;
            put(&mut out, name.len() as u64);
            out.extend_from_slice(name);
            if tag == 1 {
                let budget = raw_len.checked_sub(out.len())?;
                streams
                    .readers
                    .get_mut(id)?
                    .next(&mut out, &mut scratch, budget)?;
            }
        }
        if out.len() > raw_len {
            return None;
        }
    }
    (streams.changes_done() && streams.readers.iter().all(ValueReader::done)).then_some(out)
}
