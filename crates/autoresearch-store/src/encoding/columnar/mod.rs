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
//! Files: this one the format's constants, shapes and primitives,
//! `write.rs` the encoder, `read.rs` the decoder.
//!
//! [`Run`]: autoresearch_core::Run

use super::DecodeError;
use autoresearch_core::Change;

mod read;
mod write;

#[cfg(test)]
pub(crate) use read::sets_of;
pub(crate) use read::{decode_record, sets_of_each};
pub(crate) use write::encode_record;

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

#[cfg(test)]
mod tests;
